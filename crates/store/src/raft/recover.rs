//! Quorum-loss recovery (etcd's `--force-new-cluster`): turns the data dir of a surviving member
//! into that of a one-member cluster that keeps all of this member's data.
//!
//! Every entry in the member's log is applied first, committed or not, as a newly elected
//! leader would commit them: an acknowledged write reached a majority, and if this member holds
//! it, it is kept. Then the log, the snapshots and the old membership go, and `bootstrap.json`
//! names this member alone: at its next start it initializes Raft as the only voter, elects
//! itself, and new members are added with `member add`. The store's revision and history stay,
//! so watchers resume where they were.
//!
//! The steps are ordered so that a crash at any point can be recovered by running this again:
//! the log is applied (the applied index moves with the data), then removed, then the Raft
//! metadata is cleared, then the bootstrap file is written, then the marker.

use std::io;
use std::path::Path;

use rocksdb::Direction;
use rocksdb::IteratorMode;
use trireme_util::fs::FileOptions;
use trireme_util::fs::write_atomic;

use super::Entry;
use super::state_machine::apply_entries;
use super::state_machine::read_applied;
use super::state_machine::read_membership;
use crate::db;
use crate::identity::Bootstrap;
use crate::mvcc::read;
use crate::schema::CF_LOG;
use crate::schema::CF_SM_META;
use crate::schema::RAFT_CFS;
use crate::schema::SM_APPLIED;
use crate::schema::SM_MEMBERSHIP;
use crate::schema::log_key;
use crate::state::StateDb;
use crate::types::Member;

/// Left in the data dir once it was forced into a new cluster; a second force needs it removed.
pub const MARKER: &str = "force-new-cluster.done";
/// Entries applied per write batch.
const APPLY_BATCH: usize = 1000;

/// What recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Log entries applied that the state had not applied yet.
    pub applied_entries: u64,
    /// The store's revision afterwards.
    pub revision: i64,
    /// Members of the old cluster, this one included.
    pub old_members: usize,
}

/// Makes `data_dir` (member `id`, known to the new cluster as `me`) the data dir of a
/// one-member cluster holding all of its data.
///
/// If the data dir was forced before (its marker exists), returns `AlreadyExists` without
/// touching it: a member restarted with the flag still set must not throw away the members
/// added since.
pub fn force_new_cluster(data_dir: &Path, id: u64, me: Member) -> io::Result<Recovered> {
    let marker = data_dir.join(MARKER);
    if marker.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} was already forced into a new cluster; start without --force-new-cluster (or remove {} to force it again)",
                data_dir.display(),
                marker.display()
            ),
        ));
    }
    let state = StateDb::open(data_dir)?;
    let db = state.get();
    let old_members = read_membership(&db)?.membership().nodes().count();
    let applied_entries = apply_log(&db, &data_dir.join("raft"))?;
    db.flush_wal(true).map_err(db::io)?;
    db.flush().map_err(db::io)?;
    let revision = read::counters(&db)?.revision;
    // The log is applied and durable in the state: now it (and the snapshots, which carry the
    // old membership and log position) can go.
    for dir in ["raft", "snapshots"] {
        match std::fs::remove_dir_all(data_dir.join(dir)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    db::sync_dir(data_dir)?;
    let meta = db::cf(&db, CF_SM_META)?;
    let mut batch = rocksdb::WriteBatch::default();
    batch.delete_cf(meta, SM_APPLIED);
    batch.delete_cf(meta, SM_MEMBERSHIP);
    db.write(batch).map_err(db::io)?;
    db.flush_wal(true).map_err(db::io)?;
    drop(db);
    drop(state);
    Bootstrap { members: vec![(id, me)] }.save(data_dir)?;
    let marker = format!("revision {revision}\n");
    write_atomic(&data_dir.join(MARKER), marker.as_bytes(), FileOptions::DURABLE)?;
    Ok(Recovered { applied_entries, revision, old_members })
}

/// Applies every entry of the log at `raft_dir` after the state's applied index; returns how
/// many.
fn apply_log(state: &rocksdb::DB, raft_dir: &Path) -> io::Result<u64> {
    if !raft_dir.exists() {
        return Ok(0);
    }
    let log = db::open(raft_dir, &RAFT_CFS)?;
    let cf = db::cf(&log, CF_LOG)?;
    let first = read_applied(state)?.map_or(0, |id| id.index + 1);
    let mut counters = read::counters(state)?;
    let mut membership = read_membership(state)?;
    let mut applied = 0u64;
    let mut batch: Vec<Entry> = Vec::with_capacity(APPLY_BATCH);
    let start = log_key(first);
    for (expected, item) in (first..).zip(log.iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))) {
        let (_, raw) = item.map_err(db::io)?;
        let entry: Entry = db::decode(&raw)?;
        if entry.log_id.index != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the log has a gap: entry {} where {expected} was expected", entry.log_id.index),
            ));
        }
        batch.push(entry);
        if batch.len() == APPLY_BATCH {
            applied += batch.len() as u64;
            (_, counters, membership) = apply_entries(state, counters, membership, std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        applied += batch.len() as u64;
        apply_entries(state, counters, membership, batch)?;
    }
    Ok(applied)
}
