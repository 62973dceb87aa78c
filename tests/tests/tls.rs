//! TLS and HTTP/2: HTTPS listeners (SNI, fallback, require_sni, PKCS#12, ALPN h2/http1.1),
//! wss, WebSocket over HTTP/2 (RFC 8441), HTTPS backends (trusted roots, name mismatch,
//! unknown CA), plain HTTP on an HTTPS port, bad certificate configuration, certificate reload.
//! Certificates come from a CA generated at test time; clients are real rustls clients.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;
use wasmgate::config::Config;
use wasmgate_tests::config::{basic_rule, pool, settings};
use wasmgate_tests::tls::{
    HttpsBackend, Leaf, Pki, alpn, client_config, https_get, presented, send_over, tls_connect,
    toml_path,
};
use wasmgate_tests::*;

/// An HTTPS listener on 127.0.0.1 with a PEM certificate, plus `extra` lines.
fn https_listener(
    name: &str,
    port: u16,
    hosts: &[&str],
    cert: &Path,
    key: &Path,
    extra: &str,
) -> String {
    let hosts = hosts
        .iter()
        .map(|h| format!("{h:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[listeners]]\nname = {name:?}\nprotocol = \"https\"\nport = {port}\nbind_address = \"127.0.0.1\"\nhost_names = [{hosts}]\ncertificate = {}\ncertificate_key = {}\n{extra}\n\n",
        toml_path(cert),
        toml_path(key)
    )
}

/// Two multi-site HTTPS listeners on one port (`a.example` with priority 10, `*.b.example` with
/// priority 20), each with its own certificate, in front of `backend`.
struct TwoSites {
    pki: Pki,
    a: wasmgate_tests::tls::Leaf,
    b: wasmgate_tests::tls::Leaf,
    gw: wasmgate::Gateway,
    _backend: HttpBackend,
}

async fn two_sites(extra: &str) -> TwoSites {
    let pki = Pki::new("two sites CA");
    // Site a's certificate also names 127.0.0.1, so a client that sends no SNI can verify it.
    let a = pki.issue(&["a.example", "127.0.0.1"]);
    let b = pki.issue(&["*.b.example"]);
    let (a_cert, a_key) = pki.write_leaf("a", &a);
    let (b_cert, b_key) = pki.write_leaf("b", &b);
    let backend = HttpBackend::start("app").await;
    let port = free_port();
    let mut toml = https_listener("site-a", port, &["a.example"], &a_cert, &a_key, extra);
    toml += &https_listener("site-b", port, &["*.b.example"], &b_cert, &b_key, extra);
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule-b", "site-b", "pool", "settings", "priority = 20");
    toml += &basic_rule("rule-a", "site-a", "pool", "settings", "priority = 10");
    let gw = start_gateway(&toml).await;
    TwoSites {
        pki,
        a,
        b,
        gw,
        _backend: backend,
    }
}

#[tokio::test]
async fn sni_picks_the_listener_certificate_and_falls_back_to_the_first_by_priority() {
    let s = two_sites("").await;
    let addr = listener_addr(&s.gw, "site-a");
    let roots = [s.pki.ca_der()];
    let config = client_config(&roots, &["http/1.1"]);

    let a = tls_connect(addr, "a.example", config.clone())
        .await
        .expect("SNI a.example");
    assert_eq!(
        presented(&a),
        s.a.der,
        "SNI a.example gets site-a's certificate"
    );
    let b = tls_connect(addr, "www.b.example", config.clone())
        .await
        .expect("SNI www.b.example");
    assert_eq!(
        presented(&b),
        s.b.der,
        "a wildcard host name selects site-b's certificate"
    );

    // No SNI (the client connects by IP address): the first listener by rule priority.
    let none = tls_connect(addr, "127.0.0.1", config.clone())
        .await
        .expect("handshake without SNI");
    assert_eq!(
        presented(&none),
        s.a.der,
        "no SNI falls back to site-a (priority 10)"
    );

    // An unknown name also falls back (the client, which checks names, refuses it).
    let unknown = tls_connect(addr, "other.example", config.clone()).await;
    let err = unknown.expect_err("the fallback certificate does not name other.example");
    assert!(
        err.to_string()
            .contains("not valid for name \"other.example\""),
        "the gateway presented its fallback certificate, which the client refused: {err}"
    );

    let reply = https_get(addr, "www.b.example", config, "www.b.example", "/x").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.backend(), Some("app"));
}

#[tokio::test]
async fn require_sni_refuses_handshakes_without_a_matching_name() {
    let s = two_sites("require_sni = true").await;
    let addr = listener_addr(&s.gw, "site-a");
    let config = client_config(&[s.pki.ca_der()], &["http/1.1"]);
    tls_connect(addr, "a.example", config.clone())
        .await
        .expect("a matching SNI name still completes");
    for sni in ["127.0.0.1", "other.example"] {
        let err = tls_connect(addr, sni, config.clone())
            .await
            .expect_err("require_sni: no match fails the handshake");
        // rustls aborts with an alert when no certificate is chosen.
        assert!(
            err.to_string().contains("received fatal alert"),
            "SNI {sni:?}: the gateway should abort the handshake, got {err}"
        );
    }
}

#[tokio::test]
async fn alpn_serves_http2_and_http11_with_http11_to_the_backend() {
    let pki = Pki::new("alpn CA");
    let leaf = pki.issue(&["a.example"]);
    let (cert, key) = pki.write_leaf("a", &leaf);
    let backend = HttpBackend::start("app").await;
    let mut toml = https_listener("web", 0, &[], &cert, &key, "");
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    for (offer, expect) in [
        (vec!["h2", "http/1.1"], "h2"),
        (vec!["http/1.1"], "http/1.1"),
    ] {
        let config = client_config(&[pki.ca_der()], &offer);
        let stream = tls_connect(addr, "a.example", config)
            .await
            .expect("handshake");
        assert_eq!(
            alpn(&stream).as_deref(),
            Some(expect),
            "ALPN with offer {offer:?}"
        );
        let req = if expect == "h2" {
            Request::get("https://a.example/page?q=1")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
        } else {
            Request::get("/page?q=1").header("host", "a.example")
        };
        let reply = send_over(stream, req.body(String::new()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK, "{expect}: {}", reply.text());
        let seen = backend.last();
        assert_eq!(
            seen.uri, "/page?q=1",
            "{expect}: origin-form target to the backend"
        );
        assert_eq!(
            seen.header("host"),
            Some("a.example"),
            "{expect}: Host from :authority"
        );
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"), "{expect}");
        assert_eq!(
            seen.header("x-forwarded-port"),
            Some(addr.port().to_string().as_str())
        );
        if expect == "h2" {
            assert_eq!(
                seen.header_all("cookie"),
                vec!["a=1; b=2"],
                "RFC 9113 §8.2.3: HTTP/2 cookie fields are joined for HTTP/1.1"
            );
        }
    }
}

#[tokio::test]
async fn pkcs12_certificates_are_served() {
    let pki = Pki::new("pfx CA");
    let leaf = pki.issue(&["pfx.example"]);
    let pfx = pki.write_pfx("site", &leaf, "s3cret");
    let backend = HttpBackend::start("app").await;
    let mut toml = format!(
        "[[listeners]]\nname = \"web\"\nprotocol = \"https\"\nport = 0\nbind_address = \"127.0.0.1\"\ncertificate_pfx = {}\ncertificate_password = \"s3cret\"\n\n",
        toml_path(&pfx)
    );
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");
    let config = client_config(&[pki.ca_der()], &["http/1.1"]);
    let stream = tls_connect(addr, "pfx.example", config.clone())
        .await
        .expect("handshake");
    assert_eq!(presented(&stream), leaf.der);
    let reply = https_get(addr, "pfx.example", config, "pfx.example", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn tls_sessions_resume() {
    let pki = Pki::new("resume CA");
    let leaf = pki.issue(&["a.example"]);
    let (cert, key) = pki.write_leaf("a", &leaf);
    let backend = HttpBackend::start("app").await;
    let mut toml = https_listener("web", 0, &[], &cert, &key, "");
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");
    let config = client_config(&[pki.ca_der()], &["http/1.1"]);
    // The first exchange hands the client a ticket; the second connection resumes with it.
    let first = https_get(addr, "a.example", config.clone(), "a.example", "/").await;
    assert_eq!(first.status, StatusCode::OK);
    let second = tls_connect(addr, "a.example", config)
        .await
        .expect("handshake");
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "the second handshake resumes the first session"
    );
}

#[tokio::test]
async fn wss_echoes_through_an_https_listener() {
    let pki = Pki::new("wss CA");
    let leaf = pki.issue(&["chat.example"]);
    let (cert, key) = pki.write_leaf("chat", &leaf);
    let backend = WsBackend::start("echo").await;
    let mut toml = https_listener("wss", 0, &["chat.example"], &cert, &key, "");
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "wss", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "wss");
    let config = client_config(&[pki.ca_der()], &["http/1.1"]);
    let stream = tls_connect(addr, "chat.example", config)
        .await
        .expect("handshake");
    let req = "wss://chat.example/chat".into_client_request().unwrap();
    let (mut ws, res) = within(
        "wss handshake",
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .expect("wss upgrade through the gateway");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("over TLS")).await.unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("over TLS"));
    assert_eq!(
        backend.last_handshake().header("x-forwarded-proto"),
        Some("https")
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn websocket_over_http2_becomes_an_http11_upgrade_to_the_backend() {
    let pki = Pki::new("rfc8441 CA");
    let leaf = pki.issue(&["chat.example"]);
    let (cert, key) = pki.write_leaf("chat", &leaf);
    let backend = WsBackend::start("echo").await;
    let mut toml = https_listener("web", 0, &[], &cert, &key, "");
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");
    let config = client_config(&[pki.ca_der()], &["h2"]);
    let stream = tls_connect(addr, "chat.example", config)
        .await
        .expect("handshake");
    assert_eq!(alpn(&stream).as_deref(), Some("h2"));
    let (mut sender, conn) = within(
        "HTTP/2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    // A first request makes sure the server's SETTINGS (ENABLE_CONNECT_PROTOCOL) have arrived.
    let warm = Request::get("https://chat.example/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    within("warm-up request", sender.send_request(warm))
        .await
        .expect("warm-up");

    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri("https://chat.example/chat?room=1")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat.v1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut res = within("extended CONNECT", sender.send_request(req))
        .await
        .expect("extended CONNECT response");
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "RFC 8441 §5: 200 opens the tunnel"
    );
    assert_eq!(
        res.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("chat.v1"),
        "the backend's subprotocol choice comes back"
    );
    assert!(res.headers().get("sec-websocket-accept").is_none());
    let upgraded = within("h2 stream upgrade", hyper::upgrade::on(&mut res))
        .await
        .expect("upgraded stream");
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    for text in ["first", "second"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = within("echo over h2", ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    let hs = backend.last_handshake();
    assert_eq!(hs.uri, "/chat?room=1");
    assert_eq!(hs.header("upgrade"), Some("websocket"));
    assert_eq!(hs.header("sec-websocket-version"), Some("13"));
    assert_eq!(
        hs.header("sec-websocket-key").map(str::len),
        Some(24),
        "a key of the gateway's own"
    );
    assert_eq!(hs.header("host"), Some("chat.example"));
    ws.close(None).await.unwrap();
    eventually("the backend sees the close", || async {
        (backend.close_codes().len() == 1).then_some(())
    })
    .await;
}

/// An HTTPS backend presenting a certificate for `names` from `issuer`, behind an HTTP
/// listener whose settings add `settings_extra`.
async fn https_backend_gateway(
    issuer: &Pki,
    names: &[&str],
    settings_extra: &str,
) -> (wasmgate::Gateway, HttpsBackend) {
    let leaf = issuer.issue(names);
    let backend = HttpsBackend::start("secure", issuer.server_config(&leaf)).await;
    let mut toml = wasmgate_tests::config::listener("web", 0, &[]);
    toml += &pool("pool", &[backend.addr]);
    toml += &settings(
        "settings",
        &format!("protocol = \"https\"\n{settings_extra}"),
    );
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    (start_gateway(&toml).await, backend)
}

#[tokio::test]
async fn https_backend_verified_against_trusted_roots_with_sni_from_the_host_in_use() {
    let pki = Pki::new("backend CA");
    let ca = pki.write_ca("ca.pem");
    let roots = format!("trusted_root_certificates = [{}]", toml_path(&ca));

    // host_name override: the SNI and the name checked.
    let (gw, backend) = https_backend_gateway(
        &pki,
        &["backend.internal"],
        &format!("host_name = \"backend.internal\"\n{roots}"),
    )
    .await;
    let addr = listener_addr(&gw, "web");
    // The health probes have their own connection.
    let before = backend.handshakes();
    for _ in 0..10 {
        let reply = get(addr, "www.example", "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-seen-sni"), Some("backend.internal"));
        assert_eq!(reply.header("x-seen-host"), Some("backend.internal"));
    }
    // Each worker thread keeps its own backend connections.
    let handshakes = backend.handshakes() - before;
    assert!(
        (1..=gw.workers()).contains(&handshakes),
        "TLS is paid once per backend connection: keep-alive reuses it ({handshakes} handshakes for 10 requests)"
    );

    // No override: the request's host is the SNI name (probes use the server's address).
    let (gw, _backend) =
        https_backend_gateway(&pki, &["www.example", "api.example", "127.0.0.1"], &roots).await;
    let addr = listener_addr(&gw, "web");
    for host in ["www.example", "api.example"] {
        let reply = get(addr, host, "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text());
        assert_eq!(reply.header("x-seen-sni"), Some(host));
    }

    // pick_host_name_from_backend_address: the pool member's DNS name.
    let leaf = pki.issue(&["localhost"]);
    let named = HttpsBackend::start("named", pki.server_config(&leaf)).await;
    let mut toml = wasmgate_tests::config::listener("web", 0, &[]);
    toml += &format!(
        "[[backend_pools]]\nname = \"pool\"\naddresses = [\"localhost:{}\"]\n\n",
        named.addr.port()
    );
    toml += &settings(
        "settings",
        &format!("protocol = \"https\"\npick_host_name_from_backend_address = true\n{roots}"),
    );
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    let reply = get(listener_addr(&gw, "web"), "www.example", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-seen-sni"), Some("localhost"));
}

#[tokio::test]
async fn https_backend_with_the_wrong_name_is_502_name_mismatch() {
    let pki = Pki::new("backend CA");
    let ca = pki.write_ca("ca.pem");
    // No host name in the settings: probes use the server's address (127.0.0.1, which the
    // certificate names, so the server is healthy) and requests their own host as SNI.
    let (gw, _backend) = https_backend_gateway(
        &pki,
        &["127.0.0.1", "www.example"],
        &format!("trusted_root_certificates = [{}]", toml_path(&ca)),
    )
    .await;
    let ok = get(listener_addr(&gw, "web"), "www.example", "/").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let reply = get(listener_addr(&gw, "web"), "other.example", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        reply.text(),
        format!("502 Bad Gateway: backend pool \"pool\": {NAME_MISMATCH}\n")
    );
}

#[tokio::test]
async fn https_backend_from_an_unknown_ca_is_502_with_the_root_named_as_the_reason() {
    let trusted = Pki::new("trusted CA");
    let unknown = Pki::new("unknown CA");
    let ca = trusted.write_ca("ca.pem");
    let (gw, _backend) = https_backend_gateway(
        &unknown,
        &["backend.internal"],
        &format!(
            "host_name = \"backend.internal\"\ntrusted_root_certificates = [{}]",
            toml_path(&ca)
        ),
    )
    .await;
    let reply = get(listener_addr(&gw, "web"), "www.example", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    // The probe, over the same client, found the chain untrusted: the server is out of rotation
    // and its health names the reason.
    let reason = gw.snapshot().targets[0]
        .health
        .detail()
        .reason
        .unwrap_or_default();
    assert_eq!(reason, ROOT_MISMATCH, "probe reason");

    // Without trusted_root_certificates the system's roots apply, which do not know the CA.
    let (gw, _backend) = https_backend_gateway(
        &unknown,
        &["backend.internal"],
        "host_name = \"backend.internal\"",
    )
    .await;
    let reply = get(listener_addr(&gw, "web"), "www.example", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let reason = gw.snapshot().targets[0]
        .health
        .detail()
        .reason
        .unwrap_or_default();
    assert_eq!(reason, NOT_WELL_KNOWN_CA, "probe reason");
}

/// Application Gateway's backend health messages for certificate failures (its backend health
/// troubleshooting guide), which the health view and 502s carry.
const NAME_MISMATCH: &str = "The Common Name of the leaf certificate presented by the backend server does not match the Probe or Backend Setting hostname of the application gateway.";
const ROOT_MISMATCH: &str = "The root certificate of the server certificate used by the backend doesn't match the trusted root certificate added to the application gateway. Ensure that you add the correct root certificate to allowlist the backend.";
const NOT_WELL_KNOWN_CA: &str = "The backend Server certificate is not signed by a well-known Certificate Authority (CA). To use unknown CA certificates, its Root certificate must be uploaded to the Backend Setting of the application gateway.";
const EXPIRED: &str = "Backend certificate is invalid. Current date is not within the \"Valid from\" and \"Valid to\" date range on the certificate.";

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A self-signed certificate for `names` as `openssl req -x509 -subj /CN=... -addext
/// subjectAltName=DNS:...` makes it with OpenSSL's default configuration: basic constraints
/// CA:TRUE (`ca = false` gives the CA:FALSE form).
fn self_signed(names: &[&str], ca: bool, adjust: impl FnOnce(&mut CertificateParams)) -> Leaf {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    adjust(&mut params);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

/// A backend server configuration presenting `leaf` alone, as a self-signed backend does.
fn presenting_alone(leaf: &Leaf) -> std::sync::Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(wasmgate_tests::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(config)
}

/// What one HTTPS backend's certificate comes to: the probe's verdict and reason in the admin
/// API's backend health view, and the status of a request through the gateway.
struct Verdict {
    health: String,
    probe_log: String,
    status: StatusCode,
}

/// A gateway in front of an HTTPS backend presenting what `backend` configures, with the backend
/// settings' `settings_extra`, the default probe, and the admin API; returns the verdict.
async fn certificate_verdict(
    backend: std::sync::Arc<rustls::ServerConfig>,
    settings_extra: &str,
) -> Verdict {
    let backend = HttpsBackend::start("secure", backend).await;
    let mut toml = wasmgate_tests::config::listener("web", 0, &[]);
    toml += &pool("pool", &[backend.addr]);
    toml += &settings(
        "settings",
        &format!("protocol = \"https\"\n{settings_extra}"),
    );
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    toml += &format!("[admin]\nbind_address = \"127.0.0.1\"\nport = 0\ntoken = {ADMIN_TOKEN:?}\n");
    let gw = start_gateway(&toml).await;
    let req = Request::get("/api/backend-health")
        .header("host", "admin")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(String::new())
        .expect("request");
    let reply = send(gw.admin_addr().expect("admin listener"), req).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    let server = &json["backendAddressPools"][0]["backendHttpSettingsCollection"][0]["servers"][0];
    let traffic = get(listener_addr(&gw, "web"), "www.example", "/").await;
    let verdict = Verdict {
        health: server["health"].as_str().unwrap_or_default().to_string(),
        probe_log: server["healthProbeLog"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        status: traffic.status,
    };
    gw.shutdown().await;
    verdict
}

fn assert_accepted(v: &Verdict, what: &str) {
    assert_eq!(
        (v.health.as_str(), v.status),
        ("Healthy", StatusCode::OK),
        "{what}: the probe and the request succeed (probe log: {:?})",
        v.probe_log
    );
}

fn assert_refused(v: &Verdict, reason: &str, what: &str) {
    assert_eq!(v.health, "Unhealthy", "{what}: probe log {:?}", v.probe_log);
    assert_eq!(v.probe_log, reason, "{what}: the health reason");
    assert_eq!(v.status, StatusCode::BAD_GATEWAY, "{what}: the request");
}

/// A self-signed backend certificate uploaded as its own trusted root is accepted, whether OpenSSL
/// marked it CA:TRUE (its default) or CA:FALSE, as Application Gateway v2 accepts it.
#[tokio::test]
async fn a_self_signed_backend_certificate_pinned_as_its_trusted_root_is_accepted() {
    let pki = Pki::new("pinned");
    for ca in [true, false] {
        let cert = self_signed(&["backend.test"], ca, |_| {});
        let root = pki.write(&format!("be-{ca}.crt"), &cert.cert_pem);
        let v = certificate_verdict(
            presenting_alone(&cert),
            &format!(
                "host_name = \"backend.test\"\ntrusted_root_certificates = [{}]",
                toml_path(&root)
            ),
        )
        .await;
        assert_accepted(
            &v,
            &format!("self-signed CA:{}", if ca { "TRUE" } else { "FALSE" }),
        );
    }
}

/// Pinning is byte for byte: a self-signed certificate that is not one of the trusted roots is
/// refused with the root named as the reason, against configured roots and the system's alike.
#[tokio::test]
async fn a_self_signed_backend_certificate_not_pinned_is_refused_with_the_reason() {
    let pki = Pki::new("not pinned");
    let cert = self_signed(&["backend.test"], true, |_| {});
    // Another self-signed certificate with the same name and subject, another key.
    let other = self_signed(&["backend.test"], true, |_| {});
    let root = pki.write("other.crt", &other.cert_pem);
    let v = certificate_verdict(
        presenting_alone(&cert),
        &format!(
            "host_name = \"backend.test\"\ntrusted_root_certificates = [{}]",
            toml_path(&root)
        ),
    )
    .await;
    assert_refused(&v, ROOT_MISMATCH, "another self-signed certificate pinned");
    let v = certificate_verdict(presenting_alone(&cert), "host_name = \"backend.test\"").await;
    assert_refused(&v, NOT_WELL_KNOWN_CA, "the system's roots");
}

/// A certificate issued by a CA that is a trusted root is accepted; the same roots refuse it once
/// expired, and under a host name it does not carry, each with Application Gateway's reason.
#[tokio::test]
async fn a_chain_to_a_trusted_root_is_accepted_and_expiry_and_names_are_checked() {
    let pki = Pki::new("backend CA");
    let ca = pki.write_ca("ca.pem");
    let roots = format!("trusted_root_certificates = [{}]", toml_path(&ca));
    let leaf = pki.issue(&["backend.test"]);
    let v = certificate_verdict(
        pki.server_config(&leaf),
        &format!("host_name = \"backend.test\"\n{roots}"),
    )
    .await;
    assert_accepted(&v, "a chain to the trusted root");
    let v = certificate_verdict(
        pki.server_config(&leaf),
        &format!("host_name = \"other.test\"\n{roots}"),
    )
    .await;
    assert_refused(
        &v,
        NAME_MISMATCH,
        "a chain to the trusted root, another name",
    );
    let expired = pki.issue_expired(&["backend.test"]);
    let v = certificate_verdict(
        pki.server_config(&expired),
        &format!("host_name = \"backend.test\"\n{roots}"),
    )
    .await;
    assert_refused(&v, EXPIRED, "an expired certificate from the trusted root");
}

/// A pinned certificate still gets the checks that apply to it: its validity period and the
/// host name.
#[tokio::test]
async fn a_pinned_self_signed_certificate_must_be_current_and_name_the_host() {
    let pki = Pki::new("pinned checks");
    let expired = self_signed(&["backend.test"], true, |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let root = pki.write("expired.crt", &expired.cert_pem);
    let v = certificate_verdict(
        presenting_alone(&expired),
        &format!(
            "host_name = \"backend.test\"\ntrusted_root_certificates = [{}]",
            toml_path(&root)
        ),
    )
    .await;
    assert_refused(&v, EXPIRED, "an expired pinned certificate");

    let cert = self_signed(&["backend.test"], true, |_| {});
    let root = pki.write("be.crt", &cert.cert_pem);
    let v = certificate_verdict(
        presenting_alone(&cert),
        &format!(
            "host_name = \"other.test\"\ntrusted_root_certificates = [{}]",
            toml_path(&root)
        ),
    )
    .await;
    assert_refused(&v, NAME_MISMATCH, "a pinned certificate under another name");
}

#[tokio::test]
async fn plain_http_on_an_https_port_gets_400() {
    let pki = Pki::new("plain CA");
    let leaf = pki.issue(&["a.example"]);
    let (cert, key) = pki.write_leaf("a", &leaf);
    let backend = HttpBackend::start("app").await;
    let mut toml = https_listener("web", 0, &[], &cert, &key, "");
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    let res = raw_exchange(
        listener_addr(&gw, "web"),
        b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await
    .expect("a plain HTTP answer, not a hang");
    assert_eq!(res.status, 400);
    assert!(
        res.text()
            .contains("a plain HTTP request was sent to an HTTPS port"),
        "{}",
        res.text()
    );
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_stalled_request_head_over_tls_gets_408() {
    let pki = Pki::new("408 CA");
    let leaf = pki.issue(&["a.example"]);
    let (cert, key) = pki.write_leaf("a", &leaf);
    let backend = HttpBackend::start("app").await;
    let mut toml = https_listener("web", 0, &[], &cert, &key, "");
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    toml += "[limits]\nclient_idle_timeout = \"300ms\"\n";
    let gw = start_gateway(&toml).await;
    let config = client_config(&[pki.ca_der()], &["http/1.1"]);
    let mut stream = tls_connect(listener_addr(&gw, "web"), "a.example", config)
        .await
        .expect("handshake");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.exa")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = within("the 408 and the close", stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "a stalled head over TLS gets 408, got {answer:?}"
    );
}

#[tokio::test]
async fn http_redirects_to_the_https_listener() {
    let pki = Pki::new("redirect CA");
    let leaf = pki.issue(&["www.example"]);
    let (cert, key) = pki.write_leaf("www", &leaf);
    let backend = HttpBackend::start("app").await;
    let [http_port, https_port] = free_ports(2)[..] else {
        unreachable!()
    };
    let mut toml = wasmgate_tests::config::listener("http", http_port, &[]);
    toml += &https_listener("https", https_port, &[], &cert, &key, "");
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += "[[redirects]]\nname = \"to-https\"\ntarget_listener = \"https\"\n\n";
    toml += "[[rules]]\nname = \"redirect\"\nlistener = \"http\"\nredirect = \"to-https\"\n\n";
    toml += &basic_rule("rule", "https", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    let reply = get(listener_addr(&gw, "http"), "www.example", "/a/b?x=1").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    let location = format!("https://www.example:{https_port}/a/b?x=1");
    assert_eq!(reply.header("location"), Some(location.as_str()));
    let config = client_config(&[pki.ca_der()], &["h2", "http/1.1"]);
    let followed = https_get(
        listener_addr(&gw, "https"),
        "www.example",
        config,
        "www.example",
        "/a/b?x=1",
    )
    .await;
    assert_eq!(followed.status, StatusCode::OK);
    assert_eq!(backend.last().uri, "/a/b?x=1");
}

#[test]
fn bad_certificates_are_configuration_errors_naming_the_listener_and_the_file() {
    let pki = Pki::new("bad input CA");
    let good = pki.issue(&["a.example"]);
    let other = pki.issue(&["a.example"]);
    let expired = pki.issue_expired(&["a.example"]);
    let (cert, key) = pki.write_leaf("good", &good);
    let (_, other_key) = pki.write_leaf("other", &other);
    let (expired_cert, expired_key) = pki.write_leaf("expired", &expired);
    let pfx = pki.write_pfx("bundle", &good, "right");
    let missing = pki.path("missing.pem");
    let shown = |p: &Path| format!("{:?}", p.display().to_string());

    let listener = |body: String| {
        format!("[[listeners]]\nname = \"site\"\nprotocol = \"https\"\nport = 443\n{body}\n")
    };
    let pem = |c: &Path, k: &Path| {
        listener(format!(
            "certificate = {}\ncertificate_key = {}",
            toml_path(c),
            toml_path(k)
        ))
    };
    let cases: Vec<(&str, String, String)> = vec![
        (
            "missing file",
            pem(&missing, &key),
            format!(
                "listeners[0].certificate: listener \"site\": cannot read {}: No such file or directory (os error 2)",
                shown(&missing)
            ),
        ),
        (
            "key of another certificate",
            pem(&cert, &other_key),
            format!(
                "listeners[0].certificate: listener \"site\": the key in {} does not match the certificate in {}",
                shown(&other_key),
                shown(&cert)
            ),
        ),
        (
            "expired certificate",
            pem(&expired_cert, &expired_key),
            format!(
                "listeners[0].certificate: listener \"site\": the certificate in {} expired on 2021-01-01T00:00:00Z",
                shown(&expired_cert)
            ),
        ),
        (
            "key file holding a certificate",
            pem(&cert, &cert),
            format!("listeners[0].certificate: listener \"site\": {} holds no private key", shown(&cert)),
        ),
        (
            "wrong PKCS#12 password",
            listener(format!(
                "certificate_pfx = {}\ncertificate_password = \"wrong\"",
                toml_path(&pfx)
            )),
            format!(
                "listeners[0].certificate_pfx: listener \"site\": {} cannot be opened as PKCS#12 (wrong password or not a .pfx file): ",
                shown(&pfx)
            ),
        ),
        (
            "no certificate at all",
            listener(String::new()),
            "listeners[0]: an https listener needs certificate and certificate_key (PEM), or certificate_pfx (PKCS#12)".to_string(),
        ),
        (
            "certificate on an http listener",
            format!(
                "[[listeners]]\nname = \"site\"\nport = 80\ncertificate = {}\ncertificate_key = {}\n",
                toml_path(&cert),
                toml_path(&key)
            ),
            "listeners[0].certificate: only an https listener takes TLS settings".to_string(),
        ),
        (
            "unknown TLS version",
            pem(&cert, &key) + "min_tls_version = \"1.1\"\n",
            "listeners[0].min_tls_version: \"1.1\" is not supported; use \"1.2\" or \"1.3\"".to_string(),
        ),
        (
            "missing trusted root",
            format!(
                "[[backend_settings]]\nname = \"secure\"\nport = 443\nprotocol = \"https\"\ntrusted_root_certificates = [{}]\n",
                toml_path(&missing)
            ),
            format!(
                "backend_settings[0].trusted_root_certificates: backend settings \"secure\": cannot read {}: No such file or directory (os error 2)",
                shown(&missing)
            ),
        ),
    ];
    for (what, toml, expected) in cases {
        let err = Config::from_toml(&toml)
            .err()
            .unwrap_or_else(|| panic!("{what}: the configuration should be refused"));
        assert!(
            err.to_string().starts_with(&expected),
            "{what}:\n  got      {err}\n  expected {expected}"
        );
    }
    // The working cases, for contrast.
    Config::from_toml(&pem(&cert, &key)).expect("PEM certificate and key");
    Config::from_toml(&listener(format!(
        "certificate_pfx = {}\ncertificate_password = \"right\"",
        toml_path(&pfx)
    )))
    .expect("PKCS#12 bundle");
}

/// A gateway whose HTTPS listener serves `chat.example` from files that the test rewrites,
/// in front of a WebSocket echo backend.
async fn reloadable() -> (Pki, wasmgate::Gateway, WsBackend, wasmgate_tests::tls::Leaf) {
    let pki = Pki::new("reload CA");
    let first = pki.issue(&["chat.example"]);
    let (cert, key) = pki.write_leaf("chat", &first);
    let backend = WsBackend::start("echo").await;
    let mut toml = https_listener("wss", 0, &[], &cert, &key, "");
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "wss", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    (pki, gw, backend, first)
}

#[tokio::test]
async fn certificates_reload_while_a_wss_session_stays_up() {
    let (pki, gw, _backend, first) = reloadable().await;
    let addr = listener_addr(&gw, "wss");
    let config = client_config(&[pki.ca_der()], &["http/1.1"]);
    let stream = tls_connect(addr, "chat.example", config.clone())
        .await
        .unwrap();
    assert_eq!(presented(&stream), first.der);
    let req = "wss://chat.example/chat".into_client_request().unwrap();
    let (mut ws, _) = within(
        "wss handshake",
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .expect("wss upgrade");

    // A broken pair of files is refused; the listener keeps its certificate.
    pki.write("chat.key", &pki.issue(&["x"]).key_pem);
    let errors = gw.reload_certificates();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .to_string()
            .starts_with("listener \"wss\": the key in "),
        "{}",
        errors[0]
    );
    // Fresh clients: a resumed session would show the certificate of the session it resumes.
    let fresh_config = || client_config(&[pki.ca_der()], &["http/1.1"]);
    let still = tls_connect(addr, "chat.example", fresh_config())
        .await
        .unwrap();
    assert_eq!(
        presented(&still),
        first.der,
        "a failed reload keeps the old certificate"
    );

    let second = pki.issue(&["chat.example"]);
    pki.write_leaf("chat", &second);
    assert!(gw.reload_certificates().is_empty());
    let fresh = tls_connect(addr, "chat.example", fresh_config())
        .await
        .unwrap();
    assert_eq!(
        presented(&fresh),
        second.der,
        "new handshakes get the new certificate"
    );

    ws.send(Message::text("still here")).await.unwrap();
    let echoed = within("echo after the reload", ws.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        echoed,
        Message::text("still here"),
        "the wss session survived the reload"
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn certificates_reload_when_their_files_change() {
    let (pki, gw, _backend, first) = reloadable().await;
    let addr = listener_addr(&gw, "wss");
    let config = client_config(&[pki.ca_der()], &["http/1.1"]);
    let stream = tls_connect(addr, "chat.example", config.clone())
        .await
        .unwrap();
    assert_eq!(presented(&stream), first.der);
    // The rewrite gets a later file time, so it is seen as a change.
    let second = pki.issue(&["chat.example"]);
    pki.write_leaf("chat", &second);
    // The watcher looks every 2 s.
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    loop {
        // A fresh client each time: a resumed session would show the old certificate.
        let fresh = client_config(&[pki.ca_der()], &["http/1.1"]);
        let s = tls_connect(addr, "chat.example", fresh).await.unwrap();
        if presented(&s) == second.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not picked up from disk within {:?}",
            2 * WAIT
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn min_tls_version_13_refuses_tls12_clients() {
    let pki = Pki::new("version CA");
    let leaf = pki.issue(&["a.example"]);
    let (cert, key) = pki.write_leaf("a", &leaf);
    let backend = HttpBackend::start("app").await;
    let mut toml = https_listener("web", 0, &[], &cert, &key, "min_tls_version = \"1.3\"");
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let tls12_only = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(wasmgate_tests::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let err = tls_connect(addr, "a.example", tls12_only)
        .await
        .expect_err("a TLS 1.2 client is refused");
    assert!(err.to_string().contains("fatal alert"), "{err}");
    let ok = tls_connect(
        addr,
        "a.example",
        client_config(&[pki.ca_der()], &["http/1.1"]),
    )
    .await
    .expect("TLS 1.3 is accepted");
    assert_eq!(
        ok.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}
