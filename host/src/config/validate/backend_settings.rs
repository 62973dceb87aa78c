//! `[[backend_settings]]`: how requests reach a pool's servers (port, protocol, timeouts, host,
//! path, affinity, draining, trusted roots).

use std::path::Path;
use std::time::Duration;

use http::HeaderValue;

use super::units::{opt_duration, port};
use super::{Result, protocol};
use crate::config::raw::RawBackendSettings;
use crate::config::*;

pub(super) fn settings(
    path: &str,
    raw: &RawBackendSettings,
    base: &Path,
) -> Result<BackendSettings> {
    let port = port(&format!("{path}.port"), raw.port)?;
    let protocol = protocol(&format!("{path}.protocol"), raw.protocol.as_deref())?;
    let trusted_roots = match (protocol, raw.trusted_root_certificates.is_empty()) {
        (_, true) => None,
        (Protocol::Http, false) => {
            return Err(ConfigError::new(
                format!("{path}.trusted_root_certificates"),
                "only https backend settings verify certificates",
            ));
        }
        (Protocol::Https, false) => Some(
            TrustedRoots::load(
                raw.trusted_root_certificates
                    .iter()
                    .map(|f| base.join(f))
                    .collect(),
            )
            .map_err(|e| {
                ConfigError::new(
                    format!("{path}.trusted_root_certificates"),
                    format!("backend settings {:?}: {e}", raw.name),
                )
            })?,
        ),
    };
    let request_timeout = opt_duration(
        &format!("{path}.request_timeout"),
        &raw.request_timeout,
        DEFAULT_REQUEST_TIMEOUT,
        Duration::from_secs(86_400),
    )?;
    let host = match (&raw.host_name, raw.pick_host_name_from_backend_address) {
        (Some(_), true) => {
            return Err(ConfigError::new(
                format!("{path}.host_name"),
                "set either host_name or pick_host_name_from_backend_address, not both",
            ));
        }
        (Some(h), false) => {
            let valid = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
            let value = HeaderValue::from_str(h)
                .ok()
                .filter(|_| valid)
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{path}.host_name"),
                        format!("{h:?} is not a host name"),
                    )
                })?;
            HostOverride::Fixed(value)
        }
        (None, true) => HostOverride::FromBackendAddress,
        (None, false) => HostOverride::PassThrough,
    };
    let path_override = match &raw.path {
        None => None,
        Some(p) if p.starts_with('/') && !p.contains(['?', '#', ' ']) => {
            Some(p.trim_end_matches('/').to_string())
        }
        Some(p) => {
            return Err(ConfigError::new(
                format!("{path}.path"),
                format!("{p:?} must start with '/' and hold no query, fragment or spaces"),
            ));
        }
    };
    let affinity = match (raw.cookie_based_affinity, &raw.affinity_cookie_name) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(ConfigError::new(
                format!("{path}.affinity_cookie_name"),
                "is set but cookie_based_affinity is false",
            ));
        }
        (true, name) => {
            let name = name.as_deref().unwrap_or(DEFAULT_AFFINITY_COOKIE);
            // RFC 6265 §4.1.1: a cookie name is an RFC 7230 token.
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(ConfigError::new(
                    format!("{path}.affinity_cookie_name"),
                    format!("{name:?} is not a valid cookie name"),
                ));
            }
            Some(Affinity {
                cookie_name: name.to_string(),
            })
        }
    };
    let draining = match &raw.connection_draining {
        None => Draining {
            enabled: false,
            timeout: DEFAULT_DRAINING_TIMEOUT,
        },
        Some(d) => Draining {
            enabled: d.enabled,
            timeout: opt_duration(
                &format!("{path}.connection_draining.timeout"),
                &d.timeout,
                DEFAULT_DRAINING_TIMEOUT,
                Duration::from_secs(3_600),
            )?,
        },
    };
    let websocket_timeout = match raw.websocket_timeout.as_deref() {
        None | Some("session") => WebSocketTimeout::Session,
        Some("idle") => WebSocketTimeout::Idle,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{path}.websocket_timeout"),
                format!("unknown mode {other:?}; expected \"session\" or \"idle\""),
            ));
        }
    };
    Ok(BackendSettings {
        name: raw.name.clone(),
        port,
        protocol,
        request_timeout,
        host,
        path: path_override,
        affinity,
        draining,
        // Resolved once the probes are validated (`link_probes`).
        probe: None,
        websocket_timeout,
        trusted_roots,
        probe_plugin: None,
    })
}
