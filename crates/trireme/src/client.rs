//! The operator commands' connection to a cluster: the etcd API of the first master in
//! `--endpoints` that answers.

use std::time::Duration;

use anyhow::Result;
use anyhow::bail;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one unary request (membership changes wait for a leader and an apply).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `--endpoints` split into URLs; each must be `http://HOST:PORT`.
pub fn endpoints(value: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if urls.is_empty() {
        bail!("--endpoints must list at least one URL");
    }
    for url in &urls {
        if !url.starts_with("http://") {
            bail!("--endpoints: {url:?} must be an http:// URL such as http://127.0.0.1:2379");
        }
    }
    Ok(urls)
}

/// Connects to the first endpoint that accepts a connection; returns its URL and channel.
/// `timeout` bounds every request made on the channel (`None`: streams that may run long).
pub async fn connect(urls: &[String], timeout: Option<Duration>) -> Result<(String, Channel)> {
    let mut errors = Vec::new();
    for url in urls {
        let mut endpoint = Endpoint::from_shared(url.clone())?.connect_timeout(DIAL_TIMEOUT).tcp_nodelay(true);
        if let Some(timeout) = timeout {
            endpoint = endpoint.timeout(timeout);
        }
        match endpoint.connect().await {
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
