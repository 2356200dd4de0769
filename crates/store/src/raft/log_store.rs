//! The Raft log and vote on RocksDB, with group commit.
//!
//! Appends are written to RocksDB without sync, then handed to one flusher thread that calls
//! `flush_wal(true)` once for everything queued and completes the callbacks in order. The vote
//! is written and synced before `save_vote` returns. Both go through the same WAL, so a vote
//! and the appends around it reach disk in the order openraft issued them.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use rocksdb::DB;
use rocksdb::Direction;
use rocksdb::IteratorMode;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;

use super::Entry;
use super::LogId;
use super::TypeConfig;
use super::Vote;
use crate::db;
use crate::schema::CF_LOG;
use crate::schema::CF_RAFT_META;
use crate::schema::META_COMMITTED;
use crate::schema::META_PURGED;
use crate::schema::META_VOTE;
use crate::schema::log_key;

/// openraft's log storage over the `raft/` RocksDB instance.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    /// Wraps an opened `raft/` instance and starts its flusher thread, which ends when the last
    /// clone of this store is dropped.
    pub fn new(db: Arc<DB>) -> io::Result<Self> {
        let (flusher, pending) = mpsc::channel::<IOFlushed<TypeConfig>>();
        // The thread holds the DB only while it flushes: the instance is closed where the
        // store's last handle is dropped, never on this detached thread racing process exit.
        let flush_db = Arc::downgrade(&db);
        std::thread::Builder::new().name("raft-log-flush".into()).spawn(move || flush_loop(&flush_db, &pending))?;
        Ok(LogStore { db, flusher })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let cf = db::cf(&self.db, CF_RAFT_META)?;
        match self.db.get_pinned_cf(cf, key).map_err(db::io)? {
            Some(raw) => db::decode(&raw).map(Some),
            None => Ok(None),
        }
    }

    fn last_entry_log_id(&self) -> io::Result<Option<LogId>> {
        let cf = db::cf(&self.db, CF_LOG)?;
        match self.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, raw) = item.map_err(db::io)?;
                Ok(Some(db::decode::<Entry>(&raw)?.log_id))
            }
            None => Ok(None),
        }
    }
}

/// Syncs the WAL once per batch of queued appends and completes them in order.
fn flush_loop(db: &std::sync::Weak<DB>, pending: &mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter());
        let result = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("the raft log is closed".to_string()),
        };
        for callback in batch {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::other(format!("syncing the raft log: {e}"))),
            };
            callback.io_completed(outcome);
        }
    }
}

fn bound_start(range: &impl RangeBounds<u64>) -> u64 {
    match range.start_bound() {
        Bound::Included(&x) => x,
        Bound::Excluded(&x) => x + 1,
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let cf = db::cf(&self.db, CF_LOG)?;
        let start = log_key(bound_start(&range));
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
            let (key, raw) = item.map_err(db::io)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| db::corrupt("log key"))?);
            if !range.contains(&index) {
                break;
            }
            out.push(db::decode::<Entry>(&raw)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(META_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(META_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let cf = db::cf(&self.db, CF_RAFT_META)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.put_cf_opt(cf, META_VOTE, db::encode(vote)?, &opts).map_err(db::io)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: a lost `committed` only means re-learning it from the leader.
        let cf = db::cf(&self.db, CF_RAFT_META)?;
        self.db.put_cf(cf, META_COMMITTED, db::encode(&committed)?).map_err(db::io)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(META_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = db::cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, log_key(entry.log_id.index), db::encode(&entry)?);
        }
        // A memtable write: microseconds, so done inline; the fsync happens on the flusher.
        self.db.write(batch).map_err(db::io)?;
        self.flusher.send(callback).map_err(|_| io::Error::other("raft log flusher stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let cf = db::cf(&self.db, CF_LOG)?;
        let from = last_log_id.map_or(0, |id| id.index + 1);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, log_key(from), log_key(u64::MAX));
        self.db.write_opt(batch, &opts).map_err(db::io)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let log = db::cf(&self.db, CF_LOG)?;
        let meta = db::cf(&self.db, CF_RAFT_META)?;
        let mut batch = WriteBatch::default();
        // The purged id first in the same batch, so a crash never leaves a hole before it.
        batch.put_cf(meta, META_PURGED, db::encode(&log_id)?);
        batch.delete_range_cf(log, log_key(0), log_key(log_id.index + 1));
        self.db.write(batch).map_err(db::io)
    }
}
