//! What mutual TLS costs: put throughput of a plain cluster and of one with mutual TLS on its
//! peer and client ports (etcd's flags, certificates made here), for each system.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use trireme_tls::config::TlsFiles;
use trireme_tls::pki::Authority;
use trireme_tls::pki::LeafSpec;

use crate::Cluster;
use crate::Op;
use crate::load;

/// A CA with a client certificate, issuing each member's.
pub struct Pki {
    dir: PathBuf,
    ca: Authority,
}

impl Pki {
    pub fn new(dir: &Path) -> Result<Pki> {
        let ca = Authority::generate("bench-ca")?;
        ca.write(&dir.join("ca.crt"), &dir.join("ca.key"))?;
        let client = LeafSpec { common_name: "root".into(), client: true, ..Default::default() };
        ca.issue(&client)?.write(&dir.join("client.crt"), &dir.join("client.key"))?;
        Ok(Pki { dir: dir.to_path_buf(), ca })
    }

    /// Issues `member`'s certificate (peer and server, for 127.0.0.1) and returns its flags.
    pub fn member_flags(&self, member: &str) -> Result<Vec<String>> {
        let spec = LeafSpec {
            common_name: member.into(),
            hosts: vec!["127.0.0.1".into()],
            server: true,
            client: true,
            ..Default::default()
        };
        let (cert, key) = (self.dir.join(format!("{member}.crt")), self.dir.join(format!("{member}.key")));
        self.ca.issue(&spec)?.write(&cert, &key)?;
        let ca = self.dir.join("ca.crt");
        let path = |p: &Path| p.display().to_string();
        Ok(vec![
            format!("--cert-file={}", path(&cert)),
            format!("--key-file={}", path(&key)),
            format!("--trusted-ca-file={}", path(&ca)),
            "--client-cert-auth".into(),
            format!("--peer-cert-file={}", path(&cert)),
            format!("--peer-key-file={}", path(&key)),
            format!("--peer-trusted-ca-file={}", path(&ca)),
            "--peer-client-cert-auth".into(),
        ])
    }

    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let files = TlsFiles {
            cert: Some(self.dir.join("client.crt")),
            key: Some(self.dir.join("client.key")),
            trusted_ca: Some(self.dir.join("ca.crt")),
            client_cert_auth: false,
        };
        Ok(files.client_config()?)
    }
}

/// Prints put throughput (64 clients) of each system plain and with mutual TLS, and the cost.
pub async fn cost(trireme: &PathBuf, etcd: &PathBuf, with_etcd: bool, duration: Duration) -> Result<()> {
    println!();
    println!("| put 256 B, 64 clients        |     plain ops/s  p99 ms |  mutual TLS ops/s  p99 ms |  TLS cost |");
    println!("|------------------------------|-------------------------|---------------------------|-----------|");
    let mut systems: Vec<(&'static str, &PathBuf)> = vec![("trireme", trireme)];
    if with_etcd {
        systems.push(("etcd", etcd));
    }
    for (name, bin) in systems {
        let plain = Cluster::start(name, bin, &[]).await?;
        let p = load(&plain, Op::Put, 64, duration).await?;
        drop(plain);
        let tls = Cluster::start_tls(name, bin, &[]).await?;
        let t = load(&tls, Op::Put, 64, duration).await?;
        drop(tls);
        let cost = 100.0 * (1.0 - t.ops_per_sec / p.ops_per_sec.max(1.0));
        println!(
            "| {name:<28} | {:>15.0} {:>7.2} | {:>17.0} {:>7.2} | {:>8.1} % |",
            p.ops_per_sec, p.p99_ms, t.ops_per_sec, t.p99_ms, cost
        );
    }
    Ok(())
}
