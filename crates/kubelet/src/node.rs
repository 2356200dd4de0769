//! The Node object and its heartbeat: registration, the Lease in `kube-node-lease`, and the
//! status (capacity, addresses, conditions) the node lifecycle controller and `kubectl get
//! nodes` read.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::core::v1::DaemonEndpoint;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::NodeAddress;
use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::api::core::v1::NodeDaemonEndpoints;
use k8s_openapi::api::core::v1::NodeSpec;
use k8s_openapi::api::core::v1::NodeStatus;
use k8s_openapi::api::core::v1::NodeSystemInfo;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::Client;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

use crate::config::KubeletConfig;

/// The kubelet version reported in `nodeInfo` (what `kubectl get nodes` shows as VERSION).
pub const KUBELET_VERSION: &str = "v1.33.0-trireme";

/// How long a lease is valid for without renewal (what `kubectl describe node` shows).
const LEASE_DURATION_SECONDS: i32 = 40;

/// The Node this kubelet registers.
pub fn desired_node(config: &KubeletConfig, kubelet_port: u16) -> Node {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname".to_string(), config.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch().to_string()),
    ]
    .into();
    labels.extend(config.labels.clone());
    Node {
        metadata: ObjectMeta { name: Some(config.node_name.clone()), labels: Some(labels), ..Default::default() },
        spec: Some(NodeSpec {
            pod_cidr: config.pod_cidr.clone(),
            pod_cidrs: config.pod_cidr.clone().map(|c| vec![c]),
            ..Default::default()
        }),
        status: Some(node_status(config, kubelet_port, Timestamp::now())),
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The status this kubelet posts: capacity, addresses, nodeInfo and the conditions, with
/// heartbeat times `now`.
pub fn node_status(config: &KubeletConfig, kubelet_port: u16, now: Timestamp) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(format!("{}m", config.capacity.cpu_millis))),
        ("memory".to_string(), Quantity(format!("{}Ki", config.capacity.memory_bytes / 1024))),
        ("pods".to_string(), Quantity(config.capacity.pods.to_string())),
        ("ephemeral-storage".to_string(), Quantity("10Gi".to_string())),
    ]
    .into();
    let time = Time(now);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(time.clone()),
        last_transition_time: Some(time.clone()),
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: config.node_ip.to_string() },
            NodeAddress { type_: "Hostname".into(), address: config.node_name.clone() },
        ]),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(kubelet_port) }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: arch().to_string(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string(),
            container_runtime_version: config.runtime_version.clone(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            kube_proxy_version: KUBELET_VERSION.to_string(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim().to_string(),
            operating_system: "linux".to_string(),
            os_image: os_image(),
            system_uuid: config.node_name.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_else(|| "Linux".to_string())
}

/// Creates the Node, or brings an existing one (a restarted kubelet) up to date.
pub async fn register(client: &Client, config: &KubeletConfig, kubelet_port: u16) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = desired_node(config, kubelet_port);
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %config.node_name, "registered the node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = serde_json::json!({
                "metadata": { "labels": node.metadata.labels },
                "spec": { "podCIDR": config.pod_cidr, "podCIDRs": config.pod_cidr.as_ref().map(|c| vec![c]) },
            });
            nodes.patch(&config.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            tracing::info!(node = %config.node_name, "the node was registered before; updated it");
        }
        Err(e) => return Err(e),
    }
    post_status(client, config, kubelet_port).await
}

/// Posts the node status (a merge patch of the status subresource).
pub async fn post_status(client: &Client, config: &KubeletConfig, kubelet_port: u16) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = node_status(config, kubelet_port, Timestamp::now());
    let patch = serde_json::json!({ "status": status });
    nodes.patch_status(&config.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Renews the node's Lease until `shutdown`, creating it when missing. Errors (no master
/// answers) are logged and retried at the next tick.
pub async fn renew_lease(client: Client, config: KubeletConfig, shutdown: CancellationToken) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(config.lease_renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match renew_once(&leases, &config).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("renewing the node lease again");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot renew the node lease; pods keep running, retrying");
            }
            Err(_) => {}
        }
    }
}

async fn renew_once(leases: &Api<Lease>, config: &KubeletConfig) -> Result<(), kube::Error> {
    let now = MicroTime(Timestamp::now());
    let patch = serde_json::json!({ "spec": { "renewTime": now, "holderIdentity": config.node_name } });
    match leases.patch(&config.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(config.node_name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.node_name.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Posts node status every `status_interval` (and registers the node again if it was deleted)
/// until `shutdown`.
pub async fn keep_status(client: Client, config: KubeletConfig, kubelet_port: u16, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = match post_status(&client, &config, kubelet_port).await {
            Err(kube::Error::Api(e)) if e.code == 404 => register(&client, &config, kubelet_port).await,
            other => other,
        };
        if let Err(error) = result {
            tracing::debug!(%error, "cannot post node status; retrying");
        }
    }
}
