//! The compose deployment (deploy/compose) on the machine's Docker engine: an image built here
//! from this build's binary, three masters and two nodes as containers with their own
//! addresses, brought up with `trireme init` and `trireme join` only. kubectl and etcdctl on
//! the host reach every master; killing the leader's container leaves writes going; it rejoins
//! after `docker start`; every container killed at once comes back by itself with its data.
//!
//! The project, image and network are named after this process and removed at the end, also
//! when the test fails.

mod common;

use std::path::Path;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use anyhow::ensure;

/// A compose project; `docker-compose down -v` and the image removed on drop.
struct Project {
    /// The extra network the partition test reaches a cut-off master through.
    side_network: std::sync::Mutex<Option<String>>,
    name: String,
    image: String,
    subnet: String,
    file: PathBuf,
    dir: tempfile::TempDir,
}

impl Project {
    fn compose(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new("docker-compose");
        cmd.args(["-f", &self.file.display().to_string(), "-p", &self.name])
            .args(args)
            .env("TRIREME_IMAGE", &self.image)
            .env("TRIREME_SUBNET", &self.subnet);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        let mut cmd = tokio::process::Command::from(self.compose(args));
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
            .await
            .context("docker-compose timed out")??;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(out.status.success(), "docker-compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(text)
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }

    fn address(&self, last: u8) -> String {
        format!("{}.{last}", self.subnet)
    }

    async fn logs(&self) -> String {
        self.run(&["logs", "--tail", "30"]).await.unwrap_or_else(|e| e.to_string())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--timeout", "5"]).output();
        if let Some(side) = self.side_network.lock().ok().and_then(|mut s| s.take()) {
            let _ = std::process::Command::new("docker").args(["network", "rm", &side]).output();
        }
        let _ = std::process::Command::new("docker").args(["image", "rm", "-f", &self.image]).output();
    }
}

async fn docker(args: &[&str]) -> Result<Output> {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args).kill_on_drop(true);
    Ok(tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.context("docker timed out")??)
}

/// A /24 in 172.29.0.0–172.31.255.0 that no Docker network uses, picked from `seed`.
async fn free_subnet(seed: u64) -> Result<String> {
    let out =
        docker(&["network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", "bridge"]).await?;
    let mut used = String::from_utf8_lossy(&out.stdout).to_string();
    let ids = docker(&["network", "ls", "-q"]).await?;
    for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
        let out = docker(&["network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", id]).await?;
        used.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    for i in 0..768u64 {
        let n = (seed + i) % 768;
        let candidate = format!("172.{}.{}", 29 + n / 256, n % 256);
        if !used.contains(&format!("{candidate}.0/")) {
            return Ok(candidate);
        }
    }
    bail!("no free /24 in 172.29.0.0/14")
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, check: F) -> Result<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = Instant::now();
    loop {
        let last = check().await;
        if matches!(last, Ok(true)) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("{what}: not within {limit:?} (last: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// kubectl with the admin kubeconfig, failing on a non-zero exit.
fn kubectl_at(
    kubeconfig: &Path,
    cache: &Path,
) -> impl Fn(&[&str]) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String>> + Send>> {
    let (kubeconfig, cache) = (kubeconfig.to_path_buf(), cache.to_path_buf());
    move |args: &[&str]| {
        let (kubeconfig, cache) = (kubeconfig.clone(), cache.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Box::pin(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::ok(common::kubectl(&kubeconfig, &cache, &args, None).await?)
        })
    }
}

/// What a user does first: apply the example, wait for the rollout, scale, change the image,
/// read the logs.
async fn seed_flow<K, F>(kubectl: &K) -> Result<()>
where
    K: Fn(&[&str]) -> F,
    F: std::future::Future<Output = Result<String>>,
{
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/hello.yaml");
    kubectl(&["apply", "-f", &example.display().to_string()]).await?;
    kubectl(&["rollout", "status", "deployment/hello", "--timeout=90s"]).await?;
    kubectl(&["scale", "deployment/hello", "--replicas=4"]).await?;
    kubectl(&["rollout", "status", "deployment/hello", "--timeout=90s"]).await?;
    kubectl(&["set", "image", "deployment/hello", "hello=hashicorp/http-echo:1.1"]).await?;
    kubectl(&["rollout", "status", "deployment/hello", "--timeout=120s"]).await?;
    let pods = kubectl(&[
        "get",
        "pods",
        "-l",
        "app=hello",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.spec.containers[0].image}{\"\\n\"}{end}",
    ])
    .await?;
    let running: Vec<&str> = pods.lines().filter(|l| l.contains("Running") && l.contains("http-echo:1.1")).collect();
    ensure!(running.len() == 4, "4 pods of the new image running:\n{pods}");
    ensure!(
        running.iter().any(|l| l.starts_with("node-1")) && running.iter().any(|l| l.starts_with("node-2")),
        "spread over both nodes:\n{pods}"
    );
    let logs = kubectl(&["logs", "deployment/hello"]).await?;
    println!("seed flow: apply, rollout, scale to 4, set image, logs ({} bytes)", logs.len());
    Ok(())
}

/// The leader's container cut off with `docker network disconnect`: the majority elects a
/// leader and takes writes; the cut-off master (reached over a second network) takes none; after
/// `docker network connect` it has the majority's writes.
async fn partition(project: &Project, masters: &[String], endpoints: &str, pki: &Path) -> Result<()> {
    let leader = leader_index(masters, endpoints, pki).await?;
    let container = project.container(&format!("m{}", leader + 1));
    let cluster_net = format!("{}_cluster", project.name);
    let side = format!("{}-side", project.name);
    ensure!(docker(&["network", "create", "--label", "org.trireme.compose=1", &side]).await?.status.success());
    project.side_network.lock().map_err(|_| anyhow::anyhow!("lock"))?.replace(side.clone());
    ensure!(docker(&["network", "connect", &side, &container]).await?.status.success());
    let out = docker(&[
        "inspect",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{side}\").IPAddress}}}}"),
        &container,
    ])
    .await?;
    let side_ip = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(docker(&["network", "disconnect", &cluster_net, &container]).await?.status.success());
    let cut_off = format!("https://{side_ip}:2379");
    let majority: String = masters
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, a)| format!("https://{a}:2379"))
        .collect::<Vec<_>>()
        .join(",");
    let healed = wait_for("the majority takes a write with its leader cut off", Duration::from_secs(30), || async {
        Ok(etcdctl(&majority, pki, &["--command-timeout=2s", "put", "partition", "majority"]).await?.status.success())
    })
    .await?;
    println!("majority writes again {:.2} s after the leader was cut off", healed.as_secs_f64());
    let refused =
        etcdctl(&cut_off, pki, &["--insecure-skip-tls-verify", "--command-timeout=3s", "put", "partition", "minority"])
            .await?;
    ensure!(!refused.status.success(), "the cut-off master took a write");
    ensure!(
        docker(&["network", "connect", "--ip", &masters[leader], &cluster_net, &container]).await?.status.success()
    );
    wait_for("the cut-off master converges after reconnecting", Duration::from_secs(60), || async {
        let out = etcdctl(
            &format!("https://{}:2379", masters[leader]),
            pki,
            &["get", "partition", "--print-value-only", "--consistency=s"],
        )
        .await?;
        Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "majority")
    })
    .await?;
    let _ = docker(&["network", "disconnect", &side, &container]).await;
    Ok(())
}

/// The index in `masters` of the leader.
async fn leader_index(masters: &[String], endpoints: &str, pki: &Path) -> Result<usize> {
    let status = common::ok(etcdctl(endpoints, pki, &["endpoint", "status", "-w", "json"]).await?)?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let leader = status
        .as_array()
        .context("status")?
        .iter()
        .find(|s| s["Status"]["header"]["member_id"] == s["Status"]["leader"])
        .and_then(|s| s["Endpoint"].as_str())
        .context("a leader")?
        .to_string();
    masters.iter().position(|a| leader.contains(&format!("{a}:"))).context("the leader's address")
}

/// Every master restarted in turn (`docker restart`, waiting for it to serve again) while a
/// client writes without pause: every acknowledged write is there afterwards.
async fn rolling_restart(project: &Project, endpoints: &str, pki: &Path) -> Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (stop, endpoints, pki) = (stop.clone(), endpoints.to_string(), pki.to_path_buf());
        tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0usize);
            let mut i = 0u64;
            while !stop.is_cancelled() {
                i += 1;
                let key = format!("rolling/{i:06}");
                match etcdctl(&endpoints, &pki, &["--command-timeout=2s", "put", &key, "v"]).await {
                    Ok(out) if out.status.success() => acked.push(key),
                    _ => failed += 1,
                }
            }
            (acked, failed)
        })
    };
    let started = Instant::now();
    for m in ["m1", "m2", "m3"] {
        let container = project.container(m);
        ensure!(docker(&["restart", "--time", "10", &container]).await?.status.success(), "docker restart {m}");
        let address = project.address(match m {
            "m1" => 11,
            "m2" => 12,
            _ => 13,
        });
        wait_for(&format!("{m} serving again"), Duration::from_secs(60), || async {
            let out = etcdctl(&format!("https://{address}:2379"), pki, &["endpoint", "health"]).await?;
            Ok(out.status.success())
        })
        .await?;
    }
    stop.cancel();
    let (acked, failed) = writer.await?;
    println!(
        "rolling restart of 3 masters in {:.1} s: {} writes acknowledged, {failed} failed attempts",
        started.elapsed().as_secs_f64(),
        acked.len()
    );
    ensure!(acked.len() >= 10, "the writer got only {} writes through", acked.len());
    let out = common::ok(etcdctl(endpoints, pki, &["get", "--prefix", "rolling/", "--keys-only"]).await?)?;
    let stored: std::collections::BTreeSet<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    let lost: Vec<&String> = acked.iter().filter(|k| !stored.contains(k.as_str())).collect();
    ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    Ok(())
}

fn etcd_flags(pki: &Path) -> Vec<String> {
    vec![
        format!("--cacert={}", pki.join("etcd-ca.crt").display()),
        format!("--cert={}", pki.join("etcd-client.crt").display()),
        format!("--key={}", pki.join("etcd-client.key").display()),
    ]
}

async fn etcdctl(endpoints: &str, pki: &Path, args: &[&str]) -> Result<Output> {
    let flags = etcd_flags(pki);
    let all: Vec<&str> = flags.iter().map(String::as_str).chain(args.iter().copied()).collect();
    common::etcdctl(endpoints, &all, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_cluster_comes_up_with_init_and_join_and_survives_its_leader_container() -> Result<()> {
    let docker_up =
        docker(&["info", "--format", "{{.ServerVersion}}"]).await.map(|o| o.status.success()).unwrap_or(false);
    if !docker_up {
        eprintln!("SKIPPED: no Docker engine answers here");
        return Ok(());
    }
    let seed: u64 = std::env::var("TRIREME_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (TRIREME_TEST_SEED={seed} repeats the subnet choice)");
    let name = format!("trireme-test-{}", std::process::id());
    let project = Project {
        side_network: std::sync::Mutex::new(None),
        image: format!("{name}:dev"),
        subnet: free_subnet(seed).await?,
        file: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose/docker-compose.yml"),
        dir: tempfile::tempdir()?,
        name: name.replace('-', ""),
    };
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/image/build.sh");
    let out =
        tokio::process::Command::new(build).args([env!("CARGO_BIN_EXE_trireme"), &project.image]).output().await?;
    ensure!(out.status.success(), "building the image: {}", String::from_utf8_lossy(&out.stderr));

    let started = Instant::now();
    project.run(&["up", "-d"]).await?;
    // The admin kubeconfig and the etcd client certificate, from the first master's volume.
    let pki = project.dir.path().join("pki");
    std::fs::create_dir_all(&pki)?;
    let m1 = project.container("m1");
    wait_for("m1's admin kubeconfig", Duration::from_secs(120), || async {
        Ok(docker(&[
            "cp",
            &format!("{m1}:/var/lib/trireme/admin.kubeconfig"),
            &project.dir.path().display().to_string(),
        ])
        .await?
        .status
        .success())
    })
    .await?;
    for file in ["etcd-ca.crt", "etcd-client.crt", "etcd-client.key"] {
        let out = docker(&["cp", &format!("{m1}:/var/lib/trireme/pki/{file}"), &pki.display().to_string()]).await?;
        ensure!(out.status.success(), "docker cp {file}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let kubeconfig = project.dir.path().join("admin.kubeconfig");
    let cache = project.dir.path().join("kubecache");
    let kubectl = |args: Vec<String>| {
        let (kubeconfig, cache) = (kubeconfig.clone(), cache.clone());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::ok(common::kubectl(&kubeconfig, &cache, &args, None).await?)
        }
    };
    let masters: Vec<String> = (11..=13).map(|i| project.address(i)).collect();
    let endpoints = masters.iter().map(|a| format!("https://{a}:2379")).collect::<Vec<_>>().join(",");

    let ready = wait_for("two nodes Ready and three voters", Duration::from_secs(180), || async {
        let nodes = kubectl(vec![
            "get".into(),
            "nodes".into(),
            "-o".into(),
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\" \"}{end}".into(),
        ])
        .await?;
        let members = common::ok(etcdctl(&endpoints, &pki, &["member", "list", "-w", "json"]).await?)?;
        let members: serde_json::Value = serde_json::from_str(&members)?;
        let voters = members["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["isLearner"] != true).count());
        Ok(nodes.split_whitespace().filter(|s| *s == "True").count() == 2 && voters == 3)
    })
    .await;
    if let Err(e) = ready {
        bail!("{e:#}\n{}", project.logs().await);
    }
    println!("compose up to all nodes Ready: {:.1} s", started.elapsed().as_secs_f64());

    // kubectl through every master.
    for address in &masters {
        kubectl(vec!["--server".into(), format!("https://{address}:6443"), "get".into(), "nodes".into()]).await?;
    }
    common::ok(etcdctl(&endpoints, &pki, &["put", "before", "kill"]).await?)?;

    seed_flow(&kubectl_at(&kubeconfig, &cache)).await.map_err(|e| anyhow::anyhow!("{e:#}"))?;
    partition(&project, &masters, &endpoints, &pki).await?;

    // The leader's container killed: the others elect a leader and take writes.
    let status = common::ok(etcdctl(&endpoints, &pki, &["endpoint", "status", "-w", "json"]).await?)?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let leader_endpoint = status
        .as_array()
        .context("status")?
        .iter()
        .find(|s| s["Status"]["header"]["member_id"] == s["Status"]["leader"])
        .and_then(|s| s["Endpoint"].as_str())
        .context("a leader")?
        .to_string();
    let leader_index = masters.iter().position(|a| leader_endpoint.contains(a.as_str())).context("leader address")?;
    let leader = project.container(&format!("m{}", leader_index + 1));
    let others = masters
        .iter()
        .filter(|a| !leader_endpoint.contains(a.as_str()))
        .map(|a| format!("https://{a}:2379"))
        .collect::<Vec<_>>()
        .join(",");
    ensure!(docker(&["kill", &leader]).await?.status.success(), "docker kill {leader}");
    let killed = Instant::now();
    let gap = wait_for("a write after the leader's container was killed", Duration::from_secs(30), || async {
        Ok(etcdctl(&others, &pki, &["--command-timeout=1s", "put", "after", "kill"]).await?.status.success())
    })
    .await?;
    println!("write gap after killing the leader's container ({leader}): {:.2} s", gap.as_secs_f64());
    let _ = killed;
    kubectl(vec![
        "--server".into(),
        format!(
            "https://{}:6443",
            others.split(',').next().unwrap_or_default().trim_start_matches("https://").trim_end_matches(":2379")
        ),
        "get".into(),
        "nodes".into(),
    ])
    .await?;
    ensure!(docker(&["start", &leader]).await?.status.success(), "docker start {leader}");
    wait_for("the restarted master serves the writes made without it", Duration::from_secs(60), || async {
        let out = etcdctl(&leader_endpoint, &pki, &["get", "after", "--print-value-only", "--consistency=s"]).await?;
        Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "kill")
    })
    .await?;

    rolling_restart(&project, &endpoints, &pki).await?;

    // Every container killed at once, then started: the cluster comes back by itself.
    let all: Vec<String> = ["m1", "m2", "m3", "node-1", "node-2"].iter().map(|s| project.container(s)).collect();
    let mut kill = vec!["kill".to_string()];
    kill.extend(all.iter().cloned());
    let kill: Vec<&str> = kill.iter().map(String::as_str).collect();
    ensure!(docker(&kill).await?.status.success());
    let mut start = vec!["start".to_string()];
    start.extend(all.iter().cloned());
    let start: Vec<&str> = start.iter().map(String::as_str).collect();
    ensure!(docker(&start).await?.status.success());
    let back = wait_for("the data after every container was killed and started", Duration::from_secs(120), || async {
        let out = etcdctl(&endpoints, &pki, &["get", "after", "--print-value-only"]).await?;
        Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "kill")
    })
    .await;
    if let Err(e) = back {
        bail!("{e:#}\n{}", project.logs().await);
    }

    restore_onto_new_containers(&project, &endpoints, &pki, &kubeconfig, &cache).await
}

/// A snapshot saved from the host; every container and volume destroyed; the first master of
/// new containers starts from the snapshot (`init --restore`) and the others join again.
async fn restore_onto_new_containers(
    project: &Project,
    endpoints: &str,
    pki: &Path,
    kubeconfig: &Path,
    cache: &Path,
) -> Result<()> {
    common::ok(etcdctl(endpoints, pki, &["put", "restore-marker", "kept"]).await?)?;
    let backup = project.dir.path().join("backup");
    std::fs::create_dir_all(&backup)?;
    let snapshot = backup.join("snapshot.db");
    let first = endpoints.split(',').next().unwrap_or_default();
    let mut args =
        vec!["snapshot".to_string(), "save".into(), snapshot.display().to_string(), format!("--endpoints={first}")];
    args.extend(etcd_flags(pki));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::ok(common::trireme(&args).await?)?;
    project.run(&["down", "-v", "--timeout", "5"]).await?;

    let restore_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose/restore.yml");
    let mut cmd = tokio::process::Command::new("docker-compose");
    cmd.args([
        "-f",
        &project.file.display().to_string(),
        "-f",
        &restore_file.display().to_string(),
        "-p",
        &project.name,
        "up",
        "-d",
    ])
    .env("TRIREME_IMAGE", &project.image)
    .env("TRIREME_SUBNET", &project.subnet)
    .env("TRIREME_SNAPSHOT_DIR", &backup)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output()).await??;
    ensure!(out.status.success(), "compose up with restore.yml: {}", String::from_utf8_lossy(&out.stderr));

    // The new first master made a new etcd CA: take its certificates again.
    let m1 = project.container("m1");
    wait_for("the restored m1's certificates", Duration::from_secs(120), || async {
        let mut copied = true;
        for file in ["etcd-ca.crt", "etcd-client.crt", "etcd-client.key"] {
            copied &= docker(&["cp", &format!("{m1}:/var/lib/trireme/pki/{file}"), &pki.display().to_string()])
                .await?
                .status
                .success();
        }
        Ok(copied)
    })
    .await?;
    let restored =
        wait_for("the restored data, three voters and both nodes Ready", Duration::from_secs(180), || async {
            let marker = etcdctl(endpoints, pki, &["get", "restore-marker", "--print-value-only"]).await?;
            let members = common::ok(etcdctl(endpoints, pki, &["member", "list", "-w", "json"]).await?)?;
            let members: serde_json::Value = serde_json::from_str(&members)?;
            let voters =
                members["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["isLearner"] != true).count());
            let nodes = common::ok(
                common::kubectl(
                    kubeconfig,
                    cache,
                    &[
                        "get",
                        "nodes",
                        "-o",
                        "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\" \"}{end}",
                    ],
                    None,
                )
                .await?,
            )?;
            Ok(String::from_utf8_lossy(&marker.stdout).trim() == "kept"
                && voters == 3
                && nodes.split_whitespace().filter(|s| *s == "True").count() == 2)
        })
        .await;
    if let Err(e) = restored {
        bail!("{e:#}\n{}", project.logs().await);
    }
    // The objects came back with the snapshot; the admin kubeconfig of the lost cluster still
    // works (the cluster CA and admin token are in the snapshot).
    common::ok(common::kubectl(kubeconfig, cache, &["get", "deployment", "hello"], None).await?)?;
    println!("restored onto new containers from a snapshot saved from outside");
    Ok(())
}
