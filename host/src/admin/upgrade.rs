//! `POST /api/upgrade`: start the binary this gateway was started from and hand it the
//! listening sockets ([`crate::upgrade`]). 200 with the new process's id once it serves (this
//! one then drains and exits); on a failure this gateway keeps serving, untouched, and the
//! answer says why: 409 when an upgrade is under way or done, 422 when the new process refused
//! its configuration or plugins, 500 when it could not start or died, 504 when it was not
//! ready in time.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{error_body, json};
use crate::upgrade::{UpgradeError, Upgrader};

pub const PATH: &str = "/api/upgrade";

pub async fn handle(req: &Request<Incoming>, upgrader: Option<&Upgrader>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        let mut res = json(StatusCode::METHOD_NOT_ALLOWED, &error_body("use POST"));
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return res;
    }
    let result = match upgrader {
        Some(upgrader) => upgrader.upgrade().await,
        None => Err(UpgradeError::NotUpgradable),
    };
    match result {
        Ok(upgraded) => match serde_json::to_vec_pretty(&upgraded) {
            Ok(body) => json(StatusCode::OK, &body),
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &error_body(&format!("cannot serialize the report: {e}")),
            ),
        },
        Err(e) => {
            tracing::error!(error = %e, "upgrade failed; this process keeps serving");
            let status = match e {
                UpgradeError::InProgress
                | UpgradeError::HandedOver(_)
                | UpgradeError::Stopping
                | UpgradeError::NotUpgradable => StatusCode::CONFLICT,
                UpgradeError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                UpgradeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                UpgradeError::Spawn { .. }
                | UpgradeError::Exited { .. }
                | UpgradeError::Handover(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            json(
                status,
                &error_body(&format!("{e}; this process keeps serving")),
            )
        }
    }
}
