//! The admin API's token guards every endpoint, including the ones that change state (reload,
//! plugin loading), which are dispatched apart from the read-only views. Loopback by default and
//! the token rules of the configuration are in `health.rs`; the constant-time comparison has a
//! unit test next to it (`admin::tests`).

use wasmgate_tests::client::raw_exchange;
use wasmgate_tests::config::single_route;
use wasmgate_tests::*;

const TOKEN: &str = "admin-token-for-auth-tests-42";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_admin_endpoint_refuses_requests_without_the_token() {
    let b = HttpBackend::start("app").await;
    let toml = single_route(&[b.addr], "")
        + &format!("[admin]\nbind_address = \"127.0.0.1\"\nport = 0\ntoken = {TOKEN:?}\n");
    let gw = start_gateway(&toml).await;
    let admin = gw.admin_addr().expect("the admin listener is on");
    assert!(admin.ip().is_loopback(), "{admin}");

    let endpoints = [
        ("GET", "/api/backend-health", ""),
        ("GET", "/api/plugins", ""),
        ("GET", "/metrics", ""),
        ("POST", "/api/reload", ""),
        ("POST", "/api/plugins/router/load", "not a component"),
        ("DELETE", "/api/plugins/router", ""),
        ("GET", "/api/anything-else", ""),
    ];
    for (method, path, body) in endpoints {
        for (auth, what) in [
            (String::new(), "no Authorization"),
            (
                format!("Authorization: Bearer {TOKEN}x\r\n"),
                "a longer token",
            ),
            (
                format!("Authorization: Bearer {}\r\n", &TOKEN[..TOKEN.len() - 1]),
                "a prefix of the token",
            ),
            (
                format!("Authorization: Basic {TOKEN}\r\n"),
                "another scheme",
            ),
            (format!("Authorization: {TOKEN}\r\n"), "no scheme"),
        ] {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let res = raw_exchange(admin, request.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{method} {path} with {what}: {e}"));
            assert_eq!(
                res.status,
                401,
                "{method} {path} with {what} must be refused: {}\n{}",
                res.head,
                res.text()
            );
            assert!(
                res.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{method} {path} with {what}: the 401 names the Bearer scheme: {}",
                res.head
            );
        }
    }

    // With the token, the same requests get past the guard (whatever they then answer).
    for (method, path, body) in endpoints {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let res = raw_exchange(admin, request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{method} {path} with the token: {e}"));
        assert_ne!(
            res.status, 401,
            "{method} {path} with the right token: {}",
            res.head
        );
    }
    gw.shutdown().await;
}
