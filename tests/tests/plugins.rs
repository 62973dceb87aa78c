//! Router plugins in a running gateway: the Rust, Python and JavaScript examples routing real
//! requests to real backends, selection by rule, listener or gateway, and hostile plugins
//! contained by their fail policy while the gateway keeps serving everyone else.

use std::collections::HashSet;
use std::time::Duration;

use wasmgate::config::Config;
use wasmgate::plugin::BreakerState;
use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::*;

/// Starts a gateway whose plugins may include interpreted ones: compiling a Python or
/// JavaScript component takes seconds (once; later runs read the cache), so the bound is wider
/// than [`start_gateway`]'s.
async fn start_with_plugins(toml: &str) -> wasmgate::Gateway {
    let config = Config::from_toml(toml)
        .unwrap_or_else(|e| panic!("test configuration refused: {e}\n--- config ---\n{toml}"));
    let gw = match within_for(
        Duration::from_secs(120),
        "Gateway::start",
        wasmgate::Gateway::start(config),
    )
    .await
    {
        Ok(gw) => gw,
        Err(e) => panic!("gateway failed to start: {e}\n--- config ---\n{toml}"),
    };
    assert!(gw.wait_for_first_probes(WAIT).await, "first probes");
    gw
}

/// A listener `web` (port 0) whose rule forwards to pool `native` (with `rule_extra` lines),
/// and the shared compiled-component cache.
fn native_route(native: &HttpBackend, rule_extra: &str) -> String {
    let mut toml = plugin_engine_section();
    toml += &listener("web", 0, &[]);
    toml += &pool("native", &[native.addr]);
    toml += &settings("web", "");
    toml += &basic_rule("rule", "web", "native", "web", rule_extra);
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_router_splits_users_stickily_and_honours_the_override_header() {
    let native = HttpBackend::start("native").await;
    let stable = HttpBackend::start("stable").await;
    let canary = HttpBackend::start("canary").await;
    let mut toml = native_route(&native, "router = \"canary\"");
    toml += &pool("stable", &[stable.addr]);
    toml += &pool("canary", &[canary.addr]);
    toml += &plugin_section(
        "canary",
        "example-canary-router",
        "router",
        r#"config = '{"variants": [{"name": "stable", "pool": "stable", "settings": "web", "weight": 50}, {"name": "canary", "pool": "canary", "settings": "web", "weight": 50}], "sticky_key": ["cookie:session", "header:x-user-id"], "override_header": "x-variant"}'
request_headers = ["cookie", "x-user-id", "x-variant"]"#,
    );
    let gw = start_with_plugins(&toml).await;
    let addr = listener_addr(&gw, "web");

    let mut seen = HashSet::new();
    for user in 0..40 {
        let id = format!("user-{user}");
        let first = get_with(addr, "app", "/", &[("x-user-id", &id)]).await;
        assert_eq!(first.status, 200, "{}", first.text());
        let backend = first.backend().expect("x-backend").to_owned();
        assert_ne!(backend, "native", "the router decides, not the native rule");
        for _ in 0..3 {
            let again = get_with(addr, "app", "/", &[("x-user-id", &id)]).await;
            assert_eq!(
                again.backend(),
                Some(backend.as_str()),
                "user {id} must stay on one variant (sticky hashing)"
            );
        }
        seen.insert(backend);
    }
    assert_eq!(
        seen.len(),
        2,
        "50/50 weights over 40 users reach both variants"
    );

    // The session cookie comes first in sticky_key.
    let by_cookie = get_with(addr, "app", "/", &[("cookie", "session=abc")]).await;
    for _ in 0..3 {
        let again = get_with(
            addr,
            "app",
            "/",
            &[("cookie", "session=abc"), ("x-user-id", "zzz")],
        )
        .await;
        assert_eq!(
            again.backend(),
            by_cookie.backend(),
            "the cookie decides before the header"
        );
    }

    for _ in 0..5 {
        let forced = get_with(addr, "app", "/", &[("x-variant", "canary")]).await;
        assert_eq!(
            forced.backend(),
            Some("canary"),
            "the override header picks the variant"
        );
    }
    assert_eq!(
        canary.last().header("x-variant"),
        Some("canary"),
        "the router's header edit reaches the backend"
    );
    assert_eq!(native.hits(), 0);
    let stats = gw.plugins()[0].stats();
    assert!(
        stats.calls >= 40 * 4,
        "every request called the router: {stats:?}"
    );
}

/// `request_headers` limits what a router sees: a header left out cannot steer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_router_sees_only_the_request_headers_it_is_given() {
    let native = HttpBackend::start("native").await;
    let stable = HttpBackend::start("stable").await;
    let canary = HttpBackend::start("canary").await;
    let config = r#"config = '{"variants": [{"name": "stable", "pool": "stable", "settings": "web", "weight": 1}, {"name": "canary", "pool": "canary", "settings": "web", "weight": 0}], "override_header": "x-variant"}'"#;
    let mut toml = native_route(&native, "router = \"canary\"");
    toml += &listener("all", 0, &[]);
    toml += &basic_rule(
        "all-rule",
        "all",
        "native",
        "web",
        "router = \"canary-all\"",
    );
    toml += &pool("stable", &[stable.addr]);
    toml += &pool("canary", &[canary.addr]);
    toml += &plugin_section(
        "canary",
        "example-canary-router",
        "router",
        &format!("{config}\nrequest_headers = [\"cookie\"]"),
    );
    toml += &plugin_section("canary-all", "example-canary-router", "router", config);
    let gw = start_with_plugins(&toml).await;
    let forced = [("x-variant", "canary")];
    let limited = get_with(listener_addr(&gw, "web"), "app", "/", &forced).await;
    assert_eq!(
        limited.backend(),
        Some("stable"),
        "x-variant is not among the plugin's request_headers, so it cannot pick the variant"
    );
    let all = get_with(listener_addr(&gw, "all"), "app", "/", &forced).await;
    assert_eq!(
        all.backend(),
        Some("canary"),
        "without request_headers it can"
    );
    // The filter is what the plugin sees, not what it may edit: its header edit still applies.
    assert_eq!(stable.last().header("x-variant"), Some("stable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenant_router_picks_the_pool_by_subdomain_and_answers_unknown_tenants() {
    let native = HttpBackend::start("native").await;
    let acme = HttpBackend::start("acme").await;
    let globex = HttpBackend::start("globex").await;
    // Selected gateway-wide, for every listener and rule.
    let mut toml = native_route(&native, "");
    toml += &pool("tenant-acme", &[acme.addr]);
    toml += &pool("tenant-globex", &[globex.addr]);
    toml += "[routing]\nrouter = \"tenants\"\n\n";
    toml += &plugin_section(
        "tenants",
        "example-tenant-router",
        "router",
        r#"config = '{"domain": "saas.example", "pool_prefix": "tenant-", "settings": "web"}'"#,
    );
    let gw = start_with_plugins(&toml).await;
    let addr = listener_addr(&gw, "web");

    let r = assert_routed(
        addr,
        "acme.saas.example",
        "/x",
        "acme",
        "tenant by subdomain",
    )
    .await;
    assert_eq!(
        acme.last().header("x-tenant"),
        Some("acme"),
        "{:?}",
        r.headers
    );
    assert_routed(
        addr,
        "GLOBEX.saas.example:8080",
        "/",
        "globex",
        "host case and port ignored",
    )
    .await;
    let unknown = get(addr, "initech.saas.example", "/").await;
    assert_eq!(
        unknown.status,
        404,
        "an unknown tenant is answered by the plugin: {}",
        unknown.text()
    );
    assert_eq!(native.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_router_forwards_redirects_and_defers() {
    let native = HttpBackend::start("native").await;
    let api = HttpBackend::start("api").await;
    // Selected by the listener.
    let mut toml = native_route(&native, "");
    toml = toml.replacen(
        "host_names = []\n",
        "host_names = []\nrouter = \"python\"\n",
        1,
    );
    toml += &pool("api", &[api.addr]);
    toml += &settings("api", "");
    toml += &plugin_section(
        "python",
        "example-python-router",
        "router",
        r#"config = '{"routes": [{"prefix": "/api/", "pool": "api", "settings": "api", "strip_prefix": true}], "redirects": {"/old": "/new"}}'"#,
    );
    let gw = start_with_plugins(&toml).await;
    let addr = listener_addr(&gw, "web");

    assert_routed(
        addr,
        "app",
        "/API/users?x=1",
        "api",
        "the Python route (case-insensitive prefix)",
    )
    .await;
    let seen = api.last();
    assert_eq!(
        seen.uri, "/users?x=1",
        "the prefix is stripped, the query kept"
    );
    assert_eq!(seen.header("x-routed-by"), Some("python"));
    let moved = get(addr, "app", "/old").await;
    assert_eq!(
        (moved.status.as_u16(), moved.header("location")),
        (308, Some("/new"))
    );
    assert_routed(
        addr,
        "app",
        "/else",
        "native",
        "a deferred request takes the native rule",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn javascript_router_forwards_blocks_redirects_and_defers() {
    let native = HttpBackend::start("native").await;
    let v2 = HttpBackend::start("v2").await;
    let mut toml = native_route(&native, "router = \"js\"");
    toml += &pool("v2", &[v2.addr]);
    toml += &plugin_section(
        "js",
        "example-js-router",
        "router",
        r#"config = '{"versions": {"2": {"pool": "v2", "settings": "web"}}, "blocked_prefixes": ["/internal/"], "redirects": {"/old": "/new"}}'"#,
    );
    let gw = start_with_plugins(&toml).await;
    let addr = listener_addr(&gw, "web");

    let r = get_with(addr, "app", "/items", &[("x-api-version", "2")]).await;
    assert_eq!(
        (r.status.as_u16(), r.backend()),
        (200, Some("v2")),
        "{}",
        r.text()
    );
    assert_eq!(v2.last().header("x-routed-by"), Some("javascript"));
    assert_eq!(get(addr, "app", "/internal/x").await.status, 403);
    let moved = get(addr, "app", "/old").await;
    assert_eq!(
        (moved.status.as_u16(), moved.header("location")),
        (301, Some("/new"))
    );
    assert_routed(
        addr,
        "app",
        "/items",
        "native",
        "no version header: native rule",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_routers_are_contained_by_their_fail_policy() {
    let native = HttpBackend::start("native").await;
    let other = HttpBackend::start("other").await;
    let mut toml = plugin_engine_section();
    toml += &listener("closed", 0, &[]);
    toml += &listener("open", 0, &[]);
    toml += &listener("lost", 0, &[]);
    toml += &listener("plain", 0, &[]);
    toml += &pool("native", &[native.addr]);
    toml += &pool("other", &[other.addr]);
    toml += &settings("web", "");
    toml += &basic_rule(
        "closed",
        "closed",
        "native",
        "web",
        "router = \"loop-closed\"",
    );
    toml += &basic_rule("open", "open", "native", "web", "router = \"loop-open\"");
    toml += &basic_rule("lost", "lost", "native", "web", "router = \"lost\"");
    toml += &basic_rule("plain", "plain", "other", "web", "");
    let limits = "[plugins.limits]\ncall_timeout = \"30ms\"\n";
    toml += &plugin_section("loop-closed", "fixture-infinite-loop", "router", limits);
    toml += &plugin_section(
        "loop-open",
        "fixture-infinite-loop",
        "router",
        &format!("fail_policy = \"fail_open\"\n{limits}"),
    );
    toml += &plugin_section("lost", "fixture-unknown-pool", "router", "");
    toml += "[admin]\nbind_address = \"127.0.0.1\"\nport = 0\n\n";
    let gw = start_with_plugins(&toml).await;

    // An endless loop is stopped at its deadline: a 500 naming the plugin (`get` is bounded,
    // and the loop never ends by itself).
    let r = get(listener_addr(&gw, "closed"), "app", "/").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text().contains("loop-closed"),
        "the reason names the plugin: {}",
        r.text()
    );

    // fail_open: the native rule answers instead.
    assert_routed(
        listener_addr(&gw, "open"),
        "app",
        "/",
        "native",
        "fail_open falls back",
    )
    .await;

    // A decision naming a pool that does not exist: the fail policy (closed), then the breaker.
    let lost = listener_addr(&gw, "lost");
    let r = get(lost, "app", "/").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("no-such-pool"), "{}", r.text());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(lost, "app", "/").await.status.as_u16());
    }
    assert_eq!(
        statuses.last(),
        Some(&503),
        "repeated failures open the breaker: {statuses:?}"
    );
    let lost_plugin = gw
        .plugins()
        .iter()
        .find(|p| p.name() == "lost")
        .cloned()
        .expect("plugin");
    assert!(
        matches!(lost_plugin.breaker_state(), BreakerState::Open { .. }),
        "{:?}",
        lost_plugin.breaker_state()
    );

    // The admin view shows each plugin's stats and breaker.
    let admin = gw.admin_addr().expect("admin listener");
    let view = get(admin, "admin", "/api/plugins").await;
    assert_eq!(view.status, 200, "{}", view.text());
    let plugins: serde_json::Value = serde_json::from_slice(&view.body).expect("JSON");
    let lost_view = plugins
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "lost"))
        .unwrap_or_else(|| panic!("plugin \"lost\" in {plugins}"));
    assert_eq!(lost_view["kind"], "router");
    assert_eq!(lost_view["breaker"], "open", "{lost_view}");
    assert!(
        lost_view["invalidDecisions"].as_u64() >= Some(5),
        "{lost_view}"
    );
    assert_eq!(lost_view["contentHash"].as_str().map(str::len), Some(64));
    let closed_view = plugins
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "loop-closed"))
        .expect("loop-closed");
    assert_eq!(closed_view["deadlines"], 1, "{closed_view}");

    // Everyone else is served throughout.
    assert_routed(
        listener_addr(&gw, "plain"),
        "app",
        "/",
        "other",
        "a route without a plugin",
    )
    .await;
    assert_eq!(
        native.hits(),
        1,
        "only the fail_open request reached the native pool"
    );
}

#[test]
fn plugin_configuration_errors_name_the_field() {
    let base = "[[listeners]]\nname = \"l\"\nport = 80\n[[backend_pools]]\nname = \"p\"\n[[backend_settings]]\nname = \"s\"\nport = 80\n";
    let rule = |extra: &str| {
        format!(
            "[[rules]]\nname = \"r\"\nlistener = \"l\"\nbackend_pool = \"p\"\nbackend_settings = \"s\"\n{extra}\n"
        )
    };
    let err = Config::from_toml(&format!("{base}{}", rule("router = \"nope\""))).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"rules[0].router: no plugin named "nope""#
    );

    let probe = plugin_section("health", "example-json-health-probe", "probe", "");
    let err =
        Config::from_toml(&format!("{base}{}{probe}", rule("router = \"health\""))).unwrap_err();
    assert_eq!(err.path, "rules[0].router");
    assert!(err.reason.contains("is a probe plugin"), "{err}");

    let err = Config::from_toml(&format!(
        "{base}{}[[plugins]]\nname = \"gone\"\npath = \"/nonexistent/gone.wasm\"\nkind = \"router\"\n",
        rule("")
    ))
    .unwrap_err();
    assert_eq!(err.path, "plugins[0].path");
    assert!(err.reason.contains("gone.wasm"), "{err}");

    let router = plugin_section(
        "r",
        "example-canary-router",
        "router",
        "fail_policy = \"sometimes\"",
    );
    let err = Config::from_toml(&format!("{base}{}{router}", rule(""))).unwrap_err();
    assert_eq!(err.path, "plugins[0].fail_policy");

    // Samples: validated field by field, for routers only.
    let sampled = |kind: &str, component: &str, sample: &str| {
        let plugin = plugin_section("x", component, kind, "");
        Config::from_toml(&format!(
            "{base}{}{plugin}[[plugins.samples]]\nhost = \"app\"\n{sample}\n",
            rule("")
        ))
    };
    let err = sampled("router", "example-canary-router", "expect = \"route\"").unwrap_err();
    assert_eq!(err.path, "plugins[0].samples[0].expect");
    let err = sampled(
        "router",
        "example-canary-router",
        "expect = \"defer\"\npool = \"p\"",
    )
    .unwrap_err();
    assert_eq!(err.path, "plugins[0].samples[0].pool");
    assert!(err.reason.contains("only to \"forward\""), "{err}");
    let err = sampled(
        "router",
        "example-canary-router",
        "expect = \"forward\"\nheaders = { \"bad name\" = \"v\" }",
    )
    .unwrap_err();
    assert_eq!(err.path, "plugins[0].samples[0].headers.bad name");
    let err = sampled("probe", "example-json-health-probe", "expect = \"defer\"").unwrap_err();
    assert_eq!(err.path, "plugins[0].samples");
    let ok = sampled(
        "router",
        "example-canary-router",
        "path = \"/a?b=c\"\nexpect = \"forward\"\npool = \"p\"",
    )
    .expect("a valid sample");
    assert_eq!(
        ok.plugins[0].samples[0].request.query.as_deref(),
        Some("b=c")
    );

    // A plugin declared without a component (loaded through the admin API), and the engine's
    // size.
    let declared = Config::from_toml(&format!(
        "{base}{}[[plugins]]\nname = \"later\"\nkind = \"router\"\n[plugin_engine]\nmax_instances = 8\n",
        rule("router = \"later\"")
    ))
    .expect("declared without path");
    assert!(declared.plugins[0].path.is_none());
    assert_eq!(declared.plugin_max_instances, Some(8));
    let err = Config::from_toml(&format!(
        "{base}{}[plugin_engine]\nmax_instances = 0\n",
        rule("")
    ))
    .unwrap_err();
    assert_eq!(err.path, "plugin_engine.max_instances");

    let router = plugin_section(
        "r",
        "example-canary-router",
        "router",
        "request_headers = [\"cookie\", \"bad header\"]",
    );
    let err = Config::from_toml(&format!("{base}{}{router}", rule(""))).unwrap_err();
    assert_eq!(err.path, "plugins[0].request_headers[1]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_fails_to_load_stops_the_start_with_its_name() {
    let native = HttpBackend::start("native").await;
    let mut toml = native_route(&native, "");
    toml += &plugin_section("panicky", "fixture-init-panic", "router", "");
    let config = Config::from_toml(&toml).expect("valid configuration");
    let err = match within("Gateway::start", wasmgate::Gateway::start(config)).await {
        Ok(_) => panic!("a plugin whose init panics must stop the start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("panicky") && err.contains("init"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_health_probe_plugin_judges_degraded_and_accepts_401() {
    let ok = HttpBackend::start("ok").await;
    let degraded = HttpBackend::start("degraded").await;
    let authenticated = HttpBackend::start("authenticated").await;
    ok.set_probe_answer(ProbeAnswer::Body(r#"{"status":"ok"}"#.into()))
        .await;
    degraded
        .set_probe_answer(ProbeAnswer::Body(r#"{"status":"degraded"}"#.into()))
        .await;
    authenticated
        .set_probe_answer(ProbeAnswer::Status(401))
        .await;
    let mut toml = plugin_engine_section();
    toml += &listener("web", 0, &[]);
    toml += &pool("pool", &[ok.addr, degraded.addr, authenticated.addr]);
    toml += &settings("web", "probe = \"health\"");
    toml += &basic_rule("rule", "web", "pool", "web", "");
    toml += "[[probes]]\nname = \"health\"\npath = \"/healthz\"\ninterval = \"200ms\"\nprobe_plugin = \"json-health\"\n\n";
    toml += &plugin_section(
        "json-health",
        "example-json-health-probe",
        "probe",
        r#"config = '{"path": "/status"}'"#,
    );
    let gw = start_with_plugins(&toml).await;

    let health = |addr: std::net::SocketAddr| {
        let snapshot = gw.snapshot();
        let t = snapshot
            .targets
            .iter()
            .find(|t| {
                snapshot.pools[t.pool.0].servers[t.server]
                    .address
                    .to_string()
                    == addr.to_string()
            })
            .expect("target");
        (
            t.health.status(),
            t.health.detail().reason.unwrap_or_default(),
        )
    };
    use wasmgate::probe::Status;
    eventually("the plugin's verdicts are published", || async {
        let states = [
            health(ok.addr),
            health(degraded.addr),
            health(authenticated.addr),
        ];
        (states[0].0 == Status::Healthy
            && states[1].0 == Status::Unhealthy
            && states[2].0 == Status::Healthy)
            .then_some(())
    })
    .await;
    let (_, reason) = health(degraded.addr);
    assert!(
        reason.contains("degraded"),
        "the plugin's reason is shown: {reason:?}"
    );
    let (_, reason) = health(authenticated.addr);
    assert!(reason.contains("401"), "{reason:?}");
    let probe = ok
        .probes()
        .last()
        .cloned()
        .expect("a probe reached the server");
    assert_eq!(probe.uri, "/status", "the plugin shaped the probe's path");
    assert_eq!(probe.header("accept"), Some("application/json"));

    // Traffic avoids the degraded server.
    let addr = listener_addr(&gw, "web");
    for _ in 0..6 {
        let r = get(addr, "app", "/").await;
        assert_ne!(r.backend(), Some("degraded"), "{}", r.text());
    }
}

/// The Python probe evaluator (componentize-py) judging real probes of real backends: status,
/// latency and a maintenance page served with 200, with the probe's path shaped by the plugin;
/// a server that recovers is judged healthy again, and traffic follows the verdicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_probe_plugin_judges_status_latency_and_maintenance_pages() {
    let ok = HttpBackend::start("ok").await;
    let maintenance = HttpBackend::start("maintenance").await;
    let failing = HttpBackend::start("failing").await;
    let slow = HttpBackend::start("slow").await;
    maintenance
        .set_probe_answer(ProbeAnswer::Body("<h1>Down for MAINTENANCE</h1>".into()))
        .await;
    failing.set_probe_answer(ProbeAnswer::Status(503)).await;
    slow.set_probe_answer(ProbeAnswer::Slow(Duration::from_millis(1200)))
        .await;
    let servers = [ok.addr, maintenance.addr, failing.addr, slow.addr];
    let mut toml = plugin_engine_section();
    toml += &listener("web", 0, &[]);
    toml += &pool("pool", &servers);
    toml += &settings("web", "probe_plugin = \"py-health\"\nprobe = \"health\"");
    toml += &basic_rule("rule", "web", "pool", "web", "");
    toml +=
        "[[probes]]\nname = \"health\"\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = 5\n\n";
    toml += &plugin_section(
        "py-health",
        "example-python-probe",
        "probe",
        r#"config = '{"max_latency_ms": 300, "maintenance_marker": "maintenance", "path": "/ready"}'"#,
    );
    let gw = start_with_plugins(&toml).await;

    use wasmgate::probe::Status;
    let health = |addr: std::net::SocketAddr| {
        let snapshot = gw.snapshot();
        let t = snapshot
            .targets
            .iter()
            .find(|t| {
                snapshot.pools[t.pool.0].servers[t.server]
                    .address
                    .to_string()
                    == addr.to_string()
            })
            .expect("target");
        (
            t.health.status(),
            t.health.detail().reason.unwrap_or_default(),
        )
    };
    eventually("the Python plugin's verdicts are published", || async {
        let states: Vec<Status> = servers.iter().map(|a| health(*a).0).collect();
        (states
            == [
                Status::Healthy,
                Status::Unhealthy,
                Status::Unhealthy,
                Status::Unhealthy,
            ])
        .then_some(())
    })
    .await;
    let reason = |addr| health(addr).1;
    assert!(
        reason(ok.addr).starts_with("status 200 in "),
        "{}",
        reason(ok.addr)
    );
    assert_eq!(reason(maintenance.addr), "in maintenance");
    assert_eq!(reason(failing.addr), "status 503");
    assert!(
        reason(slow.addr).starts_with("slow: ") && reason(slow.addr).ends_with("(limit 300 ms)"),
        "{}",
        reason(slow.addr)
    );
    let probe = ok
        .probes()
        .last()
        .cloned()
        .expect("a probe reached the server");
    assert_eq!(probe.uri, "/ready", "the plugin shaped the probe's path");

    // Traffic goes to the one healthy server only.
    let addr = listener_addr(&gw, "web");
    for _ in 0..6 {
        let r = get(addr, "app", "/").await;
        assert_eq!(r.backend(), Some("ok"), "{}", r.text());
    }

    // The maintenance ends: the plugin judges the server healthy again and it takes traffic.
    maintenance.set_probe_answer(ProbeAnswer::Healthy).await;
    eventually("the recovered server is healthy again", || async {
        (health(maintenance.addr).0 == Status::Healthy).then_some(())
    })
    .await;
    let mut seen = HashSet::new();
    for _ in 0..8 {
        seen.insert(
            get(addr, "app", "/")
                .await
                .backend()
                .unwrap_or("")
                .to_owned(),
        );
    }
    assert_eq!(
        seen,
        HashSet::from(["ok".to_owned(), "maintenance".to_owned()]),
        "round robin over the healthy servers"
    );
    let stats = gw.plugins()[0].stats();
    assert!(stats.calls > 8 && stats.failures == 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builtin_router_routes_like_the_native_rules() {
    let b = [
        HttpBackend::start("site").await,
        HttpBackend::start("api").await,
        HttpBackend::start("fallback").await,
    ];
    let port = free_port();
    let mut toml = plugin_engine_section();
    toml += "[routing]\nrouter = \"builtin\"\n\n";
    toml += &listener("basic", port, &[]);
    toml += &listener("site", port, &["*.contoso.com"]);
    toml += &pool("site", &[b[0].addr]);
    toml += &pool("api", &[b[1].addr]);
    toml += &pool("fallback", &[b[2].addr]);
    toml += &settings("web", "");
    toml += &settings("api", "path = \"/v2\"");
    toml += &basic_rule("basic", "basic", "fallback", "web", "");
    toml += "[[url_path_maps]]\nname = \"m\"\ndefault_backend_pool = \"site\"\ndefault_backend_settings = \"web\"\n\
             [[url_path_maps.path_rules]]\nname = \"api\"\npaths = [\"/api/*\"]\nbackend_pool = \"api\"\nbackend_settings = \"api\"\n\
             [[url_path_maps.path_rules]]\nname = \"old\"\npaths = [\"/old*\"]\nredirect = \"home\"\n\n";
    toml += "[[redirects]]\nname = \"home\"\ntarget_url = \"https://www.contoso.com/\"\ninclude_path = true\ninclude_query_string = true\n\n";
    toml += "[[rules]]\nname = \"site\"\nlistener = \"site\"\nurl_path_map = \"m\"\n\n";
    let gw = start_with_plugins(&toml).await;
    let addr = listener_addr(&gw, "basic");

    assert_routed(
        addr,
        "www.contoso.com",
        "/",
        "site",
        "multi-site before basic",
    )
    .await;
    assert_routed(
        addr,
        "WWW.contoso.com",
        "/API/users?id=1",
        "api",
        "path rule, any case",
    )
    .await;
    assert_eq!(
        b[1].last().uri,
        "/v2/users?id=1",
        "the matched prefix is replaced by the override"
    );
    assert_routed(
        addr,
        "example.org",
        "/api/x",
        "fallback",
        "the basic listener",
    )
    .await;
    let moved = get(addr, "a.contoso.com", "/old/page?q=1").await;
    assert_eq!(
        (moved.status.as_u16(), moved.header("location")),
        (301, Some("https://www.contoso.com/old/page?q=1"))
    );
    let builtin = gw
        .plugins()
        .iter()
        .find(|p| p.name() == "builtin")
        .cloned()
        .expect("builtin loaded");
    assert!(
        builtin.stats().calls >= 4,
        "the plugin decided: {:?}",
        builtin.stats()
    );
}
