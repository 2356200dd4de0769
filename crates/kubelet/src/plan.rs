//! A pod worker's decisions, made without I/O: which containers to start and in what order,
//! restarts by the restart policy with back-off, which probes are due and what their verdicts
//! mean, what stopping the pod takes.
//!
//! The worker (`worker.rs`) reads the runtime into a [`PodState`], asks it for [`Action`]s and
//! does them; the outcome of a start ([`PodState::started`]) or of a probe
//! ([`PodState::probed`]) comes back here and may ask for more. Time is the caller's: `now` is
//! a tokio [`Instant`] (paused in tests); when a container started and finished is what the
//! runtime reported.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::PodSpec;
use tokio::time::Instant;

use crate::events::Kind;
use crate::probe::Outcome;
use crate::probe::Prober;
use crate::runtime::ContainerInfo;
use crate::runtime::ContainerState;

/// First restart back-off; it doubles up to [`MAX_BACKOFF`] and resets after a container ran
/// for [`MAX_BACKOFF`] without exiting.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a container whose image the runtime does not have waits before it is tried again.
const IMAGE_RETRY: Duration = Duration::from_secs(5);
/// How long a container the runtime could not start waits before it is tried again.
const START_RETRY: Duration = Duration::from_secs(2);
/// A worker syncs at least this often (probes and back-off have their own deadlines).
const RESYNC: Duration = Duration::from_secs(5);
/// The least time between two syncs of a pod.
const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(20);
/// The grace period of a pod that does not set one, in seconds (Kubernetes' default).
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The kubelet's view of one container of the pod.
#[derive(Debug, Default)]
pub struct Slot {
    /// The latest attempt, as the runtime last reported it.
    pub current: Option<ContainerInfo>,
    /// The attempt before (for `lastState` and `kubectl logs --previous`).
    pub previous: Option<ContainerInfo>,
    /// Why the container is not running, when it is waiting: reason and message.
    pub waiting: Option<(String, String)>,
    /// The back-off of the last restart.
    pub backoff: Duration,
    /// No restart before this.
    pub not_before: Option<Instant>,
    pub startup: Option<Prober>,
    pub liveness: Option<Prober>,
    pub readiness: Option<Prober>,
    pub ready: bool,
    /// The startup probe succeeded, or there is none.
    pub started: bool,
    /// It was stopped because its image in the spec changed: it starts again at once, whatever
    /// the restart policy.
    pub definition_changed: bool,
}

impl Slot {
    pub fn restart_count(&self) -> i32 {
        self.current.as_ref().map(|c| c.attempt as i32).unwrap_or(0)
    }

    pub fn running(&self) -> bool {
        matches!(self.current.as_ref().map(|c| &c.state), Some(ContainerState::Running { .. }))
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self.current.as_ref().map(|c| &c.state) {
            Some(ContainerState::Exited { exit_code, .. }) => Some(*exit_code),
            _ => None,
        }
    }

    fn next_attempt(&self) -> u32 {
        self.current.as_ref().map(|c| c.attempt + 1).unwrap_or(0)
    }

    fn prober_mut(&mut self, kind: ProbeKind) -> Option<&mut Prober> {
        match kind {
            ProbeKind::Startup => self.startup.as_mut(),
            ProbeKind::Liveness => self.liveness.as_mut(),
            ProbeKind::Readiness => self.readiness.as_mut(),
        }
    }
}

/// `spec.restartPolicy` (Always when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn of(spec: &PodSpec) -> RestartPolicy {
        match spec.restart_policy.as_deref() {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is started again.
    fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

/// Why a running container is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Its startup probe failed (the last failure).
    StartupProbe(String),
    /// Its liveness probe failed (the last failure).
    LivenessProbe(String),
    /// Its image in the spec is not the one it runs.
    DefinitionChanged,
}

/// One thing for the worker to do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start attempt `attempt` of the container named `container` (an init container when
    /// `init`); hand the outcome to [`PodState::started`].
    Start { container: String, init: bool, attempt: u32 },
    /// Stop a running container (SIGTERM, then SIGKILL once `grace` has passed) and wait for it
    /// to exit; the next sync finds it exited and restarts it by the policy.
    Stop { container: String, id: String, grace: Duration, reason: StopReason },
    /// Forget an exited container and its logs.
    Remove { id: String },
    /// Run a probe of a running container; hand the outcome to [`PodState::probed`].
    Probe { container: String, id: String, kind: ProbeKind },
    /// Record an event about the pod (and one of its containers).
    Event { container: Option<String>, kind: Kind, reason: &'static str, message: String },
    /// Stop these containers at once (SIGTERM, then SIGKILL once `grace` has passed), then
    /// remove the pod's sandbox and files: the end of the pod on this node.
    StopPod { ids: Vec<String>, grace: Duration },
}

/// What came of an [`Action::Start`].
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    /// The runtime started it, and reports it so.
    Started(Box<ContainerInfo>),
    /// Its configuration could not be built (`CreateContainerConfigError`): a missing config
    /// map, secret or key, ...
    ConfigError(String),
    /// The runtime does not have its image (`ErrImageNeverPull`).
    ImageNotFound(String),
    /// The runtime could not start it (`CreateContainerError`).
    Failed(String),
}

/// What the kubelet knows of one pod's containers, from one sync to the next.
#[derive(Debug, Default)]
pub struct PodState {
    pub init: BTreeMap<String, Slot>,
    pub apps: BTreeMap<String, Slot>,
    /// Set once the pod reached Succeeded or Failed: nothing is started any more.
    pub terminal: bool,
}

/// The grace period of stopping `pod`: the delete's, else the spec's, else 30 s.
pub fn termination_grace(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0);
    Duration::from_secs(seconds as u64)
}

/// The grace period of a container killed by a failed probe: the spec's, else 30 s.
fn spec_grace(spec: &PodSpec) -> Duration {
    Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS).max(0) as u64)
}

fn event(container: &str, kind: Kind, reason: &'static str, message: String) -> Action {
    Action::Event { container: Some(container.to_string()), kind, reason, message }
}

impl PodState {
    /// Takes over the containers a previous kubelet started: the latest attempt of each name
    /// becomes current, the one before previous.
    pub fn adopt(&mut self, mut adopted: Vec<ContainerInfo>) {
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

    /// Takes in what the API says of the pod before a sync: a pod that has finished (as the
    /// API says, e.g. before a kubelet restart) is never started again, and containers adopted
    /// before the spec was known may be init containers.
    pub fn align(&mut self, pod: &Pod) {
        if matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
            self.terminal = true;
        }
        for c in pod.spec.iter().flat_map(|s| s.init_containers.iter().flatten()) {
            if let Some(slot) = self.apps.remove(&c.name) {
                self.init.insert(c.name.clone(), slot);
            }
        }
    }

    /// Reports every app container as still being created, for `why`, when the pod cannot
    /// start yet (no sandbox, no token); the next sync tries again.
    pub fn not_started(&mut self, spec: &PodSpec, why: &str) {
        for c in &spec.containers {
            self.apps.entry(c.name.clone()).or_default().waiting = Some(("ContainerCreating".into(), why.to_string()));
        }
    }

    /// What to start, from the containers as the runtime last reported them: the init
    /// containers one at a time, in order, each once the one before has succeeded; then every
    /// app container that is not running, unless its restart policy or its back-off says no.
    /// An init container that failed under `restartPolicy: Never` fails the pod (it becomes
    /// terminal). A running app container whose image in the spec changed is stopped, and
    /// started again at once whatever the policy, as Kubernetes does when a container's
    /// definition changes. Back-off and waiting reasons are kept in the slots.
    pub fn plan(&mut self, pod: &Pod, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(spec) = pod.spec.as_ref() else { return actions };
        if self.terminal {
            return actions;
        }
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let policy = RestartPolicy::of(spec);
        for container in spec.init_containers.iter().flatten() {
            let slot = self.init.entry(container.name.clone()).or_default();
            match (slot.current.is_some(), slot.exit_code()) {
                (true, Some(0)) => continue,
                (true, None) => return actions,
                (true, Some(_)) if policy == RestartPolicy::Never => {
                    self.terminal = true;
                    return actions;
                }
                _ => {
                    actions.extend(start_or_back_off(slot, container, true, pod_name, now));
                    return actions;
                }
            }
        }
        for container in &spec.containers {
            let slot = self.apps.entry(container.name.clone()).or_default();
            match (&slot.current, slot.exit_code()) {
                (None, _) => actions.extend(start_or_back_off(slot, container, false, pod_name, now)),
                (Some(current), None) => {
                    let image = container.image.as_deref().unwrap_or_default();
                    if slot.running() && current.image != image {
                        let (name, id) = (&container.name, current.id.clone());
                        slot.definition_changed = true;
                        actions.push(event(
                            name,
                            Kind::Normal,
                            "Killing",
                            format!("Container {name} definition changed, will be restarted"),
                        ));
                        let grace = spec_grace(spec);
                        actions.push(Action::Stop {
                            container: name.clone(),
                            id,
                            grace,
                            reason: StopReason::DefinitionChanged,
                        });
                    }
                }
                (Some(_), Some(_)) if slot.definition_changed => {
                    // No back-off: it did not fail. A start that failed since waits as usual.
                    if slot.not_before.is_none_or(|t| t <= now) {
                        actions.push(Action::Start {
                            container: container.name.clone(),
                            init: false,
                            attempt: slot.next_attempt(),
                        });
                    }
                }
                (Some(_), Some(code)) => {
                    if policy.restarts(code) {
                        actions.extend(start_or_back_off(slot, container, false, pod_name, now));
                    }
                }
            }
        }
        actions
    }

    /// Takes in the outcome of an [`Action::Start`] begun at `began`: a started container gets
    /// fresh probes (counting their initial delays from `began`) and the attempt before the
    /// previous one is removed; one that could not start waits, with the reason shown.
    pub fn started(&mut self, container: &Container, init: bool, outcome: StartOutcome, began: Instant) -> Vec<Action> {
        let slots = if init { &mut self.init } else { &mut self.apps };
        let slot = slots.entry(container.name.clone()).or_default();
        let name = &container.name;
        match outcome {
            StartOutcome::Started(info) => {
                let mut actions = vec![event(name, Kind::Normal, "Started", format!("Started container {name}"))];
                // Keep the previous attempt for `kubectl logs --previous`; drop the one before.
                if let Some(old) = slot.previous.take() {
                    actions.push(Action::Remove { id: old.id });
                }
                slot.previous = slot.current.take();
                slot.current = Some(*info);
                slot.waiting = None;
                slot.not_before = None;
                slot.ready = false;
                slot.started = container.startup_probe.is_none();
                slot.startup = container.startup_probe.clone().map(|p| Prober::new(p, began));
                slot.liveness = container.liveness_probe.clone().map(|p| Prober::new(p, began));
                slot.readiness = container.readiness_probe.clone().map(|p| Prober::new(p, began));
                slot.definition_changed = false;
                actions
            }
            StartOutcome::ConfigError(message) => {
                slot.waiting = Some(("CreateContainerConfigError".into(), message));
                vec![]
            }
            StartOutcome::ImageNotFound(message) => {
                slot.waiting = Some(("ErrImageNeverPull".into(), message.clone()));
                slot.not_before = Some(began + IMAGE_RETRY);
                vec![event(name, Kind::Warning, "Failed", message)]
            }
            StartOutcome::Failed(message) => {
                slot.waiting = Some(("CreateContainerError".into(), message.clone()));
                slot.not_before = Some(began + START_RETRY);
                vec![event(name, Kind::Warning, "Failed", message)]
            }
        }
    }

    /// Whether every init container has succeeded.
    pub fn initialized(&self, spec: &PodSpec) -> bool {
        spec.init_containers.iter().flatten().all(|c| self.init.get(&c.name).and_then(Slot::exit_code) == Some(0))
    }

    /// The probes due at `now`, once the pod is initialized (and not finished): a container's
    /// startup probe until it succeeds, then its liveness probe, then its readiness probe. A
    /// container that is not running is not ready; one without a readiness probe is ready once
    /// started.
    pub fn plan_probes(&mut self, spec: &PodSpec, now: Instant) -> Vec<Action> {
        if self.terminal || !self.initialized(spec) {
            return vec![];
        }
        let mut actions = Vec::new();
        for container in &spec.containers {
            let Some(slot) = self.apps.get_mut(&container.name) else { continue };
            if !slot.running() {
                slot.ready = false;
                continue;
            }
            let Some(id) = slot.current.as_ref().map(|c| c.id.clone()) else { continue };
            let due = |p: &Option<Prober>| p.as_ref().is_some_and(|p| p.due() <= now);
            let kind = if !slot.started {
                due(&slot.startup).then_some(ProbeKind::Startup)
            } else if due(&slot.liveness) {
                Some(ProbeKind::Liveness)
            } else {
                readiness_due(slot, now)
            };
            if let Some(kind) = kind {
                actions.push(Action::Probe { container: container.name.clone(), id, kind });
            }
        }
        actions
    }

    /// The prober of one of the app containers.
    pub fn prober(&self, container: &str, kind: ProbeKind) -> Option<&Prober> {
        let slot = self.apps.get(container)?;
        match kind {
            ProbeKind::Startup => slot.startup.as_ref(),
            ProbeKind::Liveness => slot.liveness.as_ref(),
            ProbeKind::Readiness => slot.readiness.as_ref(),
        }
    }

    /// Takes in the outcome of an [`Action::Probe`] that ended at `now`. A failed startup or
    /// liveness verdict stops the container (it is restarted by the policy); a liveness probe
    /// that did not fail is followed by the readiness probe if that is due.
    pub fn probed(
        &mut self,
        spec: &PodSpec,
        container: &str,
        kind: ProbeKind,
        outcome: Outcome,
        now: Instant,
    ) -> Vec<Action> {
        let grace = spec_grace(spec);
        let Some(slot) = self.apps.get_mut(container) else { return vec![] };
        let Some(id) = slot.current.as_ref().map(|c| c.id.clone()) else { return vec![] };
        let Some(prober) = slot.prober_mut(kind) else { return vec![] };
        let verdict = prober.record(outcome, now);
        let why = prober.last_failure.clone().unwrap_or_default();
        match kind {
            ProbeKind::Startup => match verdict {
                Some(true) => {
                    slot.started = true;
                    vec![]
                }
                Some(false) => {
                    vec![Action::Stop {
                        container: container.to_string(),
                        id,
                        grace,
                        reason: StopReason::StartupProbe(why),
                    }]
                }
                None => vec![],
            },
            ProbeKind::Liveness if verdict == Some(false) => {
                slot.ready = false;
                vec![
                    event(container, Kind::Warning, "Unhealthy", format!("Liveness probe failed: {why}")),
                    event(
                        container,
                        Kind::Normal,
                        "Killing",
                        format!("Container {container} failed liveness probe, will be restarted"),
                    ),
                    Action::Stop {
                        container: container.to_string(),
                        id,
                        grace,
                        reason: StopReason::LivenessProbe(why),
                    },
                ]
            }
            ProbeKind::Liveness => match readiness_due(slot, now) {
                Some(kind) => vec![Action::Probe { container: container.to_string(), id, kind }],
                None => vec![],
            },
            ProbeKind::Readiness => {
                slot.ready = slot.readiness.as_ref().is_some_and(|p| p.verdict == Some(true));
                if verdict == Some(false) {
                    vec![event(container, Kind::Warning, "Unhealthy", format!("Readiness probe failed: {why}"))]
                } else {
                    vec![]
                }
            }
        }
    }

    /// Stopping the pod: every running container at once with `grace`, then its sandbox;
    /// `announce` records a Killing event per container first (not for a pod whose spec was
    /// never seen).
    pub fn plan_termination(&self, grace: Duration, announce: bool) -> Vec<Action> {
        let running = self.init.iter().chain(self.apps.iter()).filter(|(_, slot)| slot.running());
        let mut actions = Vec::new();
        let mut ids = Vec::new();
        for (name, slot) in running {
            if announce {
                actions.push(event(name, Kind::Normal, "Killing", format!("Stopping container {name}")));
            }
            ids.extend(slot.current.as_ref().map(|c| c.id.clone()));
        }
        actions.push(Action::StopPod { ids, grace });
        actions
    }

    /// The ids of the containers running, whose exits the worker waits for.
    pub fn running_ids(&self) -> Vec<String> {
        self.init
            .values()
            .chain(self.apps.values())
            .filter(|s| s.running())
            .filter_map(|s| s.current.as_ref().map(|c| c.id.clone()))
            .collect()
    }

    /// Whether the runtime has any container of the pod.
    pub fn any_known(&self) -> bool {
        self.init.values().chain(self.apps.values()).any(|s| s.current.is_some())
    }

    /// When the worker must sync again even if nothing happens: the next restart, probe or
    /// token refresh (`token_expires`), at most [`RESYNC`] from `now`.
    pub fn next_deadline(&self, token_expires: Option<Instant>, now: Instant) -> Instant {
        let mut next = now + RESYNC;
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
        if let Some(t) = token_expires {
            next = next.min(t);
        }
        next.max(now + MIN_SYNC_INTERVAL)
    }
}

/// A container that is to run (again): start it, unless its back-off says to wait. A restart
/// first waits `INITIAL_BACKOFF`, doubling with each restart up to [`MAX_BACKOFF`]
/// (`CrashLoopBackOff`); a container whose last run lasted [`MAX_BACKOFF`] or more restarts at
/// once and its back-off starts over. A first start never waits.
fn start_or_back_off(slot: &mut Slot, container: &Container, init: bool, pod_name: &str, now: Instant) -> Vec<Action> {
    if let Some(current) = &slot.current {
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
                if !ran_long {
                    let name = &container.name;
                    slot.waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!("back-off {:?} restarting failed container={name} pod={pod_name}", slot.backoff),
                    ));
                    return vec![event(
                        name,
                        Kind::Warning,
                        "BackOff",
                        format!("Back-off restarting failed container {name} in pod {pod_name}"),
                    )];
                }
            }
            Some(t) if t > now => return vec![],
            Some(_) => {}
        }
    }
    vec![Action::Start { container: container.name.clone(), init, attempt: slot.next_attempt() }]
}

/// The readiness probe of a started container if it is due; otherwise settles readiness: ready
/// without a readiness probe, else as its verdict says.
fn readiness_due(slot: &mut Slot, now: Instant) -> Option<ProbeKind> {
    match &slot.readiness {
        None => {
            slot.ready = true;
            None
        }
        Some(p) if p.due() <= now => Some(ProbeKind::Readiness),
        Some(p) => {
            slot.ready = p.verdict == Some(true);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PodRef;
    use jiff::Timestamp;
    use serde_json::Value;
    use serde_json::json;

    const NOTHING: [Action; 0] = [];

    /// A pod named web with `spec`.
    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "uid": "u"}, "spec": spec}))
            .expect("a pod")
    }

    fn container(name: &str) -> Value {
        json!({"name": name, "image": "busybox"})
    }

    fn spec_of(pod: &Pod) -> &PodSpec {
        pod.spec.as_ref().expect("a spec")
    }

    fn find<'a>(pod: &'a Pod, name: &str) -> (&'a Container, bool) {
        let spec = spec_of(pod);
        match spec.init_containers.iter().flatten().find(|c| c.name == name) {
            Some(c) => (c, true),
            None => (spec.containers.iter().find(|c| c.name == name).expect("a container of the pod"), false),
        }
    }

    /// A moment of the runtime's clock, `seconds` after an arbitrary start.
    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("a timestamp")
    }

    fn info(name: &str, attempt: u32, state: ContainerState) -> ContainerInfo {
        ContainerInfo {
            id: format!("u_{name}_{attempt}"),
            pod: PodRef { uid: "u".into(), namespace: "default".into(), name: "web".into() },
            name: name.into(),
            attempt,
            image: "busybox".into(),
            image_id: String::new(),
            state,
        }
    }

    fn running(name: &str, attempt: u32) -> ContainerInfo {
        info(name, attempt, ContainerState::Running { started_at: at(0) })
    }

    /// Attempt `attempt` of `name`, exited with `code` after running `ran` seconds.
    fn exited(name: &str, attempt: u32, code: i32, ran: i64) -> ContainerInfo {
        let reason = if code == 0 { "Completed" } else { "Error" };
        info(
            name,
            attempt,
            ContainerState::Exited {
                started_at: Some(at(0)),
                finished_at: at(ran),
                exit_code: code,
                reason: reason.into(),
            },
        )
    }

    fn start(name: &str, init: bool, attempt: u32) -> Action {
        Action::Start { container: name.into(), init, attempt }
    }

    /// The runtime started what `action` asked for, and reports it running.
    fn run(state: &mut PodState, pod: &Pod, action: &Action, now: Instant) -> Vec<Action> {
        let Action::Start { container, init, attempt } = action else { panic!("not a start: {action:?}") };
        let (c, _) = find(pod, container);
        state.started(c, *init, StartOutcome::Started(Box::new(running(container, *attempt))), now)
    }

    /// What the worker's refresh does: the runtime now reports `info`.
    fn observe(state: &mut PodState, info: ContainerInfo) {
        let slots = if state.init.contains_key(&info.name) { &mut state.init } else { &mut state.apps };
        let name = info.name.clone();
        slots.entry(name).or_default().current = Some(info);
    }

    fn reasons(actions: &[Action]) -> Vec<&'static str> {
        actions.iter().filter_map(|a| if let Action::Event { reason, .. } = a { Some(*reason) } else { None }).collect()
    }

    #[test]
    fn a_new_pod_starts_its_init_containers_one_at_a_time_then_all_its_containers() {
        let pod = pod(json!({
            "initContainers": [container("init-a"), container("init-b")],
            "containers": [container("app"), container("sidecar")],
        }));
        let now = Instant::now();
        let mut state = PodState::default();
        let steps: [(&str, Vec<Action>); 5] = [
            ("nothing exists: the first init container", vec![start("init-a", true, 0)]),
            ("init-a runs: nothing else", vec![]),
            ("init-a succeeded: the second", vec![start("init-b", true, 0)]),
            ("init-b runs: nothing else", vec![]),
            ("both succeeded: every container", vec![start("app", false, 0), start("sidecar", false, 0)]),
        ];
        for (phase, expected) in steps {
            tracing::info!("--- {phase}");
            let actions = state.plan(&pod, now);
            assert_eq!(actions, expected, "{phase}");
            match phase {
                "init-a runs: nothing else" => observe(&mut state, exited("init-a", 0, 0, 1)),
                "init-b runs: nothing else" => observe(&mut state, exited("init-b", 0, 0, 1)),
                _ => {
                    for action in &actions {
                        let then = run(&mut state, &pod, action, now);
                        assert_eq!(reasons(&then), ["Started"], "{phase}");
                    }
                }
            }
        }
        assert!(state.initialized(spec_of(&pod)));
        assert_eq!(state.running_ids(), ["u_app_0", "u_sidecar_0"]);
    }

    #[test]
    fn an_exited_container_is_restarted_by_the_restart_policy_after_its_back_off() {
        let cases = [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 1, true),
            ("Never", 0, false),
            ("Never", 1, false),
        ];
        for (policy, code, restarts) in cases {
            let pod = pod(json!({"restartPolicy": policy, "containers": [container("app")]}));
            let now = Instant::now();
            let mut state = PodState::default();
            observe(&mut state, exited("app", 0, code, 5));
            let first = state.plan(&pod, now);
            let second = state.plan(&pod, now + INITIAL_BACKOFF);
            if restarts {
                assert_eq!(reasons(&first), ["BackOff"], "{policy} exit {code}");
                assert_eq!(second, [start("app", false, 1)], "{policy} exit {code}");
            } else {
                assert_eq!((first, second), (vec![], vec![]) as (Vec<Action>, Vec<Action>), "{policy} exit {code}");
            }
        }
    }

    #[test]
    fn back_off_doubles_from_one_second_to_sixty_and_starts_over_after_a_minute_of_running() {
        let pod = pod(json!({"containers": [container("app")]}));
        let mut now = Instant::now();
        let mut state = PodState::default();
        let first = state.plan(&pod, now);
        assert_eq!(first, [start("app", false, 0)]);
        run(&mut state, &pod, &first[0], now);

        tracing::info!("--- the container crashes after a second, again and again");
        let mut delays = Vec::new();
        for attempt in 1..=8 {
            observe(&mut state, exited("app", attempt - 1, 1, 1));
            assert_eq!(reasons(&state.plan(&pod, now)), ["BackOff"]);
            let slot = &state.apps["app"];
            let delay = slot.backoff;
            let waiting = slot.waiting.clone().expect("a waiting reason");
            assert_eq!(waiting.0, "CrashLoopBackOff");
            assert_eq!(waiting.1, format!("back-off {delay:?} restarting failed container=app pod=web"));
            assert_eq!(state.next_deadline(None, now), now + delay.min(RESYNC));
            assert_eq!(state.plan(&pod, now + delay - Duration::from_millis(1)), NOTHING, "still backing off");
            now += delay;
            let restart = state.plan(&pod, now);
            assert_eq!(restart, [start("app", false, attempt)]);
            run(&mut state, &pod, &restart[0], now);
            delays.push(delay.as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);

        tracing::info!("--- a run of a minute: restarted at once, and the back-off starts over");
        observe(&mut state, exited("app", 8, 1, 60));
        let restart = state.plan(&pod, now);
        assert_eq!(restart, [start("app", false, 9)]);
        run(&mut state, &pod, &restart[0], now);
        // The restart at once took the first step (1 s) of the new sequence.
        observe(&mut state, exited("app", 9, 1, 1));
        assert_eq!(reasons(&state.plan(&pod, now)), ["BackOff"]);
        assert_eq!(state.apps["app"].backoff, Duration::from_secs(2));
    }

    #[test]
    fn a_container_the_runtime_cannot_start_waits_with_the_reason_shown() {
        let pod = pod(json!({"containers": [container("app")]}));
        let (app, _) = find(&pod, "app");
        let cases = [
            (StartOutcome::ImageNotFound("image \"busybox\" not found".into()), "ErrImageNeverPull", Some(5), true),
            (StartOutcome::Failed("exec: \"x\": not found".into()), "CreateContainerError", Some(2), true),
            (StartOutcome::ConfigError("configmap \"c\" not found".into()), "CreateContainerConfigError", None, false),
        ];
        for (outcome, reason, retry, event) in cases {
            let now = Instant::now();
            let mut state = PodState::default();
            let message = match &outcome {
                StartOutcome::ImageNotFound(m) | StartOutcome::Failed(m) | StartOutcome::ConfigError(m) => m.clone(),
                StartOutcome::Started(_) => unreachable!(),
            };
            let then = state.started(app, false, outcome, now);
            assert_eq!(reasons(&then), if event { vec!["Failed"] } else { vec![] }, "{reason}");
            let slot = &state.apps["app"];
            assert_eq!(slot.waiting, Some((reason.to_string(), message)));
            assert_eq!(slot.not_before, retry.map(|s| now + Duration::from_secs(s)), "{reason}");
            // A first start is tried again on the next sync, which comes no later than that.
            assert_eq!(state.plan(&pod, now), [start("app", false, 0)], "{reason}");
        }
    }

    #[test]
    fn an_init_container_that_fails_is_retried_unless_the_pod_never_restarts() {
        for (policy, terminal) in [("Always", false), ("OnFailure", false), ("Never", true)] {
            let pod = pod(json!({
                "restartPolicy": policy,
                "initContainers": [container("init")],
                "containers": [container("app")],
            }));
            let now = Instant::now();
            let mut state = PodState::default();
            state.init.insert("init".into(), Slot::default());
            observe(&mut state, exited("init", 0, 1, 1));
            let actions = state.plan(&pod, now);
            assert_eq!(state.terminal, terminal, "{policy}");
            if terminal {
                assert_eq!(actions, NOTHING, "{policy}");
            } else {
                assert_eq!(reasons(&actions), ["BackOff"], "{policy}");
                assert_eq!(state.plan(&pod, now + INITIAL_BACKOFF), [start("init", true, 1)], "{policy}");
            }
            assert_eq!(state.plan_probes(spec_of(&pod), now), NOTHING, "no probes before the pod is initialized");
        }
    }

    #[test]
    fn a_restarted_kubelet_adopts_the_latest_attempts_and_finds_init_containers_by_the_spec() {
        let pod = pod(json!({"initContainers": [container("init")], "containers": [container("app")]}));
        let mut state = PodState::default();
        state.adopt(vec![running("app", 3), exited("init", 0, 0, 1), exited("app", 2, 1, 1)]);
        state.align(&pod);
        assert_eq!(state.init["init"].exit_code(), Some(0));
        let app = &state.apps["app"];
        assert_eq!((app.restart_count(), app.previous.as_ref().map(|p| p.attempt)), (3, Some(2)));
        assert!(app.started && app.ready, "a running adopted container keeps its readiness");
        assert_eq!(state.plan(&pod, Instant::now()), NOTHING, "nothing is started again");
    }

    fn probed_pod() -> Pod {
        pod(json!({
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "app", "image": "busybox",
                "livenessProbe": {"exec": {"command": ["live"]}, "failureThreshold": 1, "periodSeconds": 10},
                "readinessProbe": {"exec": {"command": ["ready"]}, "failureThreshold": 1, "periodSeconds": 10},
            }],
        }))
    }

    fn probe(kind: ProbeKind) -> Action {
        Action::Probe { container: "app".into(), id: "u_app_0".into(), kind }
    }

    #[test]
    fn a_failed_liveness_probe_stops_the_container_and_readiness_is_not_probed() {
        let pod = probed_pod();
        let spec = spec_of(&pod);
        let now = Instant::now();
        let mut state = PodState::default();
        let first = state.plan(&pod, now);
        run(&mut state, &pod, &first[0], now);

        tracing::info!("--- liveness first, then readiness");
        assert_eq!(state.plan_probes(spec, now), [probe(ProbeKind::Liveness)]);
        let then = state.probed(spec, "app", ProbeKind::Liveness, Outcome::Success, now);
        assert_eq!(then, [probe(ProbeKind::Readiness)]);
        assert_eq!(state.probed(spec, "app", ProbeKind::Readiness, Outcome::Success, now), NOTHING);
        assert!(state.apps["app"].ready);
        assert_eq!(state.plan_probes(spec, now), NOTHING, "nothing due before the period");

        tracing::info!("--- liveness fails: the container is stopped with the pod's grace period");
        let later = now + Duration::from_secs(10);
        assert_eq!(state.plan_probes(spec, later), [probe(ProbeKind::Liveness)]);
        let then = state.probed(spec, "app", ProbeKind::Liveness, Outcome::Failure("exit 1".into()), later);
        assert_eq!(reasons(&then), ["Unhealthy", "Killing"]);
        assert_eq!(
            then.last(),
            Some(&Action::Stop {
                container: "app".into(),
                id: "u_app_0".into(),
                grace: Duration::from_secs(5),
                reason: StopReason::LivenessProbe("exit 1".into()),
            })
        );
        assert!(!state.apps["app"].ready);
    }

    #[test]
    fn readiness_follows_its_probe_and_a_container_without_one_is_ready_once_started() {
        let pod = pod(json!({
            "containers": [
                container("plain"),
                {"name": "app", "image": "busybox",
                 "readinessProbe": {"exec": {"command": ["ready"]}, "failureThreshold": 2, "periodSeconds": 1}},
            ],
        }));
        let spec = spec_of(&pod);
        let now = Instant::now();
        let mut state = PodState::default();
        for action in state.plan(&pod, now) {
            run(&mut state, &pod, &action, now);
        }
        assert_eq!(state.plan_probes(spec, now), [probe(ProbeKind::Readiness)]);
        assert!(state.apps["plain"].ready, "no readiness probe: ready once started");
        assert!(!state.apps["app"].ready, "not ready before its probe says so");
        let failure = || Outcome::Failure("exit 1".into());
        let mut t = now;
        let verdicts: Vec<(Vec<&str>, bool)> = [Outcome::Success, failure(), failure(), Outcome::Success]
            .into_iter()
            .map(|outcome| {
                let then = state.probed(spec, "app", ProbeKind::Readiness, outcome, t);
                t += Duration::from_secs(1);
                (reasons(&then), state.apps["app"].ready)
            })
            .collect();
        assert_eq!(
            verdicts,
            [(vec![], true), (vec![], true), (vec!["Unhealthy"], false), (vec![], true)],
            "ready after one success, not ready after two failures in a row"
        );
        observe(&mut state, exited("app", 0, 1, 1));
        state.plan_probes(spec, t);
        assert!(!state.apps["app"].ready, "an exited container is not ready");
    }

    #[test]
    fn a_startup_probe_holds_back_the_other_probes_until_it_succeeds() {
        let pod = pod(json!({
            "containers": [{
                "name": "app", "image": "busybox",
                "startupProbe": {"exec": {"command": ["up"]}, "failureThreshold": 2, "periodSeconds": 1},
                "livenessProbe": {"exec": {"command": ["live"]}},
            }],
        }));
        let spec = spec_of(&pod);
        let now = Instant::now();
        let mut state = PodState::default();
        let first = state.plan(&pod, now);
        run(&mut state, &pod, &first[0], now);
        assert_eq!(state.plan_probes(spec, now), [probe(ProbeKind::Startup)]);
        assert_eq!(state.probed(spec, "app", ProbeKind::Startup, Outcome::Failure("no".into()), now), NOTHING);
        assert!(!state.apps["app"].started);
        let then = state.probed(spec, "app", ProbeKind::Startup, Outcome::Failure("no".into()), now);
        assert!(
            matches!(then.as_slice(), [Action::Stop { reason: StopReason::StartupProbe(why), .. }] if why == "no"),
            "{then:?}"
        );
        // Started again (attempt 1): this time the startup probe succeeds.
        run(&mut state, &pod, &start("app", false, 1), now);
        let later = now + Duration::from_secs(1);
        assert_eq!(state.probed(spec, "app", ProbeKind::Startup, Outcome::Success, later), NOTHING);
        assert!(state.apps["app"].started);
        assert_eq!(
            state.plan_probes(spec, later),
            [Action::Probe { container: "app".into(), id: "u_app_1".into(), kind: ProbeKind::Liveness }]
        );
    }

    #[test]
    fn a_new_image_in_the_spec_restarts_that_container_at_once_whatever_the_policy() {
        let pod = pod(json!({
            "restartPolicy": "Never",
            "containers": [{"name": "app", "image": "busybox:2"}, container("sidecar")],
        }));
        let now = Instant::now();
        let mut state = PodState::default();
        state.adopt(vec![running("app", 0), running("sidecar", 0)]);

        tracing::info!("--- app runs busybox, the spec says busybox:2: stopped, sidecar left alone");
        let actions = state.plan(&pod, now);
        assert_eq!(reasons(&actions), ["Killing"]);
        assert_eq!(
            actions.last(),
            Some(&Action::Stop {
                container: "app".into(),
                id: "u_app_0".into(),
                grace: Duration::from_secs(30),
                reason: StopReason::DefinitionChanged,
            })
        );

        tracing::info!("--- once it exited: started again at once, though the policy is Never");
        observe(&mut state, exited("app", 0, 143, 5));
        let restart = state.plan(&pod, now);
        assert_eq!(restart, [start("app", false, 1)]);
        let (app, _) = find(&pod, "app");
        let mut new = running("app", 1);
        new.image = "busybox:2".into();
        state.started(app, false, StartOutcome::Started(Box::new(new)), now);
        assert_eq!(state.plan(&pod, now), NOTHING, "it runs the image of the spec");

        tracing::info!("--- the new attempt exits: the policy applies again");
        let mut done = exited("app", 1, 1, 1);
        done.image = "busybox:2".into();
        observe(&mut state, done);
        assert_eq!(state.plan(&pod, now + MAX_BACKOFF), NOTHING);
    }

    #[test]
    fn a_deleted_pod_stops_its_running_containers_at_once_with_its_grace_period() {
        let graces = [(Some(7), Some(20), 7), (None, Some(20), 20), (None, None, 30), (Some(-1), None, 0)];
        for (deletion, spec, expected) in graces {
            let mut pod = pod(json!({"terminationGracePeriodSeconds": spec, "containers": [container("app")]}));
            pod.metadata.deletion_grace_period_seconds = deletion;
            assert_eq!(termination_grace(&pod), Duration::from_secs(expected), "{deletion:?} {spec:?}");
        }
        let mut state = PodState::default();
        state.adopt(vec![exited("init", 0, 0, 1), running("app", 0), running("sidecar", 2), exited("job", 0, 0, 1)]);
        let grace = Duration::from_secs(7);
        let stop = Action::StopPod { ids: vec!["u_app_0".into(), "u_sidecar_2".into()], grace };
        let actions = state.plan_termination(grace, true);
        assert_eq!(reasons(&actions), ["Killing", "Killing"]);
        assert_eq!(actions.last(), Some(&stop));
        assert_eq!(state.plan_termination(grace, false), [stop], "a pod never seen: no events");
    }
}
