//! Header rules applied on the way through: hop-by-hop removal (RFC 9110 §7.6.1), Application
//! Gateway's forwarding headers, header-name hygiene and rewrite sets.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::HeaderRewrite;

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
    // Fields named in Connection; the common case (`keep-alive`, `close`, `upgrade`) allocates
    // nothing.
    if let Some(conn) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
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
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::TRAILER,
    ] {
        headers.remove(name);
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

/// Whether a `Connection` or `Upgrade` header value lists `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
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

/// A fresh 128-bit request id as 32 lowercase hex digits.
pub fn trace_id() -> HeaderValue {
    let id = fastrand::u128(..);
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unusual_names_dropped() {
        let mut h = HeaderMap::new();
        h.insert("x_custom", "1".parse().unwrap());
        h.insert("x-custom", "2".parse().unwrap());
        drop_unusual_names(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-custom"], "2");
    }

    #[test]
    fn trace_ids_are_32_hex_and_differ() {
        let a = trace_id();
        let b = trace_id();
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
