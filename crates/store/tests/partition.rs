//! Network partitions inside one process: three members whose peer links are cut and healed
//! per direction (`trireme_store::links`), with real RocksDB and real gRPC on loopback.
//!
//! Nothing here is random but openraft's election timeouts; each test states the outcomes it
//! accepts where those timeouts decide between several safe ones.

mod common;

use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use common::TestCluster;
use common::WAIT;
use common::put;
use trireme_store::Store;
use trireme_store::StoreConfig;
use trireme_store::StoreError;
use trireme_store::types::RangeRequest;

type Test = Result<()>;

/// Requests give up after 2 s, so that a write the cut-off side cannot commit answers quickly.
fn config() -> StoreConfig {
    StoreConfig { request_timeout: Duration::from_secs(2), ..StoreConfig::default() }
}

/// `key`'s value on `store`, read locally (a member cut off from the leader cannot do more).
async fn local(store: &Store, key: &str) -> Result<Option<Vec<u8>>> {
    let req = RangeRequest { key: key.into(), serializable: true, ..RangeRequest::default() };
    let (resp, _) = store.range(req).await?;
    Ok(resp.kvs.into_iter().next().map(|kv| kv.value))
}

/// Starts a write on `store` in its own task.
fn spawn_write(store: &Store, key: &str) -> tokio::task::JoinHandle<Result<i64, StoreError>> {
    let (store, key) = (store.clone(), key.to_string());
    tokio::spawn(async move { store.write(put(&key, "x")).await.map(|r| r.revision) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_both_followers_is_replaced_cannot_commit_and_converges_after_healing() -> Test {
    let cluster = TestCluster::start_with(3, config()).await?;
    let old = cluster.wait_leader().await?;
    let followers: Vec<u64> = cluster.running().into_iter().filter(|id| *id != old).collect();
    let before = cluster.store(old).write(put("before", "1")).await?.revision;
    cluster.wait_revision(before).await?;

    tracing::info!(old, ?followers, "--- cut the leader off from both followers, both ways");
    cluster.links.isolate(old, followers.iter().copied());
    // Proposed at once, while the old leader still believes in its lease: it is appended to
    // the old leader's log and nowhere else.
    let stale = spawn_write(cluster.store(old), "stale");
    let new = cluster.wait_leader_of(&followers).await?;
    assert_ne!(new, old);
    tracing::info!(new, "--- the followers elected a new leader");

    tracing::info!("--- the old leader commits nothing: its writes fail within the request timeout");
    let stale = tokio::time::timeout(WAIT, stale).await.context("the stale write never answered")??;
    assert!(matches!(stale, Err(StoreError::Timeout | StoreError::NoLeader)), "stale write: {stale:?}");
    let refused = cluster.store(old).write(put("stale-2", "x")).await;
    assert!(matches!(refused, Err(StoreError::Timeout | StoreError::NoLeader)), "second stale write: {refused:?}");
    assert_eq!(cluster.store(old).revision(), before, "the old leader applied nothing new");

    tracing::info!("--- the majority serves writes through either of its members");
    let mut last = before;
    for (i, id) in followers.iter().enumerate() {
        last = cluster.store(*id).write(put(&format!("during/{i}"), "y")).await?.revision;
    }
    assert_eq!(cluster.store(old).revision(), before, "nothing reached the old leader");

    tracing::info!("--- heal: the old leader steps down and converges to the same revision and data");
    cluster.links.heal_all();
    let leader = cluster.wait_leader().await?;
    assert_ne!(leader, old, "the old leader's log is behind; it cannot win");
    let mut leadership = cluster.store(old).leadership();
    tokio::time::timeout(WAIT, leadership.wait_for(Option::is_none))
        .await
        .context("the old leader never stepped down")??;
    let revision = cluster.wait_converged(last).await?;
    assert_eq!(revision, last);
    for id in cluster.running() {
        let store = cluster.store(id);
        assert_eq!(local(store, "before").await?, Some(b"1".to_vec()), "member {id}");
        assert_eq!(local(store, "during/1").await?, Some(b"y".to_vec()), "member {id}");
        assert_eq!(local(store, "stale").await?, None, "member {id} kept a write only the old leader had");
        assert_eq!(local(store, "stale-2").await?, None, "member {id}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_can_send_but_not_receive_commits_nothing_and_the_cluster_converges_after_healing() -> Test {
    let cluster = TestCluster::start_with(3, config()).await?;
    let old = cluster.wait_leader().await?;
    let followers: Vec<u64> = cluster.running().into_iter().filter(|id| *id != old).collect();
    let before = cluster.store(old).write(put("before", "1")).await?.revision;
    cluster.wait_revision(before).await?;

    tracing::info!(old, ?followers, "--- the leader's messages reach its followers; their answers are lost");
    for f in &followers {
        cluster.links.cut(*f, old);
    }
    // Appended on every member (the appends get through) but acknowledged to no one.
    let stale = spawn_write(cluster.store(old), "stale");
    let through_followers: Vec<_> =
        followers.iter().map(|f| spawn_write(cluster.store(*f), &format!("via/{f}"))).collect();

    let stale = tokio::time::timeout(WAIT, stale).await.context("the stale write never answered")??;
    tracing::info!(?stale, "--- the leader's own write");
    assert!(matches!(stale, Err(StoreError::Timeout | StoreError::NoLeader)), "stale write: {stale:?}");
    let mut acked = Vec::new();
    for (f, write) in followers.iter().zip(through_followers) {
        let outcome = tokio::time::timeout(WAIT, write).await.context("a follower's write never answered")??;
        // The followers keep hearing the leader's heartbeats, so they normally elect no one and
        // their writes fail; were one elected, its writes could succeed. Both are safe.
        tracing::info!(follower = f, ?outcome, "--- a write through a follower");
        match outcome {
            Ok(revision) => acked.push((format!("via/{f}"), revision)),
            Err(e) => assert!(matches!(e, StoreError::Timeout | StoreError::NoLeader), "{e:?}"),
        }
    }
    assert_eq!(cluster.store(old).revision(), before, "the old leader committed nothing on its own");

    tracing::info!("--- heal: one leader, the same revision and data everywhere, every acknowledged write kept");
    cluster.links.heal_all();
    cluster.wait_leader().await?;
    let newest = acked.iter().map(|(_, rev)| *rev).max().unwrap_or(before);
    cluster.wait_converged(newest).await?;
    for id in cluster.running() {
        let store = cluster.store(id);
        assert_eq!(local(store, "before").await?, Some(b"1".to_vec()), "member {id}");
        for (key, _) in &acked {
            assert!(local(store, key).await?.is_some(), "member {id} lost acknowledged write {key}");
        }
        if matches!(stale, Err(StoreError::NoLeader)) {
            // Refused before it was proposed (the leader's lease had run out): it must not appear.
            assert_eq!(local(store, "stale").await?, None, "member {id}");
        }
    }
    Ok(())
}
