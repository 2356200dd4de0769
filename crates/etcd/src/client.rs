//! A minimal client of this API for Trireme's own tools (readiness checks, operator commands).

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Endpoint;
use trireme_proto::etcdserverpb as pb;
use trireme_proto::etcdserverpb::maintenance_client::MaintenanceClient;

/// Why a call to a member failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{url} answered: {source}")]
    Call {
        url: String,
        #[source]
        source: tonic::Status,
    },
}

/// `Maintenance.Status` of the member at `url`, with a 2 s deadline; `tls` dials an
/// `https://` URL (the CA to trust and a client certificate).
pub async fn status(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<pb::StatusResponse, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|source| ClientError::Connect { url: url.to_string(), source })?
        .timeout(Duration::from_secs(2));
    let connector = trireme_tls::connect::Connector::new(tls).connect_timeout(Duration::from_secs(2));
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|source| ClientError::Connect { url: url.to_string(), source })?;
    let reply = MaintenanceClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .map_err(|source| ClientError::Call { url: url.to_string(), source })?;
    Ok(reply.into_inner())
}
