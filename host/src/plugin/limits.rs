//! What a plugin may use, what happens when it fails, and when its breaker opens.

use std::time::Duration;

use serde::Deserialize;

/// Resource limits for one plugin. Memory, table and instance counts apply to each instance
/// (each `Store`); the deadlines to each call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Budget for one `route`, `evaluate` or `shape_request` call, in epoch ticks of
    /// [`EngineConfig::epoch_tick`](super::EngineConfig::epoch_tick) spent running. A loop is
    /// stopped between this and this plus the engine's
    /// [`watch_interval`](super::EngineConfig::watch_interval) after it started.
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

/// When a plugin's circuit breaker opens: `failures` failed calls within `window` open it for
/// `cool_down`, during which the plugin is not called. After the cool-down one call is let
/// through: success closes the breaker, failure opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub failures: u32,
    pub window: Duration,
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(30),
        }
    }
}
