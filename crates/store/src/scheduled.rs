//! Scheduled snapshots: while this master leads, a verified snapshot every `--snapshot-interval`
//! into `--snapshot-dir`, keeping the newest `--snapshot-retention`.
//!
//! Each snapshot is written like `trireme snapshot save` writes one (`.part`, fsync, rename),
//! then verified like `trireme snapshot verify` does (restored into a scratch dir, opened, its
//! key-space hash compared with the one recorded at save) before it takes its final name. One
//! that fails verification is renamed `*.failed` and does not count towards the retention.
//! Metrics describe the last one.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Store;
use crate::StoreError;
use crate::backup::ArchiveError;
use crate::restore;

/// File names of scheduled snapshots: `snapshot-<UTC time>-rev<revision>.db`, so that name
/// order is age order.
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".db";

/// Why one scheduled snapshot failed (the schedule goes on).
#[derive(Debug, thiserror::Error)]
pub enum ScheduledError {
    /// The snapshot directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store could not take the snapshot.
    #[error("taking the snapshot: {0}")]
    Backup(#[source] StoreError),
    /// The snapshot could not be written.
    #[error("writing the snapshot: {0}")]
    Save(#[source] ArchiveError),
    /// The snapshot was written but does not restore to what was saved.
    #[error("{} failed verification ({problem}); kept as {}", path.display(), failed.display())]
    Unverified { path: PathBuf, failed: PathBuf, problem: String },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ScheduledError {
    let path = path.to_path_buf();
    move |source| ScheduledError::Io { what, path, source }
}

/// `--snapshot-interval`, `--snapshot-retention`, `--snapshot-dir`.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub interval: Duration,
    pub retention: usize,
    pub dir: PathBuf,
}

/// Takes a snapshot every interval while this member leads, until `shutdown`, in the member's
/// span.
pub async fn run(store: Store, config: ScheduleConfig, shutdown: CancellationToken) {
    let span = store.span().clone();
    schedule(store, config, shutdown).instrument(span).await
}

async fn schedule(store: Store, config: ScheduleConfig, shutdown: CancellationToken) {
    describe_metrics();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if store.leadership().borrow().is_none() {
            continue;
        }
        match take(&store, &config).await {
            Ok(path) => tracing::info!(file = %path.display(), "scheduled snapshot saved and verified"),
            Err(e) => {
                metrics::counter!("trireme_snapshots_total", "result" => "failed").increment(1);
                tracing::error!(error = %e, "scheduled snapshot failed");
            }
        }
    }
}

fn describe_metrics() {
    metrics::describe_gauge!("trireme_snapshot_last_timestamp_seconds", "When the last scheduled snapshot finished");
    metrics::describe_gauge!("trireme_snapshot_last_duration_seconds", "Time to save the last scheduled snapshot");
    metrics::describe_gauge!("trireme_snapshot_last_size_bytes", "Size of the last scheduled snapshot");
    metrics::describe_gauge!("trireme_snapshot_last_revision", "Store revision of the last scheduled snapshot");
    metrics::describe_gauge!(
        "trireme_snapshot_last_verified",
        "1 if the last scheduled snapshot passed verification, 0 if it failed"
    );
    metrics::describe_gauge!(
        "trireme_snapshot_last_verify_duration_seconds",
        "Time to verify the last scheduled snapshot"
    );
    metrics::describe_counter!("trireme_snapshots_total", "Scheduled snapshots by result (verified, failed)");
}

/// Saves, verifies and prunes once; returns the snapshot's path.
async fn take(store: &Store, config: &ScheduleConfig) -> Result<PathBuf, ScheduledError> {
    tokio::fs::create_dir_all(&config.dir).await.map_err(io("creating --snapshot-dir", &config.dir))?;
    let started = Instant::now();
    let archive = store.backup().await.map_err(ScheduledError::Backup)?;
    let name = format!(
        "{PREFIX}{}-rev{}{SUFFIX}",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S%.3fZ"),
        archive.header.revision
    );
    let path = config.dir.join(&name);
    // Named `.unverified` until verified, so the directory never holds more than the retention
    // of verified snapshots, nor one that was not verified.
    let unverified = config.dir.join(format!("{name}.unverified"));
    let chunks = tokio_stream::wrappers::ReceiverStream::new(archive.stream());
    let saved = restore::save_stream(chunks, &unverified, |_| {}).await.map_err(ScheduledError::Save)?;
    let save_time = started.elapsed();
    metrics::gauge!("trireme_snapshot_last_duration_seconds").set(save_time.as_secs_f64());
    metrics::gauge!("trireme_snapshot_last_size_bytes").set(saved.size as f64);
    metrics::gauge!("trireme_snapshot_last_revision").set(saved.header.revision as f64);
    let verify_started = Instant::now();
    let verified = restore::verify(&unverified, &config.dir).await;
    metrics::gauge!("trireme_snapshot_last_verify_duration_seconds").set(verify_started.elapsed().as_secs_f64());
    metrics::gauge!("trireme_snapshot_last_timestamp_seconds").set(jiff::Timestamp::now().as_second() as f64);
    let problem = match verified {
        Ok(v) if v.ok() => None,
        Ok(v) => Some(format!(
            "restored {} keys with key-space hash {}, saved {} keys with hash {:?}",
            v.keys, v.kv_hash, v.archive.header.keys, v.recorded_kv_hash
        )),
        Err(e) => Some(e.to_string()),
    };
    if let Some(problem) = problem {
        metrics::gauge!("trireme_snapshot_last_verified").set(0.0);
        let failed = config.dir.join(format!("{name}.failed"));
        tokio::fs::rename(&unverified, &failed).await.map_err(io("renaming", &unverified))?;
        return Err(ScheduledError::Unverified { path, failed, problem });
    }
    metrics::gauge!("trireme_snapshot_last_verified").set(1.0);
    metrics::counter!("trireme_snapshots_total", "result" => "verified").increment(1);
    tracing::info!(
        revision = saved.header.revision,
        keys = saved.header.keys,
        bytes = saved.size,
        save_ms = save_time.as_millis() as u64,
        verify_ms = verify_started.elapsed().as_millis() as u64,
        "scheduled snapshot"
    );
    prune(&config.dir, config.retention.saturating_sub(1)).await.map_err(io("pruning", &config.dir))?;
    tokio::fs::rename(&unverified, &path).await.map_err(io("renaming", &unverified))?;
    Ok(path)
}

/// Deletes the oldest verified scheduled snapshots beyond `keep`.
async fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
            names.push(name);
        }
    }
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for name in names.into_iter().take(excess) {
        tokio::fs::remove_file(dir.join(&name)).await?;
        tracing::info!(file = %name, "removed an old scheduled snapshot");
    }
    Ok(())
}
