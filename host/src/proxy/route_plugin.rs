//! Router plugins on the request path (the route phase).
//!
//! A router's decision is carried out with the same machinery as a native rule: a forward
//! becomes a [`ForwardTarget`] from the snapshot (so affinity, retries, health and WebSocket
//! upgrades behave exactly as for a native forward), a redirect or a direct response is written
//! here, and `defer` hands the request to the native rules. A failed call, or a decision naming a
//! pool, settings or server that does not exist, goes to the plugin's fail policy.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};

use super::Connection;
use super::ProxyError;
use super::body::ResponseBody;
use crate::config::{FailPolicy, PluginId};
use crate::plugin::{Decision, Header, HeaderEdit, HeaderRef, Plugin, PluginError, RequestHeadRef};
use crate::snapshot::{ForwardTarget, Snapshot};

/// What a router plugin decided, as the proxy carries it out.
pub(super) enum RouterOutcome {
    /// Route with the native rules (a `defer`, or a failure under `fail_open`).
    Native,
    /// A redirect or direct response, complete.
    Respond(Response<ResponseBody>),
    Forward(PluginForward),
}

/// A plugin's forward, resolved against the snapshot.
pub(super) struct PluginForward {
    pub target: Arc<ForwardTarget>,
    /// The one member the plugin named, as an index into `target.servers`.
    pub member: Option<usize>,
    pub header_edits: Vec<HeaderEdit>,
    /// Replaces the request's path towards the backend (the query is kept).
    pub path: Option<String>,
}

impl Connection {
    /// Calls the router plugin `id` of `snapshot`'s configuration for `req` and resolves its
    /// decision. `listener` is the name of the listener the request matched (or the socket's
    /// first when none did); `websocket` whether it is a well-formed WebSocket handshake.
    ///
    /// The plugin's active version is read once (no lock) and used for the whole request, so a
    /// version replaced meanwhile finishes the requests it started. A plugin with no version
    /// loaded follows its fail policy. When a shadow candidate compares this request, it gets
    /// the same request head after the active version answered, on a task of its own.
    pub(super) async fn ask_router<B>(
        &self,
        snapshot: &Snapshot,
        id: PluginId,
        req: &Request<B>,
        authority: &str,
        listener: &str,
        websocket: bool,
    ) -> Result<RouterOutcome, ProxyError> {
        let (version, slot) = match self.plane.plugins.slot(&snapshot.config, id) {
            Some(slot) => (slot.active(), Some(slot)),
            None => (None, None),
        };
        let Some(version) = version else {
            let (name, policy) = match &slot {
                Some(s) => (s.name().to_owned(), s.fail_policy()),
                None => {
                    let p = snapshot.config.plugin(id);
                    (p.name.clone(), p.fail_policy)
                }
            };
            tracing::debug!(target: "wasmgate::plugin", plugin = %name, "router plugin not loaded");
            return fail_with(policy, PluginError::NotLoaded { plugin: name });
        };
        let plugin = &version.plugin;
        // The head borrows the request (and the client address the connection formatted once):
        // the only copy of its strings is the one into the guest.
        let client_address = self.forwarded.client_str();
        let headers = request_headers(req, plugin.request_headers());
        let head = RequestHeadRef {
            method: req.method().as_str(),
            scheme: self.scheme.as_str(),
            authority,
            path: req.uri().path(),
            query: req.uri().query(),
            headers: &headers,
            client_address,
            listener,
            websocket,
            tls_sni: self.sni.get().map(|s| &**s),
        };
        let result = plugin.route_borrowed(&head).await;
        if let Some(shadow) = slot.as_ref().and_then(|s| s.shadow_for_request()) {
            // The candidate gets the headers it asks for, in a head of its own: it runs after
            // this request has moved on.
            let headers = request_headers(req, shadow.candidate().plugin.request_headers());
            let owned = RequestHeadRef {
                headers: &headers,
                ..head
            }
            .to_owned_head();
            shadow.observe(owned, result.as_ref().ok().cloned());
        }
        let decision = match result {
            Ok(d) => d,
            Err(e) => return fail(plugin, e),
        };
        match decision {
            Decision::Defer => Ok(RouterOutcome::Native),
            Decision::Redirect(r) => {
                let mut res = Response::new(ResponseBody::Empty);
                *res.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
                if let Ok(v) = HeaderValue::from_str(&r.location) {
                    res.headers_mut().insert(header::LOCATION, v);
                }
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                Ok(RouterOutcome::Respond(res))
            }
            Decision::Respond(d) => {
                let mut res = Response::new(ResponseBody::Full(Bytes::from(d.body)));
                *res.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
                for h in &d.headers {
                    if let Some((name, value)) = header_pair(h) {
                        res.headers_mut().append(name, value);
                    }
                }
                Ok(RouterOutcome::Respond(res))
            }
            Decision::Forward(f) => {
                let Some(target) = snapshot.forward_target(&f.pool, &f.settings) else {
                    let e = plugin.report_invalid_decision(format!(
                        "no backend pool {:?} with backend settings {:?}",
                        f.pool, f.settings
                    ));
                    return fail(plugin, e);
                };
                let member = match &f.server {
                    None => None,
                    Some(server) => {
                        let pool = snapshot.pool(target.pool);
                        let found = target
                            .servers
                            .iter()
                            .position(|m| pool.servers[m.server].address.to_string() == *server);
                        if found.is_none() {
                            let e = plugin.report_invalid_decision(format!(
                                "no server {server:?} in backend pool {:?}",
                                f.pool
                            ));
                            return fail(plugin, e);
                        }
                        found
                    }
                };
                Ok(RouterOutcome::Forward(PluginForward {
                    target: target.clone(),
                    member,
                    header_edits: f.header_edits,
                    path: f.path,
                }))
            }
        }
    }
}

/// The request's headers a plugin asked for (`None`: all), borrowed.
pub(super) fn request_headers<'r, B>(
    req: &'r Request<B>,
    wanted: Option<&[HeaderName]>,
) -> Vec<HeaderRef<'r>> {
    if wanted.is_some_and(|w| w.is_empty()) {
        return Vec::new();
    }
    req.headers()
        .iter()
        .filter(|(n, _)| wanted.is_none_or(|w| w.contains(n)))
        .map(|(n, v)| HeaderRef {
            name: n.as_str(),
            value: v.as_bytes(),
        })
        .collect()
}

/// The plugin's fail policy applied to a failure (already logged and counted by the plugin).
fn fail(plugin: &Plugin, error: PluginError) -> Result<RouterOutcome, ProxyError> {
    fail_with(plugin.fail_policy(), error)
}

fn fail_with(policy: FailPolicy, error: PluginError) -> Result<RouterOutcome, ProxyError> {
    match policy {
        FailPolicy::FailClosed => Err(ProxyError::Plugin(error)),
        FailPolicy::FailOpen => Ok(RouterOutcome::Native),
    }
}

fn header_pair(h: &Header) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_bytes(h.name.as_bytes()).ok()?,
        HeaderValue::from_bytes(&h.value).ok()?,
    ))
}

/// Applies a forward's header edits, in order, to the request towards the backend.
pub(super) fn apply_header_edits(headers: &mut HeaderMap, edits: &[HeaderEdit]) {
    for edit in edits {
        match edit {
            HeaderEdit::Set(h) => {
                if let Some((n, v)) = header_pair(h) {
                    headers.insert(n, v);
                }
            }
            HeaderEdit::Append(h) => {
                if let Some((n, v)) = header_pair(h) {
                    headers.append(n, v);
                }
            }
            HeaderEdit::Remove(name) => {
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    headers.remove(n);
                }
            }
        }
    }
}
