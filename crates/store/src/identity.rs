//! Member and cluster identity: how ids are derived, and the `member.json` a data dir keeps.
//!
//! As in etcd, a founding member's id is derived from its peer URLs and the cluster token, and
//! the cluster id from the founding member ids and the token, so every founder computes the same
//! ids from the same `--initial-cluster`. A member added later gets a random id from the cluster
//! and learns it (and the cluster id) from a peer when it first starts. Once started, a member
//! reads its identity from its data dir and ignores the initial-cluster flags.

use std::io;
use std::path::Path;

use serde::Deserialize;
use serde::Serialize;
use sha2::Digest;
use sha2::Sha256;
use trireme_util::fs::FileOptions;
use trireme_util::fs::write_atomic;

const FILE: &str = "member.json";
const BOOTSTRAP_FILE: &str = "bootstrap.json";

/// Who a data dir belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberIdentity {
    pub id: u64,
    pub name: String,
    pub cluster_id: u64,
}

impl MemberIdentity {
    /// Reads `member.json` from `data_dir`; `None` if this data dir was never started.
    pub fn load(data_dir: &Path) -> io::Result<Option<MemberIdentity>> {
        match std::fs::read(data_dir.join(FILE)) {
            Ok(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", data_dir.join(FILE).display()))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `member.json` atomically (temp file, fsync, rename, fsync dir).
    pub fn save(&self, data_dir: &Path) -> io::Result<()> {
        save_json(data_dir, FILE, self)
    }
}

/// The founding membership a data dir made by `snapshot restore` or `--force-new-cluster` still
/// has to initialize Raft with: the member reads it at its next start, initializes, and
/// removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub members: Vec<(u64, crate::types::Member)>,
}

impl Bootstrap {
    /// Reads `bootstrap.json`; `None` if there is nothing left to initialize.
    pub fn load(data_dir: &Path) -> io::Result<Option<Bootstrap>> {
        let path = data_dir.join(BOOTSTRAP_FILE);
        match std::fs::read(&path) {
            Ok(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `bootstrap.json` atomically.
    pub fn save(&self, data_dir: &Path) -> io::Result<()> {
        save_json(data_dir, BOOTSTRAP_FILE, self)
    }

    /// Removes `bootstrap.json` once Raft holds the membership.
    pub fn remove(data_dir: &Path) -> io::Result<()> {
        match std::fs::remove_file(data_dir.join(BOOTSTRAP_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => crate::db::sync_dir(data_dir),
        }
    }
}

/// Writes `value` as `name` in `data_dir` (created if missing), durably and atomically.
fn save_json<T: Serialize>(data_dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let contents = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    std::fs::create_dir_all(data_dir)?;
    write_atomic(&data_dir.join(name), &contents, FileOptions::DURABLE)
}

fn hash_u64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 0 means "none" in etcd's API.
    u64::from_be_bytes(first).max(1)
}

/// The id of a founding member with `peer_urls` in the cluster named by `token`.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    hash_u64(&[urls.join(",").as_bytes(), token.as_bytes()])
}

/// The id of a cluster founded by `member_ids` with `token`.
pub fn cluster_id(member_ids: &[u64], token: &str) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let joined: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    hash_u64(&[&joined, token.as_bytes()])
}

/// The id of a cluster restored from a snapshot: like [`cluster_id`], mixed with the
/// archive's SHA-256, so every member restored from the same file agrees on it and it differs
/// from the cluster the snapshot was taken from.
pub fn restored_cluster_id(member_ids: &[u64], token: &str, archive_sha256: &str) -> u64 {
    hash_u64(&[&cluster_id(member_ids, token).to_be_bytes(), b"restored", archive_sha256.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn founders_derive_the_same_ids_from_the_same_flags() {
        let a = member_id(&["http://127.0.0.1:2380".into()], "tok");
        let b = member_id(&["http://127.0.0.1:2381".into()], "tok");
        assert_ne!(a, b);
        assert_eq!(a, member_id(&["http://127.0.0.1:2380".into()], "tok"));
        assert_ne!(a, member_id(&["http://127.0.0.1:2380".into()], "other"));
        assert_eq!(cluster_id(&[a, b], "tok"), cluster_id(&[b, a], "tok"));
    }

    #[test]
    fn identity_round_trips_through_the_data_dir() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(MemberIdentity::load(dir.path())?, None);
        let me = MemberIdentity { id: 7, name: "m1".into(), cluster_id: 9 };
        me.save(dir.path())?;
        assert_eq!(MemberIdentity::load(dir.path())?, Some(me));
        Ok(())
    }
}
