//! One address for the cluster: a TCP balancer in front of the masters.
//!
//! kubectl, etcdctl and every tool configured with one URL keep working when the master behind
//! that URL dies: the balancer listens on one stable address and passes each connection through,
//! byte for byte, to a master that is healthy (TLS ends at the master, so certificates and client
//! authentication are the master's own). It is what keepalived + haproxy are in kubeadm's HA guide
//! and what k3d's load-balancer container is, built into `trireme up` and `trireme lb`.
//!
//! - Each backend is checked every [`Options::interval`] ([`check`]): the Kubernetes API by
//!   `GET /readyz` over TLS, the etcd API by its `Maintenance.Status` having a leader. One failed
//!   check marks it down; [`Options::rise`] passing ones bring it back.
//! - A backend marked down has its open connections closed at once (haproxy's
//!   `on-marked-down shutdown-sessions`): a watch on a master cut off from its quorum ends, and the
//!   client re-establishes it through the balancer on a healthy master, as after any apiserver
//!   restart.
//! - New connections go round robin over the healthy backends. A backend that refuses a connection
//!   is marked down on the spot and the next one is tried, so a killed master costs a client
//!   nothing between two checks. When no backend is known healthy, every backend is tried anyway.

pub mod check;
mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub use check::Check;
pub use pool::BackendStatus;
use pool::Pool;

/// Why a balancer could not start.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// A balancer needs at least one backend.
    #[error("no backends given")]
    NoBackends,
}

/// One master behind the balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// A name for logs and status (the master's name).
    pub name: String,
    /// Where its port is.
    pub addr: SocketAddr,
}

/// How backends are checked and connected to.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Time between two checks of a backend.
    pub interval: Duration,
    /// How long one check may take before it counts as failed.
    pub check_timeout: Duration,
    /// How long a connection to a backend may take before the next backend is tried.
    pub connect_timeout: Duration,
    /// Passing checks in a row that bring a backend that was down back.
    pub rise: u32,
}

impl Default for Options {
    /// Checks every 250 ms, each allowed 700 ms, so a failing master is dropped within a second.
    fn default() -> Options {
        Options {
            interval: Duration::from_millis(250),
            check_timeout: Duration::from_millis(700),
            connect_timeout: Duration::from_secs(1),
            rise: 2,
        }
    }
}

/// A bound balancer; [`Balancer::run`] serves it.
pub struct Balancer {
    name: String,
    listener: TcpListener,
    pool: Arc<Pool>,
    check: Arc<Check>,
    options: Options,
}

impl Balancer {
    /// Binds `listen` for the backends, checked with `check`. `name` names the balancer in logs
    /// ("kubernetes", "etcd").
    pub async fn bind(
        name: &str,
        listen: SocketAddr,
        backends: Vec<Backend>,
        check: Check,
        options: Options,
    ) -> Result<Balancer, LbError> {
        if backends.is_empty() {
            return Err(LbError::NoBackends);
        }
        let listener = TcpListener::bind(listen).await.map_err(|source| LbError::Bind { addr: listen, source })?;
        Ok(Balancer {
            name: name.to_string(),
            listener,
            pool: Arc::new(Pool::new(backends)),
            check: Arc::new(check),
            options,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A view of the backends' health that stays valid while the balancer runs.
    pub fn status(&self) -> StatusHandle {
        StatusHandle { pool: self.pool.clone() }
    }

    /// Checks the backends and passes connections through until `stop` fires; then closes every
    /// connection.
    pub async fn run(self, stop: CancellationToken) {
        let Balancer { name, listener, pool, check, options } = self;
        let tasks = tokio_util::task::TaskTracker::new();
        for index in 0..pool.len() {
            let (pool, check, stop, name) = (pool.clone(), check.clone(), stop.clone(), name.clone());
            tasks.spawn(async move { watch_backend(&name, &pool, index, &check, options, &stop).await });
        }
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((client, peer)) => {
                    let (pool, stop, name) = (pool.clone(), stop.clone(), name.clone());
                    tasks.spawn(async move { serve(&name, &pool, client, peer, options, &stop).await });
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(balancer = %name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        tasks.close();
        tasks.wait().await;
    }
}

/// The backends' health while a balancer runs.
#[derive(Clone)]
pub struct StatusHandle {
    pool: Arc<Pool>,
}

impl StatusHandle {
    /// Every backend with its health and open connections.
    pub fn backends(&self) -> Vec<BackendStatus> {
        self.pool.status()
    }
}

/// Checks backend `index` forever, marking it up and down.
async fn watch_backend(
    name: &str,
    pool: &Pool,
    index: usize,
    check: &Check,
    options: Options,
    stop: &CancellationToken,
) {
    let backend = pool.backend(index);
    let mut passed_in_a_row = 0u32;
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = tokio::time::timeout(options.check_timeout, check.run(backend.addr)) => {
                result.unwrap_or(Err(check::CheckError::TimedOut(options.check_timeout)))
            }
        };
        match result {
            Ok(()) => {
                passed_in_a_row = passed_in_a_row.saturating_add(1);
                // A backend never seen healthy (at start) comes up on its first passing check.
                if !pool.is_up(index) && (passed_in_a_row >= options.rise || !pool.was_ever_up(index)) {
                    pool.mark_up(index);
                    tracing::info!(balancer = %name, backend = %backend.name, addr = %backend.addr, "backend is up");
                }
            }
            Err(error) => {
                passed_in_a_row = 0;
                if pool.mark_down(index) {
                    tracing::warn!(balancer = %name, backend = %backend.name, addr = %backend.addr, %error, "backend is down; its connections are closed");
                }
            }
        }
    }
}

/// Passes one client connection through to a backend until either side closes, the backend is
/// marked down, or the balancer stops.
async fn serve(
    name: &str,
    pool: &Pool,
    mut client: TcpStream,
    peer: SocketAddr,
    options: Options,
    stop: &CancellationToken,
) {
    let _ = client.set_nodelay(true);
    let mut tried = Vec::new();
    let (index, mut upstream) = loop {
        let Some(index) = pool.pick(&tried) else {
            tracing::debug!(balancer = %name, %peer, "no backend took the connection");
            let _ = client.shutdown().await;
            return;
        };
        tried.push(index);
        let backend = pool.backend(index);
        match tokio::time::timeout(options.connect_timeout, TcpStream::connect(backend.addr)).await {
            Ok(Ok(upstream)) => break (index, upstream),
            Ok(Err(error)) => {
                if pool.mark_down(index) {
                    tracing::warn!(balancer = %name, backend = %backend.name, addr = %backend.addr, %error, "backend refused a connection; it is down");
                }
            }
            Err(_) => {
                if pool.mark_down(index) {
                    tracing::warn!(balancer = %name, backend = %backend.name, addr = %backend.addr, "connecting to the backend timed out; it is down");
                }
            }
        }
    };
    let _ = upstream.set_nodelay(true);
    let session = pool.session(index);
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = session.cancelled() => {
            tracing::debug!(balancer = %name, %peer, "closing a connection to a backend marked down");
        }
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
    }
    pool.session_ended(index);
}
