//! The scale subresource (`autoscaling/v1` Scale) of the kinds that have one: Deployments,
//! ReplicaSets and ReplicationControllers. `kubectl scale`, `kubectl get --subresource=scale`
//! and autoscalers read and write `spec.replicas` through it.

use serde_json::Value;
use serde_json::json;
use trireme_model::field::FieldError;
use trireme_model::resource::ResourceType;
use trireme_model::version::ReadAt;

use crate::registry::Registry;
use crate::registry::RegistryError;
use crate::registry::Scope;
use crate::registry::WriteOptions;

/// The `autoscaling/v1` Scale of a deployment, replica set or replication controller (whose
/// selector is a plain label map rather than a `LabelSelector`).
pub fn scale_of(object: &Value) -> Value {
    let meta = &object["metadata"];
    let selector = object.pointer("/spec/selector");
    let selector = selector
        .and_then(|s| s.get("matchLabels"))
        .or_else(|| selector.filter(|s| s.as_object().is_some_and(|m| m.values().all(Value::is_string))))
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

fn check_scalable(rt: &ResourceType) -> Result<(), RegistryError> {
    if rt.subresources.contains(&"scale") {
        Ok(())
    } else {
        Err(RegistryError::MethodNotAllowed(format!("{} have no scale subresource", rt.plural)))
    }
}

impl Registry {
    /// The Scale of the object at `namespace`/`name`.
    pub async fn get_scale(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        read: ReadAt,
    ) -> Result<Value, RegistryError> {
        check_scalable(rt)?;
        Ok(scale_of(&self.get(rt, namespace, name, read).await?))
    }

    /// Sets `spec.replicas` to what `wanted` makes of the current Scale (a PUT body, or a patch
    /// applied to it), retried like any read-modify-write; returns the new Scale. Negative
    /// replicas are `Invalid`, as in Kubernetes.
    pub async fn update_scale(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &WriteOptions,
        mut wanted: impl FnMut(&Value) -> Result<Value, RegistryError>,
    ) -> Result<Value, RegistryError> {
        check_scalable(rt)?;
        let change = |current: &Value| {
            let scale = wanted(&scale_of(current))?;
            let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
            if replicas < 0 {
                return Err(RegistryError::Invalid {
                    kind: "Scale.autoscaling".into(),
                    name: name.into(),
                    causes: vec![FieldError::invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
                });
            }
            let mut next = current.clone();
            next["spec"]["replicas"] = json!(replicas);
            Ok(next)
        };
        let written = self.update_with(rt, namespace, name, Scope::Main, options, change, None).await?;
        Ok(scale_of(&written.object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_reports_replicas_and_selector() {
        let deploy = json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2},
        });
        let scale = scale_of(&deploy);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["selector"], "app=web");
        assert_eq!(scale["metadata"]["resourceVersion"], "7");
        let rc = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"app": "web"}}});
        assert_eq!(scale_of(&rc)["status"]["selector"], "app=web");
    }
}
