//! The loop that binds pods: informer events feed the [`Cache`] and the [`SchedulingQueue`];
//! one worker takes a pending pod, chooses a node under the cache's lock, assumes the pod
//! there and hands the bind to a task of its own, so choosing never waits on the store.
//!
//! A pod is ours while it has no `spec.nodeName`, no `deletionTimestamp`, no scheduling
//! gates, has not finished, and names no scheduler or `default-scheduler`. It is never
//! scheduled twice: the queue hands a pod to one attempt at a time and holds it while its bind
//! is under way, the cache refuses a pod it already counts, and the registry's bind refuses a
//! pod that is already bound (`Conflict`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::sync::Weak;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use trireme_model::kinds::Nodes;
use trireme_model::kinds::Pods;
use trireme_registry::ChangeType;
use trireme_registry::Registry;
use trireme_registry::RegistryError;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;
use trireme_registry::events::EventType;
use trireme_registry::events::Recorder;
use trireme_registry::informer::Event;
use trireme_registry::informer::Informer;
use trireme_registry::informer::ObjectKey;

use crate::cache::Cache;
use crate::nodeinfo::PodInfo;
use crate::nodeinfo::PodUsage;
use crate::queue::SchedulingQueue;

/// The scheduler name this scheduler answers to (and pods without one).
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// The field manager of the scheduler's status writes, as in Kubernetes.
const FIELD_MANAGER: &str = "kube-scheduler";
/// Binds and failure reports under way at once; choosing waits when this many are.
const MAX_WRITES_IN_FLIGHT: usize = 256;

/// The scheduler: assigns pending pods to nodes.
pub struct Scheduler {
    shared: Arc<Shared>,
}

struct Shared {
    registry: Registry,
    recorder: Recorder,
    pods: Informer<Pods>,
    nodes: Informer<Nodes>,
    cache: Mutex<Cache>,
    queue: SchedulingQueue,
}

/// What to do after a pod was tried, off the scheduling loop.
enum Followup {
    Bind { key: ObjectKey, node: String },
    Report { key: ObjectKey, pod: Arc<Pod>, message: String, mark: bool, event: bool },
}

impl Scheduler {
    /// A scheduler binding pods from `pods` to nodes from `nodes`. Subscribes to both informers,
    /// so it must be created before they run.
    pub fn new(registry: Registry, pods: Informer<Pods>, nodes: Informer<Nodes>, recorder: Recorder) -> Scheduler {
        let shared = Arc::new(Shared {
            registry,
            recorder,
            pods: pods.clone(),
            nodes: nodes.clone(),
            cache: Mutex::default(),
            queue: SchedulingQueue::default(),
        });
        // Weak: the informers outlive a stopped scheduler only as long as their term does, but
        // a strong reference would be a cycle through `Shared`'s own informer handles.
        let weak = Arc::downgrade(&shared);
        pods.subscribe(move |event| {
            if let Some(shared) = Weak::upgrade(&weak) {
                shared.on_pod(event);
            }
        });
        let weak = Arc::downgrade(&shared);
        nodes.subscribe(move |event| {
            if let Some(shared) = Weak::upgrade(&weak) {
                shared.on_node(event);
            }
        });
        Scheduler { shared }
    }

    /// Schedules until `stop`. Starts once both informers have listed, so that no pod is
    /// judged against half the nodes.
    pub async fn run(self, stop: CancellationToken) {
        let shared = self.shared;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = async { shared.pods.synced().await; shared.nodes.synced().await } => {}
        }
        tracing::info!(nodes = shared.lock_cache().node_count(), pending = shared.queue.len(), "scheduler started");
        let writes = Arc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => break,
                permit = writes.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let key = tokio::select! {
                _ = stop.cancelled() => break,
                key = shared.queue.pop() => key,
            };
            while tasks.try_join_next().is_some() {}
            match shared.schedule_one(&key) {
                Some(Followup::Bind { key, node }) => {
                    tasks.spawn(shared.clone().bind(key, node, permit));
                }
                Some(Followup::Report { key, pod, message, mark, event }) => {
                    tasks.spawn(shared.clone().report(key, pod, message, mark, event, permit));
                }
                None => {}
            }
            // Choosing is CPU work that may never wait: let the informers and binds run.
            tokio::task::consume_budget().await;
        }
        // A bind cut short either landed or did not; the next leader starts from the store.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

impl Shared {
    fn lock_cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One attempt to place the pod at `key`.
    fn schedule_one(&self, key: &ObjectKey) -> Option<Followup> {
        let Some(pod) = self.pods.get(key).filter(|p| pending(p)) else {
            // Bound, deleted or no longer ours since it was queued.
            self.queue.forget(key);
            return None;
        };
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let info = PodInfo::new((*pod).clone());
        let decision = {
            let mut cache = self.lock_cache();
            // An assumption left by a bind that failed with Conflict: the pod is pending
            // again per the informer, so it was not bound after all.
            cache.forget_assumed(key);
            if cache.is_placed(key) {
                drop(cache);
                self.queue.forget(key);
                return None;
            }
            cache.schedule(key, uid, &info)
        };
        match decision {
            Ok(node) => {
                tracing::debug!(pod = %key, node = %node, "assumed");
                self.queue.assumed(key);
                Some(Followup::Bind { key: key.clone(), node })
            }
            Err(fit) => {
                let message = fit.to_string();
                let event = self.queue.unschedulable(key);
                tracing::debug!(pod = %key, reason = %message, "unschedulable");
                let mark = !reported(&pod, &message);
                (mark || event).then(|| Followup::Report { key: key.clone(), pod, message, mark, event })
            }
        }
    }

    /// Binds an assumed pod and records `Scheduled`; a failed bind frees the assumption and
    /// retries the pod after a backoff.
    async fn bind(self: Arc<Self>, key: ObjectKey, node: String, _permit: OwnedSemaphorePermit) {
        match self.registry.bind(key.namespace.as_deref(), &key.name, &node).await {
            Ok(written) => {
                tracing::debug!(pod = %key, node = %node, "bound");
                let message = format!("Successfully assigned {key} to {node}");
                match trireme_registry::from_value::<Pods>(written.object) {
                    Ok(pod) => self.recorder.record(&pod, EventType::Normal, "Scheduled", &message).await,
                    Err(e) => tracing::debug!(pod = %key, error = %e, "no Scheduled event"),
                }
            }
            Err(e @ RegistryError::NotFound { .. }) => {
                // Deleted, perhaps before the assumption was made: nothing will undo it but us.
                tracing::debug!(pod = %key, node = %node, error = %e, "not bound: the pod is gone");
                if self.lock_cache().forget_assumed(&key) {
                    self.queue.move_all();
                }
                self.queue.forget(&key);
            }
            Err(e @ RegistryError::Conflict { .. }) => {
                // Bound by someone else or being deleted: the informer's next event settles
                // what the node holds and drops the pod from the queue. Should it still be
                // pending when its backoff ends, the assumption is dropped then.
                tracing::debug!(pod = %key, node = %node, error = %e, "not bound: the pod changed");
                self.queue.bind_failed(&key);
            }
            Err(e) => {
                tracing::warn!(pod = %key, node = %node, error = %e, "bind failed; retrying");
                if self.lock_cache().forget_assumed(&key) {
                    self.queue.move_all();
                }
                self.queue.bind_failed(&key);
            }
        }
    }

    /// Marks a pod that fits nowhere `PodScheduled=False` with `message` (when `mark`: the
    /// informer does not show it so already) and records `FailedScheduling` (when `event`).
    async fn report(
        self: Arc<Self>,
        key: ObjectKey,
        pod: Arc<Pod>,
        message: String,
        mark: bool,
        event: bool,
        _permit: OwnedSemaphorePermit,
    ) {
        if mark {
            let options = WriteOptions { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            let mark = |current: &mut Pod| {
                // Bound or deleted meanwhile, or already saying this: nothing to write.
                if !pending(current) || reported(current, &message) {
                    return;
                }
                let since = match scheduled_condition(current) {
                    Some(c) if c.status == "False" => c.last_transition_time.clone(),
                    _ => Some(Time(trireme_registry::now_seconds())),
                };
                let condition = PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some(message.clone()),
                    last_transition_time: since,
                    ..Default::default()
                };
                let conditions =
                    current.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
                conditions.retain(|c| c.type_ != "PodScheduled");
                conditions.push(condition);
            };
            let namespace = key.namespace.as_deref();
            match self.registry.update_object::<Pods>(namespace, &key.name, Scope::Status, &options, mark, None).await {
                Ok(_) | Err(RegistryError::NotFound { .. }) => {}
                Err(e) => tracing::debug!(pod = %key, error = %e, "could not mark the pod unschedulable"),
            }
        }
        if event {
            self.recorder.record(&*pod, EventType::Warning, "FailedScheduling", &message).await;
        }
    }

    fn on_pod(&self, event: &Event<Pod>) {
        let pod = &*event.object;
        let key = event.key();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if event.kind == ChangeType::Deleted {
            self.queue.forget(&key);
            if self.lock_cache().remove_pod(&key, Some(uid)) {
                self.queue.move_all();
            }
            return;
        }
        let node = node_name(pod);
        if !node.is_empty() {
            self.queue.forget(&key);
            if finished(pod) {
                if self.lock_cache().remove_pod(&key, Some(uid)) {
                    self.queue.move_all();
                }
                return;
            }
            // Status updates of running pods are most events: skip them cheaply.
            let same_spec = event.old.as_ref().is_some_and(|old| old.spec == pod.spec);
            if same_spec && self.lock_cache().is_bound(&key, uid, node) {
                return;
            }
            self.lock_cache().place(key, uid, node, PodUsage::of(pod), false);
            return;
        }
        if !pending(pod) {
            self.queue.forget(&key);
            return;
        }
        if self.lock_cache().is_assumed(&key) {
            // Its bind is under way; this is an older state of it.
            return;
        }
        let changed =
            event.old.as_ref().is_some_and(|old| old.spec != pod.spec || old.metadata.labels != pod.metadata.labels);
        if changed {
            self.queue.update(key);
        } else {
            self.queue.add(key);
        }
    }

    fn on_node(&self, event: &Event<Node>) {
        let node = &event.object;
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if event.kind == ChangeType::Deleted {
            self.lock_cache().remove_node(name);
            return;
        }
        let changed = event.old.as_ref().is_none_or(|old| schedulable_changed(old, node));
        if !changed && self.lock_cache().has_node(name) {
            // A heartbeat: nothing the filters or scores look at.
            return;
        }
        self.lock_cache().set_node(node.clone());
        self.queue.move_all();
    }
}

fn node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default()
}

/// Whether the pod waits for this scheduler: unbound, not being deleted, not gated, not
/// finished, and for `default-scheduler`.
fn pending(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    node_name(pod).is_empty()
        && pod.metadata.deletion_timestamp.is_none()
        && matches!(spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or_default(), "" | DEFAULT_SCHEDULER)
        && spec.and_then(|s| s.scheduling_gates.as_ref()).is_none_or(Vec::is_empty)
        && !finished(pod)
}

/// Whether the pod has finished (its resources are free again).
fn finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn scheduled_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")
}

/// Whether the pod already says it is unschedulable for `message`.
fn reported(pod: &Pod, message: &str) -> bool {
    scheduled_condition(pod).is_some_and(|c| {
        c.status == "False" && c.reason.as_deref() == Some("Unschedulable") && c.message.as_deref() == Some(message)
    })
}

/// Whether a node changed in something the filters or scores look at.
fn schedulable_changed(old: &Node, new: &Node) -> bool {
    let ready = |node: &Node| {
        let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
        conditions.and_then(|cs| cs.iter().find(|c| c.type_ == "Ready")).map(|c| c.status.clone())
    };
    let status = |node: &Node| node.status.as_ref().map(|s| (s.allocatable.clone(), s.capacity.clone()));
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || status(old) != status(new)
        || ready(old) != ready(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;

    fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).expect("a typed object")
    }

    #[test]
    fn only_unbound_live_pods_for_the_default_scheduler_are_pending() {
        let pod = |spec: Value, extra: Value| {
            let mut p = json!({"metadata": {"name": "p"}, "spec": spec, "status": {"phase": "Pending"}});
            if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
                for (k, v) in extra {
                    p.insert(k.clone(), v.clone());
                }
            }
            typed::<Pod>(p)
        };
        assert!(pending(&pod(json!({}), json!({}))));
        assert!(pending(&pod(json!({"schedulerName": "default-scheduler"}), json!({}))));
        assert!(!pending(&pod(json!({"schedulerName": "other"}), json!({}))));
        assert!(!pending(&pod(json!({"nodeName": "n1"}), json!({}))));
        assert!(!pending(&pod(json!({"schedulingGates": [{"name": "wait"}]}), json!({}))));
        assert!(!pending(&pod(
            json!({}),
            json!({"metadata": {"name": "p", "deletionTimestamp": "2025-01-01T00:00:00Z"}})
        )));
        assert!(!pending(&pod(json!({}), json!({"status": {"phase": "Failed"}}))));
    }

    #[test]
    fn a_heartbeat_is_not_a_schedulable_change_but_readiness_and_taints_are() {
        let node = |ready: &str, beat: &str, taints: Value| {
            typed::<Node>(json!({"metadata": {"name": "n"}, "spec": {"taints": taints},
                "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": beat}]}}))
        };
        let (t1, t2) = ("2025-01-01T00:00:01Z", "2025-01-01T00:00:02Z");
        let base = node("True", t1, json!([]));
        assert!(!schedulable_changed(&base, &node("True", t2, json!([]))));
        assert!(schedulable_changed(&base, &node("False", t2, json!([]))));
        assert!(schedulable_changed(&base, &node("True", t1, json!([{"key": "k", "effect": "NoSchedule"}]))));
    }

    #[test]
    fn a_pod_already_marked_with_the_same_message_needs_no_write() {
        let pod = typed::<Pod>(json!({"metadata": {}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}
        ]}}));
        assert!(reported(&pod, "0/1 nodes are available: 1 Insufficient cpu."));
        assert!(!reported(&pod, "0/2 nodes are available: 2 Insufficient cpu."));
    }
}
