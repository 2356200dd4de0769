//! etcd's v3 gRPC API over Trireme's replicated store, so that `etcdctl` and etcd client
//! libraries work against any master unchanged.
//!
//! Entry point: [`EtcdServer`] — build it from a [`Store`] and serve it on the client URL.
//! Services: `KV` ([`kv`]), `Watch` ([`watch`]), `Lease` ([`lease`]), `Cluster` ([`cluster`]),
//! `Maintenance` ([`maintenance`]). Store errors become etcd's statuses in one table
//! ([`status`]). This crate holds no state of its own beyond alarms; it depends on the store,
//! never on Kubernetes.

pub mod authority;
pub mod client;
pub mod cluster;
pub mod convert;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod status;
pub mod watch;

use std::sync::Arc;
use std::sync::Mutex;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::cluster_server::ClusterServer;
use trireme_proto::etcdserverpb::kv_server::KvServer;
use trireme_proto::etcdserverpb::lease_server::LeaseServer;
use trireme_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use trireme_proto::etcdserverpb::watch_server::WatchServer;
use trireme_store::Store;

/// gRPC framing allowance on top of the largest request (etcd adds the same 512 KiB).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Settings of the etcd edge.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Writes are refused with NOSPACE once the state DB is larger than this (etcd's
    /// `--quota-backend-bytes`).
    pub quota_bytes: u64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig { quota_bytes: 8 * 1024 * 1024 * 1024 }
    }
}

/// The shared state of every service: the store, the member's alarms and the quota.
#[derive(Clone)]
pub struct Api {
    store: Store,
    config: EtcdConfig,
    alarms: Arc<Mutex<Vec<pb::AlarmMember>>>,
}

impl Api {
    /// A response header at `revision`.
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.store.cluster_id(),
            member_id: self.store.id(),
            revision,
            raft_term: self.store.term(),
        }
    }

    /// A response header at this member's current revision.
    pub fn header_now(&self) -> pb::ResponseHeader {
        self.header(self.store.revision())
    }

    fn alarms(&self) -> std::sync::MutexGuard<'_, Vec<pb::AlarmMember>> {
        self.alarms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses writes while the NOSPACE alarm is raised, raising it when the quota is exceeded.
    fn check_space(&self) -> Result<(), Status> {
        let nospace = pb::AlarmType::Nospace as i32;
        let mut alarms = self.alarms();
        if alarms.iter().any(|a| a.alarm == nospace) {
            return Err(status::no_space());
        }
        if self.store.db_size() > self.config.quota_bytes {
            tracing::warn!(quota = self.config.quota_bytes, "database space exceeded; raising NOSPACE");
            alarms.push(pb::AlarmMember { member_id: self.store.id(), alarm: nospace });
            return Err(status::no_space());
        }
        Ok(())
    }
}

/// The etcd v3 API of one member.
pub struct EtcdServer {
    api: Api,
}

impl EtcdServer {
    /// Serves `store` with `config`.
    pub fn new(store: Store, config: EtcdConfig) -> Self {
        EtcdServer { api: Api { store, config, alarms: Arc::default() } }
    }

    /// The five services as one tonic router, with etcd's request size limit.
    pub fn router(&self) -> tonic::transport::server::Router {
        let limit = self.api.store.config().max_request_bytes + GRPC_OVERHEAD_BYTES;
        let api = self.api.clone();
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(
                KvServer::new(api.clone()).max_decoding_message_size(limit).max_encoding_message_size(usize::MAX),
            )
            .add_service(
                WatchServer::new(api.clone()).max_decoding_message_size(limit).max_encoding_message_size(usize::MAX),
            )
            .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(limit))
            .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(limit))
            .add_service(
                MaintenanceServer::new(api).max_decoding_message_size(limit).max_encoding_message_size(usize::MAX),
            )
    }

    /// Serves on `listener` until `shutdown` is cancelled; over TLS with `tls` (which may
    /// require a client certificate: etcd's `--client-cert-auth`).
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let incoming =
            trireme_tls::serve::incoming(listener, tls, "client").map(|conn| conn.map(authority::AuthorityFix::new));
        self.router().serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await
    }
}
