//! `etcdserverpb.Cluster`: member list, add (voter or learner), remove, promote, update.

use tonic::Request;
use tonic::Response;
use tonic::Status;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::cluster_server::Cluster;
use trireme_store::MemberInfo;
use trireme_store::types::Member;

use crate::Api;
use crate::status::to_status;

fn member_out(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.member.name,
        peer_ur_ls: m.member.peer_urls,
        client_ur_ls: m.member.client_urls,
        is_learner: m.is_learner,
    }
}

impl Api {
    fn member_list(&self) -> Vec<pb::Member> {
        self.store.members().into_iter().map(member_out).collect()
    }
}

#[tonic::async_trait]
impl Cluster for Api {
    async fn member_add(&self, req: Request<pb::MemberAddRequest>) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = req.into_inner();
        if req.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument("etcdserver: member peer URLs not provided"));
        }
        let taken = self.store.members().iter().any(|m| m.member.peer_urls.iter().any(|u| req.peer_ur_ls.contains(u)));
        if taken {
            return Err(Status::failed_precondition("etcdserver: Peer URLs already exists"));
        }
        // A new member gets a new id, never a reused one.
        let id = loop {
            let id = rand::random::<u64>();
            if id != 0 && !self.store.members().iter().any(|m| m.id == id) {
                break id;
            }
        };
        let member = Member { name: String::new(), peer_urls: req.peer_ur_ls, client_urls: Vec::new() };
        if req.is_learner {
            self.store.add_learner(id, member.clone()).await.map_err(to_status)?;
        } else {
            self.store.add_voter(id, member.clone()).await.map_err(to_status)?;
        }
        let added = pb::Member {
            id,
            name: member.name,
            peer_ur_ls: member.peer_urls,
            client_ur_ls: Vec::new(),
            is_learner: req.is_learner,
        };
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.header_now()),
            member: Some(added),
            members: self.member_list(),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.store.remove_member(req.into_inner().id).await.map_err(to_status)?;
        Ok(Response::new(pb::MemberRemoveResponse { header: Some(self.header_now()), members: self.member_list() }))
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let req = req.into_inner();
        let Some(current) = self.store.members().into_iter().find(|m| m.id == req.id) else {
            return Err(to_status(trireme_store::StoreError::MemberNotFound));
        };
        let member = Member { peer_urls: req.peer_ur_ls, ..current.member };
        self.store.update_member(req.id, member).await.map_err(to_status)?;
        Ok(Response::new(pb::MemberUpdateResponse { header: Some(self.header_now()), members: self.member_list() }))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if req.into_inner().linearizable {
            self.store.read_barrier().await.map_err(to_status)?;
        }
        Ok(Response::new(pb::MemberListResponse { header: Some(self.header_now()), members: self.member_list() }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.store.promote(req.into_inner().id).await.map_err(to_status)?;
        Ok(Response::new(pb::MemberPromoteResponse { header: Some(self.header_now()), members: self.member_list() }))
    }
}
