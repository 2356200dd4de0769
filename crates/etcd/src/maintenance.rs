//! `etcdserverpb.Maintenance`: status, alarms, defragment, hashes, snapshot, move-leader.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::maintenance_server::Maintenance;

use crate::Api;
use crate::status::to_status;

/// The etcd API level Trireme speaks, reported as the member's version.
pub const API_VERSION: &str = "3.4.0";

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for Api {
    async fn alarm(&self, req: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let req = req.into_inner();
        let action = AlarmAction::try_from(req.action)
            .map_err(|_| Status::invalid_argument("etcdserver: invalid alarm action"))?;
        let alarm = pb::AlarmMember {
            member_id: if req.member_id == 0 { self.store.id() } else { req.member_id },
            alarm: req.alarm,
        };
        let mut alarms = self.alarms();
        match action {
            AlarmAction::Get => {}
            AlarmAction::Activate => {
                if req.alarm != pb::AlarmType::None as i32 && !alarms.contains(&alarm) {
                    alarms.push(alarm);
                }
            }
            AlarmAction::Deactivate => {
                alarms.retain(|a| !(a.alarm == req.alarm && (req.member_id == 0 || a.member_id == req.member_id)));
            }
        }
        let list = alarms.clone();
        drop(alarms);
        Ok(Response::new(pb::AlarmResponse { header: Some(self.header_now()), alarms: list }))
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.store.status();
        let errors =
            self.alarms().iter().map(|a| format!("memberID:{} alarm:{}", a.member_id, alarm_name(a.alarm))).collect();
        let size = i64::try_from(s.db_size).unwrap_or(i64::MAX);
        Ok(Response::new(pb::StatusResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: self.store.cluster_id(),
                member_id: s.id,
                revision: s.revision,
                raft_term: s.term,
            }),
            version: API_VERSION.to_string(),
            db_size: size,
            leader: s.leader.unwrap_or(0),
            raft_index: s.raft_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors,
            db_size_in_use: size,
            is_learner: s.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.store.defragment().await.map_err(to_status)?;
        Ok(Response::new(pb::DefragmentResponse { header: Some(self.header_now()) }))
    }

    async fn hash(&self, _req: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        let (hash, revision, _) = self.store.hash_kv(0).await.map_err(to_status)?;
        Ok(Response::new(pb::HashResponse { header: Some(self.header(revision)), hash }))
    }

    async fn hash_kv(&self, req: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        let (hash, _, compact_revision) = self.store.hash_kv(req.into_inner().revision).await.map_err(to_status)?;
        Ok(Response::new(pb::HashKvResponse { header: Some(self.header_now()), hash, compact_revision }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(&self, _req: Request<pb::SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let archive = self.store.backup().await.map_err(to_status)?;
        let total = archive.header.archive_len().map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
        let header = self.header(archive.header.revision);
        tracing::info!(revision = archive.header.revision, bytes = total, "streaming snapshot");
        let mut chunks = archive.stream();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut left = total;
            while let Some(chunk) = chunks.recv().await {
                let msg = match chunk {
                    Ok(blob) => {
                        left = left.saturating_sub(blob.len() as u64);
                        Ok(pb::SnapshotResponse { header: Some(header), remaining_bytes: left, blob })
                    }
                    Err(e) => Err(Status::internal(format!("etcdserver: snapshot failed: {e}"))),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            tracing::info!(bytes = total, ms = started.elapsed().as_millis() as u64, "snapshot streamed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        if self.store.leader() != Some(self.store.id()) {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        self.store.transfer_leader(target).await.map_err(to_status)?;
        let deadline = tokio::time::Instant::now() + self.store.config().request_timeout;
        while self.store.leader() != Some(target) {
            if tokio::time::Instant::now() > deadline {
                return Err(Status::unavailable("etcdserver: request timed out, leader transfer took too long"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Response::new(pb::MoveLeaderResponse { header: Some(self.header_now()) }))
    }
}

fn alarm_name(alarm: i32) -> &'static str {
    match pb::AlarmType::try_from(alarm) {
        Ok(pb::AlarmType::Nospace) => "NOSPACE",
        Ok(pb::AlarmType::Corrupt) => "CORRUPT",
        _ => "NONE",
    }
}
