//! The namespace controller: a deleted namespace (`Terminating`) loses everything in it, then
//! goes itself. Pods within their grace period hold it until their kubelets finish them.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trireme_registry::RegistryError;
use trireme_registry::controller::Controller;
use trireme_registry::informer::ObjectKey;
use trireme_registry::workqueue::Action;

use crate::Context;
use crate::util;

/// Finishes terminating namespaces until `stop`.
pub fn run(ctx: Context, stop: CancellationToken) -> impl Future<Output = ()> + Send {
    let controller = Controller::new("namespace-controller")
        .workers(2)
        .watches(&ctx.informers.namespaces, |e| util::terminating(&e.object.metadata).then(|| e.key()));
    controller.run(stop, move |key: ObjectKey| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &key.name).await }
    })
}

async fn reconcile(ctx: &Context, namespace: &str) -> Result<Action, RegistryError> {
    let terminating = ctx
        .informers
        .namespaces
        .get(&ObjectKey::new(None, namespace))
        .is_some_and(|ns| util::terminating(&ns.metadata));
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
