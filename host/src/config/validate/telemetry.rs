//! `[telemetry]`: the OTLP collector spans are exported to, and the per-request histograms and
//! trace context switched off.

use super::Result;
use crate::config::raw::RawTelemetry;
use crate::config::*;

const FIELD: &str = "telemetry.otlp_endpoint";

pub(super) fn telemetry(raw: Option<&RawTelemetry>) -> Result<Telemetry> {
    let d = Telemetry::default();
    let Some(raw) = raw else {
        return Ok(d);
    };
    let service_name = match raw.service_name.as_deref() {
        None => DEFAULT_SERVICE_NAME.to_owned(),
        Some(name) if name.trim().is_empty() => {
            return Err(ConfigError::new(
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        Some(name) => name.to_owned(),
    };
    let otlp = raw
        .otlp_endpoint
        .as_deref()
        .map(otlp_endpoint)
        .transpose()?;
    Ok(Telemetry {
        otlp,
        service_name,
        request_histograms: raw.request_histograms.unwrap_or(d.request_histograms),
        trace_context: raw.trace_context.unwrap_or(d.trace_context),
    })
}

/// `http://host:port[/base]`: plain HTTP (the exporter speaks no TLS; put a collector on the
/// machine or the local network), an explicit port, no query, user or fragment.
fn otlp_endpoint(text: &str) -> Result<OtlpEndpoint> {
    let bad = |why: String| ConfigError::new(FIELD, format!("{text:?} {why}"));
    let uri: http::Uri = text
        .parse()
        .map_err(|e| bad(format!("is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "uses https, which the exporter does not speak; use an http:// URL (OTLP/HTTP, usually port 4318)".into(),
            ));
        }
        Some(other) => return Err(bad(format!("has scheme {other:?}; use http://"))),
        None => {
            return Err(bad(
                "is not an absolute URL; write it as http://host:port".into()
            ));
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("has no host; write it as http://host:port".into()))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry a user name or password".into()));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("has no host; write it as http://host:port".into()));
    }
    let port = authority
        .port_u16()
        .ok_or_else(|| bad("has no port; OTLP/HTTP collectors usually listen on 4318".into()))?;
    if port == 0 {
        return Err(bad("has port 0".into()));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query".into()));
    }
    let base = uri.path().trim_end_matches('/');
    Ok(OtlpEndpoint {
        host: host.to_owned(),
        port,
        traces_path: format!("{base}/v1/traces"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> std::result::Result<OtlpEndpoint, String> {
        otlp_endpoint(text).map_err(|e| e.to_string())
    }

    #[test]
    fn otlp_endpoints() {
        let e = endpoint("http://127.0.0.1:4318").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 4318));
        assert_eq!(e.traces_path, "/v1/traces");
        assert_eq!(e.authority(), "127.0.0.1:4318");
        let e = endpoint("http://collector.internal:4318/otlp/").unwrap();
        assert_eq!(e.traces_path, "/otlp/v1/traces");
        let e = endpoint("http://[::1]:4318").unwrap();
        assert_eq!(
            (e.host.as_str(), e.authority()),
            ("::1", "[::1]:4318".into())
        );

        for (text, why) in [
            ("https://c:4318", "uses https"),
            ("grpc://c:4317", "has scheme \"grpc\""),
            ("/v1/traces", "is not an absolute URL"),
            ("http://collector", "has no port"),
            ("http://c:0", "has port 0"),
            ("http://u:p@c:4318", "user name"),
            ("http://c:4318/?x=1", "must not have a query"),
            ("not a url", "is not a URL"),
        ] {
            let e = endpoint(text).unwrap_err();
            assert!(e.starts_with(FIELD), "{text}: {e}");
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
