//! Mutual TLS on the peer and etcd ports, started with etcd's flags: the masters elect and
//! replicate over TLS, etcdctl and `trireme snapshot` work with a client certificate, and every
//! connection without a certificate of the cluster's CA — none, another CA's, plain HTTP — is
//! refused, on both ports.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use common::Cluster;
use common::etcdctl;
use common::ok;
use common::trireme;
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

fn addr_of(url: &str) -> Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    Ok(rest.trim_end_matches('/').parse()?)
}

/// Whether a TLS client with `config` gets an HTTP/2 conversation going with `addr`: the
/// handshake completes and the server answers the preface with its SETTINGS (a server that
/// refuses the client's certificate says so with an alert instead, or closes).
async fn accepted(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<bool> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await else { return Ok(false) };
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await?;
    let mut buf = [0u8; 9];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(n)) => Ok(n > 0),
        Ok(Err(_)) => Ok(false),
        Err(_) => anyhow::bail!("{addr} neither answered nor refused within 5 s"),
    }
}

fn client_config(ca_pem: &str, identity: Option<&trireme_tls::pki::Issued>) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(
            CertificateDer::pem_slice_iter(id.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_speak_mutual_tls_and_refuse_whoever_has_no_cluster_certificate() -> Result<()> {
    let mut cluster = Cluster::start_tls(3).await?;
    let pki = cluster.pki.as_ref().context("a TLS cluster")?;
    let ca_pem = pki.ca_pem().to_string();
    let ca_flag = format!("--cacert={}", pki.dir.join("ca.crt").display());
    let client_flags = pki.client_flags();

    // The tools' certificate opens the etcd API, on every master.
    ok(cluster.etcdctl(&["put", "greeting", "hello"]).await?)?;
    assert_eq!(ok(cluster.etcdctl(&["get", "greeting", "--print-value-only"]).await?)?.trim(), "hello");
    let status = ok(cluster.etcdctl(&["endpoint", "status", "-w", "json"]).await?)?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    assert_eq!(status.as_array().map(Vec::len), Some(3), "{status}");
    assert!(ok(cluster.etcdctl(&["member", "list"]).await?)?.contains("https://127.0.0.1:"));

    // Without a certificate, with one of another CA, or in plain HTTP, etcdctl is refused.
    let first = cluster.masters[0].client_url.clone();
    let out = etcdctl(&first, &[&ca_flag, "get", "greeting"], None).await?;
    assert!(!out.status.success(), "etcdctl without a client certificate got in");
    let stranger_ca = trireme_tls::pki::Authority::generate("someone-else")?;
    let stranger = stranger_ca.issue(&trireme_tls::pki::LeafSpec {
        common_name: "root".into(),
        client: true,
        server: true,
        hosts: vec!["127.0.0.1".into()],
        ..Default::default()
    })?;
    stranger.write(&cluster.dir.path().join("stranger.crt"), &cluster.dir.path().join("stranger.key"))?;
    let out = etcdctl(
        &first,
        &[
            &ca_flag,
            &format!("--cert={}", cluster.dir.path().join("stranger.crt").display()),
            &format!("--key={}", cluster.dir.path().join("stranger.key").display()),
            "get",
            "greeting",
        ],
        None,
    )
    .await?;
    assert!(!out.status.success(), "etcdctl with another CA's certificate got in");
    let out = etcdctl(&first.replace("https://", "http://"), &["get", "greeting"], None).await?;
    assert!(!out.status.success(), "plain HTTP got in");

    // The same at the TLS level, on both ports of every master.
    let own = trireme_tls::pki::Issued {
        cert_pem: std::fs::read_to_string(pki.dir.join("client.crt"))?,
        key_pem: std::fs::read_to_string(pki.dir.join("client.key"))?,
    };
    for m in &cluster.masters {
        for url in [&m.client_url, &m.peer_url] {
            let addr = addr_of(url)?;
            assert!(
                accepted(addr, client_config(&ca_pem, Some(&own))?).await?,
                "{url} refused the cluster's certificate"
            );
            assert!(
                !accepted(addr, client_config(&ca_pem, None)?).await?,
                "{url} let in a client without a certificate"
            );
            assert!(
                !accepted(addr, client_config(&ca_pem, Some(&stranger))?).await?,
                "{url} let in another CA's certificate"
            );
        }
    }
    let log = std::fs::read_to_string(&cluster.masters[0].log)?;
    assert!(log.contains("rejected connection"), "refusals are logged:\n{}", cluster.log_tail(0));

    // Operator commands take etcdctl's TLS flags.
    let snapshot = cluster.dir.path().join("tls.db");
    let mut args = vec!["snapshot".to_string(), "save".into()];
    args.push(snapshot.display().to_string());
    args.push(format!("--endpoints={first}"));
    args.extend(client_flags.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(trireme(&args).await?)?;
    assert!(snapshot.metadata()?.len() > 0);
    let out = trireme(&["snapshot", "save", &snapshot.display().to_string(), &format!("--endpoints={first}")]).await?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cacert"), "the error says what is missing: {stderr}");

    // Losing the leader: the others elect a new one over TLS and take writes.
    let leader = cluster.wait_leader().await?;
    cluster.signal(leader, Signal::SIGKILL).await?;
    let next = cluster.wait_leader().await?;
    assert_ne!(next, leader);
    ok(cluster.etcdctl(&["put", "after", "failover"]).await?)?;
    cluster.restart(leader)?;
    cluster.wait_leader().await?;
    let tls = cluster.client_tls()?;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let status = trireme_etcd::client::status(&cluster.masters[leader].client_url, tls.clone()).await;
        if status.is_ok_and(|s| s.leader != 0) {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the restarted master did not rejoin over TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let only_restarted = etcdctl(
        &cluster.masters[leader].client_url,
        &client_flags.iter().map(String::as_str).chain(["get", "after", "--print-value-only"]).collect::<Vec<_>>(),
        None,
    )
    .await?;
    assert_eq!(ok(only_restarted)?.trim(), "failover");
    Ok(())
}
