//! `trireme up` as `make run` uses it: a cluster of 3 masters and 2 nodes comes up, says how to
//! use it, serves kubectl (through the stable address and every master's context) and etcdctl,
//! runs the example app, keeps kubectl and etcdctl working through the stable address while the
//! leader is SIGKILLed, and stops every process — pods included — on Ctrl-C.

mod common;

use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::ensure;
use common::etcdctl;
use common::ok;
use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_a_cluster_that_kubectl_and_etcdctl_can_use_and_ctrl_c_stops_it() -> Result<()> {
    // Ports are free ones and node addresses those of a slot no other cluster holds, so other
    // `trireme up` clusters may run meanwhile.
    let dir = tempfile::tempdir()?;
    let _guard = common::UpGuard(dir.path().to_path_buf());
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_trireme"))
        .args(["up", "--dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(up.stdout.take().context("stdout")?).lines();
    let mut printed = Vec::new();
    while !printed.iter().any(|l: &String| l.starts_with("Ctrl-C stops the cluster")) {
        let line = tokio::time::timeout(common::WAIT, lines.next_line()).await??.context("up exited early")?;
        printed.push(line);
    }
    let text = printed.join("\n");
    assert!(text.contains("Trireme is up: 3 masters and 2 nodes"), "{text}");
    // export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=https://… ETCDCTL_CACERT=… ETCDCTL_CERT=… ETCDCTL_KEY=…
    let exported = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("export ETCDCTL_API=3 "))
        .context("up printed the etcdctl settings to export")?;
    let setting = |name: &str| {
        exported.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{name}="))).map(str::to_string)
    };
    let endpoints = setting("ETCDCTL_ENDPOINTS").context("ETCDCTL_ENDPOINTS")?;
    assert!(endpoints.starts_with("https://"), "the etcd API is served over TLS: {endpoints}");
    let tls: Vec<String> = [("ETCDCTL_CACERT", "--cacert"), ("ETCDCTL_CERT", "--cert"), ("ETCDCTL_KEY", "--key")]
        .iter()
        .map(|(var, flag)| setting(var).map(|v| format!("{flag}={v}")).with_context(|| format!("{var} exported")))
        .collect::<Result<_>>()?;
    let with_tls = |args: &[&'static str]| -> Vec<String> {
        tls.iter().cloned().chain(args.iter().map(|a| a.to_string())).collect()
    };
    let refused = etcdctl(&endpoints, &["get", "greeting"], None).await?;
    assert!(!refused.status.success(), "etcdctl without the client certificate got in");

    let cluster: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("cluster.json"))?)?;
    let pids: Vec<i32> = cluster["processes"]
        .as_array()
        .context("processes")?
        .iter()
        .filter_map(|p| p["pid"].as_i64().and_then(|pid| i32::try_from(pid).ok()))
        .collect();
    assert_eq!(pids.len(), 5);
    let node_ip = cluster["processes"]
        .as_array()
        .context("processes")?
        .iter()
        .find(|p| p["role"] == "node")
        .and_then(|p| p["node_ip"].as_str())
        .context("a node's address")?
        .to_string();

    let kubeconfig = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
        .context("up printed the kubeconfig to export")?
        .to_string();
    ensure!(std::path::Path::new(&kubeconfig) == dir.path().canonicalize()?.join("kubeconfig"), "{kubeconfig}");
    let cache = dir.path().join("kubecache");
    for context in ["trireme", "m1", "m2", "m3"] {
        let out =
            common::kubectl(kubeconfig.as_ref(), &cache, &["--context", context, "get", "namespaces"], None).await?;
        ensure!(ok(out)?.contains("kube-system"), "kubectl through {context}");
    }

    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/examples/hello.yaml"))?;
    ok(common::kubectl(kubeconfig.as_ref(), &cache, &["apply", "-f", "-"], Some(&example)).await?)?;
    let rollout = ["rollout", "status", "deployment/hello", "--timeout=25s"];
    ok(common::kubectl(kubeconfig.as_ref(), &cache, &rollout, None).await?)?;
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let answer = async {
            use tokio::io::AsyncReadExt;
            use tokio::io::AsyncWriteExt;
            let mut stream = tokio::net::TcpStream::connect((node_ip.as_str(), 30080)).await?;
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
            let mut body = String::new();
            stream.read_to_string(&mut body).await?;
            anyhow::Ok(body)
        };
        match tokio::time::timeout(Duration::from_secs(3), answer).await {
            Ok(Ok(body)) if body.contains("hello from hello-") => break,
            other => ensure!(std::time::Instant::now() < deadline, "the example's NodePort: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    ok(etcdctl(&endpoints, &strs(&with_tls(&["put", "greeting", "hello"])), None).await?)?;
    let got = ok(etcdctl(&endpoints, &strs(&with_tls(&["get", "greeting", "--print-value-only"])), None).await?)?;
    assert_eq!(got.trim(), "hello");

    survives_killing_the_leader(&cluster, &endpoints, &tls, kubeconfig.as_ref(), &cache).await?;

    let pid = Pid::from_raw(i32::try_from(up.id().context("up pid")?)?);
    kill(pid, Signal::SIGINT)?;
    let status = tokio::time::timeout(common::WAIT, up.wait()).await??;
    assert!(status.success(), "up exits cleanly on Ctrl-C");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Every master is gone (signal 0 only checks that the process exists).
    while pids.iter().any(|p| kill(Pid::from_raw(*p), None).is_ok()) {
        ensure!(std::time::Instant::now() < deadline, "masters or nodes outlived trireme up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nor does any container: shims name the cluster's dir, containers run inside it.
    let dir_text = dir.path().canonicalize()?.display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| {
            let cmdline = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).ok()?).replace('\0', " ");
            let cwd = std::fs::read_link(e.path().join("cwd")).map(|p| p.display().to_string()).unwrap_or_default();
            (cmdline.contains(&dir_text) || cwd.starts_with(&dir_text)).then_some(cmdline)
        })
        .collect();
    ensure!(left.is_empty(), "processes outlived trireme up: {left:?}");
    Ok(())
}

/// kubectl (the default context) and etcdctl, both on the stable address, poll without pause
/// while the leader is SIGKILLed: no failure lasts more than 2 s.
async fn survives_killing_the_leader(
    cluster: &serde_json::Value,
    endpoints: &str,
    tls: &[String],
    kubeconfig: &std::path::Path,
    cache: &std::path::Path,
) -> Result<()> {
    let masters: Vec<(String, i32)> = cluster["processes"]
        .as_array()
        .context("processes")?
        .iter()
        .filter(|p| p["role"] == "master")
        .filter_map(|p| Some((p["client_url"].as_str()?.to_string(), i32::try_from(p["pid"].as_i64()?).ok()?)))
        .collect();
    let all: Vec<&str> = masters.iter().map(|(url, _)| url.as_str()).collect();
    let args: Vec<&str> = tls.iter().map(String::as_str).chain(["endpoint", "status", "-w", "json"]).collect();
    let status = ok(etcdctl(&all.join(","), &args, None).await?)?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let leader = status
        .as_array()
        .context("endpoint status")?
        .iter()
        .find(|s| s["Status"]["header"]["member_id"] == s["Status"]["leader"])
        .and_then(|s| s["Endpoint"].as_str())
        .context("a member that is the leader")?;
    let pid = masters.iter().find(|(url, _)| url == leader).map(|(_, pid)| *pid).context("the leader's pid")?;

    let stop = tokio_util::sync::CancellationToken::new();
    let (kube_cfg, kube_cache) = (kubeconfig.to_path_buf(), cache.to_path_buf());
    let kube = tokio::spawn(poll(stop.clone(), move || {
        let (kubeconfig, cache) = (kube_cfg.clone(), kube_cache.clone());
        async move {
            let out =
                common::kubectl(&kubeconfig, &cache, &["get", "namespaces", "--request-timeout=2s"], None).await?;
            ok(out).map(drop)
        }
    }));
    let etcd_endpoint = endpoints.to_string();
    let tls = tls.to_vec();
    let etcd = tokio::spawn(poll(stop.clone(), move || {
        let endpoints = etcd_endpoint.clone();
        let tls = tls.clone();
        async move {
            let args: Vec<&str> = tls
                .iter()
                .map(String::as_str)
                .chain(["--dial-timeout=1s", "--command-timeout=2s", "get", "greeting", "--print-value-only"])
                .collect();
            let out = ok(etcdctl(&endpoints, &args, None).await?)?;
            ensure!(out.trim() == "hello", "read {out:?}");
            Ok(())
        }
    }));
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill(Pid::from_raw(pid), Signal::SIGKILL)?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.cancel();
    for (client, task) in [("kubectl", kube), ("etcdctl", etcd)] {
        let (attempts, longest) = task.await??;
        println!("{client}: {attempts} requests through the stable address; longest failure {longest:?}");
        ensure!(attempts >= 5, "{client} made only {attempts} requests");
        ensure!(longest <= Duration::from_secs(2), "{client} failed for {longest:?} after the leader was killed");
    }
    Ok(())
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Runs `request` back to back until `stop`; returns the attempts and the longest time from a
/// failed attempt's start to the next success's start.
async fn poll<F, Fut>(stop: tokio_util::sync::CancellationToken, request: F) -> Result<(usize, Duration)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let (mut attempts, mut longest, mut failing_since) = (0, Duration::ZERO, None);
    while !stop.is_cancelled() {
        let started = std::time::Instant::now();
        attempts += 1;
        match request().await {
            Ok(()) => {
                if let Some(since) = failing_since.take() {
                    longest = longest.max(started.duration_since(since));
                }
            }
            Err(error) => {
                println!("a request failed: {error:#}");
                failing_since.get_or_insert(started);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    if let Some(since) = failing_since {
        longest = longest.max(since.elapsed());
    }
    Ok((attempts, longest))
}
