//! A loaded plugin: a pool of warm instances, its breaker and its stats.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use tokio::sync::Semaphore;
use wasmtime::component::InstancePre;

use super::PluginError;
use super::bindings::wasmgate::plugin::types::{
    Decision, HeaderEdit, ProbeRequest, ProbeResponse, RequestHead, Verdict,
};
use super::breaker::{Breaker, BreakerState};
use super::cache::Compiled;
use super::engine::{LoadReport, PluginEngine, PluginRole, PluginSpec};
use super::host_view::HostView;
use super::instance::{Answer, Call, Exports, Failure, Instance, RouterExport, StoreState};
use super::lowering::RequestHeadRef;
use super::stats::{Counters, PluginStats};
use crate::config::{FailPolicy, PluginLimits};

impl PluginEngine {
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
        let compile_error = |reason| PluginError::Compile {
            plugin: spec.name.clone(),
            origin: spec.origin.clone(),
            reason,
        };
        let (compiled, artifact) = compiled
            .map_err(|e| compile_error(format!("compilation thread failed: {e}")))?
            .map_err(|e| compile_error(compile_failure(&spec.wasm, &e)))?;
        let compile_time = started.elapsed();

        let pre = self
            .inner
            .linker
            .instantiate_pre(compiled.component())
            .map_err(|e| PluginError::Link {
                plugin: spec.name.clone(),
                reason: format!("{e:#}"),
            })?;
        let started = Instant::now();
        let plugin = Plugin::new(self.clone(), spec, compiled, pre, host).await?;
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
}

/// Why `wasm` did not compile, in one line: what the file is when it is not a component at all
/// (its first bytes, rather than the byte arrays of the parser's message), else the compiler's
/// reason.
fn compile_failure(wasm: &[u8], error: &wasmtime::Error) -> String {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE: &[u8] = &[1, 0, 0, 0];
    if wasm.is_empty() {
        return "not a WebAssembly component (the file is empty)".to_owned();
    }
    if !wasm.starts_with(MAGIC) {
        let start = &wasm[..wasm.len().min(16)];
        let start = start.split(|&b| b == b'\n').next().unwrap_or(start);
        return format!(
            "not a WebAssembly component (the file starts with {:?})",
            String::from_utf8_lossy(start)
        );
    }
    if wasm.get(4..8) == Some(CORE_MODULE) {
        return "a core WebAssembly module, not a component (build it for wasm32-wasip2, or \
                wrap it with `wasm-tools component new`)"
            .to_owned();
    }
    let reason = format!("{error:#}");
    let mut reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    if reason.len() > 300 {
        reason.truncate(reason.floor_char_boundary(300));
        reason.push('…');
    }
    format!("not a valid WebAssembly component: {reason}")
}

/// One call in this many (per instance, from its first) is timed for the call-time histogram.
const TIMED_EVERY: u64 = 8;

/// Largest body of a direct response (the WIT contract's limit).
pub const MAX_DIRECT_BODY: usize = 64 * 1024;
/// Most header edits in a forward, or headers in a direct response.
pub const MAX_HEADERS: usize = 64;
/// Longest verdict reason kept (it is shown in the backend-health view); longer ones are cut.
pub const MAX_REASON: usize = 512;

/// A loaded plugin. Cheap to clone; all clones share instances, breaker and stats.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    name: Arc<str>,
    engine: PluginEngine,
    /// Marks the compiled component as in use for the engine's memory cache (`pre` holds the
    /// component itself).
    _compiled: Arc<Compiled>,
    pre: InstancePre<StoreState>,
    exports: Exports,
    config: String,
    limits: PluginLimits,
    fail_policy: FailPolicy,
    request_headers: Option<Arc<[http::HeaderName]>>,
    host: Arc<dyn HostView>,
    /// Warm instances waiting for a call.
    idle: ArrayQueue<Box<Instance>>,
    /// One permit per instance that may run at once.
    permits: Semaphore,
    breaker: Breaker,
    counters: Counters,
}

impl Plugin {
    pub(crate) async fn new(
        engine: PluginEngine,
        spec: PluginSpec,
        compiled: Arc<Compiled>,
        pre: InstancePre<StoreState>,
        host: Arc<dyn HostView>,
    ) -> Result<Plugin, PluginError> {
        let exports = Exports::find(&pre).map_err(|interface| PluginError::MissingExport {
            plugin: spec.name.clone(),
            interface,
        })?;
        if let Some(role) = spec.role {
            let exported = match role {
                PluginRole::Router => exports.router.is_some(),
                PluginRole::ProbeEvaluator => exports.probe.is_some(),
                PluginRole::MessageFilter => exports.filter.is_some(),
            };
            if !exported {
                return Err(PluginError::WrongKind {
                    plugin: spec.name.clone(),
                    kind: role.kind(),
                    interface: role.interface(),
                });
            }
        }
        engine
            .inner
            .fit_deadline(spec.limits.call_timeout.min(spec.limits.init_timeout));
        let concurrency = spec.limits.max_concurrency.max(1);
        let plugin = Plugin {
            inner: Arc::new(PluginInner {
                name: spec.name.as_str().into(),
                engine,
                _compiled: compiled,
                pre,
                exports,
                config: spec.config,
                limits: spec.limits,
                fail_policy: spec.fail_policy,
                request_headers: spec.request_headers,
                host,
                idle: ArrayQueue::new(concurrency),
                permits: Semaphore::new(concurrency),
                breaker: Breaker::new(spec.breaker),
                counters: Counters::new(),
            }),
        };
        // The first instance proves that the component instantiates and accepts its
        // configuration, then waits for the first call.
        let first = plugin
            .new_instance()
            .await
            .map_err(|failure| match failure {
                Failure::Trap(reason) => PluginError::InitTrap {
                    plugin: spec.name.clone(),
                    reason,
                },
                other => PluginError::Init {
                    plugin: spec.name.clone(),
                    message: plugin.init_failure(other),
                },
            })?;
        let _ = plugin.inner.idle.push(first);
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the component exports `wasmgate:plugin/router` or `packed-router`.
    pub fn is_router(&self) -> bool {
        self.inner.exports.router.is_some()
    }

    /// The router interface the gateway calls: `"packed-router"` when the component exports it,
    /// else `"router"`; `None` for a component that is no router.
    pub fn router_interface(&self) -> Option<&'static str> {
        self.inner.exports.router.as_ref().map(|r| match r {
            RouterExport::Record(_) => "router",
            RouterExport::Packed(_) => "packed-router",
        })
    }

    /// Whether the component exports `wasmgate:plugin/probe-evaluator`.
    pub fn is_probe_evaluator(&self) -> bool {
        self.inner.exports.probe.is_some()
    }

    pub fn fail_policy(&self) -> FailPolicy {
        self.inner.fail_policy
    }

    /// The request headers a router is given; `None`: all of them.
    pub fn request_headers(&self) -> Option<&[http::HeaderName]> {
        self.inner.request_headers.as_deref()
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.inner.limits
    }

    pub fn stats(&self) -> PluginStats {
        self.inner.counters.snapshot()
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// The sampled call times: each non-empty bucket's upper bound and count, and their sum
    /// (all in µs).
    pub fn call_time_buckets(&self) -> (Vec<(u64, u64)>, u64) {
        self.inner.counters.call_time.buckets()
    }

    pub(super) fn exports(&self) -> &Exports {
        &self.inner.exports
    }

    /// Warm instances waiting for a call.
    pub fn idle_instances(&self) -> usize {
        self.inner.idle.len()
    }

    /// Asks the router where `request` goes. The decision's shape is checked (statuses, header
    /// names and values, body size, paths); whether its pool, settings and server exist is for
    /// the caller to check against its configuration, reporting a failure with
    /// [`report_invalid_decision`](Self::report_invalid_decision).
    pub async fn route(&self, request: &RequestHead) -> Result<Decision, PluginError> {
        let mut headers = Vec::new();
        self.route_borrowed(&RequestHeadRef::of(request, &mut headers))
            .await
    }

    /// [`route`](Self::route) with a borrowed request head (what the proxy builds, without
    /// copying the request's strings on the host).
    pub async fn route_borrowed(
        &self,
        request: &RequestHeadRef<'_>,
    ) -> Result<Decision, PluginError> {
        self.require(self.is_router(), PluginRole::Router.interface())?;
        let Answer::Decision(decision) = self.call(Call::Route(request)).await? else {
            unreachable!("route answers with a decision")
        };
        match check_decision(&decision) {
            Ok(()) => Ok(decision),
            Err(reason) => Err(self.report_invalid_decision(reason)),
        }
    }

    /// Asks the probe evaluator to judge a probe response.
    pub async fn evaluate(&self, response: &ProbeResponse) -> Result<Verdict, PluginError> {
        self.require(
            self.is_probe_evaluator(),
            "wasmgate:plugin/probe-evaluator@0.1.2",
        )?;
        let Answer::Verdict(mut verdict) = self.call(Call::Evaluate(response)).await? else {
            unreachable!("evaluate answers with a verdict")
        };
        if verdict.reason.len() > MAX_REASON {
            let cut = verdict.reason.floor_char_boundary(MAX_REASON);
            verdict.reason.truncate(cut);
        }
        Ok(verdict)
    }

    /// Asks the probe evaluator how to shape the probe request for one server.
    pub async fn shape_probe_request(
        &self,
        pool: &str,
        settings: &str,
        server: &str,
    ) -> Result<Option<ProbeRequest>, PluginError> {
        self.require(
            self.is_probe_evaluator(),
            "wasmgate:plugin/probe-evaluator@0.1.2",
        )?;
        let call = Call::ShapeRequest {
            pool,
            settings,
            server,
        };
        let Answer::ProbeRequest(request) = self.call(call).await? else {
            unreachable!("shape-request answers with a probe request")
        };
        Ok(request)
    }

    /// Records that a decision could not be carried out (for example it names a pool that
    /// does not exist): logged with the plugin's name, counted, and held against the breaker.
    /// Returns the error for the caller's fail policy.
    pub fn report_invalid_decision(&self, reason: impl Into<String>) -> PluginError {
        let inner = &*self.inner;
        inner.counters.invalid_decisions.fetch_add(1, Relaxed);
        inner.counters.failures.fetch_add(1, Relaxed);
        let error = PluginError::InvalidDecision {
            plugin: inner.name.to_string(),
            reason: reason.into(),
        };
        tracing::warn!(target: "wasmgate::plugin", plugin = %inner.name, "{error}");
        if inner.breaker.record_failure() {
            self.log_opened();
        }
        error
    }

    pub(super) fn require(
        &self,
        exported: bool,
        interface: &'static str,
    ) -> Result<(), PluginError> {
        if exported {
            Ok(())
        } else {
            Err(PluginError::MissingExport {
                plugin: self.inner.name.to_string(),
                interface,
            })
        }
    }

    pub(super) async fn call(&self, call: Call<'_>) -> Result<Answer, PluginError> {
        let inner = &*self.inner;
        let ticket = match inner.breaker.admit() {
            Ok(ticket) => ticket,
            Err(retry_in) => {
                inner.counters.rejected.fetch_add(1, Relaxed);
                return Err(PluginError::CircuitOpen {
                    plugin: inner.name.to_string(),
                    retry_in,
                });
            }
        };
        // Without contention a permit is one compare-and-swap; only a call that finds every
        // permit taken builds the waiting future.
        let _permit = match inner.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => inner
                .permits
                .acquire()
                .await
                .expect("the semaphore is never closed"),
        };
        let mut instance = match inner.idle.pop() {
            Some(instance) => instance,
            None => match self.instantiate().await {
                Ok(instance) => instance,
                Err(error) => {
                    inner.counters.failures.fetch_add(1, Relaxed);
                    tracing::warn!(target: "wasmgate::plugin", plugin = %inner.name, "{error}");
                    if ticket.failure() {
                        self.log_opened();
                    }
                    return Err(error);
                }
            },
        };
        // The call-time histogram takes every `TIMED_EVERY`th call of each instance: its quantiles
        // need samples, not every call, and two clock reads are a few per cent of a fast call.
        let started = (instance.calls % TIMED_EVERY == 0).then(Instant::now);
        let result = {
            let _busy = inner.engine.inner.busy();
            instance.invoke(&call, inner.limits.call_timeout).await
        };
        if let Some(started) = started {
            inner.counters.call_time.record(started.elapsed());
        }
        inner.counters.calls.fetch_add(1, Relaxed);
        match result {
            Ok(answer) => {
                ticket.success();
                let keep = inner
                    .limits
                    .recycle_after_calls
                    .is_none_or(|n| instance.calls < n);
                if !keep || inner.idle.push(instance).is_err() {
                    inner.counters.instances_discarded.fetch_add(1, Relaxed);
                }
                Ok(answer)
            }
            Err(failure) => {
                // A failed instance may hold a half-updated state: it is never entered again.
                drop(instance);
                inner.counters.instances_discarded.fetch_add(1, Relaxed);
                inner.counters.failures.fetch_add(1, Relaxed);
                let error = self.call_error(call.name(), failure);
                tracing::warn!(target: "wasmgate::plugin", plugin = %inner.name, "{error}");
                if ticket.failure() {
                    self.log_opened();
                }
                Err(error)
            }
        }
    }

    async fn instantiate(&self) -> Result<Box<Instance>, PluginError> {
        self.new_instance()
            .await
            .map_err(|failure| PluginError::Instantiate {
                plugin: self.inner.name.to_string(),
                reason: self.init_failure(failure),
            })
    }

    /// A new instance with `init` done, or why there is none.
    async fn new_instance(&self) -> Result<Box<Instance>, Failure> {
        let inner = &*self.inner;
        let _busy = inner.engine.inner.busy();
        let instance = Instance::new(
            &inner.engine.inner.sandbox(),
            &inner.pre,
            &inner.exports,
            &inner.name,
            &inner.config,
            &inner.limits,
            &inner.host,
        )
        .await;
        inner.counters.instances_created.fetch_add(1, Relaxed);
        if instance.is_err() {
            inner.counters.instances_discarded.fetch_add(1, Relaxed);
        }
        instance.map(Box::new)
    }

    /// Why instantiating and initialising failed, in words.
    fn init_failure(&self, failure: Failure) -> String {
        let limits = &self.inner.limits;
        match failure {
            Failure::InitRefused(message) | Failure::Trap(message) => message,
            Failure::Deadline => format!(
                "instantiation and init ran past the {:?} deadline",
                limits.init_timeout
            ),
            Failure::MemoryLimit => format!(
                "the {}-byte memory limit is too small for this component",
                limits.max_memory_bytes
            ),
        }
    }

    fn call_error(&self, call: &'static str, failure: Failure) -> PluginError {
        let inner = &*self.inner;
        let plugin = inner.name.to_string();
        match failure {
            Failure::Deadline => {
                inner.counters.deadlines.fetch_add(1, Relaxed);
                PluginError::Deadline {
                    plugin,
                    call,
                    limit: inner.limits.call_timeout,
                }
            }
            Failure::MemoryLimit => {
                inner.counters.memory_limits.fetch_add(1, Relaxed);
                PluginError::MemoryLimit {
                    plugin,
                    call,
                    limit_bytes: inner.limits.max_memory_bytes,
                }
            }
            Failure::Trap(reason) | Failure::InitRefused(reason) => {
                inner.counters.traps.fetch_add(1, Relaxed);
                PluginError::Trap {
                    plugin,
                    call,
                    reason,
                }
            }
        }
    }

    fn log_opened(&self) {
        let inner = &*self.inner;
        tracing::error!(
            target: "wasmgate::plugin",
            plugin = %inner.name,
            failures = inner.breaker.config().failures,
            "circuit breaker opened: the plugin is not called during its cool-down"
        );
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name())
            .field("router", &self.is_router())
            .field("probe_evaluator", &self.is_probe_evaluator())
            .field("breaker", &self.breaker_state())
            .finish_non_exhaustive()
    }
}

/// Checks what the WIT contract promises about a decision, independent of configuration.
pub fn check_decision(decision: &Decision) -> Result<(), String> {
    match decision {
        Decision::Forward(forward) => {
            if forward.pool.is_empty() || forward.settings.is_empty() {
                return Err("forward needs a pool and a backend settings".into());
            }
            if let Some(path) = &forward.path
                && (!path.starts_with('/')
                    || http::uri::PathAndQuery::try_from(path.as_str()).is_err())
            {
                return Err(format!("path {path:?} is not an absolute request path"));
            }
            if forward.header_edits.len() > MAX_HEADERS {
                return Err(format!("more than {MAX_HEADERS} header edits"));
            }
            for edit in &forward.header_edits {
                match edit {
                    HeaderEdit::Set(h) | HeaderEdit::Append(h) => check_header(&h.name, &h.value)?,
                    HeaderEdit::Remove(name) => check_header(name, b"")?,
                }
            }
            Ok(())
        }
        Decision::Redirect(redirect) => {
            if ![301, 302, 303, 307, 308].contains(&redirect.status) {
                return Err(format!(
                    "redirect status {} is not 301, 302, 303, 307 or 308",
                    redirect.status
                ));
            }
            if redirect.location.is_empty()
                || http::HeaderValue::from_str(&redirect.location).is_err()
            {
                return Err(format!(
                    "redirect location {:?} is not a valid header value",
                    redirect.location
                ));
            }
            Ok(())
        }
        Decision::Respond(response) => {
            if !(200..=599).contains(&response.status) {
                return Err(format!(
                    "response status {} is not 200–599",
                    response.status
                ));
            }
            if response.body.len() > MAX_DIRECT_BODY {
                return Err(format!(
                    "response body of {} bytes is over the {MAX_DIRECT_BODY}-byte limit",
                    response.body.len()
                ));
            }
            if response.headers.len() > MAX_HEADERS {
                return Err(format!("more than {MAX_HEADERS} response headers"));
            }
            for h in &response.headers {
                check_header(&h.name, &h.value)?;
            }
            Ok(())
        }
        Decision::Defer => Ok(()),
    }
}

fn check_header(name: &str, value: &[u8]) -> Result<(), String> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("{name:?} is not a valid header name"));
    }
    if http::HeaderValue::from_bytes(value).is_err() {
        return Err(format!(
            "the value of header {name:?} is not a valid header value"
        ));
    }
    Ok(())
}
