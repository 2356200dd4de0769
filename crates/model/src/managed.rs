//! `metadata.managedFields`: which manager last wrote an object, how (`Update` or `Apply`),
//! when, and the set of fields it wrote, in Kubernetes' FieldsV1 form (`f:<field>`, `k:<key>`
//! for list entries with a merge key, `.` for the entry itself).
//!
//! Trireme records one entry per (manager, operation) with the fields present in what that
//! manager wrote; it does not take fields away from other managers or detect apply conflicts.

use serde_json::Map;
use serde_json::Value;
use serde_json::json;

use crate::patch::MergeStrategy;
use crate::patch::merge_key;

/// Metadata fields the server owns, never listed as a manager's.
const SERVER_FIELDS: &[&str] =
    &["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "deletionTimestamp", "selfLink"];

/// Records that `manager` wrote `object` with `operation` (`Update` or `Apply`) at `time`,
/// replacing that manager's previous entry for the same operation.
pub fn record(object: &mut Value, manager: &str, operation: &str, time: &str) {
    let fields = fields_v1(object, &mut Vec::new(), true);
    let api_version = object.get("apiVersion").cloned().unwrap_or(Value::Null);
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let mut entries: Vec<Value> = meta
        .get("managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !(e["manager"] == manager && e["operation"] == operation))
        .collect();
    entries.push(json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }));
    meta.insert("managedFields".into(), Value::Array(entries));
}

fn fields_v1(value: &Value, path: &mut Vec<String>, root: bool) -> Value {
    let mut out = Map::new();
    let Some(map) = value.as_object() else { return Value::Object(out) };
    for (key, child) in map {
        if root && matches!(key.as_str(), "apiVersion" | "kind" | "status") {
            continue;
        }
        if path.len() == 1
            && path[0] == "metadata"
            && (SERVER_FIELDS.contains(&key.as_str()) || key == "name" || key == "namespace")
        {
            continue;
        }
        path.push(key.clone());
        let entry = match child {
            Value::Object(_) => fields_v1(child, path, false),
            Value::Array(items) => list_fields(items, path),
            _ => json!({}),
        };
        path.pop();
        out.insert(format!("f:{key}"), entry);
    }
    Value::Object(out)
}

fn list_fields(items: &[Value], path: &mut Vec<String>) -> Value {
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    let MergeStrategy::MergeByKey(key) = merge_key(&names) else { return json!({}) };
    let mut out = Map::new();
    for item in items {
        let Some(k) = item.get(key) else { continue };
        let mut entry = fields_v1(item, path, false);
        if let Some(map) = entry.as_object_mut() {
            map.insert(".".into(), json!({}));
        }
        out.insert(format!("k:{}", json!({ key: k })), entry);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_listed_with_list_entries_by_merge_key() {
        let mut deploy = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "uid": "u", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"replicas": 0},
        });
        record(&mut deploy, "kubectl-create", "Update", "2026-11-27T00:00:00Z");
        let entry = &deploy["metadata"]["managedFields"][0];
        assert_eq!(entry["manager"], "kubectl-create");
        let fields = &entry["fieldsV1"];
        assert!(fields["f:metadata"]["f:labels"]["f:app"].is_object());
        assert!(fields["f:metadata"].get("f:uid").is_none());
        assert!(fields.get("f:status").is_none());
        let container = &fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert!(container["f:image"].is_object() && container["."].is_object());
        record(&mut deploy, "kubectl-create", "Update", "2026-11-27T00:00:01Z");
        assert_eq!(deploy["metadata"]["managedFields"].as_array().map(Vec::len), Some(1));
    }
}
