//! [`Store`]: one member of the replicated store, the entry point for the etcd and Kubernetes
//! edges.
//!
//! - Writes go to the leader (forwarded over the peer network when this member follows) and
//!   return once this member has applied them, so a client reads its own writes here.
//! - Reads are linearizable by default (read index from the leader, then wait for the local
//!   state machine) and local when `serializable` is set.
//! - Watches are served from this member's applied state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use openraft::ServerState;
use openraft::SnapshotPolicy;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use trireme_proto::peer::raft_peer_server::RaftPeerServer;

use crate::backup;
use crate::backup::Archive;
use crate::backup::ArchiveHeader;
use crate::compaction::Sampler;
use crate::config::StoreConfig;
use crate::db;
use crate::error::StoreError;
use crate::lease::LeaseTtl;
use crate::links::Links;
use crate::mvcc::read;
use crate::raft::ForwardRequest;
use crate::raft::ForwardResponse;
use crate::raft::LogStore;
use crate::raft::PeerNetwork;
use crate::raft::PeerService;
use crate::raft::Raft;
use crate::raft::Shared;
use crate::raft::StateMachine;
use crate::raft::forward::FailureKind;
use crate::raft::mux::ForwardMux;
use crate::raft::network::PeerError;
use crate::schema::RAFT_CFS;
use crate::schema::STATE_CFS;
use crate::types::Command;
use crate::types::KeyRange;
use crate::types::Member;
use crate::types::Outcome;
use crate::types::RangeRequest;
use crate::types::RangeResponse;
use crate::types::Request;
use crate::types::Response;
use crate::validate::check_request;
use crate::watch::WatchSpec;
use crate::watch::WatchStream;
use crate::watch::spawn_watcher;

/// How often the leader looks for expired leases.
const LEASE_TICK: Duration = Duration::from_millis(200);
/// Pause between attempts while no leader is known.
const LEADER_RETRY: Duration = Duration::from_millis(50);

/// A member as the cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub member: Member,
    pub is_learner: bool,
}

/// What a member answered about its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub cluster_id: u64,
    pub members: Vec<MemberInfo>,
    /// The answer came from a member that believes it leads.
    pub from_leader: bool,
    /// Log index of the membership in the answer; newer memberships have larger ones.
    pub membership_index: u64,
}

/// What `status` reports about this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// Index of the last entry in this member's log.
    pub raft_index: u64,
    pub applied_index: u64,
    /// Log entries up to here were purged behind a snapshot.
    pub purged_index: u64,
    pub revision: i64,
    pub compacted: i64,
    pub is_learner: bool,
    /// Bytes used by the state DB's files.
    pub db_size: u64,
}

/// Granted and remaining TTL of a lease, with its keys if asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    pub ttl: LeaseTtl,
    pub keys: Vec<Vec<u8>>,
}

struct Inner {
    config: StoreConfig,
    raft: Raft,
    shared: Arc<Shared>,
    network: PeerNetwork,
    mux: ForwardMux,
    service: PeerService,
    /// `Some(term)` while this member leads, with the term it was elected in.
    leadership: watch::Sender<Option<u64>>,
    /// The leader this member knows of, published only when it changes (openraft's metrics
    /// change on every append and apply).
    known_leader: watch::Sender<Option<u64>>,
    shutdown: CancellationToken,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// `member{name, id}`: the span every task of this member runs in.
    span: tracing::Span,
}

/// One member of the replicated MVCC store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) the member's data dir and starts Raft. A new cluster must then be
    /// [`initialize`](Store::initialize)d once; a restarted member resumes from its data.
    ///
    /// Every task of the member (the Raft core, replication, the state machine, lease expiry,
    /// watchers, ...) runs in its [`span`](Store::span).
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        Store::open_with(config, None).await
    }

    /// Like [`Store::open`], for a member of an in-process cluster whose peer messages cross
    /// `links`, which tests cut and heal to partition the cluster (see [`crate::links`]).
    pub async fn open_linked(config: StoreConfig, links: Links) -> Result<Store, StoreError> {
        Store::open_with(config, Some(links)).await
    }

    async fn open_with(config: StoreConfig, links: Option<Links>) -> Result<Store, StoreError> {
        config.validate().map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        let span = tracing::info_span!("member", name = %config.name, id = %format_args!("{:x}", config.id));
        // Raft is created in the span: openraft's tasks inherit it (see `raft::MemberRuntime`).
        Store::start(config, links, span.clone()).instrument(span).await
    }

    async fn start(config: StoreConfig, links: Option<Links>, span: tracing::Span) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let raft_db = Arc::new(db::open(&config.data_dir.join("raft"), &RAFT_CFS)?);
        let log_store = LogStore::new(raft_db)?;
        let shared = Shared::open(&config.data_dir, config.watch_ring_events)?;
        let state_machine = StateMachine::new(shared.clone())?;
        let raft_config = openraft::Config {
            cluster_name: "trireme".to_string(),
            heartbeat_interval: millis(config.heartbeat_interval),
            election_timeout_min: millis(config.election_timeout_min),
            election_timeout_max: millis(config.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            max_in_snapshot_log_to_keep: config.log_entries_kept,
            enable_pre_vote: Some(true),
            // Standard Raft: a restarted leader is elected again before it leads.
            enable_leader_restore: Some(false),
            // A follower that missed an append is retried soon, not after openraft's 200 ms.
            backoff: "10ms 20ms ...1s".to_string(),
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        let raft_config = Arc::new(raft_config);
        let network = PeerNetwork::with_source_address(config.peer_source_address)
            .with_tls(config.peer_client_tls.clone())
            .with_backoff(raft_config.clone());
        let network = match links {
            Some(links) => network.with_links(config.id, links),
            None => network,
        };
        let raft = Raft::new(config.id, raft_config, network.clone(), log_store, state_machine)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        let service = PeerService::new(raft.clone(), shared.clone());
        let store = Store {
            inner: Arc::new(Inner {
                config,
                raft,
                shared,
                network,
                mux: ForwardMux::default(),
                service,
                leadership: watch::Sender::new(None),
                known_leader: watch::Sender::new(None),
                shutdown: CancellationToken::new(),
                tasks: std::sync::Mutex::new(Vec::new()),
                span,
            }),
        };
        let tasks = vec![
            tokio::spawn(store.clone().track_leadership().in_current_span()),
            tokio::spawn(store.clone().expire_leases().in_current_span()),
            tokio::spawn(store.clone().auto_compact().in_current_span()),
        ];
        store.inner.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(tasks);
        Ok(store)
    }

    /// Starts a new cluster with `members` as its voters. Every founding member may call this
    /// with the same membership; a member that already has state ignores it.
    pub async fn initialize(&self, members: BTreeMap<u64, Member>) -> Result<(), StoreError> {
        if self.inner.raft.is_initialized().await.map_err(|e| StoreError::Raft(e.to_string()))? {
            return Ok(());
        }
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(e) if e.api_error().is_some_and(|a| matches!(a, openraft::errors::InitializeError::NotAllowed(_))) => {
                Ok(())
            }
            Err(e) => Err(StoreError::Raft(e.to_string())),
        }
    }

    /// Initializes Raft with the membership that `snapshot restore` or `--force-new-cluster`
    /// left in the data dir (`bootstrap.json`). Returns whether there was one.
    ///
    /// The data came with the data dir, not through the log, so a member that joins later must
    /// get it by snapshot: in the background, once this member has applied its first entries, it
    /// takes a snapshot, purges the log behind it, and only then removes `bootstrap.json` (a
    /// member restarted before that does it again).
    pub async fn bootstrap(&self) -> Result<bool, StoreError> {
        let dir = &self.inner.config.data_dir;
        let Some(bootstrap) = crate::identity::Bootstrap::load(dir)? else { return Ok(false) };
        self.initialize(bootstrap.members.into_iter().collect()).await?;
        let task = tokio::spawn(self.clone().seal_bootstrap().instrument(self.inner.span.clone()));
        self.inner.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(task);
        Ok(true)
    }

    /// See [`Store::bootstrap`]: snapshot, purge, remove `bootstrap.json`.
    async fn seal_bootstrap(self) {
        let sealed = async {
            let mut applied = self.inner.shared.applied.subscribe();
            applied.wait_for(|&a| a >= 1).await.map_err(|_| StoreError::Stopped)?;
            self.snapshot_now().await?;
            let mut metrics = self.inner.raft.metrics();
            let snapshot = loop {
                if let Some(index) = metrics.borrow_watched().snapshot.as_ref().map(|l| l.index).filter(|&i| i >= 1) {
                    break index;
                }
                metrics.changed().await.map_err(|_| StoreError::Stopped)?;
            };
            self.purge_log(snapshot).await?;
            crate::identity::Bootstrap::remove(&self.inner.config.data_dir)?;
            Ok::<_, StoreError>(snapshot)
        };
        tokio::select! {
            result = sealed => match result {
                Ok(index) => tracing::info!(index, "bootstrapped data sealed in a snapshot; joining members will install it"),
                Err(e) => tracing::warn!(error = %e, "could not snapshot the bootstrapped data; retried at the next start"),
            },
            () = self.inner.shutdown.cancelled() => {}
        }
    }

    /// The gRPC service peers call; [`Store::serve_peers`] serves it.
    pub fn peer_server(&self) -> RaftPeerServer<PeerService> {
        self.inner.service.clone().into_server()
    }

    /// Serves the peer protocol on `listener` until `shutdown` resolves, over TLS with `tls`
    /// (`--peer-cert-file` and friends; it may require a peer certificate). Accepted
    /// connections get TCP_NODELAY: Raft messages are small, and Nagle's algorithm against
    /// delayed ACKs would add 40 ms to a heartbeat.
    pub async fn serve_peers(
        &self,
        listener: tokio::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = trireme_tls::serve::incoming(listener, tls, "peer");
        let span = self.inner.span.clone();
        tonic::transport::Server::builder()
            .trace_fn(move |_| span.clone())
            .add_service(self.peer_server())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .instrument(self.inner.span.clone())
            .await
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.inner.config.id
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The span this member's tasks run in, `member{name, id}`: work done for this member
    /// elsewhere (its servers, its membership tasks) can run in it too, so that the logs of
    /// members sharing a process can be told apart.
    pub fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// Stops Raft and the background tasks. Acknowledged writes are already durable.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown failed");
        }
    }

    /// Asks the member at `peer_url` for the cluster id and membership (how a joining member
    /// learns its id, and a removed one that it was removed); `tls` dials an `https://` URL.
    pub async fn discover(
        peer_url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<Discovered, StoreError> {
        let peer = Member { peer_urls: vec![peer_url.to_string()], ..Member::default() };
        match PeerNetwork::default().with_tls(tls).forward(&peer, &ForwardRequest::ListMembers, timeout).await {
            Ok(ForwardResponse::Members { cluster_id, members, from_leader, membership_index }) => Ok(Discovered {
                cluster_id,
                members: members
                    .into_iter()
                    .map(|(id, member, is_learner)| MemberInfo { id, member, is_learner })
                    .collect(),
                from_leader,
                membership_index,
            }),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(StoreError::Raft(e.to_string())),
        }
    }

    // ---- writes -------------------------------------------------------------------------

    /// Proposes `req`, waits until this member applied it, and returns its response.
    ///
    /// Returns `Timeout` if the outcome is unknown (the leader was lost mid-request), `NoLeader`
    /// if no leader emerged within the request timeout, and the command's own rejection
    /// (`LeaseNotFound`, `Compacted`, `Fenced`, ...) as an error.
    pub async fn write(&self, req: Request) -> Result<Response, StoreError> {
        check_request(&req, self.inner.config.max_request_bytes, self.inner.config.max_txn_ops)?;
        match self.leader_call(ForwardRequest::Write(req), false).await? {
            ForwardResponse::Written { index, response } => {
                self.wait_applied(index).await?;
                match response.outcome {
                    Outcome::Rejected(e) => Err(e.into()),
                    _ => Ok(response),
                }
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Grants a lease (`id` 0 picks one) of at least the minimum TTL; returns id and TTL.
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<(i64, i64), StoreError> {
        let id = if id == 0 { rand::random::<i64>() & i64::MAX } else { id };
        let ttl = ttl.max(self.inner.config.min_lease_ttl());
        match self.write(Request::new(Command::LeaseGrant { id, ttl })).await?.outcome {
            Outcome::LeaseGrant { id, ttl } => Ok((id, ttl)),
            _ => Err(StoreError::Raft("lease grant answered with another outcome".into())),
        }
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<Response, StoreError> {
        self.write(Request::new(Command::LeaseRevoke { id })).await
    }

    /// Renews a lease on the leader; returns its TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, StoreError> {
        match self.leader_call(ForwardRequest::LeaseKeepAlive { id }, true).await? {
            ForwardResponse::Lease(Some(ttl)) => Ok(ttl.granted),
            ForwardResponse::Lease(None) => Err(StoreError::LeaseNotFound),
            other => Err(unexpected(&other)),
        }
    }

    /// A lease's granted and remaining TTL (from the leader's clock), and its keys if `keys`.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseInfo, StoreError> {
        let ttl = match self.leader_call(ForwardRequest::LeaseTimeToLive { id }, true).await? {
            ForwardResponse::Lease(Some(ttl)) => ttl,
            ForwardResponse::Lease(None) => return Err(StoreError::LeaseNotFound),
            other => return Err(unexpected(&other)),
        };
        let keys = if keys { self.blocking_read(move |db| read::lease_keys(db, id)).await? } else { Vec::new() };
        Ok(LeaseInfo { id, ttl, keys })
    }

    /// Every lease with its granted TTL, from local state.
    pub async fn leases(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        self.blocking_read(read::leases).await
    }

    // ---- reads --------------------------------------------------------------------------

    /// Serves a range read; returns the response and the revision it was read at.
    ///
    /// If the revision is compacted, returns `Compacted`; above the current one,
    /// `FutureRevision`.
    pub async fn range(&self, req: RangeRequest) -> Result<(RangeResponse, i64), StoreError> {
        if !req.serializable {
            self.read_barrier().await?;
        }
        let db = self.inner.shared.state.get();
        tokio::task::spawn_blocking(move || read::range(&db, &req))
            .await
            .map_err(|e| StoreError::Raft(format!("read task failed: {e}")))?
            .map_err(StoreError::from)
    }

    /// Waits until this member has applied everything committed before the call: after it, a
    /// local read is linearizable.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        match self.leader_call(ForwardRequest::ReadIndex, true).await? {
            ForwardResponse::ReadIndex { index } => self.wait_applied(index).await,
            other => Err(unexpected(&other)),
        }
    }

    /// The revision of this member's applied state.
    pub fn revision(&self) -> i64 {
        self.inner.shared.hub.revision()
    }

    /// Waits until this member has applied `revision`, for at most `timeout`.
    ///
    /// If the revision is not reached in time, returns `FutureRevision` with the current one.
    pub async fn wait_for_revision(&self, revision: i64, timeout: Duration) -> Result<(), StoreError> {
        let mut published = self.inner.shared.hub.subscribe();
        match tokio::time::timeout(timeout, published.wait_for(|&r| r >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::FutureRevision { current: self.revision() }),
        }
    }

    /// Watches `range` from `start_revision` (0: from the next revision).
    ///
    /// If `start_revision` is below the compaction point, returns `Compacted`.
    pub async fn watch(&self, range: KeyRange, start_revision: i64, prev_kv: bool) -> Result<WatchStream, StoreError> {
        let current = self.revision();
        let start = if start_revision <= 0 { current + 1 } else { start_revision };
        let counters = self.blocking_read(read::counters).await?;
        if start < counters.compacted {
            return Err(StoreError::Compacted { compact_revision: counters.compacted });
        }
        let spec = WatchSpec { range, start_revision: start, prev_kv };
        let (hub, state) = (self.inner.shared.hub.clone(), self.inner.shared.state.clone());
        Ok(self.inner.span.in_scope(|| spawn_watcher(hub, state, spec)))
    }

    async fn blocking_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rocksdb::DB) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.inner.shared.state.get();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Raft(format!("read task failed: {e}")))?
            .map_err(StoreError::from)
    }

    // ---- cluster ------------------------------------------------------------------------

    /// `Some(term)` while this member is the leader, with the term it was elected in: the fence
    /// for writes that must not outlive this leadership.
    pub fn leadership(&self) -> watch::Receiver<Option<u64>> {
        self.inner.leadership.subscribe()
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<u64> {
        self.inner.raft.metrics().borrow_watched().current_leader
    }

    /// Log index of the membership this member knows (0 before any).
    pub fn membership_index(&self) -> u64 {
        self.inner.raft.metrics().borrow_watched().membership_config.log_id().as_ref().map_or(0, |l| l.index)
    }

    /// Voters and learners of the current membership.
    pub fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, member)| MemberInfo { id: *id, member: member.clone(), is_learner: !voters.contains(id) })
            .collect()
    }

    /// The cluster id: replicated once recorded, else the configured one.
    pub fn cluster_id(&self) -> u64 {
        match self.inner.shared.cluster_id.load(Ordering::Relaxed) {
            0 => self.inner.config.cluster_id,
            id => id,
        }
    }

    /// The current Raft term as this member knows it.
    pub fn term(&self) -> u64 {
        self.inner.raft.metrics().borrow_watched().current_term
    }

    /// etcd's HashKV at `revision` (0: current): the hash, and the revision and compaction
    /// point it was computed at.
    pub async fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), StoreError> {
        let db = self.inner.shared.state.get();
        let (hash, counters) = tokio::task::spawn_blocking(move || read::hash_kv(&db, revision))
            .await
            .map_err(|e| StoreError::Raft(format!("hash task failed: {e}")))??;
        Ok((hash, counters.revision, counters.compacted))
    }

    /// A consistent backup of this member's state, ready to stream.
    pub async fn backup(&self) -> Result<Archive, StoreError> {
        let shared = self.inner.shared.clone();
        let member_id = self.id();
        let cluster_id = self.cluster_id();
        tokio::task::spawn_blocking(move || -> std::io::Result<Archive> {
            let started = Instant::now();
            let dir = shared.snapshots.scratch("backup");
            rocksdb::checkpoint::Checkpoint::new(&shared.state.get())
                .and_then(|c| c.create_checkpoint(&dir))
                .map_err(db::io)?;
            let checkpointed = started.elapsed();
            let (counters, keys, kv_hash) = {
                let view = db::open_read_only(&dir, &STATE_CFS)?;
                let counters = read::counters(&view)?;
                let (kv_hash, _) = read::hash_kv(&view, counters.revision).map_err(std::io::Error::other)?;
                (counters, read::key_count(&view)?, kv_hash)
            };
            tracing::info!(
                revision = counters.revision,
                checkpoint_ms = checkpointed.as_millis() as u64,
                hash_and_count_ms = (started.elapsed() - checkpointed).as_millis() as u64,
                "backup checkpoint ready"
            );
            let header = ArchiveHeader {
                format: backup::FORMAT_VERSION,
                cluster_id,
                member_id,
                revision: counters.revision,
                compact_revision: counters.compacted,
                keys,
                taken_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                kv_hash: Some(kv_hash),
                files: Archive::list_files(&dir)?,
            };
            Ok(Archive::new(dir, header))
        })
        .await
        .map_err(|e| StoreError::Raft(format!("backup task failed: {e}")))?
        .map_err(StoreError::from)
    }

    /// Compacts RocksDB's files (etcd's defragment): reclaims space left by deletes.
    pub async fn defragment(&self) -> Result<(), StoreError> {
        self.blocking_read(|db| {
            for name in STATE_CFS {
                let cf = db::cf(db, name)?;
                db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            }
            Ok(())
        })
        .await
    }

    /// Bytes on disk and in memory used by the state DB.
    pub fn db_size(&self) -> u64 {
        let db = self.inner.shared.state.get();
        let prop = |name| db.property_int_value(name).ok().flatten().unwrap_or(0);
        prop(rocksdb::properties::TOTAL_SST_FILES_SIZE) + prop(rocksdb::properties::CUR_SIZE_ALL_MEM_TABLES)
    }

    /// This member's view of the cluster.
    pub fn status(&self) -> StoreStatus {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let db = self.inner.shared.state.get();
        let counters = read::counters(&db).unwrap_or_default();
        let db_size = db.property_int_value(rocksdb::properties::TOTAL_SST_FILES_SIZE).ok().flatten().unwrap_or(0)
            + db.property_int_value(rocksdb::properties::CUR_SIZE_ALL_MEM_TABLES).ok().flatten().unwrap_or(0);
        StoreStatus {
            id: self.id(),
            leader: metrics.current_leader,
            term: metrics.current_term,
            raft_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.as_ref().map_or(0, |l| l.index),
            purged_index: metrics.purged.as_ref().map_or(0, |l| l.index),
            revision: counters.revision,
            compacted: counters.compacted,
            is_learner: metrics.state == ServerState::Learner,
            db_size,
        }
    }

    /// Adds a non-voting member that starts receiving the log.
    pub async fn add_learner(&self, id: u64, member: Member) -> Result<(), StoreError> {
        self.membership_call(ForwardRequest::AddLearner { id, member }).await
    }

    /// Makes a learner a voter once it holds nearly all of the log; otherwise returns
    /// `InvalidMembership` ("can only promote a learner member which is in sync with leader").
    pub async fn promote(&self, id: u64) -> Result<(), StoreError> {
        self.membership_call(ForwardRequest::Promote { id, caught_up: true }).await
    }

    /// Adds a voting member straight away (etcd's `member add` without `--learner`): the new
    /// member counts towards the quorum before it has started.
    pub async fn add_voter(&self, id: u64, member: Member) -> Result<(), StoreError> {
        self.add_learner(id, member).await?;
        self.membership_call(ForwardRequest::Promote { id, caught_up: false }).await
    }

    /// Removes a member (voter or learner). A member removing itself answers once the leader
    /// committed the change: it will not receive the log from then on.
    pub async fn remove_member(&self, id: u64) -> Result<(), StoreError> {
        if id == self.id() {
            return match self.leader_call(ForwardRequest::Remove { id }, false).await? {
                ForwardResponse::MembershipChanged { .. } => Ok(()),
                other => Err(unexpected(&other)),
            };
        }
        self.membership_call(ForwardRequest::Remove { id }).await
    }

    /// Replaces a member's name and URLs (the member keeps its role).
    pub async fn update_member(&self, id: u64, member: Member) -> Result<(), StoreError> {
        self.membership_call(ForwardRequest::UpdateMember { id, member }).await
    }

    /// Asks the leader to hand leadership to voter `to`.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), StoreError> {
        match self.leader_call(ForwardRequest::TransferLeader { to }, true).await? {
            ForwardResponse::TransferStarted => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Takes a snapshot now (and purges the log behind it by policy).
    pub async fn snapshot_now(&self) -> Result<(), StoreError> {
        self.inner.raft.trigger().snapshot().await.map_err(|e| StoreError::Raft(e.to_string()))
    }

    /// Purges the log up to `index` (bounded by the last snapshot).
    pub async fn purge_log(&self, index: u64) -> Result<(), StoreError> {
        self.inner.raft.trigger().purge_log(index).await.map_err(|e| StoreError::Raft(e.to_string()))
    }

    async fn membership_call(&self, req: ForwardRequest) -> Result<(), StoreError> {
        match self.leader_call(req, false).await? {
            ForwardResponse::MembershipChanged { index } => self.wait_applied(index).await,
            other => Err(unexpected(&other)),
        }
    }

    // ---- plumbing -----------------------------------------------------------------------

    /// Runs `req` on the leader: here if this member leads, else over the peer network.
    /// Retries while no leader is known or the leader moved. A transport failure after the
    /// request may have been delivered is retried only if `idempotent`; otherwise it is
    /// `Timeout` (outcome unknown), as is a request this member, leading, could not finish
    /// before the deadline (it lost its quorum).
    async fn leader_call(&self, req: ForwardRequest, idempotent: bool) -> Result<ForwardResponse, StoreError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.request_timeout;
        retry_until(deadline, &self.inner.shutdown, |remaining| self.attempt(&req, idempotent, remaining))
            .instrument(self.inner.span.clone())
            .await
    }

    /// One try of [`Store::leader_call`], with `remaining` time until its deadline.
    async fn attempt(&self, req: &ForwardRequest, idempotent: bool, remaining: Duration) -> Attempt {
        let (leader, member) = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow_watched();
            let leader = metrics.current_leader;
            let member = match leader {
                Some(l) if l != self.id() => metrics.membership_config.membership().get_node(&l).cloned(),
                _ => None,
            };
            (leader, member)
        };
        let answer = match (leader, member) {
            (Some(l), _) if l == self.id() => {
                // A leader cut off from its quorum keeps a write it accepted until a new leader
                // truncates it, which may be never: the caller's deadline still holds.
                match tokio::time::timeout(remaining, self.inner.service.lead(req.clone())).await {
                    Ok(answer) => Some(Ok(answer)),
                    Err(_) => return Attempt::Done(Err(StoreError::Timeout)),
                }
            }
            (Some(l), Some(member)) => {
                // As etcd does: a request in flight to a leader that lost its place (paused,
                // cut off, deposed) is given up as soon as another leader is known, instead
                // of waiting out the timeout; a write's outcome is then unknown.
                let moved = self.leader_moved_from(l);
                Some(self.inner.mux.call(&self.inner.network, l, &member, req, remaining, moved).await)
            }
            _ => None,
        };
        judge(answer, idempotent)
    }

    /// Resolves once this member knows of a leader other than `leader`.
    async fn leader_moved_from(&self, leader: u64) {
        let mut known = self.inner.known_leader.subscribe();
        if known.wait_for(|l| l.is_some_and(|l| l != leader)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until this member applied log index `index`.
    async fn wait_applied(&self, index: u64) -> Result<(), StoreError> {
        let mut applied = self.inner.shared.applied.subscribe();
        let wait = applied.wait_for(|&a| a >= index);
        match tokio::time::timeout(self.inner.config.request_timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Follows Raft's role: on becoming leader, extends every lease and publishes the term; on
    /// losing it, stops expiring leases.
    async fn track_leadership(self) {
        let mut metrics = self.inner.raft.metrics();
        let mut leading: Option<u64> = None;
        loop {
            let (now_leading, leader) = {
                let m = metrics.borrow_and_update();
                ((m.state == ServerState::Leader).then_some(m.current_term), m.current_leader)
            };
            self.inner.known_leader.send_if_modified(|known| std::mem::replace(known, leader) != leader);
            if now_leading != leading {
                leading = now_leading;
                match leading {
                    Some(term) => {
                        tracing::info!(term, "became leader");
                        self.inner.shared.lessor.promote(Instant::now());
                    }
                    None => self.inner.shared.lessor.demote(),
                }
                self.inner.leadership.send_replace(leading);
                if leading.is_some() {
                    self.record_cluster_id();
                }
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break },
                () = self.inner.shutdown.cancelled() => break,
            }
        }
        self.inner.shared.lessor.demote();
        self.inner.leadership.send_replace(None);
    }

    /// A new cluster's first leader records the configured cluster id for every member. Right
    /// after the election openraft may still refuse writes, so this retries while it leads.
    fn record_cluster_id(&self) {
        let configured = self.inner.config.cluster_id;
        if configured == 0 || self.inner.shared.cluster_id.load(Ordering::Relaxed) != 0 {
            return;
        }
        let store = self.clone();
        let task = async move {
            let term = *store.inner.leadership.borrow();
            while term.is_some() && *store.inner.leadership.borrow() == term && !store.inner.shutdown.is_cancelled() {
                let req = Request::new(Command::SetClusterId { cluster_id: configured });
                match store.inner.raft.client_write(req).await {
                    Ok(_) => return,
                    Err(e) => tracing::debug!(error = %e, "recording the cluster id; retrying"),
                }
                tokio::time::sleep(LEADER_RETRY).await;
            }
        };
        tokio::spawn(task.in_current_span());
    }

    /// On the leader, proposes a revoke for every expired lease, fenced by the leader's term.
    async fn expire_leases(self) {
        let mut tick = tokio::time::interval(LEASE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.inner.shutdown.cancelled() => return,
            }
            let Some(term) = *self.inner.leadership.borrow() else { continue };
            for id in self.inner.shared.lessor.take_expired(Instant::now()) {
                let raft = self.inner.raft.clone();
                let revoke = async move {
                    let req = Request::fenced(Command::LeaseRevoke { id }, term);
                    match raft.client_write(req).await {
                        Ok(_) => tracing::info!(lease = id, "lease expired"),
                        Err(e) => tracing::debug!(lease = id, error = %e, "lease revoke not applied"),
                    }
                };
                tokio::spawn(revoke.in_current_span());
            }
        }
    }
}

impl Store {
    /// On the leader, compacts history older than the retention: samples the revision every
    /// tenth of the retention and compacts to the newest sample at least a retention old. A new
    /// leader starts sampling afresh, so a leader change postpones compaction, never hastens it.
    async fn auto_compact(self) {
        let Some(retention) = self.inner.config.auto_compaction_retention else { return };
        let mut tick = tokio::time::interval((retention / 10).max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sampler = Sampler::new(retention);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.inner.shutdown.cancelled() => return,
            }
            let leading = *self.inner.leadership.borrow();
            let compacted = self.inner.shared.compacted.load(Ordering::Relaxed);
            let Some((term, revision)) = sampler.tick(Instant::now(), leading, self.revision(), compacted) else {
                continue;
            };
            match self.inner.raft.client_write(Request::fenced(Command::Compact { revision }, term)).await {
                Ok(_) => tracing::info!(revision, "auto-compacted history"),
                Err(e) => tracing::debug!(revision, error = %e, "auto-compaction not applied"),
            }
        }
    }
}

/// Where a call to the leader stands after one attempt.
#[derive(Debug)]
enum Attempt {
    /// The call is over, with this answer or error.
    Done(Result<ForwardResponse, StoreError>),
    /// Worth another attempt after a pause; the caller gets this error if the deadline comes
    /// first.
    Retry(StoreError),
}

/// Judges one attempt's answer (`None`: no leader was known to ask).
fn judge(answer: Option<Result<ForwardResponse, PeerError>>, idempotent: bool) -> Attempt {
    let Some(answer) = answer else { return Attempt::Retry(StoreError::NoLeader) };
    match answer {
        Ok(ForwardResponse::NotLeader { .. }) => Attempt::Retry(StoreError::NoLeader),
        Ok(ForwardResponse::Failed { message, kind: FailureKind::Unconfirmed }) => {
            // As etcd waits for a read index until its request timeout: the leader may hear
            // from a quorum again in a moment (a follower just died, or the machine is busy); a
            // new leader may be elected meanwhile.
            tracing::debug!(%message, "leadership not confirmed by a quorum; retrying");
            Attempt::Retry(StoreError::Raft(message))
        }
        Ok(ForwardResponse::Failed { message, kind }) => Attempt::Done(Err(match kind {
            FailureKind::MemberNotFound => StoreError::MemberNotFound,
            FailureKind::MemberExists => StoreError::MemberExists,
            FailureKind::InvalidMembership => StoreError::InvalidMembership(message),
            FailureKind::Unconfirmed | FailureKind::Other => StoreError::Raft(message),
        })),
        Ok(answer) => Attempt::Done(Ok(answer)),
        Err(e) if idempotent || never_delivered(&e) => {
            tracing::debug!(error = %e, "leader unreachable; retrying");
            Attempt::Retry(StoreError::NoLeader)
        }
        Err(e) => {
            tracing::warn!(error = %e, "forwarded write lost its leader; outcome unknown");
            Attempt::Done(Err(StoreError::Timeout))
        }
    }
}

/// Calls `attempt` with the time left until `deadline`, pausing [`LEADER_RETRY`] after each
/// attempt worth retrying, until one is done. At the deadline, returns the last attempt's error;
/// once `shutdown` is cancelled, `Stopped`.
async fn retry_until<F, Fut>(
    deadline: tokio::time::Instant,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<ForwardResponse, StoreError>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    let mut last_error = StoreError::NoLeader;
    loop {
        if shutdown.is_cancelled() {
            return Err(StoreError::Stopped);
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(last_error);
        }
        match attempt(remaining).await {
            Attempt::Done(result) => return result,
            Attempt::Retry(e) => {
                last_error = e;
                tokio::time::sleep(LEADER_RETRY.min(remaining)).await;
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A connection that was never established: the request cannot have reached the leader.
fn never_delivered(e: &PeerError) -> bool {
    match e {
        PeerError::Unreachable { message, .. } => {
            let m = message.to_ascii_lowercase();
            m.contains("connect") || m.contains("refused") || m.contains("bad peer url")
        }
        PeerError::NotSent { .. } => true,
        PeerError::BadReply { .. } | PeerError::Remote { .. } => false,
    }
}

fn unexpected(answer: &ForwardResponse) -> StoreError {
    StoreError::Raft(format!("unexpected answer from leader: {answer:?}"))
}

#[cfg(test)]
mod tests {
    //! The retry policy of calls to the leader, on tokio's paused clock: the deadline and the
    //! pauses are the logic here, and a paused clock makes them exact.

    use tokio::time::Instant;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    fn unconfirmed() -> Option<Result<ForwardResponse, PeerError>> {
        Some(Ok(ForwardResponse::Failed { message: "not enough for a quorum".into(), kind: FailureKind::Unconfirmed }))
    }

    fn unreachable(message: &str) -> Option<Result<ForwardResponse, PeerError>> {
        Some(Err(PeerError::Unreachable { addr: "http://leader".into(), message: message.into() }))
    }

    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_read_index_is_asked_again_until_a_quorum_confirms_it() {
        let start = Instant::now();
        let mut attempts = 0;
        let result = retry_until(start + DEADLINE, &CancellationToken::new(), |_| {
            attempts += 1;
            let confirmed = start.elapsed() >= Duration::from_secs(2);
            async move {
                let answer = if confirmed { Some(Ok(ForwardResponse::ReadIndex { index: 7 })) } else { unconfirmed() };
                judge(answer, true)
            }
        })
        .await;
        assert!(matches!(result, Ok(ForwardResponse::ReadIndex { index: 7 })), "{result:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(2), "answered at the first attempt after the quorum came back");
        assert_eq!(attempts, 41, "one attempt every {LEADER_RETRY:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_index_never_confirmed_fails_at_the_deadline_with_the_leaders_reason() {
        let start = Instant::now();
        let result =
            retry_until(start + DEADLINE, &CancellationToken::new(), |_| async { judge(unconfirmed(), true) }).await;
        assert!(matches!(&result, Err(StoreError::Raft(m)) if m.contains("quorum")), "{result:?}");
        assert_eq!(start.elapsed(), DEADLINE);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_leader_known_a_call_waits_for_one_until_the_deadline() {
        let start = Instant::now();
        let mut remaining_seen = Vec::new();
        let result = retry_until(start + DEADLINE, &CancellationToken::new(), |remaining| {
            remaining_seen.push(remaining);
            async { judge(None, false) }
        })
        .await;
        assert!(matches!(result, Err(StoreError::NoLeader)), "{result:?}");
        assert_eq!(start.elapsed(), DEADLINE);
        assert_eq!(remaining_seen.first(), Some(&DEADLINE), "each attempt is told the time left");
        assert_eq!(remaining_seen.last(), Some(&LEADER_RETRY));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_lost_in_flight_is_not_retried_but_a_refused_connection_is() {
        let start = Instant::now();
        let mut attempts = 0;
        let lost = retry_until(start + DEADLINE, &CancellationToken::new(), |_| {
            attempts += 1;
            async { judge(unreachable("no answer within 5s"), false) }
        })
        .await;
        assert!(matches!(lost, Err(StoreError::Timeout)), "outcome unknown: {lost:?}");
        assert_eq!((attempts, start.elapsed()), (1, Duration::ZERO));

        let mut attempts = 0;
        let refused = retry_until(start + DEADLINE, &CancellationToken::new(), |_| {
            attempts += 1;
            let answer = if attempts < 3 {
                unreachable("transport error: connection refused")
            } else {
                Some(Ok(ForwardResponse::TransferStarted))
            };
            async move { judge(answer, false) }
        })
        .await;
        assert!(matches!(refused, Ok(ForwardResponse::TransferStarted)), "{refused:?}");
        assert_eq!(start.elapsed(), LEADER_RETRY * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_stops_retrying_once_the_member_shuts_down() {
        let start = Instant::now();
        let shutdown = CancellationToken::new();
        let result = retry_until(start + DEADLINE, &shutdown, |_| {
            if start.elapsed() >= Duration::from_secs(1) {
                shutdown.cancel();
            }
            async { judge(None, true) }
        })
        .await;
        assert!(matches!(result, Err(StoreError::Stopped)), "{result:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(1) + LEADER_RETRY);
    }
}
