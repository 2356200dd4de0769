//! Workload 4: Deployments and Services through the Kubernetes API of whichever master
//! answers (the node agent's failover client).
//!
//! A few Deployments (http-echo with a readiness probe, or pause), some with RollingUpdate
//! maxSurge 1 / maxUnavailable 0, each with a Service; during the run they are scaled and
//! rolled (a template annotation or env var changes) at random. Pods, ReplicaSets and
//! Deployments are watched with kube's watcher and every version seen is kept for the
//! [`kubecheck`] checks.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kube::runtime::watcher;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::history::Clock;
use crate::kubecheck;
use crate::kubecheck::Observed;
use crate::kubecheck::Seen;

/// The namespace everything lives in.
pub const NAMESPACE: &str = "chaos";

/// One Deployment of the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// Its name (and `app` label, and Service name).
    pub name: String,
    /// Container image.
    pub image: String,
    /// Replicas at creation.
    pub replicas: i32,
    /// RollingUpdate with maxSurge 1 and maxUnavailable 0 (else the defaults, 25 % each).
    pub surge_one: bool,
}

/// The Deployments for `seed`: `count` of them, alternating http-echo and pause.
pub fn plan(seed: u64, count: usize) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x00de_910e);
    (0..count)
        .map(|i| Planned {
            name: format!("web-{i}"),
            image: if i % 3 == 1 { "registry.k8s.io/pause:3.9" } else { "hashicorp/http-echo:1.0" }.into(),
            replicas: rng.random_range(2..=4),
            surge_one: i % 2 == 0,
        })
        .collect()
}

fn deployment(p: &Planned) -> Result<Deployment> {
    let echo = p.image.starts_with("hashicorp/http-echo");
    let mut container = json!({
        "name": "app",
        "image": p.image,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
    });
    if echo {
        container["args"] = json!(["-listen=:5678", "-text=chaos"]);
        container["ports"] = json!([{"name": "http", "containerPort": 5678}]);
        container["readinessProbe"] = json!({"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2});
    }
    let strategy = if p.surge_one {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    } else {
        json!({"type": "RollingUpdate"})
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": p.name, "namespace": NAMESPACE, "labels": {"app": p.name}},
        "spec": {
            "replicas": p.replicas,
            "selector": {"matchLabels": {"app": p.name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": p.name}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]},
            },
        },
    }))?)
}

fn service(p: &Planned) -> Result<Service> {
    let target = if p.image.starts_with("hashicorp/http-echo") { 5678 } else { 80 };
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": p.name, "namespace": NAMESPACE},
        "spec": {"selector": {"app": p.name}, "ports": [{"name": "http", "port": 8080, "targetPort": target}]},
    }))?)
}

/// One client over every master: requests go to the current master and move on when it does
/// not answer (the node agent's own client).
pub async fn client(kubeconfig: &std::path::Path, api_urls: &[String]) -> Result<kube::Client> {
    let configs = trireme_client::configs_from_kubeconfig(kubeconfig, api_urls).await?;
    Ok(trireme_client::failover_client(configs)?)
}

/// Calls `f` until it succeeds or `within` has passed; `409 AlreadyExists` counts as success
/// for creates that may have been applied before their answer was lost.
async fn persist<T, F, Fut>(what: &str, within: Duration, mut f: F) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return Ok(Some(v)),
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(None),
            Err(e) if Instant::now() > deadline => return Err(e).with_context(|| format!("{what}: gave up")),
            Err(e) => tracing::debug!(%e, "{what}: retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Creates the namespace, the Deployments and their Services.
pub async fn create(client: &kube::Client, planned: &[Planned]) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    let within = Duration::from_secs(60);
    let pp = PostParams::default();
    persist("creating the namespace", within, || namespaces.create(&pp, &ns)).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    for p in planned {
        let d = deployment(p)?;
        persist("creating a deployment", within, || deployments.create(&pp, &d)).await?;
        let s = service(p)?;
        persist("creating a service", within, || services.create(&pp, &s)).await?;
    }
    Ok(())
}

/// What the watches saw.
#[derive(Debug, Default)]
pub struct Observations {
    /// Every object version, in arrival order.
    pub seen: Vec<Seen>,
    /// Times a watch started over with a list (the first list of each included).
    pub relists: usize,
    /// Watch errors (each followed by a retry with back-off).
    pub errors: usize,
}

/// Watches pods, ReplicaSets and Deployments of the namespace until `stop`.
pub fn watch(
    client: &kube::Client,
    stop: CancellationToken,
) -> (Arc<Mutex<Observations>>, Vec<tokio::task::JoinHandle<()>>) {
    let observations = Arc::new(Mutex::new(Observations::default()));
    let tasks = vec![
        tokio::spawn(record::<Pod>(client.clone(), observations.clone(), stop.clone(), Observed::pod)),
        tokio::spawn(record::<ReplicaSet>(client.clone(), observations.clone(), stop.clone(), Observed::replica_set)),
        tokio::spawn(record::<Deployment>(client.clone(), observations.clone(), stop, Observed::deployment)),
    ];
    (observations, tasks)
}

async fn record<K>(
    client: kube::Client,
    into: Arc<Mutex<Observations>>,
    stop: CancellationToken,
    fields: fn(&K) -> Observed,
) where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    K::DynamicType: Default,
{
    use kube::runtime::WatchStreamExt;
    let api: Api<K> = Api::namespaced(client, NAMESPACE);
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = stop.cancelled() => return,
        };
        let Some(item) = item else { return };
        let mut o = into.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (object, deleted) = match item {
            Ok(watcher::Event::Apply(k) | watcher::Event::InitApply(k)) => (k, false),
            Ok(watcher::Event::Delete(k)) => (k, true),
            Ok(watcher::Event::Init) => {
                o.relists += 1;
                continue;
            }
            Ok(watcher::Event::InitDone) => continue,
            Err(_) => {
                o.errors += 1;
                continue;
            }
        };
        let revision = object.meta().resource_version.as_deref().and_then(|rv| rv.parse().ok()).unwrap_or(0);
        o.seen.push(Seen { revision, deleted, object: fields(&object) });
    }
}

/// One change the mutator made (or tried to).
#[derive(Debug, Clone, Serialize)]
pub struct Mutation {
    /// When (s since the run started).
    pub at: f64,
    /// Which Deployment.
    pub deployment: String,
    /// What: `scale to N`, `roll N (annotation)`, `roll N (env)`.
    pub action: String,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// Scales and rolls the Deployments at random every 3–7 s until `stop`.
pub async fn mutate(
    client: kube::Client,
    planned: Vec<Planned>,
    seed: u64,
    clock: Clock,
    stop: CancellationToken,
) -> Vec<Mutation> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6d75_7461);
    let api: Api<Deployment> = Api::namespaced(client, NAMESPACE);
    let mut replicas: Vec<i32> = planned.iter().map(|p| p.replicas).collect();
    let mut rolls = 0u64;
    let mut done = Vec::new();
    loop {
        let pause = Duration::from_millis(rng.random_range(3_000..=7_000));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return done,
        }
        let i = rng.random_range(0..planned.len());
        let name = &planned[i].name;
        let (action, patch) = if rng.random_bool(0.5) {
            let mut n = rng.random_range(1..=4);
            if n == replicas[i] {
                n = n % 4 + 1;
            }
            replicas[i] = n;
            (format!("scale to {n}"), Patch::Merge(json!({"spec": {"replicas": n}})))
        } else if rng.random_bool(0.5) {
            rolls += 1;
            let template = json!({"metadata": {"annotations": {"chaos/roll": rolls.to_string()}}});
            (format!("roll {rolls} (annotation)"), Patch::Merge(json!({"spec": {"template": template}})))
        } else {
            rolls += 1;
            let env = json!([{"name": "CHAOS_ROLL", "value": rolls.to_string()}]);
            let template = json!({"spec": {"containers": [{"name": "app", "env": env}]}});
            (format!("roll {rolls} (env)"), Patch::Strategic(json!({"spec": {"template": template}})))
        };
        let at = crate::history::secs(clock.now());
        let result = api.patch(name, &PatchParams::default(), &patch).await;
        done.push(Mutation { at, deployment: name.clone(), action, error: result.err().map(|e| e.to_string()) });
    }
}

/// Waits until [`kubecheck::convergence_problems`] finds nothing; returns how long that took,
/// or the last problems when `within` passes first.
pub async fn converge(client: &kube::Client, within: Duration) -> (Option<Duration>, Vec<String>) {
    let started = Instant::now();
    let mut problems = vec!["not checked yet".to_string()];
    while started.elapsed() < within {
        match snapshot(client).await {
            Ok((d, p, s, e)) => {
                problems = kubecheck::convergence_problems(&d, &p, &s, &e);
                if problems.is_empty() {
                    return (Some(started.elapsed()), problems);
                }
            }
            Err(e) => problems = vec![format!("listing: {e:#}")],
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (None, problems)
}

type Snapshot = (Vec<Deployment>, Vec<Pod>, Vec<Service>, Vec<EndpointSlice>);

async fn snapshot(client: &kube::Client) -> Result<Snapshot> {
    let lp = ListParams::default();
    Ok((
        Api::<Deployment>::namespaced(client.clone(), NAMESPACE).list(&lp).await?.items,
        Api::<Pod>::namespaced(client.clone(), NAMESPACE).list(&lp).await?.items,
        Api::<Service>::namespaced(client.clone(), NAMESPACE).list(&lp).await?.items,
        Api::<EndpointSlice>::namespaced(client.clone(), NAMESPACE).list(&lp).await?.items,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_planned_objects_are_valid_kubernetes_objects() {
        let planned = plan(1, 3);
        assert_eq!(planned, plan(1, 3));
        for p in &planned {
            let d = deployment(p).expect("a Deployment");
            let spec = d.spec.expect("a spec");
            assert_eq!(spec.replicas, Some(p.replicas));
            assert!((2..=4).contains(&p.replicas));
            let s = service(p).expect("a Service");
            assert_eq!(s.spec.and_then(|s| s.selector).expect("a selector")["app"], p.name);
        }
    }
}
