//! The engine all plugins share: compiler and allocator settings, the epoch ticker, the
//! linker, and the artifact cache.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;
use super::bindings::Plugins;
use super::breaker::BreakerConfig;
use super::cache::{ArtifactCache, ArtifactSource};
use super::handle::Plugin;
use super::host_view::HostView;
use super::instance::StoreState;
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
}

impl PluginRole {
    /// The configuration's word for it.
    pub fn kind(self) -> &'static str {
        match self {
            PluginRole::Router => "router",
            PluginRole::ProbeEvaluator => "probe",
        }
    }

    /// The WIT interface it exports.
    pub fn interface(self) -> &'static str {
        match self {
            PluginRole::Router => {
                "wasmgate:plugin/router@0.1.1 or wasmgate:plugin/packed-router@0.1.1"
            }
            PluginRole::ProbeEvaluator => "wasmgate:plugin/probe-evaluator@0.1.1",
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
            ArtifactCache::new(&engine, config.cache_dir.clone()).map_err(|e| engine_error(&e))?;
        let ticker = Ticker::start(engine.clone(), config.epoch_tick, config.watch_interval);
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

    /// Compiles (off the async threads, or from the cache), links, creates a first instance
    /// and runs its `init`. Fails if any of that fails, or if the component exports neither a
    /// router nor a probe evaluator.
    pub async fn load(
        &self,
        spec: PluginSpec,
        host: Arc<dyn HostView>,
    ) -> Result<(Plugin, LoadReport), PluginError> {
        let started = Instant::now();
        let engine = self.clone();
        let wasm = spec.wasm.clone();
        let compile = tokio::task::spawn_blocking(move || {
            engine
                .inner
                .cache
                .get_or_compile(&engine.inner.engine, &wasm)
        });
        // An interpreted guest compiles for seconds: say that it is still going.
        let progress = {
            let name = spec.name.clone();
            tokio::spawn(async move {
                let every = Duration::from_secs(2);
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    ticks.tick().await;
                    tracing::info!(
                        target: "wasmgate::plugin",
                        plugin = %name,
                        seconds = started.elapsed().as_secs(),
                        "still compiling"
                    );
                }
            })
        };
        let compiled = compile.await;
        progress.abort();
        let (component, artifact) = compiled
            .map_err(|e| PluginError::Compile {
                plugin: spec.name.clone(),
                reason: format!("compilation thread failed: {e}"),
            })?
            .map_err(|e| PluginError::Compile {
                plugin: spec.name.clone(),
                reason: format!("{e:#}"),
            })?;
        let compile_time = started.elapsed();

        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link {
                plugin: spec.name.clone(),
                reason: format!("{e:#}"),
            })?;
        let started = Instant::now();
        let plugin = Plugin::new(self.clone(), spec, pre, host).await?;
        let report = LoadReport {
            artifact,
            compile_time,
            init_time: started.elapsed(),
        };
        tracing::info!(
            target: "wasmgate::plugin",
            plugin = plugin.name(),
            router = plugin.is_router(),
            probe_evaluator = plugin.is_probe_evaluator(),
            artifact = ?report.artifact,
            compile_ms = report.compile_time.as_secs_f64() * 1e3,
            init_ms = report.init_time.as_secs_f64() * 1e3,
            "plugin loaded"
        );
        Ok((plugin, report))
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

    /// The count of calls running past a tick, which their deadline callbacks keep.
    pub(crate) fn long_calls(&self) -> &LongCalls {
        &self.ticker.shared.long
    }

    /// Lowers the watch interval so that a call yields well inside `deadline`.
    pub(crate) fn fit_deadline(&self, deadline: Duration) {
        self.ticker.fit(deadline, self.epoch_tick);
    }

    /// Whether the epoch thread is parked for want of calls (for tests).
    #[cfg(test)]
    pub(crate) fn ticker_parked(&self) -> bool {
        self.ticker.shared.parked.load(Ordering::SeqCst)
    }

    /// Times the epoch thread woke and times it advanced the epoch (for tests).
    #[cfg(test)]
    pub(crate) fn ticker_counts(&self) -> (u64, u64) {
        let shared = &self.ticker.shared;
        (
            shared.woke.load(Ordering::Relaxed),
            shared.advanced.load(Ordering::Relaxed),
        )
    }
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// The thread that advances the engine's epoch: what makes a long call yield and its deadline
/// fire. One thread for all plugins.
///
/// Waking every tick while calls flow would cost the cores the gateway shares with everything
/// else a wake-up and two context switches a millisecond, for calls that almost all return in
/// about a microsecond. So while no call is known to be long the thread only looks every `watch`
/// interval: if a call is in flight then, the epoch advances, and the next look is one tick
/// later. A call still running when the epoch advances enters its deadline callback, which marks
/// it long ([`LongCalls`]) and yields; while any call is long the epoch advances every tick. A
/// runaway call thus yields for the first time within `watch` of its start, then at every tick,
/// and spends one tick of its budget at each: a 20 ms budget ends a loop between 20 and
/// 20 + `watch` ms after it started. A call that merely happened to be in flight at a look yields
/// once, which costs it a few microseconds and one tick of its budget.
///
/// Once no call has started for [`IDLE_FOR`] the thread parks; the next call wakes it.
struct Ticker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

/// Time without a call before the ticker parks.
const IDLE_FOR: Duration = Duration::from_millis(100);

struct TickerShared {
    stop: AtomicBool,
    parked: AtomicBool,
    /// Calls started and finished, per worker thread (threads that are not workers share the
    /// first), each worker's pair on a cache line of its own so that workers do not contend.
    calls: Box<[CallCounts]>,
    long: LongCalls,
    /// The watch interval, in nanoseconds: lowered to fit the shortest deadline loaded.
    watch: AtomicU64,
    /// Times the epoch advanced, and times the thread woke (for tests).
    advanced: AtomicU64,
    woke: AtomicU64,
    thread: OnceLock<Thread>,
}

#[repr(align(128))]
#[derive(Default)]
struct CallCounts {
    started: AtomicU64,
    finished: AtomicU64,
}

impl CallCounts {
    /// (started, finished), `finished` read first: a call counted finished was counted started
    /// before, so the pair never shows more finished than started.
    fn read(&self) -> (u64, u64) {
        let finished = self.finished.load(Ordering::SeqCst);
        (self.started.load(Ordering::SeqCst), finished)
    }
}

/// Calls that have run past a tick and are not finished: while there are any, the epoch
/// advances every tick. Incremented by a call's deadline callback the first time it runs,
/// decremented when that call ends.
#[derive(Clone, Default)]
pub(crate) struct LongCalls(Arc<AtomicUsize>);

impl LongCalls {
    pub(crate) fn begin(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn end(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

/// Guest code may run while this lives: the ticker is awake.
pub(crate) struct Busy<'a>(&'a CallCounts);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::SeqCst);
    }
}

impl TickerShared {
    /// Each worker's (started, finished) counts, into `out`.
    fn look(&self, out: &mut Vec<(u64, u64)>) {
        out.clear();
        out.extend(self.calls.iter().map(CallCounts::read));
    }

    fn idle(&self) -> bool {
        self.calls.iter().all(|c| {
            let (started, finished) = c.read();
            started == finished
        })
    }
}

impl Ticker {
    fn start(engine: Engine, tick: Duration, watch: Duration) -> Self {
        let shared = Arc::new(TickerShared {
            stop: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            calls: (0..crate::listener::workers::count().max(1))
                .map(|_| CallCounts::default())
                .collect(),
            long: LongCalls::default(),
            watch: AtomicU64::new(watch.max(tick).as_nanos() as u64),
            advanced: AtomicU64::new(0),
            woke: AtomicU64::new(0),
            thread: OnceLock::new(),
        });
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn(move || Self::run(&engine, &state, tick))
            .expect("spawning the epoch thread");
        let _ = shared.thread.set(thread.thread().clone());
        Ticker {
            shared,
            thread: Some(thread),
        }
    }

    fn run(engine: &Engine, state: &TickerShared, tick: Duration) {
        let in_flight = |&(started, finished): &(u64, u64)| started != finished;
        let (mut last, mut now) = (Vec::new(), Vec::new());
        state.look(&mut last);
        let mut again = false;
        let mut quiet_since = Instant::now();
        while !state.stop.load(Ordering::Relaxed) {
            let watch = Duration::from_nanos(state.watch.load(Ordering::Relaxed));
            std::thread::sleep(if again || state.long.any() {
                tick
            } else {
                watch
            });
            state.woke.fetch_add(1, Ordering::Relaxed);
            state.look(&mut now);
            let flying = now.iter().any(in_flight);
            let long = state.long.any();
            if flying || long {
                engine.increment_epoch();
                state.advanced.fetch_add(1, Ordering::Relaxed);
            }
            again = flying;
            let quiet = !flying && !long && now == last;
            std::mem::swap(&mut last, &mut now);
            if !quiet {
                quiet_since = Instant::now();
                continue;
            }
            if quiet_since.elapsed() < IDLE_FOR {
                continue;
            }
            // A call starting now either sees `parked` and wakes this thread, or has already
            // counted itself and is seen here (both sides are SeqCst).
            state.parked.store(true, Ordering::SeqCst);
            if state.idle() && !state.stop.load(Ordering::SeqCst) {
                std::thread::park();
            }
            state.parked.store(false, Ordering::SeqCst);
            state.look(&mut last);
            quiet_since = Instant::now();
        }
    }

    /// Counts a call in flight until the guard drops, and wakes the ticker if it is parked.
    fn busy(&self) -> Busy<'_> {
        let shared = &*self.shared;
        let slots = &shared.calls;
        let counts = &slots[crate::listener::workers::current() % slots.len()];
        counts.started.fetch_add(1, Ordering::SeqCst);
        if shared.parked.load(Ordering::SeqCst) {
            Self::wake(shared);
        }
        Busy(counts)
    }

    /// Keeps the first yield of a call well inside `deadline`: the watch interval becomes at
    /// most a quarter of it (never less than a tick).
    fn fit(&self, deadline: Duration, tick: Duration) {
        let quarter = (deadline / 4).max(tick).as_nanos() as u64;
        self.shared.watch.fetch_min(quarter, Ordering::Relaxed);
    }

    fn wake(shared: &TickerShared) {
        if let Some(thread) = shared.thread.get() {
            thread.unpark();
        }
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        Self::wake(&self.shared);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
