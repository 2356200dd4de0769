//! A control plane over a real one-member store in a temp dir: the registry, the running
//! ControlPlane (this member leads), fake nodes, and waiting helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use serde_json::Value;
use serde_json::json;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use trireme_controllers::ControlPlane;
use trireme_controllers::ControlPlaneConfig;
use trireme_model::resource::ResourceType;
use trireme_model::version::ReadAt;
use trireme_registry::ListOptions;
use trireme_registry::Registry;
use trireme_registry::RegistryConfig;
use trireme_registry::Scope;
use trireme_registry::WriteOptions;
use trireme_store::Store;
use trireme_store::StoreConfig;
use trireme_store::types::Member;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A one-member store whose member leads and runs the scheduler and the controllers.
pub struct TestControlPlane {
    pub registry: Registry,
    pub store: Store,
    pub stop: CancellationToken,
    running: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl TestControlPlane {
    /// Starts with the default settings.
    pub async fn start() -> Result<TestControlPlane> {
        Self::start_with(ControlPlaneConfig::default()).await
    }

    /// Starts with `config`.
    pub async fn start_with(config: ControlPlaneConfig) -> Result<TestControlPlane> {
        let dir = TempDir::new()?;
        // The peer URL is only recorded in the membership: a one-member cluster never dials it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let store = Store::open(StoreConfig { id: 1, data_dir: dir.path().join("m1"), ..Default::default() }).await?;
        let member = Member { name: "m1".into(), peer_urls: vec![format!("http://{addr}")], client_urls: vec![] };
        store.initialize(BTreeMap::from([(1, member)])).await?;
        let mut leadership = store.leadership();
        tokio::time::timeout(WAIT, leadership.wait_for(Option::is_some))
            .await
            .context("the only member did not become leader")??;
        let registry = Registry::new(store.clone(), RegistryConfig::default());
        registry.bootstrap().await?;
        let stop = CancellationToken::new();
        let running = tokio::spawn(ControlPlane::new(registry.clone(), config).run(stop.clone()));
        Ok(TestControlPlane { registry, store, stop, running, _dir: dir })
    }

    /// Creates `object` (apiVersion and kind pick the resource) in `namespace`.
    pub async fn create(&self, namespace: Option<&str>, object: Value) -> Result<Value> {
        let rt = rt_of(&object)?;
        Ok(self.registry.create(rt, namespace, object, &WriteOptions::default()).await?.object)
    }

    /// Reads one object.
    pub async fn get(&self, rt: &'static ResourceType, namespace: Option<&str>, name: &str) -> Result<Value> {
        Ok(self.registry.get(rt, namespace, name, ReadAt::Latest).await?)
    }

    /// Lists objects of `rt` in `namespace` (all namespaces when `None`).
    pub async fn list(&self, rt: &'static ResourceType, namespace: Option<&str>) -> Result<Vec<Value>> {
        Ok(self.registry.list(rt, namespace, &ListOptions::default()).await?.items)
    }

    /// Registers a Ready node with `cpu` (e.g. "4") and `memory` (e.g. "8Gi") allocatable.
    pub async fn node(&self, name: &str, cpu: &str, memory: &str) -> Result<Value> {
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "lastHeartbeatTime": trireme_registry::now(), "lastTransitionTime": trireme_registry::now()}],
                "nodeInfo": {"kubeletVersion": "v1.33.0-trireme"},
            },
        });
        let created = self.create(None, node).await?;
        // Kubernetes' node status is written through the status subresource by the kubelet;
        // a create keeps it, so nothing more to do.
        Ok(created)
    }

    /// Writes `status` as the pod's status (what a kubelet would report).
    pub async fn set_pod_status(&self, namespace: &str, name: &str, status: Value) -> Result<Value> {
        let rt = rt_of(&json!({"apiVersion": "v1", "kind": "Pod"}))?;
        let written = self
            .registry
            .update_with(
                rt,
                Some(namespace),
                name,
                Scope::Status,
                &WriteOptions::default(),
                |current| {
                    let mut next = current.clone();
                    next["status"] = status.clone();
                    Ok(next)
                },
                None,
            )
            .await?;
        Ok(written.object)
    }

    /// Waits until `check` holds, polling every 50 ms.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if check().await? {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the control plane, waits until every one of its tasks has ended (they hold the
    /// store), then stops the store, so no RocksDB handle outlives the test.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(WAIT, self.running).await;
        self.store.shutdown().await;
    }
}

/// The resource type of an object by its apiVersion and kind.
pub fn rt_of(object: &Value) -> Result<&'static ResourceType> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    trireme_model::resource::by_kind(api_version, kind).with_context(|| format!("no resource for {api_version} {kind}"))
}

/// A served resource type by group and plural.
pub fn rt(group: &str, plural: &str) -> &'static ResourceType {
    trireme_model::resource::find(group, "v1", plural).expect("a served resource type")
}

/// A ReplicaSet of `replicas` pods labelled `app: <name>`.
pub fn replica_set(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1"}]},
            },
        },
    })
}
