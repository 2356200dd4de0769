//! `v1` Node: cluster-scoped, selectable by `spec.unschedulable`.
use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use super::prelude::*;

/// How nodes are served.
const RES: &ResourceType = &ResourceType {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    short_names: &["no"],
    namespaced: false,
    subresources: &["status"],
    categories: &[],
    storage: "nodes",
};

/// The nodes kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nodes;

impl Kind for Nodes {
    type Object = Node;
    const RESOURCE: &'static ResourceType = RES;
    const FIELD_CONVERSION: bool = true;

    fn default(node: &mut Node) {
        default_node(node);
    }

    fn columns() -> &'static [Column] {
        NODE_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        node_cells(object, now)
    }

    fn field(object: &Value, field: &str) -> Option<String> {
        match field {
            "metadata.name" => Some(text(&object["metadata"]["name"])),
            "spec.unschedulable" => Some((object["spec"]["unschedulable"] == true).to_string()),
            _ => None,
        }
    }
}

/// Node: `status.allocatable` copies `status.capacity` when unset.
pub fn default_node(node: &mut Node) {
    if let Some(status) = node.status.as_mut()
        && status.allocatable.is_none()
        && status.capacity.is_some()
    {
        status.allocatable.clone_from(&status.capacity);
    }
}

pub(crate) static NODE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "The status of the node"),
    column("Roles", "string", "The roles of the node"),
    AGE,
    column("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node."),
    wide("External-IP", "string", "List of addresses reachable to the node."),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

pub(crate) fn node_cells(node: &Value, now: i128) -> Vec<Value> {
    let status = &node["status"];
    let info = &status["nodeInfo"];
    let ready = items(&status["conditions"]).iter().rev().find(|c| c["type"] == "Ready");
    let mut state = match ready {
        Some(c) if c["status"] == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node["spec"]["unschedulable"] == true {
        state.push_str(",SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = node["metadata"]["labels"].as_object() {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if key == "kubernetes.io/role" && !str_of(value).is_empty() {
                roles.insert(str_of(value).to_string());
            }
        }
    }
    let roles = if roles.is_empty() { "<none>".to_string() } else { roles.into_iter().collect::<Vec<_>>().join(",") };
    let address = |kind: &str| {
        items(&status["addresses"])
            .iter()
            .find(|a| a["type"] == kind)
            .map_or_else(|| "<none>".to_string(), |a| text(&a["address"]))
    };
    let or_unknown = |v: &Value| match str_of(v) {
        "" => "<unknown>".to_string(),
        s => s.to_string(),
    };
    vec![
        name(node),
        state.into(),
        roles.into(),
        age(node, now),
        text(&info["kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        or_unknown(&info["osImage"]).into(),
        or_unknown(&info["kernelVersion"]).into(),
        or_unknown(&info["containerRuntimeVersion"]).into(),
    ]
}

#[cfg(test)]
mod tests {
    mod validation {
        use crate::testing::validation::*;

        #[test]
        fn node_names_may_be_dns_subdomains() {
            let nodes = resource("", "nodes");
            let node = Node {
                metadata: ObjectMeta { name: Some("node-1.example".into()), ..ObjectMeta::default() },
                ..Node::default()
            };
            assert!(validate(nodes, &node).is_empty());
        }
    }
    mod defaults {
        use crate::testing::defaults::*;

        #[test]
        fn node_allocatable_defaults_to_capacity() {
            let capacity = BTreeMap::from([("cpu".to_string(), Quantity("4".into()))]);
            let mut node = Node {
                status: Some(k8s_openapi::api::core::v1::NodeStatus {
                    capacity: Some(capacity.clone()),
                    ..Default::default()
                }),
                ..Node::default()
            };
            default_node(&mut node);
            assert_eq!(node.status.expect("status").allocatable, Some(capacity));
        }
    }
}
