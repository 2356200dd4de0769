//! The node agent's kubelet: registers the node, renews its lease, runs the pods bound to it
//! through a [`runtime::ContainerRuntime`], probes them, reports their status and serves their
//! logs — through whichever master answers (the caller hands it `trireme_client`'s failover
//! client), and on its own when none does.
//!
//! Entry point: [`Kubelet::run`]. It depends on the Kubernetes API only (k8s-openapi and the
//! `kube` client), never on the masters' store or registry.
//!
//! - [`config`]: who the node is and what it offers.
//! - [`node`]: the Node object, its status and its Lease.
//! - [`pods`]: the watch of this node's pods and one [`worker`] per pod.
//! - [`spec`]: a container's environment, limits and mounts from the pod spec.
//! - [`probe`]: liveness, readiness and startup probes.
//! - [`events`]: the Events `kubectl describe pod` shows.
//! - [`server`]: the HTTPS endpoint the API server proxies `kubectl logs` to.
//! - [`runtime`]: the container runtime interface, the process runtime and the Docker runtime.
//! - [`helper`]: the container shim and the built-in demo images (run as `trireme shim|image`).

pub mod config;
pub mod events;
pub mod helper;
pub mod node;
pub mod pods;
pub mod probe;
pub mod runtime;
pub mod server;
pub mod spec;
pub mod worker;

use std::sync::Arc;

use kube::Client;
use tokio_util::sync::CancellationToken;

pub use config::Capacity;
pub use config::KubeletConfig;

use crate::runtime::ContainerRuntime;

/// A kubelet: everything one node runs for its pods.
pub struct Kubelet {
    config: KubeletConfig,
    client: Client,
    runtime: Arc<dyn ContainerRuntime>,
}

impl Kubelet {
    pub fn new(config: KubeletConfig, client: Client, runtime: Arc<dyn ContainerRuntime>) -> Kubelet {
        Kubelet { config, client, runtime }
    }

    /// Runs until `shutdown`: registers the node (retrying until a master answers), then
    /// renews the lease, posts status, runs pods and serves logs. On shutdown the pods keep
    /// running; a kubelet started again adopts them.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Kubelet { config, client, runtime } = self;
        config.validate().map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&config.root_dir)?;
        let listener = tokio::net::TcpListener::bind((config.node_ip, config.port))
            .await
            .map_err(|e| anyhow::anyhow!("--kubelet-port: cannot listen on {}:{}: {e}", config.node_ip, config.port))?;
        let port = listener.local_addr()?.port();
        let index: pods::PodIndex = Default::default();
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(ca) = &config.ca_pem {
            let tls = server::tls_config(ca, vec![config.node_ip.to_string(), config.node_name.clone()])?;
            tasks.spawn(server::serve(listener, tls, runtime.clone(), index.clone(), shutdown.clone()));
        } else {
            tracing::warn!("no cluster CA in the kubeconfig: `kubectl logs` is not served");
        }
        let shared = Arc::new(worker::Shared {
            client: client.clone(),
            runtime,
            events: events::Recorder::new(client.clone(), config.node_name.clone()),
            config: config.clone(),
            shutdown: shutdown.clone(),
        });
        // Pods first: checkpointed pods keep running even if no master answers yet.
        tasks.spawn(pods::run(shared, index));
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            match node::register(&client, &config, port).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register the node yet; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
        tasks.spawn(node::renew_lease(client.clone(), config.clone(), shutdown.clone()));
        tasks.spawn(node::keep_status(client, config, port, shutdown.clone()));
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "a kubelet task failed");
            }
        }
        Ok(())
    }
}
