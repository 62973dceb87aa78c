//! Write wasmgate plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. It decides where a request goes
//! (a [`Router`]) or whether a probed server is healthy (a [`ProbeEvaluator`]); the gateway keeps
//! the sockets, TLS, WebSocket relaying and probing. The contract is the WIT package
//! `wasmgate:plugin@0.1.2` (`wit/plugin.wit`); this crate wraps it:
//!
//! - [`RequestHead`], the request as a router sees it (borrowed, nothing copied), and the WIT
//!   types ([`Decision`], [`ProbeResponse`], [`Verdict`], …), with
//!   helpers: header and cookie lookup, the host without its port, decision builders;
//! - [`glob`]: host and path matching with the gateway's own semantics;
//! - [`hash`]: a stable hash (FNV-1a, 64 bit) for sticky and weighted routing;
//! - [`host`]: the gateway's pools and their health, and its log;
//! - [`messages`]: WebSocket message filters ([`MessageFilter`]) and their decisions;
//! - [`export_router!`], [`export_probe_evaluator!`], [`export_router_and_probe_evaluator!`],
//!   [`export_message_filter!`]: export a type implementing the traits below as a component in
//!   one line.
//!
//! ```ignore
//! use wasmgate_sdk::{Decision, Plugin, RequestHead, Router};
//!
//! struct Api;
//!
//! impl Plugin for Api {
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(Api)
//!     }
//! }
//!
//! impl Router for Api {
//!     fn route(&self, request: &RequestHead) -> Decision {
//!         if wasmgate_sdk::glob::path_matches("/api/*", &request.path) {
//!             Decision::forward("api", "api-settings")
//!         } else {
//!             Decision::Defer
//!         }
//!     }
//! }
//!
//! wasmgate_sdk::export_router!(Api);
//! ```
//!
//! The plugin's crate is a `cdylib` depending on `wasmgate-sdk` (under that name); build it with
//! `cargo build --release --target wasm32-wasip2`. See the README for a complete walk-through.
//!
//! The gateway keeps a plugin's instance between calls (see the host's `plugin` module): state in
//! `self` or in statics survives from one request to the next, and is lost whenever the instance
//! is replaced (after a trap, a deadline, or the configured number of calls). Do not keep one
//! request's data for another.

pub mod glob;
pub mod hash;
pub mod host;
pub mod messages;
mod packed;
mod types;
// The generated bindings are `unsafe` glue around the canonical ABI; this crate writes none.
#[allow(unsafe_code)]
#[doc(hidden)]
pub mod wit;

pub use messages::{
    Accept, Action, CloseFrame, ClosedBy, Direction, Message, MessageDecision, Opcode,
    OpenDecision, Outgoing, SessionClose, SessionOpen,
};
pub use types::{RequestHead, RequestHeader};
pub use wit::wasmgate::plugin::types::{
    Decision, DirectResponse, Forward, Header, HeaderEdit, Health, LogLevel, ProbeRequest,
    ProbeResponse, Redirect, ServerState, Verdict,
};

/// What every plugin implements: construction from the plugin's configuration string.
///
/// `init` runs once per instance, before any other call, with the `config` string the gateway
/// configuration gives the plugin (often JSON). An `Err` makes loading the plugin fail with that
/// message.
pub trait Plugin: Sized + Send + Sync + 'static {
    fn init(config: &str) -> Result<Self, String>;
}

/// A router: where does this request go?
pub trait Router: Plugin {
    /// Decides for one request. [`Decision::Defer`] hands the request to the gateway's native
    /// rules, exactly as without a plugin.
    fn route(&self, request: &RequestHead<'_>) -> Decision;
}

/// A probe evaluator: is this server healthy?
pub trait ProbeEvaluator: Plugin {
    /// Changes the probe request sent to `server` of `pool` (probed with backend settings
    /// `settings`); `None` keeps the configured probe.
    fn shape_request(&self, pool: &str, settings: &str, server: &str) -> Option<ProbeRequest> {
        let _ = (pool, settings, server);
        None
    }

    /// Judges one probe response (or the error that took its place).
    fn evaluate(&self, response: &ProbeResponse) -> Verdict;
}

/// A WebSocket message filter: what becomes of each message of a session (see [`messages`]).
///
/// The gateway keeps each session's state (bytes) between calls and gives it back with every
/// message; an instance serves any session, so per-session data belongs in the state, not in
/// `self` (what `self` holds is shared by every session the instance serves, and lost when the
/// instance is replaced).
pub trait MessageFilter: Plugin {
    /// Whether a session may open (`session.request` is the handshake); the default accepts
    /// with an empty state.
    fn on_open(&self, session: &SessionOpen) -> OpenDecision {
        let _ = session;
        OpenDecision::accept()
    }

    /// Decides for one whole message, given the session's state.
    fn on_message(&self, message: Message, state: Vec<u8>) -> MessageDecision;

    /// The session ended (nothing to decide).
    fn on_close(&self, close: &SessionClose, state: &[u8]) {
        let _ = (close, state);
    }
}

/// Used by the export macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use std::sync::OnceLock;

    use crate::Plugin;

    pub use crate::packed::unpack;

    pub fn init<T: Plugin>(state: &OnceLock<T>, config: &str) -> Result<(), String> {
        if state.get().is_some() {
            return Err("init called twice".to_owned());
        }
        let plugin = T::init(config)?;
        // A second `init` racing the first cannot happen: a component instance is single-threaded.
        let _ = state.set(plugin);
        Ok(())
    }

    pub fn state<T: Plugin>(state: &OnceLock<T>) -> &T {
        state
            .get()
            .expect("the gateway calls init before any other export")
    }
}

include!(concat!(env!("OUT_DIR"), "/export_macros.rs"));
