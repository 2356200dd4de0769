//! systemd's readiness notification (`Type=notify`): one datagram to `$NOTIFY_SOCKET`, as
//! `sd_notify(3)` sends it. Nothing happens when not started by systemd.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::os::unix::net::UnixDatagram;

/// Tells systemd `state` (e.g. `READY=1`); failures are logged, never fatal.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let path = path.to_string_lossy().to_string();
        if let Err(e) = notify_to(&path, state) {
            tracing::warn!(error = %e, socket = %path, "could not notify systemd");
        }
    }
}

/// Sends `state` to the socket at `path` (`@name`: an abstract socket).
fn notify_to(path: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        Some(name) => socket.send_to_addr(state.as_bytes(), &SocketAddr::from_abstract_name(name)?)?,
        None => socket.send_to(state.as_bytes(), path)?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        notify_to(&path.display().to_string(), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }
}
