//! Several gateways sharing one listening port (SO_REUSEPORT): the kernel spreads new
//! connections over them; a port held by a socket that does not share still refuses them, and
//! so does the admin API's port. Within one gateway, each worker thread accepts on a socket of
//! its own on the listener's port.

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

/// The sockets in the LISTEN state on 127.0.0.1:`port`, from the kernel's table.
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_accepts_on_a_socket_of_its_own() {
    let a = HttpBackend::start("a").await;
    let gw = start_gateway(&on_port(0, a.addr)).await;
    let addr = listener_addr(&gw, "web");
    let workers = gw.workers();
    assert_eq!(
        listening_sockets(addr.port()),
        workers,
        "one listening socket per worker"
    );
    // The kernel picks a socket by a hash of the connection's addresses, so 64 connections from
    // fresh source ports reach every socket: one that no worker accepted on would leave some of
    // them unanswered.
    for i in 0..64 {
        within(
            &format!("connection {i}"),
            assert_routed(addr, "example.com", "/", "a", "a fresh connection"),
        )
        .await;
    }
    gw.shutdown_within(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        listening_sockets(addr.port()),
        0,
        "every worker's socket closes on shutdown"
    );
}

/// The workers outlive the runtime that started a gateway; when that runtime ends, the
/// gateway's sockets close with it.
#[test]
fn sockets_close_when_the_runtime_that_started_the_gateway_ends() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = runtime.block_on(async {
        let a = HttpBackend::start("a").await;
        let gw = start_gateway(&on_port(0, a.addr)).await;
        let addr = listener_addr(&gw, "web");
        assert_routed(addr, "example.com", "/", "a", "before the runtime ends").await;
        addr
    });
    drop(runtime);
    let closed = (0..250).any(|_| {
        if listening_sockets(addr.port()) == 0 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        false
    });
    assert!(closed, "the gateway's sockets must close with its runtime");
}
