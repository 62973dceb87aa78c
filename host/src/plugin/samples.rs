//! Sample requests with expected decisions (`[[plugins.samples]]`): a new version of a router
//! plugin answers each of them before it is put in service, and a version that answers one
//! differently is refused, so a broken build or a wrong configuration never takes traffic.
//!
//! ```toml
//! [[plugins.samples]]
//! host = "shop.example"          # required: the request's authority
//! path = "/cart?id=1"            # default "/"; a query is split off as the router sees it
//! method = "GET"                 # default GET
//! headers = { x-user-id = "42" } # default none
//! client_address = "192.0.2.1:40000" # default 192.0.2.1:40000
//! listener = "web"               # default ""
//! websocket = false              # default false
//! expect = "forward"             # forward | redirect | respond | defer
//! pool = "stable"                # forward only: the pool the decision must name
//! settings = "web"               # forward only, optional
//! status = 302                   # redirect / respond only, optional
//! location = "https://x/"        # redirect only, optional
//! ```
//!
//! Fields left out of the expectation are not compared (a forward's header edits, say).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Decision, Header, RequestHead};

/// A sample as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSample {
    pub host: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub client_address: Option<String>,
    #[serde(default)]
    pub listener: Option<String>,
    #[serde(default)]
    pub websocket: bool,
    pub expect: String,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub settings: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub location: Option<String>,
}

/// What kind of decision a sample expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Forward,
    Redirect,
    Respond,
    Defer,
}

impl Expected {
    fn as_str(self) -> &'static str {
        match self {
            Expected::Forward => "forward",
            Expected::Redirect => "redirect",
            Expected::Respond => "respond",
            Expected::Defer => "defer",
        }
    }
}

/// A validated sample: the request a router is asked, and what its answer must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub request: RequestHead,
    pub expect: Expected,
    pub pool: Option<String>,
    pub settings: Option<String>,
    pub status: Option<u16>,
    pub location: Option<String>,
}

impl Sample {
    /// Validates `raw`; an error is `(field, reason)` with the field relative to the sample
    /// (`expect`, `headers.x-a`, …).
    pub fn validate(raw: &RawSample) -> Result<Sample, (String, String)> {
        let err = |field: &str, reason: String| Err((field.to_owned(), reason));
        let expect = match raw.expect.as_str() {
            "forward" => Expected::Forward,
            "redirect" => Expected::Redirect,
            "respond" => Expected::Respond,
            "defer" => Expected::Defer,
            other => {
                return err(
                    "expect",
                    format!(
                        "unknown decision {other:?}; expected \"forward\", \"redirect\", \"respond\" or \"defer\""
                    ),
                );
            }
        };
        if raw.host.is_empty() || http::uri::Authority::try_from(raw.host.as_str()).is_err() {
            return err("host", format!("{:?} is not a host[:port]", raw.host));
        }
        let method = raw.method.clone().unwrap_or_else(|| "GET".to_owned());
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            return err("method", format!("{method:?} is not an HTTP method"));
        }
        let target = raw.path.clone().unwrap_or_else(|| "/".to_owned());
        if !target.starts_with('/') || http::uri::PathAndQuery::try_from(target.as_str()).is_err() {
            return err(
                "path",
                format!("{target:?} is not an absolute request path (with an optional query)"),
            );
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.clone(), None),
        };
        let mut headers = Vec::with_capacity(raw.headers.len() + 1);
        headers.push(Header {
            name: "host".into(),
            value: raw.host.as_bytes().to_vec(),
        });
        for (name, value) in &raw.headers {
            let field = format!("headers.{name}");
            let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) else {
                return err(&field, format!("{name:?} is not a valid header name"));
            };
            if http::HeaderValue::from_str(value).is_err() {
                return err(&field, format!("{value:?} is not a valid header value"));
            }
            if n == http::header::HOST {
                return err(&field, "give the host in `host`".to_owned());
            }
            headers.push(Header {
                name: n.as_str().to_owned(),
                value: value.as_bytes().to_vec(),
            });
        }
        let client_address = raw
            .client_address
            .clone()
            .unwrap_or_else(|| "192.0.2.1:40000".to_owned());
        if client_address.parse::<std::net::SocketAddr>().is_err() {
            return err(
                "client_address",
                format!("{client_address:?} is not an ip:port"),
            );
        }
        let only = |field: &str, set: bool, allowed: &[Expected]| {
            if set && !allowed.contains(&expect) {
                Err((
                    field.to_owned(),
                    format!(
                        "does not apply to expect = {:?} (only to {})",
                        expect.as_str(),
                        allowed
                            .iter()
                            .map(|e| format!("{:?}", e.as_str()))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ))
            } else {
                Ok(())
            }
        };
        only("pool", raw.pool.is_some(), &[Expected::Forward])?;
        only("settings", raw.settings.is_some(), &[Expected::Forward])?;
        only(
            "status",
            raw.status.is_some(),
            &[Expected::Redirect, Expected::Respond],
        )?;
        only("location", raw.location.is_some(), &[Expected::Redirect])?;
        if let Some(status) = raw.status
            && !(200..=599).contains(&status)
        {
            return err("status", format!("{status} is not an HTTP status"));
        }
        Ok(Sample {
            request: RequestHead {
                method,
                scheme: "http".into(),
                authority: raw.host.to_ascii_lowercase(),
                path,
                query,
                headers,
                client_address,
                listener: raw.listener.clone().unwrap_or_default(),
                websocket: raw.websocket,
                tls_sni: None,
            },
            expect,
            pool: raw.pool.clone(),
            settings: raw.settings.clone(),
            status: raw.status,
            location: raw.location.clone(),
        })
    }

    /// Whether `decision` is what this sample expects; `Err` says how it differs.
    pub fn check(&self, decision: &Decision) -> Result<(), String> {
        let got = describe(decision);
        let mismatch = || {
            Err(format!(
                "{} {}{} expected {}, got {got}",
                self.request.method,
                self.request.authority,
                self.request.path,
                self.describe()
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

    fn describe(&self) -> String {
        let mut s = self.expect.as_str().to_owned();
        if let Some(p) = &self.pool {
            s += &format!(" to pool {p:?}");
        }
        if let Some(p) = &self.settings {
            s += &format!(" with settings {p:?}");
        }
        if let Some(p) = self.status {
            s += &format!(" with status {p}");
        }
        if let Some(p) = &self.location {
            s += &format!(" to {p:?}");
        }
        s
    }
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
    use super::*;
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
        let s = Sample::validate(&raw("defer")).unwrap();
        assert_eq!(s.request.method, "GET");
        assert_eq!(s.request.authority, "shop.example");
        assert_eq!(s.request.path, "/cart");
        assert_eq!(s.request.query.as_deref(), Some("id=1"));
        assert_eq!(s.request.headers.len(), 2);
        assert_eq!(s.request.headers[1].name, "x-user-id");
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

    #[test]
    fn refusals_name_the_field() {
        let field = |r: RawSample| Sample::validate(&r).unwrap_err().0;
        assert_eq!(field(raw("route")), "expect");
        let mut r = raw("defer");
        r.pool = Some("x".into());
        assert_eq!(field(r), "pool");
        let mut r = raw("forward");
        r.location = Some("x".into());
        assert_eq!(field(r), "location");
        let mut r = raw("defer");
        r.path = Some("cart".into());
        assert_eq!(field(r), "path");
        let mut r = raw("defer");
        r.headers.insert("bad name".into(), "v".into());
        assert_eq!(field(r), "headers.bad name");
        let mut r = raw("defer");
        r.client_address = Some("nowhere".into());
        assert_eq!(field(r), "client_address");
        let mut r = raw("respond");
        r.status = Some(99);
        assert_eq!(field(r), "status");
    }
}
