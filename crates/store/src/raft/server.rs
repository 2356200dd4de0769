//! The server side of the peer network: hands openraft RPCs to the local Raft, receives
//! snapshots file by file, and serves requests forwarded to the leader.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use openraft::ChangeMembers;
use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::ClientWriteError;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use tokio::io::AsyncWriteExt;
use tonic::Request;
use tonic::Status;
use tonic::Streaming;
use tracing::Instrument;
use trireme_proto::peer::Envelope;
use trireme_proto::peer::SnapshotChunk;
use trireme_proto::peer::raft_peer_server::RaftPeer;
use trireme_proto::peer::raft_peer_server::RaftPeerServer;

use super::ForwardRequest;
use super::ForwardResponse;
use super::Raft;
use super::Shared;
use super::SnapshotDir;
use super::TypeConfig;
use super::forward::FailureKind;
use super::network::MAX_MESSAGE_BYTES;
use super::network::SnapshotHeader;
use super::network::reply;
use super::network::request;
use crate::lease::LeaseTtl;

/// The peer gRPC service of one member.
#[derive(Clone)]
pub struct PeerService {
    raft: Raft,
    shared: Arc<Shared>,
}

impl PeerService {
    /// A service serving `raft`.
    pub fn new(raft: Raft, shared: Arc<Shared>) -> Self {
        PeerService { raft, shared }
    }

    /// The tonic server wrapper with Trireme's message limits.
    pub fn into_server(self) -> RaftPeerServer<PeerService> {
        RaftPeerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Performs a request that needs the leader, on this member. If it is not the leader,
    /// answers [`ForwardResponse::NotLeader`] without side effects.
    pub async fn lead(&self, req: ForwardRequest) -> ForwardResponse {
        match req {
            ForwardRequest::Write(req) => match self.raft.client_write(req).await {
                Ok(written) => ForwardResponse::Written { index: written.log_id.index, response: written.data },
                Err(e) => write_error(e),
            },
            ForwardRequest::ReadIndex => match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                Ok(read) => ForwardResponse::ReadIndex { index: read.log_id().index },
                Err(e) => match (e.forward_to_leader(), e.api_error()) {
                    (Some(f), _) => ForwardResponse::NotLeader { leader: f.leader_id },
                    (None, Some(LinearizableReadError::QuorumNotEnough(_))) => failed(FailureKind::Unconfirmed, e),
                    (None, _) => failed(FailureKind::Other, e),
                },
            },
            ForwardRequest::LeaseKeepAlive { id } => {
                self.on_lessor(|l, now| l.keep_alive(id, now).map(|ttl| LeaseTtl { granted: ttl, remaining: ttl }))
            }
            ForwardRequest::LeaseTimeToLive { id } => self.on_lessor(|l, now| l.time_to_live(id, now)),
            ForwardRequest::AddLearner { id, member } => {
                if self.raft.voter_ids().chain(self.raft.learner_ids()).any(|m| m == id) {
                    return failed(FailureKind::MemberExists, format!("member {id:x} already exists"));
                }
                membership_result(self.raft.add_learner(id, member, false).await)
            }
            ForwardRequest::Promote { id, caught_up } => {
                if !self.raft.learner_ids().any(|m| m == id) {
                    return failed(FailureKind::MemberNotFound, format!("learner {id:x} not found"));
                }
                if caught_up && !self.learner_caught_up(id) {
                    return failed(
                        FailureKind::InvalidMembership,
                        "can only promote a learner member which is in sync with leader",
                    );
                }
                membership_result(
                    self.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await,
                )
            }
            ForwardRequest::Remove { id } => {
                let change = if self.raft.voter_ids().any(|m| m == id) {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else if self.raft.learner_ids().any(|m| m == id) {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    return failed(FailureKind::MemberNotFound, format!("member {id:x} not found"));
                };
                membership_result(self.raft.change_membership(change, false).await)
            }
            ForwardRequest::UpdateMember { id, member } => {
                if !self.raft.voter_ids().chain(self.raft.learner_ids()).any(|m| m == id) {
                    return failed(FailureKind::MemberNotFound, format!("member {id:x} not found"));
                }
                let change = ChangeMembers::SetNodes(std::collections::BTreeMap::from([(id, member)]));
                membership_result(self.raft.change_membership(change, true).await)
            }
            ForwardRequest::ListMembers => {
                let metrics = self.raft.metrics().borrow_watched().clone();
                let membership = metrics.membership_config.membership();
                let voters: BTreeSet<u64> = membership.voter_ids().collect();
                ForwardResponse::Members {
                    cluster_id: self.shared.cluster_id.load(std::sync::atomic::Ordering::Relaxed),
                    members: membership.nodes().map(|(id, m)| (*id, m.clone(), !voters.contains(id))).collect(),
                    from_leader: metrics.state == openraft::ServerState::Leader,
                    membership_index: metrics.membership_config.log_id().as_ref().map_or(0, |l| l.index),
                }
            }
            ForwardRequest::TransferLeader { to } => {
                if !self.raft.is_leader() {
                    return ForwardResponse::NotLeader { leader: self.raft.current_leader().await };
                }
                if !self.raft.voter_ids().any(|m| m == to) {
                    return failed(FailureKind::MemberNotFound, format!("voter {to:x} not found"));
                }
                match self.raft.trigger().transfer_leader(to).await {
                    Ok(()) => ForwardResponse::TransferStarted,
                    Err(e) => failed(FailureKind::Other, e),
                }
            }
        }
    }

    /// Whether learner `id` holds at least 90% of the leader's log (etcd's threshold).
    fn learner_caught_up(&self, id: u64) -> bool {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let last = metrics.last_log_index.unwrap_or(0);
        let matched = metrics.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |l| l.index);
        matched * 10 >= last * 9
    }

    /// Lease clocks are only authoritative on the leader (the lessor's primary).
    fn on_lessor(&self, f: impl FnOnce(&crate::lease::Lessor, Instant) -> Option<LeaseTtl>) -> ForwardResponse {
        if !self.shared.lessor.is_primary() {
            let leader = self.raft.metrics().borrow_watched().current_leader;
            return ForwardResponse::NotLeader { leader };
        }
        ForwardResponse::Lease(f(&self.shared.lessor, Instant::now()))
    }

    async fn receive_snapshot(&self, mut stream: Streaming<SnapshotChunk>) -> Result<Envelope, Status> {
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let header: SnapshotHeader = crate::schema::decode(&first.header)
            .map_err(|e| Status::invalid_argument(format!("bad snapshot header: {e}")))?;
        let expected: HashMap<String, u64> = header.files.iter().cloned().collect();
        if expected.keys().any(|name| name.is_empty() || name.contains('/') || name.starts_with('.')) {
            return Err(Status::invalid_argument("snapshot file names must be plain names"));
        }
        let dir = self.shared.snapshots.scratch("recv");
        let received = receive_files(&dir, &expected, &mut stream).await;
        if let Err(e) = received {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
        tracing::info!(snapshot = ?header.meta.last_log_id, files = expected.len(), "received snapshot");
        let snapshot = openraft::alias::SnapshotOf::<TypeConfig, SnapshotDir> {
            meta: header.meta,
            snapshot: SnapshotDir { path: dir.clone() },
        };
        let result = self.raft.install_full_snapshot(header.vote, snapshot).await;
        // Installed snapshots were moved into place; anything left is a refused transfer.
        if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        reply(result)
    }
}

/// Writes the streamed files into `dir`, checking order, sizes and CRCs, and fsyncs them.
async fn receive_files(
    dir: &std::path::Path,
    expected: &HashMap<String, u64>,
    stream: &mut Streaming<SnapshotChunk>,
) -> Result<(), Status> {
    let io = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut open: Option<(String, tokio::fs::File, crc32fast::Hasher, u64)> = None;
    while let Some(chunk) = stream.message().await? {
        let Some(&size) = expected.get(&chunk.file) else {
            return Err(Status::invalid_argument(format!("unexpected snapshot file {:?}", chunk.file)));
        };
        if open.as_ref().is_none_or(|(name, ..)| *name != chunk.file) {
            if open.is_some() || done.contains(&chunk.file) || chunk.offset != 0 {
                return Err(Status::invalid_argument(format!("snapshot file {:?} out of order", chunk.file)));
            }
            let file = tokio::fs::File::create(dir.join(&chunk.file)).await.map_err(io)?;
            open = Some((chunk.file.clone(), file, crc32fast::Hasher::new(), 0));
        }
        let Some((name, file, crc, written)) = open.as_mut() else { continue };
        if chunk.offset != *written {
            return Err(Status::invalid_argument(format!("snapshot file {name:?}: gap at {written}")));
        }
        file.write_all(&chunk.data).await.map_err(io)?;
        crc.update(&chunk.data);
        *written += chunk.data.len() as u64;
        if chunk.file_done {
            if *written != size || crc.clone().finalize() != chunk.crc32 {
                return Err(Status::data_loss(format!("snapshot file {name:?} is corrupt (size or checksum)")));
            }
            file.sync_all().await.map_err(io)?;
            done.insert(name.clone());
            open = None;
        }
    }
    if done.len() != expected.len() {
        return Err(Status::data_loss(format!(
            "snapshot transfer incomplete: {} of {} files",
            done.len(),
            expected.len()
        )));
    }
    crate::db::sync_dir(dir).map_err(io)
}

fn failed(kind: FailureKind, e: impl std::fmt::Display) -> ForwardResponse {
    ForwardResponse::Failed { message: e.to_string(), kind }
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ForwardResponse {
    match e.api_error() {
        Some(ClientWriteError::ForwardToLeader(f)) => ForwardResponse::NotLeader { leader: f.leader_id },
        Some(ClientWriteError::ChangeMembershipError(m)) => failed(FailureKind::InvalidMembership, m),
        _ => failed(FailureKind::Other, e),
    }
}

fn membership_result(
    result: Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    >,
) -> ForwardResponse {
    match result {
        Ok(written) => ForwardResponse::MembershipChanged { index: written.log_id.index },
        Err(e) => write_error(e),
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<Envelope>) -> Result<tonic::Response<Envelope>, Status> {
        let rpc = request(req.get_ref())?;
        reply(self.raft.append_entries(rpc).await).map(tonic::Response::new)
    }

    type StreamAppendStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Envelope, Status>> + Send>>;

    async fn stream_append(
        &self,
        req: Request<Streaming<Envelope>>,
    ) -> Result<tonic::Response<Self::StreamAppendStream>, Status> {
        use futures::StreamExt;
        // A transport error or an undecodable request ends the input, and so the session.
        let requests = req
            .into_inner()
            .take_while(|item| futures::future::ready(item.is_ok()))
            .map(|item| item.map_err(|e| e.to_string()).and_then(|e| request(&e).map_err(|s| s.message().to_string())))
            .take_while(|decoded| {
                if let Err(e) = decoded {
                    tracing::warn!(error = %e, "bad append request on the replication stream");
                }
                futures::future::ready(decoded.is_ok())
            })
            .filter_map(|decoded| futures::future::ready(decoded.ok()));
        let results = self.raft.stream_append(Box::pin(requests)).map(reply);
        Ok(tonic::Response::new(Box::pin(results)))
    }

    async fn vote(&self, req: Request<Envelope>) -> Result<tonic::Response<Envelope>, Status> {
        let rpc = request(req.get_ref())?;
        reply(self.raft.vote(rpc).await).map(tonic::Response::new)
    }

    async fn pre_vote(&self, req: Request<Envelope>) -> Result<tonic::Response<Envelope>, Status> {
        let rpc = request(req.get_ref())?;
        reply(self.raft.pre_vote(rpc).await).map(tonic::Response::new)
    }

    async fn transfer_leader(&self, req: Request<Envelope>) -> Result<tonic::Response<Envelope>, Status> {
        let rpc = request(req.get_ref())?;
        reply(self.raft.handle_transfer_leader(rpc).await).map(tonic::Response::new)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<tonic::Response<Envelope>, Status> {
        self.receive_snapshot(req.into_inner()).await.map(tonic::Response::new)
    }

    type ForwardStreamStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Envelope, Status>> + Send>>;

    async fn forward_stream(
        &self,
        req: Request<Streaming<Envelope>>,
    ) -> Result<tonic::Response<Self::ForwardStreamStream>, Status> {
        let mut incoming = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let service = self.clone();
        let serve = async move {
            while let Ok(Some(envelope)) = incoming.message().await {
                let (id, forwarded): (u64, ForwardRequest) = match request(&envelope) {
                    Ok(decoded) => decoded,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let (service, tx) = (service.clone(), tx.clone());
                // Each request runs on its own: a slow one does not hold up the others.
                let answer = async move {
                    let answer: (u64, Result<ForwardResponse, String>) = (id, Ok(service.lead(forwarded).await));
                    let envelope = crate::schema::encode(&answer)
                        .map(|payload| Envelope { payload: payload.into() })
                        .map_err(|e| Status::internal(format!("encoding answer: {e}")));
                    let _ = tx.send(envelope).await;
                };
                tokio::spawn(answer.in_current_span());
            }
        };
        tokio::spawn(serve.in_current_span());
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn forward(&self, req: Request<Envelope>) -> Result<tonic::Response<Envelope>, Status> {
        let forwarded: ForwardRequest = request(req.get_ref())?;
        reply(Ok::<_, String>(self.lead(forwarded).await)).map(tonic::Response::new)
    }
}
