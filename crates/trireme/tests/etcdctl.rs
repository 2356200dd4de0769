//! The real etcdctl against three real `trireme master` processes.

mod common;

use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::ensure;
use common::Cluster;
use common::etcdctl;
use common::ok;

type Test = Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_del_and_txn_behave_as_with_etcd() -> Test {
    let cluster = Cluster::start(3).await?;
    for (k, v) in [("fruit/apple", "red"), ("fruit/banana", "yellow"), ("fruit/cherry", "dark"), ("veg", "green")] {
        assert_eq!(ok(cluster.etcdctl(&["put", k, v]).await?)?.trim(), "OK");
    }
    let out = ok(cluster.etcdctl(&["get", "fruit/", "--prefix"]).await?)?;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["fruit/apple", "red", "fruit/banana", "yellow", "fruit/cherry", "dark"]
    );
    let out = ok(cluster.etcdctl(&["get", "fruit/", "--prefix", "--keys-only", "--limit=2"]).await?)?;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["fruit/apple", "fruit/banana"]);

    tracing_rev(&cluster).await?;

    let out = ok(cluster.etcdctl(&["del", "fruit/", "--prefix", "--prev-kv"]).await?)?;
    assert_eq!(out.lines().next(), Some("3"), "{out}");
    assert!(out.contains("fruit/banana") && out.contains("yellow"), "{out}");
    assert!(ok(cluster.etcdctl(&["get", "fruit/", "--prefix"]).await?)?.is_empty());

    let script = "value(\"veg\") = \"green\"\n\nput veg leafy\nput tx/ok yes\n\nput tx/failed yes\n\n";
    let out = ok(etcdctl(&cluster.endpoints(), &["txn", "-i"], Some(script)).await?)?;
    assert!(out.lines().any(|l| l == "SUCCESS"), "{out}");
    assert_eq!(ok(cluster.etcdctl(&["get", "veg", "--print-value-only"]).await?)?.trim(), "leafy");
    assert!(ok(cluster.etcdctl(&["get", "tx/failed"]).await?)?.is_empty());
    Ok(())
}

/// `get --rev` sees the past.
async fn tracing_rev(cluster: &Cluster) -> Test {
    let first = ok(cluster.etcdctl(&["put", "rev", "one", "-w", "json"]).await?)?;
    let rev: serde_json::Value = serde_json::from_str(&first)?;
    let rev = rev["header"]["revision"].as_i64().context("revision")?;
    ok(cluster.etcdctl(&["put", "rev", "two"]).await?)?;
    let then = ok(cluster.etcdctl(&["get", "rev", "--print-value-only", &format!("--rev={rev}")]).await?)?;
    assert_eq!(then.trim(), "one");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_writes_from_another_client_and_replays_from_a_revision() -> Test {
    let cluster = Cluster::start(3).await?;
    let first = ok(cluster.etcdctl(&["put", "w/0", "zero", "-w", "json"]).await?)?;
    let rev = serde_json::from_str::<serde_json::Value>(&first)?["header"]["revision"].as_i64().context("rev")?;
    let watcher_endpoint = cluster.masters[2].client_url.clone();
    let watcher = tokio::spawn(async move { watch_once(&watcher_endpoint, rev, 8).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(etcdctl(&cluster.masters[0].client_url, &["put", "w/1", "one"], None).await?)?;
    ok(etcdctl(&cluster.masters[1].client_url, &["del", "w/0"], None).await?)?;
    let out = watcher.await??;
    assert_eq!(out, ["PUT", "w/0", "zero", "PUT", "w/1", "one", "DELETE", "w/0"]);
    Ok(())
}

/// Runs `etcdctl watch` from `rev` until it printed `lines` non-empty lines, then stops it.
async fn watch_once(endpoint: &str, rev: i64, lines_wanted: usize) -> Result<Vec<String>> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            format!("--endpoints={endpoint}"),
            "watch".into(),
            "w/".into(),
            "--prefix".into(),
            format!("--rev={rev}"),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut out = Vec::new();
    while out.len() < lines_wanted {
        let line = tokio::time::timeout(common::WAIT, lines.next_line()).await??.context("watch ended")?;
        if !line.is_empty() {
            out.push(line);
        }
    }
    child.kill().await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_keep_alive_report_keys_revoke_and_expire() -> Test {
    let cluster = Cluster::start(3).await?;
    let grant = ok(cluster.etcdctl(&["lease", "grant", "30"]).await?)?;
    let id = grant.split_whitespace().nth(1).context("lease id")?.to_string();
    ok(cluster.etcdctl(&["put", "leased", "v", &format!("--lease={id}")]).await?)?;
    let ka = ok(cluster.etcdctl(&["lease", "keep-alive", "--once", &id]).await?)?;
    assert!(ka.contains("keepalived with TTL(30)"), "{ka}");
    let ttl = ok(cluster.etcdctl(&["lease", "timetolive", &id, "--keys"]).await?)?;
    assert!(ttl.contains("granted with TTL(30s)") && ttl.contains("attached keys([leased])"), "{ttl}");
    assert!(ok(cluster.etcdctl(&["lease", "list"]).await?)?.contains(&id));
    ok(cluster.etcdctl(&["lease", "revoke", &id]).await?)?;
    assert!(ok(cluster.etcdctl(&["get", "leased"]).await?)?.is_empty());

    let short = ok(cluster.etcdctl(&["lease", "grant", "2"]).await?)?;
    let short = short.split_whitespace().nth(1).context("lease id")?.to_string();
    ok(cluster.etcdctl(&["put", "expiring", "v", &format!("--lease={short}")]).await?)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ok(cluster.etcdctl(&["get", "expiring"]).await?)?.is_empty() {
        ensure!(std::time::Instant::now() < deadline, "the key outlived its lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok(cluster.etcdctl(&["lease", "timetolive", &short]).await?)?.contains("already expired"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_makes_reads_below_it_fail() -> Test {
    let cluster = Cluster::start(3).await?;
    // The masters write their own keys (cluster credentials, system namespaces) at start, so
    // the revisions of these puts are read from the responses.
    let mut revisions = Vec::new();
    for v in ["1", "2", "3"] {
        let put: serde_json::Value =
            serde_json::from_str(&ok(cluster.etcdctl(&["put", "c", v, "-w", "json"]).await?)?)?;
        revisions.push(put["header"]["revision"].as_i64().context("revision")?);
    }
    let (second, third) = (revisions[1].to_string(), revisions[2].to_string());
    ok(cluster.etcdctl(&["compaction", &third]).await?)?;
    let out = cluster.etcdctl(&["get", "c", &format!("--rev={second}")]).await?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted"));
    let at_third = ok(cluster.etcdctl(&["get", "c", &format!("--rev={third}"), "--print-value-only"]).await?)?;
    assert_eq!(at_third.trim(), "3");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_snapshot_and_move_leader_work_on_every_member() -> Test {
    let cluster = Cluster::start(3).await?;
    let list = ok(cluster.etcdctl(&["member", "list"]).await?)?;
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(list.lines().all(|l| l.contains("started")), "{list}");

    let status = ok(cluster.etcdctl(&["endpoint", "status", "-w", "json"]).await?)?;
    let status: Vec<serde_json::Value> = serde_json::from_str(&status)?;
    assert_eq!(status.len(), 3);
    let leaders: Vec<_> =
        status.iter().filter(|s| s["Status"]["leader"] == s["Status"]["header"]["member_id"]).collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {status:?}");
    // etcdctl 3.4 prints health to stderr.
    let health = cluster.etcdctl(&["endpoint", "health"]).await?;
    assert!(health.status.success());
    let health = String::from_utf8_lossy(&health.stderr).to_string() + &String::from_utf8_lossy(&health.stdout);
    assert_eq!(health.lines().filter(|l| l.contains("is healthy")).count(), 3, "{health}");

    ok(cluster.etcdctl(&["put", "snap", "shot"]).await?)?;
    let file = cluster.dir.path().join("backup.db");
    let file_arg = file.to_string_lossy().to_string();
    ok(etcdctl(&cluster.masters[0].client_url, &["snapshot", "save", &file_arg], None).await?)?;
    assert_eq!(std::fs::metadata(&file)?.len() % 512, 32, "size ends in the hash trailer");

    let leader = cluster.wait_leader().await?;
    let target = status
        .iter()
        .map(|s| s["Status"]["header"]["member_id"].as_u64().unwrap_or(0))
        .find(|id| Some(*id) != leaders[0]["Status"]["leader"].as_u64())
        .context("a follower")?;
    let out = ok(etcdctl(&cluster.masters[leader].client_url, &["move-leader", &format!("{target:x}")], None).await?)?;
    assert!(out.contains("Leadership transferred"), "{out}");
    let now = cluster.wait_leader().await?;
    assert_ne!(now, leader);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_with_etcdctl_joins_catches_up_and_can_be_removed() -> Test {
    let mut cluster = Cluster::start(3).await?;
    for i in 0..20 {
        ok(cluster.etcdctl(&["put", &format!("pre/{i:02}"), "v"]).await?)?;
    }
    let peer = format!("http://127.0.0.1:{}", common::free_port()?);
    let added = ok(cluster.etcdctl(&["member", "add", "m4", &format!("--peer-urls={peer}")]).await?)?;
    let initial = added
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\"").and_then(|r| r.strip_suffix('"')))
        .context("etcdctl printed ETCD_INITIAL_CLUSTER")?
        .to_string();
    let i = cluster.join("m4", &peer, &initial)?;
    let new_endpoint = cluster.masters[i].client_url.clone();
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let out = etcdctl(&new_endpoint, &["get", "pre/", "--prefix", "--keys-only", "--consistency=s"], None).await?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).split_whitespace().count() == 20 {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "the new member did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cluster_ids = ok(etcdctl(
        &format!("{},{new_endpoint}", cluster.masters[0].client_url),
        &["endpoint", "status", "-w", "json"],
        None,
    )
    .await?)?;
    let cluster_ids: Vec<serde_json::Value> = serde_json::from_str(&cluster_ids)?;
    assert_eq!(
        cluster_ids[0]["Status"]["header"]["cluster_id"], cluster_ids[1]["Status"]["header"]["cluster_id"],
        "the new member learned the cluster id"
    );
    let deadline = std::time::Instant::now() + common::WAIT;
    let list = loop {
        let list = ok(cluster.etcdctl(&["member", "list"]).await?)?;
        if list.contains(", m4, ") || std::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(list.lines().count(), 4);
    assert!(list.contains(", started, m4, "), "the new member published its name: {list}");

    let id =
        list.lines().find(|l| l.contains(", m4, ")).and_then(|l| l.split(',').next()).context("m4's id")?.to_string();
    ok(cluster.etcdctl(&["member", "remove", &id]).await?)?;
    tracing_removed(&mut cluster, i).await?;
    assert_eq!(ok(cluster.etcdctl(&["member", "list"]).await?)?.lines().count(), 3);
    Ok(())
}

/// A removed master notices and exits by itself, saying why.
async fn tracing_removed(cluster: &mut Cluster, i: usize) -> Test {
    let child = cluster.masters[i].child.as_mut().context("m4 running")?;
    let status =
        tokio::time::timeout(common::WAIT, child.wait()).await.context("the removed master kept running")??;
    cluster.masters[i].child = None;
    assert!(!status.success());
    let log = std::fs::read_to_string(&cluster.masters[i].log)?;
    assert!(log.contains("this member was removed from the cluster"), "{}", cluster.log_tail(i));
    Ok(())
}
