//! The evaluation seam: given a probe's response, healthy or not, and why.
//!
//! Transport failures (no connection, no answer in time) are decided before this point; an
//! evaluator sees only complete responses. [`NativeEvaluator`] implements Application Gateway's
//! `match` rules; plugins add evaluators behind the same trait.

use std::fmt;

use http::{HeaderMap, StatusCode};

use crate::config::{Probe, StatusRange};

/// A probe's answer, as far as it was read (the body up to the prober's limit).
#[derive(Debug)]
pub struct ProbeResponse<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// An evaluator's decision with its reason in words, as the health view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub reason: String,
}

impl Verdict {
    pub fn healthy(reason: impl Into<String>) -> Self {
        Self {
            healthy: true,
            reason: reason.into(),
        }
    }

    pub fn unhealthy(reason: impl Into<String>) -> Self {
        Self {
            healthy: false,
            reason: reason.into(),
        }
    }
}

/// Decides whether a probe response means healthy.
pub trait Evaluator: Send + Sync + fmt::Debug {
    fn evaluate(&self, response: &ProbeResponse<'_>) -> Verdict;
}

/// Application Gateway's rules: the status within one of the ranges (200-399 by default) and,
/// when configured, the body containing a substring.
#[derive(Debug, Clone)]
pub struct NativeEvaluator {
    status_codes: Vec<StatusRange>,
    body: Option<String>,
}

impl NativeEvaluator {
    pub fn new(status_codes: Vec<StatusRange>, body: Option<String>) -> Self {
        Self { status_codes, body }
    }

    /// The default probe's rule: healthy on 200-399.
    pub fn default_probe() -> Self {
        Self::new(vec![StatusRange::DEFAULT], None)
    }

    pub fn for_probe(probe: &Probe) -> Self {
        Self::new(probe.status_codes.clone(), probe.body.clone())
    }

    /// The status ranges in words: `200-399`, `200-399 or 401`.
    fn expected(&self) -> String {
        self.status_codes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

impl Evaluator for NativeEvaluator {
    fn evaluate(&self, response: &ProbeResponse<'_>) -> Verdict {
        let status = response.status.as_u16();
        if !self.status_codes.iter().any(|r| r.contains(status)) {
            return Verdict::unhealthy(format!(
                "Status code mismatch: expected {}, received {status}",
                self.expected()
            ));
        }
        if let Some(needle) = &self.body
            && !contains(response.body, needle.as_bytes())
        {
            return Verdict::unhealthy(format!("Body mismatch: '{needle}' not found"));
        }
        Verdict::healthy(format!("Success: received {status}"))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(eval: &NativeEvaluator, status: u16, body: &str) -> Verdict {
        eval.evaluate(&ProbeResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: &HeaderMap::new(),
            body: body.as_bytes(),
        })
    }

    #[test]
    fn default_rule_is_200_to_399() {
        let eval = NativeEvaluator::default_probe();
        assert_eq!(
            answer(&eval, 200, ""),
            Verdict::healthy("Success: received 200")
        );
        assert!(answer(&eval, 302, "").healthy);
        assert_eq!(
            answer(&eval, 500, ""),
            Verdict::unhealthy("Status code mismatch: expected 200-399, received 500")
        );
        assert!(!answer(&eval, 401, "").healthy);
    }

    #[test]
    fn several_ranges_and_a_body() {
        let eval = NativeEvaluator::new(
            vec![
                StatusRange::DEFAULT,
                StatusRange {
                    first: 401,
                    last: 401,
                },
            ],
            Some("ok".into()),
        );
        assert!(answer(&eval, 401, "all ok").healthy);
        assert_eq!(
            answer(&eval, 404, "ok").reason,
            "Status code mismatch: expected 200-399 or 401, received 404"
        );
        assert_eq!(
            answer(&eval, 200, "nope"),
            Verdict::unhealthy("Body mismatch: 'ok' not found")
        );
    }
}
