//! Certificates and mutual TLS for a master's etcd API and peer port, as etcd does them.
//!
//! - [`pki`]: a certificate authority and the certificates it issues (rcgen), as files.
//! - [`config`]: rustls configurations from certificate files — a server that requires a
//!   client certificate signed by a trusted CA, a client that presents one.
//! - [`serve`]: accepted TCP connections made TLS (handshakes run side by side, a failed one
//!   drops only its connection) for tonic's `serve_with_incoming`.
//! - [`connect`]: a tonic connector dialling `https://` peers with a client certificate.
//! - [`reload`]: certificates read again when their files change (renewal without a restart).
//!
//! The Kubernetes API's own TLS lives in `trireme-apiserver`; this crate is the etcd side:
//! anything that reaches port 2379 or 2380 without a certificate of the cluster is refused
//! during the handshake.

pub mod config;
pub mod connect;
pub mod pki;
pub mod reload;
pub mod serve;

use std::path::PathBuf;

/// Why TLS material could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no {what} in it (expected PEM)")]
    Missing { path: PathBuf, what: &'static str },
    #[error("{path}: not a valid PEM file: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path}: not a valid certificate: {message}")]
    Certificate { path: PathBuf, message: String },
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The crypto provider every configuration here uses.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
