//! Events: what the scheduler and the controllers tell users about objects (`kubectl describe`,
//! `kubectl get events`). Written as core/v1 Events, best effort: a failed event never fails
//! the work it describes.

use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use serde_json::json;

use crate::registry::Registry;
use crate::registry::WriteOptions;
use crate::registry::now;
use trireme_model::resource;

/// Writes Events on behalf of one component (`default-scheduler`, `deployment-controller`).
#[derive(Clone)]
pub struct Recorder {
    registry: Registry,
    component: String,
}

/// An Event's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl Recorder {
    /// A recorder writing through `registry` as `component`.
    pub fn new(registry: Registry, component: impl Into<String>) -> Recorder {
        Recorder { registry, component: component.into() }
    }

    /// Records that `reason` happened to `object`. Errors are logged, not returned.
    pub async fn record<T: Metadata<Ty = ObjectMeta>>(&self, object: &T, kind: EventType, reason: &str, message: &str) {
        let Some(rt) = resource::find("", "v1", "events") else { return };
        let involved = Involved { api_version: T::API_VERSION, kind: T::KIND, meta: object.metadata() };
        let event = event_for(&involved, &self.component, kind, reason, message);
        let namespace = event.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string);
        if let Err(e) = self.registry.create(rt, namespace.as_deref(), event, &WriteOptions::default()).await {
            tracing::debug!(reason, error = %e, "could not record an event");
        }
    }
}

/// The object an Event is about.
pub struct Involved<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub meta: &'a ObjectMeta,
}

/// The Event object for `reason` on `object` (pure, for tests).
pub fn event_for(object: &Involved<'_>, component: &str, kind: EventType, reason: &str, message: &str) -> Value {
    let meta = object.meta;
    let name = meta.name.as_deref().unwrap_or_default();
    let namespace = meta.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or("default");
    let suffix: u64 = rand::random();
    let time = now();
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{suffix:016x}"), "namespace": namespace},
        "involvedObject": {
            "apiVersion": object.api_version,
            "kind": object.kind,
            "name": name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
        },
        "reason": reason,
        "message": message,
        "type": match kind { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": time,
        "lastTimestamp": time,
        "count": 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_and_component() {
        let meta = ObjectMeta {
            name: Some("web-1".into()),
            namespace: Some("team".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let pod = Involved { api_version: "v1", kind: "Pod", meta: &meta };
        let event =
            event_for(&pod, "default-scheduler", EventType::Warning, "FailedScheduling", "0/3 nodes are available");
        assert_eq!(event["metadata"]["namespace"], "team");
        assert!(event["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("web-1.")));
        assert_eq!(event["involvedObject"]["uid"], "u1");
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["source"]["component"], "default-scheduler");
    }
}
