//! A probe evaluator for backends with a JSON health endpoint, which also accepts answers that
//! only say "authenticate first".
//!
//! Configuration (JSON, every field optional):
//!
//! ```json
//! {
//!   "path": "/health",
//!   "accept_statuses": [401, 403],
//!   "field": "status",
//!   "unhealthy_values": ["degraded", "down", "unhealthy"]
//! }
//! ```
//!
//! - No answer (refused, timed out): unhealthy, with the error as the reason.
//! - A status in `accept_statuses` (default 401): healthy. A backend behind authentication
//!   answers 401 to an anonymous probe; it is up, and marking it down (as a probe that only
//!   accepts 200–399 does) takes the whole pool out.
//! - 200–399 with a JSON body whose `field` is one of `unhealthy_values`: unhealthy
//!   (`{"status":"degraded"}`); any other body: healthy.
//! - Any other status: unhealthy.
//!
//! With `path` set, probes are sent to that path with `Accept: application/json`.

use serde::Deserialize;
use wasmgate_sdk::{Plugin, ProbeEvaluator, ProbeRequest, ProbeResponse, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonHealth {
    #[serde(default)]
    path: Option<String>,
    #[serde(default = "default_accept")]
    accept_statuses: Vec<u16>,
    #[serde(default = "default_field")]
    field: String,
    #[serde(default = "default_unhealthy")]
    unhealthy_values: Vec<String>,
}

fn default_accept() -> Vec<u16> {
    vec![401]
}

fn default_field() -> String {
    "status".to_owned()
}

fn default_unhealthy() -> Vec<String> {
    ["degraded", "down", "unhealthy"]
        .map(str::to_owned)
        .to_vec()
}

impl Plugin for JsonHealth {
    fn init(config: &str) -> Result<Self, String> {
        let config = if config.trim().is_empty() {
            "{}"
        } else {
            config
        };
        serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))
    }
}

impl ProbeEvaluator for JsonHealth {
    fn shape_request(&self, _pool: &str, _settings: &str, _server: &str) -> Option<ProbeRequest> {
        let path = self.path.as_ref()?;
        Some(ProbeRequest::path(path).header("accept", "application/json"))
    }

    fn evaluate(&self, response: &ProbeResponse) -> Verdict {
        let status = match (response.status, &response.error) {
            (Some(status), _) => status,
            (None, Some(error)) => return Verdict::unhealthy(error.as_str()),
            (None, None) => return Verdict::unhealthy("no response"),
        };
        if self.accept_statuses.contains(&status) {
            return Verdict::healthy(format!("{status} accepted (authentication required)"));
        }
        if !(200..=399).contains(&status) {
            return Verdict::unhealthy(format!("status {status}"));
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
            return Verdict::healthy(format!("status {status}"));
        };
        match body.get(&self.field).and_then(|v| v.as_str()) {
            Some(value)
                if self
                    .unhealthy_values
                    .iter()
                    .any(|u| u.eq_ignore_ascii_case(value)) =>
            {
                Verdict::unhealthy(format!("{}: {value}", self.field))
            }
            Some(value) => Verdict::healthy(format!("status {status}, {}: {value}", self.field)),
            None => Verdict::healthy(format!("status {status}")),
        }
    }
}

wasmgate_sdk::export_probe_evaluator!(JsonHealth);
