//! `trireme up`: a whole cluster on this machine as child processes on loopback, behind one
//! stable address (a balancer in this process) for the Kubernetes API and one for the etcd API.

use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::Deserialize;
use serde::Serialize;
use tokio::process::Child;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use trireme_lb::Backend;
use trireme_lb::Balancer;
use trireme_lb::Check;
use trireme_lb::Options;
use trireme_util::fs::FileOptions;
use trireme_util::fs::write_atomic;

use crate::pki::EtcdPki;

/// Clusters that can run side by side on one machine: each takes a slot, and slot `k` owns
/// node addresses 127.0.(1+k).N, pod IPs 127.(10+k).N.0/24 and Service ClusterIPs
/// 127.(96+k).0.0/16 — loopback addresses, so `curl CLUSTER-IP:PORT` works on this machine.
const SLOTS: u8 = 64;

/// Where running `trireme up` clusters claim their slots: `slot-K` holds the claiming cluster's
/// directory.
const SLOT_CLAIMS: &str = "/tmp/trireme-up-slots";

/// The kubelet port every node of a `trireme up` cluster listens on, at its own address.
const KUBELET_PORT: u16 = 10250;

/// Flags of `trireme up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Number of masters.
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Directory for data, logs and cluster.json; an existing one is restarted as it was.
    #[arg(long, default_value = "./.trireme")]
    pub dir: PathBuf,
    /// Number of worker nodes (node agents with the process runtime).
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// The cluster's name: the kubeconfig's current context. Clusters in different --dirs run
    /// side by side, each on addresses of its own [default: trireme].
    #[arg(long)]
    pub name: Option<String>,
}

/// One process of the cluster, as `cluster.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub role: String,
    pub name: String,
    pub pid: u32,
    pub peer_url: String,
    pub client_url: String,
    /// The Kubernetes API (HTTPS).
    #[serde(default)]
    pub api_url: String,
    /// A node's address (its kubelet and NodePorts listen there).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_ip: String,
    /// A node's pod IP range.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_cidr: String,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
}

/// The cluster's stable addresses: the balancer in `trireme up` in front of every master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableAddress {
    /// The Kubernetes API (HTTPS, passed through to a ready master).
    pub api_url: String,
    /// The etcd API (passed through to a member that has a leader).
    pub client_url: String,
}

/// `<dir>/cluster.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterFile {
    pub token: String,
    pub processes: Vec<ProcessInfo>,
    /// Kept across restarts, so kubeconfigs and scripts keep working; absent in files written
    /// before the balancer existed (new ports are taken then).
    #[serde(default)]
    pub stable: Option<StableAddress>,
    /// The cluster's name (the kubeconfig's current context).
    #[serde(default = "default_name")]
    pub name: String,
    /// Which addresses the cluster's nodes, pods and Services use (see [`SLOTS`]); 0 in files
    /// written before clusters could run side by side.
    #[serde(default)]
    pub slot: u8,
}

fn default_name() -> String {
    "trireme".into()
}

impl ClusterFile {
    fn load(dir: &Path) -> Result<Option<ClusterFile>> {
        match std::fs::read(dir.join("cluster.json")) {
            Ok(raw) => Ok(Some(serde_json::from_slice(&raw).context("reading cluster.json")?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("cluster.json");
        write_atomic(&path, &serde_json::to_vec_pretty(self)?, FileOptions::DURABLE)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// A free loopback port for a child to take.
fn free_port() -> Result<u16> {
    Ok(trireme_testkit::ports::reserve()?)
}

/// The masters of the cluster: as before if `dir` held one, else new ones on free ports.
fn plan(args: &UpArgs) -> Result<ClusterFile> {
    let dir = std::fs::canonicalize(&args.dir)?;
    if let Some(previous) = ClusterFile::load(&dir)? {
        let masters = previous.processes.iter().filter(|p| p.role == "master").count();
        if masters != args.masters {
            bail!("{} holds a cluster of {masters} masters; use --masters {masters} or another --dir", dir.display());
        }
        if let Some(name) = &args.name
            && *name != previous.name
        {
            bail!(
                "{} holds the cluster {:?}; use --name {} or another --dir",
                dir.display(),
                previous.name,
                previous.name
            );
        }
        let mut previous = previous;
        claim_slot(previous.slot, &dir)?;
        add_nodes(&dir, args.nodes, previous.slot, &mut previous.processes);
        if previous.stable.is_none() {
            previous.stable = Some(stable_address()?);
        }
        return Ok(previous);
    }
    let name = args.name.clone().unwrap_or_else(default_name);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        bail!("--name {name:?}: use letters, digits, '-', '_' and '.'");
    }
    let slot = free_slot(&dir)?;
    let mut processes = Vec::new();
    for i in 1..=args.masters {
        let name = format!("m{i}");
        processes.push(ProcessInfo {
            role: "master".into(),
            pid: 0,
            peer_url: format!("https://127.0.0.1:{}", free_port()?),
            client_url: format!("https://127.0.0.1:{}", free_port()?),
            api_url: format!("https://127.0.0.1:{}", free_port()?),
            node_ip: String::new(),
            pod_cidr: String::new(),
            data_dir: dir.join(&name),
            log_file: dir.join(format!("{name}.log")),
            name,
        });
    }
    add_nodes(&dir, args.nodes, slot, &mut processes);
    Ok(ClusterFile {
        token: format!("trireme-up-{}", std::process::id()),
        processes,
        stable: Some(stable_address()?),
        name,
        slot,
    })
}

/// The first slot no other cluster has claimed (or whose claimant's directory no longer holds
/// it) and whose first node address is free; claimed for `dir`.
fn free_slot(dir: &Path) -> Result<u8> {
    for slot in 0..SLOTS {
        if claim_slot(slot, dir).is_ok() {
            return Ok(slot);
        }
    }
    bail!("every one of the {SLOTS} local cluster slots is taken; stop a `trireme up` cluster or remove {SLOT_CLAIMS}")
}

/// Claims `slot` for the cluster in `dir`: refused while another cluster's directory holds it
/// or its first node's kubelet address is taken (a cluster from before the claims, say).
fn claim_slot(slot: u8, dir: &Path) -> Result<()> {
    let claims = Path::new(SLOT_CLAIMS);
    if !claims.is_dir() {
        std::fs::create_dir_all(claims).with_context(|| format!("creating {}", claims.display()))?;
        // Addresses are the machine's, so every user's clusters claim here (as in /tmp).
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(claims, std::fs::Permissions::from_mode(0o1777));
    }
    let claim = claims.join(format!("slot-{slot}"));
    if let Ok(holder) = std::fs::read_to_string(&claim) {
        let holder = PathBuf::from(holder.trim());
        let still_held = holder != dir
            && ClusterFile::load(&holder).ok().flatten().is_some_and(|c| c.slot == slot && !c.processes.is_empty());
        if still_held {
            bail!("slot {slot} belongs to the cluster in {}", holder.display());
        }
    }
    let first_node = SocketAddr::from(([127, 0, 1 + slot, 1], KUBELET_PORT));
    if let Err(e) = std::net::TcpListener::bind(first_node) {
        bail!(
            "{first_node} is taken ({e}): another cluster or program uses this cluster's node addresses; stop it, or start this cluster in another --dir"
        );
    }
    write_atomic(&claim, dir.display().to_string().as_bytes(), FileOptions::DURABLE)
        .with_context(|| format!("writing {}", claim.display()))
}

/// The Service ClusterIP range of slot `slot`.
fn service_range(slot: u8) -> String {
    format!("127.{}.0.0/16", 96 + u16::from(slot))
}

fn stable_address() -> Result<StableAddress> {
    Ok(StableAddress {
        api_url: format!("https://127.0.0.1:{}", free_port()?),
        client_url: format!("https://127.0.0.1:{}", free_port()?),
    })
}

/// Node `node-i` of slot k gets address 127.0.(1+k).i (its kubelet and NodePorts listen there)
/// and pod IPs from 127.(10+k).i.0/24.
fn add_nodes(dir: &Path, nodes: usize, slot: u8, processes: &mut Vec<ProcessInfo>) {
    processes.retain(|p| p.role == "master");
    for i in 1..=nodes {
        let name = format!("node-{i}");
        processes.push(ProcessInfo {
            role: "node".into(),
            pid: 0,
            peer_url: String::new(),
            client_url: String::new(),
            api_url: String::new(),
            node_ip: format!("127.0.{}.{i}", 1 + u16::from(slot)),
            pod_cidr: format!("127.{}.{i}.0/24", 10 + u16::from(slot)),
            data_dir: dir.join(&name),
            log_file: dir.join(format!("{name}.log")),
            name,
        });
    }
}

fn spawn_node(p: &ProcessInfo, kubeconfig: &Path, api_urls: &[String]) -> Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&p.log_file)?;
    let exe = std::env::current_exe().context("locating the trireme binary")?;
    let child = Command::new(exe)
        .arg("node")
        .args(["--name", &p.name])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--server", &api_urls.join(",")])
        .args(["--node-ip", &p.node_ip, "--pod-cidr", &p.pod_cidr])
        .arg("--root-dir")
        .arg(&p.data_dir)
        .arg("--stop-pods-on-exit")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node {}", p.name))?;
    Ok(child)
}

fn spawn_master(p: &ProcessInfo, pki: &EtcdPki, initial_cluster: &str, token: &str, slot: u8) -> Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&p.log_file)?;
    let exe = std::env::current_exe().context("locating the trireme binary")?;
    let child = Command::new(exe)
        .arg("master")
        .args(["--name", &p.name])
        .arg("--data-dir")
        .arg(&p.data_dir)
        .args(["--listen-peer-urls", &p.peer_url, "--initial-advertise-peer-urls", &p.peer_url])
        .args(["--listen-client-urls", &p.client_url, "--advertise-client-urls", &p.client_url])
        .args(["--initial-cluster", initial_cluster, "--initial-cluster-token", token])
        .args(["--listen-api-urls", &p.api_url])
        // ClusterIPs on loopback: the node agents' proxies listen on them on this machine.
        .args(["--service-cluster-ip-range", &service_range(slot)])
        // Mutual TLS on the peer and etcd ports, as in production (their URLs are https://;
        // a cluster.json from before TLS keeps its http:// URLs, which ignore these).
        .args(pki.master_flags(&p.name))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting master {}", p.name))?;
    Ok(child)
}

/// Runs the cluster until Ctrl-C or SIGTERM, then stops every process.
pub async fn run(args: UpArgs) -> Result<()> {
    if args.masters == 0 {
        bail!("--masters must be at least 1");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating --dir {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let mut cluster = plan(&args)?;
    // Saved at once: the slot claimed is held by what this file says.
    cluster.save(&dir)?;
    if cluster.processes.iter().any(|p| p.role == "master" && p.api_url.is_empty()) {
        bail!(
            "{} holds a cluster from an older trireme without a Kubernetes API; use another --dir",
            args.dir.display()
        );
    }
    let initial_cluster = cluster
        .processes
        .iter()
        .filter(|p| p.role == "master")
        .map(|p| format!("{}={}", p.name, p.peer_url))
        .collect::<Vec<_>>()
        .join(",");
    let masters: Vec<(String, Vec<String>)> = cluster
        .processes
        .iter()
        .filter(|p| p.role == "master")
        .map(|p| (p.name.clone(), vec![host_of(&p.peer_url), host_of(&p.client_url)]))
        .collect();
    let pki = EtcdPki::ensure(&dir.join("pki"), &masters).context("making the etcd certificates")?;
    let mut children = Vec::new();
    for p in cluster.processes.iter_mut().filter(|p| p.role == "master") {
        let child = spawn_master(p, &pki, &initial_cluster, &cluster.token, cluster.slot)?;
        p.pid = child.id().unwrap_or(0);
        children.push((p.name.clone(), child));
    }
    cluster.save(&dir)?;
    let etcd_tls = pki.client_config()?;
    wait_ready(&cluster, &etcd_tls).await?;
    let admin = wait_admin_kubeconfig(&cluster).await?;
    let stable = cluster.stable.clone().context("cluster.json names no stable address")?;
    let stop_balancers = CancellationToken::new();
    let balancers = start_balancers(&cluster, &stable, &admin, &etcd_tls, &stop_balancers).await?;
    let kubeconfig = write_kubeconfig(&cluster, &stable, &admin, &dir)?;
    let api_urls: Vec<String> =
        cluster.processes.iter().filter(|p| p.role == "master").map(|p| p.api_url.clone()).collect();
    for p in cluster.processes.iter_mut().filter(|p| p.role == "node") {
        let child = spawn_node(p, &kubeconfig, &api_urls)?;
        p.pid = child.id().unwrap_or(0);
        children.push((p.name.clone(), child));
    }
    cluster.save(&dir)?;

    let nodes = cluster.processes.iter().filter(|p| p.role == "node").count();
    println!(
        "Trireme is up: {} masters and {nodes} nodes, cluster {:?} (data, logs and cluster.json in {}).",
        args.masters,
        cluster.name,
        args.dir.display()
    );
    println!(
        "  stable  Kubernetes API {}  etcd API {}  (balanced over the ready masters)",
        stable.api_url, stable.client_url
    );
    for p in &cluster.processes {
        if p.role == "master" {
            println!(
                "  {:<7} master  Kubernetes API {}  etcd API {}  peer {}  pid {}  log {}",
                p.name,
                p.api_url,
                p.client_url,
                p.peer_url,
                p.pid,
                p.log_file.display()
            );
        } else {
            println!("  {:<7} node    address {}  pid {}  log {}", p.name, p.node_ip, p.pid, p.log_file.display());
        }
    }
    println!();
    println!("Use it with kubectl (the current context, {:?}, reaches every master through the stable", cluster.name);
    println!("address; a context per master, m1..., reaches that one):");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get nodes");
    if let Some(node) = cluster.processes.iter().find(|p| p.role == "node") {
        println!("  kubectl apply -f deploy/examples/hello.yaml      # 3 HTTP servers + a NodePort service");
        println!("  kubectl rollout status deployment/hello && kubectl get pods -o wide");
        println!("  curl http://{}:30080/                          # answered by the pods, round robin", node.node_ip);
        println!("  kubectl logs deployment/hello");
    }
    println!();
    println!("Use the store with etcdctl (mutual TLS: the cluster's etcd CA and a client certificate):");
    let (cert, key) = pki.client();
    println!(
        "  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS={} ETCDCTL_CACERT={} ETCDCTL_CERT={} ETCDCTL_KEY={}",
        stable.client_url,
        pki.ca_cert().display(),
        cert.display(),
        key.display()
    );
    println!("  etcdctl put greeting hello && etcdctl get greeting");
    println!("  etcdctl endpoint status -w table");
    println!();
    println!("Ctrl-C stops the cluster; `trireme up --dir {}` starts it again with its data.", args.dir.display());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut watch = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = watch.tick() => {
                for (name, child) in &mut children {
                    if let Ok(Some(status)) = child.try_wait() {
                        eprintln!("{name} exited ({status}); see its log. The others keep running.");
                    }
                }
                children.retain_mut(|(_, c)| !matches!(c.try_wait(), Ok(Some(_))));
            }
        }
    }
    println!("stopping {} processes...", children.len());
    stop_all(children).await;
    stop_balancers.cancel();
    for balancer in balancers {
        let _ = balancer.await;
    }
    Ok(())
}

/// SIGTERM every child, then SIGKILL what is still running after 10 s.
async fn stop_all(mut children: Vec<(String, Child)>) {
    for (_, child) in &children {
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for (name, child) in &mut children {
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("{name} did not stop within 10 s; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

/// Waits for every master's Kubernetes API to write its `admin.kubeconfig`; returns one.
async fn wait_admin_kubeconfig(cluster: &ClusterFile) -> Result<String> {
    let masters: Vec<&ProcessInfo> = cluster.processes.iter().filter(|p| p.role == "master").collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready: Vec<Option<String>> =
            masters.iter().map(|p| std::fs::read_to_string(p.data_dir.join("admin.kubeconfig")).ok()).collect();
        if ready.iter().all(Option::is_some) {
            return Ok(ready.into_iter().flatten().next().unwrap_or_default());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the Kubernetes API did not come up on every master within 60 s; see the logs in the --dir");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The balancers on the stable addresses: the Kubernetes API checked by `/readyz` (trusting the
/// cluster CA of `admin`), the etcd API by its status naming a leader.
async fn start_balancers(
    cluster: &ClusterFile,
    stable: &StableAddress,
    admin: &str,
    etcd_tls: &Arc<rustls::ClientConfig>,
    stop: &CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let masters: Vec<&ProcessInfo> = cluster.processes.iter().filter(|p| p.role == "master").collect();
    let backends = |url: fn(&ProcessInfo) -> &str| -> Result<Vec<Backend>> {
        masters.iter().map(|p| Ok(Backend { name: p.name.clone(), addr: socket_of(url(p))? })).collect()
    };
    let ca = trireme_apiserver::kubeconfig::ca_pem(admin).context("reading a master's admin.kubeconfig")?;
    let https = masters.iter().all(|p| p.client_url.starts_with("https://"));
    let api = Balancer::bind(
        "kubernetes",
        socket_of(&stable.api_url)?,
        backends(|p| &p.api_url)?,
        Check::readyz(&ca)?,
        Options::default(),
    )
    .await
    .context("starting the Kubernetes API's balancer (another program took its port: use another --dir)")?;
    let etcd = Balancer::bind(
        "etcd",
        socket_of(&stable.client_url)?,
        backends(|p| &p.client_url)?,
        Check::EtcdStatus(https.then(|| etcd_tls.clone())),
        Options::default(),
    )
    .await
    .context("starting the etcd API's balancer (another program took its port: use another --dir)")?;
    Ok(vec![tokio::spawn(api.run(stop.clone())), tokio::spawn(etcd.run(stop.clone()))])
}

/// The host of `http(s)://HOST:PORT`.
fn host_of(url: &str) -> String {
    socket_of(url).map_or_else(|_| "127.0.0.1".to_string(), |addr| addr.ip().to_string())
}

/// `127.0.0.1:PORT` of `http(s)://127.0.0.1:PORT`.
fn socket_of(url: &str) -> Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.trim_end_matches('/').parse().with_context(|| format!("{url:?} is not a URL of an IP address and port"))
}

/// Writes `<dir>/kubeconfig`: the current context, named after the cluster, on the stable
/// address, then a context per master.
fn write_kubeconfig(cluster: &ClusterFile, stable: &StableAddress, admin: &str, dir: &Path) -> Result<PathBuf> {
    let servers: Vec<(String, String)> = std::iter::once((cluster.name.clone(), stable.api_url.clone()))
        .chain(cluster.processes.iter().filter(|p| p.role == "master").map(|p| (p.name.clone(), p.api_url.clone())))
        .collect();
    let text =
        trireme_apiserver::kubeconfig::for_servers(admin, &servers).context("reading a master's admin.kubeconfig")?;
    let path = dir.join("kubeconfig");
    write_atomic(&path, text.as_bytes(), FileOptions::PRIVATE)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Waits until every master answers and they agree on a leader.
async fn wait_ready(cluster: &ClusterFile, tls: &Arc<rustls::ClientConfig>) -> Result<()> {
    use trireme_etcd::client::status;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut leaders = Vec::new();
        for p in cluster.processes.iter().filter(|p| p.role == "master") {
            leaders.push(status(&p.client_url, Some(tls.clone())).await.ok().map(|s| s.leader));
        }
        if leaders.iter().all(|l| l.is_some_and(|id| id != 0)) && leaders.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the cluster did not elect a leader within 60 s; see the logs in the --dir");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
