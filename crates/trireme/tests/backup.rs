//! Backups, restores and membership with the real binaries: a cluster with a deployment on a
//! node is saved, destroyed and restored onto new data dirs; a corrupt file is refused; a dead
//! master is replaced while writes go on; a cluster that lost two of three masters is
//! recovered from the survivor; scheduled snapshots are taken, verified and pruned.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use anyhow::ensure;
use common::Cluster;
use common::kube::eventually;
use common::kube::http_get;
use common::kube::items;
use common::kube::wait_nodes_ready;
use common::kube::wait_ready_pods;
use common::nodes::Network;
use common::nodes::Nodes;
use common::ok;
use common::trireme;
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::kv_client::KvClient;

/// `trireme snapshot restore` of `file` for every master of `cluster` onto its (now empty)
/// data dir.
async fn restore_all(cluster: &Cluster, file: &str) -> Result<()> {
    for m in &cluster.masters {
        let data_dir = m.data_dir.to_string_lossy().into_owned();
        let out = trireme(&[
            "snapshot",
            "restore",
            file,
            "--name",
            &m.name,
            "--initial-cluster",
            cluster.initial_cluster(),
            "--initial-advertise-peer-urls",
            &m.peer_url,
            "--initial-cluster-token",
            cluster.token(),
            "--data-dir",
            &data_dir,
        ])
        .await?;
        let text = ok(out)?;
        ensure!(text.contains("Restored"), "{text}");
    }
    Ok(())
}

/// A `kubectl get pods -w` running in the background; its output and exit are collected.
struct Watch {
    child: tokio::process::Child,
}

impl Watch {
    async fn start(cluster: &Cluster) -> Result<Watch> {
        let kubeconfig = cluster.kubeconfig().await?;
        let child = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(cluster.dir.path().join("kubecache-watch"))
            .args(["--context", &cluster.masters[0].name, "get", "pods", "-w", "--no-headers"])
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Watch { child })
    }

    /// Waits for the watch to end; returns its exit success, stdout and stderr.
    async fn ended(mut self, limit: Duration) -> Result<(bool, String, String)> {
        let status = tokio::time::timeout(limit, self.child.wait()).await.context("the watch did not end")??;
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out).await?;
        }
        if let Some(mut s) = self.child.stderr.take() {
            s.read_to_string(&mut err).await?;
        }
        Ok((status.success(), out, err))
    }
}

fn names(items: &[Value]) -> BTreeSet<String> {
    items.iter().filter_map(|i| i["metadata"]["name"].as_str().map(String::from)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_destroyed_after_a_snapshot_comes_back_from_it_on_new_data_dirs() -> Result<()> {
    let network = Network::new();
    let mut cluster = Cluster::start_with(3, &[&network.service_range_flag()]).await?;
    cluster.wait_leader().await?;
    let nodes = Nodes::start(&cluster, &network, 1, &[]).await?;
    wait_nodes_ready(&cluster, 1).await?;

    eprintln!("--- a deployment runs and etcd keys are written");
    ok(cluster.kubectl(&["create", "deployment", "web", "--image=registry.k8s.io/pause", "--replicas=2"]).await?)?;
    let web_before = names(&wait_ready_pods(&cluster, "app=web", 2).await?);
    for i in 0..20 {
        ok(cluster.etcdctl(&["put", &format!("/backup/key-{i:02}"), &format!("value-{i}")]).await?)?;
    }

    eprintln!("--- snapshot save, status, verify; etcdctl's save is readable too");
    let file = cluster.dir.path().join("backup.db");
    let file_s = file.to_string_lossy().into_owned();
    let saved = ok(trireme(&["snapshot", "save", &file_s, "--endpoints", &cluster.endpoints()]).await?)?;
    ensure!(saved.contains("Snapshot saved at") && saved.contains("keys"), "{saved}");
    let status: Value = serde_json::from_str(&ok(trireme(&["snapshot", "status", &file_s, "-w", "json"]).await?)?)?;
    let saved_revision = status["revision"].as_i64().context("revision")?;
    ensure!(status["total_keys"].as_u64().is_some_and(|k| k >= 20), "{status}");
    ensure!(status["kv_hash"].is_u64() && status["format"] == 2, "{status}");
    let verified = ok(trireme(&["snapshot", "verify", &file_s]).await?)?;
    ensure!(verified.contains("OK:"), "{verified}");
    let by_etcdctl = cluster.dir.path().join("etcdctl.db");
    let one = cluster.masters[0].client_url.clone();
    ok(common::etcdctl(&one, &["snapshot", "save", &by_etcdctl.to_string_lossy()], None).await?)?;
    let table = ok(trireme(&["snapshot", "status", &by_etcdctl.to_string_lossy()]).await?)?;
    ensure!(table.contains("REVISION") && table.contains("matches the file"), "{table}");

    eprintln!("--- changes after the snapshot, which the restore will not know");
    let late = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "late"},
        "spec": {
            "selector": {"matchLabels": {"app": "late"}},
            "template": {
                "metadata": {"labels": {"app": "late"}},
                "spec": {"containers": [{"name": "echo", "image": "hashicorp/http-echo", "args": ["-text=late"]}]}
            }
        }
    });
    ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(&late.to_string())).await?)?;
    let late = wait_ready_pods(&cluster, "app=late", 1).await?;
    let late_ip = late[0]["status"]["podIP"].as_str().context("late pod IP")?.to_string();
    http_get(&format!("{late_ip}:5678"), "/").await?;
    ok(cluster.etcdctl(&["put", "/backup/after", "x"]).await?)?;
    let watch = Watch::start(&cluster).await?;
    let list: Value =
        serde_json::from_str(&ok(cluster.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods"]).await?)?)?;
    let before_disaster: i64 = list["metadata"]["resourceVersion"].as_str().context("list revision")?.parse()?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    eprintln!("--- one corrupted byte, or a truncated file, is refused");
    let mut bytes = std::fs::read(&file)?;
    let corrupt = cluster.dir.path().join("corrupt.db");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&corrupt, &bytes)?;
    let corrupt_s = corrupt.to_string_lossy().into_owned();
    let refused_dir = cluster.dir.path().join("refused");
    let out = trireme(&[
        "snapshot",
        "restore",
        &corrupt_s,
        "--name",
        "m1",
        "--initial-cluster",
        cluster.initial_cluster(),
        "--initial-advertise-peer-urls",
        &cluster.masters[0].peer_url,
        "--data-dir",
        &refused_dir.to_string_lossy(),
    ])
    .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && stderr.contains("corrupt"), "restore of a corrupt file: {stderr}");
    ensure!(!refused_dir.exists(), "a refused restore left a data dir behind");
    let out = trireme(&["snapshot", "status", &corrupt_s]).await?;
    ensure!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("corrupt"), "status: {out:?}");
    let out = trireme(&["snapshot", "verify", &corrupt_s]).await?;
    ensure!(!out.status.success(), "verify of a corrupt file succeeded");
    let truncated = cluster.dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..middle])?;
    let out = trireme(&["snapshot", "status", &truncated.to_string_lossy()]).await?;
    ensure!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("truncated"), "{out:?}");

    eprintln!("--- disaster: every master killed and its data dir destroyed");
    for i in 0..3 {
        cluster.signal(i, Signal::SIGKILL).await?;
        std::fs::remove_dir_all(&cluster.masters[i].data_dir)?;
    }
    // kubectl does not resume a broken watch: it ends (client-go treats a connection that
    // drops as the end of the stream, so its exit status is 0).
    let (_, _, stderr) = watch.ended(Duration::from_secs(60)).await?;
    eprintln!("the watch begun before the disaster ended: {stderr:?}");

    eprintln!("--- restore onto three new data dirs and start");
    restore_all(&cluster, &file_s).await?;
    for i in 0..3 {
        cluster.restart(i)?;
    }
    cluster.wait_leader().await?;
    cluster.kubeconfig().await?;

    eprintln!("--- the snapshot's state is back, the later changes are not");
    eventually("deployments as saved", Duration::from_secs(30), || async {
        let deployments = names(&items(&cluster, &["deploy"]).await?);
        ensure!(deployments == BTreeSet::from(["web".to_string()]), "{deployments:?}");
        Ok(())
    })
    .await?;
    let web_after = names(&wait_ready_pods(&cluster, "app=web", 2).await?);
    ensure!(web_after == web_before, "pods {web_after:?}, saved {web_before:?}");
    let got = ok(cluster.etcdctl(&["get", "/backup/", "--prefix", "--keys-only"]).await?)?;
    ensure!(got.lines().filter(|l| l.starts_with("/backup/key-")).count() == 20, "{got}");
    ensure!(!got.contains("/backup/after"), "a key written after the snapshot came back: {got}");
    let list: Value =
        serde_json::from_str(&ok(cluster.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods"]).await?)?)?;
    let revision: i64 = list["metadata"]["resourceVersion"].as_str().context("list revision")?.parse()?;
    ensure!(revision > saved_revision + 999_999_999, "revision {revision} did not move forward");
    let old = ok(cluster.etcdctl(&["get", "/backup/key-00", &format!("--rev={saved_revision}")]).await?);
    ensure!(old.is_err(), "history before the restore should count as compacted");
    // A watcher that resumes from what it saw before the disaster (an informer, a kubelet) is
    // told its revision is gone and relists; time never goes backwards for it.
    let resumed = ok(cluster
        .kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={before_disaster}"),
        ])
        .await?)?;
    ensure!(resumed.contains("\"ERROR\"") && resumed.contains("410"), "a resumed watch got {resumed}");

    eprintln!("--- the node's pod the restored state does not know is stopped");
    eventually("the late pod stopped", Duration::from_secs(60), || async {
        ensure!(http_get(&format!("{late_ip}:5678"), "/").await.is_err(), "still answering");
        Ok(())
    })
    .await?;

    eprintln!("--- a new watch works and the deployment still converges");
    let watch = Watch::start(&cluster).await?;
    ok(cluster.kubectl(&["scale", "deployment", "web", "--replicas=3"]).await?)?;
    wait_ready_pods(&cluster, "app=web", 3).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut child = watch.child;
    child.start_kill()?;
    let out = child.wait_with_output().await?;
    let lines = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("web-")).count();
    ensure!(lines > 2, "the new watch saw {lines} lines:\n{}", String::from_utf8_lossy(&out.stdout));
    drop(nodes);
    Ok(())
}

/// Puts `/writes/<n>` through whichever of `endpoints` answers until `stop`; returns the keys
/// whose put was acknowledged.
async fn keep_writing(endpoints: Vec<String>, stop: tokio_util::sync::CancellationToken) -> Result<Vec<String>> {
    let mut acked = Vec::new();
    let mut n = 0u64;
    let mut clients = Vec::new();
    for url in &endpoints {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())?
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        clients.push(KvClient::new(channel));
    }
    let mut which = 0;
    while !stop.is_cancelled() {
        let key = format!("/writes/{n:06}");
        n += 1;
        let req =
            pb::PutRequest { key: key.clone().into_bytes().into(), value: b"v".to_vec().into(), ..Default::default() };
        let n_clients = clients.len();
        match clients[which % n_clients].put(req).await {
            Ok(_) => acked.push(key),
            Err(_) => which += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(acked)
}

/// Keys under `prefix` that master `url` holds, read locally (serializable).
async fn keys_on(url: &str, prefix: &str) -> Result<BTreeSet<String>> {
    let out = ok(common::etcdctl(url, &["get", prefix, "--prefix", "--keys-only", "--consistency=s"], None).await?)?;
    Ok(out.lines().filter(|l| !l.is_empty()).map(String::from).collect())
}

/// The `--initial-cluster` value in what `trireme member add` printed.
fn initial_cluster_of(added: &str) -> Result<String> {
    added
        .split_whitespace()
        .skip_while(|w| *w != "--initial-cluster")
        .nth(1)
        .map(String::from)
        .with_context(|| format!("no --initial-cluster in {added}"))
}

fn member_output(out: &str) -> Result<Value> {
    serde_json::from_str(out).with_context(|| format!("member list -w json: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_is_replaced_by_a_learner_while_writes_go_on() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.wait_leader().await?;
    // The master that dies is a follower: the procedure is the same, the write gap smaller.
    let dead = (leader + 1) % 3;
    let alive: Vec<String> = (0..3).filter(|i| *i != dead).map(|i| cluster.masters[i].client_url.clone()).collect();
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(keep_writing(alive.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    eprintln!("--- a master dies for good");
    cluster.signal(dead, Signal::SIGKILL).await?;
    let dead_name = cluster.masters[dead].name.clone();
    let endpoints = alive.join(",");

    eprintln!("--- remove it, add a learner, start it, promote it");
    let removed = ok(trireme(&["member", "remove", &dead_name, "--endpoints", &endpoints]).await?)?;
    ensure!(removed.contains("removed"), "{removed}");
    let peer_url = format!("http://127.0.0.1:{}", common::free_port()?);
    let added =
        ok(trireme(&["member", "add", "m4", "--peer-urls", &peer_url, "--learner", "--endpoints", &endpoints]).await?)?;
    let initial = initial_cluster_of(&added)?;
    ensure!(initial.contains(&format!("m4={peer_url}")) && !initial.contains(&dead_name), "{initial}");
    let m4 = cluster.join("m4", &peer_url, &initial)?;
    let promoted = ok(trireme(&["member", "promote", "m4", "--wait", "60s", "--endpoints", &endpoints]).await?)?;
    ensure!(promoted.contains("promoted"), "{promoted}");
    let list = member_output(&ok(trireme(&["member", "list", "-w", "json", "--endpoints", &endpoints]).await?)?)?;
    let members = list["members"].as_array().context("members")?;
    ensure!(members.len() == 3, "{list}");
    ensure!(members.iter().all(|m| m["is_learner"] == false && m["status"] == "started"), "{list}");
    ensure!(members.iter().any(|m| m["name"] == "m4") && !members.iter().any(|m| m["name"] == dead_name), "{list}");

    eprintln!("--- writes went on; the new master has every acknowledged one");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let acked = writer.await??;
    ensure!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    let m4_url = cluster.masters[m4].client_url.clone();
    eventually("m4 caught up", Duration::from_secs(20), || async {
        let held = keys_on(&m4_url, "/writes/").await?;
        let missing: Vec<&String> = acked.iter().filter(|k| !held.contains(*k)).collect();
        ensure!(missing.is_empty(), "{} acknowledged writes missing on m4, e.g. {:?}", missing.len(), missing.first());
        Ok(())
    })
    .await?;

    eprintln!("--- the new master counts towards the quorum: lose another, still writable");
    let other = (0..3).find(|i| *i != dead && *i != leader).context("a third master")?;
    cluster.signal(other, Signal::SIGKILL).await?;
    let endpoints = cluster.endpoints();
    eventually("a write with m4 in the quorum", Duration::from_secs(20), || async {
        ok(common::etcdctl(&endpoints, &["put", "/after-replace", "ok"], None).await?)?;
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_quorum_loss_becomes_a_new_cluster_with_all_its_data() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster.wait_leader().await?;
    for i in 0..100 {
        ok(cluster.etcdctl(&["put", &format!("/data/{i:03}"), &format!("{i}")]).await?)?;
    }
    let before = keys_on(&cluster.masters[0].client_url, "/data/").await?;
    ensure!(before.len() == 100, "m1 holds {} keys", before.len());

    eprintln!("--- two of three masters lost for good; the survivor cannot write alone");
    for i in [1, 2] {
        cluster.signal(i, Signal::SIGKILL).await?;
        std::fs::remove_dir_all(&cluster.masters[i].data_dir)?;
    }
    let out = common::etcdctl(&cluster.masters[0].client_url, &["put", "/no-quorum", "x"], None).await?;
    ensure!(!out.status.success(), "a write without quorum succeeded");

    eprintln!("--- recover: restart the survivor with --force-new-cluster");
    cluster.signal(0, Signal::SIGTERM).await?;
    cluster.restart_with(0, &["--force-new-cluster"])?;
    let m1 = cluster.masters[0].client_url.clone();
    eventually("the survivor leads alone", Duration::from_secs(30), || async {
        ok(common::etcdctl(&m1, &["put", "/recovered", "yes"], None).await?)?;
        Ok(())
    })
    .await?;
    ensure!(keys_on(&m1, "/data/").await? == before, "data lost in recovery");
    let list = member_output(&ok(trireme(&["member", "list", "-w", "json", "--endpoints", &m1]).await?)?)?;
    ensure!(list["members"].as_array().is_some_and(|m| m.len() == 1), "{list}");

    eprintln!("--- two new members join and get all the data");
    for name in ["m4", "m5"] {
        let peer_url = format!("http://127.0.0.1:{}", common::free_port()?);
        let added =
            ok(trireme(&["member", "add", name, "--peer-urls", &peer_url, "--learner", "--endpoints", &m1]).await?)?;
        let initial = initial_cluster_of(&added)?;
        let i = cluster.join(name, &peer_url, &initial)?;
        ok(trireme(&["member", "promote", name, "--wait", "60s", "--endpoints", &m1]).await?)?;
        let url = cluster.masters[i].client_url.clone();
        eventually(&format!("{name} has the data"), Duration::from_secs(20), || async {
            let held = keys_on(&url, "/data/").await?;
            ensure!(held == before, "{name} holds {} of {} keys", held.len(), before.len());
            Ok(())
        })
        .await?;
    }
    let list = member_output(&ok(trireme(&["member", "list", "-w", "json", "--endpoints", &m1]).await?)?)?;
    ensure!(
        list["members"].as_array().is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["is_learner"] == false)),
        "{list}"
    );

    eprintln!("--- the flag left on by mistake is refused instead of dropping the new members");
    cluster.signal(0, Signal::SIGTERM).await?;
    cluster.restart_with(0, &["--force-new-cluster"])?;
    let child = cluster.masters[0].child.as_mut().context("m1")?;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.context("m1 kept running")??;
    ensure!(!status.success(), "m1 started again with --force-new-cluster");
    cluster.masters[0].child = None;
    let log = std::fs::read_to_string(&cluster.masters[0].log)?;
    ensure!(log.contains("already forced"), "{}", cluster.log_tail(0));
    cluster.restart(0)?;
    cluster.wait_leader().await?;
    ensure!(keys_on(&m1, "/data/").await? == before, "data after the restart");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_snapshots_are_taken_verified_and_pruned_on_the_leader() -> Result<()> {
    let metrics_port = common::free_port()?;
    let snapshot_dir = tempfile::tempdir()?;
    let dir = snapshot_dir.path().to_string_lossy().into_owned();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    let cluster = Cluster::start_with(
        1,
        &[
            "--snapshot-interval=1s",
            "--snapshot-retention=2",
            &format!("--snapshot-dir={dir}"),
            &format!("--listen-metrics-urls={metrics_url}"),
        ],
    )
    .await?;
    cluster.wait_leader().await?;
    for i in 0..10 {
        ok(cluster.etcdctl(&["put", &format!("/scheduled/{i}"), "v"]).await?)?;
    }
    let snapshots = || -> Result<Vec<std::path::PathBuf>> {
        let mut files: Vec<_> = std::fs::read_dir(snapshot_dir.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "db"))
            .collect();
        files.sort();
        Ok(files)
    };
    // Snapshots appear every second; with a retention of two, older ones go as newer come.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut first: Option<Vec<std::path::PathBuf>> = None;
    loop {
        let found = snapshots()?;
        ensure!(found.len() <= 2, "{} snapshots kept with --snapshot-retention=2: {found:?}", found.len());
        match &first {
            None if found.len() == 2 => first = Some(found.clone()),
            Some(first) if found.len() == 2 && found.iter().all(|f| !first.contains(f)) => break,
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            bail!("snapshots were not replaced by newer ones: first {first:?}, now {found:?}\n{}", cluster.log_tails());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let newest = snapshots()?.pop().context("a snapshot")?;
    let verified = ok(trireme(&["snapshot", "verify", &newest.to_string_lossy()]).await?)?;
    ensure!(verified.contains("OK:"), "{verified}");
    let status: Value =
        serde_json::from_str(&ok(trireme(&["snapshot", "status", &newest.to_string_lossy(), "-w", "json"]).await?)?)?;
    ensure!(status["total_keys"].as_u64().is_some_and(|k| k >= 10), "{status}");
    let metrics = http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics").await?;
    for name in [
        "trireme_snapshot_last_verified 1",
        "trireme_snapshot_last_size_bytes",
        "trireme_snapshot_last_duration_seconds",
        "trireme_snapshots_total{result=\"verified\"}",
    ] {
        if !metrics.contains(name) {
            bail!("{name} missing from /metrics:\n{metrics}");
        }
    }
    Ok(())
}
