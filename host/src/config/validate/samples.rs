//! `[[plugins.samples]]`: the request each sample asks a router, and the decision it expects.

use crate::config::raw::RawSample;
use crate::config::{Expected, Sample, SampleRequest};

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
        headers.push(("host".to_owned(), raw.host.clone()));
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
            headers.push((n.as_str().to_owned(), value.clone()));
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
            request: SampleRequest {
                method,
                authority: raw.host.to_ascii_lowercase(),
                path,
                query,
                headers,
                client_address,
                listener: raw.listener.clone().unwrap_or_default(),
                websocket: raw.websocket,
            },
            expect,
            pool: raw.pool.clone(),
            settings: raw.settings.clone(),
            status: raw.status,
            location: raw.location.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

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

    #[test]
    fn builds_the_request_a_router_sees() {
        let s = Sample::validate(&raw("defer")).unwrap();
        assert_eq!(s.request.method, "GET");
        assert_eq!(s.request.authority, "shop.example");
        assert_eq!(s.request.path, "/cart");
        assert_eq!(s.request.query.as_deref(), Some("id=1"));
        assert_eq!(s.request.headers.len(), 2);
        assert_eq!(s.request.headers[1].0, "x-user-id");
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
