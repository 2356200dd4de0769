//! The joining side of `trireme join`: fetching the cluster CA without trusting it, checking it
//! against the token's pin, and asking for certificates over TLS verified with it. Also the
//! etcd-API access the token commands and `trireme init` use on a master's host.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::danger::ServerCertVerified;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::UnixTime;
use rustls::pki_types::pem::PemObject;
use trireme_apiserver::join::JoinRequest;
use trireme_apiserver::join::JoinResponse;
use trireme_apiserver::join::JoinToken;

/// How long one request to a master may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts any server certificate: only for fetching the CA, whose hash is checked against the
/// token before anything is trusted or sent.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `https://host:port` split into what a connection needs.
fn target(server: &str) -> Result<(String, u16)> {
    let uri: http::Uri = server.parse().with_context(|| format!("--server {server:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--server {server:?} must be an https:// URL, such as https://10.0.0.1:6443");
    }
    let host = uri.host().context("--server names no host")?.trim_matches(['[', ']']).to_string();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// One HTTP/1.1 request over TLS with `config`; the status and the body.
async fn request(
    server: &str,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>)> {
    let (host, port) = target(server)?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("connecting to {server}"))?;
        let name = ServerName::try_from(host.clone()).with_context(|| format!("{host}: not a host name"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {server}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let connection = tokio::spawn(connection);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(bearer) = bearer {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"));
        }
        let response = sender.send_request(builder.body(Full::new(Bytes::from(body)))?).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes().to_vec();
        connection.abort();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.with_context(|| format!("{server} did not answer"))?
}

/// The cluster CA served at `server`, accepted only if its hash is the one `token` pins.
pub async fn fetch_pinned_ca(server: &str, token: &JoinToken) -> Result<String> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (status, body) =
        request(server, Arc::new(config), "GET", trireme_apiserver::join::CACERTS_PATH, None, vec![]).await?;
    if status != 200 {
        bail!("{server}{} answered {status}: is it a Trireme master?", trireme_apiserver::join::CACERTS_PATH);
    }
    let pem = String::from_utf8(body).context("the CA served is not text")?;
    let hash = trireme_apiserver::join::ca_hash(&pem).context("the CA served holds no certificate")?;
    if hash != token.ca_hash {
        bail!(
            "the cluster CA at {server} has the hash {hash}, but the token pins {}: refusing to trust it (is --server the right cluster, or is someone in between?)",
            token.ca_hash
        );
    }
    Ok(pem)
}

/// TLS trusting only `ca_pem`.
pub fn trusting(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Presents `token` to the master at `server` (whose CA is `ca_pem`) and returns what it issued.
pub async fn join(server: &str, ca_pem: &str, token: &JoinToken, ask: &JoinRequest) -> Result<JoinResponse> {
    let body = serde_json::to_vec(ask)?;
    let credential = token.credential();
    let (status, body) =
        request(server, trusting(ca_pem)?, "POST", trireme_apiserver::join::JOIN_PATH, Some(&credential), body).await?;
    if status != 200 {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).to_string());
        bail!("{server} refused the join ({status}): {message}");
    }
    serde_json::from_slice(&body).context("reading the join answer")
}

/// A master host's access to the etcd API: its endpoints and the tools' client certificate.
pub struct EtcdAccess {
    pub urls: Vec<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl EtcdAccess {
    /// The access of the master whose data dir is `data_dir` (set up by `trireme init` or
    /// `join`): its `master.yaml` and `pki/`.
    pub fn of_data_dir(data_dir: &Path) -> Result<EtcdAccess> {
        let config = data_dir.join(crate::init::MASTER_CONFIG);
        let text = std::fs::read_to_string(&config).with_context(|| {
            format!("reading {} (is this a master set up by trireme init or join?)", config.display())
        })?;
        let args: crate::master::MasterArgs =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
        let urls: Vec<String> = args
            .advertise_client_urls
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        let pki = crate::pki::EtcdPki::at(&data_dir.join("pki"));
        Ok(EtcdAccess { urls, tls: Some(pki.client_config()?) })
    }

    /// A channel to the first endpoint that answers.
    pub async fn channel(&self) -> Result<tonic::transport::Channel> {
        Ok(crate::client::connect(&self.urls, self.tls.clone(), Some(crate::client::REQUEST_TIMEOUT)).await?.1)
    }
}
