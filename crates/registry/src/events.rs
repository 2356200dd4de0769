//! Events: what the scheduler and the controllers tell users about objects (`kubectl describe`,
//! `kubectl get events`). Written as core/v1 Events, best effort: a failed event never fails
//! the work it describes.

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

    /// Records that `reason` happened to `object` (which must carry apiVersion, kind and
    /// metadata). Errors are logged, not returned.
    pub async fn record(&self, object: &Value, kind: EventType, reason: &str, message: &str) {
        let Some(rt) = resource::find("", "v1", "events") else { return };
        let event = event_for(object, &self.component, kind, reason, message);
        let namespace = event.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string);
        if let Err(e) = self.registry.create(rt, namespace.as_deref(), event, &WriteOptions::default()).await {
            tracing::debug!(reason, error = %e, "could not record an event");
        }
    }
}

/// The Event object for `reason` on `object` (pure, for tests).
pub fn event_for(object: &Value, component: &str, kind: EventType, reason: &str, message: &str) -> Value {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let namespace = meta["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or("default");
    let suffix: u64 = rand::random();
    let time = now();
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{suffix:016x}"), "namespace": namespace},
        "involvedObject": {
            "apiVersion": object["apiVersion"],
            "kind": object["kind"],
            "name": name,
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
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
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "team", "uid": "u1"}});
        let event =
            event_for(&pod, "default-scheduler", EventType::Warning, "FailedScheduling", "0/3 nodes are available");
        assert_eq!(event["metadata"]["namespace"], "team");
        assert!(event["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("web-1.")));
        assert_eq!(event["involvedObject"]["uid"], "u1");
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["source"]["component"], "default-scheduler");
    }
}
