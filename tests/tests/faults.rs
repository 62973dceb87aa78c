//! Backend faults: refused, reset mid-body, stalled head, stalled body, half-close, garbage
//! instead of HTTP, a keep-alive connection closed while pooled, and a WebSocket backend
//! vanishing mid-session; and, for contrast, a backend that keeps its connection. Each must give the client the
//! right answer promptly, retry another member only where that is safe (RFC 9110 §9.2.2: a
//! bodiless idempotent request), and leak nothing: every scenario runs many times and the
//! process's open descriptors (`/proc/self/fd`) must come back to where they were.
//!
//! The tests share one process, so they take turns ([`SERIAL`]) to keep the descriptor counts
//! their own.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use wasmgate_tests::client::{read_response, read_until_closed, try_send_for};
use wasmgate_tests::config::single_route;
use wasmgate_tests::ws::{wait_end, ws_open};
use wasmgate_tests::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many times each fault is provoked before descriptors are counted.
const ROUNDS: usize = 20;
/// Descriptors the process may hold above its baseline afterwards: idle pooled connections to
/// the healthy backends (both ends live in this process; each worker thread pools its own) and
/// timer/runtime noise — far below one per round.
fn fd_slack() -> usize {
    4 + 4 * wasmgate::workers::per_core()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// Waits (bounded) until the process holds at most `baseline + fd_slack()` descriptors.
async fn assert_no_fd_leak(baseline: usize, scenario: &str) {
    let mut last = 0;
    let settled = tokio::time::timeout(WAIT, async {
        loop {
            last = open_fds();
            if last <= baseline + fd_slack() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "{scenario}: {last} descriptors open after {ROUNDS} rounds, baseline {baseline} (+{} allowed): connections leak",
        fd_slack()
    );
}

/// What a [`FaultBackend`] does with a request that is not a health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answers bytes that are not HTTP, then closes.
    Garbage,
    /// Reads the request and never answers.
    StallHead,
    /// Sends a head announcing 1000 bytes, 100 of them, then nothing more.
    StallBody,
    /// Sends a head announcing 1000 bytes, 100 of them, then resets the connection.
    ResetMidBody,
    /// Answers a body delimited by closing its sending side (RFC 9112 §6.3 ¶8), then reads on.
    HalfClose,
    /// No fault: answers by path, `/length/` with a Content-Length body, `/chunked/` with a
    /// chunked one, anything else with a 204, and keeps the connection open.
    Serves,
    /// Answers with a Content-Length body, then closes the connection without announcing it
    /// (as a server whose keep-alive timeout is shorter than the gateway's does).
    ClosesWhenIdle,
    /// Answers as soon as it has the request head, then reads the request body, and keeps the
    /// connection.
    AnswersBeforeBody,
}

/// What a fault backend's connections share: hits, connections used, the release of a
/// [`Fault::ClosesWhenIdle`] connection, and the gateway's address on the last one.
type Counters = (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Arc<tokio::sync::Notify>,
    Arc<std::sync::Mutex<Option<SocketAddr>>>,
);

/// A backend that answers health probes properly and misbehaves on every other request, so it
/// stays in rotation while it fails.
struct FaultBackend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Connections that carried at least one request other than a probe.
    used: Arc<AtomicUsize>,
    /// Lets a [`Fault::ClosesWhenIdle`] connection close, once the test has its answer.
    release: Arc<tokio::sync::Notify>,
    /// The gateway's address on the connection that answered last.
    last_peer: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl FaultBackend {
    async fn start(fault: Fault) -> FaultBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind fault backend");
        let addr = listener.local_addr().expect("local_addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let used = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let last_peer = Arc::new(std::sync::Mutex::new(None));
        let counters = (
            hits.clone(),
            used.clone(),
            release.clone(),
            last_peer.clone(),
        );
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                connections.spawn(fault_connection(stream, fault, counters.clone()));
            }
        });
        FaultBackend {
            addr,
            hits,
            used,
            release,
            last_peer,
            task,
        }
    }

    /// Lets the connection that answered last close (one at a time: requests are sequential).
    fn release_connection(&self) {
        self.release.notify_one();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The gateway's address on the connection that answered last.
    fn last_peer(&self) -> Option<SocketAddr> {
        *self.last_peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn used_connections(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

impl Drop for FaultBackend {
    fn drop(&mut self) {
        // Ends the accept loop, and with it every connection it holds.
        self.task.abort();
    }
}

async fn fault_connection(
    mut stream: TcpStream,
    fault: Fault,
    (hits, used, release, last_peer): Counters,
) {
    let mut counted = false;
    // Bounded: at most 100 requests per connection.
    for _ in 0..100 {
        let Some((head, unread)) = read_head(&mut stream).await else {
            return;
        };
        let probe = head.contains("\r\nuser-agent: wasmgate-probe/");
        // Fault::AnswersBeforeBody reads the body after its answer.
        let answers_first = fault == Fault::AnswersBeforeBody && !probe;
        if !answers_first && !skip_body(&mut stream, unread).await {
            return;
        }
        if probe {
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(ok).await.is_err() {
                return;
            }
            continue;
        }
        hits.fetch_add(1, Ordering::SeqCst);
        if !counted {
            counted = true;
            used.fetch_add(1, Ordering::SeqCst);
        }
        let partial = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{}",
            "p".repeat(100)
        );
        match fault {
            Fault::Garbage => {
                let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
                return;
            }
            Fault::StallHead => {
                // Until the gateway gives up and closes (or the backend is dropped).
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(1..)) {}
                return;
            }
            Fault::StallBody => {
                let _ = stream.write_all(partial.as_bytes()).await;
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(1..)) {}
                return;
            }
            Fault::ResetMidBody => {
                let _ = stream.write_all(partial.as_bytes()).await;
                let _ = stream.flush().await;
                // SO_LINGER 0: closing sends RST instead of FIN.
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
                drop(stream);
                return;
            }
            Fault::HalfClose => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nclose-delimited body",
                    )
                    .await;
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(1..)) {}
                return;
            }
            Fault::Serves => {
                let path = head.split(' ').nth(1).unwrap_or_default();
                let answer: &[u8] = if path.starts_with("/length/") {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nlength-body"
                } else if path.starts_with("/chunked/") {
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\nchunked-\r\n4\r\nbody\r\n0\r\n\r\n"
                } else {
                    b"HTTP/1.1 204 No Content\r\n\r\n"
                };
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
            Fault::AnswersBeforeBody => {
                let early = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly";
                if stream.write_all(early).await.is_err() || !skip_body(&mut stream, unread).await {
                    return;
                }
            }
            Fault::ClosesWhenIdle => {
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone";
                *last_peer.lock().unwrap_or_else(|e| e.into_inner()) = stream.peer_addr().ok();
                let _ = stream.write_all(ok).await;
                // Closes once the client has the answer, so the gateway has pooled the
                // connection by then.
                release.notified().await;
                return;
            }
        }
    }
}

/// Reads one request head and its Content-Length body; the head in lowercase.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let (head, unread) = read_head(stream).await?;
    skip_body(stream, unread).await.then_some(head)
}

/// Reads one request head; the head in lowercase, and how many bytes of the body its
/// Content-Length announces that are still to be read.
async fn read_head(stream: &mut TcpStream) -> Option<(String, usize)> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Some((head, len.saturating_sub(buf.len() - end)))
}

/// Reads and drops `unread` bytes of a request body; `false` when the connection ended first.
async fn skip_body(stream: &mut TcpStream, mut unread: usize) -> bool {
    while unread > 0 {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => unread = unread.saturating_sub(n),
        }
    }
    true
}

fn get_req(path: &str) -> http::Request<String> {
    http::Request::get(path)
        .header("host", "faults.test")
        .body(String::new())
        .expect("request")
}

fn post_req(path: &str) -> http::Request<String> {
    http::Request::post(path)
        .header("host", "faults.test")
        .body("payload".to_string())
        .expect("request")
}

/// Sends `req`; returns the status and how long the answer took. Fails the test if there is no
/// answer within [`WAIT`]: an answer is prompt when it does not wait for the backend settings'
/// request timeout, 20 s by default, so a gateway that waited would fail here.
async fn status_of(addr: SocketAddr, req: http::Request<String>, what: &str) -> (u16, Duration) {
    let started = Instant::now();
    match try_send_for(WAIT, addr, req).await {
        Ok(reply) => (reply.status.as_u16(), started.elapsed()),
        Err(e) => panic!("{what}: no answer: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_member_is_skipped_for_any_request() {
    let _serial = SERIAL.lock().await;
    let good = HttpBackend::start("good").await;
    let refusing = HttpBackend::start("refusing").await;
    let gw = start_gateway(&single_route(&[refusing.addr, good.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    // Healthy by its first probe, then it stops listening: the next probe is 30 s away, so it
    // stays in rotation while every connection to it is refused.
    refusing.set_probe_answer(ProbeAnswer::Refusing).await;
    let baseline = open_fds();
    for i in 0..ROUNDS {
        // A connection refused means the request never left: even a POST goes to the next one.
        let req = if i % 2 == 0 {
            get_req(&format!("/r/{i}"))
        } else {
            post_req(&format!("/r/{i}"))
        };
        let (status, _) = status_of(addr, req, "refused member").await;
        assert_eq!(status, 200, "round {i}: the refused member is skipped");
    }
    assert_eq!(
        good.hits_under("/r/"),
        ROUNDS,
        "every request reached the good member once"
    );
    assert_no_fd_leak(baseline, "refused member").await;

    // Alone in its pool, a refusing member is a prompt 502 (once its first probe has failed).
    let gw2 = start_gateway(&single_route(&[refusing.addr], "")).await;
    let (status, _) = status_of(listener_addr(&gw2, "web"), get_req("/"), "refused alone").await;
    assert_eq!(status, 502, "a pool whose only member refuses answers 502");
    gw2.shutdown().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_head_is_504_and_retried_only_when_safe() {
    let _serial = SERIAL.lock().await;
    let stalled = FaultBackend::start(Fault::StallHead).await;
    let good = HttpBackend::start("good").await;
    let gw = start_gateway(&single_route(
        &[stalled.addr, good.addr],
        "request_timeout = \"300ms\"",
    ))
    .await;
    let addr = listener_addr(&gw, "web");
    let baseline = open_fds();

    // A GET is retried once on the other member after the timeout.
    for i in 0..ROUNDS {
        let (status, _) = status_of(addr, get_req(&format!("/g/{i}")), "stalled GET").await;
        assert_eq!(
            status, 200,
            "round {i}: a GET that timed out is retried on the good member"
        );
    }
    assert!(
        stalled.hits() >= ROUNDS / 4,
        "round robin sent GETs to the stalled member too"
    );
    assert_eq!(good.hits_under("/g/"), ROUNDS);

    // A POST that reached the stalled member is not sent again: 504.
    let before = stalled.hits();
    let mut timeouts = 0;
    for i in 0..ROUNDS {
        let (status, took) = status_of(addr, post_req(&format!("/p/{i}")), "stalled POST").await;
        assert!(
            status == 200 || status == 504,
            "round {i}: a POST answers 200 (good member) or 504 (stalled member), got {status}"
        );
        if status == 504 {
            timeouts += 1;
            assert!(
                took >= Duration::from_millis(300),
                "round {i}: 504 after {took:?}, before the 300 ms request timeout"
            );
        }
    }
    assert!(timeouts > 0, "some POSTs went to the stalled member");
    assert_eq!(
        stalled.hits() - before,
        timeouts,
        "each 504 is one POST to the stalled member"
    );
    assert_eq!(
        good.hits_under("/p/"),
        ROUNDS - timeouts,
        "a POST that reached the stalled member is never replayed on the good one"
    );
    assert_no_fd_leak(baseline, "stalled head").await;
    gw.shutdown().await;
}

/// Requests one after another reuse the gateway's connection to the backend, whatever the
/// response's framing: a Content-Length body, a chunked body, or none at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_backend_connection_serves_request_after_request() {
    let _serial = SERIAL.lock().await;
    let backend = FaultBackend::start(Fault::Serves).await;
    let gw = start_gateway(&single_route(&[backend.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let baseline = open_fds();
    for i in 0..3 * ROUNDS {
        let (path, status, text) = match i % 3 {
            0 => (format!("/length/{i}"), 200, "length-body"),
            1 => (format!("/chunked/{i}"), 200, "chunked-body"),
            _ => (format!("/empty/{i}"), 204, ""),
        };
        let reply = try_send_for(WAIT, addr, get_req(&path))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(reply.status.as_u16(), status, "{path}");
        assert_eq!(reply.text(), text, "{path}");
    }
    assert_eq!(backend.hits(), 3 * ROUNDS);
    assert_reused(&backend);
    assert_no_fd_leak(baseline, "reused connection").await;
    gw.shutdown().await;
}

/// A pooled connection the backend closed while it was idle is not used: even a POST, which
/// is never replayed once sent, reaches the backend on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pooled_connection_the_backend_closed_is_not_used() {
    let _serial = SERIAL.lock().await;
    let backend = FaultBackend::start(Fault::ClosesWhenIdle).await;
    let gw = start_gateway(&single_route(&[backend.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let baseline = open_fds();
    for i in 0..ROUNDS {
        let path = format!("/p/{i}");
        let reply = try_send_for(WAIT, addr, post_req(&path))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(reply.status.as_u16(), 200, "{path}");
        assert_eq!(reply.text(), "done", "{path}");
        // The backend closes the pooled connection, and its close reaches the gateway (its
        // socket there leaves ESTABLISHED) before the next request.
        let pooled = backend.last_peer().expect("the backend saw the connection");
        backend.release_connection();
        eventually(
            "the backend's close arrives while the connection is pooled",
            || async {
                (socket_state(pooled, backend.addr).as_deref() != Some(TCP_ESTABLISHED))
                    .then_some(())
            },
        )
        .await;
    }
    assert_eq!(backend.hits(), ROUNDS);
    assert_eq!(backend.used_connections(), ROUNDS);
    // The last connection is closed by the backend with no request after it: the gateway closes
    // its end too, instead of keeping it half-closed in the pool.
    let lingering = tokio::time::timeout(WAIT, async {
        while sockets_to(backend.addr, TCP_CLOSE_WAIT) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        lingering.is_ok(),
        "{} connection(s) the backend closed still open in the gateway",
        sockets_to(backend.addr, TCP_CLOSE_WAIT)
    );
    assert_no_fd_leak(baseline, "closed when idle").await;
    gw.shutdown().await;
}

/// Requests sent one at a time reused the gateway's backend connection: at most one per
/// worker thread (each pools its own).
fn assert_reused(backend: &FaultBackend) {
    let workers = wasmgate::workers::per_core();
    assert!(
        backend.used_connections() <= workers,
        "{} requests took {} backend connections; at most one per worker ({workers}) expected",
        backend.hits(),
        backend.used_connections()
    );
}

/// TCP states as `/proc/net/tcp` writes them.
const TCP_ESTABLISHED: &str = "01";
/// Closed by the peer, still open here.
const TCP_CLOSE_WAIT: &str = "08";

/// `/proc/net/tcp`'s form of an IPv4 socket address (`0100007F:1F90`).
fn proc_address(addr: SocketAddr) -> Option<String> {
    let SocketAddr::V4(a) = addr else {
        return None;
    };
    Some(format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    ))
}

/// This host's IPv4 TCP sockets from `/proc/net/tcp`: local address, remote address, state.
fn proc_sockets() -> Vec<[String; 3]> {
    std::fs::read_to_string("/proc/net/tcp")
        .expect("read /proc/net/tcp")
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st ...
            let mut fields = line.split_whitespace().skip(1).map(str::to_owned);
            Some([fields.next()?, fields.next()?, fields.next()?])
        })
        .collect()
}

/// The state of this host's socket from `local` to `remote`.
fn socket_state(local: SocketAddr, remote: SocketAddr) -> Option<String> {
    let (local, remote) = (proc_address(local)?, proc_address(remote)?);
    proc_sockets()
        .into_iter()
        .find(|[l, r, _]| *l == local && *r == remote)
        .map(|[_, _, state]| state)
}

/// Sockets of this host in `state` towards `peer`.
fn sockets_to(peer: SocketAddr, state: &str) -> usize {
    let Some(remote) = proc_address(peer) else {
        return 0;
    };
    proc_sockets()
        .iter()
        .filter(|[_, r, st]| *r == remote && st == state)
        .count()
}

/// A backend that answers before it has read the request body: the answer reaches the client
/// while the body streams on to the backend, and the connection is used again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_before_the_request_body_is_read_still_gets_the_body_through() {
    let _serial = SERIAL.lock().await;
    let backend = FaultBackend::start(Fault::AnswersBeforeBody).await;
    let gw = start_gateway(&single_route(&[backend.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let baseline = open_fds();
    let body = "b".repeat(256 * 1024);
    for i in 0..5 {
        let path = format!("/upload/{i}");
        let req = http::Request::post(&path)
            .header("host", "faults.test")
            .body(body.clone())
            .expect("request");
        let reply = try_send_for(WAIT, addr, req)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(reply.status.as_u16(), 200, "{path}");
        assert_eq!(reply.text(), "early", "{path}");
    }
    assert_eq!(backend.hits(), 5);
    // Each connection read every body to its end before the next request, so it was reused.
    assert_reused(&backend);
    assert_no_fd_leak(baseline, "answer before body").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_instead_of_http_is_502() {
    let _serial = SERIAL.lock().await;
    let garbage = FaultBackend::start(Fault::Garbage).await;
    let gw = start_gateway(&single_route(&[garbage.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let baseline = open_fds();
    for i in 0..ROUNDS {
        let (status, _) = status_of(addr, get_req(&format!("/x/{i}")), "garbage").await;
        assert_eq!(
            status, 502,
            "round {i}: an answer that is not HTTP is a 502"
        );
    }
    assert_no_fd_leak(baseline, "garbage").await;
    gw.shutdown().await;
}

/// A body cut short after its head went out: the status is already sent, so the client's
/// connection is cut too (never padded, never left waiting: the bound here is far below the
/// 20 s default request timeout, and a connection left open never closes).
async fn assert_body_cut(addr: SocketAddr, what: &str) {
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /cut HTTP/1.1\r\nHost: faults.test\r\n\r\n")
        .await
        .expect("write");
    let (closed, got) = read_until_closed(&mut stream, WAIT).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{what}: the head arrives: {text:?}"
    );
    assert!(
        closed,
        "{what}: the client connection must be closed (within {WAIT:?})"
    );
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(
        body.len() < 1000 && body.chars().all(|c| c == 'p'),
        "{what}: only the bytes the backend sent arrive ({} of 1000)",
        body.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_mid_body_cuts_the_client_connection() {
    let _serial = SERIAL.lock().await;
    let reset = FaultBackend::start(Fault::ResetMidBody).await;
    let gw = start_gateway(&single_route(&[reset.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let baseline = open_fds();
    for i in 0..ROUNDS {
        assert_body_cut(addr, &format!("reset mid-body, round {i}")).await;
    }
    assert_no_fd_leak(baseline, "reset mid-body").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_body_cuts_the_client_connection() {
    let _serial = SERIAL.lock().await;
    let stalled = FaultBackend::start(Fault::StallBody).await;
    let gw = start_gateway(&single_route(
        &[stalled.addr],
        "request_timeout = \"500ms\"",
    ))
    .await;
    let addr = listener_addr(&gw, "web");
    let baseline = open_fds();
    for i in 0..5 {
        assert_body_cut(addr, &format!("stalled body, round {i}")).await;
    }
    assert_no_fd_leak(baseline, "stalled body").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_close_delimited_body_arrives_whole() {
    let _serial = SERIAL.lock().await;
    let half = FaultBackend::start(Fault::HalfClose).await;
    let gw = start_gateway(&single_route(&[half.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let baseline = open_fds();
    for i in 0..ROUNDS {
        let reply = try_send_for(WAIT, addr, get_req(&format!("/h/{i}")))
            .await
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
        assert_eq!(reply.status.as_u16(), 200, "round {i}");
        assert_eq!(
            reply.text(),
            "close-delimited body",
            "round {i}: a body ended by the backend's close arrives whole"
        );
    }
    assert_eq!(half.hits(), ROUNDS, "each request went to the backend once");
    // The closed connection is never reused: a keep-alive client gets every answer.
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    for i in 0..3 {
        stream
            .write_all(format!("GET /ka/{i} HTTP/1.1\r\nHost: faults.test\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let res = read_response(&mut stream)
            .await
            .unwrap_or_else(|e| panic!("keep-alive request {i}: {e}"));
        assert_eq!(res.status, 200, "keep-alive request {i}");
        assert_eq!(res.text(), "close-delimited body");
    }
    drop(stream);
    assert_no_fd_leak(baseline, "half-close").await;
    gw.shutdown().await;
}

/// A WebSocket backend that answers probes, accepts upgrades, echoes one message, then vanishes
/// (its socket closes with no Close frame).
async fn vanishing_ws_backend() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let task = tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            while sessions.try_join_next().is_some() {}
            sessions.spawn(async move {
                let mut peeked = [0u8; 2048];
                let n = stream.peek(&mut peeked).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&peeked[..n]).to_ascii_lowercase();
                if !head.contains("upgrade: websocket") {
                    let mut stream = stream;
                    let _ = read_request(&mut stream).await;
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    return;
                }
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                if let Some(Ok(m)) = ws.next().await {
                    let _ = ws.send(m).await;
                }
                // Vanishes: the socket is dropped without a Close frame.
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_backend_vanishing_ends_the_client_session() {
    let _serial = SERIAL.lock().await;
    let (backend, task) = vanishing_ws_backend().await;
    let gw = start_gateway(&single_route(&[backend], "request_timeout = 60")).await;
    let addr = listener_addr(&gw, "web");
    let baseline = open_fds();
    for i in 0..ROUNDS {
        let mut ws = ws_open(addr, "faults.test", "/ws").await;
        within("send", ws.send(Message::text(format!("m{i}"))))
            .await
            .expect("send");
        // Bounded far below the 60 s request timeout that would otherwise end the session.
        let ended = wait_end(&mut ws, WAIT).await;
        assert!(
            ended.is_some(),
            "round {i}: the session is still open {WAIT:?} after its backend vanished"
        );
        drop(ws);
    }
    assert_no_fd_leak(baseline, "WebSocket backend vanishing").await;
    gw.shutdown().await;
    task.abort();
}
