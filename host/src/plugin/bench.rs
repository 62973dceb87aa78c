//! Micro-benchmark of one router call, the figures behind the module's choices (instance reuse,
//! async calls). Run it in release mode, after `scripts/build-plugins`:
//!
//! ```sh
//! cargo test --release -p wasmgate --lib plugin::bench -- --ignored --nocapture
//! ```
//!
//! For the Rust, Python and JavaScript routers it measures, per call:
//! - the gateway's path, `Plugin::route` on a warm instance (breaker, instance pool, deadline,
//!   stats, decision check, async call on a fiber);
//! - the bare async call on a warm instance (`call_route`, deadline armed);
//! - the bare synchronous call on a warm instance (`TypedFunc::call`, no fiber);
//! - `Plugin::route` with a fresh instance per call (`recycle_after_calls = 1`: instantiate,
//!   `init` with the plugin's configuration, call).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};

use super::bindings::Plugins;
use super::instance::{Call, Exports, Instance, RouterExport, StoreState};
use super::*;
use crate::config::PluginLimits;

struct Case {
    label: &'static str,
    component: &'static str,
    config: &'static str,
    /// Calls per measurement on a warm instance; fresh-instance runs do a tenth.
    calls: usize,
}

const CASES: [Case; 3] = [
    Case {
        label: "Rust (canary router)",
        component: "example-canary-router",
        config: r#"{"variants": [
            {"name": "stable", "pool": "web", "settings": "web", "weight": 90},
            {"name": "canary", "pool": "web-canary", "settings": "web", "weight": 10}],
            "sticky_key": ["cookie:session", "client-ip"]}"#,
        calls: 50_000,
    },
    Case {
        label: "Python (componentize-py)",
        component: "example-python-router",
        config: r#"{"routes": [{"prefix": "/api/", "pool": "api", "settings": "api", "strip_prefix": true}]}"#,
        calls: 10_000,
    },
    Case {
        label: "JavaScript (componentize-js)",
        component: "example-js-router",
        config: r#"{"versions": {"2": {"pool": "v2", "settings": "web"}}}"#,
        calls: 10_000,
    },
];

/// A request head with 8 headers, as a browser sends them.
fn typical_request() -> RequestHead {
    let headers = [
        ("host", "www.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=4f1c2a9e77; theme=dark"),
        ("x-api-version", "2"),
        ("x-request-id", "7d3e9a1b-2c4f-4e8a-9b6d-0f1e2d3c4b5a"),
    ];
    RequestHead {
        method: "GET".into(),
        scheme: "https".into(),
        authority: "www.example.com".into(),
        path: "/api/orders/42".into(),
        query: Some("expand=items".into()),
        headers: headers
            .iter()
            .map(|(n, v)| Header {
                name: n.to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        client_address: "198.51.100.23:51234".into(),
        listener: "https".into(),
        websocket: false,
        tls_sni: Some("www.example.com".into()),
    }
}

struct Sample(Vec<Duration>);

impl Sample {
    fn measure(calls: usize, mut one: impl FnMut()) -> Sample {
        for _ in 0..calls / 10 {
            one();
        }
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            one();
            times.push(t.elapsed());
        }
        Sample(times)
    }

    async fn measure_async<F: AsyncFnMut()>(calls: usize, mut one: F) -> Sample {
        for _ in 0..calls / 10 {
            one().await;
        }
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            one().await;
            times.push(t.elapsed());
        }
        Sample(times)
    }

    fn cell(mut self) -> String {
        self.0.sort();
        let q = |q: f64| self.0[((self.0.len() - 1) as f64 * q) as usize];
        format!("{} · {}", micros(q(0.5)), micros(q(0.99)))
    }
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.2}")
    } else if us < 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

#[test]
#[ignore = "a benchmark: run in release mode with --ignored --nocapture"]
fn plugin_call_costs() {
    let engine = PluginEngine::new(EngineConfig {
        cache_dir: Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache"),
        ),
        ..EngineConfig::default()
    })
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = typical_request();
    let host: Arc<dyn HostView> = Arc::new(NoPools);
    let mut rows = Vec::new();

    for case in &CASES {
        let wasm = super::tests::component(case.component);
        let spec = |recycle| {
            let mut spec = PluginSpec::new(case.component, wasm.clone(), case.config);
            spec.limits.recycle_after_calls = recycle;
            spec
        };
        let (component, _) = engine
            .inner
            .cache
            .get_or_compile(engine.wasmtime(), &wasm)
            .unwrap();

        let (gateway, raw, fresh) = runtime.block_on(async {
            let (plugin, _) = engine.load(spec(None), host.clone()).await.unwrap();
            let gateway = Sample::measure_async(case.calls, async || {
                plugin.route(&request).await.unwrap();
            })
            .await;

            let pre = engine
                .inner
                .linker
                .instantiate_pre(component.component())
                .unwrap();
            let exports = Exports::find(&pre).unwrap();
            let name: Arc<str> = case.component.into();
            let limits = PluginLimits::default();
            let mut instance = Instance::new(
                &engine.inner.sandbox(),
                &pre,
                &exports,
                &name,
                case.config,
                &limits,
                &host,
            )
            .await
            .ok()
            .unwrap();
            let mut headers = Vec::new();
            let borrowed = RequestHeadRef::of(&request, &mut headers);
            let call = Call::Route(&borrowed);
            let raw = Sample::measure_async(case.calls, async || {
                assert!(instance.invoke(&call, limits.call_timeout).await.is_ok());
            })
            .await;

            let (fresh_plugin, _) = engine.load(spec(Some(1)), host.clone()).await.unwrap();
            let fresh = Sample::measure_async(case.calls / 10, async || {
                fresh_plugin.route(&request).await.unwrap();
            })
            .await;
            (gateway, raw, fresh)
        });

        // Synchronous calls: a store whose linker has only synchronous host functions, called
        // outside any async runtime (as a blocking thread would).
        let mut linker = Linker::<StoreState>::new(engine.wasmtime());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        Plugins::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s).unwrap();
        let pre = linker.instantiate_pre(component.component()).unwrap();
        let exports = Exports::find(&pre).unwrap();
        let (state, _) = StoreState::new(&case.component.into(), &PluginLimits::default(), &host);
        let mut store = Store::new(engine.wasmtime(), state);
        store.limiter(StoreState::limiter);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = pre.instantiate(&mut store).unwrap();
        let lifecycle = exports.lifecycle.load(&mut store, &instance).unwrap();
        lifecycle
            .func_init()
            .call(&mut store, (case.config,))
            .unwrap()
            .0
            .unwrap();
        let sync = match exports.router.as_ref().unwrap() {
            RouterExport::Record(r) => {
                let router = r.load(&mut store, &instance).unwrap();
                let route = router.func_route();
                Sample::measure(case.calls, || {
                    route.call(&mut store, (&request,)).unwrap();
                })
            }
            RouterExport::Packed(r) => {
                let router = r.load(&mut store, &instance).unwrap();
                let route = router
                    .func_route()
                    .func()
                    .typed::<(PackedHeadRef<'_>,), (Decision,)>(&store)
                    .unwrap();
                let mut headers = Vec::new();
                let borrowed = RequestHeadRef::of(&request, &mut headers);
                let mut text = Vec::new();
                Sample::measure(case.calls, || {
                    let head = PackedHeadRef::pack(&borrowed, &mut text);
                    route.call(&mut store, (head,)).unwrap();
                })
            }
        };

        rows.push(format!(
            "| {} | {} | {} | {} | {} |",
            case.label,
            gateway.cell(),
            raw.cell(),
            sync.cell(),
            fresh.cell()
        ));
    }

    // Loading: compile (no cache), then a new engine (a restarted gateway) reading the artifact.
    let dir = std::env::temp_dir().join(format!("wasmgate-bench-cache-{}", fastrand::u64(..)));
    let small = || EngineConfig {
        cache_dir: Some(dir.clone()),
        total_memories: 20,
        total_tables: 40,
        total_stacks: 20,
        ..EngineConfig::default()
    };
    let mut loads = Vec::new();
    for case in &CASES {
        let wasm = super::tests::component(case.component);
        let spec = PluginSpec::new(case.component, wasm.clone(), case.config);
        let (compiled, cached) = runtime.block_on(async {
            let compiled = PluginEngine::new(small())
                .unwrap()
                .load(spec.clone(), host.clone())
                .await
                .unwrap()
                .1;
            let cached = PluginEngine::new(small())
                .unwrap()
                .load(spec, host.clone())
                .await
                .unwrap()
                .1;
            (compiled, cached)
        });
        assert_eq!(
            (compiled.artifact, cached.artifact),
            (ArtifactSource::Compiled, ArtifactSource::Disk)
        );
        loads.push(format!(
            "| {} | {} KB | {:.1} ms | {:.1} ms | {:.2} ms |",
            case.label,
            wasm.len() / 1000,
            compiled.compile_time.as_secs_f64() * 1e3,
            cached.compile_time.as_secs_f64() * 1e3,
            cached.init_time.as_secs_f64() * 1e3,
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\n| guest | gateway path, warm instance | async call, warm instance | sync call, warm instance | gateway path, fresh instance per call |"
    );
    println!("|---|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
    println!("\nµs per call, p50 · p99.");
    println!("\n| guest | size | compile | read from the artifact cache | first instance + init |");
    println!("|---|---:|---:|---:|---:|");
    for row in loads {
        println!("{row}");
    }
}

/// How the proxy hands a request to a router, per call: what the gateway did before borrowed
/// heads (every field and header copied into owned strings, then lowered), a head borrowing the
/// request, and a borrowed head carrying only the header the router reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handoff {
    Owned,
    Borrowed,
    Filtered,
}

impl Handoff {
    const ALL: [Handoff; 3] = [Handoff::Owned, Handoff::Borrowed, Handoff::Filtered];

    fn label(self) -> &'static str {
        match self {
            Handoff::Owned => "owned head (every string copied on the host), 8 headers",
            Handoff::Borrowed => "borrowed head, 8 headers",
            Handoff::Filtered => "borrowed head, `request_headers = [\"cookie\"]` (1 header)",
        }
    }
}

/// The typical request as hyper hands it to the proxy.
fn typical_http_request() -> http::Request<()> {
    let head = typical_request();
    let mut req = http::Request::get("/api/orders/42?expand=items");
    for h in &head.headers {
        req = req.header(&h.name, &h.value[..]);
    }
    req.body(()).unwrap()
}

/// One router call the way the proxy makes it with `handoff`.
async fn proxy_call(plugin: &Plugin, req: &http::Request<()>, handoff: Handoff) -> Decision {
    let client: std::net::SocketAddr = "198.51.100.23:51234".parse().unwrap();
    match handoff {
        Handoff::Owned => {
            let head = RequestHead {
                method: req.method().as_str().to_owned(),
                scheme: "https".to_owned(),
                authority: "www.example.com".to_owned(),
                path: req.uri().path().to_owned(),
                query: req.uri().query().map(str::to_owned),
                headers: req
                    .headers()
                    .iter()
                    .map(|(n, v)| Header {
                        name: n.as_str().to_owned(),
                        value: v.as_bytes().to_vec(),
                    })
                    .collect(),
                client_address: client.to_string(),
                listener: "https".to_owned(),
                websocket: false,
                tls_sni: Some("www.example.com".to_owned()),
            };
            plugin.route(&head).await.unwrap()
        }
        Handoff::Borrowed | Handoff::Filtered => {
            let mut address = [0u8; 64];
            let wanted = plugin.request_headers();
            let headers: Vec<HeaderRef> = req
                .headers()
                .iter()
                .filter(|(n, _)| wanted.is_none_or(|w| w.contains(n)))
                .map(|(n, v)| HeaderRef {
                    name: n.as_str(),
                    value: v.as_bytes(),
                })
                .collect();
            let head = RequestHeadRef {
                method: req.method().as_str(),
                scheme: "https",
                authority: "www.example.com",
                path: req.uri().path(),
                query: req.uri().query(),
                headers: &headers,
                client_address: format_addr(client, &mut address),
                listener: "https",
                websocket: false,
                tls_sni: Some("www.example.com"),
            };
            plugin.route_borrowed(&head).await.unwrap()
        }
    }
}

async fn load_for(engine: &PluginEngine, handoff: Handoff) -> Plugin {
    let case = &CASES[0];
    let mut spec = PluginSpec::new(
        case.component,
        super::tests::component(case.component),
        case.config,
    );
    if handoff == Handoff::Filtered {
        spec.request_headers = Some(Arc::from([http::header::COOKIE]));
    }
    engine.load(spec, Arc::new(NoPools)).await.unwrap().0
}

/// An engine for `plugins` plugins of one instance each: small enough for valgrind, whose
/// address space cannot hold the pooling allocator's usual reservation (4 GiB and a guard per
/// memory).
pub(super) fn small_engine(plugins: u32) -> PluginEngine {
    PluginEngine::new(EngineConfig {
        cache_dir: Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache"),
        ),
        total_component_instances: plugins + 1,
        total_core_instances: (plugins + 1) * 4,
        total_memories: plugins + 1,
        total_tables: (plugins + 1) * 4,
        total_stacks: plugins + 1,
        ..EngineConfig::default()
    })
    .unwrap()
}

#[test]
#[ignore = "a benchmark: run in release mode with --ignored --nocapture"]
fn proxy_handoff_costs() {
    let engine = small_engine(Handoff::ALL.len() as u32);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let req = typical_http_request();
    runtime.block_on(async {
        let mut plugins = Vec::new();
        for h in Handoff::ALL {
            plugins.push((h, load_for(&engine, h).await));
        }
        // Interleaved rounds, so that a burst of load on the machine hits every variant alike.
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); Handoff::ALL.len()];
        for _round in 0..5 {
            for (i, (h, plugin)) in plugins.iter().enumerate() {
                let s = Sample::measure_async(20_000, async || {
                    std::hint::black_box(proxy_call(plugin, &req, *h).await);
                })
                .await;
                samples[i].extend(s.0);
            }
        }
        println!("\n| Rust canary router, per call | µs p50 · p99 |\n|---|---:|");
        for ((h, _), s) in plugins.iter().zip(samples) {
            println!("| {} | {} |", h.label(), Sample(s).cell());
        }
    });
}

/// A loop of proxy-path calls for a profiler: `WASMGATE_PROFILE_CALLS` (default 20,000) calls
/// on the Rust canary router, with the hand-off `WASMGATE_PROFILE_HANDOFF` (`owned`,
/// `borrowed` or `filtered`; default `borrowed`), e.g.
///
/// ```sh
/// valgrind --tool=callgrind --toggle-collect='*route_loop*' \
///     target/release/deps/wasmgate-* --ignored --exact plugin::bench::route_loop_for_profiling
/// ```
#[test]
#[ignore = "a profiling loop: run in release mode under a profiler"]
fn route_loop_for_profiling() {
    let calls: usize = std::env::var("WASMGATE_PROFILE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let handoff = match std::env::var("WASMGATE_PROFILE_HANDOFF").as_deref() {
        Ok("owned") => Handoff::Owned,
        Ok("filtered") => Handoff::Filtered,
        _ => Handoff::Borrowed,
    };
    let engine = small_engine(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let req = typical_http_request();
    runtime.block_on(async {
        let plugin = load_for(&engine, handoff).await;
        route_loop(&plugin, &req, handoff, calls).await;
    });
}

#[inline(never)]
async fn route_loop(plugin: &Plugin, req: &http::Request<()>, handoff: Handoff, calls: usize) {
    for _ in 0..calls {
        std::hint::black_box(proxy_call(plugin, req, handoff).await);
    }
}

/// The built-in router (`plugins/basic-rules`) as the gateway calls it for a plain HTTP
/// request: a multi-site configuration with a path map, the head borrowed, no headers (the
/// built-in router asks for none), 20,000 calls per round over 5 rounds
/// (`WASMGATE_PROFILE_ROUNDS` rounds instead, for a profiler).
#[test]
#[ignore = "a benchmark: run in release mode with --ignored --nocapture"]
fn builtin_router_costs() {
    use crate::config::{Config, builtin};
    let config = Config::from_toml(
        r#"
        [[listeners]]
        name = "web"
        port = 8080
        host_names = ["www.contoso.com", "*.fabrikam.com"]
        [[backend_pools]]
        name = "web"
        addresses = ["127.0.0.1:9001"]
        [[backend_pools]]
        name = "api"
        addresses = ["127.0.0.1:9002"]
        [[backend_settings]]
        name = "web"
        port = 9001
        [[url_path_maps]]
        name = "paths"
        default_backend_pool = "web"
        default_backend_settings = "web"
        [[url_path_maps.path_rules]]
        name = "api"
        paths = ["/api/*"]
        backend_pool = "api"
        backend_settings = "web"
        [[rules]]
        name = "web"
        priority = 10
        listener = "web"
        url_path_map = "paths"
        router = "builtin"
        "#,
    )
    .expect("the benchmark's configuration is valid");
    let rules = serde_json::to_string(&builtin::basic_rules(&config)).unwrap();
    let wasm = super::tests::component("basic-rules");
    let engine = small_engine(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut spec = PluginSpec::new("builtin", wasm, &rules);
        spec.request_headers = Some(Arc::from([]));
        let (plugin, _) = engine.load(spec, Arc::new(NoPools)).await.unwrap();
        // The connection formats the client's address once, for all its requests.
        let client_address = "198.51.100.23:51234";
        let mut samples = Vec::new();
        let rounds: usize = std::env::var("WASMGATE_PROFILE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        for _round in 0..rounds {
            let s = Sample::measure_async(20_000, async || {
                let head = RequestHeadRef {
                    method: "GET",
                    scheme: "http",
                    authority: "www.contoso.com",
                    path: "/api/orders/42",
                    query: None,
                    headers: &[],
                    client_address,
                    listener: "web",
                    websocket: false,
                    tls_sni: None,
                };
                let decision = plugin.route_borrowed(&head).await.unwrap();
                assert!(matches!(&decision, Decision::Forward(f) if f.pool == "api"));
                std::hint::black_box(decision);
            })
            .await;
            samples.extend(s.0);
        }
        println!(
            "\n| built-in router, per call (µs p50 · p99) | {} |",
            Sample(samples).cell()
        );
    });
}
