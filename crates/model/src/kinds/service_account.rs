//! `v1` ServiceAccount: the printer.
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;

use super::prelude::*;

/// How serviceaccounts are served.
const RES: &ResourceType = &ResourceType {
    group: "",
    version: "v1",
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    short_names: &["sa"],
    namespaced: true,
    subresources: &["token"],
    categories: &[],
    storage: "serviceaccounts",
};

/// The serviceaccounts kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceAccounts;

impl Kind for ServiceAccounts {
    type Object = ServiceAccount;
    const RESOURCE: &'static ResourceType = RES;

    fn columns() -> &'static [Column] {
        SERVICE_ACCOUNT_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        vec![name(object), len(&object["secrets"]).into(), age(object, now)]
    }
}

pub(crate) static SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are \
         allowed to use.",
    ),
    AGE,
];
