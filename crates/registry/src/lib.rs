//! Kubernetes objects over the replicated store: the one way the API server, the scheduler and
//! the controllers reach objects.
//!
//! - [`Registry`] (in `registry.rs`): typed CRUD, list and watch with compare-and-swap writes,
//!   creation bookkeeping, graceful deletion and service address allocation, each kind's
//!   behaviour taken from its strategy in `trireme-model`;
//! - [`informer`]: watch-fed, typed, indexed caches for the scheduler and controllers;
//! - [`workqueue`]: keys to reconcile, one worker per key, with backoff;
//! - [`controller`]: the builder that wires a controller from informers, a queue and a
//!   reconcile;
//! - [`retry`]: the backoff for retrying work the store failed (informers, the API server's
//!   start);
//! - the scale subresource (`Registry::get_scale`, `Registry::update_scale`, in `scale.rs`);
//! - the TokenRequest subresource (`Registry::token_request`, in [`token`]);
//! - typed writes (`Registry::create_object`, `Registry::update_object`, in `typed.rs`);
//! - [`events`]: the Events they record.
//!
//! It depends on `trireme-model` (what an object is) and `trireme-store` (where it lives); the
//! API server, the scheduler and the controllers build on it, never the other way round.

pub mod controller;
pub mod events;
pub mod informer;
mod registry;
pub mod retry;
mod scale;
pub mod token;
mod typed;
pub mod workqueue;

pub use registry::*;
pub use scale::scale_of;
pub use typed::from_value;
pub use typed::metadata_of;
pub use typed::to_value;
