//! Generated gRPC code for Trireme's wire protocols, compiled from `proto/` at build time.
//!
//! - [`peer`]: the master-to-master protocol (Raft messages, snapshot streaming, forwarding);
//! - [`etcdserverpb`] and [`mvccpb`]: etcd's v3 API, served to etcdctl and etcd clients.
//!
//! This crate holds generated code only; encodings of the payloads live with their owners.

/// Master-to-master Raft transport (`proto/peer.proto`).
pub mod peer {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("triremepb");
}

/// etcd's MVCC messages (`proto/etcd/kv.proto`).
pub mod mvccpb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("mvccpb");
}

/// etcd's v3 services and messages (`proto/etcd/rpc.proto`).
pub mod etcdserverpb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("etcdserverpb");
}
