//! `trireme node`: one worker — the kubelet (pods through a container runtime) and the
//! service proxy, talking to whichever master answers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use clap::ValueEnum;
use tokio_util::sync::CancellationToken;
use trireme_kubelet::Capacity;
use trireme_kubelet::Kubelet;
use trireme_kubelet::KubeletConfig;
use trireme_kubelet::runtime::ContainerRuntime;
use trireme_kubelet::runtime::docker::DockerConfig;
use trireme_kubelet::runtime::docker::DockerRuntime;
use trireme_kubelet::runtime::process::ProcessConfig;
use trireme_kubelet::runtime::process::ProcessRuntime;
use trireme_proxy::ProxyConfig;
use trireme_proxy::ServiceProxy;

/// Which container runtime runs the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// Containers are process groups on this machine; every pod gets a loopback IP.
    Process,
    /// Containers run in the local Docker daemon, on a network of the node's own.
    Docker,
}

/// Flags of `trireme node`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The Node's name.
    #[arg(long)]
    pub name: String,
    /// Kubernetes API URLs of the masters, comma-separated [default: the kubeconfig's server].
    #[arg(long, value_delimiter = ',')]
    pub server: Vec<String>,
    /// Kubeconfig with the credentials (and CA) to reach the masters.
    #[arg(long, conflicts_with = "token_file")]
    pub kubeconfig: Option<PathBuf>,
    /// A file holding a bearer token (instead of --kubeconfig); needs --server and
    /// --certificate-authority.
    #[arg(long, requires = "certificate_authority")]
    pub token_file: Option<PathBuf>,
    /// The cluster CA certificate (PEM), with --token-file.
    #[arg(long)]
    pub certificate_authority: Option<PathBuf>,
    /// This node's address: the kubelet and NodePorts listen on it.
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip: IpAddr,
    /// Pod IPs come from this network (process runtime: inside 127.0.0.0/8)
    /// [default: 127.N.M.0/24 derived from --name].
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Container runtime.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Process)]
    pub runtime: RuntimeKind,
    /// Process runtime: map an image to an executable or a directory (NAME=PATH, repeatable).
    #[arg(long = "image", value_name = "NAME=PATH")]
    pub images: Vec<String>,
    /// Docker runtime: the network pods get their IPs on [default: trireme-NAME].
    #[arg(long)]
    pub docker_network: Option<String>,
    /// Docker runtime: the subnet of that network when it is created.
    #[arg(long)]
    pub docker_subnet: Option<String>,
    /// Node state: checkpoints, containers, logs, tokens [default: /var/lib/trireme/NAME].
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    /// The kubelet endpoint's certificate (PEM) [default: a self-signed one].
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Port of the kubelet's HTTPS endpoint (for `kubectl logs`); 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// CPU offered to pods, in cores or millicores (e.g. 2 or 1500m) [default: this machine's].
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory offered to pods (e.g. 4Gi) [default: this machine's].
    #[arg(long)]
    pub memory: Option<String>,
    /// Most pods this node runs.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u64,
    /// Extra Node labels, k=v,...
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Do not listen on Service ClusterIPs (NodePorts only), e.g. where ClusterIPs are not
    /// local addresses.
    #[arg(long)]
    pub no_cluster_ips: bool,
    /// Stop every pod when the node agent stops (as `trireme up` does). By default pods keep
    /// running and a restarted node agent adopts them, as with the kubelet.
    #[arg(long)]
    pub stop_pods_on_exit: bool,
}

/// A pod CIDR inside 127.0.0.0/8 that differs between node names (two nodes sharing a
/// machine need distinct ones; `trireme up` gives each its own explicitly).
fn default_pod_cidr(name: &str) -> String {
    let hash = name.bytes().fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619));
    format!("127.{}.{}.0/24", 100 + (hash % 100), (hash >> 8) % 256)
}

async fn client(args: &NodeArgs) -> Result<(kube::Client, Option<String>)> {
    let configs = if let Some(token_file) = &args.token_file {
        if args.server.is_empty() {
            bail!("--token-file needs --server");
        }
        let ca_path = args.certificate_authority.as_ref().context("--token-file needs --certificate-authority")?;
        let ca = std::fs::read(ca_path).with_context(|| format!("--certificate-authority {}", ca_path.display()))?;
        let token =
            std::fs::read_to_string(token_file).with_context(|| format!("--token-file {}", token_file.display()))?;
        let mut roots = Vec::new();
        for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
            roots.push(cert.context("--certificate-authority: not a PEM certificate")?.to_vec());
        }
        let mut configs = Vec::new();
        for server in &args.server {
            let mut config = kube::Config::new(server.parse().with_context(|| format!("--server {server}"))?);
            config.root_cert = Some(roots.clone());
            config.auth_info.token = Some(token.trim().to_string().into());
            configs.push(config);
        }
        configs
    } else {
        let path = args.kubeconfig.clone().context("give --kubeconfig (or --token-file)")?;
        trireme_client::configs_from_kubeconfig(&path, &args.server)
            .await
            .with_context(|| format!("--kubeconfig {}", path.display()))?
    };
    let ca_pem = configs
        .first()
        .and_then(|c| c.root_cert.as_ref())
        .map(|roots| roots.iter().map(|der| pem("CERTIFICATE", der)).collect::<String>());
    Ok((trireme_client::failover_client(configs)?, ca_pem))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn capacity(args: &NodeArgs) -> Result<Capacity> {
    let mut capacity = Capacity::of_this_machine();
    if let Some(cpu) = &args.cpu {
        capacity.cpu_millis = trireme_kubelet::spec::cpu_millis(cpu).with_context(|| format!("--cpu {cpu:?}"))?;
    }
    if let Some(memory) = &args.memory {
        capacity.memory_bytes = trireme_kubelet::spec::bytes(memory).with_context(|| format!("--memory {memory:?}"))?;
    }
    capacity.pods = args.max_pods;
    Ok(capacity)
}

/// Runs the node until SIGINT or SIGTERM. Pods keep running after it stops; a node started
/// again with the same --root-dir adopts them.
pub async fn run(args: NodeArgs) -> Result<()> {
    let (client, ca_pem) = client(&args).await?;
    let root_dir = args.root_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/trireme").join(&args.name));
    let pod_cidr = args.pod_cidr.clone().unwrap_or_else(|| default_pod_cidr(&args.name));
    let mut labels = BTreeMap::new();
    for label in &args.node_labels {
        let (k, v) = label.split_once('=').with_context(|| format!("--node-labels {label:?}: expected key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let mut images = BTreeMap::new();
    for image in &args.images {
        let (name, path) = image.split_once('=').with_context(|| format!("--image {image:?}: expected NAME=PATH"))?;
        images.insert(name.to_string(), PathBuf::from(path));
    }
    let (runtime, runtime_version): (Arc<dyn ContainerRuntime>, String) = match args.runtime {
        RuntimeKind::Process => {
            let exe = std::env::current_exe().context("locating the trireme binary")?;
            let config = ProcessConfig {
                root_dir: root_dir.join("containers"),
                pod_cidr: pod_cidr.clone(),
                helper: vec![exe.into_os_string()],
                images,
                ..Default::default()
            };
            let runtime = ProcessRuntime::new(config).context("process runtime")?;
            (Arc::new(runtime), format!("process://{}", env!("CARGO_PKG_VERSION")))
        }
        RuntimeKind::Docker => {
            let config = DockerConfig {
                node_name: args.name.clone(),
                network: args.docker_network.clone(),
                subnet: args.docker_subnet.clone(),
                ..Default::default()
            };
            let runtime = DockerRuntime::connect(config).await.context("Docker runtime")?;
            (Arc::new(runtime), "docker://20.10".to_string())
        }
    };
    let config = KubeletConfig {
        node_name: args.name.clone(),
        node_ip: args.node_ip,
        pod_cidr: Some(pod_cidr),
        capacity: capacity(&args)?,
        labels,
        port: args.kubelet_port,
        root_dir,
        ca_pem,
        serving_certificate: args.tls_cert_file.clone().zip(args.tls_private_key_file.clone()),
        runtime_version,
        stop_pods_on_exit: args.stop_pods_on_exit,
        ..Default::default()
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let proxy_config = ProxyConfig { node_ip: args.node_ip, bind_cluster_ips: !args.no_cluster_ips };
    let shutdown = CancellationToken::new();
    let mut kubelet = tokio::spawn(Kubelet::new(config, client.clone(), runtime).run(shutdown.clone()));
    let proxy = tokio::spawn(ServiceProxy::new(client, proxy_config).run(shutdown.clone()));
    tracing::info!(node = %args.name, "node agent running");
    crate::systemd::notify("READY=1");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let early = tokio::select! {
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping the node agent (pods keep running)"); None }
        _ = term.recv() => { tracing::info!("SIGTERM: stopping the node agent (pods keep running)"); None }
        ended = &mut kubelet => Some(ended),
    };
    shutdown.cancel();
    let kubelet = match early {
        Some(ended) => ended,
        None => kubelet.await,
    };
    let proxy = proxy.await;
    kubelet??;
    proxy?.map_err(|e| anyhow::anyhow!("service proxy: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pod_cidrs_are_loopback_and_differ_by_name() {
        let a = default_pod_cidr("node-1");
        let b = default_pod_cidr("node-2");
        assert!(a.starts_with("127.") && a.ends_with(".0/24"), "{a}");
        assert_ne!(a, b);
    }
}
