//! The balancer against real sockets: backends are small TCP servers that answer with their name,
//! or TLS servers that answer `/readyz` as a master does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use trireme_lb::Backend;
use trireme_lb::Balancer;
use trireme_lb::Check;
use trireme_lb::Options;

const WAIT: Duration = Duration::from_secs(10);

fn fast() -> Options {
    Options {
        interval: Duration::from_millis(50),
        check_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        rise: 2,
    }
}

/// A backend that writes its name to every connection and then echoes what it reads; stops
/// (listener and connections) when its token fires.
async fn named_backend(name: &'static str) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                if socket.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 64];
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        read = socket.read(&mut buf) => match read {
                            Ok(0) | Err(_) => return,
                            Ok(n) => if socket.write_all(&buf[..n]).await.is_err() { return },
                        },
                    }
                }
            });
        }
    });
    (addr, token)
}

/// The name of the backend a new connection through `lb` reaches, and the connection.
async fn reach(lb: SocketAddr) -> std::io::Result<(String, TcpStream)> {
    let mut stream = TcpStream::connect(lb).await?;
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await {
            Ok(Ok(1)) if byte[0] == b'\n' => break,
            Ok(Ok(1)) => name.push(byte[0]),
            Ok(Ok(_)) => return Err(std::io::Error::other("closed before naming its backend")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("no answer")),
        }
    }
    Ok((String::from_utf8_lossy(&name).into_owned(), stream))
}

async fn start(
    backends: &[(&'static str, SocketAddr)],
    check: Check,
) -> (SocketAddr, trireme_lb::StatusHandle, CancellationToken) {
    let backends = backends.iter().map(|(name, addr)| Backend { name: (*name).into(), addr: *addr }).collect();
    let lb = Balancer::bind("test", "127.0.0.1:0".parse().expect("addr"), backends, check, fast()).await.expect("bind");
    let (addr, status, stop) = (lb.local_addr(), lb.status(), CancellationToken::new());
    tokio::spawn(lb.run(stop.clone()));
    (addr, status, stop)
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_are_spread_over_every_healthy_backend() {
    let (a, _sa) = named_backend("a").await;
    let (b, _sb) = named_backend("b").await;
    let (lb, status, stop) = start(&[("a", a), ("b", b)], Check::Tcp).await;
    wait_until("both backends are up", || status.backends().iter().all(|s| s.up)).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (name, mut stream) = reach(lb).await.expect("through the balancer");
        stream.write_all(b"ping").await.expect("write");
        let mut echo = [0u8; 4];
        stream.read_exact(&mut echo).await.expect("echo");
        assert_eq!(&echo, b"ping");
        seen.insert(name);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    stop.cancel();
}

#[tokio::test]
async fn a_dead_backend_costs_clients_nothing_and_its_connections_end() {
    let (a, stop_a) = named_backend("a").await;
    let (b, _sb) = named_backend("b").await;
    let (lb, status, stop) = start(&[("a", a), ("b", b)], Check::Tcp).await;
    wait_until("both backends are up", || status.backends().iter().all(|s| s.up)).await;
    // A connection open on a, then a dies: the connection ends, and every new one — even
    // before a check has noticed — reaches b.
    let mut on_a = loop {
        let (name, stream) = reach(lb).await.expect("through the balancer");
        if name == "a" {
            break stream;
        }
    };
    stop_a.cancel();
    for _ in 0..10 {
        let (name, _) = reach(lb).await.expect("a connection while a is dead");
        assert_eq!(name, "b");
    }
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(WAIT, on_a.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the connection to the dead backend ended");
    wait_until("a is marked down", || status.backends().iter().any(|s| s.backend.name == "a" && !s.up)).await;
    stop.cancel();
}

#[tokio::test]
async fn a_backend_that_fails_its_check_has_its_open_connections_closed() {
    // The backend keeps its connections open and only its listener goes (as a master cut off
    // from its quorum keeps its sockets but answers /readyz with 503): the balancer must end
    // them, so clients reconnect elsewhere.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = listener.local_addr().expect("addr");
    let close_listener = CancellationToken::new();
    let closing = close_listener.clone();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            tokio::select! {
                _ = closing.cancelled() => break,
                accepted = listener.accept() => {
                    let (mut socket, _) = accepted.expect("accept");
                    // Health checks close theirs at once; the client's stays open.
                    let _ = socket.write_all(b"a\n").await;
                    open.push(socket);
                }
            }
        }
        drop(listener);
        // Hold every accepted connection until the balancer closes its side.
        for mut socket in open {
            let mut buf = Vec::new();
            let _ = socket.read_to_end(&mut buf).await;
        }
    });
    let (lb, status, stop) = start(&[("a", a)], Check::Tcp).await;
    // Connections are closed when a backend goes from up to down (not on every failed check of
    // a backend already down, which would cut what clients reach through the fallback).
    wait_until("a is up", || status.backends().iter().all(|s| s.up)).await;
    let (name, mut stream) = reach(lb).await.expect("through the balancer");
    assert_eq!(name, "a");
    close_listener.cancel();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.expect("closed by the balancer").expect("read");
    wait_until("a is marked down", || status.backends().iter().all(|s| !s.up)).await;
    stop.cancel();
    tokio::time::timeout(WAIT, held).await.expect("the backend saw its connection end").expect("task");
}

#[tokio::test]
async fn with_every_backend_down_a_client_is_refused_at_once_not_left_hanging() {
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = dead.local_addr().expect("addr");
    drop(dead);
    let (lb, _status, stop) = start(&[("gone", addr)], Check::Tcp).await;
    let mut stream = TcpStream::connect(lb).await.expect("the balancer accepts");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await.expect("closed at once");
    assert!(read.is_err() || buf.is_empty(), "{read:?} {buf:?}");
    stop.cancel();
}

#[tokio::test]
async fn bad_configuration_is_refused_with_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("addr");
    let backend = vec![Backend { name: "m1".into(), addr }];
    let error = Balancer::bind("test", addr, backend, Check::Tcp, fast()).await.err().expect("port in use");
    assert!(error.to_string().starts_with(&format!("cannot listen on {addr}")), "{error}");
    let error = Balancer::bind("test", "127.0.0.1:0".parse().expect("addr"), vec![], Check::Tcp, fast()).await;
    assert_eq!(error.err().map(|e| e.to_string()).as_deref(), Some("no backends given"));
    let error = Check::readyz(b"not a certificate").expect_err("no CA");
    assert!(error.to_string().contains("CA for health checks"), "{error}");
}

/// A TLS server answering every request with `status` and `body`, as a master's `/readyz`.
async fn readyz_server(status: &'static str, body: &'static str) -> (SocketAddr, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, ca.pem().into_bytes())
}

#[tokio::test]
async fn readyz_passes_on_200_and_fails_on_503_or_an_untrusted_certificate() {
    let (ready, ca) = readyz_server("200 OK", "ok").await;
    Check::readyz(&ca).expect("check").run(ready).await.expect("a ready master passes");

    let (unready, ca2) =
        readyz_server("503 Service Unavailable", "[-]etcd failed: no quorum\nreadyz check failed\n").await;
    let error = Check::readyz(&ca2).expect("check").run(unready).await.expect_err("503 fails");
    assert!(error.to_string().contains("/readyz answered 503: [-]etcd failed: no quorum"), "{error}");

    // The right answer from a server the CA did not sign is no pass.
    let error = Check::readyz(&ca2).expect("check").run(ready).await.expect_err("untrusted");
    assert!(error.to_string().starts_with("TLS:"), "{error}");
}
