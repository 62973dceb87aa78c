//! Helpers on the WIT types: lookups on requests and probe responses, builders for decisions
//! and verdicts.

use crate::{
    Decision, DirectResponse, Forward, Header, HeaderEdit, ProbeRequest, ProbeResponse, Redirect,
    Verdict,
};

/// A request head as a router sees it, borrowed from what the gateway passed in (nothing is
/// copied to build it). The fields are those of the WIT `request-head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// "http" or "https".
    pub scheme: &'a str,
    /// The host the client asked for, with any port, lower-cased.
    pub authority: &'a str,
    /// The path, percent-encoded as received, without the query.
    pub path: &'a str,
    /// The query without '?', if any.
    pub query: Option<&'a str>,
    /// The request's header fields (or those the plugin's `request_headers` lists).
    pub headers: Vec<RequestHeader<'a>>,
    /// The client's address as "ip:port".
    pub client_address: &'a str,
    /// The name of the listener that accepted the request.
    pub listener: &'a str,
    /// Whether this is a WebSocket opening handshake.
    pub websocket: bool,
    /// The server name the client sent in TLS SNI, on HTTPS listeners.
    pub tls_sni: Option<&'a str>,
}

/// A header field of a request. Values are bytes: HTTP allows non-UTF-8 octets in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl<'a> RequestHead<'a> {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.header_values(name).next()
    }

    /// The first value of header `name` if it is valid UTF-8, surrounding whitespace trimmed.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Every value of header `name`, in the order received.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The value of cookie `name` from the `Cookie` header(s) (RFC 6265 §5.4: `a=1; b=2`). Names
    /// are case-sensitive; the value is returned as sent (quotes included).
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.header_values("cookie")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value)
    }

    /// The host the client asked for, without the port (`Example.com:8080` → `example.com`;
    /// the authority is already lower-cased). IPv6 literals keep their brackets.
    pub fn host(&self) -> &'a str {
        wasmgate_rules::matching::host_without_port(self.authority)
    }

    /// The raw (still percent-encoded) value of query parameter `name`: the first `name=value`
    /// pair, or `""` for a bare `name`.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query?
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value)
    }

    /// The client's IP address, without the port.
    pub fn client_ip(&self) -> &'a str {
        let addr = self.client_address;
        match addr.rsplit_once(':') {
            // "[::1]:5000" → "::1"
            Some((ip, _)) if ip.starts_with('[') => {
                ip.trim_start_matches('[').trim_end_matches(']')
            }
            Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
            _ => addr,
        }
    }
}

impl ProbeResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// The first bytes of the body as text, when they are valid UTF-8. The host sends at most
    /// 4 KiB, so a longer body may end mid-character: such a body is `None`.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// Whether a response arrived with a status in `range`.
    pub fn status_in(&self, range: std::ops::RangeInclusive<u16>) -> bool {
        self.status.is_some_and(|s| range.contains(&s))
    }
}

impl Forward {
    /// Forward to `pool` with backend settings `settings`, the host picking the server.
    pub fn to(pool: impl Into<String>, settings: impl Into<String>) -> Self {
        Forward {
            pool: pool.into(),
            settings: settings.into(),
            server: None,
            header_edits: Vec::new(),
            path: None,
        }
    }

    /// Send to this member of the pool (its address as written in the configuration).
    pub fn server(mut self, address: impl Into<String>) -> Self {
        self.server = Some(address.into());
        self
    }

    /// Replace the path sent to the backend (the query is kept).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Set (replace) a request header.
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.header_edits
            .push(HeaderEdit::Set(Header::new(name, value)));
        self
    }

    /// Add a request header value, keeping existing ones.
    pub fn append_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.header_edits
            .push(HeaderEdit::Append(Header::new(name, value)));
        self
    }

    /// Remove every value of a request header.
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.header_edits.push(HeaderEdit::Remove(name.into()));
        self
    }
}

impl From<Forward> for Decision {
    fn from(forward: Forward) -> Self {
        Decision::Forward(forward)
    }
}

impl Decision {
    /// Forward to `pool` with `settings`; for more, build a [`Forward`] and convert it.
    pub fn forward(pool: impl Into<String>, settings: impl Into<String>) -> Self {
        Decision::Forward(Forward::to(pool, settings))
    }

    /// Redirect with `status` (301, 302, 303, 307 or 308) to `location`.
    pub fn redirect(status: u16, location: impl Into<String>) -> Self {
        Decision::Redirect(Redirect {
            status,
            location: location.into(),
        })
    }

    /// Answer directly with `status` and a plain-text body (at most 64 KiB).
    pub fn respond(status: u16, body: impl Into<String>) -> Self {
        Decision::Respond(DirectResponse {
            status,
            headers: vec![Header::new("content-type", "text/plain; charset=utf-8")],
            body: body.into().into_bytes(),
        })
    }
}

impl Verdict {
    pub fn healthy(reason: impl Into<String>) -> Self {
        Verdict {
            healthy: true,
            reason: reason.into(),
        }
    }

    pub fn unhealthy(reason: impl Into<String>) -> Self {
        Verdict {
            healthy: false,
            reason: reason.into(),
        }
    }
}

impl ProbeRequest {
    /// A probe request with only the path changed.
    pub fn path(path: impl Into<String>) -> Self {
        ProbeRequest {
            path: Some(path.into()),
            host: None,
            headers: Vec::new(),
        }
    }

    /// Adds a header to the probe request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(authority: &'a str, headers: &[(&'a str, &'a str)]) -> RequestHead<'a> {
        RequestHead {
            method: "GET",
            scheme: "http",
            authority,
            path: "/",
            query: Some("a=1&b&c=x%20y&a=2"),
            headers: headers
                .iter()
                .map(|&(name, value)| RequestHeader {
                    name,
                    value: value.as_bytes(),
                })
                .collect(),
            client_address: "10.1.2.3:5555",
            listener: "http",
            websocket: false,
            tls_sni: None,
        }
    }

    #[test]
    fn headers_and_cookies() {
        let r = request(
            "a.example.com:8080",
            &[
                ("X-User", " alice "),
                ("cookie", "session=abc; theme=dark"),
                ("Cookie", "canary=1"),
                ("x-user", "bob"),
            ],
        );
        assert_eq!(r.header("x-user"), Some(&b" alice "[..]));
        assert_eq!(r.header_str("X-USER"), Some("alice"));
        assert_eq!(r.header_values("x-user").count(), 2);
        assert_eq!(r.cookie("theme"), Some("dark"));
        assert_eq!(r.cookie("canary"), Some("1"));
        assert_eq!(r.cookie("Theme"), None);
        assert_eq!(r.header("missing"), None);
    }

    #[test]
    fn host_query_client() {
        let r = request("a.example.com:8080", &[]);
        assert_eq!(r.host(), "a.example.com");
        assert_eq!(r.query_param("a"), Some("1"));
        assert_eq!(r.query_param("b"), Some(""));
        assert_eq!(r.query_param("c"), Some("x%20y"));
        assert_eq!(r.query_param("d"), None);
        assert_eq!(r.client_ip(), "10.1.2.3");
        assert_eq!(request("[::1]:80", &[]).host(), "[::1]");
        assert_eq!(request("example.com", &[]).host(), "example.com");
        let mut v6 = request("x", &[]);
        v6.client_address = "[2001:db8::1]:443";
        assert_eq!(v6.client_ip(), "2001:db8::1");
    }

    #[test]
    fn builders() {
        let d: Decision = Forward::to("web", "web-settings")
            .server("10.0.0.4")
            .set_header("x-a", "1")
            .remove_header("x-b")
            .path("/v2/x")
            .into();
        let Decision::Forward(f) = d else {
            panic!("expected a forward")
        };
        assert_eq!(f.pool, "web");
        assert_eq!(f.server.as_deref(), Some("10.0.0.4"));
        assert_eq!(f.header_edits.len(), 2);
        assert_eq!(f.path.as_deref(), Some("/v2/x"));
        assert!(
            matches!(Decision::redirect(301, "/new"), Decision::Redirect(r) if r.status == 301)
        );
        assert!(Verdict::healthy("ok").healthy);
        assert!(!Verdict::unhealthy("down").healthy);
    }
}
