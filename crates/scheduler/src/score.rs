//! Scores: how well a node that passed the filters suits a pod, each 0–100, combined with the
//! weights of Kubernetes' default profile.
//!
//! | score | weight | Kubernetes plugin |
//! |---|---|---|
//! | [`taint_toleration`]: fewer untolerated `PreferNoSchedule` taints | 3 | TaintToleration |
//! | [`node_affinity`]: preferred node affinity weights that match | 2 | NodeAffinity |
//! | [`spread`]: fewer pods of the same controller already there | 2 | PodTopologySpread's default (by node only) |
//! | [`least_allocated`]: more cpu and memory left | 1 | NodeResourcesFit (LeastAllocated) |
//! | [`balanced_allocation`]: cpu and memory used in like proportion | 1 | NodeResourcesBalancedAllocation |
//!
//! Some scores are raw counts first and are then normalized over all the nodes being scored,
//! as Kubernetes' `DefaultNormalizeScore` does ([`normalize`]).

use crate::filter;
use crate::nodeinfo::NodeInfo;
use crate::nodeinfo::PodInfo;

/// The best score a single plugin gives.
pub const MAX_NODE_SCORE: i64 = 100;

const TAINT_TOLERATION_WEIGHT: i64 = 3;
const NODE_AFFINITY_WEIGHT: i64 = 2;
const SPREAD_WEIGHT: i64 = 2;
const LEAST_ALLOCATED_WEIGHT: i64 = 1;
const BALANCED_ALLOCATION_WEIGHT: i64 = 1;

/// The weighted total of every score for each of `nodes` (in the same order).
pub fn total(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let mut taints: Vec<i64> = nodes.iter().map(|n| taint_toleration(pod, n)).collect();
    normalize(&mut taints, true);
    let mut affinity: Vec<i64> = nodes.iter().map(|n| node_affinity(pod, n)).collect();
    normalize(&mut affinity, false);
    let mut spreading: Vec<i64> = nodes.iter().map(|n| spread(pod, n)).collect();
    normalize(&mut spreading, true);
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            TAINT_TOLERATION_WEIGHT * taints[i]
                + NODE_AFFINITY_WEIGHT * affinity[i]
                + SPREAD_WEIGHT * spreading[i]
                + LEAST_ALLOCATED_WEIGHT * least_allocated(pod, node)
                + BALANCED_ALLOCATION_WEIGHT * balanced_allocation(pod, node)
        })
        .collect()
}

/// Kubernetes' `DefaultNormalizeScore`: scales raw scores so the largest becomes 100;
/// `reverse` turns "more is worse" counts into scores (all 100 when every count is 0).
pub fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for score in scores.iter_mut() {
        let scaled = MAX_NODE_SCORE * *score / max;
        *score = if reverse { MAX_NODE_SCORE - scaled } else { scaled };
    }
}

/// NodeResourcesFit's LeastAllocated: the share of cpu and of memory left once the pod is
/// there (requests without cpu or memory counted as 100m / 200Mi), averaged.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let score = |requested: i64, capacity: i64| -> i64 {
        if capacity <= 0 || requested > capacity {
            return 0;
        }
        let left = i128::from(capacity - requested) * i128::from(MAX_NODE_SCORE) / i128::from(capacity);
        i64::try_from(left).unwrap_or(0)
    };
    let cpu = score(node.usage.non_zero_milli_cpu + pod.usage.non_zero_milli_cpu, node.allocatable.milli_cpu);
    let memory = score(node.usage.non_zero_memory + pod.usage.non_zero_memory, node.allocatable.memory);
    (cpu + memory) / 2
}

/// NodeResourcesBalancedAllocation: 100 when the node's cpu and memory would be requested in
/// equal proportion with the pod there, less the further apart they are (one minus their
/// standard deviation).
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let fraction =
        |requested: i64, allocatable: i64| (allocatable > 0).then(|| (requested as f64 / allocatable as f64).min(1.0));
    let requested = &node.usage.requested;
    let wants = &pod.usage.requests;
    let cpu = fraction(requested.milli_cpu + wants.milli_cpu, node.allocatable.milli_cpu);
    let memory = fraction(requested.memory + wants.memory, node.allocatable.memory);
    let std = match (cpu, memory) {
        (Some(c), Some(m)) => ((c - m) / 2.0).abs(),
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// NodeAffinity (raw): the sum of the weights of the pod's preferred node affinity terms the
/// node matches. Normalize over the nodes.
pub fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let preferred = pod
        .spec()
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or_default();
    preferred
        .iter()
        .filter(|p| p.weight != 0 && filter::term_matches(&p.preference, node))
        .map(|p| i64::from(p.weight))
        .sum()
}

/// TaintToleration (raw): how many `PreferNoSchedule` taints of the node the pod does not
/// tolerate. Normalize reversed over the nodes.
pub fn taint_toleration(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let tolerations: Vec<_> = pod
        .spec()
        .tolerations
        .iter()
        .flatten()
        .filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"))
        .collect();
    let untolerated = node
        .taints()
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerations.iter().any(|tol| filter::tolerates(tol, t)));
    untolerated.count() as i64
}

/// Spreading (raw): how many pods of the pod's controller the node already has (0 for a pod
/// without a controller). Normalize reversed over the nodes, so fewer scores higher.
pub fn spread(pod: &PodInfo, node: &NodeInfo) -> i64 {
    pod.usage.owner.as_ref().and_then(|o| node.usage.owners.get(o)).map_or(0, |n| i64::from(*n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;
    use crate::testing::pod;
    use serde_json::json;

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let empty = node("n1", "4", "8Gi", json!({}));
        let busy = node("n2", "4", "8Gi", json!({})).with(&pod("2", "4Gi", json!({})));
        let p = pod("1", "2Gi", json!({}));
        assert_eq!(least_allocated(&p, &empty), 75, "a quarter of each is taken with the pod there");
        assert_eq!(least_allocated(&p, &busy), 25);
    }

    #[test]
    fn least_allocated_counts_a_pod_without_requests_as_100m_and_200mi() {
        let n = node("n1", "1", "2000Mi", json!({}));
        let p = pod("0", "0", json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}));
        assert_eq!(least_allocated(&p, &n), (90 + 90) / 2);
    }

    #[test]
    fn balanced_allocation_prefers_cpu_and_memory_used_alike() {
        let n = node("n1", "4", "8Gi", json!({}));
        assert_eq!(balanced_allocation(&pod("2", "4Gi", json!({})), &n), 100);
        assert_eq!(balanced_allocation(&pod("4", "0", json!({})), &n), 50, "all cpu, no memory: |1 - 0| / 2 off");
    }

    #[test]
    fn spreading_scores_nodes_with_fewer_pods_of_the_same_controller_higher() {
        let owned = |uid: &str| {
            pod(
                "100m",
                "100Mi",
                json!({"metadata": {"ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}
                ]}}),
            )
        };
        let a = node("a", "4", "8Gi", json!({})).with(&owned("rs-1")).with(&owned("rs-1"));
        let b = node("b", "4", "8Gi", json!({})).with(&owned("rs-1")).with(&owned("rs-2"));
        let c = node("c", "4", "8Gi", json!({})).with(&owned("rs-2"));
        let p = owned("rs-1");
        let mut raw: Vec<i64> = [&a, &b, &c].iter().map(|n| spread(&p, n)).collect();
        assert_eq!(raw, vec![2, 1, 0]);
        normalize(&mut raw, true);
        assert_eq!(raw, vec![0, 50, 100]);
        let totals = total(&p, &[&a, &b, &c]);
        assert!(totals[2] > totals[1] && totals[1] > totals[0], "{totals:?}");
    }

    #[test]
    fn preferred_node_affinity_adds_the_weights_of_matching_terms() {
        let p = pod(
            "1",
            "1Gi",
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 30, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            ]}}}}),
        );
        let both = node("n1", "4", "8Gi", json!({"metadata": {"labels": {"disk": "ssd", "zone": "a"}}}));
        let one = node("n2", "4", "8Gi", json!({"metadata": {"labels": {"disk": "ssd"}}}));
        let none = node("n3", "4", "8Gi", json!({}));
        let mut raw: Vec<i64> = [&both, &one, &none].iter().map(|n| node_affinity(&p, n)).collect();
        assert_eq!(raw, vec![40, 10, 0]);
        normalize(&mut raw, false);
        assert_eq!(raw, vec![100, 25, 0]);
    }

    #[test]
    fn untolerated_prefer_no_schedule_taints_lower_the_score() {
        let soft = node("n1", "4", "8Gi", json!({"spec": {"taints": [{"key": "soft", "effect": "PreferNoSchedule"}]}}));
        let clean = node("n2", "4", "8Gi", json!({}));
        let p = pod("1", "1Gi", json!({}));
        let mut raw = vec![taint_toleration(&p, &soft), taint_toleration(&p, &clean)];
        normalize(&mut raw, true);
        assert_eq!(raw, vec![0, 100]);
        let tolerant = pod("1", "1Gi", json!({"spec": {"tolerations": [{"key": "soft", "operator": "Exists"}]}}));
        assert_eq!(taint_toleration(&tolerant, &soft), 0);
    }

    #[test]
    fn normalizing_all_zero_counts_gives_everyone_the_top_score_when_reversed() {
        let mut counts = vec![0, 0];
        normalize(&mut counts, true);
        assert_eq!(counts, vec![100, 100]);
        let mut weights = vec![0, 0];
        normalize(&mut weights, false);
        assert_eq!(weights, vec![0, 0]);
    }
}
