//! The leader Leases: `kube-system/kube-scheduler` and `kube-system/kube-controller-manager`
//! name the master that runs the scheduler and the controllers, so `kubectl get lease -n
//! kube-system` shows who leads. They are informational: leadership itself is Raft's, and
//! every write of the term is fenced.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use trireme_model::resource;
use trireme_registry::RegistryError;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;

use crate::Context;

/// How often the Leases are renewed.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// The Leases this master holds while it leads.
const LEASES: &[&str] = &["kube-scheduler", "kube-controller-manager"];

/// Kubernetes' MicroTime: RFC 3339 with microseconds.
fn micro_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// Renews the Leases until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) {
    let acquired = micro_now();
    let mut tick = tokio::time::interval(RENEW_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for name in LEASES {
            if let Err(e) = renew(&ctx, name, &acquired).await {
                tracing::debug!(lease = name, error = %e, "renewing the leader lease failed");
            }
        }
    }
}

async fn renew(ctx: &Context, name: &str, acquired: &str) -> Result<(), RegistryError> {
    let Some(rt) = resource::find("coordination.k8s.io", "v1", "leases") else { return Ok(()) };
    let identity = ctx.config.identity.clone();
    let renewed = ctx
        .registry
        .update_with(
            rt,
            Some("kube-system"),
            name,
            Scope::Main,
            &WriteOptions { field_manager: Some("trireme-leader".into()), ..Default::default() },
            |current| {
                let mut next = current.clone();
                let holder = current.pointer("/spec/holderIdentity").and_then(|h| h.as_str()).unwrap_or_default();
                let transitions = current.pointer("/spec/leaseTransitions").and_then(|t| t.as_i64()).unwrap_or(0);
                if holder != identity {
                    next["spec"]["leaseTransitions"] = json!(transitions + 1);
                    next["spec"]["acquireTime"] = json!(acquired);
                }
                next["spec"]["holderIdentity"] = json!(identity);
                next["spec"]["leaseDurationSeconds"] = json!(15);
                next["spec"]["renewTime"] = json!(micro_now());
                Ok(next)
            },
            None,
        )
        .await;
    match renewed {
        Ok(_) => Ok(()),
        Err(RegistryError::NotFound { .. }) => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-system"},
                "spec": {
                    "holderIdentity": identity,
                    "leaseDurationSeconds": 15,
                    "acquireTime": acquired,
                    "renewTime": micro_now(),
                    "leaseTransitions": 0,
                },
            });
            match ctx.registry.create(rt, Some("kube-system"), lease, &WriteOptions::default()).await {
                Ok(_) | Err(RegistryError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}
