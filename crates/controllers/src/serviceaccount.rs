//! The ServiceAccount controller: every namespace has a `default` ServiceAccount.

use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use trireme_model::resource;
use trireme_registry::RegistryError;
use trireme_registry::WriteOptions;
use trireme_registry::informer::Action;
use trireme_registry::informer::ObjectKey;
use trireme_registry::informer::WorkQueue;
use trireme_registry::informer::run_workers;
use trireme_registry::object_name;

use crate::Context;

/// Keeps a `default` ServiceAccount in every live namespace until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) {
    let queue: Arc<WorkQueue<String>> = Arc::default();
    let q = queue.clone();
    ctx.informers.namespaces.subscribe(move |e| q.add(object_name(&e.object).to_string()));
    let q = queue.clone();
    ctx.informers.service_accounts.subscribe(move |e| {
        if object_name(&e.object) == "default"
            && let Some(ns) = e.object.pointer("/metadata/namespace").and_then(|n| n.as_str())
        {
            q.add(ns.to_string());
        }
    });
    ctx.informers.namespaces.synced().await;
    ctx.informers.service_accounts.synced().await;
    run_workers(queue, 2, stop, move |namespace: String| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &namespace).await }
    })
    .await;
}

async fn reconcile(ctx: &Context, namespace: &str) -> Result<Action, RegistryError> {
    let Some(ns) = ctx.informers.namespaces.get(&ObjectKey::new(None, namespace)) else { return Ok(Action::Await) };
    if ns.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(Action::Await);
    }
    if ctx.informers.service_accounts.get(&ObjectKey::new(Some(namespace), "default")).is_some() {
        return Ok(Action::Await);
    }
    let Some(rt) = resource::find("", "v1", "serviceaccounts") else { return Ok(Action::Await) };
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
    match ctx.registry.create(rt, Some(namespace), account, &WriteOptions::default()).await {
        Ok(_) | Err(RegistryError::AlreadyExists { .. }) => Ok(Action::Await),
        // The namespace went away or started terminating meanwhile.
        Err(RegistryError::NotFound { .. } | RegistryError::Forbidden(_)) => Ok(Action::Await),
        Err(e) => Err(e),
    }
}
