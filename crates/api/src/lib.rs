//! The Kubernetes object model Trireme's API server and controllers share.
//!
//! - [`resource`]: the table of served resource types (discovery, routing, storage);
//! - [`keys`], [`version`]: where objects live in the store and how a resourceVersion maps to a
//!   store revision;
//! - [`selector`]: the one parser of label and field selectors; [`fields`] reads the fields a
//!   field selector may name;
//! - [`kinds`], [`defaults`], [`validation`], [`names`], [`field`]: typed decoding through
//!   k8s-openapi, defaulting and validation with Kubernetes' messages;
//! - [`patch`]: JSON, merge, strategic-merge and apply patches; [`managed`]: managedFields;
//! - [`table`]: the columns `kubectl get` prints;
//! - [`informer`]: watch-fed caches and work queues for the scheduler and controllers; [`events`]:
//!   the Events they record;
//! - [`registry`]: typed CRUD, list and watch over the replicated store, the one way the API
//!   server and the controllers reach objects.
//!
//! It depends on `trireme-store` only (for the registry); the API server and the controllers
//! build on it, never the other way round.

pub mod defaults;
pub mod events;
pub mod field;
pub mod fields;
pub mod informer;
pub mod keys;
pub mod kinds;
pub mod managed;
pub mod names;
pub mod patch;
pub mod registry;
pub mod resource;
pub mod selector;
pub mod table;
pub mod validation;
pub mod version;
