//! Configuration validation: each invalid configuration is refused with the exact error text
//! (field path and reason), and valid ones produce the documented defaults.

use std::time::Duration;

use wasmgate::config::{Config, HostOverride, Protocol, RedirectTarget, WebSocketTimeout};

#[path = "../../fuzz/fuzz_targets/config_check.rs"]
mod config_check;

const LISTENER: &str = "[[listeners]]\nname = \"web\"\nport = 8080\n\n";
const POOL: &str = "[[backend_pools]]\nname = \"pool\"\naddresses = [\"10.0.0.4\"]\n\n";
const SETTINGS: &str = "[[backend_settings]]\nname = \"settings\"\nport = 80\n\n";
const RULE: &str = "[[rules]]\nname = \"rule\"\npriority = 100\nlistener = \"web\"\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"\n\n";

/// A valid configuration: one listener, pool, settings and rule.
fn base() -> String {
    [LISTENER, POOL, SETTINGS, RULE].concat()
}

/// `base()` with the backend settings extended by `lines`.
fn with_settings(lines: &str) -> String {
    let settings = format!("[[backend_settings]]\nname = \"settings\"\nport = 80\n{lines}\n\n");
    [LISTENER, POOL, &settings, RULE].concat()
}

/// `base()` with the pool's addresses replaced.
fn with_addresses(addresses: &str) -> String {
    let pool = format!("[[backend_pools]]\nname = \"pool\"\naddresses = [{addresses}]\n\n");
    [LISTENER, &pool, SETTINGS, RULE].concat()
}

/// `base()` with the listener replaced by `listener`.
fn with_listener(listener: &str) -> String {
    [listener, POOL, SETTINGS, RULE].concat()
}

/// Listener "web" plus `extra`; pool and settings; then `rules` instead of the base rule.
fn with_rules(extra_listeners: &str, rules: &str) -> String {
    [LISTENER, extra_listeners, POOL, SETTINGS, rules].concat()
}

fn rule(name: &str, listener: &str, extra: &str) -> String {
    format!(
        "[[rules]]\nname = {name:?}\nlistener = {listener:?}\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"\n{extra}\n\n"
    )
}

fn listener(name: &str, port: u16, hosts: &str) -> String {
    format!("[[listeners]]\nname = {name:?}\nport = {port}\nhost_names = [{hosts}]\n\n")
}

/// Each case: what is wrong, the configuration, the exact error text.
fn invalid_cases() -> Vec<(&'static str, String, String)> {
    let redirect_both = {
        let redirect = "[[redirects]]\nname = \"r\"\ntarget_listener = \"web\"\ntarget_url = \"https://example.com\"\n\n";
        [base().as_str(), redirect].concat()
    };
    let rewrite = |section: &str, header: &str| {
        let set = format!(
            "[[rewrite_sets]]\nname = \"rw\"\n[[rewrite_sets.{section}]]\nname = {header:?}\nvalue = \"x\"\n\n"
        );
        [base().as_str(), &set].concat()
    };
    let path_map = |paths: &str| {
        let map = format!(
            "[[url_path_maps]]\nname = \"api\"\ndefault_backend_pool = \"pool\"\ndefault_backend_settings = \"settings\"\n\
             [[url_path_maps.path_rules]]\nname = \"p\"\npaths = [{paths}]\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"\n\n"
        );
        let rule = "[[rules]]\nname = \"rule\"\nlistener = \"web\"\nurl_path_map = \"api\"\n\n";
        [LISTENER, POOL, SETTINGS, &map, rule].concat()
    };
    let six_hosts =
        r#""a.example", "b.example", "c.example", "d.example", "e.example", "f.example""#;

    vec![
        (
            "a rule naming a url_path_map that does not exist",
            [
                LISTENER,
                POOL,
                SETTINGS,
                "[[rules]]\nname = \"rule\"\nlistener = \"web\"\nurl_path_map = \"api\"\n",
            ]
            .concat(),
            r#"rules[0].url_path_map: no url_path_map named "api""#.into(),
        ),
        (
            "a rule naming a backend pool that does not exist",
            [
                LISTENER,
                POOL,
                SETTINGS,
                &rule("rule", "web", "").replace("\"pool\"", "\"missing\""),
            ]
            .concat(),
            r#"rules[0].backend_pool: no backend_pool named "missing""#.into(),
        ),
        (
            "a rule naming a listener that does not exist",
            [POOL, SETTINGS, &rule("rule", "nowhere", "")].concat(),
            r#"rules[0].listener: no listener named "nowhere""#.into(),
        ),
        (
            "a rule with a pool but no settings",
            [
                LISTENER,
                POOL,
                SETTINGS,
                "[[rules]]\nname = \"rule\"\nlistener = \"web\"\nbackend_pool = \"pool\"\n",
            ]
            .concat(),
            "rules[0].backend_settings: backend_pool needs backend_settings beside it".into(),
        ),
        (
            "an unknown field",
            with_listener("[[listeners]]\nname = \"web\"\nport = 8080\ncolour = \"red\"\n\n"),
            "line 4, column 1: unknown field `colour`, expected one of `name`, `protocol`, `port`, `bind_address`, `host_names`, `certificate`, `certificate_key`, `certificate_pfx`, `certificate_password`, `require_sni`, `min_tls_version`, `router`, `message_filter`, `ssl_profile`, `custom_error_pages`".into(),
        ),
        (
            "two listeners with the same name",
            with_rules(&listener("web", 8081, ""), RULE),
            r#"listeners[1].name: "web" is already the name of listeners[0]"#.into(),
        ),
        (
            "two backend pools with the same name",
            [LISTENER, POOL, POOL, SETTINGS, RULE].concat(),
            r#"backend_pools[1].name: "pool" is already the name of backend_pools[0]"#.into(),
        ),
        (
            "priority 0",
            with_rules("", &rule("rule", "web", "priority = 0")),
            "rules[0].priority: 0 is out of range; it must be from 1 to 20000".into(),
        ),
        (
            "priority 20001",
            with_rules("", &rule("rule", "web", "priority = 20001")),
            "rules[0].priority: 20001 is out of range; it must be from 1 to 20000".into(),
        ),
        (
            "two rules with the same priority",
            with_rules(
                &listener("other", 8081, ""),
                &[
                    rule("a", "web", "priority = 7"),
                    rule("b", "other", "priority = 7"),
                ]
                .concat(),
            ),
            "rules[1].priority: priority 7 is already used by rules[0]; priorities must be unique"
                .into(),
        ),
        (
            "a listener used by two rules",
            with_rules(
                "",
                &[
                    rule("a", "web", "priority = 1"),
                    rule("b", "web", "priority = 2"),
                ]
                .concat(),
            ),
            r#"rules[1].listener: listener "web" is already used by rules[0]; a listener takes exactly one rule"#.into(),
        ),
        (
            "more than 5 host names",
            with_listener(&listener("web", 8080, six_hosts)),
            "listeners[0].host_names: at most 5 host names per listener, found 6".into(),
        ),
        (
            "a host name with '_'",
            with_listener(&listener("web", 8080, r#""bad_host.example""#)),
            r#"listeners[0].host_names[0]: "bad_host.example" contains '_'; host names take letters, digits, '-', '.', and the wildcards '*' and '?'"#.into(),
        ),
        (
            "a host name listed twice",
            with_listener(&listener("web", 8080, r#""a.example", "A.example""#)),
            r#"listeners[0].host_names[1]: "A.example" is listed twice"#.into(),
        ),
        (
            "a path with '*' in the middle",
            path_map(r#""/a/*/b""#),
            r#"url_path_maps[0].path_rules[0].paths[0]: "/a/*/b" '*' may only stand at the end"#
                .into(),
        ),
        (
            "a path not starting with '/'",
            path_map(r#""images/*""#),
            r#"url_path_maps[0].path_rules[0].paths[0]: "images/*" must start with '/'"#.into(),
        ),
        (
            "a path with a query",
            path_map(r#""/a?b=c""#),
            r#"url_path_maps[0].path_rules[0].paths[0]: "/a?b=c" must not contain a query ('?') or fragment ('#')"#.into(),
        ),
        (
            "a path rule without paths",
            path_map(""),
            "url_path_maps[0].path_rules[0].paths: needs at least one path".into(),
        ),
        (
            "a backend address that is not a DNS name",
            with_addresses(r#""bad_name.internal""#),
            r#"backend_pools[0].addresses[0]: "bad_name.internal" is neither an IP address nor a DNS name (letters, digits, '-' and '.')"#.into(),
        ),
        (
            "a backend address with a port that is not a number",
            with_addresses(r#""10.0.0.4:http""#),
            r#"backend_pools[0].addresses[0]: "10.0.0.4:http": "http" is not a port number"#.into(),
        ),
        (
            "a backend address with port 0",
            with_addresses(r#""10.0.0.4:0""#),
            r#"backend_pools[0].addresses[0]: "10.0.0.4:0": port 0 cannot be connected to"#.into(),
        ),
        (
            "a backend address listed twice",
            with_addresses(r#""10.0.0.4", "10.0.0.4""#),
            r#"backend_pools[0].addresses[1]: "10.0.0.4" is listed twice"#.into(),
        ),
        (
            "request_timeout 0",
            with_settings("request_timeout = 0"),
            "backend_settings[0].request_timeout: 0 s is out of range; it must be more than 0 and at most 86400 s".into(),
        ),
        (
            "request_timeout above 86400 s",
            with_settings("request_timeout = 86401"),
            "backend_settings[0].request_timeout: 86401 s is out of range; it must be more than 0 and at most 86400 s".into(),
        ),
        (
            "request_timeout with an unknown unit",
            with_settings(r#"request_timeout = "5x""#),
            r#"backend_settings[0].request_timeout: unknown unit "x" in "5x"; use ms, s, m or h"#
                .into(),
        ),
        (
            "host_name and pick_host_name_from_backend_address both set",
            with_settings(
                "host_name = \"backend.example\"\npick_host_name_from_backend_address = true",
            ),
            "backend_settings[0].host_name: set either host_name or pick_host_name_from_backend_address, not both".into(),
        ),
        (
            "affinity_cookie_name without cookie_based_affinity",
            with_settings(r#"affinity_cookie_name = "Sticky""#),
            "backend_settings[0].affinity_cookie_name: is set but cookie_based_affinity is false"
                .into(),
        ),
        (
            "an unknown websocket_timeout mode",
            with_settings(r#"websocket_timeout = "forever""#),
            r#"backend_settings[0].websocket_timeout: unknown mode "forever"; expected "session" or "idle""#.into(),
        ),
        (
            "backend settings on port 0",
            [
                LISTENER,
                POOL,
                "[[backend_settings]]\nname = \"settings\"\nport = 0\n\n",
                RULE,
            ]
            .concat(),
            "backend_settings[0].port: 0 is out of range; it must be from 1 to 65535".into(),
        ),
        (
            "a request header rewrite of Connection",
            rewrite("request_headers", "Connection"),
            r#"rewrite_sets[0].request_headers[0].name: "Connection" cannot be rewritten"#.into(),
        ),
        (
            "a response header rewrite of Upgrade",
            rewrite("response_headers", "Upgrade"),
            r#"rewrite_sets[0].response_headers[0].name: "Upgrade" cannot be rewritten"#.into(),
        ),
        (
            "a redirect with both target_listener and target_url",
            redirect_both,
            "redirects[0].target_url: set either target_listener or target_url, not both".into(),
        ),
        (
            "a redirect to a relative URL",
            [
                base().as_str(),
                "[[redirects]]\nname = \"r\"\ntarget_url = \"/elsewhere\"\n",
            ]
            .concat(),
            r#"redirects[0].target_url: "/elsewhere" must be an absolute http:// or https:// URL"#
                .into(),
        ),
        (
            "an unknown redirect type",
            [
                base().as_str(),
                "[[redirects]]\nname = \"r\"\nredirect_type = \"308\"\ntarget_url = \"https://example.com\"\n",
            ]
            .concat(),
            r#"redirects[0].redirect_type: unknown type "308"; expected "permanent" (301), "found" (302), "see_other" (303) or "temporary" (307)"#.into(),
        ),
        (
            "two basic listeners on the same port",
            with_rules(&listener("other", 8080, ""), RULE),
            "listeners[1].host_names: port 8080 already has a basic listener (listeners[0]); give one of them host names".into(),
        ),
        (
            "one host name claimed by two listeners on the same port",
            [
                listener("a", 8080, r#""www.example""#),
                listener("b", 8080, r#""www.example""#),
                POOL.into(),
                SETTINGS.into(),
                rule("rule", "a", ""),
            ]
            .concat(),
            r#"listeners[1].host_names: "www.example" on port 8080 is already claimed by listeners[0]"#.into(),
        ),
        (
            "an unknown listener protocol",
            with_listener("[[listeners]]\nname = \"web\"\nport = 8080\nprotocol = \"ftp\"\n\n"),
            r#"listeners[0].protocol: unknown protocol "ftp"; expected "http" or "https""#.into(),
        ),
        (
            "client_idle_timeout 0",
            [base().as_str(), "[limits]\nclient_idle_timeout = 0\n"].concat(),
            "limits.client_idle_timeout: 0 s is out of range; it must be more than 0 and at most 86400 s".into(),
        ),
        (
            "an unknown log format",
            [base().as_str(), "[logging]\nformat = \"yaml\"\n"].concat(),
            r#"logging.format: "yaml" is not "text" or "json""#.into(),
        ),
        (
            "an empty access log path",
            [base().as_str(), "[logging]\naccess_log = \"\"\n"].concat(),
            r#"logging.access_log: must be "stderr", "off" or a file path"#.into(),
        ),
        (
            "an unknown [logging] key",
            [base().as_str(), "[logging]\nlevel = \"debug\"\n"].concat(),
            "line 21, column 1: unknown field `level`, expected one of `format`, `access_log`, `trace_id_response_header`".into(),
        ),
    ]
}

#[test]
fn invalid_configurations_are_refused_with_exact_errors() {
    let mut failures = Vec::new();
    for (what, toml, expected) in invalid_cases() {
        match Config::from_toml(&toml) {
            Ok(_) => failures.push(format!(
                "{what}: accepted, expected error {expected:?}\n{toml}"
            )),
            Err(e) if e.to_string() == expected => {
                // Display is "path: reason"; the fields must agree with it.
                let joined = if e.path.is_empty() {
                    e.reason.clone()
                } else {
                    format!("{}: {}", e.path, e.reason)
                };
                if joined != expected {
                    failures.push(format!(
                        "{what}: path {:?} and reason {:?} do not form {expected:?}",
                        e.path, e.reason
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "{what}:\n  expected {expected:?}\n  got      {:?}",
                e.to_string()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} configuration case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_base_configuration_is_valid() {
    if let Err(e) = Config::from_toml(&base()) {
        panic!("the valid base configuration of the table test is refused: {e}");
    }
}

#[test]
fn defaults_are_application_gateways() {
    let config = Config::from_toml(&base()).expect("valid");
    let settings = &config.backend_settings[0];
    assert_eq!(
        settings.request_timeout,
        Duration::from_secs(20),
        "request timeout defaults to 20 s"
    );
    assert_eq!(
        settings.host,
        HostOverride::PassThrough,
        "Host is passed through by default"
    );
    assert!(settings.affinity.is_none(), "affinity is off by default");
    assert_eq!(
        settings.websocket_timeout,
        WebSocketTimeout::Session,
        "the request timeout bounds a whole WebSocket session by default"
    );
    assert!(
        !settings.draining.enabled,
        "connection draining is off by default"
    );
    assert_eq!(
        settings.draining.timeout,
        Duration::from_secs(30),
        "draining timeout defaults to 30 s"
    );
    assert_eq!(config.listeners[0].protocol, Protocol::Http);
    assert!(!config.listeners[0].is_multi_site(), "no host names: basic");
    assert_eq!(
        config.limits.client_idle_timeout,
        Duration::from_secs(60),
        "client idle timeout defaults to 60 s"
    );
    assert_eq!(
        config.logging,
        wasmgate::config::Logging {
            format: wasmgate::config::LogFormat::Text,
            access_log: wasmgate::config::AccessLogTarget::Stderr,
            trace_id_response_header: true,
        },
        "text access log on stderr, trace id answered to clients"
    );
}

#[test]
fn valid_values_are_accepted() {
    let config = Config::from_toml(&with_settings(
        "request_timeout = \"300ms\"\ncookie_based_affinity = true\naffinity_cookie_name = \"Sticky\"\nwebsocket_timeout = \"idle\"\npath = \"/base/\"",
    ))
    .unwrap_or_else(|e| panic!("valid settings refused: {e}"));
    let s = &config.backend_settings[0];
    assert_eq!(s.request_timeout, Duration::from_millis(300));
    assert_eq!(
        s.affinity.as_ref().map(|a| a.cookie_name.as_str()),
        Some("Sticky")
    );
    assert_eq!(s.websocket_timeout, WebSocketTimeout::Idle);

    let default_cookie = Config::from_toml(&with_settings("cookie_based_affinity = true"))
        .unwrap_or_else(|e| panic!("affinity refused: {e}"));
    assert_eq!(
        default_cookie.backend_settings[0]
            .affinity
            .as_ref()
            .map(|a| a.cookie_name.as_str()),
        Some("ApplicationGatewayAffinity"),
        "the affinity cookie is ApplicationGatewayAffinity unless renamed"
    );

    let hosts = Config::from_toml(&with_listener(&listener(
        "web",
        8080,
        r#""www.example", "*.example", "app?.example""#,
    )))
    .unwrap_or_else(|e| panic!("wildcard host names refused: {e}"));
    assert!(hosts.listeners[0].is_multi_site());
    assert!(hosts.listeners[0].host_names[1].is_wildcard());

    let pick = Config::from_toml(&with_settings("pick_host_name_from_backend_address = true"))
        .unwrap_or_else(|e| panic!("pick_host_name_from_backend_address refused: {e}"));
    assert_eq!(
        pick.backend_settings[0].host,
        HostOverride::FromBackendAddress
    );

    let redirect = Config::from_toml(
        &[
            base().as_str(),
            "[[redirects]]\nname = \"r\"\nredirect_type = \"temporary\"\ntarget_listener = \"web\"\n",
        ]
        .concat(),
    )
    .unwrap_or_else(|e| panic!("redirect refused: {e}"));
    let r = &redirect.redirects[0];
    assert_eq!(r.status.as_u16(), 307);
    assert!(matches!(r.target, RedirectTarget::Listener(_)));
    assert!(
        r.include_path && r.include_query_string,
        "redirects include path and query by default"
    );

    let shared_port = Config::from_toml(&with_rules(
        &listener("site", 8080, r#""www.example""#),
        RULE,
    ))
    .unwrap_or_else(|e| panic!("a basic and a multi-site listener may share a port, but: {e}"));
    assert_eq!(shared_port.listeners.len(), 2);
}

/// Every input the configuration fuzzer has kept (`fuzz/corpus/config`, which `scripts/fuzz`
/// grows) still loads or is refused with a message, never a panic, as text and as the value of
/// every kind of number.
#[test]
fn the_fuzz_corpus_loads_or_is_refused_never_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/config") {
        let bytes = std::fs::read(entry.expect("corpus entry").path()).expect("corpus file");
        // libFuzzer gives the target only inputs that are UTF-8, as `&str`.
        if let Ok(text) = std::str::from_utf8(&bytes) {
            config_check::check(text);
            replayed += 1;
        }
    }
    assert!(replayed >= 100, "only {replayed} corpus inputs replayed");
}
