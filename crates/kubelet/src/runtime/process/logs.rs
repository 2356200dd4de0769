//! Reading a container's log file (`kubectl logs`).
//!
//! The shim appends the container's stdout and stderr to the file as they are written and
//! records no time per line, so times are approximate: the output already in the file is
//! dated by the file's modification time (the time of its last write), and output read while
//! following is dated when it is read. `since` therefore selects all of the existing output
//! or none of it (then only what follows).

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::state::{LOG_FILE, observe};
use crate::runtime::{ContainerState, LogOptions};

/// How often a followed log is checked for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
const CHUNK: usize = 64 * 1024;

struct Reader {
    file: tokio::fs::File,
    dir: PathBuf,
    follow: bool,
    timestamps: bool,
    /// Output bytes still allowed by `limit_bytes`.
    remaining: Option<u64>,
    at_line_start: bool,
    /// The file's length and modification time when the request came: output before this
    /// offset is dated by that time.
    existing: (u64, Timestamp),
    position: u64,
    /// The container was seen exited: the next end of file is the end of the stream.
    exited: bool,
}

/// The container's log in `dir` as a stream, with `options` applied.
pub(crate) async fn stream(dir: PathBuf, options: &LogOptions) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
    let path = dir.join(LOG_FILE);
    let mut file = tokio::fs::File::open(&path).await?;
    let meta = file.metadata().await?;
    let modified = meta.modified().ok().and_then(|m| Timestamp::try_from(m).ok()).unwrap_or_else(Timestamp::now);
    let len = meta.len();
    let start = if options.since.is_some_and(|since| modified < since) {
        len
    } else if let Some(lines) = options.tail_lines {
        tokio::task::spawn_blocking(move || tail_offset(&path, len, lines)).await.map_err(io::Error::other)??
    } else {
        0
    };
    file.seek(SeekFrom::Start(start)).await?;
    let reader = Reader {
        file,
        dir,
        follow: options.follow,
        timestamps: options.timestamps,
        remaining: options.limit_bytes,
        at_line_start: true,
        existing: (len, modified),
        position: start,
        exited: false,
    };
    Ok(futures::stream::unfold(reader, |mut reader| async move {
        let item = reader.next_chunk().await.transpose()?;
        if item.is_err() {
            reader.remaining = Some(0);
        }
        Some((item, reader))
    })
    .boxed())
}

impl Reader {
    /// The next piece of output; `None` at the end of the stream.
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            if self.remaining == Some(0) {
                return Ok(None);
            }
            let n = self.file.read(&mut buf).await?;
            if n > 0 {
                let stamp = if self.position < self.existing.0 { self.existing.1 } else { Timestamp::now() };
                self.position += n as u64;
                let mut chunk = self.stamped(&buf[..n], stamp);
                if let Some(remaining) = &mut self.remaining {
                    chunk.truncate(usize::try_from(*remaining).unwrap_or(usize::MAX).min(chunk.len()));
                    *remaining -= chunk.len() as u64;
                }
                return Ok(Some(Bytes::from(chunk)));
            }
            if !self.follow || self.exited {
                return Ok(None);
            }
            let dir = self.dir.clone();
            let state = tokio::task::spawn_blocking(move || observe(&dir)).await.map_err(io::Error::other)??;
            if matches!(state, ContainerState::Exited { .. }) {
                // Drain what the container wrote before it exited, then stop.
                self.exited = true;
            } else {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    }

    /// `bytes`, with each line prefixed by `stamp` if timestamps were asked for.
    fn stamped(&mut self, bytes: &[u8], stamp: Timestamp) -> Vec<u8> {
        if !self.timestamps {
            return bytes.to_vec();
        }
        let prefix = format!("{stamp} ");
        let mut out = Vec::with_capacity(bytes.len() + prefix.len());
        for &byte in bytes {
            if self.at_line_start {
                out.extend_from_slice(prefix.as_bytes());
            }
            out.push(byte);
            self.at_line_start = byte == b'\n';
        }
        out
    }
}

/// Where the last `lines` lines of a file of `len` bytes start (a final line without a
/// newline counts as a line).
fn tail_offset(path: &Path, len: u64, lines: u64) -> io::Result<u64> {
    if lines == 0 {
        return Ok(len);
    }
    let mut file = std::fs::File::open(path)?;
    let mut end = len;
    // The newline that ends the last line does not start another one.
    if end > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(end - 1))?;
        file.read_exact(&mut last)?;
        if last[0] == b'\n' {
            end -= 1;
        }
    }
    let mut seen = 0;
    let mut buf = vec![0u8; CHUNK];
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let piece = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(piece)?;
        for (i, &byte) in piece.iter().enumerate().rev() {
            if byte == b'\n' {
                seen += 1;
                if seen == lines {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines_from_the_end_with_or_without_a_final_newline() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        for (content, lines, expected) in
            [("a\nb\nc\n", 2, "b\nc\n"), ("a\nb\nc", 2, "b\nc"), ("a\nb\n", 5, "a\nb\n"), ("a\n", 0, "")]
        {
            std::fs::write(&path, content)?;
            let offset = tail_offset(&path, content.len() as u64, lines)?;
            assert_eq!(&content[offset as usize..], expected, "{content:?} tail {lines}");
        }
        Ok(())
    }
}
