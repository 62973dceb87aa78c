//! Configuration in two stages: [`raw`] mirrors the TOML file (unknown fields rejected), [`validate`]
//! turns it into the types below, which cannot hold an invalid state: every reference is resolved to
//! an index, every duration is in range, every header name is valid. Errors name the field's path.

pub mod builtin;
mod certs;
mod error_pages;
mod matchers;
pub mod oci;
mod plugins;
pub mod raw;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

pub use certs::{CertError, CertificateSource, ClientCas, TrustedRoots, provider};
pub use error_pages::{ErrorPage, ErrorPages, MAX_ERROR_PAGE_BYTES};
pub use matchers::{HostPattern, PathPattern};
pub use oci::OciReference;
pub use plugins::{
    Expected, FailPolicy, PluginConfig, PluginKind, PluginLimits, Sample, SampleRequest,
};
pub(crate) use validate::fmt_duration;

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
    RewriteSetId,
    ProbeId,
    PluginId,
    SslProfileId
);

/// Where compiled plugins are kept between starts (`[plugin_engine] cache_dir`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PluginCache {
    /// The per-user cache directory (`$WASMGATE_PLUGIN_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/wasmgate`, else `~/.cache/wasmgate`); memory only when there is none.
    #[default]
    Default,
    /// This directory (resolved against the configuration file's folder).
    Dir(std::path::PathBuf),
    /// Memory only: every start compiles again.
    Off,
}

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
    pub probes: Vec<Probe>,
    /// The admin listener (backend health API); `None` when the `[admin]` section is absent.
    pub admin: Option<Admin>,
    /// WebAssembly plugins, loaded when the gateway starts.
    pub plugins: Vec<PluginConfig>,
    /// The gateway-wide router plugin (`[routing] router`): used when neither the rule nor the
    /// listener names one.
    pub router: Option<PluginId>,
    /// Where compiled plugin components are kept between starts (`[plugin_engine] cache_dir`).
    pub plugin_cache: PluginCache,
    /// Plugin instances alive at once over all plugins (`[plugin_engine] max_instances`);
    /// `None` sizes the engine from the configured plugins.
    pub plugin_max_instances: Option<u32>,
    /// Client authentication settings, referred to by HTTPS listeners (`ssl_profile`).
    pub ssl_profiles: Vec<SslProfile>,
    /// Pages answered instead of the gateway's own error bodies, unless the listener has its
    /// own for the status.
    pub custom_error_pages: ErrorPages,
    /// The access log and trace context (`[logging]`).
    pub logging: Logging,
    /// SHA-256 of the configuration's text (hex), when it was read from text.
    pub source_hash: Option<Box<str>>,
    /// `[telemetry]`: span export.
    pub telemetry: Telemetry,
}

impl Config {
    /// Parses and validates a TOML configuration. Relative file paths (certificates) are
    /// taken from the working directory.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_in(text, Path::new("."))
    }

    /// Parses and validates a TOML configuration whose relative file paths start in `base`.
    pub fn from_toml_in(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let path = e
                .span()
                .map(|span| line_col(text, span.start))
                .unwrap_or_default();
            ConfigError::new(path, e.message().trim_end().to_string())
        })?;
        let mut config = validate::validate(raw, base)?;
        config.source_hash = Some(source_hash(text));
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml_in(&text, base).map_err(|mut e| {
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
    pub fn plugin(&self, id: PluginId) -> &PluginConfig {
        &self.plugins[id.0]
    }
    pub fn ssl_profile(&self, id: SslProfileId) -> &SslProfile {
        &self.ssl_profiles[id.0]
    }

    /// The custom page for a status the gateway generates on `listener` (the listener's own,
    /// else the gateway-wide one); `listener` is `None` before a listener is known.
    pub fn error_page(
        &self,
        listener: Option<ListenerId>,
        status: StatusCode,
    ) -> Option<&ErrorPage> {
        listener
            .and_then(|l| self.listeners[l.0].custom_error_pages.get(status))
            .or_else(|| self.custom_error_pages.get(status))
    }

    /// The router plugin for a request taken by `rule` on `listener`: the rule's, else the
    /// listener's, else the gateway-wide one (the most specific choice wins).
    pub fn router_for(&self, listener: ListenerId, rule: RuleId) -> Option<PluginId> {
        self.rules[rule.0]
            .router
            .or(self.listeners[listener.0].router)
            .or(self.router)
    }

    /// Who uses plugin `id`, in the configuration's words: `routing.router`, `listener "web"`,
    /// `rule "shop"`, `backend settings "api"` (whose probes it judges). Empty when nothing does.
    pub fn plugin_users(&self, id: PluginId) -> Vec<String> {
        let mut users = Vec::new();
        if self.router == Some(id) {
            users.push("routing.router".to_owned());
        }
        users.extend(
            self.listeners
                .iter()
                .filter(|l| l.router == Some(id))
                .map(|l| format!("listener {:?}", l.name)),
        );
        users.extend(
            self.rules
                .iter()
                .filter(|r| r.router == Some(id))
                .map(|r| format!("rule {:?}", r.name)),
        );
        users.extend(self.message_filter_users(id));
        users.extend(
            self.backend_settings
                .iter()
                .filter(|s| s.probe_plugin == Some(id))
                .map(|s| format!("backend settings {:?}", s.name)),
        );
        users
    }

    /// Who names message filter `id`: listeners, rules and path rules, in the configuration's
    /// words.
    fn message_filter_users(&self, id: PluginId) -> Vec<String> {
        let mut users: Vec<String> = self
            .listeners
            .iter()
            .filter(|l| l.message_filter == Some(id))
            .map(|l| format!("listener {:?}", l.name))
            .collect();
        users.extend(
            self.rules
                .iter()
                .filter(|r| r.message_filter == Some(id))
                .map(|r| format!("rule {:?}", r.name)),
        );
        for map in &self.url_path_maps {
            users.extend(
                map.path_rules
                    .iter()
                    .filter(|p| p.message_filter == Some(id))
                    .map(|p| format!("path rule {:?} of {:?}", p.name, map.name)),
            );
        }
        users
    }

    /// The message filter for a WebSocket session taken by `rule` on `listener` (and path rule
    /// `path_rule`'s filter, if one matched): the most specific one named.
    pub fn message_filter_for(
        &self,
        listener: ListenerId,
        rule: RuleId,
        path_rule: Option<PluginId>,
    ) -> Option<PluginId> {
        path_rule
            .or(self.rules[rule.0].message_filter)
            .or(self.listeners[listener.0].message_filter)
    }

    /// Whether any rule, listener or the gateway names a router plugin.
    pub fn has_routers(&self) -> bool {
        self.router.is_some()
            || self.listeners.iter().any(|l| l.router.is_some())
            || self.rules.iter().any(|r| r.router.is_some())
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
    /// HTTPS listeners: the certificate and the handshake rules.
    pub tls: Option<ListenerTls>,
    /// The router plugin for this listener's requests, unless their rule names one.
    pub router: Option<PluginId>,
    /// The message filter for this listener's WebSocket sessions, unless their rule or path
    /// rule names one.
    pub message_filter: Option<PluginId>,
    /// Pages answered instead of the gateway's own error bodies on this listener.
    pub custom_error_pages: ErrorPages,
}

/// An HTTPS listener's certificate (loaded and checked at validation) and handshake rules. The
/// rules belong to the port: listeners sharing one agree on them.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub source: CertificateSource,
    pub certificate: std::sync::Arc<rustls::sign::CertifiedKey>,
    /// No SNI match (or no SNI) fails the handshake instead of falling back.
    pub require_sni: bool,
    pub min_version: TlsVersion,
    /// The SSL profile whose client authentication applies (mutual TLS).
    pub ssl_profile: Option<SslProfileId>,
}

/// An SSL profile (`[[ssl_profiles]]`): the client authentication of the HTTPS listeners that
/// name it, as Application Gateway's SSL profiles carry it.
#[derive(Debug, Clone)]
pub struct SslProfile {
    pub name: String,
    pub client_auth: ClientAuth,
}

/// Mutual TLS: which client certificates a listener accepts.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// The trusted client CA chains and revocation lists, read at validation and again on
    /// certificate reload.
    pub cas: ClientCas,
    /// The client certificate's issuer must be the issuing CA (the deepest certificate) of one
    /// of the trusted chains, not merely chain up to one of their roots.
    pub verify_issuer_dn: bool,
    pub mode: ClientAuthMode,
}

/// Application Gateway's `verifyClientAuthMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// A client without a valid certificate fails the handshake.
    Strict,
    /// The gateway asks for a certificate but accepts any, or none; the verdict reaches the
    /// backend through `client_certificate_verification`.
    Passthrough,
}

/// The lowest TLS version an HTTPS listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }

    pub(crate) fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::Tls12 => &BOTH,
            TlsVersion::Tls13 => &TLS13_ONLY,
        }
    }
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
    /// The custom probe; `None` probes with the default probe.
    pub probe: Option<ProbeId>,
    pub websocket_timeout: WebSocketTimeout,
    /// HTTPS backends: the roots to verify against; `None` uses the system's.
    pub trusted_roots: Option<TrustedRoots>,
    /// The probe plugin judging these settings' probes: the settings' own `probe_plugin`, else
    /// their probe's.
    pub probe_plugin: Option<PluginId>,
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
    /// The message filter for the WebSocket sessions this path rule takes.
    pub message_filter: Option<PluginId>,
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
    /// The router plugin for this rule's requests.
    pub router: Option<PluginId>,
    /// The message filter for this rule's WebSocket sessions, unless a path rule names one.
    pub message_filter: Option<PluginId>,
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

/// A rewrite set: Application Gateway's rewrite rule set, its rules in the order they apply.
#[derive(Debug, Clone)]
pub struct RewriteSet {
    pub name: String,
    /// Ascending rule sequence; rules of equal sequence in the order written.
    pub rules: Vec<RewriteRule>,
    /// Whether a rule may re-evaluate the path map (`url.reroute`).
    pub reroutes: bool,
}

/// A rewrite rule: when all its conditions hold, its actions apply.
#[derive(Debug, Clone)]
pub struct RewriteRule {
    pub name: String,
    pub sequence: u32,
    /// All must hold (none: always).
    pub conditions: Vec<RewriteCondition>,
    pub request_headers: Vec<HeaderAction>,
    pub response_headers: Vec<HeaderAction>,
    pub url: Option<UrlRewrite>,
}

/// Sets a header to a value (text and variables), or deletes it (`value` `None`).
#[derive(Debug, Clone)]
pub struct HeaderAction {
    pub name: HeaderName,
    pub value: Option<Template>,
}

/// Application Gateway's URL configuration: the path and query the backend gets, and whether the
/// path map is evaluated again with the new path.
#[derive(Debug, Clone)]
pub struct UrlRewrite {
    /// `None` keeps the path.
    pub path: Option<Template>,
    /// `None` keeps the query; a value that comes out empty removes it.
    pub query: Option<Template>,
    /// Application Gateway's "re-evaluate path map".
    pub reroute: bool,
}

/// A value written as text with server variables and captures in braces (`/shop/{var_uri_path_1}`),
/// parsed once when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Box<[TemplatePart]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(Box<str>),
    /// `{var_client_ip}`, `{http_req_Host}`: a variable's whole value.
    Variable(ServerVariable),
    /// `{var_uri_path_1}`: group `group` of what the rule's condition `condition` matched.
    Capture {
        condition: usize,
        group: usize,
    },
}

impl TemplatePart {
    /// Whether the part can be known only once the response arrives; `conditions` are its
    /// rule's.
    pub fn on_response(&self, conditions: &[RewriteCondition]) -> bool {
        match self {
            TemplatePart::Text(_) => false,
            TemplatePart::Variable(v) => v.on_response(),
            TemplatePart::Capture { condition, .. } => {
                conditions[*condition].variable.on_response()
            }
        }
    }
}

/// A condition of a rewrite rule, as Application Gateway writes them: a server variable, an RE2
/// regular expression searched for in its value, and whether to negate the result. A variable
/// without a value (an absent header) matches nothing.
#[derive(Debug, Clone)]
pub struct RewriteCondition {
    pub variable: ServerVariable,
    pub pattern: regex_automata::meta::Regex,
    pub negate: bool,
    /// Whether a value of the rule uses this condition's capture groups (then the match records
    /// them; otherwise it only answers yes or no, which is cheaper).
    pub captures_used: bool,
}

/// The server variables of Application Gateway's rewrites (its names in brackets). Adding one
/// means a variant here, its name in [`ServerVariable::parse`], and its value in the proxy's one
/// lookup function (`proxy::rewrite::lookup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerVariable {
    /// A request header (`http_req_<name>`).
    RequestHeader(HeaderName),
    /// A response header (`http_resp_<name>`); response rewrites only.
    ResponseHeader(HeaderName),
    /// `var_add_x_forwarded_for_proxy`: the client's X-Forwarded-For with the client's IP
    /// (without port) appended.
    AddXForwardedForProxy,
    /// `var_client_ip`
    ClientIp,
    /// `var_client_port`
    ClientPort,
    /// `var_client_user`: the user name of Basic authentication (`Authorization: Basic`).
    ClientUser,
    /// `var_cookie_<name>`: that cookie's value.
    Cookie(Box<str>),
    /// `var_host`: the request's host, without a port.
    Host,
    /// `var_http_method`
    Method,
    /// `var_http_status`: the response status; response rewrites only.
    Status,
    /// `var_client_certificate`: the client certificate, PEM, URL-encoded.
    ClientCertificate,
    /// `var_client_certificate_issuer`: its issuer DN (RFC 4514).
    ClientCertificateIssuer,
    /// `var_client_certificate_subject`: its subject DN (RFC 4514).
    ClientCertificateSubject,
    /// `var_client_certificate_serial`: its serial number, hex.
    ClientCertificateSerial,
    /// `var_client_certificate_fingerprint`: its SHA-1 fingerprint, hex.
    ClientCertificateFingerprint,
    /// `var_client_certificate_verification`: `SUCCESS`, `FAILED:<reason>` or `NONE`.
    ClientCertificateVerification,
    /// `var_http_version`: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`.
    HttpVersion,
    /// `var_query_string`: the query, without `?`.
    QueryString,
    /// `var_received_bytes`: the request's length: request line, header fields and the body
    /// its Content-Length announces.
    ReceivedBytes,
    /// `var_request_query`: the arguments of the request line (the query, as `query_string`).
    RequestQuery,
    /// `var_request_scheme`: `http` or `https`.
    Scheme,
    /// `var_request_uri`: path and query as the client sent them.
    RequestUri,
    /// `var_sent_bytes`: the response's length as the backend sent it: status line, header
    /// fields and the body its Content-Length announces; response rewrites only.
    SentBytes,
    /// `var_server_name`: the host name the request was served for.
    ServerName,
    /// `var_server_port`: the listener's port.
    ServerPort,
    /// `var_ssl_connection_protocol`: `TLSv1.2`, `TLSv1.3`; empty on plain HTTP.
    SslConnectionProtocol,
    /// `var_ssl_enabled`: `on` over TLS, else empty.
    SslEnabled,
    /// `var_uri_path`: the path, without the query.
    UriPath,
}

impl ServerVariable {
    /// The names `var_<name>` takes, for error messages.
    pub const NAMES: &'static str = "http_req_<header>, http_resp_<header>, var_add_x_forwarded_for_proxy, var_client_certificate, var_client_certificate_fingerprint, var_client_certificate_issuer, var_client_certificate_serial, var_client_certificate_subject, var_client_certificate_verification, var_client_ip, var_client_port, var_client_user, var_cookie_<name>, var_host, var_http_method, var_http_status, var_http_version, var_query_string, var_received_bytes, var_request_query, var_request_scheme, var_request_uri, var_sent_bytes, var_server_name, var_server_port, var_ssl_connection_protocol, var_ssl_enabled, var_uri_path";

    /// A variable from Application Gateway's name for it (`var_uri_path`, `http_req_Host`);
    /// `None` when it names none.
    pub fn parse(name: &str) -> Option<ServerVariable> {
        let lower = name.to_ascii_lowercase();
        let header = |prefix: &str| HeaderName::from_bytes(&name.as_bytes()[prefix.len()..]).ok();
        if lower.starts_with("http_req_") {
            return header("http_req_").map(ServerVariable::RequestHeader);
        }
        if lower.starts_with("http_resp_") {
            return header("http_resp_").map(ServerVariable::ResponseHeader);
        }
        let var = lower.strip_prefix("var_")?;
        if var.starts_with("cookie_") {
            // Cookie names keep their case: the case the client sends.
            let cookie = &name["var_cookie_".len()..];
            return (!cookie.is_empty()).then(|| ServerVariable::Cookie(cookie.into()));
        }
        Some(match var {
            "add_x_forwarded_for_proxy" => ServerVariable::AddXForwardedForProxy,
            "client_ip" => ServerVariable::ClientIp,
            "client_port" => ServerVariable::ClientPort,
            "client_user" => ServerVariable::ClientUser,
            "client_certificate" => ServerVariable::ClientCertificate,
            "client_certificate_issuer" => ServerVariable::ClientCertificateIssuer,
            "client_certificate_subject" => ServerVariable::ClientCertificateSubject,
            "client_certificate_serial" => ServerVariable::ClientCertificateSerial,
            "client_certificate_fingerprint" => ServerVariable::ClientCertificateFingerprint,
            "client_certificate_verification" => ServerVariable::ClientCertificateVerification,
            "host" => ServerVariable::Host,
            "http_method" => ServerVariable::Method,
            "http_status" => ServerVariable::Status,
            "http_version" => ServerVariable::HttpVersion,
            "query_string" => ServerVariable::QueryString,
            "received_bytes" => ServerVariable::ReceivedBytes,
            "request_query" => ServerVariable::RequestQuery,
            "request_scheme" => ServerVariable::Scheme,
            "request_uri" => ServerVariable::RequestUri,
            "sent_bytes" => ServerVariable::SentBytes,
            "server_name" => ServerVariable::ServerName,
            "server_port" => ServerVariable::ServerPort,
            "ssl_connection_protocol" => ServerVariable::SslConnectionProtocol,
            "ssl_enabled" => ServerVariable::SslEnabled,
            "uri_path" => ServerVariable::UriPath,
            _ => return None,
        })
    }

    /// Whether the value exists only once the backend's response arrives.
    pub fn on_response(&self) -> bool {
        matches!(
            self,
            ServerVariable::ResponseHeader(_) | ServerVariable::Status | ServerVariable::SentBytes
        )
    }
}

/// Front-end limits. The defaults are Application Gateway's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// A client connection waiting for a request head (idle keep-alive, or a head that is slow
    /// to arrive) is closed after this long.
    pub client_idle_timeout: Duration,
    /// On SIGTERM, in-flight work gets this long to finish.
    pub shutdown_timeout: Duration,
    /// After a binary upgrade handed the sockets over, how long the old process keeps its
    /// WebSocket sessions (and requests) before closing them (1001) and exiting.
    pub upgrade_drain_timeout: Duration,
    /// Most header fields in a request head; more → 431.
    pub max_header_count: usize,
    /// Largest request body, checked from Content-Length before forwarding and counted while
    /// a body without one streams; larger → 413. `None`: unlimited.
    pub max_request_body: Option<u64>,
    /// Most client connections served at once per listening socket; past it a new connection
    /// gets a short 503 (plain HTTP) or is closed (HTTPS) at once. `None`: unlimited.
    pub max_connections: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            client_idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            upgrade_drain_timeout: Duration::from_secs(300),
            // hyper's own default.
            max_header_count: 100,
            max_request_body: None,
            max_connections: None,
        }
    }
}

/// Application Gateway's default probe interval, timeout and unhealthy threshold.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Longest `match.body` Application Gateway accepts, in characters.
pub const MAX_PROBE_BODY_MATCH: usize = 4090;
/// The admin listener's port when the `[admin]` section names none.
pub const DEFAULT_ADMIN_PORT: u16 = 9190;

/// An inclusive range of HTTP status codes, as in `match.status_codes = ["200-399"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub first: u16,
    pub last: u16,
}

impl StatusRange {
    /// Application Gateway's healthy range when a probe names none.
    pub const DEFAULT: StatusRange = StatusRange {
        first: 200,
        last: 399,
    };

    pub fn contains(self, status: u16) -> bool {
        (self.first..=self.last).contains(&status)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Which Host header a custom probe sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeHost {
    /// `host`: a fixed name.
    Fixed(HeaderValue),
    /// `pick_host_name_from_backend_settings`: the settings' host name (or the server's address
    /// when the settings pick theirs from the backend address).
    FromBackendSettings,
    /// Neither: `127.0.0.1`, as the default probe sends.
    Loopback,
}

/// A custom health probe (`[[probes]]`).
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub protocol: Protocol,
    pub host: ProbeHost,
    /// Path and query sent, starting with `/`.
    pub path: String,
    /// Port probed; `None`: the server's port (its own, else the settings').
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    /// This many servers stay in rotation even when probes fail.
    pub min_servers: u32,
    /// Healthy status codes; never empty.
    pub status_codes: Vec<StatusRange>,
    /// A substring the response body must contain.
    pub body: Option<String>,
    /// A probe plugin judging the responses instead of the status codes and body above.
    pub probe_plugin: Option<PluginId>,
}

/// `[logging]`: the access log's format and destination, and whether clients see the trace id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    pub format: LogFormat,
    pub access_log: AccessLogTarget,
    /// Answer `X-AppGW-Trace-Id` to the client as well as the backend.
    pub trace_id_response_header: bool,
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            access_log: AccessLogTarget::Stderr,
            trace_id_response_header: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of `key=value` pairs per record, without colour codes.
    Text,
    /// One JSON object per line, with Application Gateway's access-log field names.
    Json,
}

/// Where access-log records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    /// Standard error, while `RUST_LOG` enables the `wasmgate::access` target (it does by default).
    Stderr,
    /// A file, appended to, reopened on SIGUSR1 (for logrotate).
    File(std::path::PathBuf),
}

/// The hex SHA-256 of a configuration's text, as the metrics report the running configuration.
pub fn source_hash(text: &str) -> Box<str> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex.into()
}

/// The admin listener: the backend health API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub bind: std::net::SocketAddr,
    /// Required as `Authorization: Bearer <token>`; always set when `bind` is not loopback.
    pub token: Option<String>,
    /// HTTPS: the admin listener's certificate. Set whenever `bind` is not loopback, unless
    /// `allow_plaintext` says otherwise.
    pub tls: Option<AdminTls>,
}

/// The admin listener's certificate, configured as an HTTPS listener's is (loaded and checked
/// at validation).
#[derive(Debug, Clone)]
pub struct AdminTls {
    pub source: CertificateSource,
    pub certificate: std::sync::Arc<rustls::sign::CertifiedKey>,
}

impl PartialEq for AdminTls {
    /// The same files: a certificate read again from them is the same configuration.
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for AdminTls {}

/// `[telemetry]`: what the gateway reports besides its logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telemetry {
    /// The OpenTelemetry collector spans are exported to (`otlp_endpoint`); `None` exports
    /// nothing.
    pub otlp: Option<OtlpEndpoint>,
    /// `service.name` of the exported spans' resource (`service_name`, default `wasmgate`).
    pub service_name: String,
    /// The per-request latency histograms (`request_histograms`, default on): gateway total
    /// time, backend connect, first-byte and last-byte time. Off, requests are still counted
    /// by listener, rule, target and status, with their bytes.
    pub request_histograms: bool,
    /// W3C trace context and `X-AppGW-Trace-Id` (`trace_context`, default on). Off, a request's
    /// `traceparent` and `tracestate` pass through untouched, no trace header is added either
    /// way and no span is exported; the access log's `transactionId` is still a fresh id.
    pub trace_context: bool,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            otlp: None,
            service_name: DEFAULT_SERVICE_NAME.into(),
            request_histograms: true,
            trace_context: true,
        }
    }
}

impl Telemetry {
    /// What only applies at the next start: where spans go and how they are named.
    pub fn export(&self) -> (&Option<OtlpEndpoint>, &str) {
        (&self.otlp, &self.service_name)
    }
}

/// `service.name` of exported spans unless `[telemetry] service_name` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "wasmgate";

/// An OTLP/HTTP collector: plain HTTP to `host:port`, spans POSTed to `traces_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// Host name or IP address as written (an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
    /// The endpoint's path with `/v1/traces` appended, as the OTLP specification asks of a
    /// base endpoint (`http://collector:4318` → `/v1/traces`).
    pub traces_path: String,
}

impl OtlpEndpoint {
    /// `host:port` for the `Host` header and for connecting (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
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
    let _ = writeln!(out, "probes:");
    for s in &config.backend_settings {
        let _ = match s.probe.map(|p| &config.probes[p.0]) {
            None => writeln!(
                out,
                "  {:<20} default probe: GET / every 30 s, timeout 30 s, down after 3 failures",
                s.name
            ),
            Some(p) => writeln!(
                out,
                "  {:<20} probe {:?}: GET {} every {}, timeout {}, down after {} failures{}",
                s.name,
                p.name,
                p.path,
                validate::fmt_duration(p.interval),
                validate::fmt_duration(p.timeout),
                p.unhealthy_threshold,
                if p.min_servers > 0 {
                    format!(", min_servers {}", p.min_servers)
                } else {
                    String::new()
                },
            ),
        };
    }
    if let Some(admin) = &config.admin {
        let _ = writeln!(
            out,
            "admin: {}://{}{}",
            if admin.tls.is_some() { "https" } else { "http" },
            admin.bind,
            if admin.token.is_some() {
                " (token required)"
            } else {
                ""
            }
        );
    }
    if !config.plugins.is_empty() {
        let _ = writeln!(out, "plugins:");
        for (i, p) in config.plugins.iter().enumerate() {
            let source = match (&p.path, &p.reference) {
                (Some(f), _) => f.display().to_string(),
                (None, Some(r)) => r.to_string(),
                (None, None) => "(no path: loaded through the admin API)".to_owned(),
            };
            let users = config.plugin_users(PluginId(i));
            let users = if users.is_empty() {
                "used by nothing".to_owned()
            } else {
                format!("used by {}", users.join(", "))
            };
            let _ = writeln!(
                out,
                "  {:<20} {:<6} {source}  {users}",
                p.name,
                p.kind.as_str()
            );
        }
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

    /// A listener, a pool, a path map with one path rule, a rule, and plugins `r` (a router) and
    /// `f` (a message filter) declared without components; `extra` goes on the named section.
    fn filters_config(listener: &str, rule: &str, path_rule: &str, limits: &str) -> String {
        format!(
            r#"
            [[listeners]]
            name = "l"
            port = 80
            {listener}
            [[backend_pools]]
            name = "p"
            addresses = ["10.0.0.1"]
            [[backend_settings]]
            name = "s"
            port = 80
            [[url_path_maps]]
            name = "m"
            default_backend_pool = "p"
            default_backend_settings = "s"
            [[url_path_maps.path_rules]]
            name = "chat"
            paths = ["/chat/*"]
            backend_pool = "p"
            backend_settings = "s"
            {path_rule}
            [[rules]]
            name = "r"
            kind = "path_based"
            listener = "l"
            url_path_map = "m"
            {rule}
            [[plugins]]
            name = "r"
            kind = "router"
            [[plugins]]
            name = "f"
            kind = "message-filter"
            {limits}
            "#
        )
    }

    #[test]
    fn message_filters_are_named_on_listeners_rules_and_path_rules() {
        let config = Config::from_toml(&filters_config(
            "message_filter = \"f\"",
            "message_filter = \"f\"",
            "message_filter = \"f\"",
            "[plugins.limits]\nmax_message_bytes = 4096\nmax_state_bytes = 64",
        ))
        .expect("valid");
        let f = Some(PluginId(1));
        assert_eq!(config.listeners[0].message_filter, f);
        assert_eq!(config.rules[0].message_filter, f);
        assert_eq!(config.url_path_maps[0].path_rules[0].message_filter, f);
        assert_eq!(config.plugins[1].kind, PluginKind::MessageFilter);
        assert_eq!(config.plugins[1].limits.max_message_bytes, 4096);
        assert_eq!(config.plugins[1].limits.max_state_bytes, 64);
        assert_eq!(
            config.message_filter_for(ListenerId(0), RuleId(0), None),
            f,
            "the rule's, else the listener's"
        );
        let users = config.plugin_users(PluginId(1));
        assert_eq!(users.len(), 3, "{users:?}");
    }

    #[test]
    fn message_filter_errors_name_the_field() {
        let cases = [
            (
                filters_config("", "message_filter = \"r\"", "", ""),
                r#"rules[0].message_filter: plugin "r" is a router plugin; a message filter must be a plugin of kind "message-filter""#,
            ),
            (
                filters_config("", "", "message_filter = \"nope\"", ""),
                r#"url_path_maps[0].path_rules[0].message_filter: no plugin named "nope""#,
            ),
            (
                filters_config("", "", "", "[plugins.limits]\nmax_message_bytes = 10"),
                "plugins[1].limits.max_message_bytes: 10 is out of range",
            ),
        ];
        for (toml, expected) in cases {
            let err = Config::from_toml(&toml).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        let router_limit = filters_config("", "", "", "").replace(
            "kind = \"router\"",
            "kind = \"router\"\n[plugins.limits]\nmax_state_bytes = 1",
        );
        let err = Config::from_toml(&router_limit).unwrap_err().to_string();
        assert_eq!(
            err,
            "plugins[0].limits.max_state_bytes: only message filters reassemble messages and keep session state"
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
