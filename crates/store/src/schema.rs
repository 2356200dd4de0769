//! Every RocksDB column family and key layout of the store, in one place.
//!
//! A member's data dir holds two RocksDB instances:
//!
//! | dir | column family | key | value |
//! |---|---|---|---|
//! | `raft/` | `log` | log index, u64 BE | openraft entry (bincode) |
//! | `raft/` | `raft_meta` | [`META_VOTE`], [`META_COMMITTED`], [`META_PURGED`] | vote / log id (bincode) |
//! | `state-N/` | `kv` | user key | [`KvRecord`]: the live version of the key |
//! | `state-N/` | `revs` | [`Revision`] (main u64 BE, sub u32 BE) | [`RevRecord`]: one change, in revision order |
//! | `state-N/` | `key_index` | [`escape_key`]`(user key)` ++ revision | 1 byte: 1 = tombstone |
//! | `state-N/` | `leases` | lease id, i64 BE | [`LeaseRecord`] |
//! | `state-N/` | `lease_keys` | lease id ++ user key | empty |
//! | `state-N/` | `sm_meta` | [`SM_APPLIED`], [`SM_MEMBERSHIP`], [`SM_REVISION`], [`SM_COMPACTED`], [`SM_CLUSTER_ID`] | bincode / u64 BE |
//!
//! The log lives apart from the state machine so that a snapshot (a checkpoint of `state-N`)
//! carries no log, and so that the state machine can be replaced whole when a snapshot is
//! installed.

use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Raft log entries by index.
pub const CF_LOG: &str = "log";
/// Raft vote, committed and purged log ids.
pub const CF_RAFT_META: &str = "raft_meta";
/// Column families of the `raft/` instance.
pub const RAFT_CFS: [&str; 2] = [CF_LOG, CF_RAFT_META];

/// Live keys.
pub const CF_KV: &str = "kv";
/// Every change by revision: the history that watches replay and past reads use.
pub const CF_REVS: &str = "revs";
/// Per-key index of revisions, for reads at a past revision.
pub const CF_KEY_INDEX: &str = "key_index";
/// Leases by id.
pub const CF_LEASES: &str = "leases";
/// Keys attached to each lease.
pub const CF_LEASE_KEYS: &str = "lease_keys";
/// State-machine bookkeeping.
pub const CF_SM_META: &str = "sm_meta";
/// Column families of a `state-N/` instance.
pub const STATE_CFS: [&str; 6] = [CF_KV, CF_REVS, CF_KEY_INDEX, CF_LEASES, CF_LEASE_KEYS, CF_SM_META];

/// `raft_meta`: the persisted vote.
pub const META_VOTE: &[u8] = b"vote";
/// `raft_meta`: the last committed log id openraft reported.
pub const META_COMMITTED: &[u8] = b"committed";
/// `raft_meta`: the last purged log id.
pub const META_PURGED: &[u8] = b"purged";

/// `sm_meta`: last applied log id.
pub const SM_APPLIED: &[u8] = b"applied";
/// `sm_meta`: last applied membership.
pub const SM_MEMBERSHIP: &[u8] = b"membership";
/// `sm_meta`: current store revision.
pub const SM_REVISION: &[u8] = b"revision";
/// `sm_meta`: revision below which history is gone.
pub const SM_COMPACTED: &[u8] = b"compacted";
/// `sm_meta`: the cluster id, u64 BE, set once.
pub const SM_CLUSTER_ID: &[u8] = b"cluster_id";

/// The live version of a key (the `kv` column family; the key itself is the RocksDB key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRecord {
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Vec<u8>,
    /// Where this version sits in `revs` (its sub-revision; main is `mod_revision`).
    pub sub: u32,
}

/// One change in history (the `revs` column family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevRecord {
    pub key: Vec<u8>,
    /// A delete: the key has no value at this revision.
    pub tombstone: bool,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Vec<u8>,
    /// The key's previous change, for `prev_kv` in replayed watch events.
    pub prev: Option<Revision>,
}

/// A lease (the `leases` column family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Granted time to live, seconds.
    pub ttl: i64,
}

/// A position in history: the main revision of a write transaction and the index of the change
/// inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Revision {
    pub main: i64,
    pub sub: u32,
}

impl Revision {
    /// Encoded length.
    pub const LEN: usize = 12;

    /// Big-endian encoding: byte order equals revision order.
    pub fn encode(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    /// Decodes [`Revision::encode`]'s output; `None` if `raw` has the wrong length.
    pub fn decode(raw: &[u8]) -> Option<Revision> {
        let main: [u8; 8] = raw.get(..8)?.try_into().ok()?;
        let sub: [u8; 4] = raw.get(8..12)?.try_into().ok()?;
        (raw.len() == Self::LEN)
            .then(|| Revision { main: u64::from_be_bytes(main) as i64, sub: u32::from_be_bytes(sub) })
    }
}

/// Log index key.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Lease id key.
pub fn lease_key(id: i64) -> [u8; 8] {
    (id as u64).to_be_bytes()
}

/// `lease_keys` key: lease id then user key.
pub fn lease_key_entry(id: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&lease_key(id));
    out.extend_from_slice(key);
    out
}

/// Order-preserving, prefix-free encoding of a user key: `0x00` becomes `0x00 0xFF`, and the
/// key ends with `0x00 0x01`. Byte order of encodings equals byte order of keys, and no
/// encoding is a prefix of another, so `escape_key(k) ++ revision` sorts by key, then revision.
pub fn escape_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + Revision::LEN);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
    out
}

/// Splits a `key_index` key into the user key and the revision.
pub fn split_index_key(raw: &[u8]) -> Option<(Vec<u8>, Revision)> {
    let split = raw.len().checked_sub(Revision::LEN)?;
    let (escaped, rev) = raw.split_at(split);
    let rev = Revision::decode(rev)?;
    let body = escaped.strip_suffix(&[0x00, 0x01])?;
    let mut key = Vec::with_capacity(body.len());
    let mut it = body.iter();
    while let Some(&b) = it.next() {
        key.push(b);
        if b == 0 && it.next() != Some(&0xFF) {
            return None;
        }
    }
    Some((key, rev))
}

/// `key_index` key for `key` at `rev`.
pub fn index_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = escape_key(key);
    out.extend_from_slice(&rev.encode());
    out
}

/// Encodes a stored value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
}

/// Decodes a stored value.
pub fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(raw, bincode::config::standard()).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keys_sort_like_keys_then_revisions() {
        let keys: [&[u8]; 5] = [b"", b"\0", b"\0\0", b"a", b"a\0b"];
        let mut encoded: Vec<Vec<u8>> = Vec::new();
        for k in keys {
            for main in [1, 7] {
                encoded.push(index_key(k, Revision { main, sub: 0 }));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        for (raw, (k, main)) in encoded.iter().zip(keys.iter().flat_map(|k| [(k, 1), (k, 7)])) {
            assert_eq!(split_index_key(raw), Some((k.to_vec(), Revision { main, sub: 0 })));
        }
    }

    #[test]
    fn revisions_round_trip_and_sort() {
        let a = Revision { main: 5, sub: 9 };
        let b = Revision { main: 6, sub: 0 };
        assert!(a.encode() < b.encode());
        assert_eq!(Revision::decode(&a.encode()), Some(a));
        assert_eq!(Revision::decode(&[1, 2]), None);
    }
}
