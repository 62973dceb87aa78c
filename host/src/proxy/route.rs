//! Phase 2, route: the native rules find the listener and rule (and path rule); they say which
//! router plugin applies (the rule's, the listener's, or the gateway's), and they are the answer
//! when the plugin defers or fails open. Without a router plugin this is the whole phase. A
//! redirect, or a plugin's direct response, ends the request here.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::Uri;
use http::{Request, Response};

use super::body::ResponseBody;
use super::log::Facts;
use super::route_plugin::{PluginForward, RouterOutcome};
use super::{Connection, ProxyError};
use crate::config::RedirectId;
use crate::snapshot::{CompiledTarget, ForwardTarget, Routed, Snapshot};
use crate::websocket::{self, HandshakeError};
use wasmgate_rules::matching::host_without_port;

/// Where the route phase sends a request.
pub(super) enum Route {
    /// A redirect or a plugin's direct response, complete.
    Respond(Response<ResponseBody>),
    Forward(Forwarding),
}

/// A request on its way to a backend pool.
pub(super) struct Forwarding {
    pub target: Arc<ForwardTarget>,
    /// Bytes of the path a path rule's pattern consumed (see [`Routed::matched_prefix`]).
    pub matched_prefix: Option<usize>,
    /// The router plugin's forward, when one decided.
    pub plugin: Option<PluginForward>,
    pub handshake: Handshake,
}

/// Whether the request is a WebSocket handshake, plain (RFC 6455) or HTTP/2's extended CONNECT
/// (RFC 8441). A router is told; a malformed handshake is refused in the upstream-request
/// phase, after a router had its say.
pub(super) struct Handshake {
    extended_connect: Result<bool, HandshakeError>,
    plain: Result<bool, HandshakeError>,
}

/// A request's WebSocket handshake, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WebSocket {
    No,
    /// RFC 6455 §4.1: an HTTP/1.1 upgrade.
    Plain,
    /// RFC 8441: HTTP/2's extended CONNECT, which becomes an HTTP/1.1 upgrade to the backend.
    ExtendedConnect,
}

impl Handshake {
    fn detect<B>(req: &Request<B>) -> Self {
        let extended_connect = websocket::detect_extended_connect(req);
        let plain = match extended_connect {
            Ok(true) => Ok(false),
            _ => websocket::detect(req),
        };
        Self {
            extended_connect,
            plain,
        }
    }

    /// Whether this is a well-formed handshake, as a router plugin is told.
    fn requested(&self) -> bool {
        matches!(self.extended_connect, Ok(true)) || matches!(self.plain, Ok(true))
    }

    /// The handshake, or why it is refused.
    pub fn check(self) -> Result<WebSocket, ProxyError> {
        if self.extended_connect? {
            return Ok(WebSocket::ExtendedConnect);
        }
        Ok(if self.plain? {
            WebSocket::Plain
        } else {
            WebSocket::No
        })
    }
}

impl Connection {
    pub(super) async fn route<B>(
        &self,
        snapshot: &Snapshot,
        req: &Request<B>,
        authority: &str,
        facts: &mut Facts,
    ) -> Result<Route, ProxyError> {
        let host = host_without_port(authority);
        // A connection outlives a reload that removed its socket's listeners; its next
        // request finds none.
        let socket = snapshot
            .socket_index(self.socket_id)
            .ok_or_else(|| ProxyError::NoListener(host.to_string()))?;
        let routed = snapshot.route(socket, host, req.uri().path());
        if let Some(r) = &routed {
            facts.listener = Some(r.listener);
            facts.rule = Some(r.rule);
        }
        let router = match &routed {
            Some(r) => snapshot.config.router_for(r.listener, r.rule),
            None => snapshot.config.router,
        };
        let handshake = Handshake::detect(req);
        let mut by_plugin = None;
        if let Some(id) = router {
            let listener = match &routed {
                Some(r) => r.listener,
                None => snapshot.sockets[socket].listeners[0],
            };
            let listener = &snapshot.config.listener(listener).name;
            let upgrade = handshake.requested();
            match self
                .ask_router(snapshot, id, req, authority, listener, upgrade)
                .await?
            {
                RouterOutcome::Native => {}
                RouterOutcome::Respond(res) => {
                    facts
                        .listener
                        .get_or_insert(snapshot.sockets[socket].listeners[0]);
                    return Ok(Route::Respond(res));
                }
                RouterOutcome::Forward(f) => by_plugin = Some(f),
            }
        }
        let forwarding = match by_plugin {
            Some(f) => Forwarding {
                target: f.target.clone(),
                matched_prefix: None,
                plugin: Some(f),
                handshake,
            },
            None => {
                let Routed {
                    target,
                    matched_prefix,
                    ..
                } = routed.ok_or_else(|| ProxyError::NoListener(host.to_string()))?;
                match target {
                    CompiledTarget::Redirect(id) => {
                        return Ok(Route::Respond(self.redirect(
                            snapshot,
                            *id,
                            authority,
                            req.uri(),
                        )));
                    }
                    CompiledTarget::Forward(t) => Forwarding {
                        target: t.clone(),
                        matched_prefix,
                        plugin: None,
                        handshake,
                    },
                }
            }
        };
        let t = &forwarding.target;
        facts.target = Some((t.pool, t.settings, t.metrics_col));
        facts
            .listener
            .get_or_insert(snapshot.sockets[socket].listeners[0]);
        Ok(Route::Forward(forwarding))
    }

    fn redirect(
        &self,
        snapshot: &Snapshot,
        id: RedirectId,
        authority: &str,
        uri: &Uri,
    ) -> Response<ResponseBody> {
        let location = snapshot.redirect_location(id, authority, uri.path(), uri.query());
        let mut res = Response::new(ResponseBody::Empty);
        *res.status_mut() = snapshot.config.redirects[id.0].status;
        if let Ok(v) = HeaderValue::from_str(&location) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        res
    }
}
