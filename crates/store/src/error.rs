//! The store's error type: what callers (the etcd and Kubernetes edges) map to their statuses.

use std::io;

use crate::mvcc::ReadError;
use crate::types::ApplyError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested revision is below the compaction point.
    #[error("mvcc: required revision has been compacted")]
    Compacted { compact_revision: i64 },
    /// The requested revision is above the current one.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision { current: i64 },
    /// A put with `ignore_value`/`ignore_lease` on a missing key.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A TTL outside what leases accept.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A fenced write whose leadership term is over.
    #[error("write fenced at term {fence} was rejected: leadership moved to term {term}")]
    Fenced { fence: u64, term: u64 },
    /// No leader is known (election in progress or no quorum).
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The outcome of a write is unknown: it may or may not have been applied.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// A transaction names the same key twice among its writes.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A transaction has more operations than allowed.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A request larger than allowed.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    /// A membership change the cluster refuses now (another in progress, would lose quorum...).
    #[error("etcdserver: {0}")]
    InvalidMembership(String),
    /// A request that makes no sense (empty key, bad range).
    #[error("etcdserver: {0}")]
    InvalidArgument(String),
    /// The member is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// Local storage failed.
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    /// Raft or the peer network failed in a way not listed above.
    #[error("raft: {0}")]
    Raft(String),
}

impl From<ApplyError> for StoreError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::LeaseNotFound => StoreError::LeaseNotFound,
            ApplyError::LeaseExists => StoreError::LeaseExists,
            ApplyError::KeyNotFound => StoreError::KeyNotFound,
            ApplyError::Compacted { compact_revision } => StoreError::Compacted { compact_revision },
            ApplyError::FutureRevision { current } => StoreError::FutureRevision { current },
            ApplyError::Fenced { fence, term } => StoreError::Fenced { fence, term },
        }
    }
}

impl From<ReadError> for StoreError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Compacted { compact_revision } => StoreError::Compacted { compact_revision },
            ReadError::FutureRevision { current, .. } => StoreError::FutureRevision { current },
            ReadError::Io(e) => StoreError::Io(e),
        }
    }
}
