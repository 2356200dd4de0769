//! [`ServiceProxy`]: watches Services and EndpointSlices and keeps the listeners in line.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::config::ProxyConfig;
use crate::listener::ListenerManager;
use crate::table::desired_table;

/// How long after the first change the listeners are reconciled: changes arriving meanwhile
/// (a rollout touches many slices) are taken in the same pass. Well under the one second a
/// change may take to reach the listeners.
const COALESCE: Duration = Duration::from_millis(50);

/// Why the proxy stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A watch stream ended, which kube's watcher never does on its own.
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

/// One node's service proxy.
pub struct ServiceProxy {
    client: kube::Client,
    config: ProxyConfig,
}

/// What a watch event means for the listeners.
enum Change {
    /// A (re)list is under way; the store still shows the previous state.
    None,
    /// A (re)list completed: the store now holds the whole state.
    Synced,
    /// An object was added, changed or deleted.
    Object,
}

impl Change {
    fn of<K>(event: &watcher::Event<K>) -> Change {
        match event {
            watcher::Event::Init | watcher::Event::InitApply(_) => Change::None,
            watcher::Event::InitDone => Change::Synced,
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => Change::Object,
        }
    }
}

impl ServiceProxy {
    /// A proxy that reads the API through `client`.
    pub fn new(client: kube::Client, config: ProxyConfig) -> Self {
        ServiceProxy { client, config }
    }

    /// Runs until `shutdown`, then closes the listeners and the connections.
    ///
    /// Listeners are first opened once both Services and EndpointSlices are listed (so no
    /// service starts with an empty backend set only because its slices came second). A watch
    /// error is logged and retried with backoff; the listeners keep the last state meanwhile.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProxyError> {
        self.config.validate()?;
        let ProxyConfig { node_ip, bind_cluster_ips } = self.config;

        let (services, services_writer) = reflector::store::<Service>();
        let (slices, slices_writer) = reflector::store::<EndpointSlice>();
        let service_events = watcher(Api::<Service>::all(self.client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(services_writer)
            .map(|event| (Kind::Services, event.map(|e| Change::of(&e))));
        let slice_events = watcher(Api::<EndpointSlice>::all(self.client), watcher::Config::default())
            .default_backoff()
            .reflect(slices_writer)
            .map(|event| (Kind::EndpointSlices, event.map(|e| Change::of(&e))));
        let mut events = futures::stream::select(service_events.boxed(), slice_events.boxed());

        let mut manager = ListenerManager::new(shutdown.clone());
        let (mut services_synced, mut slices_synced) = (false, false);
        let mut due: Option<Instant> = None;
        let result = loop {
            let reconcile_due = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = reconcile_due => {
                    due = None;
                    reconcile(&mut manager, &services, &slices, node_ip, bind_cluster_ips).await;
                }
                event = events.next() => match event {
                    None => break Err(ProxyError::WatchEnded("Service or EndpointSlice")),
                    Some((kind, Err(error))) => {
                        tracing::warn!(resource = kind.name(), %error, "watch failed; retrying with backoff");
                    }
                    Some((kind, Ok(change))) => {
                        if let Change::Synced = change {
                            match kind {
                                Kind::Services => services_synced = true,
                                Kind::EndpointSlices => slices_synced = true,
                            }
                        }
                        let changed = !matches!(change, Change::None);
                        if changed && services_synced && slices_synced && due.is_none() {
                            due = Some(Instant::now() + COALESCE);
                        }
                    }
                },
            }
        };
        manager.close_all().await;
        result
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Services,
    EndpointSlices,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::EndpointSlices => "endpointslices",
        }
    }
}

async fn reconcile(
    manager: &mut ListenerManager,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    node_ip: std::net::IpAddr,
    bind_cluster_ips: bool,
) {
    let services = services.state();
    let slices = slices.state();
    let table =
        desired_table(services.iter().map(AsRef::as_ref), slices.iter().map(AsRef::as_ref), node_ip, bind_cluster_ips);
    tracing::debug!(services = services.len(), slices = slices.len(), listeners = table.routes.len(), "reconciling");
    manager.apply(&table).await;
}
