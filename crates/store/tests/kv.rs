//! etcd's KV semantics through one member: revisions, ranges, transactions, deletes, leases.

mod common;

use anyhow::Result;
use common::TestCluster;
use common::put;
use common::range;
use trireme_store::Store;
use trireme_store::StoreError;
use trireme_store::types::Command;
use trireme_store::types::Compare;
use trireme_store::types::CompareOp;
use trireme_store::types::CompareTarget;
use trireme_store::types::DeleteRangeRequest;
use trireme_store::types::Outcome;
use trireme_store::types::PutRequest;
use trireme_store::types::RangeRequest;
use trireme_store::types::Request;
use trireme_store::types::RequestOp;
use trireme_store::types::ResponseOp;
use trireme_store::types::SortOrder;
use trireme_store::types::SortTarget;
use trireme_store::types::TxnRequest;

type Test = Result<()>;

async fn one() -> Result<(TestCluster, Store)> {
    let cluster = TestCluster::start(1).await?;
    let store = cluster.store(1).clone();
    Ok((cluster, store))
}

#[tokio::test]
async fn puts_bump_one_revision_each_and_track_versions() -> Test {
    let (_c, store) = one().await?;
    let r1 = store.write(put("a", "1")).await?.revision;
    let r2 = store.write(put("a", "2")).await?.revision;
    assert_eq!(r2, r1 + 1);
    let (resp, rev) = store.range(range("a", "")).await?;
    assert_eq!(rev, r2);
    let kv = &resp.kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.value.as_slice()), (r1, r2, 2, b"2".as_slice()));

    tracing::info!("--- prev_kv and a read at the past revision");
    let out = store
        .write(Request::new(Command::Put(PutRequest {
            key: "a".into(),
            value: "3".into(),
            prev_kv: true,
            ..PutRequest::default()
        })))
        .await?;
    match out.outcome {
        Outcome::Put(p) => assert_eq!(p.prev_kv.map(|kv| kv.value), Some(b"2".to_vec())),
        other => anyhow::bail!("unexpected {other:?}"),
    }
    let (old, _) = store.range(RangeRequest { revision: r1, ..range("a", "") }).await?;
    assert_eq!(old.kvs[0].value, b"1");
    assert!(matches!(
        store.range(RangeRequest { revision: r2 + 100, ..range("a", "") }).await,
        Err(StoreError::FutureRevision { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn ranges_honour_limit_sort_count_and_keys_only() -> Test {
    let (_c, store) = one().await?;
    for (k, v) in [("p/c", "1"), ("p/a", "3"), ("p/b", "2"), ("q", "0")] {
        store.write(put(k, v)).await?;
    }
    let (resp, _) = store.range(RangeRequest { limit: 2, ..range("p/", "p0") }).await?;
    assert_eq!(resp.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), vec![b"p/a".to_vec(), b"p/b".to_vec()]);
    assert!(resp.more);
    assert_eq!(resp.count, 3);

    let by_value = RangeRequest { sort_order: SortOrder::Descend, sort_target: SortTarget::Value, ..range("p/", "p0") };
    let (resp, _) = store.range(by_value).await?;
    assert_eq!(
        resp.kvs.iter().map(|kv| kv.value.clone()).collect::<Vec<_>>(),
        vec![b"3".to_vec(), b"2".to_vec(), b"1".to_vec()]
    );

    let (resp, _) = store.range(RangeRequest { count_only: true, ..range("\0", "\0") }).await?;
    assert_eq!((resp.count, resp.kvs.len()), (4, 0));
    let (resp, _) = store.range(RangeRequest { keys_only: true, ..range("q", "") }).await?;
    assert!(resp.kvs[0].value.is_empty());
    Ok(())
}

#[tokio::test]
async fn delete_range_removes_keys_in_one_revision_and_history_keeps_them() -> Test {
    let (_c, store) = one().await?;
    for k in ["d/1", "d/2", "e"] {
        store.write(put(k, "x")).await?;
    }
    let before = store.revision();
    let del = Request::new(Command::DeleteRange(DeleteRangeRequest {
        key: "d/".into(),
        range_end: "d0".into(),
        prev_kv: true,
    }));
    let out = store.write(del).await?;
    assert_eq!(out.revision, before + 1);
    match out.outcome {
        Outcome::DeleteRange(d) => assert_eq!((d.deleted, d.prev_kvs.len()), (2, 2)),
        other => anyhow::bail!("unexpected {other:?}"),
    }
    let (now, _) = store.range(range("d/", "d0")).await?;
    assert!(now.kvs.is_empty());
    let (then, _) = store.range(RangeRequest { revision: before, ..range("d/", "d0") }).await?;
    assert_eq!(then.kvs.len(), 2);

    tracing::info!("--- a recreated key starts a new life: version 1, new create revision");
    let r = store.write(put("d/1", "y")).await?.revision;
    let (resp, _) = store.range(range("d/1", "")).await?;
    assert_eq!((resp.kvs[0].version, resp.kvs[0].create_revision), (1, r));

    let none = Request::new(Command::DeleteRange(DeleteRangeRequest {
        key: "nothing".into(),
        ..DeleteRangeRequest::default()
    }));
    assert_eq!(store.write(none).await?.revision, r, "deleting nothing does not bump the revision");
    Ok(())
}

#[tokio::test]
async fn txn_compares_choose_the_branch_and_reads_see_earlier_writes() -> Test {
    let (_c, store) = one().await?;
    let created = store.write(put("t", "1")).await?.revision;
    let cas = |expect: i64, value: &str| {
        Request::new(Command::Txn(TxnRequest {
            compare: vec![Compare {
                op: CompareOp::Equal,
                target: CompareTarget::Mod(expect),
                key: "t".into(),
                range_end: vec![],
            }],
            success: vec![
                RequestOp::Put(PutRequest { key: "t".into(), value: value.into(), ..PutRequest::default() }),
                RequestOp::Range(range("t", "")),
            ],
            failure: vec![RequestOp::Range(range("t", ""))],
        }))
    };
    let won = store.write(cas(created, "2")).await?;
    let Outcome::Txn(t) = won.outcome else { anyhow::bail!("not a txn") };
    assert!(t.succeeded);
    let ResponseOp::Range(seen) = &t.responses[1] else { anyhow::bail!("not a range") };
    assert_eq!(seen.kvs[0].value, b"2", "the range in the txn sees its own put");

    let lost = store.write(cas(created, "3")).await?;
    assert_eq!(lost.revision, won.revision, "a txn that only reads does not bump the revision");
    let Outcome::Txn(t) = lost.outcome else { anyhow::bail!("not a txn") };
    assert!(!t.succeeded);

    let missing =
        Compare { op: CompareOp::Equal, target: CompareTarget::Version(0), key: "absent".into(), range_end: vec![] };
    let create_if_absent = Request::new(Command::Txn(TxnRequest {
        compare: vec![missing],
        success: vec![RequestOp::Put(PutRequest {
            key: "absent".into(),
            value: "now".into(),
            ..PutRequest::default()
        })],
        failure: vec![],
    }));
    let Outcome::Txn(t) = store.write(create_if_absent).await?.outcome else { anyhow::bail!("not a txn") };
    assert!(t.succeeded, "a missing key has version 0");

    let dup = Request::new(Command::Txn(TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Put(PutRequest { key: "k".into(), ..PutRequest::default() }); 2],
        failure: vec![],
    }));
    assert!(matches!(store.write(dup).await, Err(StoreError::DuplicateKey)));
    Ok(())
}

#[tokio::test]
async fn leases_attach_keys_and_revoking_deletes_them_in_one_revision() -> Test {
    let (_c, store) = one().await?;
    let (lease, ttl) = store.lease_grant(0, 60).await?;
    assert_eq!(ttl, 60);
    for k in ["lk/1", "lk/2"] {
        store.write(Request::new(Command::Put(PutRequest { key: k.into(), lease, ..PutRequest::default() }))).await?;
    }
    let info = store.lease_time_to_live(lease, true).await?;
    assert_eq!(info.keys, vec![b"lk/1".to_vec(), b"lk/2".to_vec()]);
    assert!(info.ttl.remaining > 55 && info.ttl.remaining <= 60);
    assert_eq!(store.lease_keep_alive(lease).await?, 60);
    assert_eq!(store.leases().await?, vec![(lease, 60)]);

    let missing = Request::new(Command::Put(PutRequest { key: "x".into(), lease: 12345, ..PutRequest::default() }));
    assert!(matches!(store.write(missing).await, Err(StoreError::LeaseNotFound)));

    let before = store.revision();
    store.lease_revoke(lease).await?;
    assert_eq!(store.revision(), before + 1);
    let (left, _) = store.range(range("lk/", "lk0")).await?;
    assert!(left.kvs.is_empty());
    assert!(matches!(store.lease_keep_alive(lease).await, Err(StoreError::LeaseNotFound)));
    Ok(())
}

#[tokio::test]
async fn the_leader_compacts_history_older_than_the_retention() -> Test {
    let config = trireme_store::StoreConfig {
        auto_compaction_retention: Some(std::time::Duration::from_secs(1)),
        ..trireme_store::StoreConfig::default()
    };
    let cluster = TestCluster::start_with(1, config).await?;
    let store = cluster.store(1).clone();
    let old = store.write(put("ac", "old")).await?.revision;
    tracing::info!("--- keep writing past the retention");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while store.status().compacted <= old {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "history was never compacted");
        store.write(put("ac", "new")).await?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(matches!(
        store.range(RangeRequest { revision: old, ..range("ac", "") }).await,
        Err(StoreError::Compacted { .. })
    ));
    let (now, _) = store.range(range("ac", "")).await?;
    assert_eq!(now.kvs[0].value, b"new");
    Ok(())
}
