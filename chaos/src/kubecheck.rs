//! Checks of what the Kubernetes workload watched. Pure: observed object versions in,
//! problems out.
//!
//! Every object version the watches saw is kept with its resourceVersion, which in Trireme is
//! the store revision of the write (one counter for every resource). Sorting all versions by
//! it replays the cluster state as one consistent timeline, so invariants that span
//! resources (a Deployment and its ReplicaSets) are checked at every revision, not on a
//! mixture of watches that lag each other differently.
//!
//! - [`check_bindings`]: a pod's `spec.nodeName`, once set, never changes or disappears for
//!   the same uid. A pod bound twice (two Binding successes) shows as two node names.
//!   (Two bindings to the same node are invisible to a watcher and not checked.)
//! - [`check_surge`]: the ReplicaSets of a Deployment never ask for more pods than the
//!   Deployment allows: at every revision R, the sum of `spec.replicas` over the ReplicaSets
//!   whose controller is the Deployment is at most `max(replicas(g) + maxSurge(g))` over the
//!   generations `g` from `status.observedGeneration` to `metadata.generation` at R.
//!   The controller writes the ReplicaSets for generation g before it writes
//!   `observedGeneration = g`, so between a scale of the Deployment and the controller's status
//!   write both the old and the new size are legitimate bounds; nothing older is.
//!   maxSurge is an absolute number or a percentage of replicas rounded up (Recreate: 0).
//!   Pods are not counted: Kubernetes itself may run an old pod a moment after its
//!   ReplicaSet was scaled down while the new ReplicaSet's pod starts.
//! - [`convergence_problems`]: after the faults, every Deployment is rolled out
//!   (`observedGeneration == generation`, `replicas == updatedReplicas == availableReplicas ==
//!   spec.replicas`) and every Service's EndpointSlices list as ready exactly the IPs of the
//!   ready, non-terminating pods its selector matches.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::Serialize;

/// One object version a watch delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The version's resourceVersion (the store revision of the write).
    pub revision: u64,
    /// Whether this is the object's deletion.
    pub deleted: bool,
    /// The fields the checks need.
    pub object: Observed,
}

/// The fields of a watched object the checks read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observed {
    /// A Deployment.
    Deployment { uid: String, name: String, generation: i64, observed_generation: i64, replicas: i32, max_surge: i32 },
    /// A ReplicaSet; `owner` is its controller's uid.
    ReplicaSet { uid: String, name: String, owner: Option<String>, replicas: i32 },
    /// A pod and the node it is bound to.
    Pod { uid: String, name: String, node: Option<String> },
}

impl Observed {
    /// The fields of a Deployment.
    pub fn deployment(d: &Deployment) -> Observed {
        let spec = d.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
        Observed::Deployment {
            uid: d.metadata.uid.clone().unwrap_or_default(),
            name: d.metadata.name.clone().unwrap_or_default(),
            generation: d.metadata.generation.unwrap_or(0),
            observed_generation: d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0),
            replicas,
            max_surge: max_surge(d, replicas),
        }
    }

    /// The fields of a ReplicaSet.
    pub fn replica_set(rs: &ReplicaSet) -> Observed {
        let owner =
            rs.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true)).map(|r| r.uid.clone());
        Observed::ReplicaSet {
            uid: rs.metadata.uid.clone().unwrap_or_default(),
            name: rs.metadata.name.clone().unwrap_or_default(),
            owner,
            replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        }
    }

    /// The fields of a pod.
    pub fn pod(p: &Pod) -> Observed {
        Observed::Pod {
            uid: p.metadata.uid.clone().unwrap_or_default(),
            name: p.metadata.name.clone().unwrap_or_default(),
            node: p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        }
    }
}

/// maxSurge of a Deployment at `replicas` (Kubernetes: a percentage rounds up; default 25%).
pub fn max_surge(d: &Deployment, replicas: i32) -> i32 {
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return 0;
    }
    let surge = strategy.and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.max_surge.clone());
    match surge.unwrap_or(IntOrString::String("25%".into())) {
        IntOrString::Int(n) => n,
        IntOrString::String(s) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            i32::try_from((i64::from(replicas) * percent + 99) / 100).unwrap_or(i32::MAX)
        }
    }
}

/// Problems with pod bindings: a uid whose node changed or was cleared once set.
pub fn check_bindings(seen: &[Seen]) -> Vec<String> {
    let mut versions: Vec<&Seen> = seen.iter().filter(|s| matches!(s.object, Observed::Pod { .. })).collect();
    versions.sort_by_key(|s| s.revision);
    let mut bound: HashMap<&str, (&str, u64)> = HashMap::new();
    let mut problems = Vec::new();
    for s in versions {
        let Observed::Pod { uid, name, node } = &s.object else { continue };
        match (bound.get(uid.as_str()), node) {
            (None, Some(node)) => {
                bound.insert(uid, (node, s.revision));
            }
            (Some((first, at)), Some(node)) if first != node => problems.push(format!(
                "pod {name} (uid {uid}) bound to {first} at revision {at}, then to {node} at revision {}",
                s.revision
            )),
            (Some((first, at)), None) => problems.push(format!(
                "pod {name} (uid {uid}) bound to {first} at revision {at}, unbound at revision {}",
                s.revision
            )),
            _ => {}
        }
    }
    problems
}

/// What [`check_surge`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SurgeReport {
    /// (revision, deployment) pairs evaluated.
    pub evaluated: usize,
    /// Pairs skipped because a generation in the window was never seen.
    pub skipped: usize,
    /// Each time a deployment went over its bound.
    pub violations: Vec<String>,
}

/// Checks the ReplicaSet sizes of every Deployment at every revision (see the module docs).
pub fn check_surge(seen: &[Seen]) -> SurgeReport {
    let mut versions: Vec<&Seen> = seen.iter().filter(|s| !matches!(s.object, Observed::Pod { .. })).collect();
    versions.sort_by_key(|s| s.revision);
    let mut report = SurgeReport::default();
    // uid → (name, generation, observedGeneration)
    let mut deployments: BTreeMap<&str, (&str, i64, i64)> = BTreeMap::new();
    // uid → generation → replicas + maxSurge
    let mut bounds: HashMap<&str, BTreeMap<i64, i32>> = HashMap::new();
    // uid → (name, owner, replicas)
    let mut replica_sets: BTreeMap<&str, (&str, Option<&str>, i32)> = BTreeMap::new();
    let mut over: BTreeSet<&str> = BTreeSet::new();
    let mut i = 0;
    while i < versions.len() {
        let revision = versions[i].revision;
        while i < versions.len() && versions[i].revision == revision {
            let s = versions[i];
            match &s.object {
                Observed::Deployment { uid, name, generation, observed_generation, replicas, max_surge } => {
                    if s.deleted {
                        deployments.remove(uid.as_str());
                    } else {
                        deployments.insert(uid, (name, *generation, *observed_generation));
                        bounds.entry(uid).or_default().insert(*generation, replicas + max_surge);
                    }
                }
                Observed::ReplicaSet { uid, name, owner, replicas } => {
                    if s.deleted {
                        replica_sets.remove(uid.as_str());
                    } else {
                        replica_sets.insert(uid, (name, owner.as_deref(), *replicas));
                    }
                }
                Observed::Pod { .. } => {}
            }
            i += 1;
        }
        for (uid, (name, generation, observed)) in &deployments {
            let from = (*observed).max(1);
            let window = bounds.get(uid).map(|b| b.range(from..=*generation).map(|(_, n)| *n).collect::<Vec<_>>());
            let Some(window) = window.filter(|w| w.len() == usize::try_from(generation - from + 1).unwrap_or(0)) else {
                report.skipped += 1;
                continue;
            };
            report.evaluated += 1;
            let allowed = window.iter().copied().max().unwrap_or(0);
            let owned: Vec<(&str, i32)> =
                replica_sets.values().filter(|(_, owner, _)| *owner == Some(*uid)).map(|(n, _, r)| (*n, *r)).collect();
            let total: i32 = owned.iter().map(|(_, r)| r).sum();
            if total > allowed {
                if over.insert(uid) {
                    report.violations.push(format!(
                        "deployment {name} at revision {revision}: ReplicaSets ask for {total} pods {owned:?}, \
                         allowed {allowed} (generations {from}..={generation}, replicas + maxSurge {window:?})"
                    ));
                }
            } else {
                over.remove(uid);
            }
        }
    }
    report
}

/// Why the Kubernetes objects have not converged yet (empty: converged).
pub fn convergence_problems(
    deployments: &[Deployment],
    pods: &[Pod],
    services: &[Service],
    slices: &[EndpointSlice],
) -> Vec<String> {
    let mut problems = Vec::new();
    for d in deployments {
        let name = d.metadata.name.as_deref().unwrap_or("");
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        let generation = d.metadata.generation.unwrap_or(0);
        let got = (
            status.observed_generation.unwrap_or(0),
            status.replicas.unwrap_or(0),
            status.updated_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
        );
        if got != (generation, want, want, want) {
            problems.push(format!(
                "deployment {name}: generation {generation}, spec.replicas {want}; status observedGeneration {}, \
                 replicas {}, updated {}, available {}",
                got.0, got.1, got.2, got.3
            ));
        }
    }
    for svc in services {
        let name = svc.metadata.name.as_deref().unwrap_or("");
        let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty()) else {
            continue;
        };
        let ready_pods: BTreeSet<String> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .filter(|p| {
                let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
                conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
            .collect();
        let ready_endpoints: BTreeSet<String> = slices
            .iter()
            .filter(|s| {
                s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).map(String::as_str)
                    == Some(name)
            })
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        if ready_pods != ready_endpoints {
            problems.push(format!(
                "service {name}: ready pods {ready_pods:?}, ready endpoints in its EndpointSlices {ready_endpoints:?}"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(revision: u64, uid: &str, node: Option<&str>) -> Seen {
        Seen {
            revision,
            deleted: false,
            object: Observed::Pod { uid: uid.into(), name: format!("p-{uid}"), node: node.map(Into::into) },
        }
    }

    fn deploy(revision: u64, generation: i64, observed: i64, replicas: i32) -> Seen {
        Seen {
            revision,
            deleted: false,
            object: Observed::Deployment {
                uid: "d".into(),
                name: "web".into(),
                generation,
                observed_generation: observed,
                replicas,
                max_surge: 1,
            },
        }
    }

    fn rs(revision: u64, uid: &str, replicas: i32) -> Seen {
        Seen {
            revision,
            deleted: false,
            object: Observed::ReplicaSet {
                uid: uid.into(),
                name: format!("web-{uid}"),
                owner: Some("d".into()),
                replicas,
            },
        }
    }

    #[test]
    fn a_pod_bound_once_is_fine_even_if_seen_many_times() {
        let seen = [pod(3, "a", None), pod(4, "a", Some("n1")), pod(9, "a", Some("n1")), pod(5, "b", Some("n2"))];
        assert!(check_bindings(&seen).is_empty());
    }

    #[test]
    fn a_pod_bound_to_two_nodes_is_reported() {
        let seen = [pod(4, "a", Some("n1")), pod(7, "a", Some("n2"))];
        let problems = check_bindings(&seen);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("n1") && problems[0].contains("n2"));
    }

    #[test]
    fn bindings_are_judged_in_revision_order_not_arrival_order() {
        // Delivered late, but earlier: the pod went from unbound to n1, which is fine.
        let seen = [pod(7, "a", Some("n1")), pod(4, "a", None)];
        assert!(check_bindings(&seen).is_empty());
        let seen = [pod(7, "a", None), pod(4, "a", Some("n1"))];
        assert_eq!(check_bindings(&seen).len(), 1);
    }

    #[test]
    fn a_rollout_within_max_surge_passes() {
        // 3 replicas, maxSurge 1: old 3 + new 1, then old 2 + new 2, ...
        let seen = [
            deploy(10, 1, 1, 3),
            rs(11, "old", 3),
            deploy(12, 2, 1, 3),
            rs(13, "new", 1),
            rs(14, "old", 2),
            rs(15, "new", 2),
            deploy(16, 2, 2, 3),
        ];
        let report = check_surge(&seen);
        assert!(report.violations.is_empty(), "{report:?}");
        assert!(report.evaluated > 0);
    }

    #[test]
    fn a_rollout_beyond_max_surge_is_reported_once() {
        let seen = [deploy(10, 1, 1, 3), rs(11, "old", 3), rs(13, "new", 2), rs(14, "new", 2), rs(15, "old", 1)];
        let report = check_surge(&seen);
        assert_eq!(report.violations.len(), 1, "{report:?}");
        assert!(report.violations[0].contains("revision 13"), "{report:?}");
    }

    #[test]
    fn scaling_down_allows_the_old_size_until_the_controller_observes_it() {
        let seen = [
            deploy(10, 1, 1, 4),
            rs(11, "a", 4),
            // Scaled to 1 (generation 2): the ReplicaSet still has 4, which generation 1 allowed.
            deploy(12, 2, 1, 1),
            rs(13, "a", 1),
            deploy(14, 2, 2, 1),
        ];
        assert!(check_surge(&seen).violations.is_empty());
        // Once generation 2 is observed, 4 is too many.
        let seen = [deploy(10, 1, 1, 4), rs(11, "a", 4), deploy(12, 2, 2, 1)];
        assert_eq!(check_surge(&seen).violations.len(), 1);
    }

    #[test]
    fn a_generation_never_seen_skips_rather_than_guesses() {
        let seen = [deploy(10, 3, 1, 4), rs(11, "a", 9)];
        let report = check_surge(&seen);
        assert!(report.violations.is_empty());
        assert!(report.skipped > 0);
    }

    #[test]
    fn max_surge_percentages_round_up_and_recreate_has_none() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "spec": {"selector": {}, "template": {}, "strategy": {"rollingUpdate": {"maxSurge": "25%"}}}
        }))
        .expect("a valid object");
        assert_eq!(max_surge(&d, 3), 1);
        assert_eq!(max_surge(&d, 5), 2);
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "spec": {"selector": {}, "template": {}, "strategy": {"type": "Recreate"}}
        }))
        .expect("a valid object");
        assert_eq!(max_surge(&d, 3), 0);
    }

    #[test]
    fn endpoints_must_match_ready_pods_exactly() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}}
        }))
        .expect("a valid object");
        let pod = |ip: &str, ready: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": ip, "labels": {"app": "web"}},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}
            }))
            .expect("a valid object")
        };
        let slice = |ips: &[&str]| -> EndpointSlice {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": ips.iter().map(|ip| serde_json::json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>()
            }))
            .expect("a valid object")
        };
        let pods = [pod("127.1.0.1", "True"), pod("127.1.0.2", "False")];
        let svcs = [svc];
        assert!(convergence_problems(&[], &pods, &svcs, &[slice(&["127.1.0.1"])]).is_empty());
        assert_eq!(convergence_problems(&[], &pods, &svcs, &[slice(&["127.1.0.1", "127.1.0.2"])]).len(), 1);
        assert_eq!(convergence_problems(&[], &pods, &svcs, &[]).len(), 1);
    }
}
