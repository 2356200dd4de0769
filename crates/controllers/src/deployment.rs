//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets.
//!
//! Each template the Deployment has had lives in one ReplicaSet named `<deployment>-<hash>`,
//! where the hash ([`template_hash`]) is also the `pod-template-hash` label of the ReplicaSet,
//! its selector and its template, so ReplicaSets never fight over pods. The ReplicaSet whose
//! template equals the Deployment's is the new one; the others are old. Revisions
//! (`deployment.kubernetes.io/revision`) number the templates in the order they were rolled
//! out, which is what `kubectl rollout history` and `kubectl rollout undo` read.
//!
//! [`plan`] is the whole policy and does no I/O: it follows Kubernetes' deployment controller
//! (sync, rolling, recreate, progress) step by step on copies of the objects and returns the
//! [`Step`]s that make the store match; [`run`] feeds it from the informers and executes them.
//! ReplicaSet writes carry the resourceVersion the plan was made from, so a plan made on a
//! stale cache fails with `Conflict` and is made again.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::apps::v1::DeploymentCondition;
use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::apps::v1::ReplicaSetSpec;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use trireme_model::kinds::Deployments;
use trireme_model::kinds::ReplicaSets;
use trireme_model::strategy::Kind;
use trireme_model::version::ReadAt;
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
use trireme_registry::from_value;
use trireme_registry::informer::Event;
use trireme_registry::informer::ObjectKey;
use trireme_registry::workqueue::Action;

use crate::Context;
use crate::util;

/// The label that tells the ReplicaSets of one Deployment apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and of its Deployment: the revision of its new ReplicaSet).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had, when a rollback made it new again.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled by it.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus maxSurge when the ReplicaSet was last scaled by it.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations not copied to its ReplicaSets.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];
/// How long the revision-history annotation may grow.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

const AVAILABLE: &str = "Available";
const PROGRESSING: &str = "Progressing";
const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const RS_UPDATED: &str = "ReplicaSetUpdated";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const PAUSED: &str = "DeploymentPaused";
const RESUMED: &str = "DeploymentResumed";

const WORKERS: usize = 4;
const MANAGER: &str = "deployment-controller";

/// One write [`plan`] asks for, in the order they must happen.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Make the Deployment the controller of this orphan ReplicaSet (`name`, `uid`).
    Adopt { name: String, uid: String },
    /// Drop the Deployment's controller reference from this ReplicaSet, which no longer matches.
    Release { name: String, uid: String },
    /// Create this ReplicaSet; `events` are ScalingReplicaSet messages to record once it exists.
    Create { rs: ReplicaSet, events: Vec<String> },
    /// Write this ReplicaSet's `spec.replicas`, `spec.minReadySeconds` and annotations, if it is
    /// still at its resourceVersion (scale RS `a` to `n`); then record `events`.
    Update { rs: ReplicaSet, events: Vec<String> },
    /// Delete this old, empty ReplicaSet (`name`, `uid`): beyond `revisionHistoryLimit`.
    Delete { name: String, uid: String },
    /// Set the Deployment's revision annotation.
    SetRevision(String),
    /// Write the Deployment's status.
    UpdateStatus(DeploymentStatus),
}

/// What a reconcile of one Deployment does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The writes, in order; a failed one ends the reconcile (it is retried from a new plan).
    pub steps: Vec<Step>,
    /// Look again after this long even if nothing changes (the progress deadline).
    pub requeue_after: Option<Duration>,
}

/// Decides what to do about `d` given the ReplicaSets of its namespace (those controlled by
/// others are ignored) and the pods of its ReplicaSets (read only by the Recreate strategy,
/// which waits for old pods to be gone), at `now`.
pub fn plan(d: &Deployment, replica_sets: &[ReplicaSet], pods: &[Pod], now: Timestamp) -> Plan {
    let (claims, owned) = claim(d, replica_sets);
    if !claims.is_empty() {
        // The next reconcile sees the new owners in the cache; ReplicaSet writes made now would
        // carry the resourceVersions these claims replace.
        return Plan { steps: claims, requeue_after: None };
    }
    let mut p = Planner::new(d, owned, pods, now);
    if util::terminating(&d.metadata) {
        let new = p.replica_sets(false);
        p.sync_status(new);
    } else {
        p.check_paused_conditions();
        if paused(d) || p.is_scaling_event() {
            p.sync();
        } else if is_recreate(d) {
            p.rollout_recreate();
        } else {
            p.rollout_rolling();
        }
    }
    p.finish(d)
}

/// Splits the namespace's ReplicaSets into ownership fixes and the ones `d` controls.
fn claim(d: &Deployment, replica_sets: &[ReplicaSet]) -> (Vec<Step>, Vec<ReplicaSet>) {
    let uid = d.metadata.uid.as_deref().unwrap_or_default();
    let selector = d.spec.as_ref().and_then(|s| util::selector_of(&s.selector));
    let deleting = util::terminating(&d.metadata);
    let (mut claims, mut owned) = (Vec::new(), Vec::new());
    for rs in replica_sets {
        let matches = selector.as_ref().is_some_and(|s| s.matches(&util::labels(&rs.metadata)));
        let name = rs.metadata.name.clone().unwrap_or_default();
        let rs_uid = rs.metadata.uid.clone().unwrap_or_default();
        match util::controller_of(&rs.metadata) {
            Some(owner) if owner.uid != uid => {}
            Some(_) if matches => owned.push(rs.clone()),
            Some(_) if !deleting => claims.push(Step::Release { name, uid: rs_uid }),
            Some(_) => {}
            None if matches && !deleting && !util::terminating(&rs.metadata) => {
                claims.push(Step::Adopt { name, uid: rs_uid })
            }
            None => {}
        }
    }
    (claims, owned)
}

/// Kubernetes' deployment sync, on copies of the Deployment and its ReplicaSets.
struct Planner<'a> {
    /// The Deployment as this reconcile leaves it (status and revision annotation).
    d: Deployment,
    /// Its ReplicaSets, oldest first, as this reconcile leaves them.
    rses: Vec<ReplicaSet>,
    /// Which of `rses` this reconcile changed.
    touched: Vec<bool>,
    /// ScalingReplicaSet messages per ReplicaSet.
    events: Vec<Vec<String>>,
    /// The index of a ReplicaSet this reconcile creates.
    created: Option<usize>,
    deletes: Vec<(String, String)>,
    pods: &'a [Pod],
    now: Timestamp,
    requeue_after: Option<Duration>,
    /// A hash collision stopped the sync: only the status (collisionCount) is written.
    collided: bool,
}

impl<'a> Planner<'a> {
    fn new(d: &Deployment, mut rses: Vec<ReplicaSet>, pods: &'a [Pod], now: Timestamp) -> Planner<'a> {
        rses.sort_by_key(by_creation);
        let n = rses.len();
        Planner {
            d: d.clone(),
            rses,
            touched: vec![false; n],
            events: vec![Vec::new(); n],
            created: None,
            deletes: Vec::new(),
            pods,
            now,
            requeue_after: None,
            collided: false,
        }
    }

    fn finish(self, original: &Deployment) -> Plan {
        let mut steps = Vec::new();
        for (i, rs) in self.rses.iter().enumerate() {
            if Some(i) == self.created {
                steps.push(Step::Create { rs: rs.clone(), events: self.events[i].clone() });
            } else if self.touched[i] {
                steps.push(Step::Update { rs: rs.clone(), events: self.events[i].clone() });
            }
        }
        if self.collided {
            steps.clear();
        }
        for (name, uid) in self.deletes {
            steps.push(Step::Delete { name, uid });
        }
        let revision = annotation(&self.d.metadata, REVISION);
        if revision != annotation(&original.metadata, REVISION)
            && let Some(revision) = revision
        {
            steps.push(Step::SetRevision(revision.to_string()));
        }
        let status = self.d.status.clone().unwrap_or_default();
        if status != original.status.clone().unwrap_or_default() {
            steps.push(Step::UpdateStatus(status));
        }
        Plan { steps, requeue_after: self.requeue_after }
    }

    fn desired(&self) -> i32 {
        replicas(&self.d)
    }

    fn status(&self) -> DeploymentStatus {
        self.d.status.clone().unwrap_or_default()
    }

    fn is_new(&self, i: usize, new: Option<usize>) -> bool {
        Some(i) == new
    }

    fn old(&self, new: Option<usize>) -> Vec<usize> {
        (0..self.rses.len()).filter(|i| !self.is_new(*i, new)).collect()
    }

    fn active(&self, indexes: impl IntoIterator<Item = usize>) -> Vec<usize> {
        indexes.into_iter().filter(|i| spec_replicas(&self.rses[*i]) > 0).collect()
    }

    fn sum(&self, indexes: &[usize], f: impl Fn(&ReplicaSet) -> i32) -> i32 {
        indexes.iter().map(|i| f(&self.rses[*i])).sum()
    }

    fn all(&self) -> Vec<usize> {
        (0..self.rses.len()).collect()
    }

    /// Finds the new ReplicaSet (creating it when `create`), brings its revision and
    /// annotations up to date and the Deployment's revision with it (Kubernetes'
    /// `getAllReplicaSetsAndSyncRevision`). `None` when there is no new ReplicaSet.
    fn replica_sets(&mut self, create: bool) -> Option<usize> {
        let template = self.d.spec.clone().unwrap_or_default().template;
        let new = (0..self.rses.len()).find(|i| {
            self.rses[*i]
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template))
        });
        let max_old = self.old(new).iter().map(|i| revision(&self.rses[*i])).max().unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(i) = new {
            let mut rs = self.rses[i].clone();
            let mut changed = set_new_rs_annotations(&self.d, &mut rs, new_revision, true);
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let spec = rs.spec.get_or_insert_with(Default::default);
            if spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0) {
                spec.min_ready_seconds = min_ready;
                changed = true;
            }
            if changed {
                self.rses[i] = rs;
                self.touched[i] = true;
            }
            if let Some(rev) = annotation(&self.rses[i].metadata, REVISION) {
                set_annotation(&mut self.d.metadata, REVISION, rev.to_string());
            }
            if has_progress_deadline(&self.d) && condition(&self.status(), PROGRESSING).is_none() {
                let message = format!("Found new replica set \"{}\"", name_of(&self.rses[i].metadata));
                let c = new_condition(PROGRESSING, "True", FOUND_NEW_RS, &message, self.now);
                self.set_condition(c);
            }
            return Some(i);
        }
        if !create {
            return None;
        }
        let collision_count = self.status().collision_count;
        let hash = template_hash(&template, collision_count);
        let name = format!("{}-{hash}", name_of(&self.d.metadata));
        if self.rses.iter().any(|rs| rs.metadata.name.as_deref() == Some(name.as_str())) {
            // Another template of this Deployment has the same hash: try the next hash.
            let status = self.d.status.get_or_insert_with(Default::default);
            status.collision_count = Some(collision_count.unwrap_or(0).saturating_add(1));
            self.collided = true;
            return None;
        }
        let mut rs = new_replica_set(&self.d, &template, &hash);
        self.rses.push(rs.clone());
        self.touched.push(false);
        self.events.push(Vec::new());
        let i = self.rses.len() - 1;
        let count = self.new_rs_new_replicas(i);
        rs.spec.get_or_insert_with(Default::default).replicas = Some(count);
        set_new_rs_annotations(&self.d, &mut rs, new_revision, false);
        self.rses[i] = rs;
        self.created = Some(i);
        if count > 0 {
            self.events[i].push(format!("Scaled up replica set {name} to {count}"));
        }
        set_annotation(&mut self.d.metadata, REVISION, new_revision.to_string());
        if has_progress_deadline(&self.d) {
            let message = format!("Created new replica set \"{name}\"");
            self.set_condition(new_condition(PROGRESSING, "True", NEW_RS_CREATED, &message, self.now));
        }
        Some(i)
    }

    /// How many replicas the new ReplicaSet may have now (Kubernetes' `NewRSNewReplicas`).
    fn new_rs_new_replicas(&self, new: usize) -> i32 {
        let desired = self.desired();
        let current = spec_replicas(&self.rses[new]);
        if is_recreate(&self.d) {
            return desired;
        }
        let surge = scaled(rolling(&self.d).0.as_ref(), desired, true);
        let total = self.sum(&self.all(), spec_replicas);
        let max_total = desired + surge;
        if total >= max_total {
            return current;
        }
        current + (max_total - total).min(desired - current)
    }

    /// Sets `rs[i]`'s replicas and the replicas annotations; `direction` words the event.
    /// Returns whether the size changed.
    fn scale_to(&mut self, i: usize, count: i32, direction: &str) -> bool {
        let desired = self.desired();
        let max = desired + max_surge(&self.d);
        let rs = &mut self.rses[i];
        let resized = spec_replicas(rs) != count;
        if resized || replicas_annotations_need_update(rs, desired, max) {
            rs.spec.get_or_insert_with(Default::default).replicas = Some(count);
            set_replicas_annotations(rs, desired, max);
            if Some(i) != self.created {
                self.touched[i] = true;
            }
            if resized {
                let message = format!("Scaled {direction} replica set {} to {count}", name_of(&rs.metadata));
                self.events[i].push(message);
            }
        }
        resized
    }

    /// Scales `rs[i]` to `count` if it is not there (`scaleReplicaSetAndRecordEvent`).
    fn scale(&mut self, i: usize, count: i32) -> bool {
        let current = spec_replicas(&self.rses[i]);
        if current == count {
            return false;
        }
        self.scale_to(i, count, if current < count { "up" } else { "down" })
    }

    fn set_condition(&mut self, c: DeploymentCondition) {
        let status = self.d.status.get_or_insert_with(Default::default);
        set_condition(status, c);
    }

    /// Whether `spec.replicas` changed since the active ReplicaSets were last scaled.
    fn is_scaling_event(&mut self) -> bool {
        let new = self.replica_sets(false);
        let desired = self.desired();
        let all: Vec<usize> = self.old(new).into_iter().chain(new).collect();
        self.active(all)
            .iter()
            .any(|i| int_annotation(&self.rses[*i].metadata, DESIRED_REPLICAS).is_some_and(|n| n != desired))
    }

    /// Paused, or being scaled: scale without rolling out (`sync`).
    fn sync(&mut self) {
        let new = self.replica_sets(false);
        self.scale_proportionally(new);
        if paused(&self.d) {
            self.cleanup(new);
        }
        self.sync_status(new);
    }

    /// Kubernetes' `scale`: one active ReplicaSet takes the whole change; otherwise the change
    /// is spread over the active ReplicaSets in proportion to their sizes.
    fn scale_proportionally(&mut self, new: Option<usize>) {
        let desired = self.desired();
        if let Some(i) = self.active_or_latest(new) {
            self.scale(i, desired);
            return;
        }
        if self.is_saturated(new) {
            for i in self.active(self.old(new)) {
                self.scale(i, 0);
            }
            return;
        }
        if is_recreate(&self.d) {
            return;
        }
        let mut all = self.active(self.old(new).into_iter().chain(new));
        let total = self.sum(&all, spec_replicas);
        let allowed = if desired > 0 { desired + max_surge(&self.d) } else { 0 };
        let to_add = allowed - total;
        let direction = match to_add {
            n if n > 0 => {
                // Larger first; newer first among equals.
                all.sort_by(|a, b| {
                    let (a, b) = (&self.rses[*a], &self.rses[*b]);
                    spec_replicas(b).cmp(&spec_replicas(a)).then_with(|| by_creation(b).cmp(&by_creation(a)))
                });
                "up"
            }
            n if n < 0 => {
                // Larger first; older first among equals.
                all.sort_by(|a, b| {
                    let (a, b) = (&self.rses[*a], &self.rses[*b]);
                    spec_replicas(b).cmp(&spec_replicas(a)).then_with(|| by_creation(a).cmp(&by_creation(b)))
                });
                "down"
            }
            _ => "",
        };
        let mut added = 0;
        let mut sizes = Vec::new();
        for i in &all {
            let rs = &self.rses[*i];
            if to_add != 0 {
                let proportion = self.proportion(rs, to_add, added);
                sizes.push(spec_replicas(rs) + proportion);
                added += proportion;
            } else {
                sizes.push(spec_replicas(rs));
            }
        }
        for (k, i) in all.into_iter().enumerate() {
            let mut size = sizes[k];
            if k == 0 && to_add != 0 {
                // Leftovers go to the largest.
                size = (size + to_add - added).max(0);
            }
            self.scale_to(i, size, direction);
        }
    }

    /// The share of `to_add` for `rs` (`GetProportion`).
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        let current = spec_replicas(rs);
        if current == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let desired = self.desired();
        let fraction = if desired == 0 {
            -current
        } else {
            let max = desired + max_surge(&self.d);
            let before = int_annotation(&rs.metadata, MAX_REPLICAS).filter(|n| *n != 0).unwrap_or(current);
            let size = f64::from(current) * f64::from(max) / f64::from(before);
            round(size) - current
        };
        let allowed = to_add - added;
        if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
    }

    /// The only active ReplicaSet, or the newest when none is active (`FindActiveOrLatest`).
    fn active_or_latest(&self, new: Option<usize>) -> Option<usize> {
        let mut old = self.old(new);
        if new.is_none() && old.is_empty() {
            return None;
        }
        old.reverse();
        let active = self.active(old.iter().copied().chain(new));
        match active.as_slice() {
            [] => new.or(old.first().copied()),
            [one] => Some(*one),
            _ => None,
        }
    }

    fn is_saturated(&self, new: Option<usize>) -> bool {
        let Some(i) = new else { return false };
        let rs = &self.rses[i];
        let desired = self.desired();
        spec_replicas(rs) == desired
            && int_annotation(&rs.metadata, DESIRED_REPLICAS) == Some(desired)
            && available_replicas(rs) == desired
    }

    fn rollout_rolling(&mut self) {
        let Some(new) = self.replica_sets(true) else { return };
        if self.reconcile_new(new) || self.reconcile_old(new) {
            self.sync_rollout_status(Some(new));
            return;
        }
        if complete(&self.d, &self.status()) {
            self.cleanup(Some(new));
        }
        self.sync_rollout_status(Some(new));
    }

    /// Scales the new ReplicaSet toward `spec.replicas`, within maxSurge.
    fn reconcile_new(&mut self, new: usize) -> bool {
        let desired = self.desired();
        let current = spec_replicas(&self.rses[new]);
        if current == desired {
            return false;
        }
        if current > desired {
            return self.scale(new, desired);
        }
        let count = self.new_rs_new_replicas(new);
        self.scale(new, count)
    }

    /// Scales old ReplicaSets down as far as maxUnavailable allows, unhealthy replicas first.
    fn reconcile_old(&mut self, new: usize) -> bool {
        let old = self.active(self.old(Some(new)));
        if self.sum(&old, spec_replicas) == 0 {
            return false;
        }
        let all_pods = self.sum(&self.all(), spec_replicas);
        let min_available = self.desired() - max_unavailable(&self.d);
        let new_unavailable = spec_replicas(&self.rses[new]) - available_replicas(&self.rses[new]);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.cleanup_unhealthy(&old, max_scaled_down);
        let scaled = self.scale_down_old(&old);
        cleaned + scaled > 0
    }

    /// Scales away old replicas that are not available, oldest ReplicaSet first.
    fn cleanup_unhealthy(&mut self, old: &[usize], max: i32) -> i32 {
        let mut total = 0;
        for &i in old {
            if total >= max {
                break;
            }
            let (current, available) = (spec_replicas(&self.rses[i]), available_replicas(&self.rses[i]));
            if current == 0 || current == available {
                continue;
            }
            let down = (max - total).min(current - available);
            self.scale(i, current - down);
            total += down;
        }
        total
    }

    /// Scales old ReplicaSets down by as many available replicas as exceed the minimum.
    fn scale_down_old(&mut self, old: &[usize]) -> i32 {
        let min_available = self.desired() - max_unavailable(&self.d);
        let available = self.sum(&self.all(), available_replicas);
        if available <= min_available {
            return 0;
        }
        let wanted = available - min_available;
        let mut total = 0;
        for &i in old {
            if total >= wanted {
                break;
            }
            let current = spec_replicas(&self.rses[i]);
            if current == 0 {
                continue;
            }
            let down = current.min(wanted - total);
            self.scale(i, current - down);
            total += down;
        }
        total
    }

    fn rollout_recreate(&mut self) {
        // No new ReplicaSet before the old ones are down: never both at once.
        let new = self.replica_sets(false);
        let mut scaled_down = false;
        for i in self.active(self.old(new)) {
            scaled_down |= self.scale(i, 0);
        }
        if scaled_down || self.old_pods_running(new) {
            self.sync_rollout_status(new);
            return;
        }
        let new = match new {
            Some(new) => new,
            None => match self.replica_sets(true) {
                Some(new) => new,
                None => return,
            },
        };
        let desired = self.desired();
        self.scale(new, desired);
        if complete(&self.d, &self.status()) {
            self.cleanup(Some(new));
        }
        self.sync_rollout_status(Some(new));
    }

    /// Whether any pod of an old ReplicaSet may still run.
    fn old_pods_running(&self, new: Option<usize>) -> bool {
        let old = self.old(new);
        if self.sum(&old, |rs| rs.status.as_ref().map_or(0, |s| s.replicas)) > 0 {
            return true;
        }
        let old_uids: HashSet<&str> = old.iter().filter_map(|i| self.rses[*i].metadata.uid.as_deref()).collect();
        self.pods.iter().any(|pod| {
            let owner = util::controller_of(&pod.metadata).map(|r| r.uid.as_str());
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            owner.is_some_and(|o| old_uids.contains(o)) && !matches!(phase, Some("Succeeded" | "Failed"))
        })
    }

    /// Deletes the oldest empty old ReplicaSets beyond `revisionHistoryLimit`.
    fn cleanup(&mut self, new: Option<usize>) {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit).filter(|l| *l != i32::MAX) else {
            return;
        };
        let mut cleanable: Vec<usize> =
            self.old(new).into_iter().filter(|i| !util::terminating(&self.rses[*i].metadata)).collect();
        let excess = cleanable.len().saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        cleanable.sort_by(|a, b| {
            let (a, b) = (&self.rses[*a], &self.rses[*b]);
            revision(a).cmp(&revision(b)).then_with(|| by_creation(a).cmp(&by_creation(b)))
        });
        for &i in cleanable.iter().take(excess) {
            let rs = &self.rses[i];
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            let busy = rs.status.as_ref().map_or(0, |s| s.replicas) != 0
                || spec_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
                || self.touched[i];
            if !busy {
                let (name, uid) = (name_of(&rs.metadata).to_string(), rs.metadata.uid.clone().unwrap_or_default());
                self.deletes.push((name, uid));
            }
        }
    }

    /// The status from the ReplicaSets, with the Available condition.
    fn calculate_status(&self, new: Option<usize>) -> DeploymentStatus {
        let all = self.all();
        let available = self.sum(&all, available_replicas);
        let total = self.sum(&all, spec_replicas);
        let current = self.status();
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: nonzero(self.sum(&all, |rs| rs.status.as_ref().map_or(0, |s| s.replicas))),
            updated_replicas: nonzero(new.map_or(0, |i| self.rses[i].status.as_ref().map_or(0, |s| s.replicas))),
            ready_replicas: nonzero(
                self.sum(&all, |rs| rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)),
            ),
            available_replicas: nonzero(available),
            unavailable_replicas: nonzero((total - available).max(0)),
            collision_count: current.collision_count,
            conditions: current.conditions.clone(),
            terminating_replicas: current.terminating_replicas,
        };
        let c = if available >= self.desired() - max_unavailable(&self.d) {
            new_condition(
                AVAILABLE,
                "True",
                MINIMUM_REPLICAS_AVAILABLE,
                "Deployment has minimum availability.",
                self.now,
            )
        } else {
            let message = "Deployment does not have minimum availability.";
            new_condition(AVAILABLE, "False", MINIMUM_REPLICAS_UNAVAILABLE, message, self.now)
        };
        set_condition(&mut status, c);
        status
    }

    /// The status without progress estimation (paused, scaling, being deleted).
    fn sync_status(&mut self, new: Option<usize>) {
        self.d.status = Some(self.calculate_status(new));
    }

    /// The status with the Progressing condition: complete, progressing, or past its deadline.
    fn sync_rollout_status(&mut self, new: Option<usize>) {
        let mut status = self.calculate_status(new);
        let before = self.status();
        let deadline = has_progress_deadline(&self.d);
        if !deadline {
            remove_condition(&mut status, PROGRESSING);
        }
        let current = condition(&before, PROGRESSING).cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
        let rs_name = new.map(|i| name_of(&self.rses[i].metadata).to_string());
        let subject = match &rs_name {
            Some(name) => format!("ReplicaSet \"{name}\""),
            None => format!("Deployment \"{}\"", name_of(&self.d.metadata)),
        };
        if deadline && !complete_before {
            if complete(&self.d, &status) {
                let message = format!("{subject} has successfully progressed.");
                set_condition(&mut status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, &message, self.now));
            } else if progressing(&before, &status) {
                let message = format!("{subject} is progressing.");
                let mut c = new_condition(PROGRESSING, "True", RS_UPDATED, &message, self.now);
                if let Some(current) = &current
                    && current.status == "True"
                {
                    c.last_transition_time = current.last_transition_time.clone();
                }
                // Unlike other conditions, progress renews lastUpdateTime even with the same
                // reason: the deadline counts from the last progress.
                remove_condition(&mut status, PROGRESSING);
                set_condition(&mut status, c);
            } else if timed_out(&self.d, &status, self.now) {
                let message = format!("{subject} has timed out progressing.");
                set_condition(&mut status, new_condition(PROGRESSING, "False", TIMED_OUT, &message, self.now));
            }
        }
        self.requeue_after = self.stuck_requeue(current.as_ref(), &status);
        self.d.status = Some(status);
    }

    /// When to look again for a rollout that may miss its deadline without any event.
    fn stuck_requeue(&self, current: Option<&DeploymentCondition>, status: &DeploymentStatus) -> Option<Duration> {
        let deadline = self.d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|s| *s != i32::MAX)?;
        let current = current?;
        if complete(&self.d, status) || current.reason.as_deref() == Some(TIMED_OUT) {
            return None;
        }
        let from = current.last_update_time.as_ref().map_or(self.now, |t| t.0);
        let after = from.as_second() + i64::from(deadline) - self.now.as_second();
        Some(Duration::from_secs(u64::try_from(after).unwrap_or(0).max(1)))
    }

    /// Records whether the Deployment is paused in its Progressing condition.
    fn check_paused_conditions(&mut self) {
        if !has_progress_deadline(&self.d) {
            return;
        }
        let status = self.status();
        let reason = condition(&status, PROGRESSING).and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(TIMED_OUT) {
            return;
        }
        let paused_recorded = reason.as_deref() == Some(PAUSED);
        if paused(&self.d) && !paused_recorded {
            self.set_condition(new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", self.now));
        } else if !paused(&self.d) && paused_recorded {
            self.set_condition(new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", self.now));
        }
    }
}

/// The new ReplicaSet for `template` (replicas 0 until the plan sizes it).
fn new_replica_set(d: &Deployment, template: &PodTemplateSpec, hash: &str) -> ReplicaSet {
    let mut template = template.clone();
    let template_meta = template.metadata.get_or_insert_with(Default::default);
    template_meta.labels.get_or_insert_with(Default::default).insert(POD_TEMPLATE_HASH.into(), hash.into());
    let labels = template_meta.labels.clone();
    let spec = d.spec.clone().unwrap_or_default();
    let mut selector = spec.selector.clone();
    selector.match_labels.get_or_insert_with(Default::default).insert(POD_TEMPLATE_HASH.into(), hash.into());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", name_of(&d.metadata))),
            namespace: d.metadata.namespace.clone(),
            labels,
            owner_references: Some(vec![util::controller_ref("apps/v1", "Deployment", &d.metadata)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// A stable hash of a pod template (and of the collision count, when there was a collision),
/// in Kubernetes' alphabet: FNV-32a over the template's canonical JSON.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    prune(&mut value);
    let mut hash = fnv32a(0x811c_9dc5, value.to_string().as_bytes());
    if let Some(count) = collision_count {
        hash = fnv32a(hash, &u64::from(count.cast_unsigned()).to_le_bytes());
    }
    // Kubernetes' SafeEncodeString of the decimal hash: no vowels, no look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string().bytes().map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()])).collect()
}

fn fnv32a(mut hash: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Whether two templates are the same but for the pod-template-hash label (Kubernetes'
/// `EqualIgnoreHash`; like its semantic equality, absent and empty are the same).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let canonical = |t: &PodTemplateSpec| {
        let mut value = serde_json::to_value(t).unwrap_or(Value::Null);
        if let Some(labels) = value.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        prune(&mut value);
        value
    };
    canonical(a) == canonical(b)
}

/// Removes nulls and empty objects and arrays from objects, recursively.
fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                prune(v);
            }
            map.retain(|_, v| match v {
                Value::Null => false,
                Value::Object(m) => !m.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            });
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

/// Copies the Deployment's annotations to its new ReplicaSet and sets the ReplicaSet's
/// revision to `new_revision` if it is older, remembering the revision it had (a rollback).
/// Returns whether anything changed.
fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_revision = match old.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return changed,
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = annotations.get(REVISION_HISTORY).cloned().unwrap_or_default();
            let mut revisions: Vec<&str> = history.split(',').filter(|r| !r.is_empty()).collect();
            let mut length = history.len() + old.len() + 1;
            while length > MAX_REVISION_HISTORY_CHARS && !revisions.is_empty() {
                length -= revisions[0].len() + 1;
                revisions.remove(0);
            }
            revisions.push(&old);
            annotations.insert(REVISION_HISTORY.into(), revisions.join(","));
        }
    }
    if !exists {
        let desired = replicas(d);
        changed |= set_replicas_annotations(rs, desired, desired + max_surge(d));
    }
    changed
}

fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        if annotations.get(key) != Some(&value.to_string()) {
            annotations.insert(key.into(), value.to_string());
            changed = true;
        }
    }
    changed
}

fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    int_annotation(&rs.metadata, DESIRED_REPLICAS) != Some(desired)
        || int_annotation(&rs.metadata, MAX_REPLICAS) != Some(max)
}

fn annotation<'m>(meta: &'m ObjectMeta, key: &str) -> Option<&'m str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn int_annotation(meta: &ObjectMeta, key: &str) -> Option<i32> {
    annotation(meta, key)?.parse().ok()
}

fn set_annotation(meta: &mut ObjectMeta, key: &str, value: String) {
    meta.annotations.get_or_insert_with(BTreeMap::new).insert(key.into(), value);
}

/// A ReplicaSet's revision (0 when it has none or it does not parse).
fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn by_creation(rs: &ReplicaSet) -> (Option<Time>, String) {
    (rs.metadata.creation_timestamp.clone(), name_of(&rs.metadata).to_string())
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).is_some_and(|s| s != i32::MAX)
}

/// maxSurge and maxUnavailable as written (not for Recreate).
fn rolling(d: &Deployment) -> (Option<IntOrString>, Option<IntOrString>) {
    if is_recreate(d) {
        return (None, None);
    }
    let rolling = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    (rolling.and_then(|r| r.max_surge.clone()), rolling.and_then(|r| r.max_unavailable.clone()))
}

/// An int, or a percentage of `total` rounded up (`round_up`) or down
/// (`GetScaledValueFromIntOrPercent`).
pub fn scaled(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => match s.strip_suffix('%') {
            Some(percent) => {
                let product = i64::from(total) * percent.trim().parse::<i64>().unwrap_or(0);
                let value = if round_up { -(-product).div_euclid(100) } else { product.div_euclid(100) };
                i32::try_from(value).unwrap_or(0)
            }
            None => s.trim().parse().unwrap_or(0),
        },
    }
}

/// maxSurge and maxUnavailable resolved against `desired`; when both round to 0,
/// maxUnavailable is 1 so a rollout can always move (`ResolveFenceposts`).
pub fn fenceposts(max_surge: Option<&IntOrString>, max_unavailable: Option<&IntOrString>, desired: i32) -> (i32, i32) {
    let surge = scaled(max_surge, desired, true);
    let unavailable = scaled(max_unavailable, desired, false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) {
        return 0;
    }
    let (surge, unavailable) = rolling(d);
    fenceposts(surge.as_ref(), unavailable.as_ref(), replicas(d)).0
}

fn max_unavailable(d: &Deployment) -> i32 {
    let desired = replicas(d);
    if is_recreate(d) || desired == 0 {
        return 0;
    }
    let (surge, unavailable) = rolling(d);
    fenceposts(surge.as_ref(), unavailable.as_ref(), desired).1.min(desired)
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// `f64::round` rounds half away from zero, like Go's `math.Round`.
fn round(x: f64) -> i32 {
    let rounded = x.round();
    if rounded >= f64::from(i32::MAX) {
        i32::MAX
    } else if rounded <= f64::from(i32::MIN) {
        i32::MIN
    } else {
        // In range and integral: the conversion is exact.
        rounded as i32
    }
}

/// Whether the rollout is done: every replica updated and available, and the spec observed.
fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = replicas(d);
    status.updated_replicas.unwrap_or(0) == desired
        && status.replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) == desired
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over `old`: more updated, ready or available replicas, or
/// fewer old ones.
fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

fn timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|s| *s != i32::MAX) else {
        return false;
    };
    let Some(c) = condition(status, PROGRESSING) else { return false };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => {
            let from = c.last_update_time.as_ref().map_or(now, |t| t.0);
            from.as_second() + i64::from(deadline) < now.as_second()
        }
    }
}

fn new_condition(type_: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn condition<'s>(status: &'s DeploymentStatus, type_: &str) -> Option<&'s DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Sets a condition unless one with the same status and reason is there; keeps the transition
/// time when only the reason changes (`SetDeploymentCondition`).
fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(current) = condition(status, &c.type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &c.type_);
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

struct Reconciler {
    ctx: Context,
    recorder: Recorder,
}

/// Runs until `stop`.
pub fn run(ctx: Context, stop: CancellationToken) -> impl Future<Output = ()> + Send {
    let reconciler = Arc::new(Reconciler { recorder: ctx.recorder("deployment-controller"), ctx });
    let informers = &reconciler.ctx.informers;
    let (on_rs, on_pod) = (reconciler.clone(), reconciler.clone());
    let controller = Controller::new("deployment-controller")
        .workers(WORKERS)
        .primary(&informers.deployments)
        .owns(&informers.replica_sets)
        .watches(&informers.replica_sets, move |event| on_rs.orphan_selected(event))
        .watches(&informers.pods, move |event| on_pod.recreate_waiting(event));
    controller.run(stop, move |key| {
        let reconciler = reconciler.clone();
        async move { reconciler.reconcile(key).await }
    })
}

impl Reconciler {
    /// An orphan ReplicaSet: any Deployment selecting it may adopt it.
    fn orphan_selected(&self, event: &Event<ReplicaSet>) -> Vec<ObjectKey> {
        let meta = &event.object.metadata;
        if util::controller_of(meta).is_some() || event.kind == ChangeType::Deleted {
            return Vec::new();
        }
        let labels = util::labels(meta);
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        self.ctx
            .informers
            .deployments
            .list_namespace(namespace)
            .iter()
            .filter(|d| {
                d.spec.as_ref().and_then(|spec| util::selector_of(&spec.selector)).is_some_and(|s| s.matches(&labels))
            })
            .map(|d| ObjectKey::of_meta(&d.metadata))
            .collect()
    }

    /// A Recreate rollout waits for old pods to be gone, which only pod events tell.
    fn recreate_waiting(&self, event: &Event<Pod>) -> Option<ObjectKey> {
        let meta = &event.object.metadata;
        if event.kind != ChangeType::Deleted && !util::terminating(meta) {
            return None;
        }
        let rs = self.ctx.informers.replica_sets.get(&controller_key(meta, "ReplicaSet")?)?;
        let key = controller_key(&rs.metadata, "Deployment")?;
        let recreate = self.ctx.informers.deployments.get(&key).is_some_and(|d| is_recreate(&d));
        recreate.then_some(key)
    }

    async fn reconcile(&self, key: ObjectKey) -> Result<Action, RegistryError> {
        let Some(d) = self.ctx.informers.deployments.get(&key) else { return Ok(Action::Await) };
        let namespace = key.namespace.clone().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let replica_sets: Vec<ReplicaSet> = self
            .ctx
            .informers
            .replica_sets
            .list_namespace(&namespace)
            .iter()
            .filter(|rs| util::controller_of(&rs.metadata).is_none_or(|owner| owner.uid == uid))
            .map(|rs| (**rs).clone())
            .collect();
        let pods: Vec<Pod> = if is_recreate(&d) {
            replica_sets
                .iter()
                .filter(|rs| util::controller_of(&rs.metadata).is_some_and(|r| r.uid == uid))
                .filter_map(|rs| rs.metadata.uid.as_deref())
                .flat_map(|rs_uid| {
                    let controlled =
                        move |p: &Arc<Pod>| util::controller_of(&p.metadata).is_some_and(|r| r.uid == rs_uid);
                    self.ctx.informers.pods.owned_by(rs_uid).into_iter().filter(controlled)
                })
                .map(|p| (*p).clone())
                .collect()
        } else {
            Vec::new()
        };
        let plan = plan(&d, &replica_sets, &pods, util::now());
        tracing::debug!(deployment = %key, steps = plan.steps.len(), "deployment reconciled");
        self.execute(&key, &d, plan.steps).await?;
        Ok(plan.requeue_after.map_or(Action::Await, Action::RequeueAfter))
    }

    /// Executes `steps` in order, stopping at the first failure.
    async fn execute(&self, key: &ObjectKey, d: &Deployment, steps: Vec<Step>) -> Result<(), RegistryError> {
        // The Deployment's own writes are conditional on the version the plan was made from.
        let mut version = d.metadata.resource_version.clone();
        for step in steps {
            match step {
                Step::Adopt { name, uid } => {
                    let owner = util::controller_ref("apps/v1", "Deployment", &d.metadata);
                    self.write_replica_set(key, &name, None, |rs| {
                        if rs.metadata.uid.as_deref() == Some(uid.as_str())
                            && util::controller_of(&rs.metadata).is_none()
                        {
                            rs.metadata.owner_references.get_or_insert_with(Vec::new).push(owner.clone());
                        }
                    })
                    .await?;
                }
                Step::Release { name, uid } => {
                    let d_uid = d.metadata.uid.clone().unwrap_or_default();
                    self.write_replica_set(key, &name, None, |rs| {
                        if rs.metadata.uid.as_deref() == Some(uid.as_str())
                            && let Some(refs) = rs.metadata.owner_references.as_mut()
                        {
                            refs.retain(|r| r.uid != d_uid);
                        }
                    })
                    .await?;
                }
                Step::Create { rs, events } => self.create_replica_set(key, d, &rs, events, &version).await?,
                Step::Update { rs: wanted, events } => {
                    let name = name_of(&wanted.metadata).to_string();
                    let spec = wanted.spec.clone().unwrap_or_default();
                    self.write_replica_set(key, &name, wanted.metadata.resource_version.clone(), |rs| {
                        let current = rs.spec.get_or_insert_with(Default::default);
                        current.replicas = spec.replicas;
                        current.min_ready_seconds = Some(spec.min_ready_seconds.unwrap_or(0));
                        rs.metadata.annotations = wanted.metadata.annotations.clone();
                    })
                    .await?;
                    for message in events {
                        tracing::info!(deployment = %key, rs = %name, %message, "scaled replica set");
                        self.recorder.record(d, EventType::Normal, "ScalingReplicaSet", &message).await;
                    }
                }
                Step::Delete { name, uid } => {
                    let options = DeleteOptions {
                        preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                        ..Default::default()
                    };
                    let namespace = key.namespace.as_deref();
                    match self.ctx.registry.delete(ReplicaSets::RESOURCE, namespace, &name, &options).await {
                        Ok(_) => tracing::info!(deployment = %key, rs = %name, "deleted old replica set"),
                        // Gone already, or replaced by another of the same name.
                        Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Step::SetRevision(revision) => {
                    let set = |d: &mut Deployment| {
                        d.metadata
                            .annotations
                            .get_or_insert_with(BTreeMap::new)
                            .insert(REVISION.into(), revision.clone());
                    };
                    version = self.write_deployment(key, Scope::Main, version, set).await?;
                }
                Step::UpdateStatus(status) => {
                    let set = |d: &mut Deployment| d.status = Some(status.clone());
                    version = self.write_deployment(key, Scope::Status, version, set).await?;
                }
            }
        }
        Ok(())
    }

    /// Writes a ReplicaSet of the Deployment at `key` (if still at `version`, when given); a
    /// ReplicaSet that is gone needs nothing.
    async fn write_replica_set(
        &self,
        key: &ObjectKey,
        name: &str,
        version: Option<String>,
        change: impl FnMut(&mut ReplicaSet),
    ) -> Result<(), RegistryError> {
        let options = WriteOptions { field_manager: Some(MANAGER.into()), ..Default::default() };
        let namespace = key.namespace.as_deref();
        let result = self
            .ctx
            .registry
            .update_object::<ReplicaSets>(namespace, name, Scope::Main, &options, change, version)
            .await;
        match result {
            Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes the Deployment at `key` if still at `version`; returns its new version.
    async fn write_deployment(
        &self,
        key: &ObjectKey,
        scope: Scope,
        version: Option<String>,
        change: impl FnMut(&mut Deployment),
    ) -> Result<Option<String>, RegistryError> {
        let options = WriteOptions { field_manager: Some(MANAGER.into()), ..Default::default() };
        let namespace = key.namespace.as_deref();
        let written = self
            .ctx
            .registry
            .update_object::<Deployments>(namespace, &key.name, scope, &options, change, version)
            .await?;
        Ok(written.metadata.resource_version)
    }

    async fn create_replica_set(
        &self,
        key: &ObjectKey,
        d: &Deployment,
        rs: &ReplicaSet,
        events: Vec<String>,
        version: &Option<String>,
    ) -> Result<(), RegistryError> {
        let name = name_of(&rs.metadata);
        let mut rs = rs.clone();
        rs.metadata.namespace = key.namespace.clone();
        let options = WriteOptions { field_manager: Some(MANAGER.into()), ..Default::default() };
        match self.ctx.registry.create_object::<ReplicaSets>(&rs, &options).await {
            Ok(_) => {
                tracing::info!(deployment = %key, rs = %name, "created replica set");
                for message in events {
                    self.recorder.record(d, EventType::Normal, "ScalingReplicaSet", &message).await;
                }
                Ok(())
            }
            Err(RegistryError::AlreadyExists { .. }) => self.on_name_taken(key, d, &rs, version.clone()).await,
            Err(e) => {
                let message = format!("Failed to create new replica set \"{name}\": {e}");
                self.recorder.record(d, EventType::Warning, "ReplicaSetCreateError", &message).await;
                Err(e)
            }
        }
    }

    /// The new ReplicaSet's name is taken. If by this Deployment's ReplicaSet for the same
    /// template, the cache is behind: try again. Otherwise two templates hash alike: count the
    /// collision, which changes the next hash.
    async fn on_name_taken(
        &self,
        key: &ObjectKey,
        d: &Deployment,
        rs: &ReplicaSet,
        version: Option<String>,
    ) -> Result<(), RegistryError> {
        let name = name_of(&rs.metadata);
        let stored =
            self.ctx.registry.get(ReplicaSets::RESOURCE, key.namespace.as_deref(), name, ReadAt::Latest).await?;
        let existing = from_value::<ReplicaSets>(stored)?;
        let ours = util::controller_of(&existing.metadata).is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
        let same = match (existing.spec.as_ref().and_then(|s| s.template.as_ref()), d.spec.as_ref()) {
            (Some(a), Some(spec)) => equal_ignore_hash(a, &spec.template),
            _ => false,
        };
        if !(ours && same) {
            let collisions = d.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0).saturating_add(1);
            tracing::info!(deployment = %key, rs = %name, collisions, "pod template hash collision");
            let count = |d: &mut Deployment| {
                d.status.get_or_insert_with(Default::default).collision_count = Some(collisions);
            };
            self.write_deployment(key, Scope::Status, version, count).await?;
        }
        Err(RegistryError::AlreadyExists { resource: "replicasets.apps".into(), name: name.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetStatus;
    use serde_json::json;

    const NOW: &str = "2024-01-01T01:00:00Z";

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    fn deployment(replicas: i32, image: &str) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1, "resourceVersion": "10"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
            },
        }))
        .expect("a deployment")
    }

    fn recreate(mut d: Deployment) -> Deployment {
        let spec = d.spec.as_mut().expect("spec");
        spec.strategy = Some(serde_json::from_value(json!({"type": "Recreate"})).expect("a strategy"));
        d
    }

    /// The ReplicaSet `d` would own for `image` (revision `rev`), with `replicas` of which
    /// `available` are available, created at minute `minute`.
    fn rs(d: &Deployment, image: &str, rev: i64, count: i32, available: i32, minute: u32) -> ReplicaSet {
        let template = deployment(1, image).spec.expect("spec").template;
        let mut rs = new_replica_set(d, &template, &template_hash(&template, None));
        rs.metadata.uid = Some(format!("rs-{image}"));
        rs.metadata.resource_version = Some("5".into());
        rs.metadata.generation = Some(1);
        rs.metadata.creation_timestamp = Some(Time(at(&format!("2024-01-01T00:{minute:02}:00Z"))));
        set_annotation(&mut rs.metadata, REVISION, rev.to_string());
        let (desired, max) = (replicas(d), replicas(d) + max_surge(d));
        set_replicas_annotations(&mut rs, desired, max);
        rs.spec.as_mut().expect("spec").replicas = Some(count);
        rs.status = Some(observed(count, available));
        rs
    }

    fn observed(replicas: i32, available: i32) -> ReplicaSetStatus {
        ReplicaSetStatus {
            replicas,
            ready_replicas: nonzero(available),
            available_replicas: nonzero(available),
            observed_generation: Some(1),
            ..Default::default()
        }
    }

    fn creates(plan: &Plan) -> Vec<&ReplicaSet> {
        plan.steps.iter().filter_map(|s| if let Step::Create { rs, .. } = s { Some(rs) } else { None }).collect()
    }

    /// Scaled ReplicaSets as `(name, replicas)`.
    fn scales(plan: &Plan) -> Vec<(String, i32)> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Update { rs, .. } => Some((name_of(&rs.metadata).to_string(), spec_replicas(rs))),
                _ => None,
            })
            .collect()
    }

    fn status(plan: &Plan) -> Option<&DeploymentStatus> {
        plan.steps.iter().find_map(|s| if let Step::UpdateStatus(st) = s { Some(st) } else { None })
    }

    fn reason(status: &DeploymentStatus, type_: &str) -> Option<String> {
        condition(status, type_).and_then(|c| c.reason.clone())
    }

    /// Applies a plan's ReplicaSet and Deployment writes, as the store would.
    fn apply(plan: &Plan, d: &mut Deployment, rses: &mut Vec<ReplicaSet>, minute: &mut u32) {
        for step in &plan.steps {
            match step {
                Step::Create { rs, .. } => {
                    let mut rs = rs.clone();
                    *minute += 1;
                    rs.metadata.uid = Some(format!("rs-{minute}"));
                    rs.metadata.creation_timestamp = Some(Time(at(&format!("2024-01-01T00:{minute:02}:00Z"))));
                    rs.metadata.generation = Some(1);
                    rses.push(rs);
                }
                Step::Update { rs, .. } => {
                    let target = rses.iter_mut().find(|r| r.metadata.name == rs.metadata.name).expect("an existing rs");
                    target.spec = rs.spec.clone();
                    target.metadata.annotations = rs.metadata.annotations.clone();
                }
                Step::Delete { name, .. } => rses.retain(|r| r.metadata.name.as_deref() != Some(name)),
                Step::SetRevision(rev) => set_annotation(&mut d.metadata, REVISION, rev.clone()),
                Step::UpdateStatus(s) => d.status = Some(s.clone()),
                Step::Adopt { .. } | Step::Release { .. } => {}
            }
        }
    }

    #[test]
    fn max_surge_rounds_up_and_max_unavailable_rounds_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10), (3, 2));
        assert_eq!(fenceposts(Some(&pct("25%")), Some(&pct("25%")), 1), (1, 0));
        assert_eq!(fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(0)), 10), (2, 0));
        assert_eq!(fenceposts(Some(&pct("0%")), Some(&pct("10%")), 5), (0, 1), "both zero: one may be unavailable");
    }

    #[test]
    fn the_template_hash_is_stable_and_changes_with_the_template_and_collision_count() {
        let v1 = deployment(1, "nginx:1").spec.expect("spec").template;
        let v2 = deployment(1, "nginx:2").spec.expect("spec").template;
        let hash = template_hash(&v1, None);
        assert_eq!(hash, template_hash(&v1.clone(), None));
        assert!(hash.len() <= 10 && hash.chars().all(|c| c.is_ascii_alphanumeric()), "{hash}");
        assert_ne!(hash, template_hash(&v2, None));
        assert_ne!(hash, template_hash(&v1, Some(1)));
    }

    #[test]
    fn a_new_deployment_creates_its_replica_set_with_hash_revision_and_owner() {
        let d = deployment(3, "nginx:1");
        let plan = plan(&d, &[], &[], at(NOW));
        let [created] = creates(&plan)[..] else { panic!("one replica set created: {plan:?}") };
        let hash = template_hash(&d.spec.clone().expect("spec").template, None);
        assert_eq!(created.metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
        let spec = created.spec.clone().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.selector.match_labels.expect("labels").get(POD_TEMPLATE_HASH), Some(&hash));
        let template_labels = spec.template.and_then(|t| t.metadata).and_then(|m| m.labels).expect("labels");
        assert_eq!(template_labels.get(POD_TEMPLATE_HASH), Some(&hash));
        assert_eq!(annotation(&created.metadata, REVISION), Some("1"));
        let owner = util::controller_of(&created.metadata).expect("a controller");
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Deployment", "d-uid"));
        let Some(Step::Create { events, .. }) = plan.steps.first() else { panic!("create first") };
        assert_eq!(events, &[format!("Scaled up replica set web-{hash} to 3")]);
        assert!(plan.steps.contains(&Step::SetRevision("1".into())));
        let s = status(&plan).expect("a status");
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(reason(s, PROGRESSING).as_deref(), Some(NEW_RS_CREATED));
        assert_eq!(reason(s, AVAILABLE).as_deref(), Some(MINIMUM_REPLICAS_UNAVAILABLE));
    }

    #[test]
    fn a_template_change_surges_the_new_replica_set_and_scales_the_old_one_within_max_unavailable() {
        let d = deployment(4, "nginx:2");
        let old = rs(&d, "nginx:1", 1, 4, 4, 0);
        let plan = plan(&d, std::slice::from_ref(&old), &[], at(NOW));
        let [created] = creates(&plan)[..] else { panic!("a new replica set: {plan:?}") };
        assert_eq!(spec_replicas(created), 1, "4 + maxSurge 1 = 5 pods at most");
        assert_eq!(annotation(&created.metadata, REVISION), Some("2"));
        assert_eq!(scales(&plan), [(name_of(&old.metadata).to_string(), 3)], "4 - maxUnavailable 1 = 3 available");
        assert!(plan.steps.contains(&Step::SetRevision("2".into())));
    }

    #[test]
    fn a_rolling_update_stays_within_surge_and_availability_until_the_new_replica_set_has_everything() {
        let mut d = deployment(4, "nginx:2");
        let mut rses = vec![rs(&d, "nginx:1", 1, 4, 4, 0)];
        let mut minute = 1;
        for round in 0..20 {
            let plan = plan(&d, &rses, &[], at(NOW));
            apply(&plan, &mut d, &mut rses, &mut minute);
            // The ReplicaSet controller follows: old pods stay available, new pods become
            // available one round later.
            for rs in rses.iter_mut() {
                let replicas = spec_replicas(rs);
                let is_new = annotation(&rs.metadata, REVISION) == Some("2");
                let before = available_replicas(rs);
                let available = if is_new { before.max(rs.status.as_ref().map_or(0, |s| s.replicas)) } else { before };
                rs.status = Some(observed(replicas, available.min(replicas)));
            }
            let total: i32 = rses.iter().map(spec_replicas).sum();
            let available: i32 = rses.iter().map(available_replicas).sum();
            assert!(total <= 5, "round {round}: {total} pods exceed replicas + maxSurge");
            assert!(available >= 3, "round {round}: {available} available is below replicas - maxUnavailable");
            if plan.steps.is_empty() {
                break;
            }
        }
        let s = d.status.clone().expect("a status");
        assert_eq!((s.updated_replicas, s.available_replicas, s.replicas), (Some(4), Some(4), Some(4)));
        assert_eq!(reason(&s, PROGRESSING).as_deref(), Some(NEW_RS_AVAILABLE));
        assert_eq!(reason(&s, AVAILABLE).as_deref(), Some(MINIMUM_REPLICAS_AVAILABLE));
        let old = rses.iter().find(|r| revision(r) == 1).expect("the old replica set is kept");
        assert_eq!(spec_replicas(old), 0);
    }

    #[test]
    fn recreate_scales_old_replica_sets_to_zero_before_creating_the_new_one() {
        let d = recreate(deployment(2, "nginx:2"));
        let old = rs(&d, "nginx:1", 1, 2, 2, 0);
        let first = plan(&d, std::slice::from_ref(&old), &[], at(NOW));
        assert!(creates(&first).is_empty());
        assert_eq!(scales(&first), [(name_of(&old.metadata).to_string(), 0)]);

        let mut old = old;
        old.spec.as_mut().expect("spec").replicas = Some(0);
        old.status = Some(observed(0, 0));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "old-pod", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": name_of(&old.metadata), "uid": old.metadata.uid, "controller": true}]},
            "status": {"phase": "Running"},
        }))
        .expect("a pod");
        let waiting = plan(&d, std::slice::from_ref(&old), &[pod], at(NOW));
        assert!(creates(&waiting).is_empty(), "an old pod still runs");

        let then = plan(&d, &[old], &[], at(NOW));
        let [created] = creates(&then)[..] else { panic!("the new replica set: {then:?}") };
        assert_eq!(spec_replicas(created), 2);
    }

    #[test]
    fn rolling_back_to_an_earlier_template_makes_its_replica_set_new_with_the_next_revision() {
        let d = deployment(3, "nginx:1");
        let v1 = rs(&d, "nginx:1", 1, 0, 0, 0);
        let v2 = rs(&d, "nginx:2", 2, 3, 3, 1);
        let plan = plan(&d, &[v1.clone(), v2], &[], at(NOW));
        assert!(creates(&plan).is_empty());
        let updated = plan
            .steps
            .iter()
            .find_map(|s| match s {
                Step::Update { rs, .. } if rs.metadata.name == v1.metadata.name => Some(rs),
                _ => None,
            })
            .expect("the v1 replica set is updated");
        assert_eq!(annotation(&updated.metadata, REVISION), Some("3"));
        assert_eq!(annotation(&updated.metadata, REVISION_HISTORY), Some("1"));
        assert!(spec_replicas(updated) > 0, "and scaled up");
        assert!(plan.steps.contains(&Step::SetRevision("3".into())));
    }

    #[test]
    fn a_paused_deployment_scales_but_does_not_roll_out() {
        let mut d = deployment(5, "nginx:2");
        d.spec.as_mut().expect("spec").paused = Some(true);
        let old = rs(&deployment(3, "nginx:1"), "nginx:1", 1, 3, 3, 0);
        let plan = plan(&d, std::slice::from_ref(&old), &[], at(NOW));
        assert!(creates(&plan).is_empty());
        assert_eq!(scales(&plan), [(name_of(&old.metadata).to_string(), 5)]);
        let s = status(&plan).expect("a status");
        assert_eq!(reason(s, PROGRESSING).as_deref(), Some(PAUSED));
    }

    #[test]
    fn scaling_in_the_middle_of_a_rollout_spreads_the_change_in_proportion() {
        let surge_25 = |mut d: Deployment| {
            let strategy = d.spec.as_mut().and_then(|s| s.strategy.as_mut());
            if let Some(rolling) = strategy.and_then(|s| s.rolling_update.as_mut()) {
                rolling.max_surge = Some(IntOrString::String("25%".into()));
            }
            d
        };
        // Scaled when the deployment had 10 replicas and 13 at most.
        let before = surge_25(deployment(10, "nginx:2"));
        let old = rs(&before, "nginx:1", 1, 8, 8, 0);
        let new = rs(&before, "nginx:2", 2, 5, 0, 1);
        let d = surge_25(deployment(20, "nginx:2"));
        let plan = plan(&d, &[old.clone(), new.clone()], &[], at(NOW));
        let mut scaled = scales(&plan);
        scaled.sort();
        let mut expected = vec![(name_of(&old.metadata).to_string(), 15), (name_of(&new.metadata).to_string(), 10)];
        expected.sort();
        assert_eq!(scaled, expected, "25 allowed pods split 8:5 as 13 were");
    }

    #[test]
    fn old_empty_replica_sets_beyond_the_history_limit_are_deleted_oldest_first() {
        let mut d = deployment(2, "nginx:4");
        d.spec.as_mut().expect("spec").revision_history_limit = Some(1);
        let rses = [
            rs(&d, "nginx:1", 1, 0, 0, 0),
            rs(&d, "nginx:2", 2, 0, 0, 1),
            rs(&d, "nginx:3", 3, 0, 0, 2),
            rs(&d, "nginx:4", 4, 2, 2, 3),
        ];
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            ..Default::default()
        });
        let plan = plan(&d, &rses, &[], at(NOW));
        let deleted: Vec<&str> = plan
            .steps
            .iter()
            .filter_map(|s| if let Step::Delete { name, .. } = s { Some(name.as_str()) } else { None })
            .collect();
        assert_eq!(deleted, [name_of(&rses[0].metadata), name_of(&rses[1].metadata)]);
    }

    #[test]
    fn a_rollout_without_progress_past_its_deadline_is_marked_exceeded() {
        let mut d = deployment(3, "nginx:1");
        d.spec.as_mut().expect("spec").progress_deadline_seconds = Some(60);
        let new = rs(&d, "nginx:1", 1, 3, 0, 0);
        let mut s = DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(3),
            updated_replicas: Some(3),
            unavailable_replicas: Some(3),
            ..Default::default()
        };
        let stale = new_condition(PROGRESSING, "True", RS_UPDATED, "progressing", at("2024-01-01T00:58:00Z"));
        set_condition(&mut s, stale);
        d.status = Some(s);
        let early = plan(&d, std::slice::from_ref(&new), &[], at("2024-01-01T00:58:30Z"));
        assert_eq!(early.requeue_after, Some(Duration::from_secs(30)), "looks again at the deadline");
        let late = plan(&d, &[new], &[], at(NOW));
        let s = status(&late).expect("a status");
        let c = condition(s, PROGRESSING).expect("progressing");
        assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some(TIMED_OUT)));
    }

    #[test]
    fn observed_generation_follows_generation() {
        let mut d = deployment(1, "nginx:1");
        d.metadata.generation = Some(7);
        let new = rs(&d, "nginx:1", 1, 1, 1, 0);
        let plan = plan(&d, &[new], &[], at(NOW));
        assert_eq!(status(&plan).and_then(|s| s.observed_generation), Some(7));
    }

    #[test]
    fn an_orphan_replica_set_matching_the_selector_is_adopted_before_anything_else() {
        let d = deployment(1, "nginx:1");
        let mut orphan = rs(&d, "nginx:1", 1, 1, 1, 0);
        orphan.metadata.owner_references = None;
        let plan = plan(&d, &[orphan], &[], at(NOW));
        assert_eq!(
            plan.steps,
            [Step::Adopt {
                name: format!("web-{}", template_hash(&d.spec.clone().expect("spec").template, None)),
                uid: "rs-nginx:1".into()
            }]
        );
    }
}
