//! One chaos run, phase by phase: start the cluster, start the workloads, inject the faults,
//! stop, let everything converge, read back, kill the cluster, check, report.

use std::collections::HashSet;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use trireme_proto::etcdserverpb::kv_client::KvClient;

use crate::acks;
use crate::acks::Ack;
use crate::cluster;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::config::Profile;
use crate::config::find_trireme;
use crate::deployments;
use crate::etcd;
use crate::faults;
use crate::history;
use crate::history::Call;
use crate::history::Clock;
use crate::history::Outcome;
use crate::history::RegisterOp;
use crate::history::secs;
use crate::kubecheck;
use crate::linearizability;
use crate::linearizability::Verdict;
use crate::probe;
use crate::registers::Registers;
use crate::report::Check;
use crate::report::Counts;
use crate::report::Gap;
use crate::report::Operations;
use crate::report::Report;
use crate::schedule;
use crate::stats;
use crate::watchcheck;
use crate::watchers;
use crate::watchers::WatcherLog;

/// Register keys and clients, unique-key writers and watchers: modest, so the checker stays fast.
const REGISTER_KEYS: usize = 5;
const REGISTER_CLIENTS: usize = 6;
const ACK_CLIENTS: usize = 2;
const WATCHERS: usize = 3;
const DEPLOYMENTS: usize = 3;
/// How long the Kubernetes objects may take to converge once the faults are over.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(90);
/// How long the first rollout may take, before any fault.
const INITIAL_ROLLOUT_BOUND: Duration = Duration::from_secs(120);

/// What the suite does not inject or check.
const NOT_DONE: [&str; 3] = [
    "slow disk / delayed fsync: not injected — it needs a FUSE (or dm-delay) file system under the data dirs, \
     which this machine does not offer",
    "a pod bound twice to the same node is invisible to a watcher; only a change of node is detected",
    "clock skew between masters: all processes share one machine clock",
];

/// The default run dir: `target/chaos/<seed>-<unix time>` below the working directory.
pub fn default_out(seed: u64) -> PathBuf {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    PathBuf::from("target/chaos").join(format!("{seed}-{now}"))
}

/// Runs the suite with `seed` and writes the report into the run dir.
pub async fn run(config: &Config, seed: u64) -> Result<Report> {
    config.validate()?;
    let bin = find_trireme(config.trireme_bin.as_deref())?;
    let out = config.out.clone().unwrap_or_else(|| default_out(seed));
    std::fs::create_dir_all(&out).with_context(|| format!("creating --out {}", out.display()))?;
    let out = std::fs::canonicalize(&out)?;
    println!("run dir: {}", out.display());
    let clock = Clock::start();
    let started = jiff::Timestamp::now();
    let proxies = CancellationToken::new();
    let _stop_proxies = proxies.clone().drop_guard();

    let peer_source = cluster::supports_peer_source_address(&bin).await?;
    if !peer_source {
        tracing::warn!("{} has no --peer-source-address: partitions and slow links are skipped", bin.display());
    }
    tracing::info!("--- start {} masters and {} node agents in {}", config.masters, config.nodes, out.display());
    let mut cluster = Cluster::start(&bin, &out, config.masters, seed, peer_source, proxies.clone()).await?;
    cluster.start_nodes(config.nodes)?;
    let urls = cluster.client_urls();

    tracing::info!("--- start the workloads");
    let kube = deployments::client(&cluster.kubeconfig(), &cluster.api_urls()).await?;
    let kube_watch_stop = CancellationToken::new();
    let (observations, kube_watches) = deployments::watch(&kube, kube_watch_stop.clone());
    let planned = deployments::plan(seed, DEPLOYMENTS);
    deployments::create(&kube, &planned).await?;
    let stop = CancellationToken::new();
    let registers = Registers { clients: REGISTER_CLIENTS, keys: REGISTER_KEYS, seed, urls: urls.clone() };
    let registers = tokio::spawn(registers.run(clock, stop.clone()));
    let acked = tokio::spawn(acks::run(ACK_CLIENTS, urls.clone(), seed, clock, stop.clone()));
    let probes = tokio::spawn(probe::run(urls.clone(), clock, stop.clone()));
    let (until, until_rx) = watch::channel(None);
    let abort_watchers = CancellationToken::new();
    let watcher_tasks: Vec<_> = (0..WATCHERS)
        .map(|i| tokio::spawn(watchers::run(i, urls.clone(), seed, until_rx.clone(), abort_watchers.clone())))
        .collect();

    tracing::info!("--- wait for the first rollout");
    let (initial, initial_problems) = deployments::converge(&kube, INITIAL_ROLLOUT_BOUND).await;
    let mutator = tokio::spawn(deployments::mutate(kube.clone(), planned.clone(), seed, clock, stop.clone()));

    tracing::info!("--- faults ({:?} profile)", config.profile);
    let faults_started = Instant::now();
    let mut records = Vec::new();
    let mut crashes = Vec::new();
    let mut round = 0;
    'rounds: loop {
        let plan = match config.profile {
            Profile::Short => schedule::short(seed),
            Profile::Long => schedule::long_round(seed, round),
        };
        for fault in plan {
            if config.profile == Profile::Long && faults_started.elapsed() + fault.hold > config.duration {
                break 'rounds;
            }
            crashes.extend(cluster.restart_exited()?);
            let record = faults::inject(&mut cluster, &fault, records.len() + 1, clock, peer_source).await?;
            tracing::info!(
                "fault {} done: {} (recovered: {:?}, leader now {:?})",
                record.index,
                record.action,
                record.recovered.map(|r| r - record.end),
                record.leader_after
            );
            records.push(record);
        }
        if config.profile == Profile::Short {
            break;
        }
        round += 1;
    }
    crashes.extend(cluster.restart_exited()?);

    tracing::info!("--- stop the faults and the workloads");
    stop.cancel();
    let register_history = registers.await.context("register workload")?;
    let ack_puts = acked.await.context("unique-key workload")?;
    let probes = probes.await.context("write-gap probe")?;
    let mutations = mutator.await.context("Kubernetes mutator")?;
    let end_revision = put_end_marker(&urls).await?;
    until.send_replace(Some(end_revision));
    let watcher_logs = finish_watchers(watcher_tasks, &abort_watchers).await;

    tracing::info!("--- wait for the Kubernetes objects to converge");
    let (converged, convergence) = deployments::converge(&kube, CONVERGENCE_BOUND).await;
    tracing::info!("--- read back");
    let stored = acks::read_back(&urls).await;
    let canonical = watchers::canonical(&urls, end_revision).await;
    kube_watch_stop.cancel();
    for task in kube_watches {
        let _ = task.await;
    }
    let observed = std::mem::take(&mut *observations.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    crashes.extend(cluster.restart_exited()?);
    tracing::info!("--- stop the cluster");
    cluster.stop().await;
    drop(cluster);

    tracing::info!("--- check");
    write_history(&out, &register_history, &observed.seen)?;
    let mut checks = Vec::new();
    checks.push(check_linearizability(&register_history).await?);
    checks.push(check_acks(&ack_puts, &stored));
    checks.push(check_watches(&watcher_logs, &canonical, &ack_puts));
    checks.push(Check::new(
        "pods are bound once",
        format!(
            "{} pod versions",
            observed.seen.iter().filter(|s| matches!(s.object, kubecheck::Observed::Pod { .. })).count()
        ),
        kubecheck::check_bindings(&observed.seen),
    ));
    let surge = kubecheck::check_surge(&observed.seen);
    checks.push(Check::new(
        "ReplicaSets within replicas + maxSurge",
        format!("{} (revision, deployment) states, {} skipped (a generation not seen)", surge.evaluated, surge.skipped),
        surge.violations,
    ));
    checks.push(Check::new(
        "first rollout before the faults",
        format!("within {} s", INITIAL_ROLLOUT_BOUND.as_secs()),
        if initial.is_some() { Vec::new() } else { initial_problems },
    ));
    checks.push(Check::new(
        "converged after the faults",
        format!("deployments rolled out and EndpointSlices = ready pods within {} s", CONVERGENCE_BOUND.as_secs()),
        if converged.is_some() { Vec::new() } else { convergence },
    ));
    let unrecovered: Vec<String> = records
        .iter()
        .filter(|r| r.recovered.is_none())
        .map(|r| {
            format!("fault {} ({}): no agreed leader within {:?} after it", r.index, r.action, faults::RECOVERY_TIMEOUT)
        })
        .collect();
    checks.push(Check::new("leader after every fault", format!("{} faults", records.len()), unrecovered));
    checks.push(Check::new("no process exited on its own", "masters and node agents".into(), crashes));

    let mut writes: Vec<(u64, u64)> =
        register_history.iter().filter(|op| op.acknowledged_write()).map(|op| (op.invoked, op.completed)).collect();
    writes.extend(ack_puts.iter().filter(|p| p.ack == Ack::Ok).map(|p| (p.invoked, p.completed)));
    writes.extend(probes.iter().filter_map(|(invoked, acked)| acked.map(|a| (*invoked, a))));
    let losses: Vec<&faults::FaultRecord> = records.iter().filter(|r| r.leader_loss).collect();
    let gaps = stats::write_gaps(&losses.iter().map(|r| r.start_us).collect::<Vec<_>>(), &writes);
    let write_gaps: Vec<Gap> =
        losses.iter().zip(&gaps).map(|(r, g)| Gap { fault: r.index, ms: g.map(|us| us as f64 / 1000.0) }).collect();
    let gap_values: Vec<f64> = write_gaps.iter().filter_map(|g| g.ms).collect();

    let mut operations = count_operations(&register_history, &ack_puts, &watcher_logs);
    operations.canonical_events = canonical.as_ref().map_or(0, Vec::len);
    operations.probe_puts = Counts {
        ok: probes.iter().filter(|p| p.1.is_some()).count(),
        fail: 0,
        unknown: probes.iter().filter(|p| p.1.is_none()).count(),
    };
    operations.kube_mutations_ok = mutations.iter().filter(|m| m.error.is_none()).count();
    operations.kube_mutations_failed = mutations.len() - operations.kube_mutations_ok;
    operations.kube_versions_seen = observed.seen.len();
    operations.kube_relists = observed.relists;
    operations.kube_watch_errors = observed.errors;
    let report = Report {
        seed,
        profile: config.profile,
        duration: config.duration_text(),
        started: started.to_string(),
        elapsed_s: secs(clock.now()),
        run_dir: out.display().to_string(),
        trireme_bin: bin.display().to_string(),
        masters: config.masters,
        nodes: config.nodes,
        peer_source_address: peer_source,
        deployments: planned,
        faults: records,
        operations,
        checks,
        write_gap_ms: stats::summarize(&gap_values),
        write_gaps,
        initial_convergence_s: initial.map(|d| d.as_secs_f64()),
        convergence_s: converged.map(|d| d.as_secs_f64()),
        watchers: watcher_logs,
        mutations,
        not_done: NOT_DONE.iter().map(|s| s.to_string()).collect(),
    };
    report.write(&out)?;
    Ok(report)
}

/// Puts `/chaos/end` once the faults are over; its revision is where the watchers stop.
async fn put_end_marker(urls: &[String]) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for url in urls {
            let mut kv = KvClient::new(etcd::channel(url)?);
            if let Ok(Ok(revision)) =
                tokio::time::timeout(etcd::OP_TIMEOUT, etcd::put(&mut kv, "/chaos/end", "end")).await
            {
                return Ok(revision);
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("no master took the end marker within 60 s after the faults");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits up to 60 s for the watchers to reach the end marker, then stops the rest.
async fn finish_watchers(
    tasks: Vec<tokio::task::JoinHandle<WatcherLog>>,
    abort: &CancellationToken,
) -> Vec<WatcherLog> {
    let abort_later = abort.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        abort_later.cancel();
    });
    let mut logs = Vec::new();
    for task in tasks {
        if let Ok(log) = task.await {
            logs.push(log);
        }
    }
    timer.abort();
    logs
}

/// Writes the register history (`history.jsonl`) and the Kubernetes object versions
/// (`kube.jsonl`) into the run dir, for post-mortems.
fn write_history(out: &Path, history: &[RegisterOp], seen: &[kubecheck::Seen]) -> Result<()> {
    let mut text = String::new();
    for op in history {
        text.push_str(&serde_json::to_string(op)?);
        text.push('\n');
    }
    std::fs::write(out.join("history.jsonl"), text)?;
    let mut text = String::new();
    for s in seen {
        text.push_str(&serde_json::to_string(s)?);
        text.push('\n');
    }
    std::fs::write(out.join("kube.jsonl"), text)?;
    Ok(())
}

/// Checks a saved register history (a run dir's `history.jsonl`) again, e.g. after a change
/// to the checker or to reproduce a violation's analysis without the cluster.
pub async fn recheck(path: &Path) -> Result<Check> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut history = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        history.push(serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?);
    }
    check_linearizability(&history).await
}

/// Checks every register key's history on a blocking thread.
async fn check_linearizability(history: &[RegisterOp]) -> Result<Check> {
    let owned = history.to_vec();
    let keys = history.iter().map(|op| op.key + 1).max().unwrap_or(0);
    let started = Instant::now();
    let (violations, summary) = tokio::task::spawn_blocking(move || {
        let mut violations = Vec::new();
        let mut sizes = Vec::new();
        for (key, (ops, operations)) in history::per_key(&owned, keys).into_iter().enumerate() {
            sizes.push(operations.len());
            match linearizability::check(&operations) {
                Verdict::Linearizable => {}
                Verdict::Inconclusive { steps } => violations.push(format!(
                    "key {}: undecided after {steps} search steps (treated as a failure: shrink the workload)",
                    crate::registers::key(key, REGISTER_KEYS)
                )),
                Verdict::NotLinearizable(v) => violations.push(describe(key, &ops, &v)),
            }
        }
        (violations, sizes)
    })
    .await?;
    Ok(Check::new(
        "registers are linearizable",
        format!(
            "{} operations in {} histories (one per key and minute; the longest {}), checked in {:.1} s",
            summary.iter().sum::<usize>(),
            summary.iter().filter(|n| **n > 0).count(),
            summary.iter().max().unwrap_or(&0),
            started.elapsed().as_secs_f64()
        ),
        violations,
    ))
}

/// A linearizability violation for people: where the search got stuck and what ran around it.
fn describe(key: usize, ops: &[&RegisterOp], v: &linearizability::Violation) -> String {
    let stuck = ops[v.stuck_at];
    let mut text = format!(
        "key {}: no linearization explains {} (the deepest covered {} operations, ending with the register at {})",
        crate::registers::key(key, REGISTER_KEYS),
        show(stuck),
        v.longest,
        v.value
    );
    text.push_str("\n  last operations of that linearization:");
    for &i in &v.tail {
        text.push_str(&format!("\n    {}", show(ops[i])));
    }
    text.push_str("\n  operations overlapping it:");
    for op in ops.iter().filter(|op| op.invoked <= stuck.completed && op.completed >= stuck.invoked).take(12) {
        text.push_str(&format!("\n    {}", show(op)));
    }
    text
}

fn show(op: &RegisterOp) -> String {
    let call = match op.call {
        Call::Get => "get".to_string(),
        Call::Put { value } => format!("put {value}"),
        Call::Cas { expected, new } => format!("cas {expected}→{new}"),
    };
    let outcome = match (&op.outcome, op.call) {
        (Outcome::Ok { value: Some(v), .. }, _) => format!("ok {v}"),
        (Outcome::Ok { swapped: Some(s), .. }, Call::Cas { .. }) => format!("ok {s}"),
        (Outcome::Ok { .. }, _) => "ok".to_string(),
        (Outcome::Fail { error }, _) => format!("fail ({error})"),
        (Outcome::Unknown { error }, _) => format!("unknown ({error})"),
    };
    format!(
        "client {} via m{}: {call} [{:.6}–{:.6} s] → {outcome}",
        op.client,
        op.master + 1,
        secs(op.invoked),
        secs(op.completed)
    )
}

fn check_acks(puts: &[acks::AckedPut], stored: &Result<Vec<(String, String)>>) -> Check {
    let acknowledged = puts.iter().filter(|p| p.ack == Ack::Ok).count();
    let violations = match stored {
        Ok(stored) => acks::check(puts, stored),
        Err(e) => vec![format!("could not read the keys back: {e:#}")],
    };
    Check::new("no acknowledged write lost", format!("{acknowledged} acknowledged unique-key puts"), violations)
}

fn check_watches(
    logs: &[WatcherLog],
    canonical: &Result<Vec<watchcheck::WatchEvent>>,
    puts: &[acks::AckedPut],
) -> Check {
    let mut violations = Vec::new();
    for log in logs {
        for p in watchcheck::check_order(&log.events) {
            violations.push(format!("{}: {p}", log.name));
        }
        if !log.caught_up {
            violations.push(format!(
                "{}: did not reach the end marker within 60 s after the faults (last errors: {:?})",
                log.name,
                log.errors.iter().rev().take(3).collect::<Vec<_>>()
            ));
        }
    }
    match canonical {
        Ok(canonical) => {
            for log in logs {
                if let Err(e) = watchcheck::check_slice(canonical, log.start_revision, &log.events) {
                    violations.push(format!("{}: {e}", log.name));
                }
            }
            // Every acknowledged write is in the history, with its value.
            let history: HashSet<u64> = canonical.iter().map(|e| e.digest).collect();
            for put in puts.iter().filter(|p| p.ack == Ack::Ok) {
                let event = watchcheck::WatchEvent::new(0, put.key.as_bytes(), false, put.value.as_bytes());
                if !history.contains(&event.digest) {
                    violations.push(format!("acknowledged put of {} is not in the canonical watch history", put.key));
                }
            }
        }
        Err(e) => violations.push(format!("{e:#}")),
    }
    let events: usize = logs.iter().map(|l| l.events.len()).sum();
    let streams: usize = logs.iter().map(|l| l.streams).sum();
    Check::new(
        "watches are gap-free slices of the history",
        format!("{} watchers, {events} events, {} resumes", logs.len(), streams.saturating_sub(logs.len())),
        violations,
    )
}

fn count_operations(history: &[RegisterOp], puts: &[acks::AckedPut], watchers: &[WatcherLog]) -> Operations {
    let mut o = Operations::default();
    for op in history {
        let counts = match op.call {
            Call::Get => &mut o.register_gets,
            Call::Put { .. } => &mut o.register_puts,
            Call::Cas { .. } => &mut o.register_cas,
        };
        bump(counts, &op.outcome);
        if matches!(op.call, Call::Cas { .. }) && op.acknowledged_write() {
            o.register_cas_swapped += 1;
        }
    }
    for p in puts {
        match p.ack {
            Ack::Ok => o.acked_puts.ok += 1,
            Ack::Fail => o.acked_puts.fail += 1,
            Ack::Unknown => o.acked_puts.unknown += 1,
        }
    }
    o.watch_events = watchers.iter().map(|w| w.events.len()).sum();
    o.watch_streams = watchers.iter().map(|w| w.streams).sum();
    o
}

fn bump(counts: &mut Counts, outcome: &Outcome) {
    match outcome {
        Outcome::Ok { .. } => counts.ok += 1,
        Outcome::Fail { .. } => counts.fail += 1,
        Outcome::Unknown { .. } => counts.unknown += 1,
    }
}
