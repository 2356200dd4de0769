//! `etcdserverpb.Watch`: one bidirectional stream carries many watches.
//!
//! Each stream has a reader task (creates and cancels watches, answers progress requests) and
//! one forwarding task per watch, which turns the store's watch messages into responses. All
//! responses of a stream go through one bounded channel, so a slow client only slows its own
//! watches, and the store catches them up from history.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::watch_server::Watch;
use trireme_store::StoreError;
use trireme_store::WatchMessage;
use trireme_store::WatchStream;
use trireme_store::types::EventType;
use trireme_store::types::KeyRange;

use crate::Api;
use crate::convert;
use crate::status;

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;
type Outbox = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// How often a watch created with `progress_notify` gets a progress response when idle.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// How long a `hasleader` stream survives without a leader before it is failed.
const NO_LEADER_GRACE: Duration = Duration::from_secs(3);

/// The watches of one stream, by id.
#[derive(Default)]
struct Watches {
    next_id: i64,
    active: HashMap<i64, CancellationToken>,
}

#[tonic::async_trait]
impl Watch for Api {
    type WatchStream = ResponseStream;

    async fn watch(&self, req: Request<Streaming<pb::WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let requires_leader = req.metadata().get("hasleader").is_some_and(|v| v.as_bytes() == b"true");
        if requires_leader && self.store.leader().is_none() {
            return Err(status::no_leader());
        }
        let incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(128);
        let stream_done = CancellationToken::new();
        tokio::spawn(read_requests(self.clone(), incoming, tx.clone(), stream_done.clone()));
        if requires_leader {
            tokio::spawn(watch_leader(self.clone(), tx, stream_done));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves the client's create, cancel and progress requests until the stream ends.
async fn read_requests(api: Api, mut incoming: Streaming<pb::WatchRequest>, out: Outbox, done: CancellationToken) {
    use pb::watch_request::RequestUnion as R;
    let watches = Arc::new(Mutex::new(Watches::default()));
    let progress = watch::Sender::new(0u64);
    loop {
        let msg = tokio::select! {
            msg = incoming.next() => msg,
            () = done.cancelled() => None,
        };
        let Some(Ok(msg)) = msg else { break };
        match msg.request_union {
            Some(R::CreateRequest(create)) => {
                create_watch(&api, create, &watches, &out, &done, progress.subscribe()).await
            }
            Some(R::CancelRequest(cancel)) => {
                let token = lock(&watches).active.remove(&cancel.watch_id);
                if let Some(token) = token {
                    token.cancel();
                    let resp = pb::WatchResponse {
                        header: Some(api.header_now()),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    let _ = out.send(Ok(resp)).await;
                }
            }
            Some(R::ProgressRequest(_)) => {
                // Each watch answers for itself, once it has forwarded all it has.
                progress.send_modify(|n| *n += 1);
            }
            None => {}
        }
    }
    done.cancel();
    for (_, token) in lock(&watches).active.drain() {
        token.cancel();
    }
}

fn lock(watches: &Mutex<Watches>) -> std::sync::MutexGuard<'_, Watches> {
    watches.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn create_watch(
    api: &Api,
    create: pb::WatchCreateRequest,
    watches: &Arc<Mutex<Watches>>,
    out: &Outbox,
    done: &CancellationToken,
    progress_requests: watch::Receiver<u64>,
) {
    let registered = {
        let mut w = lock(watches);
        let id = if create.watch_id > 0 { create.watch_id } else { w.next_id };
        if w.active.contains_key(&id) {
            None
        } else {
            w.next_id = w.next_id.max(id + 1);
            w.active.insert(id, done.child_token());
            Some(id)
        }
    };
    let Some(id) = registered else {
        let resp = pb::WatchResponse {
            header: Some(api.header_now()),
            watch_id: create.watch_id,
            created: true,
            canceled: true,
            cancel_reason: "etcdserver: duplicate watch ID".to_string(),
            ..Default::default()
        };
        let _ = out.send(Ok(resp)).await;
        return;
    };
    let token = lock(watches).active.get(&id).cloned().unwrap_or_default();
    let range = KeyRange::new(&create.key, &create.range_end);
    let no_put = create.filters.contains(&(pb::watch_create_request::FilterType::Noput as i32));
    let no_delete = create.filters.contains(&(pb::watch_create_request::FilterType::Nodelete as i32));
    let created =
        pb::WatchResponse { header: Some(api.header_now()), watch_id: id, created: true, ..Default::default() };
    let stream = api.store.watch(range, create.start_revision, create.prev_kv).await;
    if out.send(Ok(created)).await.is_err() {
        return;
    }
    match stream {
        Ok(stream) => {
            let forward = Forwarder { api: api.clone(), id, no_put, no_delete, progress: create.progress_notify };
            tokio::spawn(forward.run(stream, out.clone(), token, progress_requests));
        }
        Err(StoreError::Compacted { compact_revision }) => {
            lock(watches).active.remove(&id);
            let _ = out.send(Ok(compacted(api, id, compact_revision))).await;
        }
        Err(e) => {
            lock(watches).active.remove(&id);
            let resp = pb::WatchResponse {
                header: Some(api.header_now()),
                watch_id: id,
                canceled: true,
                cancel_reason: status::to_status(e).message().to_string(),
                ..Default::default()
            };
            let _ = out.send(Ok(resp)).await;
        }
    }
}

fn compacted(api: &Api, id: i64, compact_revision: i64) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(api.header_now()),
        watch_id: id,
        canceled: true,
        compact_revision,
        cancel_reason: "etcdserver: mvcc: required revision has been compacted".to_string(),
        ..Default::default()
    }
}

/// Turns one store watch into responses on the stream.
struct Forwarder {
    api: Api,
    id: i64,
    no_put: bool,
    no_delete: bool,
    progress: bool,
}

impl Forwarder {
    async fn run(
        self,
        mut stream: WatchStream,
        out: Outbox,
        cancel: CancellationToken,
        mut asked: watch::Receiver<u64>,
    ) {
        let mut idle = tokio::time::interval(PROGRESS_INTERVAL);
        idle.reset();
        asked.mark_unchanged();
        let mut owed = false;
        loop {
            if owed && stream.is_empty() {
                // Read the synced revision first: if the stream is still empty, everything up to it
                // has been forwarded.
                let synced = stream.synced_revision();
                if stream.is_empty() {
                    owed = false;
                    let resp = pb::WatchResponse {
                        header: Some(self.api.header(synced)),
                        watch_id: self.id,
                        ..Default::default()
                    };
                    if out.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                msg = stream.recv() => match msg {
                    Some(WatchMessage::Events(events)) => {
                        let last = events.last().map_or(0, |e| e.kv.mod_revision);
                        let events: Vec<_> = events
                            .into_iter()
                            .filter(|e| match e.kind {
                                EventType::Put => !self.no_put,
                                EventType::Delete => !self.no_delete,
                            })
                            .map(convert::event_out)
                            .collect();
                        if events.is_empty() {
                            continue;
                        }
                        let resp = pb::WatchResponse { header: Some(self.api.header(last)), watch_id: self.id, events, ..Default::default() };
                        if out.send(Ok(resp)).await.is_err() {
                            return;
                        }
                        idle.reset();
                    }
                    Some(WatchMessage::Compacted { compact_revision }) => {
                        let _ = out.send(Ok(compacted(&self.api, self.id, compact_revision))).await;
                        return;
                    }
                    None => return,
                },
                _ = idle.tick(), if self.progress => owed = true,
                changed = asked.changed() => match changed {
                    Ok(()) => owed = true,
                    Err(_) => return,
                },
                () = cancel.cancelled() => return,
            }
        }
    }
}

/// Fails a `hasleader` stream whose member has had no leader for a while, as etcd does.
async fn watch_leader(api: Api, out: Outbox, done: CancellationToken) {
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = done.cancelled() => return,
        }
        match (api.store.leader(), leaderless_since) {
            (Some(_), _) => leaderless_since = None,
            (None, None) => leaderless_since = Some(tokio::time::Instant::now()),
            (None, Some(since)) if since.elapsed() >= NO_LEADER_GRACE => {
                let _ = out.send(Err(status::no_leader())).await;
                done.cancel();
                return;
            }
            (None, Some(_)) => {}
        }
    }
}
