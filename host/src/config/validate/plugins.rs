//! `[[plugins]]`: kind, component file, fail policy, samples, request headers and limits; and
//! `[plugin_engine]`, the settings all plugins share.

use std::path::Path;
use std::time::Duration;

use super::Result;
use super::units::{in_range, opt_duration, opt_in_range};
use crate::config::raw::{RawCacheDir, RawPlugin, RawPluginEngine};
use crate::config::*;

pub(super) fn plugin(path: &str, raw: &RawPlugin, base: &Path) -> Result<PluginConfig> {
    let kind = match raw.kind.as_str() {
        "router" => PluginKind::Router,
        "probe" => PluginKind::Probe,
        "message-filter" => PluginKind::MessageFilter,
        other => {
            return Err(ConfigError::new(
                format!("{path}.kind"),
                format!(
                    "unknown kind {other:?}; expected \"router\", \"probe\" or \"message-filter\""
                ),
            ));
        }
    };
    let fail_policy = match raw.fail_policy.as_deref() {
        None | Some("fail_closed") => FailPolicy::FailClosed,
        Some("fail_open") => FailPolicy::FailOpen,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{path}.fail_policy"),
                format!("unknown fail policy {other:?}; expected \"fail_closed\" or \"fail_open\""),
            ));
        }
    };
    let file = raw.path.as_ref().map(|p| base.join(p));
    // Read now, so a missing or unreadable component is a configuration error naming the
    // plugin and the file rather than a failure halfway through starting.
    if let Some(file) = &file
        && let Err(e) = std::fs::File::open(file)
    {
        return Err(ConfigError::new(
            format!("{path}.path"),
            format!("plugin {:?}: cannot read {}: {e}", raw.name, file.display()),
        ));
    }
    if kind != PluginKind::Router && !raw.samples.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.samples"),
            "samples are requests with expected routing decisions: only router plugins take them",
        ));
    }
    let samples = raw
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Sample::validate(s).map_err(|(field, why)| {
                ConfigError::new(format!("{path}.samples[{i}].{field}"), why)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if kind == PluginKind::Probe && raw.request_headers.is_some() {
        return Err(ConfigError::new(
            format!("{path}.request_headers"),
            "only router plugins and message filters are given request headers",
        ));
    }
    let request_headers = raw
        .request_headers
        .as_ref()
        .map(|names| {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    http::HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                        ConfigError::new(
                            format!("{path}.request_headers[{i}]"),
                            format!("{n:?} is not a valid header name"),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let mut limits = PluginLimits::default();
    if let Some(l) = &raw.limits {
        limits.call_timeout = opt_duration(
            &format!("{path}.limits.call_timeout"),
            &l.call_timeout,
            limits.call_timeout,
            Duration::from_secs(60),
        )?;
        if let Some(mb) = l.max_memory_mb {
            let mb: usize = in_range(&format!("{path}.limits.max_memory_mb"), mb, 1..=4096)?;
            limits.max_memory_bytes = mb << 20;
        }
        if let Some(n) = l.max_concurrency {
            limits.max_concurrency =
                in_range(&format!("{path}.limits.max_concurrency"), n, 1..=1000)?;
        }
        for (field, value) in [
            ("max_message_bytes", l.max_message_bytes),
            ("max_state_bytes", l.max_state_bytes),
        ] {
            if value.is_some() && kind != PluginKind::MessageFilter {
                return Err(ConfigError::new(
                    format!("{path}.limits.{field}"),
                    "only message filters reassemble messages and keep session state",
                ));
            }
        }
        if let Some(n) = l.max_message_bytes {
            // 64 MiB: a filtered session may hold one whole message per direction.
            limits.max_message_bytes = in_range(
                &format!("{path}.limits.max_message_bytes"),
                n,
                125..=64 << 20,
            )?;
        }
        if let Some(n) = l.max_state_bytes {
            limits.max_state_bytes =
                in_range(&format!("{path}.limits.max_state_bytes"), n, 0..=1 << 20)?;
        }
    }
    Ok(PluginConfig {
        name: raw.name.clone(),
        path: file,
        kind,
        config: raw.config.clone().unwrap_or_default(),
        limits,
        fail_policy,
        samples,
        request_headers,
    })
}

/// `[plugin_engine]`: where compiled components are kept, and the instances alive at once.
pub(super) fn plugin_engine(
    raw: Option<&RawPluginEngine>,
    base: &Path,
) -> Result<(PluginCache, Option<u32>)> {
    let cache_dir = match raw.and_then(|e| e.cache_dir.as_ref()) {
        None | Some(RawCacheDir::Enabled(true)) => PluginCache::Default,
        Some(RawCacheDir::Enabled(false)) => PluginCache::Off,
        Some(RawCacheDir::Dir(d)) if d.is_empty() => {
            return Err(ConfigError::new(
                "plugin_engine.cache_dir",
                "an empty path; give a directory, or false to keep compiled plugins in memory only",
            ));
        }
        Some(RawCacheDir::Dir(d)) => PluginCache::Dir(base.join(d)),
    };
    let max_instances = opt_in_range(
        "plugin_engine.max_instances",
        raw.and_then(|e| e.max_instances),
        1..=10_000,
    )?;
    Ok((cache_dir, max_instances))
}
