//! Shadow mode: a candidate version runs beside a router's active version on live traffic (all
//! of it, or a sample). Its decisions are compared with the active version's and never used;
//! the admin API shows how often the two agree and the latest disagreements, and `promote`
//! puts the candidate in service.
//!
//! The candidate is called on a task of its own after the active version has answered, so the
//! request never waits for it; at most [`MAX_IN_FLIGHT`] such calls run at once and requests
//! beyond that are not compared (counted as `dropped`), so a slow candidate cannot pile up work.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::samples::describe;
use super::version::PluginVersion;
use super::{Decision, RequestHead};

/// Candidate calls running at once, per shadowed plugin.
pub const MAX_IN_FLIGHT: usize = 64;
/// Disagreements kept for the admin API (the most recent ones).
pub const MAX_EXAMPLES: usize = 20;

/// A candidate in shadow of a router plugin, with its comparison counts.
pub struct Shadow {
    candidate: Arc<PluginVersion>,
    /// The share of requests compared, in (0, 1].
    sample: f64,
    since: SystemTime,
    counts: Counts,
    in_flight: AtomicUsize,
    examples: Mutex<VecDeque<Disagreement>>,
}

#[derive(Default)]
struct Counts {
    agreed: AtomicU64,
    disagreed: AtomicU64,
    candidate_errors: AtomicU64,
    active_errors: AtomicU64,
    dropped: AtomicU64,
}

/// One request on which the candidate decided otherwise.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disagreement {
    /// RFC 3339, UTC.
    pub at: String,
    /// `METHOD authority path?query`.
    pub request: String,
    pub active: String,
    pub candidate: String,
}

/// The comparison so far.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowReport {
    pub content_hash: String,
    pub loaded_at: String,
    pub since: String,
    pub sample: f64,
    /// Requests on which both versions answered.
    pub compared: u64,
    pub agreed: u64,
    pub disagreed: u64,
    /// Requests on which the candidate failed (trap, deadline, invalid decision, …).
    pub candidate_errors: u64,
    /// Requests on which the active version failed: nothing to compare.
    pub active_errors: u64,
    /// Requests not compared because [`MAX_IN_FLIGHT`] candidate calls were running.
    pub dropped: u64,
    /// The latest disagreements, oldest first.
    pub disagreements: Vec<Disagreement>,
}

impl Shadow {
    pub(crate) fn new(candidate: Arc<PluginVersion>, sample: f64) -> Self {
        Shadow {
            candidate,
            sample: sample.clamp(f64::MIN_POSITIVE, 1.0),
            since: SystemTime::now(),
            counts: Counts::default(),
            in_flight: AtomicUsize::new(0),
            examples: Mutex::new(VecDeque::new()),
        }
    }

    pub fn candidate(&self) -> &Arc<PluginVersion> {
        &self.candidate
    }

    /// Whether this request is one of the sample.
    pub fn wants(&self) -> bool {
        self.sample >= 1.0 || fastrand::f64() < self.sample
    }

    /// Compares the candidate's decision for `head` with the active version's (`None` when the
    /// active version failed), on a task of its own.
    pub fn observe(self: Arc<Self>, head: RequestHead, active: Option<Decision>) {
        let Some(active) = active else {
            self.counts.active_errors.fetch_add(1, Relaxed);
            return;
        };
        if self.in_flight.fetch_add(1, Relaxed) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Relaxed);
            self.counts.dropped.fetch_add(1, Relaxed);
            return;
        }
        tokio::spawn(async move {
            let result = self.candidate.plugin.route(&head).await;
            self.in_flight.fetch_sub(1, Relaxed);
            match result {
                Err(_) => {
                    self.counts.candidate_errors.fetch_add(1, Relaxed);
                }
                Ok(candidate) if candidate == active => {
                    self.counts.agreed.fetch_add(1, Relaxed);
                }
                Ok(candidate) => {
                    self.counts.disagreed.fetch_add(1, Relaxed);
                    let mut request = format!("{} {}{}", head.method, head.authority, head.path);
                    if let Some(q) = &head.query {
                        request.push('?');
                        request.push_str(q);
                    }
                    let example = Disagreement {
                        at: crate::telemetry::rfc3339(SystemTime::now()),
                        request,
                        active: describe(&active),
                        candidate: describe(&candidate),
                    };
                    let mut examples = self.examples.lock().unwrap_or_else(|e| e.into_inner());
                    if examples.len() == MAX_EXAMPLES {
                        examples.pop_front();
                    }
                    examples.push_back(example);
                }
            }
        });
    }

    /// Candidate calls still running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    pub fn report(&self) -> ShadowReport {
        let c = &self.counts;
        let agreed = c.agreed.load(Relaxed);
        let disagreed = c.disagreed.load(Relaxed);
        ShadowReport {
            content_hash: self.candidate.content_hash.clone(),
            loaded_at: crate::telemetry::rfc3339(self.candidate.loaded_at),
            since: crate::telemetry::rfc3339(self.since),
            sample: self.sample,
            compared: agreed + disagreed,
            agreed,
            disagreed,
            candidate_errors: c.candidate_errors.load(Relaxed),
            active_errors: c.active_errors.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            disagreements: self
                .examples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }
}
