//! The node agent's kubelet: registers the node, renews its lease, runs the pods bound to it
//! through a [`runtime::ContainerRuntime`], probes them, reports their status and serves their
//! logs — through whichever master answers (the caller hands it `trireme_client`'s failover
//! client), and on its own when none does.
//!
//! Entry point: [`Kubelet::run`], which fails only with an [`Error`] that stops it from
//! starting. It depends on the Kubernetes API only (k8s-openapi and the `kube` client), never
//! on the masters' store or registry.
//!
//! - [`config`]: who the node is and what it offers.
//! - [`error`]: why a kubelet could not start.
//! - [`node`]: the Node object, its status and its Lease.
//! - [`pods`]: the watch of this node's pods and one [`worker`] per pod, which does what
//!   `plan` decides without I/O (what to start, back-off, probes, stopping) and reports the
//!   status `status` computes.
//! - [`spec`]: a container's environment, limits and mounts from the pod spec.
//! - [`probe`]: liveness, readiness and startup probes.
//! - [`events`]: the Events `kubectl describe pod` shows.
//! - [`server`]: the HTTPS endpoint the API server proxies `kubectl logs` to.
//! - [`runtime`]: the container runtime interface, its errors ([`runtime::RuntimeError`]), the
//!   process runtime and the Docker runtime.
//! - [`helper`]: the container shim and the built-in demo images (run as `trireme shim|image`).

pub mod config;
pub mod error;
pub mod events;
pub mod helper;
pub mod node;
mod plan;
pub mod pods;
pub mod probe;
pub mod runtime;
pub mod server;
pub mod spec;
mod status;
pub mod worker;

use std::sync::Arc;

use kube::Client;
use tokio_util::sync::CancellationToken;

pub use config::Capacity;
pub use config::KubeletConfig;
pub use error::Error;

use crate::runtime::ContainerRuntime;

/// A kubelet: everything one node runs for its pods.
pub struct Kubelet {
    config: KubeletConfig,
    client: Client,
    runtime: Arc<dyn ContainerRuntime>,
}

impl Kubelet {
    /// A kubelet for the node `config` describes, talking to the masters through `client` and
    /// running pods with `runtime`.
    pub fn new(config: KubeletConfig, client: Client, runtime: Arc<dyn ContainerRuntime>) -> Kubelet {
        Kubelet { config, client, runtime }
    }

    /// Runs until `shutdown`: registers the node (retrying until a master answers), then
    /// renews the lease, posts status, runs pods and serves logs. On shutdown the pods keep
    /// running; a kubelet started again adopts them.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Kubelet { config, client, runtime } = self;
        config.validate().map_err(Error::Config)?;
        std::fs::create_dir_all(&config.root_dir)
            .map_err(|source| Error::RootDir { path: config.root_dir.clone(), source })?;
        let address = std::net::SocketAddr::new(config.node_ip, config.port);
        let listen_failed = |source| Error::Listen { address, source };
        let listener = tokio::net::TcpListener::bind(address).await.map_err(listen_failed)?;
        let port = listener.local_addr().map_err(listen_failed)?.port();
        let index: pods::PodIndex = Default::default();
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(ca) = &config.ca_pem {
            let tls = server::tls_config(
                ca,
                vec![config.node_ip.to_string(), config.node_name.clone()],
                config.serving_certificate.as_ref(),
            )?;
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
