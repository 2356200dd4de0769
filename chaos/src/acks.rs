//! Workload 2: no acknowledged write is lost.
//!
//! Clients put unique keys `/chaos/ack/<client>/<n>` and remember which puts were
//! acknowledged. After the run one linearizable range over the prefix must hold every
//! acknowledged key with its value ([`check`]); keys whose put had an unknown outcome may be
//! there or not, and nothing else may be.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use trireme_proto::etcdserverpb::kv_client::KvClient;

use crate::etcd;
use crate::history::Clock;

/// The prefix every key of this workload has.
pub const PREFIX: &str = "/chaos/ack/";

/// How one put ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// Acknowledged.
    Ok,
    /// Certainly not applied.
    Fail,
    /// May or may not have been applied.
    Unknown,
}

/// One put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AckedPut {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// When it was invoked (µs since the run started).
    pub invoked: u64,
    /// When it completed.
    pub completed: u64,
    /// How it ended.
    pub ack: Ack,
}

/// Runs `clients` writers against `urls` until `stop`; returns every put.
pub async fn run(clients: usize, urls: Vec<String>, seed: u64, clock: Clock, stop: CancellationToken) -> Vec<AckedPut> {
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (urls, stop) = (urls.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut master = client % urls.len();
            let mut kv: Option<KvClient<tonic::transport::Channel>> = None;
            let mut puts = Vec::new();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let kv_client = match &mut kv {
                    Some(kv) => kv,
                    slot => match etcd::channel(&urls[master]) {
                        Ok(channel) => slot.insert(KvClient::new(channel)),
                        Err(_) => break,
                    },
                };
                n += 1;
                let key = format!("{PREFIX}{client}/{n}");
                let value = format!("{seed}-{client}-{n}");
                let invoked = clock.now();
                let answer = tokio::time::timeout(etcd::OP_TIMEOUT, etcd::put(kv_client, &key, &value)).await;
                let completed = clock.now();
                let ack = match answer {
                    Ok(Ok(_)) => Ack::Ok,
                    Ok(Err(status)) if etcd::classify(&status) == etcd::Failure::NotApplied => Ack::Fail,
                    Ok(Err(_)) | Err(_) => Ack::Unknown,
                };
                if ack != Ack::Ok {
                    kv = None;
                    master = (master + 1) % urls.len();
                }
                puts.push(AckedPut { key, value, invoked, completed, ack });
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                    () = stop.cancelled() => {}
                }
            }
            puts
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        if let Ok(puts) = task.await {
            all.extend(puts);
        }
    }
    all.sort_by_key(|p| p.invoked);
    all
}

/// Problems of the stored keys against the puts (empty: none lost, none invented).
pub fn check(puts: &[AckedPut], stored: &[(String, String)]) -> Vec<String> {
    let stored: BTreeMap<&str, &str> = stored.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut problems = Vec::new();
    let mut attempted = BTreeMap::new();
    for put in puts {
        attempted.insert(put.key.as_str(), put);
        if put.ack == Ack::Fail && stored.contains_key(put.key.as_str()) {
            problems.push(format!("{} is stored though its put was refused before it was sent", put.key));
        }
        if put.ack != Ack::Ok {
            continue;
        }
        match stored.get(put.key.as_str()) {
            None => problems.push(format!(
                "{} was acknowledged at {:.3} s and is missing",
                put.key,
                crate::history::secs(put.completed)
            )),
            Some(v) if *v != put.value => {
                problems.push(format!("{} holds {v:?}, acknowledged {:?}", put.key, put.value));
            }
            Some(_) => {}
        }
    }
    for key in stored.keys() {
        if !attempted.contains_key(key) {
            problems.push(format!("{key} is stored but was never written"));
        }
    }
    problems
}

/// Every key under [`PREFIX`], read linearizably from the first master that answers.
pub async fn read_back(urls: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut last = None;
    for _ in 0..5 {
        for url in urls {
            let mut kv = KvClient::new(etcd::channel(url)?);
            match tokio::time::timeout(Duration::from_secs(120), etcd::range_prefix(&mut kv, PREFIX)).await {
                Ok(Ok(kvs)) => return Ok(kvs),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => last = Some(format!("{url}: not read within 120 s")),
            }
        }
    }
    anyhow::bail!("could not read {PREFIX} back: {}", last.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, ack: Ack) -> AckedPut {
        AckedPut { key: key.into(), value: format!("v{key}"), invoked: 0, completed: 1, ack }
    }

    fn stored(keys: &[&str]) -> Vec<(String, String)> {
        keys.iter().map(|k| (k.to_string(), format!("v{k}"))).collect()
    }

    #[test]
    fn acknowledged_puts_must_be_there_and_unknown_ones_may_be() {
        let puts = [put("a", Ack::Ok), put("b", Ack::Unknown), put("c", Ack::Unknown), put("d", Ack::Fail)];
        assert!(check(&puts, &stored(&["a", "b"])).is_empty());
        assert_eq!(check(&puts, &stored(&["b"])).len(), 1, "a lost acknowledged write is reported");
        assert_eq!(check(&puts, &stored(&["a", "d"])).len(), 1, "a refused write cannot be stored");
        assert_eq!(check(&puts, &stored(&["a", "zz"])).len(), 1, "a key nobody wrote is reported");
        let wrong = vec![("a".to_string(), "other".to_string())];
        assert_eq!(check(&puts, &wrong).len(), 1);
    }
}
