//! The errors of the kubelet's entry point, [`crate::Kubelet::run`]: what stops a kubelet from
//! starting at all. Once it runs, failures (no master answering, a container that cannot
//! start) are retried or reported on the pod, never returned.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::server::TlsError;

/// Why a kubelet could not start; the message names the flag concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is refused ([`crate::KubeletConfig::validate`]).
    #[error("{0}")]
    Config(String),
    /// The root directory could not be created.
    #[error("--root-dir {}: {source}", path.display())]
    RootDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The kubelet's HTTPS port could not be bound.
    #[error("--kubelet-port: cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The HTTPS endpoint's TLS configuration could not be built from the cluster CA.
    #[error(transparent)]
    Tls(#[from] TlsError),
}
