//! The resource types Trireme serves, as discovery, routing and storage see them. Each kind
//! declares its own in its module under [`crate::kinds`]; [`all`] reads them off
//! [`crate::kinds::KINDS`], so a resource is added in one place.

/// One served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; `""` is the core (legacy `/api/v1`) group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind of one object (`Pod`).
    pub kind: &'static str,
    /// Plural resource name, used in URLs and storage keys (`pods`).
    pub plural: &'static str,
    /// Singular name (`pod`).
    pub singular: &'static str,
    /// Short names kubectl accepts (`po`).
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Subresources served (`status`, `scale`, `log`, ...).
    pub subresources: &'static [&'static str],
    /// Discovery categories (`all`).
    pub categories: &'static [&'static str],
    /// Where objects live in the store (`/registry/<storage>/...`); differs from `plural` only
    /// when two API groups serve the same objects.
    pub storage: &'static str,
}

impl ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `pods` for the core group, `deployments.apps` otherwise: how Kubernetes names the
    /// resource in error messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `Pod` for the core group, `Deployment.apps` otherwise: the prefix of an Invalid message.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() { self.kind.to_string() } else { format!("{}.{}", self.kind, self.group) }
    }

    /// The URL path of the collection (`/api/v1/namespaces/ns/pods`, `/apis/apps/v1/deployments`).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{root}/namespaces/{ns}/{}", self.plural),
            _ => format!("{root}/{}", self.plural),
        }
    }
}

/// Every served resource type, in discovery order (the order of [`crate::kinds::KINDS`]).
pub fn all() -> impl Iterator<Item = &'static ResourceType> {
    crate::kinds::KINDS.iter().map(|k| k.resource())
}

/// The API groups served, in discovery order (the order their first kinds are registered in),
/// each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&'static str, &'static str)> = Vec::new();
    for r in all() {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    groups
}

/// The resource type served at `group/version` under `plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    all().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource type of objects with this `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    all().find(|r| r.api_version() == api_version && r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_found_by_its_url_and_its_kind() {
        for r in all() {
            assert_eq!(find(r.group, r.version, r.plural), Some(r));
            assert_eq!(by_kind(&r.api_version(), r.kind), Some(r));
            assert!(groups().contains(&(r.group, r.version)), "{} has no group entry", r.plural);
        }
    }

    #[test]
    fn groups_are_listed_in_discovery_order_once() {
        assert_eq!(
            groups(),
            [
                ("", "v1"),
                ("apps", "v1"),
                ("coordination.k8s.io", "v1"),
                ("discovery.k8s.io", "v1"),
                ("events.k8s.io", "v1")
            ]
        );
    }

    #[test]
    fn paths_follow_the_kubernetes_layout() {
        let pods = find("", "v1", "pods").expect("pods");
        assert_eq!(pods.collection_path(Some("default")), "/api/v1/namespaces/default/pods");
        let deploy = find("apps", "v1", "deployments").expect("deployments");
        assert_eq!(deploy.collection_path(None), "/apis/apps/v1/deployments");
        assert_eq!(deploy.qualified_kind(), "Deployment.apps");
    }
}
