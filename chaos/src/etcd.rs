//! The etcd v3 calls the workloads make, over the generated tonic clients, and the one place
//! that decides what a failed call means for the history.

use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use tonic::transport::Channel;
use tonic::transport::Endpoint;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::kv_client::KvClient;
use trireme_proto::etcdserverpb::maintenance_client::MaintenanceClient;

/// How long a workload waits for one answer before it calls the outcome unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// A channel to one master's etcd API that connects on first use (and again after a break).
pub fn channel(url: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(2))
        .connect_lazy())
}

/// `Maintenance.Status` of one master, within a second.
pub async fn status(url: &str) -> Result<pb::StatusResponse> {
    let call = async {
        let channel =
            Endpoint::from_shared(url.to_string())?.connect_timeout(Duration::from_millis(500)).connect().await?;
        anyhow::Ok(MaintenanceClient::new(channel).status(pb::StatusRequest {}).await?.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(1), call).await?
}

/// What a failed call tells about whether it took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Certainly not applied: the request never left this process (the connection was
    /// refused).
    NotApplied,
    /// May or may not have been applied: everything else (a timeout, a reset, any error the
    /// server answered — a request forwarded to a leader that died may still commit).
    Unknown,
}

/// Classifies a gRPC error. Only a transport error whose cause is a refused connection is
/// [`Failure::NotApplied`]; statuses the server sent are all [`Failure::Unknown`].
pub fn classify(status: &tonic::Status) -> Failure {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return Failure::NotApplied;
        }
        source = e.source();
    }
    Failure::Unknown
}

/// A linearizable get: the value, or `None` when the key does not exist.
pub async fn get(kv: &mut KvClient<Channel>, key: &str) -> Result<Option<Bytes>, tonic::Status> {
    let request = pb::RangeRequest { key: Bytes::copy_from_slice(key.as_bytes()), ..Default::default() };
    let response = kv.range(request).await?.into_inner();
    Ok(response.kvs.into_iter().next().map(|kv| kv.value))
}

/// A put; returns the revision it was written at.
pub async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> Result<i64, tonic::Status> {
    let request = pb::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    };
    let response = kv.put(request).await?.into_inner();
    Ok(response.header.map_or(0, |h| h.revision))
}

/// Compare-and-swap in one transaction: if `key`'s value is `expected`, put `new`. Returns
/// whether it swapped.
pub async fn cas(kv: &mut KvClient<Channel>, key: &str, expected: &str, new: &str) -> Result<bool, tonic::Status> {
    let key = Bytes::copy_from_slice(key.as_bytes());
    let request = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Value as i32,
            key: key.clone(),
            target_union: Some(pb::compare::TargetUnion::Value(Bytes::copy_from_slice(expected.as_bytes()))),
            ..Default::default()
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key,
                value: Bytes::copy_from_slice(new.as_bytes()),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    Ok(kv.txn(request).await?.into_inner().succeeded)
}

/// Every key and value under `prefix` at one revision (the first page is a linearizable read;
/// the others read at its revision), in pages of 10,000 keys.
pub async fn range_prefix(kv: &mut KvClient<Channel>, prefix: &str) -> Result<Vec<(String, String)>, tonic::Status> {
    let end = Bytes::from(prefix_end(prefix));
    let mut from = Bytes::copy_from_slice(prefix.as_bytes());
    let mut revision = 0;
    let mut out = Vec::new();
    loop {
        let request =
            pb::RangeRequest { key: from, range_end: end.clone(), limit: 10_000, revision, ..Default::default() };
        let response = kv.range(request).await?.into_inner();
        if revision == 0 {
            revision = response.header.as_ref().map_or(0, |h| h.revision);
        }
        let Some(last) = response.kvs.last() else { return Ok(out) };
        // The next page starts just after the last key of this one.
        let mut next = last.key.to_vec();
        next.push(0);
        from = Bytes::from(next);
        out.extend(response.kvs.into_iter().map(|kv| {
            (String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned())
        }));
        if !response.more {
            return Ok(out);
        }
    }
}

/// The end of the key range that is every key starting with `prefix` (etcd's `--prefix`).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end("/chaos/"), b"/chaos0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[tokio::test]
    async fn a_refused_connection_is_certainly_not_applied() {
        let port = crate::ports::reserve().expect("a free port");
        let mut kv = KvClient::new(channel(&format!("http://127.0.0.1:{port}")).expect("a URL"));
        let err = put(&mut kv, "k", "v").await.expect_err("nobody listens");
        assert_eq!(classify(&err), Failure::NotApplied, "{err:?}");
        assert_eq!(classify(&tonic::Status::unavailable("etcdserver: request timed out")), Failure::Unknown);
    }
}
