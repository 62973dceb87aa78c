//! A circuit breaker per plugin: N failures within a window open it for a cool-down; then one
//! trial call decides between closing and opening again. State lives in atomics so that the
//! hot path (`admit` + `success`) is two loads and, rarely, a store.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

/// When a plugin's circuit breaker opens: `failures` failed calls within `window` open it for
/// `cool_down`, during which the plugin is not called. After the cool-down one call is let
/// through: success closes the breaker, failure opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub failures: u32,
    pub window: Duration,
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(30),
        }
    }
}

/// What the breaker does with calls right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused for `retry_in` more; `trips` counts how often it opened since load.
    Open { retry_in: Duration, trips: u64 },
    /// The cool-down is over: the next call is a trial.
    HalfOpen,
}

/// Where a breaker reads the time: milliseconds since the breaker was made, plus one (so 0
/// means "none" in its atomics).
pub(crate) trait Clock {
    fn now_ms(&self) -> u64;
}

/// The monotonic clock.
pub(crate) struct Monotonic(Instant);

impl Clock for Monotonic {
    #[inline]
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64 + 1
    }
}

pub(crate) struct Breaker<C: Clock = Monotonic> {
    config: BreakerConfig,
    clock: C,
    /// `clock` time of the first failure of the current window.
    window_start: AtomicU64,
    failures: AtomicU32,
    /// `clock` time until which the breaker is open; 0 = closed.
    open_until: AtomicU64,
    trial_in_flight: AtomicBool,
    trips: AtomicU64,
}

/// Permission for one call. Report its outcome with [`Ticket::success`] or
/// [`Ticket::failure`]; a ticket dropped unreported (the call was cancelled) gives a trial back.
pub(crate) struct Ticket<'a, C: Clock = Monotonic> {
    breaker: &'a Breaker<C>,
    trial: bool,
}

impl<C: Clock> Ticket<'_, C> {
    pub(crate) fn success(self) {
        if self.trial {
            let b = self.breaker;
            b.failures.store(0, Relaxed);
            b.window_start.store(0, Relaxed);
            b.open_until.store(0, Release);
            b.trial_in_flight.store(false, Release);
        }
        std::mem::forget(self);
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub(crate) fn failure(self) -> bool {
        let opened = self.breaker.failure(self.trial);
        if self.trial {
            self.breaker.trial_in_flight.store(false, Release);
        }
        std::mem::forget(self);
        opened
    }
}

impl<C: Clock> Drop for Ticket<'_, C> {
    fn drop(&mut self) {
        if self.trial {
            self.breaker.trial_in_flight.store(false, Release);
        }
    }
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, Monotonic(Instant::now()))
    }
}

impl<C: Clock> Breaker<C> {
    pub(crate) fn with_clock(config: BreakerConfig, clock: C) -> Self {
        Breaker {
            config,
            clock,
            window_start: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            trial_in_flight: AtomicBool::new(false),
            trips: AtomicU64::new(0),
        }
    }

    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A ticket for one call, or how long the breaker stays open.
    pub(crate) fn admit(&self) -> Result<Ticket<'_, C>, Duration> {
        let open_until = self.open_until.load(Acquire);
        if open_until == 0 {
            return Ok(Ticket {
                breaker: self,
                trial: false,
            });
        }
        let now = self.now_ms();
        if now < open_until {
            return Err(Duration::from_millis(open_until - now));
        }
        // Cool-down over: exactly one caller gets the trial, the others keep being refused
        // until it reports.
        if self
            .trial_in_flight
            .compare_exchange(false, true, AcqRel, Acquire)
            .is_ok()
        {
            Ok(Ticket {
                breaker: self,
                trial: true,
            })
        } else {
            Err(Duration::ZERO)
        }
    }

    /// A failure outside a ticket (a decision the caller found invalid after the call).
    pub(crate) fn record_failure(&self) -> bool {
        self.failure(false)
    }

    fn failure(&self, trial: bool) -> bool {
        let now = self.now_ms();
        if trial {
            self.open(now);
            return true;
        }
        let window = self.config.window.as_millis() as u64;
        let start = self.window_start.load(Acquire);
        if start == 0 || now.saturating_sub(start) > window {
            // A new window starts with this failure. Racing failures may each reset it; the
            // count is then off by a few, which only delays opening by as much.
            self.window_start.store(now, Release);
            self.failures.store(1, Release);
        } else {
            self.failures.fetch_add(1, AcqRel);
        }
        if self.failures.load(Acquire) >= self.config.failures && self.open_until.load(Acquire) == 0
        {
            self.open(now);
            return true;
        }
        false
    }

    fn open(&self, now: u64) {
        self.open_until
            .store(now + self.config.cool_down.as_millis() as u64, Release);
        self.failures.store(0, Release);
        self.window_start.store(0, Release);
        self.trips.fetch_add(1, Relaxed);
    }

    pub(crate) fn state(&self) -> BreakerState {
        let open_until = self.open_until.load(Acquire);
        if open_until == 0 {
            return BreakerState::Closed;
        }
        let now = self.now_ms();
        if now < open_until {
            BreakerState::Open {
                retry_in: Duration::from_millis(open_until - now),
                trips: self.trips.load(Relaxed),
            }
        } else {
            BreakerState::HalfOpen
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A clock that moves only when the test says so.
    #[derive(Default)]
    struct Manual(Cell<u64>);

    impl Manual {
        fn advance(&self, d: Duration) {
            self.0.set(self.0.get() + d.as_millis() as u64);
        }
    }

    impl Clock for &Manual {
        fn now_ms(&self) -> u64 {
            self.0.get() + 1
        }
    }

    fn breaker(clock: &Manual, cool_down_ms: u64) -> Breaker<&Manual> {
        Breaker::with_clock(
            BreakerConfig {
                failures: 3,
                window: Duration::from_secs(60),
                cool_down: Duration::from_millis(cool_down_ms),
            },
            clock,
        )
    }

    #[test]
    fn opens_after_n_failures_then_half_opens_and_closes() {
        let clock = Manual::default();
        let b = breaker(&clock, 30);
        for i in 0..3 {
            assert_eq!(b.admit().unwrap().failure(), i == 2);
        }
        assert_eq!(
            b.state(),
            BreakerState::Open {
                retry_in: Duration::from_millis(30),
                trips: 1
            }
        );
        clock.advance(Duration::from_millis(29));
        assert_eq!(b.admit().err(), Some(Duration::from_millis(1)));
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let trial = b.admit().unwrap();
        assert!(b.admit().is_err(), "one trial at a time");
        trial.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit().is_ok());
    }

    #[test]
    fn failed_trial_reopens_and_a_cancelled_one_is_given_back() {
        let clock = Manual::default();
        let b = breaker(&clock, 20);
        for _ in 0..3 {
            b.admit().unwrap().failure();
        }
        clock.advance(Duration::from_millis(20));
        drop(b.admit().unwrap());
        let trial = b.admit().expect("the dropped trial was given back");
        assert!(trial.failure());
        assert_eq!(
            b.state(),
            BreakerState::Open {
                retry_in: Duration::from_millis(20),
                trips: 2
            }
        );
    }

    #[test]
    fn a_window_starts_at_its_first_failure() {
        let clock = Manual::default();
        let b = Breaker::with_clock(
            BreakerConfig {
                failures: 2,
                window: Duration::from_millis(20),
                cool_down: Duration::from_secs(1),
            },
            &clock,
        );
        assert!(!b.record_failure());
        clock.advance(Duration::from_millis(20));
        assert!(b.record_failure(), "a window includes its last millisecond");
        let b = Breaker::with_clock(*b.config(), &clock);
        assert!(!b.record_failure());
        clock.advance(Duration::from_millis(21));
        assert!(!b.record_failure(), "the first failure's window has passed");
        assert!(b.record_failure());
    }
}
