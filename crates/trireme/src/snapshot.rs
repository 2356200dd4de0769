//! `trireme snapshot save|status|restore|verify`: backups of the cluster's data.
//!
//! The file format is the store's archive (`trireme_store::backup`): a header, the files of a
//! RocksDB checkpoint, and a SHA-256 trailer; `etcdctl snapshot save` produces the same bytes.

use std::path::Path;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use clap::Subcommand;
use clap::ValueEnum;
use futures::StreamExt;
use indicatif::ProgressBar;
use indicatif::ProgressStyle;
use serde::Serialize;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use trireme_store::backup::read_archive;
use trireme_store::restore;
use trireme_store::restore::RestoreOptions;

use crate::client;
use crate::master::MasterArgs;
use crate::master::MasterConfig;

/// `trireme snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Stream a consistent snapshot from a live master into FILE.
    Save(SaveArgs),
    /// Describe a snapshot file and check its integrity.
    Status(StatusArgs),
    /// Build the data dir of one member of a new cluster from a snapshot file.
    Restore(RestoreArgs),
    /// Restore into a scratch dir, open it, and compare its key space with the hash recorded at
    /// save time.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct SaveArgs {
    /// Where to write the snapshot (written as FILE.part, then renamed).
    file: PathBuf,
    /// Masters' etcd API URLs; the first that answers streams the snapshot.
    #[arg(long, env = "TRIREME_ENDPOINTS", default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    #[command(flatten)]
    tls: client::ClientTlsArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
struct StatusArgs {
    file: PathBuf,
    /// Output format.
    #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Output::Table)]
    write_out: Output,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    file: PathBuf,
    /// This member's name; it must appear in --initial-cluster.
    #[arg(long)]
    name: String,
    /// Every member of the new cluster: name=peer-url,...
    #[arg(long)]
    initial_cluster: String,
    /// This member's peer URLs, as in --initial-cluster.
    #[arg(long)]
    initial_advertise_peer_urls: String,
    /// Token the member and cluster ids derive from.
    #[arg(long, default_value = "trireme-cluster")]
    initial_cluster_token: String,
    /// The data dir to create (it must not exist, or be empty) [default: NAME.trireme].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Restore even if the file's SHA-256 does not match its trailer.
    #[arg(long)]
    skip_hash_check: bool,
    /// Move the revision forward by this much, past anything clients of the lost cluster saw.
    #[arg(long, default_value_t = restore::DEFAULT_BUMP_REVISION)]
    bump_revision: i64,
    /// Count the restored history as compacted, so every watcher and cache relists instead of
    /// resuming (Kubernetes clients get 410 Gone).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    mark_compacted: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    file: PathBuf,
    /// Where to restore for the check [default: a new directory next to FILE].
    #[arg(long)]
    scratch_dir: Option<PathBuf>,
}

/// Runs a `trireme snapshot` command.
pub async fn run(args: SnapshotArgs) -> Result<()> {
    match args.command {
        SnapshotCommand::Save(args) => save(args).await,
        SnapshotCommand::Status(args) => status(&args),
        SnapshotCommand::Restore(args) => restore_cmd(args).await,
        SnapshotCommand::Verify(args) => verify(args).await,
    }
}

fn bytes_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn save(args: SaveArgs) -> Result<()> {
    let urls = client::endpoints(&args.endpoints)?;
    let started = Instant::now();
    let (url, channel) = client::connect(&urls, args.tls.config(&urls)?, None).await?;
    let mut maintenance = MaintenanceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut stream = maintenance
        .snapshot(pb::SnapshotRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{url} refused the snapshot: {}", s.message()))?
        .into_inner();
    let first = stream
        .next()
        .await
        .context("the snapshot stream ended before any data")?
        .map_err(|s| anyhow::anyhow!("{url}: {}", s.message()))?;
    let bar = bytes_bar(first.remaining_bytes + first.blob.len() as u64);
    let chunks = futures::stream::iter([Ok(first)]).chain(stream).map(|msg| {
        msg.map(|m| m.blob).map_err(|s| std::io::Error::other(format!("the snapshot stream broke: {}", s.message())))
    });
    let saved = restore::save_stream(chunks, &args.file, |n| bar.inc(n))
        .await
        .with_context(|| format!("saving the snapshot from {url} into {}", args.file.display()))?;
    bar.finish_and_clear();
    println!("Snapshot saved at {}", args.file.display());
    println!(
        "revision {}, {} keys, {} from {url} in {:.1}s",
        saved.header.revision,
        saved.header.keys,
        human_bytes(saved.size),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What `snapshot status` reports.
#[derive(Debug, Serialize)]
struct StatusReport {
    file: String,
    sha256: String,
    kv_hash: Option<u32>,
    revision: i64,
    compact_revision: i64,
    total_keys: u64,
    total_size: u64,
    cluster_id: String,
    member_id: String,
    taken_at: String,
    format: u32,
}

fn status(args: &StatusArgs) -> Result<()> {
    let archive = read_archive(&args.file, None, true, &|_| {})
        .with_context(|| format!("{} cannot be used", args.file.display()))?;
    let h = &archive.header;
    let report = StatusReport {
        file: args.file.display().to_string(),
        sha256: archive.sha256.clone(),
        kv_hash: h.kv_hash,
        revision: h.revision,
        compact_revision: h.compact_revision,
        total_keys: h.keys,
        total_size: archive.size,
        cluster_id: format!("{:x}", h.cluster_id),
        member_id: format!("{:x}", h.member_id),
        taken_at: jiff::Timestamp::from_second(i64::try_from(h.taken_at).unwrap_or(0))
            .map(|t| t.to_string())
            .unwrap_or_default(),
        format: h.format,
    };
    match args.write_out {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            let rows = [
                ("FILE", report.file.clone()),
                ("SHA-256", format!("{} (matches the file)", report.sha256)),
                ("KV HASH", report.kv_hash.map_or("not recorded (format 1)".into(), |h| h.to_string())),
                ("REVISION", report.revision.to_string()),
                ("COMPACTED AT", report.compact_revision.to_string()),
                ("TOTAL KEYS", report.total_keys.to_string()),
                ("TOTAL SIZE", format!("{} ({} bytes)", human_bytes(report.total_size), report.total_size)),
                ("CLUSTER ID", report.cluster_id.clone()),
                ("TAKEN FROM", report.member_id.clone()),
                ("TAKEN AT", report.taken_at.clone()),
                ("FORMAT", report.format.to_string()),
            ];
            let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (key, value) in rows {
                println!("{key:<width$}  {value}");
            }
        }
    }
    Ok(())
}

async fn restore_cmd(args: RestoreArgs) -> Result<()> {
    let config = MasterConfig::from_args(MasterArgs {
        name: Some(args.name.clone()),
        data_dir: args.data_dir.clone(),
        initial_advertise_peer_urls: Some(args.initial_advertise_peer_urls.clone()),
        initial_cluster: Some(args.initial_cluster.clone()),
        initial_cluster_token: Some(args.initial_cluster_token.clone()),
        ..MasterArgs::default()
    })?;
    if args.bump_revision < 0 {
        bail!("--bump-revision must not be negative");
    }
    let opts = RestoreOptions {
        name: config.name.clone(),
        founders: crate::master::founders(&config),
        token: config.token.clone(),
        bump_revision: args.bump_revision,
        mark_compacted: args.mark_compacted,
        skip_hash_check: args.skip_hash_check,
    };
    let size = std::fs::metadata(&args.file).with_context(|| format!("reading {}", args.file.display()))?.len();
    let started = Instant::now();
    let (file, data_dir) = (args.file.clone(), config.data_dir.clone());
    let restored = tokio::task::spawn_blocking(move || {
        let bar = bytes_bar(size);
        let result = restore::restore(&file, &data_dir, &opts, &|n| bar.inc(n));
        bar.finish_and_clear();
        result
    })
    .await?
    .with_context(|| format!("restoring {} into {}", args.file.display(), config.data_dir.display()))?;
    let h = &restored.archive.header;
    println!(
        "Restored {} (revision {}, {} keys) into {} in {:.1}s",
        args.file.display(),
        h.revision,
        h.keys,
        config.data_dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "member {} (id {:x}) of a new cluster {:x} with {} members",
        config.name,
        restored.identity.id,
        restored.identity.cluster_id,
        config.initial_cluster.len()
    );
    if restored.revision != h.revision || restored.compacted != h.compact_revision {
        println!(
            "revision moved to {}; history up to it counts as compacted: watchers and caches relist",
            restored.revision
        );
    }
    println!(
        "start it with: trireme master --name {} --data-dir {} --listen-peer-urls ... (restore every member, then start them all)",
        config.name,
        config.data_dir.display()
    );
    Ok(())
}

async fn verify(args: VerifyArgs) -> Result<()> {
    // One pass: the restore checks the file's SHA-256 as it unpacks it.
    let scratch_parent = match &args.scratch_dir {
        Some(dir) => dir.clone(),
        None => args
            .file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    std::fs::create_dir_all(&scratch_parent)?;
    let scratch = tempfile::Builder::new().prefix(".trireme-verify-").tempdir_in(&scratch_parent)?;
    let started = Instant::now();
    let verified = restore::verify(&args.file, scratch.path())
        .await
        .with_context(|| format!("verifying {}", args.file.display()))?;
    let took = started.elapsed();
    let archive = &verified.archive;
    let recorded = verified.recorded_kv_hash.map_or("none recorded (format 1)".to_string(), |h| h.to_string());
    println!(
        "restored revision {}: {} keys (saved: {}), key-space hash {} (saved: {recorded}) in {:.1}s",
        archive.header.revision,
        verified.keys,
        archive.header.keys,
        verified.kv_hash,
        took.as_secs_f64()
    );
    if !verified.ok() {
        bail!("{} does not hold what was saved", args.file.display());
    }
    println!("OK: {} restores to exactly what was saved", args.file.display());
    Ok(())
}

/// Bytes in KiB, MiB or GiB, for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}
