//! Why a request failed, and the one place where that becomes the client's response.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::ResponseBody;
use crate::config::ErrorPage;
use crate::plugin::PluginError;
use crate::tls::TlsFailure;
use crate::websocket::HandshakeError;

/// Where a request failed, and so which status the client gets. Reasons are short and never
/// carry a backend's address.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("no listener matches host {0:?}")]
    NoListener(String),
    #[error("the request URL is longer than 32 KB")]
    UriTooLong,
    #[error("the request headers are larger than 32 KB")]
    HeadersTooLarge,
    #[error("the request has more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("backend pool {0:?} has no servers")]
    EmptyPool(Box<str>),
    #[error("no healthy server in backend pool {0:?}")]
    NoHealthyServer(Box<str>),
    #[error("no server in backend pool {0:?} could be reached")]
    Unreachable(Box<str>),
    #[error("no server in backend pool {0:?} answered within the request timeout")]
    Timeout(Box<str>),
    /// The backend's certificate did not verify, or the handshake failed; the reason is in
    /// Application Gateway's backend health words (see [`TlsFailure`]).
    #[error("backend pool {0:?}: {1}")]
    BackendTls(Box<str>, TlsFailure),
    #[error("the backend's response was not valid HTTP")]
    BadResponse,
    /// The server left the configuration and its connection draining time ran out before it
    /// answered.
    #[error("the server in backend pool {0:?} was removed and its draining time is over")]
    Drained(Box<str>),
    #[error("this gateway speaks WebSocket version 13")]
    WebSocketVersion,
    /// The host's listener requires client authentication the connection's handshake, made
    /// for another host, did not do.
    #[error("the connection was not made for this host's listener; open a new one")]
    Misdirected,
    /// A router plugin failed (deadline, trap, memory limit, breaker open, invalid decision)
    /// and its fail policy is `fail_closed`.
    #[error("{0}")]
    Plugin(PluginError),
    /// Rewrite sets kept re-evaluating the path map (Application Gateway answers 500 when a
    /// request's rewrites loop).
    #[error("the request's URL rewrites re-evaluated the path map more than {0} times")]
    RewriteLoop(usize),
}

impl From<HandshakeError> for ProxyError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::BadRequest(reason) => ProxyError::BadRequest(reason),
            HandshakeError::Version => ProxyError::WebSocketVersion,
        }
    }
}

/// Where a request's failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request itself: malformed, too large, or for a host no listener serves.
    Client,
    /// The gateway's configuration: an empty pool, a server removed while it answered.
    Gateway,
    /// A router plugin under `fail_closed`.
    Plugin,
    /// The backend: unreachable, unhealthy, too slow, a bad certificate or answer.
    Backend,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Gateway => "gateway",
            Origin::Plugin => "plugin",
            Origin::Backend => "backend",
        }
    }
}

impl ProxyError {
    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::NoListener(_)
            | ProxyError::UriTooLong
            | ProxyError::HeadersTooLarge
            | ProxyError::TooManyHeaders(_)
            | ProxyError::BodyTooLarge(_)
            | ProxyError::WebSocketVersion
            | ProxyError::Misdirected => Origin::Client,
            ProxyError::EmptyPool(_) | ProxyError::Drained(_) | ProxyError::RewriteLoop(_) => {
                Origin::Gateway
            }
            ProxyError::NoHealthyServer(_)
            | ProxyError::Unreachable(_)
            | ProxyError::Timeout(_)
            | ProxyError::BackendTls(..)
            | ProxyError::BadResponse => Origin::Backend,
            ProxyError::Plugin(_) => Origin::Plugin,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoListener(_) => StatusCode::NOT_FOUND,
            ProxyError::WebSocketVersion => StatusCode::UPGRADE_REQUIRED,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge | ProxyError::TooManyHeaders(_) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::EmptyPool(_)
            | ProxyError::NoHealthyServer(_)
            | ProxyError::Unreachable(_)
            | ProxyError::BackendTls(..)
            | ProxyError::BadResponse
            | ProxyError::Drained(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            // An open breaker is a temporary refusal: the plugin is not called until its
            // cool-down ends.
            ProxyError::Plugin(PluginError::CircuitOpen { .. } | PluginError::NotLoaded { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // Any other plugin failure is the gateway's own routing failing, not a backend:
            // 500, so it is never mistaken for a backend's 502/504.
            ProxyError::Plugin(_) | ProxyError::RewriteLoop(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response the client gets: the status and the reason in a short text body.
    pub fn into_response(self) -> Response<ResponseBody> {
        self.into_response_with(None)
    }

    /// The response the client gets, with `page` (the listener's or the gateway's custom error
    /// page for the status, when configured) as its body instead of the reason.
    pub fn into_response_with(self, page: Option<&ErrorPage>) -> Response<ResponseBody> {
        let status = self.status();
        let (body, content_type) = match page {
            Some(page) => (page.body.clone(), page.content_type.clone()),
            None => (
                Bytes::from(format!(
                    "{} {}: {self}\n",
                    status.as_str(),
                    status.canonical_reason().unwrap_or("")
                )),
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        };
        let mut res = Response::new(ResponseBody::Full(body));
        *res.status_mut() = status;
        res.headers_mut().insert(header::CONTENT_TYPE, content_type);
        match status {
            // A malformed request leaves the connection in an unknown state; the rest of an
            // oversized body is not worth reading (RFC 9110 §15.5.14).
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // RFC 6455 §4.2.2: name the versions the server speaks.
            StatusCode::UPGRADE_REQUIRED => {
                res.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            _ => {}
        }
        res
    }
}
