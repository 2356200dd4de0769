//! The listener manager against real sockets on loopback, fed tables directly (no API server).
//!
//! Backends are small servers on 127.0.0.x that read a request to its end (the client's
//! half-close) and answer with their own name and the request, so each answer says which
//! backend the proxy picked and that half-close went through both ways.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use trireme_proxy::ListenerManager;
use trireme_proxy::Route;
use trireme_proxy::Table;

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(5);

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A backend at `127.0.0.<last>:<any port>` answering `"<name>:<request>"`.
async fn backend(last: u8, name: &'static str, stop: CancellationToken) -> Result<SocketAddr> {
    let listener = TcpListener::bind((loopback(last), 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                if conn.read_to_end(&mut request).await.is_ok() {
                    let answer = format!("{name}:{}", String::from_utf8_lossy(&request));
                    let _ = conn.write_all(answer.as_bytes()).await;
                    let _ = conn.shutdown().await;
                }
            });
        }
    });
    Ok(addr)
}

/// An address on `127.0.0.<last>` that nothing listens on: bound once to learn a free port.
fn free_addr(last: u8) -> Result<SocketAddr> {
    let probe = std::net::TcpListener::bind((loopback(last), 0))?;
    Ok(probe.local_addr()?)
}

/// Sends `request` through `addr`, half-closes, and reads the answer to its end.
async fn ask(addr: SocketAddr, request: &str) -> Result<String> {
    timeout(WAIT, async {
        let mut conn = TcpStream::connect(addr).await?;
        conn.write_all(request.as_bytes()).await?;
        conn.shutdown().await?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await?;
        anyhow::Ok(answer)
    })
    .await
    .context("timed out")?
}

/// Which backend answered.
async fn who(addr: SocketAddr) -> Result<String> {
    let answer = ask(addr, "ping").await?;
    let name = answer.strip_suffix(":ping").with_context(|| format!("unexpected answer {answer:?}"))?;
    Ok(name.to_string())
}

fn table(entries: &[(SocketAddr, &[SocketAddr])]) -> Table {
    let routes = entries
        .iter()
        .map(|&(addr, backends)| {
            let route = Route { service: "default/web".into(), port_name: "http".into(), backends: backends.to_vec() };
            (addr, route)
        })
        .collect::<BTreeMap<_, _>>();
    Table { routes, skipped: Default::default() }
}

#[tokio::test]
async fn connections_follow_the_table_round_robin_swaps_and_removal() -> Result<()> {
    let stop = CancellationToken::new();
    let _stop_backends = stop.clone().drop_guard();
    let a = backend(2, "a", stop.clone()).await?;
    let b = backend(3, "b", stop.clone()).await?;
    let c = backend(4, "c", stop.clone()).await?;
    let dead = free_addr(5)?;
    let listen = free_addr(9)?;
    let mut manager = ListenerManager::new(CancellationToken::new());

    tracing::info!("--- two backends: connections alternate");
    manager.apply(&table(&[(listen, &[a, b])])).await;
    assert_eq!(manager.listening(), [listen]);
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(who(listen).await?);
    }
    assert_eq!(answers, ["a", "b", "a", "b"]);

    tracing::info!("--- the answer carries the request: half-close reached the backend and came back");
    assert_eq!(ask(listen, "hello world").await?, "a:hello world");

    tracing::info!("--- swap the backends: the listener stays, the next connections go to the new set");
    let mut in_flight = TcpStream::connect(listen).await?;
    in_flight.write_all(b"before").await?;
    // The route is read when a connection is accepted, and connections are accepted in order:
    // once a later one is answered, this one has its backend.
    assert_eq!(who(listen).await?, "a");
    manager.apply(&table(&[(listen, &[c])])).await;
    assert_eq!(manager.listening(), [listen]);
    assert_eq!(who(listen).await?, "c");
    assert_eq!(who(listen).await?, "c");
    in_flight.shutdown().await?;
    let mut answer = String::new();
    timeout(WAIT, in_flight.read_to_string(&mut answer)).await??;
    assert_eq!(answer, "b:before", "a connection forwarded before the swap keeps its backend");

    tracing::info!("--- a dead backend is skipped");
    manager.apply(&table(&[(listen, &[dead, c])])).await;
    for _ in 0..3 {
        assert_eq!(who(listen).await?, "c");
    }

    tracing::info!("--- no backends: the connection is closed at once");
    manager.apply(&table(&[(listen, &[])])).await;
    let closed = ask(listen, "ping").await;
    assert!(matches!(&closed, Ok(answer) if answer.is_empty()) || closed.is_err(), "{closed:?}");

    tracing::info!("--- removed: connections are refused, one already forwarded finishes");
    manager.apply(&table(&[(listen, &[a])])).await;
    let mut in_flight = TcpStream::connect(listen).await?;
    in_flight.write_all(b"late").await?;
    assert_eq!(who(listen).await?, "a");
    manager.apply(&Table::default()).await;
    assert!(manager.listening().is_empty());
    let refused = timeout(WAIT, TcpStream::connect(listen)).await?;
    assert!(refused.is_err(), "connect after removal succeeded");
    in_flight.shutdown().await?;
    let mut answer = String::new();
    timeout(WAIT, in_flight.read_to_string(&mut answer)).await??;
    assert_eq!(answer, "a:late");
    Ok(())
}

#[tokio::test]
async fn two_nodes_share_an_address_and_a_taken_one_is_retried_on_the_next_change() -> Result<()> {
    let stop = CancellationToken::new();
    let _stop_backends = stop.clone().drop_guard();
    let a = backend(12, "a", stop.clone()).await?;
    let shared = free_addr(19)?;

    tracing::info!("--- two managers (two nodes' proxies) listen on one address");
    let mut node1 = ListenerManager::new(CancellationToken::new());
    let mut node2 = ListenerManager::new(CancellationToken::new());
    node1.apply(&table(&[(shared, &[a])])).await;
    node2.apply(&table(&[(shared, &[a])])).await;
    assert_eq!(node1.listening(), [shared]);
    assert_eq!(node2.listening(), [shared]);
    assert_eq!(who(shared).await?, "a");

    tracing::info!("--- one node goes: the other still serves the address");
    node1.close_all().await;
    for _ in 0..4 {
        assert_eq!(who(shared).await?, "a");
    }
    node2.close_all().await;

    tracing::info!("--- an address held by a socket without SO_REUSEPORT cannot be bound, and is not fatal");
    let squatter = std::net::TcpListener::bind((loopback(20), 0))?;
    let taken = squatter.local_addr()?;
    let free = free_addr(21)?;
    let mut manager = ListenerManager::new(CancellationToken::new());
    let both = table(&[(taken, &[a]), (free, &[a])]);
    manager.apply(&both).await;
    assert_eq!(manager.listening(), [free]);
    assert_eq!(who(free).await?, "a");

    tracing::info!("--- once the address is free, the next change binds it");
    drop(squatter);
    manager.apply(&both).await;
    let mut expected = vec![taken, free];
    expected.sort();
    assert_eq!(manager.listening(), expected);
    assert_eq!(who(taken).await?, "a");
    Ok(())
}
