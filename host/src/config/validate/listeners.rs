//! `[[listeners]]`: addresses, host names and HTTPS certificates, and the sockets formed by
//! listeners sharing a port.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::units::in_range;
use super::{Result, protocol};
use crate::config::raw::RawListener;
use crate::config::*;
use rustls::sign::CertifiedKey;

pub(super) fn listener(path: &str, raw: &RawListener, base: &Path) -> Result<Listener> {
    let protocol = protocol(&format!("{path}.protocol"), raw.protocol.as_deref())?;
    let tls = listener_tls(path, raw, protocol, base)?;
    let bind_address = match &raw.bind_address {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(text) => text.parse().map_err(|_| {
            ConfigError::new(
                format!("{path}.bind_address"),
                format!("{text:?} is not an IP address"),
            )
        })?,
    };
    if raw.host_names.len() > 5 {
        return Err(ConfigError::new(
            format!("{path}.host_names"),
            format!(
                "at most 5 host names per listener, found {}",
                raw.host_names.len()
            ),
        ));
    }
    let mut host_names = Vec::with_capacity(raw.host_names.len());
    for (i, h) in raw.host_names.iter().enumerate() {
        let field = format!("{path}.host_names[{i}]");
        if h.is_empty() || h.len() > 253 {
            return Err(ConfigError::new(field, "must be 1 to 253 characters long"));
        }
        if let Some(c) = h
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '?')))
        {
            return Err(ConfigError::new(
                field,
                format!(
                    "{h:?} contains {c:?}; host names take letters, digits, '-', '.', and the wildcards '*' and '?'"
                ),
            ));
        }
        let pattern = HostPattern::new(h);
        if host_names.contains(&pattern) {
            return Err(ConfigError::new(field, format!("{h:?} is listed twice")));
        }
        host_names.push(pattern);
    }
    Ok(Listener {
        name: raw.name.clone(),
        protocol,
        // Port 0 asks the OS for a free port.
        port: in_range(&format!("{path}.port"), raw.port, 0..=65_535)?,
        bind_address,
        host_names,
        tls,
        router: None,
        message_filter: None,
        custom_error_pages: super::error_pages::error_pages(
            &format!("{path}.custom_error_pages"),
            &raw.custom_error_pages,
            base,
        )?,
    })
}

/// An HTTPS listener's certificate (read and checked now, so a bad file is a configuration
/// error naming the listener and the file) and handshake rules.
fn listener_tls(
    path: &str,
    raw: &RawListener,
    protocol: Protocol,
    base: &Path,
) -> Result<Option<ListenerTls>> {
    let fields = [
        ("certificate", raw.certificate.is_some()),
        ("certificate_key", raw.certificate_key.is_some()),
        ("certificate_pfx", raw.certificate_pfx.is_some()),
        ("certificate_password", raw.certificate_password.is_some()),
        ("require_sni", raw.require_sni.is_some()),
        ("min_tls_version", raw.min_tls_version.is_some()),
        ("ssl_profile", raw.ssl_profile.is_some()),
    ];
    if protocol == Protocol::Http {
        if let Some((field, _)) = fields.iter().find(|(_, set)| *set) {
            return Err(ConfigError::new(
                format!("{path}.{field}"),
                "only an https listener takes TLS settings",
            ));
        }
        return Ok(None);
    }
    let fields = CertificateFields {
        certificate: &raw.certificate,
        key: &raw.certificate_key,
        pfx: &raw.certificate_pfx,
        password: &raw.certificate_password,
    };
    let owner = format!("listener {:?}", raw.name);
    let Some((source, certificate)) = certificate(path, &owner, fields, base)? else {
        return Err(ConfigError::new(
            path,
            "an https listener needs certificate and certificate_key (PEM), or certificate_pfx (PKCS#12)",
        ));
    };
    let min_version = match raw.min_tls_version.as_deref() {
        None | Some("1.2") => TlsVersion::Tls12,
        Some("1.3") => TlsVersion::Tls13,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{path}.min_tls_version"),
                format!("{other:?} is not supported; use \"1.2\" or \"1.3\""),
            ));
        }
    };
    Ok(Some(ListenerTls {
        source,
        certificate,
        require_sni: raw.require_sni.unwrap_or(false),
        min_version,
        // Resolved once the profiles are known.
        ssl_profile: None,
    }))
}

/// The certificate fields of an HTTPS listener or of the admin listener, as written.
pub(super) struct CertificateFields<'a> {
    pub certificate: &'a Option<String>,
    pub key: &'a Option<String>,
    pub pfx: &'a Option<String>,
    pub password: &'a Option<String>,
}

/// A certificate: a PEM chain (`certificate`) with its key (`certificate_key`), or a PKCS#12
/// bundle (`certificate_pfx`, `certificate_password`), paths relative to `base`; read and
/// checked now, so a bad file is an error naming the field, `owner` and the file. `None` when no
/// field is set.
pub(super) fn certificate(
    path: &str,
    owner: &str,
    fields: CertificateFields<'_>,
    base: &Path,
) -> Result<Option<(CertificateSource, std::sync::Arc<CertifiedKey>)>> {
    let file = |p: &str| base.join(p);
    let (source, field) = match (fields.certificate, fields.key, fields.pfx, fields.password) {
        (Some(chain), Some(key), None, None) => (
            CertificateSource::Pem {
                chain: file(chain),
                key: file(key),
            },
            "certificate",
        ),
        (None, None, Some(pfx), password) => (
            CertificateSource::Pkcs12 {
                path: file(pfx),
                password: password.clone().unwrap_or_default(),
            },
            "certificate_pfx",
        ),
        (Some(_), None, None, _) => {
            return Err(ConfigError::new(
                format!("{path}.certificate_key"),
                "certificate needs certificate_key beside it (the PEM private key)",
            ));
        }
        (None, Some(_), None, _) => {
            return Err(ConfigError::new(
                format!("{path}.certificate"),
                "certificate_key needs certificate beside it (the PEM certificate chain)",
            ));
        }
        (_, _, None, Some(_)) => {
            return Err(ConfigError::new(
                format!("{path}.certificate_password"),
                "a password goes with certificate_pfx",
            ));
        }
        (None, None, None, _) => return Ok(None),
        (_, _, Some(_), _) => {
            return Err(ConfigError::new(
                format!("{path}.certificate_pfx"),
                "set either certificate_pfx or certificate and certificate_key, not both",
            ));
        }
    };
    let certificate = source
        .load()
        .map_err(|e| ConfigError::new(format!("{path}.{field}"), format!("{owner}: {e}")))?;
    Ok(Some((source, std::sync::Arc::new(certificate))))
}

/// Listeners sharing a port form one socket: one bind address, at most one basic listener,
/// no host name claimed twice.
pub(super) fn check_sockets(listeners: &[Listener]) -> Result<()> {
    let mut by_port: HashMap<u16, usize> = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        // Port 0 asks the OS for a free port per listener, so such listeners never share.
        if l.port == 0 {
            continue;
        }
        let Some(&first) = by_port.get(&l.port) else {
            by_port.insert(l.port, i);
            continue;
        };
        let other = &listeners[first];
        if other.bind_address != l.bind_address {
            return Err(ConfigError::new(
                format!("listeners[{i}].bind_address"),
                format!(
                    "port {} is already bound on {} by listeners[{first}]; listeners sharing a port share its bind address",
                    l.port, other.bind_address
                ),
            ));
        }
        if other.protocol != l.protocol {
            return Err(ConfigError::new(
                format!("listeners[{i}].protocol"),
                format!(
                    "port {} already serves {} (listeners[{first}])",
                    l.port,
                    other.protocol.as_str()
                ),
            ));
        }
        // One TLS configuration serves the port: the handshake comes before any host name.
        if let (Some(a), Some(b)) = (&other.tls, &l.tls) {
            if a.require_sni != b.require_sni {
                return Err(ConfigError::new(
                    format!("listeners[{i}].require_sni"),
                    format!(
                        "port {} has require_sni = {} (listeners[{first}]); listeners sharing a port share it",
                        l.port, a.require_sni
                    ),
                ));
            }
            if a.min_version != b.min_version {
                return Err(ConfigError::new(
                    format!("listeners[{i}].min_tls_version"),
                    format!(
                        "port {} has min_tls_version = \"{}\" (listeners[{first}]); listeners sharing a port share it",
                        l.port,
                        a.min_version.as_str()
                    ),
                ));
            }
        }
        for (j, prior) in listeners[..i].iter().enumerate() {
            if prior.port != l.port {
                continue;
            }
            if !prior.is_multi_site() && !l.is_multi_site() {
                return Err(ConfigError::new(
                    format!("listeners[{i}].host_names"),
                    format!(
                        "port {} already has a basic listener (listeners[{j}]); give one of them host names",
                        l.port
                    ),
                ));
            }
            if let Some(h) = l.host_names.iter().find(|h| prior.host_names.contains(h)) {
                return Err(ConfigError::new(
                    format!("listeners[{i}].host_names"),
                    format!(
                        "{:?} on port {} is already claimed by listeners[{j}]",
                        h.as_str(),
                        l.port
                    ),
                ));
            }
        }
    }
    Ok(())
}
