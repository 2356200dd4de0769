//! The ServiceAccount controller: every namespace has a `default` ServiceAccount.

use std::future::Future;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio_util::sync::CancellationToken;
use trireme_model::kinds::ServiceAccounts;
use trireme_registry::RegistryError;
use trireme_registry::WriteOptions;
use trireme_registry::controller::Controller;
use trireme_registry::informer::ObjectKey;
use trireme_registry::workqueue::Action;

use crate::Context;
use crate::util;

/// Keeps a `default` ServiceAccount in every live namespace until `stop`. Keys are namespaces.
pub fn run(ctx: Context, stop: CancellationToken) -> impl Future<Output = ()> + Send {
    let controller = Controller::new("serviceaccount-controller")
        .workers(2)
        .watches(&ctx.informers.namespaces, |e| [e.key()])
        .watches(&ctx.informers.service_accounts, |e| {
            let meta = &e.object.metadata;
            meta.namespace
                .as_deref()
                .filter(|_| meta.name.as_deref() == Some("default"))
                .map(|ns| ObjectKey::new(None, ns))
        });
    controller.run(stop, move |key: ObjectKey| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &key.name).await }
    })
}

async fn reconcile(ctx: &Context, namespace: &str) -> Result<Action, RegistryError> {
    let Some(ns) = ctx.informers.namespaces.get(&ObjectKey::new(None, namespace)) else { return Ok(Action::Await) };
    if util::terminating(&ns.metadata) {
        return Ok(Action::Await);
    }
    if ctx.informers.service_accounts.get(&ObjectKey::new(Some(namespace), "default")).is_some() {
        return Ok(Action::Await);
    }
    let account = ServiceAccount {
        metadata: ObjectMeta { name: Some("default".into()), namespace: Some(namespace.into()), ..Default::default() },
        ..Default::default()
    };
    match ctx.registry.create_object::<ServiceAccounts>(&account, &WriteOptions::default()).await {
        Ok(_) | Err(RegistryError::AlreadyExists { .. }) => Ok(Action::Await),
        // The namespace went away or started terminating meanwhile.
        Err(RegistryError::NotFound { .. } | RegistryError::Forbidden(_)) => Ok(Action::Await),
        Err(e) => Err(e),
    }
}
