//! Watch-fed caches and work queues: the runtime the scheduler and the controllers are built
//! on (kube-rs' reflector and controller, in Trireme's terms).
//!
//! An [`Informer`] lists a resource, then watches it from the list's revision, keeping a map of
//! the current objects (one writer, many readers) and telling a callback about every change; on
//! `410 Expired` it relists. A [`WorkQueue`] holds keys to reconcile: a key is handed to one
//! worker at a time, a key added while it is being worked on is queued again once the worker
//! is done, and failed keys come back after an exponential backoff.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::registry::Change;
use crate::registry::ChangeType;
use crate::registry::ListOptions;
use crate::registry::Registry;
use crate::registry::RegistryError;
use crate::registry::WatchOptions;
use crate::registry::object_name;
use trireme_model::resource::ResourceType;
use trireme_model::version::ReadAt;
use trireme_store::StoreError;

/// The key of a namespaced object (`namespace/name`) or a cluster-scoped one (`name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The key of `object`.
    pub fn of(object: &Value) -> ObjectKey {
        ObjectKey {
            namespace: object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string),
            name: object_name(object).to_string(),
        }
    }

    /// A key from its parts.
    pub fn new(namespace: Option<&str>, name: &str) -> ObjectKey {
        ObjectKey { namespace: namespace.map(str::to_string), name: name.to_string() }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What an informer tells its subscribers: an object changed (`old` is its previous state in
/// the cache, if it was there).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: ChangeType,
    pub object: Arc<Value>,
    pub old: Option<Arc<Value>>,
}

type Handler = Arc<dyn Fn(&Event) + Send + Sync>;

/// A cache of one resource's objects, kept current by a watch.
#[derive(Clone)]
pub struct Informer {
    rt: &'static ResourceType,
    objects: Arc<RwLock<BTreeMap<ObjectKey, Arc<Value>>>>,
    handlers: Arc<Mutex<Vec<Handler>>>,
    synced: watch::Receiver<bool>,
    synced_tx: Arc<watch::Sender<bool>>,
}

impl Informer {
    /// An informer for `rt`; nothing happens until [`Informer::run`].
    pub fn new(rt: &'static ResourceType) -> Informer {
        let (tx, rx) = watch::channel(false);
        Informer { rt, objects: Arc::default(), handlers: Arc::default(), synced: rx, synced_tx: Arc::new(tx) }
    }

    /// Calls `handler` for every change from now on (including the ADDED events of the first
    /// list). Handlers must be quick: they run on the informer's task.
    pub fn subscribe(&self, handler: impl Fn(&Event) + Send + Sync + 'static) {
        if let Ok(mut handlers) = self.handlers.lock() {
            handlers.push(Arc::new(handler));
        }
    }

    /// The object at `key`, if cached.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.objects.read().ok()?.get(key).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<Value>> {
        self.objects.read().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// The cached objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<Value>> {
        self.objects
            .read()
            .map(|m| {
                m.iter().filter(|(k, _)| k.namespace.as_deref() == Some(namespace)).map(|(_, v)| v.clone()).collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the first list is in the cache.
    pub async fn synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Lists and watches until `shutdown`, relisting when the watch expires and retrying (with
    /// backoff) when the store fails.
    pub async fn run(self, registry: Registry, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match self.list_and_watch(&registry, &shutdown).await {
                Ok(()) => return,
                Err(RegistryError::Expired(_)) => {
                    tracing::debug!(resource = self.rt.plural, "watch expired; relisting");
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::debug!(resource = self.rt.plural, error = %e, "informer failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn list_and_watch(&self, registry: &Registry, shutdown: &CancellationToken) -> Result<(), RegistryError> {
        let options = ListOptions { read: ReadAt::Any, ..Default::default() };
        let listed = registry.list(self.rt, None, &options).await?;
        let fresh: BTreeMap<ObjectKey, Arc<Value>> =
            listed.items.into_iter().map(|o| (ObjectKey::of(&o), Arc::new(o))).collect();
        let previous = match self.objects.write() {
            Ok(mut objects) => std::mem::replace(&mut *objects, fresh.clone()),
            Err(_) => return Err(RegistryError::Internal("informer cache poisoned".into())),
        };
        for (key, object) in &fresh {
            let old = previous.get(key).cloned();
            if old.as_ref() != Some(object) {
                let kind = if old.is_some() { ChangeType::Modified } else { ChangeType::Added };
                self.notify(&Event { kind, object: object.clone(), old });
            }
        }
        for (key, object) in previous.iter().filter(|(k, _)| !fresh.contains_key(*k)) {
            let _ = key;
            self.notify(&Event { kind: ChangeType::Deleted, object: object.clone(), old: Some(object.clone()) });
        }
        self.synced_tx.send_replace(true);
        let options = WatchOptions { after: Some(listed.revision), ..Default::default() };
        let mut watch = registry.watch(self.rt, None, options).await?;
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                batch = watch.next() => batch,
            };
            let changes = match batch {
                None => return Err(RegistryError::Internal("watch ended".into())),
                Some(result) => result?,
            };
            for change in changes {
                self.apply(change);
            }
        }
    }

    fn apply(&self, change: Change) {
        let key = ObjectKey::of(&change.object);
        let object = Arc::new(change.object);
        let old = match self.objects.write() {
            Ok(mut objects) => match change.kind {
                ChangeType::Deleted => objects.remove(&key),
                _ => objects.insert(key, object.clone()),
            },
            Err(_) => return,
        };
        self.notify(&Event { kind: change.kind, object, old });
    }

    fn notify(&self, event: &Event) {
        let handlers: Vec<Handler> = self.handlers.lock().map(|h| h.clone()).unwrap_or_default();
        for handler in handlers {
            handler(event);
        }
    }
}

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

    #[test]
    fn keys_print_as_namespace_slash_name() {
        assert_eq!(ObjectKey::new(Some("default"), "web").to_string(), "default/web");
        assert_eq!(ObjectKey::new(None, "node-1").to_string(), "node-1");
    }
}
