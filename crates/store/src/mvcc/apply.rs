//! Applying one command to the MVCC state: a pure function of the current state and the command,
//! producing the writes, the watch events, and the response.
//!
//! The current state is RocksDB plus the `pending` live keys of commands applied earlier in the
//! same batch and not yet written; the caller collects the writes of many commands into one
//! `WriteBatch`. Commands that read more than live keys must see everything written, so the
//! caller writes the batch before and after them ([`must_apply_alone`]). Nothing here knows Raft:
//! the caller adds the applied log id to the batch and writes it.

use std::collections::BTreeMap;
use std::io;

use rocksdb::DB;
use rocksdb::Direction;
use rocksdb::IteratorMode;
use rocksdb::WriteBatch;

use crate::db;
use crate::mvcc::read;
use crate::schema::CF_KEY_INDEX;
use crate::schema::CF_KV;
use crate::schema::CF_LEASE_KEYS;
use crate::schema::CF_LEASES;
use crate::schema::CF_REVS;
use crate::schema::CF_SM_META;
use crate::schema::KvRecord;
use crate::schema::LeaseRecord;
use crate::schema::RevRecord;
use crate::schema::Revision;
use crate::schema::SM_CLUSTER_ID;
use crate::schema::SM_COMPACTED;
use crate::schema::SM_REVISION;
use crate::schema::index_key;
use crate::schema::lease_key;
use crate::schema::lease_key_entry;
use crate::types::ApplyError;
use crate::types::Command;
use crate::types::Compare;
use crate::types::CompareOp;
use crate::types::CompareTarget;
use crate::types::DeleteRangeRequest;
use crate::types::DeleteRangeResponse;
use crate::types::Event;
use crate::types::EventType;
use crate::types::KeyRange;
use crate::types::KeyValue;
use crate::types::Outcome;
use crate::types::PutRequest;
use crate::types::PutResponse;
use crate::types::RangeRequest;
use crate::types::RequestOp;
use crate::types::ResponseOp;
use crate::types::TxnRequest;
use crate::types::TxnResponse;

/// The store's counters, as of the last applied entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Current revision.
    pub revision: i64,
    /// Reads and watches below this revision fail with `Compacted`.
    pub compacted: i64,
}

/// A lease change the lessor must hear about once the batch is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    Granted { id: i64, ttl: i64 },
    Revoked { id: i64 },
}

/// Live keys written by earlier commands of a batch that is not yet written to RocksDB
/// (`None`: deleted).
pub type Pending = BTreeMap<Vec<u8>, Option<KvRecord>>;

/// One write to a column family (`value: None` deletes the key).
pub struct Write {
    pub cf: &'static str,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Write {
    /// Adds this write to `batch`.
    pub fn add_to(self, db: &DB, batch: &mut WriteBatch) -> io::Result<()> {
        let cf = db::cf(db, self.cf)?;
        match self.value {
            Some(value) => batch.put_cf(cf, self.key, value),
            None => batch.delete_cf(cf, self.key),
        }
        Ok(())
    }
}

/// Everything applying one command produced.
pub struct Applied {
    pub writes: Vec<Write>,
    /// The live keys this command changed, for the pending view of later commands.
    pub changed: Pending,
    pub outcome: Outcome,
    pub counters: Counters,
    /// Events of the new revision (empty if nothing changed).
    pub events: Vec<Event>,
    pub lease_change: Option<LeaseChange>,
}

/// Adds `counters` to `batch`, to be written with the changes that moved them;
/// [`read::counters`] reads them back.
pub fn put_counters(db: &DB, batch: &mut WriteBatch, counters: Counters) -> io::Result<()> {
    let meta = db::cf(db, CF_SM_META)?;
    batch.put_cf(meta, SM_REVISION, counters.revision.to_be_bytes());
    batch.put_cf(meta, SM_COMPACTED, counters.compacted.to_be_bytes());
    Ok(())
}

/// Whether `command` reads state beyond live keys (history, leases, lease keys), so that every
/// earlier write must be in RocksDB before it runs, and its own before the next command.
pub fn must_apply_alone(command: &Command) -> bool {
    fn reads_history(ops: &[RequestOp]) -> bool {
        ops.iter().any(|op| match op {
            RequestOp::Range(r) => r.revision > 0,
            RequestOp::Txn(t) => reads_history(&t.success) || reads_history(&t.failure),
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
        })
    }
    match command {
        Command::Put(_) | Command::DeleteRange(_) => false,
        Command::Txn(t) => reads_history(&t.success) || reads_history(&t.failure),
        Command::Compact { .. }
        | Command::LeaseGrant { .. }
        | Command::LeaseRevoke { .. }
        | Command::SetClusterId { .. } => true,
    }
}

/// Applies `command` on top of `db` and `pending`, whose counters are `counters`.
///
/// On an [`ApplyError`] nothing is written and the counters are unchanged: a command either
/// applies whole or not at all.
pub fn apply_command(db: &DB, pending: &Pending, counters: Counters, command: &Command) -> io::Result<Applied> {
    let mut txn = TxnWriter::new(db, pending, counters);
    let result = match command {
        Command::Put(put) => txn.put(put).map(Outcome::Put),
        Command::DeleteRange(del) => txn.delete_range(del).map(Outcome::DeleteRange),
        Command::Txn(t) => txn.txn(t).map(Outcome::Txn),
        Command::Compact { revision } => txn.compact(*revision).map(|()| Outcome::Compact),
        Command::LeaseGrant { id, ttl } => {
            txn.lease_grant(*id, *ttl).map(|()| Outcome::LeaseGrant { id: *id, ttl: *ttl })
        }
        Command::LeaseRevoke { id } => txn.lease_revoke(*id).map(|()| Outcome::LeaseRevoke),
        Command::SetClusterId { cluster_id } => txn.set_cluster_id(*cluster_id).map(|()| Outcome::Noop),
    };
    match result {
        Ok(outcome) => Ok(txn.finish(outcome)),
        Err(TxnError::Rejected(e)) => Ok(Applied {
            writes: Vec::new(),
            changed: Pending::new(),
            outcome: Outcome::Rejected(e),
            counters,
            events: Vec::new(),
            lease_change: None,
        }),
        Err(TxnError::Io(e)) => Err(e),
    }
}

enum TxnError {
    Rejected(ApplyError),
    Io(io::Error),
}

impl From<io::Error> for TxnError {
    fn from(e: io::Error) -> Self {
        TxnError::Io(e)
    }
}

impl From<ApplyError> for TxnError {
    fn from(e: ApplyError) -> Self {
        TxnError::Rejected(e)
    }
}

/// One write transaction: every change shares the main revision `counters.revision + 1`;
/// reads inside it see its own earlier writes through `overlay`, and the batch's through
/// `pending`.
struct TxnWriter<'a> {
    db: &'a DB,
    pending: &'a Pending,
    /// Counters as this transaction changes them (compaction).
    counters: Counters,
    writes: Vec<Write>,
    overlay: Pending,
    main: i64,
    next_sub: u32,
    events: Vec<Event>,
    lease_change: Option<LeaseChange>,
}

impl<'a> TxnWriter<'a> {
    fn new(db: &'a DB, pending: &'a Pending, counters: Counters) -> Self {
        TxnWriter {
            db,
            pending,
            counters,
            writes: Vec::new(),
            overlay: Pending::new(),
            main: counters.revision + 1,
            next_sub: 0,
            events: Vec::new(),
            lease_change: None,
        }
    }

    fn finish(self, outcome: Outcome) -> Applied {
        let mut counters = self.counters;
        if self.next_sub > 0 {
            counters.revision = self.main;
        }
        Applied {
            writes: self.writes,
            changed: self.overlay,
            outcome,
            counters,
            events: self.events,
            lease_change: self.lease_change,
        }
    }

    fn write(&mut self, cf: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push(Write { cf, key: key.into(), value: Some(value.into()) });
    }

    fn erase(&mut self, cf: &'static str, key: impl Into<Vec<u8>>) {
        self.writes.push(Write { cf, key: key.into(), value: None });
    }

    fn next_revision(&mut self) -> Revision {
        let rev = Revision { main: self.main, sub: self.next_sub };
        self.next_sub += 1;
        rev
    }

    fn get(&self, key: &[u8]) -> io::Result<Option<KvRecord>> {
        if let Some(mine) = self.overlay.get(key) {
            return Ok(mine.clone());
        }
        if let Some(batch) = self.pending.get(key) {
            return Ok(batch.clone());
        }
        read::get_live(self.db, key)
    }

    /// Live keys in `range`, merging what this transaction already wrote.
    fn live_in(&self, range: &KeyRange) -> io::Result<Vec<(Vec<u8>, KvRecord)>> {
        if range.single {
            return Ok(self.get(&range.start)?.map(|r| (range.start.clone(), r)).into_iter().collect());
        }
        let mut merged: BTreeMap<Vec<u8>, KvRecord> = BTreeMap::new();
        let cf = db::cf(self.db, CF_KV)?;
        for item in self.db.iterator_cf(cf, IteratorMode::From(&range.start, Direction::Forward)) {
            let (key, raw) = item.map_err(db::io)?;
            if range.is_past(&key) {
                break;
            }
            merged.insert(key.to_vec(), db::decode(&raw)?);
        }
        for layer in [self.pending, &self.overlay] {
            for (key, change) in layer.range(range.start.clone()..) {
                if range.is_past(key) {
                    break;
                }
                match change {
                    Some(rec) => merged.insert(key.clone(), rec.clone()),
                    None => merged.remove(key),
                };
            }
        }
        Ok(merged.into_iter().collect())
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, TxnError> {
        let prev = self.get(&req.key)?;
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(ApplyError::KeyNotFound.into());
        }
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        if lease != 0 && !self.lease_exists(lease)? {
            return Err(ApplyError::LeaseNotFound.into());
        }
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let rev = self.next_revision();
        let record = KvRecord {
            create_revision: prev.as_ref().map_or(rev.main, |p| p.create_revision),
            mod_revision: rev.main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
            value,
            sub: rev.sub,
        };
        if let Some(p) = &prev
            && p.lease != 0
            && p.lease != lease
        {
            self.erase(CF_LEASE_KEYS, lease_key_entry(p.lease, &req.key));
        }
        if lease != 0 {
            self.write(CF_LEASE_KEYS, lease_key_entry(lease, &req.key), []);
        }
        self.record_change(&req.key, rev, Some(&record), prev.as_ref())?;
        let prev_kv = prev.as_ref().map(|p| read::to_kv(&req.key, p));
        self.events.push(Event { kind: EventType::Put, kv: read::to_kv(&req.key, &record), prev_kv: prev_kv.clone() });
        self.overlay.insert(req.key.clone(), Some(record));
        Ok(PutResponse { prev_kv: if req.prev_kv { prev_kv } else { None } })
    }

    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, TxnError> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let live = self.live_in(&range)?;
        let mut resp = DeleteRangeResponse { deleted: live.len() as i64, prev_kvs: Vec::new() };
        for (key, prev) in live {
            self.delete_key(&key, &prev)?;
            if req.prev_kv {
                resp.prev_kvs.push(read::to_kv(&key, &prev));
            }
        }
        Ok(resp)
    }

    fn delete_key(&mut self, key: &[u8], prev: &KvRecord) -> Result<(), TxnError> {
        let rev = self.next_revision();
        if prev.lease != 0 {
            self.erase(CF_LEASE_KEYS, lease_key_entry(prev.lease, key));
        }
        self.record_change(key, rev, None, Some(prev))?;
        let tombstone = KeyValue { key: key.to_vec(), mod_revision: rev.main, ..KeyValue::default() };
        self.events.push(Event { kind: EventType::Delete, kv: tombstone, prev_kv: Some(read::to_kv(key, prev)) });
        self.overlay.insert(key.to_vec(), None);
        Ok(())
    }

    /// Writes one change to `kv`, `revs` and `key_index`.
    fn record_change(
        &mut self,
        key: &[u8],
        rev: Revision,
        now: Option<&KvRecord>,
        prev: Option<&KvRecord>,
    ) -> io::Result<()> {
        match now {
            Some(record) => self.write(CF_KV, key, db::encode(record)?),
            None => self.erase(CF_KV, key),
        }
        let history = RevRecord {
            key: key.to_vec(),
            tombstone: now.is_none(),
            create_revision: now.map_or(0, |r| r.create_revision),
            version: now.map_or(0, |r| r.version),
            lease: now.map_or(0, |r| r.lease),
            value: now.map(|r| r.value.clone()).unwrap_or_default(),
            prev: prev.map(|p| Revision { main: p.mod_revision, sub: p.sub }),
        };
        self.write(CF_REVS, rev.encode(), db::encode(&history)?);
        self.write(CF_KEY_INDEX, index_key(key, rev), [u8::from(now.is_none())]);
        Ok(())
    }

    fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, TxnError> {
        let mut succeeded = true;
        for cmp in &req.compare {
            if !self.compare_holds(cmp)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(d)?),
                RequestOp::Txn(t) => ResponseOp::Txn(self.txn(t)?),
            });
        }
        Ok(TxnResponse { succeeded, responses })
    }

    /// A range inside a transaction: at the current revision it sees the transaction's own
    /// writes; at a past revision it reads history.
    fn range(&self, req: &RangeRequest) -> Result<crate::types::RangeResponse, TxnError> {
        if req.revision > 0 && req.revision < self.counters.revision {
            if req.revision < self.counters.compacted {
                return Err(ApplyError::Compacted { compact_revision: self.counters.compacted }.into());
            }
            return Ok(read::range_at(self.db, req, req.revision)?);
        }
        if req.revision > self.counters.revision {
            return Err(ApplyError::FutureRevision { current: self.counters.revision }.into());
        }
        let range = KeyRange::new(&req.key, &req.range_end);
        let live = self.live_in(&range)?.into_iter().map(|(k, r)| read::to_kv(&k, &r));
        Ok(read::shape_range(req, live))
    }

    fn compare_holds(&self, cmp: &Compare) -> io::Result<bool> {
        let range = KeyRange::new(&cmp.key, &cmp.range_end);
        let live = self.live_in(&range)?;
        if range.single && live.is_empty() {
            // A missing key compares as version 0, create 0, mod 0, lease 0, no value.
            return Ok(match &cmp.target {
                CompareTarget::Value(_) => false,
                target => compare_numbers(cmp.op, 0, target_number(target)),
            });
        }
        Ok(live.iter().all(|(_, rec)| match &cmp.target {
            CompareTarget::Version(v) => compare_numbers(cmp.op, rec.version, *v),
            CompareTarget::Create(v) => compare_numbers(cmp.op, rec.create_revision, *v),
            CompareTarget::Mod(v) => compare_numbers(cmp.op, rec.mod_revision, *v),
            CompareTarget::Lease(v) => compare_numbers(cmp.op, rec.lease, *v),
            CompareTarget::Value(v) => compare_ord(cmp.op, rec.value.as_slice().cmp(v.as_slice())),
        }))
    }

    fn lease_exists(&self, id: i64) -> io::Result<bool> {
        let cf = db::cf(self.db, CF_LEASES)?;
        Ok(self.db.get_pinned_cf(cf, lease_key(id)).map_err(db::io)?.is_some())
    }

    fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<(), TxnError> {
        if self.lease_exists(id)? {
            return Err(ApplyError::LeaseExists.into());
        }
        self.write(CF_LEASES, lease_key(id), db::encode(&LeaseRecord { ttl })?);
        self.lease_change = Some(LeaseChange::Granted { id, ttl });
        Ok(())
    }

    /// Deletes the lease and, in one revision, every key attached to it.
    fn lease_revoke(&mut self, id: i64) -> Result<(), TxnError> {
        if !self.lease_exists(id)? {
            return Err(ApplyError::LeaseNotFound.into());
        }
        let cf = db::cf(self.db, CF_LEASE_KEYS)?;
        let prefix = lease_key(id);
        let mut keys = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
            let (raw, _) = item.map_err(db::io)?;
            let Some(key) = raw.strip_prefix(&prefix) else { break };
            keys.push(key.to_vec());
        }
        for key in keys {
            if let Some(prev) = self.get(&key)? {
                self.delete_key(&key, &prev)?;
            }
        }
        self.erase(CF_LEASES, prefix);
        self.lease_change = Some(LeaseChange::Revoked { id });
        Ok(())
    }

    /// Records the cluster id unless one is already recorded.
    fn set_cluster_id(&mut self, cluster_id: u64) -> Result<(), TxnError> {
        if read::cluster_id(self.db)? == 0 {
            self.write(CF_SM_META, SM_CLUSTER_ID, cluster_id.to_be_bytes());
        }
        Ok(())
    }

    /// Marks history below `revision` as gone and deletes it, keeping for each key the version
    /// that was live at `revision`.
    fn compact(&mut self, revision: i64) -> Result<(), TxnError> {
        if revision <= self.counters.compacted {
            return Err(ApplyError::Compacted { compact_revision: self.counters.compacted }.into());
        }
        if revision > self.counters.revision {
            return Err(ApplyError::FutureRevision { current: self.counters.revision }.into());
        }
        let revs = db::cf(self.db, CF_REVS)?;
        let end = Revision { main: revision, sub: 0 }.encode();
        for item in self.db.iterator_cf(revs, IteratorMode::Start) {
            let (raw_rev, raw) = item.map_err(db::io)?;
            if raw_rev.as_ref() >= end.as_slice() {
                break;
            }
            let rev = Revision::decode(&raw_rev).ok_or_else(|| db::corrupt("revision key"))?;
            let record: RevRecord = db::decode(&raw)?;
            let live_at = read::latest_index_entry(self.db, &record.key, revision)?;
            let keep = !record.tombstone && live_at.is_some_and(|(r, _)| r == rev);
            if !keep {
                self.erase(CF_REVS, raw_rev.to_vec());
                self.erase(CF_KEY_INDEX, index_key(&record.key, rev));
            }
        }
        self.counters.compacted = revision;
        Ok(())
    }
}

fn target_number(target: &CompareTarget) -> i64 {
    match target {
        CompareTarget::Version(v) | CompareTarget::Create(v) | CompareTarget::Mod(v) | CompareTarget::Lease(v) => *v,
        CompareTarget::Value(_) => 0,
    }
}

fn compare_numbers(op: CompareOp, actual: i64, target: i64) -> bool {
    compare_ord(op, actual.cmp(&target))
}

fn compare_ord(op: CompareOp, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering;
    match op {
        CompareOp::Equal => ord == Ordering::Equal,
        CompareOp::NotEqual => ord != Ordering::Equal,
        CompareOp::Greater => ord == Ordering::Greater,
        CompareOp::Less => ord == Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::mvcc::testing::TestDb;
    use crate::mvcc::testing::owned;
    use crate::mvcc::testing::pairs;
    use crate::mvcc::testing::put;
    use crate::mvcc::testing::range_at;
    use crate::types::RangeResponse;

    type Test = io::Result<()>;

    fn compare(key: &str, op: CompareOp, target: CompareTarget) -> Compare {
        Compare { op, target, key: key.into(), range_end: Vec::new() }
    }

    fn put_op(key: &str, value: &str) -> RequestOp {
        RequestOp::Put(PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() })
    }

    fn leased(key: &str, lease: i64) -> Command {
        Command::Put(PutRequest { key: key.into(), value: b"v".to_vec(), lease, ..PutRequest::default() })
    }

    fn txn_response(applied: &Applied) -> &TxnResponse {
        match &applied.outcome {
            Outcome::Txn(resp) => resp,
            other => panic!("expected a txn response, got {other:?}"),
        }
    }

    #[test]
    fn each_put_is_one_revision_and_keeps_the_create_revision_while_the_version_grows() -> Test {
        let mut t = TestDb::new()?;
        assert_eq!(t.counters, Counters { revision: 1, compacted: 0 }, "an empty store is at revision 1");
        let first = t.apply(put("a", "1"))?;
        assert_eq!(first.counters.revision, 2);
        assert_eq!(first.outcome, Outcome::Put(PutResponse { prev_kv: None }));
        let second = t.apply(put("a", "2"))?;
        let kv = t.get("a")?.expect("a is live");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.value.as_slice()), (2, 3, 2, b"2".as_slice()));
        let before = KeyValue {
            key: b"a".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: b"1".to_vec(),
            lease: 0,
        };
        assert_eq!(second.events, vec![Event { kind: EventType::Put, kv, prev_kv: Some(before) }]);
        assert_eq!(t.put("b", "x")?, 4);
        assert_eq!(t.get("a")?.map(|kv| kv.mod_revision), Some(3), "a put moves only its own key");
        Ok(())
    }

    #[test]
    fn a_put_returns_the_previous_version_only_when_asked() -> Test {
        let mut t = TestDb::new()?;
        t.put("k", "old")?;
        let quiet = t.apply(put("k", "new"))?;
        assert_eq!(quiet.outcome, Outcome::Put(PutResponse { prev_kv: None }));
        let asked =
            Command::Put(PutRequest { key: "k".into(), value: "newer".into(), prev_kv: true, ..Default::default() });
        match t.apply(asked)?.outcome {
            Outcome::Put(PutResponse { prev_kv: Some(prev) }) => {
                assert_eq!((prev.value.as_slice(), prev.version, prev.mod_revision), (b"new".as_slice(), 2, 3));
            }
            other => panic!("expected the previous version, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn ignore_value_and_ignore_lease_keep_the_current_ones_and_need_the_key_to_exist() -> Test {
        let mut t = TestDb::new()?;
        let keep_value =
            |key: &str| Command::Put(PutRequest { key: key.into(), ignore_value: true, ..PutRequest::default() });
        let missing = t.apply(keep_value("k"))?;
        assert_eq!(missing.outcome, Outcome::Rejected(ApplyError::KeyNotFound));
        assert_eq!((missing.counters, missing.events.len()), (Counters { revision: 1, compacted: 0 }, 0));

        t.apply(Command::LeaseGrant { id: 5, ttl: 60 })?;
        t.apply(Command::Put(PutRequest { key: "k".into(), value: "v".into(), lease: 5, ..Default::default() }))?;
        t.apply(keep_value("k"))?;
        let kv = t.get("k")?.expect("k is live");
        assert_eq!((kv.value.as_slice(), kv.lease, kv.version), (b"v".as_slice(), 0, 2), "value kept, lease dropped");

        t.apply(Command::Put(PutRequest { key: "k".into(), value: "v".into(), lease: 5, ..Default::default() }))?;
        let keep_lease = PutRequest { key: "k".into(), value: "w".into(), ignore_lease: true, ..PutRequest::default() };
        t.apply(Command::Put(keep_lease))?;
        let kv = t.get("k")?.expect("k is live");
        assert_eq!((kv.value.as_slice(), kv.lease), (b"w".as_slice(), 5), "lease kept, value replaced");
        Ok(())
    }

    #[test]
    fn deleting_a_range_writes_one_tombstone_per_live_key_in_one_revision() -> Test {
        let mut t = TestDb::new()?;
        for k in ["a", "b", "c", "d"] {
            t.put(k, k)?;
        }
        let req = DeleteRangeRequest { key: "b".into(), range_end: "d".into(), prev_kv: true };
        let deleted = t.apply(Command::DeleteRange(req))?;
        assert_eq!(deleted.counters.revision, 6);
        match &deleted.outcome {
            Outcome::DeleteRange(resp) => {
                assert_eq!(resp.deleted, 2);
                assert_eq!(pairs(&resp.prev_kvs), owned(&[("b", "b"), ("c", "c")]));
            }
            other => panic!("expected a delete response, got {other:?}"),
        }
        for (event, key) in deleted.events.iter().zip(["b", "c"]) {
            assert_eq!(event.kind, EventType::Delete);
            assert_eq!(event.kv, KeyValue { key: key.into(), mod_revision: 6, ..KeyValue::default() });
            assert_eq!(event.prev_kv.as_ref().map(|kv| kv.value.clone()), Some(key.as_bytes().to_vec()));
        }
        assert!(t.get("b")?.is_none() && t.get("c")?.is_none());
        assert!(t.get("a")?.is_some() && t.get("d")?.is_some());

        tracing::info!("--- history keeps the tombstones, each at its own sub-revision");
        assert_eq!(read::latest_index_entry(&t.db, b"b", 6)?, Some((Revision { main: 6, sub: 0 }, true)));
        assert_eq!(read::latest_index_entry(&t.db, b"c", 6)?, Some((Revision { main: 6, sub: 1 }, true)));
        assert_eq!(read::latest_index_entry(&t.db, b"b", 5)?, Some((Revision { main: 3, sub: 0 }, false)));

        tracing::info!("--- deleting nothing changes nothing; a recreated key starts over");
        let nothing = t.apply(Command::DeleteRange(DeleteRangeRequest { key: "x".into(), ..Default::default() }))?;
        assert_eq!((nothing.counters.revision, nothing.events.len()), (6, 0));
        assert_eq!(nothing.outcome, Outcome::DeleteRange(DeleteRangeResponse { deleted: 0, prev_kvs: Vec::new() }));
        t.put("b", "again")?;
        let kv = t.get("b")?.expect("b is live again");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (7, 7, 1));
        Ok(())
    }

    #[test]
    fn a_transaction_runs_success_when_every_compare_holds_and_failure_otherwise() -> Test {
        let mut t = TestDb::new()?;
        t.put("a", "1")?;
        t.put("a", "2")?;
        // a: create 2, mod 3, version 2, value "2"; "zz" does not exist.
        let value = |v: &str| CompareTarget::Value(v.into());
        let cases = [
            (vec![compare("a", CompareOp::Equal, value("2"))], true),
            (vec![compare("a", CompareOp::Equal, value("1"))], false),
            (vec![compare("a", CompareOp::Greater, value("10"))], true),
            (vec![compare("a", CompareOp::Equal, CompareTarget::Version(2))], true),
            (vec![compare("a", CompareOp::Greater, CompareTarget::Version(2))], false),
            (vec![compare("a", CompareOp::Less, CompareTarget::Version(3))], true),
            (vec![compare("a", CompareOp::Equal, CompareTarget::Mod(3))], true),
            (vec![compare("a", CompareOp::NotEqual, CompareTarget::Mod(3))], false),
            (vec![compare("a", CompareOp::Equal, CompareTarget::Create(2))], true),
            (vec![compare("a", CompareOp::Greater, CompareTarget::Create(2))], false),
            (vec![compare("a", CompareOp::Equal, CompareTarget::Lease(0))], true),
            (vec![compare("zz", CompareOp::Equal, CompareTarget::Version(0))], true),
            (vec![compare("zz", CompareOp::Equal, CompareTarget::Create(0))], true),
            (vec![compare("zz", CompareOp::Greater, CompareTarget::Mod(0))], false),
            (vec![compare("zz", CompareOp::Equal, value(""))], false),
            (
                vec![
                    compare("a", CompareOp::Equal, value("2")),
                    compare("a", CompareOp::Equal, CompareTarget::Version(1)),
                ],
                false,
            ),
        ];
        for (compares, expected) in cases {
            let txn = TxnRequest {
                compare: compares.clone(),
                success: vec![put_op("branch", "success")],
                failure: vec![put_op("branch", "failure")],
            };
            let applied = t.apply(Command::Txn(txn))?;
            assert_eq!(txn_response(&applied).succeeded, expected, "{compares:?}");
            let ran = t.get("branch")?.map(|kv| kv.value);
            let wanted: &[u8] = if expected { b"success" } else { b"failure" };
            assert_eq!(ran.as_deref(), Some(wanted), "{compares:?}");
        }
        Ok(())
    }

    #[test]
    fn a_compare_over_a_range_must_hold_for_every_key_in_it() -> Test {
        let mut t = TestDb::new()?;
        t.put("p/1", "x")?;
        t.put("p/2", "x")?;
        let over = |v: &str| Compare {
            op: CompareOp::Equal,
            target: CompareTarget::Value(v.into()),
            key: "p/".into(),
            range_end: "p0".into(),
        };
        let txn = |c| Command::Txn(TxnRequest { compare: vec![c], ..TxnRequest::default() });
        assert!(txn_response(&t.apply(txn(over("x")))?).succeeded);
        t.put("p/2", "y")?;
        assert!(!txn_response(&t.apply(txn(over("x")))?).succeeded);
        Ok(())
    }

    #[test]
    fn a_transaction_is_one_revision_and_its_reads_see_its_own_earlier_writes() -> Test {
        let mut t = TestDb::new()?;
        t.put("x", "0")?;
        let txn = TxnRequest {
            compare: Vec::new(),
            success: vec![
                put_op("x", "1"),
                put_op("y", "1"),
                RequestOp::Range(range_at("x", "", 0)),
                RequestOp::Put(PutRequest { key: "x".into(), value: "2".into(), prev_kv: true, ..Default::default() }),
                RequestOp::Txn(TxnRequest {
                    success: vec![RequestOp::Range(range_at("x", "z", 0))],
                    ..Default::default()
                }),
            ],
            failure: Vec::new(),
        };
        let applied = t.apply(Command::Txn(txn))?;
        assert_eq!(applied.counters.revision, 3);
        assert!(applied.events.iter().all(|e| e.kv.mod_revision == 3), "{:?}", applied.events);
        let resp = txn_response(&applied);
        match &resp.responses[2] {
            ResponseOp::Range(RangeResponse { kvs, .. }) => assert_eq!(pairs(kvs), owned(&[("x", "1")])),
            other => panic!("expected a range, got {other:?}"),
        }
        match &resp.responses[3] {
            ResponseOp::Put(PutResponse { prev_kv: Some(prev) }) => {
                assert_eq!((prev.value.as_slice(), prev.version, prev.mod_revision), (b"1".as_slice(), 2, 3));
            }
            other => panic!("expected a put with its previous value, got {other:?}"),
        }
        match &resp.responses[4] {
            ResponseOp::Txn(TxnResponse { responses, .. }) => match &responses[0] {
                ResponseOp::Range(RangeResponse { kvs, .. }) => {
                    assert_eq!(pairs(kvs), owned(&[("x", "2"), ("y", "1")]));
                }
                other => panic!("expected a range, got {other:?}"),
            },
            other => panic!("expected a nested txn, got {other:?}"),
        }
        let x = t.get("x")?.expect("x is live");
        assert_eq!((x.create_revision, x.mod_revision, x.version), (2, 3, 3), "two puts in one txn, two versions");

        tracing::info!("--- a transaction that only reads keeps the revision");
        let read_only = TxnRequest { success: vec![RequestOp::Range(range_at("x", "", 0))], ..Default::default() };
        let applied = t.apply(Command::Txn(read_only))?;
        assert_eq!((applied.counters.revision, applied.events.len()), (3, 0));
        Ok(())
    }

    #[test]
    fn a_transaction_with_one_rejected_operation_changes_nothing() -> Test {
        let mut t = TestDb::new()?;
        let txn = TxnRequest {
            success: vec![
                put_op("p", "1"),
                RequestOp::Put(PutRequest { key: "q".into(), value: "1".into(), lease: 99, ..Default::default() }),
            ],
            ..TxnRequest::default()
        };
        let applied = t.apply(Command::Txn(txn))?;
        assert_eq!(applied.outcome, Outcome::Rejected(ApplyError::LeaseNotFound));
        assert_eq!((applied.counters.revision, applied.events.len()), (1, 0));
        assert!(t.get("p")?.is_none(), "the put before the rejected one was not applied");
        Ok(())
    }

    #[test]
    fn a_range_inside_a_transaction_reads_history_and_refuses_compacted_or_future_revisions() -> Test {
        let mut t = TestDb::new()?;
        t.put("h", "1")?;
        t.put("h", "2")?;
        t.put("h", "3")?;
        let read = |rev| {
            Command::Txn(TxnRequest { success: vec![RequestOp::Range(range_at("h", "", rev))], ..Default::default() })
        };
        match &txn_response(&t.apply(read(3))?).responses[0] {
            ResponseOp::Range(RangeResponse { kvs, .. }) => assert_eq!(pairs(kvs), owned(&[("h", "2")])),
            other => panic!("expected a range, got {other:?}"),
        }
        assert_eq!(t.apply(read(9))?.outcome, Outcome::Rejected(ApplyError::FutureRevision { current: 4 }));
        t.apply(Command::Compact { revision: 3 })?;
        assert_eq!(t.apply(read(2))?.outcome, Outcome::Rejected(ApplyError::Compacted { compact_revision: 3 }));
        Ok(())
    }

    #[test]
    fn keys_attached_to_a_lease_go_with_it_in_one_revision() -> Test {
        let mut t = TestDb::new()?;
        assert_eq!(t.apply(leased("k1", 7))?.outcome, Outcome::Rejected(ApplyError::LeaseNotFound));
        let granted = t.apply(Command::LeaseGrant { id: 7, ttl: 60 })?;
        assert_eq!(granted.outcome, Outcome::LeaseGrant { id: 7, ttl: 60 });
        assert_eq!(granted.lease_change, Some(LeaseChange::Granted { id: 7, ttl: 60 }));
        assert_eq!(granted.counters.revision, 1, "a grant writes no key");
        assert_eq!(t.apply(Command::LeaseGrant { id: 7, ttl: 5 })?.outcome, Outcome::Rejected(ApplyError::LeaseExists));
        assert_eq!(read::leases(&t.db)?, vec![(7, 60)]);

        for key in ["k1", "k2", "k3"] {
            t.apply(leased(key, 7))?;
        }
        t.put("k3", "unleased")?;
        assert_eq!(read::lease_keys(&t.db, 7)?, vec![b"k1".to_vec(), b"k2".to_vec()], "k3 left the lease");

        let revoked = t.apply(Command::LeaseRevoke { id: 7 })?;
        assert_eq!(
            (revoked.outcome.clone(), revoked.lease_change),
            (Outcome::LeaseRevoke, Some(LeaseChange::Revoked { id: 7 }))
        );
        assert_eq!(revoked.counters.revision, 6);
        let deleted: Vec<_> = revoked.events.iter().map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision)).collect();
        assert_eq!(deleted, [(EventType::Delete, b"k1".to_vec(), 6), (EventType::Delete, b"k2".to_vec(), 6)]);
        assert!(t.get("k1")?.is_none() && t.get("k2")?.is_none() && t.get("k3")?.is_some());
        assert!(read::leases(&t.db)?.is_empty() && read::lease_keys(&t.db, 7)?.is_empty());
        assert_eq!(t.apply(Command::LeaseRevoke { id: 7 })?.outcome, Outcome::Rejected(ApplyError::LeaseNotFound));
        Ok(())
    }

    #[test]
    fn compaction_refuses_a_revision_at_or_below_the_last_one_or_in_the_future() -> Test {
        let mut t = TestDb::new()?;
        for v in ["1", "2", "3"] {
            t.put("a", v)?;
        }
        let compact = |revision| Command::Compact { revision };
        assert_eq!(t.apply(compact(5))?.outcome, Outcome::Rejected(ApplyError::FutureRevision { current: 4 }));
        let done = t.apply(compact(3))?;
        assert_eq!((done.outcome, done.counters), (Outcome::Compact, Counters { revision: 4, compacted: 3 }));
        assert_eq!(read::counters(&t.db)?, Counters { revision: 4, compacted: 3 }, "written with the batch");
        for again in [3, 2] {
            assert_eq!(
                t.apply(compact(again))?.outcome,
                Outcome::Rejected(ApplyError::Compacted { compact_revision: 3 })
            );
        }
        Ok(())
    }

    #[test]
    fn the_first_cluster_id_recorded_stays() -> Test {
        let mut t = TestDb::new()?;
        assert_eq!(read::cluster_id(&t.db)?, 0);
        assert_eq!(t.apply(Command::SetClusterId { cluster_id: 5 })?.outcome, Outcome::Noop);
        t.apply(Command::SetClusterId { cluster_id: 6 })?;
        assert_eq!(read::cluster_id(&t.db)?, 5);
        Ok(())
    }

    #[test]
    fn only_commands_that_read_history_or_leases_must_apply_alone() {
        let past_read = RequestOp::Range(range_at("a", "", 2));
        let nested = TxnRequest {
            success: vec![RequestOp::Txn(TxnRequest { failure: vec![past_read.clone()], ..Default::default() })],
            ..Default::default()
        };
        assert!(!must_apply_alone(&put("a", "1")));
        assert!(!must_apply_alone(&Command::Txn(TxnRequest {
            success: vec![RequestOp::Range(range_at("a", "", 0))],
            ..Default::default()
        })));
        assert!(must_apply_alone(&Command::Txn(nested)));
        assert!(must_apply_alone(&Command::Compact { revision: 2 }));
        assert!(must_apply_alone(&Command::LeaseGrant { id: 1, ttl: 5 }));
        assert!(must_apply_alone(&Command::LeaseRevoke { id: 1 }));
    }
}
