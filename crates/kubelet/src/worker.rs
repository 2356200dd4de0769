//! One pod worker per pod: makes the runtime match the pod's spec, restarts containers by the
//! restart policy with back-off, runs probes, reports status, and on deletion stops the
//! containers gracefully and removes the pod object.
//!
//! A worker never runs two syncs of its pod at once, and it keeps its pod running from the
//! last spec it saw when no master answers.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authentication::v1::TokenRequestSpec;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::ContainerState as KubeState;
use k8s_openapi::api::core::v1::ContainerStateRunning;
use k8s_openapi::api::core::v1::ContainerStateTerminated;
use k8s_openapi::api::core::v1::ContainerStateWaiting;
use k8s_openapi::api::core::v1::ContainerStatus;
use k8s_openapi::api::core::v1::HostIP;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::api::core::v1::PodIP;
use k8s_openapi::api::core::v1::PodStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::Client;
use kube::api::DeleteParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kube::api::Preconditions;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trireme_util::fs::FileOptions;
use trireme_util::fs::write_atomic;

use crate::config::KubeletConfig;
use crate::events::Kind;
use crate::events::Recorder;
use crate::probe;
use crate::probe::Prober;
use crate::runtime::ContainerInfo;
use crate::runtime::ContainerRuntime;
use crate::runtime::ContainerState;
use crate::runtime::PodRef;
use crate::runtime::RuntimeError;
use crate::runtime::Sandbox;
use crate::spec;

/// First restart back-off; it doubles up to [`MAX_BACKOFF`] and resets after a container ran
/// for [`MAX_BACKOFF`] without exiting.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A worker syncs at least this often (probes and back-off have their own deadlines).
const RESYNC: Duration = Duration::from_secs(5);

/// What a worker is told about its pod: the latest object, or `None` once the pod is gone
/// from the API. A closed channel means the kubelet is shutting down: containers keep running.
pub type PodUpdates = watch::Receiver<Option<Arc<Pod>>>;

/// Why a pod's service-account token could not be written (the pod waits in
/// `ContainerCreating` with this message).
#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error("TokenRequest for service account {account:?}: {source}")]
    Request {
        account: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What every worker shares.
pub struct Shared {
    pub client: Client,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub events: Recorder,
    pub config: KubeletConfig,
    pub shutdown: CancellationToken,
}

/// The kubelet's view of one container of the pod.
#[derive(Debug, Default)]
struct Slot {
    current: Option<ContainerInfo>,
    previous: Option<ContainerInfo>,
    /// Why the container is not running, when it is waiting.
    waiting: Option<(String, String)>,
    backoff: Duration,
    not_before: Option<Instant>,
    startup: Option<Prober>,
    liveness: Option<Prober>,
    readiness: Option<Prober>,
    ready: bool,
    started: bool,
}

impl Slot {
    fn restart_count(&self) -> i32 {
        self.current.as_ref().map(|c| c.attempt as i32).unwrap_or(0)
    }

    fn running(&self) -> bool {
        matches!(self.current.as_ref().map(|c| &c.state), Some(ContainerState::Running { .. }))
    }

    fn exit_code(&self) -> Option<i32> {
        match self.current.as_ref().map(|c| &c.state) {
            Some(ContainerState::Exited { exit_code, .. }) => Some(*exit_code),
            _ => None,
        }
    }
}

/// One pod's worker state.
struct Worker {
    shared: Arc<Shared>,
    pod: PodRef,
    sandbox: Option<Sandbox>,
    init: BTreeMap<String, Slot>,
    apps: BTreeMap<String, Slot>,
    conditions: HashMap<String, (String, Time)>,
    start_time: Option<Time>,
    status: watch::Sender<Option<PodStatus>>,
    service_account_dir: Option<PathBuf>,
    token_expires: Option<Instant>,
    /// Set once the pod reached Succeeded or Failed: nothing is restarted any more.
    terminal: bool,
}

/// Runs the worker of pod `pod` until it is gone (or the kubelet shuts down). `adopted` are
/// the pod's containers that already exist (a restarted kubelet).
pub async fn run(shared: Arc<Shared>, pod: PodRef, mut updates: PodUpdates, adopted: Vec<ContainerInfo>) {
    let (status_tx, status_rx) = watch::channel(None);
    let reporter = tokio::spawn(report_status(shared.clone(), pod.clone(), status_rx));
    let mut worker = Worker {
        shared: shared.clone(),
        pod: pod.clone(),
        sandbox: None,
        init: BTreeMap::new(),
        apps: BTreeMap::new(),
        conditions: HashMap::new(),
        start_time: None,
        status: status_tx,
        service_account_dir: None,
        token_expires: None,
        terminal: false,
    };
    worker.adopt(adopted);
    let mut last: Option<Arc<Pod>> = None;
    loop {
        let latest = updates.borrow_and_update().clone();
        match latest {
            Some(p) if p.metadata.deletion_timestamp.is_none() => {
                worker.sync(&p).await;
                last = Some(p);
            }
            Some(p) => {
                worker.terminate(&p).await;
                worker.delete_from_api(&p).await;
                break;
            }
            None => {
                if let Some(p) = &last {
                    worker.terminate(p).await;
                } else {
                    worker.stop_everything(Duration::from_secs(30)).await;
                }
                break;
            }
        }
        let deadline = worker.next_deadline();
        let exits = worker.exits();
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { break },
            _ = exits => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shared.shutdown.cancelled() => break,
        }
    }
    drop(worker);
    let _ = reporter.await;
}

impl Worker {
    /// Takes over the containers a previous kubelet started.
    fn adopt(&mut self, mut adopted: Vec<ContainerInfo>) {
        adopted.sort_by_key(|c| c.attempt);
        for info in adopted {
            // Init and app containers share the name space of a pod; which map they belong to
            // is decided on the first sync, from the spec.
            let slot = self.apps.entry(info.name.clone()).or_default();
            slot.previous = slot.current.take();
            if matches!(info.state, ContainerState::Running { .. }) {
                // It has been running: assume it was started and ready until probes say
                // otherwise, so a kubelet restart does not flap readiness.
                slot.started = true;
                slot.ready = true;
            }
            slot.current = Some(info);
        }
    }

    fn pod_ip(&self) -> Option<std::net::IpAddr> {
        self.sandbox.as_ref().map(|s| s.ip)
    }

    /// One pass: sandbox, init containers in order, then app containers and their probes;
    /// then the status.
    async fn sync(&mut self, pod: &Pod) {
        let Some(spec) = pod.spec.as_ref() else { return };
        // A pod that has finished (as the API says, e.g. before a kubelet restart) is never
        // started again.
        if matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
            self.terminal = true;
        }
        // Slots adopted before the spec was known may be init containers.
        for c in spec.init_containers.iter().flatten() {
            if let Some(slot) = self.apps.remove(&c.name) {
                self.init.insert(c.name.clone(), slot);
            }
        }
        if self.start_time.is_none() {
            self.start_time =
                pod.status.as_ref().and_then(|s| s.start_time.clone()).or_else(|| Some(Time(Timestamp::now())));
        }
        if self.sandbox.is_none() {
            match self.shared.runtime.create_sandbox(&self.pod).await {
                Ok(sandbox) => self.sandbox = Some(sandbox),
                Err(e) => {
                    tracing::warn!(pod = %self.pod.name, error = %e, "cannot create the pod sandbox");
                    self.not_started(pod, format!("sandbox: {e}"));
                    return;
                }
            }
        }
        let token_started = Instant::now();
        let token = self.ensure_service_account_token(pod).await;
        tracing::debug!(pod = %self.pod.name, took = ?token_started.elapsed(), "service-account token");
        if let Err(e) = token {
            tracing::warn!(pod = %self.pod.name, error = %e, "cannot get a service-account token");
            self.not_started(pod, format!("service-account token: {e}"));
            return;
        }
        self.refresh().await;
        let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        if !self.terminal {
            let initialized = self.sync_init(pod, &policy).await;
            if initialized {
                for container in spec.containers.iter() {
                    self.sync_app(pod, container, &policy).await;
                }
                self.run_probes(pod).await;
            }
        }
        let known = self.init.values().chain(self.apps.values()).any(|s| s.current.is_some());
        if !self.terminal || known {
            self.publish(pod);
        }
    }

    /// Reports every container as still being created, for `why`, when the pod cannot start
    /// yet (no sandbox, no token); the next sync tries again.
    fn not_started(&mut self, pod: &Pod, why: String) {
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            self.apps.entry(c.name.clone()).or_default().waiting = Some(("ContainerCreating".into(), why.clone()));
        }
        self.publish(pod);
    }

    /// Reads every known container's state from the runtime.
    async fn refresh(&mut self) {
        let runtime = self.shared.runtime.clone();
        for slot in self.init.values_mut().chain(self.apps.values_mut()) {
            if let Some(current) = &slot.current {
                match runtime.container(&current.id).await {
                    Ok(info) => slot.current = Some(info),
                    Err(RuntimeError::NotFound(_)) => slot.current = None,
                    Err(e) => tracing::debug!(error = %e, "cannot read container state"),
                }
            }
        }
    }

    /// Runs init containers one at a time; true once all have succeeded.
    async fn sync_init(&mut self, pod: &Pod, policy: &str) -> bool {
        let Some(spec) = pod.spec.as_ref() else { return false };
        for container in spec.init_containers.iter().flatten() {
            let slot = self.init.entry(container.name.clone()).or_default();
            match (slot.current.is_some(), slot.exit_code()) {
                (true, Some(0)) => continue,
                (true, None) => return false,
                (true, Some(_)) => {
                    if policy == "Never" {
                        self.terminal = true;
                        return false;
                    }
                    self.start(pod, container, true).await;
                    return false;
                }
                (false, _) => {
                    self.start(pod, container, true).await;
                    return false;
                }
            }
        }
        true
    }

    async fn sync_app(&mut self, pod: &Pod, container: &Container, policy: &str) {
        let slot = self.apps.entry(container.name.clone()).or_default();
        match (slot.current.is_some(), slot.exit_code()) {
            (true, None) => {}
            (false, _) => self.start(pod, container, false).await,
            (true, Some(code)) => {
                let restart = match policy {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                };
                if restart {
                    self.start(pod, container, false).await;
                }
            }
        }
    }

    /// Starts (a new attempt of) `container`, unless its back-off has not passed.
    async fn start(&mut self, pod: &Pod, container: &Container, init: bool) {
        let now = Instant::now();
        let Some(sandbox) = self.sandbox.clone() else { return };
        let slot = if init { self.init.entry(container.name.clone()) } else { self.apps.entry(container.name.clone()) }
            .or_default();
        if let Some(current) = &slot.current {
            // A restart: back off, doubling, unless the last run was long and healthy.
            let ran_long = match &current.state {
                ContainerState::Exited { started_at: Some(s), finished_at, .. } => {
                    finished_at.duration_since(*s).as_secs_f64() >= MAX_BACKOFF.as_secs_f64()
                }
                _ => false,
            };
            if ran_long {
                slot.backoff = Duration::ZERO;
                slot.not_before = None;
            }
            match slot.not_before {
                None => {
                    slot.backoff =
                        if slot.backoff.is_zero() { INITIAL_BACKOFF } else { (slot.backoff * 2).min(MAX_BACKOFF) };
                    slot.not_before = Some(now + slot.backoff);
                    if !ran_long && !slot.backoff.is_zero() {
                        slot.waiting = Some((
                            "CrashLoopBackOff".into(),
                            format!(
                                "back-off {:?} restarting failed container={} pod={}",
                                slot.backoff, container.name, self.pod.name
                            ),
                        ));
                        self.shared.events.record(
                            &self.pod,
                            Some(&container.name),
                            Kind::Warning,
                            "BackOff",
                            format!("Back-off restarting failed container {} in pod {}", container.name, self.pod.name),
                        );
                        return;
                    }
                }
                Some(t) if t > now => return,
                Some(_) => {}
            }
        }
        let attempt = slot.current.as_ref().map(|c| c.attempt + 1).unwrap_or(0);
        let ctx = spec::PodContext {
            pod,
            pod_ip: sandbox.ip,
            node_ip: self.shared.config.node_ip,
            node_name: &self.shared.config.node_name,
            service_account_dir: self.service_account_dir.as_deref(),
        };
        let container_spec = match spec::container_spec(&self.shared.client, &ctx, container, attempt).await {
            Ok(s) => s,
            Err(e) => {
                slot.waiting = Some(("CreateContainerConfigError".into(), e.0));
                return;
            }
        };
        let start_began = Instant::now();
        let started = self.shared.runtime.start_container(&sandbox, &container_spec).await;
        tracing::debug!(pod = %self.pod.name, container = %container.name, took = ?start_began.elapsed(), "runtime start");
        match started {
            Ok(id) => {
                tracing::info!(pod = %self.pod.name, container = %container.name, attempt, "started container");
                self.shared.events.record(
                    &self.pod,
                    Some(&container.name),
                    Kind::Normal,
                    "Started",
                    format!("Started container {}", container.name),
                );
                let info = match self.shared.runtime.container(&id).await {
                    Ok(info) => info,
                    Err(_) => ContainerInfo {
                        id: id.clone(),
                        pod: self.pod.clone(),
                        name: container.name.clone(),
                        attempt,
                        image: container_spec.image.clone(),
                        image_id: String::new(),
                        state: ContainerState::Running { started_at: Timestamp::now() },
                    },
                };
                // Keep the previous attempt for `kubectl logs --previous`; drop the one before.
                if let Some(old) = slot.previous.take() {
                    let _ = self.shared.runtime.remove_container(&old.id).await;
                }
                slot.previous = slot.current.take();
                slot.current = Some(info);
                slot.waiting = None;
                slot.not_before = None;
                slot.ready = false;
                slot.started = container.startup_probe.is_none();
                slot.startup = container.startup_probe.clone().map(|p| Prober::new(p, now));
                slot.liveness = container.liveness_probe.clone().map(|p| Prober::new(p, now));
                slot.readiness = container.readiness_probe.clone().map(|p| Prober::new(p, now));
            }
            Err(e @ RuntimeError::ImageNotFound { .. }) => {
                self.shared.events.record(&self.pod, Some(&container.name), Kind::Warning, "Failed", e.to_string());
                slot.waiting = Some(("ErrImageNeverPull".into(), e.to_string()));
                slot.not_before = Some(now + INITIAL_BACKOFF * 5);
            }
            Err(e) => {
                tracing::warn!(pod = %self.pod.name, container = %container.name, error = %e, "cannot start container");
                self.shared.events.record(&self.pod, Some(&container.name), Kind::Warning, "Failed", e.to_string());
                slot.waiting = Some(("CreateContainerError".into(), e.to_string()));
                slot.not_before = Some(now + INITIAL_BACKOFF * 2);
            }
        }
    }

    /// Runs the probes that are due; a failed liveness or startup probe kills the container
    /// (it is restarted by the policy on the next pass).
    async fn run_probes(&mut self, pod: &Pod) {
        let Some(ip) = self.pod_ip() else { return };
        let Some(spec) = pod.spec.as_ref() else { return };
        let grace = Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
        let runtime = self.shared.runtime.clone();
        let now = Instant::now();
        for container in spec.containers.iter() {
            let Some(slot) = self.apps.get_mut(&container.name) else { continue };
            if !slot.running() {
                slot.ready = false;
                continue;
            }
            let Some(id) = slot.current.as_ref().map(|c| c.id.clone()) else { continue };
            if !slot.started {
                if let Some(p) = slot.startup.as_mut().filter(|p| p.due() <= now) {
                    let outcome = probe::run(&p.probe, container, ip, runtime.as_ref(), &id).await;
                    match p.record(outcome, Instant::now()) {
                        Some(true) => slot.started = true,
                        Some(false) => {
                            tracing::info!(pod = %self.pod.name, container = %container.name, why = ?p.last_failure, "startup probe failed; killing");
                            let _ = runtime.stop_container(&id, grace).await;
                        }
                        None => {}
                    }
                }
                continue;
            }
            if let Some(p) = slot.liveness.as_mut().filter(|p| p.due() <= now) {
                let outcome = probe::run(&p.probe, container, ip, runtime.as_ref(), &id).await;
                if p.record(outcome, Instant::now()) == Some(false) {
                    tracing::info!(pod = %self.pod.name, container = %container.name, why = ?p.last_failure, "liveness probe failed; restarting");
                    let why = p.last_failure.clone().unwrap_or_default();
                    let events = &self.shared.events;
                    events.record(
                        &self.pod,
                        Some(&container.name),
                        Kind::Warning,
                        "Unhealthy",
                        format!("Liveness probe failed: {why}"),
                    );
                    events.record(
                        &self.pod,
                        Some(&container.name),
                        Kind::Normal,
                        "Killing",
                        format!("Container {} failed liveness probe, will be restarted", container.name),
                    );
                    let _ = runtime.stop_container(&id, grace).await;
                    slot.ready = false;
                    continue;
                }
            }
            match slot.readiness.as_mut() {
                None => slot.ready = true,
                Some(p) => {
                    if p.due() <= now {
                        let outcome = probe::run(&p.probe, container, ip, runtime.as_ref(), &id).await;
                        if p.record(outcome, Instant::now()) == Some(false) {
                            let why = p.last_failure.clone().unwrap_or_default();
                            self.shared.events.record(
                                &self.pod,
                                Some(&container.name),
                                Kind::Warning,
                                "Unhealthy",
                                format!("Readiness probe failed: {why}"),
                            );
                        }
                    }
                    slot.ready = p.verdict == Some(true);
                }
            }
        }
    }

    /// When the worker must look again even if nothing happens.
    fn next_deadline(&self) -> Instant {
        let mut next = Instant::now() + RESYNC;
        for slot in self.init.values().chain(self.apps.values()) {
            if let Some(t) = slot.not_before {
                next = next.min(t);
            }
            if slot.running() {
                for p in [&slot.startup, &slot.liveness, &slot.readiness].into_iter().flatten() {
                    next = next.min(p.due());
                }
            }
        }
        if let Some(t) = self.token_expires {
            next = next.min(t);
        }
        next.max(Instant::now() + Duration::from_millis(20))
    }

    /// Resolves when any running container exits.
    fn exits(&self) -> futures::future::BoxFuture<'static, ()> {
        let runtime = self.shared.runtime.clone();
        let ids: Vec<String> = self
            .init
            .values()
            .chain(self.apps.values())
            .filter(|s| s.running())
            .filter_map(|s| s.current.as_ref().map(|c| c.id.clone()))
            .collect();
        async move {
            if ids.is_empty() {
                return futures::future::pending().await;
            }
            let mut waits: FuturesUnordered<_> = ids
                .iter()
                .map(|id| {
                    let runtime = runtime.clone();
                    let id = id.clone();
                    async move { runtime.wait_container(&id).await }
                })
                .collect();
            let _ = waits.next().await;
        }
        .boxed()
    }

    /// Writes a fresh service-account token for the pod, when it mounts one and the current
    /// one is missing or near its end.
    async fn ensure_service_account_token(&mut self, pod: &Pod) -> Result<(), TokenError> {
        let Some(spec) = pod.spec.as_ref() else { return Ok(()) };
        if spec.automount_service_account_token == Some(false) {
            return Ok(());
        }
        if self.service_account_dir.is_some() && self.token_expires.is_some_and(|t| t > Instant::now()) {
            return Ok(());
        }
        let namespace = self.pod.namespace.clone();
        let account = spec.service_account_name.clone().unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod.name.clone()),
                    uid: Some(self.pod.uid.clone()),
                }),
            },
            ..Default::default()
        };
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.shared.client.clone(), &namespace);
        let token: TokenRequest = match accounts.create_token_request(&account, &PostParams::default(), &request).await
        {
            Ok(t) => t,
            // A token written before (a restarted kubelet, or no master answering) still serves.
            Err(e) if self.existing_token_dir().is_some() => {
                tracing::debug!(error = %e, "keeping the service-account token written before");
                self.service_account_dir = self.existing_token_dir();
                self.token_expires = Some(Instant::now() + Duration::from_secs(60));
                return Ok(());
            }
            Err(source) => return Err(TokenError::Request { account, source }),
        };
        let dir = self.token_dir();
        std::fs::create_dir_all(&dir).map_err(|source| TokenError::Write { path: dir.clone(), source })?;
        let token_value = token.status.map(|s| s.token).unwrap_or_default();
        // Unsynced, like the pod checkpoints: these only have to outlive the kubelet, and the
        // next refresh rewrites them.
        let write = |name: &str, data: &[u8]| {
            let path = dir.join(name);
            write_atomic(&path, data, FileOptions::UNSYNCED).map_err(|source| TokenError::Write { path, source })
        };
        write("token", token_value.as_bytes())?;
        write("namespace", namespace.as_bytes())?;
        if let Some(ca) = &self.shared.config.ca_pem {
            write("ca.crt", ca.as_bytes())?;
        }
        self.service_account_dir = Some(dir);
        // Refresh at 80 % of the lifetime, as the kubelet does.
        self.token_expires = Some(Instant::now() + Duration::from_secs(2880));
        Ok(())
    }

    fn token_dir(&self) -> PathBuf {
        self.shared.config.root_dir.join("pods").join(&self.pod.uid).join("serviceaccount")
    }

    fn existing_token_dir(&self) -> Option<PathBuf> {
        let dir = self.token_dir();
        dir.join("token").exists().then_some(dir)
    }

    /// Stops every container (SIGTERM, then SIGKILL after the pod's grace period) and removes
    /// the sandbox.
    async fn terminate(&mut self, pod: &Pod) {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0);
        tracing::info!(pod = %self.pod.name, grace, "stopping the pod");
        for (name, slot) in self.init.iter().chain(self.apps.iter()) {
            if slot.running() {
                self.shared.events.record(
                    &self.pod,
                    Some(name),
                    Kind::Normal,
                    "Killing",
                    format!("Stopping container {name}"),
                );
            }
        }
        self.stop_everything(Duration::from_secs(grace as u64)).await;
    }

    async fn stop_everything(&mut self, grace: Duration) {
        let runtime = self.shared.runtime.clone();
        let stops: FuturesUnordered<_> = self
            .init
            .values()
            .chain(self.apps.values())
            .filter(|s| s.running())
            .filter_map(|s| s.current.as_ref().map(|c| c.id.clone()))
            .map(|id| {
                let runtime = runtime.clone();
                async move {
                    if let Err(e) = runtime.stop_container(&id, grace).await {
                        tracing::warn!(container = %id, error = %e, "cannot stop container");
                    }
                }
            })
            .collect();
        stops.collect::<Vec<()>>().await;
        if let Err(e) = runtime.remove_sandbox(&self.pod).await {
            tracing::warn!(pod = %self.pod.name, error = %e, "cannot remove the sandbox");
        }
        let _ = tokio::fs::remove_dir_all(self.shared.config.root_dir.join("pods").join(&self.pod.uid)).await;
    }

    /// Removes the pod object once its containers are gone (the last step of a graceful
    /// delete), retrying while no master answers.
    async fn delete_from_api(&self, pod: &Pod) {
        let pods: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.pod.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        loop {
            match pods.delete(&self.pod.name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) => tracing::debug!(pod = %self.pod.name, error = %e, "cannot delete the pod yet"),
            }
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Computes the pod's status and hands it to the reporter if it changed.
    fn publish(&mut self, pod: &Pod) {
        let status = self.compute_status(pod);
        // Someone else may have changed what the API holds (the node lifecycle controller marks
        // the pods of an unreachable node not ready): then the same status is sent again.
        let api_differs = pod.status.as_ref().map(summary) != Some(summary(&status));
        self.status.send_if_modified(|current| {
            if current.as_ref() == Some(&status) && !api_differs {
                false
            } else {
                let changed = current.as_ref() != Some(&status);
                *current = Some(status);
                changed || api_differs
            }
        });
    }

    fn compute_status(&mut self, pod: &Pod) -> PodStatus {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let init_statuses: Vec<ContainerStatus> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| container_status(c, self.init.get(&c.name), self.shared.runtime.name(), true))
            .collect();
        let initialized =
            spec.init_containers.iter().flatten().all(|c| self.init.get(&c.name).and_then(Slot::exit_code) == Some(0));
        let statuses: Vec<ContainerStatus> = spec
            .containers
            .iter()
            .map(|c| {
                let mut s = container_status(c, self.apps.get(&c.name), self.shared.runtime.name(), false);
                if !initialized && s.state.as_ref().is_some_and(|st| st.waiting.is_some()) {
                    s.state = Some(KubeState {
                        waiting: Some(ContainerStateWaiting { reason: Some("PodInitializing".into()), message: None }),
                        ..Default::default()
                    });
                }
                s
            })
            .collect();
        let init_failed = policy == "Never" && self.init.values().any(|s| s.exit_code().is_some_and(|c| c != 0));
        let phase = phase(&policy, &statuses, initialized, init_failed);
        if phase == "Succeeded" || phase == "Failed" {
            self.terminal = true;
        }
        let containers_ready = initialized && !statuses.is_empty() && statuses.iter().all(|s| s.ready);
        let scheduled = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled").cloned());
        let sandbox_ready = self.sandbox.is_some();
        let conditions = vec![
            self.condition("PodReadyToStartContainers", sandbox_ready),
            self.condition("Initialized", initialized),
            self.condition("Ready", containers_ready),
            self.condition("ContainersReady", containers_ready),
            scheduled.unwrap_or_else(|| self.condition("PodScheduled", true)),
        ];
        let pod_ip = self.pod_ip().map(|ip| ip.to_string());
        let host_ip = self.shared.config.node_ip.to_string();
        PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ip: pod_ip.clone(),
            pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
            start_time: self.start_time.clone(),
            init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
            container_statuses: Some(statuses),
            qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()).or_else(|| Some(qos_class(&spec))),
            ..Default::default()
        }
    }

    /// A pod condition that keeps its transition time while its status stays the same.
    fn condition(&mut self, type_: &str, ok: bool) -> PodCondition {
        let status = if ok { "True" } else { "False" };
        let entry =
            self.conditions.entry(type_.to_string()).or_insert_with(|| (status.to_string(), Time(Timestamp::now())));
        if entry.0 != status {
            *entry = (status.to_string(), Time(Timestamp::now()));
        }
        let reason = match (type_, ok) {
            ("Ready" | "ContainersReady", false) => Some("ContainersNotReady".to_string()),
            ("Initialized", false) => Some("ContainersNotInitialized".to_string()),
            _ => None,
        };
        PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            last_transition_time: Some(entry.1.clone()),
            reason,
            ..Default::default()
        }
    }
}

/// What of a pod's status the kubelet insists on: phase, IP, condition statuses and each
/// container's readiness, restarts and state.
fn summary(status: &PodStatus) -> Vec<String> {
    let mut out = vec![status.phase.clone().unwrap_or_default(), status.pod_ip.clone().unwrap_or_default()];
    for c in status.conditions.iter().flatten() {
        out.push(format!("{}={}", c.type_, c.status));
    }
    for c in status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten()) {
        let state = c.state.as_ref().map(|s| {
            if s.running.is_some() {
                "running"
            } else if s.terminated.is_some() {
                "terminated"
            } else {
                "waiting"
            }
        });
        out.push(format!("{} {} {} {:?}", c.name, c.ready, c.restart_count, state));
    }
    out
}

/// The pod phase from its containers, as the kubelet computes it.
fn phase(policy: &str, statuses: &[ContainerStatus], initialized: bool, init_failed: bool) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if !initialized {
        return "Pending";
    }
    let running = statuses.iter().filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some())).count();
    let waiting = statuses.iter().filter(|s| s.state.as_ref().is_none_or(|st| st.waiting.is_some())).count();
    let terminated: Vec<i32> = statuses
        .iter()
        .filter_map(|s| s.state.as_ref().and_then(|st| st.terminated.as_ref()).map(|t| t.exit_code))
        .collect();
    let restarting =
        |s: &ContainerStatus| s.restart_count > 0 || s.last_state.as_ref().is_some_and(|l| l.terminated.is_some());
    if waiting > 0
        && statuses.iter().filter(|s| s.state.as_ref().is_none_or(|st| st.waiting.is_some())).all(|s| !restarting(s))
        && running == 0
        && terminated.is_empty()
    {
        return "Pending";
    }
    if running > 0 || waiting > 0 {
        return if statuses.iter().any(|s| s.state.as_ref().is_none_or(|st| st.waiting.is_some()) && !restarting(s)) {
            "Pending"
        } else {
            "Running"
        };
    }
    // Every container has terminated.
    match policy {
        "Always" => "Running",
        _ if terminated.iter().all(|c| *c == 0) => "Succeeded",
        "OnFailure" => "Running",
        _ => "Failed",
    }
}

fn qos_class(spec: &k8s_openapi::api::core::v1::PodSpec) -> String {
    let containers: Vec<&Container> = spec.containers.iter().collect();
    let has = |c: &Container, which: &str| {
        c.resources.as_ref().is_some_and(|r| {
            let map = if which == "limits" { &r.limits } else { &r.requests };
            map.as_ref().is_some_and(|m| !m.is_empty())
        })
    };
    if containers.iter().all(|c| !has(c, "limits") && !has(c, "requests")) {
        return "BestEffort".into();
    }
    let guaranteed = containers.iter().all(|c| {
        let r = c.resources.as_ref();
        let limits = r.and_then(|r| r.limits.as_ref());
        let requests = r.and_then(|r| r.requests.as_ref());
        ["cpu", "memory"].iter().all(|k| {
            let l = limits.and_then(|m| m.get(*k));
            l.is_some() && requests.and_then(|m| m.get(*k)).is_none_or(|q| Some(q) == l)
        })
    });
    if guaranteed { "Guaranteed".into() } else { "Burstable".into() }
}

fn terminated(info: &ContainerInfo, runtime: &str) -> Option<ContainerStateTerminated> {
    match &info.state {
        ContainerState::Exited { started_at, finished_at, exit_code, reason } => Some(ContainerStateTerminated {
            exit_code: *exit_code,
            reason: Some(reason.clone()),
            started_at: started_at.map(Time),
            finished_at: Some(Time(*finished_at)),
            container_id: Some(format!("{runtime}://{}", info.id)),
            ..Default::default()
        }),
        _ => None,
    }
}

fn container_status(container: &Container, slot: Option<&Slot>, runtime: &str, init: bool) -> ContainerStatus {
    let image = container.image.clone().unwrap_or_default();
    let waiting = |reason: &str, message: Option<String>| KubeState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.to_string()), message }),
        ..Default::default()
    };
    let Some(slot) = slot else {
        return ContainerStatus {
            name: container.name.clone(),
            image: image.clone(),
            image_id: String::new(),
            state: Some(waiting(if init { "PodInitializing" } else { "ContainerCreating" }, None)),
            ..Default::default()
        };
    };
    let state = match (&slot.waiting, &slot.current) {
        (Some((reason, message)), _) => waiting(reason, Some(message.clone())),
        (None, Some(info)) => match &info.state {
            ContainerState::Running { started_at } => KubeState {
                running: Some(ContainerStateRunning { started_at: Some(Time(*started_at)) }),
                ..Default::default()
            },
            ContainerState::Created => waiting("ContainerCreating", None),
            ContainerState::Exited { .. } => KubeState { terminated: terminated(info, runtime), ..Default::default() },
        },
        (None, None) => waiting("ContainerCreating", None),
    };
    // A container waiting to be restarted shows its last run as lastState.
    let last = match (&slot.waiting, &slot.current) {
        (Some(_), Some(info)) => terminated(info, runtime),
        _ => slot.previous.as_ref().and_then(|p| terminated(p, runtime)),
    };
    let running = slot.running() && slot.waiting.is_none();
    ContainerStatus {
        name: container.name.clone(),
        image: slot.current.as_ref().map(|c| c.image.clone()).unwrap_or(image),
        image_id: slot.current.as_ref().map(|c| c.image_id.clone()).unwrap_or_default(),
        container_id: slot.current.as_ref().map(|c| format!("{runtime}://{}", c.id)),
        ready: running && slot.ready && slot.started,
        started: Some(running && slot.started),
        restart_count: slot.restart_count(),
        state: Some(state),
        last_state: last.map(|t| KubeState { terminated: Some(t), ..Default::default() }),
        ..Default::default()
    }
}

/// Sends the latest status of the pod to the API (merge patch of the status subresource),
/// retrying while no master answers; stops when the worker is dropped or the pod is gone.
async fn report_status(shared: Arc<Shared>, pod: PodRef, mut updates: watch::Receiver<Option<PodStatus>>) {
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &pod.namespace);
    loop {
        let Some(status) = updates.borrow_and_update().clone() else {
            if updates.changed().await.is_err() {
                return;
            }
            continue;
        };
        let patch = serde_json::json!({ "status": status });
        match pods.patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                if updates.changed().await.is_err() {
                    return;
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                tracing::debug!(pod = %pod.name, error = %e, "cannot report pod status; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shared.shutdown.cancelled() => return,
                }
                if !updates.has_changed().unwrap_or(false) {
                    updates.mark_changed();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, restarts: i32) -> ContainerStatus {
        let st = match state {
            "running" => KubeState { running: Some(Default::default()), ..Default::default() },
            "waiting" => KubeState { waiting: Some(Default::default()), ..Default::default() },
            code => KubeState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code.parse().unwrap_or(1),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        ContainerStatus { state: Some(st), restart_count: restarts, ..Default::default() }
    }

    #[test]
    fn phases_follow_containers_and_the_restart_policy() {
        assert_eq!(phase("Always", &[status("waiting", 0)], true, false), "Pending");
        assert_eq!(phase("Always", &[status("running", 0)], true, false), "Running");
        assert_eq!(phase("Always", &[status("waiting", 3)], true, false), "Running");
        assert_eq!(phase("Never", &[status("0", 0), status("0", 0)], true, false), "Succeeded");
        assert_eq!(phase("Never", &[status("0", 0), status("1", 0)], true, false), "Failed");
        assert_eq!(phase("OnFailure", &[status("0", 0)], true, false), "Succeeded");
        assert_eq!(phase("Always", &[status("running", 0)], false, false), "Pending");
        assert_eq!(phase("Never", &[status("waiting", 0)], false, true), "Failed");
    }
}
