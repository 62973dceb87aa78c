//! Accepting connections: one listening socket per address and port (listeners sharing a port
//! share it). HTTP
//! listeners serve HTTP/1.1; HTTPS listeners complete the TLS handshake first and then serve
//! HTTP/2 or HTTP/1.1 as ALPN decided, both with upgrades (RFC 6455, RFC 8441). Backends are
//! always reached with HTTP/1.1.

mod busy;
mod inherited;

pub use inherited::Inherited;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::config::{MAX_HEADER_BYTES, MAX_URL_BYTES, Protocol};
use crate::dataplane::DataPlane;
use crate::proxy::{Connection, ProxyError, ServedState, TlsFacts};
use crate::tls::ServerTls;
use crate::workers::Workers;

use crate::client_io::{ClientIo, ClientStream};

/// The sockets of one listening address: one per [worker](crate::workers), all bound to the same
/// address with SO_REUSEPORT, so that the kernel spreads new connections over the workers.
#[derive(Debug)]
pub struct BoundSocket {
    sockets: Vec<std::net::TcpListener>,
    local: SocketAddr,
}

impl BoundSocket {
    /// The bound address (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Duplicates of the OS sockets (the same sockets, other descriptors): what a binary
    /// upgrade hands to the new process while this one keeps accepting.
    pub fn duplicates(&self) -> std::io::Result<Vec<std::net::TcpListener>> {
        self.sockets.iter().map(|s| s.try_clone()).collect()
    }
}

/// Binds a listener's sockets, one per worker, with a deep accept queue and SO_REUSEPORT:
/// several gateway processes started with the same configuration (as the same user) also
/// listen on one port and the kernel spreads new connections over all of them, for more
/// connections than one process's open-file limit allows. A port held by a socket without
/// SO_REUSEPORT, or by another user's, still fails to bind.
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<BoundSocket> {
    bind_or_adopt(addr, workers, Vec::new())
}

/// Binds a listener's sockets as [`bind`] does, starting from `inherited`, the sockets the
/// process this one replaces listened on (binary upgrade): each is kept and accepted on, since
/// closing one would reset the connections waiting in its queue; more are bound beside them
/// when there are more workers than inherited sockets.
pub fn bind_or_adopt(
    addr: SocketAddr,
    workers: usize,
    inherited: Vec<std::net::TcpListener>,
) -> std::io::Result<BoundSocket> {
    let mut sockets = inherited;
    if sockets.is_empty() {
        sockets.push(bind_with(addr, true)?);
    }
    for s in &sockets {
        s.set_nonblocking(true)?;
    }
    // Port 0 asks for any port: the other workers' sockets take the one given to the first.
    let local = sockets[0].local_addr()?;
    while sockets.len() < workers {
        sockets.push(bind_with(local, true)?);
    }
    Ok(BoundSocket { sockets, local })
}

/// One socket without port sharing: for the admin API, whose answers describe one process.
pub fn bind_exclusive(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_with(addr, false)?)
}

fn bind_with(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    // Linux gives accepted connections the listening socket's TCP_NODELAY: one call here
    // instead of one per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// One listening socket of a running gateway. It outlives configuration snapshots: a reload
/// keeps the sockets whose bind address stays, swaps their TLS configuration, and stops the
/// ones no listener uses any more.
#[derive(Debug)]
pub struct SocketHandle {
    /// The socket's id; a snapshot maps it to its description there
    /// ([`crate::snapshot::Snapshot::socket_index`]).
    pub id: usize,
    /// The certificates of an HTTPS socket, read at every handshake.
    pub tls: arc_swap::ArcSwapOption<ServerTls>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl SocketHandle {
    pub fn new(id: usize, tls: Option<Arc<ServerTls>>) -> Arc<Self> {
        Arc::new(Self {
            id,
            tls: arc_swap::ArcSwapOption::new(tls),
            stop: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Stops accepting; the socket's connections finish their requests in flight and close
    /// (HTTP/1.1 after the response, HTTP/2 with GOAWAY). Upgraded WebSocket sessions are not
    /// connections any more and go on.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Completes once the socket is stopped.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }
}

/// hyper's connection builders of one socket, configured from the snapshot's limits and cloned per
/// connection.
#[derive(Clone)]
struct HttpBuilders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// How long a client may take to start (and finish) its TLS handshake.
    handshake_timeout: Duration,
}

impl HttpBuilders {
    fn new(limits: &crate::config::Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // hyper starts this timer whenever it waits for a request head, so it also closes
            // keep-alive connections left idle.
            .header_read_timeout(limits.client_idle_timeout)
            // The URL and the header section are limited separately (414 and 431), each at 32 KB.
            .max_buf_size(MAX_URL_BYTES + MAX_HEADER_BYTES + 8192)
            .max_header_size(MAX_URL_BYTES + MAX_HEADER_BYTES)
            // More header fields than this → 431, before the gateway sees the request.
            .max_headers(limits.max_header_count);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            // RFC 8441: announce SETTINGS_ENABLE_CONNECT_PROTOCOL so clients may open WebSockets.
            .enable_connect_protocol()
            .max_header_list_size((MAX_URL_BYTES + MAX_HEADER_BYTES) as u32);
        Self {
            http1,
            http2,
            handshake_timeout: limits.client_idle_timeout,
        }
    }
}

/// Serves `bound` until `socket` stops: each worker accepts on a socket of its own and serves
/// the connections it accepted. The returned task completes once every worker has stopped
/// accepting.
pub fn serve_socket(
    bound: BoundSocket,
    socket: Arc<SocketHandle>,
    plane: Arc<DataPlane>,
    workers: &Arc<Workers>,
) -> tokio::task::JoinHandle<()> {
    // One count of connections for the whole socket, whichever worker accepted them.
    let slots = busy::Slots::default();
    let loops: Vec<_> = bound
        .sockets
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let served = accept(listener, socket.clone(), plane.clone(), slots.clone());
            // More sockets than workers after an upgrade to fewer workers: they share.
            let handles = workers.handles();
            match handles.get(i % handles.len().max(1)) {
                Some(worker) => worker.spawn(served),
                None => tokio::spawn(served),
            }
        })
        .collect();
    // The workers outlive the runtime that started the gateway (a test's, say): when that
    // runtime drops this task, the workers stop accepting too, and once the last handle on
    // them is gone (this task holds one) their threads end.
    let stop = StopOnDrop(socket);
    let workers = workers.clone();
    tokio::spawn(async move {
        let _stop = stop;
        let _workers = workers;
        for task in loops {
            let _ = task.await;
        }
    })
}

struct StopOnDrop(Arc<SocketHandle>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

async fn accept(
    listener: std::net::TcpListener,
    socket: Arc<SocketHandle>,
    plane: Arc<DataPlane>,
    slots: busy::Slots,
) {
    // Registered with the runtime that accepts on it.
    match TcpListener::from_std(listener) {
        Ok(listener) => accept_loop(listener, socket, plane, slots).await,
        Err(e) => tracing::error!(error = %e, "cannot accept on a worker's socket"),
    }
}

/// Accepts connections on one socket until it (or the gateway) stops. Each connection is
/// served as the current snapshot says: its socket's protocol, its certificates, its limits.
async fn accept_loop(
    listener: TcpListener,
    socket: Arc<SocketHandle>,
    plane: Arc<DataPlane>,
    slots: busy::Slots,
) {
    let mut limits = plane.snapshot.load().config.limits;
    let mut builders = HttpBuilders::new(&limits);
    // A TCP connection's local port is its listener's: read once here, not once per connection.
    let local_port = listener.local_addr().map_or(0, |a| a.port());
    let forwarded_port = HeaderValue::from(local_port);
    let stopping = socket.stopping();
    tokio::pin!(stopping);
    loop {
        let (stream, client) = tokio::select! {
            biased;
            _ = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let snapshot = plane.snapshot.load();
        let Some(index) = snapshot.socket_index(socket.id) else {
            // Accepted just as a reload removed this socket's listeners.
            continue;
        };
        let scheme = snapshot.sockets[index].protocol;
        if snapshot.config.limits != limits {
            limits = snapshot.config.limits;
            builders = HttpBuilders::new(&limits);
        }
        drop(snapshot);
        let tls = match scheme {
            Protocol::Http => None,
            Protocol::Https => match socket.tls.load_full() {
                Some(tls) => Some(tls),
                None => continue,
            },
        };
        let Some(slot) = slots.take(limits.max_connections) else {
            busy::refuse(stream, scheme);
            continue;
        };
        // Boxed: tokio moves a task's future by value on its way into the task's cell and
        // again whenever the task's stage changes, so a connection's task holds a pointer to
        // its state instead of the state itself (about 3 KB, copied several times per
        // connection otherwise).
        let served = Box::pin(serve(
            stream,
            client,
            local_port,
            forwarded_port.clone(),
            socket.clone(),
            scheme,
            tls,
            plane.clone(),
            builders.clone(),
        ));
        tokio::spawn(async move {
            let _slot = slot;
            served.await
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    stream: TcpStream,
    client: SocketAddr,
    local_port: u16,
    forwarded_port: HeaderValue,
    socket: Arc<SocketHandle>,
    scheme: Protocol,
    tls: Option<Arc<ServerTls>>,
    plane: Arc<DataPlane>,
    builders: HttpBuilders,
) {
    let _guard = plane.track();
    // Inherited from the listening socket on Linux (see `bind_with`).
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    // Counted closed when the connection's last request (or WebSocket handshake) lets it go.
    plane.metrics.connection_opened();
    let conn = Arc::new(Connection {
        plane,
        socket_id: socket.id,
        client,
        local_port,
        scheme,
        forwarded: crate::proxy::Forwarded::new(client, forwarded_port),
        head_timed_out: AtomicBool::new(false),
        served_state: AtomicU8::new(ServedState::FRESH),
        sni: std::sync::OnceLock::new(),
        handshake: std::sync::OnceLock::new(),
        tls: std::sync::OnceLock::new(),
    });
    match tls {
        None => serve_http1(stream, conn, &socket, &builders.http1, Handler::Proxy).await,
        // TLS (and HTTP/2 behind it) carries much larger state than plain HTTP/1.1: boxed, so
        // that a plain connection's task does not carry its size.
        Some(tls) => Box::pin(serve_tls(stream, conn, &socket, tls, builders)).await,
    }
}

async fn serve_tls(
    stream: TcpStream,
    conn: Arc<Connection>,
    socket: &SocketHandle,
    tls: Arc<ServerTls>,
    builders: HttpBuilders,
) {
    let client = conn.client;
    // A TLS connection opens with a handshake record (RFC 8446 §5.1, content type 22); anything
    // else is most likely plain HTTP sent to the HTTPS port, which gets its 400 in plain text.
    let mut first = [0u8; 1];
    match tokio::time::timeout(builders.handshake_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1..)) if first[0] == 0x16 => {}
        Ok(Ok(1..)) => {
            return serve_http1(
                stream,
                conn,
                socket,
                &builders.http1,
                Handler::PlainHttpOnTlsPort,
            )
            .await;
        }
        // Closed, failed, or silent for the idle timeout.
        _ => return,
    }
    let accepted = tokio::time::timeout(builders.handshake_timeout, tls.accept(stream)).await;
    let metrics = &conn.plane.metrics;
    let stream = match accepted {
        Ok(Ok((s, handshake))) => {
            if handshake.ssl_profile.is_some() {
                // Rewrites read the client certificate; requests check the profile.
                let _ = conn.handshake.set(Box::new(handshake));
            }
            s
        }
        Ok(Err(e)) => {
            tracing::debug!(client = %client, error = %e, "TLS handshake failed");
            metrics.tls_handshake_failed();
            return;
        }
        Err(_) => {
            tracing::debug!(client = %client, "TLS handshake timed out");
            metrics.tls_handshake_failed();
            return;
        }
    };
    let session = stream.get_ref().1;
    metrics.tls_handshake(session.protocol_version());
    let _ = conn.tls.set(TlsFacts {
        // As Application Gateway's log and its `ssl_connection_protocol` variable write it.
        protocol: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        },
        cipher: session
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or("-"),
    });
    if let Some(name) = stream.get_ref().1.server_name() {
        // Router plugins see the name the client asked for in its handshake.
        let _ = conn.sni.set(name.into());
    }
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_http2(stream, conn, socket, &builders.http2).await
    } else {
        serve_http1(stream, conn, socket, &builders.http1, Handler::Proxy).await
    }
}

#[derive(Clone, Copy)]
enum Handler {
    Proxy,
    /// Every request gets 400 (Application Gateway's answer to plain HTTP on an HTTPS port).
    PlainHttpOnTlsPort,
}

async fn serve_http1<S: ClientStream>(
    stream: S,
    conn: Arc<Connection>,
    socket: &SocketHandle,
    http: &http1::Builder,
    handler: Handler,
) {
    let stopping = socket.stopping();
    let io = ClientIo::new(stream, conn.clone());
    let service_conn = conn.clone();
    let service = service_fn(move |req| {
        let conn = service_conn.clone();
        // The connection's own task, always: plain loads and stores.
        let state = &conn.served_state;
        let stopping = state.load(Ordering::Relaxed) & ServedState::STOPPING;
        state.store(ServedState::BUSY | stopping, Ordering::Relaxed);
        async move {
            let mut res = match handler {
                Handler::Proxy => conn.handle(req).await,
                Handler::PlainHttpOnTlsPort => conn.refuse(
                    &req,
                    ProxyError::BadRequest("a plain HTTP request was sent to an HTTPS port"),
                ),
            };
            let state = &res.body().connection().served_state;
            let stopping = state.load(Ordering::Relaxed) & ServedState::STOPPING;
            state.store(ServedState::IDLE | stopping, Ordering::Relaxed);
            if stopping != 0 && res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                res.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(res)
        }
    });
    let served = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(served);
    tokio::pin!(stopping);
    let result = tokio::select! {
        r = served.as_mut() => r,
        _ = &mut stopping => {
            // hyper closes a connection that has not sent a byte yet at once, unanswered; one
            // accepted just before the stop (a binary upgrade's, a reload's) may have its
            // request on the way: it is answered, with `Connection: close` (or upgraded, or
            // closed by the head timeout). A connection that had requests closes once idle.
            let state = conn.served_state.load(Ordering::Relaxed);
            conn.served_state
                .store(state | ServedState::STOPPING, Ordering::Relaxed);
            match state {
                ServedState::IDLE => served.as_mut().graceful_shutdown(),
                // Its request is on the way, or it was only opened ahead of need (a browser's
                // preconnect): a short wait tells.
                ServedState::FRESH => {
                    tokio::select! {
                        r = served.as_mut() => return finish(r, &conn),
                        _ = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
                    }
                    let state = conn.served_state.load(Ordering::Relaxed);
                    if state & !ServedState::STOPPING != ServedState::BUSY {
                        served.as_mut().graceful_shutdown();
                    }
                }
                _ => {}
            }
            served.await
        }
    };
    finish(result, &conn);
}

/// How long a connection accepted just before its socket stopped may take to send its first
/// request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

fn finish(result: hyper::Result<()>, conn: &Connection) {
    if let Err(e) = result {
        if e.is_timeout() {
            // Read by the stream's drop, just below, to answer 408.
            conn.head_timed_out.store(true, Ordering::Relaxed);
        }
        tracing::debug!(client = %conn.client, error = %e, "client connection ended with an error");
    }
}

async fn serve_http2<S: ClientStream>(
    stream: S,
    conn: Arc<Connection>,
    socket: &SocketHandle,
    http: &http2::Builder<TokioExecutor>,
) {
    let stopping = socket.stopping();
    let service_conn = conn.clone();
    let service = service_fn(move |req| {
        let conn = service_conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(req).await) }
    });
    let served = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    tokio::pin!(stopping);
    let result = tokio::select! {
        r = served.as_mut() => r,
        _ = &mut stopping => {
            // GOAWAY: streams in flight finish, no new ones start.
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %conn.client, error = %e, "HTTP/2 client connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_have_nodelay_and_every_worker_a_socket() {
        let bound = bind("127.0.0.1:0".parse().expect("address"), 2).expect("bind");
        assert_eq!(bound.sockets.len(), 2);
        let _client = std::net::TcpStream::connect(bound.local_addr()).expect("connect");
        // Whichever socket the kernel picked accepts the connection.
        let accepted = (0..500)
            .find_map(|_| {
                let found = bound.sockets.iter().find_map(|l| l.accept().ok());
                if found.is_none() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                found
            })
            .expect("accepted within a second");
        assert!(
            accepted.0.nodelay().expect("nodelay"),
            "Nagle's algorithm is off on accepted connections"
        );
    }
}
