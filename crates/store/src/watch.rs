//! The watch hub: serves watches from this member's applied state.
//!
//! Apply publishes each new revision's events into a bounded ring and bumps a revision signal;
//! it never waits for a watcher. Each watcher is a task that reads from the ring when the ring
//! still holds its next revision, and from the `revs` history in RocksDB otherwise, and sends
//! through its own bounded channel. A slow watcher therefore only delays itself, and catches up
//! from history without gaps or duplicates; one that fell below the compaction point is ended
//! with [`WatchMessage::Compacted`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio::sync::watch;
use tracing::Instrument;

use crate::mvcc::ReadError;
use crate::mvcc::read;
use crate::state::StateDb;
use crate::types::Event;
use crate::types::KeyRange;

/// Events a watcher receives at most per message (whole revisions are never split).
const MAX_EVENTS_PER_MESSAGE: usize = 1000;
/// Messages buffered per watcher before its task waits.
const WATCHER_BUFFER: usize = 64;

/// What a watch stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// Events in revision order; consecutive messages never overlap or leave gaps.
    Events(Vec<Event>),
    /// The watcher's next revision was compacted away; the stream ends.
    Compacted { compact_revision: i64 },
}

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub range: KeyRange,
    /// First revision to deliver.
    pub start_revision: i64,
    pub prev_kv: bool,
}

struct Ring {
    /// Recent revisions with their events, oldest first, contiguous.
    revs: VecDeque<(i64, Arc<[Event]>)>,
    events: usize,
    /// Every revision from here up to the newest published one is in `revs`.
    complete_from: i64,
}

/// Fans applied events out to watchers.
pub struct WatchHub {
    ring: Mutex<Ring>,
    capacity: usize,
    revision: watch::Sender<i64>,
}

impl WatchHub {
    /// A hub whose state is at `revision`, keeping about `capacity` recent events in memory.
    pub fn new(revision: i64, capacity: usize) -> Self {
        WatchHub {
            ring: Mutex::new(Ring { revs: VecDeque::new(), events: 0, complete_from: revision + 1 }),
            capacity,
            revision: watch::Sender::new(revision),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The newest revision published.
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Subscribes to revision changes.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// Publishes the events of `revision`, which is durable in the state DB. Revisions must be
    /// published in order, each exactly once.
    pub fn publish(&self, revision: i64, events: Vec<Event>) {
        {
            let mut ring = self.ring();
            ring.events += events.len();
            ring.revs.push_back((revision, events.into()));
            while ring.events > self.capacity && ring.revs.len() > 1 {
                if let Some((rev, evicted)) = ring.revs.pop_front() {
                    ring.events -= evicted.len();
                    ring.complete_from = rev + 1;
                }
            }
        }
        self.revision.send_replace(revision);
    }

    /// The state was replaced (snapshot installed) and is now at `revision`.
    pub fn reset(&self, revision: i64) {
        {
            let mut ring = self.ring();
            ring.revs.clear();
            ring.events = 0;
            ring.complete_from = revision + 1;
        }
        self.revision.send_replace(revision);
    }

    /// Events of `spec.range` from revision `from` up to `to` out of the ring, or `None` if the
    /// ring no longer holds `from`.
    fn read_ring(&self, spec: &WatchSpec, from: i64, to: i64) -> Option<(Vec<Event>, i64)> {
        let ring = self.ring();
        if from < ring.complete_from {
            return None;
        }
        let mut out = Vec::new();
        let mut next = to + 1;
        let skip = usize::try_from(from - ring.complete_from).ok()?;
        for (rev, events) in ring.revs.iter().skip(skip) {
            if *rev > to {
                break;
            }
            if out.len() >= MAX_EVENTS_PER_MESSAGE {
                next = *rev;
                break;
            }
            out.extend(events.iter().filter(|e| spec.range.contains(&e.kv.key)).map(|e| {
                let mut e = e.clone();
                if !spec.prev_kv {
                    e.prev_kv = None;
                }
                e
            }));
        }
        Some((out, next))
    }
}

/// A stream of watch messages; dropping it ends the watcher's task.
pub struct WatchStream {
    rx: mpsc::Receiver<WatchMessage>,
    synced: Arc<AtomicI64>,
}

impl WatchStream {
    /// The next message, or `None` once the stream ended (after `Compacted`, or at shutdown).
    pub async fn recv(&mut self) -> Option<WatchMessage> {
        self.rx.recv().await
    }

    /// A revision up to which every event of this watch has been queued on this stream. Read it
    /// before checking [`WatchStream::is_empty`]: if the stream is then empty, the consumer has
    /// seen everything up to it (etcd's progress notification).
    pub fn synced_revision(&self) -> i64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// Starts a watcher task for `spec` (whose start revision the caller resolved and checked), in
/// the current span.
pub fn spawn_watcher(hub: Arc<WatchHub>, state: Arc<StateDb>, spec: WatchSpec) -> WatchStream {
    let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
    let synced = Arc::new(AtomicI64::new(spec.start_revision - 1));
    tokio::spawn(run_watcher(hub, state, spec, tx, synced.clone()).in_current_span());
    WatchStream { rx, synced }
}

async fn run_watcher(
    hub: Arc<WatchHub>,
    state: Arc<StateDb>,
    spec: WatchSpec,
    tx: mpsc::Sender<WatchMessage>,
    synced: Arc<AtomicI64>,
) {
    let mut revisions = hub.subscribe();
    let mut next = spec.start_revision;
    loop {
        let newest = *revisions.borrow_and_update();
        while next <= newest {
            let (events, after) = match hub.read_ring(&spec, next, newest) {
                Some(found) => found,
                None => {
                    let db = state.get();
                    let range = spec.range.clone();
                    let (from, prev_kv) = (next, spec.prev_kv);
                    let read = tokio::task::spawn_blocking(move || {
                        read::events_between(&db, &range, from, newest, prev_kv, MAX_EVENTS_PER_MESSAGE)
                    })
                    .await;
                    match read {
                        Ok(Ok(found)) => found,
                        Ok(Err(ReadError::Compacted { compact_revision })) => {
                            let _ = tx.send(WatchMessage::Compacted { compact_revision }).await;
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "watch history read failed; ending watch");
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "watch history task failed; ending watch");
                            return;
                        }
                    }
                }
            };
            if !events.is_empty() && tx.send(WatchMessage::Events(events)).await.is_err() {
                return;
            }
            next = after;
        }
        synced.store(next - 1, Ordering::Release);
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EventType;
    use crate::types::KeyValue;

    fn put(key: &str, rev: i64) -> Event {
        Event {
            kind: EventType::Put,
            kv: KeyValue { key: key.into(), mod_revision: rev, ..KeyValue::default() },
            prev_kv: None,
        }
    }

    #[test]
    fn ring_serves_contiguous_revisions_and_forgets_the_oldest() {
        let hub = WatchHub::new(0, 3);
        for rev in 1..=5 {
            hub.publish(rev, vec![put(if rev % 2 == 0 { "a" } else { "b" }, rev)]);
        }
        let spec = WatchSpec { range: KeyRange::new(b"a", b""), start_revision: 1, prev_kv: false };
        assert!(hub.read_ring(&spec, 2, 5).is_none(), "revision 2 was evicted");
        let (events, next) = hub.read_ring(&spec, 3, 5).expect("3..=5 in ring");
        assert_eq!(events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(), vec![4]);
        assert_eq!(next, 6);
    }
}
