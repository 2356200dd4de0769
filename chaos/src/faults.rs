//! Runs one planned fault against the cluster: resolve the target, inject, hold, recover,
//! wait until every live master agrees on a leader again, settle.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::history::Clock;
use crate::history::secs;
use crate::schedule::Fault;
use crate::schedule::FaultKind;

/// How long the cluster may take to agree on a leader again after a fault is over.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened in one fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Position in the run, from 1.
    pub index: usize,
    /// What was done, e.g. `SIGKILL m2, restart after 1.8 s`.
    pub action: String,
    /// The leader before the fault.
    pub leader_before: Option<String>,
    /// Whether the target was the leader (a leader loss: the write gap is measured).
    pub leader_loss: bool,
    /// When it started (s since the run started).
    pub start: f64,
    /// When it was undone (restart, SIGCONT, heal).
    pub end: f64,
    /// When every live master agreed on a leader again, if within [`RECOVERY_TIMEOUT`].
    pub recovered: Option<f64>,
    /// The leader afterwards.
    pub leader_after: Option<String>,
    /// Anything unusual (a skipped fault, no leader before it).
    pub note: Option<String>,
    /// Start in µs, for the write-gap computation.
    #[serde(skip)]
    pub start_us: u64,
}

/// Injects `fault` and recovers from it. `partitions` is false when masters cannot make their
/// peer connections from their own address, which the proxy needs to tell links apart.
pub async fn inject(
    cluster: &mut Cluster,
    fault: &Fault,
    index: usize,
    clock: Clock,
    partitions: bool,
) -> Result<FaultRecord> {
    let n = cluster.masters.len();
    let leader = cluster.wait_leader(RECOVERY_TIMEOUT).await.ok();
    let names: Vec<String> = cluster.masters.iter().map(|m| m.name.clone()).collect();
    let name = |i: usize| names[i].clone();
    let leader_before = leader.map(name);
    let pick = usize::try_from(fault.pick % 1_000_003).unwrap_or(0);
    let mut note = leader.is_none().then(|| "no agreed leader before the fault; target chosen at random".to_string());
    let target = match fault.kind {
        FaultKind::KillLeader | FaultKind::PauseLeader | FaultKind::Partition { leader: true } => {
            leader.unwrap_or(pick % n)
        }
        FaultKind::Partition { leader: false } => {
            let followers: Vec<usize> = (0..n).filter(|i| Some(*i) != leader).collect();
            followers[pick % followers.len()]
        }
        FaultKind::KillMaster | FaultKind::SlowLinks { .. } => pick % n,
        FaultKind::RestartNode => pick % cluster.nodes.len().max(1),
    };
    let on_master = !matches!(fault.kind, FaultKind::RestartNode);
    let leader_loss = on_master && Some(target) == leader && !matches!(fault.kind, FaultKind::SlowLinks { .. });
    let hold = fault.hold;
    let start_us = clock.now();
    let action = match fault.kind {
        FaultKind::KillLeader | FaultKind::KillMaster => {
            tracing::info!("--- fault {index}: SIGKILL {} for {hold:?}", name(target));
            cluster.kill_master(target).await?;
            tokio::time::sleep(hold).await;
            cluster.restart_master(target)?;
            format!("SIGKILL {}, restart after {:.1} s", name(target), hold.as_secs_f64())
        }
        FaultKind::PauseLeader => {
            tracing::info!("--- fault {index}: SIGSTOP {} for {hold:?}", name(target));
            cluster.pause_master(target)?;
            tokio::time::sleep(hold).await;
            cluster.resume_master(target)?;
            format!("SIGSTOP {}, SIGCONT after {:.1} s", name(target), hold.as_secs_f64())
        }
        FaultKind::Partition { .. } if partitions => {
            tracing::info!("--- fault {index}: partition {} away for {hold:?}", name(target));
            cluster.proxy.isolate(target);
            tokio::time::sleep(hold).await;
            cluster.proxy.heal();
            format!("isolate {} from the other masters, heal after {:.1} s", name(target), hold.as_secs_f64())
        }
        FaultKind::SlowLinks { delay } if partitions => {
            tracing::info!("--- fault {index}: slow links of {} by {delay:?} for {hold:?}", name(target));
            cluster.proxy.slow_down(target, delay);
            tokio::time::sleep(hold).await;
            cluster.proxy.heal();
            format!("delay {}'s peer links by {} ms for {:.1} s", name(target), delay.as_millis(), hold.as_secs_f64())
        }
        FaultKind::Partition { .. } | FaultKind::SlowLinks { .. } => {
            note = Some("skipped: this trireme has no --peer-source-address, so links cannot be told apart".into());
            "skipped".to_string()
        }
        FaultKind::RestartNode => {
            let node = cluster.nodes[target].name.clone();
            tracing::info!("--- fault {index}: SIGKILL node agent {node} for {hold:?}");
            cluster.kill_node(target).await?;
            tokio::time::sleep(hold).await;
            cluster.restart_node(target)?;
            format!("SIGKILL node agent {node}, restart after {:.1} s", hold.as_secs_f64())
        }
    };
    let end = clock.now();
    let after = cluster.wait_leader(RECOVERY_TIMEOUT).await.ok();
    let recovered = after.map(|_| secs(clock.now()));
    tokio::time::sleep(fault.settle).await;
    Ok(FaultRecord {
        index,
        action,
        leader_before,
        leader_loss: leader_loss && note.as_deref().is_none_or(|n| !n.starts_with("skipped")),
        start: secs(start_us),
        end: secs(end),
        recovered,
        leader_after: after.map(name),
        note,
        start_us,
    })
}
