//! What the configuration says about a WebAssembly plugin (`[[plugins]]`): its kind, its limits,
//! what happens when it fails, and the sample requests a new version must answer as expected.
//!
//! Samples (`[[plugins.samples]]`): a new version of a router plugin answers each of them before
//! it is put in service, and a version that answers one differently is refused, so a broken build
//! or a wrong configuration never takes traffic.
//!
//! ```toml
//! [[plugins.samples]]
//! host = "shop.example"          # required: the request's authority
//! path = "/cart?id=1"            # default "/"; a query is split off as the router sees it
//! method = "GET"                 # default GET
//! headers = { x-user-id = "42" } # default none
//! client_address = "192.0.2.1:40000" # default 192.0.2.1:40000
//! listener = "web"               # default ""
//! websocket = false              # default false
//! expect = "forward"             # forward | redirect | respond | defer
//! pool = "stable"                # forward only: the pool the decision must name
//! settings = "web"               # forward only, optional
//! status = 302                   # redirect / respond only, optional
//! location = "https://x/"        # redirect only, optional
//! ```
//!
//! Fields left out of the expectation are not compared (a forward's header edits, say).

use std::time::Duration;

use serde::Deserialize;

/// What a plugin does for the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Router,
    Probe,
    /// A WebSocket message filter (`message-filter`).
    MessageFilter,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Router => "router",
            PluginKind::Probe => "probe",
            PluginKind::MessageFilter => "message-filter",
        }
    }
}

/// A WebAssembly plugin (`[[plugins]]`); its component is read and compiled when the gateway
/// starts.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub name: String,
    /// The component file, resolved against the configuration file's folder; `None` for a
    /// plugin declared here and loaded through the admin API.
    pub path: Option<std::path::PathBuf>,
    pub kind: PluginKind,
    /// Passed to the plugin's `init`.
    pub config: String,
    pub limits: PluginLimits,
    pub fail_policy: FailPolicy,
    /// Requests with expected decisions that every new version must pass before it serves.
    pub samples: Vec<Sample>,
    /// The request headers a router plugin is given (`request_headers`); `None` gives all.
    pub request_headers: Option<Vec<http::HeaderName>>,
}

/// Resource limits for one plugin. Memory, table and instance counts apply to each instance
/// (each `Store`); the deadlines to each call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Budget for one `route`, `evaluate` or `shape_request` call, in epoch ticks of
    /// [`EngineConfig::epoch_tick`](crate::plugin::EngineConfig::epoch_tick) spent running. A
    /// loop is stopped between this and this plus the engine's
    /// [`watch_interval`](crate::plugin::EngineConfig::watch_interval) after it started.
    pub call_timeout: Duration,
    /// Budget for `init`, which runs once per new instance (interpreted guests parse their
    /// configuration there; it is off the request path except when a burst needs a new instance).
    pub init_timeout: Duration,
    /// The largest size a linear memory may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// The most elements a table may grow to.
    pub max_table_elements: usize,
    /// Core instances per instance of the component (a Python component uses 14).
    pub max_core_instances: usize,
    /// Linear memories per instance of the component.
    pub max_memories: usize,
    /// Tables per instance of the component.
    pub max_tables: usize,
    /// Instances of this plugin that may run at once; further calls wait for one to be free.
    pub max_concurrency: usize,
    /// Replace an instance after it served this many calls (`Some(1)`: a fresh instance for
    /// every call). `None` keeps an instance until it fails.
    pub recycle_after_calls: Option<u64>,
    /// Message filters: the largest WebSocket message reassembled for a call; a larger one
    /// closes its session with 1009 (RFC 6455 §7.4.1). Also bounds what one decision sends.
    pub max_message_bytes: usize,
    /// Message filters: the largest session state a call may return; a larger one is a failed
    /// call.
    pub max_state_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            call_timeout: Duration::from_millis(20),
            init_timeout: Duration::from_secs(1),
            max_memory_bytes: 128 << 20,
            max_table_elements: 100_000,
            max_core_instances: 32,
            max_memories: 8,
            max_tables: 32,
            max_concurrency: 16,
            recycle_after_calls: None,
            max_message_bytes: 1 << 20,
            max_state_bytes: 1024,
        }
    }
}

/// What the gateway does when a plugin call fails (trap, deadline, memory limit, breaker open,
/// invalid decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailPolicy {
    /// Answer the request with a 5xx and a reason; for a probe evaluator, count the server as
    /// unhealthy.
    #[default]
    FailClosed,
    /// Fall back to the native basic rules, as if the plugin had deferred; for a probe
    /// evaluator, use the native verdict.
    FailOpen,
}

/// What kind of decision a sample expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Forward,
    Redirect,
    Respond,
    Defer,
}

impl Expected {
    pub fn as_str(self) -> &'static str {
        match self {
            Expected::Forward => "forward",
            Expected::Redirect => "redirect",
            Expected::Respond => "respond",
            Expected::Defer => "defer",
        }
    }
}

/// A validated sample: the request a router is asked, and what its answer must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub request: SampleRequest,
    pub expect: Expected,
    pub pool: Option<String>,
    pub settings: Option<String>,
    pub status: Option<u16>,
    pub location: Option<String>,
}

/// A sample's request as a router sees it (over plain HTTP, without SNI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRequest {
    pub method: String,
    /// The sample's `host`, lowercased.
    pub authority: String,
    pub path: String,
    /// What followed `?` in the sample's `path`.
    pub query: Option<String>,
    /// `host` (as written) first, then the sample's headers with lowercase names.
    pub headers: Vec<(String, String)>,
    pub client_address: String,
    pub listener: String,
    pub websocket: bool,
}
