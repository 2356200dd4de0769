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
