//! The data plane's threads: one single-threaded tokio runtime per core, each accepting on a
//! socket of its own (SO_REUSEPORT) and serving its connections start to finish, as nginx's and
//! Envoy's workers do. A connection's reads, writes, plugin calls and backend exchanges then stay
//! on one thread: no task is handed to another core, no sleeping worker is woken to steal it.
//! The control plane (reloads, probes, the admin API, compiling plugins) stays on the runtime
//! that started the gateway.
//!
//! Each gateway starts its own workers ([`Workers::start`]) and passes them to what accepts
//! connections; they stop when the gateway is gone.
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
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::watch;

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

/// Makes this thread yield every `limit` requests in a row, as a worker does.
fn start_streaks(limit: u32) {
    STREAK.with(|s| {
        s.limit.set(limit);
        s.served.set(0);
    });
}

/// The worker is about to wait for events: its streak ends, and the access-log records it
/// wrote go to the log's writer.
fn waited() {
    STREAK.with(|s| s.served.set(0));
    crate::telemetry::flush_batch();
}

/// The index of the worker running the caller, in `0..count`; 0 off the workers. State sharded
/// per worker (idle backend connections, plugin call counts, probe waiters) is indexed by it, so
/// that each worker touches its own shard.
pub fn current() -> usize {
    INDEX.with(|i| i.get()).unwrap_or(0)
}

/// The index of the worker running the caller; `None` off the workers (the control plane's
/// threads). Metrics give those a shard of their own.
#[inline]
pub fn index() -> Option<usize> {
    INDEX.with(|i| i.get())
}

/// One worker per core.
pub fn per_core() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How the data plane's threads are started.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerOptions {
    /// Worker threads (0: one per core).
    pub count: usize,
    /// Requests a worker serves without waiting for events before it yields its core (0: never).
    pub yield_every: u32,
}

impl WorkerOptions {
    /// The number of workers these options start.
    pub fn count(&self) -> usize {
        match self.count {
            0 => per_core(),
            n => n,
        }
    }
}

/// The data plane's runtimes, one thread each. Made by [`crate::Gateway::start`] and handed to
/// what serves connections; the threads end when the last handle is dropped.
#[derive(Debug)]
pub struct Workers {
    handles: Box<[Handle]>,
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Starts the worker threads.
    pub fn start(options: WorkerOptions) -> io::Result<Arc<Self>> {
        let count = options.count();
        let (stop, _) = watch::channel(false);
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
        for (index, runtime) in runtimes.into_iter().enumerate() {
            let mut stopped = stop.subscribe();
            let yield_every = options.yield_every;
            std::thread::Builder::new()
                .name(format!("wasmgate-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(Some(index)));
                    start_streaks(yield_every);
                    crate::telemetry::batch_until_idle();
                    runtime.block_on(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    });
                    // Dropping the runtime here ends the tasks still on it.
                })?;
        }
        Ok(Arc::new(Self {
            handles: handles.into(),
            stop,
        }))
    }

    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Each worker's runtime, by index.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.send_replace(true);
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
