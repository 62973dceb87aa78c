//! Configuration in two stages: [`raw`] mirrors the TOML file (unknown fields rejected), [`validate`]
//! turns it into the types below, which cannot hold an invalid state: every reference is resolved to
//! an index, every duration is in range, every header name is valid. Errors name the field's path.

mod matchers;
pub mod raw;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

pub use matchers::{HostPattern, PathPattern};

/// Application Gateway's request timeout default (backend HTTP settings).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Application Gateway's connection draining default.
pub const DEFAULT_DRAINING_TIMEOUT: Duration = Duration::from_secs(30);
/// Application Gateway's affinity cookie.
pub const DEFAULT_AFFINITY_COOKIE: &str = "ApplicationGatewayAffinity";

/// A configuration error: where (the field's path, e.g. `rules[2].url_path_map`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

macro_rules! id_type {
    ($($name:ident),*) => {$(
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub usize);
    )*};
}
id_type!(
    ListenerId,
    PoolId,
    SettingsId,
    UrlPathMapId,
    RuleId,
    RedirectId,
    RewriteSetId
);

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub backend_pools: Vec<BackendPool>,
    pub backend_settings: Vec<BackendSettings>,
    pub url_path_maps: Vec<UrlPathMap>,
    pub rules: Vec<Rule>,
    pub redirects: Vec<Redirect>,
    pub rewrite_sets: Vec<RewriteSet>,
    pub limits: Limits,
}

impl Config {
    /// Parses and validates a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let path = e
                .span()
                .map(|span| line_col(text, span.start))
                .unwrap_or_default();
            ConfigError::new(path, e.message().trim_end().to_string())
        })?;
        validate::validate(raw)
    }

    /// Reads, parses and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        Self::from_toml(&text).map_err(|mut e| {
            e.path = if e.path.is_empty() {
                path.display().to_string()
            } else {
                format!("{} {}", path.display(), e.path)
            };
            e
        })
    }

    pub fn listener(&self, id: ListenerId) -> &Listener {
        &self.listeners[id.0]
    }
    pub fn pool(&self, id: PoolId) -> &BackendPool {
        &self.backend_pools[id.0]
    }
    pub fn settings(&self, id: SettingsId) -> &BackendSettings {
        &self.backend_settings[id.0]
    }
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {col}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub bind_address: IpAddr,
    /// Empty: a basic listener (any host). Otherwise a multi-site listener.
    pub host_names: Vec<HostPattern>,
}

impl Listener {
    pub fn is_multi_site(&self) -> bool {
        !self.host_names.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct BackendPool {
    pub name: String,
    pub addresses: Vec<BackendAddress>,
}

/// A backend server as written in a pool: an IP address or a DNS name, with an optional port
/// (else the backend settings' port applies).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddress {
    pub host: BackendHost,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendHost {
    Ip(IpAddr),
    Dns(String),
}

impl fmt::Display for BackendHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            BackendHost::Ip(ip) => write!(f, "{ip}"),
            BackendHost::Dns(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for BackendAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

/// Which Host header the backend sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOverride {
    /// The client's Host header, unchanged (Application Gateway's default).
    PassThrough,
    Fixed(HeaderValue),
    /// `pick_host_name_from_backend_address`: the pool member's IP or DNS name.
    FromBackendAddress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebSocketTimeout {
    /// The request timeout bounds the whole session (Application Gateway's behaviour).
    Session,
    /// The request timeout bounds silence: traffic in either direction resets it.
    Idle,
}

#[derive(Debug, Clone)]
pub struct Affinity {
    pub cookie_name: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Draining {
    pub enabled: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub request_timeout: Duration,
    pub host: HostOverride,
    /// Path override: prefixes (basic rules) or replaces the matched prefix (path rules).
    pub path: Option<String>,
    pub affinity: Option<Affinity>,
    pub draining: Draining,
    /// Name of a custom probe; probing itself is configured in the `probes` section.
    pub probe: Option<String>,
    pub websocket_timeout: WebSocketTimeout,
}

/// Where a request goes once its rule (or path rule) is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Forward {
        pool: PoolId,
        settings: SettingsId,
        rewrite_set: Option<RewriteSetId>,
    },
    Redirect(RedirectId),
}

#[derive(Debug, Clone)]
pub struct PathRule {
    pub name: String,
    pub paths: Vec<PathPattern>,
    pub target: Target,
}

#[derive(Debug, Clone)]
pub struct UrlPathMap {
    pub name: String,
    pub default: Target,
    pub path_rules: Vec<PathRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    Basic(Target),
    PathBased(UrlPathMapId),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub priority: Option<u32>,
    pub listener: ListenerId,
    pub action: RuleAction,
}

#[derive(Debug, Clone)]
pub enum RedirectTarget {
    Listener(ListenerId),
    Url(String),
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub name: String,
    pub status: StatusCode,
    pub target: RedirectTarget,
    pub include_path: bool,
    pub include_query_string: bool,
}

#[derive(Debug, Clone)]
pub struct HeaderRewrite {
    pub name: HeaderName,
    /// `None` deletes the header.
    pub value: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
pub struct RewriteSet {
    pub name: String,
    pub request_headers: Vec<HeaderRewrite>,
    pub response_headers: Vec<HeaderRewrite>,
}

/// Front-end limits. The defaults are Application Gateway's.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client connection waiting for a request head (idle keep-alive, or a head that is slow
    /// to arrive) is closed after this long.
    pub client_idle_timeout: Duration,
    /// On SIGTERM, in-flight work gets this long to finish.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            client_idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Largest request target (URL) accepted; longer → 414.
pub const MAX_URL_BYTES: usize = 32 * 1024;
/// Largest request head (header section) accepted; larger → 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// A one-screen summary of a configuration, for `wasmgate check`.
pub fn summary(config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "listeners:");
    for l in &config.listeners {
        let hosts = if l.host_names.is_empty() {
            "any host (basic)".to_string()
        } else {
            l.host_names
                .iter()
                .map(HostPattern::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "  {:<20} {}://{}:{}  {hosts}",
            l.name,
            l.protocol.as_str(),
            l.bind_address,
            l.port
        );
    }
    let _ = writeln!(out, "backend pools:");
    for p in &config.backend_pools {
        let members: Vec<String> = p.addresses.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  {:<20} [{}]", p.name, members.join(", "));
    }
    let _ = writeln!(out, "backend settings:");
    for s in &config.backend_settings {
        let _ = writeln!(
            out,
            "  {:<20} {}:{} timeout {}{}{}",
            s.name,
            s.protocol.as_str(),
            s.port,
            validate::fmt_duration(s.request_timeout),
            if s.affinity.is_some() {
                ", affinity"
            } else {
                ""
            },
            if s.websocket_timeout == WebSocketTimeout::Idle {
                ", websocket idle timeout"
            } else {
                ""
            },
        );
    }
    let _ = writeln!(out, "rules:");
    for r in &config.rules {
        let prio = r.priority.map_or("-".to_string(), |p| p.to_string());
        let action = match r.action {
            RuleAction::Basic(t) => describe_target(config, t),
            RuleAction::PathBased(m) => {
                let map = &config.url_path_maps[m.0];
                format!(
                    "path map {:?} ({} path rules, default {})",
                    map.name,
                    map.path_rules.len(),
                    describe_target(config, map.default)
                )
            }
        };
        let _ = writeln!(
            out,
            "  {:<20} priority {prio:<5} listener {:?} → {action}",
            r.name,
            config.listener(r.listener).name
        );
    }
    out
}

fn describe_target(config: &Config, t: Target) -> String {
    match t {
        Target::Forward { pool, settings, .. } => format!(
            "pool {:?} with {:?}",
            config.pool(pool).name,
            config.settings(settings).name
        ),
        Target::Redirect(r) => format!("redirect {:?}", config.redirects[r.0].name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_is_valid() {
        let config = Config::from_toml(include_str!("../../../examples/gateway.toml"))
            .expect("examples/gateway.toml must stay valid");
        assert_eq!(config.listeners.len(), 3);
        assert_eq!(config.rules.len(), 3);
    }

    #[test]
    fn errors_name_the_field() {
        let err = Config::from_toml(
            r#"
            [[listeners]]
            name = "l"
            port = 80
            [[rules]]
            name = "r"
            listener = "l"
            url_path_map = "api"
            "#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"rules[0].url_path_map: no url_path_map named "api""#
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_position() {
        let err = Config::from_toml("[[listeners]]\nname = \"l\"\nport = 80\nprotcol = \"http\"\n")
            .unwrap_err();
        assert!(err.path.starts_with("line 4"), "{err}");
        assert!(err.reason.contains("unknown field `protcol`"), "{err}");
    }
}
