//! One pod worker per pod: makes the runtime match the pod's spec, restarts containers by the
//! restart policy with back-off, runs probes, reports status, and on deletion stops the
//! containers gracefully and removes the pod object.
//!
//! A worker never runs two syncs of its pod at once, and it keeps its pod running from the
//! last spec it saw when no master answers. What to do is decided without I/O (`plan.rs`,
//! `status.rs`); the worker observes the runtime, does what the plan says and reports back.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authentication::v1::TokenRequestSpec;
use k8s_openapi::api::core::v1::Pod;
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
use crate::events::Recorder;
use crate::plan;
use crate::plan::Action;
use crate::plan::PodState;
use crate::plan::StartOutcome;
use crate::plan::StopReason;
use crate::probe;
use crate::runtime::ContainerInfo;
use crate::runtime::ContainerRuntime;
use crate::runtime::ContainerState;
use crate::runtime::PodRef;
use crate::runtime::RuntimeError;
use crate::runtime::Sandbox;
use crate::spec;
use crate::status;

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

/// One pod's worker state.
struct Worker {
    shared: Arc<Shared>,
    pod: PodRef,
    sandbox: Option<Sandbox>,
    /// The pod's containers as last observed, with their back-off and probes.
    state: PodState,
    conditions: status::Conditions,
    start_time: Option<Time>,
    status: watch::Sender<Option<PodStatus>>,
    service_account_dir: Option<PathBuf>,
    token_expires: Option<Instant>,
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
        state: PodState::default(),
        conditions: status::Conditions::default(),
        start_time: None,
        status: status_tx,
        service_account_dir: None,
        token_expires: None,
    };
    worker.state.adopt(adopted);
    let mut last: Option<Arc<Pod>> = None;
    loop {
        let latest = updates.borrow_and_update().clone();
        match latest {
            Some(p) if p.metadata.deletion_timestamp.is_none() => {
                worker.sync(&p).await;
                last = Some(p);
            }
            Some(p) => {
                worker.terminate(Some(&*p)).await;
                worker.delete_from_api(&p).await;
                break;
            }
            None => {
                worker.terminate(last.as_deref()).await;
                break;
            }
        }
        let deadline = worker.state.next_deadline(worker.token_expires, Instant::now());
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
    fn pod_ip(&self) -> Option<std::net::IpAddr> {
        self.sandbox.as_ref().map(|s| s.ip)
    }

    /// One pass: sandbox and token, then what the runtime has, then the containers to start
    /// and the probes that are due, as the plan says; then the status.
    async fn sync(&mut self, pod: &Pod) {
        let Some(spec) = pod.spec.as_ref() else { return };
        self.state.align(pod);
        if self.start_time.is_none() {
            self.start_time =
                pod.status.as_ref().and_then(|s| s.start_time.clone()).or_else(|| Some(Time(Timestamp::now())));
        }
        if self.sandbox.is_none() {
            match self.shared.runtime.create_sandbox(&self.pod).await {
                Ok(sandbox) => self.sandbox = Some(sandbox),
                Err(e) => {
                    tracing::warn!(pod = %self.pod.name, error = %e, "cannot create the pod sandbox");
                    self.state.not_started(spec, &format!("sandbox: {e}"));
                    self.publish(pod);
                    return;
                }
            }
        }
        let token_started = Instant::now();
        let token = self.ensure_service_account_token(pod).await;
        tracing::debug!(pod = %self.pod.name, took = ?token_started.elapsed(), "service-account token");
        if let Err(e) = token {
            tracing::warn!(pod = %self.pod.name, error = %e, "cannot get a service-account token");
            self.state.not_started(spec, &format!("service-account token: {e}"));
            self.publish(pod);
            return;
        }
        self.refresh().await;
        let actions = self.state.plan(pod, Instant::now());
        self.execute(Some(pod), actions).await;
        let probes = self.state.plan_probes(spec, Instant::now());
        self.execute(Some(pod), probes).await;
        if !self.state.terminal || self.state.any_known() {
            self.publish(pod);
        }
    }

    /// Reads every known container's state from the runtime.
    async fn refresh(&mut self) {
        let runtime = self.shared.runtime.clone();
        for slot in self.state.init.values_mut().chain(self.state.apps.values_mut()) {
            if let Some(current) = &slot.current {
                match runtime.container(&current.id).await {
                    Ok(info) => slot.current = Some(info),
                    Err(RuntimeError::NotFound(_)) => slot.current = None,
                    Err(e) => tracing::debug!(error = %e, "cannot read container state"),
                }
            }
        }
    }

    /// Does `actions` in order, and the actions their outcomes call for right after each.
    /// `pod` is the spec being synced (`None` when stopping a pod whose spec was never seen).
    async fn execute(&mut self, pod: Option<&Pod>, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let then = self.perform(pod, action).await;
            for next in then.into_iter().rev() {
                queue.push_front(next);
            }
        }
    }

    /// Does one action; returns what its outcome calls for (a start's or a probe's).
    async fn perform(&mut self, pod: Option<&Pod>, action: Action) -> Vec<Action> {
        let runtime = self.shared.runtime.clone();
        match action {
            Action::Start { container, init, attempt } => match pod {
                Some(pod) => self.start(pod, &container, init, attempt).await,
                None => vec![],
            },
            Action::Stop { container, id, grace, reason } => {
                match &reason {
                    StopReason::StartupProbe(why) => {
                        tracing::info!(pod = %self.pod.name, %container, %why, "startup probe failed; killing")
                    }
                    StopReason::LivenessProbe(why) => {
                        tracing::info!(pod = %self.pod.name, %container, %why, "liveness probe failed; restarting")
                    }
                    StopReason::DefinitionChanged => {
                        tracing::info!(pod = %self.pod.name, %container, "its image changed; restarting")
                    }
                }
                if let Err(e) = runtime.stop_container(&id, grace).await {
                    tracing::debug!(pod = %self.pod.name, %container, error = %e, "cannot stop container");
                }
                vec![]
            }
            Action::Remove { id } => {
                let _ = runtime.remove_container(&id).await;
                vec![]
            }
            Action::Probe { container, id, kind } => {
                let (Some(pod), Some(ip)) = (pod, self.pod_ip()) else { return vec![] };
                let Some(spec) = pod.spec.as_ref() else { return vec![] };
                let Some(c) = spec.containers.iter().find(|c| c.name == container) else { return vec![] };
                let Some(probe) = self.state.prober(&container, kind).map(|p| p.probe.clone()) else { return vec![] };
                let outcome = probe::run(&probe, c, ip, runtime.as_ref(), &id).await;
                self.state.probed(spec, &container, kind, outcome, Instant::now())
            }
            Action::Event { container, kind, reason, message } => {
                self.shared.events.record(&self.pod, container.as_deref(), kind, reason, message);
                vec![]
            }
            Action::StopPod { ids, grace } => {
                self.stop_pod(ids, grace).await;
                vec![]
            }
        }
    }

    /// Starts attempt `attempt` of the container `name`: its configuration, the runtime's start
    /// and what the runtime then reports; the plan takes the outcome.
    async fn start(&mut self, pod: &Pod, name: &str, init: bool, attempt: u32) -> Vec<Action> {
        let Some(spec) = pod.spec.as_ref() else { return vec![] };
        let containers = if init { spec.init_containers.as_deref().unwrap_or_default() } else { &spec.containers };
        let Some(container) = containers.iter().find(|c| c.name == name) else { return vec![] };
        let Some(sandbox) = self.sandbox.clone() else { return vec![] };
        let began = Instant::now();
        let runtime = self.shared.runtime.clone();
        let ctx = spec::PodContext {
            pod,
            pod_ip: sandbox.ip,
            node_ip: self.shared.config.node_ip,
            node_name: &self.shared.config.node_name,
            service_account_dir: self.service_account_dir.as_deref(),
        };
        let outcome = match spec::container_spec(&self.shared.client, &ctx, container, attempt).await {
            Err(e) => StartOutcome::ConfigError(e.0),
            Ok(container_spec) => {
                let start_began = Instant::now();
                let started = runtime.start_container(&sandbox, &container_spec).await;
                tracing::debug!(pod = %self.pod.name, container = %name, took = ?start_began.elapsed(), "runtime start");
                match started {
                    Ok(id) => {
                        tracing::info!(pod = %self.pod.name, container = %name, attempt, "started container");
                        let info = match runtime.container(&id).await {
                            Ok(info) => info,
                            Err(_) => ContainerInfo {
                                id: id.clone(),
                                pod: self.pod.clone(),
                                name: name.to_string(),
                                attempt,
                                image: container_spec.image.clone(),
                                image_id: String::new(),
                                state: ContainerState::Running { started_at: Timestamp::now() },
                            },
                        };
                        StartOutcome::Started(Box::new(info))
                    }
                    Err(e @ RuntimeError::ImageNotFound { .. }) => StartOutcome::ImageNotFound(e.to_string()),
                    Err(e) => {
                        tracing::warn!(pod = %self.pod.name, container = %name, error = %e, "cannot start container");
                        StartOutcome::Failed(e.to_string())
                    }
                }
            }
        };
        self.state.started(container, init, outcome, began)
    }

    /// Resolves when any running container exits.
    fn exits(&self) -> futures::future::BoxFuture<'static, ()> {
        let runtime = self.shared.runtime.clone();
        let ids = self.state.running_ids();
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

    /// Stops every running container (SIGTERM, then SIGKILL after the grace period) and
    /// removes the sandbox: `pod` is the last spec seen, which gives the grace period (30 s,
    /// and no events, without one).
    async fn terminate(&mut self, pod: Option<&Pod>) {
        let grace = pod.map(plan::termination_grace).unwrap_or(Duration::from_secs(30));
        if pod.is_some() {
            tracing::info!(pod = %self.pod.name, grace = grace.as_secs(), "stopping the pod");
        }
        let actions = self.state.plan_termination(grace, pod.is_some());
        self.execute(pod, actions).await;
    }

    /// Stops the containers `ids` at once, then removes the sandbox and the pod's files.
    async fn stop_pod(&mut self, ids: Vec<String>, grace: Duration) {
        let runtime = self.shared.runtime.clone();
        let stops: FuturesUnordered<_> = ids
            .into_iter()
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
        let facts = status::Facts {
            pod_ip: self.pod_ip(),
            host_ip: self.shared.config.node_ip,
            runtime: self.shared.runtime.name(),
            start_time: self.start_time.clone(),
        };
        let status = status::pod_status(pod, &mut self.state, &facts, &mut self.conditions, Timestamp::now());
        // Someone else may have changed what the API holds (the node lifecycle controller marks
        // the pods of an unreachable node not ready): then the same status is sent again.
        let api_differs = pod.status.as_ref().map(status::summary) != Some(status::summary(&status));
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
    use crate::runtime::fake::Call;
    use crate::runtime::fake::FakeRuntime;
    use axum::Json;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::Method;
    use axum::http::StatusCode;
    use axum::http::Uri;
    use axum::response::IntoResponse;
    use axum::response::Response;
    use serde_json::Value;
    use serde_json::json;

    /// What the API was sent: method, path and JSON body.
    type Sent = Arc<std::sync::Mutex<Vec<(Method, String, Value)>>>;

    /// An API server in memory, for what a worker sends: it records events, status patches and
    /// deletes and answers them as Kubernetes does for a pod that exists; anything else is 404.
    fn api() -> (Client, Sent) {
        let sent = Sent::default();
        let app = axum::Router::new().fallback(answer).with_state(sent.clone());
        (Client::new(app, "default"), sent)
    }

    async fn answer(State(sent): State<Sent>, method: Method, uri: Uri, body: Bytes) -> Response {
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = uri.path().to_string();
        sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((
            method.clone(),
            path.clone(),
            value.clone(),
        ));
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"}});
        match method.as_str() {
            "POST" if path.ends_with("/events") => (StatusCode::CREATED, Json(value)).into_response(),
            "PATCH" | "DELETE" if path.contains("/pods/") => Json(pod).into_response(),
            _ => (
                StatusCode::NOT_FOUND,
                Json(json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})),
            )
                .into_response(),
        }
    }

    /// A worker's world: the fake runtime, the API and a root directory.
    struct Node {
        runtime: Arc<FakeRuntime>,
        shared: Arc<Shared>,
        sent: Sent,
        _root: tempfile::TempDir,
    }

    impl Node {
        fn new() -> Node {
            let runtime = Arc::new(FakeRuntime::new());
            let (client, sent) = api();
            let root = tempfile::tempdir().expect("a temporary directory");
            let config =
                KubeletConfig { node_name: "node-1".into(), root_dir: root.path().to_path_buf(), ..Default::default() };
            let shared = Arc::new(Shared {
                client: client.clone(),
                runtime: runtime.clone(),
                events: Recorder::new(client, "node-1".into()),
                config,
                shutdown: CancellationToken::new(),
            });
            Node { runtime, shared, sent, _root: root }
        }

        /// Starts the worker of `pod`; the sender tells it about the pod from then on.
        fn run(
            &self,
            pod: Pod,
            adopted: Vec<ContainerInfo>,
        ) -> (watch::Sender<Option<Arc<Pod>>>, tokio::task::JoinHandle<()>) {
            let (tx, rx) = watch::channel(Some(Arc::new(pod)));
            let worker = tokio::spawn(run(self.shared.clone(), pod_ref(), rx, adopted));
            (tx, worker)
        }

        /// The id of attempt `attempt` of container `name`, once it runs.
        async fn running(&self, name: &str, attempt: u32) -> String {
            let running = |c: &&ContainerInfo| {
                c.name == name && c.attempt == attempt && matches!(c.state, ContainerState::Running { .. })
            };
            let found = self.runtime.until(|_, infos| infos.iter().find(&running).map(|c| c.id.clone())).await;
            found.unwrap_or_else(|| panic!("{name} attempt {attempt} never ran: {:?}", self.runtime.calls()))
        }

        /// The first status patch the API got that `wanted`, waiting for it (at most a minute
        /// of tokio time).
        async fn reported(&self, wanted: impl Fn(&Value) -> bool) -> Value {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = self.statuses().into_iter().find(&wanted) {
                    return status;
                }
                assert!(Instant::now() < deadline, "no such status reported: {:?}", self.statuses());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// The status patches the API got, in order.
        fn statuses(&self) -> Vec<Value> {
            let sent = self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            sent.iter()
                .filter(|(m, p, _)| m == Method::PATCH && p.ends_with("/status"))
                .map(|(_, _, v)| v["status"].clone())
                .collect()
        }
    }

    fn pod_ref() -> PodRef {
        PodRef { uid: "uid-web".into(), namespace: "default".into(), name: "web".into() }
    }

    /// Pod web (no service-account token: there is no TokenRequest here).
    fn pod(mut spec: Value) -> Pod {
        spec["automountServiceAccountToken"] = json!(false);
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
            "spec": spec,
        }))
        .expect("a pod")
    }

    fn container(name: &str) -> Value {
        json!({"name": name, "image": "busybox"})
    }

    /// The starts so far: container and attempt, with the time.
    fn starts(calls: &[Call]) -> Vec<(String, u32, Instant)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Start { container, attempt, at, .. } => Some((container.clone(), *attempt, *at)),
                _ => None,
            })
            .collect()
    }

    fn names(starts: &[(String, u32, Instant)]) -> Vec<&str> {
        starts.iter().map(|(name, _, _)| name.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_starts_its_init_containers_in_order_and_then_its_containers() {
        let node = Node::new();
        let pod = pod(json!({
            "initContainers": [container("init-a"), container("init-b")],
            "containers": [container("app"), container("sidecar")],
        }));
        let (_updates, worker) = node.run(pod, vec![]);

        tracing::info!("--- the first init container runs alone");
        let a = node.running("init-a", 0).await;
        assert_eq!(names(&starts(&node.runtime.calls())), ["init-a"]);
        node.runtime.exit(&a, 0);

        tracing::info!("--- then the second");
        let b = node.running("init-b", 0).await;
        assert_eq!(names(&starts(&node.runtime.calls())), ["init-a", "init-b"]);
        node.runtime.exit(&b, 0);

        tracing::info!("--- then the containers, and the pod runs");
        node.running("app", 0).await;
        node.running("sidecar", 0).await;
        assert_eq!(names(&starts(&node.runtime.calls())), ["init-a", "init-b", "app", "sidecar"]);
        let status = node.reported(|s| s["phase"] == "Running").await;
        assert_eq!(status["podIP"], "10.0.0.2");

        node.shared.shutdown.cancel();
        worker.await.expect("the worker ends");
        assert!(node.runtime.calls().iter().all(|c| !matches!(c, Call::Stop { .. })), "a shutdown leaves pods running");
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashing_container_is_restarted_after_one_two_then_four_seconds() {
        let node = Node::new();
        let (_updates, worker) = node.run(pod(json!({"containers": [container("app")]})), vec![]);
        for attempt in 0..4 {
            let id = node.running("app", attempt).await;
            if attempt < 3 {
                node.runtime.exit(&id, 1);
            }
        }
        let times: Vec<Instant> = starts(&node.runtime.calls()).into_iter().map(|(_, _, at)| at).collect();
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, [1, 2, 4].map(Duration::from_secs));
        let back_off = node.statuses().into_iter().any(|s| {
            s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1
        });
        assert!(back_off, "the API was told of the back-off: {:?}", node.statuses());
        node.shared.shutdown.cancel();
        worker.await.expect("the worker ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_failing_its_liveness_probe_is_stopped_and_restarted() {
        let node = Node::new();
        let pod = pod(json!({
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "app", "image": "busybox",
                "livenessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 2, "failureThreshold": 2},
            }],
        }));
        let (_updates, worker) = node.run(pod, vec![]);
        let id = node.running("app", 0).await;
        let healthy_until = Instant::now() + Duration::from_secs(10);
        tokio::time::sleep_until(healthy_until).await;
        assert_eq!(node.running("app", 0).await, id, "a passing probe keeps it running");

        tracing::info!("--- the probe fails twice in a row: stopped with the pod's grace period");
        node.runtime.exec_exits_with(&id, 1);
        let stop = node.runtime.until(|calls, _| {
            calls.iter().find_map(|c| match c {
                Call::Stop { id: stopped, grace, at } if *stopped == id => Some((*grace, *at)),
                _ => None,
            })
        });
        let (grace, stopped_at) = stop.await.expect("a stop");
        assert_eq!(grace, Duration::from_secs(5));
        assert!(stopped_at - healthy_until <= Duration::from_secs(4), "two failed probes, two seconds apart");

        tracing::info!("--- restarted after the first back-off");
        node.running("app", 1).await;
        let restarted_at = starts(&node.runtime.calls()).last().map(|(_, _, at)| *at).expect("a start");
        assert_eq!(restarted_at - stopped_at, Duration::from_secs(1));
        node.shared.shutdown.cancel();
        worker.await.expect("the worker ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_whose_image_is_missing_waits_in_err_image_never_pull_and_is_tried_again() {
        let node = Node::new();
        node.runtime.without_image("busybox");
        let (_updates, worker) = node.run(pod(json!({"containers": [container("app")]})), vec![]);
        let status =
            node.reported(|s| s["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull").await;
        let message = &status["containerStatuses"][0]["state"]["waiting"]["message"];
        assert_eq!(message, "image \"busybox\" not found: the fake runtime does not have it");
        assert_eq!(status["phase"], "Pending");
        let tries = node.runtime.until(|calls, _| {
            let tries: Vec<Instant> = starts(calls).into_iter().map(|(_, _, at)| at).collect();
            (tries.len() >= 3).then_some(tries)
        });
        let tries = tries.await.expect("three tries");
        assert_eq!(tries[1] - tries[0], Duration::from_secs(5));
        assert_eq!(tries[2] - tries[1], Duration::from_secs(5));
        let sent = node.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let failed =
            sent.iter().filter(|(m, p, v)| m == Method::POST && p.ends_with("/events") && v["reason"] == "Failed");
        assert_eq!(failed.count(), 3, "a Failed event per try");
        node.shared.shutdown.cancel();
        worker.await.expect("the worker ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_updated_with_a_new_image_restarts_that_container_with_it() {
        let node = Node::new();
        let old = pod(json!({"restartPolicy": "Never", "containers": [container("app"), container("sidecar")]}));
        let (updates, worker) = node.run(old.clone(), vec![]);
        let app = node.running("app", 0).await;
        let sidecar = node.running("sidecar", 0).await;

        tracing::info!("--- kubectl set image app=busybox:2");
        let mut new = old;
        if let Some(c) = new.spec.as_mut().and_then(|s| s.containers.first_mut()) {
            c.image = Some("busybox:2".into());
        }
        let changed_at = Instant::now();
        updates.send_replace(Some(Arc::new(new)));
        node.running("app", 1).await;
        let calls = node.runtime.calls();
        assert!(calls.iter().any(|c| matches!(c, Call::Stop { id, .. } if *id == app)), "{calls:?}");
        assert_eq!(
            starts(&calls).last().map(|(name, attempt, at)| (name.as_str(), *attempt, *at - changed_at)),
            Some(("app", 1, Duration::ZERO)),
            "restarted at once, without back-off"
        );
        assert!(calls.iter().any(|c| matches!(c, Call::Start { image, attempt: 1, .. } if image == "busybox:2")));
        assert_eq!(node.running("sidecar", 0).await, sidecar, "the other container is left alone");
        let status = node.reported(|s| s["containerStatuses"][0]["image"] == "busybox:2").await;
        assert_eq!(status["containerStatuses"][0]["restartCount"], 1);
        node.shared.shutdown.cancel();
        worker.await.expect("the worker ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_pod_is_stopped_within_its_grace_period_then_deleted_from_the_api() {
        let node = Node::new();
        let pod =
            pod(json!({"terminationGracePeriodSeconds": 30, "containers": [container("app"), container("quick")]}));
        let (updates, worker) = node.run(pod.clone(), vec![]);
        let stubborn = node.running("app", 0).await;
        let quick = node.running("quick", 0).await;
        node.runtime.ignore_sigterm(&stubborn);

        tracing::info!("--- deleted with a grace period of 3 s");
        let mut deleted = pod;
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        deleted.metadata.deletion_grace_period_seconds = Some(3);
        let asked = Instant::now();
        updates.send_replace(Some(Arc::new(deleted)));
        worker.await.expect("the worker ends");
        assert_eq!(Instant::now() - asked, Duration::from_secs(3), "SIGKILL after the grace period, not before");

        let calls = node.runtime.calls();
        let grace = Duration::from_secs(3);
        for id in [&stubborn, &quick] {
            assert!(
                calls.iter().any(|c| matches!(c, Call::Stop { id: s, grace: g, .. } if s == id && *g == grace)),
                "{id} stopped with the grace period: {calls:?}"
            );
        }
        assert_eq!(calls.last(), Some(&Call::RemoveSandbox { pod: "uid-web".into() }));
        let sent = node.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let delete = sent.iter().find(|(m, _, _)| m == Method::DELETE).expect("a delete");
        assert_eq!(delete.1, "/api/v1/namespaces/default/pods/web");
        assert_eq!(delete.2["preconditions"]["uid"], "uid-web");
        assert_eq!(delete.2["gracePeriodSeconds"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_kubelet_adopts_running_containers_without_starting_them_again() {
        let node = Node::new();
        let sandbox = Sandbox { pod: pod_ref(), id: "uid-web".into(), ip: [10, 0, 0, 9].into() };
        let left = ContainerInfo {
            id: "uid-web_app_2".into(),
            pod: pod_ref(),
            name: "app".into(),
            attempt: 2,
            image: "busybox".into(),
            image_id: String::new(),
            state: ContainerState::Running { started_at: node.runtime.now() },
        };
        node.runtime.leave_behind(sandbox, vec![left.clone()]);
        let (_updates, worker) = node.run(pod(json!({"containers": [container("app")]})), vec![left]);
        let status = node.reported(|s| s["phase"] == "Running").await;
        assert_eq!(status["podIP"], "10.0.0.9", "the sandbox it had");
        assert_eq!(status["containerStatuses"][0]["restartCount"], 2);
        assert_eq!(status["containerStatuses"][0]["ready"], true);
        assert!(starts(&node.runtime.calls()).is_empty(), "{:?}", node.runtime.calls());
        node.shared.shutdown.cancel();
        worker.await.expect("the worker ends");
    }
}
