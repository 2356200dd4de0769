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
//! ReplicaSets, ReplicaSets own Pods, Services own Endpoints and EndpointSlices. Before
//! deleting a dependent whose owner is missing from the caches, the owner is read from the
//! store: a cache that lags behind a fresh owner must not delete its new dependents.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use trireme_model::resource;
use trireme_model::resource::ResourceType;
use trireme_model::version::ReadAt;
use trireme_registry::DeleteOptions;
use trireme_registry::RegistryError;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;
use trireme_registry::informer::Action;
use trireme_registry::informer::Informer;
use trireme_registry::informer::ObjectKey;
use trireme_registry::informer::WorkQueue;
use trireme_registry::informer::run_workers;

use crate::Context;

/// One object the collector looks at: its resource (by index into [`kinds`]) and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Item {
    kind: usize,
    key: ObjectKey,
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", KINDS[self.kind].1, self.key)
    }
}

/// The kinds collected: (group, plural, kind as ownerReferences name it).
const KINDS: &[(&str, &str, &str)] = &[
    ("", "pods", "Pod"),
    ("apps", "replicasets", "ReplicaSet"),
    ("apps", "deployments", "Deployment"),
    ("", "services", "Service"),
    ("", "endpoints", "Endpoints"),
    ("discovery.k8s.io", "endpointslices", "EndpointSlice"),
];

fn kinds(ctx: &Context) -> Vec<(&'static ResourceType, Informer)> {
    let i = &ctx.informers;
    let informers =
        [&i.pods, &i.replica_sets, &i.deployments, &i.services, &i.endpoints, &i.endpoint_slices].map(Clone::clone);
    KINDS
        .iter()
        .zip(informers)
        .filter_map(|((group, plural, _), informer)| resource::find(group, "v1", plural).map(|rt| (rt, informer)))
        .collect()
}

/// The ownerReferences of `object` as (kind, name, uid).
fn owners(object: &Value) -> Vec<(String, String, String)> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|r| {
                    let field = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
                    (field("kind"), field("name"), field("uid"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn uid(object: &Value) -> &str {
    object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default()
}

fn has_finalizer(object: &Value, finalizer: &str) -> bool {
    object.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// Collects garbage until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) {
    let queue: Arc<WorkQueue<Item>> = Arc::default();
    let watched = kinds(&ctx);
    for (index, (_, informer)) in watched.iter().enumerate() {
        let q = queue.clone();
        let all = watched.clone();
        informer.subscribe(move |e| {
            q.add(Item { kind: index, key: ObjectKey::of(&e.object) });
            // An owner that went (or started going) may leave dependents to collect.
            let owner_uid = uid(&e.object).to_string();
            if e.kind == trireme_registry::ChangeType::Deleted
                || e.object.pointer("/metadata/deletionTimestamp").is_some()
            {
                for (dep_index, (_, dep_informer)) in all.iter().enumerate() {
                    for dependent in dep_informer.list() {
                        if owners(&dependent).iter().any(|(_, _, u)| *u == owner_uid) {
                            q.add(Item { kind: dep_index, key: ObjectKey::of(&dependent) });
                        }
                    }
                }
            }
        });
    }
    for (_, informer) in &watched {
        informer.synced().await;
    }
    let watched = Arc::new(watched);
    run_workers(queue, 2, stop, move |item: Item| {
        let (ctx, watched) = (ctx.clone(), watched.clone());
        async move { reconcile(&ctx, &watched, &item).await }
    })
    .await;
}

async fn reconcile(
    ctx: &Context,
    watched: &[(&'static ResourceType, Informer)],
    item: &Item,
) -> Result<Action, RegistryError> {
    let (rt, informer) = &watched[item.kind];
    let Some(object) = informer.get(&item.key) else { return Ok(Action::Await) };
    let namespace = item.key.namespace.as_deref();
    let deleting = object.pointer("/metadata/deletionTimestamp").is_some();

    if deleting && has_finalizer(&object, "foregroundDeletion") {
        let dependents = dependents_of(watched, uid(&object));
        if dependents.is_empty() {
            remove_finalizer(ctx, rt, namespace, &item.key.name, "foregroundDeletion").await?;
            return Ok(Action::Await);
        }
        for (dep_rt, dependent) in dependents {
            if dependent.pointer("/metadata/deletionTimestamp").is_none() {
                delete(ctx, dep_rt, &dependent, Some("Foreground")).await?;
            }
        }
        return Ok(Action::RequeueAfter(Duration::from_secs(1)));
    }
    if deleting && has_finalizer(&object, "orphan") {
        let owner_uid = uid(&object).to_string();
        for (dep_rt, dependent) in dependents_of(watched, &owner_uid) {
            let dep_ns = dependent.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string);
            let name = trireme_registry::object_name(&dependent).to_string();
            let released = ctx
                .registry
                .update_with(
                    dep_rt,
                    dep_ns.as_deref(),
                    &name,
                    Scope::Main,
                    &WriteOptions::default(),
                    |current| {
                        let mut next = current.clone();
                        if let Some(refs) = next.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut)
                        {
                            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid.as_str()));
                        }
                        Ok(next)
                    },
                    None,
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

    let refs = owners(&object);
    if refs.is_empty() || deleting {
        return Ok(Action::Await);
    }
    let mut live = 0;
    let mut waiting_foreground = false;
    for (kind, name, owner_uid) in &refs {
        let Some((owner_rt, owner_informer)) = watched.iter().find(|(rt, _)| rt.kind == kind.as_str()) else {
            live += 1; // An owner of a kind the collector does not watch is assumed alive.
            continue;
        };
        let cached = owner_informer.get(&ObjectKey::new(namespace.filter(|_| owner_rt.namespaced), name));
        let owner = match cached.filter(|o| uid(o) == owner_uid) {
            Some(o) => Some((*o).clone()),
            None => {
                // Not in the cache: ask the store before concluding the owner is gone.
                match ctx.registry.get(owner_rt, namespace, name, ReadAt::Latest).await {
                    Ok(o) if uid(&o) == owner_uid => Some(o),
                    Ok(_) | Err(RegistryError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                }
            }
        };
        if let Some(owner) = owner {
            live += 1;
            waiting_foreground |=
                owner.pointer("/metadata/deletionTimestamp").is_some() && has_finalizer(&owner, "foregroundDeletion");
        }
    }
    if live == 0 {
        tracing::info!(object = %item, "owner gone: deleting dependent");
        delete(ctx, rt, &object, Some("Background")).await?;
    } else if waiting_foreground {
        delete(ctx, rt, &object, Some("Foreground")).await?;
    }
    Ok(Action::Await)
}

fn dependents_of(
    watched: &[(&'static ResourceType, Informer)],
    owner_uid: &str,
) -> Vec<(&'static ResourceType, Arc<Value>)> {
    watched
        .iter()
        .flat_map(|(rt, informer)| {
            informer
                .list()
                .into_iter()
                .filter(|d| owners(d).iter().any(|(_, _, u)| u == owner_uid))
                .map(|d| (*rt, d))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn delete(
    ctx: &Context,
    rt: &'static ResourceType,
    object: &Value,
    policy: Option<&str>,
) -> Result<(), RegistryError> {
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = trireme_registry::object_name(object);
    let options = DeleteOptions {
        propagation_policy: policy.map(str::to_string),
        preconditions: Some(trireme_registry::Preconditions {
            uid: Some(uid(object).to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match ctx.registry.delete(rt, namespace, name, &options).await {
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
        .update_with(
            rt,
            namespace,
            name,
            Scope::Main,
            &WriteOptions::default(),
            |current| {
                let mut next = current.clone();
                if let Some(list) = next.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
                    list.retain(|f| f != finalizer);
                }
                if next.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(Vec::is_empty) {
                    next["metadata"]["finalizers"] = json!(null);
                    if let Some(meta) = next["metadata"].as_object_mut() {
                        meta.remove("finalizers");
                    }
                }
                Ok(next)
            },
            None,
        )
        .await;
    match result {
        Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_references_are_read_as_kind_name_and_uid() {
        let pod = json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "web-1", "uid": "u1", "controller": true}]}});
        assert_eq!(owners(&pod), vec![("ReplicaSet".to_string(), "web-1".to_string(), "u1".to_string())]);
        assert!(owners(&json!({"metadata": {}})).is_empty());
        assert!(has_finalizer(&json!({"metadata": {"finalizers": ["orphan"]}}), "orphan"));
    }
}
