//! Closed-loop load generators: each worker has exactly one operation in
//! flight and starts the next one as soon as the previous one completed.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::future::{Either, select};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http::header::{CONNECTION, HOST};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::backend::HELLO;
use crate::net::{SourceAddrs, connect};
use crate::report::Scenario;
use crate::tls::{Stream, TlsClient};

/// Upper bound on operations per worker and run, so that no loop depends on
/// the clock alone. At 1M ops/s per worker it still allows ~100 s.
const MAX_OPS_PER_WORKER: u64 = 100_000_000;

/// Workers that have not returned this long after the end of the measured
/// window (a stuck connection) are cut off; what they measured is kept.
const GRACE: Duration = Duration::from_secs(5);

/// Bound on one TCP connect plus HTTP/WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed operation, so that a refused or broken target costs
/// the worker a bounded number of attempts rather than a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Latencies are recorded in nanoseconds and reported in microseconds.
const HIST_MAX_NS: u64 = 100_000_000_000;

/// The time frame of one run: warm-up until `measure_start`, measured until
/// `end`, nothing after `hard_stop`.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub measure_start: Instant,
    pub end: Instant,
    pub hard_stop: Instant,
}

impl Window {
    pub fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let measure_start = Instant::now() + warmup;
        let end = measure_start + duration;
        Self {
            measure_start,
            end,
            hard_stop: end + GRACE,
        }
    }
}

/// What one worker saw. Each worker owns its own, so recording takes no lock.
pub struct WorkerStats {
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    /// Keep-alive connections the peer closed between two requests; the
    /// worker reconnects. Not an error, but a cost the figures include.
    pub reconnects: u64,
    pub first_error: Option<String>,
}

impl WorkerStats {
    pub fn new() -> Self {
        Self {
            hist: new_histogram(),
            ops: 0,
            errors: 0,
            reconnects: 0,
            first_error: None,
        }
    }

    /// Counts an operation whose completion falls inside the measured window.
    fn record(&mut self, window: &Window, started: Instant, done: Instant) {
        if done >= window.measure_start && done < window.end {
            self.ops += 1;
            let ns = u64::try_from((done - started).as_nanos()).unwrap_or(u64::MAX);
            self.hist.saturating_record(ns.max(1));
        }
    }

    /// Counts every failure of the run, warm-up included: any error means the
    /// figures need a second look.
    fn error(&mut self, e: impl Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    pub fn merge(&mut self, other: &WorkerStats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.ops += other.ops;
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("static histogram bounds are valid")
}

/// Per-run parameters shared by all workers of a run.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub sources: SourceAddrs,
    /// `Host` header value, built once per run.
    pub host: HeaderValue,
    /// Set for HTTPS targets: every connection starts with a TLS handshake.
    pub tls: Option<TlsClient>,
}

impl Target {
    pub fn new(addr: SocketAddr, sources: SourceAddrs) -> Self {
        let host = HeaderValue::from_str(&addr.to_string())
            .expect("a socket address is a valid header value");
        Self {
            addr,
            sources,
            host,
            tls: None,
        }
    }

    pub fn with_tls(mut self, tls: TlsClient) -> Self {
        self.tls = Some(tls);
        self
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// Spawns `workers` tasks running `worker(id)` and merges their stats.
pub async fn run_workers<F, Fut>(workers: usize, worker: F) -> Result<WorkerStats>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = WorkerStats> + Send + 'static,
{
    let handles: Vec<_> = (0..workers).map(|id| tokio::spawn(worker(id))).collect();
    let mut total = WorkerStats::new();
    for handle in handles {
        total.merge(&handle.await.context("load worker panicked")?);
    }
    Ok(total)
}

/// Notes a worker that `timeout_at(window.hard_stop, ..)` had to cut off;
/// what it measured until then is kept.
pub fn note_cut_off<T>(result: Result<T, tokio::time::error::Elapsed>, stats: &mut WorkerStats) {
    if result.is_err() {
        stats.error("worker still busy at the hard stop; cut off");
    }
}

fn request(target: &Target, close: bool) -> Request<Empty<Bytes>> {
    // Method GET, URI "/" and HTTP/1.1 are the defaults of Request::new; the
    // only per-request allocation left is the header map hyper requires.
    let mut req = Request::new(Empty::new());
    let headers = req.headers_mut();
    headers.insert(HOST, target.host.clone());
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    req
}

/// Sends one request on `sender` and reads the whole response, checking that
/// it is the backend's 200 "hello, world\n".
async fn exchange(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    target: &Target,
    close: bool,
) -> Result<()> {
    sender.ready().await?;
    let resp = sender.send_request(request(target, close)).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            len += data.len();
        }
    }
    if status != StatusCode::OK || len != HELLO.len() {
        bail!("unexpected response: {status}, {len}-byte body");
    }
    Ok(())
}

async fn http_handshake(
    target: &Target,
    source: usize,
) -> Result<(
    http1::SendRequest<Empty<Bytes>>,
    http1::Connection<TokioIo<Stream>, Empty<Bytes>>,
)> {
    let stream = connect(target.sources.get(source), target.addr).await?;
    let stream = match &target.tls {
        None => Stream::Plain(stream),
        Some(tls) => Stream::Tls(Box::new(tls.connect(stream).await?)),
    };
    Ok(http1::handshake(TokioIo::new(stream)).await?)
}

/// Polls `work` together with the connection driver `conn` in the same task
/// (no task per connection), and keeps polling `work` if the connection
/// finishes first so that a response already received is still read.
async fn with_conn<C, W, T>(conn: C, work: W) -> Result<T>
where
    C: Future<Output = hyper::Result<()>>,
    W: Future<Output = Result<T>>,
{
    let conn = pin!(conn);
    let work = pin!(work);
    match select(work, conn).await {
        Either::Left((result, _conn)) => result,
        Either::Right((conn_result, work)) => match work.await {
            Ok(v) => Ok(v),
            Err(e) => Err(match conn_result {
                Err(conn_err) => anyhow!(conn_err).context(e.to_string()),
                Ok(()) => e,
            }),
        },
    }
}

/// Scenario 1: keep-alive connections, one request in flight on each.
pub async fn http_keepalive(target: &Target, id: usize, window: Window, stats: &mut WorkerStats) {
    let mut iterations = 0u64;
    let mut source = id;
    while Instant::now() < window.end && iterations < MAX_OPS_PER_WORKER {
        let connected = timeout(CONNECT_TIMEOUT, http_handshake(target, source)).await;
        source += 1;
        let (mut sender, conn) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                stats.error(format!("connect: {e:#}"));
                iterations += 1;
                sleep(ERROR_BACKOFF).await;
                continue;
            }
            Err(_) => {
                stats.error("connect: timed out");
                iterations += 1;
                continue;
            }
        };
        let requests = async {
            loop {
                let started = Instant::now();
                if started >= window.end || iterations >= MAX_OPS_PER_WORKER {
                    return Ok(false);
                }
                iterations += 1;
                if sender.ready().await.is_err() {
                    return Ok(true);
                }
                exchange(&mut sender, target, false).await?;
                stats.record(&window, started, Instant::now());
            }
        };
        match with_conn(conn, requests).await {
            Ok(false) => {}
            Ok(true) => stats.reconnects += 1,
            Err(e) => {
                stats.error(format!("request: {e:#}"));
                sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

/// Scenario 2: a fresh TCP connection per request, which also carries
/// `Connection: close`. The latency covers connect + request + response.
pub async fn http_new_conn(target: &Target, id: usize, window: Window, stats: &mut WorkerStats) {
    let mut iterations = 0u64;
    let mut source = id;
    while Instant::now() < window.end && iterations < MAX_OPS_PER_WORKER {
        iterations += 1;
        let started = Instant::now();
        let this_source = source;
        source += 1;
        let op = async {
            let (mut sender, conn) = http_handshake(target, this_source).await?;
            with_conn(conn, exchange(&mut sender, target, true)).await
        };
        match timeout(CONNECT_TIMEOUT, op).await {
            Ok(Ok(())) => stats.record(&window, started, Instant::now()),
            Ok(Err(e)) => {
                stats.error(format!("{e:#}"));
                sleep(ERROR_BACKOFF).await;
            }
            Err(_) => stats.error("connect + request: timed out"),
        }
    }
}

pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket session to the backend's `/ws` through `target`.
pub async fn ws_connect(target: &Target, url: &str, source: usize) -> Result<Ws> {
    let op = async {
        let stream = connect(target.sources.get(source), target.addr).await?;
        let (ws, _resp) = client_async(url, stream).await?;
        Ok::<_, anyhow::Error>(ws)
    };
    timeout(CONNECT_TIMEOUT, op)
        .await
        .map_err(|_| anyhow!("WebSocket connect: timed out"))?
}

/// Sends `payload` as one text message and waits for its echo.
pub async fn ws_round_trip(ws: &mut Ws, payload: &Utf8Bytes) -> Result<()> {
    ws.send(Message::Text(payload.clone())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(echo))) if echo.len() == payload.len() => return Ok(()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => bail!("unexpected WebSocket message: {other:?}"),
            Some(Err(e)) => return Err(e.into()),
            None => bail!("WebSocket closed by peer"),
        }
    }
}

/// Scenario 3: WebSocket sessions, one message in flight on each.
pub async fn ws_echo(
    target: &Target,
    payload: &Utf8Bytes,
    id: usize,
    window: Window,
    stats: &mut WorkerStats,
) {
    let url = target.ws_url();
    let mut iterations = 0u64;
    let mut source = id;
    while Instant::now() < window.end && iterations < MAX_OPS_PER_WORKER {
        let connected = ws_connect(target, &url, source).await;
        source += 1;
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(e) => {
                stats.error(format!("{e:#}"));
                iterations += 1;
                sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let result = loop {
            let started = Instant::now();
            if started >= window.end || iterations >= MAX_OPS_PER_WORKER {
                break Ok(());
            }
            iterations += 1;
            if let Err(e) = ws_round_trip(&mut ws, payload).await {
                break Err(e);
            }
            stats.record(&window, started, Instant::now());
        };
        match result {
            Ok(()) => {
                // A clean close keeps the backend's and the gateway's
                // logs free of reset connections.
                let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
            }
            Err(e) => {
                stats.error(format!("echo: {e:#}"));
                sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

/// Opens `count` WebSocket sessions with at most `parallel` handshakes in
/// flight, giving up at `deadline`. Returns the sessions opened and the
/// failures seen.
pub async fn open_idle_sessions(
    target: &Target,
    count: usize,
    parallel: usize,
    deadline: Instant,
) -> (Vec<Ws>, WorkerStats) {
    let parallel = parallel.clamp(1, count.max(1));
    let url = target.ws_url();
    let handles: Vec<_> = (0..parallel)
        .map(|opener| {
            let target = target.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut sessions = Vec::with_capacity(count / parallel + 1);
                let mut stats = WorkerStats::new();
                let open_all = async {
                    for index in (opener..count).step_by(parallel) {
                        match ws_connect(&target, &url, index).await {
                            Ok(ws) => sessions.push(ws),
                            Err(e) => stats.error(format!("{e:#}")),
                        }
                    }
                };
                if timeout_at(deadline, open_all).await.is_err() {
                    stats.error("opening idle sessions: deadline passed");
                }
                (sessions, stats)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    let mut stats = WorkerStats::new();
    for handle in handles {
        match handle.await {
            Ok((sessions, s)) => {
                all.extend(sessions);
                stats.merge(&s);
            }
            Err(e) => stats.error(format!("opener task: {e}")),
        }
    }
    (all, stats)
}

/// Runs `count` keep-alive requests on one connection, each checked to be the backend's answer.
pub async fn check_http(target: &Target, count: usize) -> Result<()> {
    let (mut sender, conn) = timeout(CONNECT_TIMEOUT, http_handshake(target, 0))
        .await
        .map_err(|_| anyhow!("connect: timed out"))??;
    with_conn(conn, async {
        for _ in 0..count {
            timeout(CONNECT_TIMEOUT, exchange(&mut sender, target, false))
                .await
                .map_err(|_| anyhow!("request: timed out"))??;
        }
        Ok(())
    })
    .await
}

/// Runs `count` keep-alive requests and `count` WebSocket round trips, to
/// bring a freshly started gateway past its first-use allocations.
pub async fn warm_up(target: &Target, count: usize, payload: &Utf8Bytes) -> Result<()> {
    check_http(target, count).await.context("HTTP warm-up")?;
    let mut ws = ws_connect(target, &target.ws_url(), 0).await?;
    for _ in 0..count {
        timeout(CONNECT_TIMEOUT, ws_round_trip(&mut ws, payload))
            .await
            .map_err(|_| anyhow!("echo: timed out"))?
            .context("WebSocket warm-up")?;
    }
    let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(())
}

/// One load worker of `scenario`, cut off at the window's hard stop.
pub async fn worker(
    scenario: Scenario,
    target: Target,
    payload: Utf8Bytes,
    id: usize,
    window: Window,
) -> WorkerStats {
    let mut stats = WorkerStats::new();
    let run = async {
        match scenario {
            Scenario::Http | Scenario::HttpRouter | Scenario::HttpReload | Scenario::Tls => {
                http_keepalive(&target, id, window, &mut stats).await
            }
            Scenario::Newconn | Scenario::Tlsnew => {
                http_new_conn(&target, id, window, &mut stats).await
            }
            Scenario::Ws => ws_echo(&target, &payload, id, window, &mut stats).await,
            Scenario::Idle => {}
        }
    };
    let result = timeout_at(window.hard_stop, run).await;
    note_cut_off(result, &mut stats);
    stats
}

/// [`ws_round_trip`] with a time bound, for one-off checks.
pub async fn ws_round_trip_bounded(ws: &mut Ws, payload: &Utf8Bytes) -> Result<()> {
    timeout(CONNECT_TIMEOUT, ws_round_trip(ws, payload))
        .await
        .map_err(|_| anyhow!("echo: timed out"))?
}
