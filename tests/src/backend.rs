//! Backends the gateway forwards to: an HTTP server that reports what it received, a raw TCP
//! server that answers with exact bytes, and a dead address.
//!
//! The gateway's health probes (recognised by their `User-Agent`, [`is_probe`]) are answered
//! apart from traffic, as a switchable [`ProbeAnswer`], and counted apart: `hits()`, `requests()`
//! and `last()` see only the traffic a test sends.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as a backend received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// The request target as received: path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The gateway's end of the backend connection.
    pub peer: SocketAddr,
}

impl SeenRequest {
    /// The first value of `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
struct Behaviour {
    name: String,
    delay: Duration,
    status: StatusCode,
    headers: Vec<(String, String)>,
}

/// Whether a request is one of the gateway's health probes.
pub fn is_probe(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("wasmgate-probe/"))
}

/// How a backend answers health probes. Switch it while the backend runs with
/// [`HttpBackend::set_probe_answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// 200 with body `ok`.
    Healthy,
    /// This status, body `failing`.
    Status(u16),
    /// 200 with this body.
    Body(String),
    /// Waits this long, then 200 `ok`.
    Slow(Duration),
    /// The backend stops listening and drops its connections: connecting is refused.
    Refusing,
    /// Held until the test opens the gate, then 200 `ok`: the test sees when a probe arrives
    /// and decides when it is answered.
    Held(ProbeGate),
}

/// Holds probes back until the test lets them go ([`ProbeAnswer::Held`]).
#[derive(Debug, Clone)]
pub struct ProbeGate(Arc<GateState>);

#[derive(Debug)]
struct GateState {
    arrived: tokio::sync::watch::Sender<bool>,
    open: tokio::sync::watch::Sender<bool>,
}

impl ProbeGate {
    pub fn new() -> Self {
        ProbeGate(Arc::new(GateState {
            arrived: tokio::sync::watch::Sender::new(false),
            open: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// Completes once a probe has arrived (it is held until [`ProbeGate::open`]).
    pub async fn arrived(&self) {
        let mut rx = self.0.arrived.subscribe();
        let _ = rx.wait_for(|arrived| *arrived).await;
    }

    pub fn has_arrived(&self) -> bool {
        *self.0.arrived.borrow()
    }

    /// Answers the probes held and every later one at once.
    pub fn open(&self) {
        self.0.open.send_replace(true);
    }

    async fn pass(&self) {
        self.0.arrived.send_replace(true);
        let mut rx = self.0.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for ProbeGate {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for ProbeGate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ProbeGate {}

impl ProbeAnswer {
    /// Status and body of the answer, after the delay of `Slow`.
    pub async fn respond(&self) -> (u16, String) {
        match self {
            ProbeAnswer::Healthy | ProbeAnswer::Refusing => (200, "ok".into()),
            ProbeAnswer::Status(s) => (*s, "failing".into()),
            ProbeAnswer::Body(b) => (200, b.clone()),
            ProbeAnswer::Slow(d) => {
                tokio::time::sleep(*d).await;
                (200, "ok".into())
            }
            ProbeAnswer::Held(gate) => {
                gate.pass().await;
                (200, "ok".into())
            }
        }
    }
}

/// State an [`HttpBackend`] shares with its connections.
#[derive(Debug)]
struct Record {
    seen: Mutex<Vec<SeenRequest>>,
    probes: Mutex<Vec<SeenRequest>>,
    answer: Mutex<ProbeAnswer>,
    /// Probes received and not yet answered, and the most there ever were at once.
    probes_in_flight: AtomicUsize,
    most_probes_in_flight: AtomicUsize,
}

/// Counts a probe in flight until it is answered (or the gateway gives up on it).
struct ProbeInFlight<'a>(&'a Record);

impl<'a> ProbeInFlight<'a> {
    fn new(record: &'a Record) -> Self {
        let now = record.probes_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        record
            .most_probes_in_flight
            .fetch_max(now, Ordering::SeqCst);
        ProbeInFlight(record)
    }
}

impl Drop for ProbeInFlight<'_> {
    fn drop(&mut self) {
        self.0.probes_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts an [`HttpBackend`] with knobs.
#[derive(Debug, Clone)]
pub struct HttpBackendBuilder {
    behaviour: Behaviour,
    bind: SocketAddr,
}

impl HttpBackendBuilder {
    /// Waits this long before answering each request (after recording it).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.behaviour.delay = delay;
        self
    }

    /// Answers with this status instead of 200.
    pub fn status(mut self, status: u16) -> Self {
        self.behaviour.status = StatusCode::from_u16(status).expect("status code");
        self
    }

    /// Adds a response header (repeatable, e.g. several `set-cookie`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.behaviour
            .headers
            .push((name.to_string(), value.to_string()));
        self
    }

    /// Listens on `addr` instead of 127.0.0.1 port 0 (for pools whose servers share a port on
    /// different loopback addresses, as Application Gateway pools list bare IP addresses).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    pub async fn start(self) -> HttpBackend {
        let listener = TcpListener::bind(self.bind)
            .await
            .expect("bind HTTP backend");
        let addr = listener.local_addr().expect("local_addr");
        let record = Arc::new(Record {
            seen: Mutex::new(Vec::new()),
            probes: Mutex::new(Vec::new()),
            answer: Mutex::new(ProbeAnswer::Healthy),
            probes_in_flight: AtomicUsize::new(0),
            most_probes_in_flight: AtomicUsize::new(0),
        });
        let behaviour = Arc::new(self.behaviour);
        let task = serve_http(listener, behaviour.clone(), record.clone());
        HttpBackend {
            name: behaviour.name.clone(),
            addr,
            record,
            behaviour,
            task: Mutex::new(Some(task)),
        }
    }
}

/// Accepts connections until aborted; aborting also ends every connection it accepted.
fn serve_http(
    listener: TcpListener,
    behaviour: Arc<Behaviour>,
    record: Arc<Record>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            // Reap finished connections so the set stays small.
            while connections.try_join_next().is_some() {}
            let record = record.clone();
            let behaviour = behaviour.clone();
            connections.spawn(async move {
                let service =
                    service_fn(move |req| answer(req, peer, behaviour.clone(), record.clone()));
                // Errors here are the gateway hanging up, which some tests provoke.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// An HTTP/1.1 backend on 127.0.0.1 that records every request and answers with what it saw:
/// response headers `x-backend` (its name), `x-seen-path` (path and query as received),
/// `x-seen-host`, `x-seen-xff`, and a text body with one `name: value` line per request header
/// after a first line `backend <name> <method> <uri>`.
#[derive(Debug)]
pub struct HttpBackend {
    pub name: String,
    pub addr: SocketAddr,
    record: Arc<Record>,
    behaviour: Arc<Behaviour>,
    /// The accept loop; `None` while refusing connections.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl HttpBackend {
    pub fn builder(name: &str) -> HttpBackendBuilder {
        HttpBackendBuilder {
            behaviour: Behaviour {
                name: name.to_string(),
                delay: Duration::ZERO,
                status: StatusCode::OK,
                headers: Vec::new(),
            },
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }

    /// A backend answering 200 at once.
    pub async fn start(name: &str) -> HttpBackend {
        Self::builder(name).start().await
    }

    /// Every request received so far, in arrival order (probes excluded).
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.record.seen.lock().expect("backend record").clone()
    }

    /// Health probes received so far.
    pub fn probes(&self) -> Vec<SeenRequest> {
        self.record.probes.lock().expect("backend record").clone()
    }

    pub fn probe_hits(&self) -> usize {
        self.record.probes.lock().expect("backend record").len()
    }

    /// The most probes this backend was answering at once. A probe stops counting before its
    /// answer is written, so one sent only after the previous answer never overlaps it.
    pub fn most_probes_in_flight(&self) -> usize {
        self.record.most_probes_in_flight.load(Ordering::SeqCst)
    }

    /// Changes how probes are answered from now on. `Refusing` closes the listening socket
    /// and every connection (as a stopped server would); leaving it listens again on the same
    /// address.
    pub async fn set_probe_answer(&self, answer: ProbeAnswer) {
        let refusing = answer == ProbeAnswer::Refusing;
        *self.record.answer.lock().expect("backend record") = answer;
        let running = self.task.lock().expect("backend task").take();
        match (running, refusing) {
            (Some(task), true) => {
                task.abort();
                // Returns once the task, its listener and its connections are dropped.
                let _ = task.await;
            }
            (Some(task), false) => *self.task.lock().expect("backend task") = Some(task),
            (None, true) => {}
            (None, false) => {
                let listener = TcpListener::bind(self.addr)
                    .await
                    .unwrap_or_else(|e| panic!("backend {} cannot listen again: {e}", self.name));
                let task = serve_http(listener, self.behaviour.clone(), self.record.clone());
                *self.task.lock().expect("backend task") = Some(task);
            }
        }
    }

    /// The latest request received; fails the test if there was none.
    pub fn last(&self) -> SeenRequest {
        self.requests()
            .pop()
            .unwrap_or_else(|| panic!("backend {} received no request", self.name))
    }

    /// How many requests arrived (probes excluded).
    pub fn hits(&self) -> usize {
        self.record.seen.lock().expect("backend record").len()
    }

    /// How many requests arrived whose path starts with `prefix` (probes excluded).
    pub fn hits_under(&self, prefix: &str) -> usize {
        self.record
            .seen
            .lock()
            .expect("backend record")
            .iter()
            .filter(|r| r.uri.starts_with(prefix))
            .count()
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    peer: SocketAddr,
    behaviour: Arc<Behaviour>,
    record: Arc<Record>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| parts.uri.to_string());
    let seen = SeenRequest {
        method: parts.method.to_string(),
        uri: uri.clone(),
        headers: parts.headers.clone(),
        body,
        peer,
    };
    if is_probe(&parts.headers) {
        let in_flight = ProbeInFlight::new(&record);
        record.probes.lock().expect("backend record").push(seen);
        let answer = record.answer.lock().expect("backend record").clone();
        let (status, body) = answer.respond().await;
        drop(in_flight);
        return Ok(Response::builder()
            .status(status)
            .header("x-backend", &behaviour.name)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)))
            .expect("probe response"));
    }
    record.seen.lock().expect("backend record").push(seen);
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }

    let mut text = format!("backend {} {} {}\n", behaviour.name, parts.method, uri);
    for (name, value) in &parts.headers {
        text.push_str(&format!(
            "{}: {}\n",
            name,
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let mut resp = Response::builder()
        .status(behaviour.status)
        .header("x-backend", &behaviour.name)
        .header("x-seen-path", &uri)
        .header("content-type", "text/plain");
    if let Some(host) = parts.headers.get(http::header::HOST) {
        resp = resp.header("x-seen-host", host);
    }
    if let Some(xff) = parts.headers.get("x-forwarded-for") {
        resp = resp.header("x-seen-xff", xff);
    }
    for (name, value) in &behaviour.headers {
        resp = resp.header(name, value);
    }
    Ok(resp
        .body(Full::new(Bytes::from(text)))
        .expect("backend response"))
}

/// A backend that answers every request head with the same bytes, exactly as given, on
/// keep-alive connections. It records each request (head and body as received) as text. For tests that need headers a
/// well-behaved HTTP library would not send (hop-by-hop headers in a response).
#[derive(Debug)]
pub struct RawBackend {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl RawBackend {
    pub async fn start(response: &str) -> RawBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind raw backend");
        let addr = listener.local_addr().expect("local_addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let response = Bytes::from(response.to_string());
        let task = {
            let heads = heads.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    tokio::spawn(raw_connection(stream, response.clone(), heads.clone()));
                }
            })
        };
        RawBackend { addr, heads, task }
    }

    /// Requests received so far: head and body, exactly as they arrived (probes excluded).
    pub fn requests(&self) -> Vec<String> {
        self.heads.lock().expect("raw backend record").clone()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn raw_connection(mut stream: TcpStream, response: Bytes, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    // Bounded: at most 1000 requests per connection, heads up to 64 KiB.
    for _ in 0..1000 {
        let Some(end) = read_head(&mut stream, &mut buf, 64 * 1024).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let body_len = if is_chunked(&head) {
            // Up to and including the last chunk and the empty trailer section.
            loop {
                if let Some(i) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                    break i + 5;
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        } else {
            content_length(&head).unwrap_or(0)
        };
        while buf.len() < body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[..body_len]).into_owned();
        buf.drain(..body_len);
        // Health probes get the same answer but are not part of the record.
        let probe = head
            .to_ascii_lowercase()
            .contains("\r\nuser-agent: wasmgate-probe/");
        if !probe {
            heads.lock().expect("raw backend record").push(head + &body);
        }
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// Reads until `buf` holds a complete head; returns the head's length including the blank
/// line, or `None` on EOF, error or a head larger than `max`.
pub(crate) async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        if buf.len() > max {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub(crate) fn is_chunked(head: &str) -> bool {
    head.lines().skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    })
}

pub(crate) fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// An address where nothing listens: connecting is refused.
pub fn dead_address() -> SocketAddr {
    let listener =
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind for a dead address");
    listener.local_addr().expect("local_addr")
}
