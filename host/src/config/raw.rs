//! The configuration as written: serde types that mirror the TOML file one to one.
//!
//! Unknown fields are rejected here; every other rule lives in `super::validate`, which turns these
//! into types that cannot hold an invalid state.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub backend_pools: Vec<RawBackendPool>,
    #[serde(default)]
    pub backend_settings: Vec<RawBackendSettings>,
    #[serde(default)]
    pub url_path_maps: Vec<RawUrlPathMap>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub redirects: Vec<RawRedirect>,
    #[serde(default)]
    pub rewrite_sets: Vec<RawRewriteSet>,
    #[serde(default)]
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub probes: Vec<RawProbe>,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub plugins: Vec<RawPlugin>,
    #[serde(default)]
    pub routing: Option<RawRouting>,
    #[serde(default)]
    pub plugin_engine: Option<RawPluginEngine>,
    /// Client authentication settings HTTPS listeners refer to by name (`ssl_profile`).
    #[serde(default)]
    pub ssl_profiles: Vec<RawSslProfile>,
    /// Pages answered instead of the gateway's own error bodies, for every listener.
    #[serde(default)]
    pub custom_error_pages: Vec<RawErrorPage>,
    #[serde(default)]
    pub logging: Option<RawLogging>,
    #[serde(default)]
    pub telemetry: Option<RawTelemetry>,
}

/// The access log and trace context (`[logging]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// "text" (default) or "json".
    #[serde(default)]
    pub format: Option<String>,
    /// "stderr" (default), "off", or a file path.
    #[serde(default)]
    pub access_log: Option<String>,
    /// Whether the client's response carries X-AppGW-Trace-Id (default true).
    #[serde(default)]
    pub trace_id_response_header: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    #[serde(default)]
    pub protocol: Option<String>,
    pub port: i64,
    #[serde(default)]
    pub bind_address: Option<String>,
    #[serde(default)]
    pub host_names: Vec<String>,
    /// HTTPS: a PEM certificate chain (leaf first) with `certificate_key`, or a PKCS#12 bundle
    /// in `certificate_pfx` (with `certificate_password`).
    #[serde(default)]
    pub certificate: Option<String>,
    #[serde(default)]
    pub certificate_key: Option<String>,
    #[serde(default)]
    pub certificate_pfx: Option<String>,
    #[serde(default)]
    pub certificate_password: Option<String>,
    #[serde(default)]
    pub require_sni: Option<bool>,
    #[serde(default)]
    pub min_tls_version: Option<String>,
    /// The router plugin for requests this listener accepts (unless their rule names one).
    #[serde(default)]
    pub router: Option<String>,
    /// The message filter for WebSocket sessions this listener accepts (unless their rule or
    /// path rule names one).
    #[serde(default)]
    pub message_filter: Option<String>,
    /// HTTPS: the `[[ssl_profiles]]` entry whose client authentication applies.
    #[serde(default)]
    pub ssl_profile: Option<String>,
    /// Pages answered instead of the gateway's own error bodies, before the gateway-wide ones.
    #[serde(default)]
    pub custom_error_pages: Vec<RawErrorPage>,
}

/// An SSL profile (`[[ssl_profiles]]`): client authentication (mutual TLS) for the HTTPS
/// listeners that name it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSslProfile {
    pub name: String,
    /// PEM files, each a trusted client CA chain (root, then any intermediates).
    #[serde(default)]
    pub trusted_client_certificates: Vec<String>,
    /// Also require the client certificate's issuer to be the issuing CA of one of the files.
    #[serde(default)]
    pub verify_client_cert_issuer_dn: bool,
    /// Certificate revocation lists (PEM or DER) checked against client certificates.
    #[serde(default)]
    pub revocation_lists: Vec<String>,
    /// "strict" (default): a client without a valid certificate fails the handshake;
    /// "passthrough": any certificate, or none, is accepted and the verdict passed on.
    #[serde(default)]
    pub verify_client_auth_mode: Option<String>,
}

/// A custom error page: the body answered for one status the gateway generates itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrorPage {
    pub status: i64,
    pub file: String,
    /// Default: from the file's extension (.html, .htm, .txt, .json).
    #[serde(default)]
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendPool {
    pub name: String,
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendSettings {
    pub name: String,
    pub port: i64,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub request_timeout: Option<RawDuration>,
    #[serde(default)]
    pub host_name: Option<String>,
    #[serde(default)]
    pub pick_host_name_from_backend_address: bool,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub cookie_based_affinity: bool,
    #[serde(default)]
    pub affinity_cookie_name: Option<String>,
    #[serde(default)]
    pub connection_draining: Option<RawDraining>,
    #[serde(default)]
    pub probe: Option<String>,
    #[serde(default)]
    pub websocket_timeout: Option<String>,
    /// HTTPS backends: PEM files of the root certificates to trust instead of the system's.
    #[serde(default)]
    pub trusted_root_certificates: Vec<String>,
    /// A probe plugin judging this settings' probes (before the probe's own `probe_plugin`).
    #[serde(default)]
    pub probe_plugin: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDraining {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub timeout: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUrlPathMap {
    pub name: String,
    #[serde(default)]
    pub default_backend_pool: Option<String>,
    #[serde(default)]
    pub default_backend_settings: Option<String>,
    #[serde(default)]
    pub default_redirect: Option<String>,
    #[serde(default)]
    pub default_rewrite_set: Option<String>,
    #[serde(default)]
    pub path_rules: Vec<RawPathRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathRule {
    pub name: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub backend_pool: Option<String>,
    #[serde(default)]
    pub backend_settings: Option<String>,
    #[serde(default)]
    pub redirect: Option<String>,
    #[serde(default)]
    pub rewrite_set: Option<String>,
    /// The message filter for WebSocket sessions this path rule takes.
    #[serde(default)]
    pub message_filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub kind: Option<String>,
    pub listener: String,
    #[serde(default)]
    pub backend_pool: Option<String>,
    #[serde(default)]
    pub backend_settings: Option<String>,
    #[serde(default)]
    pub url_path_map: Option<String>,
    #[serde(default)]
    pub redirect: Option<String>,
    #[serde(default)]
    pub rewrite_set: Option<String>,
    /// The router plugin for requests this rule takes (the most specific choice).
    #[serde(default)]
    pub router: Option<String>,
    /// The message filter for WebSocket sessions this rule takes (unless a path rule names one).
    #[serde(default)]
    pub message_filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub name: String,
    #[serde(default)]
    pub redirect_type: Option<String>,
    #[serde(default)]
    pub target_listener: Option<String>,
    #[serde(default)]
    pub target_url: Option<String>,
    #[serde(default)]
    pub include_path: Option<bool>,
    #[serde(default)]
    pub include_query_string: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewriteSet {
    pub name: String,
    #[serde(default)]
    pub request_headers: Vec<RawHeaderRewrite>,
    #[serde(default)]
    pub response_headers: Vec<RawHeaderRewrite>,
    /// Application Gateway's rewrite rules; a set has these or the header lists above.
    #[serde(default)]
    pub rules: Vec<RawRewriteRule>,
}

/// A rewrite rule: conditions (all must hold) and the actions taken when they do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewriteRule {
    pub name: String,
    /// Lower first; Application Gateway's default is 100.
    #[serde(default)]
    pub rule_sequence: Option<u32>,
    #[serde(default)]
    pub conditions: Vec<RawRewriteCondition>,
    #[serde(default)]
    pub request_headers: Vec<RawHeaderAction>,
    #[serde(default)]
    pub response_headers: Vec<RawHeaderAction>,
    #[serde(default)]
    pub url_configuration: Option<RawUrlRewrite>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderAction {
    pub name: String,
    /// Absent or empty: the header is deleted.
    #[serde(default)]
    pub value: Option<String>,
}

/// Application Gateway's `urlConfiguration`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUrlRewrite {
    #[serde(default)]
    pub modified_path: Option<String>,
    #[serde(default)]
    pub modified_query_string: Option<String>,
    /// Application Gateway's "re-evaluate path map".
    #[serde(default)]
    pub reroute: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRewrite {
    pub name: String,
    /// Absent or empty: the header is deleted (Application Gateway's convention).
    #[serde(default)]
    pub value: Option<String>,
    /// The rewrite applies only when all of these hold.
    #[serde(default)]
    pub conditions: Vec<RawRewriteCondition>,
}

/// A rewrite condition: a server variable matched against a regular expression.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewriteCondition {
    pub variable: String,
    pub pattern: String,
    /// Default true, as Application Gateway's portal sets it.
    #[serde(default)]
    pub ignore_case: Option<bool>,
    #[serde(default)]
    pub negate: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub client_idle_timeout: Option<RawDuration>,
    #[serde(default)]
    pub shutdown_timeout: Option<RawDuration>,
    #[serde(default)]
    pub upgrade_drain_timeout: Option<RawDuration>,
    #[serde(default)]
    pub max_header_count: Option<i64>,
    /// Bytes (`1048576`), or a number with a unit (`"512KB"`, `"10MB"`, `"1GB"`, powers of 1024).
    #[serde(default)]
    pub max_request_body: Option<RawSize>,
    #[serde(default)]
    pub max_connections: Option<i64>,
}

/// A size in bytes, or a number with a unit (`"64KB"`, `"10MB"`, `"1GB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

/// A duration: whole seconds as Application Gateway writes them (`20`), or a number with a unit
/// (`"500ms"`, `"1.5s"`, `"2m"`, `"1h"`) so tests can use sub-second values.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    Seconds(i64),
    Fractional(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub name: String,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub pick_host_name_from_backend_settings: bool,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub interval: Option<RawDuration>,
    #[serde(default)]
    pub timeout: Option<RawDuration>,
    #[serde(default)]
    pub unhealthy_threshold: Option<i64>,
    #[serde(default)]
    pub min_servers: Option<i64>,
    #[serde(default, rename = "match")]
    pub match_: Option<RawProbeMatch>,
    /// A probe plugin judging this probe's responses instead of `match`.
    #[serde(default)]
    pub probe_plugin: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbeMatch {
    #[serde(default)]
    pub status_codes: Option<Vec<String>>,
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default)]
    pub bind_address: Option<String>,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (a mounted secret), instead of `token`.
    #[serde(default)]
    pub token_file: Option<String>,
    /// HTTPS, as a listener's certificate: a PEM chain with `certificate_key`, or a PKCS#12
    /// bundle in `certificate_pfx` (with `certificate_password`).
    #[serde(default)]
    pub certificate: Option<String>,
    #[serde(default)]
    pub certificate_key: Option<String>,
    #[serde(default)]
    pub certificate_pfx: Option<String>,
    #[serde(default)]
    pub certificate_password: Option<String>,
    /// Serve plain HTTP on an address that is not loopback (the token then crosses the network
    /// in clear).
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// `[telemetry]`: where the gateway sends its spans.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    #[serde(default)]
    pub service_name: Option<String>,
    #[serde(default)]
    pub request_histograms: Option<bool>,
    #[serde(default)]
    pub trace_context: Option<bool>,
}

/// A WebAssembly plugin (`[[plugins]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    pub name: String,
    /// The component (.wasm), relative to the configuration file's folder. Without one the
    /// plugin is declared but not loaded until the admin API loads a component for it.
    #[serde(default)]
    pub path: Option<String>,
    /// "router", "probe" or "message-filter".
    pub kind: String,
    /// Passed to the plugin's `init` as is (for example JSON).
    #[serde(default)]
    pub config: Option<String>,
    #[serde(default)]
    pub limits: Option<RawPluginLimits>,
    /// "fail_closed" (default) or "fail_open".
    #[serde(default)]
    pub fail_policy: Option<String>,
    /// Requests with expected decisions every new version must answer as expected
    /// (`[[plugins.samples]]`).
    #[serde(default)]
    pub samples: Vec<RawSample>,
    /// The request headers a router is given (default: all).
    #[serde(default)]
    pub request_headers: Option<Vec<String>>,
}

/// A sample as written in the configuration (`[[plugins.samples]]`; the fields are described in
/// `super::plugins`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSample {
    pub host: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub client_address: Option<String>,
    #[serde(default)]
    pub listener: Option<String>,
    #[serde(default)]
    pub websocket: bool,
    pub expect: String,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub settings: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub location: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginLimits {
    /// Wall-clock budget per call.
    #[serde(default)]
    pub call_timeout: Option<RawDuration>,
    /// Largest linear memory per instance, in MiB.
    #[serde(default)]
    pub max_memory_mb: Option<i64>,
    /// Instances of the plugin running at once.
    #[serde(default)]
    pub max_concurrency: Option<i64>,
    /// Message filters: the largest WebSocket message reassembled for the filter, in bytes.
    #[serde(default)]
    pub max_message_bytes: Option<i64>,
    /// Message filters: the largest per-session state a filter may keep, in bytes.
    #[serde(default)]
    pub max_state_bytes: Option<i64>,
}

/// Gateway-wide routing choices (`[routing]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// The router plugin for every request whose rule and listener name none.
    #[serde(default)]
    pub router: Option<String>,
}

/// `[plugin_engine] cache_dir`: a directory, or `true`/`false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawCacheDir {
    Dir(String),
    Enabled(bool),
}

impl<'de> Deserialize<'de> for RawCacheDir {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawCacheDir;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a directory, or false to keep compiled plugins in memory only")
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawCacheDir, E> {
                Ok(RawCacheDir::Enabled(v))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCacheDir, E> {
                Ok(RawCacheDir::Dir(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Settings shared by all plugins (`[plugin_engine]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginEngine {
    /// A directory for compiled components, relative to the configuration file's folder;
    /// `false` keeps them in memory only; absent (or `true`): the per-user cache directory.
    #[serde(default)]
    pub cache_dir: Option<RawCacheDir>,
    /// Plugin instances alive at once over all plugins (the pooling allocator's size).
    #[serde(default)]
    pub max_instances: Option<i64>,
}
