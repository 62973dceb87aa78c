//! Host and path matching with the gateway's semantics, so that a plugin and the native rules
//! agree on what a pattern means.
//!
//! - Host names ignore ASCII case; `*` matches any run of characters, dots included
//!   (`*.contoso.com` matches `a.b.contoso.com` but not `contoso.com`), `?` exactly one.
//!   Compare against the host without its port ([`RequestHead::host`](crate::RequestHead::host)).
//! - Paths ignore ASCII case. `/images/*` matches what starts with `/images/` (not `/images`),
//!   `/images*` any continuation of `/images`, and a pattern without a trailing `*` only itself.
//!   The query is never part of the path.

pub use wasmgate_rules::matching::{host_matches, path_match_len, path_matches};
