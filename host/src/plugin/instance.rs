//! One instance of a plugin: its `Store` (WASI with no capabilities, limits, deadline state,
//! the host view) and its typed exports.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Func, InstancePre, ResourceTable, TypedFunc};
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::exports::wasmgate::plugin::{
    lifecycle, message_filter, packed_router, probe_evaluator, router,
};
use super::bindings::wasmgate::plugin::message_types::{
    Message, MessageDecision, OpenDecision, SessionClose, SessionOpen,
};
use super::bindings::wasmgate::plugin::types::{
    Decision, LogLevel, ProbeRequest, ProbeResponse, ServerState, Verdict,
};
use super::bindings::wasmgate::plugin::{host, message_types, types};
use super::epoch::LongCalls;
use super::host_view::HostView;
use super::lowering::{PackedHeadRef, RequestHeadRef};
use super::output::{GuestOutput, Stream, trap_reason};
use crate::config::PluginLimits;

/// Everything a plugin's `Store` holds.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    deadline: Deadline,
    host: Arc<dyn HostView>,
    plugin: Arc<str>,
}

/// `StoreLimits`, remembering whether a memory was refused growth (to tell a memory-limit trap
/// from any other).
struct Limiter {
    limits: StoreLimits,
    memory_refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.memory_refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Epoch ticks the current call may still run, whether it ran out, and whether it is counted
/// long.
#[derive(Default)]
struct Deadline {
    ticks_left: u64,
    expired: bool,
    /// The call has entered the epoch callback, so it counts in [`LongCalls`] until it ends.
    long: bool,
}

impl StoreState {
    /// A state with WASI granting nothing, and the plugin's limits. Returns a handle on the
    /// guest's stderr too.
    pub(crate) fn new(
        plugin: &Arc<str>,
        limits: &PluginLimits,
        host: &Arc<dyn HostView>,
    ) -> (StoreState, GuestOutput) {
        let stderr = GuestOutput::new(plugin.clone(), Stream::Stderr);
        // No preopens, no environment, no arguments, no sockets, stdin closed: the defaults,
        // with the socket families switched off outright rather than only denied per address.
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput::new(plugin.clone(), Stream::Stdout))
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limiter = Limiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.max_memory_bytes)
                .table_elements(limits.max_table_elements)
                .instances(limits.max_core_instances)
                .memories(limits.max_memories)
                .tables(limits.max_tables)
                .build(),
            memory_refused: false,
        };
        let state = StoreState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            deadline: Deadline::default(),
            host: host.clone(),
            plugin: plugin.clone(),
        };
        (state, stderr)
    }
}

impl StoreState {
    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for StoreState {}

impl message_types::Host for StoreState {}

impl host::Host for StoreState {
    fn pool_state(&mut self, pool: String) -> Option<Vec<ServerState>> {
        self.host.pool_state(&pool)
    }

    fn pools(&mut self) -> Vec<String> {
        self.host.pools()
    }

    fn log(&mut self, level: LogLevel, message: String) {
        let plugin = &*self.plugin;
        match level {
            LogLevel::Error => tracing::error!(target: "wasmgate::plugin", plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "wasmgate::plugin", plugin, "{message}"),
            LogLevel::Info => tracing::info!(target: "wasmgate::plugin", plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "wasmgate::plugin", plugin, "{message}"),
            LogLevel::Trace => tracing::trace!(target: "wasmgate::plugin", plugin, "{message}"),
        }
    }
}

/// The export lookups of a component, done once per plugin.
pub(crate) struct Exports {
    pub(crate) lifecycle: lifecycle::GuestIndices,
    pub(crate) router: Option<RouterExport>,
    pub(crate) probe: Option<probe_evaluator::GuestIndices>,
    pub(crate) filter: Option<message_filter::GuestIndices>,
}

/// Which form of the router a component exports.
pub(crate) enum RouterExport {
    /// `router`: the request head as a record of strings.
    Record(router::GuestIndices),
    /// `packed-router`: the request head in one buffer (preferred when both are exported).
    Packed(packed_router::GuestIndices),
}

impl Exports {
    /// `Err` names the missing interface.
    pub(crate) fn find(pre: &InstancePre<StoreState>) -> Result<Self, &'static str> {
        let lifecycle =
            lifecycle::GuestIndices::new(pre).map_err(|_| "wasmgate:plugin/lifecycle@0.1.2")?;
        let router = match packed_router::GuestIndices::new(pre) {
            Ok(packed) => Some(RouterExport::Packed(packed)),
            Err(_) => router::GuestIndices::new(pre)
                .ok()
                .map(RouterExport::Record),
        };
        let probe = probe_evaluator::GuestIndices::new(pre).ok();
        let filter = message_filter::GuestIndices::new(pre).ok();
        if router.is_none() && probe.is_none() && filter.is_none() {
            return Err(
                "wasmgate:plugin/router@0.1.2, wasmgate:plugin/packed-router@0.1.2, \
                 wasmgate:plugin/probe-evaluator@0.1.2 or wasmgate:plugin/message-filter@0.1.2",
            );
        }
        Ok(Exports {
            lifecycle,
            router,
            probe,
            filter,
        })
    }
}

/// How a call into an instance failed.
pub(crate) enum Failure {
    Deadline,
    MemoryLimit,
    /// The trap or host error, or the guest's panic message, in one line
    /// ([`trap_reason`]).
    Trap(String),
    /// `init` returned `Err` with this message.
    InitRefused(String),
}

/// What a call asks.
pub(crate) enum Call<'a> {
    Route(&'a RequestHeadRef<'a>),
    Evaluate(&'a ProbeResponse),
    ShapeRequest {
        pool: &'a str,
        settings: &'a str,
        server: &'a str,
    },
    Open(&'a SessionOpen),
    Message(&'a Message, &'a [u8]),
    Close(&'a SessionClose, &'a [u8]),
}

impl Call<'_> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Call::Route(_) => "route",
            Call::Evaluate(_) => "evaluate",
            Call::ShapeRequest { .. } => "shape-request",
            Call::Open(_) => "on-open",
            Call::Message(..) => "on-message",
            Call::Close(..) => "on-close",
        }
    }
}

/// An instance's `route` export, by the form of its request head.
#[derive(Clone, Copy)]
enum Route {
    Record(Func),
    Packed(Func),
}

pub(crate) enum Answer {
    Decision(Decision),
    Verdict(Verdict),
    ProbeRequest(Option<ProbeRequest>),
    Open(OpenDecision),
    Message(MessageDecision),
    Closed,
}

pub(crate) struct Instance {
    store: Store<StoreState>,
    /// `route`, type-checked against [`RequestHeadRef`] or [`PackedHeadRef`] (see
    /// [`Instance::route`]).
    route: Option<Route>,
    /// The packed head's buffer, kept from call to call.
    packed: Vec<u8>,
    probe: Option<probe_evaluator::Guest>,
    filter: Option<message_filter::Guest>,
    stderr: GuestOutput,
    tick: Duration,
    long_calls: LongCalls,
    /// Calls served so far.
    pub(crate) calls: u64,
}

/// What an instance needs of the engine: the wasmtime engine, how often its epoch advances, and
/// the count of long calls that deadline callbacks keep.
pub(crate) struct Sandbox<'a> {
    pub engine: &'a wasmtime::Engine,
    pub tick: Duration,
    pub long_calls: &'a LongCalls,
}

impl Instance {
    /// Instantiates and runs `init(config)`, all within `limits.init_timeout`.
    pub(crate) async fn new(
        engine: &Sandbox<'_>,
        pre: &InstancePre<StoreState>,
        exports: &Exports,
        plugin: &Arc<str>,
        config: &str,
        limits: &PluginLimits,
        host: &Arc<dyn HostView>,
    ) -> Result<Instance, Failure> {
        let (state, stderr) = StoreState::new(plugin, limits, host);
        let mut store = Store::new(engine.engine, state);
        store.limiter(StoreState::limiter);
        // A call still running when the epoch advances is long: it is counted so (the epoch
        // thread then advances the epoch every tick). Each advance it runs into yields to the
        // async runtime (a long call does not hold a worker thread) and spends one tick of the
        // budget; an empty budget traps. Ticks pass while the call waits for its worker after a
        // yield without being spent: a healthy call on a busy worker is not cut for waiting.
        let long_calls = engine.long_calls.clone();
        store.epoch_deadline_callback(move |mut ctx| {
            let deadline = &mut ctx.data_mut().deadline;
            if !deadline.long {
                deadline.long = true;
                long_calls.begin();
            }
            if deadline.ticks_left == 0 {
                deadline.expired = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            deadline.ticks_left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });
        let mut instance = Instance {
            store,
            route: None,
            packed: Vec::new(),
            probe: None,
            filter: None,
            stderr,
            tick: engine.tick,
            long_calls: engine.long_calls.clone(),
            calls: 0,
        };
        instance.arm(limits.init_timeout);
        let init = async {
            let wasm = pre.instantiate_async(&mut instance.store).await?;
            let lifecycle = exports.lifecycle.load(&mut instance.store, &wasm)?;
            // The borrowed heads must have the WIT types of `request-head` and
            // `packed-request-head`: checked here, once, so that each call can skip the check.
            instance.route = match &exports.router {
                None => None,
                Some(RouterExport::Record(r)) => {
                    let route = *r.load(&mut instance.store, &wasm)?.func_route().func();
                    route.typed::<(RequestHeadRef<'static>,), (Decision,)>(&instance.store)?;
                    Some(Route::Record(route))
                }
                Some(RouterExport::Packed(r)) => {
                    let route = *r.load(&mut instance.store, &wasm)?.func_route().func();
                    route.typed::<(PackedHeadRef<'static>,), (Decision,)>(&instance.store)?;
                    Some(Route::Packed(route))
                }
            };
            instance.probe = exports
                .probe
                .as_ref()
                .map(|p| p.load(&mut instance.store, &wasm))
                .transpose()?;
            instance.filter = exports
                .filter
                .as_ref()
                .map(|f| f.load(&mut instance.store, &wasm))
                .transpose()?;
            lifecycle.call_init(&mut instance.store, config).await
        };
        let outcome = init.await;
        instance.settle();
        match outcome {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(Failure::InitRefused(message)),
            Err(e) => Err(instance.classify(e)),
        }
    }

    /// Starts a call's budget and forgets the previous call's traces.
    fn arm(&mut self, timeout: Duration) {
        let tick = self.tick.as_nanos().max(1);
        let ticks = timeout.as_nanos().div_ceil(tick) as u64;
        let state = self.store.data_mut();
        state.deadline = Deadline {
            ticks_left: ticks,
            expired: false,
            long: false,
        };
        state.limiter.memory_refused = false;
        self.stderr.clear_tail();
        self.store.set_epoch_deadline(1);
    }

    pub(crate) async fn invoke(
        &mut self,
        call: &Call<'_>,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        self.arm(timeout);
        let result = match *call {
            Call::Route(request) => self.route(request).await.map(Answer::Decision),
            Call::Evaluate(response) => {
                let probe = self.probe.as_ref().expect("checked by the caller");
                probe
                    .call_evaluate(&mut self.store, response)
                    .await
                    .map(Answer::Verdict)
            }
            Call::ShapeRequest {
                pool,
                settings,
                server,
            } => {
                let probe = self.probe.as_ref().expect("checked by the caller");
                probe
                    .call_shape_request(&mut self.store, pool, settings, server)
                    .await
                    .map(Answer::ProbeRequest)
            }
            Call::Open(session) => {
                let filter = self.filter.as_ref().expect("checked by the caller");
                filter
                    .call_on_open(&mut self.store, session)
                    .await
                    .map(Answer::Open)
            }
            Call::Message(message, state) => {
                let filter = self.filter.as_ref().expect("checked by the caller");
                filter
                    .call_on_message(&mut self.store, message, state)
                    .await
                    .map(Answer::Message)
            }
            Call::Close(close, state) => {
                let filter = self.filter.as_ref().expect("checked by the caller");
                filter
                    .call_on_close(&mut self.store, close, state)
                    .await
                    .map(|()| Answer::Closed)
            }
        };
        self.calls += 1;
        self.settle();
        result.map_err(|e| self.classify(e))
    }

    /// Ends the current call's count as a long one, if it was.
    fn settle(&mut self) {
        let deadline = &mut self.store.data_mut().deadline;
        if std::mem::take(&mut deadline.long) {
            self.long_calls.end();
        }
    }

    /// Calls `route` with the borrowed head (packed first for a `packed-router`), the way the
    /// generated bindings call it with an owned one.
    #[allow(unsafe_code)]
    async fn route(&mut self, request: &RequestHeadRef<'_>) -> wasmtime::Result<Decision> {
        let (decision,) = match self.route.expect("checked by the caller") {
            Route::Record(func) => {
                // SAFETY: `new_unchecked` requires the function to have this type;
                // `Instance::new` checked it with `Func::typed` for the same parameter and
                // result types (only the borrow's lifetime differs, which does not change the
                // WIT type).
                let callee =
                    unsafe { TypedFunc::<(RequestHeadRef<'_>,), (Decision,)>::new_unchecked(func) };
                callee.call_async(&mut self.store, (*request,)).await?
            }
            Route::Packed(func) => {
                // SAFETY: as above, checked against `PackedHeadRef` in `Instance::new`.
                let callee =
                    unsafe { TypedFunc::<(PackedHeadRef<'_>,), (Decision,)>::new_unchecked(func) };
                let mut text = std::mem::take(&mut self.packed);
                let head = PackedHeadRef::pack(request, &mut text);
                let result = callee.call_async(&mut self.store, (head,)).await;
                self.packed = text;
                result?
            }
        };
        Ok(decision)
    }

    fn classify(&mut self, error: wasmtime::Error) -> Failure {
        let state = self.store.data();
        if state.deadline.expired {
            return Failure::Deadline;
        }
        if state.limiter.memory_refused {
            return Failure::MemoryLimit;
        }
        let trap = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        Failure::Trap(trap_reason(&trap, &self.stderr.take_tail()))
    }
}

impl Drop for Instance {
    /// A call dropped while it was running (its request went away) still ends its count.
    fn drop(&mut self) {
        self.settle();
    }
}
