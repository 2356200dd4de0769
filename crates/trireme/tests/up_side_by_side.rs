//! Two `trireme up` clusters on one machine, as kind and k3d run several: each gets node, pod and
//! Service addresses of its own, so both have Ready nodes, and each kubeconfig's current context
//! is named after its cluster. A third `up` on a directory holding another cluster's name is
//! refused.

mod common;

use anyhow::Context;
use anyhow::Result;
use anyhow::ensure;
use common::ok;
use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt;
use tokio::process::Child;

/// Starts `trireme up` for a 1-master, 1-node cluster named `name` in `dir`; returns it once it
/// printed how to use it.
async fn up(name: &str, dir: &std::path::Path) -> Result<Child> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_trireme"))
        .args(["up", "--masters", "1", "--nodes", "1", "--name", name, "--dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    loop {
        let line = tokio::time::timeout(common::WAIT, lines.next_line()).await??.context("up exited early")?;
        if line.starts_with("Ctrl-C stops the cluster") {
            break;
        }
    }
    // Keep reading so `up` never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(child)
}

fn node_ip(dir: &std::path::Path) -> Result<String> {
    let cluster: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("cluster.json"))?)?;
    cluster["processes"]
        .as_array()
        .context("processes")?
        .iter()
        .find(|p| p["role"] == "node")
        .and_then(|p| p["node_ip"].as_str())
        .map(str::to_string)
        .context("a node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_run_side_by_side_on_addresses_of_their_own() -> Result<()> {
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (_a_guard, _b_guard) =
        (common::UpGuard(a_dir.path().to_path_buf()), common::UpGuard(b_dir.path().to_path_buf()));
    let mut a = up("alpha", a_dir.path()).await?;
    let mut b = up("beta", b_dir.path()).await?;
    let (a_ip, b_ip) = (node_ip(a_dir.path())?, node_ip(b_dir.path())?);
    ensure!(a_ip != b_ip, "both clusters' nodes are on {a_ip}");

    for (name, dir) in [("alpha", a_dir.path()), ("beta", b_dir.path())] {
        let kubeconfig = dir.join("kubeconfig");
        let cache = dir.join("kubecache");
        let context = ok(common::kubectl(&kubeconfig, &cache, &["config", "current-context"], None).await?)?;
        ensure!(context.trim() == name, "{name}'s current context is {context:?}");
        let wait = ["wait", "--for=condition=Ready", "node/node-1", "--timeout=30s"];
        ok(common::kubectl(&kubeconfig, &cache, &wait, None).await?)
            .with_context(|| format!("{name}'s node is Ready"))?;
    }

    // The same directory under another name is refused, and nothing is started.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_trireme"))
        .args(["up", "--masters", "1", "--nodes", "1", "--name", "gamma", "--dir"])
        .arg(a_dir.path())
        .output();
    let refused = tokio::time::timeout(common::WAIT, refused).await??;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(!refused.status.success() && stderr.contains("holds the cluster \"alpha\""), "{stderr}");

    for child in [&mut a, &mut b] {
        kill(Pid::from_raw(i32::try_from(child.id().context("pid")?)?), Signal::SIGINT)?;
        let status = tokio::time::timeout(common::WAIT, child.wait()).await??;
        ensure!(status.success(), "up exits cleanly on Ctrl-C");
    }
    Ok(())
}
