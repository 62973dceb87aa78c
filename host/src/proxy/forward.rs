//! Phase 4, forward with the retry policy: the request goes to a member of the target's pool,
//! and on to another when that is safe. A member that cannot be reached (the request never
//! left) is skipped; one that times out is followed by one other attempt, as Application
//! Gateway v2 does, when the request can be replayed (RFC 9110 §9.2.2).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header;
use http::{Request, Response, StatusCode};

use super::body::ResponseBody;
use super::log::Facts;
use super::upstream_request::ServerChoice;
use super::{Connection, ProxyError, stall};
use crate::snapshot::{ForwardTarget, Snapshot};
use crate::upstream::{ConnectError, PooledBody, RequestBody, Upstream};
use wasmgate_rules::matching::host_without_port;

impl Connection {
    /// Sends the request to a member of the target's pool: the affinity member if any, else
    /// round robin over healthy servers. A member that cannot be reached is skipped; one that
    /// times out is followed by one other attempt when the request can be replayed. With
    /// `only_preferred` (a router plugin named the member) no other member is tried.
    pub(super) async fn forward(
        &self,
        snapshot: &Snapshot,
        target: &ForwardTarget,
        member: ServerChoice,
        req: Request<RequestBody>,
        facts: &mut Facts,
    ) -> Result<(Response<ResponseBody>, usize), ProxyError> {
        let ServerChoice {
            preferred,
            only_preferred,
        } = member;
        let timeout = snapshot.config.settings(target.settings).request_timeout;
        let pool = snapshot.pool(target.pool);
        let n = target.servers.len();
        let tries = if only_preferred { n.min(1) } else { n };
        if n == 0 {
            return Err(ProxyError::EmptyPool(pool.name.clone()));
        }
        let healthy = |i: usize| target.servers[i].health.takes_traffic();
        // The first member tried: the preferred one, else the round robin's; the others
        // follow in pool order, skipping those out of rotation.
        let start = match preferred {
            Some(i) => i,
            None => target.round_robin(pool.next_turn()).unwrap_or(0),
        };
        // A request that reached a backend is sent again only when that is safe: no body to
        // replay and an idempotent method (RFC 9110 §9.2.2). One that never left is always.
        let replayable = matches!(req.body(), RequestBody::Empty) && req.method().is_idempotent();
        let client_host = req.headers().get(header::HOST).cloned();
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
            let member = &target.servers[i];
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
            facts.server = Some((member.server, upstream.port()));
            let sent_at = facts.timed.then(Instant::now);
            if facts.forwarded_at.is_none() {
                facts.forwarded_at = sent_at;
            }
            // A server leaving with connection draining gets until its deadline to answer.
            let sent = tokio::select! {
                biased;
                sent = self.send(upstream, req, timeout, &mut facts.connect) => sent,
                _ = member.health.request_cut() => return Err(ProxyError::Drained(pool.name.clone())),
            };
            match sent {
                Ok(res) => {
                    facts.first_byte = sent_at.map(|at| at.elapsed());
                    facts.server_status = Some(res.status());
                    return Ok((res, i));
                }
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
                Err(Failure::RequestBody { too_large: false }) => {
                    return Err(ProxyError::BadRequest(
                        "the request body is malformed or was cut short",
                    ));
                }
                Err(Failure::RequestBody { too_large: true }) => {
                    let max = snapshot.config.limits.max_request_body;
                    return Err(ProxyError::BodyTooLarge(max.unwrap_or_default()));
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
        connect_time: &mut Option<Duration>,
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
                None => {
                    let started = Instant::now();
                    match tokio::time::timeout_at(deadline, Box::pin(upstream.connect())).await {
                        Ok(Ok(s)) => {
                            *connect_time = Some(started.elapsed());
                            s
                        }
                        Ok(Err(ConnectError::Tls(reason))) => {
                            return Err(Failure::Tls(reason, Box::new(req)));
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "connect failed");
                            return Err(Failure::Unreachable(Some(Box::new(req))));
                        }
                        Err(_) => return Err(Failure::Unreachable(Some(Box::new(req)))),
                    }
                }
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
                            Failure::RequestBody {
                                too_large: past_body_limit(&err),
                            }
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

/// Why one attempt failed, and so whether another member may take the request: one that was
/// never sent (not reached, TLS refused) always may; one that was sent only when it can be
/// replayed; the others end the request.
enum Failure {
    /// Not reached; the request comes back when it was not sent, so another member can take it.
    Unreachable(Option<Box<Request<RequestBody>>>),
    /// The TLS handshake failed (certificate name, root, expiry); the request was not sent.
    Tls(crate::tls::TlsFailure, Box<Request<RequestBody>>),
    Timeout,
    BadResponse,
    /// Reading the client's request body failed while it was being sent; `too_large` when the
    /// body passed `limits.max_request_body`.
    RequestBody {
        too_large: bool,
    },
}

/// Whether sending failed because the request body passed `limits.max_request_body`.
fn past_body_limit(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
