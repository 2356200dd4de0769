//! `trireme up` as `make run` uses it: a cluster comes up, says how to use it, serves kubectl
//! (through every master's context) and etcdctl, and stops every process on Ctrl-C.

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
    let dir = tempfile::tempdir()?;
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_trireme"))
        .args(["up", "--masters", "3", "--nodes", "0", "--dir"])
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
    assert!(text.contains("Trireme is up: 3 masters"), "{text}");
    let endpoints = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="))
        .context("up printed the endpoints to export")?
        .to_string();

    let cluster: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("cluster.json"))?)?;
    let pids: Vec<i32> = cluster["processes"]
        .as_array()
        .context("processes")?
        .iter()
        .filter_map(|p| p["pid"].as_i64().and_then(|pid| i32::try_from(pid).ok()))
        .collect();
    assert_eq!(pids.len(), 3);

    let kubeconfig = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
        .context("up printed the kubeconfig to export")?
        .to_string();
    ensure!(std::path::Path::new(&kubeconfig) == dir.path().canonicalize()?.join("kubeconfig"), "{kubeconfig}");
    let cache = dir.path().join("kubecache");
    for context in ["m1", "m2", "m3"] {
        let out =
            common::kubectl(kubeconfig.as_ref(), &cache, &["--context", context, "get", "namespaces"], None).await?;
        ensure!(ok(out)?.contains("kube-system"), "kubectl through {context}");
    }

    ok(etcdctl(&endpoints, &["put", "greeting", "hello"], None).await?)?;
    assert_eq!(ok(etcdctl(&endpoints, &["get", "greeting", "--print-value-only"], None).await?)?.trim(), "hello");

    let pid = Pid::from_raw(i32::try_from(up.id().context("up pid")?)?);
    kill(pid, Signal::SIGINT)?;
    let status = tokio::time::timeout(common::WAIT, up.wait()).await??;
    assert!(status.success(), "up exits cleanly on Ctrl-C");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Every master is gone (signal 0 only checks that the process exists).
    while pids.iter().any(|p| kill(Pid::from_raw(*p), None).is_ok()) {
        ensure!(std::time::Instant::now() < deadline, "masters outlived trireme up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
