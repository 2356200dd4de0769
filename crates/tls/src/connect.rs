//! Dialling a member for a tonic channel: plain TCP for `http://` URLs, TLS with this side's
//! certificate for `https://` ones — the URL's scheme decides, as in etcd.
//!
//! ```ignore
//! let channel = Endpoint::from_shared(url)?.connect_with_connector_lazy(Connector::new(tls));
//! ```

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;
use tokio::net::TcpSocket;
use tokio::net::TcpStream;

/// One connection to a member.
pub enum ClientConn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Dials members; cheap to clone.
#[derive(Clone)]
pub struct Connector {
    tls: Option<Arc<ClientConfig>>,
    source: Option<IpAddr>,
    timeout: Duration,
}

impl Connector {
    /// A connector that dials `https://` URLs with `tls` (and refuses them without it).
    pub fn new(tls: Option<Arc<ClientConfig>>) -> Connector {
        Connector { tls, source: None, timeout: Duration::from_secs(5) }
    }

    /// Connections come from `source` (multi-homed hosts, firewalls that admit by address).
    pub fn source_address(self, source: Option<IpAddr>) -> Connector {
        Connector { source, ..self }
    }

    /// Gives up on a connection (TCP and TLS handshake) after `timeout`.
    pub fn connect_timeout(self, timeout: Duration) -> Connector {
        Connector { timeout, ..self }
    }

    /// Connects to `uri`.
    pub async fn connect(&self, uri: &Uri) -> io::Result<ClientConn> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let host = uri.host().ok_or_else(|| invalid(format!("{uri}: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") | None => false,
            Some(other) => return Err(invalid(format!("{uri}: unknown scheme {other}"))),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match (https, &self.tls) {
            (true, None) => {
                return Err(invalid(format!("{uri} is https:// but no TLS files were given to dial it with")));
            }
            (true, Some(tls)) => Some(tls.clone()),
            (false, _) => None,
        };
        let dial = async {
            let addr = tokio::net::lookup_host((host, port))
                .await?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address")))?;
            let tcp = self.dial(addr).await?;
            let Some(tls) = tls else { return Ok(ClientConn::Plain(tcp)) };
            let name = ServerName::try_from(host.to_string()).map_err(|e| invalid(format!("{host}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
            Ok(ClientConn::Tls(Box::new(stream)))
        };
        match tokio::time::timeout(self.timeout, dial).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {uri} timed out"))),
        }
    }

    async fn dial(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(source) = self.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<ClientConn>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<ClientConn>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect(&uri).await.map(TokioIo::new) })
    }
}
