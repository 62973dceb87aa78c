//! Observability: `/metrics` on the admin listener (every family appears and moves with traffic,
//! probes, reloads, TLS, WebSocket sessions and plugin calls; labels stay bounded), the access
//! log (Application Gateway's JSON fields for HTTP, HTTPS, redirects, 4xx/5xx and WebSocket
//! sessions; reopened on SIGUSR1's call), and W3C trace context (traceparent continued or
//! started, the trace id answered to the client and logged as transactionId).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use wasmgate_tests::client::raw_exchange;
use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::tls::{Pki, client_config, https_get, toml_path};
use wasmgate_tests::ws::{close_with, round_trip, ws_open};
use wasmgate_tests::*;

const TOKEN: &str = "metrics-token-for-the-tests-0001";

fn admin_section() -> String {
    format!("[admin]\nbind_address = \"127.0.0.1\"\nport = 0\ntoken = {TOKEN:?}\n\n")
}

/// One scrape: the body and its samples by name-with-labels.
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key}\n--- scrape ---\n{}", self.text))
    }

    fn value_or_zero(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    /// Sample lines of a family (its name followed by `{` or a space).
    fn lines_of(&self, family: &str) -> Vec<&str> {
        self.text
            .lines()
            .filter(|l| {
                l.strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .collect()
    }
}

async fn scrape_with(gw: &wasmgate::Gateway, accept: &str) -> (String, Scrape) {
    let admin = gw.admin_addr().expect("admin listener");
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\n{accept}Connection: close\r\n\r\n"
    );
    let res = raw_exchange(admin, request.as_bytes())
        .await
        .expect("scrape /metrics");
    assert_eq!(res.status, 200, "{}\n{}", res.head, res.text());
    let content_type = res.header("content-type").unwrap_or_default().to_owned();
    let text = res.text();
    let mut samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.rsplit_once(' ').expect("sample line: name value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("sample value {value:?} in {line:?}"));
        assert!(
            samples.insert(key.to_owned(), value).is_none(),
            "sample {key} appears twice"
        );
    }
    (content_type, Scrape { text, samples })
}

async fn scrape(gw: &wasmgate::Gateway) -> Scrape {
    scrape_with(gw, "").await.1
}

fn requests_key(listener: &str, rule: &str, pool: &str, settings: &str, class: &str) -> String {
    format!(
        "wasmgate_requests_total{{listener=\"{listener}\",rule=\"{rule}\",backend_pool=\"{pool}\",backend_settings=\"{settings}\",status_class=\"{class}\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_family_appears_and_moves_with_traffic_probes_reloads_and_plugins() {
    let b = HttpBackend::start("app").await;
    let files = Pki::new("metrics files");
    let mut toml = plugin_engine_section();
    toml += &listener("web", 0, &["app.test"]);
    toml += &listener("routed", 0, &[]);
    toml += &listener("trapped", 0, &[]);
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    toml += &basic_rule(
        "routed-rule",
        "routed",
        "pool",
        "settings",
        "router = \"canary\"",
    );
    toml += &basic_rule(
        "trapped-rule",
        "trapped",
        "pool",
        "settings",
        "router = \"trap\"",
    );
    toml += &plugin_section(
        "canary",
        "example-canary-router",
        "router",
        r#"config = '{"variants": [{"name": "only", "pool": "pool", "settings": "settings", "weight": 100}]}'"#,
    );
    toml += &plugin_section("trap", "fixture-trap", "router", "");
    toml += &admin_section();
    let path = files.write("gateway.toml", &toml);
    let config = wasmgate::Config::from_file(&path).expect("configuration");
    let gw = within_for(
        Duration::from_secs(120),
        "Gateway::start",
        wasmgate::Gateway::start(config),
    )
    .await
    .expect("gateway starts");
    assert!(gw.wait_for_first_probes(WAIT).await, "first probes");
    gw.set_config_file(path.clone(), false);

    let before = scrape(&gw).await;
    for (family, kind) in [
        ("wasmgate_requests_total", "counter"),
        ("wasmgate_failed_requests_total", "counter"),
        ("wasmgate_request_duration_seconds", "histogram"),
        ("wasmgate_backend_connect_duration_seconds", "histogram"),
        ("wasmgate_backend_first_byte_duration_seconds", "histogram"),
        ("wasmgate_backend_last_byte_duration_seconds", "histogram"),
        ("wasmgate_received_bytes_total", "counter"),
        ("wasmgate_sent_bytes_total", "counter"),
        ("wasmgate_client_connections_open", "gauge"),
        ("wasmgate_client_connections_total", "counter"),
        ("wasmgate_tls_handshakes_total", "counter"),
        ("wasmgate_tls_handshake_failures_total", "counter"),
        ("wasmgate_backend_healthy_servers", "gauge"),
        ("wasmgate_backend_unhealthy_servers", "gauge"),
        ("wasmgate_probes_total", "counter"),
        ("wasmgate_probe_duration_seconds", "histogram"),
        ("wasmgate_websocket_sessions_open", "gauge"),
        ("wasmgate_websocket_sessions_total", "counter"),
        ("wasmgate_websocket_sessions_closed_total", "counter"),
        ("wasmgate_websocket_messages_total", "counter"),
        ("wasmgate_websocket_bytes_total", "counter"),
        ("wasmgate_plugin_calls_total", "counter"),
        ("wasmgate_plugin_errors_total", "counter"),
        ("wasmgate_plugin_call_duration_seconds", "histogram"),
        ("wasmgate_plugin_breaker_state", "gauge"),
        ("wasmgate_plugin_instances", "gauge"),
        ("wasmgate_config_reloads_total", "counter"),
        ("wasmgate_config_info", "gauge"),
        ("wasmgate_config_load_timestamp_seconds", "gauge"),
        ("wasmgate_access_log_dropped_records_total", "counter"),
        ("wasmgate_build_info", "gauge"),
    ] {
        let line = format!("# TYPE {family} {kind}\n");
        assert!(
            before.text.contains(&line),
            "{line:?} missing\n{}",
            before.text
        );
    }
    let pool_labels = "backend_pool=\"pool\",backend_settings=\"settings\"";
    assert_eq!(
        before.get(&format!(
            "wasmgate_backend_healthy_servers{{{pool_labels}}}"
        )),
        1.0
    );
    assert_eq!(
        before.get(&format!(
            "wasmgate_backend_unhealthy_servers{{{pool_labels}}}"
        )),
        0.0
    );
    assert!(
        before.get(&format!(
            "wasmgate_probes_total{{{pool_labels},result=\"healthy\"}}"
        )) >= 1.0
    );
    assert!(
        before.get(&format!(
            "wasmgate_probe_duration_seconds_count{{{pool_labels}}}"
        )) >= 1.0
    );
    assert!(
        before.get(&format!(
            "wasmgate_probe_duration_seconds_bucket{{{pool_labels},le=\"+Inf\"}}"
        )) >= 1.0
    );
    assert_eq!(
        before.get("wasmgate_config_reloads_total{result=\"success\"}"),
        0.0
    );
    let hash_line = before.lines_of("wasmgate_config_info")[0].to_owned();
    assert!(
        hash_line.contains("hash=\"") && hash_line.len() > 64,
        "{hash_line}"
    );
    assert!(before.text.contains("wasmgate_build_info{version=\""));

    // Traffic: three answered requests, one for a host no listener serves.
    let web = listener_addr(&gw, "web");
    for _ in 0..3 {
        assert_eq!(get(web, "app.test", "/x").await.status, 200);
    }
    assert_eq!(get(web, "other.test", "/").await.status, 404);
    // A router plugin's call, and a plugin that traps (fail_closed: 500).
    assert_eq!(
        get(listener_addr(&gw, "routed"), "a", "/").await.status,
        200
    );
    assert_eq!(
        get(listener_addr(&gw, "trapped"), "a", "/trap")
            .await
            .status,
        500
    );

    let after = scrape(&gw).await;
    assert_eq!(
        after.get(&requests_key("web", "rule", "pool", "settings", "2xx")),
        3.0
    );
    assert_eq!(after.get(&requests_key("", "", "", "", "4xx")), 1.0);
    assert_eq!(
        after.get(&requests_key(
            "routed",
            "routed-rule",
            "pool",
            "settings",
            "2xx"
        )),
        1.0
    );
    assert_eq!(
        after.get(&requests_key("trapped", "trapped-rule", "", "", "5xx")),
        1.0
    );
    assert_eq!(
        after.get("wasmgate_failed_requests_total{listener=\"\",reason=\"no_listener\"}"),
        1.0
    );
    assert_eq!(
        after.get("wasmgate_failed_requests_total{listener=\"trapped\",reason=\"plugin_failure\"}"),
        1.0
    );
    assert_eq!(
        after.get("wasmgate_request_duration_seconds_count{listener=\"web\"}"),
        3.0
    );
    assert_eq!(
        after.get(&format!(
            "wasmgate_backend_first_byte_duration_seconds_count{{{pool_labels}}}"
        )),
        4.0
    );
    assert_eq!(
        after.get(&format!(
            "wasmgate_backend_last_byte_duration_seconds_count{{{pool_labels}}}"
        )),
        4.0
    );
    assert!(
        after.get(&format!(
            "wasmgate_backend_connect_duration_seconds_count{{{pool_labels}}}"
        )) >= 1.0
    );
    assert!(after.get("wasmgate_received_bytes_total{listener=\"web\"}") > 0.0);
    assert!(after.get("wasmgate_sent_bytes_total{listener=\"web\"}") > 0.0);
    assert!(after.get("wasmgate_client_connections_total") >= 6.0);
    assert!(after.get("wasmgate_plugin_calls_total{plugin=\"canary\"}") >= 1.0);
    assert_eq!(
        after.get("wasmgate_plugin_errors_total{plugin=\"trap\",kind=\"trap\"}"),
        1.0
    );
    assert!(after.get("wasmgate_plugin_instances{plugin=\"canary\"}") >= 1.0);
    assert_eq!(
        after.get("wasmgate_plugin_breaker_state{plugin=\"canary\",state=\"closed\"}"),
        1.0
    );

    // A reload keeps the counts; a refused one is counted too.
    let mut changed = toml.clone();
    changed += "\n# changed\n";
    write_changed(&path, &changed);
    within("reload", gw.reload_from_file())
        .await
        .expect("reload");
    write_changed(&path, "this is not TOML");
    assert!(within("reload", gw.reload_from_file()).await.is_err());
    assert_eq!(get(web, "app.test", "/x").await.status, 200);
    let reloaded = scrape(&gw).await;
    assert_eq!(
        reloaded.get(&requests_key("web", "rule", "pool", "settings", "2xx")),
        4.0
    );
    assert_eq!(
        reloaded.get("wasmgate_config_reloads_total{result=\"success\"}"),
        1.0
    );
    assert_eq!(
        reloaded.get("wasmgate_config_reloads_total{result=\"failure\"}"),
        1.0
    );
    let new_hash = reloaded.lines_of("wasmgate_config_info")[0].to_owned();
    assert_ne!(
        new_hash, hash_line,
        "the running configuration's hash follows the reload"
    );

    // OpenMetrics when asked: counters' families lose `_total`, the body ends with # EOF.
    let (content_type, open) = scrape_with(
        &gw,
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
    )
    .await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(open.text.ends_with("# EOF\n"));
    assert!(open.text.contains("# TYPE wasmgate_requests counter\n"));
    let mut families: Vec<&str> = open
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    let declared = families.len();
    families.sort_unstable();
    families.dedup();
    assert_eq!(
        families.len(),
        declared,
        "a family is declared twice: {families:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn labels_stay_bounded_under_random_hosts_and_paths() {
    let b = HttpBackend::start("app").await;
    let mut toml = listener("named", 0, &["app.test"]);
    toml += &listener("any", 0, &[]);
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("named-rule", "named", "pool", "settings", "");
    toml += &basic_rule("any-rule", "any", "pool", "settings", "");
    toml += &admin_section();
    let gw = start_gateway(&toml).await;
    let addrs = [listener_addr(&gw, "named"), listener_addr(&gw, "any")];
    let mut sent = Vec::new();
    for round in 0..2 {
        for i in 0..40 {
            let host = format!("h{round}x{i}-{}.example", fastrand_like(i));
            let path = format!("/p{round}/{i}/{}", fastrand_like(i * 7 + round));
            let _ = get(addrs[i % 2], &host, &path).await;
            sent.push((host, path));
        }
        let s = scrape(&gw).await;
        for (host, path) in &sent {
            assert!(
                !s.text.contains(host.as_str()),
                "a request's host is a label: {host}"
            );
            assert!(
                !s.text.contains(path.as_str()),
                "a request's path is a label: {path}"
            );
        }
        assert!(!s.text.contains("127.0.0.1"), "a client address is a label");
        // One series per (listener, rule, pool, settings, class) that saw traffic: any-rule 2xx,
        // and the named listener's host mismatches (4xx, no listener).
        assert_eq!(s.lines_of("wasmgate_requests_total").len(), 2, "{}", s.text);
        assert_eq!(
            s.get(&requests_key("any", "any-rule", "pool", "settings", "2xx")),
            (20 * (round + 1)) as f64
        );
        assert_eq!(
            s.get(&requests_key("", "", "", "", "4xx")),
            (20 * (round + 1)) as f64
        );
    }
    gw.shutdown().await;
}

/// A deterministic scramble standing in for random text.
fn fastrand_like(i: usize) -> String {
    format!(
        "{:08x}",
        (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scrape_under_load_is_complete_and_counts_every_request_answered() {
    let b = HttpBackend::start("app").await;
    let toml = wasmgate_tests::config::single_route(&[b.addr], "") + &admin_section();
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, answered) = (stop.clone(), answered.clone());
        load.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if get(addr, "app", "/").await.status == 200 {
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    let key = requests_key("web", "rule", "pool", "settings", "2xx");
    let mut slowest = Duration::ZERO;
    let mut last = 0.0;
    for _ in 0..20 {
        let started = Instant::now();
        let s = scrape(&gw).await;
        slowest = slowest.max(started.elapsed());
        let now = s.value_or_zero(&key);
        assert!(now >= last, "a counter went back: {last} → {now}");
        last = now;
        assert!(s.text.contains("# TYPE wasmgate_build_info gauge"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        within("load stops", task).await.expect("load task");
    }
    // Every answered request is counted once the responses are complete.
    let total = answered.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let counted = eventually("the counter catches up with the answered requests", || {
        let gw = &gw;
        let key = key.clone();
        async move {
            let v = scrape(gw).await.get(&key);
            (v >= total).then_some(v)
        }
    })
    .await;
    assert_eq!(counted, total);
    eprintln!("slowest of 20 scrapes under load: {slowest:?} ({total} requests)");
    gw.shutdown().await;
}

/// Reads the JSON records written so far.
fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn wait_records(path: &Path, n: usize) -> Vec<Value> {
    eventually(
        &format!("{n} access-log records in {}", path.display()),
        || async {
            let r = records(path);
            (r.len() >= n).then_some(r)
        },
    )
    .await
}

const REQUEST_FIELDS: [&str; 24] = [
    "clientIP",
    "clientPort",
    "httpMethod",
    "requestUri",
    "userAgent",
    "httpStatus",
    "httpVersion",
    "receivedBytes",
    "sentBytes",
    "timeTaken",
    "sslEnabled",
    "sslCipher",
    "sslProtocol",
    "serverRouted",
    "serverStatus",
    "serverResponseLatency",
    "host",
    "originalRequestUriWithArgs",
    "originalHost",
    "transactionId",
    "listenerName",
    "ruleName",
    "backendPoolName",
    "backendSettingName",
];

fn find<'a>(records: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    records
        .iter()
        .find(|r| pred(r))
        .unwrap_or_else(|| panic!("no record for {what} in {records:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_access_log_has_application_gateway_fields_for_every_kind_of_request() {
    let app = HttpBackend::start("app").await;
    let ws = WsBackend::start("echo").await;
    let pki = Pki::new("access log CA");
    let leaf = pki.issue(&["secure.test", "127.0.0.1"]);
    let (cert, key) = pki.write_leaf("secure", &leaf);
    let log = pki.path("access.log");
    let redirect_port = free_port();
    let mut toml = listener("web", 0, &["app.test"]);
    toml += &listener("sockets", 0, &[]);
    toml += &listener("moved", redirect_port, &[]);
    toml += &listener("down", 0, &[]);
    toml += &format!(
        "[[listeners]]\nname = \"secure\"\nprotocol = \"https\"\nport = 0\nbind_address = \"127.0.0.1\"\ncertificate = {}\ncertificate_key = {}\n\n",
        toml_path(&cert),
        toml_path(&key)
    );
    toml += &pool("pool", &[app.addr]);
    toml += &pool("echo", &[ws.addr]);
    toml += &pool("dead", &[dead_address()]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    toml += &basic_rule("ws-rule", "sockets", "echo", "settings", "");
    toml += &basic_rule("down-rule", "down", "dead", "settings", "");
    toml += &basic_rule("secure-rule", "secure", "pool", "settings", "");
    toml += "[[redirects]]\nname = \"to-web\"\nredirect_type = \"permanent\"\ntarget_url = \"http://app.test/\"\n\n";
    toml += "[[rules]]\nname = \"moved-rule\"\nlistener = \"moved\"\nredirect = \"to-web\"\n\n";
    toml += &format!(
        "[logging]\nformat = \"json\"\naccess_log = {}\n\n",
        toml_path(&log)
    );
    let gw = start_gateway(&toml).await;

    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ok = get_with(
        listener_addr(&gw, "web"),
        "app.test",
        "/a/b?x=1",
        &[("user-agent", "obs-test/1"), ("traceparent", incoming)],
    )
    .await;
    assert_eq!(ok.status, 200);
    // Trace context: the trace continues, with the gateway's span, and the client sees its id.
    assert_eq!(
        ok.header("x-appgw-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let seen = app.last();
    let traceparent = seen
        .header("traceparent")
        .expect("traceparent to the backend");
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "the gateway's own span: {traceparent}"
    );
    assert_eq!(
        seen.header("x-appgw-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );

    let bad = get_with(
        listener_addr(&gw, "web"),
        "app.test",
        "/c",
        &[("traceparent", "00-zz-bad")],
    )
    .await;
    let started = bad
        .header("x-appgw-trace-id")
        .expect("a new trace")
        .to_owned();
    assert_eq!(started.len(), 32);
    assert_ne!(started, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        app.last().header("x-appgw-trace-id"),
        Some(started.as_str())
    );

    assert_eq!(
        get(listener_addr(&gw, "web"), "nobody.test", "/missing")
            .await
            .status,
        404
    );
    assert_eq!(
        get(listener_addr(&gw, "moved"), "old.test", "/m")
            .await
            .status,
        301
    );
    assert_eq!(
        get(listener_addr(&gw, "down"), "down.test", "/")
            .await
            .status,
        502
    );
    let https = https_get(
        listener_addr(&gw, "secure"),
        "secure.test",
        client_config(&[pki.ca_der()], &["http/1.1"]),
        "secure.test",
        "/s",
    )
    .await;
    assert_eq!(https.status, 200);
    let mut session = ws_open(listener_addr(&gw, "sockets"), "ws.test", "/chat").await;
    for i in 0..3 {
        round_trip(&mut session, Message::text(format!("m{i}")), "echo").await;
    }
    let _ = close_with(&mut session, 1000).await;
    let _ = session.flush().await;

    // Seven requests, then the session's end.
    let all = wait_records(&log, 8).await;
    for r in all
        .iter()
        .filter(|r| r["operationName"] == "ApplicationGatewayAccess")
    {
        for field in REQUEST_FIELDS {
            assert!(r.get(field).is_some(), "{field} missing in {r}");
        }
    }
    let ok = find(&all, "the 200", |r| r["requestUri"] == "/a/b");
    assert_eq!(ok["httpStatus"], 200);
    assert_eq!(ok["httpMethod"], "GET");
    assert_eq!(ok["originalRequestUriWithArgs"], "/a/b?x=1");
    assert_eq!(ok["userAgent"], "obs-test/1");
    assert_eq!(ok["httpVersion"], "HTTP/1.1");
    assert_eq!(ok["clientIP"], "127.0.0.1");
    assert!(ok["clientPort"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(ok["transactionId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ok["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(ok["listenerName"], "web");
    assert_eq!(ok["ruleName"], "rule");
    assert_eq!(ok["backendPoolName"], "pool");
    assert_eq!(ok["backendSettingName"], "settings");
    assert_eq!(ok["serverRouted"], app.addr.to_string());
    assert_eq!(ok["serverStatus"], "200");
    assert_eq!(ok["sslEnabled"], "off");
    assert_eq!(ok["originalHost"], "app.test");
    assert!(
        ok["timeTaken"]
            .as_f64()
            .is_some_and(|t| (0.0..10.0).contains(&t))
    );
    assert!(ok["sentBytes"].as_u64().is_some_and(|b| b > 0));
    assert!(ok["receivedBytes"].as_u64().is_some_and(|b| b > 0));

    let restarted = find(&all, "the bad traceparent", |r| r["requestUri"] == "/c");
    assert_eq!(restarted["transactionId"], started.as_str());
    assert_eq!(restarted["parentSpanId"], "");

    let missing = find(&all, "the 404", |r| r["requestUri"] == "/missing");
    assert_eq!(missing["httpStatus"], 404);
    assert_eq!(missing["listenerName"], "");
    assert_eq!(missing["serverRouted"], "-");
    let moved = find(&all, "the redirect", |r| r["requestUri"] == "/m");
    assert_eq!(moved["httpStatus"], 301);
    assert_eq!(moved["ruleName"], "moved-rule");
    assert_eq!(moved["backendPoolName"], "");
    let down = find(&all, "the 502", |r| r["listenerName"] == "down");
    assert_eq!(down["httpStatus"], 502);
    assert_eq!(down["backendPoolName"], "dead");
    let secure = find(&all, "the HTTPS request", |r| r["requestUri"] == "/s");
    assert_eq!(secure["sslEnabled"], "on");
    assert!(
        secure["sslProtocol"]
            .as_str()
            .is_some_and(|p| p.starts_with("TLSv1")),
        "{secure}"
    );
    assert!(
        secure["sslCipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS")),
        "{secure}"
    );
    let upgrade = find(&all, "the WebSocket handshake", |r| {
        r["requestUri"] == "/chat" && r["operationName"] == "ApplicationGatewayAccess"
    });
    assert_eq!(upgrade["httpStatus"], 101);

    let ended = find(&all, "the WebSocket session's end", |r| {
        r["operationName"] == "WebSocketSession"
    });
    assert_eq!(ended["messagesFromClient"], 3);
    assert_eq!(ended["messagesFromBackend"], 3);
    assert!(ended["bytesFromClient"].as_u64().is_some_and(|b| b > 0));
    assert_eq!(ended["closeCode"], 1000);
    assert_eq!(ended["closedBy"], "client");
    assert_eq!(ended["backendPoolName"], "echo");
    assert!(ended["duration"].as_f64().is_some());
    assert_eq!(ended["transactionId"], upgrade["transactionId"]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_sessions_are_counted_open_and_closed() {
    let ws = WsBackend::start("echo").await;
    let mut toml = listener("sockets", 0, &[]);
    toml += &pool("echo", &[ws.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("ws-rule", "sockets", "echo", "settings", "");
    toml += &admin_section();
    toml += "[logging]\naccess_log = \"off\"\n";
    let gw = start_gateway(&toml).await;
    let mut session = ws_open(listener_addr(&gw, "sockets"), "ws.test", "/").await;
    round_trip(&mut session, Message::text("hello"), "echo").await;
    let open = scrape(&gw).await;
    assert_eq!(
        open.get("wasmgate_websocket_sessions_open{backend_pool=\"echo\"}"),
        1.0
    );
    let _ = close_with(&mut session, 1000).await;
    let closed = eventually("the session's end is counted", || async {
        let s = scrape(&gw).await;
        (s.value_or_zero("wasmgate_websocket_sessions_open{backend_pool=\"echo\"}") == 0.0)
            .then_some(s)
    })
    .await;
    assert_eq!(
        closed.get("wasmgate_websocket_sessions_closed_total{backend_pool=\"echo\",close_code=\"1000\",closed_by=\"client\"}"),
        1.0
    );
    assert_eq!(
        closed.get(
            "wasmgate_websocket_messages_total{backend_pool=\"echo\",direction=\"from_client\"}"
        ),
        1.0
    );
    assert_eq!(
        closed.get(
            "wasmgate_websocket_messages_total{backend_pool=\"echo\",direction=\"from_backend\"}"
        ),
        1.0
    );
    assert!(
        closed.get(
            "wasmgate_websocket_bytes_total{backend_pool=\"echo\",direction=\"from_backend\"}"
        ) > 0.0
    );
    assert_eq!(
        closed.get("wasmgate_websocket_sessions_total{backend_pool=\"echo\"}"),
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_access_log_file_is_reopened_after_it_was_moved() {
    let app = HttpBackend::start("app").await;
    let files = Pki::new("log rotation");
    let log = files.path("access.log");
    let toml = wasmgate_tests::config::single_route(&[app.addr], "")
        + &format!(
            "[logging]\nformat = \"json\"\naccess_log = {}\ntrace_id_response_header = false\n",
            toml_path(&log)
        );
    let gw = start_gateway(&toml).await;
    let addr: SocketAddr = listener_addr(&gw, "web");
    let first = get(addr, "app", "/before").await;
    assert_eq!(
        first.header("x-appgw-trace-id"),
        None,
        "trace_id_response_header = false"
    );
    wait_records(&log, 1).await;
    let rotated = files.path("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate the log");
    // Until the reopen, records still go to the renamed file (the open descriptor).
    assert_eq!(get(addr, "app", "/between").await.status, 200);
    wait_records(&rotated, 2).await;
    gw.reopen_access_log();
    assert_eq!(get(addr, "app", "/after").await.status, 200);
    let fresh = wait_records(&log, 1).await;
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0]["requestUri"], "/after");
    let old = records(&rotated);
    assert_eq!(old.len(), 2, "{old:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_access_log_has_no_colour_codes() {
    let app = HttpBackend::start("app").await;
    let files = Pki::new("text log");
    let log = files.path("access.log");
    let toml = wasmgate_tests::config::single_route(&[app.addr], "")
        + &format!("[logging]\naccess_log = {}\n", toml_path(&log));
    let gw = start_gateway(&toml).await;
    assert_eq!(
        get(listener_addr(&gw, "web"), "app", "/plain").await.status,
        200
    );
    let text = eventually("a text record", || async {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert!(!text.contains('\u{1b}'), "colour codes in {text:?}");
    assert!(text.contains(" uri=/plain "), "{text}");
    assert!(text.contains(" status=200 "), "{text}");
    assert!(text.contains(" listener=web "), "{text}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn histograms_and_trace_context_can_be_switched_off() {
    let app = HttpBackend::start("app").await;
    let toml = wasmgate_tests::config::single_route(&[app.addr], "")
        + &admin_section()
        + "[logging]\naccess_log = \"off\"\n\n[telemetry]\nrequest_histograms = false\ntrace_context = false\n";
    let gw = start_gateway(&toml).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let res = get_with(
        listener_addr(&gw, "web"),
        "app",
        "/off",
        &[("traceparent", incoming), ("tracestate", "vendor=1")],
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("x-appgw-trace-id"),
        None,
        "no trace id to the client"
    );
    let seen = app.last();
    assert_eq!(
        seen.header("traceparent"),
        Some(incoming),
        "the client's traceparent passes untouched"
    );
    assert_eq!(seen.header("tracestate"), Some("vendor=1"));
    assert_eq!(seen.header("x-appgw-trace-id"), None);
    let s = scrape(&gw).await;
    assert_eq!(
        s.get(&requests_key("web", "rule", "pool", "settings", "2xx")),
        1.0,
        "requests are still counted"
    );
    for family in [
        "wasmgate_request_duration_seconds_count",
        "wasmgate_backend_first_byte_duration_seconds_count",
        "wasmgate_backend_last_byte_duration_seconds_count",
    ] {
        assert!(
            s.lines_of(family).is_empty(),
            "{family} with histograms off"
        );
    }
    gw.shutdown().await;
}
