//! A minimal OpenAPI v3: enough for kubectl to find each kind's PATCH operation with a
//! `fieldValidation` parameter, so that it skips client-side schema validation and asks the
//! server to validate strictly (`fieldValidation=Strict`), which the registry does with the
//! typed k8s-openapi decode.

use serde_json::Value;
use serde_json::json;
use trireme_model::resource;

/// A stable hash of the documents, so kubectl's cache invalidates when Trireme changes.
const HASH: &str = concat!("trireme-", env!("CARGO_PKG_VERSION"));

fn path_of(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// `GET /openapi/v3`.
pub fn root() -> Value {
    let paths: serde_json::Map<String, Value> = resource::groups()
        .into_iter()
        .map(|(g, v)| {
            let p = path_of(g, v);
            (p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={HASH}")}))
        })
        .collect();
    json!({"paths": paths})
}

/// `GET /openapi/v3/<api/v1 | apis/group/version>`, if served.
pub fn group_version(path: &str) -> Option<Value> {
    let (group, version) = resource::groups().into_iter().find(|(g, v)| path_of(g, v) == path)?;
    let mut paths = serde_json::Map::new();
    for r in resource::all().filter(|r| r.group == group && r.version == version) {
        let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
            .iter()
            .map(|name| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
            .collect();
        let operation = json!({
            "patch": {
                "operationId": format!("patch{}", r.kind),
                "parameters": params,
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "responses": {"200": {"description": "OK"}},
            }
        });
        let collection = r.collection_path(r.namespaced.then_some("{namespace}"));
        paths.insert(format!("{collection}/{{name}}"), operation);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::KUBERNETES_MINOR)},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_a_document_with_patch_operations() {
        let root = root();
        for (g, v) in resource::groups() {
            let p = path_of(g, v);
            assert!(root["paths"][&p]["serverRelativeURL"].as_str().is_some_and(|u| u.starts_with("/openapi/v3/")));
            let doc = group_version(&p).expect("document");
            assert!(!doc["paths"].as_object().expect("paths").is_empty());
        }
        let apps = group_version("apis/apps/v1").expect("apps");
        let op = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
    }
}
