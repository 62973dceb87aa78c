//! A router plugin's answers to its samples (`[[plugins.samples]]`, validated into
//! [`Sample`]s by the configuration): a new version answers each of them before it is put in
//! service, and a version that answers one differently is refused.

use crate::config::{Expected, Sample};

use super::{Decision, Header, RequestHead};

/// What a router is asked for a sample, and how its answer is judged.
pub trait RouterSample {
    /// The request head the router is given.
    fn request_head(&self) -> RequestHead;

    /// Whether `decision` is what this sample expects; `Err` says how it differs.
    fn check(&self, decision: &Decision) -> Result<(), String>;
}

impl RouterSample for Sample {
    fn request_head(&self) -> RequestHead {
        let r = &self.request;
        RequestHead {
            method: r.method.clone(),
            scheme: "http".into(),
            authority: r.authority.clone(),
            path: r.path.clone(),
            query: r.query.clone(),
            headers: r
                .headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: value.as_bytes().to_vec(),
                })
                .collect(),
            client_address: r.client_address.clone(),
            listener: r.listener.clone(),
            websocket: r.websocket,
            tls_sni: None,
        }
    }

    fn check(&self, decision: &Decision) -> Result<(), String> {
        let got = describe(decision);
        let mismatch = || {
            Err(format!(
                "{} {}{} expected {}, got {got}",
                self.request.method,
                self.request.authority,
                self.request.path,
                expectation(self)
            ))
        };
        match (self.expect, decision) {
            (Expected::Forward, Decision::Forward(f)) => {
                if self.pool.as_ref().is_some_and(|p| *p != f.pool)
                    || self.settings.as_ref().is_some_and(|s| *s != f.settings)
                {
                    return mismatch();
                }
                Ok(())
            }
            (Expected::Redirect, Decision::Redirect(r)) => {
                if self.status.is_some_and(|s| s != r.status)
                    || self.location.as_ref().is_some_and(|l| *l != r.location)
                {
                    return mismatch();
                }
                Ok(())
            }
            (Expected::Respond, Decision::Respond(r)) => {
                if self.status.is_some_and(|s| s != r.status) {
                    return mismatch();
                }
                Ok(())
            }
            (Expected::Defer, Decision::Defer) => Ok(()),
            _ => mismatch(),
        }
    }
}

/// The decision a sample expects, in a few words.
fn expectation(sample: &Sample) -> String {
    let mut s = sample.expect.as_str().to_owned();
    if let Some(p) = &sample.pool {
        s += &format!(" to pool {p:?}");
    }
    if let Some(p) = &sample.settings {
        s += &format!(" with settings {p:?}");
    }
    if let Some(p) = sample.status {
        s += &format!(" with status {p}");
    }
    if let Some(p) = &sample.location {
        s += &format!(" to {p:?}");
    }
    s
}

/// A decision in a few words, for sample failures and shadow disagreements.
pub fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Forward(f) => {
            let mut s = format!(
                "forward to pool {:?} with settings {:?}",
                f.pool, f.settings
            );
            if let Some(server) = &f.server {
                s += &format!(" (server {server:?})");
            }
            if let Some(path) = &f.path {
                s += &format!(" (path {path:?})");
            }
            if !f.header_edits.is_empty() {
                s += &format!(" ({} header edits)", f.header_edits.len());
            }
            s
        }
        Decision::Redirect(r) => format!("redirect {} to {:?}", r.status, r.location),
        Decision::Respond(r) => format!("respond {} ({} bytes)", r.status, r.body.len()),
        Decision::Defer => "defer".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::raw::RawSample;
    use crate::plugin::{Forward, Redirect};

    fn raw(expect: &str) -> RawSample {
        RawSample {
            host: "Shop.Example".into(),
            path: Some("/cart?id=1".into()),
            method: None,
            headers: BTreeMap::from([("x-user-id".into(), "42".into())]),
            client_address: None,
            listener: None,
            websocket: false,
            expect: expect.into(),
            pool: None,
            settings: None,
            status: None,
            location: None,
        }
    }

    fn forward(pool: &str) -> Decision {
        Decision::Forward(Forward {
            pool: pool.into(),
            settings: "web".into(),
            server: None,
            header_edits: vec![],
            path: None,
        })
    }

    #[test]
    fn builds_the_request_a_router_sees() {
        let head = Sample::validate(&raw("defer")).unwrap().request_head();
        assert_eq!(head.method, "GET");
        assert_eq!(head.scheme, "http");
        assert_eq!(head.authority, "shop.example");
        assert_eq!(head.path, "/cart");
        assert_eq!(head.query.as_deref(), Some("id=1"));
        assert_eq!(head.headers.len(), 2);
        assert_eq!(head.headers[0].name, "host");
        assert_eq!(head.headers[0].value, b"Shop.Example");
        assert_eq!(head.headers[1].name, "x-user-id");
        assert_eq!(head.client_address, "192.0.2.1:40000");
        assert_eq!(head.tls_sni, None);
    }

    #[test]
    fn checks_only_what_is_expected() {
        let mut r = raw("forward");
        r.pool = Some("stable".into());
        let s = Sample::validate(&r).unwrap();
        assert!(s.check(&forward("stable")).is_ok());
        let e = s.check(&forward("canary")).unwrap_err();
        assert!(e.contains("expected forward to pool \"stable\""), "{e}");
        assert!(e.contains("got forward to pool \"canary\""), "{e}");
        assert!(s.check(&Decision::Defer).is_err());

        let mut r = raw("redirect");
        r.status = Some(301);
        let s = Sample::validate(&r).unwrap();
        let redirect = |status| {
            Decision::Redirect(Redirect {
                status,
                location: "https://x/".into(),
            })
        };
        assert!(s.check(&redirect(301)).is_ok());
        assert!(s.check(&redirect(302)).is_err());
    }
}
