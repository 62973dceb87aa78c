//! Phase 2, route: the native rules find the listener and rule (and path rule); they say which
//! router plugin applies (the rule's, the listener's, or the gateway's), and they are the answer
//! when the plugin defers or fails open. Without a router plugin this is the whole phase. A
//! redirect, or a plugin's direct response, ends the request here.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response};

use super::body::ResponseBody;
use super::log::Facts;
use super::rewrite::{self, RequestFacts, RequestRewrite};
use super::route_plugin::{PluginForward, RouterOutcome};
use super::{Connection, ProxyError};
use crate::config::{ListenerId, PluginId, RedirectId, RuleId};
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
    /// What the target's rewrite set decided; `None` without one.
    pub rewrite: Option<Box<RequestRewrite>>,
    /// The message filter for a WebSocket session on this route (the path rule's, the rule's or
    /// the listener's).
    pub message_filter: Option<PluginId>,
}

/// How many times a request's URL rewrites may re-evaluate the path map before the request is
/// refused (Application Gateway answers 500 to a rewrite loop; it does not say after how many).
const MAX_REROUTES: usize = 8;

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
            self.check_ssl_profile(snapshot, r.listener)?;
        }
        let router = match &routed {
            Some(r) => snapshot.config.router_for(r.listener, r.rule),
            None => snapshot.config.router,
        };
        let handshake = Handshake::detect(req);
        let message_filter = routed.as_ref().and_then(|r| r.message_filter);
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
                rewrite: None,
                message_filter,
            },
            None => {
                let Routed {
                    target,
                    matched_prefix,
                    rule,
                    ..
                } = routed.ok_or_else(|| ProxyError::NoListener(host.to_string()))?;
                match target {
                    CompiledTarget::Redirect(id) => {
                        let uri = req.uri();
                        return Ok(Route::Respond(self.redirect(
                            snapshot,
                            *id,
                            authority,
                            uri.path(),
                            uri.query(),
                        )));
                    }
                    CompiledTarget::Forward(t) => {
                        let mut forwarding = Forwarding {
                            target: t.clone(),
                            matched_prefix,
                            plugin: None,
                            handshake,
                            rewrite: None,
                            message_filter,
                        };
                        // Only a target with a rewrite set pays for this.
                        if t.rewrite_set.is_some()
                            && let Some(res) = self.rewrite(
                                snapshot,
                                socket,
                                rule,
                                req,
                                authority,
                                &mut forwarding,
                            )?
                        {
                            return Ok(Route::Respond(res));
                        }
                        forwarding
                    }
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

    /// A listener with an SSL profile serves only connections whose handshake was made under
    /// that profile: a client that negotiated another site's TLS (by SNI) and then names this
    /// listener's host gets 421 (RFC 9110 §15.5.20) instead of skipping client authentication.
    fn check_ssl_profile(
        &self,
        snapshot: &Snapshot,
        listener: ListenerId,
    ) -> Result<(), ProxyError> {
        let Some(profile) = snapshot
            .config
            .listener(listener)
            .tls
            .as_ref()
            .and_then(|t| t.ssl_profile)
        else {
            return Ok(());
        };
        let wanted = snapshot.config.ssl_profile(profile).name.as_str();
        match self.handshake.get().and_then(|h| h.ssl_profile.as_deref()) {
            Some(made) if made == wanted => Ok(()),
            _ => Err(ProxyError::Misdirected),
        }
    }

    /// Evaluates the target's rewrite set on the request. A rule that rewrote the URL and asks
    /// for it ("re-evaluate path map") sends the request through the rule's path map again with
    /// the new path; the rewrite set of the target found there is evaluated in turn. A redirect
    /// found there answers the request.
    fn rewrite<B>(
        &self,
        snapshot: &Snapshot,
        socket: usize,
        rule: RuleId,
        req: &Request<B>,
        authority: &str,
        forwarding: &mut Forwarding,
    ) -> Result<Option<Response<ResponseBody>>, ProxyError> {
        let original = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut out = Box::<RequestRewrite>::default();
        let mut url: Option<String> = None;
        let mut reroutes = 0;
        while let Some(set) = forwarding.target.rewrite_set {
            let current = url.as_deref().unwrap_or(original);
            let facts = RequestFacts {
                headers: req.headers(),
                client: self.client,
                authority,
                host: host_without_port(authority),
                method: req.method().as_str(),
                version: req.version(),
                path_and_query: current,
                scheme: self.scheme.as_str(),
                server_port: self.local_port,
                tls_protocol: self.tls.get().map(|t| t.protocol),
                client_certificate: self
                    .handshake
                    .get()
                    .and_then(|h| h.client_certificate.as_ref()),
            };
            out.reroute = false;
            rewrite::on_request(set, &snapshot.config.rewrite_sets[set.0], &facts, &mut out);
            if out.rewrites_url() {
                url = Some(out.url(current));
            }
            if !out.reroute {
                break;
            }
            reroutes += 1;
            if reroutes > MAX_REROUTES {
                return Err(ProxyError::RewriteLoop(MAX_REROUTES));
            }
            let current = url.as_deref().unwrap_or(original);
            let (path, query) = match current.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (current, None),
            };
            // Validation keeps reroutes away from basic rules, which have no path map.
            let Some(routed) = snapshot.reroute(socket, rule, path) else {
                break;
            };
            match routed.target {
                CompiledTarget::Redirect(id) => {
                    return Ok(Some(self.redirect(snapshot, *id, authority, path, query)));
                }
                CompiledTarget::Forward(t) => {
                    forwarding.target = t.clone();
                    forwarding.matched_prefix = routed.matched_prefix;
                }
            }
        }
        forwarding.rewrite = Some(out);
        Ok(None)
    }

    fn redirect(
        &self,
        snapshot: &Snapshot,
        id: RedirectId,
        authority: &str,
        path: &str,
        query: Option<&str>,
    ) -> Response<ResponseBody> {
        let location = snapshot.redirect_location(id, authority, path, query);
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
