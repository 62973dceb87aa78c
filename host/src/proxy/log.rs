//! Phase 6, log: one record per request, which both the metrics and the access log read.
//!
//! An [`Exchange`] starts with the request and follows it through the phases, which note what
//! they decided ([`Facts`]): listener, rule, target, server, backend timings, why it failed. It
//! then travels inside the response body ([`ExchangeBody`]) and ends when the body does — or
//! when the client goes away first, which is logged as 499. At its end it becomes one
//! [`RequestRecord`]: counted in the snapshot's metrics by index, and written to the access log
//! when that is on (Application Gateway's field names in JSON).

use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};

use super::Connection;
use super::body::ResponseBody;
use super::error::ProxyError;
use super::record::{RequestRecord, push_quoted};
use super::trace::TraceContext;
use crate::config::{BackendHost, ListenerId, LogFormat, PoolId, RuleId, SettingsId};
use crate::metrics::{FailureReason, RequestSample, SessionSample};
use crate::otlp::{self, Span, SpanKind};
use crate::snapshot::Snapshot;
use crate::telemetry::{self, AccessLog};
use crate::websocket::SessionLogger;

/// What the phases learn about a request.
#[derive(Debug)]
pub(super) struct Facts {
    pub trace: TraceContext,
    /// Whether the request carries trace context: `traceparent` continued and passed on, and
    /// `X-AppGW-Trace-Id` both ways (`[telemetry] trace_context`).
    pub trace_headers: bool,
    /// Whether anything reads the request's timings (histograms, access log, spans): the
    /// phases read the clock only then.
    pub timed: bool,
    /// `X-AppGW-Trace-Id`, made once for the backend and the client.
    pub trace_header: Option<HeaderValue>,
    pub listener: Option<ListenerId>,
    pub rule: Option<RuleId>,
    /// The backend pool and settings, and their metrics column.
    pub target: Option<(PoolId, SettingsId, usize)>,
    /// The server (index in its pool) that answered, and its port.
    pub server: Option<(usize, u16)>,
    pub server_status: Option<StatusCode>,
    /// When the request left for the backend.
    pub forwarded_at: Option<Instant>,
    /// How long a new backend connection took to establish (none when a pooled one was used).
    pub connect: Option<Duration>,
    /// From sending the request to the backend's response head.
    pub first_byte: Option<Duration>,
    pub failure: Option<FailureReason>,
}

/// What only the access log needs, kept when it is on.
#[derive(Debug)]
struct LogFacts {
    method: Method,
    uri: Uri,
    version: Version,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
}

/// One request from its head to the end of its response.
pub(crate) struct Exchange {
    pub(super) conn: Arc<Connection>,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) facts: Facts,
    /// When the request's head arrived (when [`Facts::timed`]).
    started: Option<Instant>,
    /// Whether the response's last byte was handed to the connection.
    done: bool,
    /// The status the client got (0 until a response exists).
    status: u16,
    received: u64,
    /// The response head's size, then its body's bytes as they go out.
    sent: u64,
    /// When the response's last byte was handed to the connection (when timed).
    done_at: Option<Instant>,
    /// What the access log and span export need of the request, kept when either is on.
    log: Option<Box<LogFacts>>,
    /// Whether the access log is on (else `log` is kept for the span only).
    write_log: bool,
}

impl Exchange {
    pub(super) fn start<B>(
        conn: Arc<Connection>,
        snapshot: Arc<Snapshot>,
        req: &Request<B>,
    ) -> Self {
        let telemetry = &snapshot.config.telemetry;
        let trace_headers = telemetry.trace_context;
        let trace = if trace_headers {
            TraceContext::from_request(req.headers()).0
        } else {
            TraceContext::start()
        };
        let write_log = AccessLog::enabled(&snapshot.config.logging.access_log);
        let spans = trace_headers && conn.plane.spans.is_some();
        let log = (write_log || spans).then(|| {
            Box::new(LogFacts {
                method: req.method().clone(),
                uri: req.uri().clone(),
                version: req.version(),
                host: req.headers().get(header::HOST).cloned(),
                user_agent: req.headers().get(header::USER_AGENT).cloned(),
            })
        });
        let timed = telemetry.request_histograms || log.is_some();
        let received = head_size(
            req.uri().path_and_query().map_or(1, |p| p.as_str().len()),
            req.method().as_str().len(),
            req.headers(),
        ) + content_length(req.headers());
        Self {
            conn,
            snapshot,
            facts: Facts {
                trace,
                trace_headers,
                timed,
                trace_header: None,
                listener: None,
                rule: None,
                target: None,
                server: None,
                server_status: None,
                forwarded_at: None,
                connect: None,
                first_byte: None,
                failure: None,
            },
            started: timed.then(Instant::now),
            done: false,
            status: 0,
            received,
            sent: 0,
            done_at: None,
            log,
            write_log,
        }
    }

    /// The response the client gets; the exchange goes with its body.
    pub(super) fn respond(
        mut self,
        mut res: Response<ResponseBody>,
        head_only: bool,
    ) -> Response<ExchangeBody> {
        if self.facts.trace_headers && self.snapshot.config.logging.trace_id_response_header {
            let value = self
                .facts
                .trace_header
                .take()
                .unwrap_or_else(|| self.facts.trace.trace_id_value());
            res.headers_mut()
                .insert(super::headers::X_TRACE_ID.clone(), value);
        }
        // Responses without a body (RFC 9110 §6.4.1) are complete once their head is out: the
        // connection never polls their body.
        let status = res.status();
        self.status = status.as_u16();
        self.sent = head_size(0, 12, res.headers());
        let body_done = head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || res.body().is_end_stream();
        if body_done {
            self.body_done();
        }
        res.map(|body| ExchangeBody {
            body,
            exchange: self,
        })
    }

    /// The response's last byte was handed to the connection.
    #[inline]
    fn body_done(&mut self) {
        if !self.done {
            self.done = true;
            if self.facts.timed {
                self.done_at = Some(Instant::now());
            }
        }
    }

    /// Notes a failure's reason, before it becomes the client's response.
    pub(super) fn failed(&mut self, e: &ProxyError) {
        self.facts.failure = Some(reason(e));
    }

    fn finish(&mut self) {
        let client_gone = !self.done;
        let status = if self.status == 0 { 499 } else { self.status };
        let failure = match self.facts.failure {
            Some(f) => Some(f),
            None if client_gone => Some(FailureReason::ClientGone),
            None => None,
        };
        // A client gone before the response's end: the request ends now.
        let end = match (self.started, self.done_at) {
            (Some(_), Some(at)) => Some(at),
            (Some(_), None) => Some(Instant::now()),
            (None, _) => None,
        };
        let total = match (self.started, end) {
            (Some(started), Some(end)) => end - started,
            _ => Duration::ZERO,
        };
        let metrics = &self.snapshot.metrics;
        let slots = metrics.slots(
            self.facts.listener.map(|l| l.0),
            self.facts.rule.map(|r| r.0),
            self.facts.target.map(|t| t.2),
        );
        let histograms = self.snapshot.config.telemetry.request_histograms;
        metrics.record(&RequestSample {
            slots,
            status,
            failure,
            total: histograms.then_some(total),
            received_bytes: self.received,
            sent_bytes: self.sent,
            connect: self.facts.connect.filter(|_| histograms),
            first_byte: self.facts.first_byte.filter(|_| histograms),
            last_byte: match (self.facts.forwarded_at, self.facts.server_status, end) {
                (Some(at), Some(_), Some(end)) if histograms => Some(end - at),
                _ => None,
            },
        });
        let Some(log) = self.log.take() else {
            return;
        };
        let now = SystemTime::now();
        if let Some(spans) = &self.conn.plane.spans
            && self.facts.trace_headers
        {
            // The wall-clock time of the response's end, from the monotonic clock's.
            let since_end = end.map_or(Duration::ZERO, |end| end.elapsed());
            let ended = now - since_end;
            spans.export(self.span(&log, status, ended, total));
        }
        if self.write_log {
            let record = self.record(&log, status, total);
            let format = self.snapshot.config.logging.format;
            self.conn.plane.access_log.write(|out| match format {
                LogFormat::Json => record.write_json(now, out),
                LogFormat::Text => record.write_text(now, out),
            });
        }
    }

    /// The request as an OpenTelemetry span (`[telemetry] otlp_endpoint`): named by method
    /// and rule, never by path, so that span names stay few.
    fn span(&self, log: &LogFacts, status: u16, ended: SystemTime, total: Duration) -> Span {
        let config = &self.snapshot.config;
        let rule = self.facts.rule.map(|r| config.rules[r.0].name.as_str());
        let peer = match (self.facts.target, self.facts.server) {
            (Some((pool, _, _)), Some((server, port))) => {
                match &self.snapshot.pool(pool).servers[server].address.host {
                    BackendHost::Ip(ip) => Some(SocketAddr::new(*ip, port)),
                    BackendHost::Dns(_) => None,
                }
            }
            _ => None,
        };
        let host = log
            .host
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .or(log.uri.host())
            .unwrap_or_default();
        Span {
            trace_id: self.facts.trace.trace_id,
            span_id: self.facts.trace.span_id,
            parent_span_id: self.facts.trace.parent_span_id,
            name: match rule {
                Some(rule) => format!("{} {rule}", log.method),
                None => log.method.to_string(),
            },
            start_unix_nanos: otlp::unix_nanos(ended - total),
            end_unix_nanos: otlp::unix_nanos(ended),
            kind: SpanKind::Server,
            method: log.method.clone(),
            url_path: log.uri.path().to_owned(),
            server_address: host.to_owned(),
            http_status: status,
            listener: self
                .facts
                .listener
                .map(|l| Arc::from(config.listener(l).name.as_str())),
            rule: rule.map(Arc::from),
            backend_pool: self
                .facts
                .target
                .map(|t| Arc::from(config.pool(t.0).name.as_str())),
            peer_address: peer,
        }
    }

    /// The request's record, as the access log writes it.
    fn record<'a>(&'a self, log: &'a LogFacts, status: u16, total: Duration) -> RequestRecord<'a> {
        let config = &self.snapshot.config;
        let tls = self.conn.tls.get();
        let server = match (self.facts.target, self.facts.server) {
            (Some((pool, _, _)), Some((server, port))) => {
                Some((&self.snapshot.pool(pool).servers[server].address.host, port))
            }
            _ => None,
        };
        RequestRecord {
            client: self.conn.client,
            method: log.method.as_str(),
            uri: &log.uri,
            version: log.version,
            user_agent: log.user_agent.as_ref().and_then(|v| v.to_str().ok()),
            host: log.host.as_ref().and_then(|v| v.to_str().ok()),
            status,
            received_bytes: self.received,
            sent_bytes: self.sent,
            time_taken: total,
            tls: tls.map(|t| (t.protocol, t.cipher)),
            server,
            server_status: self.facts.server_status.map(|s| s.as_u16()),
            server_latency: self.facts.first_byte,
            trace: self.facts.trace,
            listener: self
                .facts
                .listener
                .map(|l| config.listener(l).name.as_str()),
            rule: self.facts.rule.map(|r| config.rules[r.0].name.as_str()),
            pool: self.facts.target.map(|t| config.pool(t.0).name.as_str()),
            settings: self
                .facts
                .target
                .map(|t| config.settings(t.1).name.as_str()),
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The access-log record of a WebSocket session that `facts`' request started, written when it
/// ends; `None` when the access log is off.
pub(super) fn session_logger(
    conn: &Connection,
    snapshot: &Snapshot,
    facts: &Facts,
) -> Option<SessionLogger> {
    let logging = &snapshot.config.logging;
    if !AccessLog::enabled(&logging.access_log) {
        return None;
    }
    let config = &snapshot.config;
    let name = |n: Option<&String>| n.cloned().unwrap_or_default();
    let trace_id = facts.trace.trace_id_hex();
    let server = match (facts.target, facts.server) {
        (Some((pool, _, _)), Some((server, port))) => {
            format!(
                "{}:{port}",
                snapshot.pool(pool).servers[server].address.host
            )
        }
        _ => "-".to_owned(),
    };
    let record = SessionRecord {
        time: String::new(),
        operation_name: "WebSocketSession",
        client_ip: conn.client.ip().to_string(),
        client_port: conn.client.port(),
        transaction_id: String::from_utf8_lossy(&trace_id).into_owned(),
        listener_name: name(facts.listener.map(|l| &config.listener(l).name)),
        rule_name: name(facts.rule.map(|r| &config.rules[r.0].name)),
        backend_pool_name: name(facts.target.map(|t| &config.pool(t.0).name)),
        backend_setting_name: name(facts.target.map(|t| &config.settings(t.1).name)),
        server_routed: server,
        duration: 0.0,
        messages_from_client: 0,
        messages_from_backend: 0,
        bytes_from_client: 0,
        bytes_from_backend: 0,
        close_code: None,
        closed_by: "",
    };
    let format = logging.format;
    let plane = conn.plane.clone();
    Some(Box::new(
        move |sample: &SessionSample, duration: Duration| {
            let mut record = record;
            record.time = telemetry::rfc3339(SystemTime::now());
            record.duration = seconds(duration);
            record.messages_from_client = sample.messages_from_client;
            record.messages_from_backend = sample.messages_from_backend;
            record.bytes_from_client = sample.bytes_from_client;
            record.bytes_from_backend = sample.bytes_from_backend;
            record.close_code = sample.close_code;
            record.closed_by = sample.closed_by.as_str();
            plane.access_log.write(|out| match format {
                LogFormat::Json => {
                    let _ = serde_json::to_writer(&mut *out, &record);
                }
                LogFormat::Text => {
                    let _ = write!(
                        out,
                        "{} websocket client={}:{} listener={} rule={} pool={} settings={} server={} duration={:.6} messages_from_client={} messages_from_backend={} bytes_from_client={} bytes_from_backend={} close_code={} closed_by={} trace_id={}",
                    record.time,
                    record.client_ip,
                    record.client_port,
                    quoted(&record.listener_name),
                    quoted(&record.rule_name),
                    quoted(&record.backend_pool_name),
                    quoted(&record.backend_setting_name),
                    record.server_routed,
                    record.duration,
                    record.messages_from_client,
                    record.messages_from_backend,
                    record.bytes_from_client,
                    record.bytes_from_backend,
                    record
                        .close_code
                        .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                    record.closed_by,
                    record.transaction_id,
                    );
                }
            });
        },
    ))
}

/// A WebSocket session's end, as the access log writes it (JSON field names in the manner of
/// Application Gateway's).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionRecord {
    time: String,
    operation_name: &'static str,
    #[serde(rename = "clientIP")]
    client_ip: String,
    client_port: u16,
    transaction_id: String,
    listener_name: String,
    rule_name: String,
    backend_pool_name: String,
    backend_setting_name: String,
    server_routed: String,
    /// Seconds from the upgrade to the end.
    duration: f64,
    messages_from_client: u64,
    messages_from_backend: u64,
    bytes_from_client: u64,
    bytes_from_backend: u64,
    close_code: Option<u16>,
    closed_by: &'static str,
}

fn quoted(v: &str) -> String {
    let mut out = Vec::new();
    push_quoted(&mut out, v);
    String::from_utf8(out).unwrap_or_default()
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}

/// Why a failed request failed, as the metrics count it.
fn reason(e: &ProxyError) -> FailureReason {
    match e {
        ProxyError::NoListener(_) => FailureReason::NoListener,
        ProxyError::EmptyPool(_) | ProxyError::NoHealthyServer(_) => FailureReason::NoHealthyServer,
        ProxyError::Timeout(_) => FailureReason::BackendTimeout,
        ProxyError::Unreachable(_)
        | ProxyError::BackendTls(..)
        | ProxyError::BadResponse
        | ProxyError::Drained(_) => FailureReason::BackendError,
        ProxyError::Plugin(_) => FailureReason::PluginFailure,
        ProxyError::BadRequest(_)
        | ProxyError::UriTooLong
        | ProxyError::HeadersTooLarge
        | ProxyError::TooManyHeaders(_)
        | ProxyError::BodyTooLarge(_)
        | ProxyError::WebSocketVersion
        | ProxyError::Misdirected => FailureReason::BadRequest,
        ProxyError::RewriteLoop(_) => FailureReason::RewriteLoop,
    }
}

/// A message head's size on the wire, about: the start line and every field.
fn head_size(target: usize, start: usize, headers: &HeaderMap) -> u64 {
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (start + target + 12 + fields + 2) as u64
}

fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A response body that carries its request's [`Exchange`] to the body's end.
pub struct ExchangeBody {
    body: ResponseBody,
    exchange: Exchange,
}

impl ExchangeBody {
    /// The connection the response goes out on.
    pub fn connection(&self) -> &Connection {
        &self.exchange.conn
    }
}

impl Body for ExchangeBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.exchange.sent += data.len() as u64;
                }
                if this.body.is_end_stream() {
                    this.exchange.body_done();
                }
            }
            Poll::Ready(None) => this.exchange.body_done(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
