//! The scheduler in a running control plane: pods created directly (no controllers involved)
//! are bound to nodes that can take them, and only to those.

mod common;

use std::collections::BTreeMap;

use anyhow::Result;
use common::TestControlPlane;
use common::rt;
use serde_json::Value;
use serde_json::json;

/// A pod in `default` whose one container requests `cpu`, with `spec` merged into its spec.
fn pod(name: &str, cpu: &str, spec: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]},
    });
    if let (Some(base), Some(extra)) = (pod["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    pod
}

/// A Ready node like the harness's, with `spec` as its spec.
fn node_with_spec(name: &str, cpu: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": spec,
        "status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": trireme_registry::now(), "lastTransitionTime": trireme_registry::now()}],
        },
    })
}

/// Pod name → node name, for the pods of `default` that are bound.
async fn placements(cp: &TestControlPlane) -> Result<BTreeMap<String, String>> {
    let pods = cp.list(rt("", "pods"), Some("default")).await?;
    Ok(pods
        .iter()
        .filter_map(|p| {
            let node = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())?;
            Some((p["metadata"]["name"].as_str()?.to_string(), node.to_string()))
        })
        .collect())
}

/// Waits until the pods named `names` are all bound; returns where everything in `default` is.
async fn all_bound(cp: &TestControlPlane, names: &[String]) -> Result<BTreeMap<String, String>> {
    cp.eventually("every pod is bound", || async {
        let placed = placements(cp).await?;
        Ok(names.iter().all(|n| placed.contains_key(n)))
    })
    .await?;
    placements(cp).await
}

fn per_node(placed: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in placed.values() {
        *counts.entry(node.clone()).or_insert(0) += 1;
    }
    counts
}

/// The reason, message and status of a pod's PodScheduled condition.
async fn scheduled_condition(cp: &TestControlPlane, name: &str) -> Result<Option<(String, String, String)>> {
    let pod = cp.get(rt("", "pods"), Some("default"), name).await?;
    let conditions = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
    Ok(conditions.iter().find(|c| c["type"] == "PodScheduled").map(|c| {
        let s = |f: &str| c[f].as_str().unwrap_or_default().to_string();
        (s("status"), s("reason"), s("message"))
    }))
}

/// The events in `default` about `pod` with `reason`.
async fn events(cp: &TestControlPlane, pod: &str, reason: &str) -> Result<Vec<Value>> {
    let events = cp.list(rt("", "events"), Some("default")).await?;
    Ok(events.into_iter().filter(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_one_cpu_pods_fill_three_two_cpu_nodes_without_overcommitting_any() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    tracing::info!("--- three nodes of 2 cpu");
    for name in ["n1", "n2", "n3"] {
        cp.node(name, "2", "4Gi").await?;
    }
    tracing::info!("--- five pods of 1 cpu");
    let names: Vec<String> = (0..5).map(|i| format!("web-{i}")).collect();
    for name in &names {
        cp.create(Some("default"), pod(name, "1", json!({}))).await?;
    }
    let placed = all_bound(&cp, &names).await?;
    let counts = per_node(&placed);
    assert!(counts.values().all(|n| *n <= 2), "no node holds more than its 2 cpu: {counts:?}");
    assert_eq!(counts.len(), 3, "every node got at least one: {counts:?}");

    tracing::info!("--- each pod says it is scheduled, and an event says where");
    for name in &names {
        let condition = scheduled_condition(&cp, name).await?;
        assert_eq!(condition.map(|c| c.0), Some("True".to_string()), "{name}");
    }
    cp.eventually("a Scheduled event per pod", || async {
        for name in &names {
            let scheduled = events(&cp, name, "Scheduled").await?;
            let expected = format!("Successfully assigned default/{name} to {}", placed[name]);
            if !scheduled.iter().any(|e| e["message"] == expected.as_str() && e["type"] == "Normal") {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    cp.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_node_gets_no_pods() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    cp.node("n1", "4", "8Gi").await?;
    cp.node("n2", "4", "8Gi").await?;
    cp.create(None, node_with_spec("cordoned", "64", json!({"unschedulable": true}))).await?;
    let names: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for name in &names {
        cp.create(Some("default"), pod(name, "100m", json!({}))).await?;
    }
    let placed = all_bound(&cp, &names).await?;
    assert!(!placed.values().any(|n| n == "cordoned"), "{placed:?}");

    tracing::info!("--- a pod that must go to the cordoned node is told why it cannot");
    let pinned = pod("pinned", "100m", json!({"nodeSelector": {"kubernetes.io/hostname": "cordoned"}}));
    cp.create(Some("default"), pinned).await?;
    let expected =
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector.";
    cp.eventually("the pinned pod is marked unschedulable", || async {
        Ok(scheduled_condition(&cp, "pinned").await?.is_some_and(|c| c.2 == expected))
    })
    .await?;
    cp.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tainted_node_only_gets_pods_that_tolerate_its_taint() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    cp.node("n1", "4", "8Gi").await?;
    cp.node("n2", "4", "8Gi").await?;
    let taints = json!({"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]});
    cp.create(None, node_with_spec("infra", "64", taints)).await?;

    tracing::info!("--- pods without the toleration avoid the tainted node, the emptiest one");
    let plain: Vec<String> = (0..6).map(|i| format!("plain-{i}")).collect();
    for name in &plain {
        cp.create(Some("default"), pod(name, "100m", json!({}))).await?;
    }
    let placed = all_bound(&cp, &plain).await?;
    assert!(!placed.values().any(|n| n == "infra"), "{placed:?}");

    tracing::info!("--- pods with the toleration may go there");
    let toleration = json!([{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]);
    let tolerant: Vec<String> = (0..2).map(|i| format!("tolerant-{i}")).collect();
    for name in &tolerant {
        let spec = json!({"tolerations": toleration, "nodeSelector": {"kubernetes.io/hostname": "infra"}});
        cp.create(Some("default"), pod(name, "100m", spec)).await?;
    }
    let placed = all_bound(&cp, &tolerant).await?;
    assert!(tolerant.iter().all(|n| placed[n] == "infra"), "{placed:?}");

    tracing::info!("--- a pod pinned there without the toleration is told why it waits");
    cp.create(Some("default"), pod("intolerant", "100m", json!({"nodeSelector": {"kubernetes.io/hostname": "infra"}})))
        .await?;
    let expected = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, 2 node(s) didn't match Pod's node affinity/selector.";
    cp.eventually("the intolerant pod is marked unschedulable", || async {
        Ok(scheduled_condition(&cp, "intolerant").await?.is_some_and(|c| c.2 == expected))
    })
    .await?;
    cp.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_fits_nowhere_waits_and_is_bound_once_a_bigger_node_joins() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    for name in ["n1", "n2", "n3"] {
        cp.node(name, "2", "4Gi").await?;
    }
    cp.create(Some("default"), pod("big", "4", json!({}))).await?;

    tracing::info!("--- no node has 4 cpu: the pod says so");
    cp.eventually("the pod is marked unschedulable", || async {
        Ok(scheduled_condition(&cp, "big").await?.is_some_and(|(status, reason, message)| {
            status == "False"
                && reason == "Unschedulable"
                && message.starts_with("0/3 nodes are available:")
                && message.contains("3 Insufficient cpu")
        }))
    })
    .await?;
    cp.eventually("a FailedScheduling event", || async {
        let failed = events(&cp, "big", "FailedScheduling").await?;
        Ok(failed.iter().any(|e| {
            e["type"] == "Warning" && e["message"].as_str().is_some_and(|m| m.starts_with("0/3 nodes are available:"))
        }))
    })
    .await?;
    assert!(placements(&cp).await?.is_empty());

    tracing::info!("--- a node with 8 cpu joins: the pod goes there");
    cp.node("big-node", "8", "16Gi").await?;
    let placed = all_bound(&cp, &["big".to_string()]).await?;
    assert_eq!(placed["big"], "big-node");
    let condition = scheduled_condition(&cp, "big").await?;
    assert_eq!(condition.map(|c| c.0), Some("True".to_string()));
    cp.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_for_another_scheduler_are_left_alone() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    cp.node("n1", "4", "8Gi").await?;
    cp.create(Some("default"), pod("theirs", "100m", json!({"schedulerName": "other-scheduler"}))).await?;
    cp.create(Some("default"), pod("ours", "100m", json!({}))).await?;
    let placed = all_bound(&cp, &["ours".to_string()]).await?;
    assert!(!placed.contains_key("theirs"), "{placed:?}");
    assert_eq!(scheduled_condition(&cp, "theirs").await?, None, "not even marked");
    cp.shutdown().await;
    Ok(())
}

/// A benchmark, not a check (run it with `--ignored --nocapture`): how fast one scheduler binds
/// pods that are all pending when it starts, onto 1,000 nodes, through a real one-member store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints pods per second"]
async fn scheduling_throughput_onto_a_thousand_nodes() -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use anyhow::Context;
    use tokio_util::sync::CancellationToken;
    use trireme_registry::Registry;
    use trireme_registry::RegistryConfig;
    use trireme_registry::WriteOptions;
    use trireme_registry::events::Recorder;
    use trireme_registry::informer::Informer;
    use trireme_store::Store;
    use trireme_store::StoreConfig;
    use trireme_store::types::Member;

    const NODES: usize = 1000;
    let pods: usize = std::env::var("TRIREME_BENCH_PODS").ok().and_then(|n| n.parse().ok()).unwrap_or(5000);

    let dir = tempfile::TempDir::new()?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let store = Store::open(StoreConfig { id: 1, data_dir: dir.path().join("m1"), ..Default::default() }).await?;
    let member = Member { name: "m1".into(), peer_urls: vec![format!("http://{addr}")], client_urls: vec![] };
    store.initialize(BTreeMap::from([(1, member)])).await?;
    let mut leadership = store.leadership();
    tokio::time::timeout(common::WAIT, leadership.wait_for(Option::is_some)).await.context("no leader")??;
    let registry = Registry::new(store.clone(), RegistryConfig::default());
    registry.bootstrap().await?;

    tracing::info!("--- {NODES} nodes and {pods} pending pods");
    let create = |object: Value, namespace: Option<&'static str>| {
        let registry = registry.clone();
        async move {
            let rt = common::rt_of(&object)?;
            registry.create(rt, namespace, object, &WriteOptions::default()).await?;
            anyhow::Ok(())
        }
    };
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..NODES {
        let mut node = node_with_spec(&format!("node-{i:04}"), "32", json!({}));
        node["status"]["allocatable"]["pods"] = json!("110");
        writes.spawn(create(node, None));
        if writes.len() >= 64 {
            writes.join_next().await.context("a write")???;
        }
    }
    for i in 0..pods {
        writes.spawn(create(pod(&format!("bench-{i:05}"), "100m", json!({})), Some("default")));
        if writes.len() >= 64 {
            writes.join_next().await.context("a write")???;
        }
    }
    while let Some(done) = writes.join_next().await {
        done??;
    }

    tracing::info!("--- schedule them all");
    let pod_informer = Informer::<trireme_model::kinds::Pods>::new();
    let node_informer = Informer::<trireme_model::kinds::Nodes>::new();
    let bound = Arc::new(AtomicUsize::new(0));
    let counter = bound.clone();
    pod_informer.subscribe(move |event| {
        let bound = |pod: &k8s_openapi::api::core::v1::Pod| {
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty())
        };
        let was = event.old.as_deref().is_some_and(bound);
        let is = bound(&event.object);
        if is && !was {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let recorder = Recorder::new(registry.clone(), "default-scheduler");
    let scheduler =
        trireme_scheduler::Scheduler::new(registry.clone(), pod_informer.clone(), node_informer.clone(), recorder);
    let stop = CancellationToken::new();
    tokio::spawn(pod_informer.clone().run(registry.clone(), stop.clone()));
    tokio::spawn(node_informer.clone().run(registry.clone(), stop.clone()));
    tokio::spawn(scheduler.run(stop.clone()));
    pod_informer.synced().await;
    node_informer.synced().await;
    let started = Instant::now();
    let deadline = started + std::time::Duration::from_secs(600);
    while bound.load(Ordering::Relaxed) < pods && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let done = bound.load(Ordering::Relaxed);
    println!(
        "scheduled {done}/{pods} pods onto {NODES} nodes in {:.2} s: {:.0} pods/s",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64()
    );
    stop.cancel();
    store.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_pod_takes_the_room_a_deleted_or_finished_pod_leaves() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    cp.node("n1", "2", "4Gi").await?;
    let first: Vec<String> = vec!["a".into(), "b".into()];
    for name in &first {
        cp.create(Some("default"), pod(name, "1", json!({}))).await?;
    }
    all_bound(&cp, &first).await?;
    cp.create(Some("default"), pod("c", "1", json!({}))).await?;
    cp.create(Some("default"), pod("d", "1", json!({}))).await?;
    for name in ["c", "d"] {
        cp.eventually("the late pods wait", || async {
            Ok(scheduled_condition(&cp, name)
                .await?
                .is_some_and(|c| c.2 == "0/1 nodes are available: 1 Insufficient cpu."))
        })
        .await?;
    }

    tracing::info!("--- a is deleted: one of the waiting pods takes its place");
    let options = trireme_registry::DeleteOptions { grace_period_seconds: Some(0), ..Default::default() };
    cp.registry.delete(rt("", "pods"), Some("default"), "a", &options).await?;
    cp.eventually("one late pod is bound", || async {
        let placed = placements(&cp).await?;
        Ok(placed.contains_key("c") || placed.contains_key("d"))
    })
    .await?;
    let placed = placements(&cp).await?;
    assert_eq!(placed.len(), 2, "still room for two only: {placed:?}");

    tracing::info!("--- b finishes: the other takes its place");
    cp.set_pod_status("default", "b", json!({"phase": "Succeeded"})).await?;
    let placed = all_bound(&cp, &["c".to_string(), "d".to_string()]).await?;
    assert_eq!(placed.len(), 3, "b is still there, finished: {placed:?}");
    cp.shutdown().await;
    Ok(())
}
