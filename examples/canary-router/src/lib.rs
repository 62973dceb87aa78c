//! A canary / weighted split that keeps each user on the same variant.
//!
//! Configuration (JSON):
//!
//! ```json
//! {
//!   "variants": [
//!     { "name": "stable", "pool": "web", "settings": "web", "weight": 90 },
//!     { "name": "canary", "pool": "web-canary", "settings": "web", "weight": 10 }
//!   ],
//!   "sticky_key": ["cookie:session", "header:x-user-id", "client-ip"],
//!   "override_header": "x-variant"
//! }
//! ```
//!
//! The first `sticky_key` source the request has (a cookie, a header, or the client's IP
//! address) is hashed with the SDK's stable FNV-1a, so a user lands on the same variant on every
//! request, every instance and every gateway; the weights give the share of users per variant. A
//! request naming a variant in `override_header` goes there (for testers). The chosen variant is
//! passed to the backend in `x-variant`.

use serde::Deserialize;
use wasmgate_sdk::{Decision, Forward, Plugin, RequestHead, Router, hash};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    variants: Vec<Variant>,
    #[serde(default = "default_sticky_key")]
    sticky_key: Vec<String>,
    #[serde(default)]
    override_header: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Variant {
    name: String,
    pool: String,
    settings: String,
    weight: u32,
}

fn default_sticky_key() -> Vec<String> {
    vec!["client-ip".to_owned()]
}

enum KeySource {
    Cookie(String),
    Header(String),
    ClientIp,
}

struct Canary {
    variants: Vec<Variant>,
    weights: Vec<u32>,
    sticky_key: Vec<KeySource>,
    override_header: Option<String>,
}

impl Plugin for Canary {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))?;
        if config.variants.iter().all(|v| v.weight == 0) {
            return Err("variants: at least one needs a weight above 0".to_owned());
        }
        let sticky_key = config
            .sticky_key
            .iter()
            .map(|source| match source.split_once(':') {
                Some(("cookie", name)) => Ok(KeySource::Cookie(name.to_owned())),
                Some(("header", name)) => Ok(KeySource::Header(name.to_owned())),
                None if source == "client-ip" => Ok(KeySource::ClientIp),
                _ => Err(format!(
                    "sticky_key: {source:?} is not cookie:NAME, header:NAME or client-ip"
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Canary {
            weights: config.variants.iter().map(|v| v.weight).collect(),
            variants: config.variants,
            sticky_key,
            override_header: config.override_header,
        })
    }
}

impl Canary {
    fn key<'r>(&self, request: &'r RequestHead) -> &'r str {
        self.sticky_key
            .iter()
            .find_map(|source| match source {
                KeySource::Cookie(name) => request.cookie(name),
                KeySource::Header(name) => request.header_str(name),
                KeySource::ClientIp => Some(request.client_ip()),
            })
            .unwrap_or_else(|| request.client_ip())
    }
}

impl Router for Canary {
    fn route(&self, request: &RequestHead) -> Decision {
        let forced = self
            .override_header
            .as_deref()
            .and_then(|h| request.header_str(h))
            .and_then(|name| self.variants.iter().find(|v| v.name == name));
        let variant = forced.unwrap_or_else(|| {
            let i = hash::pick_weighted(self.key(request).as_bytes(), &self.weights)
                .expect("init checked that a weight is above 0");
            &self.variants[i]
        });
        Forward::to(&variant.pool, &variant.settings)
            .set_header("x-variant", variant.name.as_str())
            .into()
    }
}

wasmgate_sdk::export_router!(Canary);
