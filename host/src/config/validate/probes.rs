//! `[[probes]]`: custom health probes, and the link from backend settings to their probe.

use std::collections::HashMap;
use std::time::Duration;

use http::HeaderValue;

use super::units::{opt_duration, opt_in_range, port};
use super::{Result, lookup, protocol};
use crate::config::raw::{RawBackendSettings, RawProbe};
use crate::config::*;

pub(super) fn probe(path: &str, raw: &RawProbe) -> Result<Probe> {
    let protocol = protocol(&format!("{path}.protocol"), raw.protocol.as_deref())?;
    let host = match (&raw.host, raw.pick_host_name_from_backend_settings) {
        (Some(_), true) => {
            return Err(ConfigError::new(
                format!("{path}.host"),
                "set either host or pick_host_name_from_backend_settings, not both",
            ));
        }
        (Some(h), false) => ProbeHost::Fixed(host_name(&format!("{path}.host"), h)?),
        (None, true) => ProbeHost::FromBackendSettings,
        (None, false) => ProbeHost::Loopback,
    };
    let probe_path = match raw.path.as_deref() {
        None => "/".to_string(),
        Some(p) => {
            let valid = p.starts_with('/')
                && !p.contains('#')
                && !p.bytes().any(|b| b <= b' ' || b == 0x7f)
                && p.parse::<http::uri::PathAndQuery>().is_ok();
            if !valid {
                return Err(ConfigError::new(
                    format!("{path}.path"),
                    format!(
                        "{p:?} must start with '/' and hold no fragment, spaces or control characters"
                    ),
                ));
            }
            p.to_string()
        }
    };
    let port = raw
        .port
        .map(|n| port(&format!("{path}.port"), n))
        .transpose()?;
    let day = Duration::from_secs(86_400);
    let interval = opt_duration(
        &format!("{path}.interval"),
        &raw.interval,
        DEFAULT_PROBE_INTERVAL,
        day,
    )?;
    let timeout = opt_duration(
        &format!("{path}.timeout"),
        &raw.timeout,
        DEFAULT_PROBE_TIMEOUT,
        day,
    )?;
    let unhealthy_threshold = opt_in_range(
        &format!("{path}.unhealthy_threshold"),
        raw.unhealthy_threshold,
        1..=20,
    )?
    .unwrap_or(DEFAULT_UNHEALTHY_THRESHOLD);
    let min_servers =
        opt_in_range(&format!("{path}.min_servers"), raw.min_servers, 0..=10_000)?.unwrap_or(0);
    let (status_codes, body) = match &raw.match_ {
        None => (vec![StatusRange::DEFAULT], None),
        Some(m) => {
            let codes = match &m.status_codes {
                None => vec![StatusRange::DEFAULT],
                Some(list) if list.is_empty() => {
                    return Err(ConfigError::new(
                        format!("{path}.match.status_codes"),
                        "needs at least one status code or range, e.g. \"200-399\"",
                    ));
                }
                Some(list) => list
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        status_range(text).ok_or_else(|| {
                            ConfigError::new(
                                format!("{path}.match.status_codes[{i}]"),
                                format!("{text:?} is not a status range"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            };
            let body = match m.body.as_deref() {
                None | Some("") => None,
                Some(b) if b.chars().count() > MAX_PROBE_BODY_MATCH => {
                    return Err(ConfigError::new(
                        format!("{path}.match.body"),
                        format!(
                            "is {} characters long; at most {MAX_PROBE_BODY_MATCH} are allowed",
                            b.chars().count()
                        ),
                    ));
                }
                Some(b) => Some(b.to_string()),
            };
            (codes, body)
        }
    };
    Ok(Probe {
        name: raw.name.clone(),
        protocol,
        host,
        path: probe_path,
        port,
        interval,
        timeout,
        unhealthy_threshold,
        min_servers,
        status_codes,
        body,
        probe_plugin: None,
    })
}

/// `"200-399"` or `"401"`, within 100–599.
fn status_range(text: &str) -> Option<StatusRange> {
    let code = |t: &str| {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse::<u16>().ok().filter(|c| (100..=599).contains(c))
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (code(a)?, code(b)?),
        None => {
            let c = code(text)?;
            (c, c)
        }
    };
    (first <= last).then_some(StatusRange { first, last })
}

/// A host name for a Host header: letters, digits, '-', '.', and ':' (for a port or IPv6).
fn host_name(field: &str, h: &str) -> Result<HeaderValue> {
    let valid = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
    HeaderValue::from_str(h)
        .ok()
        .filter(|_| valid)
        .ok_or_else(|| ConfigError::new(field, format!("{h:?} is not a host name")))
}

/// Resolves each backend settings' `probe` and checks that the two fit together.
pub(super) fn link_probes(
    raw: &[RawBackendSettings],
    settings: &mut [BackendSettings],
    probes: &[Probe],
    ids: &HashMap<&str, usize>,
) -> Result<()> {
    for (i, (r, s)) in raw.iter().zip(settings.iter_mut()).enumerate() {
        let Some(name) = &r.probe else { continue };
        let field = format!("backend_settings[{i}].probe");
        let id = lookup(&field, ids, "probe", name)?;
        let p = &probes[id];
        if p.protocol != s.protocol {
            return Err(ConfigError::new(
                field,
                format!(
                    "probe {name:?} uses {} but these settings use {}; a probe's protocol must equal its backend settings'",
                    p.protocol.as_str(),
                    s.protocol.as_str()
                ),
            ));
        }
        if p.host == ProbeHost::FromBackendSettings && s.host == HostOverride::PassThrough {
            return Err(ConfigError::new(
                field,
                format!(
                    "probe {name:?} picks its host name from the backend settings, but these settings set neither host_name nor pick_host_name_from_backend_address"
                ),
            ));
        }
        s.probe = Some(ProbeId(id));
    }
    Ok(())
}
