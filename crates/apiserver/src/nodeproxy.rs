//! Requests the API server passes on to a node's kubelet: `pods/log` (`kubectl logs`).
//!
//! The API server finds the pod's node, the node's InternalIP and kubelet port
//! (`status.daemonEndpoints.kubeletEndpoint.Port`), and connects over TLS with a client
//! certificate signed by the cluster CA, which is what the kubelet trusts. Like Kubernetes
//! without `--kubelet-certificate-authority`, it does not verify the kubelet's serving
//! certificate (each kubelet signs its own).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::Issuer;
use rcgen::KeyPair;
use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::danger::ServerCertVerified;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::UnixTime;
use serde_json::Value;
use trireme_model::resource;
use trireme_model::version::ReadAt;
use trireme_registry::Registry;

use crate::pki::ClusterCredentials;
use crate::pki::PkiError;
use crate::rest::Query;
use crate::status::Failure;

/// How the API server talks to kubelets.
#[derive(Clone)]
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    /// A client certificate for this API server, signed by the cluster CA.
    pub fn new(credentials: &ClusterCredentials) -> Result<KubeletClient, PkiError> {
        let ca_key = KeyPair::from_pem(&credentials.ca_key_pem)?;
        let ca_params = crate::pki::ca_params()?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "kube-apiserver-kubelet-client");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
            .with_client_auth_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        Ok(KubeletClient { tls: Arc::new(tls) })
    }

    /// `GET pods/{name}/log`: streams the container's log from its node.
    pub async fn pod_log(
        &self,
        registry: &Registry,
        namespace: &str,
        name: &str,
        query: &Query,
    ) -> Result<Response, Failure> {
        let pods = resource::find("", "v1", "pods").ok_or_else(Failure::no_route)?;
        let nodes = resource::find("", "v1", "nodes").ok_or_else(Failure::no_route)?;
        let pod = registry.get(pods, Some(namespace), name, ReadAt::Latest).await?;
        let containers: Vec<String> = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default())
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        let app_containers: Vec<String> = pod["spec"]["containers"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let container = match query.get("container").filter(|c| !c.is_empty()) {
            Some(c) if containers.contains(c) => c.clone(),
            Some(c) => return Err(Failure::bad_request(format!("container {c} is not valid for pod {name}"))),
            None if app_containers.len() == 1 => app_containers[0].clone(),
            None => {
                return Err(Failure::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    app_containers.join(" ")
                )));
            }
        };
        let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            return Err(Failure::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled yet"
            )));
        };
        let node = registry.get(nodes, None, node_name, ReadAt::Latest).await?;
        let (ip, port) = kubelet_endpoint(&node)
            .ok_or_else(|| Failure::bad_request(format!("node {node_name} does not say where its kubelet listens")))?;
        let mut params: Vec<String> = Vec::new();
        for key in ["follow", "previous", "timestamps", "tailLines", "sinceSeconds", "sinceTime", "limitBytes"] {
            if let Some(v) = query.get(key).filter(|v| !v.is_empty()) {
                params.push(format!("{key}={}", encode(v)));
            }
        }
        let path = format!("/containerLogs/{namespace}/{name}/{container}?{}", params.join("&"));
        self.get(&ip, port, &path).await.map_err(|e| {
            let mut f =
                Failure::bad_request(format!("cannot reach the kubelet of node {node_name} at {ip}:{port}: {e}"));
            f.code = StatusCode::SERVICE_UNAVAILABLE;
            f.reason = "ServiceUnavailable";
            f
        })
    }

    /// One GET to a kubelet; a non-2xx answer becomes a Status with its text.
    async fn get(&self, ip: &str, port: u16, path: &str) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
        let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect((ip, port))).await??;
        let server_name = ServerName::try_from(ip.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(server_name, tcp)).await??;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "kubelet connection ended");
            }
        });
        let request = hyper::Request::get(path)
            .header("host", format!("{ip}:{port}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.into_body().collect().await?.to_bytes();
            let message = String::from_utf8_lossy(&body).trim().to_string();
            let mut failure = Failure::bad_request(message);
            if status == StatusCode::NOT_FOUND {
                failure.code = StatusCode::NOT_FOUND;
                failure.reason = "NotFound";
            }
            return Ok(axum::response::IntoResponse::into_response(failure));
        }
        let body = Body::new(response.into_body());
        Ok(Response::builder().status(StatusCode::OK).header("content-type", "text/plain").body(body)?)
    }
}

fn kubelet_endpoint(node: &Value) -> Option<(String, u16)> {
    let status = &node["status"];
    let ip = status["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())?
        .to_string();
    let port = status["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().and_then(|p| u16::try_from(p).ok())?;
    (port != 0).then_some((ip, port))
}

/// Percent-encoding for a query value (RFC 3339 times carry ':' and '+').
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Accepts any kubelet serving certificate (see the module doc), still checking the
/// handshake signatures.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
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
