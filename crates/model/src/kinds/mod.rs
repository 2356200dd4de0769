//! The built-in kinds, one module each, and [`KINDS`], the one table that registers them.
//!
//! Adding a built-in kind is one new file here (a unit struct implementing
//! [`crate::strategy::Kind`]) and one line in [`KINDS`]; discovery, routing, storage keys,
//! decoding, defaults, validation, tables and field selectors all read that table.

pub mod config_map;
pub mod deployment;
pub mod endpoint_slice;
pub mod endpoints;
pub mod event;
pub mod lease;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod replica_set;
pub mod replication_controller;
pub mod secret;
pub mod service;
pub mod service_account;

pub use config_map::ConfigMaps;
pub use deployment::Deployments;
pub use endpoint_slice::EndpointSlices;
pub use endpoints::EndpointsKind;
pub use event::Events;
pub use lease::Leases;
pub use namespace::Namespaces;
pub use node::Nodes;
pub use pod::Pods;
pub use replica_set::ReplicaSets;
pub use replication_controller::ReplicationControllers;
pub use secret::Secrets;
pub use service::Services;
pub use service_account::ServiceAccounts;

use serde_json::Value;

use crate::decode::{NormalizeOutcome, Rejected};
use crate::resource::ResourceType;
use crate::strategy::Strategy;

/// What the kind modules share: the strategy traits and the helpers of defaulting, validation,
/// tables and field selectors.
pub(crate) mod prelude {
    pub(crate) use std::collections::{BTreeMap, BTreeSet};

    pub(crate) use k8s_openapi::ByteString;
    pub(crate) use k8s_openapi::api::core::v1::PodTemplateSpec;
    pub(crate) use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    pub(crate) use crate::defaults::*;
    pub(crate) use crate::field::FieldError;
    pub(crate) use crate::fields;
    pub(crate) use crate::names::{dns1123_label, dns1123_subdomain};
    pub(crate) use crate::resource::ResourceType;
    pub(crate) use crate::strategy::{Allocation, Kind};
    pub(crate) use crate::table::*;
    pub(crate) use crate::validation::*;
}

/// Every served kind, in discovery order.
pub static KINDS: &[&dyn Strategy] = &[
    &namespace::Namespaces,
    &node::Nodes,
    &pod::Pods,
    &service::Services,
    &endpoints::EndpointsKind,
    &service_account::ServiceAccounts,
    &secret::Secrets,
    &config_map::ConfigMaps,
    &event::Events,
    &replication_controller::ReplicationControllers,
    &deployment::Deployments,
    &replica_set::ReplicaSets,
    &lease::Leases,
    &endpoint_slice::EndpointSlices,
    &event::EventsV1Events,
];

/// The strategy of a served resource type, or `None` when `resource` is not served.
pub fn strategy(resource: &ResourceType) -> Option<&'static dyn Strategy> {
    KINDS.iter().copied().find(|k| {
        let r = k.resource();
        std::ptr::eq(r, resource)
            || (r.group == resource.group && r.version == resource.version && r.plural == resource.plural)
    })
}

/// Decodes, defaults and validates an object written to `resource` through its strategy
/// ([`Strategy::normalize`]). If `resource` is not served, returns a `BadRequest`.
pub fn normalize(
    resource: &ResourceType,
    object: Value,
    old: Option<&Value>,
    strict: bool,
) -> Result<NormalizeOutcome, Rejected> {
    match strategy(resource) {
        Some(kind) => kind.normalize(object, old, strict),
        None => {
            Err(Rejected::BadRequest(format!("the server does not know how to decode {}", resource.qualified_plural())))
        }
    }
}
