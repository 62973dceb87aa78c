//! Headers: what the gateway adds, the Host the backend sees, path overrides, hop-by-hop
//! headers and header names Application Gateway drops.

use std::collections::HashSet;

use wasmgate_tests::client::raw_exchange;
use wasmgate_tests::config::{listener, pool, settings, single_route};
use wasmgate_tests::*;

/// Hop-by-hop headers (RFC 9110 §7.6.1) that must never cross the gateway.
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "te",
    "trailer",
    "proxy-connection",
    "upgrade",
    "transfer-encoding",
];

/// A Connection header the gateway itself may send: only connection management tokens.
fn assert_own_connection_header(value: Option<&str>, semantic: &str) {
    if let Some(v) = value {
        for token in v.split(',').map(|t| t.trim().to_ascii_lowercase()) {
            assert!(
                token == "keep-alive" || token == "close",
                "{semantic}: Connection {v:?} carries {token:?}; the peer's Connection header must not be forwarded"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_headers_are_added() {
    let b = HttpBackend::start("app").await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let addr = listener_addr(&gw, "web");

    let reply = get_with(
        addr,
        "site.test",
        "/orig/path?x=1&y=%20z",
        &[("x-forwarded-for", "203.0.113.7")],
    )
    .await;
    assert_eq!(reply.status.as_u16(), 200);
    let seen = b.last();
    let client = reply.local_addr;
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        vec![format!("203.0.113.7, {}:{}", client.ip(), client.port())],
        "X-Forwarded-For: the client's ip:port is appended to the existing list"
    );
    assert_eq!(
        seen.header("x-forwarded-proto"),
        Some("http"),
        "X-Forwarded-Proto"
    );
    assert_eq!(
        seen.header("x-forwarded-port"),
        Some(addr.port().to_string().as_str()),
        "X-Forwarded-Port is the listener's port"
    );
    assert_eq!(
        seen.header("x-original-host"),
        Some("site.test"),
        "X-Original-Host is the Host the client sent"
    );
    assert_eq!(
        seen.header("x-original-url"),
        Some("/orig/path?x=1&y=%20z"),
        "X-Original-URL is the path and query as the client sent them"
    );
    let first_trace = seen
        .header("x-appgw-trace-id")
        .unwrap_or_else(|| panic!("x-appgw-trace-id missing; backend saw {:?}", seen.headers))
        .to_string();
    assert!(
        is_trace_id(&first_trace),
        "x-appgw-trace-id must be 32 lowercase hex digits, got {first_trace:?}"
    );

    let second = get(addr, "site.test", "/second").await;
    let seen = b.last();
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        vec![format!(
            "{}:{}",
            second.local_addr.ip(),
            second.local_addr.port()
        )],
        "X-Forwarded-For without an existing list is just the client's ip:port"
    );
    let second_trace = seen.header("x-appgw-trace-id").unwrap_or_default();
    assert!(is_trace_id(second_trace));
    assert_ne!(
        first_trace, second_trace,
        "each request gets its own x-appgw-trace-id"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_ids_are_unique() {
    let b = HttpBackend::start("app").await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    for i in 0..20 {
        get(addr, "site.test", &format!("/trace/{i}")).await;
    }
    let ids: HashSet<String> = b
        .requests()
        .iter()
        .filter(|r| r.uri.starts_with("/trace/"))
        .filter_map(|r| r.header("x-appgw-trace-id").map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 20, "20 requests, 20 distinct trace ids");
    assert!(ids.iter().all(|id| is_trace_id(id)), "{ids:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_header_pass_through_fixed_or_from_backend_address() {
    let b = HttpBackend::start("app").await;

    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    get(listener_addr(&gw, "web"), "client.example:8443", "/").await;
    assert_eq!(
        b.last().header("host"),
        Some("client.example:8443"),
        "the client's Host is passed through by default"
    );
    gw.shutdown().await;

    let gw = start_gateway(&single_route(&[b.addr], "host_name = \"backend.internal\"")).await;
    get(listener_addr(&gw, "web"), "client.example", "/").await;
    let seen = b.last();
    assert_eq!(
        seen.header("host"),
        Some("backend.internal"),
        "host_name replaces the Host header"
    );
    assert_eq!(
        seen.header("x-original-host"),
        Some("client.example"),
        "X-Original-Host keeps the client's Host when host_name replaces it"
    );
    gw.shutdown().await;

    let gw = start_gateway(&single_route(
        &[b.addr],
        "pick_host_name_from_backend_address = true",
    ))
    .await;
    get(listener_addr(&gw, "web"), "client.example", "/").await;
    let host = b.last().header("host").unwrap_or_default().to_string();
    assert!(
        host == "127.0.0.1" || host == b.addr.to_string(),
        "pick_host_name_from_backend_address: the backend sees its own address as Host, got {host:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_override_prefixes_basic_rules() {
    let b = HttpBackend::start("app").await;
    let gw = start_gateway(&single_route(&[b.addr], "path = \"/base\"")).await;
    let addr = listener_addr(&gw, "web");

    for (sent, expected) in [
        ("/x", "/base/x"),
        ("/x/y?q=1", "/base/x/y?q=1"),
        ("/", "/base/"),
    ] {
        let reply = get(addr, "site.test", sent).await;
        assert_eq!(
            reply.header("x-seen-path"),
            Some(expected),
            "a basic rule's path override is prefixed: {sent} → {expected}"
        );
        assert_eq!(
            b.last().header("x-original-url"),
            Some(sent),
            "X-Original-URL keeps the client's path"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_override_replaces_a_path_rules_matched_prefix() {
    let b = HttpBackend::start("app").await;
    let mut toml = listener("web", 0, &[]);
    toml += &pool("pool", &[b.addr]);
    toml += &settings("plain", "");
    toml += &settings("v2", "path = \"/v2/\"");
    toml += "[[rules]]\nname = \"paths\"\nlistener = \"web\"\nurl_path_map = \"map\"\n\n";
    toml += "[[url_path_maps]]\nname = \"map\"\ndefault_backend_pool = \"pool\"\ndefault_backend_settings = \"plain\"\n\n";
    toml += "[[url_path_maps.path_rules]]\nname = \"api\"\npaths = [\"/api/*\"]\nbackend_pool = \"pool\"\nbackend_settings = \"v2\"\n\n";
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    for (sent, expected) in [
        ("/api/users", "/v2/users"),
        ("/api/users/7?full=1", "/v2/users/7?full=1"),
        ("/API/Users", "/v2/Users"),
        ("/other", "/other"),
    ] {
        let reply = get(addr, "site.test", sent).await;
        assert_eq!(
            reply.header("x-seen-path"),
            Some(expected),
            "path override on a path rule replaces the matched prefix '/api/' by '/v2/': {sent} → {expected}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hop_by_hop_request_headers_are_removed() {
    let b = HttpBackend::start("app").await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let addr = listener_addr(&gw, "web");

    let request = "GET /hop HTTP/1.1\r\n\
        Host: hop.test\r\n\
        Connection: keep-alive, X-Drop-Me\r\n\
        Keep-Alive: timeout=5\r\n\
        TE: trailers\r\n\
        Trailer: x-trailer\r\n\
        Proxy-Connection: keep-alive\r\n\
        Upgrade: foo/1\r\n\
        X-Drop-Me: secret\r\n\
        X-Keep: yes\r\n\
        \r\n";
    let reply = raw_exchange(addr, request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("no response to a request with hop-by-hop headers: {e}"));
    assert_eq!(reply.status, 200, "{}", reply.head);
    let seen = b.last();
    for name in HOP_BY_HOP.iter().chain(&["x-drop-me"]) {
        assert_eq!(
            seen.header(name),
            None,
            "hop-by-hop request header {name:?} must not reach the backend (RFC 9110 §7.6.1)"
        );
    }
    assert_own_connection_header(seen.header("connection"), "request to the backend");
    assert_eq!(
        seen.header("x-keep"),
        Some("yes"),
        "end-to-end headers pass"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hop_by_hop_response_headers_are_removed() {
    let b = RawBackend::start(
        "HTTP/1.1 200 OK\r\n\
         Content-Length: 2\r\n\
         Connection: X-Secret-Resp\r\n\
         X-Secret-Resp: 1\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         Trailer: x-t\r\n\
         Upgrade: foo\r\n\
         X-Keep: 1\r\n\
         \r\n\
         ok",
    )
    .await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let addr = listener_addr(&gw, "web");

    let reply = get(addr, "hop.test", "/").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(reply.text(), "ok");
    for name in [
        "x-secret-resp",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert_eq!(
            reply.header(name),
            None,
            "hop-by-hop response header {name:?} must not reach the client; headers {:?}",
            reply.headers
        );
    }
    assert_own_connection_header(reply.header("connection"), "response to the client");
    assert_eq!(reply.header("x-keep"), Some("1"), "end-to-end headers pass");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunked_bodies_are_reframed_both_ways() {
    let b = RawBackend::start(
        "HTTP/1.1 200 OK\r\n\
         Transfer-Encoding: chunked\r\n\
         \r\n\
         6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let addr = listener_addr(&gw, "web");

    let reply = get(addr, "chunk.test", "/").await;
    assert_eq!(
        reply.text(),
        "hello world",
        "a chunked response body arrives whole"
    );
    let te = reply.header_all("transfer-encoding");
    assert!(
        te.len() <= 1 && reply.header("content-length").is_none() || te.is_empty(),
        "the response is framed once: Transfer-Encoding {te:?}, Content-Length {:?}",
        reply.header("content-length")
    );

    let request = "POST /upload HTTP/1.1\r\n\
        Host: chunk.test\r\n\
        Transfer-Encoding: chunked\r\n\
        \r\n\
        4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n";
    let reply = raw_exchange(addr, request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("no response to a chunked POST: {e}"));
    assert_eq!(reply.status, 200, "{}", reply.head);
    let received = b.requests().pop().expect("the backend received the POST");
    let (head, body) = received.split_once("\r\n\r\n").unwrap_or_default();
    let lower = head.to_ascii_lowercase();
    let whole = if lower.contains("transfer-encoding: chunked") {
        body.lines()
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, l)| l)
            .collect::<String>()
    } else {
        body.to_string()
    };
    assert!(
        head.starts_with("POST /upload "),
        "the backend received the POST:\n{received}"
    );
    assert_eq!(
        whole, "abcdefg",
        "a chunked request body reaches the backend whole:\n{received}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_names_beyond_letters_digits_and_hyphen_are_dropped() {
    let b = HttpBackend::start("app").await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let addr = listener_addr(&gw, "web");

    let request = "GET /names HTTP/1.1\r\n\
        Host: names.test\r\n\
        x_custom: underscore\r\n\
        x.dotted: dot\r\n\
        X-Normal-2: fine\r\n\
        \r\n";
    let reply = raw_exchange(addr, request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("no response: {e}"));
    assert_eq!(reply.status, 200, "{}", reply.head);
    let seen = b.last();
    assert_eq!(
        seen.header("x_custom"),
        None,
        "a header name with '_' is dropped before the backend"
    );
    assert_eq!(
        seen.header("x.dotted"),
        None,
        "a header name with '.' is dropped before the backend"
    );
    assert_eq!(
        seen.header("x-normal-2"),
        Some("fine"),
        "letters, digits and '-' pass"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_other_than_websocket_is_forwarded_as_a_plain_request() {
    let b = HttpBackend::start("app").await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let addr = listener_addr(&gw, "web");

    let request = "GET /h2c HTTP/1.1\r\n\
        Host: h2c.test\r\n\
        Connection: Upgrade, HTTP2-Settings\r\n\
        Upgrade: h2c\r\n\
        HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
        \r\n";
    let reply = raw_exchange(addr, request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("no response to an h2c upgrade request: {e}"));
    assert_eq!(
        reply.status, 200,
        "an Upgrade other than websocket is not tunnelled but answered as a plain request: {}",
        reply.head
    );
    let seen = b.last();
    assert_eq!(seen.uri, "/h2c");
    assert_eq!(
        seen.header("upgrade"),
        None,
        "Upgrade: h2c is not forwarded"
    );
    assert_eq!(
        seen.header("http2-settings"),
        None,
        "HTTP2-Settings is named in Connection, so it is hop-by-hop"
    );
    assert_own_connection_header(seen.header("connection"), "h2c request to the backend");
    gw.shutdown().await;
}
