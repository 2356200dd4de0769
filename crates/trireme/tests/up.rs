//! `trireme up` as `make run` uses it: a cluster of 3 masters and 2 nodes comes up, says how to
//! use it, serves kubectl (through every master's context) and etcdctl, runs the example app,
//! and stops every process — pods included — on Ctrl-C.

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
    // Ports and node addresses (127.0.1.1 and .2) are the defaults: nothing else may run
    // `trireme up` on this machine during the test.
    let dir = tempfile::tempdir()?;
    let _guard = KillOnFailure(dir.path().to_path_buf());
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
    assert_eq!(pids.len(), 5);

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

    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/examples/hello.yaml"))?;
    ok(common::kubectl(kubeconfig.as_ref(), &cache, &["apply", "-f", "-"], Some(&example)).await?)?;
    let rollout = ["rollout", "status", "deployment/hello", "--timeout=25s"];
    ok(common::kubectl(kubeconfig.as_ref(), &cache, &rollout, None).await?)?;
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let answer = async {
            use tokio::io::AsyncReadExt;
            use tokio::io::AsyncWriteExt;
            let mut stream = tokio::net::TcpStream::connect("127.0.1.1:30080").await?;
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

    ok(etcdctl(&endpoints, &["put", "greeting", "hello"], None).await?)?;
    assert_eq!(ok(etcdctl(&endpoints, &["get", "greeting", "--print-value-only"], None).await?)?.trim(), "hello");

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

/// On the way out (a failed step included), SIGKILLs every process `cluster.json` lists and
/// every container under the dir: `up` itself is killed on drop and cannot stop them then.
struct KillOnFailure(std::path::PathBuf);

impl Drop for KillOnFailure {
    fn drop(&mut self) {
        let listed = std::fs::read(self.0.join("cluster.json"))
            .ok()
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok());
        for p in listed.iter().flat_map(|c| c["processes"].as_array().cloned().unwrap_or_default()) {
            if let Some(pid) = p["pid"].as_i64().and_then(|pid| i32::try_from(pid).ok()).filter(|pid| *pid > 0) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        common::nodes::kill_containers_under(&self.0);
    }
}
