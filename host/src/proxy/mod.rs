//! The request path, as a request meets its phases, each in a file of its own:
//!
//! 1. request checks ([`checks`]): sizes, limits, framing, the authority;
//! 2. route ([`route`], with [`route_plugin`]): native rules or a router plugin; a redirect or a
//!    plugin's response ends the request here;
//! 3. upstream request ([`upstream_request`]): target URL, headers, rewrites, body, member choice;
//! 4. forward ([`forward`]): to a member of the pool, with the retry policy;
//! 5. response filters ([`response`]): WebSocket relay, hop-by-hop fields, rewrites, affinity;
//! 6. log ([`log`]).
//!
//! Every failure is a [`ProxyError`], which says where it came from and is turned into the
//! client's response in one place.

pub mod body;
pub mod checks;
pub mod error;
mod forward;
pub mod headers;
mod log;
mod message_filter;
mod record;
mod response;
pub mod rewrite;
mod route;
pub mod route_plugin;
pub mod stall;
pub mod trace;
mod upstream_request;

pub use error::ProxyError;
pub use log::ExchangeBody;
pub use record::{RequestRecord, TlsFacts};

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use self::body::ResponseBody;
use self::headers::address_value;
use self::log::{Exchange, Facts};
use self::route::Route;
use self::upstream_request::UpstreamRequest;
use crate::client_io::HeadTimeout;
use crate::config::Protocol;
use crate::dataplane::DataPlane;
use crate::snapshot::Snapshot;
use crate::workers;

/// What every request on one client connection shares.
pub struct Connection {
    pub plane: Arc<DataPlane>,
    /// The id of the listening socket the connection came in on.
    pub socket_id: usize,
    pub client: SocketAddr,
    pub local_port: u16,
    pub scheme: Protocol,
    /// X-Forwarded-For and X-Forwarded-Port as this connection's requests carry them.
    pub forwarded: Forwarded,
    /// Set when hyper gave up waiting for a request head, so the stream answers 408.
    pub head_timed_out: std::sync::atomic::AtomicBool,
    /// Where the connection is between requests, and whether its socket stopped
    /// ([`ServedState`]). Read and written only by the connection's own task.
    pub served_state: std::sync::atomic::AtomicU8,
    /// The server name from the TLS handshake's SNI, on HTTPS connections that sent one.
    pub sni: std::sync::OnceLock<Box<str>>,
    /// The SSL profile and client certificate of an HTTPS connection whose handshake was made
    /// under a profile (mutual TLS); unset otherwise. Boxed: most connections have none, and
    /// every connection carries this field.
    pub handshake: std::sync::OnceLock<Box<crate::tls::Handshake>>,
    /// The negotiated TLS version and cipher suite, on HTTPS connections.
    pub tls: std::sync::OnceLock<TlsFacts>,
}

/// [`Connection::served_state`] of an HTTP/1.1 connection. When its socket stops, an idle
/// connection closes at once; one accepted but without a request yet, or with a request in
/// flight, answers that request with `Connection: close` (or upgrades it) and then closes.
/// Without this, hyper would close the first kind unanswered, and add `Connection: close` to a
/// WebSocket handshake's 101 in flight.
pub struct ServedState;

impl ServedState {
    /// Accepted, no request yet.
    pub const FRESH: u8 = 0;
    /// A request is being answered.
    pub const BUSY: u8 = 1;
    /// Between requests (keep-alive).
    pub const IDLE: u8 = 2;
    /// Set besides the others once the socket stopped.
    pub const STOPPING: u8 = 4;
}

/// The forwarding header values that depend only on the connection, formatted once when it is
/// accepted rather than for every request on it.
pub struct Forwarded {
    /// The client's address and port (Application Gateway's X-Forwarded-For form).
    client: HeaderValue,
    /// The listener's port.
    port: HeaderValue,
}

impl Forwarded {
    /// `port` is the listener's port as a header value, formatted once per listening socket.
    pub fn new(client: SocketAddr, port: HeaderValue) -> Self {
        Self {
            client: address_value(client),
            port,
        }
    }

    /// The client's address and port as text ("ip:port", `[v6]:port`), as router plugins get it.
    pub fn client_str(&self) -> &str {
        self.client.to_str().unwrap_or_default()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.plane.metrics.connection_closed();
    }
}

impl HeadTimeout for Connection {
    fn head_timed_out(&self) -> bool {
        self.head_timed_out
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The gateway-wide 408 page (no listener is known before a request head is complete).
    fn request_timeout_response(&self) -> Option<Vec<u8>> {
        let snapshot = self.plane.snapshot.load();
        let page = snapshot
            .config
            .error_page(None, http::StatusCode::REQUEST_TIMEOUT)?;
        let mut out = format!(
            "HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
            page.content_type.to_str().unwrap_or("text/html"),
            page.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&page.body);
        Some(out)
    }
}

impl Connection {
    /// Serves one request; failures become the error response chosen in one place
    /// ([`ProxyError::into_response`]). The request's record goes with the response's body
    /// and is counted and logged when the body ends.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ExchangeBody> {
        workers::served_request();
        let snapshot = self.plane.snapshot.load_full();
        let mut exchange = Exchange::start(self, snapshot, &req);
        let h2 = req.version() == Version::HTTP_2;
        let head_only = req.method() == http::Method::HEAD;
        let conn = &exchange.conn;
        let res = match conn
            .proxy(&exchange.snapshot, req, &mut exchange.facts)
            .await
        {
            Ok(res) => res,
            Err(e) => {
                tracing::debug!(client = %conn.client, error = %e, origin = e.origin().as_str(), "request failed");
                exchange.failed(&e);
                let page = exchange
                    .snapshot
                    .config
                    .error_page(exchange.facts.listener, e.status());
                let mut res = e.into_response_with(page);
                if h2 {
                    // RFC 9113 §8.2.2: no connection-specific fields in HTTP/2.
                    res.headers_mut().remove(header::CONNECTION);
                }
                res
            }
        };
        exchange.respond(res, head_only)
    }

    /// Answers a request with `error` without serving it (plain HTTP on an HTTPS port); it is
    /// counted and logged as any other.
    pub fn refuse<B>(
        self: Arc<Self>,
        req: &Request<B>,
        error: ProxyError,
    ) -> Response<ExchangeBody> {
        let snapshot = self.plane.snapshot.load_full();
        let mut exchange = Exchange::start(self, snapshot, req);
        exchange.failed(&error);
        let status = error.status();
        let res = error.into_response_with(exchange.snapshot.config.error_page(None, status));
        exchange.respond(res, false)
    }

    /// The phases, in order.
    async fn proxy(
        &self,
        snapshot: &Snapshot,
        req: Request<Incoming>,
        facts: &mut Facts,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let authority = checks::request(&req, &snapshot.config.limits)?;
        let forwarding = match self.route(snapshot, &req, &authority, facts).await? {
            Route::Respond(res) => return Ok(res),
            Route::Forward(forwarding) => forwarding,
        };
        let UpstreamRequest {
            target,
            mut request,
            mut member,
            mut response,
            filter_open,
        } = self.upstream_request(snapshot, req, &authority, forwarding, facts)?;
        if let Some(pending) = filter_open {
            match self
                .open_filtered(snapshot, &target, pending, &mut request, &mut member)
                .await?
            {
                message_filter::Opened::Filtered(binding) => response.filter = Some(binding),
                message_filter::Opened::Refused(status) => {
                    return Ok(message_filter::refusal(status));
                }
                message_filter::Opened::Unfiltered => {}
            }
        }
        if request.body().declared_empty_and_open() && response.websocket == route::WebSocket::No {
            // The upstream head would complete the request: it waits for the client's stream to
            // end, so that DATA after all is refused rather than the request served
            // (RFC 9113 §8.1.1).
            let idle = snapshot.config.limits.client_idle_timeout;
            match tokio::time::timeout(idle, request.body_mut().wait_for_end()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(ProxyError::BadRequest(
                        "the request body is malformed or was cut short",
                    ));
                }
                Err(_) => {
                    return Err(ProxyError::BadRequest(
                        "the request stream did not end after a body declared empty",
                    ));
                }
            }
        }
        let (res, server_index) = self
            .forward(snapshot, &target, member, request, facts)
            .await?;
        self.response_filters(
            snapshot,
            &target,
            res,
            server_index,
            member,
            response,
            facts,
        )
    }
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_written_as_the_standard_library_formats_them() {
        let addresses = [
            "0.0.0.0:0",
            "127.0.0.1:44832",
            "10.0.0.4:80",
            "192.168.100.9:9",
            "255.255.255.255:65535",
            "[::1]:8080",
            "[2001:db8::7]:443",
        ];
        for text in addresses {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(address_value(addr), text, "{addr}");
            assert_eq!(address_value(addr), addr.to_string().as_str());
        }
        let port = HeaderValue::from(8443u16);
        let forwarded = Forwarded::new("10.1.2.3:5000".parse().unwrap(), port);
        assert_eq!(forwarded.client_str(), "10.1.2.3:5000");
        assert_eq!(forwarded.port, "8443");
    }
}
