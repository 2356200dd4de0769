//! Watch-fed, typed, indexed caches: what the scheduler and the controllers read (kube-rs'
//! reflector, client-go's indexer, in Trireme's terms).
//!
//! An [`Informer`] of a [`Kind`] lists the kind, then watches it from the list's revision,
//! keeping the current objects decoded into the kind's k8s-openapi type (one writer, many
//! readers) and telling subscribers about every change; on `410 Expired` it relists. Every
//! informer indexes its objects by namespace, by owner uid and by label; a kind may add its own
//! indexes (pods by node). [`Informer::erased`] gives the same cache without its type, for the
//! code that handles any kind by its metadata (the garbage collector).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;

use backon::Retryable;
use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::registry::ChangeType;
use crate::registry::ListOptions;
use crate::registry::Registry;
use crate::registry::RegistryError;
use crate::registry::WatchOptions;
use crate::registry::object_name;
use crate::retry;
use trireme_model::resource::ResourceType;
use trireme_model::selector::LabelSelector;
use trireme_model::selector::Operator;
use trireme_model::strategy::Kind;
use trireme_model::version::ReadAt;

/// The key of a namespaced object (`namespace/name`) or a cluster-scoped one (`name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The key of an untyped `object`.
    pub fn of(object: &Value) -> ObjectKey {
        ObjectKey {
            namespace: object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string),
            name: object_name(object).to_string(),
        }
    }

    /// The key of the object with `meta`.
    pub fn of_meta(meta: &ObjectMeta) -> ObjectKey {
        ObjectKey {
            namespace: meta.namespace.clone().filter(|ns| !ns.is_empty()),
            name: meta.name.clone().unwrap_or_default(),
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
/// the cache, if it was there; for a deletion, `object` is the last state seen).
#[derive(Debug)]
pub struct Event<T> {
    pub kind: ChangeType,
    pub object: Arc<T>,
    pub old: Option<Arc<T>>,
}

impl<T: Metadata<Ty = ObjectMeta>> Event<T> {
    /// The key of the changed object.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::of_meta(self.object.metadata())
    }
}

type Handler<T> = Arc<dyn Fn(&Event<T>) + Send + Sync>;
type IndexFn<T> = Box<dyn Fn(&T) -> Vec<String> + Send + Sync>;

/// The name of the index of objects by the uid of each of their owners.
const BY_OWNER: &str = "owner";
/// The name of the index of objects by each `key=value` label.
const BY_LABEL: &str = "label";

/// One index: the values `keys_of` gives an object, each to the objects giving it.
struct Index<T> {
    keys_of: IndexFn<T>,
    entries: HashMap<String, BTreeSet<ObjectKey>>,
}

impl<T> Index<T> {
    fn insert(&mut self, key: &ObjectKey, object: &T) {
        for value in (self.keys_of)(object) {
            self.entries.entry(value).or_default().insert(key.clone());
        }
    }

    fn remove(&mut self, key: &ObjectKey, object: &T) {
        for value in (self.keys_of)(object) {
            if let Some(keys) = self.entries.get_mut(&value) {
                keys.remove(key);
                if keys.is_empty() {
                    self.entries.remove(&value);
                }
            }
        }
    }
}

/// The objects and their indexes.
struct Cache<T> {
    objects: BTreeMap<ObjectKey, Arc<T>>,
    indexes: HashMap<&'static str, Index<T>>,
}

impl<T> Cache<T> {
    fn insert(&mut self, key: ObjectKey, object: Arc<T>) -> Option<Arc<T>> {
        let old = self.objects.insert(key.clone(), object.clone());
        for index in self.indexes.values_mut() {
            if let Some(old) = &old {
                index.remove(&key, old);
            }
            index.insert(&key, &object);
        }
        old
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Arc<T>> {
        let old = self.objects.remove(key)?;
        for index in self.indexes.values_mut() {
            index.remove(key, &old);
        }
        Some(old)
    }

    fn lookup(&self, index: &str, value: &str) -> Vec<Arc<T>> {
        let Some(keys) = self.indexes.get(index).and_then(|i| i.entries.get(value)) else { return Vec::new() };
        keys.iter().filter_map(|k| self.objects.get(k).cloned()).collect()
    }
}

struct Shared<K: Kind> {
    cache: RwLock<Cache<K::Object>>,
    handlers: Mutex<Vec<Handler<K::Object>>>,
    synced: watch::Sender<bool>,
}

/// A cache of one kind's objects, kept current by a watch.
pub struct Informer<K: Kind> {
    shared: Arc<Shared<K>>,
}

impl<K: Kind> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer { shared: self.shared.clone() }
    }
}

impl<K: Kind> Default for Informer<K> {
    fn default() -> Self {
        Informer::new()
    }
}

impl<K: Kind> Informer<K> {
    /// An informer of `K` (indexed by owner and label); nothing happens until
    /// [`Informer::run`].
    pub fn new() -> Informer<K> {
        let mut indexes = HashMap::new();
        indexes.insert(BY_OWNER, Index { keys_of: Box::new(owner_uids::<K::Object>), entries: HashMap::new() });
        indexes.insert(BY_LABEL, Index { keys_of: Box::new(label_pairs::<K::Object>), entries: HashMap::new() });
        Informer {
            shared: Arc::new(Shared {
                cache: RwLock::new(Cache { objects: BTreeMap::new(), indexes }),
                handlers: Mutex::default(),
                synced: watch::channel(false).0,
            }),
        }
    }

    /// Adds the index `name`: each object is found under every value `keys_of` returns for
    /// it (see [`Informer::indexed`]).
    pub fn with_index(
        self,
        name: &'static str,
        keys_of: impl Fn(&K::Object) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        {
            let mut cache = self.write();
            let mut index = Index { keys_of: Box::new(keys_of), entries: HashMap::new() };
            for (key, object) in &cache.objects {
                index.insert(key, object);
            }
            cache.indexes.insert(name, index);
        }
        self
    }

    /// The resource the informer caches.
    pub fn resource(&self) -> &'static ResourceType {
        K::RESOURCE
    }

    /// Calls `handler` for every change from now on (including the ADDED events of the first
    /// list). Handlers must be quick: they run on the informer's task.
    pub fn subscribe(&self, handler: impl Fn(&Event<K::Object>) + Send + Sync + 'static) {
        self.shared.handlers.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::new(handler));
    }

    fn read(&self) -> RwLockReadGuard<'_, Cache<K::Object>> {
        self.shared.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cache<K::Object>> {
        self.shared.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object at `key`, if cached.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K::Object>> {
        self.read().objects.get(key).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K::Object>> {
        self.read().objects.values().cloned().collect()
    }

    /// The cached objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K::Object>> {
        let start = ObjectKey::new(Some(namespace), "");
        self.read()
            .objects
            .range(start..)
            .take_while(|(k, _)| k.namespace.as_deref() == Some(namespace))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The cached objects with an ownerReference to `uid`.
    pub fn owned_by(&self, uid: &str) -> Vec<Arc<K::Object>> {
        self.read().lookup(BY_OWNER, uid)
    }

    /// The cached objects the index `name` files under `value`.
    pub fn indexed(&self, name: &str, value: &str) -> Vec<Arc<K::Object>> {
        self.read().lookup(name, value)
    }

    /// The cached objects of `namespace` (every namespace when `None`) that `selector` selects.
    /// An equality requirement narrows the search to the label index; otherwise the namespace
    /// is scanned.
    pub fn select(&self, namespace: Option<&str>, selector: &LabelSelector) -> Vec<Arc<K::Object>> {
        let exact = selector.requirements.iter().find_map(|r| match &r.op {
            Operator::In(values) if values.len() == 1 => values.first().map(|v| format!("{}={v}", r.key)),
            _ => None,
        });
        let candidates = match (exact, namespace) {
            (Some(pair), _) => self.read().lookup(BY_LABEL, &pair),
            (None, Some(ns)) => self.list_namespace(ns),
            (None, None) => self.list(),
        };
        candidates
            .into_iter()
            .filter(|o| namespace.is_none_or(|ns| o.metadata().namespace.as_deref() == Some(ns)))
            .filter(|o| selector.matches(o.metadata().labels.as_ref().unwrap_or(&BTreeMap::new())))
            .collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the first list is in the cache.
    pub async fn synced(&self) {
        let mut synced = self.shared.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Whether the first list is in the cache, as a channel (for waiting on several caches).
    pub fn synced_channel(&self) -> watch::Receiver<bool> {
        self.shared.synced.subscribe()
    }

    /// The same cache without its type.
    pub fn erased(&self) -> Arc<dyn AnyInformer> {
        Arc::new(self.clone())
    }

    /// Lists and watches until `shutdown`, relisting at once when the watch expires and
    /// retrying with [`retry::BACKOFF`] when the store fails; the backoff starts over after a
    /// relist.
    pub async fn run(self, registry: Registry, shutdown: CancellationToken) {
        loop {
            let attempts = (|| self.list_and_watch(&registry, &shutdown))
                .retry(retry::BACKOFF)
                .when(|e| !matches!(e, RegistryError::Expired(_)))
                .notify(|e, delay| {
                    tracing::debug!(resource = K::RESOURCE.plural, error = %e, ?delay, "informer failed; retrying");
                });
            let ended = tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = attempts => ended,
            };
            match ended {
                Ok(()) => return,
                // The backoff has no limit, so only an expired watch ends the retries.
                Err(e) => tracing::debug!(resource = K::RESOURCE.plural, error = %e, "watch expired; relisting"),
            }
        }
    }

    /// Decodes a stored object; one that does not fit the type (written through the etcd API
    /// by hand) is left out of the cache.
    fn decode(object: Value) -> Option<(ObjectKey, Arc<K::Object>)> {
        let key = ObjectKey::of(&object);
        match serde_json::from_value::<K::Object>(object) {
            Ok(typed) => Some((key, Arc::new(typed))),
            Err(e) => {
                tracing::warn!(resource = K::RESOURCE.plural, object = %key, error = %e, "cannot decode; not cached");
                None
            }
        }
    }

    async fn list_and_watch(&self, registry: &Registry, shutdown: &CancellationToken) -> Result<(), RegistryError> {
        let options = ListOptions { read: ReadAt::Any, ..Default::default() };
        let listed = registry.list(K::RESOURCE, None, &options).await?;
        let fresh: BTreeMap<ObjectKey, Arc<K::Object>> = listed.items.into_iter().filter_map(Self::decode).collect();
        let mut events = Vec::new();
        {
            let mut cache = self.write();
            let gone: Vec<ObjectKey> = cache.objects.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
            for key in gone {
                if let Some(old) = cache.remove(&key) {
                    events.push(Event { kind: ChangeType::Deleted, object: old.clone(), old: Some(old) });
                }
            }
            for (key, object) in fresh {
                let unchanged = cache.objects.get(&key).is_some_and(|old| **old == *object);
                if unchanged {
                    continue;
                }
                let old = cache.insert(key, object.clone());
                let kind = if old.is_some() { ChangeType::Modified } else { ChangeType::Added };
                events.push(Event { kind, object, old });
            }
        }
        for event in &events {
            self.notify(event);
        }
        self.shared.synced.send_replace(true);
        let options = WatchOptions { after: Some(listed.revision), ..Default::default() };
        let mut watch = registry.watch(K::RESOURCE, None, options).await?;
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
                let key = ObjectKey::of(&change.object);
                let event = match (change.kind, Self::decode(change.object)) {
                    (ChangeType::Deleted, _) | (_, None) => {
                        // Gone, or no longer readable: either way not in the cache any more.
                        let Some(old) = self.write().remove(&key) else { continue };
                        Event { kind: ChangeType::Deleted, object: old.clone(), old: Some(old) }
                    }
                    (kind, Some((key, object))) => {
                        let old = self.write().insert(key, object.clone());
                        let kind = if old.is_none() { ChangeType::Added } else { kind };
                        Event { kind, object, old }
                    }
                };
                self.notify(&event);
            }
        }
    }

    fn notify(&self, event: &Event<K::Object>) {
        let handlers: Vec<Handler<K::Object>> =
            self.shared.handlers.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for handler in handlers {
            handler(event);
        }
    }
}

/// The uid of each owner of an object.
fn owner_uids<T: Metadata<Ty = ObjectMeta>>(object: &T) -> Vec<String> {
    object.metadata().owner_references.iter().flatten().map(|r| r.uid.clone()).collect()
}

/// Each label of an object as `key=value`.
fn label_pairs<T: Metadata<Ty = ObjectMeta>>(object: &T) -> Vec<String> {
    object.metadata().labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A change as code that handles any kind sees it.
pub type MetaHandler = Box<dyn Fn(ChangeType, &ObjectMeta) + Send + Sync>;

/// An informer seen through object metadata only, whatever its kind: for code that handles
/// every kind alike (the garbage collector, by owner references and finalizers).
pub trait AnyInformer: Send + Sync {
    /// The resource cached.
    fn resource(&self) -> &'static ResourceType;
    /// The metadata of the object at `key`, if cached.
    fn meta(&self, key: &ObjectKey) -> Option<ObjectMeta>;
    /// The metadata of every cached object owned by `uid`.
    fn owned_by(&self, uid: &str) -> Vec<ObjectMeta>;
    /// Calls `handler` with every change's kind and the object's metadata.
    fn subscribe_meta(&self, handler: MetaHandler);
    /// Whether the first list is in the cache.
    fn synced_channel(&self) -> watch::Receiver<bool>;
}

impl<K: Kind> AnyInformer for Informer<K> {
    fn resource(&self) -> &'static ResourceType {
        K::RESOURCE
    }

    fn meta(&self, key: &ObjectKey) -> Option<ObjectMeta> {
        self.get(key).map(|o| o.metadata().clone())
    }

    fn owned_by(&self, uid: &str) -> Vec<ObjectMeta> {
        Informer::owned_by(self, uid).iter().map(|o| o.metadata().clone()).collect()
    }

    fn subscribe_meta(&self, handler: MetaHandler) {
        self.subscribe(move |event| handler(event.kind, event.object.metadata()));
    }

    fn synced_channel(&self) -> watch::Receiver<bool> {
        Informer::synced_channel(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;
    use trireme_model::kinds::pod::Pods;

    fn pod(namespace: &str, name: &str, labels: Value, owner: Option<&str>) -> Value {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("{name}-uid"), "labels": labels}});
        if let Some(owner) = owner {
            pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": owner, "controller": true}]);
        }
        pod
    }

    fn cached(informer: &Informer<Pods>, object: Value) {
        let (key, typed) = Informer::<Pods>::decode(object).expect("a pod");
        informer.write().insert(key, typed);
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let mut names: Vec<String> = pods.iter().filter_map(|p| p.metadata.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn keys_print_as_namespace_slash_name() {
        assert_eq!(ObjectKey::new(Some("default"), "web").to_string(), "default/web");
        assert_eq!(ObjectKey::new(None, "node-1").to_string(), "node-1");
    }

    #[test]
    fn objects_are_found_by_namespace_owner_label_and_custom_index() {
        let informer = Informer::<Pods>::new()
            .with_index("node", |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).into_iter().collect());
        cached(&informer, pod("a", "web-1", json!({"app": "web"}), Some("rs-1")));
        cached(&informer, pod("a", "web-2", json!({"app": "web", "tier": "x"}), Some("rs-1")));
        cached(&informer, pod("b", "web-3", json!({"app": "web"}), Some("rs-2")));
        cached(&informer, pod("ab", "db-1", json!({"app": "db"}), None));
        let mut bound = pod("a", "bound", json!({}), None);
        bound["spec"] = json!({"nodeName": "n1", "containers": []});
        cached(&informer, bound);

        assert_eq!(names(informer.list_namespace("a")), ["bound", "web-1", "web-2"]);
        assert_eq!(names(informer.list_namespace("ab")), ["db-1"]);
        assert_eq!(names(informer.owned_by("rs-1")), ["web-1", "web-2"]);
        assert_eq!(names(informer.indexed("node", "n1")), ["bound"]);
        let web = LabelSelector::parse("app=web").expect("a selector");
        assert_eq!(names(informer.select(Some("a"), &web)), ["web-1", "web-2"]);
        assert_eq!(names(informer.select(None, &web)), ["web-1", "web-2", "web-3"]);
        let tiered = LabelSelector::parse("tier").expect("a selector");
        assert_eq!(names(informer.select(Some("a"), &tiered)), ["web-2"]);

        // A change of labels and owner moves the object between index entries.
        cached(&informer, pod("a", "web-1", json!({"app": "db"}), Some("rs-9")));
        assert_eq!(names(informer.owned_by("rs-1")), ["web-2"]);
        assert_eq!(names(informer.owned_by("rs-9")), ["web-1"]);
        assert_eq!(names(informer.select(Some("a"), &web)), ["web-2"]);
        informer.write().remove(&ObjectKey::new(Some("a"), "web-2"));
        assert!(informer.owned_by("rs-1").is_empty());
        assert!(informer.select(Some("a"), &web).is_empty());
    }

    #[test]
    fn an_object_that_does_not_fit_its_type_is_not_cached() {
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}, "spec": {"containers": "no"}});
        assert!(Informer::<Pods>::decode(bad).is_none());
    }
}
