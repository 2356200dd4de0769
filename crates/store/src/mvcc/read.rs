//! Reads of the MVCC state: ranges at the current or a past revision, and history by revision
//! for watches. All functions read one consistent view (a RocksDB snapshot or the DB itself
//! inside apply, where nothing else writes).

use std::io;

use rocksdb::DB;
use rocksdb::DBAccess;
use rocksdb::DBIteratorWithThreadMode;
use rocksdb::Direction;
use rocksdb::IteratorMode;
use rocksdb::ReadOptions;

use crate::db;
use crate::mvcc::apply::Counters;
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
use crate::schema::escape_key;
use crate::schema::index_key;
use crate::schema::lease_key;
use crate::schema::split_index_key;
use crate::types::Event;
use crate::types::EventType;
use crate::types::KeyRange;
use crate::types::KeyValue;
use crate::types::RangeRequest;
use crate::types::RangeResponse;
use crate::types::SortOrder;
use crate::types::SortTarget;

/// Why a read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("required revision has been compacted (compacted at {compact_revision})")]
    Compacted { compact_revision: i64 },
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A key's live record.
pub fn get_live(db: &DB, key: &[u8]) -> io::Result<Option<KvRecord>> {
    let cf = db::cf(db, CF_KV)?;
    match db.get_pinned_cf(cf, key).map_err(db::io)? {
        Some(raw) => db::decode(&raw).map(Some),
        None => Ok(None),
    }
}

/// A live record as a [`KeyValue`].
pub fn to_kv(key: &[u8], rec: &KvRecord) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: rec.create_revision,
        mod_revision: rec.mod_revision,
        version: rec.version,
        value: rec.value.clone(),
        lease: rec.lease,
    }
}

fn history_kv(rec: &RevRecord, rev: Revision) -> KeyValue {
    KeyValue {
        key: rec.key.clone(),
        create_revision: rec.create_revision,
        mod_revision: rev.main,
        version: rec.version,
        value: rec.value.clone(),
        lease: rec.lease,
    }
}

/// Reads the counters stored with the state.
pub fn counters(db: &DB) -> io::Result<Counters> {
    counters_in(db, &db.snapshot())
}

/// The revision of an empty store: 1, as in etcd, so that no key is ever at revision 0 (which
/// Kubernetes reads as "any").
pub const INITIAL_REVISION: i64 = 1;

/// The recorded cluster id, 0 if none yet.
pub fn cluster_id(db: &DB) -> io::Result<u64> {
    let meta = db::cf(db, CF_SM_META)?;
    Ok(match db.get_pinned_cf(meta, SM_CLUSTER_ID).map_err(db::io)? {
        Some(raw) => u64::from_be_bytes(raw.as_ref().try_into().map_err(|_| db::corrupt("cluster id"))?),
        None => 0,
    })
}

/// etcd's HashKV: a CRC-32 over every history entry (key, revision, value, tombstone) up to
/// `revision`. Members that applied the same log agree on it.
pub fn hash_kv(db: &DB, revision: i64) -> Result<(u32, Counters), ReadError> {
    let view = db.snapshot();
    let counters = counters_in(db, &view)?;
    let revision = if revision <= 0 { counters.revision } else { revision };
    if revision > counters.revision {
        return Err(ReadError::FutureRevision { requested: revision, current: counters.revision });
    }
    if revision < counters.compacted {
        return Err(ReadError::Compacted { compact_revision: counters.compacted });
    }
    let revs = db::cf(db, CF_REVS)?;
    let end = Revision { main: revision + 1, sub: 0 }.encode();
    let mut hasher = crc32fast::Hasher::new();
    for item in view.iterator_cf(revs, IteratorMode::Start) {
        let (raw_rev, raw) = item.map_err(db::io)?;
        if raw_rev.as_ref() >= end.as_slice() {
            break;
        }
        hasher.update(&raw_rev);
        hasher.update(&raw);
    }
    Ok((hasher.finalize(), Counters { revision, compacted: counters.compacted }))
}

/// Number of live keys, counted from `key_index` (a key is live if its newest entry is not a
/// tombstone), which holds no values: a store of large values is not read to count them.
pub fn key_count(db: &DB) -> io::Result<u64> {
    let cf = db::cf(db, CF_KEY_INDEX)?;
    let mut n = 0;
    let mut current: Option<(Vec<u8>, bool)> = None;
    for item in db.iterator_cf(cf, IteratorMode::Start) {
        let (raw, flag) = item.map_err(db::io)?;
        let escaped = raw.get(..raw.len().saturating_sub(Revision::LEN)).ok_or_else(|| db::corrupt("key index"))?;
        let tombstone = flag.first() == Some(&1);
        match current.as_mut() {
            Some((key, last)) if key.as_slice() == escaped => *last = tombstone,
            _ => {
                if current.take().is_some_and(|(_, last)| !last) {
                    n += 1;
                }
                current = Some((escaped.to_vec(), tombstone));
            }
        }
    }
    if current.is_some_and(|(_, last)| !last) {
        n += 1;
    }
    Ok(n)
}

/// The newest `key_index` entry of `key` at or below `revision`: its revision and whether it
/// is a tombstone.
pub fn latest_index_entry(db: &DB, key: &[u8], revision: i64) -> io::Result<Option<(Revision, bool)>> {
    let cf = db::cf(db, CF_KEY_INDEX)?;
    let mut it = db.raw_iterator_cf(cf);
    it.seek_for_prev(index_key(key, Revision { main: revision, sub: u32::MAX }));
    if !it.valid() {
        return it.status().map(|()| None).map_err(db::io);
    }
    let (Some(raw), Some(flag)) = (it.key(), it.value()) else { return Ok(None) };
    let Some((found, rev)) = split_index_key(raw) else { return Err(db::corrupt("key index")) };
    Ok((found == key).then_some((rev, flag.first() == Some(&1))))
}

/// Serves a range request from one consistent view of `db`.
///
/// If the requested revision is below the compaction point, returns `Compacted`; above the
/// current revision, `FutureRevision`. Returns the response and the revision it was read at.
pub fn range(db: &DB, req: &RangeRequest) -> Result<(RangeResponse, i64), ReadError> {
    let snapshot = db.snapshot();
    let mut opts = ReadOptions::default();
    opts.set_snapshot(&snapshot);
    let current = counters_in(db, &snapshot)?;
    let revision = if req.revision <= 0 { current.revision } else { req.revision };
    if revision > current.revision {
        return Err(ReadError::FutureRevision { requested: revision, current: current.revision });
    }
    if revision < current.compacted {
        return Err(ReadError::Compacted { compact_revision: current.compacted });
    }
    let resp = if revision == current.revision {
        let range = KeyRange::new(&req.key, &req.range_end);
        let cf = db::cf(db, CF_KV)?;
        let iter = db.iterator_cf_opt(cf, opts, IteratorMode::From(&range.start, Direction::Forward));
        let live = LiveIter { iter, range, failed: None };
        let mut live = live;
        let resp = shape_range(req, live.by_ref());
        if let Some(e) = live.failed {
            return Err(e.into());
        }
        resp
    } else {
        range_at_in(db, &snapshot, req, revision)?
    };
    Ok((resp, current.revision))
}

fn counters_in<D: DBAccess>(db: &DB, view: &rocksdb::SnapshotWithThreadMode<'_, D>) -> io::Result<Counters> {
    let meta = db::cf(db, CF_SM_META)?;
    let read = |key: &[u8]| -> io::Result<i64> {
        Ok(match view.get_cf(meta, key).map_err(db::io)? {
            Some(raw) => i64::from_be_bytes(raw.as_slice().try_into().map_err(|_| db::corrupt("counter"))?),
            None => 0,
        })
    };
    Ok(Counters { revision: read(SM_REVISION)?.max(INITIAL_REVISION), compacted: read(SM_COMPACTED)? })
}

/// Live keys of a range, decoded lazily; an I/O error ends the iteration and is kept.
struct LiveIter<'a> {
    iter: DBIteratorWithThreadMode<'a, DB>,
    range: KeyRange,
    failed: Option<io::Error>,
}

impl Iterator for LiveIter<'_> {
    type Item = KeyValue;

    fn next(&mut self) -> Option<KeyValue> {
        let item = self.iter.next()?;
        let (key, raw) = match item {
            Ok(kv) => kv,
            Err(e) => {
                self.failed = Some(db::io(e));
                return None;
            }
        };
        if self.range.is_past(&key) {
            return None;
        }
        match db::decode::<KvRecord>(&raw) {
            Ok(rec) => Some(to_kv(&key, &rec)),
            Err(e) => {
                self.failed = Some(e);
                None
            }
        }
    }
}

/// Reads a range as it was at `revision` (which the caller checked against compaction).
pub fn range_at(db: &DB, req: &RangeRequest, revision: i64) -> io::Result<RangeResponse> {
    let snapshot = db.snapshot();
    range_at_in(db, &snapshot, req, revision)
}

fn range_at_in<D: DBAccess>(
    db: &DB,
    view: &rocksdb::SnapshotWithThreadMode<'_, D>,
    req: &RangeRequest,
    revision: i64,
) -> io::Result<RangeResponse> {
    let range = KeyRange::new(&req.key, &req.range_end);
    let index = db::cf(db, CF_KEY_INDEX)?;
    let revs = db::cf(db, CF_REVS)?;
    let start = escape_key(&range.start);
    let mut found: Vec<KeyValue> = Vec::new();
    // Newest entry at or below `revision` for the key being scanned.
    let mut current: Option<(Vec<u8>, Option<Revision>)> = None;
    let flush = |entry: Option<(Vec<u8>, Option<Revision>)>, found: &mut Vec<KeyValue>| -> io::Result<()> {
        if let Some((_, Some(rev))) = entry
            && let Some(raw) = view.get_cf(revs, rev.encode()).map_err(db::io)?
        {
            let rec: RevRecord = db::decode(&raw)?;
            found.push(history_kv(&rec, rev));
        }
        Ok(())
    };
    for item in view.iterator_cf(index, IteratorMode::From(&start, Direction::Forward)) {
        let (raw, flag) = item.map_err(db::io)?;
        let (key, rev) = split_index_key(&raw).ok_or_else(|| db::corrupt("key index"))?;
        if range.is_past(&key) {
            break;
        }
        if current.as_ref().is_none_or(|(k, _)| *k != key) {
            flush(current.take(), &mut found)?;
            current = Some((key, None));
        }
        if rev.main <= revision
            && let Some((_, live)) = current.as_mut()
        {
            *live = if flag.first() == Some(&1) { None } else { Some(rev) };
        }
    }
    flush(current.take(), &mut found)?;
    Ok(shape_range(req, found.into_iter()))
}

/// Applies a range request's filters, sort, limit and projections to matching keys given in
/// key order.
pub fn shape_range(req: &RangeRequest, kvs: impl Iterator<Item = KeyValue>) -> RangeResponse {
    let keep = |kv: &KeyValue| {
        (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
    };
    let limit = usize::try_from(req.limit).ok().filter(|&l| l > 0);
    let in_key_order = match req.sort_order {
        SortOrder::None => true,
        SortOrder::Ascend => req.sort_target == SortTarget::Key,
        SortOrder::Descend => false,
    };
    let mut count = 0i64;
    let mut out = Vec::new();
    for mut kv in kvs.filter(keep) {
        count += 1;
        if req.count_only {
            continue;
        }
        // In key order the first `limit` keys are the answer; otherwise all are sorted first.
        if in_key_order && limit.is_some_and(|l| out.len() >= l) {
            continue;
        }
        if req.keys_only {
            kv.value.clear();
        }
        out.push(kv);
    }
    if !in_key_order {
        sort_kvs(&mut out, req.sort_target, req.sort_order);
    }
    let more = limit.is_some_and(|l| count as usize > l);
    if let Some(l) = limit {
        out.truncate(l);
    }
    RangeResponse { kvs: out, more, count }
}

fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    kvs.sort_by(|a, b| {
        let ord = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        // Stable sort keeps key order among equals, as etcd does.
        if order == SortOrder::Descend { ord.reverse() } else { ord }
    });
}

/// Changes in `range` with revisions in `[from, to]`, in revision order, stopping after the
/// revision at which `max_events` is reached (a revision is never split). Returns the events and
/// the next revision to read from.
///
/// If `from` is below the compaction point, returns `Compacted`: history there has gaps.
pub fn events_between(
    db: &DB,
    range: &KeyRange,
    from: i64,
    to: i64,
    prev_kv: bool,
    max_events: usize,
) -> Result<(Vec<Event>, i64), ReadError> {
    let view = db.snapshot();
    let counters = counters_in(db, &view)?;
    if from < counters.compacted {
        return Err(ReadError::Compacted { compact_revision: counters.compacted });
    }
    let revs = db::cf(db, CF_REVS)?;
    let start = Revision { main: from, sub: 0 }.encode();
    let mut out = Vec::new();
    let mut next = to + 1;
    for item in view.iterator_cf(revs, IteratorMode::From(&start, Direction::Forward)) {
        let (raw_rev, raw) = item.map_err(db::io)?;
        let rev = Revision::decode(&raw_rev).ok_or_else(|| db::corrupt("revision key"))?;
        if rev.main > to {
            break;
        }
        if out.len() >= max_events && rev.sub == 0 {
            next = rev.main;
            break;
        }
        let rec: RevRecord = db::decode(&raw)?;
        if !range.contains(&rec.key) {
            continue;
        }
        let prev = match (prev_kv, rec.prev) {
            (true, Some(p)) => view
                .get_cf(revs, p.encode())
                .map_err(db::io)?
                .map(|raw| db::decode::<RevRecord>(&raw).map(|r| history_kv(&r, p)))
                .transpose()?,
            _ => None,
        };
        let (kind, kv) = if rec.tombstone {
            (EventType::Delete, KeyValue { key: rec.key.clone(), mod_revision: rev.main, ..KeyValue::default() })
        } else {
            (EventType::Put, history_kv(&rec, rev))
        };
        out.push(Event { kind, kv, prev_kv: prev });
    }
    Ok((out, next))
}

/// Every lease with its granted TTL.
pub fn leases(db: &DB) -> io::Result<Vec<(i64, i64)>> {
    let cf = db::cf(db, CF_LEASES)?;
    let mut out = Vec::new();
    for item in db.iterator_cf(cf, IteratorMode::Start) {
        let (raw_id, raw) = item.map_err(db::io)?;
        let id = u64::from_be_bytes(raw_id.as_ref().try_into().map_err(|_| db::corrupt("lease id"))?) as i64;
        let rec: LeaseRecord = db::decode(&raw)?;
        out.push((id, rec.ttl));
    }
    Ok(out)
}

/// The keys attached to a lease.
pub fn lease_keys(db: &DB, id: i64) -> io::Result<Vec<Vec<u8>>> {
    let cf = db::cf(db, CF_LEASE_KEYS)?;
    let prefix = lease_key(id);
    let mut out = Vec::new();
    for item in db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
        let (raw, _) = item.map_err(db::io)?;
        let Some(key) = raw.strip_prefix(&prefix) else { break };
        out.push(key.to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::testing::TestDb;
    use crate::mvcc::testing::owned;
    use crate::mvcc::testing::pairs;
    use crate::mvcc::testing::put;
    use crate::mvcc::testing::range_at;
    use crate::types::Command;
    use crate::types::PutRequest;
    use crate::types::RequestOp;
    use crate::types::TxnRequest;

    type Test = io::Result<()>;

    fn read_at(t: &TestDb, key: &str, end: &str, revision: i64) -> Result<Vec<(String, String)>, ReadError> {
        range(&t.db, &range_at(key, end, revision)).map(|(resp, _)| pairs(&resp.kvs))
    }

    #[test]
    fn a_range_at_a_past_revision_sees_the_keys_as_they_were_then() -> Result<(), ReadError> {
        let mut t = TestDb::new()?;
        t.put("a", "1")?; // 2
        t.put("b", "1")?; // 3
        t.put("a", "2")?; // 4
        t.delete("b", "")?; // 5
        t.put("b", "2")?; // 6
        assert_eq!(read_at(&t, "a", "c", 2)?, owned(&[("a", "1")]));
        assert_eq!(read_at(&t, "a", "c", 3)?, owned(&[("a", "1"), ("b", "1")]));
        assert_eq!(read_at(&t, "a", "c", 4)?, owned(&[("a", "2"), ("b", "1")]));
        assert_eq!(read_at(&t, "a", "c", 5)?, owned(&[("a", "2")]), "b is deleted at 5");
        assert_eq!(read_at(&t, "b", "", 5)?, owned(&[]));
        assert_eq!(read_at(&t, "a", "c", 0)?, owned(&[("a", "2"), ("b", "2")]));

        tracing::info!("--- a past read carries that version's bookkeeping; the current read answers its revision");
        let (past, current) = range(&t.db, &range_at("a", "", 4))?;
        let kv = &past.kvs[0];
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version, current), (2, 4, 2, 6));
        let (now, _) = range(&t.db, &range_at("b", "", 0))?;
        assert_eq!((now.kvs[0].create_revision, now.kvs[0].version), (6, 1), "a recreated key starts over");
        assert!(matches!(
            range(&t.db, &range_at("a", "", 7)),
            Err(ReadError::FutureRevision { requested: 7, current: 6 })
        ));
        Ok(())
    }

    #[test]
    fn reads_below_the_compaction_point_fail_and_the_point_itself_stays_readable() -> Result<(), ReadError> {
        let mut t = TestDb::new()?;
        t.put("a", "1")?; // 2
        t.put("a", "2")?; // 3
        t.put("b", "1")?; // 4
        t.delete("b", "")?; // 5
        t.put("a", "3")?; // 6
        t.apply(Command::Compact { revision: 5 })?;
        let all = KeyRange::new(b"a", b"c");

        assert!(matches!(read_at(&t, "a", "c", 4), Err(ReadError::Compacted { compact_revision: 5 })));
        assert_eq!(read_at(&t, "a", "c", 5)?, owned(&[("a", "2")]));
        assert_eq!(read_at(&t, "a", "c", 6)?, owned(&[("a", "3")]));
        assert!(matches!(events_between(&t.db, &all, 4, 6, false, 100), Err(ReadError::Compacted { .. })));
        assert!(matches!(hash_kv(&t.db, 4), Err(ReadError::Compacted { compact_revision: 5 })));
        assert!(hash_kv(&t.db, 5).is_ok());
        let (events, next) = events_between(&t.db, &all, 5, 6, false, 100)?;
        let seen: Vec<_> = events.iter().map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision)).collect();
        assert_eq!(seen, [(EventType::Delete, b"b".to_vec(), 5), (EventType::Put, b"a".to_vec(), 6)]);
        assert_eq!(next, 7);

        tracing::info!("--- history below the point keeps only what was live at it");
        assert_eq!(latest_index_entry(&t.db, b"a", 2)?, None, "a@2 was replaced by a@3 before 5");
        assert_eq!(latest_index_entry(&t.db, b"a", 3)?, Some((Revision { main: 3, sub: 0 }, false)));
        assert_eq!(latest_index_entry(&t.db, b"b", 4)?, None, "b was deleted at 5");
        assert_eq!(latest_index_entry(&t.db, b"b", 5)?, Some((Revision { main: 5, sub: 0 }, true)));
        Ok(())
    }

    #[test]
    fn history_replays_in_revision_order_with_previous_values_and_never_splits_a_revision() -> Result<(), ReadError> {
        let mut t = TestDb::new()?;
        t.put("a", "1")?; // 2
        let both = |v: &str| {
            [("a", v), ("b", v)]
                .map(|(k, v)| RequestOp::Put(PutRequest { key: k.into(), value: v.into(), ..Default::default() }))
        };
        t.apply(Command::Txn(TxnRequest { success: both("2").to_vec(), ..Default::default() }))?; // 3
        t.delete("a", "")?; // 4
        let all = KeyRange::new(b"a", b"c");

        let (events, next) = events_between(&t.db, &all, 2, 4, true, 100)?;
        assert_eq!(next, 5);
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision, e.prev_kv.as_ref().map(|p| p.mod_revision)))
            .collect();
        assert_eq!(
            seen,
            [
                (EventType::Put, b"a".to_vec(), 2, None),
                (EventType::Put, b"a".to_vec(), 3, Some(2)),
                (EventType::Put, b"b".to_vec(), 3, None),
                (EventType::Delete, b"a".to_vec(), 4, Some(3)),
            ]
        );
        assert_eq!(events[3].prev_kv.as_ref().map(|p| p.value.clone()), Some(b"2".to_vec()));

        tracing::info!("--- a limit of two events still returns revision 3 whole");
        let (limited, next) = events_between(&t.db, &all, 2, 4, false, 2)?;
        assert_eq!(limited.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(), [2, 3, 3]);
        assert!(limited.iter().all(|e| e.prev_kv.is_none()));
        assert_eq!(next, 4);

        let (only_b, _) = events_between(&t.db, &KeyRange::new(b"b", b""), 2, 4, false, 100)?;
        assert_eq!(only_b.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(), [3]);
        Ok(())
    }

    #[test]
    fn key_count_counts_keys_whose_newest_change_is_not_a_delete() -> Test {
        let mut t = TestDb::new()?;
        for k in ["a", "b", "c", "b\0"] {
            t.put(k, "v")?;
        }
        t.delete("b", "")?;
        assert_eq!(key_count(&t.db)?, 3);
        t.put("b", "again")?;
        t.delete("a", "")?;
        t.delete("c", "")?;
        assert_eq!(key_count(&t.db)?, 2);
        Ok(())
    }

    #[test]
    fn hash_kv_is_a_function_of_history_up_to_its_revision() -> Result<(), ReadError> {
        let (mut one, mut two) = (TestDb::new()?, TestDb::new()?);
        for t in [&mut one, &mut two] {
            t.put("a", "1")?;
            t.apply(put("b", "1"))?;
            t.delete("a", "")?;
        }
        let (h4, at) = hash_kv(&one.db, 4)?;
        assert_eq!(at, Counters { revision: 4, compacted: 0 });
        assert_eq!(hash_kv(&two.db, 0)?.0, h4, "the same history hashes the same");
        two.put("c", "1")?;
        assert_eq!(hash_kv(&two.db, 4)?.0, h4, "later writes do not change a past hash");
        assert_ne!(hash_kv(&two.db, 0)?.0, h4);
        assert!(matches!(hash_kv(&one.db, 5), Err(ReadError::FutureRevision { requested: 5, current: 4 })));
        Ok(())
    }

    #[test]
    fn a_range_answer_is_filtered_sorted_limited_and_counted_as_asked() {
        let kv = |key: &str, value: &str, create_revision, mod_revision| KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision,
            mod_revision,
            version: 1,
            lease: 0,
        };
        let kvs = || vec![kv("a", "3", 2, 6), kv("b", "1", 3, 3), kv("c", "2", 4, 5)].into_iter();
        let keys = |resp: &RangeResponse| pairs(&resp.kvs).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let req = |f: fn(&mut RangeRequest)| {
            let mut r = range_at("a", "z", 0);
            f(&mut r);
            r
        };

        let limited = shape_range(&req(|r| r.limit = 2), kvs());
        assert_eq!((keys(&limited), limited.more, limited.count), (vec!["a".to_string(), "b".into()], true, 3));
        let by_value = shape_range(
            &req(|r| {
                r.sort_order = SortOrder::Descend;
                r.sort_target = SortTarget::Value;
                r.limit = 1;
            }),
            kvs(),
        );
        assert_eq!((keys(&by_value), by_value.more), (vec!["a".to_string()], true));
        let by_mod = shape_range(
            &req(|r| {
                r.sort_order = SortOrder::Ascend;
                r.sort_target = SortTarget::Mod;
            }),
            kvs(),
        );
        assert_eq!(keys(&by_mod), ["b", "c", "a"]);
        let counted = shape_range(&req(|r| r.count_only = true), kvs());
        assert_eq!((counted.kvs.len(), counted.count), (0, 3));
        let bare = shape_range(&req(|r| r.keys_only = true), kvs());
        assert!(bare.kvs.iter().all(|kv| kv.value.is_empty()));
        let recent = shape_range(
            &req(|r| {
                r.min_mod_revision = 5;
                r.max_create_revision = 3;
            }),
            kvs(),
        );
        assert_eq!((keys(&recent), recent.count), (vec!["a".to_string()], 1));
    }
}
