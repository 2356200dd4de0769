//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use tonic::Request;
use tonic::Response;
use tonic::Status;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::kv_server::Kv;
use trireme_store::types::Command;
use trireme_store::types::Outcome;
use trireme_store::types::Request as StoreRequest;

use crate::Api;
use crate::convert;
use crate::status::to_status;

#[tonic::async_trait]
impl Kv for Api {
    async fn range(&self, req: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let req = convert::range_in(req.into_inner())?;
        let (resp, revision) = self.store.range(req).await.map_err(to_status)?;
        Ok(Response::new(pb::RangeResponse { header: Some(self.header(revision)), ..convert::range_out(resp) }))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.check_space()?;
        let put = convert::put_in(req.into_inner());
        let out = self.write(Command::Put(put)).await?;
        match out.outcome {
            Outcome::Put(p) => {
                Ok(Response::new(pb::PutResponse { header: Some(self.header(out.revision)), ..convert::put_out(p) }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let del = convert::delete_in(req.into_inner());
        let out = self.write(Command::DeleteRange(del)).await?;
        match out.outcome {
            Outcome::DeleteRange(d) => Ok(Response::new(pb::DeleteRangeResponse {
                header: Some(self.header(out.revision)),
                ..convert::delete_out(d)
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let txn = convert::txn_in(req.into_inner())?;
        if txn.success.iter().chain(&txn.failure).any(|op| !matches!(op, trireme_store::types::RequestOp::Range(_))) {
            self.check_space()?;
        }
        let out = self.write(Command::Txn(txn)).await?;
        match out.outcome {
            Outcome::Txn(t) => Ok(Response::new(convert::txn_out(t, &self.header(out.revision)))),
            other => Err(unexpected(&other)),
        }
    }

    async fn compact(&self, req: Request<pb::CompactionRequest>) -> Result<Response<pb::CompactionResponse>, Status> {
        let revision = req.into_inner().revision;
        let out = self.write(Command::Compact { revision }).await?;
        Ok(Response::new(pb::CompactionResponse { header: Some(self.header(out.revision)) }))
    }
}

impl Api {
    async fn write(&self, command: Command) -> Result<trireme_store::types::Response, Status> {
        self.store.write(StoreRequest::new(command)).await.map_err(to_status)
    }
}

fn unexpected(outcome: &Outcome) -> Status {
    Status::internal(format!("etcdserver: unexpected outcome {outcome:?}"))
}
