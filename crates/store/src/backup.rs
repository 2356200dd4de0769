//! The backup archive: what `Maintenance.Snapshot` streams and `trireme snapshot` reads.
//!
//! ```text
//! "TRIREME-SNAPSHOT\n"            magic, 17 bytes
//! u32 BE + JSON                   ArchiveHeader: format, ids, revision, files with sizes
//! file bytes, in header order     a RocksDB checkpoint of the state DB
//! zero padding                    so that everything before the trailer is a multiple of 512
//! 32 bytes                        SHA-256 of everything before it
//! ```
//!
//! The trailer and the size rule (`size % 512 == 32`) are what `etcdctl snapshot save` checks,
//! so etcdctl can take Trireme backups too. The archive is produced from a checkpoint file by
//! file; it is never held in memory whole.

use std::io;
use std::path::Path;
use std::path::PathBuf;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;
use sha2::Digest;
use sha2::Sha256;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// First bytes of every archive.
pub const MAGIC: &[u8] = b"TRIREME-SNAPSHOT\n";
/// Current archive format.
pub const FORMAT_VERSION: u32 = 1;
const CHUNK: usize = 1024 * 1024;

/// What an archive holds, written at its start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveHeader {
    pub format: u32,
    pub cluster_id: u64,
    pub member_id: u64,
    /// Store revision of the snapshot.
    pub revision: i64,
    pub compact_revision: i64,
    /// Live keys.
    pub keys: u64,
    /// Unix seconds when it was taken.
    pub taken_at: u64,
    /// Checkpoint files, in the order their bytes follow.
    pub files: Vec<ArchiveFile>,
}

/// One file of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveFile {
    pub name: String,
    pub size: u64,
}

impl ArchiveHeader {
    fn encoded(&self) -> io::Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        let len = u32::try_from(json.len()).map_err(|_| io::Error::other("archive header too large"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + json.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&json);
        Ok(out)
    }

    /// Bytes before the padding.
    fn body_len(&self) -> io::Result<u64> {
        Ok(self.encoded()?.len() as u64 + self.files.iter().map(|f| f.size).sum::<u64>())
    }

    /// Total archive size: body, padding to a multiple of 512, 32-byte trailer.
    pub fn archive_len(&self) -> io::Result<u64> {
        Ok(self.body_len()?.div_ceil(512) * 512 + 32)
    }
}

/// A checkpoint directory with its header, ready to stream; the directory is removed when this
/// is dropped.
pub struct Archive {
    pub header: ArchiveHeader,
    dir: PathBuf,
}

impl Archive {
    /// Takes ownership of checkpoint `dir` described by `header`.
    pub fn new(dir: PathBuf, header: ArchiveHeader) -> Self {
        Archive { header, dir }
    }

    /// Lists a checkpoint directory's files, sorted, as archive entries.
    pub fn list_files(dir: &Path) -> io::Result<Vec<ArchiveFile>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let name = entry.file_name().into_string().map_err(|_| io::Error::other("non-UTF-8 file name"))?;
                files.push(ArchiveFile { name, size: entry.metadata()?.len() });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Streams the archive in chunks through a bounded channel. An error ends the stream with
    /// `Err`, and the receiver must treat the archive as incomplete.
    pub fn stream(self) -> mpsc::Receiver<io::Result<Bytes>> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            if let Err(e) = self.write_to(&tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    async fn write_to(&self, tx: &mpsc::Sender<io::Result<Bytes>>) -> io::Result<()> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "archive receiver went away");
        let mut hash = Sha256::new();
        let head = self.header.encoded()?;
        let mut written = head.len() as u64;
        hash.update(&head);
        tx.send(Ok(head.into())).await.map_err(|_| closed())?;
        for file in &self.header.files {
            let mut f = tokio::fs::File::open(self.dir.join(&file.name)).await?;
            let mut left = file.size;
            while left > 0 {
                let mut buf = vec![0u8; usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK)];
                f.read_exact(&mut buf).await?;
                left -= buf.len() as u64;
                written += buf.len() as u64;
                hash.update(&buf);
                tx.send(Ok(buf.into())).await.map_err(|_| closed())?;
            }
        }
        let padding = vec![0u8; usize::try_from(written.div_ceil(512) * 512 - written).unwrap_or(0)];
        hash.update(&padding);
        let mut tail = padding;
        tail.extend_from_slice(&hash.finalize());
        tx.send(Ok(tail.into())).await.map_err(|_| closed())
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        // The stream task owns the archive; the checkpoint goes when it is done.
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove backup checkpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn archives_end_with_a_sha256_trailer_at_size_32_mod_512() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let check = dir.path().join("cp");
        std::fs::create_dir(&check)?;
        std::fs::write(check.join("a.sst"), vec![7u8; 3000])?;
        std::fs::write(check.join("CURRENT"), b"MANIFEST-1\n")?;
        let files = Archive::list_files(&check)?;
        let header = ArchiveHeader {
            format: FORMAT_VERSION,
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            compact_revision: 0,
            keys: 0,
            taken_at: 0,
            files,
        };
        let expected_len = header.archive_len()?;
        let mut rx = Archive::new(check.clone(), header).stream();
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend_from_slice(&chunk?);
        }
        assert_eq!(all.len() as u64, expected_len);
        assert_eq!(all.len() % 512, 32);
        let (body, trailer) = all.split_at(all.len() - 32);
        assert_eq!(Sha256::digest(body).as_slice(), trailer);
        assert!(all.starts_with(MAGIC));
        assert!(!check.exists(), "checkpoint removed after streaming");
        Ok(())
    }
}
