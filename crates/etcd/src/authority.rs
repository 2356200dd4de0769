//! Accepting the `:authority` that etcd's Go clients send.
//!
//! etcdctl 3.4 dials its per-endpoint commands (`endpoint status`, `endpoint hashkv`, `defrag`,
//! `move-leader`) as `passthrough:///http://host:port`, so grpc-go sends `:authority:
//! http://host:port`. etcd's Go server accepts that; Rust's h2 rejects the request with
//! PROTOCOL_ERROR, and its maintainers keep it strict (hyperium/h2#525). This connection wrapper
//! sits between the socket and h2: it decodes every request header block the client sends,
//! reduces such an authority to `host:port`, and re-encodes the block. Everything else passes
//! through untouched; the server-to-client direction is not looked at.

use std::io;
use std::pin::Pin;
use std::task::Context;
use std::task::Poll;

use bytes::Buf;
use bytes::BufMut;
use bytes::BytesMut;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;
use trireme_tls::serve::Conn;

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame h2 accepts by default (SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;

/// A header block being collected across HEADERS and CONTINUATION frames.
struct Pending {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// A client connection whose request header blocks get a well-formed `:authority`.
pub struct AuthorityFix {
    inner: Conn,
    input: BytesMut,
    output: BytesMut,
    preface_left: usize,
    pending: Option<Pending>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    /// Pass bytes through from now on: the client's first header block had a well-formed
    /// authority (a client sends the same one on every request of a connection), or the client
    /// sent something undecodable.
    passthrough: bool,
    /// Whether this connection's header blocks are being rewritten.
    rewriting: bool,
    eof: bool,
}

impl AuthorityFix {
    /// Wraps an accepted connection.
    pub fn new(inner: Conn) -> Self {
        AuthorityFix {
            inner,
            input: BytesMut::with_capacity(32 * 1024),
            output: BytesMut::with_capacity(32 * 1024),
            preface_left: PREFACE_LEN,
            pending: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
            passthrough: false,
            rewriting: false,
            eof: false,
        }
    }

    /// Moves every complete frame from `input` to `output`, rewriting header blocks.
    fn process(&mut self) {
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.input.len());
            self.output.extend_from_slice(&self.input.split_to(n));
            self.preface_left -= n;
        }
        while self.preface_left == 0 && !self.passthrough && self.input.len() >= FRAME_HEADER_LEN {
            let len =
                (usize::from(self.input[0]) << 16) | (usize::from(self.input[1]) << 8) | usize::from(self.input[2]);
            if self.input.len() < FRAME_HEADER_LEN + len {
                return;
            }
            let kind = self.input[3];
            let flags = self.input[4];
            let stream_id =
                u32::from_be_bytes([self.input[5], self.input[6], self.input[7], self.input[8]]) & 0x7fff_ffff;
            let frame = self.input.split_to(FRAME_HEADER_LEN + len);
            let payload = &frame[FRAME_HEADER_LEN..];
            let handled = match kind {
                HEADERS => self.on_headers(stream_id, flags, payload),
                CONTINUATION => self.on_continuation(stream_id, flags, payload),
                _ => false,
            };
            if !handled {
                self.output.extend_from_slice(&frame);
            }
        }
        if self.passthrough {
            let rest = self.input.split();
            self.output.extend_from_slice(&rest);
        }
    }

    fn on_headers(&mut self, stream_id: u32, flags: u8, payload: &[u8]) -> bool {
        let mut body = payload;
        let mut pad = 0usize;
        if flags & PADDED != 0 {
            let Some((&n, rest)) = body.split_first() else { return self.give_up() };
            pad = usize::from(n);
            body = rest;
        }
        let mut priority = None;
        if flags & PRIORITY != 0 {
            if body.len() < 5 {
                return self.give_up();
            }
            let mut p = [0u8; 5];
            p.copy_from_slice(&body[..5]);
            priority = Some(p);
            body = &body[5..];
        }
        if body.len() < pad {
            return self.give_up();
        }
        let block = body[..body.len() - pad].to_vec();
        self.pending = Some(Pending { stream_id, end_stream: flags & END_STREAM != 0, priority, block });
        if flags & END_HEADERS != 0 {
            self.finish_block();
        }
        true
    }

    fn on_continuation(&mut self, stream_id: u32, flags: u8, payload: &[u8]) -> bool {
        match self.pending.as_mut() {
            Some(p) if p.stream_id == stream_id => p.block.extend_from_slice(payload),
            _ => return self.give_up(),
        }
        if flags & END_HEADERS != 0 {
            self.finish_block();
        }
        true
    }

    /// Decodes, fixes and re-encodes a complete header block as HEADERS + CONTINUATION frames.
    fn finish_block(&mut self) {
        let Some(p) = self.pending.take() else { return };
        let headers = match self.decoder.decode(&p.block) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = ?e, "undecodable client header block; passing bytes through");
                self.passthrough = true;
                return;
            }
        };
        if !self.rewriting {
            let malformed = headers.iter().any(|(n, v)| n == b":authority" && host_port(v) != *v);
            if !malformed {
                // The block goes out as the client encoded it; so will every later one.
                self.emit(&p, &p.block);
                self.passthrough = true;
                return;
            }
            self.rewriting = true;
        }
        let fixed: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(name, value)| if name == b":authority" { (name, host_port(&value)) } else { (name, value) })
            .collect();
        let block = self.encoder.encode(fixed.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        self.emit(&p, &block);
    }

    /// Frames a header block as HEADERS plus CONTINUATION frames of at most [`MAX_FRAME`].
    fn emit(&mut self, p: &Pending, block: &[u8]) {
        let mut first = Vec::with_capacity(5 + block.len());
        let mut flags = 0u8;
        if let Some(priority) = p.priority {
            first.extend_from_slice(&priority);
            flags |= PRIORITY;
        }
        if p.end_stream {
            flags |= END_STREAM;
        }
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = block.split_at(block.len().min(room));
        first.extend_from_slice(head);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        self.write_frame(HEADERS, flags, p.stream_id, &first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            self.write_frame(CONTINUATION, if rest.is_empty() { END_HEADERS } else { 0 }, p.stream_id, chunk);
        }
    }

    fn write_frame(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let len = payload.len();
        self.output.put_u8(((len >> 16) & 0xff) as u8);
        self.output.put_u8(((len >> 8) & 0xff) as u8);
        self.output.put_u8((len & 0xff) as u8);
        self.output.put_u8(kind);
        self.output.put_u8(flags);
        self.output.put_u32(stream_id);
        self.output.extend_from_slice(payload);
    }

    fn give_up(&mut self) -> bool {
        self.passthrough = true;
        false
    }
}

/// `http://host:port/path` → `host:port`; anything already well-formed is returned as is.
fn host_port(value: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(value);
    let without_scheme = text.split_once("://").map_or(text.as_ref(), |(_, rest)| rest);
    let host = without_scheme.split('/').find(|s| !s.is_empty()).unwrap_or("");
    host.as_bytes().to_vec()
}

impl AsyncRead for AuthorityFix {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is left is an incomplete frame: hand it over and let h2 judge it.
                let rest = this.input.split();
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.output.extend_from_slice(&rest);
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.input.extend_from_slice(read.filled());
                        this.process();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for AuthorityFix {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFix {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_with_a_scheme_are_reduced_to_host_and_port() {
        assert_eq!(host_port(b"http://127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(host_port(b"https://example.com:2379/x"), b"example.com:2379");
        assert_eq!(host_port(b"127.0.0.1:2379"), b"127.0.0.1:2379");
    }
}
