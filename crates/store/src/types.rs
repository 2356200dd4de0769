//! The store's commands and results: etcd's KV, lease and compaction semantics as Rust types.
//!
//! These are the payload of the Raft log ([`Request`]) and the result of applying it
//! ([`Response`]), and the read-side request and result types. They mirror etcd's v3 messages
//! so that the etcd gRPC edge only converts field by field.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// A member of the cluster as Raft knows it: its name and where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Human name (`--name`), unique in the cluster.
    pub name: String,
    /// URLs peers use for Raft traffic (`--initial-advertise-peer-urls`).
    pub peer_urls: Vec<String>,
    /// URLs clients use (`--advertise-client-urls`).
    pub client_urls: Vec<String>,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_urls.join(","))
    }
}

/// A key with its MVCC bookkeeping, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Revision of the last creation of this key (reset by a delete).
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// Number of modifications since creation; 0 means deleted.
    pub version: i64,
    pub value: Vec<u8>,
    /// Lease attached to the key, 0 for none.
    pub lease: i64,
}

/// What happened to a key at one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Put,
    Delete,
}

/// A watch event. For a delete, `kv` holds the key and the deleting revision only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventType,
    pub kv: KeyValue,
    /// The key's previous version, when it is still in history.
    pub prev_kv: Option<KeyValue>,
}

/// Order of a range result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

/// Field a range result is sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A read of one key or a key range, as etcd's `RangeRequest`.
///
/// `range_end` empty means the single key `key`; `range_end == [0]` means every key `>= key`;
/// otherwise the half-open range `[key, range_end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// At most this many keys; 0 for no limit.
    pub limit: i64,
    /// Read at this revision; 0 or negative for the current one.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Serve from local state without a read barrier.
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

/// The result of a [`RangeRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// Number of keys in range (before `limit`).
    pub count: i64,
}

/// A write of one key, as etcd's `PutRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    /// Keep the current value; the key must exist.
    pub ignore_value: bool,
    /// Keep the current lease; the key must exist.
    pub ignore_lease: bool,
}

/// The result of a [`PutRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
}

/// A delete of one key or a range (same range rules as [`RangeRequest`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

/// The result of a [`DeleteRangeRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// How a [`Compare`] relates the key's field to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// The field of a key a [`Compare`] looks at, with the value to compare against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

/// One guard of a transaction. With a `range_end` it must hold for every key in the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub op: CompareOp,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

/// The result of one [`RequestOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// A mini-transaction: if every compare holds run `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// The result of a [`TxnRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// A state change proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    /// Forget history below `revision`.
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// Records the cluster id once, when a new cluster first elects a leader.
    SetClusterId {
        cluster_id: u64,
    },
}

/// A log entry's payload: a command, optionally fenced by the Raft term of its proposer's
/// leadership (see [`Request::fence`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// If set, the command is applied only when the entry was appended in this term: a leader
    /// that has since been deposed cannot have its fenced writes applied.
    pub fence: Option<u64>,
    pub command: Command,
}

impl Request {
    /// An unfenced request.
    pub fn new(command: Command) -> Self {
        Request { fence: None, command }
    }

    /// A request fenced to the leadership term `term`.
    pub fn fenced(command: Command, term: u64) -> Self {
        Request { fence: Some(term), command }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        match &self.command {
            Command::Put(p) => write!(f, "put {}", show(&p.key))?,
            Command::DeleteRange(d) => write!(f, "delete {}..{}", show(&d.key), show(&d.range_end))?,
            Command::Txn(t) => write!(f, "txn({} cmp, {}/{} ops)", t.compare.len(), t.success.len(), t.failure.len())?,
            Command::Compact { revision } => write!(f, "compact {revision}")?,
            Command::LeaseGrant { id, ttl } => write!(f, "lease grant {id:x} ttl {ttl}")?,
            Command::LeaseRevoke { id } => write!(f, "lease revoke {id:x}")?,
            Command::SetClusterId { cluster_id } => write!(f, "cluster id {cluster_id:x}")?,
        }
        if let Some(term) = self.fence {
            write!(f, " fenced@{term}")?;
        }
        Ok(())
    }
}

/// Why applying a command changed nothing. Deterministic: every member reaches the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("key not found")]
    KeyNotFound,
    #[error("required revision has been compacted (compacted at {compact_revision})")]
    Compacted { compact_revision: i64 },
    #[error("required revision is a future revision (current {current})")]
    FutureRevision { current: i64 },
    #[error("write fenced at term {fence} was appended in term {term}: leadership was lost")]
    Fenced { fence: u64, term: u64 },
}

/// The outcome of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// An entry without a command (leader no-op, membership change).
    Noop,
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact,
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke,
    Rejected(ApplyError),
}

/// What applying one log entry returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Store revision after the entry was applied.
    pub revision: i64,
    pub outcome: Outcome,
}

impl Default for Response {
    fn default() -> Self {
        Response { revision: 0, outcome: Outcome::Noop }
    }
}

/// A range of keys in etcd's encoding (`range_end` empty: one key; `[0]`: from `key` on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    /// Exclusive end; `None` means unbounded.
    pub end: Option<Vec<u8>>,
    /// Only `start` itself.
    pub single: bool,
}

impl KeyRange {
    /// Interprets etcd's `(key, range_end)` pair.
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange { start: key.to_vec(), end: None, single: true },
            [0] => KeyRange { start: key.to_vec(), end: None, single: false },
            end => KeyRange { start: key.to_vec(), end: Some(end.to_vec()), single: false },
        }
    }

    /// Whether `key` falls in this range.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.single {
            return key == self.start.as_slice();
        }
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// Whether iteration from `start` has gone past this range at `key`.
    pub fn is_past(&self, key: &[u8]) -> bool {
        if self.single {
            return key > self.start.as_slice();
        }
        self.end.as_deref().is_some_and(|end| key >= end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_range_follows_etcd_encoding() {
        let one = KeyRange::new(b"a", b"");
        assert!(one.contains(b"a") && !one.contains(b"ab"));
        let from = KeyRange::new(b"b", b"\0");
        assert!(from.contains(b"zzz") && !from.contains(b"a"));
        let half_open = KeyRange::new(b"a", b"c");
        assert!(half_open.contains(b"b") && !half_open.contains(b"c"));
        assert!(half_open.is_past(b"c") && !half_open.is_past(b"bz"));
    }
}
