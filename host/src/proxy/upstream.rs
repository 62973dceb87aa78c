//! Upstream connections: one pool of keep-alive HTTP/1.1 connections per backend address and
//! port, shared by every target that reaches it. Backends always speak HTTP/1.1 (as behind
//! Application Gateway).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::BackendHost;

/// Idle connections kept per upstream; more are closed when they come back.
const MAX_IDLE: usize = 512;
/// An idle connection older than this is not reused: many servers close keep-alive connections
/// after 60 s or less, and a request sent on a connection the server is closing is lost.
const MAX_IDLE_AGE: Duration = Duration::from_secs(50);

/// The body sent upstream: the client's body streamed through, or nothing (which makes a request
/// replayable on another member).
#[derive(Debug)]
pub enum RequestBody {
    Incoming(Incoming),
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

type Sender = SendRequest<RequestBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Keep-alive connections to one backend address and port.
pub struct Upstream {
    host: BackendHost,
    port: u16,
    idle: ArrayQueue<Idle>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Upstream({}:{}, {} idle)",
            self.host,
            self.port,
            self.idle.len()
        )
    }
}

/// Why a connection to a backend could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("DNS resolution failed: {0}")]
    Dns(io::Error),
    #[error("TCP connect failed: {0}")]
    Tcp(io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
}

impl Upstream {
    pub fn new(host: BackendHost, port: u16) -> Self {
        Self {
            host,
            port,
            idle: ArrayQueue::new(MAX_IDLE),
        }
    }

    pub fn key(&self) -> (BackendHost, u16) {
        (self.host.clone(), self.port)
    }

    /// A ready idle connection, if one is pooled.
    pub fn take_idle(&self) -> Option<Sender> {
        while let Some(idle) = self.idle.pop() {
            if idle.sender.is_ready() && idle.since.elapsed() < MAX_IDLE_AGE {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Opens a new connection. The connection task is spawned; upgrades (WebSocket) are
    /// supported on it.
    pub async fn connect(&self) -> Result<Sender, ConnectError> {
        let stream = match &self.host {
            BackendHost::Ip(ip) => TcpStream::connect(SocketAddr::new(*ip, self.port))
                .await
                .map_err(ConnectError::Tcp)?,
            BackendHost::Dns(name) => {
                let addrs = tokio::net::lookup_host((name.as_str(), self.port))
                    .await
                    .map_err(ConnectError::Dns)?;
                let mut last = None;
                let mut stream = None;
                for addr in addrs {
                    match TcpStream::connect(addr).await {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match stream {
                    Some(s) => s,
                    None => {
                        return Err(match last {
                            Some(e) => ConnectError::Tcp(e),
                            None => ConnectError::Dns(io::Error::new(
                                io::ErrorKind::NotFound,
                                "no addresses",
                            )),
                        });
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Returns a connection whose last response has been read completely.
    pub fn put_back(self: &Arc<Self>, sender: Sender) {
        if sender.is_ready() {
            let _ = self.idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        } else if !sender.is_closed() {
            // The connection task has not yet seen the end of the message: wait for it off the
            // request path.
            let this = self.clone();
            tokio::spawn(async move {
                let mut sender = sender;
                if sender.ready().await.is_ok() {
                    let _ = this.idle.push(Idle {
                        sender,
                        since: Instant::now(),
                    });
                }
            });
        }
    }
}

/// A backend response body that hands its connection back to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    reuse: Option<(Sender, Arc<Upstream>)>,
}

impl PooledBody {
    pub fn new(inner: Incoming, sender: Sender, upstream: Arc<Upstream>) -> Self {
        let mut body = Self {
            inner,
            reuse: Some((sender, upstream)),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((sender, upstream)) = self.reuse.take() {
            upstream.put_back(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.reuse = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
