//! The operator commands' connection to a cluster: the etcd API of the first master in
//! `--endpoints` that answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use tonic::transport::Channel;
use tonic::transport::Endpoint;
use trireme_tls::config::TlsFiles;
use trireme_tls::connect::Connector;

const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one unary request (membership changes wait for a leader and an apply).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// etcdctl's TLS flags, for `https://` endpoints.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// CA that signs the masters' client-port certificates.
    #[arg(long, global = true, env = "TRIREME_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Client certificate to present (PEM).
    #[arg(long, global = true, env = "TRIREME_CERT")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, global = true, env = "TRIREME_KEY")]
    pub key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS to dial `urls` with: `None` when every one is `http://`.
    pub fn config(&self, urls: &[String]) -> Result<Option<Arc<rustls::ClientConfig>>> {
        let files = TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            trusted_ca: self.cacert.clone(),
            client_cert_auth: false,
        };
        if self.cert.is_some() != self.key.is_some() {
            bail!("--cert and --key go together");
        }
        if !urls.iter().any(|u| u.starts_with("https://")) {
            return Ok(None);
        }
        if files.trusted_ca.is_none() {
            bail!(
                "--endpoints: https:// endpoints need --cacert (and --cert and --key if the masters ask for a client certificate)"
            );
        }
        Ok(Some(files.client_config().context("--cacert/--cert/--key")?))
    }
}

/// `--endpoints` split into URLs; each must be `http://HOST:PORT` or `https://HOST:PORT`.
pub fn endpoints(value: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if urls.is_empty() {
        bail!("--endpoints must list at least one URL");
    }
    for url in &urls {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            bail!("--endpoints: {url:?} must be an http:// or https:// URL such as https://127.0.0.1:2379");
        }
    }
    Ok(urls)
}

/// Connects to the first endpoint that accepts a connection; returns its URL and channel.
/// `timeout` bounds every request made on the channel (`None`: streams that may run long).
/// `tls` dials `https://` endpoints.
pub async fn connect(
    urls: &[String],
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Option<Duration>,
) -> Result<(String, Channel)> {
    let mut errors = Vec::new();
    let connector = Connector::new(tls).connect_timeout(DIAL_TIMEOUT);
    for url in urls {
        let mut endpoint = Endpoint::from_shared(url.clone())?;
        if let Some(timeout) = timeout {
            endpoint = endpoint.timeout(timeout);
        }
        match endpoint.connect_with_connector(connector.clone()).await {
            Ok(channel) => return Ok((url.clone(), channel)),
            Err(e) => errors.push(format!("{url}: {}", error_chain(&e))),
        }
    }
    bail!("no endpoint answered: {}", errors.join("; "))
}

/// An error with its sources, on one line (tonic's top-level message is only "transport error").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
