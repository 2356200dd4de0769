//! An in-memory [`ContainerRuntime`] for the pod worker's tests. It keeps the trait's contract
//! the way the real runtimes do (ids per attempt, idempotent sandboxes, `NotFound` for what is
//! gone, stops that wait for the exit), records every call with the tokio time it was made
//! at, and lets a test do what a container's program would: exit with a code, ignore SIGTERM,
//! fail an exec probe. Container times are on a clock derived from tokio's, so a test with
//! paused time sees containers run for exactly as long as it advanced time.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;

use super::ContainerInfo;
use super::ContainerRuntime;
use super::ContainerSpec;
use super::ContainerState;
use super::ExecOutput;
use super::LogOptions;
use super::PodRef;
use super::Result;
use super::RuntimeError;
use super::Sandbox;

/// Exit code of a process ended by SIGTERM (128 + 15).
const SIGTERM_EXIT: i32 = 143;
/// Exit code of a process ended by SIGKILL (128 + 9).
const SIGKILL_EXIT: i32 = 137;

/// A call the runtime received, with the tokio time it arrived at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    CreateSandbox { pod: String },
    RemoveSandbox { pod: String },
    Start { container: String, attempt: u32, image: String, at: Instant },
    Stop { id: String, grace: Duration, at: Instant },
    Remove { id: String },
    Exec { id: String },
}

struct FakeContainer {
    info: ContainerInfo,
    /// Its program ignores SIGTERM: a stop waits the whole grace period, then kills it.
    ignores_sigterm: bool,
    /// What an exec in it (a probe) exits with.
    exec_exit_code: i32,
}

#[derive(Default)]
struct State {
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, FakeContainer>,
    calls: Vec<Call>,
    missing_images: BTreeSet<String>,
}

/// The fake runtime (see the module documentation).
pub struct FakeRuntime {
    state: Mutex<State>,
    /// Bumped on every change, for the waits of the worker and of the test.
    changed: watch::Sender<u64>,
    epoch: (Instant, Timestamp),
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        let epoch = Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
        FakeRuntime { state: Mutex::default(), changed: watch::Sender::new(0), epoch: (Instant::now(), epoch) }
    }

    /// The wall-clock time of this moment of tokio's clock.
    pub fn now(&self) -> Timestamp {
        let (instant, timestamp) = self.epoch;
        timestamp.checked_add(instant.elapsed()).unwrap_or(timestamp)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the state and wakes whoever waits for a change.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.lock());
        self.changed.send_modify(|n| *n += 1);
        out
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Waits until `check` finds what it looks for in the calls and the containers (at most a
    /// minute of tokio time, then `None`).
    pub async fn until<T>(&self, mut check: impl FnMut(&[Call], &[ContainerInfo]) -> Option<T>) -> Option<T> {
        let mut changes = self.changed.subscribe();
        let wait = async {
            loop {
                let found = {
                    let state = self.lock();
                    let infos: Vec<ContainerInfo> = state.containers.values().map(|c| c.info.clone()).collect();
                    check(&state.calls, &infos)
                };
                if let Some(found) = found {
                    return Some(found);
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait).await.ok().flatten()
    }

    /// The container's program exits with `exit_code`.
    pub fn exit(&self, id: &str, exit_code: i32) {
        let now = self.now();
        self.change(|state| {
            if let Some(c) = state.containers.get_mut(id) {
                finish(&mut c.info, exit_code, now);
            }
        });
    }

    /// The container's program ignores SIGTERM.
    pub fn ignore_sigterm(&self, id: &str) {
        self.change(|state| state.containers.get_mut(id).into_iter().for_each(|c| c.ignores_sigterm = true));
    }

    /// Execs in the container (probes) exit with `exit_code`.
    pub fn exec_exits_with(&self, id: &str, exit_code: i32) {
        self.change(|state| state.containers.get_mut(id).into_iter().for_each(|c| c.exec_exit_code = exit_code));
    }

    /// The runtime has no image `image`.
    pub fn without_image(&self, image: &str) {
        self.change(|state| state.missing_images.insert(image.to_string()));
    }

    /// A sandbox and containers left by an earlier kubelet, as a restarted one finds them.
    pub fn leave_behind(&self, sandbox: Sandbox, containers: Vec<ContainerInfo>) {
        self.change(|state| {
            state.sandboxes.insert(sandbox.pod.uid.clone(), sandbox);
            for info in containers {
                let c = FakeContainer { info, ignores_sigterm: false, exec_exit_code: 0 };
                state.containers.insert(c.info.id.clone(), c);
            }
        });
    }

    fn record(&self, call: Call) {
        self.change(|state| state.calls.push(call));
    }

    fn info(&self, id: &str) -> Result<ContainerInfo> {
        self.lock().containers.get(id).map(|c| c.info.clone()).ok_or_else(|| not_found(id))
    }
}

fn not_found(id: &str) -> RuntimeError {
    RuntimeError::NotFound(format!("container {id}"))
}

fn finish(info: &mut ContainerInfo, exit_code: i32, now: Timestamp) {
    if let ContainerState::Running { started_at } = info.state {
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        info.state =
            ContainerState::Exited { started_at: Some(started_at), finished_at: now, exit_code, reason: reason.into() };
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn create_sandbox(&self, pod: &PodRef) -> Result<Sandbox> {
        self.change(|state| {
            state.calls.push(Call::CreateSandbox { pod: pod.uid.clone() });
            let next = u8::try_from(state.sandboxes.len() + 2).unwrap_or(u8::MAX);
            let sandbox = state.sandboxes.entry(pod.uid.clone()).or_insert_with(|| Sandbox {
                pod: pod.clone(),
                id: pod.uid.clone(),
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, next)),
            });
            Ok(sandbox.clone())
        })
    }

    async fn remove_sandbox(&self, pod: &PodRef) -> Result<()> {
        self.change(|state| {
            state.calls.push(Call::RemoveSandbox { pod: pod.uid.clone() });
            state.sandboxes.remove(&pod.uid);
            state.containers.retain(|_, c| c.info.pod.uid != pod.uid);
        });
        Ok(())
    }

    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        Ok(self.lock().sandboxes.values().cloned().collect())
    }

    async fn start_container(&self, sandbox: &Sandbox, spec: &ContainerSpec) -> Result<String> {
        let now = self.now();
        self.change(|state| {
            state.calls.push(Call::Start {
                container: spec.name.clone(),
                attempt: spec.attempt,
                image: spec.image.clone(),
                at: Instant::now(),
            });
            if !state.sandboxes.contains_key(&sandbox.pod.uid) {
                return Err(RuntimeError::NotFound(format!("sandbox {}", sandbox.pod.uid)));
            }
            if state.missing_images.contains(&spec.image) {
                return Err(RuntimeError::ImageNotFound {
                    image: spec.image.clone(),
                    reason: "the fake runtime does not have it".into(),
                });
            }
            let id = format!("{}_{}_{}", sandbox.pod.uid, spec.name, spec.attempt);
            if state.containers.contains_key(&id) {
                return Err(RuntimeError::StartFailed(format!("container {id} already exists")));
            }
            let info = ContainerInfo {
                id: id.clone(),
                pod: sandbox.pod.clone(),
                name: spec.name.clone(),
                attempt: spec.attempt,
                image: spec.image.clone(),
                image_id: format!("fake://{}", spec.image),
                state: ContainerState::Running { started_at: now },
            };
            state.containers.insert(id.clone(), FakeContainer { info, ignores_sigterm: false, exec_exit_code: 0 });
            Ok(id)
        })
    }

    /// SIGTERM ends a container at once (exit 143) unless it ignores SIGTERM; then SIGKILL
    /// ends it once `grace` has passed (exit 137).
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        self.record(Call::Stop { id: id.to_string(), grace, at: Instant::now() });
        let ignores_sigterm = self.lock().containers.get(id).ok_or_else(|| not_found(id))?.ignores_sigterm;
        if !ignores_sigterm {
            self.exit(id, SIGTERM_EXIT);
            return Ok(());
        }
        tokio::select! {
            exited = self.wait_container(id) => exited.map(|_| ()),
            _ = tokio::time::sleep(grace) => {
                self.exit(id, SIGKILL_EXIT);
                Ok(())
            }
        }
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.change(|state| {
            state.calls.push(Call::Remove { id: id.to_string() });
            state.containers.remove(id);
        });
        Ok(())
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>> {
        Ok(self.lock().containers.values().map(|c| c.info.clone()).collect())
    }

    async fn container(&self, id: &str) -> Result<ContainerInfo> {
        self.info(id)
    }

    async fn wait_container(&self, id: &str) -> Result<ContainerState> {
        let mut changes = self.changed.subscribe();
        loop {
            let state = self.info(id)?.state;
            if let ContainerState::Exited { .. } = state {
                return Ok(state);
            }
            if changes.changed().await.is_err() {
                return Err(not_found(id));
            }
        }
    }

    async fn exec(&self, id: &str, _command: &[String], _timeout: Duration) -> Result<ExecOutput> {
        self.record(Call::Exec { id: id.to_string() });
        let state = self.lock();
        let c = state.containers.get(id).ok_or_else(|| not_found(id))?;
        if !matches!(c.info.state, ContainerState::Running { .. }) {
            return Err(RuntimeError::ExecFailed { id: id.to_string(), reason: "the container is not running".into() });
        }
        Ok(ExecOutput { exit_code: c.exec_exit_code, output: Vec::new() })
    }

    async fn logs(&self, id: &str, _options: &LogOptions) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
        self.info(id)?;
        Ok(futures::stream::empty().boxed())
    }
}
