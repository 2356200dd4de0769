//! Offline operations on backups: writing an archive stream to a file, restoring an archive into
//! the data dir of a member of a new cluster, and verifying an archive by restoring it.
//!
//! A restored data dir holds the archive's state DB as `state-0/`, `member.json` (who this
//! member is, the new cluster id) and `bootstrap.json` (the founding membership). No Raft log
//! comes from the archive: the member initializes Raft with the bootstrap membership at its
//! first start, as a founder of a new cluster does, so members restored from the same file on
//! three machines form a new three-member cluster holding the snapshot's data.

use std::collections::BTreeMap;
use std::io;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use sha2::Digest;
use sha2::Sha256;

use crate::backup::ArchiveError;
use crate::backup::ArchiveHeader;
use crate::backup::CheckedArchive;
use crate::backup::TRAILER_LEN;
use crate::backup::read_archive;
use crate::db;
use crate::identity::Bootstrap;
use crate::identity::MemberIdentity;
use crate::mvcc::Counters;
use crate::mvcc::apply::put_counters;
use crate::mvcc::read;
use crate::schema::CF_SM_META;
use crate::schema::SM_APPLIED;
use crate::schema::SM_CLUSTER_ID;
use crate::schema::SM_MEMBERSHIP;
use crate::state::StateDb;
use crate::types::Member;

/// etcd's advice for Kubernetes restores: move the revision past anything a client may have
/// seen from the lost cluster.
pub const DEFAULT_BUMP_REVISION: i64 = 1_000_000_000;

/// Why a restore or a verification failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("data dir {0} already exists and is not empty; restore into a new directory")]
    DataDirNotEmpty(PathBuf),
    #[error("--initial-cluster does not list this member ({0})")]
    NotAFounder(String),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the restored store did not start: {0}")]
    Store(String),
}

/// Who the restored member is and how its history is presented.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// This member's name; it must be one of `founders`.
    pub name: String,
    /// Every member of the new cluster by id.
    pub founders: BTreeMap<u64, Member>,
    /// Cluster token the ids derive from.
    pub token: String,
    /// Added to the snapshot's revision, so watchers of the lost cluster never see time go
    /// backwards.
    pub bump_revision: i64,
    /// Count everything up to the (bumped) revision as compacted: every watcher and reader
    /// that remembers an older revision gets `Compacted` (Kubernetes: 410 Gone) and relists.
    pub mark_compacted: bool,
    /// Restore even if the archive's SHA-256 does not match its trailer.
    pub skip_hash_check: bool,
}

/// What a restore produced.
#[derive(Debug, Clone)]
pub struct Restored {
    pub archive: CheckedArchive,
    pub identity: MemberIdentity,
    /// The restored store's current revision.
    pub revision: i64,
    /// Its compaction point.
    pub compacted: i64,
}

/// Restores `archive` into `data_dir` (absent or empty) as member `opts.name` of a new cluster.
/// `progress` is told the archive bytes read.
///
/// If the archive is corrupt (and `skip_hash_check` is not set), returns `Archive` and leaves
/// no data dir behind.
pub fn restore(
    archive: &Path,
    data_dir: &Path,
    opts: &RestoreOptions,
    progress: &dyn Fn(u64),
) -> Result<Restored, RestoreError> {
    let (id, _) = opts
        .founders
        .iter()
        .find(|(_, m)| m.name == opts.name)
        .ok_or_else(|| RestoreError::NotAFounder(opts.name.clone()))?;
    let id = *id;
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        return Err(RestoreError::DataDirNotEmpty(data_dir.to_path_buf()));
    }
    let created = !data_dir.exists();
    let result = restore_into(archive, data_dir, id, opts, progress);
    if result.is_err() {
        cleanup(data_dir, created);
    }
    result
}

fn restore_into(
    archive: &Path,
    data_dir: &Path,
    id: u64,
    opts: &RestoreOptions,
    progress: &dyn Fn(u64),
) -> Result<Restored, RestoreError> {
    let state_dir = data_dir.join("state-0");
    std::fs::create_dir_all(&state_dir)?;
    let checked = read_archive(archive, Some(&state_dir), !opts.skip_hash_check, progress)?;
    let ids: Vec<u64> = opts.founders.keys().copied().collect();
    let cluster_id = crate::identity::restored_cluster_id(&ids, &opts.token, &checked.sha256);
    let (revision, compacted) = {
        let state = StateDb::open(data_dir)?;
        let db = state.get();
        let meta = db::cf(&db, CF_SM_META)?;
        let counters = read::counters(&db)?;
        let revision = counters.revision + opts.bump_revision.max(0);
        let compacted = if opts.mark_compacted { revision } else { counters.compacted };
        let mut batch = rocksdb::WriteBatch::default();
        // The lost cluster's log position and membership mean nothing here: Raft starts anew.
        batch.delete_cf(meta, SM_APPLIED);
        batch.delete_cf(meta, SM_MEMBERSHIP);
        batch.put_cf(meta, SM_CLUSTER_ID, cluster_id.to_be_bytes());
        put_counters(&db, &mut batch, Counters { revision, compacted })?;
        db.write(batch).map_err(db::io)?;
        db.flush_wal(true).map_err(db::io)?;
        db.flush().map_err(db::io)?;
        (revision, compacted)
    };
    Bootstrap { members: opts.founders.clone().into_iter().collect() }.save(data_dir)?;
    // Written last: a data dir with `member.json` is a complete one.
    let identity = MemberIdentity { id, name: opts.name.clone(), cluster_id };
    identity.save(data_dir)?;
    Ok(Restored { archive: checked, identity, revision, compacted })
}

fn cleanup(data_dir: &Path, created: bool) {
    let result = if created {
        std::fs::remove_dir_all(data_dir)
    } else {
        std::fs::read_dir(data_dir).and_then(|entries| {
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() { std::fs::remove_dir_all(&path)? } else { std::fs::remove_file(&path)? }
            }
            Ok(())
        })
    };
    if let Err(e) = result {
        tracing::warn!(dir = %data_dir.display(), error = %e, "could not clean up a failed restore");
    }
}

/// What verifying an archive found.
#[derive(Debug, Clone)]
pub struct Verified {
    pub archive: CheckedArchive,
    /// Key-space hash recorded when the archive was made (`None`: format 1, nothing to compare).
    pub recorded_kv_hash: Option<u32>,
    /// Key-space hash of the restored store at the archive's revision.
    pub kv_hash: u32,
    /// Live keys in the restored store.
    pub keys: u64,
}

impl Verified {
    /// The restored store holds exactly what was saved.
    pub fn ok(&self) -> bool {
        self.recorded_kv_hash.is_none_or(|h| h == self.kv_hash) && self.keys == self.archive.header.keys
    }
}

/// Restores `archive` into a one-member store under `scratch` (removed afterwards), starts it,
/// and computes the key-space hash at the archive's revision and the number of live keys, to
/// compare with what was recorded when it was saved (see [`Verified::ok`]).
///
/// If the archive is corrupt, returns `Archive`.
pub async fn verify(archive: &Path, scratch: &Path) -> Result<Verified, RestoreError> {
    let data_dir = scratch.join(format!("verify-{}", std::process::id()));
    let result = verify_in(archive, &data_dir).await;
    if let Err(e) = std::fs::remove_dir_all(&data_dir) {
        tracing::warn!(dir = %data_dir.display(), error = %e, "could not remove the verification scratch dir");
    }
    result
}

async fn verify_in(archive: &Path, data_dir: &Path) -> Result<Verified, RestoreError> {
    let me = Member { name: "verify".into(), peer_urls: vec!["http://127.0.0.1:1".into()], client_urls: Vec::new() };
    let opts = RestoreOptions {
        name: me.name.clone(),
        founders: BTreeMap::from([(1, me)]),
        token: "verify".into(),
        bump_revision: 0,
        mark_compacted: false,
        skip_hash_check: false,
    };
    let (archive, data_dir_owned) = (archive.to_path_buf(), data_dir.to_path_buf());
    let restored = tokio::task::spawn_blocking(move || restore(&archive, &data_dir_owned, &opts, &|_| {}))
        .await
        .map_err(|e| RestoreError::Store(format!("restore task failed: {e}")))??;
    let store = crate::Store::open(crate::StoreConfig {
        id: restored.identity.id,
        name: "snapshot-verify".into(),
        data_dir: data_dir.to_path_buf(),
        auto_compaction_retention: None,
        ..crate::StoreConfig::default()
    })
    .await
    .map_err(|e| RestoreError::Store(e.to_string()))?;
    let checked = async {
        store.bootstrap().await?;
        let mut leading = store.leadership();
        tokio::time::timeout(VERIFY_ELECTION_WAIT, leading.wait_for(Option::is_some))
            .await
            .map_err(|_| crate::StoreError::NoLeader)?
            .map_err(|_| crate::StoreError::Stopped)?;
        let (kv_hash, _, _) = store.hash_kv(restored.archive.header.revision).await?;
        // Counted at the archive's revision: leases the restored store expires meanwhile do not
        // change what was saved.
        let at = crate::types::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: restored.archive.header.revision,
            serializable: true,
            count_only: true,
            ..crate::types::RangeRequest::default()
        };
        let keys = u64::try_from(store.range(at).await?.0.count).unwrap_or(0);
        Ok::<_, crate::StoreError>((kv_hash, keys))
    }
    .await;
    store.shutdown().await;
    let (kv_hash, keys) = checked.map_err(|e| RestoreError::Store(e.to_string()))?;
    Ok(Verified { recorded_kv_hash: restored.archive.header.kv_hash, archive: restored.archive, kv_hash, keys })
}

/// Writes an archive arriving in chunks to `path` atomically (a `.part` file, fsync, rename,
/// fsync of the directory), checking its SHA-256 trailer and size on the way. `progress` is
/// told the bytes written.
///
/// If the stream ends early or the trailer does not match, returns the error and leaves
/// nothing at `path`.
pub async fn save_stream<S>(mut chunks: S, path: &Path, progress: impl Fn(u64)) -> Result<CheckedArchive, ArchiveError>
where
    S: futures::Stream<Item = io::Result<Bytes>> + Unpin,
{
    use futures::StreamExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let path_owned = path.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> Result<CheckedArchive, ArchiveError> {
        let mut out = ArchiveWriter::create(&path_owned)?;
        while let Some(chunk) = rx.blocking_recv() {
            out.write(&chunk)?;
        }
        out.finish()
    });
    let mut failed = None;
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(chunk) => {
                let n = chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    break;
                }
                progress(n);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| io::Error::other(format!("writer task failed: {e}")))?;
    match failed {
        // A stream cut short cannot pass the size and trailer checks; should its bytes so far
        // happen to, the archive is still not what the server meant to send.
        Some(e) => {
            if written.is_ok() {
                let _ = std::fs::remove_file(path);
            }
            Err(e.into())
        }
        None => written,
    }
}

/// An archive being written to a file.
struct ArchiveWriter {
    path: PathBuf,
    part: PathBuf,
    file: Option<io::BufWriter<std::fs::File>>,
    hash: Sha256,
    /// The last bytes seen: the trailer, once the stream ends.
    tail: Vec<u8>,
    written: u64,
}

impl ArchiveWriter {
    fn create(path: &Path) -> io::Result<ArchiveWriter> {
        let name =
            path.file_name().ok_or_else(|| io::Error::other(format!("{} is not a file name", path.display())))?;
        let mut part_name = name.to_os_string();
        part_name.push(".part");
        let part = path.with_file_name(part_name);
        let file = std::fs::File::create(&part)?;
        Ok(ArchiveWriter {
            path: path.to_path_buf(),
            part,
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
            hash: Sha256::new(),
            tail: Vec::with_capacity(2 * TRAILER_LEN as usize),
            written: 0,
        })
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("archive already finished"))?;
        file.write_all(chunk)?;
        self.written += chunk.len() as u64;
        // Everything but the last 32 bytes is hashed; those may be the trailer.
        let keep = TRAILER_LEN as usize;
        if chunk.len() >= keep {
            self.hash.update(&self.tail);
            self.hash.update(&chunk[..chunk.len() - keep]);
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(keep);
            self.hash.update(&self.tail[..excess]);
            self.tail.drain(..excess);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<CheckedArchive, ArchiveError> {
        let file = self.file.take().ok_or_else(|| io::Error::other("archive already finished"))?;
        file.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
        let (header, _) = ArchiveHeader::read_from(&mut io::BufReader::new(std::fs::File::open(&self.part)?))?;
        let expected = header.archive_len()?;
        if self.written != expected {
            return Err(ArchiveError::WrongSize { expected, actual: self.written });
        }
        let actual = hex::encode(std::mem::take(&mut self.hash).finalize());
        let recorded = hex::encode(&self.tail);
        if actual != recorded {
            return Err(ArchiveError::HashMismatch { recorded, actual });
        }
        std::fs::rename(&self.part, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            db::sync_dir(dir)?;
        }
        Ok(CheckedArchive { header, size: self.written, sha256: recorded })
    }
}

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        // Unfinished or refused: no partial file is left where a complete one is expected.
        if self.part.exists() {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

/// How long [`verify`] waits for its one-member store to elect itself.
pub const VERIFY_ELECTION_WAIT: Duration = Duration::from_secs(10);
