//! Requests forwarded to the leader over one long-lived bidirectional stream per leader.
//!
//! A unary gRPC call per forwarded write costs the leader an HTTP/2 stream (headers, trailers,
//! a service call) for every client request that reached a follower; with clients spread over
//! all masters that was a quarter of the leader's work. Here every request is a message tagged
//! with an id on one stream; the leader answers each as soon as it is done, in any order.
//!
//! Failure semantics: a request that could not be put on a stream is [`PeerError::NotSent`] (safe
//! to retry); one whose stream broke before its answer came is `Unreachable` (outcome unknown).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tracing::Instrument;
use trireme_proto::peer::Envelope;

use super::ForwardRequest;
use super::ForwardResponse;
use super::network::PeerError;
use super::network::PeerNetwork;
use crate::schema;
use crate::types::Member;

type Waiter = oneshot::Sender<Result<ForwardResponse, PeerError>>;

/// How long opening a stream to the leader may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests queued towards one leader before senders wait.
const QUEUE: usize = 1024;

/// One stream to one leader.
struct Stream {
    requests: mpsc::Sender<Envelope>,
    waiting: Arc<Mutex<HashMap<u64, Waiter>>>,
    next_id: AtomicU64,
    alive: Arc<AtomicBool>,
}

/// Forwarding streams by leader address, opened on first use and reopened after a break.
#[derive(Clone, Default)]
pub struct ForwardMux {
    streams: Arc<tokio::sync::Mutex<HashMap<String, Arc<Stream>>>>,
}

fn lock(waiting: &Mutex<HashMap<u64, Waiter>>) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
    waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ForwardMux {
    /// Hands `req` to `leader` (member `leader_id`) and waits at most `timeout` for the answer.
    pub async fn call(
        &self,
        network: &PeerNetwork,
        leader_id: u64,
        leader: &Member,
        req: &ForwardRequest,
        timeout: Duration,
        abandon: impl std::future::Future<Output = ()>,
    ) -> Result<ForwardResponse, PeerError> {
        let addr = leader.peer_urls.first().cloned().unwrap_or_default();
        network.check_send(leader_id, &addr)?;
        let stream = self.stream(network, leader).await?;
        let id = stream.next_id.fetch_add(1, Ordering::Relaxed);
        let payload = schema::encode(&(id, req))
            .map_err(|e| PeerError::BadReply { addr: addr.clone(), message: format!("encoding: {e}") })?;
        let (tx, rx) = oneshot::channel();
        lock(&stream.waiting).insert(id, tx);
        if stream.requests.send(Envelope { payload: payload.into() }).await.is_err() {
            lock(&stream.waiting).remove(&id);
            stream.alive.store(false, Ordering::Relaxed);
            return Err(PeerError::NotSent { addr, message: "the stream to the leader closed".into() });
        }
        let answer = tokio::select! {
            answer = tokio::time::timeout(timeout, rx) => answer,
            () = abandon => {
                lock(&stream.waiting).remove(&id);
                return Err(PeerError::Unreachable { addr, message: "the leader changed while the request was in flight".into() });
            }
        };
        match answer {
            Ok(Ok(answer)) => {
                network.check_reply(leader_id, &addr)?;
                answer
            }
            Ok(Err(_)) => Err(PeerError::Unreachable { addr, message: "the stream to the leader broke".into() }),
            Err(_) => {
                lock(&stream.waiting).remove(&id);
                Err(PeerError::Unreachable { addr, message: format!("no answer within {timeout:?}") })
            }
        }
    }

    /// The live stream to `leader`, opening one if needed.
    async fn stream(&self, network: &PeerNetwork, leader: &Member) -> Result<Arc<Stream>, PeerError> {
        let addr = leader.peer_urls.first().cloned().unwrap_or_default();
        let mut streams = self.streams.lock().await;
        if let Some(s) = streams.get(&addr).filter(|s| s.alive.load(Ordering::Relaxed)) {
            return Ok(s.clone());
        }
        let (_, mut client) = network.client(leader)?;
        let (requests, outgoing) = mpsc::channel::<Envelope>(QUEUE);
        let opened = tokio::time::timeout(
            OPEN_TIMEOUT,
            client.forward_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing)),
        )
        .await
        .map_err(|_| PeerError::NotSent {
            addr: addr.clone(),
            message: format!("stream not opened within {OPEN_TIMEOUT:?}"),
        })?
        .map_err(|s| PeerError::NotSent { addr: addr.clone(), message: format!("opening stream: {}", s.message()) })?;
        let stream = Arc::new(Stream {
            requests,
            waiting: Arc::default(),
            next_id: AtomicU64::new(0),
            alive: Arc::new(AtomicBool::new(true)),
        });
        let answers = read_answers(addr.clone(), opened.into_inner(), stream.waiting.clone(), stream.alive.clone());
        tokio::spawn(answers.in_current_span());
        streams.insert(addr, stream.clone());
        Ok(stream)
    }
}

/// Routes the leader's answers to their waiters; when the stream ends, fails every waiter.
async fn read_answers(
    addr: String,
    mut answers: tonic::Streaming<Envelope>,
    waiting: Arc<Mutex<HashMap<u64, Waiter>>>,
    alive: Arc<AtomicBool>,
) {
    loop {
        match answers.message().await {
            Ok(Some(envelope)) => match schema::decode::<(u64, Result<ForwardResponse, String>)>(&envelope.payload) {
                Ok((id, answer)) => {
                    if let Some(waiter) = lock(&waiting).remove(&id) {
                        let _ =
                            waiter.send(answer.map_err(|message| PeerError::Remote { addr: addr.clone(), message }));
                    }
                }
                Err(e) => {
                    tracing::warn!(peer = %addr, error = %e, "undecodable forwarded answer; closing the stream");
                    break;
                }
            },
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(peer = %addr, error = %status, "forward stream broke");
                break;
            }
        }
    }
    alive.store(false, Ordering::Relaxed);
    // Dropping the waiters tells each caller that the outcome is unknown.
    lock(&waiting).clear();
}
