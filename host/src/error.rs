//! Errors, and the one place where a failed request becomes an HTTP response.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::config::ConfigError;
use crate::proxy::body::ResponseBody;

/// Errors from starting or running the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("listener {listener:?}: cannot bind {addr}: {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("listener {listener:?}: cannot set up TLS: {source}")]
    Tls {
        listener: String,
        source: rustls::Error,
    },
    /// A plugin failed to load (unreadable, not a component, missing export, `init` failed).
    #[error("cannot load {0}")]
    Plugin(#[from] crate::plugin::PluginError),
    #[error("the gateway was not started from a configuration file, so it cannot read one again")]
    NoConfigFile,
    #[error("the gateway is shutting down")]
    Stopping,
    #[error("plugin {plugin:?}: cannot read {path}: {source}")]
    PluginFile {
        plugin: String,
        path: std::path::PathBuf,
        source: io::Error,
    },
}

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
    /// Application Gateway's reasons: "Backend certificate name mismatch", "untrusted root".
    #[error("backend pool {0:?}: {1}")]
    BackendTls(Box<str>, crate::tls::TlsFailure),
    #[error("the backend's response was not valid HTTP")]
    BadResponse,
    /// The server left the configuration and its connection draining time ran out before it
    /// answered.
    #[error("the server in backend pool {0:?} was removed and its draining time is over")]
    Drained(Box<str>),
    #[error("this gateway speaks WebSocket version 13")]
    WebSocketVersion,
    /// A router plugin failed (deadline, trap, memory limit, breaker open, invalid decision)
    /// and its fail policy is `fail_closed`.
    #[error("{0}")]
    Plugin(crate::plugin::PluginError),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoListener(_) => StatusCode::NOT_FOUND,
            ProxyError::WebSocketVersion => StatusCode::UPGRADE_REQUIRED,
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
            ProxyError::Plugin(
                crate::plugin::PluginError::CircuitOpen { .. }
                | crate::plugin::PluginError::NotLoaded { .. },
            ) => StatusCode::SERVICE_UNAVAILABLE,
            // Any other plugin failure is the gateway's own routing failing, not a backend:
            // 500, so it is never mistaken for a backend's 502/504.
            ProxyError::Plugin(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response the client gets: the status and the reason in a short text body.
    pub fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        let body = format!(
            "{} {}: {self}\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        );
        let mut res = Response::new(ResponseBody::Full(Bytes::from(body)));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
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
