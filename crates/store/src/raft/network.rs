//! The client side of the peer network: openraft's RPCs and forwarded requests over tonic.
//!
//! One HTTP/2 channel per peer address, shared by every client of that peer and reconnected by
//! tonic when it breaks. Every unary call has a deadline; messages are bounded in size. A member
//! of an in-process test cluster also checks its [`Links`] before each message it sends and
//! after each answer (see [`crate::links`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use openraft::base::BoxFuture;
use openraft::base::BoxStream;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::Backoff;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use tonic::transport::Endpoint;
use tracing::Instrument;
use trireme_proto::peer::Envelope;
use trireme_proto::peer::SnapshotChunk;
use trireme_proto::peer::raft_peer_client::RaftPeerClient;

use super::ForwardRequest;
use super::ForwardResponse;
use super::SnapshotDir;
use super::TypeConfig;
use super::Vote;
use crate::links::Links;
use crate::schema;
use crate::types::Member;

/// Largest message a peer sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Snapshot files are streamed in chunks of this size.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Least time allowed to open a replication stream (openraft offers one heartbeat).
const STREAM_SETUP_TIMEOUT: Duration = Duration::from_millis(500);

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotDir>;

/// The first chunk of a snapshot transfer: who sends it, what it is, and which files follow.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SnapshotHeader {
    pub vote: Vote,
    pub meta: super::SnapshotMeta,
    /// Every file of the snapshot with its size; the receiver refuses a transfer missing any.
    pub files: Vec<(String, u64)>,
}

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached or did not answer in time.
    #[error("peer {addr} unreachable: {message}")]
    Unreachable { addr: String, message: String },
    /// The request certainly did not reach the peer (no connection, stream closed): safe to
    /// retry.
    #[error("peer {addr} not reached: {message}")]
    NotSent { addr: String, message: String },
    /// The peer answered with something this member cannot decode.
    #[error("bad reply from peer {addr}: {message}")]
    BadReply { addr: String, message: String },
    /// The peer reported an error.
    #[error("peer {addr} failed: {message}")]
    Remote { addr: String, message: String },
}

/// Connections to peers, shared by openraft's replication and by request forwarding.
#[derive(Clone, Default)]
pub struct PeerNetwork {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Local address every connection to a peer is made from (`None`: the OS picks).
    source: Option<std::net::IpAddr>,
    /// TLS for `https://` peer URLs: the peer CA to trust and this member's certificate.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// In-process tests only: this member's id and the links its messages must cross.
    links: Option<(u64, Links)>,
    /// openraft's configuration, whose backoff policy paces failed attempts to open a
    /// replication stream (`None`: no pause, for one-off calls).
    raft_config: Option<Arc<openraft::Config>>,
}

impl PeerNetwork {
    /// A network whose connections to peers come from `source` (multi-homed hosts, firewalls
    /// that allow peers by address, and the chaos suite's per-link fault proxies).
    pub fn with_source_address(source: Option<std::net::IpAddr>) -> Self {
        PeerNetwork { channels: Arc::default(), source, tls: None, links: None, raft_config: None }
    }

    /// This network, dialling `https://` peers with `tls` (see [`trireme_tls::connect`]).
    pub fn with_tls(self, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        PeerNetwork { tls, ..self }
    }

    /// This network, pausing its replication streams after failed attempts to open them as
    /// `raft_config`'s backoff policy says (see [`PeerClient`]).
    pub fn with_backoff(self, raft_config: Arc<openraft::Config>) -> Self {
        PeerNetwork { raft_config: Some(raft_config), ..self }
    }

    /// This network, for member `me`, sending only over the `links` that are up (see
    /// [`crate::links`]).
    pub fn with_links(self, me: u64, links: Links) -> Self {
        PeerNetwork { links: Some((me, links)), ..self }
    }

    /// Fails, as never sent, a message to member `to` while the link there is cut.
    pub fn check_send(&self, to: u64, addr: &str) -> Result<(), PeerError> {
        match &self.links {
            Some((me, links)) if !links.is_up(*me, to) => {
                Err(PeerError::NotSent { addr: addr.to_string(), message: format!("the link {me} → {to} is cut") })
            }
            _ => Ok(()),
        }
    }

    /// Fails an answer from member `to` while the link back from it is cut: the request was
    /// handled there, but its outcome is lost.
    pub fn check_reply(&self, to: u64, addr: &str) -> Result<(), PeerError> {
        match &self.links {
            Some((me, links)) if !links.is_up(to, *me) => Err(PeerError::Unreachable {
                addr: addr.to_string(),
                message: format!("answer lost: the link {to} → {me} is cut"),
            }),
            _ => Ok(()),
        }
    }

    /// A stream of answers from member `to` that ends with an error as soon as the link to it is
    /// cut or an answer is lost on the way back; the stream itself when there are no links.
    fn guard_answers<'s, T, E>(
        &self,
        to: u64,
        addr: String,
        answers: BoxStream<'s, Result<T, E>>,
    ) -> BoxStream<'s, Result<T, E>>
    where
        T: Send + 's,
        E: From<PeerError> + Send + 's,
    {
        let Some((me, links)) = self.links.clone() else { return answers };
        let network = self.clone();
        let guarded = futures::stream::unfold(Some(answers), move |answers| {
            let (network, links, addr) = (network.clone(), links.clone(), addr.clone());
            async move {
                let mut answers = answers?;
                tokio::select! {
                    () = links.wait_cut(me, to) => {
                        let message = format!("the link {me} → {to} was cut");
                        Some((Err(E::from(PeerError::Unreachable { addr, message })), None))
                    }
                    answer = answers.next() => match (answer?, network.check_reply(to, &addr)) {
                        (answer, Ok(())) => Some((answer, Some(answers))),
                        (_, Err(lost)) => Some((Err(E::from(lost)), None)),
                    },
                }
            }
        });
        Box::pin(guarded)
    }

    /// Whether a message to member `to` would be sent now.
    fn sends_to(&self, to: u64) -> bool {
        self.links.as_ref().is_none_or(|(me, links)| links.is_up(*me, to))
    }

    /// A client for `member`'s first peer URL; the channel connects on first use.
    pub fn client(&self, member: &Member) -> Result<(String, RaftPeerClient<Channel>), PeerError> {
        let addr = member.peer_urls.first().cloned().unwrap_or_default();
        let channel = {
            let mut channels = self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match channels.get(&addr) {
                Some(ch) => ch.clone(),
                None => {
                    let endpoint = Endpoint::from_shared(addr.clone())
                        .map_err(|e| PeerError::Unreachable {
                            addr: addr.clone(),
                            message: format!("bad peer URL: {e}"),
                        })?
                        .http2_keep_alive_interval(Duration::from_secs(5))
                        .keep_alive_timeout(Duration::from_secs(5));
                    let connector = trireme_tls::connect::Connector::new(self.tls.clone())
                        .source_address(self.source)
                        .connect_timeout(CONNECT_TIMEOUT);
                    let ch = endpoint.connect_with_connector_lazy(connector);
                    channels.insert(addr.clone(), ch.clone());
                    ch
                }
            }
        };
        let client = RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok((addr, client))
    }

    /// Hands `req` to `member` (the leader) and waits at most `timeout` for its answer.
    pub async fn forward(
        &self,
        member: &Member,
        req: &ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResponse, PeerError> {
        let (addr, mut client) = self.client(member)?;
        let call = async {
            let envelope = encode_envelope(&addr, req)?;
            let reply = client.forward(envelope).await.map_err(|s| status_error(&addr, &s))?;
            let result: Result<ForwardResponse, String> = decode_envelope(&addr, &reply.into_inner())?;
            result.map_err(|message| PeerError::Remote { addr: addr.clone(), message })
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| PeerError::Unreachable {
            addr: addr.clone(),
            message: format!("no answer within {timeout:?}"),
        })?
    }
}

fn status_error(addr: &str, status: &tonic::Status) -> PeerError {
    PeerError::Unreachable { addr: addr.to_string(), message: format!("{}: {}", status.code(), status.message()) }
}

fn encode_envelope<T: Serialize>(addr: &str, value: &T) -> Result<Envelope, PeerError> {
    let payload =
        schema::encode(value).map_err(|e| PeerError::BadReply { addr: addr.to_string(), message: e.to_string() })?;
    Ok(Envelope { payload: payload.into() })
}

fn decode_envelope<T: DeserializeOwned>(addr: &str, envelope: &Envelope) -> Result<T, PeerError> {
    schema::decode(&envelope.payload)
        .map_err(|e| PeerError::BadReply { addr: addr.to_string(), message: e.to_string() })
}

/// Encodes a handler's result for the wire: the server always answers `Result<T, String>`.
pub fn reply<T: Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Result<Envelope, tonic::Status> {
    let result = result.map_err(|e| e.to_string());
    schema::encode(&result)
        .map(|payload| Envelope { payload: payload.into() })
        .map_err(|e| tonic::Status::internal(format!("encoding reply: {e}")))
}

/// Decodes a request envelope on the server.
pub fn request<T: DeserializeOwned>(envelope: &Envelope) -> Result<T, tonic::Status> {
    schema::decode(&envelope.payload)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable peer message: {e}")))
}

impl From<PeerError> for RPCError<TypeConfig> {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::Unreachable { .. } | PeerError::NotSent { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            PeerError::BadReply { .. } | PeerError::Remote { .. } => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl From<PeerError> for StreamingError<TypeConfig> {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::Unreachable { .. } | PeerError::NotSent { .. } => {
                StreamingError::Unreachable(Unreachable::new(&e))
            }
            PeerError::BadReply { .. } | PeerError::Remote { .. } => StreamingError::Network(NetworkError::new(&e)),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &Member) -> Self::Network {
        PeerClient { target, member: node.clone(), network: self.clone(), setup_backoff: Mutex::default() }
    }
}

/// openraft's connection to one peer.
pub struct PeerClient {
    target: u64,
    member: Member,
    network: PeerNetwork,
    /// Pauses after failed attempts to open a replication stream, reset by one that opens.
    /// openraft backs off only between the appends of an open stream, so a peer that refuses
    /// connections (stopped, or cut off) would otherwise be retried at once, thousands of times
    /// a second, each with a warning (openraft#1051).
    setup_backoff: Mutex<Option<Backoff>>,
}

impl PeerClient {
    /// One unary Raft RPC with a deadline.
    async fn unary<Req, Resp, F, Fut>(&self, req: &Req, option: &RPCOption, call: F) -> Result<Resp, PeerError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, Envelope) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Envelope>, tonic::Status>>,
    {
        let (addr, client) = self.network.client(&self.member)?;
        let envelope = encode_envelope(&addr, req)?;
        self.network.check_send(self.target, &addr)?;
        let ttl = option.soft_ttl();
        let reply = tokio::time::timeout(ttl, call(client, envelope))
            .await
            .map_err(|_| PeerError::Unreachable { addr: addr.clone(), message: format!("no answer within {ttl:?}") })?
            .map_err(|s| status_error(&addr, &s))?;
        self.network.check_reply(self.target, &addr)?;
        let result: Result<Resp, String> = decode_envelope(&addr, &reply.into_inner())?;
        result.map_err(|message| PeerError::Remote { addr, message })
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotDir;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.unary(&rpc, &option, |mut c, e| async move { c.append_entries(e).await }).await?)
    }

    /// Pipelined replication over one bidirectional gRPC stream: requests are sent as openraft
    /// produces them and results come back in order, so several appends are in flight at once
    /// and no per-request deadline (openraft's is one heartbeat) can cut a slow fsync short.
    /// A dead peer is detected by HTTP/2 keep-alive.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + openraft::OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let opened = async {
                let (addr, mut client) = self.network.client(&self.member)?;
                self.network.check_send(self.target, &addr)?;
                let encode_addr = addr.clone();
                let (network, target) = (self.network.clone(), self.target);
                let requests = input.take_while(move |_| futures::future::ready(network.sends_to(target))).filter_map(
                    move |req| {
                        let envelope = encode_envelope(&encode_addr, &req);
                        if let Err(e) = &envelope {
                            tracing::error!(error = %e, "cannot encode an append request; ending the stream");
                        }
                        futures::future::ready(envelope.ok())
                    },
                );
                let setup = option.soft_ttl().max(STREAM_SETUP_TIMEOUT);
                let responses = tokio::time::timeout(setup, client.stream_append(requests))
                    .await
                    .map_err(|_| PeerError::Unreachable {
                        addr: addr.clone(),
                        message: format!("stream not set up within {setup:?}"),
                    })?
                    .map_err(|s| status_error(&addr, &s))?
                    .into_inner();
                let decode_addr = addr.clone();
                let results = responses.map(move |item| {
                    let addr = &decode_addr;
                    let envelope = item.map_err(|s| RPCError::from(status_error(addr, &s)))?;
                    let result: Result<StreamAppendResult<TypeConfig>, String> =
                        decode_envelope(addr, &envelope).map_err(RPCError::from)?;
                    result.map_err(|message| RPCError::from(PeerError::Remote { addr: addr.clone(), message }))
                });
                let results: BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> =
                    Box::pin(results);
                Ok::<_, RPCError<TypeConfig>>(self.network.guard_answers(self.target, addr, results))
            }
            .await;
            let delay = {
                let backoff = self.setup_backoff.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
                match (&opened, &self.network.raft_config) {
                    (Ok(_), _) | (Err(_), None) => {
                        *backoff = None;
                        None
                    }
                    (Err(_), Some(config)) => backoff.get_or_insert_with(|| config.build_backoff()).next(),
                }
            };
            if let Some(delay) = delay {
                tracing::debug!(target = self.target, ?delay, "replication stream not opened; pausing");
                tokio::time::sleep(delay).await;
            }
            opened
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.unary(&rpc, &option, |mut c, e| async move { c.vote(e).await }).await?)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.unary(&rpc, &option, |mut c, e| async move { c.pre_vote(e).await }).await?)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.unary(&req, &option, |mut c, e| async move { c.transfer_leader(e).await }).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let (addr, mut client) = self.network.client(&self.member)?;
        self.network.check_send(self.target, &addr)?;
        tracing::info!(target = self.target, snapshot = ?snapshot.meta.last_log_id, "sending snapshot");
        let dir = snapshot.snapshot.clone();
        let files = dir
            .files()
            .map_err(|e| PeerError::Remote { addr: addr.clone(), message: format!("listing snapshot: {e}") })?;
        let header = SnapshotHeader { vote, meta: snapshot.meta.clone(), files: files.clone() };
        let header = encode_envelope(&addr, &header)?.payload;
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let producer = tokio::spawn(stream_snapshot_files(dir, files, header, tx).in_current_span());
        let send = async {
            let reply = client
                .install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(|s| status_error(&addr, &s))?;
            self.network.check_reply(self.target, &addr)?;
            let result: Result<SnapshotResponse<TypeConfig>, String> = decode_envelope(&addr, &reply.into_inner())?;
            result.map_err(|message| PeerError::Remote { addr: addr.clone(), message })
        };
        let outcome = tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = send => sent.map_err(StreamingError::from),
        };
        producer.abort();
        outcome
    }
}

/// Streams the header chunk, then every file of `dir` in chunks with a CRC per file.
async fn stream_snapshot_files(
    dir: SnapshotDir,
    files: Vec<(String, u64)>,
    header: bytes::Bytes,
    tx: tokio::sync::mpsc::Sender<SnapshotChunk>,
) {
    let result: std::io::Result<()> = async {
        let first = SnapshotChunk { header, ..SnapshotChunk::default() };
        if tx.send(first).await.is_err() {
            return Ok(());
        }
        for (name, _) in files {
            let mut file = tokio::fs::File::open(dir.path.join(&name)).await?;
            let mut crc = crc32fast::Hasher::new();
            let mut offset = 0u64;
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let n = read_full(&mut file, &mut buf).await?;
                buf.truncate(n);
                crc.update(&buf);
                let done = n < SNAPSHOT_CHUNK_BYTES;
                let chunk = SnapshotChunk {
                    header: bytes::Bytes::new(),
                    file: name.clone(),
                    offset,
                    data: buf.into(),
                    file_done: done,
                    crc32: if done { crc.clone().finalize() } else { 0 },
                };
                offset += n as u64;
                if tx.send(chunk).await.is_err() {
                    return Ok(());
                }
                if done {
                    break;
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // Dropping `tx` early makes the receiver see a truncated snapshot and refuse it.
        tracing::warn!(dir = %dir.path.display(), error = %e, "reading snapshot for transfer failed");
    }
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}
