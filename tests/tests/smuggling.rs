//! HTTP/1.1 request smuggling and malformed requests (RFC 9112 §6.3, §11.2), one test per vector,
//! as raw bytes over TCP to a real gateway in front of a backend that records every request
//! exactly as it arrives; then malformed HTTP/2 requests (RFC 9113 §8), sent frame by frame over
//! TLS by a raw client, which the gateway forwards as HTTP/1.1 when they are well formed.
//!
//! A refused request gets 400 and the connection is closed, and the backend receives nothing.
//! Each test says who refuses it: hyper's HTTP/1.1 parser (httparse underneath), which answers
//! 400 and closes before the gateway sees a request, or the gateway's own request checks
//! (`proxy` phase 1). A few framings are resolved by hyper without an error, and the gateway never
//! sees the ambiguity (hyper has already removed it); those tests say so and check instead that
//! the backend receives exactly one unambiguous message and no smuggled second one.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmgate_tests::client::{RawResponse, read_response, read_until_closed};
use wasmgate_tests::config::single_route;
use wasmgate_tests::h2::{Field, Outcome, PROTOCOL_ERROR, RawH2};
use wasmgate_tests::tls::{Pki, client_config, toml_path};
use wasmgate_tests::*;

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-backend: raw\r\n\r\nok";

/// How long a connection may stay open after a refusal before the test calls it left open.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// A gateway in front of a [`RawBackend`] that records what it receives.
async fn gateway() -> (wasmgate::Gateway, RawBackend) {
    let b = RawBackend::start(OK).await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    (gw, b)
}

/// Sends `request` on a fresh connection; returns the first response (if any), whether the
/// gateway then closed the connection within [`CLOSE_WAIT`], and what followed the response.
async fn exchange(gw: &wasmgate::Gateway, request: &[u8]) -> (RawResponse, bool, String) {
    let addr = listener_addr(gw, "web");
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect to the gateway");
    // The gateway may answer and close before reading everything.
    let _ = within("write the request", stream.write_all(request)).await;
    let res = read_response(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(request)));
    let (closed, rest) = read_until_closed(&mut stream, CLOSE_WAIT).await;
    (res, closed, String::from_utf8_lossy(&rest).into_owned())
}

/// Asserts that `request` is answered 400, the connection is closed, and the backend received
/// nothing.
async fn assert_refused(gw: &wasmgate::Gateway, b: &RawBackend, request: &[u8], vector: &str) {
    let before = b.requests().len();
    let (res, closed, rest) = exchange(gw, request).await;
    assert_eq!(
        res.status,
        400,
        "{vector}: expected 400, got:\n{}\n{}",
        res.head,
        res.text()
    );
    assert!(
        closed,
        "{vector}: the connection must be closed after the 400 (its framing cannot be trusted)"
    );
    assert!(
        rest.is_empty(),
        "{vector}: nothing may follow the 400, got {rest:?}"
    );
    let after = b.requests();
    assert_eq!(
        after.len(),
        before,
        "{vector}: a refused request must not reach the backend; it received {:?}",
        &after[before..]
    );
}

/// Transfer-Encoding with Content-Length, in both orders, with the classic CL.TE payload: the
/// body by Content-Length would swallow a second request that the chunked framing exposes.
///
/// Refused by: neither. hyper applies RFC 9112 §6.3 ¶3 itself: Transfer-Encoding wins, the
/// Content-Length field is removed before the gateway sees the request, and the connection is
/// closed after the response, so the trailing bytes are never read as a request. The gateway
/// forwards one chunked message with an empty body; the backend never sees a Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_length_with_transfer_encoding_is_forwarded_unambiguously() {
    let (gw, b) = gateway().await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x.test\r\n\r\n";
    for (order, fields) in [
        (
            "CL then TE",
            "Content-Length: 45\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE then CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 45\r\n",
        ),
    ] {
        let before = b.requests().len();
        let request =
            format!("POST /cl-te HTTP/1.1\r\nHost: x.test\r\n{fields}\r\n0\r\n\r\n{smuggled}");
        let (res, closed, rest) = exchange(&gw, request.as_bytes()).await;
        assert_eq!(res.status, 200, "{order}: {}", res.head);
        assert!(
            closed,
            "{order}: after a message carrying both framings the connection is closed"
        );
        assert!(
            rest.is_empty(),
            "{order}: the bytes after the chunked body must not be answered as a request, got {rest:?}"
        );
        let seen = b.requests();
        let seen = &seen[before..];
        assert_eq!(
            seen.len(),
            1,
            "{order}: the backend receives exactly one request, got {seen:?}"
        );
        let head = seen[0].to_ascii_lowercase();
        assert!(
            head.starts_with("post /cl-te ")
                && !head.contains("content-length:")
                && head.contains("transfer-encoding: chunked\r\n")
                && head.ends_with("\r\n\r\n0\r\n\r\n"),
            "{order}: the backend gets one chunked message with an empty body and no Content-Length, got {:?}",
            seen[0]
        );
        assert!(
            !seen[0].contains("/smuggled"),
            "{order}: the smuggled request must not reach the backend"
        );
    }
    gw.shutdown().await;
}

/// Two Content-Length fields with different values, and one field listing different values.
///
/// Refused by: hyper (RFC 9112 §6.3 ¶5: an invalid Content-Length is unrecoverable).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_different_content_lengths_are_refused() {
    let (gw, b) = gateway().await;
    for fields in [
        "Content-Length: 3\r\nContent-Length: 5\r\n",
        "Content-Length: 3, 5\r\n",
    ] {
        let request = format!("POST / HTTP/1.1\r\nHost: x.test\r\n{fields}\r\nabcde");
        assert_refused(&gw, &b, request.as_bytes(), &format!("{fields:?}")).await;
    }
    gw.shutdown().await;
}

/// Content-Length values that are not a plain run of digits: a sign, a hexadecimal or empty
/// value, or one too large for any length.
///
/// Refused by: hyper (RFC 9110 §8.6: `Content-Length = 1*DIGIT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_content_length_is_refused() {
    let (gw, b) = gateway().await;
    for value in ["+5", "-1", "0x5", "", "5 5", "99999999999999999999999"] {
        let request =
            format!("POST / HTTP/1.1\r\nHost: x.test\r\nContent-Length: {value}\r\n\r\nabcde");
        assert_refused(
            &gw,
            &b,
            request.as_bytes(),
            &format!("Content-Length: {value:?}"),
        )
        .await;
    }
    gw.shutdown().await;
}

/// Two Content-Length fields with the same value.
///
/// Refused by: neither. RFC 9112 §6.3 ¶5 lets a recipient replace identical values with one,
/// which hyper does before the gateway sees the request; the backend receives one
/// Content-Length and the exact body, so no reader can frame it differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_content_lengths_are_forwarded_as_one() {
    let (gw, b) = gateway().await;
    let (res, _, _) = exchange(
        &gw,
        b"POST /same HTTP/1.1\r\nHost: x.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.head);
    let seen = b.requests();
    assert_eq!(seen.len(), 1, "one request reaches the backend: {seen:?}");
    let head = seen[0].to_ascii_lowercase();
    assert_eq!(
        head.matches("content-length:").count(),
        1,
        "the backend gets a single Content-Length: {:?}",
        seen[0]
    );
    assert!(
        head.contains("content-length: 5\r\n") && seen[0].ends_with("\r\n\r\nabcde"),
        "the backend gets the exact 5-byte body: {:?}",
        seen[0]
    );
    gw.shutdown().await;
}

/// `chunked` not the final transfer coding, or absent: the length cannot be determined.
///
/// Refused by: hyper (RFC 9112 §6.3 ¶4: a request whose final coding is not chunked is 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunked_not_last_is_refused() {
    let (gw, b) = gateway().await;
    for fields in [
        "Transfer-Encoding: chunked, gzip\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunkedx\r\n",
    ] {
        let request =
            format!("POST / HTTP/1.1\r\nHost: x.test\r\n{fields}\r\n5\r\nabcde\r\n0\r\n\r\n");
        assert_refused(&gw, &b, request.as_bytes(), &format!("{fields:?}")).await;
    }
    gw.shutdown().await;
}

/// Transfer codings other than one `chunked`: `chunked` applied twice, or another coding before
/// it. hyper accepts both (the final coding is chunked) and would hand the gateway a body that
/// is still gzip-coded while the Transfer-Encoding field, being hop-by-hop, is dropped.
///
/// Refused by: the gateway (RFC 9112 §7: chunked is never applied more than once; the gateway
/// forwards no transfer coding but chunked, so it cannot pass the others on).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_codings_other_than_one_chunked_are_refused() {
    let (gw, b) = gateway().await;
    for fields in [
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
    ] {
        let request =
            format!("POST / HTTP/1.1\r\nHost: x.test\r\n{fields}\r\n5\r\nabcde\r\n0\r\n\r\n");
        assert_refused(&gw, &b, request.as_bytes(), &format!("{fields:?}")).await;
    }
    // The ordinary case still passes, in any letter case.
    let (res, _, _) = exchange(
        &gw,
        b"POST /chunked HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(
        res.status, 200,
        "a plain chunked body is forwarded: {}",
        res.head
    );
    let seen = b.requests();
    assert!(
        seen.last()
            .is_some_and(|r| r.ends_with("\r\n\r\n5\r\nabcde\r\n0\r\n\r\n")),
        "the backend gets the chunked body: {seen:?}"
    );
    gw.shutdown().await;
}

/// A header line folded onto the next one (obs-fold, RFC 9112 §5.2).
///
/// Refused by: hyper (httparse rejects obs-fold in requests; §5.2 allows a server to answer 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn obs_fold_is_refused() {
    let (gw, b) = gateway().await;
    for fold in ["X-Folded: a\r\n b\r\n", "X-Folded: a\r\n\tb\r\n"] {
        let request = format!("GET / HTTP/1.1\r\nHost: x.test\r\n{fold}\r\n");
        assert_refused(&gw, &b, request.as_bytes(), &format!("obs-fold {fold:?}")).await;
    }
    // A fold that would hide Transfer-Encoding from one parser and not another.
    assert_refused(
        &gw,
        &b,
        b"POST / HTTP/1.1\r\nHost: x.test\r\nX-A: b\r\n Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        "obs-fold hiding Transfer-Encoding",
    )
    .await;
    gw.shutdown().await;
}

/// Whitespace between a field name and its colon.
///
/// Refused by: hyper (RFC 9112 §5.1: a server MUST reject such a request with 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whitespace_before_colon_is_refused() {
    let (gw, b) = gateway().await;
    for line in [
        "Transfer-Encoding : chunked",
        "Content-Length\t: 3",
        "Host : y.test",
    ] {
        let request = format!("POST / HTTP/1.1\r\nHost: x.test\r\n{line}\r\n\r\nabc");
        assert_refused(&gw, &b, request.as_bytes(), &format!("{line:?}")).await;
    }
    gw.shutdown().await;
}

/// Chunk sizes that are not hexadecimal, overflow, or are missing.
///
/// Refused by: hyper's chunked decoder — but only when the body is read, after the gateway
/// has forwarded the head. The gateway then aborts the backend connection mid-body (the
/// backend never receives a complete request: its chunked body has no last chunk) and answers
/// the client 400 instead of a 502, closing the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_chunk_sizes_are_refused() {
    let (gw, b) = gateway().await;
    for body in [
        "zz\r\nabcde\r\n0\r\n\r\n",
        "-5\r\nabcde\r\n0\r\n\r\n",
        "fffffffffffffffffffff\r\nabcde\r\n0\r\n\r\n",
        "\r\nabcde\r\n0\r\n\r\n",
        "5 5\r\nabcde\r\n0\r\n\r\n",
    ] {
        let before = b.requests().len();
        let request = format!(
            "POST /chunks HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let (res, closed, rest) = exchange(&gw, request.as_bytes()).await;
        assert_eq!(
            res.status,
            400,
            "chunked body {body:?}: expected 400, got:\n{}\n{}",
            res.head,
            res.text()
        );
        assert!(closed, "chunked body {body:?}: the connection is closed");
        assert!(
            rest.is_empty(),
            "chunked body {body:?}: nothing follows, got {rest:?}"
        );
        // The raw backend records a request only once its body is complete.
        let seen = b.requests();
        assert_eq!(
            seen.len(),
            before,
            "chunked body {body:?}: the backend must not receive a complete request: {:?}",
            &seen[before..]
        );
    }
    gw.shutdown().await;
}

/// NUL, a bare CR, and other control characters in a header value (RFC 9110 §5.5: field
/// values never contain CR, LF or NUL; RFC 9112 §2.2: a bare CR is rejected or replaced).
///
/// Refused by: hyper (httparse accepts only HTAB, SP, visible ASCII and obs-text in values).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nul_and_bare_cr_in_header_values_are_refused() {
    let (gw, b) = gateway().await;
    for value in [
        "a\0b",
        "a\rb",
        "a\rTransfer-Encoding: chunked",
        "a\x0bb",
        "a\x7fb",
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: x.test\r\nX-Value: {value}\r\n\r\n");
        assert_refused(
            &gw,
            &b,
            request.as_bytes(),
            &format!("header value {value:?}"),
        )
        .await;
    }
    assert_refused(
        &gw,
        &b,
        b"GET / HTTP/1.1\r\nHost: x.te\0st\r\n\r\n",
        "NUL in Host",
    )
    .await;
    gw.shutdown().await;
}

/// A bare LF inside what looks like a header value.
///
/// Refused by: neither. RFC 9112 §2.2 lets a recipient read a bare LF as a line terminator,
/// and hyper does: `X-A: a<LF>X-B: b` is two fields. The gateway writes every field it forwards
/// with CRLF, so the backend receives two well-formed fields, never the bare LF; no reader
/// downstream can split them differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bare_lf_in_a_header_value_ends_the_line() {
    let (gw, b) = gateway().await;
    let (res, _, _) = exchange(
        &gw,
        b"GET /lf HTTP/1.1\r\nHost: x.test\r\nX-A: a\nX-B: b\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.head);
    let seen = b.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = seen[0].to_ascii_lowercase();
    assert!(
        head.contains("\r\nx-a: a\r\n") && head.contains("\r\nx-b: b\r\n"),
        "the backend gets two CRLF-terminated fields: {:?}",
        seen[0]
    );
    assert!(
        !seen[0].replace("\r\n", "").contains('\n'),
        "no bare LF reaches the backend: {:?}",
        seen[0]
    );
    gw.shutdown().await;
}

/// Absolute-form targets (RFC 9112 §3.2.2). An `http`/`https` target whose authority matches
/// Host is served; userinfo in the authority (RFC 9110 §4.2.4: "treat its presence as an
/// error"), a scheme the gateway does not serve, or an empty authority is refused.
///
/// Refused by: the gateway (hyper parses all of these as valid URIs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absolute_form_targets() {
    let (gw, b) = gateway().await;
    for (target, host) in [
        ("http://user@x.test/", "user@x.test"),
        ("http://user:pw@x.test/", "x.test"),
        ("ftp://x.test/", "x.test"),
        ("ws://x.test/", "x.test"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_refused(
            &gw,
            &b,
            request.as_bytes(),
            &format!("absolute-form target {target:?}"),
        )
        .await;
    }
    let (res, _, _) = exchange(
        &gw,
        b"GET http://X.test/abs?q=1 HTTP/1.1\r\nHost: x.test\r\n\r\n",
    )
    .await;
    assert_eq!(
        res.status, 200,
        "a matching absolute-form target is served: {}",
        res.head
    );
    let seen = b.requests();
    let head = seen.last().expect("the backend got the request");
    assert!(
        head.starts_with("GET /abs?q=1 HTTP/1.1\r\n"),
        "the backend receives origin form (RFC 9112 §3.2.1): {head:?}"
    );
    gw.shutdown().await;
}

/// Two Host fields, or one Host field carrying a list.
///
/// Refused by: the gateway (RFC 9112 §3.2: a server MUST answer 400 to more than one Host;
/// hyper keeps both fields).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_host_is_refused() {
    let (gw, b) = gateway().await;
    for fields in [
        "Host: x.test\r\nHost: y.test\r\n",
        "Host: x.test\r\nHost: x.test\r\n",
        "Host: x.test, y.test\r\n",
        "Host: x.test,y.test\r\n",
        "Host: \r\n",
    ] {
        let request = format!("GET / HTTP/1.1\r\n{fields}\r\n");
        assert_refused(&gw, &b, request.as_bytes(), &format!("{fields:?}")).await;
    }
    gw.shutdown().await;
}

/// An absolute-form target whose authority differs from Host. RFC 9112 §3.2.2 says to ignore
/// Host; a gateway that routed by one and forwarded the other would let the two disagree, so
/// the request is refused instead.
///
/// Refused by: the gateway (hyper accepts it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_differing_from_absolute_target_is_refused() {
    let (gw, b) = gateway().await;
    for (target, host) in [
        ("http://x.test/", "y.test"),
        ("http://x.test:8080/", "x.test:9090"),
        ("http://x.test/", "x.test.evil"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_refused(
            &gw,
            &b,
            request.as_bytes(),
            &format!("target {target:?} with Host {host:?}"),
        )
        .await;
    }
    // The same authority, in another letter case or with the scheme's default port, agrees.
    for (target, host) in [
        ("http://X.TEST/", "x.test"),
        ("http://x.test:80/", "x.test"),
        ("http://x.test/", "x.test:80"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let (res, _, _) = exchange(&gw, request.as_bytes()).await;
        assert_eq!(
            res.status, 200,
            "target {target:?} with Host {host:?} name the same authority: {}",
            res.head
        );
    }
    gw.shutdown().await;
}

/// Malformed request lines: a request line with a bare LF inside, a space in the target, a
/// missing or unknown version, and a line that is not a request at all.
///
/// Refused by: hyper (RFC 9112 §3: `method SP request-target SP HTTP-version`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_request_lines_are_refused() {
    let (gw, b) = gateway().await;
    for line in [
        "GET /a b HTTP/1.1",
        "GET / HTTP/1.1 extra",
        "GET /",
        "GET / HTTP/2.0",
        "GET / HTTP/1.1\rX: y",
        "G\0T / HTTP/1.1",
        "\x16\x03\x01\x00",
    ] {
        let request = format!("{line}\r\nHost: x.test\r\n\r\n");
        assert_refused(
            &gw,
            &b,
            request.as_bytes(),
            &format!("request line {line:?}"),
        )
        .await;
    }
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 (RFC 9113 §8): the gateway terminates HTTP/2 and forwards HTTP/1.1, where a malformed
// HTTP/2 request could turn into a different HTTP/1.1 one. A raw client (`wasmgate_tests::h2`)
// sends what ordinary clients refuse to; every malformed request must end in a stream error
// (RST_STREAM PROTOCOL_ERROR), a connection error (GOAWAY PROTOCOL_ERROR, where h2's HPACK decoder
// refuses a field outright) or a 400, and the backend must receive nothing.
// ---------------------------------------------------------------------------------------------

/// A gateway with an HTTPS listener (`x.test`, ALPN h2) in front of `backend`, and a client
/// configuration that trusts it.
struct H2Gateway {
    gw: wasmgate::Gateway,
    client: Arc<rustls::ClientConfig>,
    _pki: Pki,
}

impl H2Gateway {
    async fn start(backend: std::net::SocketAddr) -> H2Gateway {
        let pki = Pki::new("h2 smuggling");
        let leaf = pki.issue(&["x.test"]);
        let (cert, key) = pki.write_leaf("x", &leaf);
        let mut toml = format!(
            "[[listeners]]\nname = \"web\"\nprotocol = \"https\"\nport = 0\nbind_address = \"127.0.0.1\"\nhost_names = []\ncertificate = {}\ncertificate_key = {}\n\n",
            toml_path(&cert),
            toml_path(&key)
        );
        toml += &wasmgate_tests::config::pool("pool", &[backend]);
        toml += &wasmgate_tests::config::settings("settings", "");
        toml += &wasmgate_tests::config::basic_rule("rule", "web", "pool", "settings", "");
        let gw = start_gateway(&toml).await;
        let client = client_config(&[pki.ca_der()], &["h2"]);
        H2Gateway {
            gw,
            client,
            _pki: pki,
        }
    }

    async fn connect(&self) -> RawH2 {
        RawH2::connect(
            listener_addr(&self.gw, "web"),
            "x.test",
            self.client.clone(),
        )
        .await
    }
}

/// The pseudo-header fields of a valid GET, then `extra`.
fn get_fields<'a>(extra: &[Field<'a>]) -> Vec<Field<'a>> {
    let mut fields: Vec<Field<'a>> = vec![
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "x.test"),
        (":path", "/"),
    ];
    fields.extend_from_slice(extra);
    fields
}

/// One malformed request: its header block, and what follows it on the stream.
struct Malformed<'a> {
    what: &'a str,
    fields: Vec<Field<'a>>,
    /// DATA frames after HEADERS; the last ends the stream. None: HEADERS ends it.
    data: Option<Vec<&'a str>>,
    /// A trailer section that ends the stream, after `data`.
    trailers: Option<Vec<Field<'a>>>,
}

impl<'a> Malformed<'a> {
    fn head(what: &'a str, fields: Vec<Field<'a>>) -> Self {
        Malformed {
            what,
            fields,
            data: None,
            trailers: None,
        }
    }
}

/// Sends `m` on stream 1 of a fresh connection; asserts a refusal and that the backend received
/// nothing.
async fn assert_h2_refused(g: &H2Gateway, b: &RawBackend, m: &Malformed<'_>) {
    let before = b.requests().len();
    let mut c = g.connect().await;
    let open = m.data.is_some() || m.trailers.is_some();
    c.headers(1, &m.fields, !open).await;
    if let Some(frames) = &m.data {
        for (i, d) in frames.iter().enumerate() {
            let last = i + 1 == frames.len() && m.trailers.is_none();
            c.data(1, d.as_bytes(), last).await;
        }
    }
    if let Some(t) = &m.trailers {
        c.headers(1, t, true).await;
    }
    let outcome = c.outcome(1).await;
    assert!(
        outcome.is_refusal(),
        "{}: expected RST_STREAM or GOAWAY with PROTOCOL_ERROR, or 400; got {outcome:?}",
        m.what
    );
    let after = b.requests();
    assert_eq!(
        after.len(),
        before,
        "{}: a refused request must not reach the backend; it received {:?}",
        m.what,
        &after[before..]
    );
}

/// Sends a valid request on stream 1 of a fresh connection and returns what the backend got.
async fn h2_served(g: &H2Gateway, b: &RawBackend, fields: &[Field<'_>], data: &[&str]) -> String {
    let before = b.requests().len();
    let mut c = g.connect().await;
    c.headers(1, fields, data.is_empty()).await;
    for (i, d) in data.iter().enumerate() {
        c.data(1, d.as_bytes(), i + 1 == data.len()).await;
    }
    let outcome = c.outcome(1).await;
    assert_eq!(outcome, Outcome::Response(Some(200)), "{fields:?}");
    let seen = b.requests();
    assert_eq!(
        seen.len(),
        before + 1,
        "one request reaches the backend: {seen:?}"
    );
    seen[before].clone()
}

/// RFC 9113 §8.2 and §8.3, each rule broken once: uppercase field names, connection-specific
/// fields, pseudo-header fields after regular ones, duplicated, missing, unknown or response-only
/// pseudo-header fields, CR, LF or NUL in names and values, an `:authority` with userinfo, a Host
/// that disagrees with `:authority`, and bodies shorter than their content-length.
///
/// Refused by: h2 for most (RST_STREAM, or GOAWAY where its HPACK decoder refuses a name or
/// value outright), the gateway's request checks for the authority rules (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_malformed_requests_are_refused() {
    let b = RawBackend::start(OK).await;
    let g = H2Gateway::start(b.addr).await;
    let grid = vec![
        Malformed::head("uppercase field name", get_fields(&[("X-Upper", "a")])),
        Malformed::head("connection", get_fields(&[("connection", "keep-alive")])),
        Malformed::head("keep-alive", get_fields(&[("keep-alive", "5")])),
        Malformed::head("proxy-connection", get_fields(&[("proxy-connection", "x")])),
        Malformed::head("upgrade", get_fields(&[("upgrade", "websocket")])),
        Malformed::head(
            "transfer-encoding",
            get_fields(&[("transfer-encoding", "chunked")]),
        ),
        Malformed::head("te other than trailers", get_fields(&[("te", "gzip")])),
        Malformed::head(
            "pseudo-header after a regular field",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                ("x-a", "b"),
                (":authority", "x.test"),
                (":path", "/"),
            ],
        ),
        Malformed::head(
            "duplicate :path",
            get_fields(&[])
                .into_iter()
                .chain([(":path", "/other")])
                .collect(),
        ),
        Malformed::head(
            "duplicate :method",
            vec![
                (":method", "GET"),
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "x.test"),
                (":path", "/"),
            ],
        ),
        Malformed::head(
            "missing :method",
            vec![
                (":scheme", "https"),
                (":authority", "x.test"),
                (":path", "/"),
            ],
        ),
        Malformed::head(
            "missing :path",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "x.test"),
            ],
        ),
        Malformed::head(
            "missing :scheme",
            vec![(":method", "GET"), (":authority", "x.test"), (":path", "/")],
        ),
        Malformed::head(
            "unknown pseudo-header",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "x.test"),
                (":path", "/"),
                (":smuggled", "x"),
            ],
        ),
        Malformed::head(
            ":status in a request",
            vec![
                (":status", "200"),
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "x.test"),
                (":path", "/"),
            ],
        ),
        Malformed::head(
            "empty :path",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "x.test"),
                (":path", ""),
            ],
        ),
        Malformed::head("CR in a value", get_fields(&[("x-a", "a\rb")])),
        Malformed::head("LF in a value", get_fields(&[("x-a", "a\nx-b: c")])),
        Malformed::head("NUL in a value", get_fields(&[("x-a", "a\0b")])),
        Malformed::head("CR in a name", get_fields(&[("x-a\r", "b")])),
        Malformed::head("LF in a name", get_fields(&[("x-a\nx-b", "c")])),
        Malformed::head("NUL in a name", get_fields(&[("x\0a", "b")])),
        Malformed::head("colon in a name", get_fields(&[("x:a", "b")])),
        Malformed::head(
            ":authority with userinfo",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "user@x.test"),
                (":path", "/"),
            ],
        ),
        Malformed::head(
            "Host differing from :authority",
            get_fields(&[("host", "y.test")]),
        ),
        Malformed::head(
            "two Host fields",
            get_fields(&[("host", "x.test"), ("host", "y.test")]),
        ),
        Malformed {
            what: "DATA shorter than content-length",
            fields: vec![
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "x.test"),
                (":path", "/"),
                ("content-length", "10"),
            ],
            data: Some(vec!["abc"]),
            trailers: None,
        },
        Malformed {
            what: "two different content-lengths",
            fields: vec![
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "x.test"),
                (":path", "/"),
                ("content-length", "3"),
                ("content-length", "5"),
            ],
            data: Some(vec!["abc"]),
            trailers: None,
        },
    ];
    for m in &grid {
        assert_h2_refused(&g, &b, m).await;
    }
    // The same connection-specific names are fine as long as nothing else is wrong: `te:
    // trailers` is the one TE value allowed.
    h2_served(&g, &b, &get_fields(&[("te", "trailers")]), &[]).await;
    g.gw.shutdown().await;
}

/// `:path = "*"` is the asterisk form, for OPTIONS alone (RFC 9113 §8.3.1, RFC 9112 §3.2.4): with
/// GET it would reach the backend as `GET * HTTP/1.1`. `OPTIONS *` keeps working, in both
/// versions.
///
/// Refused by: the gateway's request checks (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asterisk_path_is_for_options_only() {
    let b = RawBackend::start(OK).await;
    let g = H2Gateway::start(b.addr).await;
    for method in ["GET", "POST", "HEAD", "DELETE"] {
        let what = format!("{method} *");
        let m = Malformed::head(
            &what,
            vec![
                (":method", method),
                (":scheme", "https"),
                (":authority", "x.test"),
                (":path", "*"),
            ],
        );
        assert_h2_refused(&g, &b, &m).await;
    }
    let seen = h2_served(
        &g,
        &b,
        &[
            (":method", "OPTIONS"),
            (":scheme", "https"),
            (":authority", "x.test"),
            (":path", "*"),
        ],
        &[],
    )
    .await;
    assert!(
        seen.starts_with("OPTIONS * HTTP/1.1\r\n"),
        "OPTIONS * reaches the backend in asterisk form: {seen:?}"
    );
    g.gw.shutdown().await;

    // HTTP/1.1 alike.
    let (gw, b) = gateway().await;
    assert_refused(
        &gw,
        &b,
        b"GET * HTTP/1.1\r\nHost: x.test\r\n\r\n",
        "GET * in HTTP/1.1",
    )
    .await;
    let (res, _, _) = exchange(&gw, b"OPTIONS * HTTP/1.1\r\nHost: x.test\r\n\r\n").await;
    assert_eq!(res.status, 200, "OPTIONS * in HTTP/1.1: {}", res.head);
    gw.shutdown().await;
}

/// Pseudo-header fields in trailers (RFC 9113 §8.1: trailers MUST NOT include them; the message
/// is malformed). They used to be dropped and the request served.
///
/// Refused by: h2 (RST_STREAM PROTOCOL_ERROR), as patched in vendor/h2; the upstream request is
/// aborted, never completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trailers_with_pseudo_header_fields_are_refused() {
    let b = RawBackend::start(OK).await;
    let g = H2Gateway::start(b.addr).await;
    let post = |cl: &'static str| {
        vec![
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "x.test"),
            (":path", "/trailers"),
            ("content-length", cl),
        ]
    };
    for (what, pseudo) in [
        (":path in trailers", (":path", "/smuggled")),
        (":method in trailers", (":method", "DELETE")),
        (":authority in trailers", (":authority", "y.test")),
        (":status in trailers", (":status", "200")),
    ] {
        let m = Malformed {
            what,
            fields: post("3"),
            data: Some(vec!["abc"]),
            trailers: Some(vec![pseudo, ("x-t", "1")]),
        };
        assert_h2_refused(&g, &b, &m).await;
        // Without a declared length the upstream body is chunked and its end is the trailers'.
        let m = Malformed {
            what,
            fields: post("3")[..4].to_vec(),
            data: Some(vec!["abc"]),
            trailers: Some(vec![pseudo]),
        };
        assert_h2_refused(&g, &b, &m).await;
    }
    // Trailers with regular fields only are a well-formed end of the stream.
    let mut c = g.connect().await;
    c.headers(1, &post("3"), false).await;
    c.data(1, b"abc", false).await;
    c.headers(1, &[("x-checksum", "1")], true).await;
    assert_eq!(c.outcome(1).await, Outcome::Response(Some(200)));
    g.gw.shutdown().await;
}

/// Field values with leading or trailing whitespace (RFC 9113 §8.2.1: a field value MUST NOT
/// start or end with SP or HTAB). HTTP/1.1's parser strips that whitespace; HTTP/2 delivered it
/// verbatim to the backend.
///
/// Refused by: the gateway's request checks (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_field_values_with_surrounding_whitespace_are_refused() {
    let b = RawBackend::start(OK).await;
    let g = H2Gateway::start(b.addr).await;
    for (what, name, value) in [
        ("leading SP", "x-a", " a"),
        ("trailing SP", "x-a", "a "),
        ("leading HTAB", "x-a", "\ta"),
        ("trailing HTAB", "x-a", "a\t"),
        ("only SP", "x-a", " "),
        ("padded content-length", "content-length", " 0"),
        ("padded cookie", "cookie", "a=b "),
    ] {
        let m = Malformed::head(what, get_fields(&[(name, value)]));
        assert_h2_refused(&g, &b, &m).await;
    }
    // Whitespace inside a value is fine.
    let seen = h2_served(&g, &b, &get_fields(&[("x-a", "a b\tc")]), &[]).await;
    assert!(seen.contains("\r\nx-a: a b\tc\r\n"), "{seen:?}");
    g.gw.shutdown().await;
}

/// What a [`CountingBackend`] has received of the one request it watches.
#[derive(Debug, Clone, Default)]
struct Received {
    head: String,
    /// Body bytes after the head, so far.
    body: usize,
    /// The gateway closed the connection.
    closed: bool,
}

/// A backend that answers health probes and, for any other request, never answers: it reports
/// how many body bytes arrived, and when the gateway closed the connection.
struct CountingBackend {
    addr: std::net::SocketAddr,
    received: tokio::sync::watch::Receiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingBackend {
    async fn start() -> CountingBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let (tx, received) = tokio::sync::watch::channel(Received::default());
        let tx = Arc::new(tx);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Bounded: probes are answered, at most 1000 per connection.
                    for _ in 0..1000 {
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                        buf.drain(..head_end);
                        if head
                            .to_ascii_lowercase()
                            .contains("user-agent: wasmgate-probe/")
                        {
                            if s.write_all(OK.as_bytes()).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let mut body = buf.len();
                        tx.send_replace(Received {
                            head: head.clone(),
                            body,
                            closed: false,
                        });
                        loop {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    body += n;
                                    tx.send_replace(Received {
                                        head: head.clone(),
                                        body,
                                        closed: false,
                                    });
                                }
                            }
                        }
                        tx.send_replace(Received {
                            head,
                            body,
                            closed: true,
                        });
                        return;
                    }
                });
            }
        });
        CountingBackend {
            addr,
            received,
            task,
        }
    }

    async fn wait_for(&mut self, what: &str, f: impl FnMut(&Received) -> bool) -> Received {
        within(what, self.received.wait_for(f))
            .await
            .expect("the backend runs")
            .clone()
    }
}

impl Drop for CountingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// DATA past the declared content-length (RFC 9113 §8.1.1: the request is malformed). The
/// upstream request is framed by that content-length, so the gateway holds its last byte back
/// until the client's stream ends: the extra DATA resets the stream and aborts the upstream
/// request, which the backend never receives whole (before, it had the whole request, and
/// answered it, before the extra DATA arrived).
///
/// Refused by: h2 (RST_STREAM PROTOCOL_ERROR) and the gateway's hold on the last byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_past_content_length_never_completes_the_upstream_request() {
    let mut b = CountingBackend::start().await;
    let g = H2Gateway::start(b.addr).await;
    let mut c = g.connect().await;
    c.headers(
        1,
        &[
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "x.test"),
            (":path", "/overflow"),
            ("content-length", "5"),
        ],
        false,
    )
    .await;
    c.data(1, b"abcde", false).await;
    // All but the last byte reach the backend while the client's stream is open.
    let seen = b
        .wait_for("the body's first four bytes at the backend", |r| {
            r.body >= 4
        })
        .await;
    assert!(
        seen.head.starts_with("POST /overflow HTTP/1.1\r\n"),
        "{seen:?}"
    );
    c.data(1, b"smuggled", true).await;
    let outcome = c.outcome(1).await;
    assert_eq!(
        outcome,
        Outcome::Reset(PROTOCOL_ERROR),
        "the client's stream is reset"
    );
    let end = b
        .wait_for("the gateway to abort the upstream request", |r| r.closed)
        .await;
    assert_eq!(
        end.body, 4,
        "the backend never gets the last declared byte, let alone the extra DATA: {end:?}"
    );
    g.gw.shutdown().await;
}

/// `content-length: 0` on a stream that stays open, then DATA: the upstream request would be
/// complete with its head alone, so the head waits for the client's stream to end, and the DATA
/// resets the stream instead.
///
/// Refused by: h2 (RST_STREAM PROTOCOL_ERROR) and the gateway's wait for the end of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_after_a_zero_content_length_is_refused_before_the_head_is_sent() {
    let b = RawBackend::start(OK).await;
    let g = H2Gateway::start(b.addr).await;
    let fields: Vec<Field<'_>> = vec![
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "x.test"),
        (":path", "/zero"),
        ("content-length", "0"),
    ];
    let mut c = g.connect().await;
    c.headers(1, &fields, false).await;
    // Another request on the same connection is served meanwhile: the first is not forwarded.
    c.headers(3, &get_fields(&[]), true).await;
    assert_eq!(c.outcome(3).await, Outcome::Response(Some(200)));
    c.data(1, b"smuggled", true).await;
    assert_eq!(c.outcome(1).await, Outcome::Reset(PROTOCOL_ERROR));
    let seen = b.requests();
    assert!(
        seen.iter().all(|r| !r.contains("/zero")),
        "the request with DATA after content-length: 0 must not reach the backend: {seen:?}"
    );
    g.gw.shutdown().await;
}

/// Well-formed bodies whose END_STREAM comes in a frame of its own pass through whole: the held
/// byte, or the held head, goes out once the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_bodies_ended_by_a_frame_of_their_own_are_forwarded() {
    let b = RawBackend::start(OK).await;
    let g = H2Gateway::start(b.addr).await;
    let post = |cl: &'static str| -> Vec<Field<'static>> {
        vec![
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "x.test"),
            (":path", "/body"),
            ("content-length", cl),
        ]
    };
    let seen = h2_served(&g, &b, &post("5"), &["abcde", ""]).await;
    assert!(seen.ends_with("\r\n\r\nabcde"), "{seen:?}");
    let seen = h2_served(&g, &b, &post("5"), &["ab", "cde"]).await;
    assert!(seen.ends_with("\r\n\r\nabcde"), "{seen:?}");
    let seen = h2_served(&g, &b, &post("1"), &["a", ""]).await;
    assert!(seen.ends_with("\r\n\r\na"), "{seen:?}");
    let seen = h2_served(&g, &b, &post("0"), &[""]).await;
    assert!(
        seen.to_ascii_lowercase().contains("content-length: 0\r\n"),
        "{seen:?}"
    );
    g.gw.shutdown().await;
}
