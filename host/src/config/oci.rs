//! A plugin component named by its place in an OCI registry:
//! `oci://HOST[:PORT]/REPOSITORY:TAG`, `oci://HOST[:PORT]/REPOSITORY@sha256:DIGEST`, or both
//! (`:TAG@sha256:DIGEST`, where the digest decides and the tag is a label).
//!
//! The registry is spoken to over HTTPS, except for a loopback host (`localhost`, `127.0.0.0/8`,
//! `[::1]`), which is plain HTTP as Docker treats it, and for a reference written
//! `oci+http://…`, which asks for plain HTTP to any host.
//!
//! Names follow the OCI distribution specification (§"Pulling manifests"): a repository is
//! lowercase path components of letters and digits joined by `.`, `_`, `__` or `-`; a tag is at
//! most 128 of `[A-Za-z0-9_.-]` and does not start with `.` or `-`.

use std::fmt;
use std::net::IpAddr;

/// The scheme of a reference whose registry speaks HTTPS (or plain HTTP on loopback).
pub const OCI_SCHEME: &str = "oci://";
/// The scheme of a reference whose registry speaks plain HTTP whatever its host.
pub const OCI_PLAIN_HTTP_SCHEME: &str = "oci+http://";

/// A component's place in an OCI registry (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciReference {
    /// `HOST[:PORT]`, as written (an IPv6 host in brackets).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:` and 64 lowercase hex digits: the manifest's digest.
    pub digest: Option<String>,
    /// Written `oci+http://`.
    pub plain_http_asked: bool,
}

impl OciReference {
    /// Whether `source` is meant as a registry reference rather than a file.
    pub fn is_reference(source: &str) -> bool {
        source.starts_with(OCI_SCHEME) || source.starts_with(OCI_PLAIN_HTTP_SCHEME)
    }

    /// Parses a reference; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Self, String> {
        let (rest, plain_http_asked) = if let Some(r) = source.strip_prefix(OCI_PLAIN_HTTP_SCHEME) {
            (r, true)
        } else if let Some(r) = source.strip_prefix(OCI_SCHEME) {
            (r, false)
        } else {
            return Err(format!(
                "{source:?} is not an OCI reference: expected oci://HOST/REPOSITORY:TAG or oci://HOST/REPOSITORY@sha256:DIGEST"
            ));
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{source:?}: no repository after the registry host"))?;
        check_registry(registry).map_err(|why| format!("{source:?}: registry {why}"))?;
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => (p, Some(d)),
            None => (path, None),
        };
        if let Some(d) = digest {
            check_digest(d).map_err(|why| format!("{source:?}: {why}"))?;
        }
        // A tag follows the last ':' after the last '/' (a port is in the registry part).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        check_repository(repository).map_err(|why| format!("{source:?}: {why}"))?;
        if let Some(t) = tag {
            check_tag(t).map_err(|why| format!("{source:?}: {why}"))?;
        }
        if tag.is_none() && digest.is_none() {
            return Err(format!(
                "{source:?}: give a tag (:v1) or a digest (@sha256:…); no tag is assumed"
            ));
        }
        Ok(OciReference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
            plain_http_asked,
        })
    }

    /// Whether the registry is spoken to in plain HTTP (asked for, or a loopback host).
    pub fn plain_http(&self) -> bool {
        self.plain_http_asked || is_loopback(self.host())
    }

    /// The registry's host, without port or brackets.
    pub fn host(&self) -> &str {
        let r = &self.registry;
        if let Some(v6) = r.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6);
        }
        r.rsplit_once(':').map_or(r.as_str(), |(h, _)| h)
    }

    /// What the registry's URLs name the manifest by: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .expect("parse requires a tag or a digest")
    }

    /// The same reference pinned to `digest` (the tag kept as a label).
    pub fn pinned(&self, digest: &str) -> OciReference {
        OciReference {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.plain_http_asked {
            OCI_PLAIN_HTTP_SCHEME
        } else {
            OCI_SCHEME
        };
        write!(f, "{scheme}{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check_registry(registry: &str) -> Result<(), String> {
    if registry.is_empty() {
        return Err("is empty".into());
    }
    let port = if let Some(v6) = registry.strip_prefix('[') {
        let (host, rest) = v6
            .split_once(']')
            .ok_or_else(|| format!("{registry:?} has an unclosed '['"))?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{registry:?} is not an IPv6 address in brackets"))?;
        match rest {
            "" => None,
            r => Some(
                r.strip_prefix(':')
                    .ok_or_else(|| format!("{registry:?}: expected ':PORT' after ']'"))?,
            ),
        }
    } else {
        let (host, port) = match registry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        };
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if !ok {
            return Err(format!("{registry:?} is not a host name or address"));
        }
        port
    };
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("{registry:?}: port {p:?} is not 1 to 65535"));
    }
    Ok(())
}

fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b.first()
                .is_some_and(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
            && b.last()
                .is_some_and(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
            && b.iter().all(|x| {
                x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'.' | b'_' | b'-')
            })
    };
    if repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(format!(
            "repository {repository:?} must be lowercase letters and digits, in '/'-separated parts joined by '.', '_' or '-'"
        ));
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1 to 128 of letters, digits, '_', '.', '-', not starting with '.' or '-'"
        ))
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<(), String> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "digest {digest:?} must be sha256: and 64 lowercase hex digits"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_tags_digests_ports_and_schemes() {
        let r = OciReference::parse("oci://127.0.0.1:5000/team/router:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/router");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, None);
        assert!(r.plain_http(), "loopback is plain HTTP");
        assert_eq!(r.manifest_reference(), "v1");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/team/router:v1");

        let r = OciReference::parse(&format!("oci://ghcr.io/acme/router@{D}")).unwrap();
        assert_eq!(r.host(), "ghcr.io");
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), D);
        assert!(!r.plain_http());

        let r =
            OciReference::parse(&format!("oci+http://registry.lan:5000/router:v2@{D}")).unwrap();
        assert!(r.plain_http());
        assert_eq!(r.manifest_reference(), D, "the digest decides");
        assert_eq!(
            r.to_string(),
            format!("oci+http://registry.lan:5000/router:v2@{D}")
        );

        let r = OciReference::parse("oci://[::1]:5000/router:v1").unwrap();
        assert_eq!(r.host(), "::1");
        assert!(r.plain_http());
        let pinned = OciReference::parse("oci://localhost:5000/router:v1")
            .unwrap()
            .pinned(D);
        assert_eq!(
            pinned.to_string(),
            format!("oci://localhost:5000/router:v1@{D}")
        );
    }

    #[test]
    fn refuses_malformed_references_with_the_reason() {
        let err = |s: &str| OciReference::parse(s).unwrap_err();
        assert!(err("oci://host:5000/router").contains("give a tag"));
        assert!(err("oci://host:5000").contains("no repository"));
        assert!(err("oci://host:0/r:v1").contains("port"));
        assert!(err("oci://host/Router:v1").contains("repository \"Router\""));
        assert!(err("oci://host/r:-v1").contains("tag \"-v1\""));
        assert!(err("oci://host/r@sha256:abc").contains("64 lowercase hex"));
        assert!(err("oci://ho st/r:v1").contains("not a host name"));
        assert!(err("file.wasm").contains("not an OCI reference"));
    }
}
