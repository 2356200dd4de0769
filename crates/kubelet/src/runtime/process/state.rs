//! What a container leaves on disk, shared by the runtime and the shim: `config.json` (written
//! once by the runtime before the shim starts) and `state.json` (written by the shim as the
//! container starts and exits; by the runtime only when the shim died without recording the
//! exit). Both are replaced atomically (write a temporary file, rename), so a reader sees a
//! whole old or a whole new file.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use trireme_util::fs::{FileOptions, write_atomic};

use crate::runtime::{ContainerState, PodRef};

pub(crate) const CONFIG_FILE: &str = "config.json";
pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const LOG_FILE: &str = "log";

/// How long a container may stay "being started" (no shim recorded) before it is reported as
/// failed: only a kubelet that crashed in the middle of `start_container` leaves one behind.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The pod of a sandbox or container, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PodRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl From<&PodRef> for PodRecord {
    fn from(pod: &PodRef) -> Self {
        PodRecord { uid: pod.uid.clone(), namespace: pod.namespace.clone(), name: pod.name.clone() }
    }
}

impl From<PodRecord> for PodRef {
    fn from(pod: PodRecord) -> Self {
        PodRef { uid: pod.uid, namespace: pod.namespace, name: pod.name }
    }
}

/// `sandbox.json`: the pod and the IP allocated to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SandboxRecord {
    pub pod: PodRecord,
    pub ip: std::net::Ipv4Addr,
    pub created_at: Timestamp,
}

/// `config.json`: what the runtime decided when it started the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContainerConfig {
    pub pod: PodRecord,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub image_id: String,
    /// The container's whole environment (exec runs with it too).
    pub env: BTreeMap<String, String>,
    pub working_dir: PathBuf,
    pub cgroup: Option<PathBuf>,
    pub created_at: Timestamp,
}

/// `state.json`: what the shim saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ShimState {
    pub shim_pid: Option<i32>,
    /// The shim's start time in clock ticks since boot (`/proc/<pid>/stat`), so that a reused
    /// pid is not mistaken for the shim.
    pub shim_start: Option<u64>,
    /// The container's pid, which is also its process group id.
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// Why the container could not be started (then there is no `pid`).
    pub error: Option<String>,
}

impl ShimState {
    /// The container's state as the runtime interface reports it, if the record is final or
    /// the container is known to be running.
    fn state(&self) -> Option<ContainerState> {
        if let (Some(finished_at), Some(exit_code)) = (self.finished_at, self.exit_code) {
            let reason = self.reason.clone().unwrap_or_else(|| reason_for(exit_code).to_string());
            return Some(ContainerState::Exited { started_at: self.started_at, finished_at, exit_code, reason });
        }
        self.started_at.map(|started_at| ContainerState::Running { started_at })
    }

    /// The container's process group, if it is still the process the shim started.
    pub(crate) fn live_group(&self) -> Option<Pid> {
        let pid = self.pid?;
        is_alive(pid, self.pid_start).then(|| Pid::from_raw(pid))
    }
}

/// SIGKILLs the process group and the shim of every container recorded below `root` (a node's
/// root dir), if they are still the recorded processes: what a machine failure does to them.
/// Containers outlive their node agent on purpose; tests and the chaos suite use this to leave
/// nothing running.
pub fn kill_recorded_under(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "state.json") {
                let Ok(Some(state)) = read_json::<ShimState>(&path) else { continue };
                if let Some(group) = state.live_group() {
                    let _ = killpg(group, Signal::SIGKILL);
                }
                if let Some(shim) = state.shim_pid.filter(|&pid| is_alive(pid, state.shim_start)) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(shim), Signal::SIGKILL);
                }
            }
        }
    }
}

/// Kubernetes' reason for an exit code (the OOM case is decided by the shim).
pub(crate) fn reason_for(exit_code: i32) -> &'static str {
    if exit_code == 0 { "Completed" } else { "Error" }
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `value` atomically. `private` files (they hold the container's
/// environment, service-account token included) are readable by their owner only.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T, private: bool) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    // No fsync: these records only need to survive a restart of the kubelet or the shim, not
    // of the machine (which ends every container anyway); the rename keeps them whole. An
    // fsync per write cost ~0.3 s per container when 50 pods start at once next to the masters.
    let options = FileOptions::UNSYNCED.mode(if private { 0o600 } else { 0o644 });
    write_atomic(path, &bytes, options)
}

/// The start time (clock ticks since boot) of a process that exists and is not a zombie.
pub(crate) fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    // Field 22 of stat(5); `fields` starts at field 3.
    fields.get(19)?.parse().ok()
}

/// Whether `pid` still is the process that started at `start` (any process, if unknown).
pub(crate) fn is_alive(pid: i32, start: Option<u64>) -> bool {
    match (start_ticks(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The container's current state, from its directory. A container whose shim is gone without
/// having recorded the exit (the shim was SIGKILLed, the machine's OOM killer took it) is
/// reported — and recorded — as killed: exit code 137, reason Error, after its remaining
/// processes are SIGKILLed so that nothing runs unsupervised.
pub(crate) fn observe(dir: &Path) -> io::Result<ContainerState> {
    let state: Option<ShimState> = read_json(&dir.join(STATE_FILE))?;
    let Some(state) = state else {
        return Ok(not_started(dir)?.unwrap_or(ContainerState::Created));
    };
    if let Some(exited @ ContainerState::Exited { .. }) = state.state() {
        return Ok(exited);
    }
    let shim_alive = state.shim_pid.is_some_and(|pid| is_alive(pid, state.shim_start));
    if shim_alive {
        return Ok(state.state().unwrap_or(ContainerState::Created));
    }
    // The shim records the exit before it exits: read again, in case it just did.
    let state: ShimState = read_json(&dir.join(STATE_FILE))?.unwrap_or_default();
    if let Some(exited @ ContainerState::Exited { .. }) = state.state() {
        return Ok(exited);
    }
    if state.shim_pid.is_none() {
        return Ok(not_started(dir)?.unwrap_or(ContainerState::Created));
    }
    if let Some(group) = state.live_group() {
        tracing::warn!(dir = %dir.display(), pid = group.as_raw(), "the shim is gone; killing the container");
        let _ = killpg(group, Signal::SIGKILL);
    }
    let finished = ShimState {
        finished_at: Some(Timestamp::now()),
        exit_code: Some(if state.pid.is_some() { 137 } else { 128 }),
        reason: Some("Error".to_string()),
        ..state
    };
    write_json(&dir.join(STATE_FILE), &finished, false)?;
    Ok(finished.state().unwrap_or(ContainerState::Created))
}

/// A container left "being started" for too long by a kubelet that crashed is recorded as
/// failed; `None` while it may still be starting.
fn not_started(dir: &Path) -> io::Result<Option<ContainerState>> {
    let Some(config) = read_json::<ContainerConfig>(&dir.join(CONFIG_FILE))? else {
        return Ok(None);
    };
    let age = Timestamp::now().duration_since(config.created_at);
    if age < jiff::SignedDuration::try_from(START_TIMEOUT).unwrap_or_default() {
        return Ok(None);
    }
    let failed = ShimState {
        finished_at: Some(Timestamp::now()),
        exit_code: Some(128),
        reason: Some("Error".to_string()),
        error: Some("the container was never started".to_string()),
        ..ShimState::default()
    };
    write_json(&dir.join(STATE_FILE), &failed, false)?;
    Ok(failed.state())
}
