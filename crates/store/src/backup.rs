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
/// Current archive format: 2 added the key-space hash (`kv_hash`). Format 1 archives are still
/// read; they cannot be verified against a recorded hash.
pub const FORMAT_VERSION: u32 = 2;
const CHUNK: usize = 1024 * 1024;
/// Size of the SHA-256 trailer.
pub const TRAILER_LEN: u64 = 32;
/// Largest header accepted when reading an archive.
const MAX_HEADER_BYTES: u32 = 16 * 1024 * 1024;

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
    /// etcd's HashKV of the key space at `revision`, computed from the checkpoint itself when
    /// the archive was made (`None` in format 1).
    #[serde(default)]
    pub kv_hash: Option<u32>,
    /// Checkpoint files, in the order their bytes follow.
    pub files: Vec<ArchiveFile>,
}

/// One file of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveFile {
    pub name: String,
    pub size: u64,
}

/// Why an archive file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
    #[error("not a Trireme snapshot (it does not start with the snapshot magic)")]
    NotAnArchive,
    #[error("the archive header is corrupt: {0}")]
    BadHeader(String),
    #[error("archive format {0} is newer than this binary understands (up to {FORMAT_VERSION})")]
    UnsupportedFormat(u32),
    #[error("the archive is truncated or has extra bytes: {actual} bytes, its header describes {expected}")]
    WrongSize { expected: u64, actual: u64 },
    #[error("the archive is corrupt: its SHA-256 is {actual}, the trailer records {recorded}")]
    HashMismatch { recorded: String, actual: String },
}

impl ArchiveHeader {
    /// Reads the magic and header from the start of an archive; returns the header and the
    /// number of bytes they took.
    pub fn read_from(r: &mut impl io::Read) -> Result<(ArchiveHeader, u64), ArchiveError> {
        let mut magic = vec![0u8; MAGIC.len()];
        match r.read_exact(&mut magic) {
            Ok(()) if magic == MAGIC => {}
            Ok(()) => return Err(ArchiveError::NotAnArchive),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ArchiveError::NotAnArchive),
            Err(e) => return Err(e.into()),
        }
        let mut len = [0u8; 4];
        r.read_exact(&mut len).map_err(|e| ArchiveError::BadHeader(e.to_string()))?;
        let len = u32::from_be_bytes(len);
        if len > MAX_HEADER_BYTES {
            return Err(ArchiveError::BadHeader(format!("header length {len} is implausible")));
        }
        let mut json = vec![0u8; len as usize];
        r.read_exact(&mut json).map_err(|e| ArchiveError::BadHeader(e.to_string()))?;
        let header: ArchiveHeader =
            serde_json::from_slice(&json).map_err(|e| ArchiveError::BadHeader(e.to_string()))?;
        if header.format > FORMAT_VERSION || header.format == 0 {
            return Err(ArchiveError::UnsupportedFormat(header.format));
        }
        for f in &header.files {
            if f.name.is_empty() || f.name.contains('/') || f.name.starts_with('.') {
                return Err(ArchiveError::BadHeader(format!("file name {:?} is not allowed", f.name)));
            }
        }
        Ok((header, (MAGIC.len() + 4) as u64 + u64::from(len)))
    }

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

/// An archive file whose size and SHA-256 trailer were checked.
#[derive(Debug, Clone)]
pub struct CheckedArchive {
    pub header: ArchiveHeader,
    /// Bytes in the file.
    pub size: u64,
    /// The SHA-256 recorded in (and matching) the trailer, hex.
    pub sha256: String,
}

/// Reads a whole archive file, checking its header, its size against the header, and its
/// SHA-256 against the trailer. With `extract_to`, also writes the checkpoint's files there in
/// the same pass (the caller removes them if this fails). `progress` is told the bytes read.
pub fn read_archive(
    path: &Path,
    extract_to: Option<&Path>,
    check_hash: bool,
    progress: &dyn Fn(u64),
) -> Result<CheckedArchive, ArchiveError> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut hashed = HashingReader { inner: io::BufReader::with_capacity(CHUNK, file), hash: Sha256::new() };
    let (header, head_len) = ArchiveHeader::read_from(&mut hashed)?;
    let expected = header.archive_len()?;
    if size != expected {
        return Err(ArchiveError::WrongSize { expected, actual: size });
    }
    progress(head_len);
    // Reading and hashing here, writing and fsyncing on a thread of its own: the two overlap.
    let writer = extract_to.map(|dir| spawn_extractor(dir.to_path_buf()));
    let copied = (|| -> Result<(), ArchiveError> {
        for f in &header.files {
            if let Some((tx, _)) = &writer {
                tx.send(Extract::Open(f.name.clone())).map_err(|_| extractor_gone())?;
            }
            let mut left = f.size;
            while left > 0 {
                let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
                let mut buf = vec![0u8; n];
                hashed.read_exact(&mut buf)?;
                if let Some((tx, _)) = &writer {
                    tx.send(Extract::Data(buf)).map_err(|_| extractor_gone())?;
                }
                left -= n as u64;
                progress(n as u64);
            }
        }
        Ok(())
    })();
    if let Some((tx, handle)) = writer {
        drop(tx);
        let written = handle.join().map_err(|_| io::Error::other("the extracting thread panicked"))?;
        // A write error explains a closed channel better than the send that noticed it.
        written?;
    }
    copied?;
    let mut buf = vec![0u8; 512];
    let body = head_len + header.files.iter().map(|f| f.size).sum::<u64>();
    let padding = usize::try_from(body.div_ceil(512) * 512 - body).unwrap_or(0);
    hashed.read_exact(&mut buf[..padding])?;
    let actual = hex::encode(std::mem::take(&mut hashed.hash).finalize());
    let mut trailer = [0u8; TRAILER_LEN as usize];
    hashed.inner.read_exact(&mut trailer)?;
    progress(padding as u64 + TRAILER_LEN);
    let recorded = hex::encode(trailer);
    if check_hash && recorded != actual {
        return Err(ArchiveError::HashMismatch { recorded, actual });
    }
    if let Some(dir) = extract_to {
        crate::db::sync_dir(dir)?;
    }
    Ok(CheckedArchive { header, size, sha256: recorded })
}

/// What the extracting thread is told: start a file, append to it.
enum Extract {
    Open(String),
    Data(Vec<u8>),
}

fn extractor_gone() -> ArchiveError {
    io::Error::other("the extracting thread stopped").into()
}

/// A thread writing extracted files into `dir`, each fsync'd once complete.
fn spawn_extractor(dir: PathBuf) -> (std::sync::mpsc::SyncSender<Extract>, std::thread::JoinHandle<io::Result<()>>) {
    use std::io::Write;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Extract>(8);
    let handle = std::thread::spawn(move || -> io::Result<()> {
        let finish = |out: Option<io::BufWriter<std::fs::File>>| -> io::Result<()> {
            match out {
                Some(out) => out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all(),
                None => Ok(()),
            }
        };
        let mut out: Option<io::BufWriter<std::fs::File>> = None;
        while let Ok(msg) = rx.recv() {
            match msg {
                Extract::Open(name) => {
                    finish(out.take())?;
                    out = Some(io::BufWriter::with_capacity(CHUNK, std::fs::File::create(dir.join(name))?));
                }
                Extract::Data(bytes) => {
                    out.as_mut().ok_or_else(|| io::Error::other("data before a file"))?.write_all(&bytes)?;
                }
            }
        }
        finish(out)
    });
    (tx, handle)
}

/// Hashes what passes through.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
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
            kv_hash: Some(42),
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

        let file = dir.path().join("archive.db");
        std::fs::write(&file, &all)?;
        let out = dir.path().join("out");
        std::fs::create_dir(&out)?;
        let read = read_archive(&file, Some(&out), true, &|_| {}).map_err(io::Error::other)?;
        assert_eq!(read.header.kv_hash, Some(42));
        assert_eq!(std::fs::read(out.join("a.sst"))?, vec![7u8; 3000]);

        let mut corrupt = all.clone();
        corrupt[MAGIC.len() + 200] ^= 1;
        std::fs::write(&file, &corrupt)?;
        let err = read_archive(&file, None, true, &|_| {}).expect_err("corrupt");
        assert!(matches!(err, ArchiveError::HashMismatch { .. } | ArchiveError::BadHeader(_)), "{err}");
        corrupt = all.clone();
        let last_file_byte = all.len() - 600;
        corrupt[last_file_byte] ^= 1;
        std::fs::write(&file, &corrupt)?;
        let err = read_archive(&file, None, true, &|_| {}).expect_err("corrupt");
        assert!(matches!(err, ArchiveError::HashMismatch { .. }), "{err}");
        assert!(read_archive(&file, None, false, &|_| {}).is_ok(), "the hash check can be skipped");
        std::fs::write(&file, &all[..all.len() - 1])?;
        let err = read_archive(&file, None, true, &|_| {}).expect_err("truncated");
        assert!(matches!(err, ArchiveError::WrongSize { .. }), "{err}");
        std::fs::write(&file, b"SQLite format 3\0 and more bytes than the magic")?;
        let err = read_archive(&file, None, true, &|_| {}).expect_err("not an archive");
        assert!(matches!(err, ArchiveError::NotAnArchive), "{err}");
        Ok(())
    }
}
