//! Issue #22's target: the longest failure a client polling the cluster's stable address every
//! 100 ms sees when the master behind it is SIGKILLed, over several kills (the balancer of
//! `trireme up`, in this process, in front of a 3-master cluster).

use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;
use trireme_lb::Backend;
use trireme_lb::Balancer;
use trireme_lb::Check;
use trireme_lb::Options;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::kv_client::KvClient;

use crate::Cluster;

/// One poll: when it started and whether it succeeded.
type Sample = (Instant, bool);

/// Starts a Trireme cluster with balancers in front, kills the leader `kills` times (restarting
/// it after each), and prints the longest failure seen by each client.
pub async fn run(bin: &std::path::PathBuf, kills: usize) -> Result<()> {
    let mut cluster = Cluster::start("trireme", bin, &[]).await?;
    let admin_path = cluster.dir.path().join("trireme1").join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !admin_path.exists() {
        anyhow::ensure!(Instant::now() < deadline, "the Kubernetes API did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = std::fs::read_to_string(&admin_path)?;
    let doc: serde_json::Value = serde_yaml_ng::from_str(&admin)?;
    let ca = doc["clusters"][0]["cluster"]["certificate-authority-data"].as_str().context("the CA")?;
    let ca = base64_decode(ca)?;
    let backends = |urls: &[String]| -> Result<Vec<Backend>> {
        urls.iter()
            .enumerate()
            .map(|(i, url)| {
                let addr = url.split_once("://").map_or(url.as_str(), |(_, a)| a).parse()?;
                Ok(Backend { name: format!("trireme{}", i + 1), addr })
            })
            .collect()
    };
    let any = "127.0.0.1:0".parse()?;
    let api = Balancer::bind("kubernetes", any, backends(&cluster.api_urls)?, Check::readyz(&ca)?, Options::default())
        .await?;
    let etcd =
        Balancer::bind("etcd", any, backends(&cluster.endpoints)?, Check::EtcdStatus(None), Options::default()).await?;
    let (api_addr, etcd_addr) = (api.local_addr(), etcd.local_addr());
    let stop = CancellationToken::new();
    tokio::spawn(api.run(stop.clone()));
    tokio::spawn(etcd.run(stop.clone()));

    let mut kubeconfig = doc.clone();
    kubeconfig["clusters"][0]["cluster"]["server"] = serde_json::json!(format!("https://{api_addr}"));
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.connect_timeout = Some(Duration::from_secs(1));
    config.read_timeout = Some(Duration::from_secs(1));
    let kube = kube::Client::try_from(config)?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{etcd_addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(1))
        .connect_lazy();

    let kube_poll = tokio::spawn(poll(stop.clone(), move || {
        let kube = kube.clone();
        async move {
            use k8s_openapi::api::core::v1::Namespace;
            kube::Api::<Namespace>::all(kube).get("default").await.is_ok()
        }
    }));
    let etcd_poll = tokio::spawn(poll(stop.clone(), move || {
        let mut kv = KvClient::new(channel.clone());
        async move { kv.range(pb::RangeRequest { key: b"stable".to_vec().into(), ..Default::default() }).await.is_ok() }
    }));

    let mut kill_times = Vec::new();
    for _ in 0..kills {
        let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = cluster.children[leader].id().context("leader pid")?;
        kill_times.push(Instant::now());
        kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL)?;
        cluster.children[leader].wait().await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.restart(leader)?;
    }
    cluster.wait_leader(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let kube_samples = kube_poll.await?;
    let etcd_samples = etcd_poll.await?;
    for (client, samples) in
        [("Kubernetes API (GET namespace)", &kube_samples), ("etcd API (linearizable get)", &etcd_samples)]
    {
        let mut outages: Vec<Duration> = kill_times
            .iter()
            .enumerate()
            .map(|(i, from)| {
                let until = kill_times.get(i + 1).copied();
                longest_failure(samples.iter().filter(|(t, _)| t >= from && until.is_none_or(|u| *t < u)))
            })
            .collect();
        outages.sort();
        let failed = samples.iter().filter(|(_, ok)| !ok).count();
        println!(
            "stable address, {client}, polled every 100 ms across {} kills of the leader: longest failure median {:.0} ms, max {:.0} ms ({failed} of {} polls failed)",
            kill_times.len(),
            outages.get(outages.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            outages.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            samples.len()
        );
    }
    Ok(())
}

/// Polls every 100 ms (a slow answer delays the next poll) until `stop`.
async fn poll<F, Fut>(stop: CancellationToken, request: F) -> Vec<Sample>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        ticker.tick().await;
        let started = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(2), request()).await.unwrap_or(false);
        samples.push((started, ok));
    }
    samples
}

/// The longest time from a failed poll's start to the next successful poll's start.
fn longest_failure<'a>(samples: impl Iterator<Item = &'a Sample>) -> Duration {
    let (mut longest, mut failing_since) = (Duration::ZERO, None::<Instant>);
    for (t, ok) in samples {
        match (ok, failing_since) {
            (true, Some(since)) => {
                longest = longest.max(*t - since);
                failing_since = None;
            }
            (false, None) => failing_since = Some(*t),
            _ => {}
        }
    }
    longest
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.decode(text)?)
}
