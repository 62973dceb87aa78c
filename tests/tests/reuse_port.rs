//! Several gateways sharing one listening port (SO_REUSEPORT): the kernel spreads new
//! connections over them; a port held by a socket that does not share still refuses them, and
//! so does the admin API's port.

use wasmgate::Gateway;
use wasmgate::config::Config;
use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::*;

/// One listener on `port` in front of `backend`.
fn on_port(port: u16, backend: std::net::SocketAddr) -> String {
    let mut toml = listener("web", port, &[]);
    toml += &pool("pool", &[backend]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_a_port_and_both_take_connections() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let port = free_port();
    // Each gateway forwards to its own backend, so the answering backend names the gateway.
    let first = start_gateway(&on_port(port, a.addr)).await;
    let second = start_gateway(&on_port(port, b.addr)).await;
    let addr = listener_addr(&first, "web");
    assert_eq!(
        addr,
        listener_addr(&second, "web"),
        "both listen on one port"
    );

    // The kernel picks the socket by a hash of the connection's addresses: fresh connections
    // from new source ports reach both gateways long before this bound.
    let mut seen = (0, 0);
    for _ in 0..200 {
        match get(addr, "example.com", "/").await.backend() {
            Some("a") => seen.0 += 1,
            Some("b") => seen.1 += 1,
            other => panic!("unexpected backend {other:?}"),
        }
        if seen.0 > 0 && seen.1 > 0 {
            break;
        }
    }
    assert!(
        seen.0 > 0 && seen.1 > 0,
        "both gateways must take connections: {seen:?}"
    );

    // One gateway leaving: the other one takes every new connection.
    first
        .shutdown_within(std::time::Duration::from_secs(5))
        .await;
    for _ in 0..20 {
        assert_routed(addr, "example.com", "/", "b", "the remaining gateway").await;
    }
    second
        .shutdown_within(std::time::Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_without_sharing_still_refuses_the_gateway() {
    let a = HttpBackend::start("a").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = Config::from_toml(&on_port(port, a.addr)).expect("valid configuration");
    let err = Gateway::start(config)
        .await
        .err()
        .expect("a port held by a socket without SO_REUSEPORT must refuse the gateway");
    assert!(
        err.to_string().contains("web"),
        "the error names the listener: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_is_not_shared() {
    let a = HttpBackend::start("a").await;
    let admin_port = free_port();
    let admin = format!("[admin]\nport = {admin_port}\n");
    let first = start_gateway(&(on_port(0, a.addr) + &admin)).await;
    let config = Config::from_toml(&(on_port(0, a.addr) + &admin)).expect("valid configuration");
    let err = Gateway::start(config)
        .await
        .err()
        .expect("a second gateway must not share the admin port");
    assert!(
        err.to_string().contains("admin"),
        "the error names the admin API: {err}"
    );
    first
        .shutdown_within(std::time::Duration::from_secs(5))
        .await;
}
