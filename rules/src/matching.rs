//! Host and path matching with Application Gateway's semantics: the one implementation that the
//! gateway's native rules, the plugin SDK and the built-in basic-rules plugin all use, so they
//! can never disagree about what a pattern means.
//!
//! - Host names ignore ASCII case; `*` matches any run of characters, dots included
//!   (`*.contoso.com` matches `a.b.contoso.com` but not `contoso.com`), `?` exactly one.
//! - Paths ignore ASCII case. `/images/*` matches what starts with `/images/` (not `/images`),
//!   `/images*` any continuation of `/images`, and a pattern without a trailing `*` only itself.
//!   The query is never part of the path.

/// A listener host name, compiled once: lower-cased, and whether it has a wildcard (without
/// one, matching is a case-insensitive comparison).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pattern: Box<str>,
    wildcard: bool,
}

impl HostPattern {
    pub fn new(pattern: &str) -> Self {
        let pattern = pattern.to_ascii_lowercase();
        let wildcard = pattern.contains(['*', '?']);
        Self {
            pattern: pattern.into_boxed_str(),
            wildcard,
        }
    }

    /// The pattern as written, lower-cased.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// `host` is the request's host without port, in any case.
    #[inline]
    pub fn matches(&self, host: &str) -> bool {
        if !self.wildcard {
            return self.pattern.eq_ignore_ascii_case(host);
        }
        wildcard(self.pattern.as_bytes(), host.as_bytes())
    }
}

/// A path rule's path, compiled once: lower-cased as written (a trailing `*` makes it a prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    pattern: Box<str>,
}

impl PathPattern {
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_ascii_lowercase().into_boxed_str(),
        }
    }

    /// The pattern as written, lower-cased.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// See [`path_match_len`].
    #[inline]
    pub fn match_len(&self, path: &str) -> Option<usize> {
        path_match_len(&self.pattern, path)
    }
}

/// Whether `host` (without port, any case) matches the host-name pattern.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return pattern.eq_ignore_ascii_case(host);
    }
    wildcard(pattern.as_bytes(), host.as_bytes())
}

/// How many bytes of `path` the pattern matched: for `/images/*` and `/images/logo.png` that is
/// 8 (`/images/`), the part a path rewrite replaces. `None` when it does not match.
pub fn path_match_len(pattern: &str, path: &str) -> Option<usize> {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            let head = path.as_bytes().get(..prefix.len())?;
            head.eq_ignore_ascii_case(prefix.as_bytes())
                .then_some(prefix.len())
        }
        None => path.eq_ignore_ascii_case(pattern).then_some(pattern.len()),
    }
}

/// Whether `path` (without the query) matches the path pattern.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    path_match_len(pattern, path).is_some()
}

/// Glob with backtracking to the last `*`: no allocation, linear for the patterns hosts use.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        // A `*` is always the wildcard, even against a literal `*` in the text.
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len()
            && (pattern[p] == b'?' || pattern[p].eq_ignore_ascii_case(&text[t]))
        {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The backend path under a path override (the override without its trailing '/'): basic rules
/// (and a path map's default) prefix the override; a path rule replaces the part its pattern
/// matched (`matched`, from [`path_match_len`]).
pub fn override_path(prefix: &str, path: &str, matched: Option<usize>) -> String {
    match matched {
        None => {
            let mut p = String::with_capacity(prefix.len() + path.len());
            p.push_str(prefix);
            p.push_str(path);
            if p.is_empty() {
                p.push('/');
            }
            p
        }
        Some(n) => {
            let rest = path.get(n..).unwrap_or("").trim_start_matches('/');
            format!("{prefix}/{rest}")
        }
    }
}

/// The host of an authority without its port; IPv6 brackets are kept.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_override() {
        assert_eq!(override_path("/base", "/x", None), "/base/x");
        assert_eq!(override_path("", "/x", None), "/x");
        assert_eq!(override_path("/v2", "/api/users", Some(5)), "/v2/users");
        assert_eq!(override_path("/v2", "/api", Some(4)), "/v2/");
        assert_eq!(override_path("", "/api/users", Some(5)), "/users");
    }

    #[test]
    fn star_is_a_wildcard_even_against_a_star() {
        // Found by the `matching` fuzz target: the `*` was first compared as a literal.
        assert!(host_matches("*", "*AO"));
        assert!(host_matches("*c", "*abc"));
        assert!(host_matches("*.contoso.com", "*.contoso.com"));
        assert!(!host_matches("*.contoso.com", "contoso.com"));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(host_without_port("a.test:8080"), "a.test");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("a.test"), "a.test");
    }

    #[test]
    fn hosts() {
        assert!(host_matches("www.Contoso.com", "WWW.contoso.COM"));
        assert!(!host_matches("www.contoso.com", "contoso.com"));
        assert!(host_matches("*.contoso.com", "a.contoso.com"));
        assert!(
            host_matches("*.contoso.com", "b.a.contoso.com"),
            "* crosses dots"
        );
        assert!(!host_matches("*.contoso.com", "contoso.com"));
        assert!(host_matches("app?.contoso.com", "app1.contoso.com"));
        assert!(!host_matches("app?.contoso.com", "app12.contoso.com"));
        assert!(!host_matches("app?.contoso.com", "app.contoso.com"));
        assert!(host_matches("*CONTOSO*", "www.contoso.net"));
        assert!(host_matches("*", "anything.at.all"));
        assert!(host_matches("a*b*c", "axxbyyc"));
        assert!(!host_matches("a*b*c", "axxbyy"));
    }

    #[test]
    fn compiled_patterns_match_as_the_functions_do() {
        let host = HostPattern::new("WWW.Contoso.com");
        assert_eq!(host.as_str(), "www.contoso.com");
        assert!(host.matches("www.CONTOSO.com"));
        assert!(!host.matches("contoso.com"));
        assert!(HostPattern::new("*.Contoso.com").matches("a.b.contoso.COM"));
        assert!(!HostPattern::new("app?.contoso.com").matches("app12.contoso.com"));
        let path = PathPattern::new("/Images/*");
        assert_eq!(path.as_str(), "/images/*");
        assert_eq!(path.match_len("/IMAGES/a.png"), Some(8));
        assert_eq!(path.match_len("/images"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(path_match_len("/images/*", "/images/a.png"), Some(8));
        assert_eq!(path_match_len("/images/*", "/IMAGES/"), Some(8));
        assert_eq!(
            path_match_len("/images/*", "/images"),
            None,
            "a glob needs its slash"
        );
        assert_eq!(path_match_len("/images/*", "/imagesfoo"), None);
        assert!(path_matches("/images*", "/imagesfoo"));
        assert!(path_matches("/images*", "/images/x"));
        assert!(!path_matches("/images*", "/image"));
        assert!(path_matches("/about", "/About"));
        assert!(!path_matches("/about", "/about/"));
        assert!(path_matches("/*", "/anything"));
    }
}
