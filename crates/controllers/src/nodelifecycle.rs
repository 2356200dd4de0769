//! The node lifecycle controller: notices nodes whose kubelet stopped renewing its Lease, marks
//! them unreachable and, once their pods' tolerance is spent, evicts those pods so that their
//! ReplicaSets replace them elsewhere.
//!
//! Liveness is judged on this leader's own monotonic clock, never by comparing timestamps
//! written on other machines: [`Liveness`] notes when the controller last saw a node's Lease
//! `renewTime` (or its Ready condition's `lastHeartbeatTime`) change. A node not renewed for
//! `node_monitor_grace` is lost: its Ready condition becomes `Unknown` (reason
//! `NodeStatusUnknown`), it gets the `node.kubernetes.io/unreachable` taints (`NoSchedule` and
//! `NoExecute`), its pods get `Ready=False`, and each pod is deleted (grace period 0: the node is
//! gone) when its toleration of the taint runs out ([`unreachable_tolerance`]). A node seen
//! renewing again loses the taints; its Ready condition is the kubelet's to set back.
//!
//! A newly elected leader first sees every node as just renewed, so no node is judged lost
//! (nor evicted) sooner than one grace period after a failover, and taints a previous leader
//! set stay until the node is seen renewing or is judged lost afresh. When every node is lost
//! at once the controller evicts nothing: that looks like the control plane being cut off, not
//! like the whole fleet dying (Kubernetes' "full disruption" rule).
//!
//! The decisions are pure functions of the observed objects; [`run`] holds the clock-keeping
//! state, checks every node a few times per grace period, and does the writes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trireme_model::kinds::Nodes;
use trireme_model::kinds::Pods;
use trireme_model::strategy::Kind;
use trireme_registry::ChangeType;
use trireme_registry::DeleteOptions;
use trireme_registry::Preconditions;
use trireme_registry::RegistryError;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;
use trireme_registry::controller::Controller;
use trireme_registry::events::EventType;
use trireme_registry::events::Recorder;
use trireme_registry::informer::Event;
use trireme_registry::informer::ObjectKey;
use trireme_registry::workqueue::Action;
use trireme_registry::workqueue::WorkQueue;

use crate::Context;
use crate::util;

/// The taint key of a node whose kubelet stopped renewing its Lease.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Where kubelets keep their Leases (named after their nodes).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The reason of the conditions the controller sets to `Unknown`.
pub const UNKNOWN_REASON: &str = "NodeStatusUnknown";
/// The message of the conditions the controller sets to `Unknown`.
pub const UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";

/// The `tolerationSeconds` of the unreachable toleration every pod gets when it does not bring
/// one (Kubernetes' DefaultTolerationSeconds admission, done by the registry's defaulting). A
/// toleration of exactly that shape stands for "the cluster default", which is
/// `pod_eviction_timeout` here.
const DEFAULT_TOLERATION_SECONDS: i64 = 300;
/// The node conditions the kubelet posts, all `Unknown` once it stops.
const KUBELET_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// The `fieldManager` of this controller's writes, and the component of its node events.
const NODE_CONTROLLER: &str = "node-controller";
/// The component of eviction events, as Kubernetes names it.
const EVICTION_CONTROLLER: &str = "taint-eviction-controller";
/// Nodes reconciled at once.
const WORKERS: usize = 2;

// ---- liveness, on this leader's clock ---------------------------------------------------

/// What this leader has seen of one node's heartbeats, timed by its own monotonic clock.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// The Lease's last `renewTime` seen (`None`: no Lease seen yet).
    lease: Option<Option<Timestamp>>,
    /// The Ready condition's last `lastHeartbeatTime` seen (`None`: node not seen yet).
    heartbeat: Option<Option<Timestamp>>,
    /// When a heartbeat was last seen to change, or the node first seen.
    last_change: Instant,
    /// Whether this leader has seen a heartbeat change at all (not just a first value).
    renewed: bool,
}

/// How a node looks to this leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Seen renewing within the grace period.
    Alive,
    /// Not seen renewing yet, but first seen less than a grace period ago: no verdict.
    Pending,
    /// Not seen renewing for a grace period: unreachable since `since`.
    Lost { since: Instant },
}

impl Liveness {
    /// A node first seen at `now`: it has a full grace period from now, whatever its stored
    /// timestamps say.
    pub fn new(now: Instant) -> Liveness {
        Liveness { lease: None, heartbeat: None, last_change: now, renewed: false }
    }

    /// Notes the Lease's `renewTime`. Returns whether it is a renewal: a change from the value
    /// seen before (the first value seen is no renewal, but starts the clock afresh).
    pub fn saw_lease(&mut self, renew_time: Option<Timestamp>, now: Instant) -> bool {
        Self::saw(&mut self.lease, renew_time, now, &mut self.last_change, &mut self.renewed)
    }

    /// Notes the Ready condition's `lastHeartbeatTime`, as [`Liveness::saw_lease`] does.
    pub fn saw_heartbeat(&mut self, heartbeat: Option<Timestamp>, now: Instant) -> bool {
        Self::saw(&mut self.heartbeat, heartbeat, now, &mut self.last_change, &mut self.renewed)
    }

    fn saw(
        seen: &mut Option<Option<Timestamp>>,
        value: Option<Timestamp>,
        now: Instant,
        last_change: &mut Instant,
        renewed: &mut bool,
    ) -> bool {
        let renewal = match seen {
            None => false,
            Some(previous) if *previous == value => return false,
            Some(_) => true,
        };
        *seen = Some(value);
        *last_change = now;
        *renewed |= renewal;
        renewal
    }

    /// The node's health at `now` with a grace period of `grace`.
    pub fn health(&self, now: Instant, grace: Duration) -> Health {
        let deadline = self.last_change + grace;
        if now >= deadline {
            Health::Lost { since: deadline }
        } else if self.renewed {
            Health::Alive
        } else {
            Health::Pending
        }
    }
}

/// Evictions are allowed unless every node is lost (then the control plane is more likely cut
/// off from the nodes than all of them dead).
pub fn evictions_allowed(lost: usize, nodes: usize) -> bool {
    lost < nodes
}

// ---- pure decisions on objects ----------------------------------------------------------

fn node_condition<'a>(node: &'a Node, kind: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

fn pod_condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

/// The status of the node's Ready condition, if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    node_condition(node, "Ready").map(|c| c.status.as_str())
}

/// The Ready condition's `lastHeartbeatTime` (what a kubelet bumps when it posts status).
pub fn heartbeat(node: &Node) -> Option<Timestamp> {
    node_condition(node, "Ready").and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0)
}

/// The node with its kubelet conditions `Unknown` (heartbeat times kept: they are the
/// kubelet's), or `None` when they already are. A node without a Ready condition gets one.
pub fn mark_unknown(node: &Node, now: Timestamp) -> Option<Node> {
    let mut next = node.clone();
    let mut changed = false;
    let mut has_ready = false;
    let conditions = next.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
    for c in conditions.iter_mut().filter(|c| KUBELET_CONDITIONS.contains(&c.type_.as_str())) {
        has_ready |= c.type_ == "Ready";
        if c.status == "Unknown" {
            continue;
        }
        c.status = "Unknown".into();
        c.reason = Some(UNKNOWN_REASON.into());
        c.message = Some(UNKNOWN_MESSAGE.into());
        c.last_transition_time = Some(Time(now));
        changed = true;
    }
    if !has_ready {
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some(UNKNOWN_REASON.into()),
            message: Some(UNKNOWN_MESSAGE.into()),
            last_transition_time: Some(Time(now)),
            last_heartbeat_time: None,
        });
        changed = true;
    }
    changed.then_some(next)
}

fn is_unreachable_taint(taint: &Taint) -> bool {
    taint.key == UNREACHABLE_TAINT && (taint.effect == "NoExecute" || taint.effect == "NoSchedule")
}

fn taints(node: &Node) -> &[Taint] {
    node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default()
}

/// Whether the node carries an unreachable taint.
pub fn has_unreachable_taint(node: &Node) -> bool {
    taints(node).iter().any(is_unreachable_taint)
}

/// The node with `taints` (none: no `taints` field at all).
fn with_taints(node: &Node, taints: Vec<Taint>) -> Node {
    let mut next = node.clone();
    next.spec.get_or_insert_with(Default::default).taints = (!taints.is_empty()).then_some(taints);
    next
}

/// The node with both unreachable taints (`NoExecute` stamped `timeAdded: now`), keeping any
/// already there; `None` when it has both.
pub fn with_unreachable_taints(node: &Node, now: Timestamp) -> Option<Node> {
    let mut list = taints(node).to_vec();
    let before = list.len();
    for effect in ["NoSchedule", "NoExecute"] {
        if !list.iter().any(|t| t.key == UNREACHABLE_TAINT && t.effect == effect) {
            list.push(Taint {
                key: UNREACHABLE_TAINT.into(),
                effect: effect.into(),
                time_added: (effect == "NoExecute").then_some(Time(now)),
                value: None,
            });
        }
    }
    (list.len() != before).then(|| with_taints(node, list))
}

/// The node without the unreachable taints; `None` when it has none.
pub fn without_unreachable_taints(node: &Node) -> Option<Node> {
    let list = taints(node);
    let kept: Vec<Taint> = list.iter().filter(|t| !is_unreachable_taint(t)).cloned().collect();
    (kept.len() != list.len()).then(|| with_taints(node, kept))
}

/// Whether the pod still shows Ready (its Ready condition exists and is not `False`).
pub fn shows_ready(pod: &Pod) -> bool {
    pod_condition(pod, "Ready").is_some_and(|c| c.status != "False")
}

/// The pod with its Ready condition `False` (in place, transition time `now`); `None` when it
/// has no Ready condition or it already is `False`.
pub fn mark_pod_not_ready(pod: &Pod, now: Timestamp) -> Option<Pod> {
    if !shows_ready(pod) {
        return None;
    }
    let mut next = pod.clone();
    let conditions = next.status.as_mut()?.conditions.as_mut()?;
    let ready = conditions.iter_mut().find(|c| c.type_ == "Ready")?;
    ready.status = "False".into();
    ready.last_transition_time = Some(Time(now));
    Some(next)
}

/// Whether `toleration` tolerates the `node.kubernetes.io/unreachable:NoExecute` taint
/// (Kubernetes' `ToleratesTaint`: empty effect and key match all, `Exists` any value, `Equal` the
/// taint's empty value).
fn tolerates_unreachable(toleration: &Toleration) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    let key = toleration.key.as_deref().unwrap_or_default();
    if (!effect.is_empty() && effect != "NoExecute") || (!key.is_empty() && key != UNREACHABLE_TAINT) {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "Exists" => true,
        "" | "Equal" => toleration.value.as_deref().unwrap_or_default().is_empty(),
        _ => false,
    }
}

/// How long the pod may stay on an unreachable node; `None`: for ever.
///
/// As Kubernetes' taint manager: the smallest `tolerationSeconds` among the tolerations of the
/// unreachable `NoExecute` taint (at most 0 meaning at once), for ever when those all omit it.
/// The toleration every pod gets by default (`Exists`, `NoExecute`, 300 s) and a pod with no
/// such toleration at all stand for the cluster default, `default`.
pub fn unreachable_tolerance(pod: &Pod, default: Duration) -> Option<Duration> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates_unreachable(t)).collect();
    if matching.is_empty() {
        return Some(default);
    }
    matching
        .iter()
        .filter_map(|t| {
            let seconds = t.toleration_seconds?;
            let admission_default = t.key.as_deref() == Some(UNREACHABLE_TAINT)
                && t.operator.as_deref() == Some("Exists")
                && t.effect.as_deref() == Some("NoExecute")
                && seconds == DEFAULT_TOLERATION_SECONDS;
            Some(if admission_default { default } else { Duration::from_secs(seconds.max(0).unsigned_abs()) })
        })
        .min()
}

/// What to do with one pod of a lost node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodAction {
    /// Set its Ready condition to `False`.
    MarkNotReady(ObjectKey),
    /// Its toleration ran out: delete it.
    Evict(ObjectKey),
}

/// What to do with the pods of a node lost since `since`, at `now`; `evict` says whether
/// evictions are allowed at all. A pod due for eviction is not marked first.
pub fn pod_actions(pods: &[Arc<Pod>], since: Instant, now: Instant, default: Duration, evict: bool) -> Vec<PodAction> {
    pods.iter()
        .filter_map(|pod| {
            let key = ObjectKey::of_meta(&pod.metadata);
            let due = unreachable_tolerance(pod, default).is_some_and(|tolerance| now >= since + tolerance);
            if evict && due {
                Some(PodAction::Evict(key))
            } else if shows_ready(pod) {
                Some(PodAction::MarkNotReady(key))
            } else {
                None
            }
        })
        .collect()
}

// ---- the runner -------------------------------------------------------------------------

/// The controller's memory of one leadership term: liveness per node, and whether every node
/// is lost. (The pods of each node come from the pod informer's node index.)
#[derive(Default)]
struct Monitor {
    liveness: HashMap<String, Liveness>,
    all_lost: bool,
}

impl Monitor {
    fn liveness(&mut self, node: &str, now: Instant) -> &mut Liveness {
        self.liveness.entry(node.to_string()).or_insert_with(|| Liveness::new(now))
    }

    /// Judges every node at `now`: returns the ones needing work (lost, or alive but still
    /// tainted) and notes whether all of them are lost.
    fn survey(&mut self, nodes: &[Arc<Node>], now: Instant, grace: Duration) -> Vec<String> {
        let mut due = Vec::new();
        let mut lost = 0;
        for node in nodes {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            match self.liveness(name, now).health(now, grace) {
                Health::Lost { .. } => {
                    lost += 1;
                    due.push(name.to_string());
                }
                Health::Alive if has_unreachable_taint(node) => due.push(name.to_string()),
                Health::Alive | Health::Pending => {}
            }
        }
        let all_lost = !evictions_allowed(lost, nodes.len()) && !nodes.is_empty();
        if all_lost != self.all_lost {
            if all_lost {
                tracing::warn!(nodes = nodes.len(), "every node is unreachable: evictions paused");
            } else {
                tracing::info!(lost, nodes = nodes.len(), "some nodes reachable: evictions resumed");
            }
            self.all_lost = all_lost;
        }
        due
    }

    /// Notes a change of a Lease; returns the node to look at when it is a renewal of a node's
    /// Lease.
    fn on_lease(&mut self, event: &Event<Lease>, now: Instant) -> Option<String> {
        let lease = &event.object;
        if event.kind == ChangeType::Deleted || lease.metadata.namespace.as_deref() != Some(NODE_LEASE_NAMESPACE) {
            return None;
        }
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        let renew_time = lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
        self.liveness(name, now).saw_lease(renew_time, now).then(|| name.to_string())
    }

    /// Notes a change of a node (forgets a deleted one); returns it when its heartbeat moved.
    fn on_node(&mut self, event: &Event<Node>, now: Instant) -> Option<String> {
        let node = &event.object;
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if event.kind == ChangeType::Deleted {
            self.liveness.remove(name);
            return None;
        }
        self.liveness(name, now).saw_heartbeat(heartbeat(node), now).then(|| name.to_string())
    }
}

type Shared = Arc<Mutex<Monitor>>;

/// Runs until `stop`. Subscribes to the informers at once (call it before they start), and
/// once they have listed judges every node a few times per grace period and whenever its
/// Lease or heartbeat changes.
pub fn run(ctx: Context, stop: CancellationToken) -> impl Future<Output = ()> + Send {
    let monitor: Shared = Arc::default();
    let (on_lease, on_node) = (monitor.clone(), monitor.clone());
    let controller = Controller::new("node-lifecycle-controller")
        .workers(WORKERS)
        .watches(&ctx.informers.leases, move |event| {
            on_lease.lock().ok().and_then(|mut m| m.on_lease(event, Instant::now()))
        })
        .watches(&ctx.informers.nodes, move |event| {
            on_node.lock().ok().and_then(|mut m| m.on_node(event, Instant::now()))
        })
        // No pod change queues a node (the survey finds lost nodes), but reconciles read the
        // pod cache.
        .waits_for(&ctx.informers.pods);
    let survey = watch_nodes(ctx.clone(), monitor.clone(), controller.queue(), stop.clone());
    let recorders = (ctx.recorder(NODE_CONTROLLER), ctx.recorder(EVICTION_CONTROLLER));
    let workers = controller.run(stop, move |name: String| {
        let (ctx, monitor, recorders) = (ctx.clone(), monitor.clone(), recorders.clone());
        async move { reconcile(&ctx, &monitor, &recorders, &name).await }
    });
    async move {
        tokio::join!(survey, workers);
    }
}

/// Waits for the informers' first lists, then queues the nodes needing work, a few times per
/// grace period, until `stop`.
async fn watch_nodes(ctx: Context, monitor: Shared, queue: Arc<WorkQueue<String>>, stop: CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = async {
            ctx.informers.nodes.synced().await;
            ctx.informers.leases.synced().await;
            ctx.informers.pods.synced().await;
        } => {}
    }
    tracing::debug!("node lifecycle controller synced");
    let grace = ctx.config.node_monitor_grace;
    let period = (grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let nodes = ctx.informers.nodes.list();
        let due = match monitor.lock() {
            Ok(mut m) => m.survey(&nodes, Instant::now(), grace),
            Err(_) => return,
        };
        for name in due {
            queue.add(name);
        }
    }
}

fn write_options() -> WriteOptions {
    WriteOptions { field_manager: Some(NODE_CONTROLLER.into()), ..Default::default() }
}

/// The in-place edit that makes the stored object what `change` makes of it (nothing when
/// `change` has nothing to do), for [`trireme_registry::Registry::update_object`].
fn apply<T>(change: impl Fn(&T) -> Option<T>) -> impl FnMut(&mut T) {
    move |current: &mut T| {
        if let Some(next) = change(current) {
            *current = next;
        }
    }
}

/// The node a pod is bound to.
fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// Brings one node (and its pods) in line with its health.
async fn reconcile(
    ctx: &Context,
    monitor: &Shared,
    (node_events, eviction_events): &(Recorder, Recorder),
    name: &str,
) -> Result<Action, RegistryError> {
    let Some(node) = ctx.informers.nodes.get(&ObjectKey::new(None, name)) else { return Ok(Action::Await) };
    let now = Instant::now();
    let grace = ctx.config.node_monitor_grace;
    let (health, all_lost) = match monitor.lock() {
        Ok(mut m) => (m.liveness(name, now).health(now, grace), m.all_lost),
        Err(_) => return Err(RegistryError::Internal("node monitor poisoned".into())),
    };
    let since = match health {
        Health::Pending => return Ok(Action::Await),
        Health::Alive => {
            if has_unreachable_taint(&node) {
                let change = apply(without_unreachable_taints);
                ctx.registry.update_object::<Nodes>(None, name, Scope::Main, &write_options(), change, None).await?;
                tracing::info!(node = name, "node renewing again: unreachable taints removed");
            }
            return Ok(Action::Await);
        }
        Health::Lost { since } => since,
    };
    let stamp = util::now();
    if mark_unknown(&node, stamp).is_some() {
        let change = apply(|current| mark_unknown(current, stamp));
        let written =
            ctx.registry.update_object::<Nodes>(None, name, Scope::Status, &write_options(), change, None).await?;
        if ready_status(&node) != Some("Unknown") {
            tracing::warn!(node = name, "kubelet stopped posting node status: node is NotReady");
            let message = format!("Node {name} status is now: NodeNotReady");
            node_events.record(&written, EventType::Normal, "NodeNotReady", &message).await;
        }
    }
    if with_unreachable_taints(&node, stamp).is_some() {
        let change = apply(|current| with_unreachable_taints(current, stamp));
        ctx.registry.update_object::<Nodes>(None, name, Scope::Main, &write_options(), change, None).await?;
        tracing::info!(node = name, "node tainted unreachable");
    }
    let pods: Vec<Arc<Pod>> = ctx
        .informers
        .pods
        .indexed(crate::BY_NODE, name)
        .into_iter()
        .filter(|pod| node_name(pod) == Some(name))
        .collect();
    let default = ctx.config.pod_eviction_timeout;
    for action in pod_actions(&pods, since, now, default, !all_lost) {
        match action {
            PodAction::MarkNotReady(key) => mark_not_ready(ctx, node_events, &key, stamp).await?,
            PodAction::Evict(key) => evict(ctx, eviction_events, &key, name).await?,
        }
    }
    Ok(Action::Await)
}

/// Sets the pod's Ready condition to `False`; a pod gone meanwhile is fine.
async fn mark_not_ready(
    ctx: &Context,
    events: &Recorder,
    key: &ObjectKey,
    stamp: Timestamp,
) -> Result<(), RegistryError> {
    let change = apply(|current| mark_pod_not_ready(current, stamp));
    let options = write_options();
    match ctx
        .registry
        .update_object::<Pods>(key.namespace.as_deref(), &key.name, Scope::Status, &options, change, None)
        .await
    {
        Ok(written) => {
            tracing::debug!(pod = %key, "pod on an unreachable node marked not ready");
            events.record(&written, EventType::Warning, "NodeNotReady", "Node is not ready").await;
            Ok(())
        }
        Err(RegistryError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the pod at once (its node is gone and cannot stop it); a pod gone or replaced by
/// another of the same name meanwhile is left alone.
async fn evict(ctx: &Context, events: &Recorder, key: &ObjectKey, node: &str) -> Result<(), RegistryError> {
    let Some(pod) = ctx.informers.pods.get(key) else { return Ok(()) };
    let options = DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: pod
            .metadata
            .uid
            .as_deref()
            .filter(|uid| !uid.is_empty())
            .map(|uid| Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    };
    match ctx.registry.delete(Pods::RESOURCE, key.namespace.as_deref(), &key.name, &options).await {
        Ok(_) => {
            tracing::info!(pod = %key, node, "pod evicted from an unreachable node");
            events
                .record(&*pod, EventType::Normal, "TaintManagerEviction", &format!("Marking for deletion Pod {key}"))
                .await;
            Ok(())
        }
        Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;

    const GRACE: Duration = Duration::from_secs(10);
    const DEFAULT: Duration = Duration::from_secs(30);

    fn time(text: &str) -> Timestamp {
        text.parse().expect("a time")
    }

    fn node() -> Node {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2025-01-01T00:00:00Z"},
                {"type": "NetworkUnavailable", "status": "False"},
            ]},
        }))
        .expect("a node")
    }

    fn pod(name: &str, tolerations: Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}], "tolerations": tolerations},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }))
            .expect("a pod"),
        )
    }

    fn admission_default() -> Value {
        json!({"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    }

    #[test]
    fn a_node_first_seen_by_a_new_leader_gets_a_full_grace_period_whatever_its_lease_says() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        assert!(!liveness.saw_lease(Some(time("2020-01-01T00:00:00.000000Z")), start), "a first value is no renewal");
        assert_eq!(liveness.health(start + GRACE / 2, GRACE), Health::Pending);
        assert_eq!(liveness.health(start + GRACE, GRACE), Health::Lost { since: start + GRACE });
    }

    #[test]
    fn a_renewed_lease_keeps_a_node_alive_and_a_stale_one_loses_it_a_grace_period_later() {
        let (t1, t2, t3) = (time("2025-01-01T00:00:01Z"), time("2025-01-01T00:00:02Z"), time("2025-01-01T00:00:03Z"));
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        liveness.saw_lease(Some(t1), start);
        let renewed = start + Duration::from_secs(4);
        assert!(liveness.saw_lease(Some(t2), renewed));
        assert!(!liveness.saw_lease(Some(t2), renewed + Duration::from_secs(1)), "the same value is no renewal");
        assert_eq!(liveness.health(renewed + GRACE - Duration::from_millis(1), GRACE), Health::Alive);
        assert_eq!(liveness.health(renewed + GRACE, GRACE), Health::Lost { since: renewed + GRACE });
        let back = renewed + GRACE * 3;
        assert!(liveness.saw_lease(Some(t3), back));
        assert_eq!(liveness.health(back, GRACE), Health::Alive);
    }

    #[test]
    fn a_changed_heartbeat_counts_as_a_renewal_too() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        assert!(!liveness.saw_heartbeat(Some(time("2025-01-01T00:00:01Z")), start));
        assert!(liveness.saw_heartbeat(Some(time("2025-01-01T00:00:02Z")), start + Duration::from_secs(1)));
        assert_eq!(liveness.health(start + Duration::from_secs(2), GRACE), Health::Alive);
    }

    #[test]
    fn a_lost_node_has_its_kubelet_conditions_unknown_and_keeps_its_heartbeat_time() {
        let stamp = time("2025-02-02T00:00:00Z");
        let marked = mark_unknown(&node(), stamp).expect("changed");
        let ready = node_condition(&marked, "Ready").expect("ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(UNKNOWN_REASON));
        assert_eq!(ready.message.as_deref(), Some(UNKNOWN_MESSAGE));
        assert_eq!(ready.last_transition_time, Some(Time(stamp)));
        assert_eq!(ready.last_heartbeat_time, Some(Time(time("2025-01-01T00:00:00Z"))));
        assert_eq!(heartbeat(&marked), Some(time("2025-01-01T00:00:00Z")));
        assert_eq!(node_condition(&marked, "MemoryPressure").expect("memory").status, "Unknown");
        assert_eq!(
            node_condition(&marked, "NetworkUnavailable").expect("network").status,
            "False",
            "not the kubelet's"
        );
        assert_eq!(mark_unknown(&marked, time("2025-03-03T00:00:00Z")), None, "once");
    }

    #[test]
    fn a_lost_node_gets_both_unreachable_taints_once_and_loses_only_them_when_back() {
        let stamp = time("2025-02-02T00:00:00Z");
        let tainted = with_unreachable_taints(&node(), stamp).expect("changed");
        let list = taints(&tainted);
        assert_eq!(list.len(), 3);
        let unreachable = |effect: &str, time_added| Taint {
            key: UNREACHABLE_TAINT.into(),
            effect: effect.into(),
            time_added,
            value: None,
        };
        assert!(list.contains(&unreachable("NoSchedule", None)));
        assert!(list.contains(&unreachable("NoExecute", Some(Time(stamp)))));
        assert_eq!(with_unreachable_taints(&tainted, time("2025-03-03T00:00:00Z")), None, "timeAdded kept");
        assert!(has_unreachable_taint(&tainted));
        let untainted = without_unreachable_taints(&tainted).expect("changed");
        assert_eq!(taints(&untainted), taints(&node()));
        assert_eq!(without_unreachable_taints(&untainted), None);
        let bare: Node = serde_json::from_value(json!({"spec": {}})).expect("a node");
        let tainted = with_unreachable_taints(&bare, stamp).expect("tainted");
        assert_eq!(without_unreachable_taints(&tainted), Some(bare), "no empty taints list left behind");
    }

    #[test]
    fn the_default_toleration_means_the_configured_eviction_timeout() {
        assert_eq!(unreachable_tolerance(&pod("a", json!([admission_default()])), DEFAULT), Some(DEFAULT));
        assert_eq!(unreachable_tolerance(&pod("a", json!([])), DEFAULT), Some(DEFAULT), "no toleration at all");
    }

    #[test]
    fn a_pods_own_toleration_seconds_are_honoured_smallest_first_and_none_means_for_ever() {
        let own = |seconds: Value| json!({"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds});
        assert_eq!(unreachable_tolerance(&pod("a", json!([own(json!(600))])), DEFAULT), Some(Duration::from_secs(600)));
        assert_eq!(unreachable_tolerance(&pod("a", json!([own(json!(5))])), DEFAULT), Some(Duration::from_secs(5)));
        assert_eq!(unreachable_tolerance(&pod("a", json!([own(json!(-1))])), DEFAULT), Some(Duration::ZERO));
        let both = json!([own(json!(600)), own(json!(60))]);
        assert_eq!(unreachable_tolerance(&pod("a", both), DEFAULT), Some(Duration::from_secs(60)));
        let forever = json!([{"operator": "Exists"}]);
        assert_eq!(unreachable_tolerance(&pod("a", forever), DEFAULT), None);
        let unrelated = json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]);
        assert_eq!(unreachable_tolerance(&pod("a", unrelated), DEFAULT), Some(DEFAULT));
    }

    #[test]
    fn pods_of_a_lost_node_are_marked_not_ready_then_evicted_when_their_toleration_runs_out() {
        let since = Instant::now();
        let quick = pod(
            "quick",
            json!([{"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
        );
        let usual = pod("usual", json!([admission_default()]));
        let forever = pod("forever", json!([{"key": UNREACHABLE_TAINT, "operator": "Exists"}]));
        let pods = vec![quick, usual, forever];
        let key = |name: &str| ObjectKey::new(Some("default"), name);
        let at = |secs: u64| pod_actions(&pods, since, since + Duration::from_secs(secs), DEFAULT, true);
        assert_eq!(
            at(0),
            [
                PodAction::MarkNotReady(key("quick")),
                PodAction::MarkNotReady(key("usual")),
                PodAction::MarkNotReady(key("forever"))
            ]
        );
        assert_eq!(at(5)[0], PodAction::Evict(key("quick")));
        assert_eq!(
            at(30),
            [PodAction::Evict(key("quick")), PodAction::Evict(key("usual")), PodAction::MarkNotReady(key("forever"))]
        );
        let paused = pod_actions(&pods, since, since + Duration::from_secs(60), DEFAULT, false);
        assert!(paused.iter().all(|a| matches!(a, PodAction::MarkNotReady(_))), "{paused:?}");
    }

    #[test]
    fn a_pod_is_marked_not_ready_once_and_only_its_ready_condition_changes() {
        let stamp = time("2025-02-02T00:00:00Z");
        let marked = mark_pod_not_ready(&pod("a", json!([])), stamp).expect("changed");
        let expected = PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            last_transition_time: Some(Time(stamp)),
            ..Default::default()
        };
        assert_eq!(marked.status.as_ref().and_then(|s| s.conditions.clone()), Some(vec![expected]));
        assert_eq!(mark_pod_not_ready(&marked, time("2025-03-03T00:00:00Z")), None);
        assert!(!shows_ready(&marked));
    }

    #[test]
    fn when_every_node_is_lost_nothing_is_evicted() {
        assert!(!evictions_allowed(3, 3));
        assert!(evictions_allowed(2, 3));
        let start = Instant::now();
        let mut monitor = Monitor::default();
        let nodes = vec![Arc::new(node())];
        assert!(monitor.survey(&nodes, start, GRACE).is_empty(), "first sight: pending");
        assert_eq!(monitor.survey(&nodes, start + GRACE, GRACE), ["n1"]);
        assert!(monitor.all_lost);
    }
}
