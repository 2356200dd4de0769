//! The Kubernetes object model Trireme's API server, registry and controllers share. No I/O:
//! no store, no runtime; everything here is a function of its arguments.
//!
//! - [`strategy`]: what a kind does on the server (decoding, defaults, validation, table,
//!   selectable fields, deletion and allocation hooks), behind one trait; [`kinds`]: one module
//!   per built-in kind and the table that registers them;
//! - [`resource`]: the served resource types (discovery, routing, storage), read off that table;
//! - [`keys`], [`version`]: where objects live in the store and how a resourceVersion maps to a
//!   store revision;
//! - [`selector`]: the one parser of label and field selectors; [`fields`] reads the fields a
//!   field selector may name;
//! - [`decode`], [`defaults`], [`validation`], [`names`], [`field`]: typed decoding through
//!   k8s-openapi, defaulting and validation with Kubernetes' messages;
//! - [`patch`]: JSON, merge, strategic-merge and apply patches; [`managed`]: managedFields;
//! - [`quantity`]: the one parser of resource quantities (`100m`, `1.5Gi`);
//! - [`table`]: the columns `kubectl get` prints.
//!
//! It depends on no other Trireme crate; `trireme-registry` stores these objects.

pub mod decode;
pub mod defaults;
pub mod field;
pub mod fields;
pub mod keys;
pub mod kinds;
pub mod managed;
pub mod names;
pub mod patch;
pub mod quantity;
pub mod resource;
pub mod selector;
pub mod strategy;
pub mod table;
#[cfg(test)]
mod testing;
pub mod validation;
pub mod version;
