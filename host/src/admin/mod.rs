//! The admin listener: the management API, separate from the traffic listeners.
//!
//! `GET /api/backend-health` answers the backend health view as JSON ([`view::BackendHealth`]),
//! `GET /api/status` the running configuration and the latest reloads, and `GET /` the
//! [console](console), a page that shows all of it live. `GET /api/live` and `GET /api/ready`
//! answer an orchestrator's probes and `POST /api/drain` prepares a stop ([`readiness`]).
//! The listener binds loopback by default; with a token configured every request for data must
//! carry `Authorization: Bearer <token>` (compared in constant time), and a token is required to
//! bind anything else — as is a certificate (HTTPS), unless plain HTTP is explicitly
//! allowed. The console's page and assets, and the liveness and readiness answers, hold no data
//! and are served to anyone.

pub mod console;
pub mod metrics;
pub mod plugins;
pub mod readiness;
pub mod upgrade;
pub mod view;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::control::ControlHandle;
use crate::upgrade::Upgrader;

pub use view::BackendHealth;

/// The backend health API's path.
pub const BACKEND_HEALTH_PATH: &str = "/api/backend-health";
/// `POST` reloads the configuration file ([`crate::Gateway::reload`]).
pub const RELOAD_PATH: &str = "/api/reload";
/// Every loaded plugin with its stats and breaker ([`view::PluginView`]).
pub const PLUGINS_PATH: &str = "/api/plugins";
/// The metrics, in Prometheus text or OpenMetrics ([`metrics::render`]).
pub const METRICS_PATH: &str = "/metrics";
/// The running configuration's hash and load time, and the latest reloads
/// ([`crate::control::Status`]).
pub const STATUS_PATH: &str = "/api/status";

/// How long a client has to send its request head (and, over HTTPS, to finish its handshake).
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the connections in flight get to finish once the admin listener stops (the one
/// that asked for an upgrade gets its answer).
const FINISH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves the admin API on `listener` until the gateway stops, or an upgrade hands the socket
/// over; over TLS with `tls`. `POST /api/upgrade` goes to `upgrader`, when given.
pub async fn serve(
    listener: TcpListener,
    control: ControlHandle,
    token: Option<Arc<str>>,
    tls: Option<TlsAcceptor>,
    upgrader: Option<Arc<Upgrader>>,
) {
    let stopping = control.stopping();
    tokio::pin!(stopping);
    let handed_over = {
        let upgrader = upgrader.clone();
        async move {
            match upgrader {
                Some(u) => {
                    u.handed_over().await;
                }
                None => std::future::pending().await,
            }
        }
    };
    tokio::pin!(handed_over);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _) = tokio::select! {
            biased;
            _ = &mut stopping => break,
            _ = &mut handed_over => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let control = control.clone();
        let token = token.clone();
        let tls = tls.clone();
        let upgrader = upgrader.clone();
        connections.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let control = control.clone();
                let token = token.clone();
                let upgrader = upgrader.clone();
                async move {
                    Ok::<_, Infallible>(
                        route(req, &control, token.as_deref(), upgrader.as_deref()).await,
                    )
                }
            });
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT);
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(tls) => match tokio::time::timeout(HEAD_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "admin TLS handshake failed"),
                    Err(_) => tracing::debug!("admin TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(FINISH_LIMIT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Serves the admin API on a Unix socket, without a token (the socket's folder keeps others
/// out): how a [supervisor](crate::upgrade) reaches the processes it started.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    control: ControlHandle,
    upgrader: Option<Arc<Upgrader>>,
) {
    let stopping = control.stopping();
    tokio::pin!(stopping);
    loop {
        let stream = tokio::select! {
            biased;
            _ = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let control = control.clone();
        let upgrader = upgrader.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let control = control.clone();
                let upgrader = upgrader.clone();
                async move { Ok::<_, Infallible>(route(req, &control, None, upgrader.as_deref()).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One admin request, whichever listener it came in on.
async fn route(
    req: Request<Incoming>,
    control: &ControlHandle,
    token: Option<&str>,
    upgrader: Option<&Upgrader>,
) -> Response<Full<Bytes>> {
    // The console's page and assets: no data, no token.
    if let Some(res) = console::asset(&req) {
        return res;
    }
    // Liveness and readiness: an orchestrator's probes carry no token.
    if let Some(res) = readiness::probe(&req, control) {
        return res;
    }
    if req.uri().path() == readiness::DRAIN_PATH && authorized(&req, token) {
        return readiness::drain(&req, control);
    }
    // The endpoints that change state and take time.
    if req.uri().path() == RELOAD_PATH && authorized(&req, token) {
        return reload(&req, control).await;
    }
    if req.uri().path() == upgrade::PATH && authorized(&req, token) {
        return upgrade::handle(&req, upgrader).await;
    }
    // Plugin changes read a body and compile for up to seconds.
    if req.uri().path().starts_with(plugins::PREFIX) && authorized(&req, token) {
        return plugins::handle(req, control).await;
    }
    answer(&req, control, token)
}

/// Whether the request carries the admin token (always, when none is configured).
fn authorized(req: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()))
}

/// `POST /api/reload`: reads the configuration file again and applies it. 200 with what
/// changed, or 422 with the error (naming the field) while the running configuration keeps
/// serving.
async fn reload(req: &Request<Incoming>, control: &ControlHandle) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        let mut res = json(StatusCode::METHOD_NOT_ALLOWED, &error_body("use POST"));
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return res;
    }
    match control.reload_from_file().await {
        Ok(report) => match serde_json::to_vec_pretty(&report) {
            Ok(body) => json(StatusCode::OK, &body),
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &error_body(&format!("cannot serialize the report: {e}")),
            ),
        },
        Err(e) => {
            tracing::error!(error = %e, "configuration not reloaded; the running one keeps serving");
            let status = match e {
                crate::Error::NoConfigFile | crate::Error::Stopping => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            json(status, &error_body(&e.to_string()))
        }
    }
}

fn answer(
    req: &Request<Incoming>,
    control: &ControlHandle,
    token: Option<&str>,
) -> Response<Full<Bytes>> {
    {
        if !authorized(req, token) {
            let mut res = json(
                StatusCode::UNAUTHORIZED,
                &error_body("a valid admin token is required (Authorization: Bearer <token>)"),
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wasmgate admin\""),
            );
            return res;
        }
    }
    let path = req.uri().path();
    if path != BACKEND_HEALTH_PATH
        && path != PLUGINS_PATH
        && path != METRICS_PATH
        && path != STATUS_PATH
    {
        return json(StatusCode::NOT_FOUND, &error_body("no such admin resource"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = json(StatusCode::METHOD_NOT_ALLOWED, &error_body("use GET"));
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    if path == METRICS_PATH {
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let format = crate::metrics::text::Format::negotiate(accept);
        let mut res = Response::new(Full::new(Bytes::from(metrics::render(control, format))));
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return res;
    }
    let body = if path == PLUGINS_PATH {
        serde_json::to_vec_pretty(&view::plugins(control.plugins()))
    } else if path == STATUS_PATH {
        serde_json::to_vec_pretty(&control.status())
    } else {
        serde_json::to_vec_pretty(&BackendHealth::of(&control.snapshot()))
    };
    match body {
        Ok(body) => json(StatusCode::OK, &body),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &error_body(&format!("cannot serialize the view: {e}")),
        ),
    }
}

pub(crate) fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default()
}

pub(crate) fn json(status: StatusCode, body: &[u8]) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::copy_from_slice(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Compares a presented token with the configured one in time that depends only on the
/// presented token's length, never on where the two first differ.
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, &b) in presented.iter().enumerate() {
        // Compare against the expected token cyclically so every byte costs the same.
        let e = if expected.is_empty() {
            0
        } else {
            expected[i % expected.len()]
        };
        diff |= b ^ e;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-124", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-12", b"secret-token-123"));
        assert!(!constant_time_eq(
            b"secret-token-123secret-token-123",
            b"secret-token-123"
        ));
        assert!(!constant_time_eq(b"", b"secret-token-123"));
        assert!(!constant_time_eq(b"x", b""));
    }
}
