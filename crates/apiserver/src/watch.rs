//! Watch responses: a chunked stream of newline-delimited JSON events
//! (`{"type":"ADDED","object":{...}}`), with BOOKMARK events when asked for, an ERROR event
//! with a 410 `Expired` Status when the watch fell behind compaction, and an end after
//! `timeoutSeconds`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use serde_json::Value;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use trireme_model::resource::ResourceType;
use trireme_registry::ChangeType;
use trireme_registry::ObjectWatch;
use trireme_registry::RegistryError;

use crate::status::Failure;
use crate::tables;

/// The longest a watch runs without a `timeoutSeconds` (Kubernetes picks 30–60 min).
const MAX_WATCH: Duration = Duration::from_secs(1800);
/// How often an idle watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

/// How a watch response behaves.
pub struct Settings {
    /// `timeoutSeconds`.
    pub timeout: Option<u64>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// Whether event objects are Tables.
    pub table: bool,
    /// The server's shutdown: ends the stream.
    pub shutdown: CancellationToken,
}

/// A watch that cannot start because its resourceVersion is compacted: a stream with one
/// ERROR event carrying 410 Expired, as Kubernetes answers, so clients relist.
pub fn expired_response(message: &str) -> Response {
    let line = error_line(&Failure::from(RegistryError::Expired(message.to_string())));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from(line)).into_response()
}

/// Streams `watch` as a chunked response.
pub fn response(rt: &'static ResourceType, watch: Option<ObjectWatch>, settings: Settings) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    if let Some(watch) = watch {
        tokio::spawn(pump(rt, watch, settings, tx));
    }
    let body = Body::from_stream(ReceiverStream::new(rx));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn pump(
    rt: &'static ResourceType,
    mut watch: ObjectWatch,
    settings: Settings,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let limit = settings.timeout.map(Duration::from_secs).unwrap_or(MAX_WATCH).min(MAX_WATCH);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut bookmarks = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    let mut last_bookmark = 0;
    let mut first = true;
    loop {
        tokio::select! {
            _ = settings.shutdown.cancelled() => break,
            _ = &mut deadline => break,
            _ = tx.closed() => break,
            _ = bookmarks.tick(), if settings.bookmarks => {
                if let Some(rev) = watch.progress().filter(|r| *r >= last_bookmark) {
                    last_bookmark = rev;
                    let object = json!({
                        "kind": rt.kind,
                        "apiVersion": rt.api_version(),
                        "metadata": {"resourceVersion": rev.to_string()},
                    });
                    if tx.send(Ok(line("BOOKMARK", &object))).await.is_err() {
                        break;
                    }
                }
            }
            next = watch.next() => {
                let changes = match next {
                    None => break,
                    Some(Err(e)) => {
                        let _ = tx.send(Ok(error_line(&Failure::from(e)))).await;
                        break;
                    }
                    Some(Ok(changes)) => changes,
                };
                for change in changes {
                    let kind = match change.kind {
                        ChangeType::Added => "ADDED",
                        ChangeType::Modified => "MODIFIED",
                        ChangeType::Deleted => "DELETED",
                    };
                    let object = if settings.table {
                        tables::event_table(rt, &change.object, std::mem::take(&mut first))
                    } else {
                        change.object
                    };
                    if tx.send(Ok(line(kind, &object))).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn error_line(failure: &Failure) -> Bytes {
    line("ERROR", &failure.body())
}
