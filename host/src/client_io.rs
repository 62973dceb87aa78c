//! The client connection's byte stream (TCP, or TLS over TCP), with just enough bookkeeping to
//! answer a request head that stalls with 408 instead of a silent close. The listener makes it;
//! the WebSocket relay takes it back out of hyper's upgrade to relay on the socket itself.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::gather::poll_write_gathered;

/// RFC 9110 §15.5.9: the server closes the connection after a 408.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// A client connection's stream.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Writes `bytes` without waiting, as the connection's last words (it is about to close):
    /// whatever the socket does not take at once is dropped.
    fn write_last_words(&mut self, bytes: &[u8]);

    /// Whether small vectored writes are gathered into one (see [`crate::gather`]): for a
    /// socket, not for TLS, which copies what it is given into its records anyway.
    const GATHER_WRITES: bool;
}

impl ClientStream for TcpStream {
    const GATHER_WRITES: bool = true;

    fn write_last_words(&mut self, bytes: &[u8]) {
        let _ = self.try_write(bytes);
    }
}

impl ClientStream for TlsStream<TcpStream> {
    const GATHER_WRITES: bool = false;

    fn write_last_words(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let (tcp, tls) = self.get_mut();
        if tls.writer().write_all(bytes).is_err() {
            return;
        }
        tls.send_close_notify();
        let mut socket = TryWriter(tcp);
        while tls.wants_write() {
            if tls.write_tls(&mut socket).is_err() {
                break;
            }
        }
    }
}

/// The socket as a `std::io::Write` that never waits.
struct TryWriter<'a>(&'a TcpStream);

impl std::io::Write for TryWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the HTTP server gave up waiting for a request head on the connection (the proxy's
/// per-connection state answers it).
pub trait HeadTimeout: Send + Sync {
    fn head_timed_out(&self) -> bool;

    /// The whole 408 response, when a custom error page replaces the built-in one.
    fn request_timeout_response(&self) -> Option<Vec<u8>> {
        None
    }
}

pub struct ClientIo<S: ClientStream> {
    stream: S,
    /// Released once the connection stops speaking HTTP (see [`ClientIo::detach`]).
    conn: Option<Arc<dyn HeadTimeout>>,
    /// Bytes arrived since the last response bytes were written: a request is under way.
    request_started: bool,
}

impl<S: ClientStream> ClientIo<S> {
    pub fn new(stream: S, conn: Arc<dyn HeadTimeout>) -> Self {
        Self {
            stream,
            conn: Some(conn),
            request_started: false,
        }
    }

    /// For a connection that no longer carries HTTP (a WebSocket session after its upgrade):
    /// drops the HTTP connection's shared state, which the session does not need.
    pub fn detach(&mut self) {
        self.conn = None;
        self.request_started = false;
    }
}

impl<S: ClientStream> Drop for ClientIo<S> {
    fn drop(&mut self) {
        // hyper gave up waiting for the rest of a request head. A connection that was merely
        // idle between requests is closed quietly (a 408 there would race a new request).
        let Some(conn) = self.conn.as_ref().filter(|_| self.request_started) else {
            return;
        };
        if conn.head_timed_out() {
            // Last words: a custom page larger than the socket takes at once is cut short.
            match conn.request_timeout_response() {
                Some(custom) => self.stream.write_last_words(&custom),
                None => self.stream.write_last_words(REQUEST_TIMEOUT),
            }
        }
    }
}

impl<S: ClientStream> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.request_started = true;
        }
        polled
    }
}

impl<S: ClientStream> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.request_started = false;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.request_started = false;
        if S::GATHER_WRITES {
            poll_write_gathered(Pin::new(&mut self.stream), cx, bufs)
        } else {
            Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
        }
    }

    fn is_write_vectored(&self) -> bool {
        S::GATHER_WRITES || self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
