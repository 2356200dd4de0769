//! The garbage collector: dependents go with their owner in the background, before it
//! (foreground), or stay without it (orphan).

mod common;

use anyhow::Result;
use common::TestControlPlane;
use common::replica_set;
use common::rt;
use serde_json::Value;
use trireme_registry::DeleteOptions;

const NS: &str = "default";

/// Pods owned by the replica set with `uid`.
async fn owned_pods(cp: &TestControlPlane, uid: &Value) -> Result<usize> {
    let pods = cp.list(rt("", "pods"), Some(NS)).await?;
    Ok(pods
        .iter()
        .filter(|p| p["metadata"]["ownerReferences"].as_array().is_some_and(|r| r.iter().any(|o| o["uid"] == *uid)))
        .count())
}

async fn labelled_pods(cp: &TestControlPlane, app: &str) -> Result<Vec<Value>> {
    let pods = cp.list(rt("", "pods"), Some(NS)).await?;
    Ok(pods.into_iter().filter(|p| p["metadata"]["labels"]["app"] == app).collect())
}

fn policy(p: &str) -> DeleteOptions {
    DeleteOptions { propagation_policy: Some(p.to_string()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_go_with_their_owner_in_the_background_first_in_the_foreground_and_stay_when_orphaned() -> Result<()>
{
    let cp = TestControlPlane::start().await?;
    let replica_sets = rt("apps", "replicasets");

    eprintln!("--- background: the owner goes at once, its pods after it");
    let rs = cp.create(Some(NS), replica_set("bg", 2)).await?;
    let uid = rs["metadata"]["uid"].clone();
    cp.eventually("2 pods", || async { Ok(owned_pods(&cp, &uid).await? == 2) }).await?;
    let deleted = cp.registry.delete(replica_sets, Some(NS), "bg", &policy("Background")).await?;
    assert!(deleted.gone, "a background delete removes the owner at once");
    cp.eventually("the pods collected", || async { Ok(labelled_pods(&cp, "bg").await?.is_empty()) }).await?;

    eprintln!("--- foreground: the owner stays until its pods are gone");
    let rs = cp.create(Some(NS), replica_set("fg", 2)).await?;
    let uid = rs["metadata"]["uid"].clone();
    cp.eventually("2 pods", || async { Ok(owned_pods(&cp, &uid).await? == 2) }).await?;
    let deleted = cp.registry.delete(replica_sets, Some(NS), "fg", &policy("Foreground")).await?;
    assert!(!deleted.gone, "a foreground delete keeps the owner");
    assert!(
        deleted.object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion")),
        "{}",
        deleted.object
    );
    cp.eventually("the owner gone after its pods", || async {
        let gone = cp.get(replica_sets, Some(NS), "fg").await.is_err();
        Ok(gone && labelled_pods(&cp, "fg").await?.is_empty())
    })
    .await?;

    eprintln!("--- orphan: the pods stay, without the reference");
    let rs = cp.create(Some(NS), replica_set("or", 2)).await?;
    let uid = rs["metadata"]["uid"].clone();
    cp.eventually("2 pods", || async { Ok(owned_pods(&cp, &uid).await? == 2) }).await?;
    cp.registry.delete(replica_sets, Some(NS), "or", &policy("Orphan")).await?;
    cp.eventually("the owner gone, its pods released", || async {
        let gone = cp.get(replica_sets, Some(NS), "or").await.is_err();
        Ok(gone && owned_pods(&cp, &uid).await? == 0)
    })
    .await?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(labelled_pods(&cp, "or").await?.len(), 2, "orphaned pods are not collected");
    cp.shutdown().await;
    Ok(())
}
