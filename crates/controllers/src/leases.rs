//! The leader Leases: `kube-system/kube-scheduler` and `kube-system/kube-controller-manager`
//! name the master that runs the scheduler and the controllers, so `kubectl get lease -n
//! kube-system` shows who leads. They are informational: leadership itself is Raft's, and
//! every write of the term is fenced.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use trireme_model::kinds::Leases;
use trireme_registry::RegistryError;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;

use crate::Context;

/// How often the Leases are renewed.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// The Leases this master holds while it leads.
const LEASES: &[&str] = &["kube-scheduler", "kube-controller-manager"];

/// Kubernetes' MicroTime: now, to the microsecond.
fn micro_now() -> MicroTime {
    let now = Timestamp::now();
    MicroTime(Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now))
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

async fn renew(ctx: &Context, name: &str, acquired: &MicroTime) -> Result<(), RegistryError> {
    let identity = ctx.config.identity.clone();
    let options = WriteOptions { field_manager: Some("trireme-leader".into()), ..Default::default() };
    let renew = |lease: &mut Lease| {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(identity.as_str()) {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(acquired.clone());
        }
        spec.holder_identity = Some(identity.clone());
        spec.lease_duration_seconds = Some(15);
        spec.renew_time = Some(micro_now());
    };
    let renewed =
        ctx.registry.update_object::<Leases>(Some("kube-system"), name, Scope::Main, &options, renew, None).await;
    match renewed {
        Ok(_) => Ok(()),
        Err(RegistryError::NotFound { .. }) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("kube-system".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity),
                    lease_duration_seconds: Some(15),
                    acquire_time: Some(acquired.clone()),
                    renew_time: Some(micro_now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match ctx.registry.create_object::<Leases>(&lease, &WriteOptions::default()).await {
                Ok(_) | Err(RegistryError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}
