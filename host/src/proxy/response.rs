//! Phase 5, response filters: the backend's response on its way to the client. A WebSocket
//! handshake's answer is checked and its relay started; hop-by-hop fields go, the response
//! header rewrites apply, and a request that was not already affine gets its affinity cookies.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::ResponseBody;
use super::headers::remove_hop_by_hop;
use super::log::{Facts, session_logger};
use super::rewrite;
use super::route::WebSocket;
use super::upstream_request::{ResponsePlan, ServerChoice};
use super::{Connection, ProxyError};
use crate::config::WebSocketTimeout;
use crate::snapshot::{ForwardTarget, Snapshot};
use crate::websocket;

impl Connection {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn response_filters(
        &self,
        snapshot: &Snapshot,
        target: &ForwardTarget,
        mut res: Response<ResponseBody>,
        server_index: usize,
        member: ServerChoice,
        plan: ResponsePlan,
        facts: &Facts,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let settings = snapshot.config.settings(target.settings);
        let extended_connect = plan.websocket == WebSocket::ExtendedConnect;
        let upgraded = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let Some(key) = &plan.websocket_key {
            // The backend must complete the handshake the gateway started; a 2xx other than
            // 101 would tell the HTTP/2 client its tunnel is open (RFC 8441 §5).
            if upgraded {
                let accept = res.headers_mut().remove(header::SEC_WEBSOCKET_ACCEPT);
                if !websocket::accept_matches(key, accept.as_ref()) {
                    return Err(ProxyError::BadResponse);
                }
            } else if res.status().is_success() {
                return Err(ProxyError::BadResponse);
            }
        }
        if upgraded {
            let Some(client_upgrade) = plan.client_upgrade else {
                // A 101 to a request that asked for no WebSocket upgrade cannot be relayed.
                return Err(ProxyError::BadResponse);
            };
            // No extension was offered on a filtered session: one accepted anyway would change
            // the frames the message relay reads (RFC 6455 §9.1).
            if plan.filter.is_some() && res.headers().contains_key(header::SEC_WEBSOCKET_EXTENSIONS)
            {
                return Err(ProxyError::BadResponse);
            }
            let backend_upgrade = hyper::upgrade::on(&mut res);
            websocket::spawn_relay(
                client_upgrade,
                backend_upgrade,
                websocket::RelaySettings {
                    timeout: settings.request_timeout,
                    idle: settings.websocket_timeout == WebSocketTimeout::Idle,
                },
                self.plane.clone(),
                target.servers[server_index].health.drained(),
                websocket::SessionReport {
                    metrics: snapshot.metrics.clone(),
                    slots: snapshot.metrics.slots(
                        facts.listener.map(|l| l.0),
                        facts.rule.map(|r| r.0),
                        Some(target.metrics_col),
                    ),
                    log: session_logger(self, snapshot, facts),
                },
                plan.filter,
            );
        }
        if upgraded && extended_connect {
            // RFC 8441 §5: the HTTP/2 client learns of the upgrade by a 200.
            *res.status_mut() = StatusCode::OK;
        }
        let status = res.status();
        let headers = res.headers_mut();
        remove_hop_by_hop(headers);
        if upgraded && !extended_connect {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        }
        rewrite::on_response(&snapshot.config, &plan.response_rewrites, status, headers);
        if let Some(name) = settings.affinity.as_ref().map(|a| a.cookie_name.as_str())
            && member.preferred != Some(server_index)
        {
            let server = &snapshot.pool(target.pool).servers[target.servers[server_index].server];
            add_affinity_cookies(headers, name, &server.affinity_id);
        }
        Ok(res)
    }
}

/// Application Gateway sets two cookies: the plain one, and a `…CORS` twin with
/// `SameSite=None; Secure` so cross-site requests keep their affinity.
fn add_affinity_cookies(headers: &mut HeaderMap, name: &str, id: &str) {
    for cookie in [
        format!("{name}={id}; Path=/"),
        format!("{name}CORS={id}; Path=/; SameSite=None; Secure"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, v);
        }
    }
}
