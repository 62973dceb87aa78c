//! The data plane's threads: one single-threaded tokio runtime per core, each accepting on a
//! socket of its own (SO_REUSEPORT) and serving its connections start to finish, as nginx's and
//! Envoy's workers do. A connection's reads, writes, plugin calls and backend exchanges then stay
//! on one thread: no task is handed to another core, no sleeping worker is woken to steal it.
//! The control plane (reloads, probes, the admin API, compiling plugins) stays on the runtime
//! that started the gateway.
//!
//! The workers are started with the first gateway of the process and live as long as it; every
//! gateway of the process shares them.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::runtime::Handle;

/// How many workers to start; 0 until set: one per core.
static WANTED: AtomicUsize = AtomicUsize::new(0);

static WORKERS: OnceLock<Workers> = OnceLock::new();
static STARTING: Mutex<()> = Mutex::new(());

thread_local! {
    /// This thread's worker index; `None` on threads that are not workers.
    static INDEX: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
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
            .build()?;
        handles.push(runtime.handle().clone());
        runtimes.push(runtime);
    }
    for (index, runtime) in runtimes.into_iter().enumerate() {
        std::thread::Builder::new()
            .name(format!("wasmgate-worker-{index}"))
            .spawn(move || {
                INDEX.with(|i| i.set(Some(index)));
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
