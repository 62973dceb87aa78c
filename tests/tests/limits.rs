//! `[limits]`: header count (431), request body size (413), connections per listening socket
//! (503 and close), and the configuration errors for each. The 32 KB URL (414) and header
//! (32 KB → 431) limits and the 408 for a stalled head are in `errors.rs`.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wasmgate::config::Config;
use wasmgate_tests::client::{RawResponse, read_response, read_until_closed};
use wasmgate_tests::config::single_route;
use wasmgate_tests::*;

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A gateway with `limits` (lines of a `[limits]` section) in front of a recording backend.
async fn gateway(limits: &str) -> (wasmgate::Gateway, RawBackend) {
    let b = RawBackend::start(OK).await;
    let mut toml = single_route(&[b.addr], "");
    toml += &format!("[limits]\n{limits}\n");
    (start_gateway(&toml).await, b)
}

/// Sends `request` on a fresh connection; returns the response and whether the connection was
/// closed within 3 s after it.
async fn exchange(gw: &wasmgate::Gateway, request: &[u8]) -> (RawResponse, bool) {
    let mut stream = within("connect", TcpStream::connect(listener_addr(gw, "web")))
        .await
        .expect("connect");
    let _ = within("write", stream.write_all(request)).await;
    let res = read_response(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("no response: {e}"));
    let (closed, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    (res, closed)
}

fn with_headers(count: usize) -> String {
    // Host is one of them.
    let fields: String = (1..count).map(|i| format!("X-F{i}: v\r\n")).collect();
    format!("GET /h HTTP/1.1\r\nHost: x.test\r\n{fields}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_count_over_the_limit_is_431() {
    // The default is 100 fields.
    let (gw, b) = gateway("").await;
    let (res, _) = exchange(&gw, with_headers(100).as_bytes()).await;
    assert_eq!(
        res.status, 200,
        "100 header fields are within the default limit"
    );
    let (res, _) = exchange(&gw, with_headers(101).as_bytes()).await;
    assert_eq!(
        res.status, 431,
        "101 header fields are over the default 100: {}",
        res.head
    );
    assert_eq!(
        b.requests().len(),
        1,
        "only the request within the limit is forwarded"
    );
    gw.shutdown().await;

    let (gw, b) = gateway("max_header_count = 10").await;
    let (res, _) = exchange(&gw, with_headers(10).as_bytes()).await;
    assert_eq!(res.status, 200, "10 fields with max_header_count = 10");
    let (res, closed) = exchange(&gw, with_headers(11).as_bytes()).await;
    assert_eq!(
        res.status, 431,
        "11 fields with max_header_count = 10: {}",
        res.head
    );
    assert!(
        closed,
        "the connection is closed after a 431 from the parser"
    );
    assert_eq!(b.requests().len(), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn body_over_max_request_body_is_413() {
    let (gw, b) = gateway("max_request_body = \"1KB\"").await;
    let post = |len: usize| {
        format!(
            "POST /up HTTP/1.1\r\nHost: x.test\r\nContent-Length: {len}\r\n\r\n{}",
            "b".repeat(len)
        )
    };
    let (res, _) = exchange(&gw, post(1024).as_bytes()).await;
    assert_eq!(
        res.status, 200,
        "a 1024-byte body is within 1KB: {}",
        res.head
    );
    assert!(b.requests()[0].ends_with(&"b".repeat(1024)));

    // A declared length over the limit is refused before any of the body is read.
    let (res, closed) = exchange(&gw, post(1025).as_bytes()).await;
    assert_eq!(
        res.status, 413,
        "Content-Length 1025 over 1KB: {}",
        res.head
    );
    assert!(
        closed,
        "a 413 closes the connection instead of reading the body"
    );
    let (res, _) = exchange(
        &gw,
        b"POST /up HTTP/1.1\r\nHost: x.test\r\nContent-Length: 10000000000\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 413, "a 10 GB Content-Length: {}", res.head);
    assert_eq!(b.requests().len(), 1, "no refused body reaches the backend");

    // A chunked body is counted as it streams.
    let chunked = |sizes: &[usize]| {
        let mut r =
            String::from("POST /up HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n");
        for n in sizes {
            r += &format!("{n:x}\r\n{}\r\n", "c".repeat(*n));
        }
        r + "0\r\n\r\n"
    };
    let (res, _) = exchange(&gw, chunked(&[500, 524]).as_bytes()).await;
    assert_eq!(res.status, 200, "1024 chunked bytes: {}", res.head);
    assert_eq!(b.requests().len(), 2);
    let (res, closed) = exchange(&gw, chunked(&[1000, 1000]).as_bytes()).await;
    assert_eq!(res.status, 413, "2000 chunked bytes over 1KB: {}", res.head);
    assert!(closed, "the connection is closed after the 413");
    assert_eq!(
        b.requests().len(),
        2,
        "the backend never receives a complete over-limit body (its request is aborted): {:?}",
        b.requests().get(2)
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_over_max_connections_get_503_and_close() {
    let (gw, b) = gateway("max_connections = 2").await;
    let addr = listener_addr(&gw, "web");
    // Two connections, each served one request and kept alive.
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        s.write_all(format!("GET /held/{i} HTTP/1.1\r\nHost: x.test\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let res = read_response(&mut s).await.expect("a response");
        assert_eq!(
            res.status, 200,
            "connection {i} is within max_connections = 2"
        );
        held.push(s);
    }

    let (res, closed) = exchange(&gw, b"GET /third HTTP/1.1\r\nHost: x.test\r\n\r\n").await;
    assert_eq!(
        res.status, 503,
        "a third connection is over the limit: {}",
        res.head
    );
    assert_eq!(res.header("retry-after"), Some("1"), "{}", res.head);
    assert!(closed, "the refused connection is closed");
    assert_eq!(
        b.requests().len(),
        2,
        "the refused request never reaches the backend"
    );

    // A connection that ends gives its place back.
    drop(held.pop());
    let reply = eventually("a freed slot serves a new connection", || async move {
        let res = client::try_send_for(
            Duration::from_secs(2),
            addr,
            http::Request::get("/after")
                .header("host", "x.test")
                .body(String::new())
                .unwrap(),
        )
        .await
        .ok()?;
        (res.status == 200).then_some(res)
    })
    .await;
    assert_eq!(reply.status, 200);
    gw.shutdown().await;
}

#[test]
fn limit_fields_are_validated() {
    let base = single_route(&[dead_address()], "");
    for (line, field, why) in [
        (
            "max_header_count = 0",
            "limits.max_header_count",
            "from 1 to 1000",
        ),
        (
            "max_header_count = 5000",
            "limits.max_header_count",
            "from 1 to 1000",
        ),
        (
            "max_request_body = 0",
            "limits.max_request_body",
            "not a size",
        ),
        (
            "max_request_body = \"10XB\"",
            "limits.max_request_body",
            "not a size",
        ),
        (
            "max_request_body = -1",
            "limits.max_request_body",
            "not a size",
        ),
        (
            "max_connections = 0",
            "limits.max_connections",
            "from 1 to 1000000",
        ),
    ] {
        let err = Config::from_toml(&format!("{base}[limits]\n{line}\n"))
            .err()
            .unwrap_or_else(|| panic!("{line:?} must be refused"));
        let text = err.to_string();
        assert!(
            text.contains(field) && text.contains(why),
            "{line:?}: the error names {field} and says {why:?}: {text}"
        );
    }
    for (line, check) in [
        ("max_request_body = 2048", 2048u64),
        ("max_request_body = \"64KB\"", 64 << 10),
        ("max_request_body = \"10mb\"", 10 << 20),
        ("max_request_body = \"1GB\"", 1 << 30),
    ] {
        let config = Config::from_toml(&format!("{base}[limits]\n{line}\n"))
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(config.limits.max_request_body, Some(check), "{line:?}");
    }
    let config = Config::from_toml(&base).expect("no [limits]");
    assert_eq!(
        (
            config.limits.max_header_count,
            config.limits.max_request_body,
            config.limits.max_connections
        ),
        (100, None, None),
        "defaults: 100 fields, no body or connection limit"
    );
}
