//! Header rules applied on the way through: hop-by-hop removal (RFC 9110 §7.6.1), Application
//! Gateway's forwarding headers and header-name hygiene.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use std::net::SocketAddr;

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
