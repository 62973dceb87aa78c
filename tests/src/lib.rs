//! Support for wasmgate's end-to-end tests: real backends and clients on 127.0.0.1, a real
//! in-process gateway, and bounded waits.
//!
//! Every wait here is bounded (`within`, `eventually`) so that a gateway bug shows up as a failed
//! assertion naming the semantic, never as a hung test.

pub mod backend;
pub mod browser;
pub mod client;
pub mod config;
pub mod etcd;
pub mod gateway;
pub mod h2;
pub mod otlp;
pub mod registry;
pub mod tls;
pub mod ws;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::Path;
use std::time::{Duration, SystemTime};

pub use backend::{
    HttpBackend, ProbeAnswer, ProbeGate, RawBackend, SeenRequest, dead_address, is_probe,
};
pub use client::{RawResponse, Reply, get, get_with, raw_exchange, send};
pub use gateway::{listener_addr, start_gateway};
pub use ws::{WsBackend, WsHandshake};

/// Upper bound for any single network operation in a test (connect, one request, one message).
pub const WAIT: Duration = Duration::from_secs(10);

/// Runs `fut` for at most [`WAIT`]; a timeout fails the test with `what`.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    within_for(WAIT, what, fut).await
}

/// Runs `fut` for at most `limit`; a timeout fails the test with `what`.
pub async fn within_for<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `check` until it yields `Some`, every 20 ms, at most 250 times (5 s); then fails the
/// test with `what`. Use it instead of sleeping when waiting for something to happen.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    const ATTEMPTS: usize = 250;
    const PAUSE: Duration = Duration::from_millis(20);
    for _ in 0..ATTEMPTS {
        if let Some(v) = within(what, check()).await {
            return v;
        }
        tokio::time::sleep(PAUSE).await;
    }
    panic!("not satisfied after {ATTEMPTS} attempts over ~5 s: {what}");
}

/// Writes `contents` to `path` so that a watcher comparing modification times sees a change
/// however coarse the file system's time stamps are: a file that existed gets a stamp at least
/// a second past its old one, instead of the test waiting for the clock to move on.
pub fn write_changed(path: &Path, contents: &str) {
    let before = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    std::fs::write(path, contents).expect("write a test file");
    if let Some(before) = before {
        let later = SystemTime::now().max(before + Duration::from_secs(1));
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(later))
            .expect("set a test file's modification time");
    }
}

/// A port that was free a moment ago on 127.0.0.1, for configurations where several listeners
/// must share one port (port 0 gives each listener its own).
pub fn free_port() -> u16 {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// `n` distinct ports that were free a moment ago (all held open together while choosing).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<StdTcpListener> = (0..n)
        .map(|_| StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// `addr` as written in a backend pool.
pub fn pool_entry(addr: SocketAddr) -> String {
    format!("{:?}", addr.to_string())
}

/// A TOML array body for `addresses = [...]`.
pub fn pool_entries(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| pool_entry(*a))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `s` is an `x-appgw-trace-id`: 32 lowercase hexadecimal digits.
pub fn is_trace_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// GETs `path` with `Host: host` and asserts that backend `backend` answered it with 200;
/// `semantic` names the rule under test in the failure message.
pub async fn assert_routed(
    addr: SocketAddr,
    host: &str,
    path: &str,
    backend: &str,
    semantic: &str,
) -> Reply {
    let reply = get(addr, host, path).await;
    assert_eq!(
        (reply.status.as_u16(), reply.backend()),
        (200, Some(backend)),
        "{semantic}: GET {path} with Host {host:?} should reach backend {backend:?}; got status {} from {:?}, body {:?}",
        reply.status,
        reply.backend(),
        reply.text()
    );
    reply
}

/// The path of a plugin component built by `scripts/build-plugins`: `$WASMGATE_PLUGIN_DIR`,
/// else `target/plugins`. Fails the test with how to build it when it is missing.
pub fn plugin_path(name: &str) -> std::path::PathBuf {
    let dir = match std::env::var_os("WASMGATE_PLUGIN_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
    };
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "plugin component {} is missing: run scripts/build-plugins (scripts/test does) or point WASMGATE_PLUGIN_DIR at the built components",
        path.display()
    );
    path
}

/// A `[[plugins]]` section for the built component `component`, plus `extra` lines such as
/// `fail_policy = "fail_open"` or `config = '...'`.
pub fn plugin_section(name: &str, component: &str, kind: &str, extra: &str) -> String {
    format!(
        "[[plugins]]\nname = {name:?}\npath = {:?}\nkind = {kind:?}\n{extra}\n\n",
        plugin_path(component).display().to_string()
    )
}

/// A `[plugin_engine]` section keeping compiled components in `target/plugin-cache`, so that
/// only the first test run compiles the interpreted (Python, JavaScript) components, which takes
/// seconds each.
pub fn plugin_engine_section() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache");
    format!(
        "[plugin_engine]\ncache_dir = {:?}\n\n",
        dir.display().to_string()
    )
}
