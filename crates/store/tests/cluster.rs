//! A replicated store under member loss, restarts, snapshots and membership changes: in-process
//! members with real RocksDB in temp dirs and real gRPC on loopback.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use common::TestCluster;
use common::WAIT;
use common::get;
use common::put;
use common::range;
use trireme_store::StoreConfig;
use trireme_store::StoreError;
use trireme_store::WatchMessage;
use trireme_store::types::Command;
use trireme_store::types::EventType;
use trireme_store::types::KeyRange;
use trireme_store::types::PutRequest;
use trireme_store::types::Request;

type Test = Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_any_member_are_read_back_on_every_member_with_identical_revisions() -> Test {
    let cluster = TestCluster::start(3).await?;
    tracing::info!("--- write through every member");
    let mut last = 0;
    for (i, id) in cluster.running().into_iter().enumerate() {
        let resp = cluster.store(id).write(put(&format!("k{i}"), &format!("v{i}"))).await?;
        assert!(resp.revision > last, "revisions grow: {} after {last}", resp.revision);
        last = resp.revision;
    }
    tracing::info!("--- every member answers the same, at the same revision");
    let mut seen = Vec::new();
    for id in cluster.running() {
        let (resp, rev) = cluster.store(id).range(range("k", "l")).await?;
        let kvs: Vec<_> = resp.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone(), kv.mod_revision)).collect();
        assert_eq!(kvs.len(), 3);
        seen.push((kvs, rev));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "members disagree: {seen:?}");
    assert_eq!(seen[0].1, last);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_catches_up_after_restart() -> Test {
    let mut cluster = TestCluster::start(3).await?;
    let old = cluster.wait_leader().await?;
    cluster.store(old).write(put("before", "1")).await?;

    tracing::info!("--- kill the leader {old}");
    cluster.kill(old).await?;
    let new = cluster.wait_leader().await?;
    assert_ne!(new, old);
    let follower = cluster.running().into_iter().find(|id| *id != new).context("a follower")?;

    tracing::info!("--- writes continue through the new leader and a follower");
    cluster.store(new).write(put("after-1", "2")).await?;
    let resp = cluster.store(follower).write(put("after-2", "3")).await?;

    tracing::info!("--- the old leader restarts from its data dir and catches up");
    cluster.restart(old).await?;
    cluster.wait_revision(resp.revision).await?;
    for key in ["before", "after-1", "after-2"] {
        let (r, _) = cluster
            .store(old)
            .range(trireme_store::types::RangeRequest { serializable: true, ..range(key, "") })
            .await?;
        assert_eq!(r.kvs.len(), 1, "{key} on the restarted member");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_a_log_purge_is_caught_up_by_snapshot() -> Test {
    let config = StoreConfig { snapshot_every_entries: 50, log_entries_kept: 10, ..StoreConfig::default() };
    let mut cluster = TestCluster::start_with(3, config).await?;
    let leader = cluster.wait_leader().await?;
    let lagging = cluster.running().into_iter().find(|id| *id != leader).context("a follower")?;

    tracing::info!("--- stop member {lagging}, write past several snapshots");
    let stopped_at = cluster.store(lagging).status().raft_index;
    cluster.kill(lagging).await?;
    let mut last = 0;
    for i in 0..300 {
        last = cluster.store(leader).write(put(&format!("key{i:04}"), &format!("value{i}"))).await?.revision;
    }
    cluster.store(leader).snapshot_now().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.store(leader).status().purged_index <= stopped_at {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the leader never purged past {stopped_at}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    tracing::info!("--- restart it: it must install a snapshot, then serve the same data");
    cluster.restart(lagging).await?;
    cluster.wait_revision(last).await?;
    let serial = |k: &str, e: &str| trireme_store::types::RangeRequest { serializable: true, ..range(k, e) };
    let (mine, _) = cluster.store(lagging).range(serial("key", "kez")).await?;
    let (theirs, _) = cluster.store(leader).range(serial("key", "kez")).await?;
    assert_eq!(mine.kvs.len(), 300);
    assert_eq!(mine, theirs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_stopping_and_restarting_all_members() -> Test {
    let mut cluster = TestCluster::start(3).await?;
    let mut acked = BTreeMap::new();
    for i in 0..100 {
        let id = cluster.running()[i % 3];
        let key = format!("durable/{i:03}");
        let resp = cluster.store(id).write(put(&key, &i.to_string())).await?;
        acked.insert(key, resp.revision);
    }
    let rev_before = cluster.store(1).revision();

    tracing::info!("--- stop all three, start all three");
    for id in [1, 2, 3] {
        cluster.kill(id).await?;
    }
    for id in [1, 2, 3] {
        cluster.restart(id).await?;
    }
    cluster.wait_leader().await?;
    let (resp, rev) = cluster.store(2).range(range("durable/", "durable0")).await?;
    assert_eq!(resp.kvs.len(), acked.len());
    for kv in &resp.kvs {
        let key = String::from_utf8(kv.key.clone())?;
        assert_eq!(Some(&kv.mod_revision), acked.get(&key), "{key} kept its revision");
    }
    assert!(rev >= rev_before, "revision {rev} went back from {rev_before}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_follower_sees_every_event_in_order_across_a_leader_change() -> Test {
    let mut cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_leader().await?;
    let watcher_on = cluster.running().into_iter().find(|id| *id != leader).context("a follower")?;
    let start = cluster.store(leader).write(put("w/0", "0")).await?.revision;

    tracing::info!("--- watch from revision {start} on follower {watcher_on}");
    let mut stream = cluster.store(watcher_on).watch(KeyRange::new(b"w/", b"w0"), start, true).await?;
    let mut written = vec![start];
    for i in 1..=20 {
        written.push(cluster.store(watcher_on).write(put(&format!("w/{i}"), "x")).await?.revision);
    }
    tracing::info!("--- kill leader {leader} and keep writing");
    cluster.kill(leader).await?;
    cluster.wait_leader().await?;
    for i in 21..=40 {
        written.push(cluster.store(watcher_on).write(put(&format!("w/{i}"), "y")).await?.revision);
    }

    let mut seen = Vec::new();
    while seen.len() < written.len() {
        match tokio::time::timeout(WAIT, stream.recv()).await? {
            Some(WatchMessage::Events(events)) => seen.extend(events.iter().map(|e| e.kv.mod_revision)),
            other => anyhow::bail!("watch ended: {other:?}"),
        }
    }
    assert_eq!(seen, written, "exactly the written revisions, in order, no gaps or duplicates");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_makes_older_reads_and_watches_fail_with_compacted() -> Test {
    let cluster = TestCluster::start(3).await?;
    let store = cluster.store(cluster.wait_leader().await?);
    let r1 = store.write(put("c", "1")).await?.revision;
    let r2 = store.write(put("c", "2")).await?.revision;
    let r3 = store.write(put("c", "3")).await?.revision;
    store.write(Request::new(Command::Compact { revision: r2 })).await?;

    let at = |rev| trireme_store::types::RangeRequest { revision: rev, ..range("c", "") };
    match store.range(at(r1)).await {
        Err(StoreError::Compacted { compact_revision }) => assert_eq!(compact_revision, r2),
        other => anyhow::bail!("read below compaction: {other:?}"),
    }
    let (at_r2, _) = store.range(at(r2)).await?;
    assert_eq!(at_r2.kvs[0].value, b"2", "the compaction revision itself stays readable");
    let (now, _) = store.range(at(r3)).await?;
    assert_eq!(now.kvs[0].value, b"3");
    assert!(matches!(store.watch(KeyRange::new(b"c", b""), r1, false).await, Err(StoreError::Compacted { .. })));
    let mut from_r2 = store.watch(KeyRange::new(b"c", b""), r2, false).await?;
    match tokio::time::timeout(WAIT, from_r2.recv()).await? {
        Some(WatchMessage::Events(events)) => {
            assert_eq!(events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(), vec![r2, r3]);
        }
        other => anyhow::bail!("watch from the compaction revision: {other:?}"),
    }
    assert!(matches!(
        store.write(Request::new(Command::Compact { revision: r1 })).await,
        Err(StoreError::Compacted { .. })
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_expiry_deletes_its_keys_exactly_once_when_the_leader_changes_near_the_deadline() -> Test {
    let mut cluster = TestCluster::start(3).await?;
    let leader = cluster.wait_leader().await?;
    let store = cluster.store(leader).clone();
    let (lease, ttl) = store.lease_grant(0, 2).await?;
    tracing::info!(lease, ttl, "--- granted");
    for k in ["l/a", "l/b"] {
        store
            .write(Request::new(Command::Put(PutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                lease,
                ..PutRequest::default()
            })))
            .await?;
    }
    let follower = cluster.running().into_iter().find(|id| *id != leader).context("a follower")?;
    let mut events = cluster.store(follower).watch(KeyRange::new(b"l/", b"l0"), 0, false).await?;

    tracing::info!("--- kill the leader just before the deadline");
    tokio::time::sleep(Duration::from_millis(u64::try_from(ttl)? * 1000 - 300)).await;
    cluster.kill(leader).await?;
    let new_leader = cluster.wait_leader().await?;

    tracing::info!("--- the new leader extends the lease by its TTL, then expires it once");
    let mut deletes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::try_from(ttl)? * 3 + 5);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(WatchMessage::Events(batch))) => {
                deletes.extend(batch.into_iter().filter(|e| e.kind == EventType::Delete))
            }
            Ok(other) => anyhow::bail!("watch ended: {other:?}"),
            Err(_) => break,
        }
    }
    assert_eq!(deletes.len(), 2, "each key deleted exactly once: {deletes:?}");
    assert_eq!(deletes[0].kv.mod_revision, deletes[1].kv.mod_revision, "in one revision");
    assert!(get(cluster.store(new_leader), "l/a").await?.is_none());
    assert!(matches!(cluster.store(new_leader).lease_time_to_live(lease, false).await, Err(StoreError::LeaseNotFound)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_to_four_and_shrinks_by_removing_the_original_leader_while_writes_continue() -> Test {
    let mut cluster = TestCluster::start(3).await?;
    let original = cluster.wait_leader().await?;
    let writer_on = cluster.running().into_iter().find(|id| *id != original).context("a follower")?;
    let writer_store = cluster.store(writer_on).clone();
    let writes = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..150 {
            match writer_store.write(put(&format!("m/{i:03}"), "v")).await {
                Ok(_) => acked.push(i),
                Err(e) => tracing::info!(error = %e, i, "write failed during membership change"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acked
    });

    tracing::info!("--- add member 4 as a learner, then promote it");
    cluster.add_member_process(4).await?;
    let member4 = cluster.members[&4].member();
    cluster.store(original).add_learner(4, member4).await?;
    tracing::info!("--- promote it once it has caught up (refused before, as in etcd)");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match cluster.store(writer_on).promote(4).await {
            Ok(()) => break,
            Err(StoreError::InvalidMembership(m)) if m.contains("in sync") => {
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "learner did not catch up");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(cluster.store(original).members().iter().filter(|m| !m.is_learner).count(), 4);

    tracing::info!("--- remove the original leader {original}");
    cluster.store(writer_on).remove_member(original).await?;
    cluster.kill(original).await?;
    let leader = cluster.wait_leader().await?;
    assert_ne!(leader, original);
    let members: Vec<u64> = cluster.store(leader).members().iter().map(|m| m.id).collect();
    assert_eq!(members.len(), 3);
    assert!(!members.contains(&original));

    let acked = writes.await?;
    let (resp, _) = cluster.store(4).range(range("m/", "m0")).await?;
    let stored: Vec<usize> =
        resp.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key[2..]).parse().unwrap_or(usize::MAX)).collect();
    for i in &acked {
        assert!(stored.contains(i), "acknowledged write {i} lost");
    }
    assert!(acked.len() > 100, "writes kept flowing: {} of 150 acknowledged", acked.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_falls_out_of_the_ring_and_is_caught_up_from_history_without_gaps() -> Test {
    // A ring of 16 events: the watcher below falls behind it at once.
    let config = StoreConfig { watch_ring_events: 16, ..StoreConfig::default() };
    let cluster = TestCluster::start_with(1, config).await?;
    let store = cluster.store(1);
    let start = store.write(put("slow/0", "0")).await?.revision;
    let mut stream = store.watch(KeyRange::new(b"slow/", b"slow0"), start, false).await?;

    tracing::info!("--- write 300 revisions without reading the watch");
    let mut written = vec![start];
    for i in 1..300 {
        written.push(store.write(put(&format!("slow/{i}"), "x")).await?.revision);
    }
    tracing::info!("--- every revision arrives once, in order");
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        match tokio::time::timeout(WAIT, stream.recv()).await? {
            Some(WatchMessage::Events(events)) => seen.extend(events.iter().map(|e| e.kv.mod_revision)),
            other => anyhow::bail!("watch ended: {other:?}"),
        }
    }
    assert_eq!(seen, written);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_leader_records_the_cluster_id_for_every_member_and_joiners_learn_it() -> Test {
    let config = StoreConfig { cluster_id: 0xC1, ..StoreConfig::default() };
    let cluster = TestCluster::start_with(3, config).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    for m in cluster.members.values() {
        let url = format!("http://{}", m.addr);
        loop {
            let found = trireme_store::Store::discover(&url, None, Duration::from_secs(2)).await?;
            if found.cluster_id == 0xC1 {
                break;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "member {} never learned the cluster id", m.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_that_has_not_caught_up_cannot_be_promoted() -> Test {
    let cluster = TestCluster::start(3).await?;
    let leader = cluster.store(cluster.wait_leader().await?).clone();
    for i in 0..50 {
        leader.write(put(&format!("p/{i}"), "v")).await?;
    }
    tracing::info!("--- a learner that never started holds none of the log");
    let ghost = trireme_store::types::Member {
        name: "ghost".into(),
        peer_urls: vec!["http://127.0.0.1:1".into()],
        client_urls: vec![],
    };
    leader.add_learner(9, ghost).await?;
    match leader.promote(9).await {
        Err(StoreError::InvalidMembership(message)) => assert!(message.contains("in sync with leader"), "{message}"),
        other => anyhow::bail!("promoting a learner that has not caught up: {other:?}"),
    }
    leader.remove_member(9).await?;
    assert!(leader.members().iter().all(|m| m.id != 9));
    Ok(())
}
