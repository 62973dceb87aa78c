//! WebSocket handshakes on a route with a message filter (`message_filter = "name"` on the path
//! rule, the rule or the listener): the filter's `on-open` before the handshake goes to the
//! backend.
//!
//! The server is chosen before the call (the router's or the affinity cookie's member, else the
//! round robin's), so that the filter is told where the session goes, and the handshake then
//! goes to that server only. An accepted session's handshake loses the client's
//! Sec-WebSocket-Extensions offer (no extension, permessage-deflate included, is negotiated on a
//! filtered session: the filter sees plain payloads) and, when the filter picked a subprotocol,
//! offers the backend only that one. A refusal is answered with the filter's status; a failed
//! call follows the filter's fail policy (`fail_closed`: the handshake fails; `fail_open`: the
//! session is relayed unfiltered).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::body::ResponseBody;
use super::upstream_request::ServerChoice;
use super::{Connection, ProxyError};
use crate::config::{FailPolicy, PluginId};
use crate::plugin::{
    OpenDecision, PluginError, PluginSlot, PluginVersion, RequestHead, RequestHeadRef, SessionOpen,
};
use crate::snapshot::{ForwardTarget, Snapshot};
use crate::upstream::RequestBody;
use crate::websocket::messages::{FilterBinding, next_session_id};

/// A filtered handshake's head and offer, taken before the request is rewritten for the backend.
pub(super) struct PendingOpen {
    slot: Arc<PluginSlot>,
    version: Arc<PluginVersion>,
    head: RequestHead,
    subprotocols: Vec<String>,
}

/// What the filter made of a handshake.
pub(super) enum Opened {
    Filtered(Box<FilterBinding>),
    /// The filter refused it with this status.
    Refused(StatusCode),
    /// A failed call under `fail_open`: relayed without the filter.
    Unfiltered,
}

impl Connection {
    /// The head and offer a filter's `on-open` gets, or `None` when the filter is not loaded and
    /// fails open.
    pub(super) fn pending_open<B>(
        &self,
        snapshot: &Snapshot,
        id: PluginId,
        req: &Request<B>,
        authority: &str,
        listener: &str,
    ) -> Result<Option<PendingOpen>, ProxyError> {
        let Some(slot) = self.plane.plugins.slot(&snapshot.config, id) else {
            let p = snapshot.config.plugin(id);
            return not_loaded(p.fail_policy, &p.name);
        };
        let Some(version) = slot.active() else {
            return not_loaded(slot.fail_policy(), slot.name());
        };
        let wanted = version.plugin.request_headers();
        let headers = super::route_plugin::request_headers(req, wanted);
        let head = RequestHeadRef {
            method: req.method().as_str(),
            scheme: self.scheme.as_str(),
            authority,
            path: req.uri().path(),
            query: req.uri().query(),
            headers: &headers,
            client_address: self.forwarded.client_str(),
            listener,
            websocket: true,
            tls_sni: self.sni.get().map(|s| &**s),
        }
        .to_owned_head();
        // RFC 6455 §11.3.4: one or more fields, each a comma-separated list of tokens.
        let subprotocols = req
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Some(PendingOpen {
            slot,
            version,
            head,
            subprotocols,
        }))
    }

    /// Chooses the server, asks the filter, and shapes the backend's handshake by its answer.
    pub(super) async fn open_filtered(
        &self,
        snapshot: &Snapshot,
        target: &ForwardTarget,
        pending: Box<PendingOpen>,
        request: &mut Request<RequestBody>,
        member: &mut ServerChoice,
    ) -> Result<Opened, ProxyError> {
        let PendingOpen {
            slot,
            version,
            head,
            subprotocols,
        } = *pending;
        let pool = snapshot.pool(target.pool);
        let chosen = member
            .preferred
            .or_else(|| target.round_robin(pool.next_turn()));
        let server = match chosen {
            Some(i) => {
                *member = ServerChoice {
                    preferred: Some(i),
                    only_preferred: true,
                };
                pool.servers[target.servers[i].server].address.to_string()
            }
            // No server in rotation: forwarding will say so.
            None => String::new(),
        };
        let open = SessionOpen {
            request: head,
            pool: pool.name.to_string(),
            settings: snapshot.config.settings(target.settings).name.clone(),
            server,
            subprotocols,
            session: next_session_id(),
        };
        let metrics = slot
            .filter_metrics()
            .expect("message filter slots keep counters")
            .clone();
        match version.plugin.on_open(&open).await {
            Ok(OpenDecision::Accept(accept)) => {
                let headers = request.headers_mut();
                headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
                if let Some(p) = accept.subprotocol {
                    let value = HeaderValue::from_str(&p)
                        .map_err(|_| ProxyError::BadRequest("a subprotocol is not a token"))?;
                    headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
                }
                Ok(Opened::Filtered(Box::new(FilterBinding {
                    max_message_bytes: version.plugin.limits().max_message_bytes,
                    slot,
                    metrics,
                    state: accept.state,
                })))
            }
            Ok(OpenDecision::Refuse(status)) => {
                metrics.refused();
                Ok(Opened::Refused(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                ))
            }
            Err(error) => {
                metrics.failure();
                match slot.fail_policy() {
                    FailPolicy::FailClosed => Err(ProxyError::Plugin(error)),
                    FailPolicy::FailOpen => Ok(Opened::Unfiltered),
                }
            }
        }
    }
}

/// The answer to a handshake the filter refused: its status, no body.
pub(super) fn refusal(status: StatusCode) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::Full(Bytes::new()));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}

fn not_loaded(policy: FailPolicy, name: &str) -> Result<Option<PendingOpen>, ProxyError> {
    tracing::debug!(target: "wasmgate::plugin", plugin = %name, "message filter not loaded");
    match policy {
        FailPolicy::FailClosed => Err(ProxyError::Plugin(PluginError::NotLoaded {
            plugin: name.to_owned(),
        })),
        FailPolicy::FailOpen => Ok(None),
    }
}
