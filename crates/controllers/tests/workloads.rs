//! ReplicaSets and Deployments on a running control plane: pods are created, replaced,
//! adopted and scaled; deployments roll out within their surge and unavailability budgets.
//!
//! No kubelet runs here and the scheduler may leave pods unbound, so the tests play the kubelet
//! themselves: they mark pods Running and Ready with `set_pod_status` when availability matters.

mod common;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use common::TestControlPlane;
use common::replica_set;
use common::rt;
use serde_json::Value;
use serde_json::json;
use trireme_registry::DeleteOptions;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;
use trireme_registry::now;

const NS: &str = "default";

fn deployment(name: &str, replicas: i64, image: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    })
}

fn uid(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn controller_uid(object: &Value) -> Option<&str> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == json!(true))
        .and_then(|r| r["uid"].as_str())
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Pods not being deleted, controlled by the object with `owner_uid`.
async fn live_pods(cp: &TestControlPlane, owner_uid: &str) -> Result<Vec<Value>> {
    let pods = cp.list(rt("", "pods"), Some(NS)).await?;
    Ok(pods
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && controller_uid(p) == Some(owner_uid))
        .collect())
}

/// The ReplicaSets a Deployment controls, oldest revision first.
async fn replica_sets_of(cp: &TestControlPlane, deployment_uid: &str) -> Result<Vec<Value>> {
    let mut rses: Vec<Value> = cp
        .list(rt("apps", "replicasets"), Some(NS))
        .await?
        .into_iter()
        .filter(|rs| controller_uid(rs) == Some(deployment_uid))
        .collect();
    rses.sort_by_key(revision);
    Ok(rses)
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn count(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// What a kubelet reports for a started, ready pod.
fn running_and_ready() -> Value {
    json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now()}],
        "startTime": now(),
    })
}

async fn mark_ready(cp: &TestControlPlane, pods: &[Value]) -> Result<()> {
    for pod in pods.iter().filter(|p| !is_ready(p)) {
        cp.set_pod_status(NS, name(pod), running_and_ready()).await?;
    }
    Ok(())
}

/// Waits until `owner_uid` has exactly `n` live pods and its ReplicaSet status says so,
/// failing as soon as there are more than `most` (a double create).
async fn settle_replica_set(cp: &TestControlPlane, rs_name: &str, n: usize, most: usize) -> Result<Vec<Value>> {
    let rs = cp.get(rt("apps", "replicasets"), Some(NS), rs_name).await?;
    let owner = uid(&rs).to_string();
    cp.eventually(&format!("{rs_name} to have {n} pods"), || async {
        let pods = live_pods(cp, &owner).await?;
        if pods.len() > most {
            bail!("{rs_name} has {} pods, more than {most}", pods.len());
        }
        let rs = cp.get(rt("apps", "replicasets"), Some(NS), rs_name).await?;
        let observed = count(&rs, "/status/replicas") == i64::try_from(n)?
            && rs["status"]["observedGeneration"] == rs["metadata"]["generation"];
        Ok(pods.len() == n && observed)
    })
    .await?;
    live_pods(cp, &owner).await
}

async fn update_spec(
    cp: &TestControlPlane,
    resource: (&str, &str),
    object: &str,
    edit: impl Fn(&mut Value),
) -> Result<Value> {
    let written = cp
        .registry
        .update_with(
            rt(resource.0, resource.1),
            Some(NS),
            object,
            Scope::Main,
            &WriteOptions::default(),
            |current| {
                let mut next = current.clone();
                edit(&mut next);
                Ok(next)
            },
            None,
        )
        .await?;
    Ok(written.object)
}

async fn events(cp: &TestControlPlane, reason: &str) -> Result<Vec<String>> {
    let events = cp.list(rt("", "events"), Some(NS)).await?;
    Ok(events
        .iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_of_three_creates_three_owned_pods_and_replaces_a_deleted_one() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    tracing::info!("--- a replica set of 3");
    let rs = cp.create(Some(NS), replica_set("web", 3)).await?;
    let pods = settle_replica_set(&cp, "web", 3, 3).await?;
    for pod in &pods {
        assert!(name(pod).starts_with("web-"), "named after the replica set: {}", name(pod));
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["apiVersion"], "apps/v1");
        assert_eq!(owner["kind"], "ReplicaSet");
        assert_eq!(owner["name"], "web");
        assert_eq!(owner["uid"], rs["metadata"]["uid"]);
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
    }
    let created = events(&cp, "SuccessfulCreate").await?;
    assert!(created.iter().any(|m| m.starts_with("Created pod: web-")), "{created:?}");

    tracing::info!("--- a deleted pod is replaced");
    let victim = name(&pods[0]).to_string();
    cp.registry.delete(rt("", "pods"), Some(NS), &victim, &DeleteOptions::default()).await?;
    let pods = settle_replica_set(&cp, "web", 3, 3).await?;
    assert!(pods.iter().all(|p| name(p) != victim), "the deleted pod is gone");

    tracing::info!("--- ready pods are counted once marked ready");
    mark_ready(&cp, &pods).await?;
    cp.eventually("readyReplicas and availableReplicas of 3", || async {
        let rs = cp.get(rt("apps", "replicasets"), Some(NS), "web").await?;
        Ok(count(&rs, "/status/readyReplicas") == 3
            && count(&rs, "/status/availableReplicas") == 3
            && count(&rs, "/status/fullyLabeledReplicas") == 3)
    })
    .await?;
    cp.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_scales_from_five_to_zero_to_three_without_double_creating() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    cp.create(Some(NS), replica_set("scale", 5)).await?;
    settle_replica_set(&cp, "scale", 5, 5).await?;

    tracing::info!("--- scale to 0");
    let rs = update_spec(&cp, ("apps", "replicasets"), "scale", |rs| rs["spec"]["replicas"] = json!(0)).await?;
    settle_replica_set(&cp, "scale", 0, 5).await?;
    let deleted = events(&cp, "SuccessfulDelete").await?;
    assert_eq!(deleted.iter().filter(|m| m.starts_with("Deleted pod: scale-")).count(), 5, "{deleted:?}");

    tracing::info!("--- scale to 3");
    update_spec(&cp, ("apps", "replicasets"), "scale", |rs| rs["spec"]["replicas"] = json!(3)).await?;
    settle_replica_set(&cp, "scale", 3, 3).await?;
    // Every pod ever created was asked for: 5, then 3.
    cp.eventually("8 creations recorded", || async {
        Ok(events(&cp, "SuccessfulCreate").await?.iter().filter(|m| m.starts_with("Created pod: scale-")).count() == 8)
    })
    .await?;
    let pods = cp.list(rt("", "pods"), Some(NS)).await?;
    assert_eq!(pods.iter().filter(|p| controller_uid(p) == Some(uid(&rs))).count(), 3, "no pod beyond the 3");
    cp.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_pod_matching_the_selector_is_adopted_and_counted() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    let orphan = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stray", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1"}]},
    });
    cp.create(Some(NS), orphan).await?;
    let rs = cp.create(Some(NS), replica_set("adopt", 2)).await?;
    let pods = settle_replica_set(&cp, "adopt", 2, 2).await?;
    assert!(pods.iter().any(|p| name(p) == "stray"), "the orphan is one of the 2: {pods:?}");
    let stray = cp.get(rt("", "pods"), Some(NS), "stray").await?;
    assert_eq!(controller_uid(&stray), Some(uid(&rs)));

    tracing::info!("--- relabeled, it is released and replaced");
    update_spec(&cp, ("", "pods"), "stray", |p| p["metadata"]["labels"]["app"] = json!("elsewhere")).await?;
    cp.eventually("the relabeled pod to be released", || async {
        Ok(controller_uid(&cp.get(rt("", "pods"), Some(NS), "stray").await?).is_none())
    })
    .await?;
    let pods = settle_replica_set(&cp, "adopt", 2, 2).await?;
    assert!(pods.iter().all(|p| name(p) != "stray"), "replaced: {pods:?}");
    cp.shutdown().await;
    Ok(())
}

/// Checks a rolling update's budget: at most `most` pods, at least `least` ready ones.
async fn check_budget(cp: &TestControlPlane, deployment_uid: &str, most: usize, least: usize) -> Result<()> {
    let mut pods = Vec::new();
    for rs in replica_sets_of(cp, deployment_uid).await? {
        pods.extend(live_pods(cp, uid(&rs)).await?);
    }
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    if pods.len() > most {
        bail!("{} pods exceed replicas + maxSurge = {most}", pods.len());
    }
    if ready < least {
        bail!("{ready} ready pods are fewer than replicas - maxUnavailable = {least}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_rolls_out_within_max_surge_and_max_unavailable() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    let d = cp.create(Some(NS), deployment("web", 4, "nginx:1", strategy)).await?;
    let d_uid = uid(&d).to_string();

    tracing::info!("--- the first revision comes up");
    let first = cp
        .eventually("the deployment's replica set", || async { Ok(replica_sets_of(&cp, &d_uid).await?.len() == 1) })
        .await
        .and(replica_sets_of(&cp, &d_uid).await)?
        .remove(0);
    let first_name = name(&first).to_string();
    let hash = first["metadata"]["labels"]["pod-template-hash"].as_str().context("a hash label")?.to_string();
    assert_eq!(first_name, format!("web-{hash}"));
    assert_eq!(first["spec"]["selector"]["matchLabels"]["pod-template-hash"], json!(hash));
    assert_eq!(first["spec"]["template"]["metadata"]["labels"]["pod-template-hash"], json!(hash));
    assert_eq!(revision(&first), 1);
    let pods = settle_replica_set(&cp, &first_name, 4, 4).await?;
    mark_ready(&cp, &pods).await?;
    cp.eventually("revision 1 fully available", || async {
        let d = cp.get(rt("apps", "deployments"), Some(NS), "web").await?;
        Ok(count(&d, "/status/availableReplicas") == 4
            && count(&d, "/status/updatedReplicas") == 4
            && d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1")
    })
    .await?;
    let scaled = events(&cp, "ScalingReplicaSet").await?;
    assert!(scaled.contains(&format!("Scaled up replica set {first_name} to 4")), "{scaled:?}");

    tracing::info!("--- change the image");
    update_spec(&cp, ("apps", "deployments"), "web", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    })
    .await?;
    let mut rounds = 0;
    loop {
        rounds += 1;
        if rounds > 20 {
            bail!("the rollout did not finish in 20 rounds");
        }
        // Wait until every replica set has the pods it asks for, checking the budget all along.
        cp.eventually("the replica sets to settle", || async {
            check_budget(&cp, &d_uid, 5, 3).await?;
            let d = cp.get(rt("apps", "deployments"), Some(NS), "web").await?;
            if d["status"]["observedGeneration"] != d["metadata"]["generation"] {
                return Ok(false);
            }
            for rs in replica_sets_of(&cp, &d_uid).await? {
                let pods = live_pods(&cp, uid(&rs)).await?;
                let wanted = count(&rs, "/spec/replicas");
                if i64::try_from(pods.len())? != wanted || count(&rs, "/status/replicas") != wanted {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
        let settled = replica_sets_of(&cp, &d_uid).await?;
        let d = cp.get(rt("apps", "deployments"), Some(NS), "web").await?;
        let status = &d["status"];
        if count(&d, "/status/updatedReplicas") == 4
            && count(&d, "/status/availableReplicas") == 4
            && count(&d, "/status/replicas") == 4
            && status["observedGeneration"] == d["metadata"]["generation"]
        {
            break;
        }
        // Play the kubelet: the new revision's pods become ready, one batch per round.
        let pods = match settled.iter().find(|rs| revision(rs) == 2) {
            Some(new) => live_pods(&cp, uid(new)).await?,
            None => Vec::new(),
        };
        let batch = pods.iter().filter(|p| !is_ready(p)).count();
        tracing::info!(round = rounds, batch, "--- marking new pods ready");
        mark_ready(&cp, &pods).await?;
        if batch == 0 {
            // Nothing to mark: wait for the controllers to act on what they saw.
            let sizes = |rses: &[Value]| rses.iter().map(|rs| count(rs, "/spec/replicas")).collect::<Vec<_>>();
            let before = sizes(&settled);
            cp.eventually("the deployment to move on", || async {
                let d = cp.get(rt("apps", "deployments"), Some(NS), "web").await?;
                Ok(count(&d, "/status/updatedReplicas") == 4 && count(&d, "/status/availableReplicas") == 4
                    || sizes(&replica_sets_of(&cp, &d_uid).await?) != before)
            })
            .await?;
        }
    }
    assert!(rounds > 2, "the rollout went in batches, not at once ({rounds} rounds)");

    tracing::info!("--- the rollout is complete");
    let d = cp.get(rt("apps", "deployments"), Some(NS), "web").await?;
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");
    let conditions = d["status"]["conditions"].as_array().context("conditions")?;
    let reason = |t: &str| conditions.iter().find(|c| c["type"] == t).map(|c| c["reason"].clone());
    assert_eq!(reason("Available"), Some(json!("MinimumReplicasAvailable")));
    cp.eventually("Progressing: NewReplicaSetAvailable", || async {
        let d = cp.get(rt("apps", "deployments"), Some(NS), "web").await?;
        let conditions = d["status"]["conditions"].as_array().cloned().unwrap_or_default();
        Ok(conditions.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"))
    })
    .await?;
    let rses = replica_sets_of(&cp, &d_uid).await?;
    assert_eq!(rses.len(), 2, "the old replica set is kept for rollback");
    assert_eq!(name(&rses[0]), first_name);
    assert_eq!(count(&rses[0], "/spec/replicas"), 0, "the old replica set is scaled to 0");
    assert!(live_pods(&cp, uid(&rses[0])).await?.is_empty());
    assert_eq!(revision(&rses[1]), 2);
    assert_eq!(count(&rses[1], "/spec/replicas"), 4);
    cp.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_scales_the_old_replica_set_to_zero_before_the_new_one_gets_pods() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    let d = cp.create(Some(NS), deployment("db", 2, "postgres:15", json!({"type": "Recreate"}))).await?;
    let d_uid = uid(&d).to_string();
    cp.eventually("the first replica set", || async { Ok(replica_sets_of(&cp, &d_uid).await?.len() == 1) }).await?;
    let first = replica_sets_of(&cp, &d_uid).await?.remove(0);
    let pods = settle_replica_set(&cp, name(&first), 2, 2).await?;
    mark_ready(&cp, &pods).await?;

    tracing::info!("--- change the image");
    update_spec(&cp, ("apps", "deployments"), "db", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("postgres:16");
    })
    .await?;
    cp.eventually("the new replica set to run 2 pods and the old none", || async {
        let rses = replica_sets_of(&cp, &d_uid).await?;
        let old = live_pods(&cp, uid(&first)).await?;
        let new: Vec<Value> = match rses.iter().find(|rs| revision(rs) == 2) {
            Some(rs) => live_pods(&cp, uid(rs)).await?,
            None => Vec::new(),
        };
        if !new.is_empty() && !old.is_empty() {
            bail!("{} new pods while {} old pods remain", new.len(), old.len());
        }
        Ok(new.len() == 2 && old.is_empty())
    })
    .await?;
    let old = cp.get(rt("apps", "replicasets"), Some(NS), name(&first)).await?;
    assert_eq!(count(&old, "/spec/replicas"), 0);
    cp.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_observed_generation_follows_generation() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    cp.create(Some(NS), deployment("gen", 1, "nginx:1", strategy)).await?;
    let observed = |generation: i64| {
        let cp = &cp;
        move || async move {
            let d = cp.get(rt("apps", "deployments"), Some(NS), "gen").await?;
            Ok(count(&d, "/metadata/generation") == generation && count(&d, "/status/observedGeneration") == generation)
        }
    };
    cp.eventually("generation 1 observed", observed(1)).await?;

    tracing::info!("--- scale to 3: generation 2");
    update_spec(&cp, ("apps", "deployments"), "gen", |d| d["spec"]["replicas"] = json!(3)).await?;
    cp.eventually("generation 2 observed", observed(2)).await?;
    let d = cp.get(rt("apps", "deployments"), Some(NS), "gen").await?;
    let rs = replica_sets_of(&cp, uid(&d)).await?.remove(0);
    settle_replica_set(&cp, name(&rs), 3, 3).await?;
    cp.eventually("3 replicas in the deployment status", || async {
        let d = cp.get(rt("apps", "deployments"), Some(NS), "gen").await?;
        Ok(count(&d, "/status/replicas") == 3 && count(&d, "/status/unavailableReplicas") == 3)
    })
    .await?;
    cp.shutdown().await;
    Ok(())
}
