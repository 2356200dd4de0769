//! The `kube` crate's client, watcher and reflector against Trireme's API server: a reflector
//! keeps an exact cache across a SIGKILL and restart of the master it talks to.

mod common;

use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use common::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::Client;
use kube::api::PostParams;
use kube::config::KubeConfigOptions;
use kube::config::Kubeconfig;
use kube::runtime::reflector;
use kube::runtime::watcher;
use nix::sys::signal::Signal;

async fn client(kubeconfig: &std::path::Path, context: &str) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let options = KubeConfigOptions { context: Some(context.to_string()), ..Default::default() };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok(Client::try_from(config)?)
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some(name.to_string()), ..Default::default() },
        data: Some([("k".to_string(), name.to_string())].into()),
        ..Default::default()
    }
}

async fn wait_for(store: &reflector::Store<ConfigMap>, names: &[&str]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let mut have: Vec<String> = store.state().iter().filter_map(|c| c.metadata.name.clone()).collect();
        have.sort();
        if names.iter().all(|n| have.iter().any(|h| h == n)) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("reflector has {have:?}, expected {names:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_follows_changes_across_a_restart_of_its_master() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let kubeconfig = cluster.kubeconfig().await?;
    let on_m1: Api<ConfigMap> = Api::namespaced(client(&kubeconfig, "m1").await?, "default");
    let on_m2: Api<ConfigMap> = Api::namespaced(client(&kubeconfig, "m2").await?, "default");

    eprintln!("--- a reflector through m1 sees a create");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(writer, watcher(on_m1.clone(), watcher::Config::default()));
    let pump = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                eprintln!("watcher error (retried): {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    on_m1.create(&PostParams::default(), &config_map("a")).await?;
    wait_for(&reader, &["a"]).await?;

    eprintln!("--- m1 killed; a write through m2; m1 restarted");
    cluster.signal(0, Signal::SIGKILL).await?;
    on_m2.create(&PostParams::default(), &config_map("b")).await?;
    cluster.restart(0)?;
    wait_for(&reader, &["a", "b"]).await.context("the reflector caught up after the restart")?;

    eprintln!("--- writes after the restart still arrive, deletes too");
    on_m2.create(&PostParams::default(), &config_map("c")).await?;
    on_m2.delete("a", &Default::default()).await?;
    wait_for(&reader, &["b", "c"]).await?;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while reader.state().iter().any(|c| c.metadata.name.as_deref() == Some("a")) {
        if tokio::time::Instant::now() > deadline {
            bail!("the delete of a never reached the reflector");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = on_m1.get("c").await?;
    assert_eq!(got.data.and_then(|d| d.get("k").cloned()).as_deref(), Some("c"));
    pump.abort();
    Ok(())
}
