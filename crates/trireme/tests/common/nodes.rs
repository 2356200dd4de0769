//! Real `trireme node` processes (process runtime) for a test [`Cluster`]: each on a loopback
//! address of its own, with pod IPs from a range of its own. Dropping [`Nodes`] kills the node
//! agents and every container process they started.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;

use anyhow::Context;
use anyhow::Result;
use tokio::process::Child;
use tokio::process::Command;

use super::Cluster;

/// Distinct loopback networks for the clusters of one test binary.
static NEXT_NETWORK: AtomicU32 = AtomicU32::new(0);

/// A loopback network (second octet) and Service range for one test cluster.
pub struct Network {
    pub octet: u32,
}

impl Network {
    pub fn new() -> Network {
        let n = NEXT_NETWORK.fetch_add(1, Ordering::Relaxed);
        Network { octet: 150 + (std::process::id() + n * 7) % 50 }
    }

    /// The `--service-cluster-ip-range` flag for the masters: ClusterIPs on loopback.
    pub fn service_range_flag(&self) -> String {
        format!("--service-cluster-ip-range=127.{}.0.0/16", self.octet + 50)
    }

    pub fn node_ip(&self, i: usize) -> String {
        format!("127.{}.0.{}", self.octet, i)
    }

    pub fn pod_cidr(&self, i: usize) -> String {
        format!("127.{}.{}.0/24", self.octet, i)
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::new()
    }
}

/// One node agent.
pub struct NodeProc {
    pub name: String,
    pub ip: String,
    pub pod_cidr: String,
    pub root: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

/// The node agents of a test cluster.
pub struct Nodes {
    pub nodes: Vec<NodeProc>,
    kubeconfig: PathBuf,
    servers: String,
    extra: Vec<String>,
}

impl Nodes {
    /// Starts `n` nodes (`node-1`..) against every master of `cluster`.
    pub async fn start(cluster: &Cluster, network: &Network, n: usize, extra: &[&str]) -> Result<Nodes> {
        let kubeconfig = cluster.kubeconfig().await?;
        let servers = cluster.masters.iter().map(|m| m.api_url.clone()).collect::<Vec<_>>().join(",");
        let mut nodes =
            Nodes { nodes: Vec::new(), kubeconfig, servers, extra: extra.iter().map(|s| s.to_string()).collect() };
        for i in 1..=n {
            let name = format!("node-{i}");
            nodes.nodes.push(NodeProc {
                ip: network.node_ip(i),
                pod_cidr: network.pod_cidr(i),
                root: cluster.dir.path().join(&name),
                log: cluster.dir.path().join(format!("{name}.log")),
                name,
                child: None,
            });
            nodes.spawn(i - 1)?;
        }
        Ok(nodes)
    }

    /// Adds and starts one more node, named `name`, with the next address of `network`.
    pub fn add(&mut self, network: &Network, name: &str) -> Result<usize> {
        let i = self.nodes.len() + 1;
        let root = self.kubeconfig.parent().context("cluster dir")?.join(name);
        self.nodes.push(NodeProc {
            name: name.to_string(),
            ip: network.node_ip(i),
            pod_cidr: network.pod_cidr(i),
            log: root.with_extension("log"),
            root,
            child: None,
        });
        self.spawn(i - 1)?;
        Ok(i - 1)
    }

    /// Starts node `i` (again, with the same root dir).
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_trireme"))
            .arg("node")
            .args(["--name", &node.name])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--server", &self.servers])
            .args(["--node-ip", &node.ip, "--pod-cidr", &node.pod_cidr, "--kubelet-port", "0"])
            .args(["--cpu", "4", "--memory", "8Gi"])
            .arg("--root-dir")
            .arg(&node.root)
            .args(&self.extra)
            .env("RUST_LOG", "info,trireme_kubelet=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting trireme node")?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i` (its containers keep running, as on a real machine whose kubelet
    /// died) and waits for it to exit.
    pub async fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.start_kill()?;
            tokio::time::timeout(super::WAIT, child.wait()).await.context("node did not exit")??;
        }
        Ok(())
    }

    /// Kills every container process node `i` started (what a machine failure would do).
    pub fn kill_containers(&self, i: usize) {
        kill_containers_under(&self.nodes[i].root);
    }

    /// The last lines of each node's log.
    pub fn log_tails(&self) -> String {
        self.nodes.iter().map(|n| super::tail_of(&n.name, &n.log, 25)).collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
            kill_containers_under(&node.root);
        }
    }
}

/// SIGKILLs every container process node agents recorded below `root`.
pub fn kill_containers_under(root: &std::path::Path) {
    trireme_kubelet::runtime::process::kill_recorded_under(root);
}
