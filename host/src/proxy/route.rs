//! Phase 2, route: the native rules find the listener and rule (and path rule); they say which
//! router plugin applies (the rule's, the listener's, or the gateway's), and they are the answer
//! when the plugin defers or fails open. Without a router plugin this is the whole phase. A
//! redirect, or a plugin's direct response, ends the request here.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::Uri;
use http::{Request, Response};

use super::body::ResponseBody;
use super::route_plugin::{PluginForward, RouterOutcome};
use super::{Connection, ProxyError};
use crate::config::{Protocol, RedirectTarget};
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
    ) -> Result<Route, ProxyError> {
        let host = host_without_port(authority);
        // A connection outlives a reload that removed its socket's listeners; its next
        // request finds none.
        let frontend = snapshot
            .frontend_of(self.socket_id)
            .ok_or_else(|| ProxyError::NoListener(host.to_string()))?;
        let routed = snapshot.route(frontend, host, req.uri().path());
        let router = match &routed {
            Some(r) => snapshot.config.router_for(r.listener, r.rule),
            None => snapshot.config.router,
        };
        let handshake = Handshake::detect(req);
        let mut by_plugin = None;
        if let Some(id) = router {
            let listener = match &routed {
                Some(r) => r.listener,
                None => snapshot.frontends[frontend].listeners[0],
            };
            let listener = &snapshot.config.listener(listener).name;
            let upgrade = handshake.requested();
            match self
                .ask_router(snapshot, id, req, authority, listener, upgrade)
                .await?
            {
                RouterOutcome::Native => {}
                RouterOutcome::Respond(res) => return Ok(Route::Respond(res)),
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
                            id.0,
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
        Ok(Route::Forward(forwarding))
    }

    fn redirect(
        &self,
        snapshot: &Snapshot,
        id: usize,
        authority: &str,
        uri: &Uri,
    ) -> Response<ResponseBody> {
        let r = &snapshot.config.redirects[id];
        let location = redirect_location(&snapshot.config, id, authority, uri.path(), uri.query());
        let mut res = Response::new(ResponseBody::Empty);
        *res.status_mut() = r.status;
        if let Ok(v) = HeaderValue::from_str(&location) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        res
    }
}

/// Where redirect `id` sends a request for `path` and `query` on `authority`.
pub(crate) fn redirect_location(
    config: &crate::config::Config,
    id: usize,
    authority: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let r = &config.redirects[id];
    let mut location = match &r.target {
        RedirectTarget::Url(url) => url.clone(),
        RedirectTarget::Listener(l) => {
            // The request's host, on the target listener's scheme and port.
            let l = config.listener(*l);
            let host = host_without_port(authority);
            let default_port = match l.protocol {
                Protocol::Http => 80,
                Protocol::Https => 443,
            };
            if l.port == default_port {
                format!("{}://{host}", l.protocol.as_str())
            } else {
                format!("{}://{host}:{}", l.protocol.as_str(), l.port)
            }
        }
    };
    if r.include_path {
        match &r.target {
            RedirectTarget::Url(_) => {
                // Application Gateway appends the path to the target URL.
                if location.ends_with('/') && path.starts_with('/') {
                    location.pop();
                }
                location.push_str(path);
            }
            RedirectTarget::Listener(_) => location.push_str(path),
        }
    } else if matches!(r.target, RedirectTarget::Listener(_)) {
        location.push('/');
    }
    if r.include_query_string
        && let Some(q) = query
    {
        location.push(if location.contains('?') { '&' } else { '?' });
        location.push_str(q);
    }
    location
}
