//! Workload 3: watchers on `/chaos/` that resume on another master.
//!
//! Each watcher watches the prefix on a random master (with `hasleader`, as etcd's clients
//! do, so a master without a leader ends the stream), and moves to another master — resuming
//! from its last revision + 1 — when the stream fails, when the master stops answering (no
//! answer to a progress request within 3 s), and now and then on its own. It records every
//! event; [`canonical`] reads the whole history with one fresh watch for comparison.

use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use bytes::Bytes;
use futures::channel::mpsc;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::watch_client::WatchClient;
use trireme_proto::mvccpb;

use crate::etcd;
use crate::watchcheck::WatchEvent;

/// The prefix every workload writes under.
pub const PREFIX: &str = "/chaos/";

/// What one watcher saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatcherLog {
    /// `w0`, `w1`, ...
    pub name: String,
    /// The revision it first asked for.
    pub start_revision: i64,
    /// Every event, in arrival order.
    #[serde(skip)]
    pub events: Vec<WatchEvent>,
    /// Streams it opened (1 + resumes).
    pub streams: usize,
    /// Streams it left because the master stopped answering.
    pub stalls: usize,
    /// Why streams ended, most recent last (at most 20).
    pub errors: Vec<String>,
    /// Whether it reached the final revision before it was stopped.
    pub caught_up: bool,
}

impl WatcherLog {
    fn note(&mut self, error: String) {
        if self.errors.len() == 20 {
            self.errors.remove(0);
        }
        self.errors.push(error);
    }
}

/// Runs watcher `id` until it has seen revision `*until` (once that is set), or until `abort`.
pub async fn run(
    id: usize,
    urls: Vec<String>,
    seed: u64,
    until: watch::Receiver<Option<i64>>,
    abort: CancellationToken,
) -> WatcherLog {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7761_7463 ^ (id as u64).wrapping_mul(0x2545_F491));
    let mut log = WatcherLog { name: format!("w{id}"), start_revision: 1, ..Default::default() };
    let mut next = 1i64;
    let mut master = rng.random_range(0..urls.len());
    loop {
        log.streams += 1;
        let move_after = Duration::from_millis(rng.random_range(5_000..=20_000));
        match stream(&urls[master], next, move_after, &mut log, &until, &abort).await {
            Ok(Ended::Done) => {
                log.caught_up = true;
                return log;
            }
            Ok(Ended::Aborted) => return log,
            Ok(Ended::Move) => {}
            Err(e) => log.note(format!("{}: {e:#}", urls[master])),
        }
        if let Some(last) = log.events.last() {
            next = last.revision + 1;
        }
        let others: Vec<usize> = (0..urls.len()).filter(|m| *m != master).collect();
        master = others[rng.random_range(0..others.len())];
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = abort.cancelled() => return log,
        }
    }
}

enum Ended {
    /// Reached the final revision.
    Done,
    /// Time to move to another master.
    Move,
    /// Stopped from outside.
    Aborted,
}

fn reached(log: &WatcherLog, until: &watch::Receiver<Option<i64>>) -> bool {
    let target = *until.borrow();
    target.is_some_and(|t| log.events.last().is_some_and(|e| e.revision >= t))
}

async fn stream(
    url: &str,
    start: i64,
    move_after: Duration,
    log: &mut WatcherLog,
    until: &watch::Receiver<Option<i64>>,
    abort: &CancellationToken,
) -> Result<Ended> {
    let (requests, outgoing) = mpsc::unbounded();
    let create = pb::WatchCreateRequest {
        key: Bytes::from_static(PREFIX.as_bytes()),
        range_end: Bytes::from(etcd::prefix_end(PREFIX)),
        start_revision: start,
        progress_notify: true,
        ..Default::default()
    };
    requests.unbounded_send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
    })?;
    let mut request = tonic::Request::new(outgoing);
    request.metadata_mut().insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
    let mut client = WatchClient::new(etcd::channel(url)?);
    let mut responses = tokio::time::timeout(Duration::from_secs(3), client.watch(request))
        .await
        .context("no answer to the watch within 3 s")??
        .into_inner();
    let opened = Instant::now();
    let mut last_answer = Instant::now();
    let mut asked_progress: Option<Instant> = None;
    loop {
        if reached(log, until) {
            return Ok(Ended::Done);
        }
        if opened.elapsed() > move_after {
            return Ok(Ended::Move);
        }
        let message = tokio::select! {
            m = tokio::time::timeout(Duration::from_millis(500), responses.message()) => m,
            () = abort.cancelled() => return Ok(Ended::Aborted),
        };
        let response = match message {
            Err(_) => {
                match asked_progress {
                    Some(at) if at.elapsed() > Duration::from_secs(3) => {
                        log.stalls += 1;
                        bail!("no answer to a progress request within 3 s");
                    }
                    None if last_answer.elapsed() > Duration::from_secs(2) => {
                        let progress = pb::WatchRequest {
                            request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                                pb::WatchProgressRequest {},
                            )),
                        };
                        requests.unbounded_send(progress)?;
                        asked_progress = Some(Instant::now());
                    }
                    _ => {}
                }
                continue;
            }
            Ok(Err(status)) => bail!("{:?}: {}", status.code(), status.message()),
            Ok(Ok(None)) => bail!("the stream ended"),
            Ok(Ok(Some(response))) => response,
        };
        last_answer = Instant::now();
        asked_progress = None;
        if response.canceled {
            bail!("watch canceled (compact revision {}): {}", response.compact_revision, response.cancel_reason);
        }
        for event in response.events {
            let Some(kv) = event.kv else { continue };
            let delete = event.r#type == mvccpb::event::EventType::Delete as i32;
            log.events.push(WatchEvent::new(kv.mod_revision, &kv.key, delete, &kv.value));
        }
    }
}

/// The canonical history of the prefix from revision 1 through `until`, read with one fresh
/// watch from the first master that delivers it whole.
pub async fn canonical(urls: &[String], until: i64) -> Result<Vec<WatchEvent>> {
    let mut errors = Vec::new();
    for url in urls {
        let (_target, rx) = watch::channel(Some(until));
        let mut log = WatcherLog::default();
        let abort = CancellationToken::new();
        // Long runs have millions of events; the stream itself fails if it stalls.
        let attempt = tokio::time::timeout(
            Duration::from_secs(1800),
            stream(url, 1, Duration::from_secs(3600), &mut log, &rx, &abort),
        )
        .await;
        match attempt {
            Ok(Ok(Ended::Done)) => return Ok(log.events),
            Ok(Ok(_)) => errors.push(format!("{url}: ended early")),
            Ok(Err(e)) => errors.push(format!("{url}: {e:#}")),
            Err(_) => errors.push(format!("{url}: not whole within 30 minutes")),
        }
    }
    bail!("could not read the canonical watch history: {}", errors.join("; "))
}
