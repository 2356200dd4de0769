//! The scheduling queue: which pending pod to try next, and when to try again one that did not
//! fit.
//!
//! Kubernetes' queue in small. A pod is in one place at a time:
//!
//! - **active**: waiting its turn, first in first out;
//! - **in flight**: the scheduler is choosing a node for it;
//! - **assumed**: a node was chosen and the bind is on its way; the pod leaves the queue when
//!   the informer shows it bound (or deleted), and comes back off a failed bind;
//! - **waiting**: it did not fit (or its bind failed) and waits out a backoff of 1 s doubling
//!   per attempt up to 10 s, then becomes active again.
//!
//! A change in the cluster that may make room ([`SchedulingQueue::move_all`]: a node added or
//! changed, a pod gone) cuts every waiting pod's wait to 1 s after its last failure, so a pod
//! is retried about as soon as a node that fits appears, but no pod is retried more than once
//! a second however busy the cluster is. Moves are coalesced: a burst of events costs one pass
//! over the waiting pods.
//!
//! `trireme_registry::informer::WorkQueue` is the controllers' queue; this one differs in what
//! matters here: the scheduler's backoff (1 s to 10 s), event-driven retries, and the assumed
//! state that keeps a pod from being scheduled again while its bind is in flight.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use trireme_registry::informer::ObjectKey;

/// The wait after a pod's first failed attempt.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The wait after `attempts` failed attempts: 1 s, 2 s, 4 s, 8 s, then 10 s.
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    INITIAL_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active,
    InFlight,
    Assumed,
    /// Until `until`; `seq` tells this wait's timer entry from stale ones.
    Waiting {
        until: Instant,
        seq: u64,
    },
}

#[derive(Debug)]
struct Entry {
    place: Place,
    /// Failed attempts so far.
    attempts: u32,
    /// When the last attempt failed.
    failed_at: Option<Instant>,
    /// The move count when the pod was last taken off the active queue.
    popped_at_move: u64,
    /// When a FailedScheduling event was last recorded for it.
    last_event: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    active: VecDeque<ObjectKey>,
    entries: HashMap<ObjectKey, Entry>,
    timers: BinaryHeap<Reverse<(Instant, u64, ObjectKey)>>,
    seq: u64,
    /// Counts [`SchedulingQueue::move_all`] calls.
    moves: u64,
    /// The move count last applied to the waiting pods.
    moves_applied: u64,
}

/// Pending pods and when to try each; see the module docs.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    state: Mutex<State>,
    ready: Notify,
}

impl SchedulingQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a pending pod the queue does not know yet; a known one stays where it is.
    pub fn add(&self, key: ObjectKey) {
        let mut s = self.lock();
        if s.entries.contains_key(&key) {
            return;
        }
        let moves = s.moves;
        s.entries.insert(
            key.clone(),
            Entry { place: Place::Active, attempts: 0, failed_at: None, popped_at_move: moves, last_event: None },
        );
        s.active.push_back(key);
        drop(s);
        self.ready.notify_one();
    }

    /// A pending pod changed in a way that may let it fit: queues it if new, and a waiting
    /// one is retried as after a cluster change.
    pub fn update(&self, key: ObjectKey) {
        let mut s = self.lock();
        let now = Instant::now();
        let moves = s.moves;
        match s.entries.get_mut(&key) {
            None => {
                drop(s);
                self.add(key);
            }
            Some(entry) => {
                match entry.place {
                    Place::Waiting { until, .. } => {
                        let soon = early(entry, now);
                        if soon < until {
                            s.wait(key, soon);
                        }
                    }
                    // The attempt under way may have seen the old pod: retry soon if it fails.
                    Place::InFlight => entry.popped_at_move = moves.wrapping_sub(1),
                    Place::Active | Place::Assumed => {}
                }
                drop(s);
                self.ready.notify_one();
            }
        }
    }

    /// The cluster changed in a way that may make room: waiting pods are retried 1 s after
    /// their last failure at the latest, and a pod in flight that fails is retried after 1 s.
    pub fn move_all(&self) {
        self.lock().moves += 1;
        self.ready.notify_one();
    }

    /// The next pod to schedule, waiting for one to become active. It is in flight until
    /// [`SchedulingQueue::assumed`], [`SchedulingQueue::unschedulable`] or
    /// [`SchedulingQueue::forget`].
    pub async fn pop(&self) -> ObjectKey {
        loop {
            let notified = self.ready.notified();
            let wake = {
                let mut s = self.lock();
                let now = Instant::now();
                s.release(now);
                if let Some(key) = s.pop_active() {
                    return key;
                }
                s.timers.peek().map(|Reverse((at, _, _))| *at)
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// A node was chosen for the pod and its bind is under way.
    pub fn assumed(&self, key: &ObjectKey) {
        if let Some(entry) = self.lock().entries.get_mut(key)
            && entry.place == Place::InFlight
        {
            entry.place = Place::Assumed;
        }
    }

    /// The pod fits no node: it waits out its backoff (1 s if the cluster changed while it
    /// was tried). Returns whether to record a FailedScheduling event: the first time, and
    /// then no more often than once per backoff.
    pub fn unschedulable(&self, key: &ObjectKey) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        let moves = s.moves;
        let Some(entry) = s.entries.get_mut(key) else { return false };
        if entry.place != Place::InFlight {
            return false;
        }
        let record = match (entry.last_event, entry.attempts) {
            (None, _) | (_, 0) => true,
            (Some(last), attempts) => now.duration_since(last) >= backoff(attempts),
        };
        if record {
            entry.last_event = Some(now);
        }
        entry.attempts = entry.attempts.saturating_add(1);
        entry.failed_at = Some(now);
        let delay = if entry.popped_at_move != moves { INITIAL_BACKOFF } else { backoff(entry.attempts) };
        s.wait(key.clone(), now + delay);
        record
    }

    /// The bind of an assumed pod failed: it waits out its backoff and is tried again.
    pub fn bind_failed(&self, key: &ObjectKey) {
        let now = Instant::now();
        let mut s = self.lock();
        let Some(entry) = s.entries.get_mut(key) else { return };
        if entry.place != Place::Assumed {
            return;
        }
        entry.attempts = entry.attempts.saturating_add(1);
        entry.failed_at = Some(now);
        let until = now + backoff(entry.attempts);
        s.wait(key.clone(), until);
        drop(s);
        self.ready.notify_one();
    }

    /// The pod needs no scheduling any more (bound, deleted, no longer ours).
    pub fn forget(&self, key: &ObjectKey) {
        self.lock().entries.remove(key);
    }

    /// How many pods the queue knows, in any place.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the queue knows no pod.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many pods wait out a backoff.
    pub fn waiting(&self) -> usize {
        self.lock().entries.values().filter(|e| matches!(e.place, Place::Waiting { .. })).count()
    }
}

/// The earliest a waiting pod is retried after a change: 1 s after its last failure.
fn early(entry: &Entry, now: Instant) -> Instant {
    entry.failed_at.map_or(now, |failed| failed + INITIAL_BACKOFF)
}

impl State {
    /// Puts `key` in the waiting place until `until`.
    fn wait(&mut self, key: ObjectKey, until: Instant) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.place = Place::Waiting { until, seq };
            self.timers.push(Reverse((until, seq, key)));
        }
    }

    /// Applies pending moves, then makes every pod whose wait is over active.
    fn release(&mut self, now: Instant) {
        if self.moves != self.moves_applied {
            self.moves_applied = self.moves;
            let sooner: Vec<(ObjectKey, Instant)> = self
                .entries
                .iter()
                .filter_map(|(key, entry)| match entry.place {
                    Place::Waiting { until, .. } => {
                        let soon = early(entry, now);
                        (soon < until).then(|| (key.clone(), soon))
                    }
                    _ => None,
                })
                .collect();
            for (key, soon) in sooner {
                self.wait(key, soon);
            }
        }
        while let Some(Reverse((at, seq, _))) = self.timers.peek()
            && *at <= now
        {
            let seq = *seq;
            let Some(Reverse((_, _, key))) = self.timers.pop() else { break };
            if let Some(entry) = self.entries.get_mut(&key)
                && matches!(entry.place, Place::Waiting { seq: s, .. } if s == seq)
            {
                entry.place = Place::Active;
                self.active.push_back(key);
            }
        }
    }

    /// The first active pod, now in flight (keys forgotten or moved on meanwhile are skipped).
    fn pop_active(&mut self) -> Option<ObjectKey> {
        let moves = self.moves;
        while let Some(key) = self.active.pop_front() {
            if let Some(entry) = self.entries.get_mut(&key)
                && entry.place == Place::Active
            {
                entry.place = Place::InFlight;
                entry.popped_at_move = moves;
                return Some(key);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Some("default"), name)
    }

    /// `pop`, or `None` if nothing becomes active within `within` (of paused time).
    async fn pop_within(queue: &SchedulingQueue, within: Duration) -> Option<ObjectKey> {
        tokio::time::timeout(within, queue.pop()).await.ok()
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_ten() {
        let waits: Vec<u64> = (1..=6).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn pods_come_out_in_the_order_they_came_in_and_once() {
        let queue = SchedulingQueue::default();
        queue.add(key("a"));
        queue.add(key("b"));
        queue.add(key("a"));
        assert_eq!(queue.pop().await, key("a"));
        assert_eq!(queue.pop().await, key("b"));
        assert_eq!(pop_within(&queue, Duration::from_secs(60)).await, None, "each pod is handed out once");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unschedulable_pod_is_retried_after_a_doubling_backoff() {
        let queue = SchedulingQueue::default();
        queue.add(key("a"));
        let mut k = queue.pop().await;
        let mut waits = Vec::new();
        for _ in 0..5 {
            queue.unschedulable(&k);
            let started = Instant::now();
            k = queue.pop().await;
            waits.push(started.elapsed().as_secs());
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cluster_change_cuts_the_wait_to_one_second_after_the_failure() {
        let queue = SchedulingQueue::default();
        queue.add(key("a"));
        let mut k = queue.pop().await;
        for _ in 0..4 {
            queue.unschedulable(&k);
            k = queue.pop().await;
        }
        queue.unschedulable(&k);
        let failed = Instant::now();
        tokio::time::advance(Duration::from_millis(300)).await;
        queue.move_all();
        let k = pop_within(&queue, Duration::from_secs(5)).await.expect("retried soon after the change");
        assert_eq!(k, key("a"));
        let waited = failed.elapsed();
        assert!(
            waited >= INITIAL_BACKOFF && waited < Duration::from_millis(1100),
            "a second after the failure: {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_while_the_pod_is_tried_makes_its_next_wait_short() {
        let queue = SchedulingQueue::default();
        queue.add(key("a"));
        let mut k = queue.pop().await;
        for _ in 0..3 {
            queue.unschedulable(&k);
            k = queue.pop().await;
        }
        queue.move_all();
        queue.unschedulable(&k);
        let started = Instant::now();
        queue.pop().await;
        let waited = started.elapsed();
        assert!(waited >= INITIAL_BACKOFF && waited < Duration::from_millis(1100), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_assumed_pod_is_not_handed_out_again_until_its_bind_fails() {
        let queue = SchedulingQueue::default();
        queue.add(key("a"));
        let k = queue.pop().await;
        queue.assumed(&k);
        queue.add(key("a"));
        queue.update(key("a"));
        queue.move_all();
        assert_eq!(pop_within(&queue, Duration::from_secs(60)).await, None);
        queue.bind_failed(&k);
        assert_eq!(pop_within(&queue, Duration::from_secs(2)).await, Some(key("a")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_pod_is_not_handed_out() {
        let queue = SchedulingQueue::default();
        queue.add(key("a"));
        queue.add(key("b"));
        queue.forget(&key("a"));
        assert_eq!(queue.pop().await, key("b"));
        let b = key("b");
        queue.unschedulable(&b);
        queue.forget(&b);
        assert_eq!(pop_within(&queue, Duration::from_secs(60)).await, None);
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_scheduling_is_reported_once_per_backoff() {
        let queue = SchedulingQueue::default();
        queue.add(key("a"));
        let mut k = queue.pop().await;
        let mut reported = Vec::new();
        for _ in 0..4 {
            reported.push(queue.unschedulable(&k));
            queue.move_all();
            k = queue.pop().await;
        }
        assert_eq!(reported, vec![true, true, false, false], "retries after changes come each second, reports do not");
    }
}
