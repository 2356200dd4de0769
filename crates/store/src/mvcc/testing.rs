//! A state DB of its own in a temp dir, for the MVCC unit tests: commands are applied one at a
//! time and written with their counters, as the state machine writes a command that must apply
//! alone — no Raft, no log.

use std::io;

use rocksdb::DB;
use rocksdb::WriteBatch;
use tempfile::TempDir;

use crate::db;
use crate::mvcc::Counters;
use crate::mvcc::apply::Applied;
use crate::mvcc::apply::Pending;
use crate::mvcc::apply::apply_command;
use crate::mvcc::apply::put_counters;
use crate::mvcc::read;
use crate::schema::STATE_CFS;
use crate::types::Command;
use crate::types::DeleteRangeRequest;
use crate::types::KeyValue;
use crate::types::PutRequest;
use crate::types::RangeRequest;

/// An empty state DB and its counters.
pub struct TestDb {
    pub db: DB,
    pub counters: Counters,
    _dir: TempDir,
}

impl TestDb {
    /// An empty store (at revision 1, as in etcd).
    pub fn new() -> io::Result<TestDb> {
        let dir = tempfile::tempdir()?;
        let db = db::open(&dir.path().join("state-0"), &STATE_CFS)?;
        let counters = read::counters(&db)?;
        Ok(TestDb { db, counters, _dir: dir })
    }

    /// Applies `command`, then writes its changes and the new counters in one batch. The
    /// returned `Applied` has no writes left (they are in the DB).
    pub fn apply(&mut self, command: Command) -> io::Result<Applied> {
        let mut applied = apply_command(&self.db, &Pending::new(), self.counters, &command)?;
        let mut batch = WriteBatch::default();
        for write in std::mem::take(&mut applied.writes) {
            write.add_to(&self.db, &mut batch)?;
        }
        put_counters(&self.db, &mut batch, applied.counters)?;
        self.db.write(batch).map_err(db::io)?;
        self.counters = applied.counters;
        Ok(applied)
    }

    /// Puts `key = value` and returns the new revision.
    pub fn put(&mut self, key: &str, value: &str) -> io::Result<i64> {
        self.apply(put(key, value)).map(|a| a.counters.revision)
    }

    /// Deletes `[key, end)` (one key when `end` is empty) and returns the revision after it.
    pub fn delete(&mut self, key: &str, end: &str) -> io::Result<i64> {
        let req = DeleteRangeRequest { key: key.into(), range_end: end.into(), ..DeleteRangeRequest::default() };
        self.apply(Command::DeleteRange(req)).map(|a| a.counters.revision)
    }

    /// The live key, as a range read at the current revision returns it.
    pub fn get(&self, key: &str) -> io::Result<Option<KeyValue>> {
        Ok(read::get_live(&self.db, key.as_bytes())?.map(|rec| read::to_kv(key.as_bytes(), &rec)))
    }
}

/// A put of `key = value` with no options.
pub fn put(key: &str, value: &str) -> Command {
    Command::Put(PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() })
}

/// A range over `[key, end)`, or one key when `end` is empty, at `revision` (0: current).
pub fn range_at(key: &str, end: &str, revision: i64) -> RangeRequest {
    RangeRequest { key: key.into(), range_end: end.into(), revision, ..RangeRequest::default() }
}

/// Keys and values of a range answer, as strings.
pub fn pairs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned()))
        .collect()
}

/// `(key, value)` pairs as [`pairs`] returns them.
pub fn owned(kvs: &[(&str, &str)]) -> Vec<(String, String)> {
    kvs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
