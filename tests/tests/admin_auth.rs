//! The admin API's token guards every endpoint, including the ones that change state (reload,
//! plugin loading), which are dispatched apart from the read-only views. Loopback by default and
//! the token rules of the configuration are in `health.rs`; the constant-time comparison has a
//! unit test next to it (`admin::tests`).

use wasmgate::config::Config;
use wasmgate_cli::admin::client::{self, AdminApi, ClientError};
use wasmgate_tests::client::raw_exchange;
use wasmgate_tests::config::single_route;
use wasmgate_tests::tls::Pki;
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

fn admin_section(bind: &str, extra: &str) -> String {
    format!("[admin]\nbind_address = {bind:?}\nport = 0\ntoken = {TOKEN:?}\n{extra}")
}

fn certificate_lines(pki: &Pki, names: &[&str]) -> String {
    let (cert, key) = pki.write_leaf("admin", &pki.issue(names));
    format!(
        "certificate = {:?}\ncertificate_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// With a certificate the admin API speaks HTTPS only: the command line's client verifies the
/// certificate against the CA it is given (`--cacert`), the token is still required inside
/// TLS, and plain HTTP gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_over_tls_is_verified_and_still_requires_the_token() {
    let b = HttpBackend::start("app").await;
    let pki = Pki::new("admin-tls");
    let ca = pki.write_ca("ca.pem");
    let toml = single_route(&[b.addr], "")
        + &admin_section("127.0.0.1", &certificate_lines(&pki, &["127.0.0.1"]));
    let gw = start_gateway(&toml).await;
    let admin = gw.admin_addr().expect("the admin listener is on");
    let url = format!("https://{admin}");

    let api = AdminApi::new(&url, Some(TOKEN), Some(&ca)).expect("admin API");
    let view = client::fetch(&api)
        .await
        .unwrap_or_else(|e| panic!("the health view over HTTPS: {e}"));
    assert_eq!(view.backend_address_pools.len(), 1);

    let no_token = AdminApi::new(&url, None, Some(&ca)).expect("admin API");
    let e = client::fetch(&no_token).await.expect_err("no token");
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{e}");

    // The system's roots do not know the test CA: refused by the client, which names --cacert.
    let system_roots = AdminApi::new(&url, Some(TOKEN), None).expect("admin API");
    let e = client::fetch(&system_roots)
        .await
        .expect_err("unknown issuer");
    assert!(
        matches!(e, ClientError::Unreachable { .. }) && e.to_string().contains("--cacert"),
        "{e}"
    );

    let plain = AdminApi::new(&format!("http://{admin}"), Some(TOKEN), None).expect("admin API");
    let e = client::fetch(&plain)
        .await
        .expect_err("plain HTTP to HTTPS");
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
    gw.shutdown().await;
}

/// Off loopback the admin listener needs a certificate, or an explicit `allow_plaintext`.
#[test]
fn a_non_loopback_admin_listener_needs_tls_unless_plaintext_is_allowed() {
    let base = single_route(&["127.0.0.1:9".parse().expect("address")], "");
    let refused = |extra: &str| {
        Config::from_toml(&(base.clone() + &admin_section("0.0.0.0", extra)))
            .expect_err("refused")
            .to_string()
    };
    let accepted = |extra: &str| {
        Config::from_toml(&(base.clone() + &admin_section("0.0.0.0", extra)))
            .unwrap_or_else(|e| panic!("{extra:?} refused: {e}"))
            .admin
            .expect("admin")
    };
    assert_eq!(
        refused(""),
        "admin.certificate: is required when the admin listener binds 0.0.0.0, which is not a loopback address, or the token crosses the network in clear; set allow_plaintext = true to serve plain HTTP anyway"
    );
    assert!(accepted("allow_plaintext = true\n").tls.is_none());

    let pki = Pki::new("admin-config");
    let certificate = certificate_lines(&pki, &["admin.example"]);
    assert!(accepted(&certificate).tls.is_some());
    assert_eq!(
        refused(&format!("{certificate}allow_plaintext = true\n")),
        "admin.allow_plaintext: the admin listener has a certificate, so it serves HTTPS only; remove allow_plaintext"
    );
    assert_eq!(
        refused("certificate = \"admin.pem\"\n"),
        "admin.certificate_key: certificate needs certificate_key beside it (the PEM private key)"
    );
    // Loopback needs neither.
    let loopback = Config::from_toml(&(base.clone() + &admin_section("127.0.0.1", "")))
        .expect("loopback admin");
    assert!(loopback.admin.expect("admin").tls.is_none());
}
