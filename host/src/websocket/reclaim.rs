//! Gives memory back to the system once a burst of WebSocket sessions opening or closing is over.
//!
//! Opening a session passes through several KiB of short-lived buffers (hyper's, on the client
//! and the backend connection) that are freed once the session relays, between the few hundred
//! bytes each session keeps; closing sessions frees their state. glibc's malloc returns only
//! the top of each arena to the system, so after thousands of sessions open or close at once the
//! free space between the sessions that remain stays resident: several MiB that no longer hold
//! anything. Once no session has opened or closed for [`QUIET`], `malloc_trim` hands the whole
//! free pages back. Steady traffic never triggers it (memory freed there is reused at once), and
//! relaying data never touches it: only a session's start and end count.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long session churn must stop before freed memory is returned.
const QUIET: Duration = Duration::from_millis(500);

/// Sessions opened or closed in a burst below which it is not worth a trim (a few dozen
/// handshakes already leave MiB of free space behind).
const MIN_EVENTS: u64 = 64;

/// The process's sessions: `malloc_trim` works on the whole process's heap, so every gateway
/// in it counts towards the same bursts.
static PROCESS: Churn = Churn::new();

/// Counts a session opened or closed. Must be called inside the tokio runtime.
pub fn session_event() {
    PROCESS.session_event();
}

/// Session churn and the task watching for its end.
struct Churn {
    /// Sessions opened or closed so far.
    events: AtomicU64,
    /// Whether a task is waiting for the current burst to end.
    watching: AtomicBool,
    /// Trims done, for the tests.
    #[cfg(test)]
    trims: AtomicU64,
}

impl Churn {
    const fn new() -> Self {
        Churn {
            events: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            #[cfg(test)]
            trims: AtomicU64::new(0),
        }
    }

    fn session_event(&'static self) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if !self.watching.load(Ordering::Relaxed) && !self.watching.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.watch_burst());
        }
    }

    /// Waits for the burst to end, then trims if it was large enough.
    async fn watch_burst(&'static self) {
        let mut start = self.events.load(Ordering::Relaxed).saturating_sub(1);
        loop {
            let mut end = start;
            loop {
                tokio::time::sleep(QUIET).await;
                let now = self.events.load(Ordering::Relaxed);
                if now == end {
                    break;
                }
                end = now;
            }
            self.watching.store(false, Ordering::Release);
            if end - start >= MIN_EVENTS {
                // Walking the arenas takes milliseconds with tens of MiB of heap: off the
                // runtime's threads.
                let _ = tokio::task::spawn_blocking(move || {
                    trim();
                    #[cfg(test)]
                    self.trims.fetch_add(1, Ordering::Relaxed);
                })
                .await;
            }
            // A session that opened or closed just before `watching` was cleared found this
            // task still watching: go on, so that it counts in a burst.
            if self.events.load(Ordering::Relaxed) == end
                || self.watching.swap(true, Ordering::AcqRel)
            {
                return;
            }
            start = end;
        }
    }
}

fn trim() {
    let started = std::time::Instant::now();
    release_free_pages();
    tracing::debug!(took = ?started.elapsed(), "freed memory returned to the system");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_pages() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers and locks each arena while it walks it; any thread
    // may call it at any time.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_pages() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// On tokio's paused clock: the quiet periods pass exactly as written, and the trim, which
    /// runs on a blocking thread, holds the clock until it is done.
    #[tokio::test(start_paused = true)]
    async fn trims_once_after_a_burst_ends() {
        // Its own counts: the process's are shared with every other test running.
        static CHURN: Churn = Churn::new();
        let trims = || CHURN.trims.load(Ordering::Relaxed);
        // A trickle: too little to trim for.
        for _ in 0..10 {
            CHURN.session_event();
        }
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(trims(), 0);

        // A burst spread over more than the quiet time: one trim, after it ends.
        for i in 0..MIN_EVENTS * 4 {
            CHURN.session_event();
            if i % MIN_EVENTS == 0 {
                tokio::time::sleep(QUIET / 5).await;
            }
        }
        assert_eq!(trims(), 0, "trimmed during the burst");
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(trims(), 1);
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(
            trims(),
            1,
            "trimmed again without sessions opening or closing"
        );
    }
}
