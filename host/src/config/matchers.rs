//! Host-name and path matchers, compiled once per configuration. The matching itself is
//! `wasmgate_rules::matching`, shared with the plugin SDK and the built-in router.

use wasmgate_rules::matching;

/// A listener host name: case-insensitive, `*` matches any run of characters (dots included),
/// `?` matches exactly one (Application Gateway multi-site wildcard semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower-cased pattern as written.
    pattern: Box<str>,
    wildcard: bool,
}

impl HostPattern {
    pub(crate) fn new(pattern: &str) -> Self {
        let pattern = pattern.to_ascii_lowercase();
        let wildcard = pattern.contains(['*', '?']);
        Self {
            pattern: pattern.into_boxed_str(),
            wildcard,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// `host` is the request's host without port, in any case.
    pub fn matches(&self, host: &str) -> bool {
        if !self.wildcard {
            return self.pattern.eq_ignore_ascii_case(host);
        }
        matching::host_matches(&self.pattern, host)
    }
}

/// A path rule's path: exact, or a prefix when it ends in `*` (`/images/*`, `/images*`).
/// Matching ignores case; the query and fragment are never part of the matched path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// Lower-cased, as written (a trailing `*` makes it a prefix).
    pattern: Box<str>,
}

impl PathPattern {
    pub(crate) fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_ascii_lowercase().into_boxed_str(),
        }
    }

    /// The pattern as written, lower-cased.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The part of the path the pattern consumed, when it matches: for `/images/*` and
    /// `/images/logo.png` that is `/images/`, which a path override then replaces.
    pub fn match_len(&self, path: &str) -> Option<usize> {
        matching::path_match_len(&self.pattern, path)
    }

    pub fn matches(&self, path: &str) -> bool {
        self.match_len(path).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_exact_and_case() {
        let p = HostPattern::new("www.Contoso.com");
        assert!(p.matches("WWW.contoso.COM"));
        assert!(!p.matches("contoso.com"));
    }

    #[test]
    fn host_wildcards() {
        let star = HostPattern::new("*.contoso.com");
        assert!(star.matches("a.contoso.com"));
        assert!(star.matches("b.a.contoso.com"), "* crosses dots");
        assert!(!star.matches("contoso.com"));
        let q = HostPattern::new("app?.contoso.com");
        assert!(q.matches("app1.contoso.com"));
        assert!(!q.matches("app12.contoso.com"));
        assert!(!q.matches("app.contoso.com"));
        let mid = HostPattern::new("*contoso*");
        assert!(mid.matches("www.contoso.net"));
        assert!(HostPattern::new("*").matches("anything.at.all"));
    }

    #[test]
    fn path_patterns() {
        let dir = PathPattern::new("/images/*");
        assert_eq!(dir.match_len("/images/a.png"), Some(8));
        assert_eq!(dir.match_len("/IMAGES/"), Some(8));
        assert_eq!(dir.match_len("/images"), None, "a glob needs its slash");
        assert_eq!(dir.match_len("/imagesfoo"), None);
        let pre = PathPattern::new("/images*");
        assert!(pre.matches("/imagesfoo"));
        assert!(pre.matches("/images/x"));
        assert!(!pre.matches("/image"));
        let exact = PathPattern::new("/about");
        assert!(exact.matches("/About"));
        assert!(!exact.matches("/about/"));
    }
}
