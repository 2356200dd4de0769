//! A certificate and key read from files and read again when the files change, so that a
//! renewed certificate is used by the next handshake — no restart, and connections already open
//! (a Raft stream, a watch) are not touched.
//!
//! The files are looked at, at most once every [`CHECK_EVERY`], from the handshake that needs
//! the certificate: two small `stat`s. A renewal writes the key and then the certificate, each
//! replaced whole (`write_atomic`); a pair that does not match (read between the two writes) is
//! not taken, and the previous one stays in use until the next look.

use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::ClientHello;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;

use crate::TlsError;
use crate::provider;

/// How often the files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

/// A certificate kept in a pair of files.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Loaded>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReloadingCert({})", self.cert.display())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = crate::config::load_certs(cert)?;
    let der = crate::config::load_key(key)?;
    let certified = CertifiedKey::from_der(chain, der, &provider()).map_err(|e| TlsError::Certificate {
        path: cert.to_path_buf(),
        message: format!("{e} (with the key {})", key.display()),
    })?;
    Ok(Arc::new(certified))
}

impl ReloadingCert {
    /// The certificate in `cert` with its key in `key`; both must be readable now.
    pub fn new(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let stamp = (modified(cert), modified(key));
        let certified = load(cert, key)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            loaded: Mutex::new(Loaded { key: certified, stamp, checked: Instant::now() }),
        })
    }

    /// The current certificate, read again first if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded.checked.elapsed() >= CHECK_EVERY {
            loaded.checked = Instant::now();
            let stamp = (modified(&self.cert), modified(&self.key));
            if stamp != loaded.stamp {
                match load(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "certificate changed on disk; using the new one");
                        loaded.key = key;
                        loaded.stamp = stamp;
                    }
                    // Half written, or broken: keep serving with the previous one.
                    Err(e) => tracing::warn!(error = %e, "certificate changed on disk but cannot be used yet"),
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Authority;
    use crate::pki::LeafSpec;

    #[test]
    fn a_renewed_certificate_is_picked_up_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("s.crt"), dir.path().join("s.key"));
        let ca = Authority::generate("ca").expect("ca");
        let spec =
            LeafSpec { common_name: "s".into(), server: true, hosts: vec!["127.0.0.1".into()], ..Default::default() };
        ca.issue(&spec).expect("issue").write(&cert, &key).expect("write");
        let reloading = ReloadingCert::new(&cert, &key).expect("load");
        let first = reloading.current();

        // Renewed: a new pair, seen once the check interval has passed.
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
        ca.issue(&spec).expect("issue").write(&cert, &key).expect("write");
        let renewed = reloading.current();
        assert_ne!(first.cert[0], renewed.cert[0], "the renewed certificate is in use");

        // A key that does not belong to the certificate (a renewal half done) is not taken.
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
        let other = ca.issue(&spec).expect("issue");
        std::fs::write(&key, other.key_pem).expect("write key");
        assert_eq!(reloading.current().cert[0], renewed.cert[0]);
    }
}
