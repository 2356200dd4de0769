//! The state machine's RocksDB instance, replaceable as a whole when a snapshot is installed.
//!
//! The data dir holds `state-N/` directories and a `STATE` file naming the live one. Readers take
//! an `Arc<DB>` for the length of one read; an install opens the new instance, points `STATE` at
//! it (fsync'd, atomic rename), swaps the handle and removes the old directory.

use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::RwLock;

use rocksdb::DB;
use trireme_util::fs::FileOptions;
use trireme_util::fs::write_atomic;

use crate::db;
use crate::schema::STATE_CFS;

const POINTER: &str = "STATE";

struct Live {
    db: Arc<DB>,
    generation: u64,
}

/// The live state DB of a member.
pub struct StateDb {
    dir: PathBuf,
    live: RwLock<Live>,
}

impl StateDb {
    /// Opens the live state DB under `dir` (the member's data dir), creating `state-0/` on first
    /// start.
    pub fn open(dir: &Path) -> io::Result<StateDb> {
        let generation = match std::fs::read_to_string(dir.join(POINTER)) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| db::corrupt("STATE pointer"))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_pointer(dir, 0)?;
                0
            }
            Err(e) => return Err(e),
        };
        let db = Arc::new(db::open(&state_dir(dir, generation), &STATE_CFS)?);
        Ok(StateDb { dir: dir.to_path_buf(), live: RwLock::new(Live { db, generation }) })
    }

    /// The live instance.
    pub fn get(&self) -> Arc<DB> {
        self.live.read().unwrap_or_else(std::sync::PoisonError::into_inner).db.clone()
    }

    /// Directory for the next generation, to fill with a snapshot's files before
    /// [`StateDb::replace`].
    pub fn next_dir(&self) -> PathBuf {
        let generation = self.live.read().unwrap_or_else(std::sync::PoisonError::into_inner).generation;
        state_dir(&self.dir, generation + 1)
    }

    /// Makes the filled [`StateDb::next_dir`] the live state and deletes the old one.
    pub fn replace(&self) -> io::Result<Arc<DB>> {
        let mut live = self.live.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = live.generation + 1;
        let db = Arc::new(db::open(&state_dir(&self.dir, next), &STATE_CFS)?);
        write_pointer(&self.dir, next)?;
        let old = std::mem::replace(&mut *live, Live { db: db.clone(), generation: next });
        drop(live);
        let old_dir = state_dir(&self.dir, old.generation);
        drop(old);
        // Readers may still hold the old handle; the files go when the last one drops it.
        if let Err(e) = std::fs::remove_dir_all(&old_dir) {
            tracing::warn!(dir = %old_dir.display(), error = %e, "could not remove replaced state");
        }
        Ok(db)
    }
}

fn state_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("state-{generation}"))
}

fn write_pointer(dir: &Path, generation: u64) -> io::Result<()> {
    let contents = format!("{generation}\n");
    write_atomic(&dir.join(POINTER), contents.as_bytes(), FileOptions::DURABLE)
}
