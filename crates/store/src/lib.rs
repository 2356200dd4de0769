//! Trireme's replicated MVCC key-value store: openraft on RocksDB with etcd's semantics.
//!
//! Entry point: [`Store`] — open a member with a [`StoreConfig`], serve [`Store::peer_server`]
//! on its peer address, [`Store::initialize`] a new cluster once, then write, read, watch and
//! manage leases and membership through it.
//!
//! Map:
//! - [`types`]: commands and results (etcd's KV, lease and compaction semantics);
//! - [`schema`]: every column family and key encoding;
//! - `mvcc`: applying commands and reading state, free of Raft;
//! - `raft`: openraft storage, state machine, snapshots and the peer network;
//! - [`watch`]: the watch hub; [`lease`]: lease clocks;
//! - [`membership`]: a member publishing itself and noticing its removal; [`scheduled`]:
//!   verified snapshots taken on a schedule while this member leads;
//! - [`links`]: peer links that tests cut to partition members running in one process.
//!
//! This crate knows nothing of etcd's wire protocol or of Kubernetes; those edges depend on it.

pub mod backup;
mod compaction;
mod config;
mod db;
mod error;
pub mod identity;
pub mod lease;
pub mod links;
pub mod membership;
mod mvcc;
mod raft;
pub mod restore;
pub mod scheduled;
pub mod schema;
mod state;
mod store;
pub mod types;
mod validate;
pub mod watch;

pub use config::ConfigError;
pub use config::StoreConfig;
pub use error::StoreError;
pub use lease::LeaseTtl;
pub use raft::recover;
pub use store::Discovered;
pub use store::LeaseInfo;
pub use store::MemberInfo;
pub use store::Store;
pub use store::StoreStatus;
pub use validate::MAX_LEASE_TTL;
pub use watch::WatchMessage;
pub use watch::WatchStream;
