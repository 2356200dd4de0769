//! The chaos suite (issue #8): real `trireme master` and `trireme node` processes on loopback,
//! killed, paused and partitioned under load, with the recorded histories checked against
//! models afterwards. Entry point: [`run::run`], behind the `trireme-chaos` binary.
//!
//! It drives the cluster only through its public interfaces — the etcd v3 gRPC API
//! (`trireme-proto`) and the Kubernetes API (`kube`, with the node agent's failover client) —
//! and must never depend on `trireme-store` or anything above it (no RocksDB here).
//!
//! - Pure checkers, no I/O: [`linearizability`] (Wing–Gong–Lowe for registers),
//!   [`watchcheck`], [`kubecheck`], plus [`schedule`] (the seeded fault plan) and [`stats`].
//! - The harness: [`cluster`] (processes), [`proxy`] (the peer-link fault proxy), [`faults`]
//!   (one fault at a time), [`reaper`] (kill everything on any exit).
//! - Workloads: [`registers`], [`acks`], [`watchers`], [`deployments`], and the write-gap
//!   [`probe`]; [`history`] is what they record.
//! - [`run`] ties a run together and [`report`] writes `report.md` and `report.json`.

pub mod acks;
pub mod cluster;
pub mod config;
pub mod deployments;
pub mod etcd;
pub mod faults;
pub mod history;
pub mod kubecheck;
pub mod linearizability;
pub mod probe;
pub mod proxy;
pub mod reaper;
pub mod registers;
pub mod report;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod watchcheck;
pub mod watchers;

/// Loopback ports below the ephemeral range for the processes the suite starts (the same
/// allocator the `trireme up` command and the tests use).
pub(crate) use trireme_testkit::ports;
