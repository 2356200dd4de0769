//! A member's store configuration.

use std::path::PathBuf;
use std::time::Duration;

/// How a member's store runs. `Default` gives production values; call [`StoreConfig::validate`]
/// (done by `Store::open`) to check rules across fields.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This member's id: stable for the life of its data dir, never reused by another member.
    pub id: u64,
    /// This member's name (`--name`), for its logs: its tasks run in a `member` span with the
    /// name and the id.
    pub name: String,
    /// Where the Raft log, the state and snapshots live.
    pub data_dir: PathBuf,
    /// The id a founding member records for a new cluster (0: learn it from the cluster).
    pub cluster_id: u64,
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for `election_timeout_max` (openraft's leader lease)
    /// plus a random time in `[min, max)` starts an election.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Take a snapshot after this many log entries since the last one.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot for slow followers before purging.
    pub log_entries_kept: u64,
    /// How long a client request may wait for a leader, forwarding and apply.
    pub request_timeout: Duration,
    /// Recent watch events kept in memory; older ones are replayed from RocksDB.
    pub watch_ring_events: usize,
    /// History older than this is compacted away by the leader (etcd's periodic
    /// auto-compaction); `None` keeps everything until `Compact` is called.
    pub auto_compaction_retention: Option<Duration>,
    /// Largest request accepted, bytes.
    pub max_request_bytes: usize,
    /// Most operations in one transaction.
    pub max_txn_ops: usize,
    /// Connections to peers are made from this local address (`None`: the OS picks).
    pub peer_source_address: Option<std::net::IpAddr>,
    /// TLS to dial `https://` peers with, presenting this member's peer certificate.
    pub peer_client_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            id: 0,
            name: String::new(),
            data_dir: PathBuf::from("default.trireme"),
            cluster_id: 0,
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            snapshot_every_entries: 10_000,
            log_entries_kept: 5_000,
            request_timeout: Duration::from_secs(5),
            watch_ring_events: 16_384,
            auto_compaction_retention: Some(Duration::from_secs(3600)),
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            peer_source_address: None,
            peer_client_tls: None,
        }
    }
}

/// A configuration rule that does not hold; the message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl StoreConfig {
    /// Checks rules across fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: &str| Err(ConfigError(msg.to_string()));
        if self.id == 0 {
            return fail("member id must not be 0");
        }
        if self.heartbeat_interval.is_zero() {
            return fail("--heartbeat-interval must be positive");
        }
        if self.election_timeout_min < self.heartbeat_interval * 3 {
            return fail("--election-timeout must be at least 3 × --heartbeat-interval");
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return fail("the election timeout range must not be empty");
        }
        if self.snapshot_every_entries == 0 {
            return fail("--snapshot-count must be positive");
        }
        if self.auto_compaction_retention.is_some_and(|r| r < Duration::from_secs(1)) {
            return fail("--auto-compaction-retention must be at least 1s (or 0 to disable)");
        }
        if self.max_txn_ops == 0 || self.max_request_bytes == 0 {
            return fail("--max-txn-ops and --max-request-bytes must be positive");
        }
        Ok(())
    }

    /// The shortest lease TTL granted, seconds: leases must outlive an election (etcd's rule of
    /// 1.5 × the election timeout).
    pub fn min_lease_ttl(&self) -> i64 {
        let millis = self.election_timeout_max.as_millis() * 3 / 2;
        i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX).max(1)
    }
}
