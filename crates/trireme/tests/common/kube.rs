//! Kubernetes-level helpers for tests: kubectl JSON, readiness, waiting with a deadline.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use anyhow::ensure;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::Cluster;
use super::ok;

pub fn example() -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/examples/hello.yaml");
    Ok(std::fs::read_to_string(path)?)
}

/// An HTTP/1.1 GET with a deadline; returns the body.
pub async fn http_get(addr: &str, path: &str) -> Result<String> {
    let run = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).to_string();
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
        ensure!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{head}");
        anyhow::Ok(body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), run).await.context("HTTP GET timed out")?
}

/// `kubectl get ... -o json` items.
pub async fn items(cluster: &Cluster, args: &[&str]) -> Result<Vec<Value>> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    let out: Value = serde_json::from_str(&ok(cluster.kubectl(&full).await?)?)?;
    Ok(out["items"].as_array().cloned().unwrap_or_default())
}

pub fn ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Waits until `check` passes, up to `limit`; the error says what was last seen.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("{what}: not within {limit:?}: {e:#}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

pub async fn ready_pods(cluster: &Cluster, selector: &str) -> Result<Vec<Value>> {
    Ok(items(cluster, &["pods", "-l", selector]).await?.into_iter().filter(ready).collect())
}

/// Waits until exactly `n` pods match `selector`, all ready; returns them as that list showed
/// them (no second list that a transient error could fail).
pub async fn wait_ready_pods(cluster: &Cluster, selector: &str, n: usize) -> Result<Vec<Value>> {
    let seen = std::sync::Mutex::new(Vec::new());
    eventually(&format!("{n} ready pods {selector}"), Duration::from_secs(90), || async {
        let pods = items(cluster, &["pods", "-l", selector]).await?;
        let ready = pods.iter().filter(|p| ready(p)).count();
        ensure!(ready == n && pods.len() == n, "{} pods, {ready} ready", pods.len());
        *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = pods;
        Ok(())
    })
    .await?;
    Ok(seen.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
}

pub async fn wait_nodes_ready(cluster: &Cluster, n: usize) -> Result<()> {
    eventually("nodes Ready", Duration::from_secs(60), || async {
        let nodes = items(cluster, &["nodes"]).await?;
        let ready = nodes
            .iter()
            .filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count();
        ensure!(ready == n, "{ready} of {} nodes ready", nodes.len());
        Ok(())
    })
    .await
}

/// Which pods answered `n` requests to `addr`.
pub async fn answering_pods(addr: &str, n: usize) -> Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let body = http_get(addr, "/").await?;
        let name = body.trim().strip_prefix("hello from ").with_context(|| format!("unexpected answer {body:?}"))?;
        seen.insert(name.to_string());
    }
    Ok(seen)
}

/// What identifies a running container: pod uid, node, start time and restart count.
pub fn identities(pods: &[Value]) -> BTreeMap<String, (String, String, String, i64)> {
    pods.iter()
        .map(|p| {
            let status = &p["status"]["containerStatuses"][0];
            (
                p["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                (
                    p["metadata"]["uid"].as_str().unwrap_or_default().to_string(),
                    p["spec"]["nodeName"].as_str().unwrap_or_default().to_string(),
                    status["state"]["running"]["startedAt"].as_str().unwrap_or_default().to_string(),
                    status["restartCount"].as_i64().unwrap_or(-1),
                ),
            )
        })
        .collect()
}
