//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): a request that arrives with a
//! valid `traceparent` continues its trace with a span of the gateway's own; any other starts a
//! trace. The trace id is the access log's `transactionId` and the value of `X-AppGW-Trace-Id`.

use std::cell::RefCell;

use bytes::BytesMut;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A request's place in a trace: the ids as bytes, for the log and a span exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The caller's span, when the request continued a trace.
    pub parent_span_id: Option<[u8; 8]>,
    /// The gateway's span for this request.
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled), the caller's or 01 for a trace started here.
    pub flags: u8,
}

impl TraceContext {
    /// Continues the request's trace, or starts one when it has no valid `traceparent` (§4.3:
    /// a header that cannot be parsed restarts the trace). Returns whether it continued.
    pub fn from_request(headers: &HeaderMap) -> (Self, bool) {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let parsed = match (values.next(), values.next()) {
            (Some(v), None) => parse(v.as_bytes()),
            _ => None,
        };
        match parsed {
            Some((trace_id, parent, flags)) => (
                TraceContext {
                    trace_id,
                    parent_span_id: Some(parent),
                    span_id: new_span_id(),
                    flags,
                },
                true,
            ),
            None => (Self::start(), false),
        }
    }

    /// A new trace.
    pub fn start() -> Self {
        let mut trace_id = fastrand::u128(1..).to_be_bytes();
        // A random id, never all zero (§3.2.2.3).
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        TraceContext {
            trace_id,
            parent_span_id: None,
            span_id: new_span_id(),
            flags: 0x01,
        }
    }

    /// The trace id as 32 lowercase hex digits (`X-AppGW-Trace-Id`, `transactionId`).
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex(&self.trace_id, &mut out);
        out
    }

    pub fn trace_id_value(&self) -> HeaderValue {
        shared_value(&self.trace_id_hex())
    }

    /// `traceparent` for the backend: version 00, this trace, the gateway's span.
    pub fn traceparent(&self) -> HeaderValue {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex(&self.trace_id, &mut out[3..35]);
        hex(&self.span_id, &mut out[36..52]);
        hex(&[self.flags], &mut out[53..55]);
        shared_value(&out)
    }
}

/// Room for about 50 requests' trace header values; a chunk is freed when the last value
/// made in it is.
const CHUNK: usize = 4096;

thread_local! {
    /// The rest of this thread's current chunk.
    static CHUNK_LEFT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A header value of hex digits and dashes, copied into a slice of a chunk this thread shares
/// among many values: a request's trace headers then cost no allocation of their own, only a
/// reference count.
fn shared_value(text: &[u8]) -> HeaderValue {
    let bytes = CHUNK_LEFT.with(|left| {
        let mut left = left.borrow_mut();
        if left.capacity() < text.len() {
            *left = BytesMut::with_capacity(CHUNK);
        }
        left.extend_from_slice(text);
        left.split().freeze()
    });
    HeaderValue::from_maybe_shared(bytes).expect("hex digits are a valid header value")
}

fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex digits into `out` (twice as long).
pub fn hex(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

/// Lowercase hex digits only (§3.2.2: uppercase is invalid).
fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (digit(text[2 * i])? << 4) | digit(text[2 * i + 1])?;
    }
    Some(out)
}

/// `version-traceid-parentid-flags` (§3.2). Version ff is invalid; version 00 is exactly 55
/// characters; a later version may append fields after a dash, which are ignored.
fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if value.len() < 55 {
        return None;
    }
    let [version] = unhex::<1>(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = unhex::<16>(&value[3..35])?;
    let parent = unhex::<8>(&value[36..52])?;
    let [flags] = unhex::<1>(&value[53..55])?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&TRACEPARENT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let (t, continued) = TraceContext::from_request(&headers(&[VALID]));
        assert!(continued);
        assert_eq!(&t.trace_id_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span_id, Some(0x00f067aa0ba902b7u64.to_be_bytes()));
        assert_ne!(t.span_id, 0x00f067aa0ba902b7u64.to_be_bytes());
        let out = t.traceparent();
        let out = out.to_str().unwrap();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"), "{out}");
        assert_eq!(parse(out.as_bytes()).unwrap().1, t.span_id);
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let (t, continued) = TraceContext::from_request(&headers(&[bad]));
            assert!(!continued, "{bad:?}");
            assert_eq!(t.parent_span_id, None);
            assert_ne!(&t.trace_id_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        }
        let (_, continued) = TraceContext::from_request(&headers(&[VALID, VALID]));
        assert!(!continued, "two traceparent fields");
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(TraceContext::from_request(&headers(&[later])).1);
    }

    #[test]
    fn new_traces_differ() {
        let a = TraceContext::start();
        let b = TraceContext::start();
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.traceparent().len(), 55);
    }

    #[test]
    fn header_values_from_shared_chunks_stay_intact() {
        let traces: Vec<_> = (0..200).map(|_| TraceContext::start()).collect();
        let values: Vec<_> = traces
            .iter()
            .map(|t| (t.traceparent(), t.trace_id_value()))
            .collect();
        for (t, (parent, id)) in traces.iter().zip(&values) {
            assert_eq!(id.as_bytes(), &t.trace_id_hex());
            let (trace_id, span_id, flags) = parse(parent.as_bytes()).unwrap();
            assert_eq!((trace_id, span_id, flags), (t.trace_id, t.span_id, t.flags));
        }
    }
}
