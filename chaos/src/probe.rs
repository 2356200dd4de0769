//! The write-gap probe: an open-loop writer that puts `/chaos-probe/<n>` every 50 ms, to the
//! masters in turn, each put on its own without waiting for earlier ones.
//!
//! The workload clients are closed-loop: each waits for its current operation (up to its
//! 3 s timeout) before it starts the next, so after a leader is paused or cut off they issue
//! nothing new until their stalled requests time out, whatever the cluster does meanwhile.
//! The probe keeps asking, so the first acknowledgement of a write invoked after a fault
//! says when the cluster took writes again. Its keys are outside `/chaos/`, away from the
//! watched history.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trireme_proto::etcdserverpb::kv_client::KvClient;

use crate::etcd;
use crate::history::Clock;

/// One probe write: when it was invoked and, if it was acknowledged, when.
pub type Probe = (u64, Option<u64>);

/// How often a probe write starts.
const INTERVAL: Duration = Duration::from_millis(50);
/// How long one probe write may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Probes until `stop`; returns every probe write.
pub async fn run(urls: Vec<String>, clock: Clock, stop: CancellationToken) -> Vec<Probe> {
    let channels: Vec<_> = urls.iter().filter_map(|u| etcd::channel(u).ok()).collect();
    let probes = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0u64;
    while !channels.is_empty() {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        n += 1;
        let mut kv = KvClient::new(channels[usize::try_from(n).unwrap_or(0) % channels.len()].clone());
        let probes = probes.clone();
        tasks.spawn(async move {
            let key = format!("/chaos-probe/{n}");
            let invoked = clock.now();
            let put = etcd::put(&mut kv, &key, "p");
            let acked = matches!(tokio::time::timeout(TIMEOUT, put).await, Ok(Ok(_))).then(|| clock.now());
            probes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((invoked, acked));
        });
        // Reap finished probes as we go.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut probes = std::mem::take(&mut *probes.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    probes.sort_unstable();
    probes
}
