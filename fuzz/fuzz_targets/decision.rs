//! Plugin decisions: whatever a router returns, `check_decision` either refuses it with a reason
//! or guarantees what the gateway then relies on when it turns the decision into an action — a
//! status that exists, header names and values it can send (none silently dropped), a redirect
//! location that is a header value, and a forward path that stays a valid request target once
//! the client's query is appended.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use wasmgate::plugin::{
    Decision, DirectResponse, Forward, Header, HeaderEdit, Redirect, check_decision,
};

fn header(u: &mut Unstructured) -> Result<Header> {
    Ok(Header {
        name: String::arbitrary(u)?,
        value: Vec::<u8>::arbitrary(u)?,
    })
}

fn headers(u: &mut Unstructured) -> Result<Vec<Header>> {
    let n = u.int_in_range(0..=70)?;
    (0..n).map(|_| header(u)).collect()
}

fn decision(u: &mut Unstructured) -> Result<Decision> {
    Ok(match u.int_in_range(0..=3)? {
        0 => {
            let n = u.int_in_range(0..=70)?;
            let mut edits = Vec::with_capacity(n);
            for _ in 0..n {
                edits.push(match u.int_in_range(0..=2)? {
                    0 => HeaderEdit::Set(header(u)?),
                    1 => HeaderEdit::Append(header(u)?),
                    _ => HeaderEdit::Remove(String::arbitrary(u)?),
                });
            }
            Decision::Forward(Forward {
                pool: String::arbitrary(u)?,
                settings: String::arbitrary(u)?,
                server: Option::<String>::arbitrary(u)?,
                header_edits: edits,
                path: Option::<String>::arbitrary(u)?,
            })
        }
        1 => Decision::Redirect(Redirect {
            status: u16::arbitrary(u)?,
            location: String::arbitrary(u)?,
        }),
        2 => Decision::Respond(DirectResponse {
            status: u16::arbitrary(u)?,
            headers: headers(u)?,
            body: Vec::<u8>::arbitrary(u)?,
        }),
        _ => Decision::Defer,
    })
}

fn sendable(h: &Header) -> bool {
    HeaderName::from_bytes(h.name.as_bytes()).is_ok() && HeaderValue::from_bytes(&h.value).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(decision) = decision(&mut u) else {
        return;
    };
    let query: String = String::arbitrary(&mut u).unwrap_or_default();
    let Err(reason) = check_decision(&decision) else {
        match &decision {
            Decision::Forward(f) => {
                assert!(!f.pool.is_empty() && !f.settings.is_empty());
                for edit in &f.header_edits {
                    match edit {
                        HeaderEdit::Set(h) | HeaderEdit::Append(h) => assert!(sendable(h), "{h:?}"),
                        HeaderEdit::Remove(n) => {
                            assert!(HeaderName::from_bytes(n.as_bytes()).is_ok(), "{n:?}")
                        }
                    }
                }
                if let Some(path) = &f.path {
                    assert!(PathAndQuery::try_from(path.as_str()).is_ok(), "{path:?}");
                    // The proxy appends the client's query, which hyper already parsed.
                    if PathAndQuery::try_from(format!("/?{query}")).is_ok() {
                        let target = format!("{path}?{query}");
                        assert!(
                            PathAndQuery::try_from(target.as_str()).is_ok(),
                            "{target:?}: a checked path with a valid query is not a target"
                        );
                    }
                }
            }
            Decision::Redirect(r) => {
                assert!(StatusCode::from_u16(r.status).is_ok_and(|s| s.is_redirection()));
                assert!(HeaderValue::from_str(&r.location).is_ok(), "{:?}", r.location);
            }
            Decision::Respond(d) => {
                assert!(StatusCode::from_u16(d.status).is_ok());
                assert!(d.headers.iter().all(sendable), "{:?}", d.headers);
            }
            Decision::Defer => {}
        }
        return;
    };
    assert!(!reason.is_empty());
});
