//! The Kubernetes object model Trireme's API server and controllers share.
//!
//! So far: where objects live in the store ([`keys`]), how a resourceVersion maps to a store
//! revision ([`version`]), the one parser of label and field selectors ([`selector`]), and the
//! name rules with Kubernetes' messages ([`names`]).
//! Typed objects (k8s-openapi), validation, defaulting and the typed registry come with the API
//! server (issue #4). This crate depends on nothing of Trireme's: the API server and the
//! controllers build on it, never the other way round.

pub mod keys;
pub mod names;
pub mod selector;
pub mod version;
