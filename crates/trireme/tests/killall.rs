//! `trireme killall`: the containers a node agent left behind are stopped, and a wrong root dir
//! is a clear error.

use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::ensure;
use trireme_kubelet::runtime::ContainerRuntime;
use trireme_kubelet::runtime::ContainerSpec;
use trireme_kubelet::runtime::PodRef;
use trireme_kubelet::runtime::process::ProcessConfig;
use trireme_kubelet::runtime::process::ProcessRuntime;

const TRIREME: &str = env!("CARGO_BIN_EXE_trireme");

/// Whether `pid` still runs (a zombie waiting to be reaped does not).
fn running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z'))
}

/// Kills whatever is recorded under the dir when the test ends, passed or failed.
struct Reap(std::path::PathBuf);

impl Drop for Reap {
    fn drop(&mut self) {
        trireme_kubelet::runtime::process::kill_recorded_under(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killall_stops_the_containers_left_under_a_root_dir() -> Result<()> {
    let root = tempfile::tempdir()?;
    let _reap = Reap(root.path().to_path_buf());
    let containers = root.path().join("containers");
    let config = ProcessConfig {
        root_dir: containers.clone(),
        pod_cidr: "127.79.1.0/24".into(),
        helper: vec![TRIREME.into()],
        ..Default::default()
    };
    let runtime = ProcessRuntime::new(config)?;
    let pod = PodRef { uid: "uid-left".into(), namespace: "default".into(), name: "left".into() };
    let sandbox = runtime.create_sandbox(&pod).await?;
    let spec = ContainerSpec {
        name: "main".into(),
        image: "busybox".into(),
        command: vec!["sh".into(), "-c".into(), "sleep 60".into()],
        args: vec![],
        env: Default::default(),
        working_dir: None,
        limits: Default::default(),
        mounts: vec![],
        attempt: 0,
    };
    runtime.start_container(&sandbox, &spec).await?;
    let state_file = containers.join("pods/uid-left/containers/main-0/state.json");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state_file)?)?;
    let pid = i32::try_from(state["pid"].as_i64().context("no container pid")?)?;
    let shim = i32::try_from(state["shim_pid"].as_i64().context("no shim pid")?)?;
    ensure!(running(pid) && running(shim), "the container runs");
    drop(runtime); // the node agent is gone; its containers are not

    let out = std::process::Command::new(TRIREME).args(["killall", "--root-dir"]).arg(root.path()).output()?;
    ensure!(out.status.success(), "killall failed: {}", String::from_utf8_lossy(&out.stderr));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while running(pid) || running(shim) {
        ensure!(std::time::Instant::now() < deadline, "container {pid} or shim {shim} still runs after killall");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let missing = root.path().join("nothing-here");
    let out = std::process::Command::new(TRIREME).args(["killall", "--root-dir"]).arg(&missing).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && stderr.contains("no such directory"), "a missing root dir: {stderr}");
    Ok(())
}
