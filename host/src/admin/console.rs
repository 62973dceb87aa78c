//! The web console: one page on the admin listener that an operator leaves open. Backend health,
//! traffic rates, WebSocket sessions, plugins and reloads, refreshed every few seconds.
//!
//! The page, its script and its style are compiled into the binary (no CDN: it works on a
//! machine without Internet access) and hold no data, so they are served without the admin
//! token. The script reads the data endpoints (`/api/status`, `/api/backend-health`,
//! `/api/plugins`, `/metrics`) with the token the operator typed, kept in the tab's
//! `sessionStorage` and sent as `Authorization: Bearer`, never in a URL.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

/// The console's page.
pub const PAGE_PATH: &str = "/";

const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        PAGE_PATH,
        "text/html; charset=utf-8",
        include_bytes!("console/index.html"),
    ),
    (
        "/console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/console.js"),
    ),
    (
        "/console.css",
        "text/css; charset=utf-8",
        include_bytes!("console/console.css"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_bytes!("console/favicon.svg"),
    ),
];

/// Scripts and styles from this origin only (no inline script, so an injected string cannot
/// run), data read from this origin only, and the page never framed by another site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Answers a request for one of the console's files; `None` for any other path.
pub fn asset<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path();
    let &(_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(res);
    }
    let mut res = Response::new(Full::new(Bytes::from_static(body)));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A new binary may bring a new page: the browser asks again each time it loads it.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_and_methods() {
        let get = |path: &str| {
            asset(&Request::get(path).body(()).unwrap()).map(|r| {
                (
                    r.status(),
                    r.headers()
                        .get(header::CONTENT_TYPE)
                        .map(|v| v.to_str().unwrap().to_owned()),
                )
            })
        };
        assert_eq!(
            get("/"),
            Some((StatusCode::OK, Some("text/html; charset=utf-8".into())))
        );
        assert_eq!(get("/console.js").unwrap().0, StatusCode::OK);
        assert_eq!(get("/console.css").unwrap().0, StatusCode::OK);
        assert_eq!(get("/api/status"), None);
        assert_eq!(get("/index.html"), None);
        let post = asset(&Request::post("/").body(()).unwrap()).unwrap();
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    /// The page refers only to files served here: nothing from another origin.
    #[test]
    fn page_is_self_contained() {
        for (path, _, body) in ASSETS {
            // An SVG names its XML namespace with a URL that is never fetched.
            let text = std::str::from_utf8(body)
                .unwrap()
                .replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!text.contains("http://"), "{path} refers to another origin");
            assert!(
                !text.contains("https://"),
                "{path} refers to another origin"
            );
        }
        let page = std::str::from_utf8(ASSETS[0].2).unwrap();
        for (path, _, _) in &ASSETS[1..] {
            assert!(page.contains(&path[1..]), "the page does not load {path}");
        }
        assert!(
            !page.contains("<script>"),
            "inline scripts are refused by the policy"
        );
    }
}
