//! The plugin endpoints of the admin API: load, replace, unload, shadow and promote plugins
//! while traffic flows (see [`crate::plugin::PluginRegistry`] for what each does).
//!
//! | request | does |
//! |---|---|
//! | `GET /api/plugins/{name}` | the plugin, with its shadow comparison |
//! | `POST /api/plugins/{name}/load` | loads a plugin that has no version |
//! | `POST /api/plugins/{name}/replace` | replaces the active version |
//! | `POST /api/plugins/{name}/unload`, `DELETE /api/plugins/{name}` | unloads it |
//! | `POST /api/plugins/{name}/shadow` | runs a candidate beside the active version |
//! | `DELETE /api/plugins/{name}/shadow` | stops the candidate |
//! | `POST /api/plugins/{name}/promote` | puts the candidate in service |
//!
//! `load`, `replace` and `shadow` take the component as the request body
//! (`Content-Type: application/wasm`, at most [`MAX_COMPONENT_BYTES`]) or from a file on the
//! gateway's host (`?path=/srv/plugins/router.wasm`, with an empty body), and these query
//! parameters: `kind` (`router` or `probe`; needed for a name the configuration does not
//! declare), `config` (the string passed to `init`, replacing the configuration's), and for
//! `shadow` `sample` (the share of requests compared, above 0 and at most 1; default 1).
//!
//! A success answers 200 with the plugin's view. A refusal changes nothing and answers with a
//! JSON `{"error": ...}`: 400 (bad parameters), 404 (no such plugin), 409 (the plugin's state
//! does not allow it: loading a loaded plugin, replacing an unloaded one, promoting without a
//! candidate), 413 (component too large), 422 (the component was refused: not a component,
//! wrong kind, `init` failed, a sample answered otherwise than expected).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{error_body, json};
use crate::config::PluginKind;
use crate::control::ControlHandle;
use crate::plugin::{
    ChangeError, ComponentSource, MAX_COMPONENT_BYTES, PluginSlot, VersionRequest,
};

/// Where the plugin endpoints live: `/api/plugins/{name}[/{action}]`.
pub const PREFIX: &str = "/api/plugins/";

/// Answers a request under [`PREFIX`] (already authorised).
pub async fn handle(req: Request<Incoming>, control: &ControlHandle) -> Response<Full<Bytes>> {
    let path = req.uri().path()[PREFIX.len()..].to_owned();
    let (name, action) = match path.split_once('/') {
        Some((name, action)) => (name.to_owned(), action.to_owned()),
        None => (path.clone(), String::new()),
    };
    let name = percent_decode(&name);
    if name.is_empty() {
        return error(StatusCode::NOT_FOUND, "no such admin resource");
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    let registry = control.plugins();
    let method = req.method().clone();
    let result = match (method.clone(), action.as_str()) {
        (Method::GET | Method::HEAD, "") => registry
            .by_name(&name)
            .ok_or(ChangeError::NotFound(name.clone())),
        (Method::DELETE, "") | (Method::POST, "unload") => registry.unload(&name).await,
        (Method::POST, "promote") => registry.promote(&name).await,
        (Method::DELETE, "shadow") => registry.stop_shadow(&name).await,
        (Method::POST, "load" | "replace" | "shadow") => {
            let request = match version_request(req, &query).await {
                Ok(r) => r,
                Err(res) => return res,
            };
            match action.as_str() {
                "load" => registry.load(&name, request).await,
                "replace" => registry.replace(&name, request).await,
                _ => {
                    let sample = match query.iter().find(|(k, _)| k == "sample") {
                        None => 1.0,
                        Some((_, v)) => match v.parse::<f64>() {
                            Ok(s) => s,
                            Err(_) => {
                                return error(
                                    StatusCode::BAD_REQUEST,
                                    &format!("sample: {v:?} is not a number"),
                                );
                            }
                        },
                    };
                    registry.shadow(&name, request, sample).await
                }
            }
        }
        (_, "" | "unload" | "promote" | "shadow" | "load" | "replace") => {
            let allow = match action.as_str() {
                "" => "GET, HEAD, DELETE",
                "shadow" => "POST, DELETE",
                _ => "POST",
            };
            let mut res = error(StatusCode::METHOD_NOT_ALLOWED, &format!("use {allow}"));
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return res;
        }
        _ => return error(StatusCode::NOT_FOUND, "no such admin resource"),
    };
    match result {
        Ok(slot) => view(&slot),
        Err(e) => {
            let status = match &e {
                ChangeError::NotFound(_) => StatusCode::NOT_FOUND,
                ChangeError::Conflict(_) => StatusCode::CONFLICT,
                ChangeError::BadRequest(_) => StatusCode::BAD_REQUEST,
                ChangeError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            if method != Method::GET && method != Method::HEAD {
                tracing::warn!(
                    target: "wasmgate::plugin",
                    plugin = %name,
                    action = %action,
                    "refused: {e}; the running version keeps serving"
                );
            }
            error(status, &e.to_string())
        }
    }
}

fn view(slot: &Arc<PluginSlot>) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(&super::view::PluginView::of(slot)) {
        Ok(body) => json(StatusCode::OK, &body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot serialize the view: {e}"),
        ),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &error_body(message))
}

/// The component (body or `path`) and parameters of a load, replace or shadow.
async fn version_request(
    req: Request<Incoming>,
    query: &[(String, String)],
) -> Result<VersionRequest, Response<Full<Bytes>>> {
    let param = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    for (key, _) in query {
        if !matches!(key.as_str(), "kind" | "path" | "config" | "sample") {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("unknown parameter {key:?}; expected kind, path, config or sample"),
            ));
        }
    }
    let kind = match param("kind").map(String::as_str) {
        None => None,
        Some("router") => Some(PluginKind::Router),
        Some("probe") => Some(PluginKind::Probe),
        Some("message-filter") => Some(PluginKind::MessageFilter),
        Some(other) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "kind: unknown kind {other:?}; expected \"router\", \"probe\" or \"message-filter\""
                ),
            ));
        }
    };
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the component is over the {MAX_COMPONENT_BYTES}-byte limit"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_COMPONENT_BYTES as u64) {
        return Err(too_large());
    }
    let body = match Limited::new(req.into_body(), MAX_COMPONENT_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the component: {e}"),
            ));
        }
    };
    let component = match (param("path"), body.is_empty()) {
        (Some(path), true) => ComponentSource::Path(path.into()),
        (None, false) => ComponentSource::Bytes(Arc::from(&body[..])),
        (Some(_), false) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "give the component as the body or as ?path=, not both",
            ));
        }
        (None, true) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "no component: send the .wasm as the body (Content-Type: application/wasm) or name a file with ?path=",
            ));
        }
    };
    Ok(VersionRequest {
        component,
        kind,
        config: param("config").cloned(),
    })
}

/// `a=1&b=x%20y` → `[("a", "1"), ("b", "x y")]` (`+` is a space, as in forms).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// Decodes `%XX` escapes (RFC 3986 §2.1); a malformed escape is kept as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes everything but RFC 3986 §2.3's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip() {
        let config = r#"{"variants": [{"name": "a & b", "weight": 1}]}"#;
        let q = format!("kind=router&config={}&x", percent_encode(config));
        let parsed = parse_query(&q);
        assert_eq!(parsed[0], ("kind".into(), "router".into()));
        assert_eq!(parsed[1], ("config".into(), config.into()));
        assert_eq!(parsed[2], ("x".into(), String::new()));
        assert_eq!(percent_decode("a+b%2"), "a+b%2");
        assert_eq!(parse_query("a=x+y")[0].1, "x y");
    }
}
