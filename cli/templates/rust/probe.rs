//! The {{name}} probe evaluator: a server is healthy when it answers 200-399 and its body does
//! not contain the marker given as the plugin's `config` string (default "maintenance"), a page
//! many applications serve with 200 while they are being updated.

use wasmgate_sdk::{Plugin, ProbeEvaluator, ProbeResponse, Verdict};

struct {{type}} {
    marker: String,
}

impl Plugin for {{type}} {
    fn init(config: &str) -> Result<Self, String> {
        let marker = match config.trim() {
            "" => "maintenance",
            m => m,
        };
        Ok({{type}} {
            marker: marker.to_owned(),
        })
    }
}

impl ProbeEvaluator for {{type}} {
    fn evaluate(&self, response: &ProbeResponse) -> Verdict {
        let Some(status) = response.status else {
            return Verdict::unhealthy(response.error.clone().unwrap_or_default());
        };
        if !response.status_in(200..=399) {
            return Verdict::unhealthy(format!("status {status}"));
        }
        if response.body_str().is_some_and(|b| b.contains(&self.marker)) {
            return Verdict::unhealthy(format!("the body says {:?}", self.marker));
        }
        Verdict::healthy(format!("status {status}"))
    }
}

wasmgate_sdk::export_probe_evaluator!({{type}});
