//! `trireme master`: one master replica — the store, its peer server and the etcd API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trireme_apiserver::ApiConfig;
use trireme_apiserver::ApiServer;
use trireme_apiserver::kubeconfig::admin_kubeconfig;
use trireme_apiserver::pki::CaPair;
use trireme_controllers::ControlPlane;
use trireme_controllers::ControlPlaneConfig;
use trireme_etcd::EtcdConfig;
use trireme_etcd::EtcdServer;
use trireme_registry::Registry;
use trireme_registry::RegistryConfig;
use trireme_store::Store;
use trireme_store::StoreConfig;
use trireme_store::identity;
use trireme_store::identity::MemberIdentity;
use trireme_store::membership;
use trireme_store::scheduled;
use trireme_store::types::Member;
use trireme_tls::config::TlsFiles;
use trireme_util::duration;
use trireme_util::fs::FileOptions;
use trireme_util::fs::write_atomic;

/// Flags of `trireme master`; names follow etcd's. Every flag can also come from
/// `--config-file` (YAML, same names); a flag given on the command line wins.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MasterArgs {
    /// YAML file with any of these flags as keys.
    #[arg(long)]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// Human-readable name of this member.
    #[arg(long)]
    pub name: Option<String>,
    /// Directory for the Raft log, the state and snapshots [default: NAME.trireme].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for peer traffic [default: http://localhost:2380].
    #[arg(long)]
    pub listen_peer_urls: Option<String>,
    /// This member's peer URLs to advertise to the cluster [default: http://localhost:2380].
    #[arg(long)]
    pub initial_advertise_peer_urls: Option<String>,
    /// URLs to listen on for client (etcd API) traffic [default: http://localhost:2379].
    #[arg(long)]
    pub listen_client_urls: Option<String>,
    /// This member's client URLs to advertise [default: http://localhost:2379].
    #[arg(long)]
    pub advertise_client_urls: Option<String>,
    /// Founding members: name=peer-url,... [default: NAME=ADVERTISED-PEER-URL].
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// `new` to found a cluster, `existing` to join one (after `member add`).
    #[arg(long)]
    pub initial_cluster_state: Option<String>,
    /// Token that makes ids unique to this cluster [default: trireme-cluster].
    #[arg(long)]
    pub initial_cluster_token: Option<String>,
    /// Leader heartbeat period, milliseconds [default: 50].
    #[arg(long)]
    pub heartbeat_interval: Option<u64>,
    /// Election timeout, milliseconds: a follower that misses the leader for 3–4× this starts
    /// an election (openraft adds a leader lease of 2× before the random 1–2×) [default: 150].
    #[arg(long)]
    pub election_timeout: Option<u64>,
    /// Log entries between snapshots [default: 10000].
    #[arg(long)]
    pub snapshot_count: Option<u64>,
    /// Refuse writes (NOSPACE alarm) once the state exceeds this many bytes [default: 8 GiB].
    #[arg(long)]
    pub quota_backend_bytes: Option<u64>,
    /// Largest client request, bytes [default: 1572864].
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// Keep this much history, then compact older revisions: a number of hours, or a duration
    /// such as 30m, 90s, 2h; 0 keeps everything [default: 1h].
    #[arg(long)]
    pub auto_compaction_retention: Option<String>,
    /// URLs to serve the Kubernetes API on (HTTPS) [default: https://localhost:6443].
    #[arg(long)]
    pub listen_api_urls: Option<String>,
    /// This member's Kubernetes API URLs to advertise; the serving certificate covers their
    /// hosts [default: the listen URLs].
    #[arg(long)]
    pub advertise_api_urls: Option<String>,
    /// More names or IP addresses the Kubernetes API's serving certificate covers,
    /// comma-separated: the stable addresses in front of the masters (a balancer, a virtual IP,
    /// a DNS name), as k3s' `--tls-san`.
    #[arg(long)]
    pub tls_san: Option<String>,
    /// Service ClusterIPs are allocated from this IPv4 range [default: 10.96.0.0/12].
    #[arg(long)]
    pub service_cluster_ip_range: Option<String>,
    /// Service NodePorts are allocated from this range [default: 30000-32767].
    #[arg(long)]
    pub service_node_port_range: Option<String>,
    /// A node whose Lease is not renewed for this long is marked NotReady/Unknown and tainted
    /// unreachable: a duration such as 10s or 1m [default: 10s].
    #[arg(long)]
    pub node_monitor_grace_period: Option<String>,
    /// Pods stay on an unreachable node this long (unless they tolerate it for another time)
    /// before they are deleted and replaced elsewhere [default: 30s].
    #[arg(long)]
    pub pod_eviction_timeout: Option<String>,
    /// Connections to peers are made from this local IP address (multi-homed hosts, firewalls
    /// that admit peers by address) [default: the OS picks].
    #[arg(long)]
    pub peer_source_address: Option<String>,
    /// Turn this member's data dir into a one-member cluster that keeps all its data, after the
    /// others were lost for good (quorum loss); add new members with `trireme member add`.
    /// Done once: remove the flag afterwards.
    #[arg(long)]
    #[serde(default)]
    pub force_new_cluster: bool,
    /// While this master leads, save a verified snapshot this often: a duration such as 30m or
    /// 6h [default: off].
    #[arg(long)]
    pub snapshot_interval: Option<String>,
    /// Scheduled snapshots kept; older ones are deleted [default: 5].
    #[arg(long)]
    pub snapshot_retention: Option<usize>,
    /// Where scheduled snapshots go [default: DATA-DIR/snapshots-scheduled].
    #[arg(long)]
    pub snapshot_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://IP:PORT/metrics [default: off].
    #[arg(long)]
    pub listen_metrics_urls: Option<String>,
    /// Certificate the etcd API serves its `https://` client URLs with (PEM).
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// CA that signs the client certificates the etcd API accepts.
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse etcd API clients without a certificate signed by --trusted-ca-file.
    #[arg(long)]
    #[serde(default)]
    pub client_cert_auth: bool,
    /// Certificate for peer traffic, both served on `https://` peer URLs and presented to other
    /// members (valid for server and client authentication).
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// CA that signs the members' peer certificates.
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peers without a certificate signed by --peer-trusted-ca-file.
    #[arg(long)]
    #[serde(default)]
    pub peer_client_cert_auth: bool,
    /// The key of the etcd CA (--peer-trusted-ca-file): with it, any master can issue the
    /// certificates of a master joining with `trireme join`, and the certificates in the key's
    /// directory are renewed within 30 days of expiry.
    #[arg(long)]
    pub etcd_ca_key_file: Option<PathBuf>,
}

impl MasterArgs {
    /// Fills flags not given on the command line from the config file.
    fn merged(self) -> Result<MasterArgs> {
        let Some(path) = &self.config_file else { return Ok(self) };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading --config-file {}", path.display()))?;
        let file: MasterArgs =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing --config-file {}", path.display()))?;
        Ok(MasterArgs {
            config_file: self.config_file.clone(),
            name: self.name.or(file.name),
            data_dir: self.data_dir.or(file.data_dir),
            listen_peer_urls: self.listen_peer_urls.or(file.listen_peer_urls),
            initial_advertise_peer_urls: self.initial_advertise_peer_urls.or(file.initial_advertise_peer_urls),
            listen_client_urls: self.listen_client_urls.or(file.listen_client_urls),
            advertise_client_urls: self.advertise_client_urls.or(file.advertise_client_urls),
            initial_cluster: self.initial_cluster.or(file.initial_cluster),
            initial_cluster_state: self.initial_cluster_state.or(file.initial_cluster_state),
            initial_cluster_token: self.initial_cluster_token.or(file.initial_cluster_token),
            heartbeat_interval: self.heartbeat_interval.or(file.heartbeat_interval),
            election_timeout: self.election_timeout.or(file.election_timeout),
            snapshot_count: self.snapshot_count.or(file.snapshot_count),
            quota_backend_bytes: self.quota_backend_bytes.or(file.quota_backend_bytes),
            max_request_bytes: self.max_request_bytes.or(file.max_request_bytes),
            auto_compaction_retention: self.auto_compaction_retention.or(file.auto_compaction_retention),
            listen_api_urls: self.listen_api_urls.or(file.listen_api_urls),
            advertise_api_urls: self.advertise_api_urls.or(file.advertise_api_urls),
            tls_san: self.tls_san.or(file.tls_san),
            service_cluster_ip_range: self.service_cluster_ip_range.or(file.service_cluster_ip_range),
            service_node_port_range: self.service_node_port_range.or(file.service_node_port_range),
            node_monitor_grace_period: self.node_monitor_grace_period.or(file.node_monitor_grace_period),
            pod_eviction_timeout: self.pod_eviction_timeout.or(file.pod_eviction_timeout),
            peer_source_address: self.peer_source_address.or(file.peer_source_address),
            force_new_cluster: self.force_new_cluster || file.force_new_cluster,
            snapshot_interval: self.snapshot_interval.or(file.snapshot_interval),
            snapshot_retention: self.snapshot_retention.or(file.snapshot_retention),
            snapshot_dir: self.snapshot_dir.or(file.snapshot_dir),
            listen_metrics_urls: self.listen_metrics_urls.or(file.listen_metrics_urls),
            cert_file: self.cert_file.or(file.cert_file),
            key_file: self.key_file.or(file.key_file),
            trusted_ca_file: self.trusted_ca_file.or(file.trusted_ca_file),
            client_cert_auth: self.client_cert_auth || file.client_cert_auth,
            peer_cert_file: self.peer_cert_file.or(file.peer_cert_file),
            peer_key_file: self.peer_key_file.or(file.peer_key_file),
            peer_trusted_ca_file: self.peer_trusted_ca_file.or(file.peer_trusted_ca_file),
            peer_client_cert_auth: self.peer_client_cert_auth || file.peer_client_cert_auth,
            etcd_ca_key_file: self.etcd_ca_key_file.or(file.etcd_ca_key_file),
        })
    }
}

/// A master's settings after defaults and checks.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_peer: Vec<Listen>,
    pub advertise_peer_urls: Vec<String>,
    pub listen_client: Vec<Listen>,
    pub advertise_client_urls: Vec<String>,
    /// Founding members by name with their peer URLs.
    pub initial_cluster: BTreeMap<String, Vec<String>>,
    pub join_existing: bool,
    pub token: String,
    pub heartbeat: Duration,
    pub election: Duration,
    pub snapshot_count: u64,
    pub quota_bytes: u64,
    pub max_request_bytes: usize,
    pub auto_compaction_retention: Option<Duration>,
    pub listen_api: Vec<SocketAddr>,
    pub advertise_api_urls: Vec<String>,
    /// Extra names and addresses for the API's serving certificate.
    pub tls_sans: Vec<String>,
    pub registry: RegistryConfig,
    pub node_monitor_grace: Duration,
    pub pod_eviction_timeout: Duration,
    pub peer_source_address: Option<std::net::IpAddr>,
    pub force_new_cluster: bool,
    /// Scheduled snapshots, if enabled.
    pub snapshots: Option<scheduled::ScheduleConfig>,
    pub listen_metrics: Option<SocketAddr>,
    /// What `https://` client URLs serve with (`--cert-file` and friends).
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// What `https://` peer URLs serve with (`--peer-cert-file` and friends).
    pub peer_server_tls: Option<Arc<rustls::ServerConfig>>,
    /// What `https://` peers are dialled with.
    pub peer_client_tls: Option<Arc<rustls::ClientConfig>>,
    /// The etcd CA with its key (--etcd-ca-key-file), to issue joining masters' certificates.
    pub etcd_ca: Option<CaPair>,
    /// The directory of the etcd CA's key: its certificates are renewed there.
    pub pki_dir: Option<PathBuf>,
}

/// An address to listen on, and whether TLS is served there (its URL is `https://`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// The TLS a master serves and dials with, from etcd's flags. The URLs' schemes decide where
/// TLS is used; an `https://` URL without the files it needs is refused, naming the flags.
struct MasterTls {
    client: Option<Arc<rustls::ServerConfig>>,
    peer_server: Option<Arc<rustls::ServerConfig>>,
    peer_client: Option<Arc<rustls::ClientConfig>>,
}

impl MasterTls {
    /// etcd's `--cert-file` … and `--peer-cert-file` … flags of `args`.
    fn files(args: &MasterArgs) -> (TlsFiles, TlsFiles) {
        let client = TlsFiles {
            cert: args.cert_file.clone(),
            key: args.key_file.clone(),
            trusted_ca: args.trusted_ca_file.clone(),
            client_cert_auth: args.client_cert_auth,
        };
        let peer = TlsFiles {
            cert: args.peer_cert_file.clone(),
            key: args.peer_key_file.clone(),
            trusted_ca: args.peer_trusted_ca_file.clone(),
            client_cert_auth: args.peer_client_cert_auth,
        };
        (client, peer)
    }

    fn new(
        client: TlsFiles,
        peer: TlsFiles,
        client_https: bool,
        peer_https: bool,
        peers_https: bool,
    ) -> Result<MasterTls> {
        client.validate("--")?;
        peer.validate("--peer-")?;
        if client_https && client.cert.is_none() {
            bail!("--listen-client-urls: an https:// URL needs --cert-file and --key-file");
        }
        if peer_https && peer.cert.is_none() {
            bail!("--listen-peer-urls: an https:// URL needs --peer-cert-file and --peer-key-file");
        }
        if peers_https && peer.trusted_ca.is_none() {
            bail!("--initial-cluster: https:// peers need --peer-trusted-ca-file to verify them");
        }
        let client_config = match client_https {
            true => Some(client.server_config().context("--cert-file")?),
            false => None,
        };
        let peer_server = match peer_https {
            true => Some(peer.server_config().context("--peer-cert-file")?),
            false => None,
        };
        let peer_client = match peer.trusted_ca {
            Some(_) => Some(peer.client_config().context("--peer-trusted-ca-file")?),
            None => None,
        };
        Ok(MasterTls { client: client_config, peer_server, peer_client })
    }
}

/// etcd's periodic retention: `0` (off), a bare number of hours, or a duration (`30m`, `1h30m`)
/// of at least 1s.
fn parse_retention(value: &str) -> Result<Option<Duration>> {
    let value = value.trim();
    let bad =
        || anyhow::anyhow!("--auto-compaction-retention: {value:?} is not a number of hours or a duration like 30m");
    let d = match value.parse::<u64>() {
        Ok(hours) => Duration::from_secs(hours.checked_mul(3600).ok_or_else(bad)?),
        Err(_) => duration::parse(value).map_err(|e| anyhow::Error::new(e).context(bad()))?,
    };
    if !d.is_zero() && d < Duration::from_secs(1) {
        bail!("--auto-compaction-retention must be at least 1s, or 0 to keep all history");
    }
    Ok((!d.is_zero()).then_some(d))
}

fn split_urls(flag: &str, value: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if urls.is_empty() {
        bail!("--{flag} must list at least one URL");
    }
    for url in &urls {
        socket_of(flag, url)?;
    }
    Ok(urls)
}

/// The address of an `https://host:port` URL (`localhost` means 127.0.0.1).
fn api_socket_of(flag: &str, url: &str) -> Result<SocketAddr> {
    let Some(rest) = url.strip_prefix("https://") else {
        bail!("--{flag}: {url:?} must be an https:// URL (the Kubernetes API is served over TLS only)");
    };
    let hostport = rest.trim_end_matches('/').replace("localhost", "127.0.0.1");
    hostport.parse().with_context(|| format!("--{flag}: {url:?} is not https://IP:PORT"))
}

/// The host part of a URL, for the serving certificate.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or_default();
    match hostport.rsplit_once(':') {
        Some((host, _)) => host.trim_matches(['[', ']']).to_string(),
        None => hostport.to_string(),
    }
}

/// A duration flag, Go-style as Kubernetes and etcd flags take them (`500ms`, `10s`, `1m30s`);
/// the error names the flag.
pub(crate) fn parse_duration(flag: &str, value: &str) -> Result<Duration> {
    duration::parse(value).map_err(|e| {
        anyhow::Error::new(e).context(format!("--{flag}: {value:?} is not a duration such as 10s, 500ms or 1m30s"))
    })
}

/// `--service-cluster-ip-range`: an IPv4 CIDR with room for at least a few addresses.
fn parse_cidr(value: &str) -> Result<(std::net::Ipv4Addr, u8)> {
    let bad = || anyhow::anyhow!("--service-cluster-ip-range: {value:?} is not an IPv4 CIDR such as 10.96.0.0/12");
    let (ip, bits) = value.split_once('/').ok_or_else(bad)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let bits: u8 = bits.parse().map_err(|_| bad())?;
    if !(8..=28).contains(&bits) {
        bail!("--service-cluster-ip-range: the prefix length must be between 8 and 28, not {bits}");
    }
    Ok((ip, bits))
}

/// `--service-node-port-range`: `LOW-HIGH`.
fn parse_port_range(value: &str) -> Result<(u16, u16)> {
    let bad = || anyhow::anyhow!("--service-node-port-range: {value:?} is not a range such as 30000-32767");
    let (lo, hi) = value.split_once('-').ok_or_else(bad)?;
    let (lo, hi): (u16, u16) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// The address of an `http://host:port` or `https://host:port` URL (`localhost` means
/// 127.0.0.1) and whether it is `https://`.
fn listen_of(flag: &str, url: &str) -> Result<Listen> {
    let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => bail!("--{flag}: {url:?} must be an http:// or https:// URL"),
    };
    let hostport = rest.trim_end_matches('/');
    let hostport = hostport.replace("localhost", "127.0.0.1");
    let addr = hostport.parse().with_context(|| format!("--{flag}: {url:?} is not http(s)://IP:PORT"))?;
    Ok(Listen { addr, tls })
}

fn socket_of(flag: &str, url: &str) -> Result<SocketAddr> {
    listen_of(flag, url).map(|l| l.addr)
}

impl MasterConfig {
    /// Applies defaults and checks rules across flags; messages name the flag.
    pub fn from_args(args: MasterArgs) -> Result<MasterConfig> {
        let args = args.merged()?;
        let (client_files, peer_files) = MasterTls::files(&args);
        let etcd_ca_key_file = args.etcd_ca_key_file.clone();
        let name = args.name.unwrap_or_else(|| "default".to_string());
        let advertise_peer = args.initial_advertise_peer_urls.unwrap_or_else(|| "http://localhost:2380".into());
        let advertise_peer_urls = split_urls("initial-advertise-peer-urls", &advertise_peer)?;
        let listen_peer =
            split_urls("listen-peer-urls", args.listen_peer_urls.as_deref().unwrap_or("http://localhost:2380"))?;
        let listen_client =
            split_urls("listen-client-urls", args.listen_client_urls.as_deref().unwrap_or("http://localhost:2379"))?;
        let advertise_client_urls = split_urls(
            "advertise-client-urls",
            args.advertise_client_urls.as_deref().unwrap_or("http://localhost:2379"),
        )?;
        let initial = args.initial_cluster.unwrap_or_else(|| format!("{name}={advertise_peer}"));
        let mut initial_cluster: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in initial.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((member, url)) = entry.split_once('=') else {
                bail!("--initial-cluster: {entry:?} is not name=URL");
            };
            socket_of("initial-cluster", url)?;
            initial_cluster.entry(member.to_string()).or_default().push(url.to_string());
        }
        match initial_cluster.get(&name) {
            Some(urls) if urls.iter().all(|u| advertise_peer_urls.contains(u)) => {}
            Some(_) => bail!("--initial-cluster has {name} at other URLs than --initial-advertise-peer-urls"),
            None => bail!("--initial-cluster does not list this member's --name {name:?}"),
        }
        let join_existing = match args.initial_cluster_state.as_deref().unwrap_or("new") {
            "new" => false,
            "existing" => true,
            other => bail!("--initial-cluster-state must be new or existing, not {other:?}"),
        };
        let listen_api_urls: Vec<String> = args
            .listen_api_urls
            .as_deref()
            .unwrap_or("https://localhost:6443")
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        let listen_api =
            listen_api_urls.iter().map(|u| api_socket_of("listen-api-urls", u)).collect::<Result<Vec<_>>>()?;
        let advertise_api_urls: Vec<String> = match args.advertise_api_urls.as_deref() {
            Some(urls) => urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect(),
            None => listen_api_urls.clone(),
        };
        for url in &advertise_api_urls {
            if !url.starts_with("https://") {
                bail!("--advertise-api-urls: {url:?} must be an https:// URL");
            }
        }
        let registry = RegistryConfig {
            service_cidr: parse_cidr(args.service_cluster_ip_range.as_deref().unwrap_or("10.96.0.0/12"))?,
            node_ports: parse_port_range(args.service_node_port_range.as_deref().unwrap_or("30000-32767"))?,
        };
        let heartbeat = Duration::from_millis(args.heartbeat_interval.unwrap_or(50));
        let election = Duration::from_millis(args.election_timeout.unwrap_or(150));
        if election < heartbeat * 3 {
            bail!("--election-timeout must be at least 3 × --heartbeat-interval");
        }
        let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.trireme")));
        let peer_source_address = match args.peer_source_address.as_deref() {
            Some(ip) => {
                Some(ip.parse().map_err(|_| anyhow::anyhow!("--peer-source-address: {ip:?} is not an IP address"))?)
            }
            None => None,
        };
        let snapshots = match args.snapshot_interval.as_deref() {
            Some(interval) => {
                let retention = args.snapshot_retention.unwrap_or(5);
                if retention == 0 {
                    bail!("--snapshot-retention must keep at least one snapshot");
                }
                Some(scheduled::ScheduleConfig {
                    interval: parse_duration("snapshot-interval", interval)?,
                    retention,
                    dir: args.snapshot_dir.clone().unwrap_or_else(|| data_dir.join("snapshots-scheduled")),
                })
            }
            None if args.snapshot_retention.is_some() || args.snapshot_dir.is_some() => {
                bail!("--snapshot-retention and --snapshot-dir need --snapshot-interval")
            }
            None => None,
        };
        if snapshots.as_ref().is_some_and(|s| s.interval < Duration::from_secs(1)) {
            bail!("--snapshot-interval must be at least 1s");
        }
        let listen_metrics = match args.listen_metrics_urls.as_deref() {
            Some(url) if url.starts_with("https://") => {
                bail!("--listen-metrics-urls: {url:?}: metrics are served over http:// only")
            }
            Some(url) => Some(socket_of("listen-metrics-urls", url)?),
            None => None,
        };
        let listen_peer = listen_peer.iter().map(|u| listen_of("listen-peer-urls", u)).collect::<Result<Vec<_>>>()?;
        let listen_client =
            listen_client.iter().map(|u| listen_of("listen-client-urls", u)).collect::<Result<Vec<_>>>()?;
        let peers_https = initial_cluster.values().flatten().any(|u| u.starts_with("https://"));
        let etcd_ca = match (&etcd_ca_key_file, &peer_files.trusted_ca) {
            (Some(key), Some(cert)) => {
                let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
                let pair = CaPair { cert_pem: read(cert)?, key_pem: read(key)? };
                trireme_tls::pki::Authority::from_pem(&pair.cert_pem, &pair.key_pem)
                    .context("--etcd-ca-key-file does not go with --peer-trusted-ca-file")?;
                Some(pair)
            }
            (Some(_), None) => bail!("--etcd-ca-key-file needs --peer-trusted-ca-file (the CA's certificate)"),
            (None, _) => None,
        };
        let tls = MasterTls::new(
            client_files,
            peer_files,
            listen_client.iter().any(|l| l.tls),
            listen_peer.iter().any(|l| l.tls),
            peers_https,
        )?;
        Ok(MasterConfig {
            data_dir,
            name,
            listen_peer,
            advertise_peer_urls,
            listen_client,
            advertise_client_urls,
            initial_cluster,
            join_existing,
            token: args.initial_cluster_token.unwrap_or_else(|| "trireme-cluster".to_string()),
            heartbeat,
            election,
            snapshot_count: args.snapshot_count.unwrap_or(10_000),
            quota_bytes: args.quota_backend_bytes.unwrap_or(8 * 1024 * 1024 * 1024),
            max_request_bytes: args.max_request_bytes.unwrap_or(1536 * 1024),
            auto_compaction_retention: parse_retention(args.auto_compaction_retention.as_deref().unwrap_or("1h"))?,
            listen_api,
            advertise_api_urls,
            tls_sans: args
                .tls_san
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect(),
            registry,
            node_monitor_grace: parse_duration(
                "node-monitor-grace-period",
                args.node_monitor_grace_period.as_deref().unwrap_or("10s"),
            )?,
            pod_eviction_timeout: parse_duration(
                "pod-eviction-timeout",
                args.pod_eviction_timeout.as_deref().unwrap_or("30s"),
            )?,
            peer_source_address,
            force_new_cluster: args.force_new_cluster,
            snapshots,
            listen_metrics,
            client_tls: tls.client,
            peer_server_tls: tls.peer_server,
            peer_client_tls: tls.peer_client,
            etcd_ca,
            pki_dir: etcd_ca_key_file.as_ref().and_then(|k| k.parent()).map(PathBuf::from),
        })
    }

    fn me(&self) -> Member {
        Member {
            name: self.name.clone(),
            peer_urls: self.advertise_peer_urls.clone(),
            client_urls: self.advertise_client_urls.clone(),
        }
    }
}

/// Finds who this data dir is: from `member.json`, else from the founding flags, else (joining)
/// from a peer. Returns the identity and, for a founder of a new cluster, the founding members.
async fn resolve_identity(config: &MasterConfig) -> Result<(MemberIdentity, Option<BTreeMap<u64, Member>>)> {
    if let Some(identity) = MemberIdentity::load(&config.data_dir)? {
        tracing::info!(
            id = format!("{:x}", identity.id),
            "restarting from existing data dir; initial-cluster flags ignored"
        );
        return Ok((identity, None));
    }
    if config.join_existing {
        let peers: Vec<&String> =
            config.initial_cluster.iter().filter(|(n, _)| **n != config.name).flat_map(|(_, urls)| urls).collect();
        for _ in 0..30 {
            for peer in &peers {
                match Store::discover(peer, config.peer_client_tls.clone(), Duration::from_secs(2)).await {
                    Ok(found) => {
                        let cluster_id = found.cluster_id;
                        let mine = found
                            .members
                            .iter()
                            .find(|m| m.member.peer_urls.iter().any(|u| config.advertise_peer_urls.contains(u)));
                        let Some(mine) = mine else {
                            bail!(
                                "the cluster at {peer} has no member with peer URLs {:?}: run `member add` first",
                                config.advertise_peer_urls
                            );
                        };
                        return Ok((MemberIdentity { id: mine.id, name: config.name.clone(), cluster_id }, None));
                    }
                    Err(e) => tracing::warn!(peer = %peer, error = %e, "cannot reach peer to join"),
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        bail!("no member of --initial-cluster answered; cannot join an existing cluster");
    }
    let founders = founders(config);
    let ids: Vec<u64> = founders.keys().copied().collect();
    let id = identity::member_id(&config.advertise_peer_urls, &config.token);
    let cluster_id = identity::cluster_id(&ids, &config.token);
    Ok((MemberIdentity { id, name: config.name.clone(), cluster_id }, Some(founders)))
}

/// The founding members `--initial-cluster` names, by the ids every founder derives alike.
pub fn founders(config: &MasterConfig) -> BTreeMap<u64, Member> {
    config
        .initial_cluster
        .iter()
        .map(|(name, urls)| {
            let member = Member { name: name.clone(), peer_urls: urls.clone(), client_urls: Vec::new() };
            (identity::member_id(urls, &config.token), member)
        })
        .collect()
}

/// `--force-new-cluster`: rewrites this member's data dir into a one-member cluster (see
/// `trireme_store::recover`) before the store opens.
fn force_new_cluster(config: &MasterConfig) -> Result<()> {
    let Some(me) = MemberIdentity::load(&config.data_dir)? else {
        bail!("--force-new-cluster: {} is not the data dir of a member that ran before", config.data_dir.display());
    };
    let recovered = trireme_store::recover::force_new_cluster(&config.data_dir, me.id, config.me())
        .with_context(|| format!("--force-new-cluster on {}", config.data_dir.display()))?;
    tracing::warn!(
        id = format!("{:x}", me.id),
        revision = recovered.revision,
        applied_entries = recovered.applied_entries,
        old_members = recovered.old_members,
        "forced a new one-member cluster from this member's data; add members with `trireme member add`, and never start the old members again"
    );
    Ok(())
}

/// Runs a master until SIGTERM or SIGINT.
pub async fn run(args: MasterArgs) -> Result<()> {
    let config = MasterConfig::from_args(args)?;
    // Bind first: a port in use is reported before anything is written to the data dir.
    let mut peer_listeners = Vec::new();
    for listen in &config.listen_peer {
        let addr = listen.addr;
        let listener = TcpListener::bind(addr).await.with_context(|| format!("--listen-peer-urls: binding {addr}"))?;
        peer_listeners.push((listener, listen.tls.then(|| config.peer_server_tls.clone()).flatten()));
    }
    let mut client_listeners = Vec::new();
    for listen in &config.listen_client {
        let addr = listen.addr;
        let listener =
            TcpListener::bind(addr).await.with_context(|| format!("--listen-client-urls: binding {addr}"))?;
        client_listeners.push((listener, listen.tls.then(|| config.client_tls.clone()).flatten()));
    }
    let mut api_listeners = Vec::new();
    for addr in &config.listen_api {
        api_listeners
            .push(TcpListener::bind(addr).await.with_context(|| format!("--listen-api-urls: binding {addr}"))?);
    }
    if let Some(addr) = config.listen_metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("--listen-metrics-urls: serving metrics on {addr}"))?;
    }
    if config.force_new_cluster {
        force_new_cluster(&config)?;
    }
    let (me, founders) = resolve_identity(&config).await?;
    let store = Store::open(StoreConfig {
        id: me.id,
        name: config.name.clone(),
        data_dir: config.data_dir.clone(),
        cluster_id: me.cluster_id,
        heartbeat_interval: config.heartbeat,
        election_timeout_min: config.election,
        election_timeout_max: config.election * 2,
        snapshot_every_entries: config.snapshot_count,
        max_request_bytes: config.max_request_bytes,
        auto_compaction_retention: config.auto_compaction_retention,
        peer_source_address: config.peer_source_address,
        peer_client_tls: config.peer_client_tls.clone(),
        ..StoreConfig::default()
    })
    .await
    .context("opening the store")?;
    me.save(&config.data_dir)?;
    tracing::info!(name = %config.name, id = format!("{:x}", me.id), cluster = format!("{:x}", me.cluster_id), "master starting");

    let shutdown = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    for (listener, tls) in peer_listeners {
        let (store, stop) = (store.clone(), shutdown.clone());
        servers.spawn(
            async move { store.serve_peers(listener, tls, stop.cancelled_owned()).await.context("peer server") },
        );
    }
    if let Some(founders) = founders {
        store.initialize(founders).await.context("initializing the new cluster")?;
    }
    if store.bootstrap().await.context("initializing the restored or recovered cluster")? {
        tracing::info!("initialized Raft with the membership left by a restore or recovery");
    }
    for (listener, tls) in client_listeners {
        let etcd = EtcdServer::new(store.clone(), EtcdConfig { quota_bytes: config.quota_bytes });
        let stop = shutdown.clone();
        servers.spawn(async move { etcd.serve(listener, tls, stop).await.context("client server") });
    }
    servers.spawn(serve_kubernetes_api(store.clone(), config.clone(), api_listeners, shutdown.clone()));
    let control_plane = ControlPlane::new(
        Registry::new(store.clone(), config.registry.clone()),
        ControlPlaneConfig {
            identity: config.name.clone(),
            node_monitor_grace: config.node_monitor_grace,
            pod_eviction_timeout: config.pod_eviction_timeout,
        },
    );
    let stop = shutdown.clone();
    servers.spawn(async move {
        control_plane.run(stop).await;
        Ok(())
    });
    tokio::spawn(membership::publish_self(store.clone(), config.me(), shutdown.clone()));
    tokio::spawn(trireme_apiserver::join::promote_joined(store.clone(), shutdown.clone()));
    if let Some(dir) = config.pki_dir.clone() {
        // Its certificates are renewed here, within 30 days of expiry; servers and clients
        // pick the new ones up at their next handshake.
        tokio::spawn(crate::pki::renew_forever(dir, shutdown.clone()));
    }
    if let Some(schedule) = config.snapshots.clone() {
        tokio::spawn(scheduled::run(store.clone(), schedule, shutdown.clone()));
    }
    let removed = tokio::spawn(membership::watch_removal(store.clone(), shutdown.clone()));
    tracing::info!(peer = ?config.listen_peer, client = ?config.listen_client, "master serving");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); Ok(()) }
        Ok(true) = removed => Err(anyhow::anyhow!("this member was removed from the cluster; its data dir is no longer usable")),
        Some(ended) = servers.join_next() => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.into()),
        },
    };
    shutdown.cancel();
    // The store stops while the servers drain: a peer server waits for its peers' replication
    // streams to close, and those close only when the peers' stores stop, so masters stopping
    // together would otherwise wait on each other until the drain timeout.
    let drain = async { while servers.join_next().await.is_some() {} };
    let _ = tokio::join!(tokio::time::timeout(Duration::from_secs(5), drain), store.shutdown());
    outcome
}

/// Starts the Kubernetes API server once the store can take writes (the first master of a new
/// cluster creates its credentials), writes `<data-dir>/admin.kubeconfig`, and serves.
async fn serve_kubernetes_api(
    store: Store,
    config: MasterConfig,
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> Result<()> {
    let hosts: Vec<String> =
        config.advertise_api_urls.iter().map(|u| host_of(u)).chain(config.tls_sans.iter().cloned()).collect();
    let api_config = ApiConfig { hosts, registry: config.registry.clone(), etcd_ca: config.etcd_ca.clone() };
    let Some(server) = ApiServer::when_ready(store, api_config, shutdown).await else { return Ok(()) };
    let servers: Vec<(String, String)> =
        config.advertise_api_urls.iter().map(|url| (config.name.clone(), url.clone())).take(1).collect();
    let kubeconfig = admin_kubeconfig(server.credentials(), &servers);
    let path = config.data_dir.join("admin.kubeconfig");
    write_atomic(&path, kubeconfig.as_bytes(), FileOptions::PRIVATE)
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(api = ?config.advertise_api_urls, "Kubernetes API serving");
    crate::systemd::notify("READY=1");
    server.serve_all(listeners).await.context("Kubernetes API server")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(initial: &str) -> MasterArgs {
        MasterArgs {
            name: Some("m1".into()),
            initial_advertise_peer_urls: Some("http://127.0.0.1:2380".into()),
            initial_cluster: Some(initial.into()),
            ..MasterArgs::default()
        }
    }

    #[test]
    fn flags_are_checked_with_messages_naming_the_flag() {
        let err = MasterConfig::from_args(args("m2=http://127.0.0.1:2381")).expect_err("name missing");
        assert!(err.to_string().contains("--initial-cluster"), "{err}");
        let err = MasterConfig::from_args(MasterArgs {
            initial_cluster_state: Some("old".into()),
            ..args("m1=http://127.0.0.1:2380")
        })
        .expect_err("bad state");
        assert!(err.to_string().contains("--initial-cluster-state"), "{err}");
        let err = MasterConfig::from_args(MasterArgs {
            listen_client_urls: Some("https://127.0.0.1:2379".into()),
            ..args("m1=http://127.0.0.1:2380")
        })
        .expect_err("https without a certificate");
        assert_eq!(err.to_string(), "--listen-client-urls: an https:// URL needs --cert-file and --key-file");
        let err = MasterConfig::from_args(MasterArgs {
            listen_client_urls: Some("ftp://127.0.0.1:2379".into()),
            ..args("m1=http://127.0.0.1:2380")
        })
        .expect_err("ftp");
        assert!(err.to_string().contains("--listen-client-urls"), "{err}");
        let err = MasterConfig::from_args(MasterArgs { client_cert_auth: true, ..args("m1=http://127.0.0.1:2380") })
            .expect_err("client-cert-auth without a CA");
        assert_eq!(err.to_string(), "--client-cert-auth needs --trusted-ca-file");
        let err = MasterConfig::from_args(MasterArgs {
            initial_advertise_peer_urls: Some("https://127.0.0.1:2380".into()),
            ..args("m1=https://127.0.0.1:2380")
        })
        .expect_err("https peers without a CA");
        assert!(err.to_string().contains("--peer-trusted-ca-file"), "{err}");
        let ok = MasterConfig::from_args(args("m1=http://127.0.0.1:2380,m2=http://127.0.0.1:2381")).expect("valid");
        assert_eq!(ok.initial_cluster.len(), 2);
        assert_eq!(ok.data_dir, PathBuf::from("m1.trireme"));
    }

    #[test]
    fn retention_takes_hours_or_durations() -> Result<()> {
        assert_eq!(parse_retention("0")?, None);
        assert_eq!(parse_retention("2")?, Some(Duration::from_secs(7200)));
        assert_eq!(parse_retention("30m")?, Some(Duration::from_secs(1800)));
        assert!(parse_retention("5 minutes").is_err());
        assert!(parse_retention("500ms").is_err(), "below a second");
        assert_eq!(parse_retention("1h30m")?, Some(Duration::from_secs(5400)));
        assert_eq!(parse_retention("0s")?, None);
        assert!(parse_retention("5124095576030432").is_err(), "hours that overflow");
        let err = parse_retention("2d").expect_err("days");
        assert!(err.to_string().starts_with("--auto-compaction-retention: \"2d\""), "{err}");
        Ok(())
    }

    #[test]
    fn duration_flags_read_go_durations_and_name_the_flag() -> Result<()> {
        assert_eq!(parse_duration("pod-eviction-timeout", "1m30s")?, Duration::from_secs(90));
        assert_eq!(parse_duration("pod-eviction-timeout", "500ms")?, Duration::from_millis(500));
        assert_eq!(parse_duration("wait", "0")?, Duration::ZERO);
        let err = parse_duration("node-monitor-grace-period", "10").expect_err("no unit");
        assert_eq!(
            err.to_string(),
            "--node-monitor-grace-period: \"10\" is not a duration such as 10s, 500ms or 1m30s"
        );
        assert!(format!("{err:#}").contains("needs a unit"), "{err:#}");
        Ok(())
    }

    #[test]
    fn a_config_file_fills_flags_the_command_line_did_not_give() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("m.yaml");
        std::fs::write(&file, "name: m1\ndata-dir: /tmp/x\nheartbeat-interval: 50\nelection-timeout: 300\n")?;
        let config = MasterConfig::from_args(MasterArgs {
            config_file: Some(file.clone()),
            heartbeat_interval: Some(60),
            ..MasterArgs::default()
        })?;
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.heartbeat, Duration::from_millis(60), "the flag wins");
        std::fs::write(&file, "nmae: typo\n")?;
        let err = MasterConfig::from_args(MasterArgs { config_file: Some(file), ..MasterArgs::default() })
            .expect_err("unknown key");
        assert!(format!("{err:#}").contains("nmae"), "{err:#}");
        Ok(())
    }
}
