//! Everything openraft: the type configuration, log storage, state machine, snapshots and the
//! peer network. openraft 0.10 is an alpha whose API moves between releases; nothing outside
//! this module names an openraft type, so an upgrade stays inside it.

pub mod forward;
mod log_store;
pub mod mux;
pub mod network;
pub mod recover;
mod runtime;
mod server;
mod snapshot;
mod state_machine;

pub use forward::ForwardRequest;
pub use forward::ForwardResponse;
pub use log_store::LogStore;
pub use network::PeerNetwork;
pub use runtime::MemberRuntime;
pub use server::PeerService;
pub use snapshot::SnapshotDir;
pub use state_machine::Shared;
pub use state_machine::StateMachine;

use crate::types::Member;
use crate::types::Request;
use crate::types::Response;

openraft::declare_raft_types!(
    /// Trireme's Raft types: u64 member ids, [`Member`] addresses, [`Request`] entries.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = Member,
        AsyncRuntime = MemberRuntime,
);

/// A Raft log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A log id (leader term + node, index).
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// Membership as applied.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

#[cfg(test)]
mod conformance;
