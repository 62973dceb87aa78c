//! Backend pools: round robin, empty pools, dead and slow servers, timeouts and error bodies.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wasmgate_tests::config::single_route;
use wasmgate_tests::*;

/// Error responses must not reveal where the backends are.
fn assert_no_address_leak(reply: &Reply, addrs: &[SocketAddr], semantic: &str) {
    let mut text = reply.text();
    for (name, value) in &reply.headers {
        text.push_str(&format!(
            "\n{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    for addr in addrs {
        for needle in [addr.to_string(), format!(":{}", addr.port())] {
            assert!(
                !text.contains(&needle),
                "{semantic}: the {} response reveals backend address {needle:?}:\n{text}",
                reply.status
            );
        }
    }
    assert!(
        !text.contains("127.0.0.1"),
        "{semantic}: the {} response reveals a backend IP address:\n{text}",
        reply.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_shares_requests_equally() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let c = HttpBackend::start("c").await;
    let gw = start_gateway(&single_route(&[a.addr, b.addr, c.addr], "")).await;
    let addr = listener_addr(&gw, "web");

    for i in 0..30 {
        let reply = get(addr, "rr.test", &format!("/rr/{i}")).await;
        assert_eq!(reply.status.as_u16(), 200, "request {i} through the pool");
    }
    let shares = [
        a.hits_under("/rr/"),
        b.hits_under("/rr/"),
        c.hits_under("/rr/"),
    ];
    assert_eq!(
        shares,
        [10, 10, 10],
        "round robin over 3 healthy backends gives each 10 of 30 requests"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_pool_is_502() {
    let gw = start_gateway(&single_route(&[], "")).await;
    let addr = listener_addr(&gw, "web");
    let reply = get(addr, "empty.test", "/").await;
    assert_eq!(
        reply.status.as_u16(),
        502,
        "a pool without servers answers 502, body {:?}",
        reply.text()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_member_is_skipped() {
    let live = HttpBackend::start("live").await;
    let dead = dead_address();
    for order in [[dead, live.addr], [live.addr, dead]] {
        let gw = start_gateway(&single_route(&order, "")).await;
        let addr = listener_addr(&gw, "web");
        for i in 0..6 {
            let reply = get(addr, "dead.test", &format!("/dead/{i}")).await;
            assert_eq!(
                (reply.status.as_u16(), reply.backend()),
                (200, Some("live")),
                "a member refusing connections is skipped and another member serves (pool {order:?}, request {i}), body {:?}",
                reply.text()
            );
        }
        gw.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_members_dead_is_502_without_addresses() {
    let dead = [dead_address(), dead_address()];
    let gw = start_gateway(&single_route(&dead, "")).await;
    let addr = listener_addr(&gw, "web");
    let reply = get(addr, "dead.test", "/").await;
    assert_eq!(
        reply.status.as_u16(),
        502,
        "every member refuses connections: 502, body {:?}",
        reply.text()
    );
    assert_no_address_leak(&reply, &dead, "502 for dead backends");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_member_times_out_and_another_serves() {
    let slow = HttpBackend::builder("slow")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let fast = HttpBackend::start("fast").await;
    let gw = start_gateway(&single_route(
        &[slow.addr, fast.addr],
        "request_timeout = \"300ms\"",
    ))
    .await;
    let addr = listener_addr(&gw, "web");

    // A member waited for (5 s) would answer itself: the answer's backend shows the cut.
    for i in 0..4 {
        let reply = get(addr, "slow.test", &format!("/slow/{i}")).await;
        assert_eq!(
            (reply.status.as_u16(), reply.backend()),
            (200, Some("fast")),
            "a member slower than request_timeout is abandoned and the request retried on another member (request {i}), body {:?}",
            reply.text()
        );
    }
    assert!(
        slow.hits_under("/slow/") >= 1,
        "round robin must have sent at least one of 4 requests to the slow member first"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_members_slow_is_504_after_trying_another() {
    let one = HttpBackend::builder("slow-1")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let two = HttpBackend::builder("slow-2")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let gw = start_gateway(&single_route(
        &[one.addr, two.addr],
        "request_timeout = \"300ms\"",
    ))
    .await;
    let addr = listener_addr(&gw, "web");

    let started = Instant::now();
    let reply = get(addr, "slow.test", "/both").await;
    let elapsed = started.elapsed();
    assert_eq!(
        reply.status.as_u16(),
        504,
        "every member exceeds request_timeout: 504, body {:?}",
        reply.text()
    );
    assert!(
        elapsed >= Duration::from_millis(550),
        "504 after {elapsed:?}: a timeout on the first member must be followed by a try on another (2 × 300 ms)"
    );
    assert_eq!(
        (one.hits_under("/both"), two.hits_under("/both")),
        (1, 1),
        "after a timeout the gateway retries once on the other member, then answers 504"
    );
    assert_no_address_leak(&reply, &[one.addr, two.addr], "504 for slow backends");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_error_statuses_pass_through() {
    let failing = HttpBackend::builder("failing")
        .status(503)
        .header("retry-after", "7")
        .start()
        .await;
    let gw = start_gateway(&single_route(&[failing.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let reply = get(addr, "err.test", "/e").await;
    assert_eq!(
        reply.status.as_u16(),
        503,
        "a backend's own error status reaches the client unchanged"
    );
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert!(
        reply.text().starts_with("backend failing"),
        "the backend's own error body reaches the client"
    );
    assert_eq!(
        failing.hits_under("/e"),
        1,
        "an answered request is not retried"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_bodies_are_forwarded() {
    let b = HttpBackend::start("body").await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let payload = "x".repeat(100_000);
    let req = http::Request::post("/upload")
        .header("host", "body.test")
        .header("content-type", "text/plain")
        .body(payload.clone())
        .expect("request");
    let reply = send(addr, req).await;
    assert_eq!(reply.status.as_u16(), 200);
    let seen = b.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.body.len(),
        payload.len(),
        "a 100 kB request body reaches the backend whole"
    );
    gw.shutdown().await;
}
