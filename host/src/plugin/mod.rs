//! WebAssembly plugins: routers and probe evaluators run as sandboxed components of the WIT
//! package `wasmgate:plugin@0.1.2` (`wit/plugin.wit`).
//!
//! # Shape
//!
//! - One [`PluginEngine`] per gateway: wasmtime with the component model and Cranelift, the
//!   pooling allocator (sized by [`EngineConfig`]; a Python component uses 14 core instances per
//!   instance, so the core-instance total is raised well above the component total), epoch
//!   interruption driven by one thread (it looks every 4 ms while calls are short, ticks every
//!   1 ms while one runs long, and parks while no guest code runs),
//!   WASI p2 linked with no capabilities
//!   (no preopens, environment, arguments or sockets; stdin closed; stdout and stderr go to
//!   tracing), and the `host` interface answered from a [`HostView`] the gateway supplies.
//! - [`PluginEngine::load`] compiles on a blocking thread, or takes the compiled component from
//!   memory (while a plugin uses it, and the few most recent) or from the on-disk artifact cache
//!   (by default in the per-user cache directory; keyed by the component's SHA-256 and the
//!   engine's compatibility hash; see `cache.rs` for why reading it back is safe), builds the
//!   `InstancePre` once, creates a first instance and runs `init(config)` in it. Any failure is a
//!   one-line load error naming the plugin, with the plugin's own message (a panic in `init` as
//!   `init trapped: panicked at FILE:LINE:COL: message`; the whole of stderr is in the log).
//! - A [`Plugin`] keeps up to `max_concurrency` warm instances in a lock-free queue; a call takes
//!   one (or creates one, running `init`), arms its deadline, calls, and puts it back. A call that
//!   fails in any way (trap, deadline, memory limit) drops its instance: a trapped instance may
//!   hold half-updated state and is never entered again; the next call gets a fresh one.
//! - Limits per plugin ([`PluginLimits`](crate::config::PluginLimits)): time per call, counted
//!   in epoch ticks spent running; memory, table elements, core instances, memories and tables
//!   per instance, through `StoreLimits`. Defaults: 20 ms per call, 1 s for `init`, 128 MiB per
//!   memory.
//! - A circuit breaker per plugin ([`BreakerConfig`], [`BreakerState`]): `failures` failures
//!   within `window` stop calls for `cool_down`, then one trial call closes or reopens it.
//! - Failures come back as [`PluginError`]; the caller applies the plugin's
//!   [`FailPolicy`](crate::config::FailPolicy) (`fail_closed`: a 5xx; `fail_open`: the native
//!   rules). Decisions are checked against the WIT contract here ([`check_decision`]); whether
//!   the pools and settings they name exist is checked by the caller, which reports a bad one
//!   with [`Plugin::report_invalid_decision`].
//! - [`PluginStats`]: calls, failures by kind, breaker refusals, instances created and discarded,
//!   call-time p50/p99 from a lock-free log-linear histogram.
//! - [`PluginRegistry`] (`registry.rs`): the gateway's plugins while it runs — one slot per name
//!   holding the active version behind an `ArcSwap` (read once per request, no lock), an optional
//!   [`Shadow`] candidate, `prepare`/`commit` for a new configuration, and the admin operations
//!   (load, replace, unload, shadow, promote), each new version checked against the plugin's
//!   [`Sample`](crate::config::Sample)s before it serves.
//! - The proxy lowers a [`RequestHeadRef`] (`lowering.rs`): the request head borrowed from the
//!   hyper request, with only the headers the plugin's `request_headers` names.
//!
//! # One instance per request, or reused instances? Measured
//!
//! `cargo test --release -p wasmgate --lib plugin::bench -- --ignored --nocapture` (one router
//! call with 8 headers, µs p50, 2-core machine; full table in BENCHMARKS.md, "Plugin calls"):
//!
//! | guest | warm instance, gateway path | fresh instance per call (instantiate + `init` + call) |
//! |---|---:|---:|
//! | Rust | 2.3 | 27 |
//! | Python | 19 | 1 500 |
//! | JavaScript | 69 | 800 |
//!
//! A fresh instance per request costs 12× for a Rust plugin (25 µs more per request, where the
//! whole gateway spends about 16 µs of CPU on a proxied request, so a Rust router could not stay
//! within 5 % of native basic mode) and 10–80× for the interpreted ones, whose instantiation
//! restores a multi-megabyte heap. **Instances are reused.**
//!
//! What reuse gives up, and why it is acceptable: whatever a plugin keeps in its memory (statics,
//! `self`, Python globals, JavaScript closures) survives into later calls, which may carry other
//! clients' requests. A plugin could thus carry one request's data (a cookie, a token) into the
//! decision for another, for instance into a header edit or a direct response. The boundary that
//! matters holds regardless: instances belong to one plugin and are never shared between plugins,
//! one instance serves one call at a time, the host passes request heads only (no bodies, no
//! responses), and every failed instance is discarded. Within one plugin, the plugin already sees
//! every request it routes, so reuse adds no visibility, only the possibility of a stateful bug;
//! the SDK documents that requests must not leave data behind. For plugins not trusted on that
//! point, `recycle_after_calls` bounds how long an instance lives, and `Some(1)` gives every call a
//! fresh instance at the measured cost.
//!
//! # Async calls
//!
//! Calls run with `call_async` on a fiber. Measured against a synchronous `TypedFunc::call` on
//! the same warm instance, the fiber costs about 0.1 µs (Rust 2.1 µs against 2.0; Python and
//! JavaScript within noise). In return a long call yields to tokio at every epoch tick (the first
//! time within the 4 ms watch interval of its start, then every 1 ms): a hostile
//! loop burns its own deadline but does not hold a runtime thread (the tests see another plugin
//! served 4 ms into a 30 ms loop on a single-threaded runtime); WASI p2's host functions are
//! async underneath, and their synchronous wrappers call `Handle::block_on`, which panics on a
//! runtime thread; and waiting for a free instance is an async semaphore.

pub mod bindings;
mod breaker;
mod cache;
mod engine;
mod epoch;
mod error;
mod filter;
mod handle;
mod host_view;
mod instance;
mod lowering;
mod output;
mod registry;
mod samples;
mod shadow;
mod slot;
mod stats;
mod version;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

pub use bindings::wasmgate::plugin::message_types::{
    Accept, Action, CloseFrame, ClosedBy as FilterClosedBy, Direction, Message, MessageDecision,
    Opcode, OpenDecision, Outgoing, SessionClose, SessionOpen,
};
pub use bindings::wasmgate::plugin::types::{
    Decision, DirectResponse, Forward, Header, HeaderEdit, Health, LogLevel, ProbeRequest,
    ProbeResponse, Redirect, RequestHead, ServerState, Verdict,
};
pub use breaker::{BreakerConfig, BreakerState};
pub use cache::{ArtifactSource, CACHE_DIR_ENV};
pub use engine::{EngineConfig, LoadReport, PluginEngine, PluginRole, PluginSpec};
pub use error::PluginError;
pub use filter::{MAX_ACTIONS, MAX_CLOSE_REASON, check_message_decision, sendable_close_code};
pub use handle::{MAX_DIRECT_BODY, MAX_HEADERS, MAX_REASON, Plugin, check_decision};
pub use host_view::{HostView, NoPools, StaticPools};
pub use lowering::{HeaderRef, PackedHeadRef, RequestHeadRef, format_addr};
pub use registry::{
    ChangeError, ComponentSource, MAX_COMPONENT_BYTES, PluginRegistry, PrepareError,
    PreparedPlugins, VersionRequest, content_hash,
};
pub use samples::{RouterSample, describe};
pub use shadow::{Disagreement, Shadow, ShadowReport};
pub use slot::PluginSlot;
pub use stats::PluginStats;
pub use version::{PluginVersion, VersionSettings};
