//! rustls configurations from certificate files, with etcd's meaning of its TLS flags.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;

use crate::TlsError;
use crate::provider;
use crate::reload::ReloadingCert;

/// The certificates in PEM `bytes` (read from `path`, named in errors).
pub fn certs_from_pem(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Missing { path: path.to_path_buf(), what: "certificate" });
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })
}

pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_from_pem(&read(path)?, path)
}

pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::Missing { path: path.to_path_buf(), what: "private key" }
        }
        e => TlsError::Pem { path: path.to_path_buf(), message: e.to_string() },
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Certificate { path: path.to_path_buf(), message: e.to_string() })?;
    }
    Ok(roots)
}

/// One side's TLS files, as etcd's flags name them (`--cert-file --key-file
/// --trusted-ca-file --client-cert-auth`, and the same with `--peer-`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// This side's certificate, PEM (a chain: the leaf first).
    pub cert: Option<PathBuf>,
    /// Its private key, PEM.
    pub key: Option<PathBuf>,
    /// The CA whose certificates this side trusts: clients' when serving, the server's when
    /// dialling.
    pub trusted_ca: Option<PathBuf>,
    /// Serving: refuse a client without a certificate signed by `trusted_ca`.
    pub client_cert_auth: bool,
}

impl TlsFiles {
    /// Whether any TLS was asked for.
    pub fn is_empty(&self) -> bool {
        *self == TlsFiles::default()
    }

    /// Checks the flags make sense together; `flag` is their prefix (`--` or `--peer-`).
    pub fn validate(&self, flag: &str) -> Result<(), TlsError> {
        match (&self.cert, &self.key) {
            (Some(_), None) => return Err(TlsError::Invalid(format!("{flag}cert-file needs {flag}key-file"))),
            (None, Some(_)) => return Err(TlsError::Invalid(format!("{flag}key-file needs {flag}cert-file"))),
            _ => {}
        }
        if self.client_cert_auth && self.trusted_ca.is_none() {
            let auth = if flag == "--" { "--client-cert-auth" } else { "--peer-client-cert-auth" };
            return Err(TlsError::Invalid(format!("{auth} needs {flag}trusted-ca-file")));
        }
        Ok(())
    }

    /// The configuration to serve with: this side's certificate (read again when its files
    /// change, see [`crate::reload`]), and, with `client_cert_auth`, a client certificate
    /// signed by `trusted_ca` required during the handshake.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Err(TlsError::Invalid("serving TLS needs a certificate and a key file".into()));
        };
        let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
        let builder = match (&self.trusted_ca, self.client_cert_auth) {
            (Some(ca), true) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Invalid(format!("client verification with {}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(ReloadingCert::new(cert, key)?));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The configuration to dial with: trusting `trusted_ca` for the server's certificate and
    /// presenting this side's certificate, if any (read again when its files change).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let Some(ca) = &self.trusted_ca else {
            return Err(TlsError::Invalid("dialling TLS needs a trusted CA file".into()));
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(ca)?);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => builder.with_client_cert_resolver(Arc::new(ReloadingCert::new(cert, key)?)),
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_that_do_not_go_together_are_named() {
        let cert_only = TlsFiles { cert: Some("a.crt".into()), ..Default::default() };
        assert_eq!(
            cert_only.validate("--peer-").expect_err("no key").to_string(),
            "--peer-cert-file needs --peer-key-file"
        );
        let auth = TlsFiles { client_cert_auth: true, ..Default::default() };
        assert_eq!(auth.validate("--").expect_err("no ca").to_string(), "--client-cert-auth needs --trusted-ca-file");
        assert!(TlsFiles::default().validate("--").is_ok());
        assert!(TlsFiles::default().is_empty());
    }

    #[test]
    fn a_file_without_a_key_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = crate::pki::Authority::generate("ca").expect("ca");
        ca.write(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).expect("write");
        let files = TlsFiles {
            cert: Some(dir.path().join("ca.crt")),
            key: Some(dir.path().join("ca.crt")),
            ..Default::default()
        };
        let err = files.server_config().expect_err("no key");
        assert!(err.to_string().contains("no private key"), "{err}");
    }
}
