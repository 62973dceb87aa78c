//! The epoch thread: what makes a long plugin call yield and its deadline fire, and the per-worker
//! counts of calls in flight that it reads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use wasmtime::Engine;

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
pub(super) struct Ticker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

/// Time without a call before the ticker parks.
const IDLE_FOR: Duration = Duration::from_millis(100);

pub(super) struct TickerShared {
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
    pub(super) fn start(engine: Engine, tick: Duration, watch: Duration, workers: usize) -> Self {
        let shared = Arc::new(TickerShared {
            stop: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            calls: (0..workers.max(1)).map(|_| CallCounts::default()).collect(),
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
    pub(super) fn busy(&self) -> Busy<'_> {
        let shared = &*self.shared;
        let slots = &shared.calls;
        let counts = &slots[crate::workers::current() % slots.len()];
        counts.started.fetch_add(1, Ordering::SeqCst);
        if shared.parked.load(Ordering::SeqCst) {
            Self::wake(shared);
        }
        Busy(counts)
    }

    /// Keeps the first yield of a call well inside `deadline`: the watch interval becomes at
    /// most a quarter of it (never less than a tick).
    pub(super) fn fit(&self, deadline: Duration, tick: Duration) {
        let quarter = (deadline / 4).max(tick).as_nanos() as u64;
        self.shared.watch.fetch_min(quarter, Ordering::Relaxed);
    }

    fn wake(shared: &TickerShared) {
        if let Some(thread) = shared.thread.get() {
            thread.unpark();
        }
    }

    /// The count of calls running past a tick, which their deadline callbacks keep.
    pub(super) fn long_calls(&self) -> &LongCalls {
        &self.shared.long
    }

    /// Whether the thread is parked for want of calls.
    #[cfg(test)]
    pub(super) fn parked(&self) -> bool {
        self.shared.parked.load(Ordering::SeqCst)
    }

    /// Times the thread woke and times it advanced the epoch.
    #[cfg(test)]
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.shared.woke.load(Ordering::Relaxed),
            self.shared.advanced.load(Ordering::Relaxed),
        )
    }

    pub(super) fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        Self::wake(&self.shared);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
