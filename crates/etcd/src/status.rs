//! The one table from store errors to the gRPC statuses etcd clients recognise (etcd's
//! `rpctypes`): same code, same message text.

use tonic::Code;
use tonic::Status;
use trireme_store::StoreError;

/// Translates a store error into etcd's gRPC status.
pub fn to_status(e: StoreError) -> Status {
    let (code, message) = match &e {
        StoreError::Compacted { .. } => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".to_string())
        }
        StoreError::FutureRevision { .. } => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".to_string())
        }
        StoreError::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found".to_string()),
        StoreError::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found".to_string()),
        StoreError::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists".to_string()),
        StoreError::LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL".to_string()),
        StoreError::Fenced { .. } => (Code::FailedPrecondition, format!("etcdserver: {e}")),
        StoreError::NoLeader => (Code::Unavailable, "etcdserver: no leader".to_string()),
        StoreError::Timeout => (Code::Unavailable, "etcdserver: request timed out".to_string()),
        StoreError::DuplicateKey => {
            (Code::InvalidArgument, "etcdserver: duplicate key given in txn request".to_string())
        }
        StoreError::TooManyOps => (Code::InvalidArgument, "etcdserver: too many operations in txn request".to_string()),
        StoreError::RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large".to_string()),
        StoreError::MemberNotFound => (Code::NotFound, "etcdserver: member not found".to_string()),
        StoreError::MemberExists => (Code::FailedPrecondition, "etcdserver: member ID already exist".to_string()),
        StoreError::InvalidMembership(m) => (Code::FailedPrecondition, format!("etcdserver: {m}")),
        StoreError::InvalidArgument(m) => (Code::InvalidArgument, format!("etcdserver: {m}")),
        StoreError::Stopped => (Code::Unavailable, "etcdserver: server stopped".to_string()),
        StoreError::Io(err) => (Code::Internal, format!("etcdserver: storage error: {err}")),
        StoreError::Raft(m) => (Code::Unavailable, format!("etcdserver: {m}")),
    };
    Status::new(code, message)
}

/// etcd's answer when the space quota is exhausted.
pub fn no_space() -> Status {
    Status::resource_exhausted("etcdserver: mvcc: database space exceeded")
}

/// etcd's answer to a watch opened with `hasleader` on a member without a leader.
pub fn no_leader() -> Status {
    Status::unavailable("etcdserver: no leader")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_and_leader_errors_match_etcd_exactly() {
        let s = to_status(StoreError::Compacted { compact_revision: 5 });
        assert_eq!(
            (s.code(), s.message()),
            (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        );
        let s = to_status(StoreError::NoLeader);
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "etcdserver: no leader"));
        let s = to_status(StoreError::LeaseNotFound);
        assert_eq!((s.code(), s.message()), (Code::NotFound, "etcdserver: requested lease not found"));
    }
}
