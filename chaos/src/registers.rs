//! Workload 1: registers over the etcd API.
//!
//! A few clients share a few keys; each client talks to one master and moves to the next one
//! after any failure. Operations: a linearizable get, a put of a value no other operation
//! writes, and a compare-and-swap transaction from the value the client last saw. Every
//! operation is recorded with its invocation and completion times for the linearizability
//! checker.
//!
//! The keys change every [`EPOCH`]: epoch e uses `/chaos/reg/<e>/<k>`, fresh registers, so a
//! long run is many independent short histories (one per key and epoch) — the checker's cost
//! grows with the length of one history, and an operation of an old epoch, even one with an
//! unknown outcome that lands late, can only touch its own epoch's keys.

use std::time::Duration;

/// How long one set of register keys is used.
pub const EPOCH: Duration = Duration::from_secs(60);

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;
use trireme_proto::etcdserverpb::kv_client::KvClient;

use crate::etcd;
use crate::history::Call;
use crate::history::Clock;
use crate::history::Outcome;
use crate::history::RegisterOp;
use crate::linearizability::Value;

/// Shape of the workload.
#[derive(Debug, Clone)]
pub struct Registers {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys they share.
    pub keys: usize,
    /// Seed of every client's choices.
    pub seed: u64,
    /// The masters' etcd URLs.
    pub urls: Vec<String>,
}

/// The etcd key of register `key`, where `key = epoch * keys + k` (as `RegisterOp::key`).
pub fn key(key: usize, keys: usize) -> String {
    format!("/chaos/reg/{}/{}", key / keys.max(1), key % keys.max(1))
}

/// The `n`th value client `client` writes: unique across the run, never 0.
fn value(client: usize, n: u64) -> Value {
    ((client as u64 + 1) << 32) | n
}

impl Registers {
    /// Runs every client until `stop`; returns all operations.
    pub async fn run(self, clock: Clock, stop: CancellationToken) -> Vec<RegisterOp> {
        let mut tasks = Vec::new();
        for client in 0..self.clients {
            let (me, stop) = (self.clone(), stop.clone());
            tasks.push(tokio::spawn(async move { me.client(client, clock, stop).await }));
        }
        let mut history = Vec::new();
        for task in tasks {
            if let Ok(ops) = task.await {
                history.extend(ops);
            }
        }
        history.sort_by_key(|op| op.invoked);
        history
    }

    async fn client(&self, client: usize, clock: Clock, stop: CancellationToken) -> Vec<RegisterOp> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x7265_6700 ^ (client as u64).wrapping_mul(0x9E37_79B9));
        let mut master = client % self.urls.len();
        let mut clients: Vec<Option<KvClient<tonic::transport::Channel>>> = vec![None; self.urls.len()];
        let mut last_seen: Vec<Value> = vec![0; self.keys];
        let mut written = 0u64;
        let mut ops = Vec::new();
        let mut epoch = 0;
        let epoch_us = EPOCH.as_secs() * 1_000_000;
        while !stop.is_cancelled() {
            let now = usize::try_from(clock.now() / epoch_us).unwrap_or(usize::MAX);
            if now != epoch {
                // Fresh keys: nothing seen on them yet.
                epoch = now;
                last_seen.fill(0);
            }
            let k = rng.random_range(0..self.keys);
            let roll: f64 = rng.random();
            let call = if roll < 0.4 || (roll >= 0.7 && last_seen[k] == 0) {
                Call::Get
            } else if roll < 0.7 {
                written += 1;
                Call::Put { value: value(client, written) }
            } else {
                written += 1;
                Call::Cas { expected: last_seen[k], new: value(client, written) }
            };
            let kv = match &mut clients[master] {
                Some(kv) => kv,
                slot => match etcd::channel(&self.urls[master]) {
                    Ok(channel) => slot.insert(KvClient::new(channel)),
                    Err(_) => continue,
                },
            };
            let global = epoch * self.keys + k;
            let key = key(global, self.keys);
            let sent_to = master;
            let invoked = clock.now();
            let answer = tokio::time::timeout(etcd::OP_TIMEOUT, async {
                match call {
                    Call::Get => etcd::get(kv, &key).await.map(|v| (Some(v.map_or(0, |raw| parse_value(&raw))), None)),
                    Call::Put { value } => etcd::put(kv, &key, &value.to_string()).await.map(|_| (None, Some(true))),
                    Call::Cas { expected, new } => etcd::cas(kv, &key, &expected.to_string(), &new.to_string())
                        .await
                        .map(|swapped| (None, Some(swapped))),
                }
            })
            .await;
            let completed = clock.now();
            let outcome = match answer {
                Ok(Ok((value, swapped))) => Outcome::Ok { value, swapped },
                Ok(Err(status)) => match etcd::classify(&status) {
                    etcd::Failure::NotApplied => Outcome::Fail { error: status.message().to_string() },
                    etcd::Failure::Unknown => {
                        Outcome::Unknown { error: format!("{:?}: {}", status.code(), status.message()) }
                    }
                },
                Err(_) => Outcome::Unknown { error: format!("no answer within {:?}", etcd::OP_TIMEOUT) },
            };
            match (&outcome, call) {
                (Outcome::Ok { value: Some(v), .. }, Call::Get) => last_seen[k] = *v,
                (Outcome::Ok { .. }, Call::Put { value }) => last_seen[k] = value,
                (Outcome::Ok { swapped: Some(true), .. }, Call::Cas { new, .. }) => last_seen[k] = new,
                (Outcome::Ok { .. }, _) => {}
                (Outcome::Fail { .. } | Outcome::Unknown { .. }, _) => {
                    // Drop the connection too: a paused master keeps it open forever.
                    clients[master] = None;
                    master = (master + 1) % self.urls.len();
                }
            }
            ops.push(RegisterOp { client, master: sent_to, key: global, call, invoked, completed, outcome });
            let pause = Duration::from_millis(rng.random_range(0..=10));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => {}
            }
        }
        ops
    }
}

/// A register value as stored (decimal); a value no writer could have written reads as
/// `u64::MAX`, which the checker then reports.
fn parse_value(raw: &[u8]) -> Value {
    std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unique_per_client_and_never_zero() {
        assert_ne!(value(0, 1), value(1, 1));
        assert_ne!(value(0, 1), value(0, 2));
        assert_ne!(value(0, 0), 0);
        assert_eq!(parse_value(value(3, 9).to_string().as_bytes()), value(3, 9));
        assert_eq!(parse_value(b"junk"), u64::MAX);
    }
}
