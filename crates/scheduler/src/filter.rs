//! Filters: whether a node can take a pod at all, with Kubernetes' reasons when it cannot.
//!
//! Each filter is a pure function of a [`PodInfo`] and a [`NodeInfo`]; [`run`] applies them in
//! the order of Kubernetes' default profile (NodeUnschedulable, NodeName, TaintToleration,
//! NodeAffinity, NodePorts, NodeResourcesFit) and stops at the first that fails, as the
//! scheduling framework does. One check has no plugin left in Kubernetes: a node whose Ready
//! condition is not `True` is filtered ("node(s) were not ready", the text of the old
//! CheckNodeCondition predicate) unless the pod tolerates the taint Kubernetes' node lifecycle
//! controller would put on it (`node.kubernetes.io/not-ready` or `…/unreachable`,
//! `NoSchedule`), so a node that stops reporting gets no new pods even before it is tainted.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::NodeSelectorRequirement;
use k8s_openapi::api::core::v1::NodeSelectorTerm;
use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::api::core::v1::Toleration;

use crate::nodeinfo::NodeInfo;
use crate::nodeinfo::PodInfo;

/// The taint a cordoned node behaves as if it had.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint of a node whose Ready condition is `False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is `Unknown`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Why a node cannot take a pod; `Display` gives Kubernetes' text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// NodeUnschedulable: the node is cordoned.
    Unschedulable,
    /// NodeName: the pod names another node.
    NodeName,
    /// TaintToleration: a `NoSchedule` or `NoExecute` taint the pod does not tolerate.
    UntoleratedTaint {
        /// The taint's key.
        key: String,
        /// The taint's value (empty when it has none).
        value: String,
    },
    /// The node's Ready condition is not `True`.
    NotReady,
    /// NodeAffinity: `nodeSelector` or required node affinity does not match.
    NodeAffinity,
    /// NodePorts: a host port the pod wants is taken.
    NodePorts,
    /// NodeResourcesFit: the node has as many pods as it takes.
    TooManyPods,
    /// NodeResourcesFit: not enough of a resource is left (`cpu`, `memory`, …).
    Insufficient(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::NodeName => f.write_str("node(s) didn't match the requested node name"),
            Reason::UntoleratedTaint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Reason::NotReady => f.write_str("node(s) were not ready"),
            Reason::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Reason::NodePorts => f.write_str("node(s) didn't have free ports for the requested pod ports"),
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::Insufficient(resource) => write!(f, "Insufficient {resource}"),
        }
    }
}

/// What a filter says: fits, or the reasons it does not (one or more).
pub type Verdict = Result<(), Vec<Reason>>;

/// Runs every filter in Kubernetes' order; the first that fails decides.
pub fn run(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    node_unschedulable(pod, node)?;
    node_name(pod, node)?;
    taint_toleration(pod, node)?;
    node_ready(pod, node)?;
    node_affinity(pod, node)?;
    node_ports(pod, node)?;
    node_resources_fit(pod, node)
}

/// NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods that tolerate
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub fn node_unschedulable(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    let cordoned = node.node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    if !cordoned || tolerated(pod, &no_schedule(TAINT_UNSCHEDULABLE)) {
        return Ok(());
    }
    Err(vec![Reason::Unschedulable])
}

/// NodeName: a pod that names a node (`spec.nodeName`) fits only that node.
pub fn node_name(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    match pod.spec().node_name.as_deref() {
        Some(name) if !name.is_empty() && name != node.name => Err(vec![Reason::NodeName]),
        _ => Ok(()),
    }
}

/// TaintToleration: every `NoSchedule` and `NoExecute` taint of the node must be tolerated;
/// the first that is not is named.
pub fn taint_toleration(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    let untolerated = node
        .taints()
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerated(pod, t));
    match untolerated {
        None => Ok(()),
        Some(taint) => Err(vec![Reason::UntoleratedTaint {
            key: taint.key.clone(),
            value: taint.value.clone().unwrap_or_default(),
        }]),
    }
}

/// A node whose Ready condition is `False` or `Unknown` takes only pods that tolerate the
/// matching `NoSchedule` taint; a node that reports no Ready condition yet is not filtered
/// (as the old CheckNodeCondition predicate did).
pub fn node_ready(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    let conditions = node.node.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let Some(ready) = conditions.iter().find(|c| c.type_ == "Ready") else { return Ok(()) };
    let taint = match ready.status.as_str() {
        "True" => return Ok(()),
        "False" => TAINT_NOT_READY,
        _ => TAINT_UNREACHABLE,
    };
    if tolerated(pod, &no_schedule(taint)) { Ok(()) } else { Err(vec![Reason::NotReady]) }
}

/// NodeAffinity: the node's labels match every `nodeSelector` entry and, if the pod has
/// required node affinity, one of its `nodeSelectorTerms`.
pub fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    let spec = pod.spec();
    let empty = BTreeMap::new();
    let labels = node.labels().unwrap_or(&empty);
    let selected = spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    let affine = required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if selected && affine { Ok(()) } else { Err(vec![Reason::NodeAffinity]) }
}

/// NodePorts: no host port the pod wants may clash with one in use on the node.
pub fn node_ports(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    let clash = pod.usage.host_ports.iter().any(|want| node.usage.ports.keys().any(|used| want.conflicts_with(used)));
    if clash { Err(vec![Reason::NodePorts]) } else { Ok(()) }
}

/// NodeResourcesFit: room for one more pod, and for each resource the pod requests (a zero
/// request always fits), allocatable minus what the node's pods request covers it. Every
/// shortfall is named.
pub fn node_resources_fit(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    let mut reasons = Vec::new();
    if node.usage.pods + 1 > node.allowed_pods {
        reasons.push(Reason::TooManyPods);
    }
    let wants = &pod.usage.requests;
    let free = |name: &str| node.allocatable.get(name).saturating_sub(node.usage.requested.get(name));
    if wants.milli_cpu > 0 && wants.milli_cpu > free("cpu") {
        reasons.push(Reason::Insufficient("cpu".into()));
    }
    if wants.memory > 0 && wants.memory > free("memory") {
        reasons.push(Reason::Insufficient("memory".into()));
    }
    for (name, want) in &wants.scalar {
        if *want > 0 && *want > free(name) {
            reasons.push(Reason::Insufficient(name.clone()));
        }
    }
    if reasons.is_empty() { Ok(()) } else { Err(reasons) }
}

/// Whether one of the pod's tolerations tolerates `taint`.
pub fn tolerated(pod: &PodInfo, taint: &Taint) -> bool {
    pod.spec().tolerations.iter().flatten().any(|t| tolerates(t, taint))
}

/// Kubernetes' `Toleration.ToleratesTaint`: the effect (if set) and key (if set) match, and
/// `Exists` or an equal value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    fn set(s: &Option<String>) -> Option<&str> {
        s.as_deref().filter(|s| !s.is_empty())
    }
    if set(&toleration.effect).is_some_and(|e| e != taint.effect) {
        return false;
    }
    if set(&toleration.key).is_some_and(|k| k != taint.key) {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

fn no_schedule(key: &str) -> Taint {
    Taint { key: key.into(), effect: "NoSchedule".into(), ..Default::default() }
}

/// Whether a node selector term matches the node: all its `matchExpressions` against the
/// labels and all its `matchFields` (`metadata.name`); a term with neither matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.labels();
    expressions.iter().all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| requirement_matches(r, (r.key == "metadata.name").then_some(node.name.as_str())))
}

/// Whether a node selector requirement holds for a label (or field) whose value is `value`
/// (`None`: the node has no such label). `Gt` and `Lt` compare integers and fail on anything
/// else.
pub fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |v: &str| v.parse::<i64>().ok();
    let compare = |keep: fn(i64, i64) -> bool| match (value.and_then(number), values) {
        (Some(have), [limit]) => number(limit).is_some_and(|limit| keep(have, limit)),
        _ => false,
    };
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(|have, limit| have > limit),
        "Lt" => compare(|have, limit| have < limit),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;
    use crate::testing::pod;
    use serde_json::json;

    #[test]
    fn a_cordoned_node_is_unschedulable_unless_the_pod_tolerates_it() {
        let cordoned = node("n1", "4", "8Gi", json!({"spec": {"unschedulable": true}}));
        assert_eq!(run(&pod("1", "1Gi", json!({})), &cordoned), Err(vec![Reason::Unschedulable]));
        let tolerant = pod(
            "1",
            "1Gi",
            json!({"spec": {"tolerations": [{"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(run(&tolerant, &cordoned), Ok(()));
        assert_eq!(Reason::Unschedulable.to_string(), "node(s) were unschedulable");
    }

    #[test]
    fn a_node_that_is_not_ready_or_unknown_is_filtered_unless_tolerated() {
        for status in ["False", "Unknown"] {
            let sick = node("n1", "4", "8Gi", json!({"status": {"conditions": [{"type": "Ready", "status": status}]}}));
            assert_eq!(node_ready(&pod("1", "1Gi", json!({})), &sick), Err(vec![Reason::NotReady]), "{status}");
        }
        let not_ready =
            node("n1", "4", "8Gi", json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
        let tolerant =
            pod("1", "1Gi", json!({"spec": {"tolerations": [{"key": TAINT_NOT_READY, "operator": "Exists"}]}}));
        assert_eq!(node_ready(&tolerant, &not_ready), Ok(()));
        assert_eq!(Reason::NotReady.to_string(), "node(s) were not ready");
    }

    #[test]
    fn requests_must_fit_in_what_the_bound_pods_left_and_each_shortfall_is_named() {
        let busy = node("n1", "2", "4Gi", json!({})).with(&pod("1500m", "3Gi", json!({})));
        assert_eq!(run(&pod("500m", "1Gi", json!({})), &busy), Ok(()), "exactly what is left fits");
        assert_eq!(
            run(&pod("1", "2Gi", json!({})), &busy),
            Err(vec![Reason::Insufficient("cpu".into()), Reason::Insufficient("memory".into())])
        );
        assert_eq!(Reason::Insufficient("cpu".into()).to_string(), "Insufficient cpu");
    }

    #[test]
    fn a_pod_without_requests_fits_a_full_node_but_not_one_with_no_pod_slots_left() {
        let full = node("n1", "1", "1Gi", json!({})).with(&pod("1", "1Gi", json!({})));
        let no_requests = pod("0", "0", json!({}));
        assert_eq!(node_resources_fit(&no_requests, &full), Ok(()));
        let one_slot =
            node("n1", "4", "8Gi", json!({"status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "1"}}}))
                .with(&pod("1", "1Gi", json!({})));
        assert_eq!(node_resources_fit(&no_requests, &one_slot), Err(vec![Reason::TooManyPods]));
        assert_eq!(Reason::TooManyPods.to_string(), "Too many pods");
    }

    #[test]
    fn init_containers_count_by_the_largest_not_the_sum() {
        let two_cpu = node("n1", "2", "4Gi", json!({}));
        let init = json!({"name": "init", "image": "busybox", "resources": {"requests": {"cpu": "2"}}});
        let p = pod("1", "1Gi", json!({"spec": {"initContainers": [init.clone(), init]}}));
        assert_eq!(p.usage.requests.milli_cpu, 2000);
        assert_eq!(node_resources_fit(&p, &two_cpu), Ok(()));
    }

    #[test]
    fn extended_resources_must_be_offered_by_the_node() {
        let container = json!({"name": "a", "image": "x", "resources": {"requests": {"example.com/gpu": "1"}}});
        let p = pod("0", "0", json!({"spec": {"containers": [container]}}));
        assert_eq!(
            node_resources_fit(&p, &node("n1", "4", "8Gi", json!({}))),
            Err(vec![Reason::Insufficient("example.com/gpu".into())])
        );
        let gpu = node(
            "n1",
            "4",
            "8Gi",
            json!({"status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110", "example.com/gpu": "1"}}}),
        );
        assert_eq!(node_resources_fit(&p, &gpu), Ok(()));
    }

    #[test]
    fn a_pod_that_names_a_node_fits_only_that_node() {
        let p = pod("1", "1Gi", json!({"spec": {"nodeName": "n2"}}));
        assert_eq!(node_name(&p, &node("n1", "4", "8Gi", json!({}))), Err(vec![Reason::NodeName]));
        assert_eq!(node_name(&p, &node("n2", "4", "8Gi", json!({}))), Ok(()));
        assert_eq!(Reason::NodeName.to_string(), "node(s) didn't match the requested node name");
    }

    #[test]
    fn a_node_selector_needs_every_label() {
        let labelled = node("n1", "4", "8Gi", json!({"metadata": {"labels": {"disk": "ssd", "zone": "a"}}}));
        assert_eq!(
            node_affinity(&pod("1", "1Gi", json!({"spec": {"nodeSelector": {"disk": "ssd"}}})), &labelled),
            Ok(())
        );
        assert_eq!(
            node_affinity(&pod("1", "1Gi", json!({"spec": {"nodeSelector": {"disk": "ssd", "zone": "b"}}})), &labelled),
            Err(vec![Reason::NodeAffinity])
        );
        assert_eq!(Reason::NodeAffinity.to_string(), "node(s) didn't match Pod's node affinity/selector");
    }

    fn required(terms: serde_json::Value) -> PodInfo {
        pod(
            "1",
            "1Gi",
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}),
        )
    }

    #[test]
    fn required_node_affinity_terms_are_ored_and_their_expressions_anded() {
        let n = node("n1", "4", "8Gi", json!({"metadata": {"labels": {"zone": "a", "cores": "16"}}}));
        let expr =
            |key: &str, op: &str, values: serde_json::Value| json!({"key": key, "operator": op, "values": values});
        let fits = |terms: serde_json::Value| node_affinity(&required(terms), &n).is_ok();
        assert!(fits(json!([{"matchExpressions": [expr("zone", "In", json!(["a", "b"]))]}])));
        assert!(!fits(json!([{"matchExpressions": [expr("zone", "NotIn", json!(["a"]))]}])));
        assert!(
            fits(json!([{"matchExpressions": [expr("rack", "NotIn", json!(["r1"]))]}])),
            "NotIn holds when the label is missing"
        );
        assert!(fits(json!([{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}])));
        assert!(fits(json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}])));
        assert!(fits(json!([{"matchExpressions": [expr("cores", "Gt", json!(["8"]))]}])));
        assert!(!fits(json!([{"matchExpressions": [expr("cores", "Lt", json!(["8"]))]}])));
        assert!(!fits(json!([{"matchExpressions": [expr("zone", "Gt", json!(["8"]))]}])), "Gt on a non-number fails");
        assert!(!fits(
            json!([{"matchExpressions": [expr("zone", "In", json!(["a"])), expr("cores", "Lt", json!(["8"]))]}])
        ));
        assert!(fits(json!([
            {"matchExpressions": [expr("zone", "In", json!(["b"]))]},
            {"matchExpressions": [expr("zone", "In", json!(["a"]))]},
        ])));
        assert!(!fits(json!([{}])), "an empty term matches nothing");
        assert!(fits(json!([{"matchFields": [expr("metadata.name", "In", json!(["n1"]))]}])));
        assert!(!fits(json!([{"matchFields": [expr("metadata.name", "NotIn", json!(["n1"]))]}])));
    }

    #[test]
    fn untolerated_no_schedule_and_no_execute_taints_are_named_and_prefer_no_schedule_ones_ignored() {
        let tainted = node(
            "n1",
            "4",
            "8Gi",
            json!({"spec": {"taints": [
                {"key": "soft", "effect": "PreferNoSchedule"},
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                {"key": "evict", "effect": "NoExecute"},
            ]}}),
        );
        assert_eq!(
            taint_toleration(&pod("1", "1Gi", json!({})), &tainted),
            Err(vec![Reason::UntoleratedTaint { key: "dedicated".into(), value: "gpu".into() }])
        );
        assert_eq!(
            Reason::UntoleratedTaint { key: "dedicated".into(), value: "gpu".into() }.to_string(),
            "node(s) had untolerated taint {dedicated: gpu}"
        );
        let some = pod(
            "1",
            "1Gi",
            json!({"spec": {"tolerations": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(
            taint_toleration(&some, &tainted),
            Err(vec![Reason::UntoleratedTaint { key: "evict".into(), value: String::new() }])
        );
        let all = pod("1", "1Gi", json!({"spec": {"tolerations": [{"operator": "Exists"}]}}));
        assert_eq!(taint_toleration(&all, &tainted), Ok(()), "an empty key with Exists tolerates everything");
    }

    #[test]
    fn tolerations_match_by_effect_key_and_value() {
        let taint =
            Taint { key: "k".into(), value: Some("v".into()), effect: "NoSchedule".into(), ..Default::default() };
        let t = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).expect("a toleration") };
        assert!(tolerates(&t(json!({"key": "k", "value": "v"})), &taint));
        assert!(tolerates(&t(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "value": "w"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})), &taint));
        assert!(!tolerates(&t(json!({"key": "other", "operator": "Exists"})), &taint));
    }

    #[test]
    fn a_taken_host_port_blocks_a_pod_that_wants_it() {
        let ports = |port: i32, ip: &str| json!({"spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]}]}});
        let n = node("n1", "4", "8Gi", json!({})).with(&pod("0", "0", ports(8080, "")));
        assert_eq!(node_ports(&pod("0", "0", ports(8080, "10.0.0.1")), &n), Err(vec![Reason::NodePorts]));
        assert_eq!(node_ports(&pod("0", "0", ports(8081, "")), &n), Ok(()));
        assert_eq!(Reason::NodePorts.to_string(), "node(s) didn't have free ports for the requested pod ports");
    }
}
