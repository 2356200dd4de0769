//! Small helpers the workload controllers share: controller references, label selectors of
//! `metav1.LabelSelector` form, and pod readiness.
//!
//! Pure functions only; nothing here does I/O.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::jiff::Timestamp;
use trireme_model::selector::LabelSelector;
use trireme_model::selector::Operator;
use trireme_model::selector::Requirement;

pub use trireme_registry::now_seconds as now;

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &meta::ObjectMeta) -> Option<&meta::OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// A controller reference to the object with `meta` (`controller` and `blockOwnerDeletion`
/// set, as Kubernetes' `NewControllerRef`).
pub fn controller_ref(api_version: &str, kind: &str, meta: &meta::ObjectMeta) -> meta::OwnerReference {
    meta::OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The selector a controller uses to find its objects. `None` when the selector is empty or
/// malformed: a controller then selects nothing, rather than every object in its namespace
/// (validation refuses both, so this only guards against foreign writes).
pub fn selector_of(selector: &meta::LabelSelector) -> Option<LabelSelector> {
    let mut requirements = Vec::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        requirements.push(Requirement { key: key.clone(), op: Operator::In(BTreeSet::from([value.clone()])) });
    }
    for expr in selector.match_expressions.iter().flatten() {
        let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
        let op = match expr.operator.as_str() {
            "In" if !values.is_empty() => Operator::In(values),
            "NotIn" if !values.is_empty() => Operator::NotIn(values),
            "Exists" if values.is_empty() => Operator::Exists,
            "DoesNotExist" if values.is_empty() => Operator::DoesNotExist,
            _ => return None,
        };
        requirements.push(Requirement { key: expr.key.clone(), op });
    }
    if requirements.is_empty() {
        return None;
    }
    Some(LabelSelector { requirements })
}

/// The labels of an object (empty when it has none).
pub fn labels(meta: &meta::ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// Whether the object is being deleted.
pub fn terminating(meta: &meta::ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Whether a pod counts toward its controller's replicas: not being deleted and not finished
/// (Kubernetes' `IsPodActive`).
pub fn pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
    !terminating(&pod.metadata) && phase != "Succeeded" && phase != "Failed"
}

/// Since when the pod is Ready (its Ready condition's lastTransitionTime), or `None` when it is
/// not Ready. A Ready condition without a time counts as ready since the epoch.
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
    if ready.status != "True" {
        return None;
    }
    Some(ready.last_transition_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Whether the pod is Ready.
pub fn pod_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Whether the pod has been Ready for at least `min_ready_seconds` at `now` (Kubernetes'
/// `IsPodAvailable`: strictly longer, when `min_ready_seconds` is not 0).
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => since.as_second().saturating_add(i64::from(min_ready_seconds)) < now.as_second(),
    }
}

/// When a Ready pod becomes available, if it is not yet at `now`.
pub fn pod_available_at(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Timestamp> {
    let since = pod_ready_since(pod)?;
    if pod_available(pod, min_ready_seconds, now) {
        return None;
    }
    // Available once strictly past `since + min_ready_seconds`.
    Timestamp::from_second(since.as_second().saturating_add(i64::from(min_ready_seconds)).saturating_add(1)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;

    fn pod(status: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).expect("a pod")
    }

    #[test]
    fn a_selector_requires_every_match_label_and_expression() {
        let sel: meta::LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "canary", "operator": "DoesNotExist"}],
        }))
        .expect("a selector");
        let sel = selector_of(&sel).expect("valid");
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])));
    }

    #[test]
    fn an_empty_or_malformed_selector_selects_nothing() {
        assert!(selector_of(&meta::LabelSelector::default()).is_none());
        let bad: meta::LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})).expect("a selector");
        assert!(selector_of(&bad).is_none());
    }

    #[test]
    fn a_pod_is_available_only_after_being_ready_for_min_ready_seconds() {
        let ready = pod(json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}));
        let at = |s: &str| s.parse::<Timestamp>().expect("a time");
        assert!(pod_available(&ready, 0, at("2024-01-01T00:00:00Z")));
        assert!(!pod_available(&ready, 10, at("2024-01-01T00:00:10Z")));
        assert!(pod_available(&ready, 10, at("2024-01-01T00:00:11Z")));
        assert_eq!(pod_available_at(&ready, 10, at("2024-01-01T00:00:05Z")), Some(at("2024-01-01T00:00:11Z")));
        let not_ready = pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}));
        assert!(!pod_available(&not_ready, 0, at("2024-01-01T00:00:00Z")));
    }

    #[test]
    fn the_controller_reference_is_the_one_marked_controller() {
        let object = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "Other", "name": "x", "uid": "1"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "2", "controller": true},
        ]}});
        let meta: meta::ObjectMeta = serde_json::from_value(object["metadata"].clone()).expect("metadata");
        assert_eq!(controller_of(&meta).map(|r| r.uid.as_str()), Some("2"));
    }
}
