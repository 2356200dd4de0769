//! `v1` Namespace: DNS-1123 label names, the `kubernetes` finalizer, deletion finished by the namespace controller; `default`, `kube-system` and `kube-public` may not be deleted.
use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec, NamespaceStatus};
use serde_json::Value;

use super::prelude::*;

/// How namespaces are served.
const RES: &ResourceType = &ResourceType {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    short_names: &["ns"],
    namespaced: false,
    subresources: &["status", "finalize"],
    categories: &[],
    storage: "namespaces",
};

/// The namespaces Kubernetes refuses to delete.
pub const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// The namespaces kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Namespaces;

impl Kind for Namespaces {
    type Object = Namespace;
    const RESOURCE: &'static ResourceType = RES;
    const NAME_RULE: NameRule = NameRule::Label;
    const TRACKS_GENERATION: bool = true;
    const FIELD_CONVERSION: bool = true;
    const DELETED_BY_CONTROLLER: bool = true;

    fn default(ns: &mut Namespace) {
        default_namespace(ns);
    }

    fn default_on_create(ns: &mut Namespace) {
        default_namespace_on_create(ns);
    }

    fn columns() -> &'static [Column] {
        NAMESPACE_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        vec![name(object), text(&object["status"]["phase"]).into(), age(object, now)]
    }

    fn field(object: &Value, field: &str) -> Option<String> {
        match field {
            "metadata.name" => Some(text(&object["metadata"]["name"])),
            "status.phase" => Some(text(&object["status"]["phase"])),
            _ => None,
        }
    }

    fn undeletable(name: &str) -> Option<String> {
        IMMORTAL_NAMESPACES
            .contains(&name)
            .then(|| format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"))
    }
}

/// Namespace: `status.phase` `Active` when empty.
pub fn default_namespace(ns: &mut Namespace) {
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    if status.phase.as_deref().is_none_or(str::is_empty) {
        status.phase = Some("Active".into());
    }
}

/// Namespace, on create only: `spec.finalizers` `["kubernetes"]`. (On update the namespace
/// controller may have removed it, and it must not come back.)
pub fn default_namespace_on_create(ns: &mut Namespace) {
    let spec = ns.spec.get_or_insert_with(NamespaceSpec::default);
    let finalizers = spec.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == "kubernetes") {
        finalizers.push("kubernetes".into());
    }
}

pub(crate) static NAMESPACE_COLUMNS: &[Column] =
    &[NAME, column("Status", "string", "The status of the namespace"), AGE];

#[cfg(test)]
mod tests {
    mod validation {
        use crate::testing::validation::*;

        #[test]
        fn namespace_names_must_be_dns_labels() {
            let namespaces = resource("", "namespaces");
            let ns = Namespace {
                metadata: ObjectMeta { name: Some("team.a".into()), ..ObjectMeta::default() },
                ..Namespace::default()
            };
            let errs = validate(namespaces, &ns);
            assert_eq!(errs.len(), 1);
            assert!(errs[0].message.contains("RFC 1123 label"), "{}", errs[0]);
        }
    }
    mod defaults {
        use crate::testing::defaults::*;

        #[test]
        fn namespace_is_active_and_gets_the_kubernetes_finalizer_on_create() {
            let mut ns = Namespace::default();
            default_namespace(&mut ns);
            assert_eq!(ns.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Active"));
            assert_eq!(ns.spec, None, "the finalizer is added on create only");
            default_namespace_on_create(&mut ns);
            default_namespace_on_create(&mut ns);
            assert_eq!(ns.spec.and_then(|s| s.finalizers), Some(vec!["kubernetes".to_string()]));
        }
    }
}
