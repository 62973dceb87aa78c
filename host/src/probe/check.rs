//! One probe: an HTTP GET over the same client machinery as upstream traffic
//! ([`Upstream::connect`]), on a connection of the probe's own — never one of the pool's — kept
//! alive between probes so that probing stays cheap.

use std::error::Error as _;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;

use super::evaluate::{Evaluator, ProbeResponse};
use super::state::ProbeResult;
use crate::config::{FailPolicy, fmt_duration};
use crate::plugin::{Header, PluginSlot, ProbeRequest, ProbeResponse as PluginProbeResponse};
use crate::upstream::{ConnectError, RequestBody, Upstream};

/// Sent with every probe, so backends can tell probes from traffic.
pub const USER_AGENT: &str = concat!("wasmgate-probe/", env!("CARGO_PKG_VERSION"));

/// Bytes of a probe response body kept for evaluation; a longer body is cut there (and its
/// connection not reused).
pub const BODY_LIMIT: usize = 64 * 1024;

type Sender = SendRequest<RequestBody>;

/// What one target's probes send, and where.
#[derive(Debug)]
pub struct Check {
    pub upstream: Arc<Upstream>,
    pub path: PathAndQuery,
    pub host: HeaderValue,
    pub timeout: Duration,
    pub evaluator: Arc<dyn Evaluator>,
    /// A probe plugin, when the settings or the probe name one: it shapes the request and
    /// judges every outcome (errors included) in place of `evaluator`.
    pub judge: Option<PluginJudge>,
}

/// A probe plugin as one target's probes use it: each probe asks the version active at that
/// moment, so a version the admin API replaced judges the next probe.
pub struct PluginJudge {
    pub plugin: Arc<PluginSlot>,
    pub pool: String,
    pub settings: String,
    /// The server's address as written in its pool.
    pub server: String,
}

impl std::fmt::Debug for PluginJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginJudge")
            .field("plugin", &self.plugin.name())
            .field("server", &self.server)
            .finish()
    }
}

/// Bytes of the body a probe plugin sees (the WIT contract's limit).
const PLUGIN_BODY_LIMIT: usize = 4096;

type Exchange = (http::StatusCode, http::HeaderMap, Bytes);

impl PluginJudge {
    /// The plugin's verdict on one probe outcome. A failed call counts the probe as failed
    /// with the plugin's error as the reason (`fail_closed`), or takes the native verdict
    /// (`fail_open`).
    async fn judge(
        &self,
        outcome: &Result<Exchange, String>,
        latency: Duration,
        native: impl FnOnce() -> (String, bool),
    ) -> (String, bool) {
        let (status, error, headers, body) = match outcome {
            Ok((status, headers, body)) => (
                Some(status.as_u16()),
                None,
                headers
                    .iter()
                    .map(|(n, v)| Header {
                        name: n.as_str().to_owned(),
                        value: v.as_bytes().to_vec(),
                    })
                    .collect(),
                body[..body.len().min(PLUGIN_BODY_LIMIT)].to_vec(),
            ),
            Err(reason) => (None, Some(reason.clone()), Vec::new(), Vec::new()),
        };
        let response = PluginProbeResponse {
            pool: self.pool.clone(),
            settings: self.settings.clone(),
            server: self.server.clone(),
            status,
            error,
            headers,
            body,
            latency_ms: latency.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        match self.plugin.evaluate(&response).await {
            Ok(v) => (v.reason, v.healthy),
            Err(e) => match (self.plugin.fail_policy(), outcome) {
                (FailPolicy::FailOpen, Ok(_)) => native(),
                (FailPolicy::FailOpen, Err(reason)) => (reason.clone(), false),
                (FailPolicy::FailClosed, _) => (e.to_string(), false),
            },
        }
    }
}

impl Check {
    /// Probes once. `conn` is the target's own keep-alive connection: reused when it is ready,
    /// replaced when it is not, dropped after any failure.
    pub async fn run(&self, conn: &mut Option<Sender>) -> ProbeResult {
        let started = Instant::now();
        let at = SystemTime::now();
        let shape = match &self.judge {
            None => Ok(None),
            Some(j) => match j
                .plugin
                .shape_probe_request(&j.pool, &j.settings, &j.server)
                .await
            {
                Ok(shape) => Ok(shape),
                Err(_) if j.plugin.fail_policy() == FailPolicy::FailOpen => Ok(None),
                Err(e) => Err(e.to_string()),
            },
        };
        let outcome = match shape {
            Err(reason) => Err(reason),
            Ok(shape) => {
                match tokio::time::timeout(self.timeout, self.exchange(conn, shape.as_ref())).await
                {
                    Ok(Ok(exchange)) => Ok(exchange),
                    Ok(Err(reason)) => {
                        *conn = None;
                        Err(reason)
                    }
                    Err(_) => {
                        // The answer may still come on this connection: it cannot carry the
                        // next probe.
                        *conn = None;
                        Err(format!(
                            "Timeout: no answer within {}",
                            fmt_duration(self.timeout)
                        ))
                    }
                }
            }
        };
        let latency = started.elapsed();
        let native = |outcome: &Result<Exchange, String>| match outcome {
            Ok((status, headers, body)) => {
                let verdict = self.evaluator.evaluate(&ProbeResponse {
                    status: *status,
                    headers,
                    body,
                });
                (verdict.reason, verdict.healthy)
            }
            Err(reason) => (reason.clone(), false),
        };
        let reason_healthy = match &self.judge {
            None => native(&outcome),
            Some(j) => j.judge(&outcome, latency, || native(&outcome)).await,
        };
        let note = self.upstream.dns_stale().map(|s| {
            let addrs: Vec<String> = s.addrs.iter().map(ToString::to_string).collect();
            format!(
                "DNS lookup failed ({}); using the last good address {}",
                s.error,
                addrs.join(", ")
            )
        });
        ProbeResult {
            healthy: reason_healthy.1,
            reason: reason_healthy.0,
            latency,
            at,
            note,
        }
    }

    async fn exchange(
        &self,
        conn: &mut Option<Sender>,
        shape: Option<&ProbeRequest>,
    ) -> Result<Exchange, String> {
        // A kept connection the backend closed while idle fails at once; the probe then goes
        // out again on a fresh one, as a GET may.
        for attempt in 0..2 {
            let (mut sender, reused) = match conn.take() {
                Some(s) if s.is_ready() => (s, true),
                _ => (
                    self.upstream
                        .connect()
                        .await
                        .map_err(connect_reason)?
                        .detach(),
                    false,
                ),
            };
            let res = match sender.try_send_request(self.request(shape)).await {
                Ok(res) => res,
                Err(e) if reused && attempt == 0 => {
                    tracing::debug!(error = %e.into_error(), "kept probe connection failed; reconnecting");
                    continue;
                }
                Err(e) => return Err(response_reason(&e.into_error())),
            };
            let (parts, mut body) = res.into_parts();
            let mut kept = BytesMut::new();
            let mut complete = false;
            while kept.len() <= BODY_LIMIT {
                match body.frame().await {
                    None => {
                        complete = true;
                        break;
                    }
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let room = BODY_LIMIT + 1 - kept.len();
                            kept.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    Some(Err(e)) => return Err(response_reason(&e)),
                }
            }
            kept.truncate(BODY_LIMIT);
            if complete {
                *conn = Some(sender);
            }
            return Ok((parts.status, parts.headers, kept.freeze()));
        }
        Err("Connection closed before an answer".into())
    }

    /// The probe request, with a probe plugin's changes (path, Host, headers) when it made
    /// any; a change that is not valid HTTP is left out.
    fn request(&self, shape: Option<&ProbeRequest>) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::Empty);
        *req.method_mut() = Method::GET;
        let path = shape
            .and_then(|s| s.path.as_deref())
            .and_then(|p| PathAndQuery::try_from(p).ok())
            .filter(|p| p.as_str().starts_with('/'))
            .unwrap_or_else(|| self.path.clone());
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        let host = shape
            .and_then(|s| s.host.as_deref())
            .and_then(|h| HeaderValue::from_str(h).ok())
            .unwrap_or_else(|| self.host.clone());
        headers.insert(header::HOST, host);
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        for h in shape.map_or(&[][..], |s| &s.headers[..]) {
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(&h.value),
            ) {
                headers.insert(n, v);
            }
        }
        req
    }
}

fn connect_reason(e: ConnectError) -> String {
    match e {
        ConnectError::Dns(_) => "DNS lookup failed".into(),
        ConnectError::Tcp(e) => io_reason(&e, true),
        // Certificate failures come worded by the TLS client, in Application Gateway's words.
        ConnectError::Tls(failure) => failure.to_string(),
        other => format!("Connection failed: {other}"),
    }
}

fn io_reason(e: &io::Error, connecting: bool) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        io::ErrorKind::ConnectionReset => "Connection reset".into(),
        io::ErrorKind::TimedOut => "Connection timed out".into(),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            "Host unreachable".into()
        }
        _ if connecting => format!("TCP connect failed: {e}"),
        _ => format!("Connection failed: {e}"),
    }
}

fn response_reason(e: &hyper::Error) -> String {
    if e.is_parse() {
        return format!("Invalid HTTP response: {e}");
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return "Connection closed before an answer".into();
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return io_reason(io, false);
        }
        source = s.source();
    }
    format!("Connection failed: {e}")
}
