//! Host-name and path matchers, compiled once per configuration.

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
        glob_match(self.pattern.as_bytes(), host.as_bytes())
    }
}

/// Iterative glob with backtracking to the last `*`: linear in practice, no allocation.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t].to_ascii_lowercase()) {
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

/// A path rule's path: exact, or a prefix when it ends in `*` (`/images/*`, `/images*`).
/// Matching ignores case; the query and fragment are never part of the matched path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// Lower-cased, without the trailing `*`.
    prefix: Box<str>,
    is_prefix: bool,
}

impl PathPattern {
    pub(crate) fn new(pattern: &str) -> Self {
        let lower = pattern.to_ascii_lowercase();
        match lower.strip_suffix('*') {
            Some(prefix) => Self {
                prefix: prefix.into(),
                is_prefix: true,
            },
            None => Self {
                prefix: lower.into_boxed_str(),
                is_prefix: false,
            },
        }
    }

    /// The pattern as written, lower-cased.
    pub fn as_string(&self) -> String {
        if self.is_prefix {
            format!("{}*", self.prefix)
        } else {
            self.prefix.to_string()
        }
    }

    /// The part of the path the pattern consumed, when it matches: for `/images/*` and
    /// `/images/logo.png` that is `/images/`, which a path override then replaces.
    pub fn match_len(&self, path: &str) -> Option<usize> {
        let n = self.prefix.len();
        if self.is_prefix {
            let head = path.as_bytes().get(..n)?;
            head.eq_ignore_ascii_case(self.prefix.as_bytes())
                .then_some(n)
        } else {
            path.eq_ignore_ascii_case(&self.prefix).then_some(n)
        }
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
