//! Discovery: `/version`, the aggregated (v2) and legacy discovery documents, all built from
//! the one resource table in `trireme_model::resource`.

use serde_json::Value;
use serde_json::json;
use trireme_model::resource;
use trireme_model::resource::ResourceType;

/// The Kubernetes minor version Trireme serves: it matches the k8s-openapi feature
/// (`v1_33`) the object model is built with, and makes the kubectl dispatcher pick its
/// bundled 1.33 client.
pub const KUBERNETES_MINOR: &str = "33";

/// The media type kubectl needs to recognise aggregated discovery.
pub const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-trireme.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// A served group whose resources are requests answered at once, not stored objects:
/// `kubectl auth can-i` asks `selfsubjectaccessreviews`.
pub const AUTHORIZATION: (&str, &str) = ("authorization.k8s.io", "v1");

fn authorization_resource(aggregated: bool) -> Value {
    if aggregated {
        json!({
            "resource": "selfsubjectaccessreviews",
            "responseKind": {"group": AUTHORIZATION.0, "version": AUTHORIZATION.1, "kind": "SelfSubjectAccessReview"},
            "scope": "Cluster",
            "singularResource": "selfsubjectaccessreview",
            "verbs": ["create"],
        })
    } else {
        json!({
            "name": "selfsubjectaccessreviews",
            "singularName": "selfsubjectaccessreview",
            "namespaced": false,
            "kind": "SelfSubjectAccessReview",
            "verbs": ["create"],
        })
    }
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The kind and verbs of a subresource, as Kubernetes reports them.
fn subresource(rt: &ResourceType, sub: &str) -> (&'static str, &'static str, &'static str, &'static [&'static str]) {
    match sub {
        "status" => ("", "", "", &["get", "patch", "update"]),
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "log" => ("", "v1", "Pod", &["get"]),
        "binding" => ("", "v1", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
        "finalize" => ("", "v1", "Namespace", &["update"]),
        _ => ("", rt.version, rt.kind, &["get"]),
    }
}

/// `GET /api` and `GET /apis` with `Accept: …as=APIGroupDiscoveryList`: every group of `legacy`
/// (core) or of the named groups.
pub fn aggregated(legacy: bool) -> Value {
    let items: Vec<Value> = resource::groups()
        .into_iter()
        .filter(|(group, _)| group.is_empty() == legacy)
        .map(|(group, version)| {
            let resources: Vec<Value> = resource::all()
                .filter(|r| r.group == group && r.version == version)
                .map(|r| {
                    let subresources: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|s| {
                            let (g, v, k, verbs) = subresource(r, s);
                            let (g, v, k) = if k.is_empty() { (r.group, r.version, r.kind) } else { (g, v, k) };
                            json!({"subresource": s, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": verbs})
                        })
                        .collect();
                    json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": VERBS,
                        "shortNames": r.short_names,
                        "categories": r.categories,
                        "subresources": subresources,
                    })
                })
                .collect();
            json!({
                "metadata": {"name": group, "creationTimestamp": null},
                "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    let mut items = items;
    if !legacy {
        items.push(json!({
            "metadata": {"name": AUTHORIZATION.0, "creationTimestamp": null},
            "versions": [{"version": AUTHORIZATION.1, "resources": [authorization_resource(true)], "freshness": "Current"}],
        }));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// `GET /api` (legacy).
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// `GET /apis` (legacy).
pub fn api_groups() -> Value {
    let groups: Vec<Value> = resource::groups()
        .into_iter()
        .chain(std::iter::once(AUTHORIZATION))
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| group(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>` (legacy), if the group is served.
pub fn api_group(name: &str) -> Option<Value> {
    resource::groups().into_iter().chain(std::iter::once(AUTHORIZATION)).find(|(g, _)| *g == name && !g.is_empty()).map(
        |(g, v)| {
            let mut doc = group(g, v);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        },
    )
}

fn group(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `GET /api/v1` or `GET /apis/<group>/<version>` (legacy): the APIResourceList, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if (group, version) == AUTHORIZATION {
        let resources = [authorization_resource(false)];
        let group_version = format!("{group}/{version}");
        return Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        );
    }
    if !resource::groups().contains(&(group, version)) {
        return None;
    }
    let mut resources = Vec::new();
    for r in resource::all().filter(|r| r.group == group && r.version == version) {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        for s in r.subresources {
            let (g, v, k, verbs) = subresource(r, s);
            let mut entry = json!({
                "name": format!("{}/{s}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": if k.is_empty() { r.kind } else { k },
                "verbs": verbs,
            });
            if !g.is_empty() {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            resources.push(entry);
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_gives_every_resource_a_scope_and_a_response_kind() {
        let doc = aggregated(true);
        let resources = doc["items"][0]["versions"][0]["resources"].as_array().expect("resources");
        assert!(resources.iter().any(|r| r["resource"] == "pods" && r["shortNames"][0] == "po"));
        for r in resources {
            assert!(r["scope"] == "Namespaced" || r["scope"] == "Cluster");
            assert!(r["responseKind"]["kind"].is_string());
        }
        let apps = aggregated(false);
        assert_eq!(apps["items"][0]["metadata"]["name"], "apps");
    }

    #[test]
    fn legacy_discovery_lists_eviction_in_the_policy_group() {
        let doc = resource_list("", "v1").expect("core");
        let eviction =
            doc["resources"].as_array().expect("list").iter().find(|r| r["name"] == "pods/eviction").cloned();
        assert_eq!(eviction.expect("eviction")["group"], "policy");
        assert!(resource_list("nope", "v1").is_none());
    }
}
