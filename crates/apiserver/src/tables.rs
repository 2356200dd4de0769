//! `Table` responses (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`): what
//! `kubectl get` prints, with the columns of `trireme_model::table` and a
//! PartialObjectMetadata per row so kubectl can show namespaces and labels.

use std::time::SystemTime;

use serde_json::Value;
use serde_json::json;
use trireme_model::resource::ResourceType;
use trireme_model::table;

/// A Table of `objects`, read at `revision`.
pub fn table(rt: &ResourceType, objects: &[Value], revision: i64, continue_token: Option<&str>) -> Value {
    let now = SystemTime::now();
    let rows: Vec<Value> = objects.iter().map(|o| table::row(rt, o, now)).collect();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": table::columns(rt),
        "rows": rows,
    })
}

/// The Table a watch event carries: one row, with the column definitions only on the first
/// event of the stream (as Kubernetes does).
pub fn event_table(rt: &ResourceType, object: &Value, first: bool) -> Value {
    let revision = trireme_registry::object_revision(object);
    let mut t = table(rt, std::slice::from_ref(object), revision, None);
    if !first {
        t["columnDefinitions"] = json!([]);
    }
    t
}
