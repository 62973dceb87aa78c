//! Tests against real components built from `plugins/` and `examples/` by
//! `scripts/build-plugins` (which `scripts/test` runs first).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::*;

/// Where the built components are: `$WASMGATE_PLUGIN_DIR`, else `target/plugins`.
fn plugin_dir() -> PathBuf {
    match std::env::var_os("WASMGATE_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
    }
}

pub(super) fn component(name: &str) -> Arc<[u8]> {
    let path = plugin_dir().join(format!("{name}.wasm"));
    match std::fs::read(&path) {
        Ok(bytes) => bytes.into(),
        Err(e) => panic!(
            "plugin component {} is missing ({e}); build the plugins with scripts/build-plugins \
             (scripts/test does) or point WASMGATE_PLUGIN_DIR at them",
            path.display()
        ),
    }
}

/// One engine for the tests: the pooling allocator reserves address space per engine. Its
/// artifact cache lives in target/, so Python and JavaScript compile once per checkout.
fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        PluginEngine::new(EngineConfig {
            cache_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache")),
            ..EngineConfig::default()
        })
        .expect("engine")
    })
}

async fn load(name: &str, config: &str) -> Plugin {
    load_with(name, config, |_| {}).await
}

async fn load_with(name: &str, config: &str, adjust: impl FnOnce(&mut PluginSpec)) -> Plugin {
    try_load(name, config, adjust)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn try_load(
    name: &str,
    config: &str,
    adjust: impl FnOnce(&mut PluginSpec),
) -> Result<Plugin, PluginError> {
    let mut spec = PluginSpec::new(name, component(name), config);
    adjust(&mut spec);
    let pools = StaticPools(
        ["tenant-acme", "tenant-globex", "web"]
            .iter()
            .map(|p| (p.to_string(), Vec::new()))
            .collect(),
    );
    engine().load(spec, Arc::new(pools)).await.map(|(p, _)| p)
}

fn request(authority: &str, path: &str, headers: &[(&str, &str)]) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        scheme: "http".into(),
        authority: authority.into(),
        path: path.into(),
        query: None,
        headers: headers
            .iter()
            .map(|(n, v)| Header {
                name: n.to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        client_address: "192.0.2.7:50000".into(),
        listener: "http".into(),
        websocket: false,
        tls_sni: None,
    }
}

fn forward(decision: Decision) -> Forward {
    match decision {
        Decision::Forward(forward) => forward,
        other => panic!("expected a forward, got {other:?}"),
    }
}

fn set_header<'a>(forward: &'a Forward, name: &str) -> Option<&'a str> {
    forward.header_edits.iter().find_map(|edit| match edit {
        HeaderEdit::Set(h) if h.name == name => std::str::from_utf8(&h.value).ok(),
        _ => None,
    })
}

fn probe_response(status: Option<u16>, body: &str) -> ProbeResponse {
    ProbeResponse {
        pool: "web".into(),
        settings: "web".into(),
        server: "10.0.0.4".into(),
        status,
        error: status.is_none().then(|| "Connection refused".to_owned()),
        headers: vec![Header {
            name: "content-type".into(),
            value: b"application/json".to_vec(),
        }],
        body: body.as_bytes().to_vec(),
        latency_ms: 12,
    }
}

const CANARY: &str = r#"{
    "variants": [
        {"name": "stable", "pool": "web", "settings": "web", "weight": 90},
        {"name": "canary", "pool": "web-canary", "settings": "web", "weight": 10}
    ],
    "sticky_key": ["cookie:session", "header:x-user-id", "client-ip"],
    "override_header": "x-variant"
}"#;

#[tokio::test]
async fn rust_canary_router_splits_by_weight_and_sticks() {
    let canary = load("example-canary-router", CANARY).await;
    assert!(canary.is_router() && !canary.is_probe_evaluator());

    let mut to_canary = 0;
    for user in 0..1000 {
        let cookie = format!("session=user-{user}; theme=dark");
        let req = request("www.example.com", "/", &[("cookie", &cookie)]);
        let first = forward(canary.route(&req).await.unwrap());
        let again = forward(canary.route(&req).await.unwrap());
        assert_eq!(
            first.pool, again.pool,
            "the same session stays on its variant"
        );
        let variant = set_header(&first, "x-variant").unwrap();
        assert_eq!(first.pool == "web-canary", variant == "canary");
        to_canary += usize::from(variant == "canary");
    }
    assert!(
        (60..=140).contains(&to_canary),
        "about 10 % to the canary: {to_canary}"
    );

    // The header source is used when there is no cookie, and the override wins over both.
    let by_header = request("www.example.com", "/", &[("x-user-id", "user-1")]);
    let a = forward(canary.route(&by_header).await.unwrap());
    assert_eq!(
        a.pool,
        forward(canary.route(&by_header).await.unwrap()).pool
    );
    let forced = request(
        "www.example.com",
        "/",
        &[("x-variant", "canary"), ("cookie", "session=x")],
    );
    assert_eq!(
        forward(canary.route(&forced).await.unwrap()).pool,
        "web-canary"
    );

    let stats = canary.stats();
    assert_eq!(stats.calls, 2003);
    assert_eq!(stats.failures, 0);
    assert_eq!(
        stats.instances_created, 1,
        "one warm instance served every call"
    );
    assert!(stats.call_time_p99.is_some());
}

#[tokio::test]
async fn a_plugin_refusing_its_config_fails_to_load_with_its_message() {
    let err = try_load("example-canary-router", "{not json", |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::Init { message, .. } if message.contains("invalid config")),
        "{err}"
    );
    let err = try_load("example-canary-router", r#"{"variants": []}"#, |_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("at least one needs a weight"),
        "{err}"
    );
}

#[tokio::test]
async fn rust_tenant_router_by_subdomain_and_token_claim() {
    let config = r#"{"domain": "saas.example", "pool_prefix": "tenant-", "settings": "web"}"#;
    let tenants = load("example-tenant-router", config).await;

    let acme = forward(
        tenants
            .route(&request("acme.saas.example:8443", "/", &[]))
            .await
            .unwrap(),
    );
    assert_eq!(
        (acme.pool.as_str(), acme.settings.as_str()),
        ("tenant-acme", "web")
    );
    assert_eq!(set_header(&acme, "x-tenant"), Some("acme"));

    // {"sub":"u1","tenant":"globex"} as an unsigned JWT payload.
    let token = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSIsInRlbmFudCI6Imdsb2JleCJ9.";
    let by_claim = request("api.example.net", "/orders", &[("authorization", token)]);
    assert_eq!(
        forward(tenants.route(&by_claim).await.unwrap()).pool,
        "tenant-globex"
    );

    match tenants
        .route(&request("initech.saas.example", "/", &[]))
        .await
        .unwrap()
    {
        Decision::Respond(r) => {
            assert_eq!(r.status, 404);
            assert!(String::from_utf8_lossy(&r.body).contains("initech"));
        }
        other => panic!("an unknown tenant is answered 404, got {other:?}"),
    }
    assert_eq!(
        tenants
            .route(&request("www.example.net", "/", &[]))
            .await
            .unwrap(),
        Decision::Defer,
        "no tenant: the native rules decide"
    );
}

#[tokio::test]
async fn rust_json_probe_evaluator() {
    let probe = load("example-json-health-probe", r#"{"path": "/health"}"#).await;
    assert!(probe.is_probe_evaluator() && !probe.is_router());

    let verdict = probe
        .evaluate(&probe_response(Some(200), r#"{"status":"degraded"}"#))
        .await
        .unwrap();
    assert!(!verdict.healthy);
    assert_eq!(verdict.reason, "status: degraded");
    let verdict = probe
        .evaluate(&probe_response(Some(200), r#"{"status":"ok"}"#))
        .await
        .unwrap();
    assert!(verdict.healthy, "{verdict:?}");
    let verdict = probe
        .evaluate(&probe_response(Some(401), ""))
        .await
        .unwrap();
    assert!(
        verdict.healthy,
        "401 from an authenticated backend is healthy: {verdict:?}"
    );
    assert!(
        !probe
            .evaluate(&probe_response(Some(503), ""))
            .await
            .unwrap()
            .healthy
    );
    let refused = probe.evaluate(&probe_response(None, "")).await.unwrap();
    assert_eq!(
        (refused.healthy, refused.reason.as_str()),
        (false, "Connection refused")
    );

    let shaped = probe
        .shape_probe_request("web", "web", "10.0.0.4")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shaped.path.as_deref(), Some("/health"));
    assert_eq!(shaped.headers[0].name, "accept");

    let err = probe.route(&request("a", "/", &[])).await.unwrap_err();
    assert!(matches!(err, PluginError::MissingExport { .. }), "{err}");
}

#[tokio::test]
async fn python_router() {
    let config = r#"{
        "routes": [{"prefix": "/api/", "pool": "api", "settings": "api", "strip_prefix": true}],
        "redirects": {"/old": "/new"}
    }"#;
    let router = load("example-python-router", config).await;
    let api = forward(
        router
            .route(&request("example.com", "/API/users", &[]))
            .await
            .unwrap(),
    );
    assert_eq!(
        (api.pool.as_str(), api.path.as_deref()),
        ("api", Some("/users"))
    );
    assert_eq!(set_header(&api, "x-routed-by"), Some("python"));
    assert_eq!(
        router
            .route(&request("example.com", "/old", &[]))
            .await
            .unwrap(),
        Decision::Redirect(Redirect {
            status: 308,
            location: "/new".into()
        })
    );
    assert_eq!(
        router
            .route(&request("example.com", "/", &[]))
            .await
            .unwrap(),
        Decision::Defer
    );

    let maintenance = load("example-python-router", r#"{"maintenance": true}"#).await;
    match maintenance
        .route(&request("example.com", "/", &[]))
        .await
        .unwrap()
    {
        Decision::Respond(r) => assert_eq!(r.status, 503),
        other => panic!("expected 503, got {other:?}"),
    }
    let err = try_load(
        "example-python-router",
        r#"{"routes": [{"prefix": 1}]}"#,
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("routes[0].prefix"), "{err}");
}

#[tokio::test]
async fn python_probe_evaluator() {
    let probe = load("example-python-probe", r#"{"max_latency_ms": 100}"#).await;
    assert!(
        probe
            .evaluate(&probe_response(Some(200), "ok"))
            .await
            .unwrap()
            .healthy
    );
    let verdict = probe
        .evaluate(&probe_response(Some(200), "<h1>Down for Maintenance</h1>"))
        .await
        .unwrap();
    assert_eq!(
        (verdict.healthy, verdict.reason.as_str()),
        (false, "in maintenance")
    );
    let mut slow = probe_response(Some(200), "ok");
    slow.latency_ms = 250;
    let verdict = probe.evaluate(&slow).await.unwrap();
    assert!(
        !verdict.healthy && verdict.reason.starts_with("slow"),
        "{verdict:?}"
    );
    assert!(
        !probe
            .evaluate(&probe_response(None, ""))
            .await
            .unwrap()
            .healthy
    );
    assert_eq!(
        probe.shape_probe_request("web", "web", "s").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn javascript_router() {
    let config = r#"{
        "versions": {"2": {"pool": "v2", "settings": "web"}},
        "blocked_prefixes": ["/internal/"],
        "redirects": {"/old": "/new"}
    }"#;
    let router = load("example-js-router", config).await;
    let v2 = forward(
        router
            .route(&request("example.com", "/x", &[("X-API-Version", " 2 ")]))
            .await
            .unwrap(),
    );
    assert_eq!((v2.pool.as_str(), v2.settings.as_str()), ("v2", "web"));
    assert_eq!(set_header(&v2, "x-routed-by"), Some("javascript"));
    match router
        .route(&request("example.com", "/Internal/metrics", &[]))
        .await
        .unwrap()
    {
        Decision::Respond(r) => {
            assert_eq!((r.status, r.body.as_slice()), (403, &b"forbidden\n"[..]))
        }
        other => panic!("expected 403, got {other:?}"),
    }
    assert_eq!(
        router
            .route(&request("example.com", "/old", &[]))
            .await
            .unwrap(),
        Decision::redirect_for_tests(301, "/new")
    );
    assert_eq!(
        router
            .route(&request("example.com", "/", &[]))
            .await
            .unwrap(),
        Decision::Defer
    );

    let err = try_load("example-js-router", "{oops", |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid config"), "{err}");
}

/// Rust routers (through the SDK) take the packed head; the Python and JavaScript examples the
/// record; both reach the same decisions in the tests above and in `plugins.rs`.
#[tokio::test]
async fn each_router_is_called_through_the_interface_it_exports() {
    let canary = load(
        "example-canary-router",
        r#"{"variants": [{"name": "a", "pool": "a", "settings": "web", "weight": 1}]}"#,
    )
    .await;
    assert_eq!(canary.router_interface(), Some("packed-router"));
    let python = load(
        "example-python-router",
        r#"{"routes": [{"prefix": "/api/", "pool": "api", "settings": "api"}]}"#,
    )
    .await;
    assert_eq!(python.router_interface(), Some("router"));
    let javascript = load("example-js-router", "{}").await;
    assert_eq!(javascript.router_interface(), Some("router"));
    let probe = load("example-json-health-probe", "{}").await;
    assert_eq!(probe.router_interface(), None);
}

impl Decision {
    fn redirect_for_tests(status: u16, location: &str) -> Decision {
        Decision::Redirect(Redirect {
            status,
            location: location.into(),
        })
    }
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_deadline_without_blocking_others() {
    let spin = load_with("fixture-infinite-loop", "", |spec| {
        spec.limits.call_timeout = Duration::from_millis(30);
    })
    .await;
    let canary = load("example-canary-router", CANARY).await;

    // On this single-threaded runtime the canary call can only finish while the loop runs if
    // the looping call yields at each epoch tick.
    let req = request("a", "/", &[]);
    let started = Instant::now();
    let (looped, served_at) = tokio::join!(spin.route(&req), async {
        tokio::task::yield_now().await;
        canary.route(&request("a", "/", &[])).await.unwrap();
        started.elapsed()
    });
    let stopped_after = started.elapsed();
    let err = looped.unwrap_err();
    assert!(matches!(err, PluginError::Deadline { .. }), "{err}");
    assert!(
        stopped_after >= Duration::from_millis(30),
        "stopped after {stopped_after:?}, before its budget"
    );
    // Without the yield the canary could only run once the loop had been stopped.
    assert!(
        served_at < stopped_after,
        "canary served after {served_at:?}"
    );
    eprintln!("infinite loop stopped after {stopped_after:?}; canary served after {served_at:?}");

    let stats = spin.stats();
    assert_eq!((stats.deadlines, stats.instances_discarded), (1, 1));
    // The next call gets a fresh instance, and is stopped the same way.
    assert!(matches!(
        spin.route(&request("a", "/", &[])).await,
        Err(PluginError::Deadline { .. })
    ));
}

/// The never-returning fixture on `engine`, with a 100 ms budget per call.
async fn load_spinner(engine: &PluginEngine) -> Plugin {
    let mut spec = PluginSpec::new(
        "fixture-infinite-loop",
        component("fixture-infinite-loop"),
        "",
    );
    spec.limits.call_timeout = Duration::from_millis(100);
    let pools = StaticPools(Default::default());
    let (spin, _) = engine.load(spec, Arc::new(pools)).await.expect("load");
    spin
}

/// A loop on a runtime's only thread, with an engine created on that runtime: nothing else can
/// run there while the guest does, so the epoch must advance from elsewhere (the ticker's own
/// thread) for the call to stop. (Ticking from the runtime's own timer, with a thread standing in
/// only when those ticks stopped, stretched a 100 ms budget to 627 ms here.) How close to its
/// budget it stops depends on the machine's load, so the figure is printed, not asserted: what is
/// asserted is that it stops, never before its budget, and that the ticker advanced the epoch
/// while the only worker was held.
#[tokio::test]
async fn a_loop_holding_the_only_worker_still_stops_at_its_deadline() {
    let engine = super::bench::small_engine(3);
    let spin = load_spinner(&engine).await;
    let before = engine.inner.ticker_counts();
    let started = Instant::now();
    let err = spin.route(&request("a", "/", &[])).await.unwrap_err();
    let stopped_after = started.elapsed();
    let after = engine.inner.ticker_counts();
    assert!(matches!(err, PluginError::Deadline { .. }), "{err}");
    eprintln!("loop on the only worker stopped after {stopped_after:?} (budget 100 ms)");
    assert!(
        stopped_after >= Duration::from_millis(100),
        "stopped after {stopped_after:?}, before its budget"
    );
    assert!(
        after.1 > before.1,
        "the epoch never advanced while the only worker was held"
    );
}

/// Short calls, as on the request path: the epoch thread looks every watch interval (4 ms)
/// instead of ticking every millisecond, and advances the epoch only when it sees a call in
/// flight. Ticking every millisecond would be 300 wake-ups and 300 advances here.
#[test]
fn short_calls_do_not_make_the_epoch_thread_tick_every_millisecond() {
    let engine = super::bench::small_engine(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let canary = runtime.block_on(async {
        let mut spec = PluginSpec::new(
            "example-canary-router",
            component("example-canary-router"),
            CANARY,
        );
        spec.request_headers = Some(Arc::from([]));
        let pools = StaticPools(Default::default());
        engine.load(spec, Arc::new(pools)).await.expect("load").0
    });
    let req = request("a", "/", &[]);
    let before = engine.inner.ticker_counts();
    let started = Instant::now();
    let mut calls = 0u32;
    while started.elapsed() < Duration::from_millis(300) {
        runtime.block_on(canary.route(&req)).expect("route");
        calls += 1;
        // A gap between calls, as between requests.
        std::thread::sleep(Duration::from_micros(20));
    }
    let after = engine.inner.ticker_counts();
    let (woke, advanced) = (after.0 - before.0, after.1 - before.1);
    eprintln!("{calls} calls in 300 ms: the epoch thread woke {woke} times, advanced {advanced}");
    assert!(calls > 100, "only {calls} calls");
    assert!(woke < 150, "woke {woke} times in 300 ms");
    assert!(advanced < 60, "advanced {advanced} times in 300 ms");
}

#[tokio::test]
async fn the_epoch_thread_parks_when_idle_and_the_next_call_wakes_it() {
    let engine = super::bench::small_engine(1);
    let spin = load_spinner(&engine).await;
    // No call in flight: the ticker parks after 100 ms without one.
    let waited = Instant::now();
    while !engine.inner.ticker_parked() {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "the epoch thread kept ticking with no call in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A runaway call still meets its deadline: starting it woke the ticker. Were it not woken,
    // the guest would spin for ever; it spins on a thread of its own, so the test fails instead.
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let started = Instant::now();
        let result = runtime.block_on(spin.route(&request("a", "/", &[])));
        let _ = done.send((result, started.elapsed()));
    });
    let (result, stopped_after) = outcome
        .recv_timeout(Duration::from_secs(10))
        .expect("the call was not stopped: the parked epoch thread was not woken");
    let err = result.unwrap_err();
    assert!(matches!(err, PluginError::Deadline { .. }), "{err}");
    eprintln!("the woken ticker stopped the loop after {stopped_after:?} (budget 100 ms)");
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_by_the_memory_limit() {
    let bomb = load_with("fixture-memory-bomb", "", |spec| {
        spec.limits.max_memory_bytes = 32 << 20;
        spec.limits.call_timeout = Duration::from_secs(5);
    })
    .await;
    let started = Instant::now();
    let err = bomb.route(&request("a", "/", &[])).await.unwrap_err();
    assert!(
        matches!(err, PluginError::MemoryLimit { limit_bytes, .. } if limit_bytes == 32 << 20),
        "{err}"
    );
    eprintln!("memory bomb stopped after {:?}: {err}", started.elapsed());
    assert_eq!(bomb.stats().memory_limits, 1);
    let canary = load("example-canary-router", CANARY).await;
    assert!(
        canary.route(&request("a", "/", &[])).await.is_ok(),
        "others keep being served"
    );
}

#[tokio::test]
async fn a_trapped_instance_is_replaced_and_the_next_call_works() {
    let trap = load("fixture-trap", "").await;
    let calls = async |path: &str| {
        let decision = trap.route(&request("a", path, &[])).await?;
        let count = set_header(&forward(decision), "x-instance-calls").map(str::to_owned);
        Ok::<_, PluginError>(count.unwrap())
    };
    assert_eq!(calls("/").await.unwrap(), "1");
    assert_eq!(
        calls("/").await.unwrap(),
        "2",
        "a warm instance keeps its state"
    );
    let err = calls("/trap").await.unwrap_err();
    match &err {
        PluginError::Trap { reason, call, .. } => {
            assert_eq!(*call, "route");
            assert!(
                reason.contains("asked to trap on call 3"),
                "the guest's panic message: {reason}"
            );
        }
        other => panic!("expected a trap, got {other}"),
    }
    assert_eq!(
        calls("/").await.unwrap(),
        "1",
        "a fresh instance after the trap"
    );
    let stats = trap.stats();
    assert_eq!(
        (stats.traps, stats.instances_created, stats.failures),
        (1, 2, 1)
    );
}

#[tokio::test]
async fn recycling_after_one_call_gives_every_call_a_fresh_instance() {
    let trap = load_with("fixture-trap", "", |spec| {
        spec.limits.recycle_after_calls = Some(1)
    })
    .await;
    for _ in 0..3 {
        let f = forward(trap.route(&request("a", "/", &[])).await.unwrap());
        assert_eq!(set_header(&f, "x-instance-calls"), Some("1"));
    }
    assert_eq!(trap.stats().instances_created, 3);
}

#[tokio::test]
async fn a_panic_in_init_fails_the_load_with_the_panic_message() {
    let err = try_load("fixture-init-panic", "secret=1", |_| {})
        .await
        .unwrap_err();
    match &err {
        PluginError::InitTrap { plugin, reason } => {
            assert_eq!(plugin, "fixture-init-panic");
            assert_eq!(
                reason,
                "panicked at fixtures/init-panic/src/lib.rs:9:9: \
                 init-panic fixture refuses config \"secret=1\""
            );
        }
        other => panic!("expected an init trap, got {other}"),
    }
    assert_eq!(
        err.to_string(),
        "plugin \"fixture-init-panic\": init trapped: panicked at \
         fixtures/init-panic/src/lib.rs:9:9: init-panic fixture refuses config \"secret=1\""
    );
}

#[tokio::test]
async fn a_decision_naming_an_unknown_pool_is_returned_for_the_caller_to_reject() {
    let lost = load("fixture-unknown-pool", "").await;
    let decision = lost.route(&request("a", "/", &[])).await.unwrap();
    let pool = forward(decision).pool;
    // What the gateway does with a decision: check its names against the configuration.
    let known = StaticPools([("web".to_string(), Vec::new())].into_iter().collect());
    assert!(known.pool_state(&pool).is_none());
    let err = lost.report_invalid_decision(format!("no backend pool named {pool:?}"));
    assert!(
        matches!(&err, PluginError::InvalidDecision { reason, .. } if reason.contains("no-such-pool"))
    );
    assert_eq!(err.plugin(), Some("fixture-unknown-pool"));
    let stats = lost.stats();
    assert_eq!((stats.invalid_decisions, stats.failures), (1, 1));
}

#[tokio::test]
async fn repeated_failures_open_the_breaker_until_its_cool_down_ends() {
    let trap = load_with("fixture-trap", "", |spec| {
        spec.breaker = BreakerConfig {
            failures: 3,
            window: Duration::from_secs(60),
            // Long enough that the calls below all land inside it on a slow machine.
            cool_down: Duration::from_secs(1),
        };
    })
    .await;
    let trap_request = request("a", "/trap", &[]);
    for _ in 0..3 {
        assert!(matches!(
            trap.route(&trap_request).await,
            Err(PluginError::Trap { .. })
        ));
    }
    assert!(matches!(
        trap.breaker_state(),
        BreakerState::Open { trips: 1, .. }
    ));
    let err = trap.route(&request("a", "/", &[])).await.unwrap_err();
    assert!(matches!(err, PluginError::CircuitOpen { .. }), "{err}");
    assert!(!err.is_plugin_fault());
    let stats = trap.stats();
    assert_eq!(
        (stats.calls, stats.rejected),
        (3, 1),
        "a refused call never reaches the plugin"
    );

    // The cool-down ends by itself: wait for it, bounded.
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while trap.breaker_state() != BreakerState::HalfOpen {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the breaker half-opens once its cool-down ends"
    );
    assert!(
        trap.route(&request("a", "/", &[])).await.is_ok(),
        "the trial call succeeds"
    );
    assert_eq!(trap.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn concurrent_calls_share_a_bounded_set_of_instances() {
    let canary = load_with("example-canary-router", CANARY, |spec| {
        spec.limits.max_concurrency = 3;
    })
    .await;
    let calls = (0..50).map(|i| {
        let canary = canary.clone();
        tokio::spawn(async move {
            let cookie = format!("session={i}");
            canary
                .route(&request("a", "/", &[("cookie", &cookie)]))
                .await
        })
    });
    for call in calls.collect::<Vec<_>>() {
        assert!(call.await.unwrap().is_ok());
    }
    let stats = canary.stats();
    assert_eq!(stats.calls, 50);
    assert!(stats.instances_created <= 3, "{stats:?}");
    assert!(canary.idle_instances() <= 3);
}

#[tokio::test]
async fn precompiled_artifacts_are_reused_from_memory_and_disk() {
    let dir = std::env::temp_dir().join(format!("wasmgate-plugin-cache-{}", fastrand::u64(..)));
    let config = || EngineConfig {
        cache_dir: Some(dir.clone()),
        total_memories: 50,
        total_tables: 50,
        total_stacks: 20,
        ..EngineConfig::default()
    };
    let spec = || PluginSpec::new("canary", component("example-canary-router"), CANARY);
    let host = || Arc::new(NoPools) as Arc<dyn HostView>;

    let first = PluginEngine::new(config()).unwrap();
    let (_, report) = first.load(spec(), host()).await.unwrap();
    assert_eq!(report.artifact, ArtifactSource::Compiled);
    let (_, report) = first.load(spec(), host()).await.unwrap();
    assert_eq!(report.artifact, ArtifactSource::Memory);

    // A new engine (a restarted gateway) with the same settings reads the artifact from disk.
    let second = PluginEngine::new(config()).unwrap();
    let (plugin, report) = second.load(spec(), host()).await.unwrap();
    assert_eq!(report.artifact, ArtifactSource::Disk);
    assert!(plugin.route(&request("a", "/", &[])).await.is_ok());
    eprintln!("compiled vs cached: {report:?}");

    // A damaged artifact is ignored: compiled again and rewritten.
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();
    let third = PluginEngine::new(config()).unwrap();
    let (_, report) = third.load(spec(), host()).await.unwrap();
    assert_eq!(report.artifact, ArtifactSource::Compiled);
    let fourth = PluginEngine::new(config()).unwrap();
    assert_eq!(
        fourth.load(spec(), host()).await.unwrap().1.artifact,
        ArtifactSource::Disk
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bytes_that_are_not_a_component_fail_to_compile() {
    let spec = PluginSpec::new("junk", &b"\0asm not really"[..], "");
    let err = engine().load(spec, Arc::new(NoPools)).await.unwrap_err();
    assert!(matches!(err, PluginError::Compile { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("plugin \"junk\": not a valid WebAssembly component: ")
            && !text.contains('\n'),
        "{text}"
    );

    let mut spec = PluginSpec::new("junk", &b"hello world\nsecond line"[..], "");
    spec.origin = Some("plugins/junk.wasm".into());
    let err = engine().load(spec, Arc::new(NoPools)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"junk\" (plugins/junk.wasm): not a WebAssembly component (the file starts with \"hello world\")"
    );

    let core_module = b"\0asm\x01\0\0\0";
    let spec = PluginSpec::new("core", &core_module[..], "");
    let err = engine().load(spec, Arc::new(NoPools)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"core\": a core WebAssembly module, not a component (build it for \
         wasm32-wasip2, or wrap it with `wasm-tools component new`)"
    );
}

#[test]
fn decisions_are_checked_against_the_contract() {
    let ok = Decision::Forward(Forward {
        pool: "web".into(),
        settings: "web".into(),
        server: None,
        header_edits: vec![HeaderEdit::Set(Header {
            name: "x-a".into(),
            value: b"1".to_vec(),
        })],
        path: Some("/v2/x".into()),
    });
    assert_eq!(check_decision(&ok), Ok(()));
    let mut bad_header = ok.clone();
    if let Decision::Forward(f) = &mut bad_header {
        f.header_edits = vec![HeaderEdit::Append(Header {
            name: "x-a".into(),
            value: b"a\r\nb".to_vec(),
        })];
    }
    assert!(check_decision(&bad_header).is_err());
    let mut bad_path = ok.clone();
    if let Decision::Forward(f) = &mut bad_path {
        f.path = Some("relative".into());
    }
    assert!(check_decision(&bad_path).is_err());
    assert!(check_decision(&Decision::redirect_for_tests(200, "/x")).is_err());
    assert!(check_decision(&Decision::redirect_for_tests(307, "")).is_err());
    let big = Decision::Respond(DirectResponse {
        status: 200,
        headers: vec![],
        body: vec![0; MAX_DIRECT_BODY + 1],
    });
    assert!(check_decision(&big).is_err());
    let informational = Decision::Respond(DirectResponse {
        status: 101,
        headers: vec![],
        body: vec![],
    });
    assert!(check_decision(&informational).is_err());
    assert_eq!(check_decision(&Decision::Defer), Ok(()));
}

#[tokio::test]
async fn plugins_get_no_environment_files_or_network() {
    let sandbox = load("fixture-sandbox", "").await;
    match sandbox.route(&request("a", "/", &[])).await.unwrap() {
        Decision::Respond(r) => assert_eq!(
            String::from_utf8_lossy(&r.body),
            "env=0 args=0 file=denied dir=denied tcp=denied clock=ok"
        ),
        other => panic!("expected the fixture's report, got {other:?}"),
    }
}

#[test]
fn handles_can_be_shared_between_tasks() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<Plugin>();
    shared::<PluginEngine>();
    shared::<PluginError>();
}

mod registry {
    //! `PluginRegistry`: what `prepare` reuses and loads, what `commit` changes, and that
    //! nothing live changes before it.

    use super::*;
    use crate::config::raw::RawSample;
    use crate::config::{Config, PluginId, Sample};

    fn canary(pool: &str) -> String {
        format!(
            r#"{{"variants": [{{"name": "v", "pool": "{pool}", "settings": "s", "weight": 1}}]}}"#
        )
    }

    /// A configuration whose plugins are `(name, component, config)`; a `None` component
    /// declares the plugin without one.
    fn config(plugins: &[(&str, Option<&str>, &str)]) -> Config {
        let mut toml = String::from(
            "[[listeners]]\nname = \"web\"\nport = 0\nbind_address = \"127.0.0.1\"\n\n\
             [[backend_pools]]\nname = \"p\"\naddresses = [\"127.0.0.1:9\"]\n\n\
             [[backend_settings]]\nname = \"s\"\nport = 80\n\n\
             [[rules]]\nname = \"r\"\nlistener = \"web\"\nbackend_pool = \"p\"\nbackend_settings = \"s\"\n\n",
        );
        for (name, component, init) in plugins {
            toml +=
                &format!("[[plugins]]\nname = {name:?}\nkind = \"router\"\nconfig = '{init}'\n");
            if let Some(c) = component {
                let path = plugin_dir().join(format!("{c}.wasm"));
                toml += &format!("path = {:?}\n", path.display().to_string());
            }
            toml += "\n";
        }
        Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
    }

    fn registry(config: &Config) -> PluginRegistry {
        PluginRegistry::new(config, Arc::new(NoPools), 1)
    }

    fn active_config(slot: &PluginSlot) -> String {
        slot.active().expect("loaded").config.clone()
    }

    #[tokio::test]
    async fn an_unchanged_entry_keeps_its_slot_and_an_admin_replaced_version() {
        let first = config(&[("r", Some("example-canary-router"), &canary("a"))]);
        let reg = registry(&first);
        let prepared = reg.prepare(&first).await.expect("prepare");
        assert_eq!(prepared.loaded(), 1);
        let set = reg.commit(prepared);
        let slot = set[0].clone();
        assert_eq!(active_config(&slot), canary("a"));

        reg.replace(
            "r",
            VersionRequest {
                component: ComponentSource::Bytes(component("example-canary-router")),
                kind: None,
                config: Some(canary("b")),
            },
        )
        .await
        .expect("replace");
        assert_eq!(active_config(&slot), canary("b"));

        // The same configuration again: nothing loads, the admin's version stays.
        let prepared = reg.prepare(&first).await.expect("prepare");
        assert_eq!(prepared.loaded(), 0);
        let set = reg.commit(prepared);
        assert!(Arc::ptr_eq(&set[0], &slot));
        assert_eq!(active_config(&slot), canary("b"));

        // The entry changes: a new version is prepared, but serves only once committed, in the
        // same slot (its shadow and its place in running requests' lookups stay valid).
        let second = config(&[("r", Some("example-canary-router"), &canary("c"))]);
        let prepared = reg.prepare(&second).await.expect("prepare");
        assert_eq!(prepared.loaded(), 1);
        assert_eq!(
            active_config(&slot),
            canary("b"),
            "prepare changes nothing live"
        );
        let set = reg.commit(prepared);
        assert!(Arc::ptr_eq(&set[0], &slot));
        assert_eq!(active_config(&slot), canary("c"));
    }

    #[tokio::test]
    async fn a_failed_prepare_changes_nothing_and_names_the_plugin() {
        let first = config(&[("r", Some("example-canary-router"), &canary("a"))]);
        let reg = registry(&first);
        reg.commit(reg.prepare(&first).await.expect("prepare"));
        let bad = config(&[
            ("r", Some("example-canary-router"), &canary("a")),
            ("broken", Some("example-canary-router"), "{not json"),
        ]);
        let error = reg.prepare(&bad).await.err().expect("refused").to_string();
        assert!(
            error.contains("broken") && error.contains("init failed"),
            "{error}"
        );
        assert_eq!(reg.current().len(), 1);
        assert!(reg.by_name("broken").is_none());
        assert_eq!(active_config(&reg.current()[0]), canary("a"));
    }

    #[tokio::test]
    async fn removed_entries_go_admin_only_plugins_stay_and_lookups_follow_names() {
        let first = config(&[
            ("r", Some("example-canary-router"), &canary("a")),
            ("q", Some("example-canary-router"), &canary("q")),
        ]);
        let reg = registry(&first);
        reg.commit(reg.prepare(&first).await.expect("prepare"));
        reg.load(
            "extra",
            VersionRequest {
                component: ComponentSource::Bytes(component("example-canary-router")),
                kind: Some(crate::config::PluginKind::Router),
                config: Some(canary("x")),
            },
        )
        .await
        .expect("admin-only load");

        // `r` goes, `q` moves to id 0, `later` is declared without a component.
        let second = config(&[
            ("q", Some("example-canary-router"), &canary("q")),
            ("later", None, &canary("l")),
        ]);
        let prepared = reg.prepare(&second).await.expect("prepare");
        assert_eq!(
            prepared.loaded(),
            0,
            "q is unchanged; later has no component"
        );
        reg.commit(prepared);
        assert!(reg.by_name("r").is_none());
        assert!(reg.by_name("extra").is_some_and(|s| !s.is_declared()));
        let later = reg.by_name("later").expect("declared");
        assert!(later.active().is_none() && later.is_declared());
        // A request still holding the first configuration asks for id 1 (`q`): found by name.
        let q = reg.slot(&first, PluginId(1)).expect("q");
        assert_eq!(q.name(), "q");
        assert!(reg.slot(&first, PluginId(0)).is_none(), "r is gone");
        let all: Vec<String> = reg.all().iter().map(|s| s.name().to_owned()).collect();
        assert_eq!(all, ["q", "later", "extra"]);

        // The admin loads `later`: it gets the configuration's `config`.
        reg.load(
            "later",
            VersionRequest {
                component: ComponentSource::Bytes(component("example-canary-router")),
                kind: None,
                config: None,
            },
        )
        .await
        .expect("load declared");
        assert_eq!(active_config(&later), canary("l"));
        // Declaring `extra` without a component adopts the admin-loaded version.
        let third = config(&[("extra", None, &canary("ignored"))]);
        reg.commit(reg.prepare(&third).await.expect("prepare"));
        let extra = reg.current()[0].clone();
        assert_eq!(extra.name(), "extra");
        assert!(extra.is_declared());
        assert_eq!(active_config(&extra), canary("x"));
    }

    #[tokio::test]
    async fn samples_refuse_a_version_that_decides_otherwise() {
        let first = config(&[("r", Some("example-canary-router"), &canary("a"))]);
        let mut with_samples = first.clone();
        let raw = RawSample {
            host: "app".into(),
            path: None,
            method: None,
            headers: Default::default(),
            client_address: None,
            listener: None,
            websocket: false,
            expect: "forward".into(),
            pool: Some("a".into()),
            settings: None,
            status: None,
            location: None,
        };
        with_samples.plugins[0].samples = vec![Sample::validate(&raw).expect("sample")];
        let reg = registry(&with_samples);
        reg.commit(reg.prepare(&with_samples).await.expect("passes its sample"));
        let refused = reg
            .replace(
                "r",
                VersionRequest {
                    component: ComponentSource::Bytes(component("example-canary-router")),
                    kind: None,
                    config: Some(canary("b")),
                },
            )
            .await
            .expect_err("refused");
        let text = refused.to_string();
        assert!(
            matches!(
                refused,
                ChangeError::Refused(PluginError::SampleMismatch { sample: 0, .. })
            ),
            "{text}"
        );
        assert!(text.contains("expected forward to pool \"a\""), "{text}");
        assert_eq!(active_config(&reg.current()[0]), canary("a"));
    }
}
