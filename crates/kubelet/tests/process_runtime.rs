//! The process runtime against real processes: containers started through the shim
//! (`trireme-shim`), stopped, probed, logged and adopted by a restarted runtime. Every wait is
//! bounded; every process a test starts is killed when the test ends, passed or failed.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use futures::StreamExt;
use trireme_kubelet::runtime::process::{ProcessConfig, ProcessRuntime};
use trireme_kubelet::runtime::{
    ContainerRuntime, ContainerSpec, ContainerState, LogOptions, Mount, PodRef, RuntimeError, Sandbox,
};

/// A runtime over a temporary root directory; dropping it kills whatever it started.
struct Node {
    runtime: ProcessRuntime,
    root: tempfile::TempDir,
    cidr: String,
}

impl Node {
    /// `subnet` keeps the pod IPs of tests running side by side apart.
    fn new(subnet: u8) -> anyhow::Result<Node> {
        let root = tempfile::tempdir()?;
        let cidr = format!("127.77.{subnet}.0/24");
        let runtime = ProcessRuntime::new(config(root.path(), &cidr))?;
        Ok(Node { runtime, root, cidr })
    }

    /// Another runtime over the same root directory: a restarted kubelet.
    fn restart(&self) -> anyhow::Result<ProcessRuntime> {
        Ok(ProcessRuntime::new(config(self.root.path(), &self.cidr))?)
    }

    async fn sandbox(&self, name: &str) -> anyhow::Result<Sandbox> {
        let pod = PodRef { uid: format!("uid-{name}"), namespace: "default".to_string(), name: name.to_string() };
        Ok(self.runtime.create_sandbox(&pod).await?)
    }

    /// The container's log as text, once it contains `needle`.
    async fn log_containing(&self, id: &str, needle: &str) -> anyhow::Result<String> {
        within(Duration::from_secs(10), async {
            loop {
                let log = collect(&self.runtime, id, &LogOptions::default()).await?;
                if log.contains(needle) {
                    return Ok(log);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .with_context(|| format!("waiting for {needle:?} in the log of {id}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill_everything_under(self.root.path());
    }
}

fn config(root: &Path, cidr: &str) -> ProcessConfig {
    ProcessConfig {
        root_dir: root.to_path_buf(),
        pod_cidr: cidr.to_string(),
        helper: vec![env!("CARGO_BIN_EXE_trireme-shim").into()],
        ..ProcessConfig::default()
    }
}

/// SIGKILLs the shims and container process groups recorded under `root` that have not exited.
fn kill_everything_under(root: &Path) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let pods = std::fs::read_dir(root.join("pods")).into_iter().flatten().flatten();
    for pod in pods {
        for container in std::fs::read_dir(pod.path().join("containers")).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(container.path().join("state.json")) else { continue };
            let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            if !state["exit_code"].is_null() {
                continue;
            }
            if let Some(pid) = state["pid"].as_i64() {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            if let Some(pid) = state["shim_pid"].as_i64() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

fn spec(name: &str, image: &str, command: &[&str], args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: image.to_string(),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        working_dir: None,
        limits: Default::default(),
        mounts: vec![],
        attempt: 0,
    }
}

fn shell(name: &str, script: &str) -> ContainerSpec {
    spec(name, "busybox", &["sh", "-c", script], &[])
}

async fn within<T>(limit: Duration, work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(limit, work).await.map_err(|_| anyhow!("timed out after {limit:?}"))?
}

async fn collect(runtime: &ProcessRuntime, id: &str, options: &LogOptions) -> anyhow::Result<String> {
    let mut stream = runtime.logs(id, options).await?;
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk?);
    }
    Ok(String::from_utf8(text)?)
}

async fn wait_exit(runtime: &ProcessRuntime, id: &str) -> anyhow::Result<(i32, String)> {
    match within(Duration::from_secs(10), async { Ok(runtime.wait_container(id).await?) }).await? {
        ContainerState::Exited { exit_code, reason, .. } => Ok((exit_code, reason)),
        other => bail!("wait_container returned {other:?}"),
    }
}

async fn exit_of(runtime: &ProcessRuntime, id: &str) -> anyhow::Result<(i32, String)> {
    match runtime.container(id).await?.state {
        ContainerState::Exited { exit_code, reason, .. } => Ok((exit_code, reason)),
        other => bail!("container {id} is {other:?}"),
    }
}

/// GET / from `ip:port`, retried until the server listens; returns the body.
async fn http_get(ip: IpAddr, port: u16) -> anyhow::Result<String> {
    let addr = SocketAddr::new(ip, port);
    within(Duration::from_secs(10), async move {
        loop {
            let attempt = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
                let mut response = String::new();
                stream.read_to_string(&mut response)?;
                Ok(response)
            })
            .await?;
            match attempt {
                Ok(response) => {
                    let (head, body) = response.split_once("\r\n\r\n").context("no end of headers")?;
                    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
                    return Ok(body.to_string());
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_runs_logs_and_stops_on_sigterm_well_within_its_grace() -> anyhow::Result<()> {
    let node = Node::new(1)?;
    let sandbox = node.sandbox("web").await?;

    tracing::info!("--- start sh -c 'echo hello; sleep 30'");
    let id = node.runtime.start_container(&sandbox, &shell("main", "echo hello; sleep 30")).await?;
    let info = node.runtime.container(&id).await?;
    ensure!(matches!(info.state, ContainerState::Running { .. }), "{info:?}");
    ensure!(info.pod == sandbox.pod && info.name == "main" && info.image == "busybox", "{info:?}");
    node.log_containing(&id, "hello").await?;

    tracing::info!("--- stop with a long grace: SIGTERM ends it at once");
    let started = Instant::now();
    within(Duration::from_secs(10), async { Ok(node.runtime.stop_container(&id, Duration::from_secs(20)).await?) })
        .await?;
    ensure!(started.elapsed() < Duration::from_secs(5), "stopping took {:?}", started.elapsed());
    ensure!(exit_of(&node.runtime, &id).await? == (143, "Error".to_string()));
    ensure!(wait_exit(&node.runtime, &id).await? == (143, "Error".to_string()));

    tracing::info!("--- stopping again succeeds; removing forgets it");
    node.runtime.stop_container(&id, Duration::from_secs(1)).await?;
    node.runtime.remove_container(&id).await?;
    ensure!(matches!(node.runtime.container(&id).await, Err(RuntimeError::NotFound(_))));
    node.runtime.remove_container(&id).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_ignoring_sigterm_is_sigkilled_once_the_grace_has_passed() -> anyhow::Result<()> {
    let node = Node::new(2)?;
    let sandbox = node.sandbox("stubborn").await?;
    let id = node.runtime.start_container(&sandbox, &shell("main", "trap '' TERM; echo ready; sleep 30")).await?;
    node.log_containing(&id, "ready").await?;

    let started = Instant::now();
    within(Duration::from_secs(10), async { Ok(node.runtime.stop_container(&id, Duration::from_secs(1)).await?) })
        .await?;
    let took = started.elapsed();
    ensure!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "stopping took {took:?}");
    ensure!(exit_of(&node.runtime, &id).await? == (137, "Error".to_string()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_and_reasons_are_recorded() -> anyhow::Result<()> {
    let node = Node::new(3)?;
    let sandbox = node.sandbox("jobs").await?;
    for (name, script, expected) in [
        ("ok", "exit 0", (0, "Completed")),
        ("fails", "exit 3", (3, "Error")),
        ("killed", "kill -KILL $$", (137, "Error")),
    ] {
        let id = node.runtime.start_container(&sandbox, &shell(name, script)).await?;
        let exit = wait_exit(&node.runtime, &id).await?;
        ensure!(exit == (expected.0, expected.1.to_string()), "{name}: {exit:?}");
    }

    tracing::info!("--- args alone replace the image's default command");
    let id =
        node.runtime.start_container(&sandbox, &spec("args", "busybox:1.36", &[], &["sh", "-c", "exit 7"])).await?;
    ensure!(wait_exit(&node.runtime, &id).await? == (7, "Error".to_string()));

    tracing::info!("--- a missing program fails the start and leaves nothing behind");
    let missing = node.runtime.start_container(&sandbox, &spec("missing", "busybox", &["no-such-program"], &[])).await;
    ensure!(matches!(missing, Err(RuntimeError::StartFailed(_))), "{missing:?}");
    let names: Vec<String> = node.runtime.list_containers().await?.into_iter().map(|c| c.name).collect();
    ensure!(names == ["args", "fails", "killed", "ok"], "{names:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_whose_shim_was_killed_is_reported_killed() -> anyhow::Result<()> {
    let node = Node::new(4)?;
    let sandbox = node.sandbox("orphan").await?;
    let id = node.runtime.start_container(&sandbox, &shell("main", "sleep 30")).await?;
    let state_file = node.root.path().join("pods/uid-orphan/containers/main-0/state.json");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state_file)?)?;
    let shim = state["shim_pid"].as_i64().context("no shim pid")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim as i32), nix::sys::signal::Signal::SIGKILL)?;
    ensure!(wait_exit(&node.runtime, &id).await? == (137, "Error".to_string()));
    Ok(())
}

/// What `trireme killall` does to a node whose agent is gone: every recorded container process
/// and shim dies, and the runtime reports the container killed.
#[tokio::test(flavor = "multi_thread")]
async fn containers_left_behind_are_killed_by_kill_recorded_under_their_root() -> anyhow::Result<()> {
    let node = Node::new(31)?;
    let sandbox = node.sandbox("left").await?;
    let id = node.runtime.start_container(&sandbox, &shell("main", "sleep 30")).await?;
    let state_file = node.root.path().join("pods/uid-left/containers/main-0/state.json");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state_file)?)?;
    let pid = i32::try_from(state["pid"].as_i64().context("no container pid")?)?;
    let shim = i32::try_from(state["shim_pid"].as_i64().context("no shim pid")?)?;
    trireme_kubelet::runtime::process::kill_recorded_under(node.root.path());
    ensure!(wait_exit(&node.runtime, &id).await?.0 == 137, "the container is reported killed");
    within(Duration::from_secs(10), async {
        let alive = |pid: i32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // A zombie waits for its parent to reap it: it runs no more.
            !stat.is_empty() && !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z'))
        };
        while alive(pid) || alive(shim) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })
    .await
    .context("the container and its shim are gone")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_get_different_ips_in_the_cidr_and_a_removed_pod_frees_its_ip() -> anyhow::Result<()> {
    let node = Node::new(5)?;
    let a = node.sandbox("a").await?;
    let b = node.sandbox("b").await?;
    ensure!(a.ip.to_string() == "127.77.5.2" && b.ip.to_string() == "127.77.5.3", "{a:?} {b:?}");
    ensure!(node.sandbox("a").await? == a, "creating a sandbox again returns it");
    node.runtime.remove_sandbox(&a.pod).await?;
    node.runtime.remove_sandbox(&a.pod).await?;
    let c = node.sandbox("c").await?;
    ensure!(c.ip == a.ip, "the freed IP is reused: {c:?}");
    let mut listed: Vec<String> = node.runtime.list_sandboxes().await?.into_iter().map(|s| s.pod.name).collect();
    listed.sort();
    ensure!(listed == ["b", "c"], "{listed:?}");

    tracing::info!("--- removing a sandbox whose container still runs kills the container");
    node.runtime.start_container(&b, &shell("main", "sleep 30")).await?;
    let state_file = node.root.path().join("pods/uid-b/containers/main-0/state.json");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state_file)?)?;
    let pid = state["pid"].as_i64().context("no container pid")?;
    node.runtime.remove_sandbox(&b.pod).await?;
    within(Duration::from_secs(10), async {
        while Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })
    .await
    .context("the container outlived its sandbox")?;
    ensure!(node.runtime.list_containers().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_http_echo_pods_listen_on_the_same_port_on_their_own_ips() -> anyhow::Result<()> {
    let node = Node::new(6)?;
    let mut ids = Vec::new();
    for text in ["one", "two"] {
        let sandbox = node.sandbox(text).await?;
        let mut echo = spec("echo", "hashicorp/http-echo:1.0", &[], &[&format!("-text={text}")]);
        echo.env.insert("POD_IP".to_string(), sandbox.ip.to_string());
        ids.push(node.runtime.start_container(&sandbox, &echo).await?);
        ensure!(http_get(sandbox.ip, 5678).await? == format!("{text}\n"));
    }
    for (id, pod) in ids.iter().zip(["one", "two"]) {
        let sandbox = node.sandbox(pod).await?;
        ensure!(http_get(sandbox.ip, 5678).await? == format!("{pod}\n"));
        node.runtime.stop_container(id, Duration::from_secs(5)).await?;
        ensure!(exit_of(&node.runtime, id).await? == (0, "Completed".to_string()), "http-echo exits 0 on SIGTERM");
    }

    tracing::info!("--- nginx on $NGINX_PORT");
    let sandbox = node.sandbox("nginx").await?;
    let mut nginx = spec("nginx", "docker.io/library/nginx:latest", &[], &[]);
    nginx.env.insert("POD_IP".to_string(), sandbox.ip.to_string());
    nginx.env.insert("NGINX_PORT".to_string(), "8080".to_string());
    let id = node.runtime.start_container(&sandbox, &nginx).await?;
    ensure!(http_get(sandbox.ip, 8080).await?.contains("Welcome to nginx!"));
    node.runtime.stop_container(&id, Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_honour_tail_limit_timestamps_and_follow() -> anyhow::Result<()> {
    let node = Node::new(7)?;
    let sandbox = node.sandbox("logs").await?;
    let id =
        node.runtime.start_container(&sandbox, &shell("main", "echo a; echo b >&2; echo c; sleep 1; echo d")).await?;
    node.log_containing(&id, "c\n").await?;

    tracing::info!("--- follow: what is there, what comes, then the end once the container exits");
    let follow = LogOptions { follow: true, ..LogOptions::default() };
    let followed = within(Duration::from_secs(10), collect(&node.runtime, &id, &follow)).await?;
    ensure!(followed == "a\nb\nc\nd\n", "{followed:?}");
    ensure!(wait_exit(&node.runtime, &id).await?.0 == 0);

    let tail = LogOptions { tail_lines: Some(2), ..LogOptions::default() };
    ensure!(collect(&node.runtime, &id, &tail).await? == "c\nd\n");
    let limited = LogOptions { limit_bytes: Some(3), ..LogOptions::default() };
    ensure!(collect(&node.runtime, &id, &limited).await? == "a\nb");
    let stamped = collect(&node.runtime, &id, &LogOptions { timestamps: true, ..LogOptions::default() }).await?;
    for line in stamped.lines() {
        let (stamp, text) = line.split_once(' ').context("no timestamp")?;
        ensure!(stamp.parse::<jiff::Timestamp>().is_ok() && text.len() == 1, "{line:?}");
    }
    let later =
        LogOptions { since: Some(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60)), ..Default::default() };
    ensure!(collect(&node.runtime, &id, &later).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_with_the_containers_env_and_dir_and_is_killed_after_its_timeout() -> anyhow::Result<()> {
    let node = Node::new(8)?;
    let sandbox = node.sandbox("probed").await?;
    let mut sleeper = shell("main", "sleep 30");
    sleeper.env.insert("GREETING".to_string(), "bonjour".to_string());
    let host_file = node.root.path().join("settings.txt");
    std::fs::write(&host_file, "mounted\n")?;
    sleeper.mounts.push(Mount {
        host_path: host_file,
        container_path: "/etc/app/settings.txt".to_string(),
        read_only: true,
    });
    let id = node.runtime.start_container(&sandbox, &sleeper).await?;
    let run = |script: &str, timeout: Duration| {
        let command = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let (runtime, id) = (node.runtime.clone(), id.clone());
        async move { within(Duration::from_secs(10), async { Ok(runtime.exec(&id, &command, timeout).await?) }).await }
    };

    let out = run("echo $GREETING; exit 3", Duration::from_secs(5)).await?;
    ensure!(out.exit_code == 3 && out.output == b"bonjour\n", "{out:?}");
    let out = run("cat etc/app/settings.txt", Duration::from_secs(5)).await?;
    ensure!(out.exit_code == 0 && out.output == b"mounted\n", "the mount is linked under the working dir: {out:?}");

    let started = Instant::now();
    let out = run("echo started; sleep 20", Duration::from_millis(300)).await?;
    ensure!(started.elapsed() < Duration::from_secs(5), "the timeout took {:?}", started.elapsed());
    let output = String::from_utf8_lossy(&out.output);
    ensure!(out.exit_code == 124 && output.starts_with("started\n") && output.contains("timed out"), "{out:?}");

    let missing = node.runtime.exec(&id, &["no-such-probe".to_string()], Duration::from_secs(1)).await?;
    ensure!(missing.exit_code == 127, "{missing:?}");
    node.runtime.stop_container(&id, Duration::from_secs(5)).await?;
    ensure!(node.runtime.exec(&id, &["true".to_string()], Duration::from_secs(1)).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_runtime_finds_the_running_container_and_its_sandbox_and_stops_it() -> anyhow::Result<()> {
    let node = Node::new(9)?;
    let sandbox = node.sandbox("survivor").await?;
    let id = node.runtime.start_container(&sandbox, &shell("main", "echo up; sleep 30")).await?;
    node.log_containing(&id, "up").await?;

    tracing::info!("--- a new runtime over the same root: the kubelet restarted");
    let restarted = node.restart()?;
    ensure!(restarted.list_sandboxes().await? == vec![sandbox.clone()]);
    let containers = restarted.list_containers().await?;
    ensure!(containers.len() == 1 && containers[0].id == id, "{containers:?}");
    ensure!(matches!(containers[0].state, ContainerState::Running { .. }), "{containers:?}");
    ensure!(restarted.create_sandbox(&sandbox.pod).await? == sandbox, "the IP survives the restart");

    within(Duration::from_secs(10), async { Ok(restarted.stop_container(&id, Duration::from_secs(5)).await?) }).await?;
    ensure!(exit_of(&restarted, &id).await? == (143, "Error".to_string()));
    restarted.remove_sandbox(&sandbox.pod).await?;
    ensure!(restarted.list_sandboxes().await?.is_empty() && restarted.list_containers().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_image_is_not_found_and_names_the_flag_that_maps_it() -> anyhow::Result<()> {
    let node = Node::new(10)?;
    let sandbox = node.sandbox("unknown").await?;
    match node.runtime.start_container(&sandbox, &spec("app", "example.com/team/app:v2", &[], &[])).await {
        Err(RuntimeError::ImageNotFound { reason, .. }) => ensure!(reason.contains("--image"), "{reason}"),
        other => bail!("expected ImageNotFound, got {other:?}"),
    }
    ensure!(node.runtime.list_containers().await?.is_empty());

    tracing::info!("--- mapped with --image, the same image runs");
    let script = node.root.path().join("app.sh");
    std::fs::write(&script, "#!/bin/sh\necho mapped \"$@\"\n")?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut config = config(node.root.path(), &node.cidr);
    config.images.insert("example.com/team/app".to_string(), script.clone());
    let mapped = ProcessRuntime::new(config)?;
    let id = mapped.start_container(&sandbox, &spec("app", "example.com/team/app:v2", &[], &["x"])).await?;
    ensure!(wait_exit(&mapped, &id).await? == (0, "Completed".to_string()));
    ensure!(collect(&mapped, &id, &LogOptions::default()).await? == "mapped x\n");
    ensure!(mapped.container(&id).await?.image_id == script.display().to_string());
    Ok(())
}

#[test]
fn the_helper_ignores_what_is_not_its_own() {
    let args: Vec<std::ffi::OsString> = vec!["up".into()];
    assert!(trireme_kubelet::helper::run_helper(&args).is_none());
    assert!(trireme_kubelet::helper::run_helper(&[]).is_none());
}
