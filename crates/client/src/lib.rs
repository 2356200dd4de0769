//! A Kubernetes client that talks to whichever master answers: the one client the node agent,
//! the service proxy and the chaos suite use. Entry points: [`configs_from_kubeconfig`], then
//! [`failover_client`]. It depends on no other Trireme crate.
//!
//! One `kube::Client` per master URL sits behind a tower service that sends each request to
//! the current master; when a master does not answer (connection refused, reset, timed out),
//! the request is retried on the next one and that one becomes current. Watches therefore
//! resume on another master from their last resourceVersion (the `kube` watcher does that
//! when a stream ends) and relist only on 410.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use http::Request;
use http::Response;
use kube::Client;
use kube::client::Body;

/// How long a request other than a watch may take on one master before the next is tried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a client over `configs` (one per master, same credentials, different URLs).
pub fn failover_client(configs: Vec<kube::Config>) -> Result<Client, kube::Error> {
    let default_namespace = configs.first().map(|c| c.default_namespace.clone()).unwrap_or_else(|| "default".into());
    let mut masters = Vec::new();
    for mut config in configs {
        config.connect_timeout = Some(Duration::from_secs(2));
        // An idle watch gets a bookmark every 10 s; 30 s of silence means the master is gone
        // (SIGSTOPped, partitioned) and the watch is restarted elsewhere.
        config.read_timeout = Some(Duration::from_secs(30));
        let url = config.cluster_url.to_string();
        masters.push((url, Client::try_from(config)?));
    }
    let service = Failover { masters: Arc::new(masters), current: Arc::new(AtomicUsize::new(0)) };
    Ok(Client::new(service, default_namespace))
}

/// The tower service behind [`failover_client`].
#[derive(Clone)]
struct Failover {
    masters: Arc<Vec<(String, Client)>>,
    current: Arc<AtomicUsize>,
}

impl tower::Service<Request<Body>> for Failover {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let masters = self.masters.clone();
        let current = self.current.clone();
        Box::pin(async move {
            let watch =
                request.uri().query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
            let n = masters.len().max(1);
            let start = current.load(Ordering::Relaxed);
            let (parts, body) = request.into_parts();
            let mut body = Some(body);
            let mut last_error = None;
            for attempt in 0..n {
                let i = (start + attempt) % n;
                let (url, client) = &masters[i];
                // A body that cannot be replayed (a stream) is sent once, to the current master.
                let this_body = match body.as_ref().and_then(Body::try_clone) {
                    Some(copy) => copy,
                    None => match body.take() {
                        Some(b) => b,
                        None => break,
                    },
                };
                let request = Request::from_parts(parts.clone(), this_body);
                let sent = if watch {
                    client.send(request).await
                } else {
                    match tokio::time::timeout(REQUEST_TIMEOUT, client.send(request)).await {
                        Ok(result) => result,
                        Err(_) => {
                            Err(kube::Error::Service(format!("no answer from {url} within {REQUEST_TIMEOUT:?}").into()))
                        }
                    }
                };
                match sent {
                    Ok(response) => {
                        if i != start {
                            let _ = current.compare_exchange(start, i, Ordering::Relaxed, Ordering::Relaxed);
                            tracing::info!(master = %url, "talking to another master");
                        }
                        return Ok(response);
                    }
                    Err(error) => {
                        tracing::debug!(master = %url, %error, "master did not answer");
                        last_error = Some(error);
                    }
                }
            }
            // Nobody answered: start with the next master next time.
            let _ = current.compare_exchange(start, (start + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
            Err(last_error.unwrap_or_else(|| kube::Error::Service("no master configured".into())))
        })
    }
}

/// Why a kubeconfig gave no client configs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The kubeconfig could not be read or does not describe a usable context.
    #[error(transparent)]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A server URL given instead of the kubeconfig's own is not a URL.
    #[error("--server {server}: {source}")]
    Server {
        server: String,
        #[source]
        source: http::uri::InvalidUri,
    },
}

/// Reads a kubeconfig and makes one client config per server URL (the kubeconfig's own
/// server when `servers` is empty).
pub async fn configs_from_kubeconfig(
    path: &std::path::Path,
    servers: &[String],
) -> Result<Vec<kube::Config>, ConfigError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let base = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    if servers.is_empty() {
        return Ok(vec![base]);
    }
    let mut configs = Vec::new();
    for server in servers {
        let mut config = base.clone();
        config.cluster_url = server.parse().map_err(|source| ConfigError::Server { server: server.clone(), source })?;
        configs.push(config);
    }
    Ok(configs)
}
