//! Where a redirect sends a request, with Application Gateway's semantics: the one
//! implementation behind the gateway's native redirects and the built-in basic-rules plugin.

use crate::matching::host_without_port;

/// A redirect configuration compiled for answering requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirection {
    pub to: RedirectTo,
    pub include_path: bool,
    pub include_query_string: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectTo {
    /// One of the gateway's listeners: the request's host on the listener's scheme and port.
    Listener {
        https: bool,
        port: u16,
    },
    Url(Box<str>),
}

impl Redirection {
    /// The Location for a request for `path` and `query` on `authority`.
    pub fn location(&self, authority: &str, path: &str, query: Option<&str>) -> String {
        let mut location = match &self.to {
            RedirectTo::Url(url) => String::from(&**url),
            &RedirectTo::Listener { https, port } => {
                let host = host_without_port(authority);
                let (scheme, default_port) = if https { ("https", 443) } else { ("http", 80) };
                if port == default_port {
                    format!("{scheme}://{host}")
                } else {
                    format!("{scheme}://{host}:{port}")
                }
            }
        };
        if self.include_path {
            // Application Gateway appends the path to the target URL, without doubling a '/'.
            if matches!(self.to, RedirectTo::Url(_))
                && location.ends_with('/')
                && path.starts_with('/')
            {
                location.pop();
            }
            location.push_str(path);
        } else if matches!(self.to, RedirectTo::Listener { .. }) {
            location.push('/');
        }
        if self.include_query_string
            && let Some(q) = query
        {
            location.push(if location.contains('?') { '&' } else { '?' });
            location.push_str(q);
        }
        location
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(to: RedirectTo, include_path: bool, include_query_string: bool) -> Redirection {
        Redirection {
            to,
            include_path,
            include_query_string,
        }
    }

    #[test]
    fn a_listener_target_keeps_the_host_on_its_scheme_and_port() {
        let https = RedirectTo::Listener {
            https: true,
            port: 443,
        };
        assert_eq!(
            to(https.clone(), false, false).location("a.test:8080", "/x", Some("q=1")),
            "https://a.test/"
        );
        assert_eq!(
            to(https, true, true).location("a.test", "/x", Some("q=1")),
            "https://a.test/x?q=1"
        );
        let http = RedirectTo::Listener {
            https: false,
            port: 8080,
        };
        assert_eq!(
            to(http, true, false).location("[::1]:80", "/x", None),
            "http://[::1]:8080/x"
        );
    }

    #[test]
    fn a_url_target_gets_the_path_and_query_appended() {
        let url = |u: &str| RedirectTo::Url(u.into());
        assert_eq!(
            to(url("https://example.com/"), true, true).location("a", "/x", Some("")),
            "https://example.com/x?"
        );
        assert_eq!(
            to(url("http://example.com/landing?from=gw"), true, true).location(
                "a",
                "/x",
                Some("q")
            ),
            "http://example.com/landing?from=gw/x&q"
        );
        assert_eq!(
            to(url("https://example.com/"), false, false).location("a", "/x", Some("q")),
            "https://example.com/"
        );
    }
}
