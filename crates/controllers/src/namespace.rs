//! The namespace controller: a deleted namespace (`Terminating`) loses everything in it, then
//! goes itself. Pods within their grace period hold it until their kubelets finish them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trireme_registry::RegistryError;
use trireme_registry::informer::Action;
use trireme_registry::informer::ObjectKey;
use trireme_registry::informer::WorkQueue;
use trireme_registry::informer::run_workers;
use trireme_registry::object_name;

use crate::Context;

/// Finishes terminating namespaces until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) {
    let queue: Arc<WorkQueue<String>> = Arc::default();
    let q = queue.clone();
    ctx.informers.namespaces.subscribe(move |e| {
        if e.object.pointer("/metadata/deletionTimestamp").is_some() {
            q.add(object_name(&e.object).to_string());
        }
    });
    ctx.informers.namespaces.synced().await;
    run_workers(queue, 2, stop, move |namespace: String| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &namespace).await }
    })
    .await;
}

async fn reconcile(ctx: &Context, namespace: &str) -> Result<Action, RegistryError> {
    let terminating = ctx
        .informers
        .namespaces
        .get(&ObjectKey::new(None, namespace))
        .is_some_and(|ns| ns.pointer("/metadata/deletionTimestamp").is_some());
    if !terminating {
        return Ok(Action::Await);
    }
    if ctx.registry.finish_namespace(namespace).await? {
        tracing::info!(namespace, "namespace deleted with its contents");
        Ok(Action::Await)
    } else {
        Ok(Action::RequeueAfter(Duration::from_secs(1)))
    }
}
