//! Builders for the unit tests: a Ready node and a one-container pod, each with a JSON patch
//! merged over it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use serde_json::json;

use crate::nodeinfo::NodeInfo;
use crate::nodeinfo::PodInfo;

/// Merges `patch` into `base` (objects recursively, anything else replaced).
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// A Ready node with `cpu` and `memory` allocatable and room for 110 pods, `patch` merged in.
pub fn node(name: &str, cpu: &str, memory: &str, patch: Value) -> NodeInfo {
    let mut node = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    merge(&mut node, patch);
    let node: Node = serde_json::from_value(node).expect("a node");
    NodeInfo::new(Arc::new(node))
}

/// A pod whose one container requests `cpu` and `memory`, `patch` merged in.
pub fn pod(cpu: &str, memory: &str, patch: Value) -> PodInfo {
    let mut pod = json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "p-uid"},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
    });
    merge(&mut pod, patch);
    let pod: Pod = serde_json::from_value(pod).expect("a pod");
    PodInfo::new(pod)
}

impl NodeInfo {
    /// The node with `pod` on it too.
    pub fn with(mut self, pod: &PodInfo) -> NodeInfo {
        self.usage.add(&pod.usage);
        self
    }
}
