//! Health checks: is a master fit to take new connections?

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;
use trireme_proto::etcdserverpb::StatusRequest;
use trireme_proto::etcdserverpb::maintenance_client::MaintenanceClient;

/// How a backend is checked.
#[derive(Clone)]
pub enum Check {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET /readyz` over TLS, verified against the cluster's CA, answers 200 (the Kubernetes
    /// API: it answers 503 while its store has no quorum).
    Readyz(Arc<rustls::ClientConfig>),
    /// The etcd API's `Maintenance.Status` answers and names a leader (a member cut off from its
    /// quorum names none); over TLS with this configuration (the etcd CA and a client
    /// certificate), else plain.
    EtcdStatus(Option<Arc<rustls::ClientConfig>>),
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Check::Tcp => "Tcp",
            Check::Readyz(_) => "Readyz",
            Check::EtcdStatus(_) => "EtcdStatus",
        })
    }
}

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The CA given for the checks holds no usable certificate.
    #[error("the CA for health checks is unusable: {0}")]
    Ca(String),
    /// No TCP connection.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed (a wrong certificate, or not TLS at all).
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// `/readyz` answered something other than 200.
    #[error("/readyz answered {status}: {body}")]
    NotReady {
        /// The HTTP status.
        status: u16,
        /// The start of the body (which check failed).
        body: String,
    },
    /// The etcd API did not answer its status call.
    #[error("etcd status: {0}")]
    Etcd(String),
    /// The member knows no leader.
    #[error("the member has no leader")]
    NoLeader,
    /// The check took longer than allowed.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

impl Check {
    /// A `/readyz` check trusting the CA certificates in `ca_pem` (the kubeconfig's
    /// `certificate-authority-data`, decoded).
    pub fn readyz(ca_pem: &[u8]) -> Result<Check, CheckError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| CheckError::Ca(e.to_string()))?;
            roots.add(cert).map_err(|e| CheckError::Ca(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(CheckError::Ca("no certificate in it".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CheckError::Ca(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Check::Readyz(Arc::new(config)))
    }

    /// Runs the check once against `addr`.
    pub async fn run(&self, addr: SocketAddr) -> Result<(), CheckError> {
        match self {
            Check::Tcp => TcpStream::connect(addr).await.map(drop).map_err(CheckError::Connect),
            Check::Readyz(config) => readyz(config, addr).await,
            Check::EtcdStatus(tls) => etcd_status(addr, tls.clone()).await,
        }
    }
}

async fn readyz(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<(), CheckError> {
    let tcp = TcpStream::connect(addr).await.map_err(CheckError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(CheckError::Tls)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| CheckError::Http(e.to_string()))?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get("/readyz")
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| CheckError::Http(e.to_string()))?;
    let answer = async {
        let response = sender.send_request(request).await.map_err(|e| CheckError::Http(e.to_string()))?;
        let status = response.status();
        if status == hyper::StatusCode::OK {
            return Ok(());
        }
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().replace('\n', "; ");
        Err(CheckError::NotReady { status: status.as_u16(), body })
    }
    .await;
    connection.abort();
    answer
}

async fn etcd_status(addr: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>) -> Result<(), CheckError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| CheckError::Etcd(e.to_string()))?;
    let channel = endpoint
        .connect_with_connector(trireme_tls::connect::Connector::new(tls))
        .await
        .map_err(|e| CheckError::Etcd(e.to_string()))?;
    let status = MaintenanceClient::new(channel)
        .status(StatusRequest {})
        .await
        .map_err(|e| CheckError::Etcd(e.message().to_string()))?
        .into_inner();
    if status.leader == 0 { Err(CheckError::NoLeader) } else { Ok(()) }
}
