//! Generated gRPC code for Trireme's wire protocols, compiled from `proto/` at build time.
//!
//! - [`peer`]: the master-to-master protocol (Raft messages, snapshot streaming, forwarding).
//!
//! This crate holds generated code only; encodings of the payloads live with their owners.

/// Master-to-master Raft transport (`proto/peer.proto`).
pub mod peer {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("triremepb");
}
