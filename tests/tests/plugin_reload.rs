//! Plugins changed while traffic flows, through the admin API: replacements under continuous
//! load with no failed request, refused uploads that leave the running version serving,
//! unload and load, plugins declared without a component, and shadow mode with promotion.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wasmgate::admin::plugins::percent_encode;
use wasmgate::config::Config;
use wasmgate_cli::admin::client::{AdminApi, ClientError, call};
use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::*;

const TOKEN: &str = "plugin-admin-token-0123456789";

/// The canary router sending every user to one pool, naming the variant after it (the
/// backend sees which version decided in `x-variant`).
fn all_to(pool: &str) -> String {
    format!(
        r#"{{"variants": [{{"name": "v-{pool}", "pool": "{pool}", "settings": "web", "weight": 1}}]}}"#
    )
}

/// Listener `web` whose rule forwards to pool `native` through router `canary` (canary router,
/// everything to pool `a`), pools `a` and `b`, an admin listener with a token, and `extra`.
fn gateway_toml(native: &HttpBackend, a: &HttpBackend, b: &HttpBackend, extra: &str) -> String {
    let mut toml = plugin_engine_section();
    toml += &listener("web", 0, &[]);
    toml += &pool("native", &[native.addr]);
    toml += &pool("a", &[a.addr]);
    toml += &pool("b", &[b.addr]);
    toml += &settings("web", "");
    toml += &basic_rule("rule", "web", "native", "web", "router = \"canary\"");
    toml += &format!("[admin]\nbind_address = \"127.0.0.1\"\nport = 0\ntoken = {TOKEN:?}\n\n");
    toml += &plugin_section(
        "canary",
        "example-canary-router",
        "router",
        &format!("config = '{}'", all_to("a")),
    );
    toml += extra;
    toml
}

async fn start(toml: &str) -> wasmgate::Gateway {
    let config = Config::from_toml(toml)
        .unwrap_or_else(|e| panic!("test configuration refused: {e}\n--- config ---\n{toml}"));
    let gw = within_for(
        Duration::from_secs(120),
        "Gateway::start",
        wasmgate::Gateway::start(config),
    )
    .await
    .unwrap_or_else(|e| panic!("gateway failed to start: {e}\n--- config ---\n{toml}"));
    assert!(gw.wait_for_first_probes(WAIT).await, "first probes");
    gw
}

fn admin(gw: &wasmgate::Gateway) -> AdminApi {
    let url = format!("http://{}", gw.admin_addr().expect("admin listener"));
    AdminApi::new(&url, Some(TOKEN), None).expect("admin URL")
}

/// An admin call: `Ok(JSON)` for a 2xx, `Err((status, message))` otherwise.
async fn api(
    gw: &wasmgate::Gateway,
    method: Method,
    path: &str,
    body: impl Into<Bytes>,
) -> Result<serde_json::Value, (u16, String)> {
    match within_for(
        Duration::from_secs(60),
        path,
        call(&admin(gw), method, path, body.into()),
    )
    .await
    {
        Ok((_, body)) => Ok(serde_json::from_slice(&body).expect("JSON")),
        Err(ClientError::Status { status, body, .. }) => Err((status.as_u16(), body)),
        Err(e) => panic!("{path}: {e}"),
    }
}

fn with_config(action: &str, config: &str) -> String {
    format!(
        "/api/plugins/canary/{action}?config={}",
        percent_encode(config)
    )
}

fn canary_wasm() -> Vec<u8> {
    std::fs::read(plugin_path("example-canary-router")).expect("component")
}

#[derive(Default)]
struct LoadResult {
    ok: usize,
    failures: Vec<String>,
    /// Request latency in µs, per phase (0: steady, 1: during swaps).
    latency: [Vec<u64>; 2],
}

/// Sends GETs on a keep-alive connection until `stop`, checking that every answer came from
/// pool `a` or `b` and that the variant header the backend saw names the same pool (the
/// decision and its header edit came from one version).
async fn client_loop(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    swapping: Arc<AtomicBool>,
) -> LoadResult {
    let mut result = LoadResult::default();
    let mut sender = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let phase = usize::from(swapping.load(Ordering::Relaxed));
        if sender.is_none() {
            let stream = match TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    result.failures.push(format!("connect: {e}"));
                    continue;
                }
            };
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            sender = Some(s);
        }
        let s = sender.as_mut().expect("connected");
        let req = Request::get("/load")
            .header("host", "app")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let started = Instant::now();
        let res = tokio::time::timeout(WAIT, async {
            let res = s.send_request(req).await.map_err(|e| e.to_string())?;
            let status = res.status();
            let backend = res
                .headers()
                .get("x-backend")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, backend, body.to_bytes()))
        })
        .await;
        match res {
            Ok(Ok((status, backend, body))) if status != 200 => result.failures.push(format!(
                "status {status} from {backend:?}: {}",
                String::from_utf8_lossy(&body)
            )),
            Ok(Ok((_, backend, _))) if !matches!(backend.as_deref(), Some("a") | Some("b")) => {
                result.failures.push(format!("answered by {backend:?}"))
            }
            Ok(Ok(_)) => {
                result.ok += 1;
                result.latency[phase].push(started.elapsed().as_micros() as u64);
            }
            Ok(Err(e)) => {
                result.failures.push(e);
                sender = None;
            }
            Err(_) => {
                result.failures.push("no answer within the bound".into());
                sender = None;
            }
        }
    }
    result
}

fn p99(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// Whether every request backend `b` saw carried the variant header of its own pool.
fn variants_consistent(backend: &HttpBackend, pool: &str) {
    let expected = format!("v-{pool}");
    for r in backend.requests() {
        if r.path() == "/load" || r.path() == "/check" {
            assert_eq!(
                r.header("x-variant"),
                Some(expected.as_str()),
                "pool {pool} got a request decided by another version's configuration"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_replacements_under_load_fail_no_request() {
    let native = HttpBackend::start("native").await;
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let gw = start(&gateway_toml(&native, &a, &b, "")).await;
    let addr = listener_addr(&gw, "web");
    let wasm = canary_wasm();

    let stop = Arc::new(AtomicBool::new(false));
    let swapping = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client_loop(addr, stop.clone(), swapping.clone())))
        .collect();
    // Steady state first, for the latency comparison: 100 requests reached the backends, all
    // sent before swapping starts (at most one per client is still unanswered).
    eventually("100 requests before the replacements", || async {
        (a.hits_under("/load") + b.hits_under("/load") >= 100).then_some(())
    })
    .await;
    swapping.store(true, Ordering::Relaxed);
    let started = Instant::now();
    for i in 0..100 {
        let to = if i % 2 == 0 { "b" } else { "a" };
        let view = api(
            &gw,
            Method::POST,
            &with_config("replace", &all_to(to)),
            wasm.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("replacement {i}: {e:?}"));
        assert_eq!(view["state"], "active");
        // A request sent after the replacement answered is decided by the new version.
        let check = get(addr, "app", "/check").await;
        assert_eq!(
            (check.status.as_u16(), check.backend()),
            (200, Some(to)),
            "after replacement {i}, new requests use the new version: {}",
            check.text()
        );
    }
    let swap_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut total = LoadResult::default();
    for c in clients {
        let r = within("client task", c).await.expect("client task");
        total.ok += r.ok;
        total.failures.extend(r.failures);
        for phase in 0..2 {
            total.latency[phase].extend(&r.latency[phase]);
        }
    }
    assert!(
        total.failures.is_empty(),
        "{} of {} requests failed during 100 replacements: {:?}",
        total.failures.len(),
        total.ok + total.failures.len(),
        &total.failures[..total.failures.len().min(10)]
    );
    assert!(
        total.latency[0].len() > 50 && total.latency[1].len() > 100,
        "the clients kept sending ({} steady, {} during swaps)",
        total.latency[0].len(),
        total.latency[1].len()
    );
    variants_consistent(&a, "a");
    variants_consistent(&b, "b");
    assert!(a.hits_under("/load") > 0 && b.hits_under("/load") > 0);
    assert_eq!(
        native.hits_under("/load"),
        0,
        "the router decided every request"
    );
    let (steady, swaps) = (p99(&mut total.latency[0]), p99(&mut total.latency[1]));
    println!(
        "hot loading: 100 replacements in {:.1} s under {} requests, 0 failed; request p99 steady {steady} µs, during swaps {swaps} µs ({:.2}×)",
        swap_time.as_secs_f64(),
        total.ok,
        swaps as f64 / steady.max(1) as f64
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_uploads_leave_the_running_version_serving() {
    let native = HttpBackend::start("native").await;
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    // Every version of `canary` must send a sample request to pool `a`.
    let sample = "\n[[plugins.samples]]\nhost = \"app\"\npath = \"/\"\nexpect = \"forward\"\npool = \"a\"\n\n";
    let mut toml = gateway_toml(&native, &a, &b, "");
    toml = toml.replace(
        &format!("config = '{}'\n", all_to("a")),
        &format!("config = '{}'\n{sample}", all_to("a")),
    );
    let gw = start(&toml).await;
    let addr = listener_addr(&gw, "web");
    let before = api(&gw, Method::GET, "/api/plugins/canary", Bytes::new())
        .await
        .expect("view");
    let hash = before["contentHash"].as_str().expect("hash").to_owned();
    let wasm = canary_wasm();
    let probe = std::fs::read(plugin_path("example-json-health-probe")).expect("component");
    let panic = std::fs::read(plugin_path("fixture-init-panic")).expect("component");

    let refusals: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "not a component",
            "/api/plugins/canary/replace".into(),
            b"\0asm but not really".to_vec(),
            422,
            "plugin \"canary\" (upload): not a valid WebAssembly component: failed to parse",
        ),
        (
            "wrong kind",
            "/api/plugins/canary/replace".into(),
            probe,
            422,
            "does not export wasmgate:plugin/router",
        ),
        (
            "init error",
            with_config("replace", "{not json"),
            wasm.clone(),
            422,
            "init failed",
        ),
        (
            "init panic",
            "/api/plugins/canary/replace".into(),
            panic,
            422,
            "init trapped",
        ),
        (
            "sample fails",
            with_config("replace", &all_to("b")),
            wasm.clone(),
            422,
            "sample 0 failed",
        ),
        (
            "load of a loaded plugin",
            "/api/plugins/canary/load".into(),
            wasm.clone(),
            409,
            "replace it instead",
        ),
        (
            "unknown plugin",
            "/api/plugins/nothing/replace".into(),
            wasm.clone(),
            404,
            "no plugin named",
        ),
        (
            "no component",
            "/api/plugins/canary/replace".into(),
            Vec::new(),
            400,
            "no component",
        ),
        (
            "bad kind",
            "/api/plugins/canary/replace?kind=filter".into(),
            wasm.clone(),
            400,
            "kind",
        ),
        (
            "wrong kind asked",
            "/api/plugins/canary/replace?kind=probe".into(),
            wasm.clone(),
            400,
            "is a router plugin",
        ),
        (
            "missing file",
            "/api/plugins/canary/replace?path=/nonexistent/x.wasm".into(),
            Vec::new(),
            400,
            "cannot read",
        ),
        (
            "shadow sample",
            "/api/plugins/canary/shadow?sample=2".into(),
            wasm.clone(),
            400,
            "out of range",
        ),
    ];
    for (what, path, body, status, message) in refusals {
        let (got, text) = api(&gw, Method::POST, &path, body).await.expect_err(what);
        assert_eq!(got, status, "{what}: {text}");
        assert!(
            text.contains(message),
            "{what}: {text:?} should say {message:?}"
        );
        let now = api(&gw, Method::GET, "/api/plugins/canary", Bytes::new())
            .await
            .expect("view");
        assert_eq!(
            now["contentHash"],
            hash.as_str(),
            "{what}: version untouched"
        );
        assert!(now.get("shadow").is_none(), "{what}: no shadow");
        assert_routed(addr, "app", "/", "a", what).await;
    }

    // A refused component is described in one line naming the plugin: what the file is, or the
    // guest's panic without the runtime's backtrace hint.
    let panic = std::fs::read(plugin_path("fixture-init-panic")).expect("component");
    let exact: [(&str, Vec<u8>, String); 2] = [
        (
            "text",
            b"hello, not wasm\n".to_vec(),
            r#"plugin "canary" (upload): not a WebAssembly component (the file starts with "hello, not wasm")"#.into(),
        ),
        (
            "init panic",
            panic,
            format!(
                "plugin \"canary\": init trapped: panicked at fixtures/init-panic/src/lib.rs:9:9: \
                 init-panic fixture refuses config {:?}",
                all_to("a")
            ),
        ),
    ];
    for (what, body, expected) in exact {
        let (status, text) = api(&gw, Method::POST, "/api/plugins/canary/replace", body)
            .await
            .expect_err(what);
        assert_eq!(status, 422, "{what}");
        assert_eq!(text, expected, "{what}");
    }

    // Over the size limit: refused from the declared length, before any byte is read.
    let admin_addr = gw.admin_addr().expect("admin");
    let head = format!(
        "POST /api/plugins/canary/replace HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        200 << 20
    );
    let res = raw_exchange(admin_addr, head.as_bytes())
        .await
        .expect("answer");
    assert_eq!(res.status, 413, "{}", res.text());
    // Without the token nothing happens.
    let res = raw_exchange(
        admin_addr,
        b"POST /api/plugins/canary/unload HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("answer");
    assert_eq!(res.status, 401);
    assert_routed(addr, "app", "/", "a", "after refusals").await;

    // A good replacement by path, then unload: the rule's fail policy (fail_closed) answers
    // 503 until a version is loaded again.
    let path = plugin_path("example-canary-router");
    let q = format!(
        "/api/plugins/canary/replace?path={}",
        percent_encode(&path.display().to_string())
    );
    let view = api(&gw, Method::POST, &q, Bytes::new())
        .await
        .expect("replace by path");
    assert_eq!(view["origin"], path.display().to_string());
    let view = api(
        &gw,
        Method::POST,
        "/api/plugins/canary/unload",
        Bytes::new(),
    )
    .await
    .expect("unload");
    assert_eq!(view["state"], "not_loaded");
    let r = get(addr, "app", "/").await;
    assert_eq!(r.status.as_u16(), 503, "{}", r.text());
    assert!(r.text().contains("not loaded"), "{}", r.text());
    let (status, _) = api(
        &gw,
        Method::POST,
        "/api/plugins/canary/unload",
        Bytes::new(),
    )
    .await
    .expect_err("unload twice");
    assert_eq!(status, 409);
    api(&gw, Method::POST, "/api/plugins/canary/load", wasm.clone())
        .await
        .expect("load again");
    assert_routed(addr, "app", "/", "a", "loaded again").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugins_declared_without_a_component_and_admin_only_plugins() {
    let native = HttpBackend::start("native").await;
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    // `later` has no component: its rule routes natively (fail_open) until one is loaded.
    let extra = format!(
        "{}[[plugins]]\nname = \"later\"\nkind = \"router\"\nfail_policy = \"fail_open\"\nconfig = '{}'\n\n",
        listener("other", 0, &[]),
        all_to("b")
    ) + &basic_rule("other-rule", "other", "native", "web", "router = \"later\"");
    let gw = start(&gateway_toml(&native, &a, &b, &extra)).await;
    let other = listener_addr(&gw, "other");
    let list = api(&gw, Method::GET, "/api/plugins", Bytes::new())
        .await
        .expect("list");
    assert_eq!(list[1]["name"], "later");
    assert_eq!(list[1]["state"], "not_loaded");
    assert_eq!(list[1]["inConfig"], true);
    assert_routed(other, "app", "/", "native", "not loaded, fail_open").await;

    // Loaded with the configuration's `config` (everything to `b`).
    let view = api(&gw, Method::POST, "/api/plugins/later/load", canary_wasm())
        .await
        .expect("load");
    assert_eq!(view["state"], "active");
    assert_routed(other, "app", "/", "b", "loaded through the admin API").await;

    // A name the configuration does not declare: kind required, listed, not routed to.
    let (status, text) = api(&gw, Method::POST, "/api/plugins/spare/load", canary_wasm())
        .await
        .expect_err("no kind");
    assert_eq!(status, 400, "{text}");
    let q = format!(
        "/api/plugins/spare/load?kind=router&config={}",
        percent_encode(&all_to("a"))
    );
    let view = api(&gw, Method::POST, &q, canary_wasm())
        .await
        .expect("load spare");
    assert_eq!(view["inConfig"], false);
    let list = api(&gw, Method::GET, "/api/plugins", Bytes::new())
        .await
        .expect("list");
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["canary", "later", "spare"]);
    api(&gw, Method::DELETE, "/api/plugins/spare", Bytes::new())
        .await
        .expect("unload spare");
    let (status, _) = api(&gw, Method::GET, "/api/plugins/spare", Bytes::new())
        .await
        .expect_err("forgotten");
    assert_eq!(status, 404);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_mode_counts_agreement_and_promote_puts_the_candidate_in_service() {
    let native = HttpBackend::start("native").await;
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let gw = start(&gateway_toml(&native, &a, &b, "")).await;
    let addr = listener_addr(&gw, "web");
    // The candidate agrees except where a request asks for the `v-b` variant by header.
    let candidate = r#"{"variants": [{"name": "v-a", "pool": "a", "settings": "web", "weight": 1}, {"name": "v-b", "pool": "b", "settings": "web", "weight": 0}], "override_header": "x-variant"}"#;
    let view = api(
        &gw,
        Method::POST,
        &with_config("shadow", candidate),
        canary_wasm(),
    )
    .await
    .expect("shadow");
    assert_eq!(view["shadow"]["compared"], 0);
    for i in 0..40 {
        let headers: &[(&str, &str)] = if i % 4 == 3 {
            &[("x-variant", "v-b")]
        } else {
            &[]
        };
        let r = get_with(addr, "app", &format!("/s/{i}"), headers).await;
        assert_eq!(r.backend(), Some("a"), "the active version decides");
    }
    let report = eventually_json(&gw, |v| {
        let s = &v["shadow"];
        s["compared"].as_u64().unwrap_or(0) + s["candidateErrors"].as_u64().unwrap_or(0) >= 40
    })
    .await;
    let s = &report["shadow"];
    assert_eq!(
        (
            s["compared"].as_u64(),
            s["agreed"].as_u64(),
            s["disagreed"].as_u64()
        ),
        (Some(40), Some(30), Some(10)),
        "{s:#}"
    );
    assert_eq!(s["candidateErrors"], 0);
    assert_eq!(s["dropped"], 0);
    let examples = s["disagreements"].as_array().expect("examples");
    assert_eq!(examples.len(), 10);
    let e = &examples[0];
    assert!(
        e["request"]
            .as_str()
            .unwrap_or("")
            .starts_with("GET app/s/"),
        "{e}"
    );
    assert!(
        e["active"].as_str().unwrap_or("").contains("pool \"a\""),
        "{e}"
    );
    assert!(
        e["candidate"].as_str().unwrap_or("").contains("pool \"b\""),
        "{e}"
    );

    // Promote: the candidate decides now, and the shadow is gone.
    let view = api(
        &gw,
        Method::POST,
        "/api/plugins/canary/promote",
        Bytes::new(),
    )
    .await
    .expect("promote");
    assert!(view.get("shadow").is_none());
    let r = get_with(addr, "app", "/", &[("x-variant", "v-b")]).await;
    assert_eq!(r.backend(), Some("b"), "the promoted version decides");
    let (status, _) = api(
        &gw,
        Method::POST,
        "/api/plugins/canary/promote",
        Bytes::new(),
    )
    .await
    .expect_err("nothing to promote");
    assert_eq!(status, 409);

    // A sampled shadow compares about that share of requests, and stops on request.
    api(
        &gw,
        Method::POST,
        &format!("{}&sample=0.25", with_config("shadow", &all_to("a"))),
        canary_wasm(),
    )
    .await
    .expect("sampled shadow");
    for i in 0..200 {
        get(addr, "app", &format!("/t/{i}")).await;
    }
    let report = eventually_json(&gw, |v| v["shadow"]["compared"].as_u64().unwrap_or(0) > 0).await;
    let compared = report["shadow"]["compared"].as_u64().unwrap_or(0);
    assert!(
        (20..=90).contains(&compared),
        "about a quarter of 200 compared: {compared}"
    );
    api(
        &gw,
        Method::DELETE,
        "/api/plugins/canary/shadow",
        Bytes::new(),
    )
    .await
    .expect("stop shadow");
    let view = api(&gw, Method::GET, "/api/plugins/canary", Bytes::new())
        .await
        .expect("view");
    assert!(view.get("shadow").is_none());
    gw.shutdown().await;
}

/// The plugin's view once `done` holds (bounded).
async fn eventually_json(
    gw: &wasmgate::Gateway,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = api(gw, Method::GET, "/api/plugins/canary", Bytes::new())
            .await
            .expect("view");
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The whole hot-loading story at once: under continuous HTTP requests (decided by the router
/// plugin) and WebSocket sessions (on a second listener), 100 plugin replacements and 50
/// configuration reloads interleaved: no request fails, no session drops, and a reload that
/// leaves the plugin's entry alone keeps the version the admin API installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replacements_and_reloads_under_http_and_websocket_load() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let native = HttpBackend::start("native").await;
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let ws = WsBackend::start("ws").await;
    let config = |variant: usize| {
        let mut extra = listener("chat", 0, &[]);
        extra += &pool("ws", &[ws.addr]);
        extra += &settings("ws", &format!("request_timeout = {}", 60 + variant % 2));
        extra += &basic_rule("chat-rule", "chat", "ws", "ws", "");
        if variant % 2 == 1 {
            extra += &listener("extra", 0, &[]);
            extra += &basic_rule("extra-rule", "extra", "native", "web", "");
        }
        gateway_toml(&native, &a, &b, &extra)
    };
    let gw = start(&config(0)).await;
    let web = listener_addr(&gw, "web");
    let chat = listener_addr(&gw, "chat");
    let wasm = canary_wasm();

    let stop = Arc::new(AtomicBool::new(false));
    let swapping = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client_loop(web, stop.clone(), swapping.clone())))
        .collect();
    let sessions: Vec<_> = (0..8)
        .map(|s| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut session = wasmgate_tests::ws::ws_open(chat, "example.com", "/chat").await;
                let mut echoed = 0usize;
                // Bounded by `stop`, set once the (bounded) changes are done.
                while !stop.load(Ordering::Relaxed) {
                    let text = format!("session {s} message {echoed}");
                    let round = tokio::time::timeout(WAIT, async {
                        session.send(Message::text(text.clone())).await.ok()?;
                        match session.next().await {
                            Some(Ok(Message::Text(t))) if t.as_str() == text => Some(()),
                            _ => None,
                        }
                    })
                    .await;
                    if !matches!(round, Ok(Some(()))) {
                        return Err(format!("session {s} broke after {echoed} messages"));
                    }
                    echoed += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                session.close(None).await.map_err(|e| e.to_string())?;
                Ok(echoed)
            })
        })
        .collect();

    for i in 0..100 {
        let to = if i % 2 == 0 { "b" } else { "a" };
        api(
            &gw,
            Method::POST,
            &with_config("replace", &all_to(to)),
            wasm.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("replacement {i}: {e:?}"));
        // Reloads follow the replacements to "b", which the file's entry (to "a") does not say.
        if i % 2 == 0 {
            gw.reload(Config::from_toml(&config(i / 2 + 1)).expect("config"))
                .await
                .unwrap_or_else(|e| panic!("reload {}: {e}", i / 2 + 1));
        }
        // The reload kept the replaced version: new requests go where it says.
        let check = get(web, "app", "/check").await;
        assert_eq!(
            (check.status.as_u16(), check.backend()),
            (200, Some(to)),
            "after change {i}: {}",
            check.text()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = LoadResult::default();
    for c in clients {
        let r = within("client task", c).await.expect("client task");
        total.ok += r.ok;
        total.failures.extend(r.failures);
    }
    assert!(
        total.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        total.failures.len(),
        total.ok + total.failures.len(),
        &total.failures[..total.failures.len().min(10)]
    );
    assert!(total.ok > 100, "only {} requests were made", total.ok);
    for s in sessions {
        let echoed = within("a WebSocket session to stop", s)
            .await
            .expect("session task")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(echoed > 10, "a session echoed only {echoed} messages");
    }
    assert!(
        ws.close_codes().iter().all(|c| *c != Some(1001)),
        "the gateway closed no session: {:?}",
        ws.close_codes()
    );
    variants_consistent(&a, "a");
    variants_consistent(&b, "b");
    gw.shutdown().await;
}

/// A reload that loads a probe plugin and adds a pool it judges probes the new servers with
/// that plugin before the configuration takes effect, though the plugin is only installed when
/// it does: the plugin's verdicts are in the reload's result (a 200 whose body says `degraded`
/// is Unhealthy, where the native probe would call it Healthy), and traffic follows them from
/// the first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_probes_its_new_servers_with_the_probe_plugin_it_loads() {
    let old = HttpBackend::start("old").await;
    let ok = HttpBackend::start("ok").await;
    let degraded = HttpBackend::start("degraded").await;
    ok.set_probe_answer(ProbeAnswer::Body(r#"{"status":"ok"}"#.into()))
        .await;
    degraded
        .set_probe_answer(ProbeAnswer::Body(r#"{"status":"degraded"}"#.into()))
        .await;
    let mut toml = plugin_engine_section();
    toml += &listener("web", 0, &[]);
    toml += &pool("old", &[old.addr]);
    toml += &settings("web", "");
    let gw = start(&(toml.clone() + &basic_rule("rule", "web", "old", "web", ""))).await;

    toml += &pool("checked", &[ok.addr, degraded.addr]);
    toml += &settings("checked", "probe = \"health\"");
    toml += &basic_rule("rule", "web", "checked", "checked", "");
    toml +=
        "[[probes]]\nname = \"health\"\npath = \"/healthz\"\nprobe_plugin = \"json-health\"\n\n";
    toml += &plugin_section(
        "json-health",
        "example-json-health-probe",
        "probe",
        r#"config = '{"path": "/status"}'"#,
    );
    let config = Config::from_toml(&toml)
        .unwrap_or_else(|e| panic!("test configuration refused: {e}\n--- config ---\n{toml}"));
    let report = within_for(Duration::from_secs(120), "reload", gw.reload(config))
        .await
        .unwrap_or_else(|e| panic!("reload refused: {e}"));
    assert_eq!(
        report.servers_added,
        [
            format!("{} in pool checked with settings checked: Healthy", ok.addr),
            format!(
                "{} in pool checked with settings checked: Unhealthy",
                degraded.addr
            ),
        ],
        "{report:?}"
    );
    assert!(report.servers_unknown.is_empty(), "{report:?}");
    assert_eq!(
        ok.probes().first().map(|p| p.uri.clone()).as_deref(),
        Some("/status"),
        "the plugin shaped the first probe"
    );
    let addr = listener_addr(&gw, "web");
    for i in 0..4 {
        assert_routed(
            addr,
            "app",
            &format!("/x/{i}"),
            "ok",
            "only the healthy server",
        )
        .await;
    }
    gw.shutdown().await;
}
