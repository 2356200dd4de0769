//! A certificate authority and the leaf certificates it issues, kept as PEM files.
//!
//! etcd's deployments make one CA for peer traffic and client traffic and give every member a
//! peer certificate (used both to serve the peer port and to dial other members, so it is valid
//! for server and client authentication), a serving certificate for the client port, and client
//! certificates for the tools that talk to it. [`Authority::issue`] makes any of those.

use std::path::Path;
use std::time::Duration;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
use sha2::Digest;
use trireme_util::fs::FileOptions;
use trireme_util::fs::write_atomic;

use crate::TlsError;

/// How long a CA is valid: ten years, as kubeadm's and k3s' CAs.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf certificate is valid: a year, as kubeadm's.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates are valid from a little before they are made, so that a peer whose clock is
/// slightly behind accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A CA that can issue certificates: its certificate and private key.
pub struct Authority {
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority { .. }")
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Default)]
pub struct LeafSpec {
    /// Subject common name (the user name when the certificate authenticates a client).
    pub common_name: String,
    /// Subject organizations (the groups when it authenticates a client).
    pub organizations: Vec<String>,
    /// DNS names and IP addresses it is valid for, as a server.
    pub hosts: Vec<String>,
    /// Valid for serving TLS.
    pub server: bool,
    /// Valid for authenticating a TLS client.
    pub client: bool,
    /// Validity [default: [`LEAF_VALIDITY`]].
    pub valid_for: Option<Duration>,
}

/// A certificate just issued and its private key, PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issued { .. }")
    }
}

impl Issued {
    /// Writes the certificate to `cert` and the key to `key` (readable by its owner only).
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        write_file(key, self.key_pem.as_bytes(), FileOptions::PRIVATE)?;
        write_file(cert, self.cert_pem.as_bytes(), FileOptions::DURABLE)
    }
}

fn write_file(path: &Path, contents: &[u8], options: FileOptions) -> Result<(), TlsError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io { path: dir.to_path_buf(), source })?;
    }
    write_atomic(path, contents, options).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })
}

fn read_file(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })
}

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + valid_for;
}

impl Authority {
    /// A new self-signed CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Authority { cert_pem: cert.pem(), key })
    }

    /// The CA in `cert_pem` with its key `key_pem`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        // Parsed once here so that a broken file is reported when loaded, not when used.
        Issuer::from_ca_cert_pem(cert_pem, &key)?;
        Ok(Authority { cert_pem: cert_pem.to_string(), key })
    }

    /// The CA kept in the files `cert` and `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Authority, TlsError> {
        let (cert_pem, key_pem) = (read_file(cert)?, read_file(key)?);
        Authority::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
            TlsError::Issue(e) => TlsError::Certificate {
                path: cert.to_path_buf(),
                message: format!("{e} (or its key {})", key.display()),
            },
            other => other,
        })
    }

    /// Writes the CA's certificate to `cert` and its key to `key` (owner only).
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        write_file(key, self.key.serialize_pem().as_bytes(), FileOptions::PRIVATE)?;
        write_file(cert, self.cert_pem.as_bytes(), FileOptions::DURABLE)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new certificate for `spec`, with a fresh key, signed by this CA.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, TlsError> {
        if !spec.server && !spec.client {
            return Err(TlsError::Invalid("a certificate must be for a server, a client or both".into()));
        }
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let mut params = CertificateParams::new(spec.hosts.clone())?;
        params.distinguished_name.push(DnType::CommonName, spec.common_name.as_str());
        for org in &spec.organizations {
            params.distinguished_name.push(DnType::OrganizationName, org.as_str());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        if spec.server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, spec.valid_for.unwrap_or(LEAF_VALIDITY));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The SHA-256 of the CA certificate's DER, hex: what a join token pins.
    pub fn fingerprint(&self) -> Result<String, TlsError> {
        fingerprint(&self.cert_pem, Path::new("<ca>"))
    }
}

/// The SHA-256 of the first certificate in `pem` (DER), lower-case hex.
pub fn fingerprint(pem: &str, path: &Path) -> Result<String, TlsError> {
    let der = crate::config::certs_from_pem(pem.as_bytes(), path)?.remove(0);
    Ok(hex::encode(sha2::Sha256::digest(der.as_ref())))
}

/// The spec `path`'s certificate was issued with (subject, hosts, usages), to issue it again.
pub fn spec_of(path: &Path) -> Result<LeafSpec, TlsError> {
    let pem = read_file(path)?;
    let der = crate::config::certs_from_pem(pem.as_bytes(), path)?.remove(0);
    let bad = |message: String| TlsError::Certificate { path: path.to_path_buf(), message };
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| attr.as_str().map(str::to_string).ok();
    let common_name = cert.subject().iter_common_name().next().and_then(text).unwrap_or_default();
    let organizations = cert.subject().iter_organization().filter_map(text).collect();
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => hosts.push(dns.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                    4 => hosts.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default()).to_string()),
                    16 => {
                        hosts.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default()).to_string())
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let (server, client) = match cert.extended_key_usage() {
        Ok(Some(eku)) => (eku.value.server_auth, eku.value.client_auth),
        _ => (false, false),
    };
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    let valid_for = u64::try_from(lifetime).ok().map(|s| Duration::from_secs(s).saturating_sub(BACKDATE));
    Ok(LeafSpec { common_name, organizations, hosts, server, client, valid_for })
}

impl Authority {
    /// Issues the certificate in `cert` again, with the same subject, hosts and usages, a fresh
    /// key and a new validity as long as the old one; writes both files (key first).
    pub fn renew(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let spec = spec_of(cert)?;
        self.issue(&spec)?.write(cert, key)
    }
}

/// What a certificate file holds, for `trireme certs check-expiration`.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub not_after: time::OffsetDateTime,
    pub is_ca: bool,
}

/// The first certificate in the file `path`, described.
pub fn inspect(path: &Path) -> Result<CertInfo, TlsError> {
    let pem = read_file(path)?;
    let der = crate::config::certs_from_pem(pem.as_bytes(), path)?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TlsError::Certificate { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: cert.is_ca(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_leaf_names_its_subject_and_lasts_a_year() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::generate("etcd-ca").expect("ca");
        let leaf = ca
            .issue(&LeafSpec {
                common_name: "system:node:n1".into(),
                organizations: vec!["system:nodes".into()],
                client: true,
                ..Default::default()
            })
            .expect("leaf");
        leaf.write(&dir.path().join("n1.crt"), &dir.path().join("n1.key")).expect("write");
        let info = inspect(&dir.path().join("n1.crt")).expect("inspect");
        assert!(info.subject.contains("CN=system:node:n1"), "{}", info.subject);
        assert!(info.subject.contains("O=system:nodes"), "{}", info.subject);
        assert!(info.issuer.contains("CN=etcd-ca"), "{}", info.issuer);
        assert!(!info.is_ca);
        let left = info.not_after - time::OffsetDateTime::now_utc();
        assert!(left > time::Duration::days(364) && left <= time::Duration::days(365), "{left}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("n1.key")).expect("key").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }

    #[test]
    fn a_renewed_certificate_keeps_its_subject_hosts_and_usages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("p.crt"), dir.path().join("p.key"));
        let ca = Authority::generate("etcd-ca").expect("ca");
        let spec = LeafSpec {
            common_name: "m1".into(),
            organizations: vec!["trireme".into()],
            hosts: vec!["10.0.0.1".into(), "m1.example".into(), "::1".into()],
            server: true,
            client: true,
            valid_for: Some(Duration::from_secs(7 * 24 * 3600)),
        };
        ca.issue(&spec).expect("issue").write(&cert, &key).expect("write");
        let before = std::fs::read_to_string(&cert).expect("read");
        ca.renew(&cert, &key).expect("renew");
        assert_ne!(before, std::fs::read_to_string(&cert).expect("read"));
        let renewed = spec_of(&cert).expect("spec");
        assert_eq!(renewed.common_name, "m1");
        assert_eq!(renewed.organizations, vec!["trireme".to_string()]);
        assert_eq!(renewed.hosts, spec.hosts);
        assert!(renewed.server && renewed.client);
        let days = renewed.valid_for.expect("validity").as_secs() / 86_400;
        assert_eq!(days, 7, "as long as before");
    }

    #[test]
    fn a_ca_survives_its_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::generate("etcd-ca").expect("ca");
        ca.write(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).expect("write");
        let loaded = Authority::load(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).expect("load");
        assert_eq!(loaded.fingerprint().expect("fp"), ca.fingerprint().expect("fp"));
        assert!(inspect(&dir.path().join("ca.crt")).expect("inspect").is_ca);
    }

    #[test]
    fn a_broken_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.crt"), "not a certificate").expect("write");
        std::fs::write(dir.path().join("ca.key"), "not a key").expect("write");
        let err = Authority::load(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).expect_err("broken");
        assert!(err.to_string().contains("ca."), "{err}");
        let err = inspect(&dir.path().join("ca.crt")).expect_err("broken");
        assert!(err.to_string().contains("ca.crt"), "{err}");
        let err = inspect(&dir.path().join("absent.crt")).expect_err("absent");
        assert!(err.to_string().contains("absent.crt"), "{err}");
    }

    #[test]
    fn a_certificate_for_nothing_is_refused() {
        let ca = Authority::generate("etcd-ca").expect("ca");
        assert!(ca.issue(&LeafSpec { common_name: "x".into(), ..Default::default() }).is_err());
    }
}
