//! Work queues: keys to reconcile, each handed to one worker at a time (Kubernetes'
//! workqueue). A key added while it is being worked on is queued again once the worker is
//! done; failed keys come back after an exponential backoff; a reconcile that hangs is
//! abandoned after [`RECONCILE_TIMEOUT`].

use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::registry::RegistryError;
use trireme_store::StoreError;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the object (or something it watches) changes.
    Await,
    /// Look again after this long even if nothing changes (e.g. a deadline).
    RequeueAfter(Duration),
}

struct QueueState<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    /// Added again while active: requeue when done.
    dirty: HashSet<K>,
    failures: HashMap<K, u32>,
}

/// Keys waiting to be reconciled, each handed to one worker at a time.
pub struct WorkQueue<K> {
    state: Mutex<QueueState<K>>,
    ready: Notify,
}

impl<K: Clone + Eq + std::hash::Hash + Send + Sync + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            state: Mutex::new(QueueState {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
                failures: HashMap::new(),
            }),
            ready: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + std::hash::Hash + Send + Sync + 'static> WorkQueue<K> {
    /// Queues `key` (once: a key already waiting is not queued twice).
    pub fn add(&self, key: K) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.queue.push_back(key);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// The next key to work on; the caller must call [`WorkQueue::done`] with it.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.ready.notified();
            if let Ok(mut s) = self.state.lock()
                && let Some(key) = s.queue.pop_front()
            {
                s.queued.remove(&key);
                s.active.insert(key.clone());
                return key;
            }
            notified.await;
        }
    }

    /// Ends the work on `key`; `ok` resets its backoff. Returns the backoff to retry after
    /// when it failed.
    pub fn done(&self, key: &K, ok: bool) -> Option<Duration> {
        let Ok(mut s) = self.state.lock() else { return None };
        s.active.remove(key);
        let retry = if ok {
            s.failures.remove(key);
            None
        } else {
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            Some(Duration::from_millis(50u64.saturating_mul(1 << (*n).min(8))).min(Duration::from_secs(10)))
        };
        if s.dirty.remove(key) && s.queued.insert(key.clone()) {
            s.queue.push_back(key.clone());
            drop(s);
            self.ready.notify_one();
        }
        retry
    }

    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.queue.len()).unwrap_or(0)
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The longest one reconcile may take. One that takes longer is abandoned and retried with
/// backoff like a failure: a reconcile stuck on a call that never answers must not hold its key
/// (and every later change of it) for ever. Controllers are level-triggered, so a reconcile cut
/// short is simply done again.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `workers` workers taking keys from `queue` and reconciling them until `shutdown`;
/// failures (and reconciles running past [`RECONCILE_TIMEOUT`]) are retried with backoff,
/// `RequeueAfter` is honoured.
pub async fn run_workers<K, F, Fut>(queue: Arc<WorkQueue<K>>, workers: usize, shutdown: CancellationToken, reconcile: F)
where
    K: Clone + Eq + std::hash::Hash + Send + Sync + std::fmt::Display + 'static,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, RegistryError>> + Send,
{
    run_workers_timed(queue, workers, RECONCILE_TIMEOUT, shutdown, reconcile).await;
}

/// [`run_workers`] with the time one reconcile may take.
async fn run_workers_timed<K, F, Fut>(
    queue: Arc<WorkQueue<K>>,
    workers: usize,
    limit: Duration,
    shutdown: CancellationToken,
    reconcile: F,
) where
    K: Clone + Eq + std::hash::Hash + Send + Sync + std::fmt::Display + 'static,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, RegistryError>> + Send,
{
    let reconcile = Arc::new(reconcile);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (queue, shutdown, reconcile) = (queue.clone(), shutdown.clone(), reconcile.clone());
        tasks.spawn(async move {
            loop {
                let key = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    key = queue.next() => key,
                };
                let result = match tokio::time::timeout(limit, reconcile(key.clone())).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(key = %key, timeout = ?limit, "reconcile timed out; will retry");
                        Err(RegistryError::Store(StoreError::Timeout))
                    }
                };
                match result {
                    Ok(action) => {
                        queue.done(&key, true);
                        if let Action::RequeueAfter(delay) = action {
                            queue.add_after(key, delay);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(key = %key, error = %e, "reconcile failed; will retry");
                        if let Some(delay) = queue.done(&key, false) {
                            queue.add_after(key, delay);
                        }
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_worked_on_by_one_worker_at_a_time_and_requeued_when_added_meanwhile() {
        let queue: WorkQueue<String> = WorkQueue::default();
        queue.add("a".into());
        queue.add("a".into());
        assert_eq!(queue.len(), 1, "a waiting key is queued once");
        let key = queue.next().await;
        queue.add("a".into());
        assert!(queue.is_empty(), "an active key is not handed out again");
        assert_eq!(queue.done(&key, true), None);
        assert_eq!(queue.len(), 1, "added while active: queued again when done");
        let key = queue.next().await;
        let first = queue.done(&key, false).expect("backoff");
        queue.add(key.clone());
        let key = queue.next().await;
        let second = queue.done(&key, false).expect("backoff");
        assert!(second > first, "backoff grows: {first:?} then {second:?}");
    }

    #[tokio::test]
    async fn a_reconcile_that_never_returns_is_abandoned_and_its_key_retried() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let queue: Arc<WorkQueue<String>> = Arc::default();
        queue.add("stuck".into());
        let calls = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let (counted, stop) = (calls.clone(), shutdown.clone());
        let limit = Duration::from_millis(50);
        let workers = run_workers_timed(queue, 1, limit, shutdown, move |_key: String| {
            let (counted, stop) = (counted.clone(), stop.clone());
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::future::pending::<()>().await;
                }
                stop.cancel();
                Ok(Action::Await)
            }
        });
        tokio::time::timeout(Duration::from_secs(10), workers).await.expect("the stuck reconcile is given up");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the key was reconciled again after the first attempt hung");
    }
}
