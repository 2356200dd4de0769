//! `coordination.k8s.io/v1` Lease: the printer (its holder).
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::Value;

use super::prelude::*;

/// How leases are served.
const RES: &ResourceType = &ResourceType {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    short_names: &[],
    namespaced: true,
    subresources: &[],
    categories: &[],
    storage: "leases",
};

/// The leases kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Leases;

impl Kind for Leases {
    type Object = Lease;
    const RESOURCE: &'static ResourceType = RES;

    fn columns() -> &'static [Column] {
        LEASE_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        vec![name(object), text(&object["spec"]["holderIdentity"]).into(), age(object, now)]
    }
}

pub(crate) static LEASE_COLUMNS: &[Column] =
    &[NAME, column("Holder", "string", "holderIdentity contains the identity of the holder of a current lease."), AGE];
