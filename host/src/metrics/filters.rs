//! A message filter's counters: messages in and out, dropped and replaced, sessions the filter
//! closed, and the time of its calls. One [`FilterMetrics`] per filter name, kept by its plugin
//! slot (so the counts go on across versions of the filter); every worker counts in a shard of
//! its own, and a scrape adds them up.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::{HistogramCells, HistogramValue, add, shard};

#[derive(Default)]
struct FilterShard {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    dropped: AtomicU64,
    replaced: AtomicU64,
    answered: AtomicU64,
    sessions_closed: AtomicU64,
    sessions_refused: AtomicU64,
    failures: AtomicU64,
    call_time: HistogramCells,
}

/// One message filter's counters.
pub struct FilterMetrics {
    shards: Box<[FilterShard]>,
}

/// A filter's counters at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterCounts {
    /// Messages given to the filter.
    pub messages_in: u64,
    /// Messages the gateway sent because of the filter's decisions (forwards, replacements,
    /// answers, messages to the other side).
    pub messages_out: u64,
    /// Messages neither forwarded nor replaced.
    pub dropped: u64,
    /// Messages replaced by others the filter sent in their place.
    pub replaced: u64,
    /// Messages the filter answered to their sender.
    pub answered: u64,
    /// Sessions the filter closed (its `close` action).
    pub sessions_closed: u64,
    /// Handshakes the filter refused.
    pub sessions_refused: u64,
    /// Calls that failed (and went to the fail policy).
    pub failures: u64,
    pub call_time: HistogramValue,
}

/// What one message decision amounted to, for the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageOutcome {
    pub sent: u64,
    pub answered: u64,
    pub forwarded: bool,
    /// Something went to the message's destination in its place.
    pub replaced: bool,
    pub closed: bool,
}

impl FilterMetrics {
    /// Counters for `workers` worker threads (shard 0 for every other thread).
    pub fn new(workers: usize) -> Self {
        FilterMetrics {
            shards: (0..=workers).map(|_| FilterShard::default()).collect(),
        }
    }

    /// One `on-message` call that answered, and how long it took.
    #[inline]
    pub fn message(&self, outcome: MessageOutcome, took: Duration) {
        let s = shard(&self.shards);
        add(&s.messages_in, 1);
        add(&s.messages_out, outcome.sent + outcome.answered);
        add(&s.answered, outcome.answered);
        if !outcome.forwarded {
            if outcome.replaced {
                add(&s.replaced, 1);
            } else {
                add(&s.dropped, 1);
            }
        }
        if outcome.closed {
            add(&s.sessions_closed, 1);
        }
        s.call_time.record(took);
    }

    /// A call that failed.
    #[inline]
    pub fn failure(&self) {
        add(&shard(&self.shards).failures, 1);
    }

    /// `on-open` refused a handshake.
    pub fn refused(&self) {
        add(&shard(&self.shards).sessions_refused, 1);
    }

    /// The counters, added up over the shards.
    pub fn counts(&self) -> FilterCounts {
        let mut c = FilterCounts::default();
        for s in &self.shards {
            c.messages_in += s.messages_in.load(Relaxed);
            c.messages_out += s.messages_out.load(Relaxed);
            c.dropped += s.dropped.load(Relaxed);
            c.replaced += s.replaced.load(Relaxed);
            c.answered += s.answered.load(Relaxed);
            c.sessions_closed += s.sessions_closed.load(Relaxed);
            c.sessions_refused += s.sessions_refused.load(Relaxed);
            c.failures += s.failures.load(Relaxed);
            s.call_time.add_into(&mut c.call_time);
        }
        c
    }
}

impl std::fmt::Debug for FilterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FilterMetrics")
            .field(&self.counts())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_add_up_over_shards() {
        let m = FilterMetrics::new(2);
        let forwarded = MessageOutcome {
            sent: 1,
            forwarded: true,
            ..Default::default()
        };
        let replaced = MessageOutcome {
            sent: 1,
            replaced: true,
            ..Default::default()
        };
        let dropped_and_answered = MessageOutcome {
            answered: 1,
            ..Default::default()
        };
        m.message(forwarded, Duration::from_micros(10));
        m.message(replaced, Duration::from_micros(10));
        m.message(dropped_and_answered, Duration::from_micros(10));
        m.refused();
        let c = m.counts();
        assert_eq!(
            (
                c.messages_in,
                c.messages_out,
                c.dropped,
                c.replaced,
                c.answered
            ),
            (3, 3, 1, 1, 1)
        );
        assert_eq!(c.sessions_refused, 1);
        assert_eq!(c.call_time.count(), 3);
    }
}
