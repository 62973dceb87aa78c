//! What an orchestrator asks of an instance: is it alive, should it be sent connections, and
//! to drain before it is stopped.
//!
//! `GET /api/live` and `GET /api/ready` take no token: a kubelet's HTTP probe cannot carry a
//! secret, and the answers hold no data besides the instance's state. The admin API starts
//! answering only once the gateway serves — every listener bound and every backend server's
//! first probe answered (or timed out) — so a 200 from `/api/ready` means exactly that, and no
//! longer once the instance drains or stops. `POST /api/drain` needs the token as every other
//! change does.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::control::{ControlHandle, Readiness};

/// `GET`: 200 while the process's control plane answers.
pub const LIVE_PATH: &str = "/api/live";
/// `GET`: 200 while the instance should be sent new connections, 503 while it drains or stops.
pub const READY_PATH: &str = "/api/ready";
/// `POST`: start draining; `GET`: whether it drains and the work still in flight.
pub const DRAIN_PATH: &str = "/api/drain";

/// Answers the liveness and readiness probes; `None` for any other path.
pub fn probe<B>(req: &Request<B>, control: &ControlHandle) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path();
    if path != LIVE_PATH && path != READY_PATH {
        return None;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Some(method_not_allowed("GET, HEAD"));
    }
    if path == LIVE_PATH {
        return Some(json(StatusCode::OK, serde_json::json!({ "live": true })));
    }
    let (status, state) = match control.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready"),
        Readiness::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        Readiness::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
    };
    Some(json(
        status,
        serde_json::json!({ "ready": status == StatusCode::OK, "state": state }),
    ))
}

/// `POST /api/drain` starts draining (and answers as `GET` does); `GET` tells whether the
/// instance drains and how many connections and WebSocket sessions are still in flight.
pub fn drain<B>(req: &Request<B>, control: &ControlHandle) -> Response<Full<Bytes>> {
    if req.method() == Method::POST {
        if control.readiness() == Readiness::Ready {
            tracing::info!(
                in_flight = control.in_flight(),
                "draining: reported not ready, still serving"
            );
        }
        control.drain();
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD, POST");
    }
    json(
        StatusCode::OK,
        serde_json::json!({
            "draining": control.readiness() != Readiness::Ready,
            "inFlight": control.in_flight(),
        }),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut res = json(
        StatusCode::METHOD_NOT_ALLOWED,
        serde_json::json!({ "error": format!("use {allow}") }),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
