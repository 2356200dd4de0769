//! Requests a member hands to the leader over the peer network, and their answers.

use serde::Deserialize;
use serde::Serialize;

use crate::lease::LeaseTtl;
use crate::types::Member;
use crate::types::Request;
use crate::types::Response;

/// Something only the leader can do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Propose a command; answered once the leader applied it.
    Write(Request),
    /// Confirm leadership and return the log index a linearizable read must wait for.
    ReadIndex,
    /// Renew a lease on the leader's clock.
    LeaseKeepAlive { id: i64 },
    /// Granted and remaining TTL from the leader's clock.
    LeaseTimeToLive { id: i64 },
    /// Add a non-voting member.
    AddLearner { id: u64, member: Member },
    /// Make a learner a voter; with `caught_up`, only one that has nearly all of the log (etcd's
    /// rule for `member promote`).
    Promote { id: u64, caught_up: bool },
    /// Remove a member.
    Remove { id: u64 },
    /// Replace a member's name and URLs.
    UpdateMember { id: u64, member: Member },
    /// Hand leadership to a member.
    TransferLeader { to: u64 },
    /// The cluster id and membership as the receiver knows them (any member answers).
    ListMembers,
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardResponse {
    /// Applied at this log index with this response.
    Written { index: u64, response: Response },
    /// Wait until this index is applied, then read.
    ReadIndex { index: u64 },
    /// Lease TTL, `None` if the lease does not exist.
    Lease(Option<LeaseTtl>),
    /// Membership changed at this log index.
    MembershipChanged { index: u64 },
    /// Leadership transfer started.
    TransferStarted,
    /// Cluster id and members: (id, member, is learner), and whether the answering member is
    /// the leader (whose view is the newest).
    Members { cluster_id: u64, members: Vec<(u64, Member, bool)>, from_leader: bool, membership_index: u64 },
    /// The receiver is not the leader (anymore); `leader` is who it thinks leads.
    NotLeader { leader: Option<u64> },
    /// The request failed on the leader.
    Failed { message: String, kind: FailureKind },
}

/// Why a forwarded request failed, for the caller's error mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The member named in a membership change does not exist.
    MemberNotFound,
    /// The member already exists.
    MemberExists,
    /// The change is not allowed (e.g. a membership change is in progress).
    InvalidMembership,
    /// The leader could not confirm its leadership with a quorum just now (a follower died or
    /// is slow): worth asking again until the request's deadline.
    Unconfirmed,
    /// Anything else.
    Other,
}
