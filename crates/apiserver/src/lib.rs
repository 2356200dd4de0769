//! Trireme's Kubernetes API server, served by every master over HTTPS.
//!
//! [`ApiServer::new`] takes the master's store, makes sure the cluster's credentials exist
//! ([`pki`]), and [`ApiServer::serve`] answers the real kubectl: discovery ([`discovery`]),
//! a minimal OpenAPI v3 ([`openapi`]), CRUD, list, watch, patch and subresources ([`rest`],
//! [`watch`]), Tables ([`tables`]) and Status errors ([`status`]). Every object access goes
//! through `trireme_registry`; this crate holds HTTP, TLS and authentication only.

pub mod discovery;
pub mod join;
pub mod kubeconfig;
pub mod nodeproxy;
pub mod openapi;
pub mod pki;
pub mod protobuf;
pub mod rest;
pub mod status;
pub mod tables;
pub mod tokens;
pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::Request;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::Method;
use axum::http::StatusCode;
use axum::http::header;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::any;
use axum::routing::get;
use backon::Retryable;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trireme_registry::Registry;
use trireme_registry::RegistryConfig;
use trireme_store::Store;

pub use crate::pki::ClusterCredentials;
use crate::status::Failure;

/// The largest request body accepted (Kubernetes' limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What an API server needs besides the store.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// Host names and IP addresses the serving certificate is valid for.
    pub hosts: Vec<String>,
    /// Service address ranges.
    pub registry: RegistryConfig,
    /// This master's etcd CA, recorded with the cluster's credentials so that any master can
    /// issue a joining master's certificates (see [`join`]).
    pub etcd_ca: Option<pki::CaPair>,
}

/// State shared by every request.
pub struct ApiState {
    /// The one way to objects.
    pub registry: Registry,
    /// The cluster's credentials (admin token, CA).
    pub credentials: ClusterCredentials,
    /// Ends watches and the accept loop.
    pub shutdown: CancellationToken,
    /// Issues and verifies service-account tokens.
    pub tokens: tokens::TokenSigner,
    /// Passes `kubectl logs` on to kubelets.
    pub kubelets: nodeproxy::KubeletClient,
}

/// A master's Kubernetes API server. Cloning shares its state (one per listener).
#[derive(Clone)]
pub struct ApiServer {
    state: Arc<ApiState>,
    tls: Arc<rustls::ServerConfig>,
}

impl ApiServer {
    /// Prepares the API server of the master owning `store`: loads (or, on a new cluster,
    /// creates) the cluster credentials, issues this master's serving certificate and makes
    /// sure the system namespaces exist.
    pub async fn new(store: Store, config: ApiConfig, shutdown: CancellationToken) -> Result<ApiServer, pki::PkiError> {
        let credentials = ClusterCredentials::ensure(&store, config.etcd_ca.as_ref()).await?;
        let tls = credentials.server_config(&config.hosts)?;
        let registry = Registry::new(store, config.registry);
        if let Err(e) = registry.bootstrap().await {
            tracing::warn!(error = %e, "could not create the system namespaces yet");
        }
        let tokens = tokens::TokenSigner::from_pem(&credentials.service_account_key_pem)
            .map_err(|e| pki::PkiError::Tokens(e.to_string()))?;
        let kubelets = nodeproxy::KubeletClient::new(&credentials)?;
        let state = Arc::new(ApiState { registry, credentials, shutdown, tokens, kubelets });
        Ok(ApiServer { state, tls })
    }

    /// [`ApiServer::new`], retried with [`trireme_registry::retry::BACKOFF`] until it
    /// succeeds: on a new cluster the credentials can be created only once the store takes
    /// writes. `None` at `shutdown`.
    pub async fn when_ready(store: Store, config: ApiConfig, shutdown: CancellationToken) -> Option<ApiServer> {
        let attempts = (|| ApiServer::new(store.clone(), config.clone(), shutdown.clone()))
            .retry(trireme_registry::retry::BACKOFF)
            .notify(|e, _| tracing::info!(error = %e, "Kubernetes API not ready yet; retrying"));
        tokio::select! {
            () = shutdown.cancelled() => None,
            // The backoff has no limit: the retries end only in a server.
            started = attempts => started.ok(),
        }
    }

    /// Serves HTTPS on every listener until the shutdown token fires; the first listener to
    /// fail ends them all.
    pub async fn serve_all(self, listeners: Vec<TcpListener>) -> std::io::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for listener in listeners {
            tasks.spawn(self.clone().serve(listener));
        }
        while let Some(ended) = tasks.join_next().await {
            ended.map_err(std::io::Error::other)??;
        }
        Ok(())
    }

    /// The cluster's credentials (for writing a kubeconfig).
    pub fn credentials(&self) -> &ClusterCredentials {
        &self.state.credentials
    }

    /// The routes, without TLS (tests can drive them directly).
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves HTTPS on `listener` until the shutdown token fires.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let app = self.router();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let shutdown = self.state.shutdown.clone();
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let identity = ClientIdentity::of(tls.get_ref().1);
                let app = tower::ServiceExt::map_request(
                    app,
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        if let Some(identity) = &identity {
                            request.extensions_mut().insert(identity.clone());
                        }
                        request
                    },
                );
                let service = TowerToHyperService::new(app);
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                tokio::select! {
                    result = connection => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }
}

fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/version", get(|| async { rest::json_response(StatusCode::OK, &discovery::version()) }))
        .route("/livez", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(join::CACERTS_PATH, get(join::cacerts))
        .route(join::JOIN_PATH, axum::routing::post(join::join))
        .route("/api", get(|headers: HeaderMap| async move { discovery_root(&headers, true) }))
        .route("/apis", get(|headers: HeaderMap| async move { discovery_root(&headers, false) }))
        .route("/api/{*rest}", any(api_rest))
        .route("/apis/{*rest}", any(api_rest))
        .route("/openapi/v3", get(|| async { rest::json_response(StatusCode::OK, &openapi::root()) }))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .fallback(|| async { Failure::no_route() })
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Who a client certificate signed by the cluster CA says its holder is: the subject's common
/// name is the user, its organizations the groups (Kubernetes' x509 authenticator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

impl ClientIdentity {
    /// The identity in the client certificate of `connection`, if it presented one (rustls
    /// verified it against the cluster CA during the handshake).
    fn of(connection: &rustls::ServerConnection) -> Option<ClientIdentity> {
        let cert = connection.peer_certificates()?.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().ok().map(str::to_string);
        let user = parsed.subject().iter_common_name().next().and_then(text)?;
        let groups = parsed.subject().iter_organization().filter_map(text).collect();
        Some(ClientIdentity { user, groups })
    }
}

/// Requests need a client certificate of the cluster CA, the admin bearer token or a current
/// service-account token, except the health, version and join endpoints.
async fn authenticate(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    // Joining hosts bring a join token instead (checked by `join`).
    let open = matches!(
        request.uri().path(),
        "/livez" | "/readyz" | "/healthz" | "/version" | "/version/" | join::CACERTS_PATH | join::JOIN_PATH
    );
    if open || request.extensions().get::<ClientIdentity>().is_some() {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        Some(token) if constant_time_eq(token.as_bytes(), state.credentials.admin_token.as_bytes()) => {
            next.run(request).await
        }
        Some(token) if service_account_is_current(&state, token).await => next.run(request).await,
        _ => Failure::unauthorized().into_response(),
    }
}

/// Whether `token` is a valid service-account token whose account still exists (a deleted and
/// recreated account has another uid, so its old tokens stop working).
async fn service_account_is_current(state: &ApiState, token: &str) -> bool {
    let now = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    )
    .unwrap_or(i64::MAX);
    let Ok(account) = state.tokens.verify(token, now) else { return false };
    let Some(rt) = trireme_model::resource::find("", "v1", "serviceaccounts") else { return false };
    let read = trireme_model::version::ReadAt::Any;
    match state.registry.get(rt, Some(&account.namespace), &account.name, read).await {
        Ok(sa) => sa.pointer("/metadata/uid").and_then(serde_json::Value::as_str) == Some(account.uid.as_str()),
        Err(_) => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let store = state.registry.store();
    match tokio::time::timeout(Duration::from_secs(2), store.read_barrier()).await {
        Ok(Ok(())) => "ok".into_response(),
        Ok(Err(e)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("[-]etcd failed: {e}\nreadyz check failed\n")).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "[-]etcd failed: timed out\nreadyz check failed\n").into_response(),
    }
}

fn discovery_root(headers: &HeaderMap, legacy: bool) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("as=APIGroupDiscoveryList") {
        let body = serde_json::to_vec(&discovery::aggregated(legacy)).unwrap_or_default();
        return (StatusCode::OK, [(header::CONTENT_TYPE, discovery::AGGREGATED_V2)], body).into_response();
    }
    let doc = if legacy { discovery::api_versions() } else { discovery::api_groups() };
    rest::json_response(StatusCode::OK, &doc)
}

async fn openapi_document(Path(path): Path<String>) -> Response {
    match openapi::group_version(path.trim_matches('/')) {
        Some(doc) => rest::json_response(StatusCode::OK, &doc),
        None => Failure::no_route().into_response(),
    }
}

/// `/api/...` (the legacy core group) and `/apis/...` (named groups).
async fn api_rest(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: axum::http::Uri,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let legacy = uri.path().starts_with("/api/");
    serve_rest(state, legacy, method, rest, query, headers, body).await
}

async fn serve_rest(
    state: Arc<ApiState>,
    legacy: bool,
    method: Method,
    rest: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return Failure::too_large(MAX_BODY).into_response(),
    };
    rest::serve(state, legacy, method, rest, query, headers, body).await
}
