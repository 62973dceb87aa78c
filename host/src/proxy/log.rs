//! Phase 6, log: one access-log line per request.

use std::net::SocketAddr;
use std::time::Instant;

use http::uri::Uri;
use http::{Method, Request, StatusCode};

/// One access-log line per request, written when the request ends — including when the client
/// goes away first, which is logged as 499.
pub(super) struct AccessLog {
    client: SocketAddr,
    method: Method,
    uri: Uri,
    started: Instant,
    status: Option<StatusCode>,
}

impl AccessLog {
    /// The request's log line, when the access log is on (it costs a copy of the method and
    /// target).
    pub fn start<B>(client: SocketAddr, req: &Request<B>) -> Option<Self> {
        tracing::enabled!(target: "wasmgate::access", tracing::Level::INFO).then(|| AccessLog {
            client,
            method: req.method().clone(),
            uri: req.uri().clone(),
            started: Instant::now(),
            status: None,
        })
    }

    /// The status the client got.
    pub fn status(&mut self, status: StatusCode) {
        self.status = Some(status);
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let status = self.status.map_or(499, |s| s.as_u16());
        tracing::info!(
            target: "wasmgate::access",
            client = %self.client,
            method = %self.method,
            uri = %self.uri,
            status,
            micros = self.started.elapsed().as_micros() as u64,
        );
    }
}
