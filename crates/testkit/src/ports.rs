//! Loopback ports for processes this one is about to start.
//!
//! Asking the kernel for port 0 and releasing it is racy: the port comes from the ephemeral
//! range, so any outgoing connection made before the child binds (a peer dialling another
//! master, etcdctl, kubectl) may take it, and the child then fails with "address in use".
//! Ports are therefore handed out below the ephemeral range (Linux: 32768 and up), from a
//! per-process starting point, each one checked free by binding it.

use std::net::TcpListener;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;

const FIRST: u32 = 20_000;
const SPAN: u32 = 12_000;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A free TCP port on 127.0.0.1 below the ephemeral range, never handed out twice by this
/// process.
pub fn reserve() -> std::io::Result<u16> {
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let start = (std::process::id().wrapping_mul(7919) ^ nanos) % SPAN;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = (FIRST + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free loopback port below 32000"))
}
