//! `etcdserverpb.Lease`: grant, revoke, keep-alive stream, time-to-live, list.

use std::pin::Pin;

use futures::Stream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::lease_server::Lease;
use trireme_store::StoreError;

use crate::Api;
use crate::status::to_status;

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for Api {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        let (id, ttl) = self.store.lease_grant(req.id, req.ttl).await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseGrantResponse { header: Some(self.header_now()), id, ttl, error: String::new() }))
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let out = self.store.lease_revoke(req.into_inner().id).await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseRevokeResponse { header: Some(self.header(out.revision)) }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = incoming.next().await {
                let reply = match msg {
                    Ok(ka) => match api.store.lease_keep_alive(ka.id).await {
                        Ok(ttl) => Ok(pb::LeaseKeepAliveResponse { header: Some(api.header_now()), id: ka.id, ttl }),
                        // etcd answers an unknown lease with TTL 0 and keeps the stream open.
                        Err(StoreError::LeaseNotFound) => {
                            Ok(pb::LeaseKeepAliveResponse { header: Some(api.header_now()), id: ka.id, ttl: 0 })
                        }
                        Err(e) => Err(to_status(e)),
                    },
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        match self.store.lease_time_to_live(req.id, req.keys).await {
            Ok(info) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header: Some(self.header_now()),
                id: info.id,
                ttl: info.ttl.remaining,
                granted_ttl: info.ttl.granted,
                keys: info.keys.into_iter().map(Into::into).collect(),
            })),
            // etcd reports a missing lease as TTL -1 rather than an error.
            Err(StoreError::LeaseNotFound) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header: Some(self.header_now()),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            })),
            Err(e) => Err(to_status(e)),
        }
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let leases = self.store.leases().await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.header_now()),
            leases: leases.into_iter().map(|(id, _)| pb::LeaseStatus { id }).collect(),
        }))
    }
}
