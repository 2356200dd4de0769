//! `trireme up`: a whole cluster on this machine as child processes on loopback.

use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
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
use trireme_util::fs::FileOptions;
use trireme_util::fs::write_atomic;

/// The Service ClusterIP range of a `trireme up` cluster: loopback addresses, so that
/// `curl CLUSTER-IP:PORT` works on this machine.
const UP_SERVICE_RANGE: &str = "127.96.0.0/16";

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

/// `<dir>/cluster.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterFile {
    pub token: String,
    pub processes: Vec<ProcessInfo>,
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

    /// The etcd endpoints, comma-separated.
    pub fn endpoints(&self) -> String {
        self.processes.iter().filter(|p| p.role == "master").map(|p| p.client_url.clone()).collect::<Vec<_>>().join(",")
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
        let mut previous = previous;
        add_nodes(&dir, args.nodes, &mut previous.processes);
        return Ok(previous);
    }
    let mut processes = Vec::new();
    for i in 1..=args.masters {
        let name = format!("m{i}");
        processes.push(ProcessInfo {
            role: "master".into(),
            pid: 0,
            peer_url: format!("http://127.0.0.1:{}", free_port()?),
            client_url: format!("http://127.0.0.1:{}", free_port()?),
            api_url: format!("https://127.0.0.1:{}", free_port()?),
            node_ip: String::new(),
            pod_cidr: String::new(),
            data_dir: dir.join(&name),
            log_file: dir.join(format!("{name}.log")),
            name,
        });
    }
    add_nodes(&dir, args.nodes, &mut processes);
    Ok(ClusterFile { token: format!("trireme-up-{}", std::process::id()), processes })
}

/// Node `node-i` gets address 127.0.1.i (its kubelet and NodePorts listen there) and pod IPs
/// from 127.10.i.0/24.
fn add_nodes(dir: &Path, nodes: usize, processes: &mut Vec<ProcessInfo>) {
    processes.retain(|p| p.role == "master");
    for i in 1..=nodes {
        let name = format!("node-{i}");
        processes.push(ProcessInfo {
            role: "node".into(),
            pid: 0,
            peer_url: String::new(),
            client_url: String::new(),
            api_url: String::new(),
            node_ip: format!("127.0.1.{i}"),
            pod_cidr: format!("127.10.{i}.0/24"),
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

fn spawn_master(p: &ProcessInfo, initial_cluster: &str, token: &str) -> Result<Child> {
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
        .args(["--service-cluster-ip-range", UP_SERVICE_RANGE])
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
    let mut cluster = plan(&args)?;
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
    let mut children = Vec::new();
    for p in cluster.processes.iter_mut().filter(|p| p.role == "master") {
        let child = spawn_master(p, &initial_cluster, &cluster.token)?;
        p.pid = child.id().unwrap_or(0);
        children.push((p.name.clone(), child));
    }
    let dir = std::fs::canonicalize(&args.dir)?;
    cluster.save(&dir)?;
    let endpoints = cluster.endpoints();
    wait_ready(&cluster).await?;
    let kubeconfig = write_kubeconfig(&cluster, &dir).await?;
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
        "Trireme is up: {} masters and {nodes} nodes (data, logs and cluster.json in {}).",
        args.masters,
        args.dir.display()
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
    println!("Use it with kubectl (one context per master; the first is current):");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get nodes");
    if let Some(node) = cluster.processes.iter().find(|p| p.role == "node") {
        println!("  kubectl apply -f deploy/examples/hello.yaml      # 3 HTTP servers + a NodePort service");
        println!("  kubectl rollout status deployment/hello && kubectl get pods -o wide");
        println!("  curl http://{}:30080/                          # answered by the pods, round robin", node.node_ip);
        println!("  kubectl logs deployment/hello");
    }
    println!();
    println!("Use the store with etcdctl:");
    println!("  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS={endpoints}");
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

/// Waits for every master's Kubernetes API (its `admin.kubeconfig`), then writes
/// `<dir>/kubeconfig` with a context per master.
async fn write_kubeconfig(cluster: &ClusterFile, dir: &Path) -> Result<PathBuf> {
    let masters: Vec<&ProcessInfo> = cluster.processes.iter().filter(|p| p.role == "master").collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let admin = loop {
        let ready: Vec<Option<String>> =
            masters.iter().map(|p| std::fs::read_to_string(p.data_dir.join("admin.kubeconfig")).ok()).collect();
        if ready.iter().all(Option::is_some) {
            break ready.into_iter().flatten().next().unwrap_or_default();
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the Kubernetes API did not come up on every master within 60 s; see the logs in the --dir");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let servers: Vec<(String, String)> = masters.iter().map(|p| (p.name.clone(), p.api_url.clone())).collect();
    let text =
        trireme_apiserver::kubeconfig::for_servers(&admin, &servers).context("reading a master's admin.kubeconfig")?;
    let path = dir.join("kubeconfig");
    write_atomic(&path, text.as_bytes(), FileOptions::PRIVATE)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Waits until every master answers and they agree on a leader.
async fn wait_ready(cluster: &ClusterFile) -> Result<()> {
    use trireme_etcd::client::status;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut leaders = Vec::new();
        for p in cluster.processes.iter().filter(|p| p.role == "master") {
            leaders.push(status(&p.client_url).await.ok().map(|s| s.leader));
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
