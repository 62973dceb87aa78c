//! Accepting connections: one socket per frontend (listeners sharing a port share it), HTTP/1.1
//! served by hyper with upgrades enabled.

mod io;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::config::{MAX_HEADER_BYTES, MAX_URL_BYTES, Protocol};
use crate::gateway::Shared;
use crate::proxy::Connection;

/// Binds a listening socket with a deep accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

pub async fn accept_loop(
    listener: TcpListener,
    frontend: usize,
    scheme: Protocol,
    shared: Arc<Shared>,
) {
    let limits = shared.snapshot.load().config.limits;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, so it also closes
        // keep-alive connections left idle.
        .header_read_timeout(limits.client_idle_timeout)
        // The URL and the header section are limited separately (414 and 431), each at 32 KB.
        .max_buf_size(MAX_URL_BYTES + MAX_HEADER_BYTES + 8192)
        .max_header_size(MAX_URL_BYTES + MAX_HEADER_BYTES);
    let stopping = shared.stopping();
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
        tokio::spawn(serve(
            stream,
            client,
            frontend,
            scheme,
            shared.clone(),
            http.clone(),
        ));
    }
}

async fn serve(
    stream: TcpStream,
    client: SocketAddr,
    frontend: usize,
    scheme: Protocol,
    shared: Arc<Shared>,
    http: http1::Builder,
) {
    let _guard = shared.track();
    let _ = stream.set_nodelay(true);
    let local_port = stream.local_addr().map_or(0, |a| a.port());
    let stopping = shared.stopping();
    let conn = Arc::new(Connection {
        shared,
        frontend,
        client,
        local_port,
        scheme,
        head_timed_out: AtomicBool::new(false),
    });
    let io = io::ClientIo::new(stream, conn.clone());
    let service_conn = conn.clone();
    let service = service_fn(move |req| {
        let conn = service_conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(req).await) }
    });
    let served = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(served);
    tokio::pin!(stopping);
    let result = tokio::select! {
        r = served.as_mut() => r,
        _ = &mut stopping => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            // Read by the stream's drop, just below, to answer 408.
            conn.head_timed_out.store(true, Ordering::Relaxed);
        }
        tracing::debug!(client = %client, error = %e, "client connection ended with an error");
    }
}
