//! The access log's request record and how it is written: JSON with Application Gateway's
//! field names, or one line of `key=value` fields. A record is written straight into the
//! worker's batch buffer ([`crate::telemetry::AccessLog::write`]): no string is made for a
//! field, numbers and addresses are written digit by digit, the time from a per-second cache.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use http::{Uri, Version};

use super::trace::{self, TraceContext};
use crate::config::BackendHost;
use crate::telemetry;

/// The TLS parameters of an HTTPS connection, for the access log.
#[derive(Debug, Clone, Copy)]
pub struct TlsFacts {
    pub protocol: &'static str,
    pub cipher: &'static str,
}

/// One request as the access log writes it: Application Gateway's fields, and the trace ids.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    pub client: SocketAddr,
    pub method: &'a str,
    pub uri: &'a Uri,
    pub version: Version,
    pub user_agent: Option<&'a str>,
    /// The Host header as the client sent it.
    pub host: Option<&'a str>,
    pub status: u16,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// From the request's arrival to its response's last byte.
    pub time_taken: Duration,
    /// Protocol version and cipher suite, on HTTPS.
    pub tls: Option<(&'static str, &'static str)>,
    /// The backend server that answered: its host and port.
    pub server: Option<(&'a BackendHost, u16)>,
    pub server_status: Option<u16>,
    /// From sending the request to the backend's response head.
    pub server_latency: Option<Duration>,
    pub trace: TraceContext,
    pub listener: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub pool: Option<&'a str>,
    pub settings: Option<&'a str>,
}

impl RequestRecord<'_> {
    /// Application Gateway's access-log record (v2 field names; times in seconds), one JSON
    /// object, at `now`.
    pub fn write_json(&self, now: SystemTime, out: &mut Vec<u8>) {
        let mut trace_id = [0u8; 32];
        trace::hex(&self.trace.trace_id, &mut trace_id);
        // HTTP/2 requests carry the host in :authority.
        let host = self.host.or(self.uri.host()).unwrap_or_default();
        out.extend_from_slice(b"{\"time\":\"");
        telemetry::write_rfc3339(now, out);
        out.extend_from_slice(b"\",\"operationName\":\"ApplicationGatewayAccess\",\"clientIP\":\"");
        push_ip(out, self.client.ip());
        out.extend_from_slice(b"\",\"clientPort\":");
        push_u64(out, self.client.port().into());
        out.extend_from_slice(b",\"httpMethod\":");
        push_json_str(out, self.method);
        out.extend_from_slice(b",\"requestUri\":");
        push_json_str(out, self.uri.path());
        out.extend_from_slice(b",\"originalRequestUriWithArgs\":");
        push_json_str(out, self.path_and_query());
        out.extend_from_slice(b",\"userAgent\":");
        push_json_str(out, self.user_agent.unwrap_or("-"));
        out.extend_from_slice(b",\"httpStatus\":");
        push_u64(out, self.status.into());
        out.extend_from_slice(b",\"httpVersion\":\"");
        out.extend_from_slice(version(self.version).as_bytes());
        out.extend_from_slice(b"\",\"receivedBytes\":");
        push_u64(out, self.received_bytes);
        out.extend_from_slice(b",\"sentBytes\":");
        push_u64(out, self.sent_bytes);
        out.extend_from_slice(b",\"timeTaken\":");
        push_seconds(out, self.time_taken, 6, true);
        out.extend_from_slice(b",\"sslEnabled\":\"");
        out.extend_from_slice(if self.tls.is_some() { b"on" } else { b"off" });
        out.extend_from_slice(b"\",\"sslCipher\":");
        push_json_str(out, self.tls.map_or("-", |t| t.1));
        out.extend_from_slice(b",\"sslProtocol\":");
        push_json_str(out, self.tls.map_or("-", |t| t.0));
        out.extend_from_slice(b",\"serverRouted\":\"");
        match self.server {
            Some((host, port)) => push_server(out, host, port),
            None => out.push(b'-'),
        }
        out.extend_from_slice(b"\",\"serverStatus\":\"");
        match self.server_status {
            Some(s) => push_u64(out, s.into()),
            None => out.push(b'-'),
        }
        out.extend_from_slice(b"\",\"serverResponseLatency\":\"");
        match self.server_latency {
            Some(d) => push_seconds(out, d, 3, false),
            None => out.push(b'-'),
        }
        out.extend_from_slice(b"\",\"host\":");
        push_json_str(out, host);
        out.extend_from_slice(b",\"originalHost\":");
        push_json_str(out, host);
        out.extend_from_slice(b",\"transactionId\":\"");
        out.extend_from_slice(&trace_id);
        out.extend_from_slice(b"\",\"listenerName\":");
        push_json_str(out, self.listener.unwrap_or_default());
        out.extend_from_slice(b",\"ruleName\":");
        push_json_str(out, self.rule.unwrap_or_default());
        out.extend_from_slice(b",\"backendPoolName\":");
        push_json_str(out, self.pool.unwrap_or_default());
        out.extend_from_slice(b",\"backendSettingName\":");
        push_json_str(out, self.settings.unwrap_or_default());
        out.extend_from_slice(b",\"traceId\":\"");
        out.extend_from_slice(&trace_id);
        out.extend_from_slice(b"\",\"spanId\":\"");
        push_hex8(out, &self.trace.span_id);
        out.extend_from_slice(b"\",\"parentSpanId\":\"");
        if let Some(parent) = &self.trace.parent_span_id {
            push_hex8(out, parent);
        }
        out.extend_from_slice(b"\"}");
    }

    /// One line of `key=value` fields, values with spaces or quotes quoted, at `now`.
    pub fn write_text(&self, now: SystemTime, out: &mut Vec<u8>) {
        let mut trace_id = [0u8; 32];
        trace::hex(&self.trace.trace_id, &mut trace_id);
        telemetry::write_rfc3339(now, out);
        out.extend_from_slice(b" access client=");
        push_socket(out, self.client);
        out.extend_from_slice(b" method=");
        out.extend_from_slice(self.method.as_bytes());
        out.extend_from_slice(b" uri=");
        push_quoted(out, self.path_and_query());
        out.extend_from_slice(b" status=");
        push_u64(out, self.status.into());
        out.extend_from_slice(b" time_taken=");
        push_seconds(out, self.time_taken, 6, false);
        out.extend_from_slice(b" received=");
        push_u64(out, self.received_bytes);
        out.extend_from_slice(b" sent=");
        push_u64(out, self.sent_bytes);
        out.extend_from_slice(b" trace_id=");
        out.extend_from_slice(&trace_id);
        let fields = [
            (&b" host="[..], self.host),
            (b" listener=", self.listener),
            (b" rule=", self.rule),
            (b" pool=", self.pool),
            (b" settings=", self.settings),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                out.extend_from_slice(name);
                push_quoted(out, v);
            }
        }
        if let Some((host, port)) = self.server {
            // Addresses and DNS names (letters, digits, '-', '.') never need quotes.
            out.extend_from_slice(b" server=");
            push_server(out, host, port);
        }
        if let Some(s) = self.server_status {
            out.extend_from_slice(b" server_status=");
            push_u64(out, s.into());
        }
    }

    fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }
}

/// `v` as is, or as Rust writes a string literal when it is empty or holds a space, a quote,
/// an equals sign or a control character.
pub(super) fn push_quoted(out: &mut Vec<u8>, v: &str) {
    if v.is_empty() || v.contains([' ', '"', '=']) || v.chars().any(char::is_control) {
        let _ = write!(out, "{v:?}");
    } else {
        out.extend_from_slice(v.as_bytes());
    }
}

/// `v` as a JSON string, escaped as serde_json escapes it.
pub(super) fn push_json_str(out: &mut Vec<u8>, v: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = v.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `n` in decimal.
pub(super) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// `d` in seconds with `places` decimals (rounded to the nearest); `trim` drops the trailing
/// zeros but one, as a JSON number is written.
fn push_seconds(out: &mut Vec<u8>, d: Duration, places: u32, trim: bool) {
    let unit = 10u128.pow(9 - places);
    let scaled = (d.as_nanos() + unit / 2) / unit;
    let one = 10u128.pow(places);
    push_u64(out, u64::try_from(scaled / one).unwrap_or(u64::MAX));
    out.push(b'.');
    let mut fraction = [0u8; 9];
    let mut rest = (scaled % one) as u64;
    let places = places as usize;
    for digit in fraction[..places].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let mut len = places;
    if trim {
        while len > 1 && fraction[len - 1] == b'0' {
            len -= 1;
        }
    }
    out.extend_from_slice(&fraction[..len]);
}

/// An address as the standard library writes it (IPv6 without brackets).
pub(super) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, octet.into());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `ip:port`, `[v6]:port`.
fn push_socket(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => push_ip(out, IpAddr::V4(*v4.ip())),
        SocketAddr::V6(v6) => {
            let _ = write!(out, "[{}", v6.ip());
            if v6.scope_id() != 0 {
                let _ = write!(out, "%{}", v6.scope_id());
            }
            out.push(b']');
        }
    }
    out.push(b':');
    push_u64(out, addr.port().into());
}

/// A backend server as `host:port` (`[v6]:port`).
pub(super) fn push_server(out: &mut Vec<u8>, host: &BackendHost, port: u16) {
    match host {
        BackendHost::Ip(ip @ IpAddr::V4(_)) => push_ip(out, *ip),
        BackendHost::Ip(IpAddr::V6(v6)) => {
            let _ = write!(out, "[{v6}]");
        }
        BackendHost::Dns(name) => out.extend_from_slice(name.as_bytes()),
    }
    out.push(b':');
    push_u64(out, port.into());
}

/// A span id's 16 hex digits.
fn push_hex8(out: &mut Vec<u8>, bytes: &[u8; 8]) {
    let mut text = [0u8; 16];
    trace::hex(bytes, &mut text);
    out.extend_from_slice(&text);
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€😀 \"quoted\" back\\slash");
        for v in ["", "plain", "a\"b", "tab\there", "\u{1}\u{1f}\u{7f}", &all] {
            assert_eq!(
                text(|o| push_json_str(o, v)),
                serde_json::to_string(v).unwrap(),
                "{v:?}"
            );
        }
    }

    #[test]
    fn numbers_addresses_and_seconds_are_written_as_the_standard_library_writes_them() {
        for n in [0, 7, 10, 99, 65_535, 1_000_000, u64::MAX] {
            assert_eq!(text(|o| push_u64(o, n)), n.to_string());
        }
        for a in [
            "0.0.0.0:0",
            "10.1.2.3:443",
            "255.255.255.255:65535",
            "[::1]:80",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(text(|o| push_socket(o, addr)), a);
            assert_eq!(text(|o| push_ip(o, addr.ip())), addr.ip().to_string());
        }
        for nanos in [
            0,
            1,
            499,
            501,
            999_999,
            1_234_567,
            59_999_999_999,
            3_000_000_000,
        ] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(
                text(|o| push_seconds(o, d, 6, false)),
                format!("{:.6}", d.as_secs_f64()),
                "{nanos}"
            );
            assert_eq!(
                text(|o| push_seconds(o, d, 3, false)),
                format!("{:.3}", d.as_secs_f64()),
                "{nanos}"
            );
            let json: f64 = text(|o| push_seconds(o, d, 6, true)).parse().unwrap();
            assert_eq!(json, (d.as_secs_f64() * 1e6).round() / 1e6, "{nanos}");
        }
        assert_eq!(text(|o| push_seconds(o, Duration::ZERO, 6, true)), "0.0");
        let v6 = BackendHost::Ip("2001:db8::7".parse().unwrap());
        assert_eq!(text(|o| push_server(o, &v6, 8080)), "[2001:db8::7]:8080");
        let dns = BackendHost::Dns("app.internal".into());
        assert_eq!(text(|o| push_server(o, &dns, 80)), "app.internal:80");
    }

    fn record<'a>(uri: &'a Uri, server: &'a BackendHost) -> RequestRecord<'a> {
        RequestRecord {
            client: "192.0.2.7:51000".parse().unwrap(),
            method: "GET",
            uri,
            version: Version::HTTP_11,
            user_agent: Some("agent \"7\""),
            host: Some("app.test"),
            status: 200,
            received_bytes: 120,
            sent_bytes: 2_048,
            time_taken: Duration::from_micros(1_250),
            tls: Some(("TLSv1.3", "TLS13_AES_128_GCM_SHA256")),
            server: Some((server, 8080)),
            server_status: Some(200),
            server_latency: Some(Duration::from_micros(900)),
            trace: TraceContext {
                trace_id: [0xab; 16],
                parent_span_id: None,
                span_id: [0x01; 8],
                flags: 1,
            },
            listener: Some("web"),
            rule: Some("rule one"),
            pool: Some("pool"),
            settings: None,
        }
    }

    #[test]
    fn a_json_record_carries_application_gateways_fields() {
        let uri: Uri = "/a/b?x=1".parse().unwrap();
        let server = BackendHost::Ip("10.0.0.4".parse().unwrap());
        let r = record(&uri, &server);
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_599_042);
        let line = text(|o| r.write_json(now, o));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let expected = serde_json::json!({
            "time": "2025-12-31T23:59:59.042Z",
            "operationName": "ApplicationGatewayAccess",
            "clientIP": "192.0.2.7",
            "clientPort": 51000,
            "httpMethod": "GET",
            "requestUri": "/a/b",
            "originalRequestUriWithArgs": "/a/b?x=1",
            "userAgent": "agent \"7\"",
            "httpStatus": 200,
            "httpVersion": "HTTP/1.1",
            "receivedBytes": 120,
            "sentBytes": 2048,
            "timeTaken": 0.00125,
            "sslEnabled": "on",
            "sslCipher": "TLS13_AES_128_GCM_SHA256",
            "sslProtocol": "TLSv1.3",
            "serverRouted": "10.0.0.4:8080",
            "serverStatus": "200",
            "serverResponseLatency": "0.001",
            "host": "app.test",
            "originalHost": "app.test",
            "transactionId": "abababababababababababababababab",
            "listenerName": "web",
            "ruleName": "rule one",
            "backendPoolName": "pool",
            "backendSettingName": "",
            "traceId": "abababababababababababababababab",
            "spanId": "0101010101010101",
            "parentSpanId": "",
        });
        assert_eq!(v, expected, "{line}");
    }

    #[test]
    fn a_text_record_quotes_what_needs_quotes() {
        let uri: Uri = "/p?q=1".parse().unwrap();
        let server = BackendHost::Dns("app.internal".into());
        let r = record(&uri, &server);
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_599_042);
        assert_eq!(
            text(|o| r.write_text(now, o)),
            "2025-12-31T23:59:59.042Z access client=192.0.2.7:51000 method=GET uri=\"/p?q=1\" \
             status=200 time_taken=0.001250 received=120 sent=2048 \
             trace_id=abababababababababababababababab host=app.test listener=web \
             rule=\"rule one\" pool=pool server=app.internal:8080 server_status=200"
        );
    }
}
