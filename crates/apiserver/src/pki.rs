//! The cluster's credentials: a CA, an admin bearer token and a service-account signing key,
//! created once when the cluster is first initialised and kept in the replicated store, so
//! every master — including ones added later — issues its serving certificate from the same
//! CA and accepts the same tokens.

use std::sync::Arc;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use serde::Serialize;
use trireme_store::Store;
use trireme_store::types::Command;
use trireme_store::types::Compare;
use trireme_store::types::CompareOp;
use trireme_store::types::CompareTarget;
use trireme_store::types::Outcome;
use trireme_store::types::PutRequest;
use trireme_store::types::RangeRequest;
use trireme_store::types::Request;
use trireme_store::types::RequestOp;
use trireme_store::types::TxnRequest;

/// Where the credentials live in the store. Whoever can read the store is cluster admin, as
/// with etcd under Kubernetes.
pub const CREDENTIALS_KEY: &str = "/trireme/pki/cluster";

/// Why credentials could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("store: {0}")]
    Store(#[from] trireme_store::StoreError),
    #[error("stored credentials at {CREDENTIALS_KEY} are unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("service-account token key: {0}")]
    Tokens(String),
    #[error("the cluster CA: {0}")]
    Ca(String),
}

/// The cluster's shared credentials.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClusterCredentials {
    /// The CA certificate, PEM: clients trust it (it goes into the kubeconfig).
    pub ca_cert_pem: String,
    /// The CA's private key, PEM: masters sign their serving certificates with it.
    pub ca_key_pem: String,
    /// The admin bearer token.
    pub admin_token: String,
    /// The key service-account tokens are signed with, PEM (PKCS#8, ECDSA P-256).
    pub service_account_key_pem: String,
    /// The CA of peer and etcd-client traffic and its key, PEM, when the masters use mutual TLS
    /// there: any master can then issue a joining master's certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca: Option<CaPair>,
}

/// A CA certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CaPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaPair { .. }")
    }
}

impl std::fmt::Debug for ClusterCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCredentials { .. }")
    }
}

/// The CA's certificate parameters (its subject), to issue certificates under it.
pub(crate) fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "trireme-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

impl ClusterCredentials {
    /// Fresh credentials.
    pub fn generate() -> Result<ClusterCredentials, PkiError> {
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params()?.self_signed(&ca_key)?;
        let sa_key = KeyPair::generate()?;
        let token: [u8; 32] = rand::random();
        Ok(ClusterCredentials {
            ca_cert_pem: ca_cert.pem(),
            ca_key_pem: ca_key.serialize_pem(),
            admin_token: hex_token(&token),
            service_account_key_pem: sa_key.serialize_pem(),
            etcd_ca: None,
        })
    }

    /// The credentials of the cluster `store` belongs to, creating them if this is the first
    /// master to ask. Every master racing here ends up with the same credentials: the create
    /// is a transaction that only succeeds while the key is absent. `etcd_ca`, this master's
    /// etcd CA if it has one, is recorded with them if they hold none yet.
    pub async fn ensure(store: &Store, etcd_ca: Option<&CaPair>) -> Result<ClusterCredentials, PkiError> {
        let credentials = Self::ensure_created(store, etcd_ca).await?;
        match (etcd_ca, &credentials.etcd_ca) {
            (Some(mine), None) => Self::record_etcd_ca(store, mine).await,
            // The only member of its cluster with another etcd CA than the stored one: a lost
            // cluster restored onto a new host (`trireme init --restore`). Its CA is the one its
            // peers must be issued from. (Members of one cluster otherwise share the CA: with
            // mutual TLS a member of another could not talk to them.)
            (Some(mine), Some(stored)) if mine != stored && store.members().len() == 1 => {
                tracing::info!("this sole member's etcd CA replaces the one of the restored cluster");
                Self::record_etcd_ca(store, mine).await
            }
            _ => Ok(credentials),
        }
    }

    /// Records `etcd_ca` in the stored credentials (a cluster that turned on TLS, or was
    /// restored onto a new host).
    async fn record_etcd_ca(store: &Store, etcd_ca: &CaPair) -> Result<ClusterCredentials, PkiError> {
        let (read, _) =
            store.range(RangeRequest { key: CREDENTIALS_KEY.as_bytes().to_vec(), ..Default::default() }).await?;
        let kv = read.kvs.first().ok_or(PkiError::Store(trireme_store::StoreError::KeyNotFound))?;
        let mut credentials: ClusterCredentials = serde_json::from_slice(&kv.value)?;
        if credentials.etcd_ca.as_ref() == Some(etcd_ca) {
            return Ok(credentials);
        }
        credentials.etcd_ca = Some(etcd_ca.clone());
        let txn = TxnRequest {
            compare: vec![Compare {
                op: CompareOp::Equal,
                target: CompareTarget::Mod(kv.mod_revision),
                key: CREDENTIALS_KEY.as_bytes().to_vec(),
                range_end: vec![],
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: CREDENTIALS_KEY.as_bytes().to_vec(),
                value: serde_json::to_vec(&credentials)?,
                ..Default::default()
            })],
            failure: vec![],
        };
        store.write(Request::new(Command::Txn(txn))).await?;
        // Won or lost the race, what is stored now is the answer.
        let (read, _) =
            store.range(RangeRequest { key: CREDENTIALS_KEY.as_bytes().to_vec(), ..Default::default() }).await?;
        match read.kvs.first() {
            Some(kv) => Ok(serde_json::from_slice(&kv.value)?),
            None => Err(PkiError::Store(trireme_store::StoreError::KeyNotFound)),
        }
    }

    async fn ensure_created(store: &Store, etcd_ca: Option<&CaPair>) -> Result<ClusterCredentials, PkiError> {
        let mut fresh = ClusterCredentials::generate()?;
        fresh.etcd_ca = etcd_ca.cloned();
        let txn = TxnRequest {
            compare: vec![Compare {
                op: CompareOp::Equal,
                target: CompareTarget::Create(0),
                key: CREDENTIALS_KEY.as_bytes().to_vec(),
                range_end: vec![],
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: CREDENTIALS_KEY.as_bytes().to_vec(),
                value: serde_json::to_vec(&fresh)?,
                ..Default::default()
            })],
            failure: vec![],
        };
        let response = store.write(Request::new(Command::Txn(txn))).await?;
        if let Outcome::Txn(t) = &response.outcome
            && t.succeeded
        {
            tracing::info!("created the cluster CA and admin token");
            return Ok(fresh);
        }
        let (read, _) =
            store.range(RangeRequest { key: CREDENTIALS_KEY.as_bytes().to_vec(), ..Default::default() }).await?;
        match read.kvs.first() {
            Some(kv) => Ok(serde_json::from_slice(&kv.value)?),
            None => Err(PkiError::Store(trireme_store::StoreError::KeyNotFound)),
        }
    }

    /// A TLS server configuration with a certificate for `hosts` (DNS names or IP addresses)
    /// signed by the cluster CA.
    pub fn server_config(&self, hosts: &[String]) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let params = ca_params()?;
        let issuer = Issuer::from_params(&params, &ca_key);
        let mut names: Vec<String> = hosts.to_vec();
        for default in ["localhost", "127.0.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
            if !names.iter().any(|n| n == default) {
                names.push(default.to_string());
            }
        }
        let mut leaf = CertificateParams::new(names)?;
        leaf.distinguished_name.push(DnType::CommonName, "trireme-apiserver");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &issuer)?;
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Client certificates signed by the cluster CA authenticate their subject (a node's
        // `system:node:<name>`); clients without one authenticate with a bearer token.
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_cert_pem.as_bytes()) {
            roots.add(ca.map_err(|e| PkiError::Ca(e.to_string()))?)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Ca(format!("client certificate verification: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.der().clone()], key_der)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn hex_token(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_certificate_can_be_issued_from_stored_credentials() {
        let creds = ClusterCredentials::generate().expect("generate");
        let json = serde_json::to_vec(&creds).expect("encode");
        let back: ClusterCredentials = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back.admin_token.len(), 64);
        back.server_config(&["127.0.0.5".into()]).expect("server config");
    }
}
