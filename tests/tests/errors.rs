//! Malformed and oversized requests, sent as raw bytes, and client timeouts.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wasmgate_tests::client::{raw_exchange, read_response, read_until_closed};
use wasmgate_tests::config::single_route;
use wasmgate_tests::*;

/// Starts a gateway in front of one backend and returns both.
async fn gateway() -> (wasmgate::Gateway, HttpBackend) {
    let b = HttpBackend::start("app").await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    (gw, b)
}

/// Sends `request` and asserts the gateway answers `status` without bothering the backend.
async fn expect_status(
    gw: &wasmgate::Gateway,
    b: &HttpBackend,
    request: &[u8],
    status: u16,
    semantic: &str,
) {
    let before = b.hits();
    let reply = raw_exchange(listener_addr(gw, "web"), request)
        .await
        .unwrap_or_else(|e| panic!("{semantic}: expected {status}, but {e}"));
    assert_eq!(
        reply.status,
        status,
        "{semantic}: expected {status}, got:\n{}\n{}",
        reply.head,
        reply.text()
    );
    assert_eq!(
        b.hits(),
        before,
        "{semantic}: a refused request must not reach the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_host_on_http11_is_400() {
    let (gw, b) = gateway().await;
    expect_status(
        &gw,
        &b,
        b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
        400,
        "HTTP/1.1 without Host (RFC 9112 §3.2)",
    )
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicting_content_lengths_are_400() {
    let (gw, b) = gateway().await;
    expect_status(
        &gw,
        &b,
        b"POST / HTTP/1.1\r\nHost: x.test\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        400,
        "two different Content-Length headers (RFC 9112 §6.3)",
    )
    .await;
    expect_status(
        &gw,
        &b,
        b"POST / HTTP/1.1\r\nHost: x.test\r\nContent-Length: abc\r\n\r\n",
        400,
        "a Content-Length that is not a number",
    )
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_request_lines_are_400() {
    let (gw, b) = gateway().await;
    for line in ["GARBAGE", "GET /path HTTP/1.1 extra", "GET /pa th HTTP/1.1"] {
        let request = format!("{line}\r\nHost: x.test\r\n\r\n");
        expect_status(
            &gw,
            &b,
            request.as_bytes(),
            400,
            &format!("malformed request line {line:?}"),
        )
        .await;
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn url_over_32_kb_is_414() {
    let (gw, b) = gateway().await;
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: x.test\r\n\r\n",
        "a".repeat(33 * 1024)
    );
    expect_status(&gw, &b, long.as_bytes(), 414, "a URL longer than 32 KB").await;

    let fits = format!(
        "GET /{} HTTP/1.1\r\nHost: x.test\r\n\r\n",
        "a".repeat(30 * 1024)
    );
    let reply = raw_exchange(listener_addr(&gw, "web"), fits.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("a 30 KB URL: {e}"));
    assert_eq!(
        reply.status, 200,
        "a 30 KB URL is within the 32 KB limit: {}",
        reply.head
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn headers_over_32_kb_are_431() {
    let (gw, b) = gateway().await;
    let filler = |count: usize| {
        (0..count)
            .map(|i| format!("X-Fill-{i}: {}\r\n", "v".repeat(1000)))
            .collect::<String>()
    };
    let big = format!("GET / HTTP/1.1\r\nHost: x.test\r\n{}\r\n", filler(34));
    expect_status(&gw, &b, big.as_bytes(), 431, "request headers over 32 KB").await;

    let fits = format!("GET / HTTP/1.1\r\nHost: x.test\r\n{}\r\n", filler(28));
    let reply = raw_exchange(listener_addr(&gw, "web"), fits.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("28 KB of headers: {e}"));
    assert_eq!(
        reply.status, 200,
        "28 KB of headers is within the 32 KB limit: {}",
        reply.head
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_idle_mid_head_gets_408_then_close() {
    let b = HttpBackend::start("app").await;
    let mut toml = single_route(&[b.addr], "");
    toml += "[limits]\nclient_idle_timeout = \"300ms\"\n";
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /slowloris HTTP/1.1\r\nHost: x.test\r\nX-Partial: ")
        .await
        .expect("write a partial head");
    let started = Instant::now();
    let (closed, got) = read_until_closed(&mut stream, WAIT).await;
    let elapsed = started.elapsed();
    assert!(
        closed,
        "a client idle for {WAIT:?} mid-head must be cut off by client_idle_timeout = 300 ms"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "the connection was closed after {elapsed:?}, before the 300 ms idle timeout"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "a client idle mid-head gets 408 Request Timeout before the close, got {text:?}"
    );
    assert_eq!(
        b.hits(),
        0,
        "an incomplete request must not reach the backend"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_keep_alive_connection_is_closed() {
    let b = HttpBackend::start("app").await;
    let mut toml = single_route(&[b.addr], "");
    toml += "[limits]\nclient_idle_timeout = \"300ms\"\n";
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /once HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await
        .expect("write");
    let reply = read_response(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("first request on a keep-alive connection: {e}"));
    assert_eq!(reply.status, 200);

    let started = Instant::now();
    let (closed, got) = read_until_closed(&mut stream, WAIT).await;
    assert!(
        closed,
        "an idle keep-alive connection must be closed after client_idle_timeout = 300 ms"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );
    assert!(
        got.is_empty(),
        "between requests the gateway closes silently (a 408 would race a new request), got {:?}",
        String::from_utf8_lossy(&got)
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let (gw, b) = gateway().await;
    let addr = listener_addr(&gw, "web");
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    for i in 0..3 {
        stream
            .write_all(format!("GET /ka/{i} HTTP/1.1\r\nHost: x.test\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let reply = read_response(&mut stream)
            .await
            .unwrap_or_else(|e| panic!("request {i} on one keep-alive connection: {e}"));
        assert_eq!(reply.status, 200, "request {i}: {}", reply.head);
    }
    assert_eq!(b.hits_under("/ka/"), 3);
    gw.shutdown().await;
}
