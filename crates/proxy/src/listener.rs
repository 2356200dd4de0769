//! The runtime part of the proxy: the open listeners, brought in line with a [`Table`], and
//! the connections they forward.
//!
//! [`ListenerManager::apply`] diffs a table against the listeners it has: an address that left
//! the table has its listener closed (connections already forwarded run on), a new address is
//! bound, and an address still there gets its route swapped in place — the listener stays open
//! and the next connection sees the new backends.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::Domain;
use socket2::Protocol;
use socket2::Socket;
use socket2::Type;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::table::ListenAddr;
use crate::table::Route;
use crate::table::SkipReason;
use crate::table::Skipped;
use crate::table::Table;

/// How long a connect to one backend may take before the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 1024;

/// How long the accept loop pauses after an accept error (out of file descriptors, say), so it
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The listeners of one node's proxy.
///
/// Dropping the manager closes its listeners and ends the connections it forwards.
pub struct ListenerManager {
    listeners: HashMap<ListenAddr, Listener>,
    /// Addresses whose bind failed, with the service that wanted them: logged once, retried on
    /// every [`apply`](Self::apply).
    failed: HashMap<ListenAddr, String>,
    /// Skipped service ports already logged.
    skipped: BTreeSet<Skipped>,
    /// Parent of every listener's and connection's token: a child of the caller's shutdown
    /// token, cancelled when the manager is dropped.
    shutdown: CancellationToken,
}

struct Listener {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What a listener's accept loop shares with the manager.
struct Shared {
    /// Swapped whole by the manager; the lock is held only to clone or replace the `Arc`.
    route: RwLock<Arc<Route>>,
    /// The round-robin position: where the next connection starts looking for a backend.
    next: AtomicUsize,
}

impl Shared {
    fn route(&self) -> Arc<Route> {
        // A poisoned lock still holds a whole `Arc` (replacing it cannot half-happen).
        self.route.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_route(&self, route: Arc<Route>) {
        *self.route.write().unwrap_or_else(|e| e.into_inner()) = route;
    }
}

impl ListenerManager {
    /// A manager with no listeners; cancelling `shutdown` closes the listeners and ends the
    /// connections.
    pub fn new(shutdown: CancellationToken) -> Self {
        ListenerManager {
            listeners: HashMap::new(),
            failed: HashMap::new(),
            skipped: BTreeSet::new(),
            shutdown: shutdown.child_token(),
        }
    }

    /// Brings the listeners in line with `table`. Returns once removed listeners are closed
    /// (a connect to their address is refused from then on, unless another node on the machine
    /// shares it). A bind that fails is logged once and retried on the next call.
    pub async fn apply(&mut self, table: &Table) {
        self.log_skipped(&table.skipped);

        let gone: Vec<ListenAddr> =
            self.listeners.keys().filter(|addr| !table.routes.contains_key(addr)).copied().collect();
        for addr in gone {
            if let Some(listener) = self.listeners.remove(&addr) {
                let route = listener.shared.route();
                tracing::info!(service = %route.service, port = %route.port_name, %addr, "closing listener");
                listener.close().await;
            }
        }
        self.failed.retain(|addr, _| table.routes.contains_key(addr));

        for (&addr, route) in &table.routes {
            if let Some(listener) = self.listeners.get(&addr) {
                if *listener.shared.route() != *route {
                    tracing::debug!(service = %route.service, port = %route.port_name, %addr,
                        backends = ?route.backends, "backends changed");
                    listener.shared.set_route(Arc::new(route.clone()));
                }
                continue;
            }
            match bind(addr) {
                Ok(socket) => {
                    if self.failed.remove(&addr).is_some() {
                        tracing::info!(service = %route.service, %addr, "bind succeeded after failing");
                    }
                    tracing::info!(service = %route.service, port = %route.port_name, %addr,
                        backends = route.backends.len(), "listening");
                    let listener = Listener::spawn(socket, route.clone(), &self.shutdown);
                    self.listeners.insert(addr, listener);
                }
                Err(error) => {
                    if self.failed.get(&addr) != Some(&route.service) {
                        tracing::warn!(service = %route.service, port = %route.port_name, %addr, %error,
                            "cannot listen; will retry on the next change");
                        self.failed.insert(addr, route.service.clone());
                    }
                }
            }
        }
    }

    /// The addresses listened on, sorted.
    pub fn listening(&self) -> Vec<ListenAddr> {
        let mut addrs: Vec<_> = self.listeners.keys().copied().collect();
        addrs.sort();
        addrs
    }

    /// Closes every listener and waits for their accept loops to end. Connections already
    /// forwarded end when the manager's shutdown token is cancelled.
    pub async fn close_all(&mut self) {
        for (_, listener) in self.listeners.drain() {
            listener.close().await;
        }
    }

    /// Logs each newly skipped service port once; one skipped no longer is forgotten, so it is
    /// logged again should it come back.
    fn log_skipped(&mut self, skipped: &BTreeSet<Skipped>) {
        for s in skipped.difference(&self.skipped) {
            match &s.reason {
                SkipReason::Protocol(protocol) => {
                    tracing::debug!(service = %s.service, port = %s.port_name, %protocol, "only TCP is proxied");
                }
                SkipReason::AddressTaken { addr, by } => {
                    tracing::warn!(service = %s.service, port = %s.port_name, %addr, %by, "address claimed twice");
                }
            }
        }
        self.skipped.clone_from(skipped);
    }
}

impl Drop for ListenerManager {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Listener {
    fn spawn(socket: TcpListener, route: Route, shutdown: &CancellationToken) -> Listener {
        let span = tracing::info_span!("listener", service = %route.service, port = %route.port_name,
            addr = ?socket.local_addr().ok());
        let shared = Arc::new(Shared { route: RwLock::new(Arc::new(route)), next: AtomicUsize::new(0) });
        let stop = shutdown.child_token();
        let task = tokio::spawn(accept_loop(socket, shared.clone(), stop.clone(), shutdown.clone()).instrument(span));
        Listener { shared, stop, task }
    }

    async fn close(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "listener task failed");
        }
    }
}

/// A listening socket on `addr` that other sockets with SO_REUSEPORT (other nodes' proxies on
/// this machine) may share; the kernel spreads connections among them.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts until `stop`, forwarding each connection on its own task; the listening socket
/// closes when this returns.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    connections: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                let route = shared.route();
                let start = shared.next.fetch_add(1, Ordering::Relaxed);
                let span = tracing::debug_span!("connection", service = %route.service, port = %route.port_name, %peer);
                tokio::spawn(forward(client, route, start, connections.clone()).instrument(span));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
}

/// Connects `client` to a backend of `route` (round robin from `start`) and copies both ways
/// until both sides have closed, or `shutdown`. With no reachable backend the client is closed
/// at once.
async fn forward(mut client: TcpStream, route: Arc<Route>, start: usize, shutdown: CancellationToken) {
    let Some((mut backend, backend_addr)) = connect_any(&route.backends, start).await else {
        tracing::debug!(backends = route.backends.len(), "no backend reachable; closing the connection");
        return;
    };
    // Nagle's delay would add latency to every small request relayed.
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => match copied {
            Ok((up, down)) => tracing::trace!(backend = %backend_addr, up, down, "connection done"),
            Err(error) => tracing::debug!(backend = %backend_addr, %error, "connection ended with an error"),
        },
    }
}

/// The first backend, from `start` on round the list, that accepts a connection within
/// [`CONNECT_TIMEOUT`].
async fn connect_any(backends: &[SocketAddr], start: usize) -> Option<(TcpStream, SocketAddr)> {
    let n = backends.len();
    for &addr in backends.iter().cycle().skip(start.checked_rem(n)?).take(n) {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Some((stream, addr)),
            Ok(Err(error)) => tracing::debug!(backend = %addr, %error, "backend refused; trying the next"),
            Err(_) => tracing::debug!(backend = %addr, "backend connect timed out; trying the next"),
        }
    }
    None
}
