//! Snapshots as directories: a RocksDB checkpoint of the state DB plus `meta.bin`.
//!
//! Layout under the member's data dir:
//! - `snapshots/<id>/`: a complete snapshot (checkpoint files + `meta.bin`), the newest two kept;
//! - `snapshots/tmp-*`: being built or received; never read, removed at start-up.
//!
//! A snapshot is built by checkpointing the live state DB (hard links, so cheap) and reading the
//! applied log id and membership back from the checkpoint itself, so the metadata always
//! describes exactly the files. Files are streamed to followers in chunks by the network layer.

use std::io;
use std::path::Path;
use std::path::PathBuf;

use rocksdb::DB;

use super::SnapshotMeta;
use super::StoredMembership;
use crate::db;
use crate::schema::CF_SM_META;
use crate::schema::SM_APPLIED;
use crate::schema::SM_MEMBERSHIP;
use crate::schema::STATE_CFS;

/// Name of the metadata file inside a snapshot directory.
pub const META_FILE: &str = "meta.bin";
/// Snapshots kept on disk.
const KEEP: usize = 2;

/// A snapshot's files on disk: openraft's `SnapshotData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDir {
    pub path: PathBuf,
}

impl SnapshotDir {
    /// Regular files of the snapshot, sorted, with sizes.
    pub fn files(&self) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let name = entry.file_name().into_string().map_err(|_| db::corrupt("snapshot file name"))?;
                out.push((name, entry.metadata()?.len()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads `meta.bin`.
    pub fn meta(&self) -> io::Result<SnapshotMeta> {
        db::decode(&std::fs::read(self.path.join(META_FILE))?)
    }
}

/// The `snapshots/` directory of a member.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Opens `dir`, removing leftovers of interrupted builds or transfers.
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("tmp-") {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(SnapshotStore { dir })
    }

    /// A fresh scratch directory under `snapshots/` for a snapshot being built or received.
    pub fn scratch(&self, what: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        self.dir.join(format!("tmp-{what}-{nanos}-{}", rand::random::<u32>()))
    }

    /// Checkpoints `db` into a new complete snapshot and returns it with its metadata.
    pub fn build(&self, db: &DB) -> io::Result<(SnapshotMeta, SnapshotDir)> {
        let scratch = self.scratch("build");
        rocksdb::checkpoint::Checkpoint::new(db).and_then(|c| c.create_checkpoint(&scratch)).map_err(db::io)?;
        let meta = read_checkpoint_meta(&scratch)?;
        std::fs::write(scratch.join(META_FILE), db::encode(&meta)?)?;
        std::fs::File::open(scratch.join(META_FILE))?.sync_all()?;
        db::sync_dir(&scratch)?;
        let dir = self.adopt(&scratch, &meta)?;
        Ok((meta, dir))
    }

    /// Moves a complete snapshot directory (built or received, with `meta.bin`) into place and
    /// prunes old ones.
    pub fn adopt(&self, from: &Path, meta: &SnapshotMeta) -> io::Result<SnapshotDir> {
        let target = self.dir.join(snapshot_id(meta));
        if from != target {
            if target.exists() {
                std::fs::remove_dir_all(&target)?;
            }
            std::fs::rename(from, &target)?;
            db::sync_dir(&self.dir)?;
        }
        self.prune()?;
        Ok(SnapshotDir { path: target })
    }

    /// The newest complete snapshot, if any.
    pub fn current(&self) -> io::Result<Option<(SnapshotMeta, SnapshotDir)>> {
        Ok(self.complete()?.pop())
    }

    /// Complete snapshots, oldest first.
    fn complete(&self) -> io::Result<Vec<(SnapshotMeta, SnapshotDir)>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("tmp-") || !entry.file_type()?.is_dir() {
                continue;
            }
            let dir = SnapshotDir { path: entry.path() };
            match dir.meta() {
                Ok(meta) => found.push((meta, dir)),
                Err(e) => tracing::warn!(dir = %dir.path.display(), error = %e, "ignoring unreadable snapshot"),
            }
        }
        found.sort_by_key(|a| a.0.last_log_id);
        Ok(found)
    }

    fn prune(&self) -> io::Result<()> {
        let complete = self.complete()?;
        let excess = complete.len().saturating_sub(KEEP);
        for (_, dir) in complete.into_iter().take(excess) {
            std::fs::remove_dir_all(&dir.path)?;
        }
        Ok(())
    }
}

/// A stable directory name for a snapshot.
fn snapshot_id(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(id) => format!("{:020}-{:020}", id.leader_id.term, id.index),
        None => "empty".to_string(),
    }
}

/// Applied log id and membership as recorded inside a checkpoint.
fn read_checkpoint_meta(dir: &Path) -> io::Result<SnapshotMeta> {
    let db = db::open_read_only(dir, &STATE_CFS)?;
    let meta_cf = db::cf(&db, CF_SM_META)?;
    let last_log_id = match db.get_pinned_cf(meta_cf, SM_APPLIED).map_err(db::io)? {
        Some(raw) => db::decode(&raw)?,
        None => None,
    };
    let last_membership: StoredMembership = match db.get_pinned_cf(meta_cf, SM_MEMBERSHIP).map_err(db::io)? {
        Some(raw) => db::decode(&raw)?,
        None => StoredMembership::default(),
    };
    Ok(SnapshotMeta { last_log_id, last_membership })
}

/// Fills `target` with the files of snapshot `from`: SST files are immutable and hard-linked,
/// everything else (manifest, options, current) is copied, then all is fsync'd.
pub fn materialize(from: &SnapshotDir, target: &Path) -> io::Result<()> {
    if target.exists() {
        std::fs::remove_dir_all(target)?;
    }
    std::fs::create_dir_all(target)?;
    for (name, _) in from.files()? {
        if name == META_FILE {
            continue;
        }
        let src = from.path.join(&name);
        let dst = target.join(&name);
        if name.ends_with(".sst") {
            std::fs::hard_link(&src, &dst).or_else(|_| std::fs::copy(&src, &dst).map(|_| ()))?;
        } else {
            std::fs::copy(&src, &dst)?;
            std::fs::File::open(&dst)?.sync_all()?;
        }
    }
    db::sync_dir(target)
}
