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

/// A folder of page files for one test, removed when dropped.
struct Pages(std::path::PathBuf);

impl Pages {
    fn new(files: &[(&str, &str)]) -> Pages {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wasmgate-pages-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("page folder");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("page file");
        }
        Pages(dir)
    }

    fn path(&self, name: &str) -> String {
        format!("{:?}", self.0.join(name).display().to_string())
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn page(section: &str, status: u16, file: &str) -> String {
    format!("[[{section}]]\nstatus = {status}\nfile = {file}\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_error_pages_replace_the_gateways_errors_but_never_a_backends_response() {
    use wasmgate_tests::config::{basic_rule, listener, pool, settings};
    let pages = Pages::new(&[
        ("gateway-502.html", "<h1>gateway-wide 502</h1>"),
        ("own-502.html", "<h1>the listener's own 502</h1>"),
        ("gateway-404.txt", "nothing here"),
    ]);
    let failing = HttpBackend::builder("failing").status(502).start().await;
    let port = free_port();
    let mut toml = listener("own", port, &["own.example"]);
    toml += &page(
        "listeners.custom_error_pages",
        502,
        &pages.path("own-502.html"),
    );
    toml += &listener("web", port, &["web.example"]);
    toml += &listener("passing", port, &["passing.example"]);
    toml += &pool("dead", &[dead_address()]);
    toml += &pool("failing", &[failing.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("own", "own", "dead", "settings", "");
    toml += &basic_rule("web", "web", "dead", "settings", "");
    toml += &basic_rule("passing", "passing", "failing", "settings", "");
    toml += &page("custom_error_pages", 502, &pages.path("gateway-502.html"));
    toml += &page("custom_error_pages", 404, &pages.path("gateway-404.txt"));
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    let cases = [
        (
            "own.example",
            502,
            "<h1>the listener's own 502</h1>",
            "text/html; charset=utf-8",
        ),
        (
            "web.example",
            502,
            "<h1>gateway-wide 502</h1>",
            "text/html; charset=utf-8",
        ),
        (
            "unknown.example",
            404,
            "nothing here",
            "text/plain; charset=utf-8",
        ),
    ];
    for (host, status, body, content_type) in cases {
        let reply = get(addr, host, "/").await;
        assert_eq!(reply.status.as_u16(), status, "{host}");
        assert_eq!(reply.text(), body, "{host}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{host}");
    }
    // The backend's own 502 passes as it is.
    let reply = get(addr, "passing.example", "/").await;
    assert_eq!(reply.status.as_u16(), 502);
    assert_eq!(reply.backend(), Some("failing"));
    assert!(!reply.text().contains("gateway-wide"), "{}", reply.text());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateways_own_errors_never_show_a_backend_address() {
    use wasmgate_tests::config::{basic_rule, listener, pool, settings};
    let dead = dead_address();
    let slow = HttpBackend::builder("slow")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let plain = HttpBackend::start("plain").await;
    let port = free_port();
    let mut toml = String::new();
    for name in ["dead", "slow", "empty", "dns", "tls"] {
        toml += &listener(name, port, &[&format!("{name}.example")]);
    }
    // An HTTPS backend setting in front of a plain HTTP server: the TLS handshake fails.
    toml += &pool("tls", &[plain.addr]);
    // Probes that keep every server in rotation (`min_servers`), so that requests reach the
    // failing servers and the errors of each failure are what the client sees.
    toml += "[[probes]]\nname = \"keep\"\nprotocol = \"http\"\nhost = \"probe.example\"\nmin_servers = 1\n\n";
    toml += "[[probes]]\nname = \"keep-tls\"\nprotocol = \"https\"\nhost = \"probe.example\"\nmin_servers = 1\n\n";
    toml += &settings(
        "https",
        "protocol = \"https\"\nrequest_timeout = \"2s\"\nprobe = \"keep-tls\"",
    );
    toml += &basic_rule("tls", "tls", "tls", "https", "");
    toml += &pool("dead", &[dead]);
    toml += &pool("slow", &[slow.addr]);
    toml += &pool("empty", &[]);
    toml += "[[backend_pools]]\nname = \"dns\"\naddresses = [\"backend.invalid:8080\"]\n\n";
    toml += &settings("settings", "request_timeout = \"300ms\"\nprobe = \"keep\"");
    for name in ["dead", "slow", "empty", "dns"] {
        toml += &basic_rule(name, name, name, "settings", "");
    }
    let gw = wasmgate_tests::start_gateway(&toml).await;
    let addr = listener_addr(&gw, "dead");
    let internal = [
        "127.0.0.1".to_string(),
        dead.port().to_string(),
        slow.addr.port().to_string(),
        plain.addr.port().to_string(),
        "backend.invalid".to_string(),
        "8080".to_string(),
    ];
    for name in ["dead", "slow", "empty", "dns", "tls"] {
        let reply = get(addr, &format!("{name}.example"), "/").await;
        assert!(
            reply.status.is_server_error(),
            "{name}: {} {}",
            reply.status,
            reply.text()
        );
        let mut shown = reply.text();
        for (header, value) in &reply.headers {
            shown += &format!("\n{header}: {}", value.to_str().unwrap_or_default());
        }
        for secret in &internal {
            assert!(
                !shown.contains(secret.as_str()),
                "{name}: the client sees {secret:?}:\n{shown}"
            );
        }
    }
    gw.shutdown().await;
}

#[test]
fn invalid_custom_error_pages_are_refused_naming_the_field() {
    let pages = Pages::new(&[
        ("page.html", "<p>sorry</p>"),
        ("page.bin", "sorry"),
        ("huge.html", &"x".repeat(1024 * 1024 + 1)),
    ]);
    let cases: Vec<(&str, String, String)> = vec![
        (
            "a status the gateway does not generate",
            page("custom_error_pages", 200, &pages.path("page.html")),
            "custom_error_pages[0].status: 200 is not a status the gateway generates; use one of 400, 403, 404, 408, 413, 414, 421, 431, 500, 502, 503, 504".into(),
        ),
        (
            "a status given twice",
            page("custom_error_pages", 502, &pages.path("page.html"))
                + &page("custom_error_pages", 502, &pages.path("page.html")),
            "custom_error_pages[1].status: 502 already has a page (custom_error_pages[0])".into(),
        ),
        (
            "a missing file",
            page("custom_error_pages", 502, "\"missing.html\""),
            "custom_error_pages[0].file: cannot read \"missing.html\": No such file or directory (os error 2)".into(),
        ),
        (
            "a page over 1 MB",
            page("custom_error_pages", 502, &pages.path("huge.html")),
            format!(
                "custom_error_pages[0].file: {} is 1048577 bytes; a custom error page holds at most 1048576",
                pages.path("huge.html")
            ),
        ),
        (
            "an extension without a content type",
            page("custom_error_pages", 502, &pages.path("page.bin")),
            format!(
                "custom_error_pages[0].content_type: the content type of {} is not known from its extension (.html, .htm, .txt, .json); set content_type",
                pages.path("page.bin")
            ),
        ),
        (
            "a content type that is no header value",
            page("custom_error_pages", 502, &pages.path("page.html"))
                + "content_type = \"text/html\\n\"\n",
            "custom_error_pages[0].content_type: \"text/html\\n\" is not a valid header value"
                .into(),
        ),
        (
            "a listener's page",
            "[[listeners]]\nname = \"web\"\nport = 80\n".to_string()
                + &page("listeners.custom_error_pages", 302, &pages.path("page.html")),
            "listeners[0].custom_error_pages[0].status: 302 is not a status the gateway generates; use one of 400, 403, 404, 408, 413, 414, 421, 431, 500, 502, 503, 504".into(),
        ),
    ];
    for (what, toml, expected) in cases {
        let err = wasmgate::config::Config::from_toml(&toml)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted\n{toml}"));
        assert_eq!(err.to_string(), expected, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_request_head_gets_the_408_page() {
    let pages = Pages::new(&[("408.html", "<p>too slow</p>")]);
    let b = HttpBackend::start("app").await;
    let mut toml = single_route(&[b.addr], "");
    toml += &page("custom_error_pages", 408, &pages.path("408.html"));
    toml += "[limits]\nclient_idle_timeout = \"300ms\"\n";
    let gw = start_gateway(&toml).await;
    let mut stream = within("connect", TcpStream::connect(listener_addr(&gw, "web")))
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x.test\r\nX-Partial: ")
        .await
        .expect("write a partial head");
    let (closed, got) = read_until_closed(&mut stream, WAIT).await;
    assert!(closed, "the stalled connection is closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(
        text.contains("content-type: text/html; charset=utf-8\r\n"),
        "{text:?}"
    );
    assert!(text.ends_with("\r\n\r\n<p>too slow</p>"), "{text:?}");
    gw.shutdown().await;
}
