//! Trireme's scheduler: assigns pending pods to nodes, the way Kubernetes' default scheduler
//! does, on the master that is Raft leader.
//!
//! The entry point is [`Scheduler`]: built over the term's fenced registry and the pod and node
//! informers, then [`Scheduler::run`] until leadership ends. The crate is two halves:
//!
//! - pure logic, testable without a cluster: [`resources`] (what a pod requests), [`nodeinfo`]
//!   (a pod to place, a node with the pods on it), [`filter`] (which nodes can take the pod,
//!   with Kubernetes' reasons), [`score`] (which of them suits it best), [`schedule`] (filter,
//!   score and pick, and the `0/N nodes are available: …` message);
//! - the runtime: [`cache`] (nodes and per-node totals kept current from informer events,
//!   plus pods assumed while their bind is under way), [`queue`] (pending pods, backoff, and
//!   retries when the cluster changes), and the loop in [`scheduler`].
//!
//! It acts only through `trireme_model`'s registry and informers, never on store keys.

pub mod cache;
pub mod filter;
pub mod nodeinfo;
pub mod queue;
pub mod resources;
pub mod schedule;
pub mod scheduler;
pub mod score;
#[cfg(test)]
mod testing;

pub use scheduler::DEFAULT_SCHEDULER;
pub use scheduler::Scheduler;
