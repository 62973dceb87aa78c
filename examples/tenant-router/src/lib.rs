//! Routes each tenant to its own backend pool, found by subdomain or by a claim in the bearer
//! token.
//!
//! Configuration (JSON):
//!
//! ```json
//! { "domain": "saas.example", "pool_prefix": "tenant-", "settings": "web", "claim": "tenant" }
//! ```
//!
//! `acme.saas.example` is tenant `acme`; on other hosts the tenant is the `claim` of the JWT in
//! `Authorization: Bearer …`. The request goes to pool `pool_prefix + tenant` if the gateway has
//! such a pool (asked through the host interface, so pools added by a configuration reload are
//! seen at once), else it is answered 404. The tenant is passed on in `x-tenant`.
//!
//! The token's signature is NOT checked here: the claim only picks a pool, and the tenant's
//! backend must still authenticate the request. A client forging a claim reaches another
//! tenant's backend, which then refuses its token.

use serde::Deserialize;
use wasmgate_sdk::{Decision, Forward, Plugin, RequestHead, Router, host};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tenants {
    domain: String,
    pool_prefix: String,
    settings: String,
    #[serde(default = "default_claim")]
    claim: String,
}

fn default_claim() -> String {
    "tenant".to_owned()
}

impl Plugin for Tenants {
    fn init(config: &str) -> Result<Self, String> {
        let mut tenants: Tenants =
            serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))?;
        tenants.domain = tenants.domain.to_ascii_lowercase();
        host::info(&format!("routing tenants of {}", tenants.domain));
        Ok(tenants)
    }
}

impl Tenants {
    fn tenant_in_host<'r>(&self, request: &'r RequestHead) -> Option<&'r str> {
        let label = request
            .host()
            .strip_suffix(self.domain.as_str())?
            .strip_suffix('.')?;
        (!label.is_empty() && !label.contains('.')).then_some(label)
    }

    fn tenant_in_token(&self, request: &RequestHead) -> Option<String> {
        let token = request
            .header_str("authorization")?
            .strip_prefix("Bearer ")?;
        let payload = token.split('.').nth(1)?;
        let claims: serde_json::Value = serde_json::from_slice(&base64url(payload)?).ok()?;
        claims.get(&self.claim)?.as_str().map(str::to_owned)
    }
}

impl Router for Tenants {
    fn route(&self, request: &RequestHead) -> Decision {
        let tenant = match self.tenant_in_host(request) {
            Some(label) => label.to_owned(),
            None => match self.tenant_in_token(request) {
                Some(claim) => claim,
                None => return Decision::Defer,
            },
        };
        let pool = format!("{}{}", self.pool_prefix, tenant);
        if !host::has_pool(&pool) {
            return Decision::respond(404, format!("unknown tenant {tenant:?}\n"));
        }
        Forward::to(pool, &self.settings)
            .set_header("x-tenant", tenant)
            .into()
    }
}

/// Decodes unpadded base64url (RFC 4648 §5), as JWT segments are written.
fn base64url(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in input.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

wasmgate_sdk::export_router!(Tenants);
