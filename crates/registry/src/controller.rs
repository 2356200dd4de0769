//! The controller builder: one way to wire a controller (kube-rs' `Controller`, client-go's
//! informer + workqueue pattern).
//!
//! ```text
//! Controller::new("replicaset-controller")
//!     .primary(&informers.replica_sets)   // a change of a ReplicaSet queues it
//!     .owns(&informers.pods)              // a change of a pod queues the ReplicaSet controlling it
//!     .watches(&informers.x, |event| ...) // any other mapping from a change to keys
//!     .workers(4)
//!     .run(stop, move |key| reconcile(key))
//! ```
//!
//! Every `primary`, `owns` and `watches` subscribes at once, so a controller is built before
//! its term's informers start and sees their first lists. [`Controller::run`] waits until every
//! informer it was given has listed (acting on half a cache would count objects that are only
//! not listed yet), then reconciles keys from its [`WorkQueue`] with backoff until `stop`, the
//! end of the leadership term.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use trireme_model::strategy::Kind;

use crate::informer::AnyInformer;
use crate::informer::Event;
use crate::informer::Informer;
use crate::informer::ObjectKey;
use crate::registry::RegistryError;
use crate::workqueue::Action;
use crate::workqueue::WorkQueue;
use crate::workqueue::run_workers;

/// A controller being wired: its queue and the caches it waits for.
pub struct Controller<K = ObjectKey> {
    name: &'static str,
    queue: Arc<WorkQueue<K>>,
    synced: Vec<watch::Receiver<bool>>,
    workers: usize,
    /// The kind of the primary objects, as owner references name it.
    primary_kind: Option<&'static str>,
}

impl<K> Controller<K>
where
    K: Clone + Eq + Hash + Send + Sync + std::fmt::Display + 'static,
{
    /// A controller called `name` (for logs) with one worker.
    pub fn new(name: &'static str) -> Controller<K> {
        Controller { name, queue: Arc::default(), synced: Vec::new(), workers: 1, primary_kind: None }
    }

    /// Its work queue, for keys the controller adds itself.
    pub fn queue(&self) -> Arc<WorkQueue<K>> {
        self.queue.clone()
    }

    /// Queues the keys `map` returns for every change of `informer`'s objects.
    pub fn watches<T, I>(
        mut self,
        informer: &Informer<T>,
        map: impl Fn(&Event<T::Object>) -> I + Send + Sync + 'static,
    ) -> Self
    where
        T: Kind,
        I: IntoIterator<Item = K>,
    {
        let queue = self.queue.clone();
        informer.subscribe(move |event| {
            for key in map(event) {
                queue.add(key);
            }
        });
        self.synced.push(informer.synced_channel());
        self
    }

    /// Queues the keys `map` returns for every change seen through `informer`'s metadata (for
    /// controllers of any kind).
    pub fn watches_any<I>(
        mut self,
        informer: &dyn AnyInformer,
        map: impl Fn(crate::registry::ChangeType, &ObjectMeta) -> I + Send + Sync + 'static,
    ) -> Self
    where
        I: IntoIterator<Item = K>,
    {
        let queue = self.queue.clone();
        informer.subscribe_meta(Box::new(move |kind, meta| {
            for key in map(kind, meta) {
                queue.add(key);
            }
        }));
        self.synced.push(informer.synced_channel());
        self
    }

    /// Waits for `informer`'s first list before reconciling, without queueing anything on its
    /// changes (for caches a reconcile reads but whose changes concern no key by themselves).
    pub fn waits_for<T: Kind>(mut self, informer: &Informer<T>) -> Self {
        self.synced.push(informer.synced_channel());
        self
    }

    /// Runs this many reconciles at once (different keys only).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Waits for the caches, then reconciles until `stop`.
    pub async fn run<F, Fut>(self, stop: CancellationToken, reconcile: F)
    where
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, RegistryError>> + Send,
    {
        let channels = self.synced;
        let synced = async move {
            for mut channel in channels {
                let _ = channel.wait_for(|s| *s).await;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = synced => {}
        }
        tracing::debug!(controller = self.name, "caches synced; reconciling");
        run_workers(self.queue, self.workers, stop, reconcile).await;
    }
}

impl Controller<ObjectKey> {
    /// Queues every changed object of `informer`: the kind this controller reconciles.
    pub fn primary<T: Kind>(mut self, informer: &Informer<T>) -> Self {
        self.primary_kind = Some(T::RESOURCE.kind);
        self.watches(informer, |event| [event.key()])
    }

    /// Queues the primary object that controls each changed object of `informer` (by its
    /// controller reference; also the previous controller when it changed). Call after
    /// [`Controller::primary`].
    pub fn owns<T: Kind>(self, informer: &Informer<T>) -> Self {
        let kind = self.primary_kind.unwrap_or_default();
        self.watches(informer, move |event| {
            let now = controller_key(event.object.metadata(), kind);
            let before = event.old.as_ref().and_then(|o| controller_key(o.metadata(), kind));
            let previous = before.filter(|b| Some(b) != now.as_ref());
            now.into_iter().chain(previous).collect::<Vec<_>>()
        })
    }
}

/// The key of the object of `kind` that controls the object with `meta` (same namespace).
pub fn controller_key(meta: &ObjectMeta, kind: &str) -> Option<ObjectKey> {
    let owner = meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))?;
    (owner.kind == kind).then(|| ObjectKey::new(meta.namespace.as_deref(), &owner.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn the_controller_key_is_the_controlling_owner_of_the_given_kind() {
        let reference = |kind: &str, controller| OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: "web".into(),
            uid: "u".into(),
            controller,
            block_owner_deletion: None,
        };
        let meta =
            |refs| ObjectMeta { namespace: Some("a".into()), owner_references: Some(refs), ..Default::default() };
        let controlled = meta(vec![reference("Other", None), reference("ReplicaSet", Some(true))]);
        assert_eq!(controller_key(&controlled, "ReplicaSet"), Some(ObjectKey::new(Some("a"), "web")));
        assert_eq!(controller_key(&controlled, "Deployment"), None);
        assert_eq!(controller_key(&meta(vec![reference("ReplicaSet", None)]), "ReplicaSet"), None);
    }
}
