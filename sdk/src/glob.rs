//! Host and path matching with the gateway's semantics, so that a plugin and the native rules
//! agree on what a pattern means.
//!
//! - Host names ignore ASCII case; `*` matches any run of characters, dots included
//!   (`*.contoso.com` matches `a.b.contoso.com` but not `contoso.com`), `?` exactly one.
//!   Compare against the host without its port ([`RequestHead::host`](crate::RequestHead::host)).
//! - Paths ignore ASCII case. `/images/*` matches what starts with `/images/` (not `/images`),
//!   `/images*` any continuation of `/images`, and a pattern without a trailing `*` only itself.
//!   The query is never part of the path.

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
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p].eq_ignore_ascii_case(&text[t])) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

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
