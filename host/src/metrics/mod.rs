//! The gateway's counters, gauges and histograms, as `/metrics` reports them.
//!
//! Counting costs no shared cache line per request: every worker thread has a shard of its own
//! ([`shard`]), the control plane's threads share one more, and a scrape adds the shards up.
//! Counters whose labels are configuration names (listener, rule, backend pool and settings)
//! live in a [`RequestMetrics`] built with each snapshot: the names are resolved to indexes when
//! the snapshot is built, so the request path adds to a cell by index, with no hashing and no
//! label strings. When a snapshot's store is no longer used its totals are folded into the
//! registry by label values, so counters never go back across reloads.
//!
//! The labels are names from the configuration only, never a request's host, path or client.
//! Their number is bounded by the configuration: with R rules, L listeners and T (pool,
//! settings) pairs in use, a thread holds (R + L + 1) × (T + 1) × 5 request cells.

pub mod filters;
pub mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::workers;

/// The shard the caller counts in: worker `i` has shard `i + 1`; shard 0 is shared by the
/// threads that are not workers.
#[inline]
fn shard<T>(shards: &[T]) -> &T {
    let i = workers::index().map_or(0, |i| i + 1);
    shards.get(i).unwrap_or(&shards[0])
}

#[inline]
fn add(cell: &AtomicU64, n: u64) {
    cell.fetch_add(n, Relaxed);
}

fn cells(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Histogram bucket bounds, in microseconds (the exposition writes seconds): 0.5 ms to 60 s.
pub const BOUNDS_US: [u64; 16] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];
/// The bounds' buckets and the last one, `+Inf`.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// One shard's histogram: a count per bucket (not cumulative) and the sum.
pub struct HistogramCells {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl Default for HistogramCells {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl HistogramCells {
    #[inline]
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US.partition_point(|&b| b < us);
        add(&self.counts[bucket], 1);
        add(&self.sum_us, us);
    }

    fn add_into(&self, value: &mut HistogramValue) {
        for (v, c) in value.counts.iter_mut().zip(&self.counts) {
            *v += c.load(Relaxed);
        }
        value.sum_us += self.sum_us.load(Relaxed);
    }
}

/// A histogram's values at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramValue {
    /// Per bucket, not cumulative.
    pub counts: [u64; BUCKETS],
    pub sum_us: u64,
}

impl HistogramValue {
    /// Adds one sample (for histograms kept under a lock, off the request path).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[BOUNDS_US.partition_point(|&b| b < us)] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn merge(&mut self, other: &HistogramValue) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// A value from per-bucket counts whose upper bounds (µs) are given: each goes to the
    /// first bucket of ours that holds its bound.
    pub fn from_buckets(counts: impl Iterator<Item = (u64, u64)>, sum_us: u64) -> Self {
        let mut value = HistogramValue {
            sum_us,
            ..Default::default()
        };
        for (upper_us, n) in counts {
            value.counts[BOUNDS_US.partition_point(|&b| b < upper_us)] += n;
        }
        value
    }
}

/// Label values → value, per family: what a scrape reads and what a retired store leaves.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub counters: BTreeMap<&'static str, BTreeMap<Vec<Box<str>>, u64>>,
    pub histograms: BTreeMap<&'static str, BTreeMap<Vec<Box<str>>, HistogramValue>>,
}

impl Collected {
    pub fn add(&mut self, family: &'static str, labels: Vec<Box<str>>, n: u64) {
        *self
            .counters
            .entry(family)
            .or_default()
            .entry(labels)
            .or_default() += n;
    }

    pub fn add_histogram(
        &mut self,
        family: &'static str,
        labels: Vec<Box<str>>,
        value: &HistogramValue,
    ) {
        self.histograms
            .entry(family)
            .or_default()
            .entry(labels)
            .or_default()
            .merge(value);
    }

    fn merge(&mut self, other: &Collected) {
        for (family, samples) in &other.counters {
            for (labels, n) in samples {
                self.add(family, labels.clone(), *n);
            }
        }
        for (family, samples) in &other.histograms {
            for (labels, v) in samples {
                self.add_histogram(family, labels.clone(), v);
            }
        }
    }

    pub fn counter(&self, family: &str) -> impl Iterator<Item = (&[Box<str>], u64)> {
        self.counters
            .get(family)
            .into_iter()
            .flatten()
            .map(|(l, n)| (l.as_slice(), *n))
    }

    pub fn histogram(&self, family: &str) -> impl Iterator<Item = (&[Box<str>], &HistogramValue)> {
        self.histograms
            .get(family)
            .into_iter()
            .flatten()
            .map(|(l, v)| (l.as_slice(), v))
    }
}

/// Why a request failed, as `wasmgate_failed_requests_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// No listener serves the request's host (or its socket's listeners were removed).
    NoListener,
    /// The pool has no server in rotation (or none at all).
    NoHealthyServer,
    /// No server answered within the backend settings' request timeout.
    BackendTimeout,
    /// Unreachable, a TLS failure, an invalid response, a server removed while it answered.
    BackendError,
    /// A router plugin failed under `fail_closed`.
    PluginFailure,
    /// The client went away before its response was complete.
    ClientGone,
    /// The request was refused: malformed, too large, a WebSocket version not spoken, or sent
    /// over a connection made for another listener's client authentication (421).
    BadRequest,
    /// The configuration's rewrites sent the request through the path map without end.
    RewriteLoop,
}

impl FailureReason {
    const ALL: [FailureReason; 8] = [
        FailureReason::NoListener,
        FailureReason::NoHealthyServer,
        FailureReason::BackendTimeout,
        FailureReason::BackendError,
        FailureReason::PluginFailure,
        FailureReason::ClientGone,
        FailureReason::BadRequest,
        FailureReason::RewriteLoop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::NoListener => "no_listener",
            FailureReason::NoHealthyServer => "no_healthy_server",
            FailureReason::BackendTimeout => "backend_timeout",
            FailureReason::BackendError => "backend_error",
            FailureReason::PluginFailure => "plugin_failure",
            FailureReason::ClientGone => "client_gone",
            FailureReason::BadRequest => "bad_request",
            FailureReason::RewriteLoop => "rewrite_loop",
        }
    }
}

const STATUS_CLASSES: usize = 5;
const STATUS_CLASS: [&str; STATUS_CLASSES] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Who ended a WebSocket session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    Client,
    Backend,
    /// The gateway: request timeout, shutdown, a server drained, or an I/O error.
    Gateway,
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::Client => "client",
            ClosedBy::Backend => "backend",
            ClosedBy::Gateway => "gateway",
        }
    }
}

/// Close codes counted one by one (RFC 6455 §7.4.1 and the IANA registry: 1000–1015); the
/// others are "application" (3000–4999), "other", or "none" (no code).
const CLOSE_CODES: usize = 19;

fn close_code_slot(code: Option<u16>) -> usize {
    match code {
        None => 0,
        Some(c @ 1000..=1015) => 1 + usize::from(c - 1000),
        Some(3000..=4999) => 17,
        Some(_) => 18,
    }
}

fn close_code_label(slot: usize) -> Box<str> {
    match slot {
        0 => "none".into(),
        17 => "application".into(),
        18 => "other".into(),
        s => (1000 + s - 1).to_string().into(),
    }
}

const CLOSERS: [ClosedBy; 3] = [ClosedBy::Client, ClosedBy::Backend, ClosedBy::Gateway];

/// What a finished request adds to the counters, by the indexes of its snapshot's
/// [`RequestMetrics`].
#[derive(Debug, Clone, Copy)]
pub struct RequestSample {
    pub slots: RouteSlots,
    pub status: u16,
    pub failure: Option<FailureReason>,
    /// The gateway's total time; `None` when the histograms are off (`[telemetry]`).
    pub total: Option<Duration>,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub connect: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub last_byte: Option<Duration>,
}

/// Where a request's counts go in its snapshot's store: which (listener, rule) row, which
/// (backend pool, settings) column.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteSlots {
    row: u32,
    col: u32,
    listener: u32,
}

/// A finished WebSocket session.
#[derive(Debug, Clone, Copy)]
pub struct SessionSample {
    pub closed_by: ClosedBy,
    pub close_code: Option<u16>,
    pub messages_from_client: u64,
    pub messages_from_backend: u64,
    pub bytes_from_client: u64,
    pub bytes_from_backend: u64,
}

/// The configuration names a snapshot's counters are labelled with.
#[derive(Debug)]
struct Layout {
    rules: usize,
    /// (listener, rule) of each row: the rules, then each listener without a rule, then none.
    rows: Box<[(Box<str>, Box<str>)]>,
    /// The listener slot of each row (`listeners.len()` for none).
    row_listener: Box<[u32]>,
    /// Listener names, then "" for none.
    listeners: Box<[Box<str>]>,
    /// (backend pool, backend settings) of each column, then ("", "") for none.
    cols: Box<[(Box<str>, Box<str>)]>,
}

/// One worker's cells of a snapshot's request counters.
struct RequestShard {
    /// rows × cols × status classes.
    requests: Box<[AtomicU64]>,
    /// listeners × failure reasons.
    failed: Box<[AtomicU64]>,
    /// Per listener.
    total_time: Box<[HistogramCells]>,
    received: Box<[AtomicU64]>,
    sent: Box<[AtomicU64]>,
    /// Per column.
    connect_time: Box<[HistogramCells]>,
    first_byte_time: Box<[HistogramCells]>,
    last_byte_time: Box<[HistogramCells]>,
    ws_opened: Box<[AtomicU64]>,
    /// cols × closers × close codes.
    ws_closed: Box<[AtomicU64]>,
    /// cols × 2 (from the client, from the backend).
    ws_messages: Box<[AtomicU64]>,
    ws_bytes: Box<[AtomicU64]>,
}

impl RequestShard {
    fn new(layout: &Layout) -> Self {
        let (rows, cols, listeners) =
            (layout.rows.len(), layout.cols.len(), layout.listeners.len());
        let hist = |n: usize| (0..n).map(|_| HistogramCells::default()).collect();
        Self {
            requests: cells(rows * cols * STATUS_CLASSES),
            failed: cells(listeners * FailureReason::ALL.len()),
            total_time: hist(listeners),
            received: cells(listeners),
            sent: cells(listeners),
            connect_time: hist(cols),
            first_byte_time: hist(cols),
            last_byte_time: hist(cols),
            ws_opened: cells(cols),
            ws_closed: cells(cols * CLOSERS.len() * CLOSE_CODES),
            ws_messages: cells(cols * 2),
            ws_bytes: cells(cols * 2),
        }
    }
}

/// The request counters of one snapshot, labelled by its configuration's names. Held by the
/// snapshot and by the WebSocket sessions it started; when the last holder drops it, its totals
/// move into the registry it was [adopted](Metrics::adopt) by.
pub struct RequestMetrics {
    store: Arc<RequestStore>,
    registry: OnceLock<Weak<Metrics>>,
}

struct RequestStore {
    layout: Layout,
    shards: Box<[RequestShard]>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("layout", &self.store.layout)
            .finish_non_exhaustive()
    }
}

impl RequestMetrics {
    /// Counters for `config`'s listeners and rules and the (pool, settings) pairs `targets`
    /// lists (a forward target's column is its index there), with a shard per worker.
    pub fn new(config: &Config, targets: &[(usize, usize)], workers: usize) -> Self {
        let listeners: Box<[Box<str>]> = config
            .listeners
            .iter()
            .map(|l| l.name.as_str().into())
            .chain(std::iter::once("".into()))
            .collect();
        let none = config.listeners.len() as u32;
        let mut rows = Vec::new();
        let mut row_listener = Vec::new();
        for rule in &config.rules {
            rows.push((
                listeners[rule.listener.0].clone(),
                rule.name.as_str().into(),
            ));
            row_listener.push(rule.listener.0 as u32);
        }
        for (i, l) in config.listeners.iter().enumerate() {
            rows.push((l.name.as_str().into(), "".into()));
            row_listener.push(i as u32);
        }
        rows.push(("".into(), "".into()));
        row_listener.push(none);
        let cols = targets
            .iter()
            .map(|&(p, s)| {
                (
                    config.backend_pools[p].name.as_str().into(),
                    config.backend_settings[s].name.as_str().into(),
                )
            })
            .chain(std::iter::once(("".into(), "".into())))
            .collect();
        let layout = Layout {
            rules: config.rules.len(),
            rows: rows.into(),
            row_listener: row_listener.into(),
            listeners,
            cols,
        };
        let shards = (0..=workers).map(|_| RequestShard::new(&layout)).collect();
        Self {
            store: Arc::new(RequestStore { layout, shards }),
            registry: OnceLock::new(),
        }
    }

    /// The slots of a request: its rule (or, without one, its listener) and its target column.
    #[inline]
    pub fn slots(
        &self,
        listener: Option<usize>,
        rule: Option<usize>,
        col: Option<usize>,
    ) -> RouteSlots {
        let layout = &self.store.layout;
        let row = match (rule, listener) {
            (Some(r), _) => r,
            (None, Some(l)) => layout.rules + l,
            (None, None) => layout.rows.len() - 1,
        };
        let col = col.unwrap_or(layout.cols.len() - 1);
        RouteSlots {
            row: row as u32,
            col: col as u32,
            listener: layout.row_listener[row],
        }
    }

    /// Counts a finished request.
    #[inline]
    pub fn record(&self, r: &RequestSample) {
        let store = &*self.store;
        let s = shard(&store.shards);
        let cols = store.layout.cols.len();
        let (row, col, listener) = (
            r.slots.row as usize,
            r.slots.col as usize,
            r.slots.listener as usize,
        );
        let class = usize::from((r.status / 100).clamp(1, 5) - 1);
        add(&s.requests[(row * cols + col) * STATUS_CLASSES + class], 1);
        if let Some(reason) = r.failure {
            add(
                &s.failed[listener * FailureReason::ALL.len() + reason as usize],
                1,
            );
        }
        if let Some(d) = r.total {
            s.total_time[listener].record(d);
        }
        add(&s.received[listener], r.received_bytes);
        add(&s.sent[listener], r.sent_bytes);
        if let Some(d) = r.connect {
            s.connect_time[col].record(d);
        }
        if let Some(d) = r.first_byte {
            s.first_byte_time[col].record(d);
        }
        if let Some(d) = r.last_byte {
            s.last_byte_time[col].record(d);
        }
    }

    /// A WebSocket session opened on `slots`' target.
    pub fn session_opened(&self, slots: RouteSlots) {
        add(&shard(&self.store.shards).ws_opened[slots.col as usize], 1);
    }

    /// A WebSocket session ended.
    pub fn session_closed(&self, slots: RouteSlots, s: &SessionSample) {
        let shard = shard(&self.store.shards);
        let col = slots.col as usize;
        let closer = CLOSERS.iter().position(|c| *c == s.closed_by).unwrap_or(2);
        add(
            &shard.ws_closed
                [(col * CLOSERS.len() + closer) * CLOSE_CODES + close_code_slot(s.close_code)],
            1,
        );
        add(&shard.ws_messages[col * 2], s.messages_from_client);
        add(&shard.ws_messages[col * 2 + 1], s.messages_from_backend);
        add(&shard.ws_bytes[col * 2], s.bytes_from_client);
        add(&shard.ws_bytes[col * 2 + 1], s.bytes_from_backend);
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.get().and_then(Weak::upgrade) {
            registry.retire(&self.store);
        }
    }
}

impl RequestStore {
    fn collect(&self, out: &mut Collected) {
        let l = &self.layout;
        let cols = l.cols.len();
        let sum = |f: &dyn Fn(&RequestShard) -> &AtomicU64| -> u64 {
            self.shards.iter().map(|s| f(s).load(Relaxed)).sum()
        };
        let hist = |f: &dyn Fn(&RequestShard) -> &HistogramCells| -> HistogramValue {
            let mut v = HistogramValue::default();
            for s in self.shards.iter() {
                f(s).add_into(&mut v);
            }
            v
        };
        for (row, (listener, rule)) in l.rows.iter().enumerate() {
            for (col, (pool, settings)) in l.cols.iter().enumerate() {
                for (class, name) in STATUS_CLASS.iter().enumerate() {
                    let i = (row * cols + col) * STATUS_CLASSES + class;
                    let n = sum(&|s| &s.requests[i]);
                    if n > 0 {
                        out.add(
                            "requests",
                            vec![
                                listener.clone(),
                                rule.clone(),
                                pool.clone(),
                                settings.clone(),
                                (*name).into(),
                            ],
                            n,
                        );
                    }
                }
            }
        }
        for (li, listener) in l.listeners.iter().enumerate() {
            for reason in FailureReason::ALL {
                let i = li * FailureReason::ALL.len() + reason as usize;
                let n = sum(&|s| &s.failed[i]);
                if n > 0 {
                    out.add(
                        "failed_requests",
                        vec![listener.clone(), reason.as_str().into()],
                        n,
                    );
                }
            }
            let v = hist(&|s| &s.total_time[li]);
            if v.count() > 0 {
                out.add_histogram("total_time", vec![listener.clone()], &v);
            }
            let received = sum(&|s| &s.received[li]);
            let sent = sum(&|s| &s.sent[li]);
            if received > 0 || sent > 0 {
                out.add("received_bytes", vec![listener.clone()], received);
                out.add("sent_bytes", vec![listener.clone()], sent);
            }
        }
        for (col, (pool, settings)) in l.cols.iter().enumerate() {
            let labels = || vec![pool.clone(), settings.clone()];
            for (family, v) in [
                ("connect_time", hist(&|s| &s.connect_time[col])),
                ("first_byte_time", hist(&|s| &s.first_byte_time[col])),
                ("last_byte_time", hist(&|s| &s.last_byte_time[col])),
            ] {
                if v.count() > 0 {
                    out.add_histogram(family, labels(), &v);
                }
            }
            let opened = sum(&|s| &s.ws_opened[col]);
            if opened == 0 {
                continue;
            }
            let mut closed = 0;
            for (ci, closer) in CLOSERS.iter().enumerate() {
                for code in 0..CLOSE_CODES {
                    let i = (col * CLOSERS.len() + ci) * CLOSE_CODES + code;
                    let n = sum(&|s| &s.ws_closed[i]);
                    if n > 0 {
                        closed += n;
                        out.add(
                            "ws_closed",
                            vec![pool.clone(), close_code_label(code), closer.as_str().into()],
                            n,
                        );
                    }
                }
            }
            out.add("ws_opened", vec![pool.clone()], opened);
            out.add("ws_open", vec![pool.clone()], opened - closed.min(opened));
            for (d, direction) in ["from_client", "from_backend"].into_iter().enumerate() {
                let labels = vec![pool.clone(), direction.into()];
                out.add(
                    "ws_messages",
                    labels.clone(),
                    sum(&|s| &s.ws_messages[col * 2 + d]),
                );
                out.add("ws_bytes", labels, sum(&|s| &s.ws_bytes[col * 2 + d]));
            }
        }
    }
}

/// TLS versions counted apart; anything else is "other".
const TLS_VERSIONS: [&str; 3] = ["TLSv1.2", "TLSv1.3", "other"];

/// One thread's share of the gateway-wide counters. Aligned so that two workers' shards never
/// share a cache line.
#[repr(align(128))]
#[derive(Default)]
struct GatewayShard {
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    tls_handshakes: [AtomicU64; TLS_VERSIONS.len()],
    tls_failures: AtomicU64,
}

/// The gateway's metrics registry: gateway-wide counters, the control plane's facts, and the
/// request counters of every snapshot still in use.
pub struct Metrics {
    gateway: Box<[GatewayShard]>,
    requests: Mutex<Requests>,
    reloads_succeeded: AtomicU64,
    reloads_failed: AtomicU64,
    running: Mutex<RunningConfig>,
}

#[derive(Default)]
struct Requests {
    live: Vec<Arc<RequestStore>>,
    retired: Collected,
}

/// The configuration in service: its hash and when it was applied.
#[derive(Debug, Clone)]
pub struct RunningConfig {
    pub hash: Option<Box<str>>,
    pub loaded_at: SystemTime,
}

impl Metrics {
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Self {
            gateway: (0..=workers).map(|_| GatewayShard::default()).collect(),
            requests: Mutex::new(Requests::default()),
            reloads_succeeded: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            running: Mutex::new(RunningConfig {
                hash: None,
                loaded_at: SystemTime::now(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports `metrics` (a new snapshot's) from now on, and their totals once they retire.
    pub fn adopt(self: &Arc<Self>, metrics: &RequestMetrics) {
        if metrics.registry.set(Arc::downgrade(self)).is_ok() {
            self.lock().live.push(metrics.store.clone());
        }
    }

    fn retire(&self, store: &Arc<RequestStore>) {
        let mut requests = self.lock();
        let Requests { live, retired } = &mut *requests;
        if let Some(i) = live.iter().position(|s| Arc::ptr_eq(s, store)) {
            live.swap_remove(i);
            store.collect(retired);
        }
    }

    /// The request counters of every snapshot, live and retired, added up by label values.
    pub fn collect_requests(&self) -> Collected {
        let requests = self.lock();
        let mut out = Collected::default();
        out.merge(&requests.retired);
        for store in &requests.live {
            store.collect(&mut out);
        }
        out
    }

    /// A client connection was accepted.
    #[inline]
    pub fn connection_opened(&self) {
        add(&shard(&self.gateway).connections_opened, 1);
    }

    #[inline]
    pub fn connection_closed(&self) {
        add(&shard(&self.gateway).connections_closed, 1);
    }

    /// A client's TLS handshake completed with `version`.
    pub fn tls_handshake(&self, version: Option<rustls::ProtocolVersion>) {
        let slot = match version {
            Some(rustls::ProtocolVersion::TLSv1_2) => 0,
            Some(rustls::ProtocolVersion::TLSv1_3) => 1,
            _ => 2,
        };
        add(&shard(&self.gateway).tls_handshakes[slot], 1);
    }

    pub fn tls_handshake_failed(&self) {
        add(&shard(&self.gateway).tls_failures, 1);
    }

    /// Connections accepted and connections closed, over all threads.
    pub fn connections(&self) -> (u64, u64) {
        let opened = self
            .gateway
            .iter()
            .map(|s| s.connections_opened.load(Relaxed))
            .sum();
        let closed = self
            .gateway
            .iter()
            .map(|s| s.connections_closed.load(Relaxed))
            .sum();
        (opened, closed)
    }

    /// Completed handshakes by TLS version, and failed handshakes.
    pub fn tls(&self) -> (Vec<(&'static str, u64)>, u64) {
        let by_version = TLS_VERSIONS
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    *v,
                    self.gateway
                        .iter()
                        .map(|s| s.tls_handshakes[i].load(Relaxed))
                        .sum(),
                )
            })
            .collect();
        let failed = self
            .gateway
            .iter()
            .map(|s| s.tls_failures.load(Relaxed))
            .sum();
        (by_version, failed)
    }

    /// A configuration was applied (`hash` of its text, when read from text).
    pub fn config_applied(&self, hash: Option<Box<str>>, reload: bool) {
        if reload {
            self.reloads_succeeded.fetch_add(1, Relaxed);
        }
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = RunningConfig {
            hash,
            loaded_at: SystemTime::now(),
        };
    }

    /// A reload was refused; the running configuration keeps serving.
    pub fn reload_failed(&self) {
        self.reloads_failed.fetch_add(1, Relaxed);
    }

    /// Reloads applied and refused.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_succeeded.load(Relaxed),
            self.reloads_failed.load(Relaxed),
        )
    }

    pub fn running_config(&self) -> RunningConfig {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            r#"
            [[listeners]]
            name = "web"
            port = 0
            [[backend_pools]]
            name = "app"
            addresses = ["127.0.0.1"]
            [[backend_settings]]
            name = "http"
            port = 80
            [[rules]]
            name = "all"
            listener = "web"
            backend_pool = "app"
            backend_settings = "http"
            "#,
        )
        .unwrap()
    }

    fn sample(slots: RouteSlots, status: u16) -> RequestSample {
        RequestSample {
            slots,
            status,
            failure: None,
            total: Some(Duration::from_millis(3)),
            received_bytes: 10,
            sent_bytes: 20,
            connect: None,
            first_byte: Some(Duration::from_millis(2)),
            last_byte: Some(Duration::from_millis(3)),
        }
    }

    #[test]
    fn a_retired_snapshot_keeps_its_counts() {
        let registry = Metrics::new(2);
        let config = config();
        let first = RequestMetrics::new(&config, &[(0, 0)], 2);
        registry.adopt(&first);
        let slots = first.slots(Some(0), Some(0), Some(0));
        first.record(&sample(slots, 200));
        first.record(&sample(slots, 503));
        let second = RequestMetrics::new(&config, &[(0, 0)], 2);
        registry.adopt(&second);
        second.record(&sample(slots, 200));
        drop(first);
        let c = registry.collect_requests();
        let requests: Vec<_> = c.counter("requests").collect();
        let label = |class: &str| -> Vec<Box<str>> {
            ["web", "all", "app", "http", class].map(Box::from).to_vec()
        };
        assert_eq!(
            requests,
            vec![(&label("2xx")[..], 2), (&label("5xx")[..], 1)]
        );
        let first_byte: Vec<_> = c.histogram("first_byte_time").collect();
        assert_eq!(first_byte[0].1.count(), 3);
        assert_eq!(first_byte[0].1.counts[2], 3, "2 ms is in the 2.5 ms bucket");
    }

    #[test]
    fn requests_without_a_rule_or_target_have_empty_labels() {
        let config = config();
        let m = RequestMetrics::new(&config, &[(0, 0)], 1);
        let registry = Metrics::new(1);
        registry.adopt(&m);
        m.record(&sample(m.slots(None, None, None), 404));
        m.record(&sample(m.slots(Some(0), None, None), 301));
        let c = registry.collect_requests();
        let labels: Vec<Vec<&str>> = c
            .counter("requests")
            .map(|(l, _)| l.iter().map(|s| &**s).collect())
            .collect();
        assert_eq!(
            labels,
            vec![vec!["", "", "", "", "4xx"], vec!["web", "", "", "", "3xx"]]
        );
    }

    #[test]
    fn close_codes_are_a_bounded_set() {
        let labels: std::collections::BTreeSet<_> = (0..=u16::MAX)
            .map(|c| close_code_label(close_code_slot(Some(c))))
            .collect();
        assert_eq!(labels.len(), CLOSE_CODES - 1);
        assert_eq!(&*close_code_label(close_code_slot(Some(1001))), "1001");
        assert_eq!(&*close_code_label(close_code_slot(None)), "none");
    }
}
