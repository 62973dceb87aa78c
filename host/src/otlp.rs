//! Span export to an OpenTelemetry collector over OTLP/HTTP with protobuf bodies
//! (`[telemetry] otlp_endpoint`; OTLP specification, "OTLP/HTTP").
//!
//! The request path hands a finished [`Span`] to [`OtlpExporter::export`], which never waits:
//! the span goes into a bounded queue, or is counted as dropped when the queue is full. One task
//! off the request path takes spans from the queue, sends them in batches (when
//! [`ExportOptions::batch_size`] spans are waiting, or [`ExportOptions::interval`] after the
//! first of a batch arrived) as an `ExportTraceServiceRequest` POSTed to `/v1/traces`, and
//! retries a batch the collector could not take (connection failure, 429, 502, 503, 504) a
//! bounded number of times with doubling pauses; then it gives the batch up and counts it.
//!
//! The log phase (`proxy/log.rs`, `Exchange::span`) builds each request's span when its
//! response ends, from the request's W3C trace context: named by method and rule (never the
//! raw path, so that names stay few), with the listener, rule, backend pool and the server that
//! answered as attributes.
//!
//! With no `otlp_endpoint` configured `plane.spans` is `None` and a request builds nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as proto;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::OtlpEndpoint;

/// What a span says about one request, in plain fields. Names from the configuration are
/// shared (`Arc<str>`) so that filling them in costs no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span, from an incoming `traceparent`; `None` for a trace started here.
    pub parent_span_id: Option<[u8; 8]>,
    /// Low cardinality: `GET`, or `GET {rule}`; never the request's path.
    pub name: String,
    /// Nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub kind: SpanKind,
    /// `http.request.method`.
    pub method: Method,
    /// `url.path`.
    pub url_path: String,
    /// `server.address`: the host the client asked for.
    pub server_address: String,
    /// `http.response.status_code`; a 5xx marks the span as an error.
    pub http_status: u16,
    /// `wasmgate.listener`, `wasmgate.rule`, `wasmgate.backend_pool`.
    pub listener: Option<Arc<str>>,
    pub rule: Option<Arc<str>>,
    pub backend_pool: Option<Arc<str>>,
    /// `network.peer.address` and `network.peer.port`: the backend server the request was
    /// routed to.
    pub peer_address: Option<SocketAddr>,
}

/// OpenTelemetry's span kinds that the gateway produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// A request the gateway served.
    Server,
    /// A request the gateway made (to a backend).
    Client,
}

/// Nanoseconds since the Unix epoch, as a span's times are given.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// How the exporter queues, batches and retries.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Spans waiting at most; more are dropped (and counted).
    pub queue: usize,
    /// Spans per request to the collector at most; a full batch is sent at once.
    pub batch_size: usize,
    /// A batch is sent at the latest this long after its first span arrived.
    pub interval: Duration,
    /// Bound on one request to the collector (connect, send, answer).
    pub timeout: Duration,
    /// Further attempts for a batch the collector could not take; then it is given up.
    pub retries: u32,
    /// Pause before the first retry; it doubles for each next one.
    pub backoff: Duration,
}

impl Default for ExportOptions {
    /// OpenTelemetry's batch span processor's defaults (queue 2048, batches of 512), sent at
    /// least every second so that a trace shows up while the operator looks for it.
    fn default() -> Self {
        Self {
            queue: 2048,
            batch_size: 512,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// Counts of what became of the spans handed to the exporter.
#[derive(Debug, Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    batches: AtomicU64,
    retries: AtomicU64,
}

/// A copy of the exporter's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full.
    pub dropped: u64,
    /// Spans given up after the retries, or refused by the collector.
    pub failed: u64,
    /// Requests to the collector that it accepted.
    pub batches: u64,
    /// Requests sent again after a failure.
    pub retries: u64,
}

/// The handle the request path exports spans through; see the module's documentation.
pub struct OtlpExporter {
    queue: mpsc::Sender<Span>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    endpoint: String,
}

impl OtlpExporter {
    /// Starts the exporting task on the current tokio runtime.
    pub fn start(endpoint: &OtlpEndpoint, service_name: &str, options: ExportOptions) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let counters = Arc::new(Counters::default());
        let (stop, stopping) = watch::channel(false);
        let batcher = Batcher {
            collector: Collector {
                authority: endpoint.authority(),
                path: endpoint.traces_path.clone(),
                connection: None,
                timeout: options.timeout,
            },
            resource: resource(service_name),
            counters: counters.clone(),
            options,
        };
        let task = tokio::spawn(batcher.run(rx, stopping));
        Arc::new(Self {
            queue: tx,
            counters,
            stop,
            task: std::sync::Mutex::new(Some(task)),
            endpoint: format!("http://{}{}", endpoint.authority(), endpoint.traces_path),
        })
    }

    /// Hands `span` to the exporter without waiting: queued, or dropped (and counted) when
    /// the queue is full or the exporter has stopped.
    pub fn export(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> ExportStats {
        let c = &self.counters;
        ExportStats {
            exported: c.exported.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// Where the spans go (`http://host:port/v1/traces`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends what is queued and stops, waiting at most `limit`; spans exported later are
    /// dropped.
    pub async fn shutdown(&self, limit: Duration) {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task
            && tokio::time::timeout(limit, &mut task).await.is_err()
        {
            tracing::warn!(endpoint = %self.endpoint, "span export did not finish in time; the remaining spans are dropped");
            task.abort();
        }
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![
            string("service.name", service_name),
            string("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    }
}

struct Batcher {
    collector: Collector,
    resource: Resource,
    counters: Arc<Counters>,
    options: ExportOptions,
}

impl Batcher {
    async fn run(mut self, mut queue: mpsc::Receiver<Span>, mut stopping: watch::Receiver<bool>) {
        let mut batch = Vec::with_capacity(self.options.batch_size);
        let mut due = tokio::time::Instant::now();
        let mut reported_drops = 0;
        loop {
            tokio::select! {
                biased;
                // Only ever set to true; an error means the handle is gone: stop too.
                _ = stopping.changed() => break,
                span = queue.recv() => match span {
                    Some(span) => {
                        if batch.is_empty() {
                            due = tokio::time::Instant::now() + self.options.interval;
                        }
                        batch.push(span);
                        if batch.len() >= self.options.batch_size {
                            self.send(&mut batch).await;
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(due), if !batch.is_empty() => {
                    self.send(&mut batch).await;
                }
            }
            let dropped = self.counters.dropped.load(Ordering::Relaxed);
            if dropped != reported_drops {
                tracing::warn!(
                    dropped = dropped - reported_drops,
                    "span export queue full: spans dropped"
                );
                reported_drops = dropped;
            }
        }
        // Stopping: what is queued now goes out, in full batches.
        queue.close();
        while let Some(span) = queue.recv().await {
            batch.push(span);
            if batch.len() >= self.options.batch_size {
                self.send(&mut batch).await;
            }
        }
        if !batch.is_empty() {
            self.send(&mut batch).await;
        }
    }

    /// Sends `batch` (emptying it), retrying as the options say.
    async fn send(&mut self, batch: &mut Vec<Span>) {
        let count = batch.len() as u64;
        let body = Bytes::from(encode(&self.resource, batch.drain(..)).encode_to_vec());
        let mut pause = self.options.backoff;
        for attempt in 0..=self.options.retries {
            if attempt > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2);
            }
            match self.collector.post(body.clone()).await {
                Ok(()) => {
                    self.counters.exported.fetch_add(count, Ordering::Relaxed);
                    self.counters.batches.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(Failure::Retry(why)) => {
                    tracing::debug!(endpoint = %self.collector.authority, attempt, %why, "span export failed; retrying");
                }
                Err(Failure::Refused(why)) => {
                    tracing::warn!(endpoint = %self.collector.authority, spans = count, %why, "the collector refused spans");
                    self.counters.failed.fetch_add(count, Ordering::Relaxed);
                    return;
                }
            }
        }
        tracing::warn!(endpoint = %self.collector.authority, spans = count, retries = self.options.retries, "span export failed; spans given up");
        self.counters.failed.fetch_add(count, Ordering::Relaxed);
    }
}

/// Why a request to the collector failed: worth another attempt, or not.
enum Failure {
    Retry(String),
    Refused(String),
}

/// The collector, over one kept-alive HTTP/1.1 connection opened again when it closes.
struct Collector {
    authority: String,
    path: String,
    connection: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

impl Collector {
    async fn post(&mut self, body: Bytes) -> Result<(), Failure> {
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(result) => result,
            Err(_) => {
                self.connection = None;
                Err(Failure::Retry(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    async fn exchange(&mut self, body: Bytes) -> Result<(), Failure> {
        let mut sender = match self.connection.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self
            .path
            .parse()
            .map_err(|_| Failure::Refused(format!("bad path {}", self.path)))?;
        let h = req.headers_mut();
        h.insert(
            header::HOST,
            HeaderValue::from_str(&self.authority)
                .map_err(|_| Failure::Refused(format!("bad host {}", self.authority)))?,
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let status = res.status();
        // Read the answer to the end so that the connection can carry the next batch.
        let _ = res.into_body().collect().await;
        self.connection = Some(sender);
        match status {
            s if s.is_success() => Ok(()),
            // OTLP/HTTP: these are worth retrying, every other failure is not.
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Err(Failure::Retry(format!("answered {status}"))),
            s => Err(Failure::Refused(format!("answered {s}"))),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| Failure::Retry(format!("cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// The OTLP request for `spans`, all under one resource and one instrumentation scope.
pub fn encode(resource: &Resource, spans: impl Iterator<Item = Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "wasmgate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: spans.map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn span(s: Span) -> proto::Span {
    let mut attributes = Vec::with_capacity(10);
    attributes.push(string("http.request.method", s.method.as_str()));
    attributes.push(string("url.path", &s.url_path));
    attributes.push(string("server.address", &s.server_address));
    attributes.push(int("http.response.status_code", i64::from(s.http_status)));
    for (key, value) in [
        ("wasmgate.listener", &s.listener),
        ("wasmgate.rule", &s.rule),
        ("wasmgate.backend_pool", &s.backend_pool),
    ] {
        if let Some(v) = value {
            attributes.push(string(key, v));
        }
    }
    if let Some(peer) = s.peer_address {
        attributes.push(string("network.peer.address", &peer.ip().to_string()));
        attributes.push(int("network.peer.port", i64::from(peer.port())));
    }
    // OpenTelemetry's HTTP conventions: a server span is an error for a 5xx only (a 4xx is
    // the client's); otherwise the status is left unset.
    let status = (s.http_status >= 500).then(|| proto::Status {
        code: proto::status::StatusCode::Error as i32,
        message: String::new(),
    });
    proto::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: s.name,
        kind: match s.kind {
            SpanKind::Server => proto::span::SpanKind::Server,
            SpanKind::Client => proto::span::SpanKind::Client,
        } as i32,
        start_time_unix_nano: s.start_unix_nanos,
        end_time_unix_nano: s.end_unix_nanos,
        attributes,
        status,
        ..Default::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}
