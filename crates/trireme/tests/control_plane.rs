//! The scheduler and the controllers on three real masters, with fake nodes: Node objects
//! whose Leases the test renews and a stand-in kubelet that marks bound pods Running and Ready
//! (and finishes graceful deletions), so deployments, rollouts, failover and fencing can be
//! checked with the real kubectl and the kube crate.

mod common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use anyhow::ensure;
use common::Cluster;
use common::ok;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::Client;
use kube::api::DeleteParams;
use kube::api::ListParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kube::config::KubeConfigOptions;
use kube::config::Kubeconfig;
use nix::sys::signal::Signal;
use serde_json::json;

async fn connect(cluster: &Cluster, context: &str) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig().await?)?;
    let options = KubeConfigOptions { context: Some(context.to_string()), ..Default::default() };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok(Client::try_from(config)?)
}

fn micro_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// Fake nodes and a stand-in kubelet for them.
struct FakeNodes {
    /// Nodes whose Leases are renewed; a node removed from here stops heartbeating.
    alive: Arc<Mutex<BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FakeNodes {
    async fn start(client: Client, nodes: &[(&str, &str)]) -> Result<FakeNodes> {
        let node_api: Api<Node> = Api::all(client.clone());
        for (name, cpu) in nodes {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "status": {
                    "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                    "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "nodeInfo": {"kubeletVersion": "v1.33.0-fake"},
                },
            }))?;
            node_api.create(&PostParams::default(), &node).await?;
        }
        let alive: Arc<Mutex<BTreeSet<String>>> =
            Arc::new(Mutex::new(nodes.iter().map(|(n, _)| n.to_string()).collect()));
        let mut tasks = Vec::new();
        let (beat_client, beat_alive) = (client.clone(), alive.clone());
        tasks.push(tokio::spawn(async move {
            let leases: Api<Lease> = Api::namespaced(beat_client, "kube-node-lease");
            loop {
                let names: Vec<String> = beat_alive.lock().map(|a| a.iter().cloned().collect()).unwrap_or_default();
                for name in names {
                    let lease = json!({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name, "namespace": "kube-node-lease"},
                        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()},
                    });
                    let params = PatchParams::apply("fake-kubelet").force();
                    let _ = leases.patch(&name, &params, &Patch::Apply(&lease)).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
        let (kubelet_client, kubelet_alive) = (client, alive.clone());
        tasks.push(tokio::spawn(async move {
            let pods: Api<Pod> = Api::all(kubelet_client.clone());
            let mut ip = 10u32;
            loop {
                let alive: BTreeSet<String> = kubelet_alive.lock().map(|a| a.clone()).unwrap_or_default();
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for pod in list.items {
                        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                        if !alive.contains(&node) {
                            continue;
                        }
                        let ns = pod.metadata.namespace.clone().unwrap_or_default();
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let api: Api<Pod> = Api::namespaced(kubelet_client.clone(), &ns);
                        if pod.metadata.deletion_timestamp.is_some() {
                            let _ = api
                                .delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
                                .await;
                            continue;
                        }
                        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                        if !running {
                            ip += 1;
                            let status = json!({"status": {
                                "phase": "Running",
                                "podIP": format!("10.244.{}.{}", ip / 250, ip % 250 + 1),
                                "hostIP": "127.0.0.1",
                                "conditions": [
                                    {"type": "PodScheduled", "status": "True"},
                                    {"type": "Initialized", "status": "True"},
                                    {"type": "ContainersReady", "status": "True"},
                                    {"type": "Ready", "status": "True"},
                                ],
                            }});
                            let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
        Ok(FakeNodes { alive, tasks })
    }

    fn stop_heartbeat(&self, node: &str) {
        if let Ok(mut alive) = self.alive.lock() {
            alive.remove(node);
        }
    }
}

impl Drop for FakeNodes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 5
  selector:
    matchLabels: {app: web}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        resources:
          requests: {cpu: 500m}
"#;

/// Pods of the deployment by node, and the count of live (not deleting) pods.
async fn pods_by_node(pods: &Api<Pod>) -> Result<(BTreeMap<String, usize>, usize)> {
    let list = pods.list(&ListParams::default().labels("app=web")).await?;
    let mut by_node = BTreeMap::new();
    let mut live = 0;
    for pod in &list.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        live += 1;
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *by_node.entry(node).or_insert(0) += 1;
        }
    }
    Ok((by_node, live))
}

async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        // One check may hang on a paused master: each gets a few seconds.
        if matches!(tokio::time::timeout(Duration::from_secs(5), check()).await, Ok(Ok(true))) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deployment_done(deploys: &Api<Deployment>, replicas: i32) -> Result<bool> {
    let d = deploys.get("web").await?;
    let (spec, status) = (d.spec.unwrap_or_default(), d.status.unwrap_or_default());
    Ok(status.observed_generation >= d.metadata.generation
        && spec.replicas == Some(replicas)
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_spreads_rolls_scales_and_survives_the_loss_of_a_node() -> Result<()> {
    let cluster = Cluster::start_with(3, &["--node-monitor-grace-period=2s", "--pod-eviction-timeout=2s"]).await?;
    let client = connect(&cluster, "m1").await?;
    let nodes = FakeNodes::start(client.clone(), &[("n1", "2"), ("n2", "2"), ("n3", "2")]).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");

    eprintln!("--- 5 replicas spread over 3 nodes within capacity");
    ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(WEB)).await?)?;
    wait_until("5 available replicas", || deployment_done(&deploys, 5)).await?;
    let (by_node, live) = pods_by_node(&pods).await?;
    ensure!(live == 5 && by_node.len() == 3, "spread: {by_node:?}");
    ensure!(by_node.values().all(|n| *n <= 4), "500m each on 2 cpu nodes: at most 4 per node: {by_node:?}");
    let status = ok(cluster.kubectl(&["rollout", "status", "deploy/web", "--timeout=30s"]).await?)?;
    ensure!(status.contains("successfully rolled out"), "{status}");

    eprintln!("--- a rolling update never exceeds replicas + maxSurge live pods");
    let watcher_pods = pods.clone();
    let peak = Arc::new(Mutex::new(0usize));
    let peak_w = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            if let Ok((_, live)) = pods_by_node(&watcher_pods).await
                && let Ok(mut p) = peak_w.lock()
            {
                *p = (*p).max(live);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    ok(cluster.kubectl(&["set", "image", "deploy/web", "web=nginx:1.27"]).await?)?;
    let status = ok(cluster.kubectl(&["rollout", "status", "deploy/web", "--timeout=40s"]).await?)?;
    ensure!(status.contains("successfully rolled out"), "{status}");
    sampler.abort();
    let peak = peak.lock().map(|p| *p).unwrap_or_default();
    ensure!(peak <= 6, "at most replicas + maxSurge = 6 live pods during the rollout, saw {peak}");
    let history = ok(cluster.kubectl(&["rollout", "history", "deploy/web"]).await?)?;
    ensure!(history.contains('1') && history.contains('2'), "{history}");

    eprintln!("--- rollout undo brings the previous template back");
    ok(cluster.kubectl(&["rollout", "undo", "deploy/web"]).await?)?;
    let status = ok(cluster.kubectl(&["rollout", "status", "deploy/web", "--timeout=40s"]).await?)?;
    ensure!(status.contains("successfully rolled out"), "{status}");
    let image = ok(cluster
        .kubectl(&["get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"])
        .await?)?;
    ensure!(image == "nginx:1.25", "{image}");

    eprintln!("--- scale 5 → 0 → 3");
    ok(cluster.kubectl(&["scale", "deploy/web", "--replicas=0"]).await?)?;
    wait_until("no pods", || async { Ok(pods_by_node(&pods).await?.1 == 0) }).await?;
    ok(cluster.kubectl(&["scale", "deploy/web", "--replicas=3"]).await?)?;
    wait_until("3 available", || deployment_done(&deploys, 3)).await?;

    eprintln!("--- a node that stops heartbeating loses its pods to the others");
    let (by_node, _) = pods_by_node(&pods).await?;
    let victim = by_node.keys().next().context("a node with pods")?.clone();
    nodes.stop_heartbeat(&victim);
    wait_until("the dead node's pods replaced elsewhere", || async {
        let (by_node, live) = pods_by_node(&pods).await?;
        Ok(live == 3 && !by_node.contains_key(&victim))
    })
    .await?;
    let node = ok(cluster.kubectl(&["get", "node", &victim, "-o", "jsonpath={.spec.taints[*].key}"]).await?)?;
    ensure!(node.contains("node.kubernetes.io/unreachable"), "taints: {node}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_honours_cordons_taints_and_reports_why_a_pod_does_not_fit() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let client = connect(&cluster, "m1").await?;
    let _nodes = FakeNodes::start(client.clone(), &[("n1", "1"), ("n2", "1"), ("n3", "1")]).await?;
    ok(cluster.kubectl(&["cordon", "n1"]).await?)?;
    ok(cluster.kubectl(&["taint", "node", "n2", "dedicated=db:NoSchedule"]).await?)?;
    let pod = |name: &str, cpu: &str, toleration: bool| {
        let tolerations = if toleration {
            "  tolerations:\n  - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}\n"
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{tolerations}  containers:\n  - name: c\n    image: x\n    resources:\n      requests: {{cpu: {cpu}}}\n"
        )
    };
    ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(&pod("plain", "100m", false))).await?)?;
    ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(&pod("tolerant", "100m", true))).await?)?;
    ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(&pod("huge", "4", false))).await?)?;
    let node_of = |name: &'static str| {
        let cluster = &cluster;
        async move { ok(cluster.kubectl(&["get", "pod", name, "-o", "jsonpath={.spec.nodeName}"]).await?) }
    };
    wait_until("plain bound", || async { Ok(!node_of("plain").await?.is_empty()) }).await?;
    ensure!(node_of("plain").await? == "n3", "not on the cordoned n1 nor the tainted n2");
    wait_until("tolerant bound", || async { Ok(!node_of("tolerant").await?.is_empty()) }).await?;
    ensure!(node_of("tolerant").await? != "n1");
    wait_until("huge reported unschedulable", || async {
        let described = ok(cluster.kubectl(&["describe", "pod", "huge"]).await?)?;
        Ok(described.contains("0/3 nodes are available") && described.contains("Insufficient cpu"))
    })
    .await?;
    ensure!(node_of("huge").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_finishes_a_rollout_and_a_paused_old_leader_cannot_write() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.wait_leader().await?;
    let other = (leader + 1) % 3;
    let client = connect(&cluster, &format!("m{}", other + 1)).await?;
    let _nodes = FakeNodes::start(client.clone(), &[("n1", "4"), ("n2", "4"), ("n3", "4")]).await?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ctx = format!("m{}", other + 1);
    ok(cluster.kubectl_with_input(&["--context", &ctx, "apply", "-f", "-"], Some(WEB)).await?)?;
    wait_until("5 available", || deployment_done(&deploys, 5)).await?;

    // Every pod's node, as seen by a watcher: a pod must never move to a second node.
    let bindings: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let rebound: Arc<Mutex<Vec<String>>> = Arc::default();
    let (b, r, watch_pods) = (bindings.clone(), rebound.clone(), pods.clone());
    let recorder = tokio::spawn(async move {
        loop {
            if let Ok(list) = watch_pods.list(&ListParams::default()).await {
                for pod in list.items {
                    let (Some(uid), Some(node)) = (pod.metadata.uid, pod.spec.and_then(|s| s.node_name)) else {
                        continue;
                    };
                    if let (Ok(mut b), Ok(mut r)) = (b.lock(), r.lock())
                        && let Some(previous) = b.insert(uid.clone(), node.clone())
                        && previous != node
                    {
                        r.push(format!("{uid}: {previous} then {node}"));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    eprintln!("--- SIGKILL the leader in the middle of a rollout");
    ok(cluster.kubectl(&["--context", &ctx, "set", "image", "deploy/web", "web=nginx:1.27"]).await?)?;
    cluster.signal(leader, Signal::SIGKILL).await?;
    wait_until("the new leader finishes the rollout", || deployment_done(&deploys, 5)).await?;
    let list = pods.list(&ListParams::default().labels("app=web")).await?;
    let images: BTreeSet<String> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter().filter_map(|c| c.image.clone())))
        .collect();
    ensure!(images == BTreeSet::from(["nginx:1.27".to_string()]), "{images:?}");
    recorder.abort();
    let rebound = rebound.lock().map(|r| r.clone()).unwrap_or_default();
    ensure!(rebound.is_empty(), "pods bound twice: {rebound:?}");
    ensure!(bindings.lock().map(|b| b.len()).unwrap_or(0) >= 5, "the recorder saw the pods");
    cluster.restart(leader)?;

    eprintln!("--- SIGSTOP the current leader; once another leads, SIGCONT it: its writes are refused");
    let paused = cluster.wait_leader().await?;
    cluster.signal(paused, Signal::SIGSTOP).await?;
    let observer = connect(&cluster, &format!("m{}", (paused + 1) % 3 + 1)).await?;
    let leases: Api<Lease> = Api::namespaced(observer, "kube-system");
    let paused_name = format!("m{}", paused + 1);
    wait_until("another master holds the scheduler lease", || {
        let (leases, paused_name) = (leases.clone(), paused_name.clone());
        async move {
            let lease = leases.get("kube-scheduler").await?;
            let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
            Ok(!holder.is_empty() && holder != paused_name)
        }
    })
    .await?;
    cluster.signal(paused, Signal::SIGCONT).await?;
    for _ in 0..30 {
        let lease = tokio::time::timeout(Duration::from_secs(5), leases.get("kube-scheduler")).await??;
        let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
        ensure!(holder != paused_name, "the resumed old leader wrote the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
