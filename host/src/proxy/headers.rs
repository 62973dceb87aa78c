//! Header rules applied on the way through: hop-by-hop removal (RFC 9110 §7.6.1), Application
//! Gateway's forwarding headers, header-name hygiene and rewrite sets.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use std::borrow::Cow;
use std::net::SocketAddr;

use http::StatusCode;

use crate::config::{HeaderRewrite, RewriteCondition, ServerVariable};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-original-host");
pub static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
pub static X_TRACE_ID: HeaderName = HeaderName::from_static("x-appgw-trace-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the hop-by-hop fields of RFC 9110 §7.6.1: Connection and every field it names, plus
/// the ones defined as connection-specific (Keep-Alive, Proxy-Connection, TE, Transfer-Encoding,
/// Upgrade, Trailer). hyper frames the message again on the next hop.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    static HOP_BY_HOP: [&HeaderName; 7] = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::TRAILER,
    ];
    // One pass over the names (comparisons, no hashing) finds which are present; most messages
    // carry none or only Connection, and only those are looked up to be removed.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Fields named in Connection; the common case (`keep-alive`, `close`, `upgrade`) allocates
    // nothing.
    if present & 1 != 0 {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(str::trim)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("close")
                    && !t.eq_ignore_ascii_case("keep-alive")
                    && !t.eq_ignore_ascii_case("upgrade")
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.into_iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Application Gateway drops request headers whose names hold anything but letters, digits and
/// hyphens (an underscore can smuggle a header past a backend that folds `_` into `-`).
pub fn drop_unusual_names(headers: &mut HeaderMap) {
    let bad = |n: &HeaderName| {
        !n.as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if headers.keys().any(bad) {
        let names: Vec<HeaderName> = headers.keys().filter(|n| bad(n)).cloned().collect();
        for n in names {
            headers.remove(n);
        }
    }
}

pub fn apply_rewrites(headers: &mut HeaderMap, rewrites: &[HeaderRewrite]) {
    for r in rewrites {
        match &r.value {
            Some(v) => {
                headers.insert(r.name.clone(), v.clone());
            }
            None => {
                headers.remove(&r.name);
            }
        }
    }
}

/// What rewrite conditions can test about a request, as the client sent it.
pub struct RequestFacts<'a> {
    pub headers: &'a HeaderMap,
    pub client: SocketAddr,
    /// The host, without a port.
    pub host: &'a str,
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub scheme: &'a str,
    /// The listener's port.
    pub server_port: u16,
}

/// For each rewrite, whether its conditions on the request hold (conditions on the response
/// are left for [`apply_rewrites_if`]). Empty, without allocating, when no rewrite has
/// conditions: then every rewrite applies.
pub fn request_conditions(rewrites: &[HeaderRewrite], facts: &RequestFacts<'_>) -> Vec<bool> {
    if rewrites.iter().all(|r| r.conditions.is_empty()) {
        return Vec::new();
    }
    rewrites
        .iter()
        .map(|r| {
            r.conditions
                .iter()
                .all(|c| match request_value(&c.variable, facts) {
                    Some(value) => holds(c, value.as_deref()),
                    // A response variable: decided when the response arrives.
                    None => true,
                })
        })
        .collect()
}

/// The value of a request-side variable (`Some(None)`: it has none, as an absent header);
/// `None` for the response's variables.
fn request_value<'a>(v: &ServerVariable, f: &RequestFacts<'a>) -> Option<Option<Cow<'a, str>>> {
    let (path, query) = match f.path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (f.path_and_query, ""),
    };
    Some(match v {
        ServerVariable::RequestHeader(name) => f
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(Cow::Borrowed),
        ServerVariable::ClientIp => Some(Cow::Owned(f.client.ip().to_string())),
        ServerVariable::ClientPort => Some(Cow::Owned(f.client.port().to_string())),
        ServerVariable::Host => Some(Cow::Borrowed(f.host)),
        ServerVariable::Method => Some(Cow::Borrowed(f.method)),
        ServerVariable::UriPath => Some(Cow::Borrowed(path)),
        ServerVariable::QueryString => Some(Cow::Borrowed(query)),
        ServerVariable::RequestUri => Some(Cow::Borrowed(f.path_and_query)),
        ServerVariable::Scheme => Some(Cow::Borrowed(f.scheme)),
        ServerVariable::ServerPort => Some(Cow::Owned(f.server_port.to_string())),
        ServerVariable::ResponseHeader(_) | ServerVariable::Status => return None,
    })
}

/// A condition's verdict on a value: the pattern is searched for (not anchored), a missing
/// value matches nothing, and `negate` turns the result around.
fn holds(c: &RewriteCondition, value: Option<&str>) -> bool {
    value.is_some_and(|v| c.pattern.is_match(v)) != c.negate
}

/// Applies the rewrites whose conditions hold: `passed` is [`request_conditions`]' answer
/// (empty: all passed), and on a response (`status` given) the conditions on its headers and
/// status are checked against the response as it arrived, before any rewrite of the set.
pub fn apply_rewrites_if(
    headers: &mut HeaderMap,
    rewrites: &[HeaderRewrite],
    passed: &[bool],
    status: Option<StatusCode>,
) {
    if passed.is_empty() {
        return apply_rewrites(headers, rewrites);
    }
    let applies: Vec<bool> = rewrites
        .iter()
        .zip(passed)
        .map(|(r, ok)| {
            *ok && r.conditions.iter().all(|c| match (&c.variable, status) {
                (ServerVariable::ResponseHeader(name), Some(_)) => {
                    holds(c, headers.get(name).and_then(|v| v.to_str().ok()))
                }
                (ServerVariable::Status, Some(s)) => holds(c, Some(s.as_str())),
                _ => true,
            })
        })
        .collect();
    for (r, _) in rewrites.iter().zip(applies).filter(|(_, a)| *a) {
        apply_rewrites(headers, std::slice::from_ref(r));
    }
}

/// A socket address as Application Gateway's X-Forwarded-For writes it: `ip:port`, or
/// `[ip]:port` for IPv6. IPv4 addresses, every connection's case on an IPv4 listener, are
/// written digit by digit into one allocation, without the formatting machinery.
pub fn address_value(addr: SocketAddr) -> HeaderValue {
    let SocketAddr::V4(v4) = addr else {
        // Digits, hex, colons, brackets and a `%` scope id: all valid in a header value.
        return HeaderValue::from_str(&addr.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
    };
    // "255.255.255.255:65535"
    let mut text = [0u8; 21];
    let mut len = 0;
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        len += write_decimal(&mut text[len..], octet.into());
    }
    text[len] = b':';
    len += 1;
    len += write_decimal(&mut text[len..], v4.port());
    HeaderValue::from_bytes(&text[..len])
        .expect("digits, dots and a colon are a valid header value")
}

/// Writes `n` in decimal at the start of `out`; returns how many bytes that took.
fn write_decimal(out: &mut [u8], mut n: u16) -> usize {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - start;
    out[..len].copy_from_slice(&digits[start..]);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(variable: ServerVariable, pattern: &str, negate: bool) -> RewriteCondition {
        RewriteCondition {
            variable,
            pattern: regex_automata::meta::Regex::new(pattern).unwrap(),
            negate,
        }
    }

    fn rewrite(name: &'static str, conditions: Vec<RewriteCondition>) -> HeaderRewrite {
        HeaderRewrite {
            name: HeaderName::from_static(name),
            value: Some(HeaderValue::from_static("yes")),
            conditions,
        }
    }

    #[test]
    fn rewrite_conditions_on_request_and_response() {
        let mut request = HeaderMap::new();
        request.insert("x-tenant", "blue".parse().unwrap());
        let facts = RequestFacts {
            headers: &request,
            client: "192.0.2.7:50000".parse().unwrap(),
            host: "www.contoso.com",
            method: "POST",
            path_and_query: "/api/v1/items?limit=5",
            scheme: "https",
            server_port: 443,
        };
        let set = vec![
            rewrite(
                "a-ip",
                vec![condition(ServerVariable::ClientIp, r"^192\.0\.2\.", false)],
            ),
            rewrite(
                "b-path",
                vec![condition(
                    ServerVariable::UriPath,
                    r"^/api/v1/items$",
                    false,
                )],
            ),
            rewrite(
                "c-query",
                vec![condition(ServerVariable::QueryString, "^limit=5$", false)],
            ),
            rewrite(
                "d-absent",
                vec![condition(
                    ServerVariable::RequestHeader(HeaderName::from_static("x-none")),
                    "",
                    false,
                )],
            ),
            rewrite(
                "e-absent-negated",
                vec![condition(
                    ServerVariable::RequestHeader(HeaderName::from_static("x-none")),
                    "",
                    true,
                )],
            ),
            rewrite(
                "f-all",
                vec![
                    condition(
                        ServerVariable::RequestHeader(HeaderName::from_static("x-tenant")),
                        "^blue$",
                        false,
                    ),
                    condition(ServerVariable::Method, "^GET$", false),
                ],
            ),
            rewrite(
                "g-misc",
                vec![
                    condition(ServerVariable::Scheme, "^https$", false),
                    condition(ServerVariable::ServerPort, "^443$", false),
                    condition(ServerVariable::Host, "contoso", false),
                    condition(ServerVariable::RequestUri, r"\?limit=", false),
                    condition(ServerVariable::ClientPort, "^50000$", false),
                ],
            ),
        ];
        let passed = request_conditions(&set, &facts);
        let mut headers = HeaderMap::new();
        apply_rewrites_if(&mut headers, &set, &passed, None);
        let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["a-ip", "b-path", "c-query", "e-absent-negated", "g-misc"]
        );

        // Response conditions: the status and the response headers as the backend sent them.
        let response_set = vec![
            rewrite(
                "h-status",
                vec![condition(ServerVariable::Status, "^5", false)],
            ),
            rewrite(
                "i-header",
                vec![condition(
                    ServerVariable::ResponseHeader(HeaderName::from_static("content-type")),
                    "html",
                    false,
                )],
            ),
            rewrite(
                "j-both",
                vec![
                    condition(ServerVariable::UriPath, "^/api/", false),
                    condition(ServerVariable::Status, "^503$", false),
                ],
            ),
        ];
        let passed = request_conditions(&response_set, &facts);
        let mut response = HeaderMap::new();
        response.insert("content-type", "application/json".parse().unwrap());
        apply_rewrites_if(
            &mut response,
            &response_set,
            &passed,
            Some(StatusCode::SERVICE_UNAVAILABLE),
        );
        assert!(response.contains_key("h-status") && response.contains_key("j-both"));
        assert!(!response.contains_key("i-header"));
        let mut ok = HeaderMap::new();
        apply_rewrites_if(&mut ok, &response_set, &passed, Some(StatusCode::OK));
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn rewrites_without_conditions_need_no_evaluation() {
        let set = vec![HeaderRewrite {
            name: HeaderName::from_static("x-a"),
            value: None,
            conditions: vec![],
        }];
        let request = HeaderMap::new();
        let facts = RequestFacts {
            headers: &request,
            client: "127.0.0.1:1".parse().unwrap(),
            host: "h",
            method: "GET",
            path_and_query: "/",
            scheme: "http",
            server_port: 80,
        };
        assert!(request_conditions(&set, &facts).is_empty());
        let mut headers = HeaderMap::new();
        headers.insert("x-a", "1".parse().unwrap());
        apply_rewrites_if(&mut headers, &set, &[], None);
        assert!(headers.is_empty());
    }

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn hop_by_hop_fields_of_every_kind_and_every_connection_line() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "close".parse().unwrap());
        h.append(header::CONNECTION, "x-one".parse().unwrap());
        h.insert("x-one", "1".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::TRAILER, "x-sum".parse().unwrap());
        h.insert(header::HOST, "example.com".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::HOST]);

        let mut none = HeaderMap::new();
        none.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        remove_hop_by_hop(&mut none);
        assert_eq!(none.len(), 1);
    }

    #[test]
    fn unusual_names_dropped() {
        let mut h = HeaderMap::new();
        h.insert("x_custom", "1".parse().unwrap());
        h.insert("x-custom", "2".parse().unwrap());
        drop_unusual_names(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-custom"], "2");
    }
}
