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

use super::bindings::RouterAndProbePlugin;
use super::instance::{Call, Exports, Instance, StoreState};
use super::*;

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

            let pre = engine.inner.linker.instantiate_pre(&component).unwrap();
            let exports = Exports::find(&pre).unwrap();
            let name: Arc<str> = case.component.into();
            let limits = PluginLimits::default();
            let mut instance = Instance::new(
                &engine.inner,
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
            let call = Call::Route(&request);
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
        RouterAndProbePlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .unwrap();
        let pre = linker.instantiate_pre(&component).unwrap();
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
        let router = exports
            .router
            .as_ref()
            .unwrap()
            .load(&mut store, &instance)
            .unwrap();
        let route = router.func_route();
        let sync = Sample::measure(case.calls, || {
            route.call(&mut store, (&request,)).unwrap();
        });

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
