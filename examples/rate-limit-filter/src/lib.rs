//! A message filter limiting what clients send, with two token buckets: one per session (kept in
//! the session's state, so an idle session costs the gateway a few bytes and no instance) and
//! one per client address (kept in the instance's memory, shared by the sessions it serves).
//! Messages from the backend pass untouched.
//!
//! Configuration (JSON, every field optional):
//!
//! ```json
//! { "session_rate": 20, "session_burst": 40,
//!   "client_rate": 50, "client_burst": 100,
//!   "over_limit": "drop", "notice": "{\"error\":\"rate limited\"}" }
//! ```
//!
//! Rates are messages per second, bursts the bucket sizes. Over a limit the message is dropped
//! (`"over_limit": "drop"`, the default; with `notice`, the client is answered that text) or the
//! session is closed with 1008, policy violation (`"close"`).
//!
//! The per-client buckets are per instance: with `max_concurrency = 1` they are exact; with more
//! instances a client's sessions may be served by several, each with its own bucket (the limit
//! then applies per instance). They start afresh when the filter is replaced; the sessions'
//! buckets carry over in their state.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;
use wasmgate_sdk::{
    Direction, Message, MessageDecision, MessageFilter, OpenDecision, Outgoing, Plugin, SessionOpen,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    session_rate: f64,
    session_burst: f64,
    client_rate: f64,
    client_burst: f64,
    over_limit: String,
    notice: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            session_rate: 20.0,
            session_burst: 40.0,
            client_rate: 50.0,
            client_burst: 100.0,
            over_limit: "drop".into(),
            notice: None,
        }
    }
}

/// A token bucket: `tokens` left as of `at_ms`.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    fn full(burst: f64, at_ms: u64) -> Self {
        Bucket {
            tokens: burst,
            at_ms,
        }
    }

    /// Refills for the time passed, then takes one token if there is one.
    fn take(&mut self, rate: f64, burst: f64, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at_ms = now_ms.max(self.at_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The session's state: its bucket (tokens as f64, time in ms) and the client's address, which
/// keys the per-client bucket.
fn encode(bucket: Bucket, client: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + client.len());
    out.extend_from_slice(&bucket.tokens.to_le_bytes());
    out.extend_from_slice(&bucket.at_ms.to_le_bytes());
    out.extend_from_slice(client.as_bytes());
    out
}

fn decode(state: &[u8]) -> Option<(Bucket, &str)> {
    let tokens = f64::from_le_bytes(state.get(0..8)?.try_into().ok()?);
    let at_ms = u64::from_le_bytes(state.get(8..16)?.try_into().ok()?);
    let client = std::str::from_utf8(state.get(16..)?).ok()?;
    Some((Bucket { tokens, at_ms }, client))
}

/// The client's address without its port ("192.0.2.1:4000" → "192.0.2.1", "[::1]:80" → "::1").
fn client_ip(address: &str) -> &str {
    match address.rsplit_once(':') {
        Some((ip, _)) => ip.trim_start_matches('[').trim_end_matches(']'),
        None => address,
    }
}

struct RateLimit {
    config: Config,
    clients: Mutex<HashMap<String, Bucket>>,
}

/// Per-client buckets kept before the oldest are forgotten (a full one is the same as none).
const MAX_CLIENTS: usize = 10_000;

impl Plugin for RateLimit {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| format!("configuration: {e}"))?
        };
        if !matches!(config.over_limit.as_str(), "drop" | "close") {
            return Err(format!(
                "configuration: over_limit {:?} is neither \"drop\" nor \"close\"",
                config.over_limit
            ));
        }
        for (name, v) in [
            ("session_rate", config.session_rate),
            ("session_burst", config.session_burst),
            ("client_rate", config.client_rate),
            ("client_burst", config.client_burst),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("configuration: {name} must be above 0"));
            }
        }
        Ok(RateLimit {
            config,
            clients: Mutex::new(HashMap::new()),
        })
    }
}

impl MessageFilter for RateLimit {
    fn on_open(&self, session: &SessionOpen) -> OpenDecision {
        // The session starts with a full bucket, stamped when its first message arrives.
        let bucket = Bucket::full(self.config.session_burst, u64::MAX);
        let client = client_ip(&session.request.client_address);
        OpenDecision::accept_with_state(encode(bucket, client))
    }

    fn on_message(&self, message: Message, state: Vec<u8>) -> MessageDecision {
        if message.direction == Direction::ToClient {
            return MessageDecision::forward();
        }
        let c = &self.config;
        let now = message.at_ms;
        let (mut session, client) =
            decode(&state).unwrap_or((Bucket::full(c.session_burst, now), ""));
        if session.at_ms == u64::MAX {
            session.at_ms = now;
        }
        // A message the session's bucket refuses takes nothing from the client's.
        let session_ok = session.take(c.session_rate, c.session_burst, now);
        let client_ok = session_ok && {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            if clients.len() >= MAX_CLIENTS && !clients.contains_key(client) {
                // Buckets refilled to full are the same as none: forget those first.
                let (rate, burst) = (c.client_rate, c.client_burst);
                clients.retain(|_, b| {
                    b.tokens + now.saturating_sub(b.at_ms) as f64 / 1000.0 * rate < burst
                });
                if clients.len() >= MAX_CLIENTS {
                    clients.clear();
                }
            }
            clients
                .entry(client.to_owned())
                .or_insert_with(|| Bucket::full(c.client_burst, now))
                .take(c.client_rate, c.client_burst, now)
        };
        let state = encode(session, client);
        if session_ok && client_ok {
            return MessageDecision::forward().with_state(state);
        }
        let decision = match (c.over_limit.as_str(), &c.notice) {
            ("close", _) => MessageDecision::close(1008, "rate limit exceeded"),
            (_, Some(notice)) => MessageDecision::answer(Outgoing::text(notice.clone())),
            (_, None) => MessageDecision::drop_message(),
        };
        decision.with_state(state)
    }
}

wasmgate_sdk::export_message_filter!(RateLimit);
