//! The backends of one balancer and their health.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use crate::Backend;

/// What a status call reports about one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// The backend.
    pub backend: Backend,
    /// Whether new connections go to it.
    pub up: bool,
    /// Connections passed through to it now.
    pub connections: usize,
    /// Connections passed through to it since the balancer started.
    pub total_connections: u64,
}

struct Slot {
    backend: Backend,
    up: AtomicBool,
    ever_up: AtomicBool,
    /// Cancelled when the backend is marked down: every connection to it ends. Replaced by a
    /// fresh token at once, so connections made afterwards are not cut by the old mark.
    sessions: Mutex<CancellationToken>,
    connections: AtomicUsize,
    total: AtomicU64,
}

/// The backends, each up or down, and the round-robin position.
pub(crate) struct Pool {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

impl Pool {
    /// Every backend starts down until its first check passes (or a connection to it succeeds
    /// while none is known healthy).
    pub(crate) fn new(backends: Vec<Backend>) -> Pool {
        let slots = backends
            .into_iter()
            .map(|backend| Slot {
                backend,
                up: AtomicBool::new(false),
                ever_up: AtomicBool::new(false),
                sessions: Mutex::new(CancellationToken::new()),
                connections: AtomicUsize::new(0),
                total: AtomicU64::new(0),
            })
            .collect();
        Pool { slots, next: AtomicUsize::new(0) }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn backend(&self, index: usize) -> &Backend {
        &self.slots[index].backend
    }

    pub(crate) fn is_up(&self, index: usize) -> bool {
        self.slots[index].up.load(Ordering::Acquire)
    }

    pub(crate) fn was_ever_up(&self, index: usize) -> bool {
        self.slots[index].ever_up.load(Ordering::Acquire)
    }

    pub(crate) fn mark_up(&self, index: usize) {
        let slot = &self.slots[index];
        slot.ever_up.store(true, Ordering::Release);
        slot.up.store(true, Ordering::Release);
    }

    /// Marks the backend down and closes its connections; true if it was up.
    pub(crate) fn mark_down(&self, index: usize) -> bool {
        let slot = &self.slots[index];
        let was_up = slot.up.swap(false, Ordering::AcqRel);
        if was_up {
            let old = std::mem::take(&mut *slot.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            old.cancel();
        }
        was_up
    }

    /// The next backend for a new connection, skipping those in `tried`: round robin over the
    /// healthy ones; when none of those is left, any backend not tried yet.
    pub(crate) fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n).map(|i| (start + i) % n).filter(|i| !tried.contains(i));
        let mut fallback = None;
        for index in candidates {
            if self.is_up(index) {
                return Some(index);
            }
            fallback.get_or_insert(index);
        }
        // Only when no backend is marked healthy: a balancer that just started, or every check
        // failing (a slow network), must not refuse what a backend would take.
        if (0..n).any(|i| self.is_up(i)) { None } else { fallback }
    }

    /// Registers a connection to `index`; its token fires when the backend is marked down.
    pub(crate) fn session(&self, index: usize) -> CancellationToken {
        let slot = &self.slots[index];
        slot.connections.fetch_add(1, Ordering::AcqRel);
        slot.total.fetch_add(1, Ordering::Relaxed);
        slot.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(crate) fn session_ended(&self, index: usize) {
        self.slots[index].connections.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn status(&self) -> Vec<BackendStatus> {
        self.slots
            .iter()
            .map(|slot| BackendStatus {
                backend: slot.backend.clone(),
                up: slot.up.load(Ordering::Acquire),
                connections: slot.connections.load(Ordering::Acquire),
                total_connections: slot.total.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        Pool::new(
            (0..n).map(|i| Backend { name: format!("m{i}"), addr: ([127, 0, 0, 1], 1000 + i as u16).into() }).collect(),
        )
    }

    #[test]
    fn new_connections_go_round_robin_over_healthy_backends_only() {
        let pool = pool(3);
        pool.mark_up(0);
        pool.mark_up(2);
        let picks: Vec<_> = (0..6).map(|_| pool.pick(&[]).expect("a backend")).collect();
        assert!(picks.iter().all(|&i| i == 0 || i == 2), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn a_refused_backend_is_skipped_and_the_next_healthy_one_tried() {
        let pool = pool(3);
        (0..3).for_each(|i| pool.mark_up(i));
        let first = pool.pick(&[]).expect("a backend");
        let second = pool.pick(&[first]).expect("another backend");
        let third = pool.pick(&[first, second]).expect("the last backend");
        assert_eq!(pool.pick(&[first, second, third]), None);
        let mut all = vec![first, second, third];
        all.sort();
        assert_eq!(all, vec![0, 1, 2]);
    }

    #[test]
    fn with_no_healthy_backend_every_one_is_tried_anyway() {
        let pool = pool(2);
        let first = pool.pick(&[]).expect("a fallback");
        let second = pool.pick(&[first]).expect("the other fallback");
        assert_ne!(first, second);
        assert_eq!(pool.pick(&[first, second]), None);
    }

    #[test]
    fn while_one_backend_is_healthy_the_unhealthy_ones_are_not_tried() {
        let pool = pool(2);
        pool.mark_up(1);
        assert_eq!(pool.pick(&[]), Some(1));
        assert_eq!(pool.pick(&[1]), None);
    }

    #[test]
    fn marking_a_backend_down_ends_its_sessions_but_not_later_ones() {
        let pool = pool(1);
        pool.mark_up(0);
        let before = pool.session(0);
        assert!(pool.mark_down(0));
        assert!(before.is_cancelled());
        assert!(!pool.mark_down(0), "already down");
        let after = pool.session(0);
        assert!(!after.is_cancelled());
        assert_eq!(pool.status()[0].connections, 2);
        pool.session_ended(0);
        pool.session_ended(0);
        assert_eq!(pool.status()[0].connections, 0);
        assert_eq!(pool.status()[0].total_connections, 2);
    }
}
