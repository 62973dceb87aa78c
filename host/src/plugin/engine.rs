//! The engine all plugins share: compiler and allocator settings, the epoch ticker, the
//! linker, and the artifact cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;
use super::bindings::Plugins;
use super::breaker::BreakerConfig;
use super::cache::{ArtifactCache, ArtifactSource};
use super::epoch::{Busy, Ticker};
use super::instance::{Sandbox, StoreState};
use crate::config::{FailPolicy, PluginLimits};

/// Engine-wide settings: sized for every plugin together.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How often the epoch advances while a call runs long: such a call yields to the runtime
    /// at every tick, and its deadline is checked then.
    pub epoch_tick: Duration,
    /// How often the epoch thread looks for a call in flight while none is known to be long: a
    /// call yields for the first time within this interval of its start. It is lowered to a
    /// quarter of the shortest `call_timeout` or `init_timeout` loaded (never below a tick).
    pub watch_interval: Duration,
    /// Where compiled artifacts are kept between runs; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Whether a `cache_dir` that cannot be used (not creatable, writable by others, owned by
    /// another user) only costs the disk cache, with a warning, instead of failing the engine:
    /// so for the per-user default, not for a directory the operator named.
    pub cache_dir_optional: bool,
    /// Threads that call plugins on the request path: each counts its calls apart.
    pub workers: usize,
    /// Component instances alive at once, over all plugins (each live plugin instance is one).
    pub total_component_instances: u32,
    /// Core instances alive at once: per instance, a Rust component has 1–3, JavaScript 3,
    /// Python 14.
    pub total_core_instances: u32,
    /// Linear memories alive at once (one per instance for all three kinds of guest). Each
    /// reserves 4 GiB of address space (not memory) so that bounds checks can be elided.
    pub total_memories: u32,
    /// Tables alive at once (up to two per instance).
    pub total_tables: u32,
    /// Fiber stacks for calls in flight at once.
    pub total_stacks: u32,
    /// The largest table any module may define or grow to, in elements.
    pub max_table_elements: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            epoch_tick: Duration::from_millis(1),
            // The kernel's own tick here (HZ = 250): a runnable thread can wait that long for a
            // core anyway.
            watch_interval: Duration::from_millis(4),
            cache_dir: None,
            cache_dir_optional: false,
            workers: crate::workers::per_core(),
            total_component_instances: 1000,
            total_core_instances: 16_000,
            total_memories: 1000,
            total_tables: 2000,
            total_stacks: 1000,
            max_table_elements: 100_000,
        }
    }
}

/// What to load.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The plugin's name, used in logs, errors and stats.
    pub name: String,
    /// Where the component came from (its file, or "upload"), for errors about its bytes.
    pub origin: Option<String>,
    /// The component's bytes.
    pub wasm: Arc<[u8]>,
    /// Passed to the plugin's `init`.
    pub config: String,
    pub limits: PluginLimits,
    pub fail_policy: FailPolicy,
    pub breaker: BreakerConfig,
    /// The request headers the plugin is given (lower-case names); `None` gives it every header.
    /// Each header given is copied into the guest's memory on every call, so a plugin that
    /// reads one cookie should not pay for the whole head.
    pub request_headers: Option<Arc<[http::HeaderName]>>,
    /// The role the component must play: checked before its first instance runs `init`, so a
    /// component of the wrong kind is refused as such (not for rejecting a config meant for
    /// another kind). `None` takes either.
    pub role: Option<PluginRole>,
}

/// What a plugin is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginRole {
    Router,
    ProbeEvaluator,
    MessageFilter,
}

impl PluginRole {
    /// The configuration's word for it.
    pub fn kind(self) -> &'static str {
        match self {
            PluginRole::Router => "router",
            PluginRole::ProbeEvaluator => "probe",
            PluginRole::MessageFilter => "message-filter",
        }
    }

    /// The WIT interface it exports.
    pub fn interface(self) -> &'static str {
        match self {
            PluginRole::Router => {
                "wasmgate:plugin/router@0.1.2 or wasmgate:plugin/packed-router@0.1.2"
            }
            PluginRole::ProbeEvaluator => "wasmgate:plugin/probe-evaluator@0.1.2",
            PluginRole::MessageFilter => "wasmgate:plugin/message-filter@0.1.2",
        }
    }
}

impl PluginSpec {
    /// A spec with default limits, fail policy and breaker.
    pub fn new(
        name: impl Into<String>,
        wasm: impl Into<Arc<[u8]>>,
        config: impl Into<String>,
    ) -> Self {
        PluginSpec {
            name: name.into(),
            origin: None,
            wasm: wasm.into(),
            config: config.into(),
            limits: PluginLimits::default(),
            fail_policy: FailPolicy::default(),
            breaker: BreakerConfig::default(),
            request_headers: None,
            role: None,
        }
    }
}

/// How a load went, for logs and the health view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    pub artifact: ArtifactSource,
    /// Compiling or reading the artifact.
    pub compile_time: Duration,
    /// Creating the first instance and running its `init`.
    pub init_time: Duration,
}

/// The shared WebAssembly engine. Cheap to clone; the epoch ticker stops when the last clone
/// (and every plugin loaded with it) is gone.
#[derive(Clone)]
pub struct PluginEngine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreState>,
    pub(crate) epoch_tick: Duration,
    pub(crate) cache: ArtifactCache,
    ticker: Ticker,
}

impl PluginEngine {
    pub fn new(config: EngineConfig) -> Result<Self, PluginError> {
        let engine_error = |e: &dyn std::fmt::Display| PluginError::Engine {
            reason: e.to_string(),
        };
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.total_component_instances)
            .total_core_instances(config.total_core_instances)
            .total_memories(config.total_memories)
            .total_tables(config.total_tables)
            .total_stacks(config.total_stacks)
            .table_elements(config.max_table_elements);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .parallel_compilation(true);
        let engine = Engine::new(&wasm).map_err(|e| engine_error(&e))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| engine_error(&e))?;
        Plugins::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| engine_error(&e))?;

        let cache =
            ArtifactCache::new(&engine, config.cache_dir.clone(), config.cache_dir_optional)
                .map_err(|e| engine_error(&e))?;
        let ticker = Ticker::start(
            engine.clone(),
            config.epoch_tick,
            config.watch_interval,
            config.workers,
        );
        Ok(PluginEngine {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                epoch_tick: config.epoch_tick,
                cache,
                ticker,
            }),
        })
    }

    /// The underlying wasmtime engine (for measurements and tools).
    pub fn wasmtime(&self) -> &Engine {
        &self.inner.engine
    }

    /// How often the epoch advances.
    pub fn epoch_tick(&self) -> Duration {
        self.inner.epoch_tick
    }
}

impl EngineInner {
    /// To hold while guest code may run (instantiation, `init`, a call): the epoch advances
    /// meanwhile, so the call's deadline can fire.
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.ticker.busy()
    }

    /// What an instance needs of the engine.
    pub(crate) fn sandbox(&self) -> Sandbox<'_> {
        Sandbox {
            engine: &self.engine,
            tick: self.epoch_tick,
            long_calls: self.ticker.long_calls(),
        }
    }

    /// Lowers the watch interval so that a call yields well inside `deadline`.
    pub(crate) fn fit_deadline(&self, deadline: Duration) {
        self.ticker.fit(deadline, self.epoch_tick);
    }

    /// Whether the epoch thread is parked for want of calls (for tests).
    #[cfg(test)]
    pub(crate) fn ticker_parked(&self) -> bool {
        self.ticker.parked()
    }

    /// Times the epoch thread woke and times it advanced the epoch (for tests).
    #[cfg(test)]
    pub(crate) fn ticker_counts(&self) -> (u64, u64) {
        self.ticker.counts()
    }
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}
