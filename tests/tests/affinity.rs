//! Cookie-based affinity: ApplicationGatewayAffinity and its CORS twin, stickiness, a custom
//! cookie name, and a cookie naming no server.

use std::collections::HashSet;

use wasmgate_tests::config::single_route;
use wasmgate_tests::*;

async fn three_backends() -> [HttpBackend; 3] {
    [
        HttpBackend::start("a").await,
        HttpBackend::start("b").await,
        HttpBackend::start("c").await,
    ]
}

/// Checks the two affinity cookies on a first response and returns the affinity value.
fn check_affinity_cookies(reply: &Reply, name: &str) -> String {
    let cors = format!("{name}CORS");
    let main = reply.set_cookie(name).unwrap_or_else(|| {
        panic!(
            "the first response with affinity must set cookie {name:?}; Set-Cookie: {:?}",
            reply.header_all("set-cookie")
        )
    });
    let cors_cookie = reply.set_cookie(&cors).unwrap_or_else(|| {
        panic!(
            "the first response with affinity must also set {cors:?}; Set-Cookie: {:?}",
            reply.header_all("set-cookie")
        )
    });
    let lower = cors_cookie.to_ascii_lowercase();
    assert!(
        lower.contains("samesite=none") && lower.contains("secure"),
        "{cors} must carry SameSite=None; Secure, got {cors_cookie:?}"
    );
    let value = reply.cookie_value(name).expect("cookie value");
    assert!(
        !value.is_empty(),
        "{name} needs a value naming the server: {main:?}"
    );
    assert_eq!(
        reply.cookie_value(&cors).as_deref(),
        Some(value.as_str()),
        "{name} and {cors} carry the same server"
    );
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn affinity_cookie_pins_a_client_to_one_backend() {
    let b = three_backends().await;
    let gw = start_gateway(&single_route(
        &[b[0].addr, b[1].addr, b[2].addr],
        "cookie_based_affinity = true",
    ))
    .await;
    let addr = listener_addr(&gw, "web");

    let first = get(addr, "sticky.test", "/first").await;
    assert_eq!(first.status.as_u16(), 200);
    let value = check_affinity_cookies(&first, "ApplicationGatewayAffinity");
    let pinned = first.backend().expect("x-backend").to_string();
    assert!(
        !value.contains("127.0.0.1") && b.iter().all(|x| !value.contains(&x.addr.to_string())),
        "the affinity cookie must not reveal the backend's address: {value:?}"
    );

    let cookie = format!("ApplicationGatewayAffinity={value}");
    for i in 0..10 {
        let reply = get_with(
            addr,
            "sticky.test",
            &format!("/again/{i}"),
            &[("cookie", &cookie)],
        )
        .await;
        assert_eq!(
            reply.backend(),
            Some(pinned.as_str()),
            "request {i} carrying the affinity cookie must go to the same backend"
        );
    }
    assert_eq!(
        b.iter().map(|x| x.hits_under("/again/")).sum::<usize>(),
        10,
        "every pinned request reached a backend once"
    );

    let without = [
        get(addr, "sticky.test", "/fresh/1").await,
        get(addr, "sticky.test", "/fresh/2").await,
        get(addr, "sticky.test", "/fresh/3").await,
    ];
    let spread: HashSet<_> = without
        .iter()
        .filter_map(|r| r.backend().map(str::to_string))
        .collect();
    assert!(
        spread.len() > 1,
        "requests without the cookie are still balanced round robin, got {spread:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_affinity_cookie_name() {
    let b = three_backends().await;
    let gw = start_gateway(&single_route(
        &[b[0].addr, b[1].addr, b[2].addr],
        "cookie_based_affinity = true\naffinity_cookie_name = \"StickyApp\"",
    ))
    .await;
    let addr = listener_addr(&gw, "web");

    let first = get(addr, "sticky.test", "/").await;
    let value = check_affinity_cookies(&first, "StickyApp");
    assert!(
        first.set_cookie("ApplicationGatewayAffinity").is_none(),
        "with a custom name the default cookie is not set: {:?}",
        first.header_all("set-cookie")
    );
    let pinned = first.backend().expect("x-backend").to_string();
    let cookie = format!("StickyApp={value}");
    for i in 0..10 {
        let reply = get_with(addr, "sticky.test", "/", &[("cookie", &cookie)]).await;
        assert_eq!(
            reply.backend(),
            Some(pinned.as_str()),
            "request {i} carrying the custom affinity cookie must stick"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_affinity_value_falls_back_to_round_robin_with_a_fresh_cookie() {
    let b = three_backends().await;
    let gw = start_gateway(&single_route(
        &[b[0].addr, b[1].addr, b[2].addr],
        "cookie_based_affinity = true",
    ))
    .await;
    let addr = listener_addr(&gw, "web");

    let garbage = "ApplicationGatewayAffinity=0123456789abcdef-no-such-server";
    let mut served = HashSet::new();
    for i in 0..3 {
        let reply = get_with(
            addr,
            "sticky.test",
            &format!("/gone/{i}"),
            &[("cookie", garbage)],
        )
        .await;
        assert_eq!(
            reply.status.as_u16(),
            200,
            "a cookie naming no server is not an error (request {i}), body {:?}",
            reply.text()
        );
        let fresh = check_affinity_cookies(&reply, "ApplicationGatewayAffinity");
        assert_ne!(
            fresh, "0123456789abcdef-no-such-server",
            "the gateway must replace a cookie naming no server"
        );
        served.insert(reply.backend().expect("x-backend").to_string());
    }
    assert_eq!(
        served.len(),
        3,
        "requests whose cookie names no server are balanced round robin: 3 requests, 3 backends, got {served:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_cookies_reach_the_backend_beside_the_affinity_cookie() {
    let b = three_backends().await;
    let gw = start_gateway(&single_route(
        &[b[0].addr, b[1].addr, b[2].addr],
        "cookie_based_affinity = true",
    ))
    .await;
    let addr = listener_addr(&gw, "web");
    let first = get(addr, "sticky.test", "/").await;
    let value = first
        .cookie_value("ApplicationGatewayAffinity")
        .expect("affinity cookie");
    let cookie = format!("session=abc; ApplicationGatewayAffinity={value}; theme=dark");
    let reply = get_with(addr, "sticky.test", "/cookies", &[("cookie", &cookie)]).await;
    let backend = b
        .iter()
        .find(|x| Some(x.name.as_str()) == reply.backend())
        .expect("a known backend answered");
    let seen = backend.last().header_all("cookie").join("; ");
    assert!(
        seen.contains("session=abc") && seen.contains("theme=dark"),
        "the application's own cookies must reach the backend, got {seen:?}"
    );
    gw.shutdown().await;
}
