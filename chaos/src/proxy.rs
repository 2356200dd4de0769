//! The fault proxy between masters: one TCP listener per master on the peer URL it
//! advertises, forwarding to its real peer port.
//!
//! Every master makes its peer connections from its own loopback address
//! (`--peer-source-address 127.77.0.I`), so a connection arriving at master J's proxy from
//! 127.77.0.I is the link I→J. A blocked link forwards nothing in either direction: bytes
//! already read are held, connections made while it is blocked are accepted and held
//! unconnected; everything resumes when the link heals (the senders' TCP and HTTP/2 keep-alive
//! timers decide whether a connection survives, as on a real network). A link may also get
//! a delay, added before every chunk it forwards.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The state of the links: a link is (from master index, to master index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    blocked: BTreeSet<(usize, usize)>,
    delay: BTreeMap<(usize, usize), Duration>,
}

impl Links {
    fn blocked(&self, link: Option<(usize, usize)>) -> bool {
        link.is_some_and(|l| self.blocked.contains(&l))
    }

    fn delay(&self, link: Option<(usize, usize)>) -> Duration {
        link.and_then(|l| self.delay.get(&l).copied()).unwrap_or_default()
    }
}

/// One master as the proxy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// The master's own address (its peer connections come from it).
    pub ip: IpAddr,
    /// Where the proxy listens: the peer URL the master advertises.
    pub advertised: SocketAddr,
    /// The master's real `--listen-peer-urls` address.
    pub real: SocketAddr,
}

/// The running proxies; cloning shares them.
#[derive(Clone)]
pub struct FaultProxy {
    links: watch::Sender<Links>,
    masters: usize,
}

impl FaultProxy {
    /// Binds a listener for every master and starts forwarding until `shutdown`.
    pub async fn start(endpoints: Vec<Endpoint>, shutdown: CancellationToken) -> Result<FaultProxy> {
        let (links, _) = watch::channel(Links::default());
        let sources: Vec<IpAddr> = endpoints.iter().map(|e| e.ip).collect();
        for (to, endpoint) in endpoints.iter().enumerate() {
            let listener = TcpListener::bind(endpoint.advertised)
                .await
                .with_context(|| format!("fault proxy: binding {}", endpoint.advertised))?;
            let (links, sources, real, shutdown) = (links.clone(), sources.clone(), endpoint.real, shutdown.clone());
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        () = shutdown.cancelled() => return,
                    };
                    let Ok((stream, peer)) = accepted else { continue };
                    let from = sources.iter().position(|ip| *ip == peer.ip());
                    let link = from.map(|from| (from, to));
                    tokio::spawn(forward(stream, real, link, links.subscribe(), shutdown.clone()));
                }
            });
        }
        Ok(FaultProxy { links, masters: endpoints.len() })
    }

    /// Blocks every link between master `isolated` and the others, both directions.
    pub fn isolate(&self, isolated: usize) {
        self.links.send_modify(|l| {
            for other in (0..self.masters).filter(|o| *o != isolated) {
                l.blocked.insert((isolated, other));
                l.blocked.insert((other, isolated));
            }
        });
    }

    /// Delays every link from and to master `slow` by `delay` per forwarded chunk.
    pub fn slow_down(&self, slow: usize, delay: Duration) {
        self.links.send_modify(|l| {
            for other in (0..self.masters).filter(|o| *o != slow) {
                l.delay.insert((slow, other), delay);
                l.delay.insert((other, slow), delay);
            }
        });
    }

    /// Unblocks and undelays every link.
    pub fn heal(&self) {
        self.links.send_modify(|l| *l = Links::default());
    }
}

/// Waits until `link` is not blocked; returns its delay.
async fn passable(links: &mut watch::Receiver<Links>, link: Option<(usize, usize)>) -> Duration {
    match links.wait_for(|l| !l.blocked(link)).await {
        Ok(l) => l.delay(link),
        // The proxy is gone: the process is ending.
        Err(_) => Duration::ZERO,
    }
}

async fn forward(
    inbound: TcpStream,
    real: SocketAddr,
    link: Option<(usize, usize)>,
    mut links: watch::Receiver<Links>,
    shutdown: CancellationToken,
) {
    // A connection made across a blocked link is accepted and held.
    tokio::select! {
        _ = passable(&mut links, link) => {}
        () = shutdown.cancelled() => return,
    }
    let Ok(outbound) = TcpStream::connect(real).await else { return };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        _ = async {
            tokio::join!(
                pump(in_read, out_write, link, links.clone()),
                pump(out_read, in_write, link, links.clone()),
            )
        } => {}
        () = shutdown.cancelled() => {}
    }
}

/// Copies one direction of a connection, holding whatever it has while the link is blocked.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Option<(usize, usize)>,
    mut links: watch::Receiver<Links>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        passable(&mut links, link).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = passable(&mut links, link).await;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn free_addr(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("an IP"), crate::ports::reserve().expect("a free port"))
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await.ok()?.ok()?;
        Some(buf)
    }

    #[tokio::test]
    async fn a_partition_holds_traffic_on_the_cut_links_until_healed() {
        let real = echo_server().await;
        // Master 0 at 127.0.0.1 sends to master 1's proxy; master 1's real port is the echo.
        let other = free_addr("127.0.0.1").await;
        let advertised = free_addr("127.0.0.1").await;
        let endpoints = vec![
            Endpoint { ip: "127.0.0.1".parse().expect("an IP"), advertised: other, real: other },
            Endpoint { ip: "127.0.0.2".parse().expect("an IP"), advertised, real },
        ];
        let shutdown = CancellationToken::new();
        let proxy = FaultProxy::start(endpoints, shutdown.clone()).await.expect("proxy");
        let mut s = TcpStream::connect(advertised).await.expect("connect");
        assert_eq!(roundtrip(&mut s, b"one").await.as_deref(), Some(&b"one"[..]));
        proxy.isolate(1);
        assert_eq!(roundtrip(&mut s, b"two").await, None, "bytes crossed a cut link");
        // A new connection is accepted but nothing flows.
        let mut fresh = TcpStream::connect(advertised).await.expect("connect");
        assert_eq!(roundtrip(&mut fresh, b"new").await, None);
        proxy.heal();
        let mut buf = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await.expect("in time").expect("read");
        assert_eq!(&buf, b"two", "held bytes are delivered after healing");
        tokio::time::timeout(Duration::from_secs(2), fresh.read_exact(&mut buf)).await.expect("in time").expect("read");
        assert_eq!(&buf, b"new");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn connections_from_unknown_addresses_are_never_blocked() {
        let real = echo_server().await;
        let advertised = free_addr("127.0.0.1").await;
        let endpoints = vec![
            Endpoint { ip: "127.0.0.3".parse().expect("an IP"), advertised: free_addr("127.0.0.1").await, real },
            Endpoint { ip: "127.0.0.4".parse().expect("an IP"), advertised, real },
        ];
        let shutdown = CancellationToken::new();
        let proxy = FaultProxy::start(endpoints, shutdown.clone()).await.expect("proxy");
        proxy.isolate(1);
        let mut s = TcpStream::connect(advertised).await.expect("connect");
        assert_eq!(roundtrip(&mut s, b"hi").await.as_deref(), Some(&b"hi"[..]));
        shutdown.cancel();
    }
}
