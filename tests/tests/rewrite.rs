//! Rewrite rules end to end: URL rewrites the backend sees, captures from conditions, the path
//! map re-evaluated with a rewritten path, server variables in values, conditions with negate
//! and case.

use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::tls::{Pki, client_config, https_get, toml_path};
use wasmgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn url_rewrites_set_the_path_and_query_the_backend_gets() {
    let b = HttpBackend::start("app").await;
    let mut toml = listener("web", 0, &[]);
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "rewrite_set = \"rw\"");
    toml += r#"
[[rewrite_sets]]
name = "rw"
[[rewrite_sets.rules]]
name = "shop"
conditions = [{ variable = "var_uri_path", pattern = '^/shop/(\w+)/(\d+)$' }]
request_headers = [{ name = "x-category", value = "{var_uri_path_1}" }]
url_configuration = { modified_path = "/products/{var_uri_path_2}", modified_query_string = "category={var_uri_path_1}&src=gw" }
[[rewrite_sets.rules]]
name = "drop-query"
conditions = [{ variable = "var_uri_path", pattern = "^/private/" }]
url_configuration = { modified_query_string = "" }
[[rewrite_sets.rules]]
name = "late"
rule_sequence = 200
conditions = [{ variable = "var_query_string", pattern = "^late=(.*)$" }]
url_configuration = { modified_path = "/late/{var_query_string_1}" }
[[rewrite_sets.rules]]
name = "early"
rule_sequence = 50
conditions = [{ variable = "var_query_string", pattern = "^late=" }]
url_configuration = { modified_path = "/early" }
"#;
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    get(addr, "site.test", "/shop/shoes/42?x=1").await;
    let seen = b.last();
    assert_eq!(
        seen.uri, "/products/42?category=shoes&src=gw",
        "path and query set from the path's captures"
    );
    assert_eq!(seen.header("x-category"), Some("shoes"));
    assert_eq!(
        seen.header("x-original-url"),
        Some("/shop/shoes/42?x=1"),
        "X-Original-URL keeps what the client asked for"
    );

    get(addr, "site.test", "/private/a?token=secret").await;
    assert_eq!(
        b.last().uri,
        "/private/a",
        "an empty query string removes it"
    );

    get(addr, "site.test", "/other?q=1").await;
    assert_eq!(
        b.last().uri,
        "/other?q=1",
        "no condition held: the URL is kept"
    );

    get(addr, "site.test", "/x?late=a%20b").await;
    assert_eq!(
        b.last().uri,
        "/late/a%20b?late=a%20b",
        "rules apply by rule_sequence: the later rule's path wins"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn captures_from_a_header_with_negate_and_case() {
    let b = HttpBackend::start("app").await;
    let mut toml = listener("web", 0, &[]);
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "rewrite_set = \"rw\"");
    toml += r#"
[[rewrite_sets]]
name = "rw"
[[rewrite_sets.rules]]
name = "tenant"
conditions = [{ variable = "http_req_Host", pattern = '^([a-z]+)\.contoso\.com$' }]
request_headers = [{ name = "x-tenant", value = "tenant={http_req_Host_1}" }]
url_configuration = { modified_path = "/{http_req_Host_1}{var_uri_path}" }
[[rewrite_sets.rules]]
name = "no-debug"
conditions = [{ variable = "http_req_X-Debug", pattern = "^1$", negate = true }]
request_headers = [{ name = "x-debug-off", value = "yes" }]
[[rewrite_sets.rules]]
name = "exact-case"
conditions = [{ variable = "http_req_X-Mode", pattern = "^Beta$", ignore_case = false }]
request_headers = [{ name = "x-beta", value = "yes" }]
[[rewrite_sets.rules]]
name = "both"
conditions = [
  { variable = "var_http_method", pattern = "^GET$" },
  { variable = "var_uri_path", pattern = "^/page" },
]
request_headers = [{ name = "x-both", value = "yes" }]
"#;
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    get_with(addr, "Blue.Contoso.com", "/page", &[("x-mode", "Beta")]).await;
    let seen = b.last();
    assert_eq!(
        seen.header("x-tenant"),
        Some("tenant=Blue"),
        "a capture keeps the value's case (ignore_case is the default)"
    );
    assert_eq!(seen.path(), "/Blue/page");
    assert_eq!(
        seen.header("x-debug-off"),
        Some("yes"),
        "absent header, negated"
    );
    assert_eq!(seen.header("x-beta"), Some("yes"));
    assert_eq!(seen.header("x-both"), Some("yes"), "all conditions hold");

    get_with(
        addr,
        "other.test",
        "/page",
        &[("x-debug", "1"), ("x-mode", "beta")],
    )
    .await;
    let seen = b.last();
    assert_eq!(seen.header("x-tenant"), None, "the host does not match");
    assert_eq!(seen.path(), "/page");
    assert_eq!(
        seen.header("x-debug-off"),
        None,
        "negated condition matched"
    );
    assert_eq!(
        seen.header("x-beta"),
        None,
        "ignore_case false: beta is not Beta"
    );

    get(addr, "other.test", "/elsewhere").await;
    assert_eq!(
        b.last().header("x-both"),
        None,
        "one of two conditions fails"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reroute_evaluates_the_path_map_again_with_the_new_path() {
    let legacy = HttpBackend::start("legacy").await;
    let new = HttpBackend::start("new").await;
    let mut toml = listener("web", 0, &[]);
    toml += &pool("legacy", &[legacy.addr]);
    toml += &pool("new", &[new.addr]);
    toml += &settings("settings", "");
    toml += "[[rules]]\nname = \"paths\"\nlistener = \"web\"\nkind = \"path_based\"\nurl_path_map = \"map\"\n\n";
    toml += r#"
[[url_path_maps]]
name = "map"
default_backend_pool = "legacy"
default_backend_settings = "settings"
[[url_path_maps.path_rules]]
name = "old"
paths = ["/old/*"]
backend_pool = "legacy"
backend_settings = "settings"
rewrite_set = "move"
[[url_path_maps.path_rules]]
name = "keep"
paths = ["/keep/*"]
backend_pool = "legacy"
backend_settings = "settings"
rewrite_set = "stay"
[[url_path_maps.path_rules]]
name = "loop"
paths = ["/loop/*"]
backend_pool = "legacy"
backend_settings = "settings"
rewrite_set = "loop"
[[url_path_maps.path_rules]]
name = "new"
paths = ["/new/*"]
backend_pool = "new"
backend_settings = "settings"

[[rewrite_sets]]
name = "move"
[[rewrite_sets.rules]]
name = "to-new"
conditions = [{ variable = "var_uri_path", pattern = "^/old/(.*)$" }]
url_configuration = { modified_path = "/new/{var_uri_path_1}", reroute = true }

[[rewrite_sets]]
name = "stay"
[[rewrite_sets.rules]]
name = "path-only"
url_configuration = { modified_path = "/new/kept" }

[[rewrite_sets]]
name = "loop"
[[rewrite_sets.rules]]
name = "again"
conditions = [{ variable = "var_uri_path", pattern = "^/loop/" }]
url_configuration = { modified_path = "{var_uri_path}", reroute = true }
"#;
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    let reply = get(addr, "site.test", "/old/orders?id=7").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(
        new.hits(),
        1,
        "the rewritten path chose the /new/* path rule"
    );
    assert_eq!(new.last().uri, "/new/orders?id=7");
    assert_eq!(legacy.hits(), 0);

    get(addr, "site.test", "/keep/x").await;
    assert_eq!(
        legacy.last().uri,
        "/new/kept",
        "without reroute the original path chose the target; the backend gets the new path"
    );
    assert_eq!(new.hits(), 1);

    let reply = get(addr, "site.test", "/loop/x").await;
    assert_eq!(
        reply.status.as_u16(),
        500,
        "a rewrite that keeps re-evaluating the path map is refused"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_variables_in_request_and_response_values() {
    let b = HttpBackend::builder("app")
        .header("x-app-version", "build-1234")
        .start()
        .await;
    let mut toml = listener("web", 0, &[]);
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "rewrite_set = \"rw\"");
    toml += r#"
[[rewrite_sets]]
name = "rw"
[[rewrite_sets.rules]]
name = "variables"
request_headers = [
  { name = "x-client-ip", value = "{var_client_ip}" },
  { name = "x-forwarded-for", value = "{var_add_x_forwarded_for_proxy}" },
  { name = "x-method", value = "{var_http_method} {var_http_version}" },
  { name = "x-cookie", value = "{var_cookie_session}" },
  { name = "x-user", value = "{var_client_user}" },
  { name = "x-where", value = "{var_request_scheme}://{var_host}:{var_server_port}{var_request_uri}" },
  { name = "x-query", value = "{var_query_string}|{var_request_query}" },
  { name = "x-ssl", value = "[{var_ssl_enabled}]" },
]
response_headers = [{ name = "x-served", value = "{var_uri_path} {var_http_status}" }]
[[rewrite_sets.rules]]
name = "version"
conditions = [{ variable = "http_resp_X-App-Version", pattern = '^build-(\d+)$' }]
response_headers = [{ name = "x-build", value = "{http_resp_X-App-Version_1} for {var_client_ip}" }]
"#;
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    let reply = get_with(
        addr,
        "site.test",
        "/v?a=1",
        &[
            ("cookie", "theme=dark; session=abc123"),
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    )
    .await;
    let seen = b.last();
    assert_eq!(seen.header("x-client-ip"), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1"),
        "add_x_forwarded_for_proxy: the client's list and its IP, no port"
    );
    assert_eq!(seen.header("x-method"), Some("GET HTTP/1.1"));
    assert_eq!(seen.header("x-cookie"), Some("abc123"));
    assert_eq!(seen.header("x-user"), Some("user"), "Basic user:pass");
    assert_eq!(
        seen.header("x-where"),
        Some(format!("http://site.test:{}/v?a=1", addr.port()).as_str())
    );
    assert_eq!(seen.header("x-query"), Some("a=1|a=1"));
    assert_eq!(
        seen.header("x-ssl"),
        Some("[]"),
        "ssl_enabled is empty on HTTP"
    );
    assert_eq!(reply.header("x-served"), Some("/v 200"));
    assert_eq!(
        reply.header("x-build"),
        Some("1234 for 127.0.0.1"),
        "a capture from a response header, beside a request variable"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_variables_over_https_and_http2() {
    let pki = Pki::new("rewrite CA");
    let leaf = pki.issue(&["secure.example"]);
    let (cert, key) = pki.write_leaf("secure", &leaf);
    let b = HttpBackend::start("app").await;
    let mut toml = format!(
        "[[listeners]]\nname = \"web\"\nprotocol = \"https\"\nport = 0\nbind_address = \"127.0.0.1\"\ncertificate = {}\ncertificate_key = {}\n\n",
        toml_path(&cert),
        toml_path(&key)
    );
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "rewrite_set = \"rw\"");
    toml += r#"
[[rewrite_sets]]
name = "rw"
[[rewrite_sets.rules]]
name = "tls"
conditions = [{ variable = "var_ssl_enabled", pattern = "^on$" }]
request_headers = [
  { name = "x-tls", value = "{var_ssl_connection_protocol} {var_request_scheme} {var_http_version}" },
  { name = "x-host", value = "{http_req_Host}" },
]
"#;
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");
    for (alpn, version) in [("h2", "HTTP/2.0"), ("http/1.1", "HTTP/1.1")] {
        let config = client_config(&[pki.ca_der()], &[alpn]);
        let reply = https_get(addr, "secure.example", config, "secure.example", "/").await;
        assert_eq!(reply.status.as_u16(), 200);
        assert_eq!(
            b.last().header("x-tls"),
            Some(format!("TLSv1.3 https {version}").as_str()),
            "{alpn}"
        );
        assert_eq!(
            b.last().header("x-host"),
            Some("secure.example"),
            "{alpn}: HTTP/2's :authority stands for Host"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reroute_onto_a_redirect_answers_with_the_rewritten_url() {
    let b = HttpBackend::start("app").await;
    let mut toml = listener("web", 0, &[]);
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += "[[rules]]\nname = \"paths\"\nlistener = \"web\"\nurl_path_map = \"map\"\n\n";
    toml += r#"
[[redirects]]
name = "moved"
redirect_type = "found"
target_url = "https://new.example"

[[url_path_maps]]
name = "map"
default_backend_pool = "pool"
default_backend_settings = "settings"
default_rewrite_set = "retire"
[[url_path_maps.path_rules]]
name = "gone"
paths = ["/gone/*"]
redirect = "moved"

[[rewrite_sets]]
name = "retire"
[[rewrite_sets.rules]]
name = "retired"
conditions = [{ variable = "var_uri_path", pattern = "^/retired/(.*)$" }]
url_configuration = { modified_path = "/gone/{var_uri_path_1}", modified_query_string = "from=retired", reroute = true }
"#;
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");
    let reply = get(addr, "site.test", "/retired/page?x=1").await;
    assert_eq!(reply.status.as_u16(), 302);
    assert_eq!(
        reply.header("location"),
        Some("https://new.example/gone/page?from=retired")
    );
    assert_eq!(b.hits(), 0);
    let reply = get(addr, "site.test", "/kept?x=1").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(
        b.last().uri,
        "/kept?x=1",
        "the default's condition did not hold"
    );
    gw.shutdown().await;
}

/// A gateway with one basic rule (taking `rule_extra`), and `sets` appended.
fn config_with(rule_extra: &str, sets: &str) -> String {
    let mut toml = "[[listeners]]\nname = \"web\"\nport = 8080\n\n".to_string();
    toml += "[[backend_pools]]\nname = \"pool\"\naddresses = [\"10.0.0.4\"]\n\n";
    toml += "[[backend_settings]]\nname = \"settings\"\nport = 80\n\n";
    toml += &format!(
        "[[rules]]\nname = \"rule\"\nlistener = \"web\"\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"\n{rule_extra}\n\n"
    );
    toml + "[[rewrite_sets]]\nname = \"rw\"\n" + sets
}

/// One rule `r` of set `rw` with these lines.
fn one_rule(lines: &str) -> String {
    config_with(
        "",
        &format!("[[rewrite_sets.rules]]\nname = \"r\"\n{lines}\n"),
    )
}

#[test]
fn invalid_rewrite_rules_are_refused_with_exact_errors() {
    let url = |u: &str| one_rule(&format!("url_configuration = {{ {u} }}"));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "an invalid regular expression",
            one_rule(
                "conditions = [{ variable = \"var_uri_path\", pattern = \"^/(a\" }]\nrequest_headers = [{ name = \"x\", value = \"1\" }]",
            ),
            "rewrite_sets[0].rules[0].conditions[0].pattern: \"^/(a\" is not a regular expression: unclosed group",
        ),
        (
            "an unknown variable in a condition",
            one_rule(
                "conditions = [{ variable = \"var_nope\", pattern = \"x\" }]\nrequest_headers = [{ name = \"x\", value = \"1\" }]",
            ),
            "rewrite_sets[0].rules[0].conditions[0].variable: \"var_nope\" is not a supported server variable (http_req_<header>, http_resp_<header>, var_add_x_forwarded_for_proxy, var_client_certificate, var_client_certificate_fingerprint, var_client_certificate_issuer, var_client_certificate_serial, var_client_certificate_subject, var_client_certificate_verification, var_client_ip, var_client_port, var_client_user, var_cookie_<name>, var_host, var_http_method, var_http_status, var_http_version, var_query_string, var_received_bytes, var_request_query, var_request_scheme, var_request_uri, var_sent_bytes, var_server_name, var_server_port, var_ssl_connection_protocol, var_ssl_enabled, var_uri_path)",
        ),
        (
            "an unknown variable in a value",
            one_rule("request_headers = [{ name = \"x\", value = \"a{var_nope}\" }]"),
            "rewrite_sets[0].rules[0].request_headers[0].value: {var_nope} is not a supported server variable (http_req_<header>, http_resp_<header>, var_add_x_forwarded_for_proxy, var_client_certificate, var_client_certificate_fingerprint, var_client_certificate_issuer, var_client_certificate_serial, var_client_certificate_subject, var_client_certificate_verification, var_client_ip, var_client_port, var_client_user, var_cookie_<name>, var_host, var_http_method, var_http_status, var_http_version, var_query_string, var_received_bytes, var_request_query, var_request_scheme, var_request_uri, var_sent_bytes, var_server_name, var_server_port, var_ssl_connection_protocol, var_ssl_enabled, var_uri_path)",
        ),
        (
            "a capture group beyond the pattern's",
            one_rule(
                "conditions = [{ variable = \"var_uri_path\", pattern = \"^/(a)/(b)\" }]\nurl_configuration = { modified_path = \"/{var_uri_path_3}\" }",
            ),
            "rewrite_sets[0].rules[0].url_configuration.modified_path: {var_uri_path_3} uses capture group 3 of the condition on var_uri_path, whose pattern has 2",
        ),
        (
            "a capture of a variable no condition tests",
            one_rule("request_headers = [{ name = \"x\", value = \"{http_req_Host_1}\" }]"),
            "rewrite_sets[0].rules[0].request_headers[0].value: {http_req_Host_1} uses a capture of http_req_Host, which no condition of this rule tests",
        ),
        (
            "a response variable in a request header value",
            one_rule("request_headers = [{ name = \"x\", value = \"{var_sent_bytes}\" }]"),
            "rewrite_sets[0].rules[0].request_headers[0].value: {var_sent_bytes} is known only once the response arrives: use it in response_headers",
        ),
        (
            "a response condition on a rule that rewrites the URL",
            one_rule(
                "conditions = [{ variable = \"var_http_status\", pattern = \"^5\" }]\nurl_configuration = { modified_path = \"/x\" }",
            ),
            "rewrite_sets[0].rules[0].conditions[0].variable: \"var_http_status\" is known only once the response arrives: use it in response_headers",
        ),
        (
            "reroute on a basic rule",
            config_with(
                "rewrite_set = \"rw\"",
                "[[rewrite_sets.rules]]\nname = \"r\"\nconditions = [{ variable = \"var_uri_path\", pattern = \"^/a\" }]\nurl_configuration = { modified_path = \"/b\", reroute = true }\n",
            ),
            "rules[0].rewrite_set: rewrite set \"rw\" re-evaluates the path map (reroute), which only a path_based rule has",
        ),
        (
            "every rule reroutes unconditionally",
            url("modified_path = \"/b\", reroute = true"),
            "rewrite_sets[0].rules: every rule re-evaluates the path map unconditionally, which would never end: add a condition, or a rule without reroute",
        ),
        (
            "a relative path",
            url("modified_path = \"b/c\""),
            "rewrite_sets[0].rules[0].url_configuration.modified_path: \"b/c\" does not start with \"/\"",
        ),
        (
            "a path with a space",
            url("modified_path = \"/a b\""),
            "rewrite_sets[0].rules[0].url_configuration.modified_path: \"/a b\" holds a character a URL cannot carry here (spaces, controls, non-ASCII, '?', '#')",
        ),
        (
            "a query string with its question mark",
            url("modified_query_string = \"?a=1\""),
            "rewrite_sets[0].rules[0].url_configuration.modified_query_string: \"?a=1\": the query string is written without the leading \"?\"",
        ),
        (
            "an empty URL configuration",
            url(""),
            "rewrite_sets[0].rules[0].url_configuration: a URL configuration needs modified_path, modified_query_string or reroute",
        ),
        (
            "a rule without actions",
            one_rule(""),
            "rewrite_sets[0].rules[0]: a rule needs an action: request_headers, response_headers or url_configuration",
        ),
        (
            "rules beside the header lists",
            config_with(
                "",
                "[[rewrite_sets.request_headers]]\nname = \"x\"\nvalue = \"1\"\n[[rewrite_sets.rules]]\nname = \"r\"\nrequest_headers = [{ name = \"y\", value = \"1\" }]\n",
            ),
            "rewrite_sets[0].rules: a rewrite set has either rules or request_headers/response_headers lists, not both",
        ),
        (
            "two rules of one name",
            config_with(
                "",
                "[[rewrite_sets.rules]]\nname = \"r\"\nrequest_headers = [{ name = \"y\", value = \"1\" }]\n[[rewrite_sets.rules]]\nname = \"r\"\nrequest_headers = [{ name = \"z\", value = \"1\" }]\n",
            ),
            "rewrite_sets[0].rules[1].name: \"r\" names two rules of this set",
        ),
        (
            "Upgrade rewritten by a rule",
            one_rule("response_headers = [{ name = \"Upgrade\", value = \"h2c\" }]"),
            "rewrite_sets[0].rules[0].response_headers[0].name: \"Upgrade\" cannot be rewritten",
        ),
    ];
    let mut failures = Vec::new();
    for (what, toml, expected) in cases {
        match wasmgate::config::Config::from_toml(&toml) {
            Ok(_) => failures.push(format!("{what}: accepted\n{toml}")),
            // The regular expression's own explanation follows the prefix checked.
            Err(e)
                if e.to_string() == expected
                    || (expected.ends_with("error parsing regex")
                        && e.to_string().starts_with(expected)) => {}
            Err(e) => failures.push(format!(
                "{what}:\n  expected {expected:?}\n  got      {:?}",
                e.to_string()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
