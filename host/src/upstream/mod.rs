//! Upstream connections: one pool of keep-alive HTTP/1.1 connections per backend address and
//! port (and, for HTTPS backends, per TLS identity: server name and trusted roots), shared by
//! every target that reaches it. Backends always speak HTTP/1.1 (as behind Application Gateway).
//! TLS is paid once per connection: pooled connections are reused with their session.
//!
//! A proxied request drives its backend connection itself: the connection's HTTP/1.1 state
//! machine is polled by the request's future while the response head is awaited, then by the
//! response body while it streams to the client, all in the client connection's task. The
//! backend's socket thus wakes the task that writes to the client, with no second task and no
//! hand-off between them. An idle pooled connection is polled by nobody; the request that takes
//! it polls it first, which reads a close the backend sent meanwhile. A WebSocket handshake, and
//! a probe, hand their connection to a task of its own ([`Conn::detach`]), which carries the
//! upgrade.

mod body;
mod resolve;

pub use body::{ClientBody, RequestBody};

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, SendRequest};
use std::collections::HashMap;

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{BackendHost, BackendSettings, HostOverride, Protocol};
use crate::gather::Gathering;
use crate::tls::TlsFailure;

/// Idle connections kept per upstream; more are closed when they come back.
const MAX_IDLE: usize = 512;
/// An idle connection older than this is not reused: many servers close keep-alive connections
/// after 60 s or less, and a request sent on a connection the server is closing is lost.
const MAX_IDLE_AGE: Duration = Duration::from_secs(50);
/// How often an upstream's idle connections are looked at, once it has pooled one: those the
/// backend closed (its keep-alive timeout) and those past [`MAX_IDLE_AGE`] are closed, so that
/// their sockets do not wait for the next request.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// [`MAX_IDLE_AGE`] in sweeps: a connection's age is counted by the sweeps it has been idle
/// through, so that pooling and taking one read no clock.
const MAX_IDLE_SWEEPS: u32 = (MAX_IDLE_AGE.as_secs() / SWEEP_EVERY.as_secs()) as u32;

type Sender = SendRequest<RequestBody>;
type Dispatch<T> = http1::Connection<TokioIo<T>, RequestBody>;

/// A backend connection's HTTP/1.1 state machine (the socket and hyper's dispatcher), polled
/// by whoever uses the connection. Boxed: a connection moves from the pool to a request, to its
/// response body and back, and a pointer moves cheaper than the state machine's bytes.
enum Driver {
    Plain(Box<Dispatch<Gathering<TcpStream>>>),
    Tls(Box<Dispatch<TlsStream<TcpStream>>>),
    /// The connection has closed; its state machine is dropped, which fails what was still
    /// queued on it.
    Closed,
}

impl Driver {
    /// Reads and writes what the connection can; `true` once it has closed (or failed).
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> bool {
        let polled = match self {
            Driver::Plain(c) => Pin::new(&mut **c).poll(cx),
            Driver::Tls(c) => Pin::new(&mut **c).poll(cx),
            Driver::Closed => return true,
        };
        match polled {
            Poll::Pending => false,
            Poll::Ready(r) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
                *self = Driver::Closed;
                true
            }
        }
    }

    /// Runs the connection in a task of its own until it closes, with HTTP upgrades.
    fn spawn(self) {
        async fn run<T>(conn: Dispatch<T>)
        where
            T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        }
        match self {
            Driver::Plain(c) => drop(tokio::spawn(run(*c))),
            Driver::Tls(c) => drop(tokio::spawn(run(*c))),
            Driver::Closed => {}
        }
    }
}

/// An open backend connection: the handle requests are sent through and the state machine
/// that carries them.
pub struct Conn {
    sender: Sender,
    driver: Driver,
}

impl Conn {
    /// Hands the connection to a task of its own (which carries an HTTP upgrade) and returns
    /// the handle requests are sent through.
    pub fn detach(self) -> Sender {
        self.driver.spawn();
        self.sender
    }

    /// Polls an idle connection once: whether it can carry a request (the backend has not
    /// closed it, and it has finished its last message).
    fn poll_usable(&mut self, cx: &mut Context<'_>) -> bool {
        !self.driver.poll_closed(cx) && self.sender.is_ready()
    }

    /// Sends `req` and drives the connection until the response head is in. The connection
    /// stays usable for the response body ([`PooledBody`]).
    pub async fn exchange(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        let driver = &mut self.driver;
        std::future::poll_fn(|cx| {
            // Once the connection has closed or failed, hyper answers the request with the
            // reason (and returns it when it was not sent).
            driver.poll_closed(cx);
            response.as_mut().poll(cx)
        })
        .await
    }
}

struct Idle {
    conn: Conn,
    /// The upstream's sweep count when the connection was pooled.
    since: u32,
}

/// Keep-alive connections to one backend address and port.
pub struct Upstream {
    host: BackendHost,
    port: u16,
    tls: Option<UpstreamTls>,
    /// Idle connections by the worker that opened them (see [`crate::workers`]). A
    /// request takes only its own worker's, and opens a connection when there is none, so that
    /// the request and the connection's task always run on one thread (and the connection
    /// comes back to the same worker's pool).
    idle: Box<[ArrayQueue<Idle>]>,
    /// When the TLS server name follows the request's host: one upstream per name seen.
    by_name: ArcSwap<HashMap<Box<str>, Arc<Upstream>>>,
    /// Last good DNS answer, for a host given as a name.
    dns: resolve::LastGood,
    /// Whether the task sweeping the idle connections runs.
    sweeping: AtomicBool,
    /// Sweeps so far: the idle connections' clock.
    sweeps: AtomicU32,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        write!(
            f,
            "Upstream({scheme}://{}:{}, {} idle)",
            self.host,
            self.port,
            self.idle.iter().map(ArrayQueue::len).sum::<usize>()
        )
    }
}

/// How an HTTPS upstream speaks TLS.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Carries the roots the backend's certificate is verified against, and the session cache.
    pub config: Arc<ClientConfig>,
    /// Identifies the roots (`None`: the system's).
    pub trust: Option<u64>,
    /// Sent as SNI and checked against the certificate.
    pub server_name: ServerName<'static>,
    /// The backend settings name no host: each request's host is the server name, and
    /// `server_name` (the backend address) serves only requests without one, and probes.
    pub follows_request: bool,
}

impl UpstreamTls {
    /// The TLS identity for `settings` towards a server at `host`: SNI is the settings' host
    /// name, else (with `pick_host_name_from_backend_address` or no host at all) the server's
    /// address. `None` for HTTP settings.
    pub fn for_settings(settings: &BackendSettings, host: &BackendHost) -> Option<Self> {
        if settings.protocol != Protocol::Https {
            return None;
        }
        let address_name = || match host {
            BackendHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
            BackendHost::Dns(name) => server_name(name.trim_end_matches('.'))
                .unwrap_or_else(|| ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())),
        };
        let (server_name, follows_request) = match &settings.host {
            HostOverride::Fixed(value) => {
                let name =
                    wasmgate_rules::matching::host_without_port(value.to_str().unwrap_or_default());
                (server_name(name).unwrap_or_else(address_name), false)
            }
            HostOverride::FromBackendAddress => (address_name(), false),
            HostOverride::PassThrough => (address_name(), true),
        };
        Some(Self {
            config: crate::tls::client::client_config(settings.trusted_roots.as_ref()),
            trust: settings.trusted_roots.as_ref().map(|r| r.fingerprint()),
            server_name,
            follows_request,
        })
    }
}

/// A host name (or IP literal, bracketed or not) as a TLS server name.
fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_ascii_lowercase()).ok()
}

/// What makes two upstreams interchangeable: the same address, port and TLS identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamKey {
    pub host: BackendHost,
    pub port: u16,
    /// Server name, roots, and whether the server name follows the request's host.
    pub tls: Option<(ServerName<'static>, Option<u64>, bool)>,
}

impl UpstreamKey {
    pub fn new(host: BackendHost, port: u16, tls: Option<&UpstreamTls>) -> Self {
        Self {
            host,
            port,
            tls: tls.map(|t| (t.server_name.clone(), t.trust, t.follows_request)),
        }
    }
}

/// Server names remembered per upstream when SNI follows the request's host; beyond that,
/// connections for new names are not pooled.
const MAX_NAMES: usize = 256;

/// Why a connection to a backend could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("DNS resolution failed: {0}")]
    Dns(io::Error),
    #[error("TCP connect failed: {0}")]
    Tcp(io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
    #[error("{0}")]
    Tls(TlsFailure),
}

impl Upstream {
    /// A plain HTTP upstream, used from `workers` threads.
    pub fn new(host: BackendHost, port: u16, workers: usize) -> Self {
        Self::with_tls(host, port, None, workers)
    }

    /// An upstream speaking TLS when `tls` is set (see [`UpstreamTls::for_settings`]), used from
    /// `workers` threads: each keeps its idle connections apart.
    pub fn with_tls(
        host: BackendHost,
        port: u16,
        tls: Option<UpstreamTls>,
        workers: usize,
    ) -> Self {
        Self {
            host,
            port,
            tls,
            by_name: ArcSwap::default(),
            idle: {
                let shards = workers.max(1);
                (0..shards)
                    .map(|_| ArrayQueue::new(MAX_IDLE.div_ceil(shards)))
                    .collect()
            },
            dns: Default::default(),
            sweeping: AtomicBool::new(false),
            sweeps: AtomicU32::new(0),
        }
    }

    /// Set while this upstream's DNS name does not resolve and its last good addresses are used.
    pub fn dns_stale(&self) -> Option<resolve::Stale> {
        self.dns.stale()
    }

    /// The port connections go to.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn key(&self) -> UpstreamKey {
        UpstreamKey::new(self.host.clone(), self.port, self.tls.as_ref())
    }

    pub fn tls(&self) -> Option<&UpstreamTls> {
        self.tls.as_ref()
    }

    /// For an HTTPS upstream whose server name follows the request, the upstream for a request
    /// to `host` (without port): same server, `host` as SNI. `None` when this upstream serves
    /// every request itself.
    pub fn for_request_host(&self, host: &str) -> Option<Arc<Upstream>> {
        let tls = self.tls.as_ref().filter(|t| t.follows_request)?;
        if host.is_empty() {
            return None;
        }
        if let Some(u) = self.by_name.load().get(host) {
            return Some(u.clone());
        }
        let key: Box<str> = host.to_ascii_lowercase().into();
        if let Some(u) = self.by_name.load().get(&key) {
            return Some(u.clone());
        }
        let name = server_name(&key)?;
        let child = Arc::new(Upstream::with_tls(
            self.host.clone(),
            self.port,
            Some(UpstreamTls {
                server_name: name,
                follows_request: false,
                ..tls.clone()
            }),
            self.idle.len(),
        ));
        if self.by_name.load().len() < MAX_NAMES {
            self.by_name.rcu(|names| {
                let mut names = HashMap::clone(names);
                names.entry(key.clone()).or_insert_with(|| child.clone());
                names
            });
        }
        Some(child)
    }

    /// A ready idle connection of the caller's worker, if one is pooled. Each is polled once
    /// first, with `cx`, so that one the backend has closed is dropped here.
    pub fn take_idle(&self, cx: &mut Context<'_>) -> Option<Conn> {
        let own = self.own_idle();
        while let Some(mut idle) = own.pop() {
            // The sweep closes those past their age.
            if idle.conn.poll_usable(cx) {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Opens a new connection; nothing drives it until it is used (see [`Conn`]).
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        let stream = match &self.host {
            BackendHost::Ip(ip) => TcpStream::connect(SocketAddr::new(*ip, self.port))
                .await
                .map_err(ConnectError::Tcp)?,
            BackendHost::Dns(name) => {
                let addrs = self
                    .dns
                    .resolve(name, self.port)
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
        match &self.tls {
            None => handshake(Gathering(stream), |c| Driver::Plain(Box::new(c))).await,
            Some(tls) => {
                let stream = TlsConnector::from(tls.config.clone())
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|e| ConnectError::Tls(TlsFailure::from_io(&e)))?;
                handshake(stream, |c| Driver::Tls(Box::new(c))).await
            }
        }
    }

    fn own_idle(&self) -> &ArrayQueue<Idle> {
        &self.idle[crate::workers::current() % self.idle.len()]
    }

    /// Returns a connection whose last response has been read completely, after polling it
    /// with `cx` so that it finishes the message.
    fn put_back(self: &Arc<Self>, mut conn: Conn, cx: &mut Context<'_>) {
        if conn.driver.poll_closed(cx) {
            return;
        }
        if conn.sender.is_ready() {
            self.pool(conn);
        } else if !conn.sender.is_closed() {
            // The connection has not yet taken in the end of the message (its last bytes are
            // still on the way): drive it there off the request path.
            let this = self.clone();
            tokio::spawn(async move {
                let ready = std::future::poll_fn(|cx| {
                    if conn.driver.poll_closed(cx) {
                        return Poll::Ready(false);
                    }
                    conn.sender.poll_ready(cx).map(|r| r.is_ok())
                })
                .await;
                if ready {
                    this.pool(conn);
                }
            });
        }
    }

    /// Keeps an idle connection in the caller's worker's pool (closed when the pool is full).
    fn pool(self: &Arc<Self>, conn: Conn) {
        let _ = self.own_idle().push(Idle {
            conn,
            since: self.sweeps.load(Ordering::Relaxed),
        });
        // Loaded first: once the sweeper runs, the flag is only read, and stays in every
        // core's cache.
        if !self.sweeping.load(Ordering::Relaxed) && !self.sweeping.swap(true, Ordering::Relaxed) {
            let upstream = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    every.tick().await;
                    match upstream.upgrade() {
                        Some(upstream) => upstream.sweep(),
                        None => return,
                    }
                }
            });
        }
    }

    /// Closes the idle connections the backend has closed, and those past [`MAX_IDLE_AGE`].
    /// Nobody drives an idle connection, so nobody else would see the backend's close; each is
    /// polled here once, without a waker (the request that takes it polls it again with its
    /// own).
    fn sweep(&self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let now = self.sweeps.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        for shard in &self.idle {
            for _ in 0..shard.len() {
                let Some(mut idle) = shard.pop() else { break };
                if now.wrapping_sub(idle.since) < MAX_IDLE_SWEEPS && idle.conn.poll_usable(&mut cx)
                {
                    let _ = shard.push(idle);
                }
            }
        }
    }
}

/// HTTP/1.1 over an established connection.
async fn handshake<T>(io: T, wrap: fn(Dispatch<T>) -> Driver) -> Result<Conn, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    Ok(Conn {
        sender,
        driver: wrap(conn),
    })
}

/// A backend response body that drives its connection while it streams, and hands the
/// connection back to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    reuse: Option<(Conn, Arc<Upstream>)>,
    /// The body's error, held back for one wake-up (see `poll_frame`).
    failed: Option<hyper::Error>,
}

impl PooledBody {
    pub fn new(inner: Incoming, conn: Conn, upstream: Arc<Upstream>) -> Self {
        Self {
            inner,
            reuse: Some((conn, upstream)),
            failed: None,
        }
    }

    /// The body of a response whose connection runs in a task of its own, and is not pooled.
    pub fn detached(inner: Incoming) -> Self {
        Self {
            inner,
            reuse: None,
            failed: None,
        }
    }

    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some((conn, upstream)) = self.reuse.take() {
            upstream.put_back(conn, cx);
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
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending()
            && let Some((conn, _)) = &mut this.reuse
        {
            // The next frame is still in the socket: let the connection read it. A connection
            // that closes is not pooled, and its body ends with it (with an error when cut).
            if conn.driver.poll_closed(cx) {
                this.reuse = None;
            }
            polled = Pin::new(&mut this.inner).poll_frame(cx);
        }
        match polled {
            Poll::Ready(None) => this.release(cx),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(cx),
            Poll::Ready(Some(Err(e))) => {
                // A body cut by the backend fails the client's connection. hyper drops output
                // it has not yet flushed when a body fails, so the error waits one wake-up:
                // the head and the bytes that came before it reach the client first, and the
                // client sees a cut response, not a connection closed with no answer.
                this.reuse = None;
                this.failed = Some(e);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
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

impl Drop for PooledBody {
    /// A body that ended before it was polled (no content) still returns its connection (when
    /// dropped in a runtime, whose tasks pooling may need; not as a runtime shuts down).
    fn drop(&mut self) {
        if self.reuse.is_some()
            && self.inner.is_end_stream()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            self.release(&mut Context::from_waker(std::task::Waker::noop()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(upstream: &Upstream) -> usize {
        upstream.idle.iter().map(ArrayQueue::len).sum()
    }

    /// An upstream with one connection pooled to a server on loopback that holds its
    /// connections open, or closes each at once with `close`; and the server's task. Nothing
    /// sweeps the upstream but the test.
    async fn pooled(close: bool) -> (Arc<Upstream>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                if !close {
                    held.push(stream);
                }
            }
        });
        let upstream = Arc::new(Upstream::new(
            BackendHost::Ip([127, 0, 0, 1].into()),
            port,
            1,
        ));
        upstream.sweeping.store(true, Ordering::Relaxed);
        let conn = upstream.connect().await.expect("connect");
        upstream.pool(conn);
        (upstream, task)
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_its_age_in_sweeps() {
        let (upstream, server) = pooled(false).await;
        for sweep in 1..MAX_IDLE_SWEEPS {
            upstream.sweep();
            assert_eq!(idle(&upstream), 1, "still pooled after sweep {sweep}");
        }
        upstream.sweep();
        assert_eq!(idle(&upstream), 0, "closed at {MAX_IDLE_AGE:?}");
        server.abort();
    }

    #[tokio::test]
    async fn a_sweep_closes_an_idle_connection_the_server_closed() {
        let (upstream, server) = pooled(true).await;
        let swept = tokio::time::timeout(Duration::from_secs(30), async {
            while idle(&upstream) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                upstream.sweep();
            }
        })
        .await;
        assert!(swept.is_ok(), "the closed connection is still pooled");
        server.abort();
    }
}
