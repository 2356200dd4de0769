//! The fields a field selector may name, per resource, read from JSON objects.
//!
//! Kubernetes accepts a field label only if the kind's field label conversion knows it
//! (`pkg/apis/core/v1/conversion.go`, `pkg/apis/events/v1/conversion.go`); kinds without one accept
//! `metadata.name` and `metadata.namespace` only (`runtime.DefaultMetaV1FieldSelectorConversion`).
//! Anything else is a 400 whose message [`unsupported_message`] reproduces. A supported field
//! that the object lacks reads as `""`, which is how Kubernetes compares it.
//!
//! Use [`field_value`] as the getter of [`crate::selector::FieldSelector::matches`]:
//! `selector.matches(|f| fields::field_value(resource, &object, f))`.

use serde_json::Value;

use crate::resource::ResourceType;
use crate::table::text;

/// The value of `field` in `object` as a field selector sees it, or `None` when Kubernetes does
/// not support selecting `resource` by `field`. Supported fields the object lacks read as `""`.
pub fn field_value(resource: &ResourceType, object: &Value, field: &str) -> Option<String> {
    match crate::kinds::strategy(resource) {
        Some(kind) => kind.field(object, field),
        None => meta(object, field),
    }
}

/// `metadata.name` and `metadata.namespace`, the fields every kind can be selected by
/// (`runtime.DefaultMetaV1FieldSelectorConversion`); `None` for any other field.
pub fn meta(object: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(text(&object["metadata"]["name"])),
        "metadata.namespace" => Some(text(&object["metadata"]["namespace"])),
        _ => None,
    }
}

/// Whether Kubernetes lets a field selector on `resource` name `field`.
pub fn supported(resource: &ResourceType, field: &str) -> bool {
    field_value(resource, &Value::Null, field).is_some()
}

/// The message of Kubernetes' 400 BadRequest for a field selector naming an unsupported `field`.
pub fn unsupported_message(resource: &ResourceType, field: &str) -> String {
    if crate::kinds::strategy(resource).is_some_and(|k| k.has_field_conversion()) {
        format!("field label not supported: {field}")
    } else {
        format!("{field:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::resource;
    use crate::selector::FieldSelector;
    use serde_json::json;

    fn res(group: &str, plural: &str) -> &'static ResourceType {
        resource::all().find(|r| r.group == group && r.plural == plural).expect("resource is served")
    }

    fn value(group: &str, plural: &str, object: &Value, field: &str) -> Option<String> {
        field_value(res(group, plural), object, field)
    }

    #[test]
    fn pod_fields() {
        let pod = json!({
            "metadata": {"name": "web-0", "namespace": "default"},
            "spec": {"nodeName": "node-1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": "default", "hostNetwork": true},
            "status": {"phase": "Running", "podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                       "nominatedNodeName": "node-2"}
        });
        for (field, expected) in [
            ("metadata.name", "web-0"),
            ("metadata.namespace", "default"),
            ("spec.nodeName", "node-1"),
            ("spec.host", "node-1"),
            ("spec.restartPolicy", "Always"),
            ("spec.schedulerName", "default-scheduler"),
            ("spec.serviceAccountName", "default"),
            ("spec.hostNetwork", "true"),
            ("status.phase", "Running"),
            ("status.podIP", "10.0.0.5"),
            ("status.podIPs", ""),
            ("status.nominatedNodeName", "node-2"),
        ] {
            assert_eq!(value("", "pods", &pod, field).as_deref(), Some(expected), "{field}");
        }
        assert_eq!(value("", "pods", &pod, "spec.containers"), None);
        assert_eq!(value("", "pods", &pod, "status.hostIP"), None);

        let fresh = json!({"metadata": {"name": "p"}, "status": {"podIP": "10.0.0.7"}});
        assert_eq!(value("", "pods", &fresh, "spec.nodeName").as_deref(), Some(""));
        assert_eq!(value("", "pods", &fresh, "spec.hostNetwork").as_deref(), Some("false"));
        assert_eq!(value("", "pods", &fresh, "status.podIP").as_deref(), Some("10.0.0.7"));
    }

    #[test]
    fn cluster_scoped_kinds_reject_metadata_namespace() {
        let node = json!({"metadata": {"name": "node-1"}, "spec": {"unschedulable": true}});
        assert_eq!(value("", "nodes", &node, "metadata.name").as_deref(), Some("node-1"));
        assert_eq!(value("", "nodes", &node, "spec.unschedulable").as_deref(), Some("true"));
        assert_eq!(value("", "nodes", &json!({}), "spec.unschedulable").as_deref(), Some("false"));
        assert_eq!(value("", "nodes", &node, "metadata.namespace"), None);
        assert_eq!(value("", "nodes", &node, "status.phase"), None);

        let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Terminating"}});
        assert_eq!(value("", "namespaces", &ns, "status.phase").as_deref(), Some("Terminating"));
        assert_eq!(value("", "namespaces", &ns, "metadata.namespace"), None);
        assert_eq!(value("", "namespaces", &ns, "name"), None);
    }

    #[test]
    fn secrets_services_and_default_kinds() {
        let secret =
            json!({"metadata": {"name": "tok", "namespace": "ns"}, "type": "kubernetes.io/service-account-token"});
        assert_eq!(value("", "secrets", &secret, "type").as_deref(), Some("kubernetes.io/service-account-token"));
        assert_eq!(value("", "secrets", &secret, "data"), None);

        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.20"}});
        assert_eq!(value("", "services", &svc, "spec.type").as_deref(), Some("NodePort"));
        assert_eq!(value("", "services", &svc, "spec.clusterIP").as_deref(), Some("10.96.0.20"));

        let rs = json!({"metadata": {"name": "web-1", "namespace": "default"}, "status": {"replicas": 3}});
        assert_eq!(value("apps", "replicasets", &rs, "metadata.namespace").as_deref(), Some("default"));
        // apps/v1 registers no field label conversion: Kubernetes rejects status.replicas.
        assert_eq!(value("apps", "replicasets", &rs, "status.replicas"), None);
        for r in resource::all() {
            assert!(supported(r, "metadata.name"), "{}", r.plural);
            assert_eq!(supported(r, "metadata.namespace"), r.namespaced, "{}", r.plural);
            assert!(!supported(r, "spec.bogus"), "{}", r.plural);
        }
    }

    #[test]
    fn core_event_fields() {
        let event = json!({
            "metadata": {"name": "web-0.17f", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-0", "uid": "u-1",
                               "apiVersion": "v1", "resourceVersion": "42", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning", "reportingComponent": "kubelet",
            "source": {"component": "kubelet", "host": "node-1"}
        });
        for (field, expected) in [
            ("involvedObject.kind", "Pod"),
            ("involvedObject.namespace", "default"),
            ("involvedObject.name", "web-0"),
            ("involvedObject.uid", "u-1"),
            ("involvedObject.apiVersion", "v1"),
            ("involvedObject.resourceVersion", "42"),
            ("involvedObject.fieldPath", "spec.containers{app}"),
            ("reason", "BackOff"),
            ("type", "Warning"),
            ("reportingComponent", "kubelet"),
            ("source", "kubelet"),
            ("metadata.namespace", "default"),
        ] {
            assert_eq!(value("", "events", &event, field).as_deref(), Some(expected), "{field}");
        }
        for field in ["regarding.name", "reportingController", "message", "involvedObject.bogus"] {
            assert_eq!(value("", "events", &event, field), None, "{field}");
        }
        let new_style = json!({"metadata": {"name": "e"}, "reportingComponent": "trireme-scheduler"});
        assert_eq!(value("", "events", &new_style, "source").as_deref(), Some("trireme-scheduler"));
        assert_eq!(value("", "events", &new_style, "involvedObject.uid").as_deref(), Some(""));
    }

    #[test]
    fn events_k8s_io_fields() {
        let event = json!({
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Node", "name": "node-1", "uid": "u-2"},
            "reason": "Starting", "type": "Normal", "reportingController": "kubelet"
        });
        for (field, expected) in [
            ("regarding.kind", "Node"),
            ("regarding.name", "node-1"),
            ("regarding.uid", "u-2"),
            ("regarding.namespace", ""),
            ("reason", "Starting"),
            ("type", "Normal"),
            ("reportingController", "kubelet"),
            ("source", "kubelet"),
        ] {
            assert_eq!(value("events.k8s.io", "events", &event, field).as_deref(), Some(expected), "{field}");
        }
        for field in ["involvedObject.name", "reportingComponent", "note"] {
            assert_eq!(value("events.k8s.io", "events", &event, field), None, "{field}");
        }
    }

    #[test]
    fn unsupported_messages_match_kubernetes() {
        assert_eq!(unsupported_message(res("", "pods"), "spec.bogus"), "field label not supported: spec.bogus");
        assert_eq!(
            unsupported_message(res("apps", "deployments"), "spec.replicas"),
            r#""spec.replicas" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
    }

    #[test]
    fn works_as_a_field_selector_getter() {
        let pods = res("", "pods");
        let pod = json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "node-1"},
                         "status": {"phase": "Running"}});
        let matches =
            |text: &str| FieldSelector::parse(text).expect("selector parses").matches(|f| field_value(pods, &pod, f));
        assert!(matches("spec.nodeName=node-1,status.phase!=Succeeded"));
        assert!(!matches("spec.nodeName=node-2"));
        assert!(matches("status.nominatedNodeName="));
        assert!(matches("metadata.namespace=default,metadata.name==a"));
    }
}
