//! The garbage collector: dependents go with their owners.
//!
//! - **Background** (the default): once every owner named in an object's ownerReferences is
//!   gone, the object is deleted.
//! - **Foreground**: an owner deleted with `propagationPolicy=Foreground` carries the
//!   `foregroundDeletion` finalizer; its dependents are deleted first, then the finalizer is
//!   removed and the owner goes.
//! - **Orphan**: an owner deleted with `propagationPolicy=Orphan` carries the `orphan`
//!   finalizer; its dependents lose their reference to it, then the finalizer is removed.
//!
//! Owners and dependents are the kinds the control plane watches: Deployments own
//! ReplicaSets, ReplicaSets own Pods, Services own Endpoints and EndpointSlices. The collector
//! reads only metadata (through each informer's owner index), so a new kind is one more line
//! in [`run`]. Before
//! deleting a dependent whose owner is missing from the caches, the owner is read from the
//! store: a cache that lags behind a fresh owner must not delete its new dependents.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio_util::sync::CancellationToken;
use trireme_model::resource::ResourceType;
use trireme_model::version::ReadAt;
use trireme_registry::ChangeType;
use trireme_registry::DeleteOptions;
use trireme_registry::RegistryError;
use trireme_registry::WriteOptions;
use trireme_registry::controller::Controller;
use trireme_registry::informer::AnyInformer;
use trireme_registry::informer::ObjectKey;
use trireme_registry::workqueue::Action;

use crate::Context;

/// One object the collector looks at: its resource (by index into the watched informers) and
/// key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Item {
    kind: usize,
    key: ObjectKey,
}

/// The informers the collector watches: the kinds that own or are owned.
type Watched = Arc<Vec<Arc<dyn AnyInformer>>>;

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}:{}", self.kind, self.key)
    }
}

fn uid(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or_default()
}

fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// The objects of every watched kind owned by `owner_uid`, found through the owner indexes.
fn dependents_of(watched: &Watched, owner_uid: &str) -> Vec<(usize, ObjectMeta)> {
    watched
        .iter()
        .enumerate()
        .flat_map(|(i, informer)| informer.owned_by(owner_uid).into_iter().map(move |m| (i, m)))
        .collect()
}

/// Collects garbage until `stop`.
pub fn run(ctx: Context, stop: CancellationToken) -> impl Future<Output = ()> + Send {
    let i = &ctx.informers;
    let watched: Watched = Arc::new(vec![
        i.pods.erased(),
        i.replica_sets.erased(),
        i.deployments.erased(),
        i.services.erased(),
        i.endpoints.erased(),
        i.endpoint_slices.erased(),
    ]);
    let mut controller = Controller::new("garbage-collector").workers(2);
    for (index, informer) in watched.iter().enumerate() {
        let all = watched.clone();
        controller = controller.watches_any(informer.as_ref(), move |kind, meta| {
            let mut items = vec![Item { kind: index, key: ObjectKey::of_meta(meta) }];
            // An owner that went (or started going) may leave dependents to collect.
            if kind == ChangeType::Deleted || meta.deletion_timestamp.is_some() {
                items.extend(
                    dependents_of(&all, uid(meta))
                        .into_iter()
                        .map(|(kind, dependent)| Item { kind, key: ObjectKey::of_meta(&dependent) }),
                );
            }
            items
        });
    }
    controller.run(stop, move |item: Item| {
        let (ctx, watched) = (ctx.clone(), watched.clone());
        async move { reconcile(&ctx, &watched, &item).await }
    })
}

async fn reconcile(ctx: &Context, watched: &Watched, item: &Item) -> Result<Action, RegistryError> {
    let informer = &watched[item.kind];
    let rt = informer.resource();
    let Some(meta) = informer.meta(&item.key) else { return Ok(Action::Await) };
    let namespace = item.key.namespace.as_deref();
    let deleting = meta.deletion_timestamp.is_some();

    if deleting && has_finalizer(&meta, "foregroundDeletion") {
        let dependents = dependents_of(watched, uid(&meta));
        if dependents.is_empty() {
            remove_finalizer(ctx, rt, namespace, &item.key.name, "foregroundDeletion").await?;
            return Ok(Action::Await);
        }
        for (kind, dependent) in dependents {
            if dependent.deletion_timestamp.is_none() {
                delete(ctx, watched[kind].resource(), &dependent, Some("Foreground")).await?;
            }
        }
        return Ok(Action::RequeueAfter(Duration::from_secs(1)));
    }
    if deleting && has_finalizer(&meta, "orphan") {
        let owner_uid = uid(&meta).to_string();
        for (kind, dependent) in dependents_of(watched, &owner_uid) {
            let name = dependent.name.as_deref().unwrap_or_default();
            let released = ctx
                .registry
                .update_metadata(
                    watched[kind].resource(),
                    dependent.namespace.as_deref(),
                    name,
                    &WriteOptions::default(),
                    |meta| {
                        if let Some(refs) = meta.owner_references.as_mut() {
                            refs.retain(|r| r.uid != owner_uid);
                        }
                    },
                )
                .await;
            match released {
                Ok(_) | Err(RegistryError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        remove_finalizer(ctx, rt, namespace, &item.key.name, "orphan").await?;
        return Ok(Action::Await);
    }

    let refs = meta.owner_references.clone().unwrap_or_default();
    if refs.is_empty() || deleting {
        return Ok(Action::Await);
    }
    let mut live = 0;
    let mut waiting_foreground = false;
    for owner_ref in &refs {
        let Some(owner_informer) = watched.iter().find(|i| i.resource().kind == owner_ref.kind) else {
            live += 1; // An owner of a kind the collector does not watch is assumed alive.
            continue;
        };
        let owner_rt = owner_informer.resource();
        let owner_key = ObjectKey::new(namespace.filter(|_| owner_rt.namespaced), &owner_ref.name);
        let owner = match owner_informer.meta(&owner_key).filter(|o| uid(o) == owner_ref.uid) {
            Some(o) => Some(o),
            None => {
                // Not in the cache: ask the store before concluding the owner is gone.
                match ctx.registry.get_metadata(owner_rt, namespace, &owner_ref.name, ReadAt::Latest).await {
                    Ok(o) if uid(&o) == owner_ref.uid => Some(o),
                    Ok(_) | Err(RegistryError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                }
            }
        };
        if let Some(owner) = owner {
            live += 1;
            waiting_foreground |= owner.deletion_timestamp.is_some() && has_finalizer(&owner, "foregroundDeletion");
        }
    }
    if live == 0 {
        tracing::info!(object = %item.key, resource = rt.plural, "owner gone: deleting dependent");
        delete(ctx, rt, &meta, Some("Background")).await?;
    } else if waiting_foreground {
        delete(ctx, rt, &meta, Some("Foreground")).await?;
    }
    Ok(Action::Await)
}

async fn delete(
    ctx: &Context,
    rt: &'static ResourceType,
    meta: &ObjectMeta,
    policy: Option<&str>,
) -> Result<(), RegistryError> {
    let name = meta.name.as_deref().unwrap_or_default();
    let options = DeleteOptions {
        propagation_policy: policy.map(str::to_string),
        preconditions: Some(trireme_registry::Preconditions {
            uid: Some(uid(meta).to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match ctx.registry.delete(rt, meta.namespace.as_deref(), name, &options).await {
        Ok(_) | Err(RegistryError::NotFound { .. }) | Err(RegistryError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn remove_finalizer(
    ctx: &Context,
    rt: &'static ResourceType,
    namespace: Option<&str>,
    name: &str,
    finalizer: &str,
) -> Result<(), RegistryError> {
    let result = ctx
        .registry
        .update_metadata(rt, namespace, name, &WriteOptions::default(), |meta| {
            if let Some(list) = meta.finalizers.as_mut() {
                list.retain(|f| f != finalizer);
            }
            if meta.finalizers.as_ref().is_some_and(Vec::is_empty) {
                meta.finalizers = None;
            }
        })
        .await;
    match result {
        Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
