//! Versions replaced through the admin API are freed: the memory cache of compiled components
//! keeps only what plugins use plus a few recent ones. A file of its own, so that the process's
//! resident memory is this test's alone.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use wasmgate::config::Config;
use wasmgate_cli::admin::client::{AdminApi, call};
use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::*;

const TOKEN: &str = "plugin-memory-admin-token-0123";

/// The component with a custom section holding `n`: distinct bytes, so a distinct compiled
/// component, deciding the same way.
fn variant(wasm: &[u8], n: u32) -> Vec<u8> {
    let name = b"wasmgate-test-version";
    let mut out = wasm.to_vec();
    let size = 1 + name.len() + 4;
    out.extend([0, size as u8, name.len() as u8]);
    out.extend(name);
    out.extend(n.to_le_bytes());
    out
}

/// Resident memory of this process, in bytes (`/proc/self/statm`, second field, in pages).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_plugin_200_times_leaves_memory_flat() {
    let native = HttpBackend::start("native").await;
    // Without a disk cache: every version is compiled, and nothing is written.
    let mut toml = "[plugin_engine]\ncache_dir = false\n\n".to_owned();
    toml += &listener("web", 0, &[]);
    toml += &pool("native", &[native.addr]);
    toml += &settings("web", "");
    toml += &basic_rule("rule", "web", "native", "web", "router = \"r\"");
    toml += &format!("[admin]\nbind_address = \"127.0.0.1\"\nport = 0\ntoken = {TOKEN:?}\n\n");
    toml += &plugin_section("r", "fixture-unknown-pool", "router", "");
    let config = Config::from_toml(&toml).expect("config");
    let gw = within_for(
        Duration::from_secs(60),
        "start",
        wasmgate::Gateway::start(config),
    )
    .await
    .expect("start");
    let url = format!("http://{}", gw.admin_addr().expect("admin"));
    let admin = AdminApi::new(&url, Some(TOKEN), None).expect("admin URL");
    let wasm = std::fs::read(plugin_path("fixture-unknown-pool")).expect("component");

    let mut after_50 = 0;
    for n in 1..=200u32 {
        let body = Bytes::from(variant(&wasm, n));
        within_for(
            Duration::from_secs(60),
            "replace",
            call(&admin, Method::POST, "/api/plugins/r/replace", body),
        )
        .await
        .unwrap_or_else(|e| panic!("replace {n}: {e}"));
        if n == 50 {
            after_50 = rss();
        }
    }
    let after_200 = rss();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "resident memory after 50 versions: {:.1} MiB, after 200: {:.1} MiB",
        mib(after_50),
        mib(after_200)
    );
    // Each compiled version of this component holds about 230 KiB: when every one stayed in
    // memory, the 150 later ones added 34 MiB here (57.2 → 91.3 MiB); freed, they add about
    // 0.2 MiB. Allocator slack and logs may add a little.
    assert!(
        after_200 < after_50 + (12 << 20),
        "resident memory grew from {:.1} MiB to {:.1} MiB over 150 replacements",
        mib(after_50),
        mib(after_200)
    );
    gw.shutdown().await;
}
