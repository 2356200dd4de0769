//! The ReplicaSet controller: keeps `spec.replicas` pods matching each ReplicaSet's selector.
//!
//! [`decide`] is the whole policy and does no I/O: from a ReplicaSet and the pods of its
//! namespace it returns the [`PodAction`]s to take — adopt orphans that match, release owned
//! pods that no longer match, create or delete pods, write the status. [`run`] feeds it from
//! the informers and executes what it returns.
//!
//! Pods a reconcile creates or deletes appear in the pod cache only later. Until they do (or
//! [`EXPECTATIONS_TIMEOUT`] passes), the ReplicaSet's [`Expectations`] hold it back from
//! creating or deleting again, so two reconciles in a row never double-create.

use std::collections::HashMap;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::apps::v1::ReplicaSetStatus;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trireme_model::kinds::Pods;
use trireme_model::kinds::ReplicaSets;
use trireme_model::strategy::Kind;
use trireme_registry::ChangeType;
use trireme_registry::DeleteOptions;
use trireme_registry::Preconditions;
use trireme_registry::RegistryError;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;
use trireme_registry::controller::Controller;
use trireme_registry::controller::controller_key;
use trireme_registry::events::EventType;
use trireme_registry::events::Recorder;
use trireme_registry::informer::Event;
use trireme_registry::informer::ObjectKey;
use trireme_registry::workqueue::Action;

use crate::Context;
use crate::util;

/// Reconciles running at once (Kubernetes runs 5).
const WORKERS: usize = 4;
/// At most this many pods created or deleted by one reconcile (Kubernetes' `burstReplicas`).
const BURST: usize = 500;
/// How long unobserved creations and deletions hold a ReplicaSet back (a lost watch event must
/// not stall it forever).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(60);
/// The generated part of a pod name is 5 characters; names are at most 63.
const MAX_GENERATE_NAME: usize = 58;
const MANAGER: &str = "replicaset-controller";

/// One thing [`decide`] asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum PodAction {
    /// Add the ReplicaSet as controller of this orphan pod (`name`, `uid`).
    Adopt { name: String, uid: String },
    /// Remove the ReplicaSet's controller reference from this owned pod, which no longer matches.
    Release { name: String, uid: String },
    /// Create this many pods from the template.
    Create { count: usize },
    /// Delete these pods (`name`, `uid`), best candidates first.
    Delete { pods: Vec<(String, String)> },
    /// Write this status.
    UpdateStatus(ReplicaSetStatus),
}

/// What a reconcile of one ReplicaSet does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// In order: adoptions and releases, then creates or deletes, then the status.
    pub actions: Vec<PodAction>,
    /// Look again after this long even if nothing changes (a pod reaching minReadySeconds).
    pub requeue_after: Option<Duration>,
}

/// Decides what to do about `rs`, given the pods of its namespace (those controlled by others
/// are ignored). `may_manage` is false while earlier creations or deletions are unobserved:
/// then only ownership and status are kept current.
pub fn decide<'a>(
    rs: &ReplicaSet,
    pods: impl IntoIterator<Item = &'a Pod>,
    may_manage: bool,
    now: Timestamp,
) -> Decision {
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let selector = util::selector_of(&spec.selector);
    let deleting = util::terminating(&rs.metadata);
    let mut actions = Vec::new();

    // Claim: the pods this ReplicaSet controls after adoptions and releases.
    let mut owned: Vec<&Pod> = Vec::new();
    for pod in pods {
        let matches = selector.as_ref().is_some_and(|s| s.matches(&util::labels(&pod.metadata)));
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
        match util::controller_of(&pod.metadata) {
            Some(owner) if owner.uid != uid => {}
            Some(_) if matches => owned.push(pod),
            Some(_) if !deleting => actions.push(PodAction::Release { name, uid: pod_uid }),
            Some(_) => {}
            None if matches && !deleting && !util::terminating(&pod.metadata) => {
                actions.push(PodAction::Adopt { name, uid: pod_uid });
                owned.push(pod);
            }
            None => {}
        }
    }
    let active: Vec<&Pod> = owned.into_iter().filter(|p| util::pod_active(p)).collect();

    let desired = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if may_manage && !deleting {
        if active.len() < desired {
            if spec.template.is_some() {
                actions.push(PodAction::Create { count: (desired - active.len()).min(BURST) });
            }
        } else if active.len() > desired {
            let victims = deletion_order(&active, now).into_iter().take((active.len() - desired).min(BURST));
            let pods = victims
                .map(|p| (p.metadata.name.clone().unwrap_or_default(), p.metadata.uid.clone().unwrap_or_default()))
                .collect();
            actions.push(PodAction::Delete { pods });
        }
    }

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels =
        spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX);
    let current = rs.status.clone().unwrap_or_default();
    let status = ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: nonzero(count(&|p| {
            let labels = util::labels(&p.metadata);
            template_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        })),
        ready_replicas: nonzero(count(&util::pod_ready)),
        available_replicas: nonzero(count(&|p| util::pod_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: current.conditions.clone(),
        terminating_replicas: current.terminating_replicas,
    };
    if status != current {
        actions.push(PodAction::UpdateStatus(status));
    }

    let requeue_after = active
        .iter()
        .filter_map(|p| util::pod_available_at(p, min_ready, now))
        .min()
        .map(|at| Duration::from_secs(u64::try_from(at.as_second() - now.as_second()).unwrap_or(0).max(1)));
    Decision { actions, requeue_after }
}

/// Kubernetes omits zero counts from a ReplicaSet's status.
fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// The pods to delete first, first: unscheduled before scheduled, pending before running, not
/// ready before ready, ready for less time before longer, more restarts before fewer, newer
/// before older (Kubernetes' `ActivePodsWithRanks`, without the co-location rank).
fn deletion_order<'a>(pods: &[&'a Pod], now: Timestamp) -> Vec<&'a Pod> {
    let mut ranked: Vec<&Pod> = pods.to_vec();
    ranked.sort_by_cached_key(|p| {
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        let status = p.status.as_ref();
        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => 0,
            Some("Unknown") => 1,
            Some("Running") => 2,
            Some(_) => 3,
        };
        let ready_since = util::pod_ready_since(p);
        let restarts: i32 = status
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0));
        let created = p.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
        (
            scheduled,
            phase,
            ready_since.is_some(),
            std::cmp::Reverse(ready_since),
            std::cmp::Reverse(restarts),
            std::cmp::Reverse(created),
            p.metadata.name.clone(),
        )
    });
    ranked
}

/// The pod a ReplicaSet creates: its template, named `<rs>-<random>`, controlled by it.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let spec = rs.spec.clone().unwrap_or_default();
    let template = spec.template.unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let name = rs.metadata.name.as_deref().unwrap_or_default();
    let mut prefix = format!("{name}-");
    if prefix.len() > MAX_GENERATE_NAME {
        prefix = prefix.chars().take(MAX_GENERATE_NAME).collect();
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: rs.metadata.namespace.clone(),
            owner_references: Some(vec![util::controller_ref("apps/v1", "ReplicaSet", &rs.metadata)]),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Creations and deletions a ReplicaSet waits to see in the pod cache before acting again
/// (Kubernetes' `ControllerExpectations`).
pub struct Expectations {
    waiting: Mutex<HashMap<ObjectKey, Expected>>,
    timeout: Duration,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations::with_timeout(EXPECTATIONS_TIMEOUT)
    }
}

struct Expected {
    creations: i64,
    deletions: HashSet<ObjectKey>,
    since: Instant,
}

impl Expectations {
    /// Expectations that stop holding a ReplicaSet back after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Expectations {
        Expectations { waiting: Mutex::default(), timeout }
    }

    /// Expects `creations` new pods and the deletion of `deletions` for the ReplicaSet `key`,
    /// replacing what it expected before. Call before writing, so an event that beats the
    /// write's reply still counts.
    pub fn expect(&self, key: &ObjectKey, creations: usize, deletions: impl IntoIterator<Item = ObjectKey>) {
        let expected = Expected {
            creations: i64::try_from(creations).unwrap_or(i64::MAX),
            deletions: deletions.into_iter().collect(),
            since: Instant::now(),
        };
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(key.clone(), expected);
        }
    }

    /// One pod of `key` was created (or will never be: its creation failed).
    pub fn created(&self, key: &ObjectKey) {
        if let Ok(mut waiting) = self.waiting.lock()
            && let Some(e) = waiting.get_mut(key)
        {
            e.creations -= 1;
        }
    }

    /// `pod` of `key` is gone or being deleted (or will not be: its deletion failed).
    pub fn deleted(&self, key: &ObjectKey, pod: &ObjectKey) {
        if let Ok(mut waiting) = self.waiting.lock()
            && let Some(e) = waiting.get_mut(key)
        {
            e.deletions.remove(pod);
        }
    }

    /// How long `key` may still wait, or `None` when everything expected was seen (or the
    /// wait timed out, or nothing was expected).
    pub fn pending(&self, key: &ObjectKey) -> Option<Duration> {
        let waiting = self.waiting.lock().ok()?;
        let e = waiting.get(key)?;
        if e.creations <= 0 && e.deletions.is_empty() {
            return None;
        }
        self.timeout.checked_sub(e.since.elapsed()).filter(|left| !left.is_zero())
    }

    /// Drops what `key` expected (the ReplicaSet is gone).
    pub fn forget(&self, key: &ObjectKey) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(key);
        }
    }
}

struct Reconciler {
    ctx: Context,
    expectations: Expectations,
    recorder: Recorder,
}

/// Runs until `stop`.
pub fn run(ctx: Context, stop: CancellationToken) -> impl Future<Output = ()> + Send {
    let controller = Arc::new(Reconciler {
        recorder: ctx.recorder("replicaset-controller"),
        ctx,
        expectations: Expectations::default(),
    });
    let informers = &controller.ctx.informers;
    let (on_rs, on_pod) = (controller.clone(), controller.clone());
    let wiring = Controller::new("replicaset-controller")
        .workers(WORKERS)
        .watches(&informers.replica_sets, move |event| [on_rs.on_replica_set(event)])
        .watches(&informers.pods, move |event| on_pod.on_pod(event));
    wiring.run(stop, move |key| {
        let controller = controller.clone();
        async move { controller.reconcile(key).await }
    })
}

impl Reconciler {
    fn on_replica_set(&self, event: &Event<ReplicaSet>) -> ObjectKey {
        let key = event.key();
        if event.kind == ChangeType::Deleted {
            self.expectations.forget(&key);
        }
        key
    }

    /// Counts the pod towards its ReplicaSet's expectations; returns the ReplicaSets to look
    /// at: its owner (and former owner), or for an orphan every ReplicaSet that selects it.
    fn on_pod(&self, event: &Event<Pod>) -> Vec<ObjectKey> {
        let pod = event.key();
        let meta = &event.object.metadata;
        let owner = controller_key(meta, "ReplicaSet");
        let was_deleting = event.old.as_ref().is_some_and(|o| util::terminating(&o.metadata));
        let deleting = util::terminating(meta);
        match (&event.kind, &owner) {
            (ChangeType::Added, Some(rs)) if !deleting => self.expectations.created(rs),
            (ChangeType::Deleted, Some(rs)) => self.expectations.deleted(rs, &pod),
            (_, Some(rs)) if deleting && !was_deleting => self.expectations.deleted(rs, &pod),
            _ => {}
        }
        let mut keys = Vec::new();
        // A change of owner concerns the previous owner too.
        if let Some(previous) = event.old.as_ref().and_then(|o| controller_key(&o.metadata, "ReplicaSet"))
            && Some(&previous) != owner.as_ref()
        {
            keys.push(previous);
        }
        if let Some(rs) = owner {
            keys.push(rs);
        } else if util::controller_of(meta).is_none() && event.kind != ChangeType::Deleted {
            // An orphan: any ReplicaSet selecting it may adopt it.
            let namespace = meta.namespace.as_deref().unwrap_or_default();
            let labels = util::labels(meta);
            for rs in self.ctx.informers.replica_sets.list_namespace(namespace) {
                let Some(spec) = rs.spec.as_ref() else { continue };
                if util::selector_of(&spec.selector).is_some_and(|s| s.matches(&labels)) {
                    keys.push(ObjectKey::of_meta(&rs.metadata));
                }
            }
        }
        keys
    }

    async fn reconcile(&self, key: ObjectKey) -> Result<Action, RegistryError> {
        let Some(rs) = self.ctx.informers.replica_sets.get(&key) else {
            self.expectations.forget(&key);
            return Ok(Action::Await);
        };
        let namespace = key.namespace.clone().unwrap_or_default();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .ctx
            .informers
            .pods
            .list_namespace(&namespace)
            .into_iter()
            .filter(|p| util::controller_of(&p.metadata).is_none_or(|owner| owner.uid == uid))
            .collect();
        let pending = self.expectations.pending(&key);
        let decision = decide(&rs, pods.iter().map(|p| &**p), pending.is_none(), util::now());
        tracing::debug!(rs = %key, actions = decision.actions.len(), waiting = pending.is_some(), "replicaset reconciled");

        let mut failure = None;
        for action in decision.actions {
            let result = match action {
                PodAction::Adopt { name, uid: pod_uid } => self.adopt(&rs, &namespace, &name, &pod_uid).await,
                PodAction::Release { name, uid: pod_uid } => self.release(&rs, &namespace, &name, &pod_uid).await,
                PodAction::Create { count } => self.create_pods(&key, &rs, count).await,
                PodAction::Delete { pods } => self.delete_pods(&key, &namespace, &rs, pods).await,
                PodAction::UpdateStatus(status) => self.update_status(&namespace, &rs, status).await,
            };
            if let Err(e) = result {
                tracing::debug!(rs = %key, error = %e, "replicaset action failed");
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(match [pending, decision.requeue_after].into_iter().flatten().min() {
            Some(after) => Action::RequeueAfter(after),
            None => Action::Await,
        })
    }

    async fn adopt(&self, rs: &ReplicaSet, namespace: &str, name: &str, uid: &str) -> Result<(), RegistryError> {
        let owner = util::controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
        let result = self
            .update_pod(namespace, name, |pod| {
                if pod.metadata.uid.as_deref() == Some(uid) && util::controller_of(&pod.metadata).is_none() {
                    pod.metadata.owner_references.get_or_insert_with(Vec::new).push(owner.clone());
                }
            })
            .await;
        ignore_not_found(result)
    }

    async fn release(&self, rs: &ReplicaSet, namespace: &str, name: &str, uid: &str) -> Result<(), RegistryError> {
        let rs_uid = rs.metadata.uid.clone().unwrap_or_default();
        let result = self
            .update_pod(namespace, name, |pod| {
                if pod.metadata.uid.as_deref() == Some(uid)
                    && let Some(refs) = pod.metadata.owner_references.as_mut()
                {
                    refs.retain(|r| r.uid != rs_uid);
                    if refs.is_empty() {
                        pod.metadata.owner_references = None;
                    }
                }
            })
            .await;
        ignore_not_found(result)
    }

    async fn update_pod(&self, namespace: &str, name: &str, change: impl FnMut(&mut Pod)) -> Result<(), RegistryError> {
        let options = WriteOptions { field_manager: Some(MANAGER.into()), ..Default::default() };
        self.ctx
            .registry
            .update_object::<Pods>(Some(namespace), name, Scope::Main, &options, change, None)
            .await
            .map(|_| ())
    }

    /// Creates `count` pods in batches of 1, 2, 4, … so that a template the API refuses fails
    /// once rather than `count` times.
    async fn create_pods(&self, key: &ObjectKey, rs: &Arc<ReplicaSet>, count: usize) -> Result<(), RegistryError> {
        self.expectations.expect(key, count, []);
        let pod = pod_from_template(rs);
        let mut remaining = count;
        let mut batch = 1;
        while remaining > 0 {
            let size = batch.min(remaining);
            remaining -= size;
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..size {
                let (registry, recorder, pod, rs) =
                    (self.ctx.registry.clone(), self.recorder.clone(), pod.clone(), rs.clone());
                tasks.spawn(async move {
                    let options = WriteOptions { field_manager: Some(MANAGER.into()), ..Default::default() };
                    match registry.create_object::<Pods>(&pod, &options).await {
                        Ok(written) => {
                            let name = written.metadata.name.unwrap_or_default();
                            let message = format!("Created pod: {name}");
                            recorder.record(&*rs, EventType::Normal, "SuccessfulCreate", &message).await;
                            Ok(())
                        }
                        Err(e) => {
                            recorder
                                .record(&*rs, EventType::Warning, "FailedCreate", &format!("Error creating: {e}"))
                                .await;
                            Err(e)
                        }
                    }
                });
            }
            let mut failure = None;
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        // Never to be seen in the cache: stop waiting for it.
                        self.expectations.created(key);
                        failure.get_or_insert(e);
                    }
                    Err(e) => {
                        self.expectations.created(key);
                        failure.get_or_insert(RegistryError::Internal(format!("pod creation task failed: {e}")));
                    }
                }
            }
            if let Some(e) = failure {
                for _ in 0..remaining {
                    self.expectations.created(key);
                }
                tracing::info!(rs = %key, skipped = remaining, error = %e, "pod creation failed");
                return Err(e);
            }
            batch *= 2;
        }
        tracing::info!(rs = %key, count, "created pods");
        Ok(())
    }

    async fn delete_pods(
        &self,
        key: &ObjectKey,
        namespace: &str,
        rs: &Arc<ReplicaSet>,
        pods: Vec<(String, String)>,
    ) -> Result<(), RegistryError> {
        let pod_keys: Vec<ObjectKey> = pods.iter().map(|(name, _)| ObjectKey::new(Some(namespace), name)).collect();
        self.expectations.expect(key, 0, pod_keys);
        let mut tasks = tokio::task::JoinSet::new();
        for (name, uid) in pods {
            let (registry, recorder, namespace, rs) =
                (self.ctx.registry.clone(), self.recorder.clone(), namespace.to_string(), rs.clone());
            tasks.spawn(async move {
                let options = DeleteOptions {
                    preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                    ..Default::default()
                };
                let result = registry.delete(Pods::RESOURCE, Some(&namespace), &name, &options).await;
                match &result {
                    Ok(_) => {
                        let message = format!("Deleted pod: {name}");
                        recorder.record(&*rs, EventType::Normal, "SuccessfulDelete", &message).await;
                    }
                    Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => {}
                    Err(e) => {
                        recorder
                            .record(&*rs, EventType::Warning, "FailedDelete", &format!("Error deleting: {e}"))
                            .await;
                    }
                }
                (name, result)
            });
        }
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            let Ok((name, result)) = joined else { continue };
            match result {
                Ok(_) => {}
                // Already gone, or another pod now has the name: nothing to wait for.
                Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => {
                    self.expectations.deleted(key, &ObjectKey::new(Some(namespace), &name));
                }
                Err(e) => {
                    self.expectations.deleted(key, &ObjectKey::new(Some(namespace), &name));
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!(rs = %key, "deleted pods");
                Ok(())
            }
        }
    }

    async fn update_status(
        &self,
        namespace: &str,
        rs: &ReplicaSet,
        status: ReplicaSetStatus,
    ) -> Result<(), RegistryError> {
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        let uid = rs.metadata.uid.clone();
        let options = WriteOptions { field_manager: Some(MANAGER.into()), ..Default::default() };
        let change = |current: &mut ReplicaSet| {
            // A ReplicaSet recreated under the same name is not the one this status is about.
            if current.metadata.uid == uid {
                current.status = Some(status.clone());
            }
        };
        let result = self
            .ctx
            .registry
            .update_object::<ReplicaSets>(Some(namespace), name, Scope::Status, &options, change, None)
            .await;
        ignore_not_found(result.map(|_| ()))
    }
}

fn ignore_not_found(result: Result<(), RegistryError>) -> Result<(), RegistryError> {
    match result {
        Err(RegistryError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn label_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    const NOW: &str = "2024-01-01T00:10:00Z";

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid", "generation": 2},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
            },
        }))
        .expect("a replica set")
    }

    /// A pod named `name`, owned by `owner` (a uid) or an orphan, created `created`.
    fn pod(name: &str, owner: Option<&str>, created: &str) -> Pod {
        let mut pod = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"),
                "labels": {"app": "web", "tier": "front"}, "creationTimestamp": created},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Pending"},
        });
        if let Some(owner) = owner {
            pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": owner, "controller": true}]);
        }
        serde_json::from_value(pod).expect("a pod")
    }

    fn scheduled(mut pod: Pod) -> Pod {
        pod.spec.as_mut().expect("spec").node_name = Some("node-1".into());
        pod
    }

    fn ready(mut pod: Pod, since: &str) -> Pod {
        pod.status = Some(
            serde_json::from_value(json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": since}]}))
            .expect("a status"),
        );
        pod
    }

    fn creates(d: &Decision) -> usize {
        d.actions.iter().map(|a| if let PodAction::Create { count } = a { *count } else { 0 }).sum()
    }

    fn deletes(d: &Decision) -> Vec<String> {
        d.actions
            .iter()
            .flat_map(|a| match a {
                PodAction::Delete { pods } => pods.iter().map(|(n, _)| n.clone()).collect(),
                _ => vec![],
            })
            .collect()
    }

    fn status(d: &Decision) -> Option<&ReplicaSetStatus> {
        d.actions.iter().find_map(|a| if let PodAction::UpdateStatus(s) = a { Some(s) } else { None })
    }

    #[test]
    fn a_replica_set_short_of_pods_creates_the_missing_ones() {
        let pods = [pod("web-a", Some("rs-uid"), "2024-01-01T00:00:00Z")];
        let d = decide(&rs(3), &pods, true, at(NOW));
        assert_eq!(creates(&d), 2);
        assert_eq!(status(&d).map(|s| s.replicas), Some(1));
    }

    #[test]
    fn nothing_is_created_or_deleted_while_earlier_writes_are_unobserved() {
        let d = decide(&rs(3), &[], false, at(NOW));
        assert_eq!(creates(&d), 0);
        let pods: Vec<Pod> = (0..5).map(|i| pod(&format!("web-{i}"), Some("rs-uid"), NOW)).collect();
        assert!(deletes(&decide(&rs(3), &pods, false, at(NOW))).is_empty());
    }

    #[test]
    fn extra_pods_are_deleted_unscheduled_first_then_not_ready_then_newest() {
        let pods = [
            ready(scheduled(pod("old-ready", Some("rs-uid"), "2024-01-01T00:00:00Z")), "2024-01-01T00:01:00Z"),
            ready(scheduled(pod("new-ready", Some("rs-uid"), "2024-01-01T00:02:00Z")), "2024-01-01T00:01:00Z"),
            scheduled(pod("not-ready", Some("rs-uid"), "2024-01-01T00:00:00Z")),
            pod("unscheduled", Some("rs-uid"), "2024-01-01T00:00:00Z"),
        ];
        let d = decide(&rs(1), &pods, true, at(NOW));
        assert_eq!(deletes(&d), ["unscheduled", "not-ready", "new-ready"]);
    }

    #[test]
    fn pods_being_deleted_or_finished_are_not_counted() {
        let mut deleting = pod("deleting", Some("rs-uid"), NOW);
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(NOW)));
        let mut done = pod("done", Some("rs-uid"), NOW);
        done.status.as_mut().expect("status").phase = Some("Succeeded".into());
        let d = decide(&rs(2), &[deleting, done, pod("live", Some("rs-uid"), NOW)], true, at(NOW));
        assert_eq!(creates(&d), 1);
        assert_eq!(status(&d).map(|s| s.replicas), Some(1));
    }

    #[test]
    fn an_orphan_matching_the_selector_is_adopted_and_counted() {
        let d = decide(&rs(1), &[pod("orphan", None, NOW)], true, at(NOW));
        assert_eq!(d.actions[0], PodAction::Adopt { name: "orphan".into(), uid: "orphan-uid".into() });
        assert_eq!(creates(&d), 0);
    }

    #[test]
    fn an_owned_pod_that_no_longer_matches_is_released_and_replaced() {
        let mut relabeled = pod("relabeled", Some("rs-uid"), NOW);
        relabeled.metadata.labels = Some(label_map(&[("app", "debug")]));
        let d = decide(&rs(1), &[relabeled], true, at(NOW));
        assert_eq!(d.actions[0], PodAction::Release { name: "relabeled".into(), uid: "relabeled-uid".into() });
        assert_eq!(creates(&d), 1);
    }

    #[test]
    fn pods_of_another_controller_are_left_alone() {
        let d = decide(&rs(1), &[pod("theirs", Some("other-uid"), NOW)], true, at(NOW));
        assert!(!d.actions.iter().any(|a| matches!(a, PodAction::Adopt { .. } | PodAction::Release { .. })));
        assert_eq!(creates(&d), 1);
    }

    #[test]
    fn a_replica_set_being_deleted_neither_creates_nor_adopts() {
        let mut r = rs(2);
        r.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(NOW)));
        let d = decide(&r, &[pod("orphan", None, NOW)], true, at(NOW));
        assert_eq!(creates(&d), 0);
        assert!(!d.actions.iter().any(|a| matches!(a, PodAction::Adopt { .. })));
    }

    #[test]
    fn status_counts_ready_and_available_pods_and_is_written_only_when_changed() {
        let mut r = rs(3);
        r.spec.as_mut().expect("spec").min_ready_seconds = Some(30);
        let mut unlabeled = ready(pod("c", Some("rs-uid"), NOW), "2024-01-01T00:09:50Z");
        unlabeled.metadata.labels = Some(label_map(&[("app", "web")]));
        let pods = [
            ready(pod("a", Some("rs-uid"), NOW), "2024-01-01T00:00:00Z"),
            ready(pod("b", Some("rs-uid"), NOW), "2024-01-01T00:09:50Z"),
            unlabeled,
        ];
        let d = decide(&r, &pods, true, at(NOW));
        let s = status(&d).expect("a status update").clone();
        assert_eq!(
            (s.replicas, s.fully_labeled_replicas, s.ready_replicas, s.available_replicas, s.observed_generation),
            (3, Some(2), Some(3), Some(1), Some(2))
        );
        assert_eq!(d.requeue_after, Some(Duration::from_secs(21)), "b and c become available at 00:10:21");
        r.status = Some(s);
        assert_eq!(status(&decide(&r, &pods, true, at(NOW))), None, "an unchanged status is not written");
    }

    #[test]
    fn a_pod_from_the_template_is_named_after_and_controlled_by_its_replica_set() {
        let pod = serde_json::to_value(pod_from_template(&rs(1))).expect("a pod");
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["namespace"], "default");
        assert_eq!(pod["metadata"]["generateName"], "web-");
        assert_eq!(pod["metadata"]["labels"], json!({"app": "web", "tier": "front"}));
        assert_eq!(
            pod["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid",
                "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], "nginx");
    }

    #[test]
    fn expectations_hold_until_every_creation_and_deletion_is_seen() {
        let e = Expectations::default();
        let rs = ObjectKey::new(Some("default"), "web");
        let gone = ObjectKey::new(Some("default"), "web-x");
        assert_eq!(e.pending(&rs), None, "nothing expected");
        e.expect(&rs, 2, [gone.clone()]);
        e.created(&rs);
        e.deleted(&rs, &gone);
        assert!(e.pending(&rs).is_some(), "one creation still unseen");
        e.created(&rs);
        assert_eq!(e.pending(&rs), None);
    }

    #[test]
    fn expectations_stop_holding_a_replica_set_back_once_they_time_out() {
        let e = Expectations::with_timeout(Duration::ZERO);
        let rs = ObjectKey::new(Some("default"), "web");
        e.expect(&rs, 1, []);
        assert_eq!(e.pending(&rs), None, "a lost event does not stall the replica set forever");
    }
}
