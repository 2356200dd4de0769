//! The scheduler's picture of the cluster: every node with the totals of the pods on it, fed
//! by the informers' events, plus the pods this scheduler has just placed and is still binding
//! ("assumed"), so that two pods scheduled back to back do not both take the last cpu before
//! the informer shows the first one bound.
//!
//! Work per event is per pod or per node: a pod's usage is computed when it is bound (or
//! assumed) and added to its node's totals; nothing is rebuilt from all pods.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use trireme_registry::informer::ObjectKey;

use crate::nodeinfo::NodeInfo;
use crate::nodeinfo::NodeUsage;
use crate::nodeinfo::PodInfo;
use crate::nodeinfo::PodUsage;
use crate::schedule;
use crate::schedule::FitError;

/// A pod counted on a node.
#[derive(Debug, Clone)]
struct Placed {
    uid: String,
    node: String,
    usage: PodUsage,
    /// Placed by this scheduler, not yet seen bound.
    assumed: bool,
}

/// Nodes, the pods on them, and this scheduler's assumptions.
#[derive(Debug, Default)]
pub struct Cache {
    /// Nodes the cache has a Node object for, in the order they came.
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Totals of pods bound to nodes the cache has no Node object for (yet, or any more).
    detached: HashMap<String, NodeUsage>,
    pods: HashMap<ObjectKey, Placed>,
    /// Where the next pod's filtering starts.
    next_start: usize,
    /// Counts pods placed, to break ties round-robin.
    ties: u64,
}

impl Cache {
    /// Adds or replaces a node, keeping the pods already counted on it.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(i) = self.index.get(&name) {
            self.nodes[*i].set_node(node);
            return;
        }
        let mut info = NodeInfo::new(node);
        info.usage = self.detached.remove(&name).unwrap_or_default();
        self.index.insert(name, self.nodes.len());
        self.nodes.push(info);
    }

    /// Removes a node; the pods still bound to it stay counted until they go.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        let info = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
        if !info.usage.is_empty() {
            self.detached.insert(info.name, info.usage);
        }
    }

    /// Whether the cache has a Node object named `name`.
    pub fn has_node(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// How many nodes the cache has.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    /// Counts a pod on `node` (bound there, or `assumed` on its way), replacing whatever was
    /// counted for the same key before.
    pub fn place(&mut self, key: ObjectKey, uid: &str, node: &str, usage: PodUsage, assumed: bool) {
        self.unplace(&key);
        self.usage_mut(node).add(&usage);
        self.pods.insert(key, Placed { uid: uid.to_string(), node: node.to_string(), usage, assumed });
    }

    /// Stops counting a pod that is gone or finished (only if `uid` is the one counted, when
    /// given). Returns whether anything was freed.
    pub fn remove_pod(&mut self, key: &ObjectKey, uid: Option<&str>) -> bool {
        match self.pods.get(key) {
            Some(placed) if uid.is_none_or(|u| u.is_empty() || u == placed.uid) => self.unplace(key),
            _ => false,
        }
    }

    /// Stops counting a pod this scheduler assumed but did not manage to bind. Returns whether
    /// it was still assumed (a pod seen bound meanwhile stays counted).
    pub fn forget_assumed(&mut self, key: &ObjectKey) -> bool {
        if self.pods.get(key).is_some_and(|p| p.assumed) { self.unplace(key) } else { false }
    }

    /// Whether the pod is counted as assumed (its bind is under way).
    pub fn is_assumed(&self, key: &ObjectKey) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// Whether the pod is counted as bound to `node` with uid `uid`, as the informer showed it.
    pub fn is_bound(&self, key: &ObjectKey, uid: &str, node: &str) -> bool {
        self.pods.get(key).is_some_and(|p| !p.assumed && p.uid == uid && p.node == node)
    }

    /// Whether the pod is counted at all.
    pub fn is_placed(&self, key: &ObjectKey) -> bool {
        self.pods.contains_key(key)
    }

    /// Chooses a node for a pending pod and assumes it there; returns the node's name.
    ///
    /// If no node fits, returns why.
    pub fn schedule(&mut self, key: &ObjectKey, uid: &str, pod: &PodInfo) -> Result<String, FitError> {
        let start = if self.nodes.is_empty() { 0 } else { self.next_start % self.nodes.len() };
        let placement = schedule::select_node(pod, &self.nodes, start, self.ties)?;
        self.next_start = start + placement.evaluated;
        self.ties = self.ties.wrapping_add(1);
        let node = self.nodes[placement.node].name.clone();
        self.place(key.clone(), uid, &node, pod.usage.clone(), true);
        Ok(node)
    }

    fn unplace(&mut self, key: &ObjectKey) -> bool {
        let Some(placed) = self.pods.remove(key) else { return false };
        if let Some(i) = self.index.get(&placed.node) {
            self.nodes[*i].usage.remove(&placed.usage);
        } else if let Some(usage) = self.detached.get_mut(&placed.node) {
            usage.remove(&placed.usage);
            if usage.is_empty() {
                self.detached.remove(&placed.node);
            }
        }
        true
    }

    fn usage_mut(&mut self, node: &str) -> &mut NodeUsage {
        match self.index.get(node) {
            Some(i) => &mut self.nodes[*i].usage,
            None => self.detached.entry(node.to_string()).or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use crate::testing::pod;
    use serde_json::json;

    fn cache_with_nodes(names: &[&str], cpu: &str) -> Cache {
        let mut cache = Cache::default();
        for name in names {
            cache.set_node(testing::node(name, cpu, "8Gi", json!({})).node.clone());
        }
        cache
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Some("default"), name)
    }

    #[test]
    fn two_pods_scheduled_back_to_back_do_not_both_take_the_last_cpu() {
        let mut cache = cache_with_nodes(&["n1"], "1");
        let p = pod("1", "1Gi", json!({}));
        assert_eq!(cache.schedule(&key("a"), "a", &p), Ok("n1".to_string()));
        let error = cache.schedule(&key("b"), "b", &p).expect_err("the cpu is assumed taken");
        assert_eq!(error.to_string(), "0/1 nodes are available: 1 Insufficient cpu.");
    }

    #[test]
    fn an_assumption_becomes_the_bound_pod_when_the_informer_shows_it() {
        let mut cache = cache_with_nodes(&["n1"], "2");
        let p = pod("1", "1Gi", json!({}));
        cache.schedule(&key("a"), "a", &p).expect("fits");
        cache.place(key("a"), "a", "n1", p.usage.clone(), false);
        assert!(!cache.is_assumed(&key("a")));
        assert!(!cache.forget_assumed(&key("a")), "a bound pod is not an assumption any more");
        assert_eq!(cache.node("n1").expect("n1").usage.requested.milli_cpu, 1000, "counted once");
    }

    #[test]
    fn a_failed_bind_frees_what_the_assumption_took() {
        let mut cache = cache_with_nodes(&["n1"], "1");
        let p = pod("1", "1Gi", json!({}));
        cache.schedule(&key("a"), "a", &p).expect("fits");
        assert!(cache.forget_assumed(&key("a")));
        assert_eq!(cache.schedule(&key("b"), "b", &p), Ok("n1".to_string()));
    }

    #[test]
    fn pods_bound_before_their_node_appears_are_counted_on_it() {
        let mut cache = Cache::default();
        let p = pod("1", "1Gi", json!({}));
        cache.place(key("a"), "a", "n1", p.usage.clone(), false);
        cache.set_node(testing::node("n1", "1", "8Gi", json!({})).node.clone());
        assert!(cache.schedule(&key("b"), "b", &p).is_err(), "n1's cpu is taken by a");
        cache.remove_node("n1");
        assert!(cache.remove_pod(&key("a"), Some("a")));
        cache.set_node(testing::node("n1", "1", "8Gi", json!({})).node.clone());
        assert_eq!(cache.schedule(&key("b"), "b", &p), Ok("n1".to_string()));
    }

    #[test]
    fn a_delete_of_an_older_pod_with_the_same_name_frees_nothing() {
        let mut cache = cache_with_nodes(&["n1"], "2");
        let p = pod("1", "1Gi", json!({}));
        cache.place(key("a"), "new-uid", "n1", p.usage.clone(), false);
        assert!(!cache.remove_pod(&key("a"), Some("old-uid")));
        assert!(cache.is_placed(&key("a")));
    }

    #[test]
    fn removing_a_node_keeps_the_others_findable() {
        let mut cache = cache_with_nodes(&["a", "b", "c"], "2");
        cache.remove_node("a");
        assert_eq!(cache.node_count(), 2);
        assert_eq!(cache.node("c").map(|n| n.name.as_str()), Some("c"));
        assert_eq!(cache.node("b").map(|n| n.name.as_str()), Some("b"));
        assert!(!cache.has_node("a"));
    }

    #[test]
    fn consecutive_pods_of_one_controller_spread_over_equal_nodes() {
        let mut cache = cache_with_nodes(&["a", "b", "c"], "4");
        let owned = pod(
            "100m",
            "100Mi",
            json!({"metadata": {"ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}
            ]}}),
        );
        let mut nodes: Vec<String> =
            (0..3).map(|i| cache.schedule(&key(&format!("p{i}")), &format!("p{i}"), &owned).expect("fits")).collect();
        nodes.sort();
        assert_eq!(nodes, vec!["a", "b", "c"]);
    }

    /// A benchmark, not a check (`cargo test -p trireme-scheduler -- --ignored --nocapture`):
    /// how many pods a second the choosing alone handles on 1,000 nodes.
    #[test]
    #[ignore = "a benchmark: prints pods per second"]
    fn choosing_throughput_on_a_thousand_nodes() {
        let names: Vec<String> = (0..1000).map(|i| format!("node-{i:04}")).collect();
        let mut cache = Cache::default();
        for name in &names {
            cache.set_node(testing::node(name, "32", "64Gi", json!({})).node.clone());
        }
        let owned = pod(
            "100m",
            "128Mi",
            json!({"metadata": {"ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}
            ]}}),
        );
        let pods = 20_000;
        let started = std::time::Instant::now();
        for i in 0..pods {
            let name = format!("p{i}");
            cache.schedule(&key(&name), &name, &owned).expect("room for all");
        }
        let elapsed = started.elapsed();
        println!("chose nodes for {pods} pods in {elapsed:?}: {:.0} pods/s", pods as f64 / elapsed.as_secs_f64());
    }
}
