//! The registry: Kubernetes objects over the replicated store. Every read and write the API
//! server and the controllers make goes through here, so creation bookkeeping, optimistic
//! concurrency, graceful deletion, service address allocation and watch semantics live in one
//! place.
//!
//! Objects are stored as JSON at [`keys::object_key`] without their resourceVersion, which is
//! the key's mod_revision and is filled in on every read. Writes are compare-and-swap
//! transactions: a create requires the key to be absent and the namespace unchanged since it
//! was read, an update requires the mod_revision it read. A registry made with
//! [`Registry::fenced`] stamps every write with a leadership term, so a deposed leader's writes
//! are refused at apply time.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;
use serde_json::json;
use trireme_store::Store;
use trireme_store::StoreError;
use trireme_store::WatchMessage;
use trireme_store::WatchStream;
use trireme_store::types::Command;
use trireme_store::types::Compare;
use trireme_store::types::CompareOp;
use trireme_store::types::CompareTarget;
use trireme_store::types::DeleteRangeRequest;
use trireme_store::types::EventType;
use trireme_store::types::KeyRange;
use trireme_store::types::KeyValue;
use trireme_store::types::Outcome;
use trireme_store::types::PutRequest;
use trireme_store::types::RangeRequest;
use trireme_store::types::Request;
use trireme_store::types::RequestOp;
use trireme_store::types::ResponseOp;
use trireme_store::types::TxnRequest;

use trireme_model::decode::Rejected;
use trireme_model::field::FieldError;
use trireme_model::fields;
use trireme_model::keys;
use trireme_model::kinds;
use trireme_model::managed;
use trireme_model::resource;
use trireme_model::resource::ResourceType;
use trireme_model::selector::FieldSelector;
use trireme_model::selector::LabelSelector;
use trireme_model::strategy::{Allocation, Strategy};
use trireme_model::version::ReadAt;

/// How many times a read-modify-write is retried when another writer got there first.
const MAX_CONFLICT_RETRIES: usize = 16;
/// How long a read waits for this master to catch up with a requested resourceVersion.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3);
/// Items read from the store per page while filling a filtered list.
const LIST_PAGE: i64 = 500;
/// The namespaces every cluster has from the start.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Why a registry call failed; the API server maps each to a Status (one table, in
/// `trireme-apiserver`).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The object does not exist.
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    /// A create found the name taken.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    /// An update's precondition (resourceVersion or uid) does not hold.
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {reason}")]
    Conflict { resource: String, name: String, reason: String },
    /// The object breaks validation rules.
    #[error("{kind} \"{name}\" is invalid: {}", render_causes(.causes))]
    Invalid { kind: String, name: String, causes: Vec<FieldError> },
    /// The request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request may not be done (e.g. creating in a terminating namespace).
    #[error("{0}")]
    Forbidden(String),
    /// The resourceVersion asked for is compacted (HTTP 410).
    #[error("{0}")]
    Expired(String),
    /// The resourceVersion asked for is newer than this master caught up to in time.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: i64, current: i64 },
    /// The operation is not supported for this resource.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored data that does not decode as JSON or as an object of its kind (a bug, or a
    /// foreign write through the etcd API).
    #[error("{0}")]
    Corrupt(String),
    /// Nothing is left to allocate: the service IP range or the NodePort range is full.
    #[error("{0}")]
    Exhausted(String),
    /// A failure of this server with no better name (a lost task, a missing built-in kind).
    #[error("{0}")]
    Internal(String),
}

fn render_causes(causes: &[FieldError]) -> String {
    match causes {
        [one] => one.to_string(),
        many => format!("[{}]", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// Where service addresses come from.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The service ClusterIP range (IPv4 network address and prefix length).
    pub service_cidr: (std::net::Ipv4Addr, u8),
    /// The NodePort range, inclusive.
    pub node_ports: (u16, u16),
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { service_cidr: (std::net::Ipv4Addr::new(10, 96, 0, 0), 12), node_ports: (30000, 32767) }
    }
}

/// Options of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// At most this many items (0 or `None`: all).
    pub limit: Option<i64>,
    /// The `continue` token of the previous page.
    pub continue_token: Option<String>,
    pub read: ReadAt,
    /// `resourceVersionMatch=Exact`: read at exactly the revision asked for.
    pub exact: bool,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList {
    pub items: Vec<Value>,
    /// The store revision the list was read at (the list's resourceVersion).
    pub revision: i64,
    /// Token for the next page, if there is one.
    pub continue_token: Option<String>,
}

/// Options of a create or update.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldValidation=Strict`: unknown fields are an error, not a warning.
    pub strict: bool,
    /// `dryRun=All`: everything but the store write.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// A server-side apply (recorded as such in managedFields).
    pub apply: bool,
}

impl WriteOptions {
    fn manager(&self) -> &str {
        self.field_manager.as_deref().unwrap_or("unknown")
    }

    fn operation(&self) -> &'static str {
        if self.apply { "Apply" } else { "Update" }
    }
}

/// What a write stored, with warnings for the client (`Warning` headers).
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The object, except its status where the resource has a status subresource.
    Main,
    /// Only the status (the `status` subresource).
    Status,
    /// The whole object, checked as a new one rather than against the old spec: the binding
    /// subresource's assignment of `spec.nodeName`, which pod update rules otherwise forbid.
    Binding,
}

/// Options of a delete (Kubernetes' DeleteOptions).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub preconditions: Option<Preconditions>,
    #[serde(default)]
    pub dry_run: Vec<String>,
}

/// Preconditions of a delete.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The object as it was removed, or as it now is when deletion is pending.
    pub object: Value,
    /// Whether the object is gone; `false` when a grace period or finalizers hold it.
    pub gone: bool,
}

/// A change seen by a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One watch event: the object after the change (before it, for a delete).
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: ChangeType,
    pub object: Value,
    pub revision: i64,
}

/// Options of a watch.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Deliver changes after this revision; `None` (or "0"): first the current state as
    /// ADDED events, then changes.
    pub after: Option<i64>,
}

/// Typed CRUD, list and watch of Kubernetes objects over the store.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    fence: Option<u64>,
    config: std::sync::Arc<RegistryConfig>,
}

impl Registry {
    /// A registry whose writes are not fenced (the API server's).
    pub fn new(store: Store, config: RegistryConfig) -> Registry {
        Registry { store, fence: None, config: std::sync::Arc::new(config) }
    }

    /// The same registry with every write fenced to the leadership `term`: writes are refused
    /// at apply time once leadership has moved on (`StoreError::Fenced`).
    pub fn fenced(&self, term: u64) -> Registry {
        Registry { store: self.store.clone(), fence: Some(term), config: self.config.clone() }
    }

    /// The store under this registry.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates the namespaces every cluster has, if missing. Safe to call on every master at
    /// every start.
    pub async fn bootstrap(&self) -> Result<(), RegistryError> {
        let rt =
            resource::find("", "v1", "namespaces").ok_or_else(|| RegistryError::Internal("no namespaces".into()))?;
        for ns in SYSTEM_NAMESPACES {
            let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match self.create(rt, None, object, &WriteOptions::default()).await {
                Ok(_) | Err(RegistryError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    // ---- reads --------------------------------------------------------------------------

    /// One object. If it does not exist, returns `NotFound`.
    pub async fn get(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        read: ReadAt,
    ) -> Result<Value, RegistryError> {
        let key = keys::object_key(rt.storage, scope_ns(rt, namespace), name);
        let (revision, serializable) = self.read_point(read, false).await?;
        let req = RangeRequest { key: key.into_bytes(), revision, serializable, ..Default::default() };
        let (resp, _) = self.store.range(req).await?;
        match resp.kvs.into_iter().next() {
            Some(kv) => decode(&kv),
            None => Err(not_found(rt, name)),
        }
    }

    /// A page of objects matching the selectors, read at one revision.
    ///
    /// If the continue token's revision is compacted, returns `Expired`.
    pub async fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, RegistryError> {
        check_fields(rt, &options.fields)?;
        let prefix = keys::list_prefix(rt.storage, scope_ns(rt, namespace));
        let end = keys::prefix_end(prefix.as_bytes());
        let (mut start, mut revision, mut serializable) = match &options.continue_token {
            Some(token) => {
                let token = ContinueToken::decode(token)?;
                if !token.start.starts_with(&prefix) {
                    return Err(RegistryError::BadRequest("continue key is not in the listed range".into()));
                }
                (token.start.into_bytes(), token.rv, true)
            }
            None => {
                let (rev, serializable) = self.read_point(options.read, options.exact).await?;
                (prefix.clone().into_bytes(), rev, serializable)
            }
        };
        let limit = options.limit.filter(|l| *l > 0);
        let filtered = !options.labels.is_empty() || !options.fields.is_empty();
        let mut items = Vec::new();
        loop {
            let page = match limit {
                Some(l) if !filtered => l - items.len() as i64,
                Some(l) => (l - items.len() as i64).max(LIST_PAGE),
                None => 0,
            };
            let req = RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                limit: page,
                revision,
                serializable,
                ..Default::default()
            };
            let (resp, read_at) = self.store.range(req).await.map_err(|e| match e {
                StoreError::Compacted { .. } if options.continue_token.is_some() => RegistryError::Expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start \
                     a new list without the continue parameter."
                        .into(),
                ),
                e => e.into(),
            })?;
            // The store answers with its current revision; a read at a given revision (a
            // continue token, an exact resourceVersion) stays at that one.
            if revision == 0 {
                revision = read_at;
            }
            serializable = true;
            let more = resp.more;
            let mut last_key = None;
            for kv in &resp.kvs {
                last_key = Some(kv.key.clone());
                let object = decode(kv)?;
                if matches(rt, &object, &options.labels, &options.fields) {
                    items.push(object);
                    if limit.is_some_and(|l| items.len() as i64 >= l) {
                        let next = next_key(&kv.key);
                        let has_more = more || resp.kvs.last().is_some_and(|last| last.key != kv.key);
                        let continue_token = has_more.then(|| ContinueToken::new(revision, &next).encode());
                        return Ok(ObjectList { items, revision, continue_token });
                    }
                }
            }
            match (more, last_key) {
                (true, Some(last)) => start = next_key(&last),
                _ => return Ok(ObjectList { items, revision, continue_token: None }),
            }
        }
    }

    /// Resolves how a read is served: at which revision (0: newest) and whether locally.
    async fn read_point(&self, read: ReadAt, exact: bool) -> Result<(i64, bool), RegistryError> {
        match read {
            ReadAt::Latest => Ok((0, false)),
            ReadAt::Any => Ok((0, true)),
            ReadAt::Revision(rev) => {
                self.store.wait_for_revision(rev, CATCH_UP_TIMEOUT).await.map_err(|e| match e {
                    StoreError::FutureRevision { current } => {
                        RegistryError::TooLargeResourceVersion { requested: rev, current }
                    }
                    e => e.into(),
                })?;
                Ok((if exact { rev } else { 0 }, true))
            }
        }
    }

    // ---- writes -------------------------------------------------------------------------

    /// Creates an object in `namespace` (ignored for cluster-scoped resources). Fills in the
    /// name from `generateName`, uid, creationTimestamp and generation, applies defaults and
    /// validation, and allocates service addresses.
    ///
    /// If the name is taken, returns `AlreadyExists`; if the namespace is missing, `NotFound`;
    /// if it is terminating, `Forbidden`.
    pub async fn create(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        options: &WriteOptions,
    ) -> Result<Written, RegistryError> {
        let namespace = scope_ns(rt, namespace);
        check_type(rt, &object)?;
        let meta = metadata_mut(&mut object)?;
        match (namespace, meta.get("namespace").and_then(Value::as_str)) {
            (Some(ns), Some(body)) if !body.is_empty() && body != ns => {
                return Err(RegistryError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            (Some(ns), _) => {
                meta.insert("namespace".into(), json!(ns));
            }
            (None, _) => {
                meta.remove("namespace");
            }
        }
        if meta.get("name").and_then(Value::as_str).unwrap_or_default().is_empty() {
            let generate = meta.get("generateName").and_then(Value::as_str).unwrap_or_default().to_string();
            if generate.is_empty() {
                return Err(RegistryError::Invalid {
                    kind: rt.qualified_kind(),
                    name: String::new(),
                    causes: vec![FieldError::required("metadata.name")],
                });
            }
            meta.insert("name".into(), json!(format!("{generate}{}", random_suffix())));
        }
        for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            meta.remove(field);
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        let kind = strategy(rt)?;
        if kind.tracks_generation() {
            meta.insert("generation".into(), json!(1));
        }
        if let (Some(status), Some(map)) = (kind.status_on_create(), object.as_object_mut()) {
            map.insert("status".into(), status);
        }
        let name = object_name(&object).to_string();
        let outcome = kind.normalize(object, None, options.strict).map_err(|e| rejected(rt, &name, e))?;
        let mut requested = outcome.object;
        let name = object_name(&requested).to_string();
        let key = keys::object_key(rt.storage, namespace, &name);
        managed::record(&mut requested, options.manager(), options.operation(), &now());

        for attempt in 0..MAX_CONFLICT_RETRIES {
            // Each attempt allocates afresh: an address chosen by a lost attempt is no request
            // of the client's, and may be the one another create just took.
            let mut object = requested.clone();
            let mut compare = vec![absent(&key)];
            let mut success = Vec::new();
            let ns_key = match namespace {
                Some(ns) => {
                    let ns_key = keys::object_key("namespaces", None, ns);
                    let ns_kv = self.read_kv(&ns_key, attempt > 0).await?;
                    let Some(ns_kv) = ns_kv else {
                        return Err(RegistryError::NotFound { resource: "namespaces".into(), name: ns.into() });
                    };
                    let ns_obj = decode(&ns_kv)?;
                    if ns_obj.pointer("/metadata/deletionTimestamp").is_some() {
                        return Err(RegistryError::Forbidden(format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is \
                             being terminated",
                            rt.qualified_plural()
                        )));
                    }
                    compare.push(unchanged(&ns_key, ns_kv.mod_revision));
                    Some(ns_key)
                }
                None => None,
            };
            if kind.allocation() == Allocation::ServiceAddresses {
                let taken = self.allocate_service(&mut object, None, attempt > 0).await?;
                for alloc in taken {
                    compare.push(absent(&alloc));
                    success.push(put_op(&alloc, format!("{}/{name}", namespace.unwrap_or_default()).into_bytes()));
                }
            }
            if options.dry_run {
                return Ok(Written { object, warnings: outcome.warnings });
            }
            success.insert(0, put_op(&key, encode(&object)?));
            let txn = TxnRequest {
                compare,
                success,
                failure: vec![range_op(&key)].into_iter().chain(ns_key.iter().map(|k| range_op(k))).collect(),
            };
            let (ok, revision, responses) = self.txn(txn).await?;
            if ok {
                set_resource_version(&mut object, revision);
                return Ok(Written { object, warnings: outcome.warnings });
            }
            if first_range(&responses, 0).is_some() {
                return Err(RegistryError::AlreadyExists { resource: rt.qualified_plural(), name });
            }
            // The namespace changed or an allocation was taken meanwhile: read again and retry.
        }
        Err(RegistryError::Store(StoreError::Timeout))
    }

    /// Replaces an object (PUT). With `metadata.resourceVersion` in the body the update is
    /// conditional on it; without, it applies to whatever version is current.
    ///
    /// If the object does not exist, returns `NotFound`; if the resourceVersion is stale,
    /// `Conflict`.
    pub async fn update(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        object: Value,
        scope: Scope,
        options: &WriteOptions,
    ) -> Result<Written, RegistryError> {
        check_type(rt, &object)?;
        // An empty (or "0") resourceVersion is no precondition, as in Kubernetes.
        let precondition = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty() && *rv != "0")
            .map(str::to_string);
        if let Some(body_name) = object.pointer("/metadata/name").and_then(Value::as_str)
            && body_name != name
        {
            return Err(RegistryError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        self.update_with(rt, namespace, name, scope, options, |_| Ok(object.clone()), precondition).await
    }

    /// Read-modify-write: applies `change` to the current object and stores the result,
    /// retrying when another writer got there first. The object `change` returns is treated
    /// like a PUT body (`scope` decides which part of it counts).
    ///
    /// `precondition` is a resourceVersion the current object must have, else `Conflict`.
    #[allow(clippy::too_many_arguments)] // each is one independent knob of a Kubernetes write
    pub async fn update_with(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        scope: Scope,
        options: &WriteOptions,
        mut change: impl FnMut(&Value) -> Result<Value, RegistryError>,
        precondition: Option<String>,
    ) -> Result<Written, RegistryError> {
        let namespace = scope_ns(rt, namespace);
        let kind = strategy(rt)?;
        let key = keys::object_key(rt.storage, namespace, name);
        for attempt in 0..MAX_CONFLICT_RETRIES {
            let Some(kv) = self.read_kv(&key, attempt > 0).await? else {
                return Err(not_found(rt, name));
            };
            let current = decode(&kv)?;
            if let Some(rv) = &precondition
                && rv != &kv.mod_revision.to_string()
            {
                return Err(conflict(rt, name));
            }
            let proposed = change(&current)?;
            let mut next = merge_scope(rt, &current, proposed, scope)?;
            carry_identity(&current, &mut next);
            let old = (scope != Scope::Binding).then_some(&current);
            let outcome = kind.normalize(next, old, options.strict).map_err(|e| rejected(rt, name, e))?;
            let mut next = outcome.object;
            bump_generation(kind, &current, &mut next);
            strip_resource_version(&mut next);
            let mut unchanged_current = current.clone();
            strip_resource_version(&mut unchanged_current);
            if next == unchanged_current {
                return Ok(Written { object: current, warnings: outcome.warnings });
            }
            managed::record(&mut next, options.manager(), options.operation(), &now());
            if finalized(kind, &next) {
                if options.dry_run {
                    set_resource_version(&mut next, kv.mod_revision);
                    return Ok(Written { object: next, warnings: outcome.warnings });
                }
                match self.remove(rt, namespace, name, &kv, next).await {
                    Ok(d) => return Ok(Written { object: d.object, warnings: outcome.warnings }),
                    // Another writer got there first: read again (a precondition now fails).
                    Err(RegistryError::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            let mut compare = vec![unchanged(&key, kv.mod_revision)];
            let mut success = Vec::new();
            if kind.allocation() == Allocation::ServiceAddresses {
                let (taken, released) = self.reallocate_service(&current, &mut next, attempt > 0).await?;
                for alloc in taken {
                    compare.push(absent(&alloc));
                    success.push(put_op(&alloc, format!("{}/{name}", namespace.unwrap_or_default()).into_bytes()));
                }
                for alloc in released {
                    success.push(delete_op(&alloc));
                }
            }
            if options.dry_run {
                set_resource_version(&mut next, kv.mod_revision);
                return Ok(Written { object: next, warnings: outcome.warnings });
            }
            success.insert(0, put_op(&key, encode(&next)?));
            let (ok, revision, _) = self.txn(TxnRequest { compare, success, failure: vec![] }).await?;
            if ok {
                set_resource_version(&mut next, revision);
                return Ok(Written { object: next, warnings: outcome.warnings });
            }
            if precondition.is_some() {
                // Someone else wrote since: the client's version is stale now.
                let Some(now) = self.read_kv(&key, true).await? else {
                    return Err(not_found(rt, name));
                };
                if Some(now.mod_revision.to_string()) != precondition {
                    return Err(conflict(rt, name));
                }
            }
        }
        Err(conflict(rt, name))
    }

    /// Deletes an object. Pods bound to a node are deleted gracefully: they get a
    /// deletionTimestamp and their kubelet removes them after stopping their containers (or a
    /// grace period of 0 removes them at once). Objects with finalizers get a
    /// deletionTimestamp and go once the finalizers are removed. A namespace becomes
    /// `Terminating`; [`Registry::finish_namespace`] removes its contents and then it.
    ///
    /// If the object does not exist, returns `NotFound`; if a precondition fails, `Conflict`.
    pub async fn delete(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, RegistryError> {
        let namespace = scope_ns(rt, namespace);
        let kind = strategy(rt)?;
        if let Some(message) = kind.undeletable(name) {
            return Err(RegistryError::Forbidden(message));
        }
        let key = keys::object_key(rt.storage, namespace, name);
        for attempt in 0..MAX_CONFLICT_RETRIES {
            let Some(kv) = self.read_kv(&key, attempt > 0).await? else {
                return Err(not_found(rt, name));
            };
            let current = decode(&kv)?;
            if let Some(pre) = &options.preconditions {
                if let Some(uid) = &pre.uid
                    && current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
                {
                    return Err(RegistryError::Conflict {
                        resource: rt.qualified_plural(),
                        name: name.into(),
                        reason: format!("Precondition failed: UID in precondition: {uid}"),
                    });
                }
                if let Some(rv) = &pre.resource_version
                    && rv != &kv.mod_revision.to_string()
                {
                    return Err(conflict(rt, name));
                }
            }
            if !options.dry_run.is_empty() {
                return Ok(Deleted { object: current, gone: true });
            }
            let pending = match Self::pending_deletion(kind, &current, options) {
                Some(pending) => pending,
                None => match self.remove(rt, namespace, name, &kv, current).await {
                    Err(RegistryError::Conflict { .. }) => continue,
                    other => return other,
                },
            };
            if pending == current {
                return Ok(Deleted { object: current, gone: false });
            }
            let mut next = pending;
            strip_resource_version(&mut next);
            let txn = TxnRequest {
                compare: vec![unchanged(&key, kv.mod_revision)],
                success: vec![put_op(&key, encode(&next)?)],
                failure: vec![],
            };
            let (ok, revision, _) = self.txn(txn).await?;
            if ok {
                set_resource_version(&mut next, revision);
                return Ok(Deleted { object: next, gone: false });
            }
        }
        Err(conflict(rt, name))
    }

    /// The object as it must look while its deletion is pending, or `None` to remove it now.
    fn pending_deletion(kind: &dyn Strategy, current: &Value, options: &DeleteOptions) -> Option<Value> {
        let mut next = current.clone();
        let already = current.pointer("/metadata/deletionTimestamp").is_some();
        let finalizers =
            current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        let is_namespace = kind.deleted_by_controller();
        let grace = kind.deletion_grace(current, options.grace_period_seconds);
        // Foreground and orphan deletion are the garbage collector's finalizers: the object
        // stays until its dependents are deleted (foreground) or released (orphan).
        let propagation = match options.propagation_policy.as_deref() {
            Some("Foreground") if !already && !is_namespace => Some("foregroundDeletion"),
            Some("Orphan") if !already && !is_namespace => Some("orphan"),
            _ => None,
        };
        if grace == 0 && !finalizers && !is_namespace && propagation.is_none() {
            return None;
        }
        if let Some(finalizer) = propagation {
            let meta = next.get_mut("metadata").and_then(Value::as_object_mut)?;
            let list = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut()
                && !list.iter().any(|f| f == finalizer)
            {
                list.push(json!(finalizer));
            }
        }
        if !already {
            let meta = next.get_mut("metadata").and_then(Value::as_object_mut)?;
            meta.insert("deletionTimestamp".into(), json!(timestamp_after(grace)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if is_namespace && let Some(status) = ensure_object(&mut next, "status") {
            status.insert("phase".into(), json!("Terminating"));
        }
        Some(next)
    }

    /// Removes the object at `key` if it is still at `kv`'s revision, releasing what it
    /// allocated.
    async fn remove(
        &self,
        rt: &ResourceType,
        _namespace: Option<&str>,
        name: &str,
        kv: &KeyValue,
        object: Value,
    ) -> Result<Deleted, RegistryError> {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        let mut success = vec![delete_op(&key)];
        if strategy(rt)?.allocation() == Allocation::ServiceAddresses {
            for alloc in service_allocations(&object, &self.config) {
                success.push(delete_op(&alloc));
            }
        }
        let txn = TxnRequest { compare: vec![unchanged(&key, kv.mod_revision)], success, failure: vec![] };
        let (ok, _, _) = self.txn(txn).await?;
        if !ok {
            return Err(conflict(rt, name));
        }
        Ok(Deleted { object, gone: true })
    }

    /// Deletes every object of `rt` in `namespace` matching the selectors (deletecollection).
    pub async fn delete_collection(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        list: &ListOptions,
        options: &DeleteOptions,
    ) -> Result<Vec<Value>, RegistryError> {
        let objects = self.list(rt, namespace, list).await?;
        let mut deleted = Vec::new();
        for object in objects.items {
            let ns = object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string);
            match self.delete(rt, ns.as_deref(), object_name(&object), options).await {
                Ok(d) => deleted.push(d.object),
                Err(RegistryError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Removes everything in a terminating namespace, then the namespace. Returns whether the
    /// namespace is gone; `false` while some objects (pods within their grace period) remain.
    pub async fn finish_namespace(&self, namespace: &str) -> Result<bool, RegistryError> {
        let options = DeleteOptions::default();
        let mut remaining = false;
        for rt in resource::all().filter(|r| r.namespaced) {
            let left = self.delete_collection(rt, Some(namespace), &ListOptions::default(), &options).await?;
            remaining |= left.iter().any(|o| o.pointer("/metadata/deletionTimestamp").is_some());
            remaining |= !self.list(rt, Some(namespace), &ListOptions::default()).await?.items.is_empty();
        }
        if remaining {
            return Ok(false);
        }
        let rt =
            resource::find("", "v1", "namespaces").ok_or_else(|| RegistryError::Internal("no namespaces".into()))?;
        let key = keys::object_key(rt.storage, None, namespace);
        let Some(kv) = self.read_kv(&key, true).await? else {
            return Ok(true);
        };
        let object = decode(&kv)?;
        match self.remove(rt, None, namespace, &kv, object).await {
            Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(true),
            Err(RegistryError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Assigns a pod to a node (the binding subresource) and marks it `PodScheduled`, once.
    ///
    /// If the pod is already bound or being deleted, returns `Conflict`; if it does not exist,
    /// `NotFound`.
    pub async fn bind(&self, namespace: Option<&str>, name: &str, node: &str) -> Result<Written, RegistryError> {
        let rt = resource::find("", "v1", "pods").ok_or_else(|| RegistryError::Internal("no pods".into()))?;
        let change = |current: &Value| {
            if let Some(bound) = current.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                return Err(RegistryError::Conflict {
                    resource: "pods".into(),
                    name: name.into(),
                    reason: format!("pod {name} is already assigned to node \"{bound}\""),
                });
            }
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(RegistryError::Conflict {
                    resource: "pods".into(),
                    name: name.into(),
                    reason: format!("pod {name} is being deleted, cannot be assigned to a host"),
                });
            }
            let mut next = current.clone();
            next["spec"]["nodeName"] = json!(node);
            let scheduled =
                json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()});
            set_condition(&mut next, scheduled);
            Ok(next)
        };
        self.update_with(rt, namespace, name, Scope::Binding, &WriteOptions::default(), change, None).await
    }

    // ---- watch --------------------------------------------------------------------------

    /// Watches objects of `rt` (in `namespace`, or all) matching the options.
    ///
    /// If `options.after` is compacted, returns `Expired`.
    pub async fn watch(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        options: WatchOptions,
    ) -> Result<ObjectWatch, RegistryError> {
        check_fields(rt, &options.fields)?;
        let namespace = scope_ns(rt, namespace);
        let name = options.fields.exact("metadata.name").map(str::to_string);
        let range = match &name {
            Some(name) => KeyRange::new(keys::object_key(rt.storage, namespace, name).as_bytes(), &[]),
            None => {
                let prefix = keys::list_prefix(rt.storage, namespace);
                KeyRange::new(prefix.as_bytes(), &keys::prefix_end(prefix.as_bytes()))
            }
        };
        let (initial, after) = match options.after {
            Some(rev) if rev > 0 => (Vec::new(), rev),
            _ => {
                let list = ListOptions {
                    labels: options.labels.clone(),
                    fields: options.fields.clone(),
                    read: ReadAt::Any,
                    ..Default::default()
                };
                let listed = self.list(rt, namespace, &list).await?;
                let initial = listed
                    .items
                    .into_iter()
                    .map(|object| Change { kind: ChangeType::Added, revision: object_revision(&object), object })
                    .collect();
                (initial, listed.revision)
            }
        };
        let stream = self.store.watch(range, after + 1, true).await.map_err(|e| match e {
            StoreError::Compacted { compact_revision } => too_old(after, compact_revision),
            e => e.into(),
        })?;
        Ok(ObjectWatch { rt, stream, labels: options.labels, fields: options.fields, initial, after })
    }

    // ---- store plumbing -----------------------------------------------------------------

    async fn read_kv(&self, key: &str, linearizable: bool) -> Result<Option<KeyValue>, RegistryError> {
        let req = RangeRequest { key: key.as_bytes().to_vec(), serializable: !linearizable, ..Default::default() };
        let (resp, _) = self.store.range(req).await?;
        Ok(resp.kvs.into_iter().next())
    }

    async fn txn(&self, txn: TxnRequest) -> Result<(bool, i64, Vec<ResponseOp>), RegistryError> {
        let request = Request { fence: self.fence, command: Command::Txn(txn) };
        let response = self.store.write(request).await?;
        match response.outcome {
            Outcome::Txn(t) => Ok((t.succeeded, response.revision, t.responses)),
            Outcome::Rejected(trireme_store::types::ApplyError::Fenced { fence, term }) => {
                Err(StoreError::Fenced { fence, term }.into())
            }
            other => Err(RegistryError::Internal(format!("unexpected store outcome {other:?}"))),
        }
    }

    /// Chooses the ClusterIP and node ports a new service needs; returns the allocation keys
    /// to claim.
    async fn allocate_service(
        &self,
        object: &mut Value,
        old: Option<&Value>,
        linearizable: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let mut claims = Vec::new();
        let kind = object.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        if kind == "ExternalName" {
            return Ok(claims);
        }
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).map(str::to_string);
        let asked = object.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default().to_string();
        if old_ip.is_none() && asked != "None" {
            let ip = if asked.is_empty() {
                self.free_cluster_ip(linearizable).await?
            } else {
                let ip: std::net::Ipv4Addr = asked.parse().map_err(|_| {
                    invalid_service(object, FieldError::invalid("spec.clusterIP", &asked, "must be a valid IP address"))
                })?;
                if !in_cidr(ip, self.config.service_cidr) {
                    let (net, bits) = self.config.service_cidr;
                    return Err(invalid_service(
                        object,
                        FieldError::invalid(
                            "spec.clusterIPs",
                            [&asked],
                            format!(
                                "failed to allocate IP {asked}: the provided IP ({asked}) is not in the valid range. The range of valid IPs is {net}/{bits}"
                            ),
                        ),
                    ));
                }
                if self.read_kv(&ip_key(ip), linearizable).await?.is_some() {
                    return Err(invalid_service(
                        object,
                        FieldError::invalid(
                            "spec.clusterIPs",
                            [&asked],
                            format!("failed to allocate IP {asked}: provided IP is already allocated"),
                        ),
                    ));
                }
                ip
            };
            claims.push(ip_key(ip));
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("clusterIP".into(), json!(ip.to_string()));
                spec.insert("clusterIPs".into(), json!([ip.to_string()]));
            }
        }
        if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
            let held: BTreeSet<i64> = old.map(node_ports).unwrap_or_default().into_iter().collect();
            let mut chosen = BTreeSet::new();
            let ports =
                object.pointer_mut("/spec/ports").and_then(Value::as_array_mut).map(std::mem::take).unwrap_or_default();
            let mut out = Vec::new();
            for (i, mut port) in ports.into_iter().enumerate() {
                let asked = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
                let node_port = if asked == 0 {
                    self.free_node_port(&chosen, linearizable).await?
                } else {
                    let (lo, hi) = self.config.node_ports;
                    if asked < i64::from(lo) || asked > i64::from(hi) {
                        return Err(invalid_service(
                            object,
                            FieldError::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                asked,
                                format!(
                                    "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                                ),
                            ),
                        ));
                    }
                    if !held.contains(&asked)
                        && (chosen.contains(&asked) || self.read_kv(&port_key(asked), linearizable).await?.is_some())
                    {
                        return Err(invalid_service(
                            object,
                            FieldError::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                asked,
                                "provided port is already allocated",
                            ),
                        ));
                    }
                    asked
                };
                chosen.insert(node_port);
                if !held.contains(&node_port) {
                    claims.push(port_key(node_port));
                }
                if let Some(p) = port.as_object_mut() {
                    p.insert("nodePort".into(), json!(node_port));
                }
                out.push(port);
            }
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("ports".into(), Value::Array(out));
            }
        }
        Ok(claims)
    }

    /// Claims and releases of a service update.
    async fn reallocate_service(
        &self,
        old: &Value,
        new: &mut Value,
        linearizable: bool,
    ) -> Result<(Vec<String>, Vec<String>), RegistryError> {
        let taken = self.allocate_service(new, Some(old), linearizable).await?;
        let keep: BTreeSet<String> = service_allocations(new, &self.config).into_iter().collect();
        let released = service_allocations(old, &self.config).into_iter().filter(|k| !keep.contains(k)).collect();
        Ok((taken, released))
    }

    async fn free_cluster_ip(&self, linearizable: bool) -> Result<std::net::Ipv4Addr, RegistryError> {
        let (net, bits) = self.config.service_cidr;
        let size = 1u32 << (32 - u32::from(bits));
        let base = u32::from(net);
        // Random probing keeps concurrent creates from racing for the same address; the
        // create's transaction is the arbiter when they do.
        for _ in 0..64 {
            let offset = rand::random_range(2..size.saturating_sub(1).max(3));
            let ip = std::net::Ipv4Addr::from(base + offset);
            if self.read_kv(&ip_key(ip), linearizable).await?.is_none() {
                return Ok(ip);
            }
        }
        Err(RegistryError::Exhausted("failed to allocate a serviceIP: range is full".into()))
    }

    async fn free_node_port(&self, chosen: &BTreeSet<i64>, linearizable: bool) -> Result<i64, RegistryError> {
        let (lo, hi) = self.config.node_ports;
        for _ in 0..64 {
            let port = i64::from(rand::random_range(lo..=hi));
            if !chosen.contains(&port) && self.read_kv(&port_key(port), linearizable).await?.is_none() {
                return Ok(port);
            }
        }
        Err(RegistryError::Exhausted("failed to allocate a nodePort: range is full".into()))
    }
}

/// A watch over objects of one resource: ADDED/MODIFIED/DELETED in revision order, filtered by
/// selectors (an object that stops matching is DELETED, one that starts matching ADDED).
pub struct ObjectWatch {
    rt: &'static ResourceType,
    stream: WatchStream,
    labels: LabelSelector,
    fields: FieldSelector,
    initial: Vec<Change>,
    after: i64,
}

impl ObjectWatch {
    /// The next batch of changes; `Err(Expired)` when the watch fell behind compaction, `None`
    /// when the store stopped.
    pub async fn next(&mut self) -> Option<Result<Vec<Change>, RegistryError>> {
        if !self.initial.is_empty() {
            return Some(Ok(std::mem::take(&mut self.initial)));
        }
        loop {
            match self.stream.recv().await? {
                WatchMessage::Compacted { compact_revision } => {
                    return Some(Err(too_old(self.after, compact_revision)));
                }
                WatchMessage::Events(events) => {
                    let mut out = Vec::new();
                    for event in events {
                        self.after = event.kv.mod_revision;
                        match self.change(&event) {
                            Ok(Some(change)) => out.push(change),
                            Ok(None) => {}
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    if !out.is_empty() {
                        return Some(Ok(out));
                    }
                }
            }
        }
    }

    /// The revision up to which every change has been delivered, when nothing is pending
    /// (for BOOKMARK events).
    pub fn progress(&self) -> Option<i64> {
        let synced = self.stream.synced_revision();
        (self.initial.is_empty() && self.stream.is_empty()).then_some(synced.max(self.after))
    }

    fn change(&self, event: &trireme_store::types::Event) -> Result<Option<Change>, RegistryError> {
        let old = match &event.prev_kv {
            Some(prev) => Some(decode(prev)?),
            None => None,
        };
        let old_matches = old.as_ref().is_some_and(|o| matches(self.rt, o, &self.labels, &self.fields));
        let revision = event.kv.mod_revision;
        match event.kind {
            EventType::Delete => Ok(old.filter(|_| old_matches).map(|mut object| {
                set_resource_version(&mut object, revision);
                Change { kind: ChangeType::Deleted, object, revision }
            })),
            EventType::Put => {
                let object = decode(&event.kv)?;
                let new_matches = matches(self.rt, &object, &self.labels, &self.fields);
                let kind = match (old_matches, new_matches, event.kv.version == 1) {
                    (_, true, true) | (false, true, false) => ChangeType::Added,
                    (true, true, false) => ChangeType::Modified,
                    (true, false, _) => {
                        // As Kubernetes does: the last state the watcher was entitled to see,
                        // at the revision it stopped matching.
                        let Some(mut object) = old else { return Ok(None) };
                        set_resource_version(&mut object, revision);
                        return Ok(Some(Change { kind: ChangeType::Deleted, object, revision }));
                    }
                    (false, false, _) => return Ok(None),
                };
                Ok(Some(Change { kind, object, revision }))
            }
        }
    }
}

// ---- helpers ------------------------------------------------------------------------------

/// The continue token of a paged list: the revision and the next key (Kubernetes' shape).
#[derive(Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

impl ContinueToken {
    fn new(rv: i64, start: &[u8]) -> ContinueToken {
        ContinueToken { v: "meta.k8s.io/v1".into(), rv, start: String::from_utf8_lossy(start).into_owned() }
    }

    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str) -> Result<ContinueToken, RegistryError> {
        let bad = || RegistryError::BadRequest(format!("continue key is not valid: {token}"));
        let bytes = base64::engine::general_purpose::URL_SAFE.decode(token).map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }
}

fn scope_ns<'a>(rt: &ResourceType, namespace: Option<&'a str>) -> Option<&'a str> {
    if rt.namespaced { namespace } else { None }
}

fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

fn decode(kv: &KeyValue) -> Result<Value, RegistryError> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        RegistryError::Corrupt(format!("stored object at {} is not JSON: {e}", String::from_utf8_lossy(&kv.key)))
    })?;
    set_resource_version(&mut object, kv.mod_revision);
    Ok(object)
}

fn encode(object: &Value) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(object).map_err(|e| RegistryError::Internal(format!("cannot encode object: {e}")))
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(object: &mut Value, revision: i64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

fn strip_resource_version(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
}

/// The revision in `metadata.resourceVersion` (0 if absent).
pub fn object_revision(object: &Value) -> i64 {
    object.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `metadata.name` ("" if absent).
pub fn object_name(object: &Value) -> &str {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

/// `metadata.labels` as a map.
fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// Whether `object` is selected by both selectors.
pub fn matches(rt: &ResourceType, object: &Value, labels: &LabelSelector, fields_sel: &FieldSelector) -> bool {
    (labels.is_empty() || labels.matches(&labels_of(object)))
        && (fields_sel.is_empty() || fields_sel.matches(|f| fields::field_value(rt, object, f)))
}

fn check_fields(rt: &ResourceType, selector: &FieldSelector) -> Result<(), RegistryError> {
    match selector.requirements.iter().find(|r| !fields::supported(rt, &r.field)) {
        Some(r) => Err(RegistryError::BadRequest(fields::unsupported_message(rt, &r.field))),
        None => Ok(()),
    }
}

fn check_type(rt: &ResourceType, object: &Value) -> Result<(), RegistryError> {
    if !object.is_object() {
        return Err(RegistryError::BadRequest("the request body must be a JSON object".into()));
    }
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    if (!api_version.is_empty() && api_version != rt.api_version()) || (!kind.is_empty() && kind != rt.kind) {
        return Err(RegistryError::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        ))
        .with_kind_mismatch(rt, kind));
    }
    Ok(())
}

impl RegistryError {
    fn with_kind_mismatch(self, rt: &ResourceType, kind: &str) -> RegistryError {
        if !kind.is_empty() && kind != rt.kind {
            RegistryError::BadRequest(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            ))
        } else {
            self
        }
    }
}

fn metadata_mut(object: &mut Value) -> Result<&mut serde_json::Map<String, Value>, RegistryError> {
    ensure_object(object, "metadata").ok_or_else(|| RegistryError::BadRequest("metadata must be an object".into()))
}

fn ensure_object<'a>(object: &'a mut Value, field: &str) -> Option<&'a mut serde_json::Map<String, Value>> {
    let map = object.as_object_mut()?;
    let entry = map.entry(field.to_string()).or_insert_with(|| json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    entry.as_object_mut()
}

fn not_found(rt: &ResourceType, name: &str) -> RegistryError {
    RegistryError::NotFound { resource: rt.qualified_plural(), name: name.into() }
}

fn conflict(rt: &ResourceType, name: &str) -> RegistryError {
    RegistryError::Conflict {
        resource: rt.qualified_plural(),
        name: name.into(),
        reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
    }
}

fn too_old(after: i64, compacted: i64) -> RegistryError {
    RegistryError::Expired(format!("too old resource version: {after} ({compacted})"))
}

/// The strategy of a served resource type.
fn strategy(rt: &ResourceType) -> Result<&'static dyn Strategy, RegistryError> {
    kinds::strategy(rt).ok_or_else(|| {
        RegistryError::BadRequest(format!("the server does not know how to handle {}", rt.qualified_plural()))
    })
}

fn rejected(rt: &ResourceType, name: &str, e: Rejected) -> RegistryError {
    match e {
        Rejected::BadRequest(message) => RegistryError::BadRequest(message),
        Rejected::Invalid(causes) => RegistryError::Invalid { kind: rt.qualified_kind(), name: name.into(), causes },
    }
}

fn invalid_service(object: &Value, cause: FieldError) -> RegistryError {
    RegistryError::Invalid { kind: "Service".into(), name: object_name(object).into(), causes: vec![cause] }
}

fn absent(key: &str) -> Compare {
    Compare { op: CompareOp::Equal, target: CompareTarget::Create(0), key: key.as_bytes().to_vec(), range_end: vec![] }
}

fn unchanged(key: &str, mod_revision: i64) -> Compare {
    Compare {
        op: CompareOp::Equal,
        target: CompareTarget::Mod(mod_revision),
        key: key.as_bytes().to_vec(),
        range_end: vec![],
    }
}

fn put_op(key: &str, value: Vec<u8>) -> RequestOp {
    RequestOp::Put(PutRequest { key: key.as_bytes().to_vec(), value, ..Default::default() })
}

fn delete_op(key: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest { key: key.as_bytes().to_vec(), ..Default::default() })
}

fn range_op(key: &str) -> RequestOp {
    RequestOp::Range(RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() })
}

fn first_range(responses: &[ResponseOp], i: usize) -> Option<&KeyValue> {
    match responses.get(i) {
        Some(ResponseOp::Range(r)) => r.kvs.first(),
        _ => None,
    }
}

/// Sets (or replaces) the condition of the same `type` in `status.conditions`.
fn set_condition(object: &mut Value, condition: Value) {
    if !object["status"].is_object() {
        object["status"] = json!({});
    }
    let conditions = object["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != condition["type"]).collect();
    conditions.push(condition);
    object["status"]["conditions"] = Value::Array(conditions);
}

/// Now, as Kubernetes writes timestamps (RFC 3339, whole seconds, UTC).
pub fn now() -> String {
    timestamp_after(0)
}

/// Now, in whole seconds: the precision Kubernetes stores timestamps with, so a status computed
/// now compares equal to the same status read back.
pub fn now_seconds() -> k8s_openapi::jiff::Timestamp {
    use k8s_openapi::jiff::Timestamp;
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn timestamp_after(seconds: i64) -> String {
    let now = jiff::Timestamp::now().as_second() + seconds;
    jiff::Timestamp::from_second(now).map(|t| t.to_string()).unwrap_or_default()
}

/// Five characters from Kubernetes' generateName alphabet (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())])).collect()
}

fn has_status(rt: &ResourceType) -> bool {
    rt.subresources.contains(&"status")
}

/// The object a write proposes, restricted to what `scope` lets it change.
fn merge_scope(rt: &ResourceType, current: &Value, mut proposed: Value, scope: Scope) -> Result<Value, RegistryError> {
    if !proposed.is_object() {
        return Err(RegistryError::BadRequest("the request body must be a JSON object".into()));
    }
    match scope {
        Scope::Main if has_status(rt) => {
            if let Some(map) = proposed.as_object_mut() {
                match current.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            Ok(proposed)
        }
        Scope::Main | Scope::Binding => Ok(proposed),
        Scope::Status => {
            let mut next = current.clone();
            if let Some(map) = next.as_object_mut() {
                match proposed.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            Ok(next)
        }
    }
}

/// Keeps what a client may not change: uid, creation time, deletion state, generation, and
/// the name/namespace (validation reports attempts to change those).
fn carry_identity(current: &Value, next: &mut Value) {
    let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match current.pointer(&format!("/metadata/{field}")) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    for field in ["name", "namespace"] {
        if !meta.contains_key(field)
            && let Some(v) = current.pointer(&format!("/metadata/{field}"))
        {
            meta.insert(field.into(), v.clone());
        }
    }
    meta.remove("selfLink");
    if next.get("apiVersion").is_none()
        && let (Some(map), Some(v)) = (next.as_object_mut(), current.get("apiVersion"))
    {
        map.insert("apiVersion".into(), v.clone());
    }
    if next.get("kind").is_none()
        && let (Some(map), Some(v)) = (next.as_object_mut(), current.get("kind"))
    {
        map.insert("kind".into(), v.clone());
    }
}

fn bump_generation(kind: &dyn Strategy, current: &Value, next: &mut Value) {
    if !kind.tracks_generation() {
        return;
    }
    let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
    let changed = current.get("spec") != next.get("spec")
        || (next.pointer("/metadata/deletionTimestamp").is_some()
            && current.pointer("/metadata/deletionTimestamp").is_none());
    if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("generation".into(), json!(if changed { generation + 1 } else { generation }));
    }
}

/// Whether an update leaves a deleted object with nothing holding it: finalizers gone and,
/// for a pod, no kubelet still to stop it.
fn finalized(kind: &dyn Strategy, object: &Value) -> bool {
    if object.pointer("/metadata/deletionTimestamp").is_none() {
        return false;
    }
    let finalizers = object.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    // Only a graceful deletion (a pod's, waiting for its kubelet) records a period above zero.
    let waits_for_kubelet =
        object.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) > 0;
    !finalizers && !waits_for_kubelet && !kind.deleted_by_controller()
}

fn ip_key(ip: std::net::Ipv4Addr) -> String {
    format!("{}ranges/serviceips/{ip}", keys::ROOT)
}

fn port_key(port: i64) -> String {
    format!("{}ranges/servicenodeports/{port}", keys::ROOT)
}

fn in_cidr(ip: std::net::Ipv4Addr, (net, bits): (std::net::Ipv4Addr, u8)) -> bool {
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn node_ports(object: &Value) -> Vec<i64> {
    object
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports.iter().filter_map(|p| p.get("nodePort").and_then(Value::as_i64)).filter(|p| *p > 0).collect()
        })
        .unwrap_or_default()
}

/// The allocation keys a stored service holds.
fn service_allocations(object: &Value, config: &RegistryConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ip) = object.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|s| s.parse().ok())
        && in_cidr(ip, config.service_cidr)
    {
        out.push(ip_key(ip));
    }
    out.extend(node_ports(object).into_iter().map(port_key));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_refused() {
        let token = ContinueToken::new(42, b"/registry/pods/default/b\0").encode();
        let back = ContinueToken::decode(&token).expect("decodes");
        assert_eq!(back.rv, 42);
        assert_eq!(back.start, "/registry/pods/default/b\0");
        assert!(matches!(ContinueToken::decode("%%%"), Err(RegistryError::BadRequest(_))));
    }

    #[test]
    fn cluster_ips_are_checked_against_the_service_range() {
        let range = RegistryConfig::default().service_cidr;
        assert!(in_cidr("10.96.0.10".parse().expect("ip"), range));
        assert!(in_cidr("10.111.255.254".parse().expect("ip"), range));
        assert!(!in_cidr("10.112.0.1".parse().expect("ip"), range));
    }

    #[test]
    fn generated_names_use_kubernetes_alphabet() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn a_status_update_changes_only_the_status() {
        let rt = resource::find("apps", "v1", "deployments").expect("deployments");
        let current = json!({"metadata": {"name": "a"}, "spec": {"replicas": 1}, "status": {"replicas": 0}});
        let proposed = json!({"metadata": {"name": "a"}, "spec": {"replicas": 5}, "status": {"replicas": 1}});
        let next = merge_scope(rt, &current, proposed.clone(), Scope::Status).expect("merge");
        assert_eq!(next, json!({"metadata": {"name": "a"}, "spec": {"replicas": 1}, "status": {"replicas": 1}}));
        let next = merge_scope(rt, &current, proposed, Scope::Main).expect("merge");
        assert_eq!(next, json!({"metadata": {"name": "a"}, "spec": {"replicas": 5}, "status": {"replicas": 0}}));
    }
}
