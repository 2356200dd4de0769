//! The kubelet's configuration: who the node is, what it offers, how often it reports.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What the node offers to pods (capacity = allocatable: nothing is reserved for the system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// Thousandths of a core.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u64,
}

impl Capacity {
    /// This machine's cores and memory, 110 pods (Kubernetes' default).
    pub fn of_this_machine() -> Capacity {
        let cores = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024))
            })
            .unwrap_or(1 << 30);
        Capacity { cpu_millis: cores * 1000, memory_bytes, pods: 110 }
    }
}

/// Everything the kubelet needs to know about itself.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The Node's name (`--name`).
    pub node_name: String,
    /// The address the API server reaches this node's kubelet on, and that NodePorts listen
    /// on (`--node-ip`).
    pub node_ip: IpAddr,
    /// The pod CIDR recorded in `spec.podCIDR` (`--pod-cidr`).
    pub pod_cidr: Option<String>,
    pub capacity: Capacity,
    /// Labels added to the Node (`--node-labels k=v,...`).
    pub labels: BTreeMap<String, String>,
    /// Port of the kubelet's HTTPS server for logs (`--kubelet-port`; 0 picks one).
    pub port: u16,
    /// Where pod manifests are checkpointed and service-account tokens written
    /// (`--root-dir`).
    pub root_dir: PathBuf,
    /// How often the node Lease is renewed.
    pub lease_renew_interval: Duration,
    /// How often node status is posted even when nothing changed.
    pub status_interval: Duration,
    /// The cluster CA (PEM), written next to service-account tokens as `ca.crt`.
    pub ca_pem: Option<String>,
    /// The kubelet endpoint's certificate and key files (`--tls-cert-file`,
    /// `--tls-private-key-file`); `None`: a self-signed one.
    pub serving_certificate: Option<(PathBuf, PathBuf)>,
    /// Stop every container when the kubelet stops (`--stop-pods-on-exit`).
    pub stop_pods_on_exit: bool,
    /// "version" of the runtime for `nodeInfo.containerRuntimeVersion`, e.g. "process://0.1.0".
    pub runtime_version: String,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            node_name: String::new(),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            pod_cidr: None,
            capacity: Capacity::of_this_machine(),
            labels: BTreeMap::new(),
            port: 10250,
            root_dir: PathBuf::from("/var/lib/trireme/node"),
            lease_renew_interval: Duration::from_secs(2),
            status_interval: Duration::from_secs(10),
            ca_pem: None,
            serving_certificate: None,
            stop_pods_on_exit: false,
            runtime_version: String::new(),
        }
    }
}

impl KubeletConfig {
    /// Checks rules across fields; messages name the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_name.is_empty() {
            return Err("--name is required".into());
        }
        let problems = trireme_names::dns1123_subdomain(&self.node_name);
        if !problems.is_empty() {
            return Err(format!("--name {:?}: {}", self.node_name, problems.join("; ")));
        }
        if self.capacity.pods == 0 {
            return Err("--max-pods must be at least 1".into());
        }
        if self.lease_renew_interval.is_zero() || self.status_interval.is_zero() {
            return Err("lease and status intervals must be positive".into());
        }
        Ok(())
    }
}

/// DNS-1123 subdomain rules for the node name, without depending on the store-side crates.
mod trireme_names {
    pub fn dns1123_subdomain(name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if name.len() > 253 {
            problems.push("must be no more than 253 characters".to_string());
        }
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !name.chars().all(ok) || !alnum(name.chars().next()) || !alnum(name.chars().last()) {
            problems.push(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_string(),
            );
        }
        problems
    }
}
