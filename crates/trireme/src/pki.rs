//! The etcd side's certificates of a cluster, as files in one directory: the CA for peer and
//! etcd-client traffic, each master's peer and serving certificates, and a client certificate
//! for etcdctl, `trireme snapshot`/`member` and the balancer's health checks. Laid out as
//! kubeadm lays out `/etc/kubernetes/pki/etcd`.

use std::ffi::OsString;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use anyhow::Result;
use trireme_tls::config::TlsFiles;
use trireme_tls::pki::Authority;
use trireme_tls::pki::LeafSpec;

/// The common name of the client certificate tools use: etcd's administrator.
pub const ETCD_CLIENT_CN: &str = "root";

/// The etcd PKI kept in `dir`.
#[derive(Debug, Clone)]
pub struct EtcdPki {
    dir: PathBuf,
}

impl EtcdPki {
    /// The PKI kept in `dir`, as it is.
    pub fn at(dir: &Path) -> EtcdPki {
        EtcdPki { dir: dir.to_path_buf() }
    }

    /// Writes what a joining master received: the etcd CA with its key, its peer, serving and
    /// client certificates.
    pub fn install(dir: &Path, name: &str, answer: &trireme_apiserver::join::JoinResponse) -> Result<EtcdPki> {
        let pki = EtcdPki::at(dir);
        let ca = answer.etcd_ca.as_ref().context("the join answer holds no etcd CA")?;
        Authority::from_pem(&ca.cert_pem, &ca.key_pem)?.write(&pki.ca_cert(), &pki.ca_key())?;
        for (use_, (cert, key)) in
            [("peer", pki.peer(name)), ("server", pki.server(name)), ("etcd-client", pki.client())]
        {
            let pair = answer
                .certificates
                .get(use_)
                .with_context(|| format!("the join answer holds no {use_} certificate"))?;
            trireme_tls::pki::Issued { cert_pem: pair.cert_pem.clone(), key_pem: pair.key_pem.clone() }
                .write(&cert, &key)?;
        }
        Ok(pki)
    }

    /// The CA certificate: trusted by members for peers and clients, by clients for members.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("etcd-ca.crt")
    }

    /// The CA's key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("etcd-ca.key")
    }

    /// The tools' client certificate and key.
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("etcd-client.crt"), self.dir.join("etcd-client.key"))
    }

    /// Master `name`'s peer certificate and key (server and client authentication).
    pub fn peer(&self, name: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{name}-peer.crt")), self.dir.join(format!("{name}-peer.key")))
    }

    /// Master `name`'s serving certificate and key for its etcd API.
    pub fn server(&self, name: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{name}-server.crt")), self.dir.join(format!("{name}-server.key")))
    }

    /// The PKI in `dir`, made where missing: the CA (a new CA re-issues every certificate) and,
    /// for each of `masters` (name and the hosts its certificates cover), its peer and serving
    /// certificates, and the tools' client certificate.
    pub fn ensure(dir: &Path, masters: &[(String, Vec<String>)]) -> Result<EtcdPki> {
        let pki = EtcdPki { dir: dir.to_path_buf() };
        let fresh = !pki.ca_cert().exists();
        let ca = if fresh {
            let ca = Authority::generate("trireme-etcd-ca")?;
            ca.write(&pki.ca_cert(), &pki.ca_key())?;
            ca
        } else {
            Authority::load(&pki.ca_cert(), &pki.ca_key())?
        };
        let issue = |files: (PathBuf, PathBuf), spec: LeafSpec| -> Result<()> {
            if fresh || !files.0.exists() || !files.1.exists() {
                ca.issue(&spec)?.write(&files.0, &files.1)?;
            }
            Ok(())
        };
        for (name, hosts) in masters {
            let mut hosts = hosts.clone();
            for default in ["127.0.0.1", "localhost"] {
                if !hosts.iter().any(|h| h == default) {
                    hosts.push(default.to_string());
                }
            }
            let peer = LeafSpec {
                common_name: name.clone(),
                hosts: hosts.clone(),
                server: true,
                client: true,
                ..Default::default()
            };
            issue(pki.peer(name), peer)?;
            let server = LeafSpec { common_name: name.clone(), hosts, server: true, ..Default::default() };
            issue(pki.server(name), server)?;
        }
        let client = LeafSpec { common_name: ETCD_CLIENT_CN.into(), client: true, ..Default::default() };
        issue(pki.client(), client)?;
        Ok(pki)
    }

    /// The flags that make master `name` serve and dial with mutual TLS (etcd's names).
    pub fn master_flags(&self, name: &str) -> Vec<OsString> {
        let (peer_cert, peer_key) = self.peer(name);
        let (cert, key) = self.server(name);
        let ca = self.ca_cert();
        let mut flags: Vec<OsString> = Vec::new();
        for (flag, path) in [
            ("--cert-file", cert),
            ("--key-file", key),
            ("--trusted-ca-file", ca.clone()),
            ("--peer-cert-file", peer_cert),
            ("--peer-key-file", peer_key),
            ("--peer-trusted-ca-file", ca),
            ("--etcd-ca-key-file", self.ca_key()),
        ] {
            flags.push(flag.into());
            flags.push(path.into());
        }
        flags.push("--client-cert-auth".into());
        flags.push("--peer-client-cert-auth".into());
        flags
    }

    /// The TLS a tool dials the etcd API with.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let (cert, key) = self.client();
        let files =
            TlsFiles { cert: Some(cert), key: Some(key), trusted_ca: Some(self.ca_cert()), client_cert_auth: false };
        files.client_config().with_context(|| format!("the etcd client certificate in {}", self.dir.display()))
    }
}

/// One certificate file of a PKI directory.
#[derive(Debug)]
pub struct CertFile {
    /// `NAME.crt`, without the extension.
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub info: trireme_tls::pki::CertInfo,
}

/// Every certificate in `dir` (`*.crt` with a `*.key` beside it), by name.
pub fn certificates(dir: &Path) -> Result<Vec<CertFile>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".crt")) else {
            continue;
        };
        let info = trireme_tls::pki::inspect(&path)?;
        found.push(CertFile { name: name.to_string(), key: path.with_extension("key"), cert: path.clone(), info });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Issues again, from their CA in `dir`, the leaf certificates of `dir` that expire within
/// `within` (all of them with `None`); returns their names. Servers and clients using them pick
/// them up at their next handshake (see [`trireme_tls::reload`]).
pub fn renew(dir: &Path, within: Option<std::time::Duration>) -> Result<Vec<String>> {
    // Masters sharing a directory (a `trireme up` cluster's) take turns: the second one finds
    // the certificates renewed already. A certificate and its key are replaced by one renewer.
    let lock_path = dir.join(".renew.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    let all = certificates(dir)?;
    let authorities: Vec<(&CertFile, Authority)> = all
        .iter()
        .filter(|c| c.info.is_ca && c.key.exists())
        .map(|c| Ok((c, Authority::load(&c.cert, &c.key)?)))
        .collect::<Result<_>>()?;
    let deadline = within.map(|w| time::OffsetDateTime::now_utc() + w);
    let mut renewed = Vec::new();
    for leaf in all.iter().filter(|c| !c.info.is_ca) {
        if deadline.is_some_and(|d| leaf.info.not_after > d) {
            continue;
        }
        let Some((_, ca)) = authorities.iter().find(|(ca, _)| ca.info.subject == leaf.info.issuer) else {
            tracing::warn!(cert = %leaf.cert.display(), issuer = %leaf.info.issuer, "no CA key here to renew it with");
            continue;
        };
        ca.renew(&leaf.cert, &leaf.key).with_context(|| format!("renewing {}", leaf.cert.display()))?;
        renewed.push(leaf.name.clone());
    }
    Ok(renewed)
}

/// How early certificates are renewed before they expire.
pub const RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Renews the certificates of `dir` that come within [`RENEW_BEFORE`] of expiring, checking
/// every hour until `stop`.
pub async fn renew_forever(dir: PathBuf, stop: tokio_util::sync::CancellationToken) {
    loop {
        match renew(&dir, Some(RENEW_BEFORE)) {
            Ok(renewed) if !renewed.is_empty() => tracing::info!(?renewed, "renewed certificates close to expiry"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = format!("{e:#}"), "could not renew certificates"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}
