//! A registry over a real one-member store in a temp dir, and object builders for tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use serde_json::Value;
use serde_json::json;
use tempfile::TempDir;
use trireme_model::resource::ResourceType;
use trireme_registry::Change;
use trireme_registry::ObjectWatch;
use trireme_registry::Registry;
use trireme_registry::RegistryConfig;
use trireme_registry::WriteOptions;
use trireme_store::Store;
use trireme_store::StoreConfig;
use trireme_store::types::Member;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A registry over a freshly initialized one-member store.
pub struct TestRegistry {
    pub registry: Registry,
    pub store: Store,
    _dir: TempDir,
}

impl TestRegistry {
    /// A bootstrapped registry with the default service ranges.
    pub async fn start() -> Result<TestRegistry> {
        Self::start_with(RegistryConfig::default()).await
    }

    /// A bootstrapped registry with `config`'s service ranges.
    pub async fn start_with(config: RegistryConfig) -> Result<TestRegistry> {
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
        let registry = Registry::new(store.clone(), config);
        registry.bootstrap().await?;
        Ok(TestRegistry { registry, store, _dir: dir })
    }

    /// Creates a namespace.
    pub async fn namespace(&self, name: &str) -> Result<Value> {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        Ok(self.registry.create(rt("namespaces"), None, object, &WriteOptions::default()).await?.object)
    }

    /// Creates `object` in `namespace` (ignored for cluster-scoped resources).
    pub async fn create(&self, rt: &'static ResourceType, namespace: &str, object: Value) -> Result<Value> {
        Ok(self.registry.create(rt, Some(namespace), object, &WriteOptions::default()).await?.object)
    }

    /// Stops the store.
    pub async fn stop(self) {
        self.store.shutdown().await;
    }
}

/// A served resource type by plural name: the core group, or `apps` for deployments.
pub fn rt(plural: &str) -> &'static ResourceType {
    let group = if plural == "deployments" { "apps" } else { "" };
    trireme_model::resource::find(group, "v1", plural).expect("a served resource type")
}

/// A ConfigMap with `labels` and one data entry.
pub fn config_map(name: &str, labels: Value, value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"key": value},
    })
}

/// A pod with one container, bound to `node` if given.
pub fn pod(name: &str, node: Option<&str>, labels: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "nginx:1.27"}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec})
}

/// A service of `type_` with one port per entry of `node_ports` (0: let the registry choose).
pub fn service(name: &str, type_: &str, node_ports: &[i64]) -> Value {
    let ports: Vec<Value> = node_ports
        .iter()
        .enumerate()
        .map(|(i, node_port)| {
            let mut port = json!({"name": format!("p{i}"), "port": 80 + i, "protocol": "TCP"});
            if *node_port != 0 {
                port["nodePort"] = json!(node_port);
            }
            port
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": type_, "selector": {"app": name}, "ports": ports},
    })
}

/// A deployment of `replicas` pods labelled `app=<name>`.
pub fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    })
}

/// Reads changes from `watch` until `count` have arrived.
pub async fn changes(watch: &mut ObjectWatch, count: usize) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    while out.len() < count {
        match tokio::time::timeout(WAIT, watch.next()).await {
            Ok(Some(batch)) => out.extend(batch?),
            Ok(None) => bail!("the watch ended after {} of {count} changes", out.len()),
            Err(_) => bail!("only {} of {count} changes within {WAIT:?}: {:?}", out.len(), summary(&out)),
        }
    }
    if out.len() > count {
        bail!("expected {count} changes, got {}: {:?}", out.len(), summary(&out));
    }
    Ok(out)
}

/// Whether `watch` stays quiet for a moment.
pub async fn quiet(watch: &mut ObjectWatch) -> Result<()> {
    match tokio::time::timeout(Duration::from_millis(300), watch.next()).await {
        Err(_) => Ok(()),
        Ok(Some(Ok(batch))) => bail!("unexpected changes: {:?}", summary(&batch)),
        Ok(other) => bail!("unexpected watch result: {}", other.map(|r| r.map(|_| ()).is_ok()).unwrap_or(false)),
    }
}

/// (type, name, revision) of each change, for assertions and messages.
pub fn summary(changes: &[Change]) -> Vec<(String, String, i64)> {
    changes
        .iter()
        .map(|c| {
            let kind = serde_json::to_value(c.kind).ok().and_then(|v| v.as_str().map(str::to_string));
            (kind.unwrap_or_default(), name(&c.object).to_string(), c.revision)
        })
        .collect()
}

/// `metadata.name`.
pub fn name(object: &Value) -> &str {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

/// `metadata.resourceVersion` as a number (0 if absent).
pub fn rv(object: &Value) -> i64 {
    trireme_registry::object_revision(object)
}

/// A string at `pointer` ("" if absent).
pub fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}
