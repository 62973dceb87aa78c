//! Phase 1, request checks: what hyper leaves to the application. Sizes, `[limits]`, and
//! framings and authorities that parse as valid HTTP but that a gateway must not forward,
//! because it or a backend could read them in two ways (RFC 9112 §11.2, request smuggling).

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, Scheme, Uri};

use http::{Method, Request, Version};

use super::ProxyError;
use crate::config::{Limits, MAX_HEADER_BYTES, MAX_URL_BYTES};

/// Checks the request head; returns the authority the client asked for.
pub fn request<B>(req: &Request<B>, limits: &Limits) -> Result<String, ProxyError> {
    if req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > MAX_URL_BYTES {
        return Err(ProxyError::UriTooLong);
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ProxyError::HeadersTooLarge);
    }
    asterisk_form(req)?;
    if req.version() == Version::HTTP_2 {
        http2_field_values(req.headers())?;
    }
    transfer_coding(req.headers())?;
    head_limits(req.headers(), limits)?;
    request_authority(req)
}

/// The authority the client asked for: the target's authority in absolute form (RFC 9112
/// §3.2.2, which then takes precedence over Host), else the one Host header.
fn request_authority<B>(req: &Request<B>) -> Result<String, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(a) = req.uri().authority() {
        return absolute_authority(req.uri(), a, host);
    }
    match host {
        Some(h) => {
            let h = h
                .to_str()
                .map_err(|_| ProxyError::BadRequest("the Host header is not valid"))?;
            if h.is_empty()
                || h.bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@' || b == b',')
            {
                return Err(ProxyError::BadRequest("the Host header is not valid"));
            }
            Ok(h.to_ascii_lowercase())
        }
        // RFC 9112 §3.2: a client MUST send Host in HTTP/1.1.
        None if req.version() == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("the Host header is missing"))
        }
        None => Ok(String::new()),
    }
}

/// The asterisk form of the request target (`*`, HTTP/2's `:path = "*"`) is for OPTIONS alone
/// (RFC 9112 §3.2.4, RFC 9113 §8.3.1); `GET *` would reach the backend as a request line no
/// HTTP/1.1 server expects.
fn asterisk_form<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.uri().path() == "*" && req.method() != Method::OPTIONS {
        return Err(ProxyError::BadRequest(
            "the request target \"*\" is only valid for OPTIONS",
        ));
    }
    Ok(())
}

/// RFC 9113 §8.2.1: an HTTP/2 field value neither starts nor ends with whitespace (SP or HTAB);
/// a request that carries one is malformed. HTTP/1.1's parser removes that whitespace itself
/// (RFC 9112 §5.1), while HTTP/2 delivers values verbatim, and a backend could read `" chunked"`
/// or `"x.test "` differently from the gateway. (h2 already refuses CR, LF and NUL.)
fn http2_field_values(headers: &HeaderMap) -> Result<(), ProxyError> {
    let padded = |b: &u8| *b == b' ' || *b == b'\t';
    let bad = headers.values().any(|v| {
        let v = v.as_bytes();
        v.first().is_some_and(padded) || v.last().is_some_and(padded)
    });
    if bad {
        return Err(ProxyError::BadRequest(
            "an HTTP/2 field value starts or ends with whitespace",
        ));
    }
    Ok(())
}

/// `[limits]` checked on the request head: the number of header fields (hyper already counts
/// them while parsing HTTP/1.1; this covers HTTP/2) and a declared body length over
/// `max_request_body`, refused before any of the body is read (RFC 9110 §15.5.14).
pub fn head_limits(headers: &HeaderMap, limits: &Limits) -> Result<(), ProxyError> {
    if headers.len() > limits.max_header_count {
        return Err(ProxyError::TooManyHeaders(limits.max_header_count));
    }
    if let Some(max) = limits.max_request_body {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(ProxyError::BodyTooLarge(max));
        }
    }
    Ok(())
}

/// The only transfer coding the gateway forwards is one `chunked`, last (RFC 9112 §6.1, §7).
///
/// hyper refuses a request whose final coding is not chunked, but it accepts `chunked, chunked`
/// (chunked "MUST NOT" be applied twice, §7) and `gzip, chunked`; it then hands over a body with
/// the chunked framing removed and still gzip-coded, while Transfer-Encoding, hop-by-hop, is
/// dropped on the way to the backend. Both are refused rather than forwarded mislabelled.
pub fn transfer_coding(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        // RFC 9110 §5.6.1: empty list elements do not count.
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(ProxyError::BadRequest(
            "the gateway accepts no transfer coding but a single chunked",
        )),
    }
}

/// The authority of an absolute-form target (RFC 9112 §3.2.2), or HTTP/2's `:authority`,
/// checked against the Host header when there is one.
///
/// RFC 9112 §3.2.2 says to ignore Host in that case, but routing by one while a backend reads
/// the other would let them disagree; RFC 9113 §8.3.1 calls such a request malformed, and it is
/// refused here in both versions. Userinfo is an error (RFC 9110 §4.2.4), and so is a scheme the
/// gateway does not serve.
pub fn absolute_authority(
    uri: &Uri,
    authority: &Authority,
    host: Option<&HeaderValue>,
) -> Result<String, ProxyError> {
    let https = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => false,
        Some(s) if *s == Scheme::HTTPS => true,
        _ => {
            return Err(ProxyError::BadRequest(
                "the request target's scheme is neither http nor https",
            ));
        }
    };
    let text = authority.as_str();
    if text.contains('@') {
        return Err(ProxyError::BadRequest(
            "the request target carries userinfo",
        ));
    }
    if authority.host().is_empty() {
        return Err(ProxyError::BadRequest("the request target has no host"));
    }
    if let Some(host) = host {
        let default_port = if https { ":443" } else { ":80" };
        let same = host
            .to_str()
            .is_ok_and(|h| strip(h, default_port).eq_ignore_ascii_case(strip(text, default_port)));
        if !same {
            return Err(ProxyError::BadRequest(
                "the Host header differs from the request target's authority",
            ));
        }
    }
    Ok(text.to_ascii_lowercase())
}

/// `authority` without the scheme's default port, which names the same origin (RFC 9110 §4.3.2).
fn strip<'a>(authority: &'a str, default_port: &str) -> &'a str {
    authority.strip_suffix(default_port).unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn te(values: &[&str]) -> Result<(), ProxyError> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::TRANSFER_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        transfer_coding(&h)
    }

    #[test]
    fn only_one_chunked_passes() {
        assert!(te(&[]).is_ok());
        assert!(te(&["chunked"]).is_ok());
        assert!(te(&["Chunked"]).is_ok());
        assert!(te(&[" chunked ,"]).is_ok());
        for bad in [
            &["chunked, chunked"][..],
            &["gzip, chunked"],
            &["gzip", "chunked"],
            &["identity"],
            &["chunked;ext=1"],
        ] {
            assert!(te(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn asterisk_form_is_for_options_only() {
        let req = |method: Method, target: &str| {
            Request::builder()
                .method(method)
                .uri(target)
                .body(())
                .unwrap()
        };
        assert!(asterisk_form(&req(Method::OPTIONS, "*")).is_ok());
        assert!(asterisk_form(&req(Method::GET, "/")).is_ok());
        assert!(asterisk_form(&req(Method::OPTIONS, "/")).is_ok());
        for m in [Method::GET, Method::POST, Method::HEAD, Method::DELETE] {
            assert!(asterisk_form(&req(m.clone(), "*")).is_err(), "{m} *");
        }
    }

    #[test]
    fn http2_field_values_have_no_surrounding_whitespace() {
        let values = |vs: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in vs {
                h.append("x-v", HeaderValue::from_bytes(v).unwrap());
            }
            http2_field_values(&h)
        };
        assert!(values(&[b"a", b"a b", b"", b"a\tb"]).is_ok());
        for bad in [&b" a"[..], b"a ", b"\ta", b"a\t", b" ", b"\t"] {
            assert!(values(&[b"ok", bad]).is_err(), "{bad:?}");
        }
    }

    fn authority(target: &str, host: Option<&str>) -> Result<String, ProxyError> {
        let uri: Uri = target.parse().unwrap();
        let host = host.map(|h| HeaderValue::from_str(h).unwrap());
        absolute_authority(&uri, uri.authority().unwrap(), host.as_ref())
    }

    #[test]
    fn absolute_targets_agree_with_host() {
        assert_eq!(
            authority("http://X.test/a", Some("x.test")).unwrap(),
            "x.test"
        );
        assert_eq!(
            authority("http://x.test:80/", Some("x.test")).unwrap(),
            "x.test:80"
        );
        assert!(authority("https://x.test/", Some("x.test:443")).is_ok());
        assert!(authority("https://x.test/", None).is_ok());
        assert!(authority("https://x.test/", Some("x.test:80")).is_err());
        assert!(authority("http://x.test/", Some("y.test")).is_err());
        assert!(authority("http://x.test:8080/", Some("x.test")).is_err());
        assert!(authority("http://u@x.test/", Some("u@x.test")).is_err());
        assert!(authority("ftp://x.test/", Some("x.test")).is_err());
    }
}
