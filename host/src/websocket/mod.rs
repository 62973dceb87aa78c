//! WebSocket, natively: the upgrade is detected on any listener (RFC 6455 §4.1), the handshake is
//! forwarded like any request, and after the backend's 101 both connections are relayed byte for
//! byte until either side closes. The backend settings' request timeout bounds the session.

pub mod frame;
pub mod messages;
mod reclaim;
pub mod relay;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;

use http::{Method, Request, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use http::HeaderMap;
use http::header::HeaderName;

use crate::client_io::ClientIo;
use crate::dataplane::{ActiveGuard, DataPlane};
use crate::gather::Gathering;
use crate::metrics::{ClosedBy, RequestMetrics, RouteSlots, SessionSample};

/// Why a WebSocket handshake is refused: 400, or 426 for a version other than 13.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    BadRequest(&'static str),
    Version,
}

/// Whether a `Connection` or `Upgrade` header value lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Whether `req` is a WebSocket opening handshake. Upgrades to anything else are not tunnelled:
/// their Upgrade field is dropped with the other hop-by-hop fields and the request goes on as
/// a plain one. A request that asks for WebSocket but breaks the handshake rules gets 400, or
/// 426 for a version other than 13 (RFC 6455 §4.2.2).
pub fn detect<B>(req: &Request<B>) -> Result<bool, HandshakeError> {
    let headers = req.headers();
    if !has_token(headers, &header::UPGRADE, "websocket")
        || !has_token(headers, &header::CONNECTION, "upgrade")
    {
        return Ok(false);
    }
    // RFC 6455 §4.1: the handshake is an HTTP/1.1 GET. (HTTP/2's extended CONNECT, RFC 8441,
    // arrives through another path.)
    if req.method() != Method::GET || req.version() != Version::HTTP_11 {
        return Err(HandshakeError::BadRequest(
            "a WebSocket handshake must be an HTTP/1.1 GET",
        ));
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key_ok = match (keys.next(), keys.next()) {
        (Some(k), None) => is_websocket_key(k.as_bytes()),
        _ => false,
    };
    if !key_ok {
        return Err(HandshakeError::BadRequest(
            "the WebSocket handshake needs one Sec-WebSocket-Key of 16 base64-encoded bytes",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(HandshakeError::Version);
    }
    Ok(true)
}

/// Whether `req` opens a WebSocket over HTTP/2: an extended CONNECT with `:protocol websocket`
/// (RFC 8441 §4). The gateway turns it into an RFC 6455 handshake towards the backend. Other
/// CONNECT requests are refused: the gateway tunnels nothing else.
pub fn detect_extended_connect<B>(req: &Request<B>) -> Result<bool, HandshakeError> {
    if req.method() != Method::CONNECT || req.version() != Version::HTTP_2 {
        return Ok(false);
    }
    match req.extensions().get::<hyper::ext::Protocol>() {
        Some(p) if p.as_str().eq_ignore_ascii_case("websocket") => {}
        Some(_) => {
            return Err(HandshakeError::BadRequest(
                "only the websocket protocol can be opened with CONNECT (RFC 8441)",
            ));
        }
        None => return Err(HandshakeError::BadRequest("CONNECT is not supported")),
    }
    // RFC 8441 §5: Sec-WebSocket-Version keeps its meaning; Sec-WebSocket-Key is not used.
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(HandshakeError::Version);
    }
    Ok(true)
}

/// A fresh Sec-WebSocket-Key for a handshake the gateway makes itself (RFC 6455 §4.1).
pub fn new_key() -> http::HeaderValue {
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    http::HeaderValue::from_str(&key).expect("base64 is a valid header value")
}

/// Whether a backend's Sec-WebSocket-Accept answers `key` (RFC 6455 §4.2.2).
pub fn accept_matches(key: &http::HeaderValue, accept: Option<&http::HeaderValue>) -> bool {
    accept.is_some_and(|a| {
        a.as_bytes()
            == tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
                .as_bytes()
    })
}

/// RFC 6455 §4.1: a base64-encoded 16-byte value is 24 characters ending in "==".
fn is_websocket_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        // The last character before the padding carries only 2 bits of data.
        && b"AQgw".contains(&key[21])
}

#[derive(Debug, Clone, Copy)]
pub struct RelaySettings {
    pub timeout: Duration,
    pub idle: bool,
}

/// How long the close handshake may take once the gateway starts it.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Once both sides have switched protocols, relays them in a task of its own until either side
/// closes, the timeout passes, the gateway shuts down, or `drained` completes (the backend
/// server left the configuration and its draining time is over).
pub fn spawn_relay(
    client: OnUpgrade,
    backend: OnUpgrade,
    settings: RelaySettings,
    plane: Arc<DataPlane>,
    drained: impl Future<Output = ()> + Send + 'static,
    report: SessionReport,
    filter: Option<Box<messages::FilterBinding>>,
) {
    let guard = plane.track();
    let stopping = plane.stopping();
    // The upgrades complete once the 101 has been written to the client; this task waits for
    // them and hands the streams to the session's own task, so that what the session keeps
    // for its lifetime is built once, in place, with nothing left over from the handshake.
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                return;
            }
        };
        let config = relay::RelayConfig {
            timeout: settings.timeout,
            mode: if settings.idle {
                relay::TimeoutMode::Idle
            } else {
                relay::TimeoutMode::Session
            },
            close_grace: CLOSE_GRACE,
        };
        let end = SessionEnd { stopping, drained };
        // Plain TCP on both sides (the common case) is relayed on the sockets themselves: an
        // `Upgraded` would keep each stream behind a box of its own, next to hyper's
        // read-ahead. TLS and HTTP/2 streams stay wrapped.
        let client = match client.downcast::<TokioIo<ClientIo<TcpStream>>>() {
            Ok(parts) => {
                let mut io = parts.io.into_inner();
                io.detach();
                Ok((io, parts.read_buf))
            }
            Err(upgraded) => Err(TokioIo::new(upgraded)),
        };
        let backend = match backend.downcast::<TokioIo<Gathering<TcpStream>>>() {
            Ok(parts) => Ok((parts.io.into_inner().into_inner(), parts.read_buf)),
            Err(upgraded) => Err(TokioIo::new(upgraded)),
        };
        let none = Bytes::new();
        match (client, backend) {
            (Ok((c, c_ahead)), Ok((b, b_ahead))) => start_session(
                guard,
                c,
                b,
                (&c_ahead, &b_ahead),
                config,
                end,
                report,
                filter,
            ),
            (Ok((c, c_ahead)), Err(b)) => {
                start_session(guard, c, b, (&c_ahead, &none), config, end, report, filter)
            }
            (Err(c), Ok((b, b_ahead))) => {
                start_session(guard, c, b, (&none, &b_ahead), config, end, report, filter)
            }
            (Err(c), Err(b)) => {
                start_session(guard, c, b, (&none, &none), config, end, report, filter)
            }
        }
    });
}

/// Starts the session's task on its two streams: the byte relay, or the message relay when the
/// route has a message filter.
#[allow(clippy::too_many_arguments)]
fn start_session<C, B, E>(
    guard: ActiveGuard,
    client: C,
    backend: B,
    read_ahead: (&[u8], &[u8]),
    config: relay::RelayConfig,
    end: E,
    report: SessionReport,
    filter: Option<Box<messages::FilterBinding>>,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Future<Output = ()> + Send + 'static,
{
    match filter {
        None => spawn_session(
            guard,
            relay::relay(client, backend, config, end).with_read_ahead(read_ahead.0, read_ahead.1),
            report,
        ),
        Some(filter) => spawn_session(
            guard,
            messages::relay_messages(client, backend, config, end, *filter, read_ahead),
            report,
        ),
    }
}

/// Writes a session's access-log record: given what it relayed and how long it lasted.
pub type SessionLogger = Box<dyn FnOnce(&SessionSample, Duration) + Send>;

/// Where a session is counted when it opens and ends, and logged when it ends.
pub struct SessionReport {
    pub metrics: Arc<RequestMetrics>,
    pub slots: RouteSlots,
    /// Set when the access log is on.
    pub log: Option<SessionLogger>,
}

fn spawn_session<R>(guard: ActiveGuard, relay: R, report: SessionReport)
where
    R: Future<Output = relay::RelayOutcome> + Send + 'static,
{
    reclaim::session_event();
    report.metrics.session_opened(report.slots);
    tokio::spawn(Session {
        relay,
        _guard: guard,
        report: Some(report),
        started: std::time::Instant::now(),
    });
}

pin_project! {
    /// A relayed session's task: the relay, the gateway's count of sessions in flight, and
    /// where the session is reported when it ends.
    struct Session<R> {
        #[pin]
        relay: R,
        _guard: ActiveGuard,
        report: Option<SessionReport>,
        started: std::time::Instant,
    }
}

/// What a session's end adds to the metrics and the access log.
fn session_sample(outcome: &relay::RelayOutcome) -> SessionSample {
    use relay::{RelayEnd, Side};
    let (closed_by, close_code) = match outcome.end {
        RelayEnd::ClientClosed { code } => (ClosedBy::Client, code),
        RelayEnd::BackendClosed { code } => (ClosedBy::Backend, code),
        // The gateway sends 1001 Going Away to both peers.
        RelayEnd::Timeout | RelayEnd::Shutdown => {
            (ClosedBy::Gateway, Some(frame::CLOSE_GOING_AWAY))
        }
        RelayEnd::GatewayClosed { code } => (ClosedBy::Gateway, Some(code)),
        RelayEnd::Error {
            side: Side::Client, ..
        } => (ClosedBy::Client, None),
        RelayEnd::Error {
            side: Side::Backend,
            ..
        } => (ClosedBy::Backend, None),
    };
    SessionSample {
        closed_by,
        close_code,
        messages_from_client: outcome.messages_from_client,
        messages_from_backend: outcome.messages_from_backend,
        bytes_from_client: outcome.client_to_backend,
        bytes_from_backend: outcome.backend_to_client,
    }
}

impl<R: Future<Output = relay::RelayOutcome>> Future for Session<R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let outcome = ready!(this.relay.poll(cx));
        reclaim::session_event();
        if let Some(report) = this.report.take() {
            let sample = session_sample(&outcome);
            report.metrics.session_closed(report.slots, &sample);
            if let Some(log) = report.log {
                log(&sample, this.started.elapsed());
            }
        }
        tracing::debug!(
            end = ?outcome.end,
            client_to_backend = outcome.client_to_backend,
            backend_to_client = outcome.backend_to_client,
            "WebSocket session ended"
        );
        Poll::Ready(())
    }
}

pin_project! {
    /// Completes when the gateway starts shutting down or the session's server has drained.
    /// Both waits are kept in the session's task rather than boxed: a box costs an allocation
    /// per session, on top of the same bytes.
    struct SessionEnd<St, Dr> {
        #[pin]
        stopping: St,
        #[pin]
        drained: Dr,
    }
}

impl<St: Future<Output = ()>, Dr: Future<Output = ()>> Future for SessionEnd<St, Dr> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.stopping.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        ready!(this.drained.poll(cx));
        tracing::debug!("WebSocket session's server drained");
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(extra: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/chat")
            .header("host", "example.com")
            .header("upgrade", "websocket")
            .header("connection", "keep-alive, Upgrade");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn detects_valid_handshake() {
        let req = handshake(&[
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ]);
        assert!(detect(&req).unwrap());
    }

    #[test]
    fn refuses_broken_handshakes() {
        let no_key = handshake(&[("sec-websocket-version", "13")]);
        assert!(matches!(
            detect(&no_key),
            Err(HandshakeError::BadRequest(_))
        ));
        let bad_version = handshake(&[
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "8"),
        ]);
        assert!(matches!(detect(&bad_version), Err(HandshakeError::Version)));
    }

    #[test]
    fn other_upgrades_are_plain_requests() {
        let req = Request::get("/")
            .header("upgrade", "h2c")
            .header("connection", "Upgrade")
            .body(())
            .unwrap();
        assert!(!detect(&req).unwrap());
    }
}
