//! The Docker runtime against the machine's Docker daemon, with a busybox image built here
//! from `/bin/busybox` (Debian's `busybox-static`). Skipped, saying so, only when no daemon
//! answers. Every test runs as a node of its own name and removes its containers and network
//! by label afterwards, failed or not.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trireme_kubelet::runtime::docker::{DockerConfig, DockerRuntime};
use trireme_kubelet::runtime::{
    ContainerRuntime, ContainerSpec, ContainerState, Limits, LogOptions, Mount, PodRef, RuntimeError, Sandbox,
};

const TEST_IMAGE: &str = "trireme-test/busybox:1";

/// Runs `body` against a runtime of a node named after the test, then removes everything of
/// that node (containers by label, then the network), whether `body` passed, failed or
/// panicked. Returns without running it when no Docker daemon answers.
async fn with_node<F, Fut>(test: &str, body: F) -> anyhow::Result<()>
where
    F: FnOnce(DockerRuntime, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let docker = match Docker::connect_with_local_defaults() {
        Ok(docker) => docker,
        Err(err) => {
            println!("skipping {test}: no Docker daemon ({err})");
            return Ok(());
        }
    };
    if docker.ping().await.is_err() {
        println!("skipping {test}: no Docker daemon answers");
        return Ok(());
    }
    let docker = docker.negotiate_version().await?;
    build_test_image(&docker).await?;
    let node = format!("t{}-{test}", std::process::id());
    let runtime = DockerRuntime::connect(DockerConfig { node_name: node.clone(), ..DockerConfig::default() }).await;
    let outcome = match runtime {
        Ok(runtime) => match tokio::spawn(body(runtime, node.clone())).await {
            Ok(result) => result,
            Err(panicked) => Err(anyhow::anyhow!("the test panicked: {panicked}")),
        },
        Err(err) => Err(err.into()),
    };
    let cleanup = remove_node(&docker, &node).await;
    outcome?;
    cleanup
}

/// Removes every container labelled with `node`, and its network.
async fn remove_node(docker: &Docker, node: &str) -> anyhow::Result<()> {
    let filters = HashMap::from([("label", vec![format!("trireme.node={node}")])]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    for container in docker.list_containers(Some(options)).await? {
        if let Some(id) = container.id {
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            docker.remove_container(&id, Some(force)).await?;
        }
    }
    match docker.remove_network(&format!("trireme-{node}")).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// `trireme-test/busybox:1`: busybox with its applets installed in /bin, `ENTRYPOINT
/// ["/bin/busybox"]` and `CMD ["echo", "default-cmd"]`.
async fn build_test_image(docker: &Docker) -> anyhow::Result<()> {
    if docker.inspect_image(TEST_IMAGE).await.is_ok() {
        return Ok(());
    }
    let busybox = std::fs::read("/bin/busybox")
        .context("/bin/busybox is needed to build the test image: apt-get install busybox-static")?;
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
                      ENTRYPOINT [\"/bin/busybox\"]\nCMD [\"echo\", \"default-cmd\"]\n";
    let mut tar = tar::Builder::new(Vec::new());
    for (path, mode, data) in [("Dockerfile", 0o644, dockerfile.as_bytes()), ("busybox", 0o755, &busybox[..])] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        tar.append_data(&mut header, path, data)?;
    }
    let context = tar.into_inner()?;
    let options = BuildImageOptionsBuilder::default().t(TEST_IMAGE).rm(true).forcerm(true).build();
    let mut build = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = build.next().await {
        step.context("building the test image")?;
    }
    Ok(())
}

fn pod(name: &str) -> PodRef {
    PodRef { uid: format!("{name}-uid-{}", std::process::id()), namespace: "default".into(), name: name.into() }
}

/// A busybox container running `script` with `sh -c`, through the image's entrypoint.
fn sh(name: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: TEST_IMAGE.into(),
        command: vec![],
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: BTreeMap::new(),
        working_dir: None,
        limits: Limits::default(),
        mounts: vec![],
        attempt: 0,
    }
}

/// All of a container's output so far.
async fn logs(runtime: &DockerRuntime, id: &str, options: &LogOptions) -> anyhow::Result<String> {
    let mut stream = runtime.logs(id, options).await?;
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk?);
    }
    Ok(String::from_utf8(text)?)
}

async fn exit_code(runtime: &DockerRuntime, id: &str) -> anyhow::Result<(i32, String)> {
    let wait = tokio::time::timeout(Duration::from_secs(30), runtime.wait_container(id));
    match wait.await.context("the container did not exit")?? {
        ContainerState::Exited { exit_code, reason, .. } => Ok((exit_code, reason)),
        other => bail!("wait_container returned {other:?}"),
    }
}

/// `GET /` from the host, retried until the server listens.
async fn http_get(ip: IpAddr, port: u16) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect((ip, port)).await?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n").await?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await?;
            anyhow::Ok(response)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(response)) => return Ok(response),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Err(err)) => return Err(err.context(format!("GET http://{ip}:{port}/"))),
            Err(_) => bail!("GET http://{ip}:{port}/ timed out"),
        }
    }
}

#[tokio::test]
async fn containers_of_a_pod_share_the_sandbox_network_and_the_host_reaches_the_pod_ip() -> anyhow::Result<()> {
    with_node("net", |runtime, node| async move {
        tracing::info!("--- a sandbox gets an address on the node's network");
        let web = pod("web");
        let sandbox = runtime.create_sandbox(&web).await?;
        let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
        let network = docker.inspect_network(&format!("trireme-{node}"), None).await?;
        let subnet =
            network.ipam.and_then(|ipam| ipam.config?.first()?.subnet.clone()).context("the network has no subnet")?;
        let (base, prefix) = subnet.split_once('/').context("subnet")?;
        let (base, prefix): (Ipv4Addr, u32) = (base.parse()?, prefix.parse()?);
        let IpAddr::V4(ip) = sandbox.ip else { bail!("not IPv4: {}", sandbox.ip) };
        let mask = u32::MAX << (32 - prefix);
        ensure!(u32::from(ip) & mask == u32::from(base), "{ip} is not in {subnet}");
        ensure!(runtime.create_sandbox(&web).await? == sandbox, "creating the sandbox again returns it");

        tracing::info!("--- one container serves HTTP, the other reaches it on 127.0.0.1");
        let server = runtime
            .start_container(
                &sandbox,
                &sh(
                    "server",
                    "mkdir -p /www && echo hello-from-httpd > /www/index.html && exec httpd -f -p 8080 -h /www",
                ),
            )
            .await?;
        let client_spec = ContainerSpec {
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec![
                "for i in $(seq 1 50); do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.2; done; exit 1".into(),
            ],
            ..sh("client", "")
        };
        let client = runtime.start_container(&sandbox, &client_spec).await?;
        ensure!(exit_code(&runtime, &client).await? == (0, "Completed".into()));
        let output = logs(&runtime, &client, &LogOptions::default()).await?;
        ensure!(output.contains("hello-from-httpd"), "client logs: {output:?}");

        tracing::info!("--- the host reaches podIP:8080");
        let response = http_get(sandbox.ip, 8080).await?;
        ensure!(response.contains("hello-from-httpd"), "response: {response:?}");
        ensure!(matches!(runtime.container(&server).await?.state, ContainerState::Running { .. }));

        tracing::info!("--- remove_sandbox removes the pod's containers and the pause container");
        runtime.stop_container(&server, Duration::from_secs(5)).await?;
        runtime.remove_sandbox(&web).await?;
        ensure!(runtime.list_containers().await?.is_empty());
        ensure!(runtime.list_sandboxes().await?.is_empty());
        let filters = HashMap::from([("label", vec![format!("trireme.node={node}")])]);
        let left = docker
            .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build()))
            .await?;
        ensure!(left.is_empty(), "left behind: {left:?}");
        runtime.remove_sandbox(&web).await?;
        ensure!(runtime.remove_network_if_unused().await?, "the network is unused now");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn command_args_env_mounts_and_limits_reach_the_container_and_logs_honour_their_options() -> anyhow::Result<()> {
    with_node("spec", |runtime, _node| async move {
        let p = pod("spec");
        let sandbox = runtime.create_sandbox(&p).await?;

        tracing::info!("--- neither command nor args: the image's entrypoint and cmd");
        let default = ContainerSpec { args: vec![], ..sh("default", "") };
        let id = runtime.start_container(&sandbox, &default).await?;
        ensure!(exit_code(&runtime, &id).await?.0 == 0);
        ensure!(logs(&runtime, &id, &LogOptions::default()).await? == "default-cmd\n");

        tracing::info!("--- env, working dir, a read-only and a writable mount, limits");
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("in.txt"), "from-the-host\n")?;
        let out = tempfile::tempdir()?;
        let spec = ContainerSpec {
            env: BTreeMap::from([("GREETING".to_string(), "hi there".to_string())]),
            working_dir: Some("/work".into()),
            mounts: vec![
                Mount { host_path: dir.path().into(), container_path: "/in".into(), read_only: true },
                Mount { host_path: out.path().into(), container_path: "/out".into(), read_only: false },
            ],
            limits: Limits { cpu_millis: Some(500), memory_bytes: Some(64 << 20) },
            ..sh(
                "env",
                "echo \"$GREETING\"; pwd; cat /in/in.txt; (echo x > /in/in.txt) 2>/dev/null || echo ro-refused; \
                 echo written > /out/out.txt",
            )
        };
        let id = runtime.start_container(&sandbox, &spec).await?;
        ensure!(exit_code(&runtime, &id).await? == (0, "Completed".into()));
        let output = logs(&runtime, &id, &LogOptions::default()).await?;
        ensure!(output == "hi there\n/work\nfrom-the-host\nro-refused\n", "output: {output:?}");
        ensure!(std::fs::read_to_string(out.path().join("out.txt"))? == "written\n");
        let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
        let host_config = docker.inspect_container(&id, None).await?.host_config.context("host config")?;
        ensure!(host_config.nano_cpus == Some(500_000_000) && host_config.memory == Some(64 << 20));
        let info = runtime.container(&id).await?;
        ensure!(
            info.name == "env" && info.pod == p && info.image == TEST_IMAGE && info.image_id.starts_with("sha256:")
        );

        tracing::info!("--- logs: stdout and stderr, tail, timestamps, since, limit_bytes, follow");
        // Docker copies stdout and stderr from two pipes: lines written at the same moment
        // may be logged in either order, so the script pauses before switching streams.
        let spec = sh("talk", "for i in 1 2 3 4; do echo line$i; done; sleep 0.3; echo oops >&2; sleep 1; echo late");
        let id = runtime.start_container(&sandbox, &spec).await?;
        let followed = logs(&runtime, &id, &LogOptions { follow: true, ..LogOptions::default() }).await?;
        ensure!(followed == "line1\nline2\nline3\nline4\noops\nlate\n", "followed: {followed:?}");
        let tail = logs(&runtime, &id, &LogOptions { tail_lines: Some(2), ..LogOptions::default() }).await?;
        ensure!(tail == "oops\nlate\n", "tail: {tail:?}");
        let stamped = logs(&runtime, &id, &LogOptions { timestamps: true, ..LogOptions::default() }).await?;
        let line3 = stamped.lines().nth(2).context("a third line")?;
        let (stamp, text) = line3.split_once(' ').context("a timestamp")?;
        ensure!(text == "line3", "{line3:?}");
        let since = Some(stamp.parse::<jiff::Timestamp>()?);
        let after = logs(&runtime, &id, &LogOptions { since, ..LogOptions::default() }).await?;
        ensure!(after == "line3\nline4\noops\nlate\n", "since {stamp}: {after:?}");
        let limited = logs(&runtime, &id, &LogOptions { limit_bytes: Some(8), ..LogOptions::default() }).await?;
        ensure!(limited == "line1\nli", "limited: {limited:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn stop_honours_the_grace_and_kills_what_ignores_sigterm() -> anyhow::Result<()> {
    with_node("stop", |runtime, _node| async move {
        let p = pod("stop");
        let sandbox = runtime.create_sandbox(&p).await?;

        tracing::info!("--- exit codes of containers that end by themselves");
        let ok = runtime.start_container(&sandbox, &sh("ok", "true")).await?;
        let failed = runtime.start_container(&sandbox, &sh("failed", "exit 7")).await?;
        ensure!(exit_code(&runtime, &ok).await? == (0, "Completed".into()));
        ensure!(exit_code(&runtime, &failed).await? == (7, "Error".into()));
        runtime.stop_container(&failed, Duration::from_secs(1)).await?;

        tracing::info!("--- a container that handles SIGTERM exits with its own code, well before the grace");
        let polite = runtime
            .start_container(&sandbox, &sh("polite", "trap 'exit 3' TERM; while true; do sleep 0.1; done"))
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        runtime.stop_container(&polite, Duration::from_secs(20)).await?;
        ensure!(started.elapsed() < Duration::from_secs(10), "stop took {:?}", started.elapsed());
        ensure!(exit_code(&runtime, &polite).await? == (3, "Error".into()));

        tracing::info!("--- one that ignores SIGTERM is killed once the grace has passed");
        let stubborn =
            runtime.start_container(&sandbox, &sh("stubborn", "trap '' TERM; while true; do sleep 0.1; done")).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        runtime.stop_container(&stubborn, Duration::from_millis(1500)).await?;
        let took = started.elapsed();
        ensure!(took >= Duration::from_millis(1900) && took < Duration::from_secs(15), "stop took {took:?}");
        ensure!(exit_code(&runtime, &stubborn).await? == (137, "Error".into()));

        tracing::info!("--- the pause container ends at SIGTERM with status 0");
        let started = Instant::now();
        runtime.stop_container(&sandbox.id, Duration::from_secs(20)).await?;
        ensure!(started.elapsed() < Duration::from_secs(10), "stopping pause took {:?}", started.elapsed());
        let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
        let state = docker.inspect_container(&sandbox.id, None).await?.state.context("state")?;
        ensure!(state.exit_code == Some(0) && state.running == Some(false), "pause: {state:?}");
        let listed = runtime.list_sandboxes().await?;
        ensure!(listed.len() == 1 && listed[0].ip.is_unspecified(), "{listed:?}");

        tracing::info!("--- a stopped sandbox is replaced by create_sandbox");
        let replaced = runtime.create_sandbox(&p).await?;
        ensure!(replaced.id != sandbox.id && !replaced.ip.is_unspecified());
        ensure!(docker.inspect_container(&sandbox.id, None).await.is_err(), "the old pause container is gone");

        tracing::info!("--- removing a container forgets it");
        runtime.remove_container(&ok).await?;
        runtime.remove_container(&ok).await?;
        ensure!(matches!(runtime.container(&ok).await, Err(RuntimeError::NotFound(_))));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn exec_runs_in_the_container_caps_output_and_times_out_with_124() -> anyhow::Result<()> {
    with_node("exec", |runtime, _node| async move {
        let sandbox = runtime.create_sandbox(&pod("exec")).await?;
        let spec = ContainerSpec {
            env: BTreeMap::from([("PROBE_ENV".to_string(), "seen".to_string())]),
            ..sh("app", "while true; do sleep 1; done")
        };
        let id = runtime.start_container(&sandbox, &spec).await?;
        let run = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];

        tracing::info!("--- output of stdout and stderr, the exit code, the container's environment");
        let out =
            runtime.exec(&id, &run("echo out; echo err >&2; echo $PROBE_ENV; exit 5"), Duration::from_secs(10)).await?;
        let text = String::from_utf8_lossy(&out.output);
        ensure!(out.exit_code == 5, "{out:?}");
        ensure!(text.contains("out\n") && text.contains("err\n") && text.contains("seen\n"), "{text:?}");

        tracing::info!("--- output is capped at 10 KiB");
        let out = runtime.exec(&id, &run("yes 0123456789 | head -c 100000"), Duration::from_secs(10)).await?;
        ensure!(out.exit_code == 0 && out.output.len() == 10 * 1024, "{} bytes", out.output.len());

        tracing::info!("--- a command running past its timeout ends as 124");
        let started = Instant::now();
        let out = runtime.exec(&id, &run("echo before; sleep 30"), Duration::from_millis(700)).await?;
        ensure!(started.elapsed() < Duration::from_secs(5), "exec took {:?}", started.elapsed());
        let text = String::from_utf8_lossy(&out.output);
        ensure!(out.exit_code == 124 && text.contains("timed out"), "{out:?}");

        tracing::info!("--- exec in a container that is not there");
        let missing = runtime.exec("no-such-container", &run("true"), Duration::from_secs(1)).await;
        ensure!(matches!(missing, Err(RuntimeError::NotFound(_))), "{missing:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_restarted_kubelet_finds_what_runs_and_other_nodes_do_not() -> anyhow::Result<()> {
    with_node("restart", |runtime, node| async move {
        let p = pod("survivor");
        let sandbox: Sandbox = runtime.create_sandbox(&p).await?;
        let spec = ContainerSpec { attempt: 2, ..sh("app", "while true; do sleep 1; done") };
        let id = runtime.start_container(&sandbox, &spec).await?;
        ensure!(runtime.start_container(&sandbox, &spec).await? == id, "starting the same attempt again returns it");
        drop(runtime);

        tracing::info!("--- a new runtime of the same node lists the sandbox and the container");
        let config = DockerConfig { node_name: node.clone(), ..DockerConfig::default() };
        let again = DockerRuntime::connect(config).await?;
        ensure!(again.name() == "docker");
        ensure!(again.list_sandboxes().await? == vec![sandbox.clone()]);
        let listed = again.list_containers().await?;
        ensure!(listed.len() == 1, "{listed:?}");
        ensure!(listed[0].id == id && listed[0].name == "app" && listed[0].attempt == 2 && listed[0].pod == p);
        ensure!(matches!(listed[0].state, ContainerState::Running { .. }));
        ensure!(again.create_sandbox(&p).await? == sandbox);
        ensure!(!again.remove_network_if_unused().await?, "the network is in use");

        tracing::info!("--- another node on the same daemon sees none of it");
        let other_node = format!("{node}-other");
        let other =
            DockerRuntime::connect(DockerConfig { node_name: other_node.clone(), ..DockerConfig::default() }).await?;
        let other_sees = (other.list_sandboxes().await?, other.list_containers().await?);
        let missing = other.container(&id).await;
        ensure!(other.remove_network_if_unused().await?);
        ensure!(other_sees.0.is_empty() && other_sees.1.is_empty(), "{other_sees:?}");
        ensure!(matches!(missing, Err(RuntimeError::NotFound(_))), "{missing:?}");

        again.stop_container(&id, Duration::from_secs(1)).await?;
        again.remove_sandbox(&p).await?;
        ensure!(again.list_containers().await?.is_empty() && again.list_sandboxes().await?.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_missing_image_or_executable_fails_the_start_and_leaves_nothing() -> anyhow::Result<()> {
    with_node("fail", |runtime, _node| async move {
        let sandbox = runtime.create_sandbox(&pod("fail")).await?;
        let absent = ContainerSpec { image: "trireme-test/absent:1".into(), ..sh("absent", "true") };
        match runtime.start_container(&sandbox, &absent).await {
            Err(err @ RuntimeError::ImageNotFound { .. }) => {
                let message = err.to_string();
                ensure!(message.contains("docker load") && message.contains("registry"), "{message}");
            }
            other => bail!("expected ImageNotFound, got {other:?}"),
        }
        let bad = ContainerSpec { command: vec!["/no/such/program".into()], args: vec![], ..sh("bad", "") };
        match runtime.start_container(&sandbox, &bad).await {
            Err(RuntimeError::StartFailed(message)) => ensure!(message.contains("/no/such/program"), "{message}"),
            other => bail!("expected StartFailed, got {other:?}"),
        }
        ensure!(runtime.list_containers().await?.is_empty(), "a failed start left a container");
        Ok(())
    })
    .await
}
