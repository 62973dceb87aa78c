//! The request path, in fixed phases: check the request → route (listener, rule, path rule) →
//! redirect or pick an upstream member → forward with the header rules → response back.

pub mod body;
pub mod checks;
pub mod headers;
pub mod resolve;
pub mod route_plugin;
pub mod stall;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::config::{MAX_HEADER_BYTES, MAX_URL_BYTES, Protocol, RedirectId, WebSocketTimeout};
use crate::error::ProxyError;
use crate::gateway::Shared;
use crate::listener::workers;
use crate::snapshot::{CompiledTarget, ForwardTarget, Routed, Snapshot};
use crate::websocket;
pub(crate) use wasmgate_rules::matching::{host_without_port, override_path};

use self::body::ResponseBody;
use self::headers::*;
use self::route_plugin::RouterOutcome;
use self::upstream::{ConnectError, PooledBody, RequestBody, Upstream};

/// What every request on one client connection shares.
pub struct Connection {
    pub shared: Arc<Shared>,
    /// The listening socket the connection came in on.
    pub socket: Arc<crate::listener::SocketHandle>,
    pub client: SocketAddr,
    pub local_port: u16,
    pub scheme: Protocol,
    /// X-Forwarded-For and X-Forwarded-Port as this connection's requests carry them.
    pub forwarded: Forwarded,
    /// Set when hyper gave up waiting for a request head, so the stream answers 408.
    pub head_timed_out: std::sync::atomic::AtomicBool,
    /// The server name from the TLS handshake's SNI, on HTTPS connections that sent one.
    pub sni: std::sync::OnceLock<Box<str>>,
}

/// The forwarding header values that depend only on the connection, formatted once when it is
/// accepted rather than for every request on it.
pub struct Forwarded {
    /// The client's address and port (Application Gateway's X-Forwarded-For form).
    client: HeaderValue,
    /// The listener's port.
    port: HeaderValue,
}

impl Forwarded {
    /// `port` is the listener's port as a header value, formatted once per listening socket.
    pub fn new(client: SocketAddr, port: HeaderValue) -> Self {
        Self {
            client: address_value(client),
            port,
        }
    }

    /// The client's address and port as text ("ip:port", `[v6]:port`), as router plugins get it.
    pub fn client_str(&self) -> &str {
        self.client.to_str().unwrap_or_default()
    }
}

impl Connection {
    /// Serves one request; failures become the error response chosen in one place
    /// ([`ProxyError::into_response`]).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ResponseBody> {
        workers::served_request();
        // The access log costs a copy of the method and target: taken only when it is on.
        let mut log =
            tracing::enabled!(target: "wasmgate::access", tracing::Level::INFO).then(|| {
                AccessLog {
                    client: self.client,
                    method: req.method().clone(),
                    uri: req.uri().clone(),
                    started: Instant::now(),
                    status: None,
                }
            });
        let snapshot = self.shared.snapshot.load_full();
        let h2 = req.version() == Version::HTTP_2;
        let res = match self.proxy(&snapshot, req).await {
            Ok(res) => res,
            Err(e) => {
                tracing::debug!(client = %self.client, error = %e, "request failed");
                let mut res = e.into_response();
                if h2 {
                    // RFC 9113 §8.2.2: no connection-specific fields in HTTP/2.
                    res.headers_mut().remove(header::CONNECTION);
                }
                res
            }
        };
        if let Some(log) = &mut log {
            log.status = Some(res.status());
        }
        res
    }

    async fn proxy(
        &self,
        snapshot: &Snapshot,
        mut req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        // Phase 1: the request itself.
        if req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > MAX_URL_BYTES {
            return Err(ProxyError::UriTooLong);
        }
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > MAX_HEADER_BYTES {
            return Err(ProxyError::HeadersTooLarge);
        }
        checks::transfer_coding(req.headers())?;
        checks::head_limits(req.headers(), &snapshot.config.limits)?;
        let authority = request_authority(&req)?;
        let host = host_without_port(&authority);

        // Phase 2: route. The native rules find the listener and rule first: they say which
        // router plugin applies (the rule's, the listener's, or the gateway's), and they are the
        // answer when the plugin defers or fails open. Without a router this is the whole phase.
        // A connection outlives a reload that removed its socket's listeners; its next
        // request finds none.
        let frontend = snapshot
            .frontend_of(self.socket.id)
            .ok_or_else(|| ProxyError::NoListener(host.to_string()))?;
        let routed = snapshot.route(frontend, host, req.uri().path());
        let router = match &routed {
            Some(r) => snapshot.config.router_for(r.listener, r.rule),
            None => snapshot.config.router,
        };
        // Whether this is a WebSocket handshake (plain, or HTTP/2's extended CONNECT): a router is
        // told, and phase 3 upgrades it. A malformed handshake is refused in phase 3, after a
        // router had its say.
        let extended_connect = websocket::detect_extended_connect(&req);
        let plain_upgrade = match extended_connect {
            Ok(true) => Ok(false),
            _ => websocket::detect(&req),
        };
        let mut by_plugin = None;
        if let Some(id) = router {
            let listener = match &routed {
                Some(r) => r.listener,
                None => snapshot.frontends[frontend].listeners[0],
            };
            let listener = &snapshot.config.listener(listener).name;
            let upgrade = matches!(extended_connect, Ok(true)) || matches!(plain_upgrade, Ok(true));
            match self
                .ask_router(snapshot, id, &req, &authority, listener, upgrade)
                .await?
            {
                RouterOutcome::Native => {}
                RouterOutcome::Respond(res) => return Ok(res),
                RouterOutcome::Forward(f) => by_plugin = Some(f),
            }
        }
        let (forward, matched_prefix, only_member) = match &by_plugin {
            Some(f) => (f.target.clone(), None, f.member),
            None => {
                let Routed {
                    target,
                    matched_prefix,
                    ..
                } = routed.ok_or_else(|| ProxyError::NoListener(host.to_string()))?;
                match target {
                    CompiledTarget::Redirect(id) => {
                        return Ok(self.redirect(snapshot, *id, &authority, req.uri()));
                    }
                    CompiledTarget::Forward(t) => (t.clone(), matched_prefix, None),
                }
            }
        };

        // Phase 3: the upstream request. A WebSocket over HTTP/2 (RFC 8441) becomes an HTTP/1.1
        // upgrade towards the backend, with a key of the gateway's own.
        let extended_connect = extended_connect?;
        let websocket = extended_connect || plain_upgrade?;
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let settings = snapshot.config.settings(forward.settings);
        let (mut parts, body) = req.into_parts();
        let h2 = parts.version == Version::HTTP_2;
        if extended_connect {
            parts.method = Method::GET;
        }
        let original = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let plugin_path = by_plugin.as_ref().and_then(|f| f.path.as_deref());
        // A router's path is the path the backend gets; a path override rewrites the client's.
        let new_path = match (&settings.path, plugin_path) {
            (None, None) => None,
            (_, Some(path)) => Some(path.to_owned()),
            (Some(prefix), None) => Some(override_path(prefix, original.path(), matched_prefix)),
        };
        let target_uri = match new_path {
            // The common case reuses the client's target without copying it.
            None => Uri::from(original.clone()),
            // The query is kept either way.
            Some(mut p) => {
                if let Some(q) = original.query() {
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
        if websocket {
            // RFC 6455 §4.1: the handshake's Upgrade and Connection fields travel to the backend.
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        }
        let websocket_key = extended_connect.then(|| {
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
            &authority,
            original.as_str(),
        );
        // Rewrite conditions see the request as the client sent it; those of response rewrites
        // on the request are decided now, while its headers are at hand.
        let mut response_rewrites_passed = Vec::new();
        if let Some(set) = forward.rewrite_set {
            let set = &snapshot.config.rewrite_sets[set.0];
            let facts = RequestFacts {
                headers,
                client: self.client,
                host: host_without_port(&authority),
                method: parts.method.as_str(),
                path_and_query: original.as_str(),
                scheme: self.scheme.as_str(),
                server_port: self.local_port,
            };
            let passed = request_conditions(&set.request_headers, &facts);
            response_rewrites_passed = request_conditions(&set.response_headers, &facts);
            apply_rewrites_if(headers, &set.request_headers, &passed, None);
        }
        if let Some(f) = &by_plugin {
            route_plugin::apply_header_edits(headers, &f.header_edits);
        }
        let body = if body.is_end_stream() {
            RequestBody::Empty
        } else if let Some(max) = snapshot.config.limits.max_request_body {
            RequestBody::Capped(checks::CappedBody::new(body, max))
        } else {
            RequestBody::Incoming(body)
        };

        let affinity_cookie = settings.affinity.as_ref().map(|a| a.cookie_name.as_str());
        // A member named by the router overrides the affinity cookie.
        let preferred = only_member.or_else(|| {
            affinity_cookie.and_then(|name| affined_member(snapshot, &forward, headers, name))
        });
        let (mut res, member_index) = self
            .forward(
                snapshot,
                &forward,
                preferred,
                only_member.is_some(),
                parts.method,
                target_uri,
                parts.headers,
                body,
                settings.request_timeout,
            )
            .await?;

        // Phase 4: the response.
        let upgraded = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let Some(key) = &websocket_key {
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
            let Some(client_upgrade) = client_upgrade else {
                // A 101 to a request that asked for no WebSocket upgrade cannot be relayed.
                return Err(ProxyError::BadResponse);
            };
            let backend_upgrade = hyper::upgrade::on(&mut res);
            websocket::spawn_relay(
                client_upgrade,
                backend_upgrade,
                websocket::RelaySettings {
                    timeout: settings.request_timeout,
                    idle: settings.websocket_timeout == WebSocketTimeout::Idle,
                },
                self.shared.clone(),
                forward.members[member_index].health.drained(),
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
        if let Some(set) = forward.rewrite_set {
            apply_rewrites_if(
                headers,
                &snapshot.config.rewrite_sets[set.0].response_headers,
                &response_rewrites_passed,
                Some(status),
            );
        }
        if let Some(name) = affinity_cookie
            && preferred != Some(member_index)
        {
            let server = &snapshot.pool(forward.pool).servers[forward.members[member_index].server];
            add_affinity_cookies(headers, name, &server.affinity_id);
        }
        Ok(res)
    }

    /// Sends the request to a member of the target's pool: the affinity member if any, else
    /// round robin over healthy members. A member that cannot be reached is skipped; one that
    /// times out is followed by one other attempt when the request can be replayed. With
    /// `only_preferred` (a router plugin named the member) no other member is tried.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        snapshot: &Snapshot,
        target: &Arc<ForwardTarget>,
        preferred: Option<usize>,
        only_preferred: bool,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<(Response<ResponseBody>, usize), ProxyError> {
        let pool = snapshot.pool(target.pool);
        let n = target.members.len();
        let tries = if only_preferred { n.min(1) } else { n };
        if n == 0 {
            return Err(ProxyError::EmptyPool(pool.name.clone()));
        }
        let healthy = |i: usize| target.members[i].health.takes_traffic();
        let start = match preferred {
            Some(i) => i,
            None => pool.next_start() % n,
        };
        // A request that reached a backend is sent again only when that is safe: no body to
        // replay and an idempotent method (RFC 9110 §9.2.2). One that never left is always.
        let replayable = matches!(body, RequestBody::Empty) && method.is_idempotent();
        let client_host = headers.get(header::HOST).cloned();
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        // Kept only while another attempt may need it: a request that was sent cannot be taken
        // back, so a retry after a timeout is built from this copy.
        let mut spare = (replayable && tries > 1).then(|| clone_head(&req));
        let mut pending = Some(req);
        let mut attempted = false;
        let mut timeouts = 0;
        let mut tls_failure = None;
        for k in 0..tries {
            let i = (start + k) % n;
            if !healthy(i) {
                continue;
            }
            let Some(mut req) = pending.take() else { break };
            attempted = true;
            let member = &target.members[i];
            match member.host_header.as_ref().or(client_host.as_ref()) {
                Some(h) => req.headers_mut().insert(header::HOST, h.clone()),
                None => req.headers_mut().remove(header::HOST),
            };
            let server = &pool.servers[member.server].address;
            // HTTPS settings without a host name: the request's host is the TLS server name.
            let by_host = match member.upstream.tls() {
                Some(tls) if tls.follows_request => client_host
                    .as_ref()
                    .and_then(|h| h.to_str().ok())
                    .and_then(|h| member.upstream.for_request_host(host_without_port(h))),
                _ => None,
            };
            let upstream = by_host.as_ref().unwrap_or(&member.upstream);
            // A server leaving with connection draining gets until its deadline to answer.
            let sent = tokio::select! {
                biased;
                sent = self.send(upstream, req, timeout) => sent,
                _ = member.health.request_cut() => return Err(ProxyError::Drained(pool.name.clone())),
            };
            match sent {
                Ok(res) => return Ok((res, i)),
                Err(Failure::Unreachable(unsent)) => {
                    tracing::debug!(pool = %pool.name, %server, "backend unreachable; trying the next member");
                    pending = unsent
                        .map(|r| *r)
                        .or_else(|| spare.as_ref().map(clone_head));
                    if pending.is_none() {
                        return Err(ProxyError::Unreachable(pool.name.clone()));
                    }
                }
                Err(Failure::Timeout) => {
                    timeouts += 1;
                    tracing::debug!(pool = %pool.name, %server, "backend timed out");
                    // Application Gateway v2 retries one other member after a timeout.
                    if timeouts > 1 {
                        return Err(ProxyError::Timeout(pool.name.clone()));
                    }
                    pending = spare.take();
                    if pending.is_none() {
                        return Err(ProxyError::Timeout(pool.name.clone()));
                    }
                }
                Err(Failure::Tls(reason, unsent)) => {
                    tracing::debug!(pool = %pool.name, %server, %reason, "backend TLS handshake failed; trying the next member");
                    tls_failure = Some(reason);
                    pending = Some(*unsent);
                }
                Err(Failure::BadResponse) => return Err(ProxyError::BadResponse),
                Err(Failure::RequestBody(None)) => {
                    return Err(ProxyError::BadRequest(
                        "the request body is malformed or was cut short",
                    ));
                }
                Err(Failure::RequestBody(Some(max))) => {
                    return Err(ProxyError::BodyTooLarge(max));
                }
            }
        }
        Err(if timeouts > 0 {
            ProxyError::Timeout(pool.name.clone())
        } else if let Some(reason) = tls_failure {
            ProxyError::BackendTls(pool.name.clone(), reason)
        } else if attempted {
            ProxyError::Unreachable(pool.name.clone())
        } else {
            ProxyError::NoHealthyServer(pool.name.clone())
        })
    }

    async fn send(
        &self,
        upstream: &Arc<Upstream>,
        mut req: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<ResponseBody>, Failure> {
        let deadline = tokio::time::Instant::now() + timeout;
        // A pooled connection can be closed by the backend just as it is taken; a request that
        // was not sent on it is sent again on a fresh connection.
        // A WebSocket handshake's connection goes to a task of its own, which carries the
        // upgrade; any other request drives its connection itself (see `upstream`).
        let upgrade = req.headers().contains_key(header::UPGRADE);
        for _ in 0..3 {
            let idle = std::future::poll_fn(|cx| std::task::Poll::Ready(upstream.take_idle(cx)));
            let mut conn = match idle.await {
                Some(c) => c,
                // A new connection (DNS, TCP, TLS handshake) is the rare path and the largest
                // future here: boxed, so that every request's future does not carry its size.
                None => match tokio::time::timeout_at(deadline, Box::pin(upstream.connect())).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(ConnectError::Tls(reason))) => {
                        return Err(Failure::Tls(reason, Box::new(req)));
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "connect failed");
                        return Err(Failure::Unreachable(Some(Box::new(req))));
                    }
                    Err(_) => return Err(Failure::Unreachable(Some(Box::new(req)))),
                },
            };
            let (sent, conn) = if upgrade {
                let mut sender = conn.detach();
                let sent = tokio::time::timeout_at(deadline, sender.try_send_request(req)).await;
                (sent, None)
            } else {
                let sent = tokio::time::timeout_at(deadline, conn.exchange(req)).await;
                (sent, Some(conn))
            };
            match sent {
                Err(_) => return Err(Failure::Timeout),
                Ok(Ok(res)) => {
                    let upgraded = res.status() == StatusCode::SWITCHING_PROTOCOLS;
                    return Ok(res.map(|b| {
                        if upgraded {
                            // The connection now belongs to the WebSocket relay.
                            ResponseBody::Empty
                        } else {
                            // A refused handshake's connection streams the body in its own
                            // task, then closes; any other returns to the pool.
                            let body = match conn {
                                Some(conn) => PooledBody::new(b, conn, upstream.clone()),
                                None => PooledBody::detached(b),
                            };
                            ResponseBody::Upstream(stall::StallGuard::new(body, timeout))
                        }
                    }));
                }
                Ok(Err(mut e)) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => {
                        let err = e.into_error();
                        tracing::debug!(error = %err, "backend failed mid-request");
                        return Err(if err.is_user() {
                            // The client's body failed (a bad chunk size, the client went away,
                            // or past max_request_body): the backend got an aborted request,
                            // the client a 400 or 413.
                            Failure::RequestBody(body_limit(&err))
                        } else if err.is_parse() {
                            Failure::BadResponse
                        } else {
                            Failure::Unreachable(None)
                        });
                    }
                },
            }
        }
        Err(Failure::Unreachable(Some(Box::new(req))))
    }

    fn add_forwarding_headers(
        &self,
        headers: &mut HeaderMap,
        original_host: Option<&HeaderValue>,
        authority: &str,
        original_url: &str,
    ) {
        // Room for the six fields below at once, instead of the map growing on the way.
        headers.reserve(6);
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
        headers.insert(X_TRACE_ID.clone(), trace_id());
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

/// A socket address as Application Gateway's X-Forwarded-For writes it: `ip:port`, or
/// `[ip]:port` for IPv6. IPv4 addresses, every connection's case on an IPv4 listener, are
/// written digit by digit into one allocation, without the formatting machinery.
fn address_value(addr: SocketAddr) -> HeaderValue {
    let SocketAddr::V4(v4) = addr else {
        // Digits, hex, colons, brackets and a `%` scope id: all valid in a header value.
        return HeaderValue::from_str(&addr.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
    };
    // "255.255.255.255:65535"
    let mut text = [0u8; 21];
    let mut len = 0;
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        len += write_decimal(&mut text[len..], octet.into());
    }
    text[len] = b':';
    len += 1;
    len += write_decimal(&mut text[len..], v4.port());
    HeaderValue::from_bytes(&text[..len])
        .expect("digits, dots and a colon are a valid header value")
}

/// Writes `n` in decimal at the start of `out`; returns how many bytes that took.
fn write_decimal(out: &mut [u8], mut n: u16) -> usize {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - start;
    out[..len].copy_from_slice(&digits[start..]);
    len
}

/// A copy of a request without a body, for another attempt.
fn clone_head(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

enum Failure {
    /// Not reached; the request comes back when it was not sent, so another member can take it.
    Unreachable(Option<Box<Request<RequestBody>>>),
    /// The TLS handshake failed (certificate name, root, expiry); the request was not sent.
    Tls(crate::tls::TlsFailure, Box<Request<RequestBody>>),
    Timeout,
    BadResponse,
    /// Reading the client's request body failed while it was being sent; with the limit when
    /// the body passed `limits.max_request_body`.
    RequestBody(Option<u64>),
}

/// The limit a request body passed, when that is why sending it failed.
fn body_limit(err: &hyper::Error) -> Option<u64> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(too_large) = e.downcast_ref::<checks::BodyTooLarge>() {
            return Some(too_large.0);
        }
        source = e.source();
    }
    None
}

/// The authority the client asked for: the target's authority in absolute form (RFC 9112
/// §3.2.2, which then takes precedence over Host), else the one Host header.
fn request_authority<B>(req: &Request<B>) -> Result<String, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(a) = req.uri().authority() {
        return checks::absolute_authority(req.uri(), a, host);
    }
    match host {
        Some(h) => {
            let h = h
                .to_str()
                .map_err(|_| ProxyError::BadRequest("the Host header is not valid"))?;
            if h.is_empty()
                || h.bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@' || b == b',')
            {
                return Err(ProxyError::BadRequest("the Host header is not valid"));
            }
            Ok(h.to_ascii_lowercase())
        }
        // RFC 9112 §3.2: a client MUST send Host in HTTP/1.1.
        None if req.version() == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("the Host header is missing"))
        }
        None => Ok(String::new()),
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
    target.members.iter().position(|m| {
        let server = &pool.servers[m.server];
        &*server.affinity_id == value && m.health.takes_traffic()
    })
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

/// One access-log line per request, written when the request ends — including when the client
/// goes away first, which is logged as 499.
struct AccessLog {
    client: SocketAddr,
    method: Method,
    uri: Uri,
    started: Instant,
    status: Option<StatusCode>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let status = self.status.map_or(499, |s| s.as_u16());
        tracing::info!(
            target: "wasmgate::access",
            client = %self.client,
            method = %self.method,
            uri = %self.uri,
            status,
            micros = self.started.elapsed().as_micros() as u64,
        );
    }
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_written_as_the_standard_library_formats_them() {
        let addresses = [
            "0.0.0.0:0",
            "127.0.0.1:44832",
            "10.0.0.4:80",
            "192.168.100.9:9",
            "255.255.255.255:65535",
            "[::1]:8080",
            "[2001:db8::7]:443",
        ];
        for text in addresses {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(address_value(addr), text, "{addr}");
            assert_eq!(address_value(addr), addr.to_string().as_str());
        }
        let port = HeaderValue::from(8443u16);
        let forwarded = Forwarded::new("10.1.2.3:5000".parse().unwrap(), port);
        assert_eq!(forwarded.client_str(), "10.1.2.3:5000");
        assert_eq!(forwarded.port, "8443");
    }
}
