//! The kubelet's HTTPS endpoint, which the API server calls for `kubectl logs`:
//! `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&previous=&sinceSeconds=&sinceTime=&timestamps=&limitBytes=`.
//!
//! Only clients presenting a certificate signed by the cluster CA (the API servers) are
//! served, as with Kubernetes' kubelet client certificates. The kubelet's own serving
//! certificate is self-signed: the API server does not verify it, as Kubernetes does not
//! without `--kubelet-certificate-authority`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use futures::StreamExt;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::pods::PodIndex;
use crate::runtime::ContainerRuntime;
use crate::runtime::LogOptions;

struct ServerState {
    runtime: Arc<dyn ContainerRuntime>,
    pods: PodIndex,
}

/// Why the endpoint's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The cluster CA (from the kubeconfig) is not PEM.
    #[error("the cluster CA is not a PEM certificate: {0}")]
    CaPem(#[source] std::io::Error),
    /// The cluster CA is PEM but not a certificate rustls accepts as a trust anchor.
    #[error("the cluster CA certificate is refused: {0}")]
    CaCertificate(#[source] rustls::Error),
    /// No verifier of client certificates could be built from the cluster CA (none in it, ...).
    #[error("cannot verify client certificates with the cluster CA: {0}")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    /// The kubelet's self-signed serving certificate could not be made.
    #[error("cannot make the kubelet's serving certificate for {hosts:?}: {source}")]
    ServingCertificate {
        hosts: Vec<String>,
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the configuration (protocol versions, the certificate and its key).
    #[error("cannot configure TLS: {0}")]
    Config(#[source] rustls::Error),
    /// The serving certificate files (`--tls-cert-file`, `--tls-private-key-file`) are unusable.
    #[error("the kubelet's serving certificate: {0}")]
    ServingFiles(#[source] trireme_tls::TlsError),
}

/// TLS for the kubelet endpoint: the certificate in `serving` (files, read again when renewed:
/// the one a node gets when it joins) or else a self-signed one for `hosts`; client
/// certificates required and checked against `ca_pem`.
pub fn tls_config(
    ca_pem: &str,
    hosts: Vec<String>,
    serving: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.map_err(TlsError::CaPem)?).map_err(TlsError::CaCertificate)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(TlsError::ClientVerifier)?;
    if let Some((cert, key)) = serving {
        let resolver = trireme_tls::reload::ReloadingCert::new(cert, key).map_err(TlsError::ServingFiles)?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(resolver));
        return Ok(Arc::new(config));
    }
    let serving = |source| TlsError::ServingCertificate { hosts: hosts.clone(), source };
    let key = rcgen::KeyPair::generate().map_err(serving)?;
    let cert =
        rcgen::CertificateParams::new(hosts.clone()).and_then(|params| params.self_signed(&key)).map_err(serving)?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

/// Serves the kubelet endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    runtime: Arc<dyn ContainerRuntime>,
    pods: PodIndex,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .with_state(Arc::new(ServerState { runtime, pods }));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
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
            let service = TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            tokio::select! {
                _ = builder.serve_connection(TokioIo::new(tls), service) => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn text(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

async fn container_logs(
    State(state): State<Arc<ServerState>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let flag = |name: &str| query.get(name).is_some_and(|v| v == "true" || v == "1");
    let uid = {
        let Ok(pods) = state.pods.read() else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "pod index poisoned".into());
        };
        pods.values()
            .find(|p| p.metadata.namespace.as_deref() == Some(&namespace) && p.metadata.name.as_deref() == Some(&pod))
            .and_then(|p| p.metadata.uid.clone())
    };
    let Some(uid) = uid else {
        return text(StatusCode::NOT_FOUND, format!("pod {namespace}/{pod} is not running on this node"));
    };
    let containers = match state.runtime.list_containers().await {
        Ok(list) => list,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut attempts: Vec<_> = containers.into_iter().filter(|c| c.pod.uid == uid && c.name == container).collect();
    attempts.sort_by_key(|c| c.attempt);
    let chosen = if flag("previous") {
        if attempts.len() < 2 {
            return text(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
            );
        }
        attempts.get(attempts.len() - 2)
    } else {
        attempts.last()
    };
    let Some(chosen) = chosen else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"),
        );
    };
    let since = match (query.get("sinceTime"), query.get("sinceSeconds")) {
        (Some(t), _) => t.parse::<jiff::Timestamp>().ok(),
        (None, Some(s)) => s
            .parse::<i64>()
            .ok()
            .and_then(|s| jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_secs(s)).ok()),
        _ => None,
    };
    let options = LogOptions {
        follow: flag("follow"),
        tail_lines: query.get("tailLines").and_then(|v| v.parse::<i64>().ok()).map(|n| n.max(0) as u64),
        since,
        timestamps: flag("timestamps"),
        limit_bytes: query.get("limitBytes").and_then(|v| v.parse().ok()),
    };
    match state.runtime.logs(&chosen.id, &options).await {
        Ok(stream) => Response::builder()
            .header("content-type", "text/plain")
            .body(Body::from_stream(stream.map(|chunk| chunk)))
            .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
