//! In-process clusters for tests: real RocksDB in temp dirs, real gRPC on loopback, peer links
//! that a test can cut (`cluster.links`), and each member's logs in its `member{name=mN}` span.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use trireme_store::Store;
use trireme_store::StoreConfig;
use trireme_store::links::Links;
use trireme_store::types::Command;
use trireme_store::types::Member;
use trireme_store::types::PutRequest;
use trireme_store::types::RangeRequest;
use trireme_store::types::Request;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Installs a log subscriber once (RUST_LOG controls it; by default the store's info and the
/// tests' own phases).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,trireme_store=info,cluster=info,kv=info,partition=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// One member: its data dir and address survive kills and restarts.
pub struct TestMember {
    pub id: u64,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub store: Option<Store>,
    server: Option<(CancellationToken, JoinHandle<()>)>,
}

impl TestMember {
    pub fn member(&self) -> Member {
        Member { name: format!("m{}", self.id), peer_urls: vec![format!("http://{}", self.addr)], client_urls: vec![] }
    }
}

/// A cluster of in-process members.
pub struct TestCluster {
    pub members: BTreeMap<u64, TestMember>,
    pub config: StoreConfig,
    /// The peer links between members, all up until a test cuts them.
    pub links: Links,
    /// `cluster{test}`: the members' spans are inside it, so that clusters of tests running at
    /// once in one process can be told apart too.
    span: tracing::Span,
    _tmp: TempDir,
}

impl TestCluster {
    /// Starts `n` members with ids 1..=n and initializes them as one cluster.
    pub async fn start(n: u64) -> Result<TestCluster> {
        Self::start_with(n, StoreConfig::default()).await
    }

    /// Like [`TestCluster::start`] with `config` as the template for every member.
    pub async fn start_with(n: u64, config: StoreConfig) -> Result<TestCluster> {
        init_tracing();
        let tmp = TempDir::new()?;
        // libtest names each test's thread after the test.
        let test = std::thread::current().name().unwrap_or("?").to_string();
        let span = tracing::info_span!(parent: None, "cluster", %test);
        let mut cluster = TestCluster { members: BTreeMap::new(), config, links: Links::new(), span, _tmp: tmp };
        for id in 1..=n {
            cluster.add_member_process(id).await?;
        }
        let founders: BTreeMap<u64, Member> = cluster.members.values().map(|m| (m.id, m.member())).collect();
        for m in cluster.members.values() {
            m.store.as_ref().context("store")?.initialize(founders.clone()).await?;
        }
        cluster.wait_leader().await?;
        Ok(cluster)
    }

    /// Starts a new member process `id` with an empty data dir (not yet in the membership).
    pub async fn add_member_process(&mut self, id: u64) -> Result<&TestMember> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let dir = self._tmp.path().join(format!("m{id}"));
        let mut member = TestMember { id, dir, addr, store: None, server: None };
        self.run(&mut member, listener).await?;
        self.members.insert(id, member);
        self.members.get(&id).context("member just inserted")
    }

    async fn run(&self, member: &mut TestMember, listener: TcpListener) -> Result<()> {
        let config = StoreConfig {
            id: member.id,
            name: format!("m{}", member.id),
            data_dir: member.dir.clone(),
            ..self.config.clone()
        };
        // A just-stopped member's last tasks may still hold its RocksDB lock for a moment.
        let mut attempt = 0;
        let store = loop {
            match Store::open_linked(config.clone(), self.links.clone()).instrument(self.span.clone()).await {
                Ok(store) => break store,
                Err(e) if attempt < 50 && e.to_string().contains("lock") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let stop = CancellationToken::new();
        let peers = store.clone();
        let stopped = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = peers.serve_peers(listener, None, stopped).await {
                tracing::warn!(error = %e, "peer server ended");
            }
        });
        member.store = Some(store);
        member.server = Some((stop, task));
        Ok(())
    }

    /// Stops a member as a crash would: its Raft and its network go away; its data dir stays.
    pub async fn kill(&mut self, id: u64) -> Result<()> {
        let member = self.members.get_mut(&id).context("no such member")?;
        if let Some((stop, mut task)) = member.server.take() {
            // Graceful: tonic closes every connection, so no connection task keeps the
            // service (and with it the RocksDB handles) alive after the restart.
            stop.cancel();
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                task.abort();
            }
        }
        if let Some(store) = member.store.take() {
            store.shutdown().await;
        }
        Ok(())
    }

    /// Restarts a killed member from its data dir on its old address.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        let mut member = self.members.remove(&id).context("no such member")?;
        let mut attempt = 0;
        let listener = loop {
            match TcpListener::bind(member.addr).await {
                Ok(l) => break l,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "address busy; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let result = self.run(&mut member, listener).await;
        self.members.insert(id, member);
        result
    }

    /// The store of a running member.
    pub fn store(&self, id: u64) -> &Store {
        self.members.get(&id).and_then(|m| m.store.as_ref()).expect("member is running")
    }

    /// Ids of running members.
    pub fn running(&self) -> Vec<u64> {
        self.members.values().filter(|m| m.store.is_some()).map(|m| m.id).collect()
    }

    /// Waits until the running members agree on a running leader and returns it.
    pub async fn wait_leader(&self) -> Result<u64> {
        self.wait_leader_of(&self.running()).await
    }

    /// Waits until members `ids` agree on a leader among themselves (the others may think
    /// otherwise: a partition's other side) and returns it.
    pub async fn wait_leader_of(&self, ids: &[u64]) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let views: Vec<Option<u64>> = ids.iter().map(|id| self.store(*id).leader()).collect();
            if let Some(Some(leader)) = views.first()
                && ids.contains(leader)
                && views.iter().all(|v| *v == Some(*leader))
                && self.store(*leader).leadership().borrow().is_some()
            {
                return Ok(*leader);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no agreed leader among {ids:?} within {WAIT:?}: views {views:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running member has applied up to the revision `rev`.
    pub async fn wait_revision(&self, rev: i64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.running().iter().any(|id| self.store(*id).revision() < rev) {
            if tokio::time::Instant::now() > deadline {
                let revs: Vec<_> = self.running().iter().map(|id| (*id, self.store(*id).revision())).collect();
                bail!("members did not reach revision {rev}: {revs:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until every running member has applied the same revision (at least `rev`) and
    /// checks that they hold the same data: the same key-space hash, the same keys and values.
    /// Returns the revision.
    pub async fn wait_converged(&self, rev: i64) -> Result<i64> {
        self.wait_revision(rev).await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let revs: Vec<i64> = self.running().iter().map(|id| self.store(*id).revision()).collect();
            if revs.windows(2).all(|w| w[0] == w[1]) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("members stayed at different revisions: {revs:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let everything =
            RangeRequest { key: vec![0], range_end: vec![0], serializable: true, ..RangeRequest::default() };
        let mut states = Vec::new();
        for id in self.running() {
            let store = self.store(id);
            let (hash, at, _) = store.hash_kv(0).await?;
            let (kvs, _) = store.range(everything.clone()).await?;
            states.push((id, at, hash, kvs));
        }
        for (id, at, hash, kvs) in &states[1..] {
            let (first, first_at, first_hash, first_kvs) = &states[0];
            anyhow::ensure!(
                at == first_at && hash == first_hash,
                "member {id} at {at} hash {hash:x}, member {first} at {first_at} hash {first_hash:x}"
            );
            anyhow::ensure!(kvs == first_kvs, "member {id} holds other data than member {first}");
        }
        Ok(states[0].1)
    }
}

/// A put of `key = value`.
pub fn put(key: &str, value: &str) -> Request {
    Request::new(Command::Put(PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() }))
}

/// A linearizable range over `[key, end)` (or one key when `end` is empty).
pub fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest { key: key.into(), range_end: end.into(), ..RangeRequest::default() }
}

/// Reads one key's value through `store` (linearizable).
pub async fn get(store: &Store, key: &str) -> Result<Option<String>> {
    let (resp, _) = store.range(range(key, "")).await?;
    Ok(resp.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}
