//! The cluster under test: real `trireme master` and `trireme node` processes on loopback,
//! each master on an address of its own behind the fault proxy.
//!
//! Master I (1-based) lives on 127.77.0.I: client (etcd) and Kubernetes API ports there, its
//! real peer port there, and the proxy's port there that it advertises as its peer URL. Node
//! K lives on 127.78.0.K with pod IPs from 127.78.K.0/24; Service ClusterIPs come from
//! 127.79.0.0/16. Every process is registered with the [`reaper`] module.

use std::collections::HashMap;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::etcd;
use crate::ports;
use crate::proxy;
use crate::proxy::FaultProxy;
use crate::reaper;

/// How long a master may take to come up (open its stores, elect, serve the Kubernetes API).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// One master process and where it lives.
pub struct Master {
    /// `m1`, `m2`, ...
    pub name: String,
    /// Its own loopback address.
    pub ip: Ipv4Addr,
    /// Its real peer port (`--listen-peer-urls`).
    pub peer_port: u16,
    /// The proxy's port it advertises as its peer URL.
    pub advertised_peer_port: u16,
    /// etcd API port.
    pub client_port: u16,
    /// Kubernetes API port.
    pub api_port: u16,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// stdout and stderr of every start, appended.
    pub log: PathBuf,
    /// Its Raft member id (from `Maintenance.Status`), 0 until known.
    pub member_id: u64,
    child: Option<Child>,
    paused: bool,
}

impl Master {
    /// Its etcd API URL.
    pub fn client_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    /// Its Kubernetes API URL.
    pub fn api_url(&self) -> String {
        format!("https://{}:{}", self.ip, self.api_port)
    }

    /// Whether the process is running and not stopped.
    pub fn live(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    fn pid(&self) -> Option<Pid> {
        let id = self.child.as_ref()?.id()?;
        Some(Pid::from_raw(i32::try_from(id).ok()?))
    }
}

/// One node agent process.
pub struct Node {
    /// `n1`, `n2`, ...
    pub name: String,
    /// `--node-ip`.
    pub ip: Ipv4Addr,
    /// `--pod-cidr`.
    pub pod_cidr: String,
    /// `--root-dir`.
    pub root: PathBuf,
    /// stdout and stderr, appended.
    pub log: PathBuf,
    child: Option<Child>,
}

/// The running cluster. Dropping it kills every process it started.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    token: String,
    initial_cluster: String,
    peer_source: bool,
    /// The masters, `m1` first.
    pub masters: Vec<Master>,
    /// The node agents.
    pub nodes: Vec<Node>,
    /// The proxies between the masters.
    pub proxy: FaultProxy,
}

/// The Service ClusterIP range: loopback, so node proxies can listen on ClusterIPs here.
pub const SERVICE_RANGE: &str = "127.79.0.0/16";

impl Cluster {
    /// Starts `masters` masters in `dir`, waits for a leader and for every master's
    /// Kubernetes API (its `admin.kubeconfig`). With `peer_source`, every master makes its peer
    /// connections from its own address (`--peer-source-address`), which partitions need.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        masters: usize,
        seed: u64,
        peer_source: bool,
        shutdown: CancellationToken,
    ) -> Result<Cluster> {
        let mut planned = Vec::new();
        for i in 1..=masters {
            let name = format!("m{i}");
            planned.push(Master {
                ip: Ipv4Addr::new(127, 77, 0, u8::try_from(i)?),
                peer_port: ports::reserve()?,
                advertised_peer_port: ports::reserve()?,
                client_port: ports::reserve()?,
                api_port: ports::reserve()?,
                data_dir: dir.join(&name),
                log: dir.join(format!("{name}.log")),
                member_id: 0,
                child: None,
                paused: false,
                name,
            });
        }
        let endpoints = planned
            .iter()
            .map(|m| proxy::Endpoint {
                ip: IpAddr::V4(m.ip),
                advertised: SocketAddr::new(IpAddr::V4(m.ip), m.advertised_peer_port),
                real: SocketAddr::new(IpAddr::V4(m.ip), m.peer_port),
            })
            .collect();
        let proxy = FaultProxy::start(endpoints, shutdown).await?;
        let initial_cluster = planned
            .iter()
            .map(|m| format!("{}=http://{}:{}", m.name, m.ip, m.advertised_peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            token: format!("chaos-{seed}"),
            initial_cluster,
            peer_source,
            masters: planned,
            nodes: Vec::new(),
            proxy,
        };
        for i in 0..masters {
            cluster.spawn_master(i)?;
        }
        cluster.wait_leader(START_TIMEOUT).await?;
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..masters {
            while !cluster.masters[i].data_dir.join("admin.kubeconfig").exists() {
                cluster.check_alive()?;
                if Instant::now() > deadline {
                    bail!(
                        "{} did not write its admin.kubeconfig; see {}",
                        cluster.masters[i].name,
                        cluster.masters[i].log.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for m in &mut cluster.masters {
            let status = etcd::status(&m.client_url()).await?;
            m.member_id = status.header.map_or(0, |h| h.member_id);
        }
        Ok(cluster)
    }

    fn spawn_master(&mut self, i: usize) -> Result<()> {
        let m = &mut self.masters[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log)?;
        let ip = m.ip.to_string();
        let mut command = Command::new(&self.bin);
        command
            .arg("master")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-peer-urls", &format!("http://{ip}:{}", m.peer_port)])
            .args(["--initial-advertise-peer-urls", &format!("http://{ip}:{}", m.advertised_peer_port)])
            .args(["--listen-client-urls", &m.client_url(), "--advertise-client-urls", &m.client_url()])
            .args(["--listen-api-urls", &m.api_url()])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new", "--auto-compaction-retention", "0"])
            .args(["--service-cluster-ip-range", SERVICE_RANGE]);
        if self.peer_source {
            command.args(["--peer-source-address", &ip]);
        }
        let child = command
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} master", self.bin.display()))?;
        if let Some(pid) = child.id() {
            reaper::register(pid);
        }
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    /// Fails if a master or node that should be running has exited on its own.
    pub fn check_alive(&mut self) -> Result<()> {
        for m in &mut self.masters {
            if let Some(child) = m.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{} exited on its own ({status}); last lines of {}:\n{}",
                    m.name,
                    m.log.display(),
                    tail(&m.log, 30)
                );
            }
        }
        for n in &mut self.nodes {
            if let Some(child) = n.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "node {} exited on its own ({status}); last lines of {}:\n{}",
                    n.name,
                    n.log.display(),
                    tail(&n.log, 30)
                );
            }
        }
        Ok(())
    }

    /// Masters and node agents that exited on their own (a crash: the suite only kills with
    /// SIGKILL, and forgets those): each is described with its log's last lines and started
    /// again.
    pub fn restart_exited(&mut self) -> Result<Vec<String>> {
        let mut crashed = Vec::new();
        for i in 0..self.masters.len() {
            let m = &mut self.masters[i];
            if let Some(child) = m.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                crashed.push(format!("{} exited on its own ({status}):\n{}", m.name, tail(&m.log, 20)));
                m.child = None;
                self.spawn_master(i)?;
            }
        }
        for k in 0..self.nodes.len() {
            let n = &mut self.nodes[k];
            if let Some(child) = n.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                crashed.push(format!("node agent {} exited on its own ({status}):\n{}", n.name, tail(&n.log, 20)));
                n.child = None;
                self.spawn_node(k)?;
            }
        }
        Ok(crashed)
    }

    /// SIGKILLs master `i` and waits for it to exit.
    pub async fn kill_master(&mut self, i: usize) -> Result<()> {
        let m = &mut self.masters[i];
        if let Some(mut child) = m.child.take() {
            let pid = child.id();
            child.start_kill()?;
            tokio::time::timeout(Duration::from_secs(30), child.wait()).await.context("master did not die")??;
            if let Some(pid) = pid {
                reaper::forget(pid);
            }
        }
        m.paused = false;
        Ok(())
    }

    /// Starts master `i` again with the same command and data dir.
    pub fn restart_master(&mut self, i: usize) -> Result<()> {
        self.spawn_master(i)
    }

    /// SIGSTOPs master `i`.
    pub fn pause_master(&mut self, i: usize) -> Result<()> {
        let pid = self.masters[i].pid().context("master not running")?;
        kill(pid, Signal::SIGSTOP)?;
        self.masters[i].paused = true;
        Ok(())
    }

    /// SIGCONTs master `i`.
    pub fn resume_master(&mut self, i: usize) -> Result<()> {
        if let Some(pid) = self.masters[i].pid() {
            kill(pid, Signal::SIGCONT)?;
        }
        self.masters[i].paused = false;
        Ok(())
    }

    /// The index of the master every live master names as leader, once they agree (a master
    /// that does not answer within a second does not count as live for this).
    pub async fn wait_leader(&mut self, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.leader().await {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!("no leader all live masters agree on within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The agreed leader now, if every live master answers and names the same live master.
    pub async fn leader(&self) -> Option<usize> {
        let live: Vec<&Master> = self.masters.iter().filter(|m| m.live()).collect();
        let urls: Vec<String> = live.iter().map(|m| m.client_url()).collect();
        let answers = futures::future::join_all(urls.iter().map(|url| etcd::status(url))).await;
        let mut leader = None;
        let mut ids = HashMap::new();
        for (m, answer) in live.iter().zip(answers) {
            let status = answer.ok()?;
            let me = status.header.map_or(0, |h| h.member_id);
            ids.insert(me, m.name.clone());
            if status.leader == 0 || leader.is_some_and(|l| l != status.leader) {
                return None;
            }
            leader = Some(status.leader);
        }
        let name = ids.get(&leader?)?;
        self.masters.iter().position(|m| &m.name == name)
    }

    /// Starts `n` node agents against every master.
    pub fn start_nodes(&mut self, n: usize) -> Result<()> {
        for k in 1..=n {
            let name = format!("n{k}");
            let root = self.dir.join(&name);
            reaper::register_root(&root, &self.bin);
            self.nodes.push(Node {
                ip: Ipv4Addr::new(127, 78, 0, u8::try_from(k)?),
                pod_cidr: format!("127.78.{k}.0/24"),
                log: self.dir.join(format!("{name}.log")),
                root,
                child: None,
                name,
            });
            self.spawn_node(k - 1)?;
        }
        Ok(())
    }

    fn spawn_node(&mut self, k: usize) -> Result<()> {
        let servers = self.api_urls().join(",");
        let kubeconfig = self.kubeconfig();
        let node = &mut self.nodes[k];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let child = Command::new(&self.bin)
            .arg("node")
            .args(["--name", &node.name])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--server", &servers])
            .args(["--node-ip", &node.ip.to_string(), "--pod-cidr", &node.pod_cidr, "--kubelet-port", "0"])
            .args(["--cpu", "4", "--memory", "8Gi"])
            .arg("--root-dir")
            .arg(&node.root)
            .arg("--stop-pods-on-exit")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting trireme node")?;
        if let Some(pid) = child.id() {
            reaper::register(pid);
        }
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILLs node agent `k` (its containers keep running) and waits for it to exit.
    pub async fn kill_node(&mut self, k: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[k].child.take() {
            let pid = child.id();
            child.start_kill()?;
            tokio::time::timeout(Duration::from_secs(30), child.wait()).await.context("node did not die")??;
            if let Some(pid) = pid {
                reaper::forget(pid);
            }
        }
        Ok(())
    }

    /// Starts node agent `k` again with the same root dir (it adopts its containers).
    pub fn restart_node(&mut self, k: usize) -> Result<()> {
        self.spawn_node(k)
    }

    /// Master `m1`'s admin kubeconfig (token and CA; every master's serving certificate is
    /// signed by the same CA).
    pub fn kubeconfig(&self) -> PathBuf {
        self.masters[0].data_dir.join("admin.kubeconfig")
    }

    /// Every master's Kubernetes API URL.
    pub fn api_urls(&self) -> Vec<String> {
        self.masters.iter().map(Master::api_url).collect()
    }

    /// Every master's etcd API URL.
    pub fn client_urls(&self) -> Vec<String> {
        self.masters.iter().map(Master::client_url).collect()
    }

    /// Kills every master, node agent and container process of this cluster.
    pub async fn stop(&mut self) {
        for i in 0..self.masters.len() {
            let _ = self.resume_master(i);
            let _ = self.kill_master(i).await;
        }
        for k in 0..self.nodes.len() {
            let _ = self.kill_node(k).await;
            reaper::kill_containers_under(&self.nodes[k].root, &self.bin);
            reaper::kill_under(&self.nodes[k].root);
        }
        self.proxy.heal();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.masters {
            if let Some(child) = m.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        for n in &mut self.nodes {
            if let Some(child) = n.child.as_mut() {
                let _ = child.start_kill();
            }
            reaper::kill_containers_under(&n.root, &self.bin);
            reaper::kill_under(&n.root);
        }
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether this `trireme` binary has `master --peer-source-address` (needed for partitions).
pub async fn supports_peer_source_address(bin: &Path) -> Result<bool> {
    let out = Command::new(bin)
        .args(["master", "--help"])
        .output()
        .await
        .with_context(|| format!("running {} master --help", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("--peer-source-address"))
}
