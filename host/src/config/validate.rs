//! Raw → validated configuration. Every error names the field's path and the reason.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use super::raw::*;
use super::*;

type Result<T> = std::result::Result<T, ConfigError>;

pub(super) fn validate(raw: RawConfig, base: &Path) -> Result<Config> {
    let listeners = raw
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| listener(&format!("listeners[{i}]"), l, base))
        .collect::<Result<Vec<_>>>()?;
    let listener_ids = names("listeners", raw.listeners.iter().map(|l| &l.name))?;
    check_frontends(&listeners)?;

    let backend_pools = raw
        .backend_pools
        .iter()
        .enumerate()
        .map(|(i, p)| pool(&format!("backend_pools[{i}]"), p))
        .collect::<Result<Vec<_>>>()?;
    let pool_ids = names("backend_pools", raw.backend_pools.iter().map(|p| &p.name))?;

    let mut backend_settings = raw
        .backend_settings
        .iter()
        .enumerate()
        .map(|(i, s)| settings(&format!("backend_settings[{i}]"), s, base))
        .collect::<Result<Vec<_>>>()?;
    let settings_ids = names(
        "backend_settings",
        raw.backend_settings.iter().map(|s| &s.name),
    )?;

    let probes = raw
        .probes
        .iter()
        .enumerate()
        .map(|(i, p)| probe(&format!("probes[{i}]"), p))
        .collect::<Result<Vec<_>>>()?;
    let probe_ids = names("probes", raw.probes.iter().map(|p| &p.name))?;
    link_probes(
        &raw.backend_settings,
        &mut backend_settings,
        &probes,
        &probe_ids,
    )?;
    let admin = raw.admin.as_ref().map(admin).transpose()?;

    let rewrite_sets = raw
        .rewrite_sets
        .iter()
        .enumerate()
        .map(|(i, r)| rewrite_set(&format!("rewrite_sets[{i}]"), r))
        .collect::<Result<Vec<_>>>()?;
    let rewrite_ids = names("rewrite_sets", raw.rewrite_sets.iter().map(|r| &r.name))?;

    let redirect_ids = names("redirects", raw.redirects.iter().map(|r| &r.name))?;
    let redirects = raw
        .redirects
        .iter()
        .enumerate()
        .map(|(i, r)| redirect(&format!("redirects[{i}]"), r, &listener_ids))
        .collect::<Result<Vec<_>>>()?;

    let refs = Refs {
        pools: &pool_ids,
        settings: &settings_ids,
        redirects: &redirect_ids,
        rewrite_sets: &rewrite_ids,
    };

    let map_ids = names("url_path_maps", raw.url_path_maps.iter().map(|m| &m.name))?;
    let url_path_maps = raw
        .url_path_maps
        .iter()
        .enumerate()
        .map(|(i, m)| url_path_map(&format!("url_path_maps[{i}]"), m, &refs))
        .collect::<Result<Vec<_>>>()?;

    names("rules", raw.rules.iter().map(|r| &r.name))?;
    let mut rules = Vec::with_capacity(raw.rules.len());
    let mut priorities: HashMap<u32, usize> = HashMap::new();
    let mut listener_rule: HashMap<usize, usize> = HashMap::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        let rule = rule(&path, r, &listener_ids, &map_ids, &refs)?;
        if let Some(p) = rule.priority
            && let Some(other) = priorities.insert(p, i)
        {
            return Err(ConfigError::new(
                format!("{path}.priority"),
                format!(
                    "priority {p} is already used by rules[{other}]; priorities must be unique"
                ),
            ));
        }
        if let Some(other) = listener_rule.insert(rule.listener.0, i) {
            return Err(ConfigError::new(
                format!("{path}.listener"),
                format!(
                    "listener {:?} is already used by rules[{other}]; a listener takes exactly one rule",
                    r.listener
                ),
            ));
        }
        rules.push(rule);
    }

    let limits = match &raw.limits {
        None => Limits::default(),
        Some(l) => {
            let d = Limits::default();
            Limits {
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
                max_header_count: match l.max_header_count {
                    None => d.max_header_count,
                    Some(n) => in_range("limits.max_header_count", n, 1, 1_000)? as usize,
                },
                max_request_body: l
                    .max_request_body
                    .as_ref()
                    .map(|s| size("limits.max_request_body", s))
                    .transpose()?,
                max_connections: l
                    .max_connections
                    .map(|n| {
                        in_range("limits.max_connections", n, 1, 1_000_000).map(|n| n as usize)
                    })
                    .transpose()?,
            }
        }
    };

    let plugins = raw
        .plugins
        .iter()
        .enumerate()
        .map(|(i, p)| plugin(&format!("plugins[{i}]"), p, base))
        .collect::<Result<Vec<_>>>()?;
    let plugin_ids = names("plugins", raw.plugins.iter().map(|p| &p.name))?;
    // `builtin` names the built-in router unless a plugin of that name is configured; its
    // entry is added once the rules it is given are validated.
    let builtin_used = std::cell::Cell::new(false);
    let router = |field: String, name: &Option<String>| -> Result<Option<PluginId>> {
        let Some(name) = name else { return Ok(None) };
        if name == builtin::BUILTIN && !plugin_ids.contains_key(builtin::BUILTIN) {
            builtin::builtin_component().map_err(|why| ConfigError::new(&field, why))?;
            builtin_used.set(true);
            return Ok(Some(PluginId(plugins.len())));
        }
        let id = lookup(&field, &plugin_ids, "plugin", name)?;
        if plugins[id].kind != PluginKind::Router {
            return Err(ConfigError::new(
                field,
                format!(
                    "plugin {name:?} is a {} plugin; a router must be a plugin of kind \"router\"",
                    plugins[id].kind.as_str()
                ),
            ));
        }
        Ok(Some(PluginId(id)))
    };
    let mut listeners = listeners;
    for (i, (l, r)) in listeners.iter_mut().zip(&raw.listeners).enumerate() {
        l.router = router(format!("listeners[{i}].router"), &r.router)?;
    }
    for (i, (rule, r)) in rules.iter_mut().zip(&raw.rules).enumerate() {
        rule.router = router(format!("rules[{i}].router"), &r.router)?;
    }
    let probe_plugin = |field: String, name: &Option<String>| -> Result<Option<PluginId>> {
        let Some(name) = name else { return Ok(None) };
        let id = lookup(&field, &plugin_ids, "plugin", name)?;
        if plugins[id].kind != PluginKind::Probe {
            return Err(ConfigError::new(
                field,
                format!(
                    "plugin {name:?} is a {} plugin; a probe evaluator must be a plugin of kind \"probe\"",
                    plugins[id].kind.as_str()
                ),
            ));
        }
        Ok(Some(PluginId(id)))
    };
    let mut probes = probes;
    for (i, (p, r)) in probes.iter_mut().zip(&raw.probes).enumerate() {
        p.probe_plugin = probe_plugin(format!("probes[{i}].probe_plugin"), &r.probe_plugin)?;
    }
    for (i, (s, r)) in backend_settings
        .iter_mut()
        .zip(&raw.backend_settings)
        .enumerate()
    {
        s.probe_plugin = probe_plugin(
            format!("backend_settings[{i}].probe_plugin"),
            &r.probe_plugin,
        )?
        .or_else(|| s.probe.and_then(|p| probes[p.0].probe_plugin));
    }
    let gateway_router = match &raw.routing {
        Some(r) => router("routing.router".into(), &r.router)?,
        None => None,
    };

    let plugin_cache_dir = raw
        .plugin_engine
        .as_ref()
        .and_then(|e| e.cache_dir.as_ref())
        .map(|d| base.join(d));
    let plugin_max_instances = match raw.plugin_engine.as_ref().and_then(|e| e.max_instances) {
        None => None,
        Some(n @ 1..=10_000) => Some(n as u32),
        Some(n) => {
            return Err(ConfigError::new(
                "plugin_engine.max_instances",
                format!("{n} is out of range; it must be from 1 to 10000"),
            ));
        }
    };

    let mut config = Config {
        plugin_cache_dir,
        plugin_max_instances,
        plugins,
        router: gateway_router,
        listeners,
        backend_pools,
        backend_settings,
        url_path_maps,
        rules,
        redirects,
        rewrite_sets,
        limits,
        probes,
        admin,
    };
    if builtin_used.get() {
        let path = builtin::builtin_component().map_err(|why| ConfigError::new("", why))?;
        let rules = serde_json::to_string(&builtin::basic_rules(&config))
            .map_err(|e| ConfigError::new("", format!("cannot serialise the rules: {e}")))?;
        config.plugins.push(PluginConfig {
            name: builtin::BUILTIN.to_owned(),
            path: Some(path),
            kind: PluginKind::Router,
            config: rules,
            limits: crate::plugin::PluginLimits::default(),
            fail_policy: crate::plugin::FailPolicy::FailClosed,
            samples: Vec::new(),
            // The basic rules read the host and the path, never a header.
            request_headers: Some(Vec::new()),
        });
    }
    Ok(config)
}

/// Checks names are present and unique; returns name → index.
fn names<'a>(
    section: &str,
    names: impl Iterator<Item = &'a String>,
) -> Result<HashMap<&'a str, usize>> {
    let mut map = HashMap::new();
    for (i, name) in names.enumerate() {
        if name.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{section}[{i}].name"),
                "must not be empty",
            ));
        }
        if let Some(other) = map.insert(name.as_str(), i) {
            return Err(ConfigError::new(
                format!("{section}[{i}].name"),
                format!("{name:?} is already the name of {section}[{other}]"),
            ));
        }
    }
    Ok(map)
}

struct Refs<'a> {
    pools: &'a HashMap<&'a str, usize>,
    settings: &'a HashMap<&'a str, usize>,
    redirects: &'a HashMap<&'a str, usize>,
    rewrite_sets: &'a HashMap<&'a str, usize>,
}

fn lookup(path: &str, ids: &HashMap<&str, usize>, kind: &str, name: &str) -> Result<usize> {
    ids.get(name)
        .copied()
        .ok_or_else(|| ConfigError::new(path, format!("no {kind} named {name:?}")))
}

fn protocol(path: &str, value: Option<&str>) -> Result<Protocol> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("http") => Ok(Protocol::Http),
        Some("https") => Ok(Protocol::Https),
        Some(other) => Err(ConfigError::new(
            path,
            format!("unknown protocol {other:?}; expected \"http\" or \"https\""),
        )),
    }
}

fn listener(path: &str, raw: &RawListener, base: &Path) -> Result<Listener> {
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
        port: raw.port,
        bind_address,
        host_names,
        tls,
        router: None,
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
    let file = |p: &str| base.join(p);
    let (source, field) = match (
        &raw.certificate,
        &raw.certificate_key,
        &raw.certificate_pfx,
        &raw.certificate_password,
    ) {
        (Some(chain), Some(key), None, None) => (
            crate::tls::CertificateSource::Pem {
                chain: file(chain),
                key: file(key),
            },
            "certificate",
        ),
        (None, None, Some(pfx), password) => (
            crate::tls::CertificateSource::Pkcs12 {
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
        (None, None, None, _) => {
            return Err(ConfigError::new(
                path,
                "an https listener needs certificate and certificate_key (PEM), or certificate_pfx (PKCS#12)",
            ));
        }
        (_, _, Some(_), _) => {
            return Err(ConfigError::new(
                format!("{path}.certificate_pfx"),
                "set either certificate_pfx or certificate and certificate_key, not both",
            ));
        }
    };
    let certificate = source.load().map_err(|e| {
        ConfigError::new(
            format!("{path}.{field}"),
            format!("listener {:?}: {e}", raw.name),
        )
    })?;
    let min_version = match raw.min_tls_version.as_deref() {
        None | Some("1.2") => crate::tls::TlsVersion::Tls12,
        Some("1.3") => crate::tls::TlsVersion::Tls13,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{path}.min_tls_version"),
                format!("{other:?} is not supported; use \"1.2\" or \"1.3\""),
            ));
        }
    };
    Ok(Some(ListenerTls {
        source,
        certificate: std::sync::Arc::new(certificate),
        require_sni: raw.require_sni.unwrap_or(false),
        min_version,
    }))
}

/// Listeners sharing a port form one frontend: one bind address, at most one basic listener,
/// no host name claimed twice.
fn check_frontends(listeners: &[Listener]) -> Result<()> {
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

fn pool(path: &str, raw: &RawBackendPool) -> Result<BackendPool> {
    let mut addresses = Vec::with_capacity(raw.addresses.len());
    for (i, text) in raw.addresses.iter().enumerate() {
        let field = format!("{path}.addresses[{i}]");
        let address = backend_address(text).map_err(|why| ConfigError::new(&field, why))?;
        if addresses.contains(&address) {
            return Err(ConfigError::new(field, format!("{text:?} is listed twice")));
        }
        addresses.push(address);
    }
    Ok(BackendPool {
        name: raw.name.clone(),
        addresses,
    })
}

/// `10.0.0.4`, `10.0.0.4:8080`, `[::1]:8080`, `::1`, `app.internal`, `app.internal:8080`.
fn backend_address(text: &str) -> std::result::Result<BackendAddress, String> {
    let text = text.trim();
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(BackendAddress {
            host: BackendHost::Ip(sa.ip()),
            port: Some(port_nonzero(sa.port(), text)?),
        });
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(BackendAddress {
            host: BackendHost::Ip(ip),
            port: None,
        });
    }
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{text:?}: {port:?} is not a port number"))?;
            (name, Some(port_nonzero(port, text)?))
        }
        None => (text, None),
    };
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 || !trimmed.split('.').all(valid_label) {
        return Err(format!(
            "{text:?} is neither an IP address nor a DNS name (letters, digits, '-' and '.')"
        ));
    }
    Ok(BackendAddress {
        host: BackendHost::Dns(name.to_ascii_lowercase()),
        port,
    })
}

fn port_nonzero(port: u16, text: &str) -> std::result::Result<u16, String> {
    if port == 0 {
        Err(format!("{text:?}: port 0 cannot be connected to"))
    } else {
        Ok(port)
    }
}

pub(super) fn duration(path: &str, raw: &RawDuration) -> Result<Duration> {
    let bad = |why: String| ConfigError::new(path, why);
    match raw {
        RawDuration::Seconds(s) if *s >= 0 => Ok(Duration::from_secs(*s as u64)),
        RawDuration::Seconds(s) => Err(bad(format!("{s} is negative"))),
        RawDuration::Fractional(f) if f.is_finite() && *f >= 0.0 => Ok(Duration::from_secs_f64(*f)),
        RawDuration::Fractional(f) => Err(bad(format!("{f} is not a duration"))),
        RawDuration::Text(t) => {
            let t = t.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(t.len());
            let (number, unit) = t.split_at(split);
            let value: f64 = number.parse().map_err(|_| {
                bad(format!(
                    "{t:?} is not a duration; write seconds (20) or a number with a unit (\"500ms\", \"1.5s\", \"2m\", \"1h\")"
                ))
            })?;
            let scale = match unit.trim() {
                "ms" => 0.001,
                "" | "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                other => {
                    return Err(bad(format!(
                        "unknown unit {other:?} in {t:?}; use ms, s, m or h"
                    )));
                }
            };
            Ok(Duration::from_secs_f64(value * scale))
        }
    }
}

/// `n` when it lies within `min..=max`, else an error naming `path`.
fn in_range(path: &str, n: i64, min: i64, max: i64) -> Result<i64> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(ConfigError::new(
            path,
            format!("{n} is out of range; it must be from {min} to {max}"),
        ))
    }
}

/// A size: whole bytes, or a number with `KB`, `MB` or `GB` (powers of 1024, as nginx counts
/// `client_max_body_size`); at least 1 byte, at most 1 TB.
fn size(path: &str, raw: &RawSize) -> Result<u64> {
    const MAX: u64 = 1 << 40;
    let bytes = match raw {
        RawSize::Bytes(n) => u64::try_from(*n).ok(),
        RawSize::Text(text) => {
            let t = text.trim();
            let upper = t.to_ascii_uppercase();
            let (number, unit) = [
                ("KB", 1u64 << 10),
                ("MB", 1 << 20),
                ("GB", 1 << 30),
                ("B", 1),
            ]
            .into_iter()
            .find_map(|(suffix, unit)| upper.strip_suffix(suffix).map(|n| (n.trim(), unit)))
            .unwrap_or((t, 1));
            number.parse::<u64>().ok().and_then(|n| n.checked_mul(unit))
        }
    };
    match bytes {
        Some(b) if (1..=MAX).contains(&b) => Ok(b),
        _ => Err(ConfigError::new(
            path,
            format!(
                "{} is not a size from 1 byte to 1 TB; write bytes (1048576) or a number with KB, MB or GB (\"10MB\")",
                match raw {
                    RawSize::Bytes(n) => n.to_string(),
                    RawSize::Text(t) => format!("{t:?}"),
                }
            ),
        )),
    }
}

fn opt_duration(
    path: &str,
    raw: &Option<RawDuration>,
    default: Duration,
    max: Duration,
) -> Result<Duration> {
    let Some(raw) = raw else { return Ok(default) };
    let d = duration(path, raw)?;
    if d.is_zero() || d > max {
        return Err(ConfigError::new(
            path,
            format!(
                "{} is out of range; it must be more than 0 and at most {} s",
                fmt_duration(d),
                max.as_secs()
            ),
        ));
    }
    Ok(d)
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn settings(path: &str, raw: &RawBackendSettings, base: &Path) -> Result<BackendSettings> {
    if raw.port == 0 {
        return Err(ConfigError::new(
            format!("{path}.port"),
            "must be 1 to 65535",
        ));
    }
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
            crate::tls::TrustedRoots::load(
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
        port: raw.port,
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

const PLAIN_TARGET_FIELDS: [&str; 4] = [
    "backend_pool",
    "backend_settings",
    "redirect",
    "rewrite_set",
];

/// The fields that name a target, with their names for error paths.
struct TargetFields<'a> {
    names: [&'static str; 4],
    pool: &'a Option<String>,
    settings: &'a Option<String>,
    redirect: &'a Option<String>,
    rewrite_set: &'a Option<String>,
}

/// A forwarding target (pool + settings) or a redirect, exactly one of them.
fn target(path: &str, fields: TargetFields<'_>, refs: &Refs<'_>) -> Result<Target> {
    let TargetFields {
        names: [pool_field, settings_field, redirect_field, rewrite_field],
        pool,
        settings,
        redirect,
        rewrite_set,
    } = fields;
    let rewrite_set = rewrite_set
        .as_deref()
        .map(|n| {
            lookup(
                &format!("{path}.{rewrite_field}"),
                refs.rewrite_sets,
                "rewrite_set",
                n,
            )
            .map(RewriteSetId)
        })
        .transpose()?;
    match (pool, settings, redirect) {
        (Some(p), Some(s), None) => Ok(Target::Forward {
            pool: PoolId(lookup(
                &format!("{path}.{pool_field}"),
                refs.pools,
                "backend_pool",
                p,
            )?),
            settings: SettingsId(lookup(
                &format!("{path}.{settings_field}"),
                refs.settings,
                "backend_settings",
                s,
            )?),
            rewrite_set,
        }),
        (None, None, Some(r)) => {
            if rewrite_set.is_some() {
                return Err(ConfigError::new(
                    format!("{path}.{rewrite_field}"),
                    "a redirect takes no rewrite set",
                ));
            }
            Ok(Target::Redirect(RedirectId(lookup(
                &format!("{path}.{redirect_field}"),
                refs.redirects,
                "redirect",
                r,
            )?)))
        }
        (Some(_), None, None) => Err(ConfigError::new(
            format!("{path}.{settings_field}"),
            format!("{pool_field} needs {settings_field} beside it"),
        )),
        (None, Some(_), None) => Err(ConfigError::new(
            format!("{path}.{pool_field}"),
            format!("{settings_field} needs {pool_field} beside it"),
        )),
        (None, None, None) => Err(ConfigError::new(
            path,
            format!("needs {pool_field} and {settings_field}, or {redirect_field}"),
        )),
        (_, _, Some(_)) => Err(ConfigError::new(
            format!("{path}.{redirect_field}"),
            format!("a redirect excludes {pool_field} and {settings_field}"),
        )),
    }
}

fn url_path_map(path: &str, raw: &RawUrlPathMap, refs: &Refs<'_>) -> Result<UrlPathMap> {
    let default = target(
        path,
        TargetFields {
            names: [
                "default_backend_pool",
                "default_backend_settings",
                "default_redirect",
                "default_rewrite_set",
            ],
            pool: &raw.default_backend_pool,
            settings: &raw.default_backend_settings,
            redirect: &raw.default_redirect,
            rewrite_set: &raw.default_rewrite_set,
        },
        refs,
    )?;
    names(
        &format!("{path}.path_rules"),
        raw.path_rules.iter().map(|r| &r.name),
    )?;
    let mut path_rules = Vec::with_capacity(raw.path_rules.len());
    for (i, r) in raw.path_rules.iter().enumerate() {
        let rule_path = format!("{path}.path_rules[{i}]");
        if r.paths.is_empty() {
            return Err(ConfigError::new(
                format!("{rule_path}.paths"),
                "needs at least one path",
            ));
        }
        let mut paths = Vec::with_capacity(r.paths.len());
        for (j, p) in r.paths.iter().enumerate() {
            paths.push(path_pattern(&format!("{rule_path}.paths[{j}]"), p)?);
        }
        let target = target(
            &rule_path,
            TargetFields {
                names: PLAIN_TARGET_FIELDS,
                pool: &r.backend_pool,
                settings: &r.backend_settings,
                redirect: &r.redirect,
                rewrite_set: &r.rewrite_set,
            },
            refs,
        )?;
        path_rules.push(PathRule {
            name: r.name.clone(),
            paths,
            target,
        });
    }
    Ok(UrlPathMap {
        name: raw.name.clone(),
        default,
        path_rules,
    })
}

/// Application Gateway path rules: start with '/', a '*' only at the end, no query or fragment.
fn path_pattern(field: &str, p: &str) -> Result<PathPattern> {
    let why = if !p.starts_with('/') {
        Some("must start with '/'")
    } else if p.contains(['?', '#']) {
        Some("must not contain a query ('?') or fragment ('#')")
    } else if p.trim_end_matches('*').contains('*') || p.ends_with("**") {
        Some("'*' may only stand at the end")
    } else if p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        Some("must not contain spaces or control characters")
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::new(field, format!("{p:?} {why}"))),
        None => Ok(PathPattern::new(p)),
    }
}

fn rule(
    path: &str,
    raw: &RawRule,
    listeners: &HashMap<&str, usize>,
    maps: &HashMap<&str, usize>,
    refs: &Refs<'_>,
) -> Result<Rule> {
    let priority = match raw.priority {
        None => None,
        Some(p @ 1..=20_000) => Some(p as u32),
        Some(p) => {
            return Err(ConfigError::new(
                format!("{path}.priority"),
                format!("{p} is out of range; priorities run from 1 (first) to 20000"),
            ));
        }
    };
    let listener = ListenerId(lookup(
        &format!("{path}.listener"),
        listeners,
        "listener",
        &raw.listener,
    )?);
    let kind = match raw.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None if raw.url_path_map.is_some() => "path_based",
        None | Some("basic") => "basic",
        Some("path_based" | "pathbasedrouting") => "path_based",
        Some(other) => {
            return Err(ConfigError::new(
                format!("{path}.kind"),
                format!("unknown kind {other:?}; expected \"basic\" or \"path_based\""),
            ));
        }
    };
    let action = if kind == "path_based" {
        let Some(map) = &raw.url_path_map else {
            return Err(ConfigError::new(
                format!("{path}.url_path_map"),
                "a path_based rule needs a url_path_map",
            ));
        };
        for (field, set) in [
            ("backend_pool", raw.backend_pool.is_some()),
            ("backend_settings", raw.backend_settings.is_some()),
            ("redirect", raw.redirect.is_some()),
            ("rewrite_set", raw.rewrite_set.is_some()),
        ] {
            if set {
                return Err(ConfigError::new(
                    format!("{path}.{field}"),
                    "a path_based rule takes these from its url_path_map",
                ));
            }
        }
        RuleAction::PathBased(UrlPathMapId(lookup(
            &format!("{path}.url_path_map"),
            maps,
            "url_path_map",
            map,
        )?))
    } else {
        if raw.url_path_map.is_some() {
            return Err(ConfigError::new(
                format!("{path}.url_path_map"),
                "only a path_based rule takes a url_path_map",
            ));
        }
        RuleAction::Basic(target(
            path,
            TargetFields {
                names: PLAIN_TARGET_FIELDS,
                pool: &raw.backend_pool,
                settings: &raw.backend_settings,
                redirect: &raw.redirect,
                rewrite_set: &raw.rewrite_set,
            },
            refs,
        )?)
    };
    Ok(Rule {
        name: raw.name.clone(),
        priority,
        listener,
        action,
        router: None,
    })
}

fn redirect(path: &str, raw: &RawRedirect, listeners: &HashMap<&str, usize>) -> Result<Redirect> {
    let status = match raw
        .redirect_type
        .as_deref()
        .map(|t| t.to_ascii_lowercase().replace('_', ""))
        .as_deref()
    {
        None | Some("permanent") | Some("301") => StatusCode::MOVED_PERMANENTLY,
        Some("found") | Some("302") => StatusCode::FOUND,
        Some("seeother") | Some("303") => StatusCode::SEE_OTHER,
        Some("temporary") | Some("307") => StatusCode::TEMPORARY_REDIRECT,
        Some(_) => {
            return Err(ConfigError::new(
                format!("{path}.redirect_type"),
                format!(
                    "unknown type {:?}; expected \"permanent\" (301), \"found\" (302), \"see_other\" (303) or \"temporary\" (307)",
                    raw.redirect_type.as_deref().unwrap_or_default()
                ),
            ));
        }
    };
    let target = match (&raw.target_listener, &raw.target_url) {
        (Some(l), None) => RedirectTarget::Listener(ListenerId(lookup(
            &format!("{path}.target_listener"),
            listeners,
            "listener",
            l,
        )?)),
        (None, Some(url)) => {
            let uri: http::Uri = url.parse().map_err(|_| {
                ConfigError::new(
                    format!("{path}.target_url"),
                    format!("{url:?} is not a URL"),
                )
            })?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(ConfigError::new(
                    format!("{path}.target_url"),
                    format!("{url:?} must be an absolute http:// or https:// URL"),
                ));
            }
            RedirectTarget::Url(url.clone())
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                format!("{path}.target_url"),
                "set either target_listener or target_url, not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::new(
                path,
                "needs target_listener or target_url",
            ));
        }
    };
    Ok(Redirect {
        name: raw.name.clone(),
        status,
        target,
        include_path: raw.include_path.unwrap_or(true),
        include_query_string: raw.include_query_string.unwrap_or(true),
    })
}

fn rewrite_set(path: &str, raw: &RawRewriteSet) -> Result<RewriteSet> {
    let headers = |section: &str, list: &[RawHeaderRewrite]| -> Result<Vec<HeaderRewrite>> {
        let mut seen = HashSet::new();
        list.iter()
            .enumerate()
            .map(|(i, h)| {
                let field = format!("{path}.{section}[{i}]");
                let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                    ConfigError::new(
                        format!("{field}.name"),
                        format!("{:?} is not a header name", h.name),
                    )
                })?;
                // Application Gateway refuses these: they carry the connection's own state
                // (RFC 9110 §7.6.1), and rewriting them would break upgrades such as WebSocket.
                if name == http::header::CONNECTION || name == http::header::UPGRADE {
                    return Err(ConfigError::new(
                        format!("{field}.name"),
                        format!("{:?} cannot be rewritten", h.name),
                    ));
                }
                // Conditional rewrites of one header may differ by condition.
                if h.conditions.is_empty() && !seen.insert(name.clone()) {
                    return Err(ConfigError::new(
                        format!("{field}.name"),
                        format!("{:?} is rewritten twice in this set", h.name),
                    ));
                }
                let conditions = h
                    .conditions
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        rewrite_condition(
                            &format!("{field}.conditions[{j}]"),
                            c,
                            section == "response_headers",
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let value = match h.value.as_deref() {
                    None | Some("") => None,
                    Some(v) => Some(HeaderValue::from_str(v).map_err(|_| {
                        ConfigError::new(
                            format!("{field}.value"),
                            format!("{v:?} is not a valid header value"),
                        )
                    })?),
                };
                Ok(HeaderRewrite {
                    name,
                    value,
                    conditions,
                })
            })
            .collect()
    };
    Ok(RewriteSet {
        name: raw.name.clone(),
        request_headers: headers("request_headers", &raw.request_headers)?,
        response_headers: headers("response_headers", &raw.response_headers)?,
    })
}

/// A rewrite condition: a server variable Application Gateway names (`var_uri_path`,
/// `http_req_<header>`, `http_resp_<header>`), and a regular expression.
fn rewrite_condition(
    path: &str,
    raw: &RawRewriteCondition,
    response: bool,
) -> Result<RewriteCondition> {
    let name = raw.variable.as_str();
    let lower = name.to_ascii_lowercase();
    let header = |prefix: &str| {
        HeaderName::from_bytes(&name.as_bytes()[prefix.len()..]).map_err(|_| {
            ConfigError::new(
                format!("{path}.variable"),
                format!("{name:?} does not name a header"),
            )
        })
    };
    let variable = if lower.starts_with("http_req_") {
        ServerVariable::RequestHeader(header("http_req_")?)
    } else if lower.starts_with("http_resp_") {
        ServerVariable::ResponseHeader(header("http_resp_")?)
    } else {
        match lower.as_str() {
            "var_client_ip" => ServerVariable::ClientIp,
            "var_client_port" => ServerVariable::ClientPort,
            "var_host" => ServerVariable::Host,
            "var_http_method" => ServerVariable::Method,
            "var_uri_path" => ServerVariable::UriPath,
            "var_query_string" => ServerVariable::QueryString,
            "var_request_uri" => ServerVariable::RequestUri,
            "var_request_scheme" => ServerVariable::Scheme,
            "var_server_port" => ServerVariable::ServerPort,
            "var_http_status" => ServerVariable::Status,
            _ => {
                return Err(ConfigError::new(
                    format!("{path}.variable"),
                    format!(
                        "{name:?} is not a supported server variable (http_req_<header>, http_resp_<header>, var_client_ip, var_client_port, var_host, var_http_method, var_uri_path, var_query_string, var_request_uri, var_request_scheme, var_server_port, var_http_status)"
                    ),
                ));
            }
        }
    };
    if !response
        && matches!(
            variable,
            ServerVariable::ResponseHeader(_) | ServerVariable::Status
        )
    {
        return Err(ConfigError::new(
            format!("{path}.variable"),
            format!("{name:?} is known only once the response arrives: use it in response_headers"),
        ));
    }
    let pattern = regex_automata::meta::Regex::builder()
        .syntax(
            regex_automata::util::syntax::Config::new()
                .case_insensitive(raw.ignore_case.unwrap_or(true)),
        )
        .build(&raw.pattern)
        .map_err(|e| {
            ConfigError::new(
                format!("{path}.pattern"),
                format!("{:?} is not a regular expression: {e}", raw.pattern),
            )
        })?;
    Ok(RewriteCondition {
        variable,
        pattern,
        negate: raw.negate,
    })
}

fn probe(path: &str, raw: &RawProbe) -> Result<Probe> {
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
    if raw.port == Some(0) {
        return Err(ConfigError::new(
            format!("{path}.port"),
            "must be 1 to 65535",
        ));
    }
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
    let unhealthy_threshold = match raw.unhealthy_threshold {
        None => DEFAULT_UNHEALTHY_THRESHOLD,
        Some(n @ 1..=20) => n as u32,
        Some(n) => {
            return Err(ConfigError::new(
                format!("{path}.unhealthy_threshold"),
                format!("{n} is out of range; it must be 1 to 20"),
            ));
        }
    };
    let min_servers = match raw.min_servers {
        None => 0,
        Some(n @ 0..=10_000) => n as u32,
        Some(n) => {
            return Err(ConfigError::new(
                format!("{path}.min_servers"),
                format!("{n} is out of range; it must be 0 to 10000"),
            ));
        }
    };
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
        port: raw.port,
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
fn link_probes(
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

fn admin(raw: &RawAdmin) -> Result<Admin> {
    let ip = match &raw.bind_address {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(text) => text.parse().map_err(|_| {
            ConfigError::new(
                "admin.bind_address",
                format!("{text:?} is not an IP address"),
            )
        })?,
    };
    let token = match raw.token.as_deref() {
        None => None,
        Some(t) if t.chars().count() < 16 => {
            return Err(ConfigError::new(
                "admin.token",
                "must be at least 16 characters long",
            ));
        }
        Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(ConfigError::new(
                "admin.token",
                "must be printable ASCII without spaces",
            ));
        }
        Some(t) => Some(t.to_string()),
    };
    // The health view names every backend: off the machine, only for someone holding the token.
    if !ip.is_loopback() && token.is_none() {
        return Err(ConfigError::new(
            "admin.token",
            format!(
                "is required when the admin listener binds {ip}, which is not a loopback address"
            ),
        ));
    }
    Ok(Admin {
        bind: SocketAddr::new(ip, raw.port.unwrap_or(DEFAULT_ADMIN_PORT)),
        token,
    })
}

fn plugin(path: &str, raw: &RawPlugin, base: &Path) -> Result<PluginConfig> {
    let kind = match raw.kind.as_str() {
        "router" => PluginKind::Router,
        "probe" => PluginKind::Probe,
        other => {
            return Err(ConfigError::new(
                format!("{path}.kind"),
                format!("unknown kind {other:?}; expected \"router\" or \"probe\""),
            ));
        }
    };
    let fail_policy = match raw.fail_policy.as_deref() {
        None | Some("fail_closed") => crate::plugin::FailPolicy::FailClosed,
        Some("fail_open") => crate::plugin::FailPolicy::FailOpen,
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
            crate::plugin::Sample::validate(s).map_err(|(field, why)| {
                ConfigError::new(format!("{path}.samples[{i}].{field}"), why)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if kind != PluginKind::Router && raw.request_headers.is_some() {
        return Err(ConfigError::new(
            format!("{path}.request_headers"),
            "only router plugins are given request headers",
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
    let mut limits = crate::plugin::PluginLimits::default();
    if let Some(l) = &raw.limits {
        limits.call_timeout = opt_duration(
            &format!("{path}.limits.call_timeout"),
            &l.call_timeout,
            limits.call_timeout,
            Duration::from_secs(60),
        )?;
        if let Some(mb) = l.max_memory_mb {
            if !(1..=4096).contains(&mb) {
                return Err(ConfigError::new(
                    format!("{path}.limits.max_memory_mb"),
                    format!("{mb} is out of range; it must be from 1 to 4096"),
                ));
            }
            limits.max_memory_bytes = (mb as usize) << 20;
        }
        if let Some(n) = l.max_concurrency {
            if !(1..=1000).contains(&n) {
                return Err(ConfigError::new(
                    format!("{path}.limits.max_concurrency"),
                    format!("{n} is out of range; it must be from 1 to 1000"),
                ));
            }
            limits.max_concurrency = n as usize;
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
