//! Choosing a node for one pod: filter, score, pick — pure, over a list of [`NodeInfo`]s.
//!
//! Like Kubernetes, it does not filter every node of a large cluster for every pod: it starts
//! where the previous pod stopped and stops once it has found enough feasible nodes
//! ([`feasible_nodes_to_find`]: all of up to 100 nodes, then an adaptive share of at least 100
//! and 5%). When no node fits, every node has been looked at and the [`FitError`] counts each
//! reason over all of them.

use std::collections::BTreeMap;
use std::fmt;

use crate::filter;
use crate::nodeinfo::NodeInfo;
use crate::nodeinfo::PodInfo;
use crate::score;

/// Below this many nodes every node is filtered and scored.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The smallest share of nodes scored in a very large cluster, in percent.
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// No node fits a pod: Kubernetes' `FitError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// How many nodes there are.
    pub nodes: usize,
    /// How many nodes failed for each reason (by Kubernetes' text). A node may give several
    /// reasons (`Insufficient cpu` and `Insufficient memory`).
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for FitError {
    /// `0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu.`: the
    /// `<count> <reason>` strings sorted as strings, as Kubernetes does; `no nodes available
    /// to schedule pods` without nodes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        write!(f, "0/{} nodes are available:", self.nodes)?;
        let mut counted: Vec<String> = self.reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        counted.sort();
        if !counted.is_empty() {
            write!(f, " {}.", counted.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

/// Where a pod goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The chosen node's index in the list given.
    pub node: usize,
    /// How many nodes were filtered; the next pod starts that far on.
    pub evaluated: usize,
}

/// Kubernetes' `numFeasibleNodesToFind` with the default `percentageOfNodesToScore`: all of
/// fewer than 100 nodes; otherwise `50 - nodes/125` percent (at least 5%), but at least 100.
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    if nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return nodes;
    }
    let percentage = 50usize.saturating_sub(nodes / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE);
    (nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Chooses a node for `pod` among `nodes`, filtering from index `start` on (wrapping) and
/// stopping once [`feasible_nodes_to_find`] nodes fit. Of the best-scoring nodes, the
/// `tie`-th (modulo how many there are, in filtering order) wins, so a caller that counts
/// `tie` up spreads equal choices round-robin and a test that fixes it gets one answer.
///
/// If no node fits, returns the reasons of every node.
pub fn select_node(pod: &PodInfo, nodes: &[NodeInfo], start: usize, tie: u64) -> Result<Placement, FitError> {
    let n = nodes.len();
    let wanted = feasible_nodes_to_find(n);
    let mut feasible: Vec<usize> = Vec::with_capacity(wanted.min(n));
    let mut unfit: Vec<Vec<filter::Reason>> = Vec::new();
    let mut evaluated = 0;
    for offset in 0..n {
        if feasible.len() >= wanted {
            break;
        }
        let i = (start + offset) % n;
        evaluated += 1;
        match filter::run(pod, &nodes[i]) {
            Ok(()) => feasible.push(i),
            Err(reasons) => unfit.push(reasons),
        }
    }
    if feasible.is_empty() {
        let mut reasons = BTreeMap::new();
        for reason in unfit.into_iter().flatten() {
            *reasons.entry(reason.to_string()).or_insert(0) += 1;
        }
        return Err(FitError { nodes: n, reasons });
    }
    let candidates: Vec<&NodeInfo> = feasible.iter().map(|i| &nodes[*i]).collect();
    let totals = score::total(pod, &candidates);
    let best = totals.iter().copied().max().unwrap_or(0);
    let tied: Vec<usize> = feasible.iter().zip(&totals).filter(|(_, s)| **s == best).map(|(i, _)| *i).collect();
    let pick = usize::try_from(tie % tied.len() as u64).unwrap_or(0);
    Ok(Placement { node: tied[pick], evaluated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;
    use crate::testing::pod;
    use serde_json::json;

    #[test]
    fn the_failure_message_counts_reasons_over_all_nodes_sorted_as_kubernetes_does() {
        let nodes = vec![
            node("n1", "2", "4Gi", json!({"spec": {"unschedulable": true}})),
            node("n2", "2", "4Gi", json!({})),
            node("n3", "2", "4Gi", json!({})),
        ];
        let error = select_node(&pod("3", "1Gi", json!({})), &nodes, 0, 0).expect_err("nothing has 3 cpus");
        assert_eq!(error.to_string(), "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu.");
    }

    #[test]
    fn a_node_short_of_two_resources_counts_for_both() {
        let nodes = vec![node("n1", "1", "1Gi", json!({})), node("n2", "4", "1Gi", json!({}))];
        let error = select_node(&pod("2", "2Gi", json!({})), &nodes, 0, 0).expect_err("no memory anywhere");
        assert_eq!(error.to_string(), "0/2 nodes are available: 1 Insufficient cpu, 2 Insufficient memory.");
    }

    #[test]
    fn without_nodes_the_message_says_so() {
        let error = select_node(&pod("1", "1Gi", json!({})), &[], 0, 0).expect_err("no nodes");
        assert_eq!(error.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn the_best_scoring_node_wins() {
        let nodes = vec![
            node("busy", "4", "8Gi", json!({})).with(&pod("3", "6Gi", json!({}))),
            node("idle", "4", "8Gi", json!({})),
        ];
        let placed = select_node(&pod("1", "1Gi", json!({})), &nodes, 0, 0).expect("fits");
        assert_eq!(nodes[placed.node].name, "idle");
        assert_eq!(placed.evaluated, 2);
    }

    #[test]
    fn ties_are_broken_round_robin_by_the_tie_counter() {
        let nodes =
            vec![node("a", "4", "8Gi", json!({})), node("b", "4", "8Gi", json!({})), node("c", "4", "8Gi", json!({}))];
        let p = pod("1", "1Gi", json!({}));
        let picks: Vec<&str> =
            (0..4).map(|tie| nodes[select_node(&p, &nodes, 0, tie).expect("fits").node].name.as_str()).collect();
        assert_eq!(picks, vec!["a", "b", "c", "a"]);
    }

    #[test]
    fn a_large_cluster_is_only_partly_filtered_and_the_next_pod_starts_further_on() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(150), 100);
        let nodes: Vec<NodeInfo> = (0..1000).map(|i| node(&format!("n{i}"), "4", "8Gi", json!({}))).collect();
        let placed = select_node(&pod("1", "1Gi", json!({})), &nodes, 900, 0).expect("fits");
        assert_eq!(placed.evaluated, 420);
        assert!(placed.node >= 900 || placed.node < 320, "filtered from 900 on, wrapping: {}", placed.node);
    }
}
