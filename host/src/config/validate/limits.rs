//! `[limits]`: front-end limits, Application Gateway's defaults for the fields left out.

use std::time::Duration;

use super::Result;
use super::units::{in_range, opt_duration, opt_in_range, size};
use crate::config::Limits;
use crate::config::raw::RawLimits;

pub(super) fn limits(raw: Option<&RawLimits>) -> Result<Limits> {
    let d = Limits::default();
    let Some(l) = raw else { return Ok(d) };
    Ok(Limits {
        client_idle_timeout: opt_duration(
            "limits.client_idle_timeout",
            &l.client_idle_timeout,
            d.client_idle_timeout,
            Duration::from_secs(86_400),
        )?,
        shutdown_timeout: opt_duration(
            "limits.shutdown_timeout",
            &l.shutdown_timeout,
            d.shutdown_timeout,
            Duration::from_secs(3_600),
        )?,
        upgrade_drain_timeout: opt_duration(
            "limits.upgrade_drain_timeout",
            &l.upgrade_drain_timeout,
            d.upgrade_drain_timeout,
            Duration::from_secs(86_400),
        )?,
        max_header_count: match l.max_header_count {
            None => d.max_header_count,
            Some(n) => in_range("limits.max_header_count", n, 1..=1_000)?,
        },
        max_request_body: l
            .max_request_body
            .as_ref()
            .map(|s| size("limits.max_request_body", s))
            .transpose()?,
        max_connections: opt_in_range("limits.max_connections", l.max_connections, 1..=1_000_000)?,
    })
}
