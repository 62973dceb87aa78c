//! HTTP/1.1 request smuggling and malformed requests (RFC 9112 §6.3, §11.2), one test per vector,
//! as raw bytes over TCP to a real gateway in front of a backend that records every request
//! exactly as it arrives.
//!
//! A refused request gets 400 and the connection is closed, and the backend receives nothing.
//! Each test says who refuses it: hyper's HTTP/1.1 parser (httparse underneath), which answers
//! 400 and closes before the gateway sees a request, or the gateway's own request checks
//! (`proxy` phase 1). A few framings are resolved by hyper without an error, and the gateway never
//! sees the ambiguity (hyper has already removed it); those tests say so and check instead that
//! the backend receives exactly one unambiguous message and no smuggled second one.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wasmgate_tests::client::{RawResponse, read_response, read_until_closed};
use wasmgate_tests::config::single_route;
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
