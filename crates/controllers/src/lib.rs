//! Trireme's control plane: the scheduler and the controllers, run by the master that is Raft
//! leader and by no other.
//!
//! [`ControlPlane::run`] follows the store's leadership. When this master becomes leader at
//! term `T` it builds a registry whose every write is fenced to `T` (the state machine refuses
//! them once leadership has moved, even if this master does not know yet), starts one informer
//! per resource, the scheduler and the controllers, and keeps the `kube-system` Leases
//! `kube-scheduler` and `kube-controller-manager` naming it. When leadership ends, everything
//! stops; the next leader starts from the state in the store, not from memory.
//!
//! Controllers act through `trireme_registry` only, never on store keys.

pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod leases;
pub mod namespace;
pub mod nodelifecycle;
pub mod replicaset;
pub mod serviceaccount;
pub mod util;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;
use trireme_model::kinds::Deployments;
use trireme_model::kinds::EndpointSlices;
use trireme_model::kinds::EndpointsKind;
use trireme_model::kinds::Leases;
use trireme_model::kinds::Namespaces;
use trireme_model::kinds::Nodes;
use trireme_model::kinds::Pods;
use trireme_model::kinds::ReplicaSets;
use trireme_model::kinds::ServiceAccounts;
use trireme_model::kinds::Services;
use trireme_registry::Registry;
use trireme_registry::events::Recorder;
use trireme_registry::informer::Informer;

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// The name this master shows as the holder of the leader Leases.
    pub identity: String,
    /// A node whose Lease is not renewed for this long becomes NotReady/Unknown.
    pub node_monitor_grace: Duration,
    /// How long pods tolerate `node.kubernetes.io/unreachable` before they are evicted.
    pub pod_eviction_timeout: Duration,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            identity: "trireme".into(),
            node_monitor_grace: Duration::from_secs(10),
            pod_eviction_timeout: Duration::from_secs(30),
        }
    }
}

/// The informers of one leadership term, shared by the scheduler and every controller.
#[derive(Clone, Default)]
pub struct Informers {
    /// Pods, also indexed by node ([`BY_NODE`]).
    pub pods: Informer<Pods>,
    pub nodes: Informer<Nodes>,
    pub namespaces: Informer<Namespaces>,
    pub services: Informer<Services>,
    pub endpoints: Informer<EndpointsKind>,
    pub endpoint_slices: Informer<EndpointSlices>,
    pub service_accounts: Informer<ServiceAccounts>,
    pub replica_sets: Informer<ReplicaSets>,
    pub deployments: Informer<Deployments>,
    pub leases: Informer<Leases>,
}

/// The index of pods by `spec.nodeName`.
pub const BY_NODE: &str = "node";

impl Informers {
    fn new() -> Informers {
        let pods = Informer::new().with_index(BY_NODE, |pod: &Pod| {
            pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()).into_iter().collect()
        });
        Informers { pods, ..Default::default() }
    }

    /// Runs every informer until `stop`.
    fn run(&self, tasks: &mut tokio::task::JoinSet<()>, registry: &Registry, stop: &CancellationToken) {
        tasks.spawn(self.pods.clone().run(registry.clone(), stop.clone()));
        tasks.spawn(self.nodes.clone().run(registry.clone(), stop.clone()));
        tasks.spawn(self.namespaces.clone().run(registry.clone(), stop.clone()));
        tasks.spawn(self.services.clone().run(registry.clone(), stop.clone()));
        tasks.spawn(self.endpoints.clone().run(registry.clone(), stop.clone()));
        tasks.spawn(self.endpoint_slices.clone().run(registry.clone(), stop.clone()));
        tasks.spawn(self.service_accounts.clone().run(registry.clone(), stop.clone()));
        tasks.spawn(self.replica_sets.clone().run(registry.clone(), stop.clone()));
        tasks.spawn(self.deployments.clone().run(registry.clone(), stop.clone()));
        tasks.spawn(self.leases.clone().run(registry.clone(), stop.clone()));
    }
}

/// What one leadership term runs with.
#[derive(Clone)]
pub struct Context {
    /// Fenced to the term.
    pub registry: Registry,
    pub informers: Informers,
    pub config: Arc<ControlPlaneConfig>,
}

impl Context {
    /// An event recorder for `component`.
    pub fn recorder(&self, component: &str) -> Recorder {
        Recorder::new(self.registry.clone(), component)
    }
}

/// Runs the scheduler and the controllers whenever this master leads.
pub struct ControlPlane {
    registry: Registry,
    config: Arc<ControlPlaneConfig>,
}

impl ControlPlane {
    /// A control plane over `registry` (unfenced: each term fences its own).
    pub fn new(registry: Registry, config: ControlPlaneConfig) -> ControlPlane {
        ControlPlane { registry, config: Arc::new(config) }
    }

    /// Follows leadership until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut leadership = self.registry.store().leadership();
        loop {
            let term = *leadership.borrow_and_update();
            let Some(term) = term else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = leadership.changed() => if changed.is_err() { return },
                }
                continue;
            };
            tracing::info!(term, "leading: starting the scheduler and the controllers");
            let stop = shutdown.child_token();
            let running = tokio::spawn(lead(self.registry.fenced(term), self.config.clone(), stop.clone()));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = leadership.changed() => {
                        if changed.is_err() || *leadership.borrow() != Some(term) {
                            break;
                        }
                    }
                }
            }
            tracing::info!(term, "leadership over: stopping the scheduler and the controllers");
            stop.cancel();
            let _ = running.await;
            if shutdown.is_cancelled() {
                return;
            }
        }
    }
}

/// Everything one leadership term runs. The scheduler and the controllers are built (and
/// subscribe to the informers) before the informers start, so they see the first lists.
async fn lead(registry: Registry, config: Arc<ControlPlaneConfig>, stop: CancellationToken) {
    let informers = Informers::new();
    let ctx = Context { registry: registry.clone(), informers: informers.clone(), config };
    let mut tasks = tokio::task::JoinSet::new();
    let scheduler = trireme_scheduler::Scheduler::new(
        registry.clone(),
        informers.pods.clone(),
        informers.nodes.clone(),
        ctx.recorder("default-scheduler"),
    );
    tasks.spawn(scheduler.run(stop.clone()));
    tasks.spawn(replicaset::run(ctx.clone(), stop.clone()));
    tasks.spawn(deployment::run(ctx.clone(), stop.clone()));
    tasks.spawn(endpoints::run(ctx.clone(), stop.clone()));
    tasks.spawn(nodelifecycle::run(ctx.clone(), stop.clone()));
    tasks.spawn(serviceaccount::run(ctx.clone(), stop.clone()));
    tasks.spawn(namespace::run(ctx.clone(), stop.clone()));
    tasks.spawn(gc::run(ctx.clone(), stop.clone()));
    tasks.spawn(leases::run(ctx.clone(), stop.clone()));
    informers.run(&mut tasks, &registry, &stop);
    while tasks.join_next().await.is_some() {}
}
