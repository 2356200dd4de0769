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

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trireme_model::resource;
use trireme_model::resource::ResourceType;
use trireme_registry::ChangeType;
use trireme_registry::DeleteOptions;
use trireme_registry::Preconditions;
use trireme_registry::RegistryError;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;
use trireme_registry::events::EventType;
use trireme_registry::events::Recorder;
use trireme_registry::informer::Action;
use trireme_registry::informer::Event;
use trireme_registry::informer::ObjectKey;
use trireme_registry::informer::WorkQueue;
use trireme_registry::informer::run_workers;
use trireme_registry::object_name;

use crate::Context;

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
    lease: Option<Option<String>>,
    /// The Ready condition's last `lastHeartbeatTime` seen (`None`: node not seen yet).
    heartbeat: Option<Option<String>>,
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
    pub fn saw_lease(&mut self, renew_time: Option<&str>, now: Instant) -> bool {
        Self::saw(&mut self.lease, renew_time, now, &mut self.last_change, &mut self.renewed)
    }

    /// Notes the Ready condition's `lastHeartbeatTime`, as [`Liveness::saw_lease`] does.
    pub fn saw_heartbeat(&mut self, heartbeat: Option<&str>, now: Instant) -> bool {
        Self::saw(&mut self.heartbeat, heartbeat, now, &mut self.last_change, &mut self.renewed)
    }

    fn saw(
        seen: &mut Option<Option<String>>,
        value: Option<&str>,
        now: Instant,
        last_change: &mut Instant,
        renewed: &mut bool,
    ) -> bool {
        let value = value.map(str::to_string);
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

fn str_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object.pointer("/status/conditions").and_then(Value::as_array)?.iter().find(|c| c["type"] == kind)
}

/// The status of the node's Ready condition, if it has one.
pub fn ready_status(node: &Value) -> Option<&str> {
    condition(node, "Ready").and_then(|c| c["status"].as_str())
}

/// The Ready condition's `lastHeartbeatTime` (what a kubelet bumps when it posts status).
pub fn heartbeat(node: &Value) -> Option<&str> {
    condition(node, "Ready").and_then(|c| c["lastHeartbeatTime"].as_str())
}

/// The node with its kubelet conditions `Unknown` (heartbeat times kept: they are the
/// kubelet's), or `None` when they already are. A node without a Ready condition gets one.
pub fn mark_unknown(node: &Value, now: &str) -> Option<Value> {
    let mut next = node.clone();
    let mut changed = false;
    let mut has_ready = false;
    if let Some(conditions) = next.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
        for c in conditions.iter_mut() {
            let Some(kind) = c["type"].as_str() else { continue };
            if !KUBELET_CONDITIONS.contains(&kind) {
                continue;
            }
            has_ready |= kind == "Ready";
            if c["status"] == "Unknown" {
                continue;
            }
            c["status"] = json!("Unknown");
            c["reason"] = json!(UNKNOWN_REASON);
            c["message"] = json!(UNKNOWN_MESSAGE);
            c["lastTransitionTime"] = json!(now);
            changed = true;
        }
    }
    if !has_ready {
        let ready = json!({"type": "Ready", "status": "Unknown", "reason": UNKNOWN_REASON, "message": UNKNOWN_MESSAGE,
            "lastTransitionTime": now});
        trireme_registry::set_condition(&mut next, ready);
        changed = true;
    }
    changed.then_some(next)
}

fn is_unreachable_taint(taint: &Value) -> bool {
    taint["key"] == UNREACHABLE_TAINT && (taint["effect"] == "NoExecute" || taint["effect"] == "NoSchedule")
}

fn taints(node: &Value) -> Vec<Value> {
    node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// Whether the node carries an unreachable taint.
pub fn has_unreachable_taint(node: &Value) -> bool {
    taints(node).iter().any(is_unreachable_taint)
}

fn with_taints(node: &Value, taints: Vec<Value>) -> Value {
    let mut next = node.clone();
    if !next["spec"].is_object() {
        next["spec"] = json!({});
    }
    if let Some(spec) = next["spec"].as_object_mut() {
        if taints.is_empty() {
            spec.remove("taints");
        } else {
            spec.insert("taints".into(), Value::Array(taints));
        }
    }
    next
}

/// The node with both unreachable taints (`NoExecute` stamped `timeAdded: now`), keeping any
/// already there; `None` when it has both.
pub fn with_unreachable_taints(node: &Value, now: &str) -> Option<Value> {
    let mut list = taints(node);
    let before = list.len();
    for effect in ["NoSchedule", "NoExecute"] {
        if !list.iter().any(|t| t["key"] == UNREACHABLE_TAINT && t["effect"] == effect) {
            let mut taint = json!({"key": UNREACHABLE_TAINT, "effect": effect});
            if effect == "NoExecute" {
                taint["timeAdded"] = json!(now);
            }
            list.push(taint);
        }
    }
    (list.len() != before).then(|| with_taints(node, list))
}

/// The node without the unreachable taints; `None` when it has none.
pub fn without_unreachable_taints(node: &Value) -> Option<Value> {
    let list = taints(node);
    let kept: Vec<Value> = list.iter().filter(|t| !is_unreachable_taint(t)).cloned().collect();
    (kept.len() != list.len()).then(|| with_taints(node, kept))
}

/// Whether the pod still shows Ready (its Ready condition exists and is not `False`).
pub fn shows_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] != "False")
}

/// The pod with its Ready condition `False` (in place, transition time `now`); `None` when it
/// has no Ready condition or it already is `False`.
pub fn mark_pod_not_ready(pod: &Value, now: &str) -> Option<Value> {
    if !shows_ready(pod) {
        return None;
    }
    let mut next = pod.clone();
    let conditions = next.pointer_mut("/status/conditions").and_then(Value::as_array_mut)?;
    let ready = conditions.iter_mut().find(|c| c["type"] == "Ready")?;
    ready["status"] = json!("False");
    ready["lastTransitionTime"] = json!(now);
    Some(next)
}

/// Whether `toleration` tolerates the `node.kubernetes.io/unreachable:NoExecute` taint
/// (Kubernetes' `ToleratesTaint`: empty effect and key match all, `Exists` any value, `Equal` the
/// taint's empty value).
fn tolerates_unreachable(toleration: &Value) -> bool {
    let effect = toleration["effect"].as_str().unwrap_or_default();
    let key = toleration["key"].as_str().unwrap_or_default();
    if (!effect.is_empty() && effect != "NoExecute") || (!key.is_empty() && key != UNREACHABLE_TAINT) {
        return false;
    }
    match toleration["operator"].as_str().unwrap_or_default() {
        "Exists" => true,
        "" | "Equal" => toleration["value"].as_str().unwrap_or_default().is_empty(),
        _ => false,
    }
}

/// How long the pod may stay on an unreachable node; `None`: for ever.
///
/// As Kubernetes' taint manager: the smallest `tolerationSeconds` among the tolerations of the
/// unreachable `NoExecute` taint (at most 0 meaning at once), for ever when those all omit it.
/// The toleration every pod gets by default (`Exists`, `NoExecute`, 300 s) and a pod with no
/// such toleration at all stand for the cluster default, `default`.
pub fn unreachable_tolerance(pod: &Value, default: Duration) -> Option<Duration> {
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let matching: Vec<&Value> = tolerations.iter().filter(|t| tolerates_unreachable(t)).collect();
    if matching.is_empty() {
        return Some(default);
    }
    matching
        .iter()
        .filter_map(|t| {
            let seconds = t["tolerationSeconds"].as_i64()?;
            let admission_default = t["key"] == UNREACHABLE_TAINT
                && t["operator"] == "Exists"
                && t["effect"] == "NoExecute"
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
pub fn pod_actions(
    pods: &[Arc<Value>],
    since: Instant,
    now: Instant,
    default: Duration,
    evict: bool,
) -> Vec<PodAction> {
    pods.iter()
        .filter_map(|pod| {
            let key = ObjectKey::of(pod);
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

/// The controller's memory of one leadership term: liveness per node, the pods of each node
/// (an index the pod informer lacks), and whether every node is lost.
#[derive(Default)]
struct Monitor {
    liveness: HashMap<String, Liveness>,
    pods_by_node: HashMap<String, BTreeSet<ObjectKey>>,
    all_lost: bool,
}

impl Monitor {
    fn liveness(&mut self, node: &str, now: Instant) -> &mut Liveness {
        self.liveness.entry(node.to_string()).or_insert_with(|| Liveness::new(now))
    }

    /// Judges every node at `now`: returns the ones needing work (lost, or alive but still
    /// tainted) and notes whether all of them are lost.
    fn survey(&mut self, nodes: &[Arc<Value>], now: Instant, grace: Duration) -> Vec<String> {
        let mut due = Vec::new();
        let mut lost = 0;
        for node in nodes {
            let name = object_name(node);
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

    fn index_pod(&mut self, event: &Event) {
        let node_of = |pod: &Value| str_at(pod, "/spec/nodeName").map(str::to_string);
        let key = ObjectKey::of(&event.object);
        let old = event.old.as_deref().and_then(node_of);
        let new = if event.kind == ChangeType::Deleted { None } else { node_of(&event.object) };
        if old == new {
            return;
        }
        if let Some(old) = old
            && let Some(pods) = self.pods_by_node.get_mut(&old)
        {
            pods.remove(&key);
            if pods.is_empty() {
                self.pods_by_node.remove(&old);
            }
        }
        if let Some(new) = new {
            self.pods_by_node.entry(new).or_default().insert(key);
        }
    }
}

type Shared = Arc<Mutex<Monitor>>;

fn resource_type(group: &str, plural: &str) -> Result<&'static ResourceType, RegistryError> {
    resource::find(group, "v1", plural).ok_or_else(|| RegistryError::Internal(format!("{plural} is not served")))
}

/// Runs until `stop`. Subscribes to the informers first (they start after this is spawned),
/// waits for their first lists, then judges every node a few times per grace period and
/// whenever its Lease or heartbeat changes.
pub async fn run(ctx: Context, stop: CancellationToken) {
    let queue: Arc<WorkQueue<String>> = Arc::default();
    let monitor: Shared = Arc::default();
    {
        let (queue, monitor) = (queue.clone(), monitor.clone());
        ctx.informers.leases.subscribe(move |event: &Event| {
            let lease = &event.object;
            if event.kind == ChangeType::Deleted || str_at(lease, "/metadata/namespace") != Some(NODE_LEASE_NAMESPACE) {
                return;
            }
            let name = object_name(lease);
            let now = Instant::now();
            let renewal = monitor
                .lock()
                .map(|mut m| m.liveness(name, now).saw_lease(str_at(lease, "/spec/renewTime"), now))
                .unwrap_or(false);
            if renewal {
                queue.add(name.to_string());
            }
        });
    }
    {
        let (queue, monitor) = (queue.clone(), monitor.clone());
        ctx.informers.nodes.subscribe(move |event: &Event| {
            let node = &event.object;
            let name = object_name(node);
            let Ok(mut m) = monitor.lock() else { return };
            if event.kind == ChangeType::Deleted {
                m.liveness.remove(name);
                return;
            }
            let now = Instant::now();
            if m.liveness(name, now).saw_heartbeat(heartbeat(node), now) {
                drop(m);
                queue.add(name.to_string());
            }
        });
    }
    {
        let monitor = monitor.clone();
        ctx.informers.pods.subscribe(move |event: &Event| {
            if let Ok(mut m) = monitor.lock() {
                m.index_pod(event);
            }
        });
    }
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = async {
            ctx.informers.nodes.synced().await;
            ctx.informers.leases.synced().await;
            ctx.informers.pods.synced().await;
        } => {}
    }
    tracing::debug!("node lifecycle controller synced");
    let survey = watch_nodes(ctx.clone(), monitor.clone(), queue.clone(), stop.clone());
    let recorders = (ctx.recorder(NODE_CONTROLLER), ctx.recorder(EVICTION_CONTROLLER));
    let workers = run_workers(queue, WORKERS, stop, move |name: String| {
        let (ctx, monitor, recorders) = (ctx.clone(), monitor.clone(), recorders.clone());
        async move { reconcile(&ctx, &monitor, &recorders, &name).await }
    });
    tokio::join!(survey, workers);
}

/// Queues the nodes needing work, a few times per grace period, until `stop`.
async fn watch_nodes(ctx: Context, monitor: Shared, queue: Arc<WorkQueue<String>>, stop: CancellationToken) {
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
    let (health, all_lost, pod_keys) = match monitor.lock() {
        Ok(mut m) => {
            let health = m.liveness(name, now).health(now, grace);
            (health, m.all_lost, m.pods_by_node.get(name).cloned().unwrap_or_default())
        }
        Err(_) => return Err(RegistryError::Internal("node monitor poisoned".into())),
    };
    let nodes = resource_type("", "nodes")?;
    let since = match health {
        Health::Pending => return Ok(Action::Await),
        Health::Alive => {
            if has_unreachable_taint(&node) {
                let change =
                    |current: &Value| Ok(without_unreachable_taints(current).unwrap_or_else(|| current.clone()));
                ctx.registry.update_with(nodes, None, name, Scope::Main, &write_options(), change, None).await?;
                tracing::info!(node = name, "node renewing again: unreachable taints removed");
            }
            return Ok(Action::Await);
        }
        Health::Lost { since } => since,
    };
    let stamp = trireme_registry::now();
    if mark_unknown(&node, &stamp).is_some() {
        let change = |current: &Value| Ok(mark_unknown(current, &stamp).unwrap_or_else(|| current.clone()));
        let written =
            ctx.registry.update_with(nodes, None, name, Scope::Status, &write_options(), change, None).await?;
        if ready_status(&node) != Some("Unknown") {
            tracing::warn!(node = name, "kubelet stopped posting node status: node is NotReady");
            let message = format!("Node {name} status is now: NodeNotReady");
            node_events.record(&written.object, EventType::Normal, "NodeNotReady", &message).await;
        }
    }
    if with_unreachable_taints(&node, &stamp).is_some() {
        let change = |current: &Value| Ok(with_unreachable_taints(current, &stamp).unwrap_or_else(|| current.clone()));
        ctx.registry.update_with(nodes, None, name, Scope::Main, &write_options(), change, None).await?;
        tracing::info!(node = name, "node tainted unreachable");
    }
    let pods: Vec<Arc<Value>> = pod_keys
        .iter()
        .filter_map(|key| ctx.informers.pods.get(key))
        .filter(|pod| str_at(pod, "/spec/nodeName") == Some(name))
        .collect();
    let default = ctx.config.pod_eviction_timeout;
    for action in pod_actions(&pods, since, now, default, !all_lost) {
        match action {
            PodAction::MarkNotReady(key) => mark_not_ready(ctx, node_events, &key, &stamp).await?,
            PodAction::Evict(key) => evict(ctx, eviction_events, &key, name).await?,
        }
    }
    Ok(Action::Await)
}

/// Sets the pod's Ready condition to `False`; a pod gone meanwhile is fine.
async fn mark_not_ready(ctx: &Context, events: &Recorder, key: &ObjectKey, stamp: &str) -> Result<(), RegistryError> {
    let pods = resource_type("", "pods")?;
    let change = |current: &Value| Ok(mark_pod_not_ready(current, stamp).unwrap_or_else(|| current.clone()));
    let options = write_options();
    match ctx
        .registry
        .update_with(pods, key.namespace.as_deref(), &key.name, Scope::Status, &options, change, None)
        .await
    {
        Ok(written) => {
            tracing::debug!(pod = %key, "pod on an unreachable node marked not ready");
            events.record(&written.object, EventType::Warning, "NodeNotReady", "Node is not ready").await;
            Ok(())
        }
        Err(RegistryError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the pod at once (its node is gone and cannot stop it); a pod gone or replaced by
/// another of the same name meanwhile is left alone.
async fn evict(ctx: &Context, events: &Recorder, key: &ObjectKey, node: &str) -> Result<(), RegistryError> {
    let pods = resource_type("", "pods")?;
    let Some(pod) = ctx.informers.pods.get(key) else { return Ok(()) };
    let options = DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: str_at(&pod, "/metadata/uid")
            .map(|uid| Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    };
    match ctx.registry.delete(pods, key.namespace.as_deref(), &key.name, &options).await {
        Ok(_) => {
            tracing::info!(pod = %key, node, "pod evicted from an unreachable node");
            events
                .record(&pod, EventType::Normal, "TaintManagerEviction", &format!("Marking for deletion Pod {key}"))
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

    const GRACE: Duration = Duration::from_secs(10);
    const DEFAULT: Duration = Duration::from_secs(30);

    fn node() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2025-01-01T00:00:00Z"},
                {"type": "NetworkUnavailable", "status": "False"},
            ]},
        })
    }

    fn pod(name: &str, tolerations: Value) -> Arc<Value> {
        Arc::new(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}], "tolerations": tolerations},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }))
    }

    fn admission_default() -> Value {
        json!({"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    }

    #[test]
    fn a_node_first_seen_by_a_new_leader_gets_a_full_grace_period_whatever_its_lease_says() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        assert!(!liveness.saw_lease(Some("2020-01-01T00:00:00.000000Z"), start), "a first value is no renewal");
        assert_eq!(liveness.health(start + GRACE / 2, GRACE), Health::Pending);
        assert_eq!(liveness.health(start + GRACE, GRACE), Health::Lost { since: start + GRACE });
    }

    #[test]
    fn a_renewed_lease_keeps_a_node_alive_and_a_stale_one_loses_it_a_grace_period_later() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        liveness.saw_lease(Some("t1"), start);
        let renewed = start + Duration::from_secs(4);
        assert!(liveness.saw_lease(Some("t2"), renewed));
        assert!(!liveness.saw_lease(Some("t2"), renewed + Duration::from_secs(1)), "the same value is no renewal");
        assert_eq!(liveness.health(renewed + GRACE - Duration::from_millis(1), GRACE), Health::Alive);
        assert_eq!(liveness.health(renewed + GRACE, GRACE), Health::Lost { since: renewed + GRACE });
        let back = renewed + GRACE * 3;
        assert!(liveness.saw_lease(Some("t3"), back));
        assert_eq!(liveness.health(back, GRACE), Health::Alive);
    }

    #[test]
    fn a_changed_heartbeat_counts_as_a_renewal_too() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        assert!(!liveness.saw_heartbeat(Some("h1"), start));
        assert!(liveness.saw_heartbeat(Some("h2"), start + Duration::from_secs(1)));
        assert_eq!(liveness.health(start + Duration::from_secs(2), GRACE), Health::Alive);
    }

    #[test]
    fn a_lost_node_has_its_kubelet_conditions_unknown_and_keeps_its_heartbeat_time() {
        let marked = mark_unknown(&node(), "2025-02-02T00:00:00Z").expect("changed");
        let ready = condition(&marked, "Ready").expect("ready");
        assert_eq!(ready["status"], "Unknown");
        assert_eq!(ready["reason"], UNKNOWN_REASON);
        assert_eq!(ready["message"], UNKNOWN_MESSAGE);
        assert_eq!(ready["lastTransitionTime"], "2025-02-02T00:00:00Z");
        assert_eq!(ready["lastHeartbeatTime"], "2025-01-01T00:00:00Z");
        assert_eq!(condition(&marked, "MemoryPressure").expect("memory")["status"], "Unknown");
        assert_eq!(condition(&marked, "NetworkUnavailable").expect("network")["status"], "False", "not the kubelet's");
        assert_eq!(mark_unknown(&marked, "2025-03-03T00:00:00Z"), None, "once");
    }

    #[test]
    fn a_lost_node_gets_both_unreachable_taints_once_and_loses_only_them_when_back() {
        let tainted = with_unreachable_taints(&node(), "2025-02-02T00:00:00Z").expect("changed");
        let list = taints(&tainted);
        assert_eq!(list.len(), 3);
        assert!(list.contains(&json!({"key": UNREACHABLE_TAINT, "effect": "NoSchedule"})));
        assert!(
            list.contains(
                &json!({"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": "2025-02-02T00:00:00Z"})
            )
        );
        assert_eq!(with_unreachable_taints(&tainted, "2025-03-03T00:00:00Z"), None, "timeAdded kept");
        assert!(has_unreachable_taint(&tainted));
        let untainted = without_unreachable_taints(&tainted).expect("changed");
        assert_eq!(untainted["spec"]["taints"], node()["spec"]["taints"]);
        assert_eq!(without_unreachable_taints(&untainted), None);
        let bare = without_unreachable_taints(&with_unreachable_taints(&json!({"spec": {}}), "t").expect("tainted"));
        assert_eq!(bare, Some(json!({"spec": {}})));
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
        let marked = mark_pod_not_ready(&pod("a", json!([])), "2025-02-02T00:00:00Z").expect("changed");
        assert_eq!(
            marked["status"]["conditions"],
            json!([{"type": "Ready", "status": "False", "lastTransitionTime": "2025-02-02T00:00:00Z"}])
        );
        assert_eq!(mark_pod_not_ready(&marked, "2025-03-03T00:00:00Z"), None);
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
