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
use crate::config::fmt_duration;
use crate::proxy::upstream::{ConnectError, RequestBody, Upstream};

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
}

impl Check {
    /// Probes once. `conn` is the target's own keep-alive connection: reused when it is ready,
    /// replaced when it is not, dropped after any failure.
    pub async fn run(&self, conn: &mut Option<Sender>) -> ProbeResult {
        let started = Instant::now();
        let at = SystemTime::now();
        let reason_healthy = match tokio::time::timeout(self.timeout, self.exchange(conn)).await {
            Ok(Ok((status, headers, body))) => {
                let verdict = self.evaluator.evaluate(&ProbeResponse {
                    status,
                    headers: &headers,
                    body: &body,
                });
                (verdict.reason, verdict.healthy)
            }
            Ok(Err(reason)) => {
                *conn = None;
                (reason, false)
            }
            Err(_) => {
                // The answer may still come on this connection: it cannot carry the next probe.
                *conn = None;
                (
                    format!("Timeout: no answer within {}", fmt_duration(self.timeout)),
                    false,
                )
            }
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
            latency: started.elapsed(),
            at,
            note,
        }
    }

    async fn exchange(
        &self,
        conn: &mut Option<Sender>,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
        // A kept connection the backend closed while idle fails at once; the probe then goes
        // out again on a fresh one, as a GET may.
        for attempt in 0..2 {
            let (mut sender, reused) = match conn.take() {
                Some(s) if s.is_ready() => (s, true),
                _ => (
                    self.upstream.connect().await.map_err(connect_reason)?,
                    false,
                ),
            };
            let res = match sender.try_send_request(self.request()).await {
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

    fn request(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::Empty);
        *req.method_mut() = Method::GET;
        *req.uri_mut() = Uri::from(self.path.clone());
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        headers.insert(header::HOST, self.host.clone());
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        req
    }
}

fn connect_reason(e: ConnectError) -> String {
    match e {
        ConnectError::Dns(_) => "DNS lookup failed".into(),
        ConnectError::Tcp(e) => io_reason(&e, true),
        // Certificate failures come worded by the TLS client ("Backend certificate expired").
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
