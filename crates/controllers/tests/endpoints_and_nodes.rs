//! The endpoints and node lifecycle controllers in a running control plane: Services get
//! Endpoints and EndpointSlices that follow their pods; a node whose Lease stops is marked
//! unreachable and its pods evicted, and is untainted when its Lease resumes.
//!
//! Pods are created already bound (`spec.nodeName`) and their status is written as a kubelet
//! would; node Leases are renewed by a task of the test.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::TestControlPlane;
use common::rt;
use serde_json::Value;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use trireme_controllers::ControlPlaneConfig;
use trireme_registry::DeleteOptions;
use trireme_registry::Registry;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;

/// How often the test's "kubelets" renew their Leases.
const RENEW_EVERY: Duration = Duration::from_millis(200);

fn config() -> ControlPlaneConfig {
    ControlPlaneConfig {
        node_monitor_grace: Duration::from_secs(1),
        pod_eviction_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// A Lease `renewTime` (MicroTime): now, to the microsecond, so each renewal differs.
fn micro_now() -> String {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_micros());
    let seconds = trireme_registry::now();
    format!("{}.{micros:06}Z", seconds.trim_end_matches('Z'))
}

/// Creates the node's Lease and renews it, as its kubelet would, until the token is cancelled.
async fn renew_lease(registry: Registry, node: &str) -> Result<CancellationToken> {
    let leases = rt("coordination.k8s.io", "leases");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": micro_now()},
    });
    match registry.create(leases, Some("kube-node-lease"), lease, &WriteOptions::default()).await {
        Ok(_) | Err(trireme_registry::RegistryError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let stop = CancellationToken::new();
    let (token, node) = (stop.clone(), node.to_string());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(RENEW_EVERY) => {}
            }
            let renew = |current: &Value| {
                let mut next = current.clone();
                next["spec"]["renewTime"] = json!(micro_now());
                Ok(next)
            };
            let options = WriteOptions::default();
            if let Err(e) =
                registry.update_with(leases, Some("kube-node-lease"), &node, Scope::Main, &options, renew, None).await
            {
                tracing::warn!(node, error = %e, "lease renewal failed");
            }
        }
    });
    Ok(stop)
}

fn pod(name: &str, node: &str, labels: Value, ports: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx", "ports": ports}]},
    })
}

fn running(ip: &str, ready: bool) -> Value {
    json!({
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    })
}

fn ips(addresses: &Value) -> Vec<String> {
    let mut ips: Vec<String> =
        addresses.as_array().into_iter().flatten().filter_map(|a| a["ip"].as_str().map(str::to_string)).collect();
    ips.sort();
    ips
}

/// Every ready and not-ready address of an Endpoints object, over its subsets.
fn addresses(endpoints: &Value) -> (Vec<String>, Vec<String>) {
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        ready.extend(ips(&subset["addresses"]));
        not_ready.extend(ips(&subset["notReadyAddresses"]));
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

/// The endpoints of the service's slices: (ip, ready, terminating), sorted.
async fn slice_endpoints(cp: &TestControlPlane, service: &str) -> Result<Vec<(String, bool, bool)>> {
    let mut out = Vec::new();
    for slice in cp.list(rt("discovery.k8s.io", "endpointslices"), Some("default")).await? {
        if slice["metadata"]["labels"]["kubernetes.io/service-name"] != service {
            continue;
        }
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            let ip = endpoint["addresses"][0].as_str().unwrap_or_default().to_string();
            let conditions = &endpoint["conditions"];
            out.push((ip, conditions["ready"] == true, conditions["terminating"] == true));
        }
    }
    out.sort();
    Ok(out)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_gets_endpoints_and_a_slice_that_follow_its_pods() -> Result<()> {
    let cp = TestControlPlane::start_with(config()).await?;
    let endpoints = rt("", "endpoints");
    cp.node("n1", "4", "8Gi").await?;
    let lease = renew_lease(cp.registry.clone(), "n1").await?;

    tracing::info!("--- a service over a ready pod, a not-ready one, one without an IP and an unselected one");
    cp.create(
        Some("default"),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }),
    )
    .await?;
    let web = json!({"app": "web"});
    for name in ["web-1", "web-2", "web-3"] {
        cp.create(Some("default"), pod(name, "n1", web.clone(), json!([{"containerPort": 8080}]))).await?;
    }
    cp.create(Some("default"), pod("db-1", "n1", json!({"app": "db"}), json!([]))).await?;
    cp.set_pod_status("default", "web-1", running("10.244.0.11", true)).await?;
    cp.set_pod_status("default", "web-2", running("10.244.0.12", false)).await?;
    cp.set_pod_status("default", "db-1", running("10.244.0.20", true)).await?;

    cp.eventually("endpoints list web-1 as ready and web-2 as not ready", || async {
        let Ok(ep) = cp.get(endpoints, Some("default"), "web").await else { return Ok(false) };
        Ok(addresses(&ep) == (strings(&["10.244.0.11"]), strings(&["10.244.0.12"])))
    })
    .await?;
    let ep = cp.get(endpoints, Some("default"), "web").await?;
    let subset = &ep["subsets"][0];
    assert_eq!(subset["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
    let address = &subset["addresses"][0];
    assert_eq!(address["nodeName"], "n1");
    assert_eq!(address["targetRef"]["kind"], "Pod");
    assert_eq!(address["targetRef"]["name"], "web-1");
    let web_1 = cp.get(rt("", "pods"), Some("default"), "web-1").await?;
    assert_eq!(address["targetRef"]["uid"], web_1["metadata"]["uid"]);
    assert_eq!(ep["metadata"]["ownerReferences"][0]["kind"], "Service");

    cp.eventually("a slice lists the same pods", || async {
        Ok(slice_endpoints(&cp, "web").await?
            == [("10.244.0.11".to_string(), true, false), ("10.244.0.12".to_string(), false, false)])
    })
    .await?;
    let slices = cp.list(rt("discovery.k8s.io", "endpointslices"), Some("default")).await?;
    let slice =
        slices.iter().find(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "web").expect("a slice");
    assert!(slice["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("web-")), "{slice}");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
    assert_eq!(slice["endpoints"][0]["nodeName"], "n1");
    assert_eq!(slice["endpoints"][0]["targetRef"]["name"], "web-1");

    tracing::info!("--- web-2 becomes ready");
    cp.set_pod_status("default", "web-2", running("10.244.0.12", true)).await?;
    cp.eventually("both pods are ready addresses", || async {
        let ep = cp.get(endpoints, Some("default"), "web").await?;
        Ok(addresses(&ep) == (strings(&["10.244.0.11", "10.244.0.12"]), vec![]))
    })
    .await?;
    cp.eventually("both pods are ready in the slice", || async {
        Ok(slice_endpoints(&cp, "web").await?
            == [("10.244.0.11".to_string(), true, false), ("10.244.0.12".to_string(), true, false)])
    })
    .await?;

    tracing::info!("--- web-1 is deleted gracefully (terminating), web-2 at once");
    let pods = rt("", "pods");
    cp.registry.delete(pods, Some("default"), "web-1", &DeleteOptions::default()).await?;
    cp.eventually("a terminating pod leaves the endpoints and is terminating in the slice", || async {
        let ep = cp.get(endpoints, Some("default"), "web").await?;
        Ok(addresses(&ep) == (strings(&["10.244.0.12"]), vec![])
            && slice_endpoints(&cp, "web").await?
                == [("10.244.0.11".to_string(), false, true), ("10.244.0.12".to_string(), true, false)])
    })
    .await?;
    let now = DeleteOptions { grace_period_seconds: Some(0), ..Default::default() };
    cp.registry.delete(pods, Some("default"), "web-2", &now).await?;
    cp.eventually("a deleted pod leaves the endpoints and the slice", || async {
        let ep = cp.get(endpoints, Some("default"), "web").await?;
        Ok(addresses(&ep) == (vec![], vec![])
            && slice_endpoints(&cp, "web").await? == [("10.244.0.11".to_string(), false, true)])
    })
    .await?;

    tracing::info!("--- the service is deleted");
    cp.registry.delete(rt("", "services"), Some("default"), "web", &DeleteOptions::default()).await?;
    cp.eventually("its endpoints and slices go", || async {
        let ep_gone = cp.get(endpoints, Some("default"), "web").await.is_err();
        let slices = cp.list(rt("discovery.k8s.io", "endpointslices"), Some("default")).await?;
        Ok(ep_gone && !slices.iter().any(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "web"))
    })
    .await?;

    lease.cancel();
    cp.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_target_port_resolves_in_each_pod() -> Result<()> {
    let cp = TestControlPlane::start_with(config()).await?;
    cp.node("n1", "4", "8Gi").await?;
    let lease = renew_lease(cp.registry.clone(), "n1").await?;

    tracing::info!("--- a service whose targetPort names a port that two pods number differently");
    cp.create(
        Some("default"),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api"},
            "spec": {"selector": {"app": "api"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
        }),
    )
    .await?;
    let api = json!({"app": "api"});
    cp.create(Some("default"), pod("api-a", "n1", api.clone(), json!([{"name": "http", "containerPort": 8080}])))
        .await?;
    cp.create(Some("default"), pod("api-b", "n1", api.clone(), json!([{"name": "http", "containerPort": 9090}])))
        .await?;
    cp.set_pod_status("default", "api-a", running("10.244.1.1", true)).await?;
    cp.set_pod_status("default", "api-b", running("10.244.1.2", true)).await?;

    let by_port = |ep: &Value| -> Vec<(i64, Vec<String>)> {
        let mut out: Vec<(i64, Vec<String>)> = ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| (s["ports"][0]["port"].as_i64().unwrap_or_default(), ips(&s["addresses"])))
            .collect();
        out.sort();
        out
    };
    cp.eventually("each pod is listed with its own port", || async {
        let Ok(ep) = cp.get(rt("", "endpoints"), Some("default"), "api").await else { return Ok(false) };
        Ok(by_port(&ep) == [(8080, strings(&["10.244.1.1"])), (9090, strings(&["10.244.1.2"]))])
    })
    .await?;
    cp.eventually("one slice per port", || async {
        let slices = cp.list(rt("discovery.k8s.io", "endpointslices"), Some("default")).await?;
        let mut ports: Vec<(i64, String)> = slices
            .iter()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "api")
            .map(|s| {
                let port = s["ports"][0]["port"].as_i64().unwrap_or_default();
                (port, s["endpoints"][0]["addresses"][0].as_str().unwrap_or_default().to_string())
            })
            .collect();
        ports.sort();
        Ok(ports == [(8080, "10.244.1.1".to_string()), (9090, "10.244.1.2".to_string())])
    })
    .await?;

    lease.cancel();
    cp.shutdown().await;
    Ok(())
}

fn taint_effects(node: &Value) -> Vec<String> {
    let mut effects: Vec<String> = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["key"] == "node.kubernetes.io/unreachable")
        .filter_map(|t| t["effect"].as_str().map(str::to_string))
        .collect();
    effects.sort();
    effects
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

async fn events_with(cp: &TestControlPlane, reason: &str) -> Result<Vec<Value>> {
    let events = cp.list(rt("", "events"), None).await?;
    Ok(events.into_iter().filter(|e| e["reason"] == reason).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_stops_is_tainted_its_pods_evicted_and_it_is_untainted_when_the_lease_resumes() -> Result<()>
{
    let cp = TestControlPlane::start_with(config()).await?;
    let (nodes, pods) = (rt("", "nodes"), rt("", "pods"));
    cp.node("n1", "4", "8Gi").await?;
    cp.node("n2", "4", "8Gi").await?;
    let n1_lease = renew_lease(cp.registry.clone(), "n1").await?;
    let n2_lease = renew_lease(cp.registry.clone(), "n2").await?;
    cp.create(Some("default"), pod("p1", "n1", json!({"app": "x"}), json!([]))).await?;
    cp.create(Some("default"), pod("p2", "n2", json!({"app": "x"}), json!([]))).await?;
    cp.set_pod_status("default", "p1", running("10.244.0.1", true)).await?;
    cp.set_pod_status("default", "p2", running("10.244.0.2", true)).await?;

    tracing::info!("--- n1's kubelet stops renewing its lease");
    n1_lease.cancel();
    cp.eventually("n1 is marked Unknown and tainted unreachable", || async {
        let node = cp.get(nodes, None, "n1").await?;
        let ready = condition(&node, "Ready").cloned().unwrap_or_default();
        Ok(ready["status"] == "Unknown"
            && ready["reason"] == "NodeStatusUnknown"
            && ready["message"] == "Kubelet stopped posting node status."
            && taint_effects(&node) == ["NoExecute", "NoSchedule"])
    })
    .await?;
    let node = cp.get(nodes, None, "n1").await?;
    let no_execute = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["effect"] == "NoExecute")
        .expect("the NoExecute taint");
    assert!(no_execute["timeAdded"].is_string(), "{no_execute}");

    cp.eventually("p1 is marked not ready, or already evicted", || async {
        match cp.get(pods, Some("default"), "p1").await {
            Ok(p1) => Ok(condition(&p1, "Ready").is_some_and(|c| c["status"] == "False")),
            Err(_) => Ok(true),
        }
    })
    .await?;
    cp.eventually("p1 is evicted once the eviction timeout has passed", || async {
        Ok(cp.get(pods, Some("default"), "p1").await.is_err())
    })
    .await?;
    cp.eventually("eviction and NodeNotReady events", || async {
        let evictions = events_with(&cp, "TaintManagerEviction").await?;
        let evicted = evictions.iter().any(|e| e["message"] == "Marking for deletion Pod default/p1");
        Ok(evicted && !events_with(&cp, "NodeNotReady").await?.is_empty())
    })
    .await?;

    tracing::info!("--- n2, whose lease is renewed, is untouched");
    let n2 = cp.get(nodes, None, "n2").await?;
    assert!(taint_effects(&n2).is_empty(), "{n2}");
    assert_eq!(condition(&n2, "Ready").map(|c| c["status"].clone()), Some(json!("True")));
    let p2 = cp.get(pods, Some("default"), "p2").await?;
    assert_eq!(condition(&p2, "Ready").map(|c| c["status"].clone()), Some(json!("True")));

    tracing::info!("--- n1's kubelet comes back");
    let n1_lease = renew_lease(cp.registry.clone(), "n1").await?;
    cp.eventually("n1 loses its unreachable taints", || async {
        Ok(taint_effects(&cp.get(nodes, None, "n1").await?).is_empty())
    })
    .await?;

    n1_lease.cancel();
    n2_lease.cancel();
    cp.shutdown().await;
    Ok(())
}
