//! Real masters killed under load: no acknowledged write is lost.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use anyhow::ensure;
use common::Cluster;
use common::etcdctl;
use common::ok;
use nix::sys::signal::Signal;
use tonic::transport::Channel;
use tonic::transport::Endpoint;
use trireme_proto::etcdserverpb::PutRequest;
use trireme_proto::etcdserverpb::kv_client::KvClient;

type Test = Result<()>;

/// What a writer saw: acknowledged keys with their revisions, and when each ack came.
struct History {
    acked: BTreeMap<String, i64>,
    ack_times: Vec<Instant>,
    failures: usize,
}

fn clients(endpoints: &str) -> Result<Vec<KvClient<Channel>>> {
    endpoints
        .split(',')
        .map(|url| {
            let channel = Endpoint::from_shared(url.to_string())?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(3))
                .connect_lazy();
            Ok(KvClient::new(channel))
        })
        .collect()
}

/// Puts `load/NNNNNN` keys through every endpoint in turn until `stop`, moving to the next
/// endpoint on any error. A failed put is not counted: its outcome is unknown.
async fn write_until(endpoints: String, stop: tokio_util::sync::CancellationToken) -> Result<History> {
    let mut clients = clients(&endpoints)?;
    let mut history = History { acked: BTreeMap::new(), ack_times: Vec::new(), failures: 0 };
    let mut target = 0usize;
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        seq += 1;
        let key = format!("load/{seq:06}");
        let put = PutRequest { key: key.clone().into(), value: b"v".to_vec().into(), ..PutRequest::default() };
        match clients[target].put(put).await {
            Ok(resp) => {
                let rev = resp.into_inner().header.map_or(0, |h| h.revision);
                history.acked.insert(key, rev);
                history.ack_times.push(Instant::now());
            }
            Err(_) => {
                history.failures += 1;
                target = (target + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(history)
}

/// Every acknowledged key is readable through `endpoint`, at the revision it was acknowledged at.
async fn check_all_present(endpoint: &str, history: &History) -> Test {
    let out = ok(etcdctl(endpoint, &["get", "load/", "--prefix", "-w", "json"], None).await?)?;
    let json: serde_json::Value = serde_json::from_str(&out)?;
    let mut stored = BTreeMap::new();
    for kv in json["kvs"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let key = kv["key"].as_str().context("key")?;
        let key = String::from_utf8(decode_base64(key)?)?;
        stored.insert(key, kv["mod_revision"].as_i64().context("mod_revision")?);
    }
    for (key, rev) in &history.acked {
        ensure!(stored.get(key) == Some(rev), "acknowledged write {key}@{rev} lost (stored: {:?})", stored.get(key));
    }
    Ok(())
}

fn decode_base64(text: &str) -> Result<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).context("bad base64")? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// The longest pause between two consecutive acknowledgements.
fn longest_gap(times: &[Instant]) -> Duration {
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_under_load_loses_no_acknowledged_write() -> Test {
    let mut cluster = Cluster::start(3).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(write_until(cluster.endpoints(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let leader = cluster.wait_leader().await?;
    eprintln!("--- SIGKILL the leader {}", cluster.masters[leader].name);
    cluster.signal(leader, Signal::SIGKILL).await?;
    let new_leader = cluster.wait_leader().await?;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let history = writer.await??;
    let gap = longest_gap(&history.ack_times);
    eprintln!("acknowledged {} writes, {} failed; longest write gap {gap:?}", history.acked.len(), history.failures);
    ensure!(history.acked.len() > 50, "the writer made progress");

    eprintln!("--- restart it; it catches up");
    cluster.restart(leader)?;
    let endpoint = cluster.masters[leader].client_url.clone();
    let deadline = Instant::now() + common::WAIT;
    loop {
        let out =
            etcdctl(&endpoint, &["get", "load/", "--prefix", "--keys-only", "-w", "json", "--consistency=s"], None)
                .await?;
        let count = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok().and_then(|j| j["count"].as_u64());
        if count.is_some_and(|c| c as usize >= history.acked.len()) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the restarted master did not catch up: {:?}\n{}",
            out,
            cluster.log_tail(leader)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_all_present(&endpoint, &history).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_every_master_loses_no_acknowledged_write() -> Test {
    let mut cluster = Cluster::start(3).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(write_until(cluster.endpoints(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("--- SIGKILL all three while writing");
    for i in 0..3 {
        cluster.signal(i, Signal::SIGKILL).await?;
    }
    stop.cancel();
    let history = writer.await??;
    eprintln!("acknowledged {} writes before the crash", history.acked.len());

    eprintln!("--- start all three again");
    for i in 0..3 {
        cluster.restart(i)?;
    }
    cluster.wait_leader().await?;
    check_all_present(&cluster.endpoints(), &history).await
}
