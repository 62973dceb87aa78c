//! Phase 3, the upstream request: the request the backend gets. The target URL (a path override
//! or a router's path), the headers (hop-by-hop fields out, the forwarding fields in, header
//! rewrites and a router's edits), the body with its limit, and which member to try first
//! (a router's choice, else the affinity cookie's). A WebSocket over HTTP/2 (RFC 8441) becomes
//! an HTTP/1.1 upgrade towards the backend, with a key of the gateway's own.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::headers::*;
use super::log::Facts;
use super::message_filter::PendingOpen;
use super::rewrite::ResponseRule;
use super::route::{Forwarding, WebSocket};
use super::trace::{TRACEPARENT, TRACESTATE};
use super::{Connection, ProxyError, route_plugin};
use crate::snapshot::{ForwardTarget, Snapshot};
use crate::upstream::{ClientBody, RequestBody};
use crate::websocket;
use crate::websocket::messages::FilterBinding;
use wasmgate_rules::matching::override_path;

/// The request as the backend gets it, and what the later phases need to finish it.
pub(super) struct UpstreamRequest {
    pub target: Arc<ForwardTarget>,
    pub request: Request<RequestBody>,
    pub member: ServerChoice,
    pub response: ResponsePlan,
    /// A WebSocket handshake on a route with a message filter: what the filter's `on-open`
    /// gets (boxed: every request's future carries the option).
    pub filter_open: Option<Box<PendingOpen>>,
}

/// Which member of the target's pool to try first.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerChoice {
    /// A router's member, else the one the affinity cookie names.
    pub preferred: Option<usize>,
    /// A router plugin named the member: no other is tried.
    pub only_preferred: bool,
}

/// What the response phase needs from the request.
pub(super) struct ResponsePlan {
    pub websocket: WebSocket,
    /// The client's side of a WebSocket upgrade.
    pub client_upgrade: Option<OnUpgrade>,
    /// The key the gateway sent for an RFC 8441 handshake, which the backend's accept must
    /// answer.
    pub websocket_key: Option<HeaderValue>,
    /// The rewrite rules to finish on the response (their conditions on the request held).
    pub response_rewrites: Vec<ResponseRule>,
    /// The session's message filter, once its `on-open` accepted (boxed, as above).
    pub filter: Option<Box<FilterBinding>>,
}

impl Connection {
    pub(super) fn upstream_request(
        &self,
        snapshot: &Snapshot,
        mut req: Request<Incoming>,
        authority: &str,
        forwarding: Forwarding,
        facts: &mut Facts,
    ) -> Result<UpstreamRequest, ProxyError> {
        let Forwarding {
            target,
            matched_prefix,
            plugin,
            handshake,
            rewrite,
            message_filter,
        } = forwarding;
        let websocket = handshake.check()?;
        let filter_open = match message_filter {
            Some(id) if websocket != WebSocket::No => {
                let listener = facts.listener.unwrap_or(snapshot.sockets[0].listeners[0]);
                let listener = &snapshot.config.listener(listener).name;
                self.pending_open(snapshot, id, &req, authority, listener)?
                    .map(Box::new)
            }
            _ => None,
        };
        let client_upgrade = (websocket != WebSocket::No).then(|| hyper::upgrade::on(&mut req));
        let settings = snapshot.config.settings(target.settings);
        let (mut parts, body) = req.into_parts();
        let h2 = parts.version == Version::HTTP_2;
        if websocket == WebSocket::ExtendedConnect {
            parts.method = Method::GET;
        }
        let original = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let plugin_path = plugin.as_ref().and_then(|f| f.path.as_deref());
        let rewritten_path = rewrite.as_ref().and_then(|r| r.path.as_deref());
        // A router's path, or a rewrite rule's, is the path the backend gets; a path override
        // rewrites the client's.
        let new_path = match (&settings.path, plugin_path.or(rewritten_path)) {
            (None, None) => None,
            (_, Some(path)) => Some(path.to_owned()),
            (Some(prefix), None) => Some(override_path(prefix, original.path(), matched_prefix)),
        };
        let new_query = rewrite.as_ref().and_then(|r| r.query.as_deref());
        let target_uri = match (new_path, new_query) {
            // The common case reuses the client's target without copying it.
            (None, None) => Uri::from(original.clone()),
            // The client's query is kept unless a rewrite set another (empty: none).
            (p, q) => {
                let mut p = p.unwrap_or_else(|| original.path().to_owned());
                if let Some(q) = q.map_or(original.query(), |q| Some(q).filter(|q| !q.is_empty())) {
                    p.push('?');
                    p.push_str(q);
                }
                PathAndQuery::from_maybe_shared(Bytes::from(p))
                    .map(Uri::from)
                    .map_err(|_| ProxyError::BadRequest("the request target is not a valid URI"))?
            }
        };

        let headers = &mut parts.headers;
        let original_host = headers.get(header::HOST).cloned();
        remove_hop_by_hop(headers);
        drop_unusual_names(headers);
        if websocket != WebSocket::No {
            // RFC 6455 §4.1: the handshake's Upgrade and Connection fields travel to the backend.
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        }
        let websocket_key = (websocket == WebSocket::ExtendedConnect).then(|| {
            let key = websocket::new_key();
            headers.insert(header::SEC_WEBSOCKET_KEY, key.clone());
            key
        });
        if h2 {
            join_cookies(headers);
        }
        self.add_forwarding_headers(
            headers,
            original_host.as_ref(),
            authority,
            original.as_str(),
            facts,
        );
        // Header rewrites come after the forwarding fields, so that a rule may replace them.
        let mut response_rewrites = Vec::new();
        if let Some(mut r) = rewrite {
            r.apply_headers(headers);
            response_rewrites = std::mem::take(&mut r.response);
        }
        if let Some(f) = &plugin {
            route_plugin::apply_header_edits(headers, &f.header_edits);
        }
        let body = if body.is_end_stream() {
            RequestBody::Empty
        } else if let Some(max) = snapshot.config.limits.max_request_body {
            RequestBody::Capped(http_body_util::Limited::new(
                ClientBody::new(body, h2),
                usize::try_from(max).unwrap_or(usize::MAX),
            ))
        } else {
            RequestBody::Incoming(ClientBody::new(body, h2))
        };

        let only_server = plugin.as_ref().and_then(|f| f.member);
        let affinity_cookie = settings.affinity.as_ref().map(|a| a.cookie_name.as_str());
        // A member named by the router overrides the affinity cookie.
        let preferred = only_server.or_else(|| {
            affinity_cookie.and_then(|name| affined_member(snapshot, &target, headers, name))
        });
        let mut request = Request::new(body);
        *request.method_mut() = parts.method;
        *request.uri_mut() = target_uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = parts.headers;
        Ok(UpstreamRequest {
            target,
            request,
            member: ServerChoice {
                preferred,
                only_preferred: only_server.is_some(),
            },
            response: ResponsePlan {
                websocket,
                client_upgrade,
                websocket_key,
                response_rewrites,
                filter: None,
            },
            filter_open,
        })
    }

    fn add_forwarding_headers(
        &self,
        headers: &mut HeaderMap,
        original_host: Option<&HeaderValue>,
        authority: &str,
        original_url: &str,
        facts: &mut Facts,
    ) {
        // Room for the seven fields below at once, instead of the map growing on the way.
        headers.reserve(7);
        // The client is appended to what earlier proxies recorded; without them the value is
        // the connection's, copied by reference count.
        let appended = headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .map(|prior| format!("{prior}, {}", self.client));
        match appended {
            Some(xff) => {
                if let Ok(v) = HeaderValue::from_str(&xff) {
                    headers.insert(X_FORWARDED_FOR.clone(), v);
                }
            }
            None => {
                headers.insert(X_FORWARDED_FOR.clone(), self.forwarded.client.clone());
            }
        }
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(self.scheme.as_str()),
        );
        headers.insert(X_FORWARDED_PORT.clone(), self.forwarded.port.clone());
        let host = match original_host {
            Some(h) => Some(h.clone()),
            None => HeaderValue::from_str(authority).ok(),
        };
        if let Some(h) = host {
            if !headers.contains_key(header::HOST) {
                headers.insert(header::HOST, h.clone());
            }
            headers.insert(X_ORIGINAL_HOST.clone(), h);
        }
        if let Ok(v) = HeaderValue::from_str(original_url) {
            headers.insert(X_ORIGINAL_URL.clone(), v);
        }
        // W3C Trace Context: the backend continues the gateway's span. A trace the gateway
        // started (no valid traceparent came) drops the caller's tracestate (§3.3.1.1).
        if !facts.trace_headers {
            return;
        }
        if facts.trace.parent_span_id.is_none() {
            headers.remove(&TRACESTATE);
        }
        headers.insert(TRACEPARENT.clone(), facts.trace.traceparent());
        let trace_id = facts.trace.trace_id_value();
        headers.insert(X_TRACE_ID.clone(), trace_id.clone());
        facts.trace_header = Some(trace_id);
    }
}

/// RFC 9113 §8.2.3: HTTP/2 may split Cookie into several fields; an HTTP/1.1 backend gets one,
/// joined with "; ".
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for c in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(c.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// The member the client's affinity cookie names, if it is still in the pool and healthy.
fn affined_member(
    snapshot: &Snapshot,
    target: &ForwardTarget,
    headers: &HeaderMap,
    cookie_name: &str,
) -> Option<usize> {
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == cookie_name).then_some(value.trim_matches('"'))
        })?;
    let pool = snapshot.pool(target.pool);
    target.servers.iter().position(|m| {
        let server = &pool.servers[m.server];
        &*server.affinity_id == value && m.health.takes_traffic()
    })
}
