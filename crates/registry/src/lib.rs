//! Kubernetes objects over the replicated store: the one way the API server, the scheduler and
//! the controllers reach objects.
//!
//! - [`Registry`] (in `registry.rs`): typed CRUD, list and watch with compare-and-swap writes,
//!   creation bookkeeping, graceful deletion and service address allocation, each kind's
//!   behaviour taken from its strategy in `trireme-model`;
//! - [`informer`]: watch-fed caches and work queues for the scheduler and controllers;
//! - [`events`]: the Events they record.
//!
//! It depends on `trireme-model` (what an object is) and `trireme-store` (where it lives); the
//! API server, the scheduler and the controllers build on it, never the other way round.

pub mod events;
pub mod informer;
mod registry;

pub use registry::*;
