//! The data plane's threads: one single-threaded tokio runtime per core, each accepting on a
//! socket of its own (SO_REUSEPORT) and serving its connections start to finish, as nginx's and
//! Envoy's workers do. A connection's reads, writes, plugin calls and backend exchanges then stay
//! on one thread: no task is handed to another core, no sleeping worker is woken to steal it.
//! The control plane (reloads, probes, the admin API, compiling plugins) stays on the runtime
//! that started the gateway.
//!
//! The workers are started with the first gateway of the process and live as long as it; every
//! gateway of the process shares them.
//!
//! On request (`wasmgate run --yield-every N`), a worker that serves N requests in a row without
//! waiting for events offers its core to other runnable threads ([`served_request`]). The kernel
//! lets a thread that does not block run up to a whole scheduler tick (4 ms at 250 Hz) before a
//! thread woken on the same core gets it; on cores shared with backends or the load, those wait
//! that long, and so do the requests that need them. `sched_yield` lets whoever waits on the core
//! run first, and returns at once if no one does. It is off by default: on the 2-core benchmark
//! machine, yielding every 8 requests cut the keep-alive p99 from about 4.5 to 1.9 ms, but
//! lengthened the new-connection tail and cost that scenario's rate, and every 16 or 32 requests
//! no longer shortened the keep-alive tail (BENCHMARKS.md, "The 2-worker keep-alive tail").

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::runtime::Handle;

/// How many workers to start; 0 until set: one per core.
static WANTED: AtomicUsize = AtomicUsize::new(0);

static WORKERS: OnceLock<Workers> = OnceLock::new();
static STARTING: Mutex<()> = Mutex::new(());

/// Requests a worker serves without waiting for events before it yields its core (0: never).
static YIELD_EVERY: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// This thread's worker index; `None` on threads that are not workers.
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
    /// Requests served since this thread last waited for events or yielded, and how many it
    /// may serve before it yields (0: never, as on threads that are not workers).
    static STREAK: Streak = const { Streak { served: Cell::new(0), limit: Cell::new(0) } };
}

struct Streak {
    served: Cell<u32>,
    limit: Cell<u32>,
}

/// Counts a request served on this thread; on a worker that has served its quota without
/// waiting for events, offers the core to other runnable threads first.
#[inline]
pub fn served_request() {
    STREAK.with(|s| {
        let served = s.served.get() + 1;
        let limit = s.limit.get();
        if limit != 0 && served >= limit {
            s.served.set(0);
            std::thread::yield_now();
        } else {
            s.served.set(served);
        }
    });
}

/// Sets how many requests a worker serves without waiting for events before it yields its core
/// (0: never), for workers started after.
pub fn set_yield_every(requests: u32) {
    YIELD_EVERY.store(requests, Ordering::Relaxed);
}

/// Makes this thread yield every `limit` requests in a row, as a worker does.
fn start_streaks(limit: u32) {
    STREAK.with(|s| {
        s.limit.set(limit);
        s.served.set(0);
    });
}

/// The worker is about to wait for events: its streak ends.
fn waited() {
    STREAK.with(|s| s.served.set(0));
}

/// The data plane's runtimes.
#[derive(Debug)]
pub struct Workers {
    handles: Box<[Handle]>,
}

/// Sets how many worker threads the data plane uses (0: one per core). Only the first gateway
/// of a process starts them, so this takes effect when called before it.
pub fn set_count(count: usize) {
    WANTED.store(count, Ordering::Relaxed);
}

/// How many workers the data plane has (or will have once started).
pub fn count() -> usize {
    match WORKERS.get() {
        Some(w) => w.handles.len(),
        None => wanted(),
    }
}

fn wanted() -> usize {
    match WANTED.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The index of the worker running the caller, in `0..count()`; 0 off the workers.
pub fn current() -> usize {
    INDEX.with(|i| i.get()).unwrap_or(0)
}

/// The data plane's workers, started on first use.
pub fn get() -> io::Result<&'static Workers> {
    if let Some(w) = WORKERS.get() {
        return Ok(w);
    }
    let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(w) = WORKERS.get() {
        return Ok(w);
    }
    let count = wanted();
    let mut handles = Vec::with_capacity(count);
    let mut runtimes = Vec::with_capacity(count);
    for _ in 0..count {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(waited)
            .build()?;
        handles.push(runtime.handle().clone());
        runtimes.push(runtime);
    }
    let yield_every = YIELD_EVERY.load(Ordering::Relaxed);
    for (index, runtime) in runtimes.into_iter().enumerate() {
        std::thread::Builder::new()
            .name(format!("wasmgate-worker-{index}"))
            .spawn(move || {
                INDEX.with(|i| i.set(Some(index)));
                start_streaks(yield_every);
                runtime.block_on(std::future::pending::<()>())
            })?;
    }
    let workers = WORKERS.get_or_init(|| Workers {
        handles: handles.into(),
    });
    Ok(workers)
}

impl Workers {
    /// Each worker's runtime, by index.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> u32 {
        STREAK.with(|s| s.served.get())
    }

    #[test]
    fn a_thread_that_is_not_a_worker_counts_but_never_yields() {
        std::thread::spawn(|| {
            for _ in 0..100 {
                served_request();
            }
            assert_eq!(served(), 100);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_worker_yields_after_its_quota_and_counts_again() {
        std::thread::spawn(|| {
            start_streaks(8);
            for _ in 0..7 {
                served_request();
            }
            assert_eq!(served(), 7);
            served_request();
            assert_eq!(served(), 0, "the eighth request in a row yielded");
            served_request();
            served_request();
            waited();
            assert_eq!(served(), 0, "waiting for events ends the streak");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_worker_runtime_ends_the_streak_when_it_parks() {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(waited)
                .build()
                .unwrap();
            start_streaks(1_000);
            runtime.block_on(async {
                served_request();
                served_request();
                assert_eq!(served(), 2);
                // Sleeping parks the thread.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                assert_eq!(served(), 0);
            });
        })
        .join()
        .unwrap();
    }
}
