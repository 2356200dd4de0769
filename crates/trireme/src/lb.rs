//! `trireme lb`: the cluster's stable address on a host of its own, for networks where a virtual
//! IP cannot be announced — what haproxy is in kubeadm's HA guide, with the health checks that
//! suit Trireme's masters built in. `trireme up` runs the same balancer in its own process.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use tokio_util::sync::CancellationToken;
use trireme_lb::Backend;
use trireme_lb::Balancer;
use trireme_lb::Check;
use trireme_lb::Options;

/// Flags of `trireme lb`.
#[derive(Debug, Args)]
pub struct LbArgs {
    /// Where clients reach the Kubernetes API: IP:PORT (e.g. 0.0.0.0:6443).
    #[arg(long)]
    pub listen_api: Option<SocketAddr>,
    /// The masters' Kubernetes API URLs, comma-separated (https://IP:PORT).
    #[arg(long, value_delimiter = ',')]
    pub api_backends: Vec<String>,
    /// The cluster CA (PEM) that the `/readyz` checks of the Kubernetes API trust (the admin
    /// kubeconfig's certificate-authority-data).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Where clients reach the etcd API: IP:PORT (e.g. 0.0.0.0:2379).
    #[arg(long)]
    pub listen_etcd: Option<SocketAddr>,
    /// The masters' etcd API URLs, comma-separated (http://IP:PORT, or https://IP:PORT with
    /// the TLS flags below).
    #[arg(long, value_delimiter = ',')]
    pub etcd_backends: Vec<String>,
    /// For https:// etcd backends: the CA of their certificates (the health checks verify them).
    #[arg(long)]
    pub etcd_cacert: Option<PathBuf>,
    /// For https:// etcd backends: the client certificate the health checks present.
    #[arg(long)]
    pub etcd_cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long)]
    pub etcd_key: Option<PathBuf>,
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn run(args: LbArgs) -> Result<()> {
    let stop = CancellationToken::new();
    let mut balancers = Vec::new();
    match (args.listen_api, args.api_backends.is_empty()) {
        (Some(listen), false) => {
            let path = args.cacert.as_ref().context("--cacert is needed to check the Kubernetes API's /readyz")?;
            let ca = std::fs::read(path).with_context(|| format!("reading --cacert {}", path.display()))?;
            let check = Check::readyz(&ca).with_context(|| format!("--cacert {}", path.display()))?;
            let backends = backends("--api-backends", &args.api_backends, "https")?;
            balancers.push(Balancer::bind("kubernetes", listen, backends, check, Options::default()).await?);
        }
        (Some(_), true) => bail!("--listen-api needs --api-backends"),
        (None, false) => bail!("--api-backends needs --listen-api"),
        (None, true) => {}
    }
    match (args.listen_etcd, args.etcd_backends.is_empty()) {
        (Some(listen), false) => {
            let tls = etcd_tls(&args)?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let backends = backends("--etcd-backends", &args.etcd_backends, scheme)?;
            let check = Check::EtcdStatus(tls);
            balancers.push(Balancer::bind("etcd", listen, backends, check, Options::default()).await?);
        }
        (Some(_), true) => bail!("--listen-etcd needs --etcd-backends"),
        (None, false) => bail!("--etcd-backends needs --listen-etcd"),
        (None, true) => {}
    }
    if balancers.is_empty() {
        bail!("nothing to balance: give --listen-api with --api-backends, --listen-etcd with --etcd-backends, or both");
    }
    let tasks: Vec<_> = balancers
        .into_iter()
        .map(|b| {
            println!("balancing {} over {} masters", b.local_addr(), b.status().backends().len());
            tokio::spawn(b.run(stop.clone()))
        })
        .collect();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// The TLS the etcd checks dial https:// backends with.
fn etcd_tls(args: &LbArgs) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
    if args.etcd_cert.is_some() != args.etcd_key.is_some() {
        bail!("--etcd-cert and --etcd-key go together");
    }
    if !args.etcd_backends.iter().any(|u| u.starts_with("https://")) {
        return Ok(None);
    }
    if args.etcd_cacert.is_none() {
        bail!(
            "--etcd-backends: https:// backends need --etcd-cacert (and --etcd-cert, --etcd-key if they ask for a client certificate)"
        );
    }
    let files = trireme_tls::config::TlsFiles {
        cert: args.etcd_cert.clone(),
        key: args.etcd_key.clone(),
        trusted_ca: args.etcd_cacert.clone(),
        client_cert_auth: false,
    };
    Ok(Some(files.client_config().context("--etcd-cacert, --etcd-cert, --etcd-key")?))
}

/// `scheme://IP:PORT` URLs as backends named by their address.
fn backends(flag: &str, urls: &[String], scheme: &str) -> Result<Vec<Backend>> {
    urls.iter()
        .map(|url| {
            let rest = url
                .strip_prefix(&format!("{scheme}://"))
                .with_context(|| format!("{flag}: {url:?} must be a {scheme}:// URL"))?;
            let addr: SocketAddr = rest
                .trim_end_matches('/')
                .parse()
                .with_context(|| format!("{flag}: {url:?} must name an IP address and a port"))?;
            Ok(Backend { name: addr.to_string(), addr })
        })
        .collect()
}
