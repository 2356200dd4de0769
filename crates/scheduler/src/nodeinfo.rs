//! What the filters and scores look at: a pod to place ([`PodInfo`]) and a node with the pods
//! already on it ([`NodeInfo`]).
//!
//! Both are computed once (a pod's requests when it is picked up, a node's allocatable when
//! it changes) and a node's totals ([`NodeUsage`]) are kept up to date as pods come and go, so
//! placing one pod costs work per node, not per pod in the cluster.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::Pod;

use crate::resources;
use crate::resources::Resources;

/// A host port a pod's container binds: Kubernetes' `(hostIP, protocol, hostPort)` with the
/// defaults `0.0.0.0` and `TCP` filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host address (`0.0.0.0`: every address).
    pub ip: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port number.
    pub port: i32,
}

impl HostPort {
    const ANY_IP: &'static str = "0.0.0.0";

    /// Whether this port and `other` cannot both be bound on one node: same protocol and
    /// port, and the same address or either of them on every address.
    pub fn conflicts_with(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == Self::ANY_IP || other.ip == Self::ANY_IP)
    }
}

/// What a pod takes from the node it runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// Its requests (containers without requests count as zero).
    pub requests: Resources,
    /// Its cpu request for scoring, in millicores (100m for a container that names none).
    pub non_zero_milli_cpu: i64,
    /// Its memory request for scoring, in bytes (200Mi for a container that names none).
    pub non_zero_memory: i64,
    /// The host ports its containers and sidecars bind.
    pub host_ports: Vec<HostPort>,
    /// The uid of its controller (the ReplicaSet, StatefulSet, … with `controller: true`).
    pub owner: Option<String>,
}

impl PodUsage {
    /// The usage of `pod`.
    pub fn of(pod: &Pod) -> PodUsage {
        let Some(spec) = pod.spec.as_ref() else { return PodUsage::default() };
        let (non_zero_milli_cpu, non_zero_memory) = resources::pod_non_zero_requests(spec);
        let sidecars = spec.init_containers.iter().flatten().filter(|c| resources::is_sidecar(c));
        let host_ports = spec
            .containers
            .iter()
            .chain(sidecars)
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.is_some_and(|port| port > 0))
            .map(|p| HostPort {
                ip: p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| HostPort::ANY_IP.into()),
                protocol: p.protocol.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "TCP".into()),
                port: p.host_port.unwrap_or_default(),
            })
            .collect();
        let owner =
            pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone());
        PodUsage { requests: resources::pod_requests(spec), non_zero_milli_cpu, non_zero_memory, host_ports, owner }
    }
}

/// A pod to place, decoded, with its usage computed.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod.
    pub pod: Pod,
    /// What it would take from a node.
    pub usage: PodUsage,
}

impl PodInfo {
    /// The placement facts of `pod`.
    pub fn new(pod: Pod) -> PodInfo {
        let usage = PodUsage::of(&pod);
        PodInfo { pod, usage }
    }

    /// The pod's spec (an empty one if it has none).
    pub fn spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        static EMPTY: std::sync::OnceLock<k8s_openapi::api::core::v1::PodSpec> = std::sync::OnceLock::new();
        self.pod.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }
}

/// The totals of the pods on one node (bound there, or assumed to be on their way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// The sum of the pods' requests.
    pub requested: Resources,
    /// The sum of the pods' cpu requests for scoring.
    pub non_zero_milli_cpu: i64,
    /// The sum of the pods' memory requests for scoring.
    pub non_zero_memory: i64,
    /// How many pods.
    pub pods: i64,
    /// Host ports in use, with how many pods use each.
    pub ports: HashMap<HostPort, u32>,
    /// Pods per controller uid.
    pub owners: HashMap<String, u32>,
}

impl NodeUsage {
    /// Counts a pod in.
    pub fn add(&mut self, pod: &PodUsage) {
        self.requested.add(&pod.requests);
        self.non_zero_milli_cpu = self.non_zero_milli_cpu.saturating_add(pod.non_zero_milli_cpu);
        self.non_zero_memory = self.non_zero_memory.saturating_add(pod.non_zero_memory);
        self.pods += 1;
        for port in &pod.host_ports {
            *self.ports.entry(port.clone()).or_insert(0) += 1;
        }
        if let Some(owner) = &pod.owner {
            *self.owners.entry(owner.clone()).or_insert(0) += 1;
        }
    }

    /// Counts a pod out (it must have been counted in).
    pub fn remove(&mut self, pod: &PodUsage) {
        self.requested.subtract(&pod.requests);
        self.non_zero_milli_cpu = self.non_zero_milli_cpu.saturating_sub(pod.non_zero_milli_cpu);
        self.non_zero_memory = self.non_zero_memory.saturating_sub(pod.non_zero_memory);
        self.pods -= 1;
        for port in &pod.host_ports {
            if let Some(n) = self.ports.get_mut(port) {
                *n -= 1;
                if *n == 0 {
                    self.ports.remove(port);
                }
            }
        }
        if let Some(owner) = &pod.owner
            && let Some(n) = self.owners.get_mut(owner)
        {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(owner);
            }
        }
    }

    /// Whether no pod is counted.
    pub fn is_empty(&self) -> bool {
        self.pods == 0
    }
}

/// A node and the pods on it: what one filter or score call sees.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// The node.
    pub node: Arc<Node>,
    /// What the node offers to pods (`status.allocatable`, or `status.capacity` without it).
    pub allocatable: Resources,
    /// How many pods the node takes (`allocatable.pods`).
    pub allowed_pods: i64,
    /// The pods on it.
    pub usage: NodeUsage,
}

impl NodeInfo {
    /// A node with no pods yet.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo {
            name: String::new(),
            node: Arc::new(Node::default()),
            allocatable: Resources::default(),
            allowed_pods: 0,
            usage: NodeUsage::default(),
        };
        info.set_node(node);
        info
    }

    /// A node with the pods in `pods` on it (for tests and tools).
    pub fn with_pods<'a>(node: Node, pods: impl IntoIterator<Item = &'a Pod>) -> NodeInfo {
        let mut info = NodeInfo::new(Arc::new(node));
        for pod in pods {
            info.usage.add(&PodUsage::of(pod));
        }
        info
    }

    /// Replaces the node object, keeping the pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let status = node.status.as_ref();
        let list = status.and_then(|s| s.allocatable.as_ref()).or_else(|| status.and_then(|s| s.capacity.as_ref()));
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.allocatable = Resources::from_list(list);
        self.allowed_pods = list.and_then(|l| l.get("pods")).map_or(0, |q| resources::amount("pods", q));
        self.node = node;
    }

    /// The node's labels.
    pub fn labels(&self) -> Option<&std::collections::BTreeMap<String, String>> {
        self.node.metadata.labels.as_ref()
    }

    /// The node's taints.
    pub fn taints(&self) -> &[k8s_openapi::api::core::v1::Taint] {
        self.node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_usage_lists_host_ports_with_defaults_and_its_controller() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "ownerReferences": [
                {"apiVersion": "v1", "kind": "Thing", "name": "t", "uid": "not-me"},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true},
            ]},
            "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}]},
        }))
        .expect("a pod");
        let usage = PodUsage::of(&pod);
        assert_eq!(usage.host_ports, vec![HostPort { ip: "0.0.0.0".into(), protocol: "TCP".into(), port: 8080 }]);
        assert_eq!(usage.owner.as_deref(), Some("rs-1"));
    }

    #[test]
    fn a_node_counts_pods_out_as_it_counted_them_in() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]},
            "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "example.com/gpu": "1"}},
                "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
        }))
        .expect("a pod");
        let usage = PodUsage::of(&pod);
        let mut node = NodeUsage::default();
        node.add(&usage);
        node.add(&usage);
        assert_eq!(node.requested.milli_cpu, 2000);
        assert_eq!(node.owners.get("rs-1"), Some(&2));
        node.remove(&usage);
        node.remove(&usage);
        assert_eq!(node, NodeUsage::default());
    }

    #[test]
    fn host_ports_conflict_on_the_same_address_or_on_every_address() {
        let port = |ip: &str, protocol: &str, port: i32| HostPort { ip: ip.into(), protocol: protocol.into(), port };
        assert!(port("0.0.0.0", "TCP", 80).conflicts_with(&port("10.0.0.1", "TCP", 80)));
        assert!(port("10.0.0.1", "TCP", 80).conflicts_with(&port("10.0.0.1", "TCP", 80)));
        assert!(!port("10.0.0.1", "TCP", 80).conflicts_with(&port("10.0.0.2", "TCP", 80)));
        assert!(!port("0.0.0.0", "TCP", 80).conflicts_with(&port("0.0.0.0", "UDP", 80)));
        assert!(!port("0.0.0.0", "TCP", 80).conflicts_with(&port("0.0.0.0", "TCP", 81)));
    }
}
