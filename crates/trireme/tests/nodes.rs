//! Real masters and real node agents (process runtime), driven by the real kubectl: the
//! example app runs, serves through its NodePort, scales, rolls, logs and goes away; pods
//! outlive a dead leader, every master being down and a dead node.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::ensure;
use common::Cluster;
use common::kube::*;
use common::nodes::Network;
use common::nodes::Nodes;
use common::ok;
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_serves_scales_rolls_logs_and_goes_away() -> Result<()> {
    let network = Network::new();
    let cluster = Cluster::start_with(3, &[&network.service_range_flag()]).await?;
    let nodes = Nodes::start(&cluster, &network, 2, &[]).await?;
    let result = async {
        wait_nodes_ready(&cluster, 2).await?;

        eprintln!("--- apply the example: every replica Running and Ready, on both nodes");
        ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(&example()?)).await?)?;
        ok(cluster.kubectl(&["rollout", "status", "deployment/hello", "--timeout=90s"]).await?)?;
        let pods = wait_ready_pods(&cluster, "app=hello", 3).await?;
        let on: BTreeSet<&str> = pods.iter().filter_map(|p| p["spec"]["nodeName"].as_str()).collect();
        ensure!(on.len() == 2, "replicas all on {on:?}");
        let ips: BTreeSet<&str> = pods.iter().filter_map(|p| p["status"]["podIP"].as_str()).collect();
        ensure!(ips.len() == 3, "pod IPs {ips:?}");

        eprintln!("--- the NodePort on either node is answered by the pods, round robin");
        for node in &nodes.nodes {
            let addr = format!("{}:30080", node.ip);
            eventually("NodePort answers from every pod", Duration::from_secs(20), || async {
                let answered = answering_pods(&addr, 6).await?;
                ensure!(answered.len() == 3, "answered by {answered:?}");
                Ok(())
            })
            .await?;
        }
        let service: Value = serde_json::from_str(&ok(cluster.kubectl(&["get", "service", "hello", "-o", "json"]).await?)?)?;
        let cluster_ip = service["spec"]["clusterIP"].as_str().context("clusterIP")?.to_string();
        if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0 {
            eprintln!("--- the ClusterIP {cluster_ip}:80 answers too");
            eventually("ClusterIP answers", Duration::from_secs(10), || async {
                answering_pods(&format!("{cluster_ip}:80"), 2).await.map(|_| ())
            })
            .await?;
        }

        eprintln!("--- scale up to 5 and down to 2");
        ok(cluster.kubectl(&["scale", "deployment/hello", "--replicas=5"]).await?)?;
        ok(cluster.kubectl(&["rollout", "status", "deployment/hello", "--timeout=90s"]).await?)?;
        wait_ready_pods(&cluster, "app=hello", 5).await?;
        ok(cluster.kubectl(&["scale", "deployment/hello", "--replicas=2"]).await?)?;
        let pods = wait_ready_pods(&cluster, "app=hello", 2).await?;

        eprintln!("--- rolling update with kubectl set image");
        ok(cluster.kubectl(&["set", "image", "deployment/hello", "hello=hashicorp/http-echo:1.1"]).await?)?;
        ok(cluster.kubectl(&["rollout", "status", "deployment/hello", "--timeout=90s"]).await?)?;
        let rolled = wait_ready_pods(&cluster, "app=hello", 2).await?;
        for p in &rolled {
            ensure!(p["spec"]["containers"][0]["image"] == "hashicorp/http-echo:1.1", "{}", p["spec"]);
        }
        let before: BTreeSet<&str> = pods.iter().filter_map(|p| p["metadata"]["name"].as_str()).collect();
        ensure!(rolled.iter().all(|p| !before.contains(p["metadata"]["name"].as_str().unwrap_or_default())));
        answering_pods(&format!("{}:30080", nodes.nodes[0].ip), 2).await?;

        eprintln!("--- kubectl logs, --tail, -c and --previous");
        let logger = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"logger"},"spec":{"restartPolicy":"Always","containers":[
            {"name":"main","image":"busybox","command":["sh","-c","echo line-1; echo line-2; echo from-$(POD_NAME); sleep 1; exit 3"]}]}}"#;
        ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(logger)).await?)?;
        eventually("logger restarted once", Duration::from_secs(60), || async {
            let pod: Value = serde_json::from_str(&ok(cluster.kubectl(&["get", "pod", "logger", "-o", "json"]).await?)?)?;
            let restarts = pod["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0);
            ensure!(restarts >= 1, "restartCount {restarts}");
            let last = &pod["status"]["containerStatuses"][0]["lastState"]["terminated"];
            ensure!(last["exitCode"] == 3, "lastState {last}");
            Ok(())
        })
        .await?;
        let logs = ok(cluster.kubectl(&["logs", "logger", "--previous"]).await?)?;
        ensure!(logs == "line-1\nline-2\nfrom-logger\n", "{logs:?}");
        let tail = ok(cluster.kubectl(&["logs", "logger", "-c", "main", "--previous", "--tail=1"]).await?)?;
        ensure!(tail == "from-logger\n", "{tail:?}");
        let hello_logs = ok(cluster.kubectl(&["logs", "deployment/hello"]).await?)?;
        eprintln!("hello logs: {hello_logs}");
        let follow = cluster.kubectl(&["logs", "-f", "logger", "--tail=2"]).await?;
        ensure!(String::from_utf8_lossy(&follow.stdout).contains("from-logger"), "{follow:?}");

        eprintln!("--- delete: pods, and their processes, are gone");
        ok(cluster.kubectl(&["delete", "pod", "logger", "--wait=false"]).await?)?;
        ok(cluster.kubectl_with_input(&["delete", "-f", "-", "--wait=false"], Some(&example()?)).await?)?;
        eventually("pods gone", Duration::from_secs(60), || async {
            let left = items(&cluster, &["pods"]).await?;
            ensure!(left.is_empty(), "{} pods left", left.len());
            Ok(())
        })
        .await?;
        for p in &rolled {
            let ip = p["status"]["podIP"].as_str().context("podIP")?;
            let connect = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect((ip, 5678))).await;
            ensure!(!matches!(connect, Ok(Ok(_))), "something still listens on {ip}:5678");
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}\n{}", nodes.log_tails(), cluster.log_tails());
    }
    result
}

const WEB: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":4,
  "selector":{"matchLabels":{"app":"web"}},
  "template":{"metadata":{"labels":{"app":"web"}},"spec":{"terminationGracePeriodSeconds":2,"containers":[
    {"name":"web","image":"hashicorp/http-echo","args":["-text=hello from $(POD_NAME)"],
     "ports":[{"containerPort":5678}],
     "readinessProbe":{"tcpSocket":{"port":5678},"periodSeconds":1}}]}}}}
---
{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"type":"NodePort","selector":{"app":"web"},
  "ports":[{"port":80,"targetPort":5678,"nodePort":30081}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_outlive_a_dead_leader_every_master_down_and_a_dead_node() -> Result<()> {
    let network = Network::new();
    let flags =
        [network.service_range_flag(), "--node-monitor-grace-period=3s".into(), "--pod-eviction-timeout=3s".into()];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start_with(3, &flags).await?;
    let mut nodes = Nodes::start(&cluster, &network, 2, &[]).await?;
    let result = async {
        wait_nodes_ready(&cluster, 2).await?;
        for doc in WEB.split("\n---\n") {
            ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(doc)).await?)?;
        }
        ok(cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"]).await?)?;
        let before = identities(&wait_ready_pods(&cluster, "app=web", 4).await?);

        eprintln!("--- SIGKILL the leader: running pods are untouched, a scale-up converges");
        let leader = cluster.wait_leader().await?;
        cluster.signal(leader, Signal::SIGKILL).await?;
        cluster.wait_leader().await?;
        let after = identities(&ready_pods(&cluster, "app=web").await?);
        ensure!(after == before, "pods changed across the leader's death:\n{before:?}\n{after:?}");
        ok(cluster.kubectl(&["scale", "deployment/web", "--replicas=6"]).await?)?;
        ok(cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"]).await?)?;
        cluster.restart(leader)?;
        let before = identities(&wait_ready_pods(&cluster, "app=web", 6).await?);

        eprintln!("--- every master stopped: the pods keep serving through the NodePort");
        for i in 0..3 {
            cluster.signal(i, Signal::SIGKILL).await?;
        }
        let addr = format!("{}:30081", nodes.nodes[1].ip);
        for _ in 0..10 {
            http_get(&addr, "/").await.context("NodePort with every master down")?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }

        eprintln!("--- masters back: nothing restarted");
        for i in 0..3 {
            cluster.restart(i)?;
        }
        cluster.wait_leader().await?;
        wait_nodes_ready(&cluster, 2).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = identities(&wait_ready_pods(&cluster, "app=web", 6).await?);
        ensure!(after == before, "pods changed across the masters' outage:\n{before:?}\n{after:?}");

        eprintln!("--- node-2's agent SIGKILLed and started again: it adopts its containers, nothing restarts");
        nodes.kill(1).await?;
        let on_node_1 = format!("{}:30081", nodes.nodes[0].ip);
        answering_pods(&on_node_1, 6).await.context("node-1's NodePort with node-2's agent down")?;
        nodes.spawn(1)?;
        wait_nodes_ready(&cluster, 2).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = identities(&wait_ready_pods(&cluster, "app=web", 6).await?);
        ensure!(after == before, "pods changed across the agent's restart:\n{before:?}\n{after:?}");
        answering_pods(&addr, 3).await?;

        eprintln!("--- SIGKILL node-1 (and its containers): its pods are replaced on node-2");
        nodes.kill(0).await?;
        nodes.kill_containers(0);
        // Usually converges within seconds; in some full-suite runs (four tests in parallel) the
        // first evictions after every master restarted came ~45 s late (docs/chaos.md tracks it).
        eventually("6 ready pods on node-2", Duration::from_secs(180), || async {
            let pods = ready_pods(&cluster, "app=web").await?;
            let on_2 = pods.iter().filter(|p| p["spec"]["nodeName"] == "node-2").count();
            ensure!(on_2 == 6, "{on_2} ready on node-2, {} ready in all", pods.len());
            Ok(())
        })
        .await?;
        answering_pods(&addr, 3).await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}\n{}", nodes.log_tails(), cluster.log_tails());
    }
    result
}

/// A pod from JSON, applied.
async fn apply(cluster: &Cluster, json: &str) -> Result<()> {
    ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(json)).await?)?;
    Ok(())
}

async fn pod(cluster: &Cluster, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&ok(cluster.kubectl(&["get", "pod", name, "-o", "json"]).await?)?)?)
}

async fn wait_phase(cluster: &Cluster, name: &str, phase: &str) -> Result<Value> {
    eventually(&format!("pod {name} {phase}"), Duration::from_secs(60), || async {
        let p = pod(cluster, name).await?;
        ensure!(p["status"]["phase"] == phase, "phase {}, status {}", p["status"]["phase"], p["status"]);
        Ok(())
    })
    .await?;
    pod(cluster, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_follow_restart_policies_probes_init_containers_and_grace_periods() -> Result<()> {
    let network = Network::new();
    let cluster = Cluster::start_with(1, &[&network.service_range_flag()]).await?;
    let nodes = Nodes::start(&cluster, &network, 1, &[]).await?;
    let scratch = tempfile::TempDir::new()?;
    let marker = scratch.path().join("tried-once");
    let result = async {
        wait_nodes_ready(&cluster, 1).await?;

        eprintln!("--- init containers run first; env has the downward-API values and a working token");
        apply(&cluster, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"env"},"spec":{
            "initContainers":[{"name":"init","image":"busybox","command":["sh","-c","echo init-done"]}],
            "containers":[{"name":"main","image":"busybox","command":["sh","-c",
              "echo ip=$POD_IP ns=$POD_NAMESPACE node=$NODE_NAME name=$POD_NAME; echo token=$TRIREME_SERVICE_ACCOUNT_TOKEN; sleep 3600"]}]}}"#).await?;
        let env = wait_phase(&cluster, "env", "Running").await?;
        ensure!(env["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0, "{}", env["status"]);
        ensure!(ok(cluster.kubectl(&["logs", "env", "-c", "init"]).await?)? == "init-done\n");
        let ip = env["status"]["podIP"].as_str().context("podIP")?.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        let logs = loop {
            let logs = ok(cluster.kubectl(&["logs", "env", "-c", "main"]).await?)?;
            if logs.contains("token=") {
                break logs;
            }
            ensure!(Instant::now() < deadline, "env printed {logs:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        ensure!(logs.contains(&format!("ip={ip} ns=default node=node-1 name=env")), "{logs}");
        let token = logs.lines().find_map(|l| l.strip_prefix("token=")).context("token line")?.trim().to_string();
        ensure!(token.split('.').count() == 3, "not a JWT: {token:?}");
        ok(cluster.kubectl(&["get", "namespaces", &format!("--token={token}")]).await?)
            .context("the pod's service-account token authenticates")?;

        eprintln!("--- restartPolicy Never and OnFailure");
        apply(&cluster, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"done"},"spec":{"restartPolicy":"Never",
            "containers":[{"name":"c","image":"busybox","command":["sh","-c","exit 0"]}]}}"#).await?;
        apply(&cluster, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"broken"},"spec":{"restartPolicy":"Never",
            "containers":[{"name":"c","image":"busybox","command":["sh","-c","exit 2"]}]}}"#).await?;
        let retry = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"retry"}},"spec":{{"restartPolicy":"OnFailure",
            "containers":[{{"name":"c","image":"busybox","command":["sh","-c","if [ -f {m} ]; then exit 0; fi; touch {m}; exit 1"]}}]}}}}"#,
            m = marker.display()
        );
        apply(&cluster, &retry).await?;
        wait_phase(&cluster, "done", "Succeeded").await?;
        let broken = wait_phase(&cluster, "broken", "Failed").await?;
        ensure!(broken["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 2);
        ensure!(broken["status"]["containerStatuses"][0]["restartCount"] == 0);
        let retried = wait_phase(&cluster, "retry", "Succeeded").await?;
        ensure!(retried["status"]["containerStatuses"][0]["restartCount"] == 1, "{}", retried["status"]);

        eprintln!("--- a failing liveness probe restarts the container; readiness follows its probe");
        apply(&cluster, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"sick"},"spec":{"terminationGracePeriodSeconds":1,
            "containers":[{"name":"c","image":"busybox","command":["sleep","3600"],
              "livenessProbe":{"exec":{"command":["sh","-c","exit 1"]},"periodSeconds":1,"failureThreshold":2},
              "readinessProbe":{"exec":{"command":["true"]},"periodSeconds":1}}]}}"#).await?;
        eventually("sick restarted", Duration::from_secs(60), || async {
            let p = pod(&cluster, "sick").await?;
            let restarts = p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0);
            ensure!(restarts >= 1, "restartCount {restarts}");
            Ok(())
        })
        .await?;

        eprintln!("--- graceful deletion: SIGTERM ignored, SIGKILL after the grace period, then the pod is gone");
        apply(&cluster, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"stubborn"},"spec":{"terminationGracePeriodSeconds":2,
            "containers":[{"name":"c","image":"busybox","command":["sh","-c","trap '' TERM; while true; do sleep 1; done"]}]}}"#).await?;
        wait_phase(&cluster, "stubborn", "Running").await?;
        let started = Instant::now();
        ok(cluster.kubectl(&["delete", "pod", "stubborn", "--timeout=30s"]).await?)?;
        let took = started.elapsed();
        ensure!(took >= Duration::from_millis(1800) && took < Duration::from_secs(15), "deletion took {took:?}");
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}\n{}", nodes.log_tails(), cluster.log_tails());
    }
    result
}

/// Removes every Docker container and the network of Docker-runtime node `node`.
fn docker_cleanup(node: &str) {
    let listed = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=trireme.node={node}")])
        .output();
    if let Ok(out) = listed {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker").args(["rm", "-f"]).args(&ids).output();
        }
    }
    let _ = std::process::Command::new("docker").args(["network", "rm", &format!("trireme-{node}")]).output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_runtime_runs_pods_that_serve_log_and_stop() -> Result<()> {
    let docker_up = std::process::Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    if !docker_up.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping: no Docker daemon answers here");
        return Ok(());
    }
    eprintln!("--- the test image (busybox from Debian's busybox-static, built locally)");
    let context = tempfile::TempDir::new()?;
    std::fs::copy("/bin/busybox", context.path().join("busybox"))
        .context("/bin/busybox (apt-get install busybox-static)")?;
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         ENTRYPOINT [\"/bin/busybox\"]\nCMD [\"echo\", \"default-cmd\"]\n",
    )?;
    let built = std::process::Command::new("docker")
        .args(["build", "-q", "-t", "trireme-test/busybox:1"])
        .arg(context.path())
        .output()?;
    ensure!(built.status.success(), "docker build: {}", String::from_utf8_lossy(&built.stderr));

    let node = format!("docker-{}", std::process::id());
    docker_cleanup(&node);
    let network = Network::new();
    let cluster = Cluster::start_with(1, &[&network.service_range_flag()]).await?;
    let mut nodes = Nodes::start(&cluster, &network, 0, &["--runtime", "docker"]).await?;
    nodes.add(&network, &node)?;
    let result = async {
        wait_nodes_ready(&cluster, 1).await?;
        eprintln!("--- a pod in Docker serves through a NodePort and logs");
        apply(&cluster, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"dweb"}},"spec":{"terminationGracePeriodSeconds":2,
            "containers":[{"name":"httpd","image":"trireme-test/busybox:1","command":["sh","-c",
              "echo hello from docker > /index.html; echo serving; exec httpd -f -p 8080 -h /"],
              "ports":[{"containerPort":8080}],"readinessProbe":{"tcpSocket":{"port":8080},"periodSeconds":1}}]}}"#).await?;
        apply(&cluster, r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"dweb"},"spec":{"type":"NodePort","selector":{"app":"dweb"},
            "ports":[{"port":80,"targetPort":8080,"nodePort":30082}]}}"#).await?;
        let web = wait_phase(&cluster, "web", "Running").await?;
        let container_id = web["status"]["containerStatuses"][0]["containerID"].as_str().unwrap_or_default().to_string();
        ensure!(container_id.starts_with("docker://"), "{container_id}");
        let addr = format!("{}:30082", network.node_ip(1));
        eventually("NodePort to the Docker pod", Duration::from_secs(30), || async {
            let body = http_get(&addr, "/index.html").await?;
            ensure!(body.trim() == "hello from docker", "{body:?}");
            Ok(())
        })
        .await?;
        let logs = ok(cluster.kubectl(&["logs", "web"]).await?)?;
        ensure!(logs.contains("serving"), "{logs:?}");

        eprintln!("--- deleting the pod removes its containers");
        ok(cluster.kubectl(&["delete", "pod", "web", "--timeout=60s"]).await?)?;
        let left = std::process::Command::new("docker")
            .args(["ps", "-q", "--filter", &format!("label=trireme.node={node}")])
            .output()?;
        ensure!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "containers left running");
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}\n{}", nodes.log_tails(), cluster.log_tails());
    }
    nodes.kill(0).await?;
    docker_cleanup(&node);
    result
}
