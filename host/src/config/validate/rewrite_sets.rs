//! `[[rewrite_sets]]`: header rewrites and the server-variable conditions they apply under.

use std::collections::HashSet;

use http::{HeaderName, HeaderValue};

use super::Result;
use crate::config::raw::{RawHeaderRewrite, RawRewriteCondition, RawRewriteSet};
use crate::config::*;

pub(super) fn rewrite_set(path: &str, raw: &RawRewriteSet) -> Result<RewriteSet> {
    let headers = |section: &str, list: &[RawHeaderRewrite]| -> Result<Vec<HeaderRewrite>> {
        let mut seen = HashSet::new();
        list.iter()
            .enumerate()
            .map(|(i, h)| {
                let field = format!("{path}.{section}[{i}]");
                let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                    ConfigError::new(
                        format!("{field}.name"),
                        format!("{:?} is not a header name", h.name),
                    )
                })?;
                // Application Gateway refuses these: they carry the connection's own state
                // (RFC 9110 §7.6.1), and rewriting them would break upgrades such as WebSocket.
                if name == http::header::CONNECTION || name == http::header::UPGRADE {
                    return Err(ConfigError::new(
                        format!("{field}.name"),
                        format!("{:?} cannot be rewritten", h.name),
                    ));
                }
                // Conditional rewrites of one header may differ by condition.
                if h.conditions.is_empty() && !seen.insert(name.clone()) {
                    return Err(ConfigError::new(
                        format!("{field}.name"),
                        format!("{:?} is rewritten twice in this set", h.name),
                    ));
                }
                let conditions = h
                    .conditions
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        rewrite_condition(
                            &format!("{field}.conditions[{j}]"),
                            c,
                            section == "response_headers",
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let value = match h.value.as_deref() {
                    None | Some("") => None,
                    Some(v) => Some(HeaderValue::from_str(v).map_err(|_| {
                        ConfigError::new(
                            format!("{field}.value"),
                            format!("{v:?} is not a valid header value"),
                        )
                    })?),
                };
                Ok(HeaderRewrite {
                    name,
                    value,
                    conditions,
                })
            })
            .collect()
    };
    Ok(RewriteSet {
        name: raw.name.clone(),
        request_headers: headers("request_headers", &raw.request_headers)?,
        response_headers: headers("response_headers", &raw.response_headers)?,
    })
}

/// A rewrite condition: a server variable Application Gateway names (`var_uri_path`,
/// `http_req_<header>`, `http_resp_<header>`), and a regular expression.
fn rewrite_condition(
    path: &str,
    raw: &RawRewriteCondition,
    response: bool,
) -> Result<RewriteCondition> {
    let name = raw.variable.as_str();
    let lower = name.to_ascii_lowercase();
    let header = |prefix: &str| {
        HeaderName::from_bytes(&name.as_bytes()[prefix.len()..]).map_err(|_| {
            ConfigError::new(
                format!("{path}.variable"),
                format!("{name:?} does not name a header"),
            )
        })
    };
    let variable = if lower.starts_with("http_req_") {
        ServerVariable::RequestHeader(header("http_req_")?)
    } else if lower.starts_with("http_resp_") {
        ServerVariable::ResponseHeader(header("http_resp_")?)
    } else {
        match lower.as_str() {
            "var_client_ip" => ServerVariable::ClientIp,
            "var_client_port" => ServerVariable::ClientPort,
            "var_host" => ServerVariable::Host,
            "var_http_method" => ServerVariable::Method,
            "var_uri_path" => ServerVariable::UriPath,
            "var_query_string" => ServerVariable::QueryString,
            "var_request_uri" => ServerVariable::RequestUri,
            "var_request_scheme" => ServerVariable::Scheme,
            "var_server_port" => ServerVariable::ServerPort,
            "var_http_status" => ServerVariable::Status,
            "var_client_certificate" => ServerVariable::ClientCertificate,
            "var_client_certificate_issuer" => ServerVariable::ClientCertificateIssuer,
            "var_client_certificate_subject" => ServerVariable::ClientCertificateSubject,
            "var_client_certificate_serial" => ServerVariable::ClientCertificateSerial,
            "var_client_certificate_fingerprint" => ServerVariable::ClientCertificateFingerprint,
            "var_client_certificate_verification" => ServerVariable::ClientCertificateVerification,
            _ => {
                return Err(ConfigError::new(
                    format!("{path}.variable"),
                    format!(
                        "{name:?} is not a supported server variable (http_req_<header>, http_resp_<header>, var_client_ip, var_client_port, var_host, var_http_method, var_uri_path, var_query_string, var_request_uri, var_request_scheme, var_server_port, var_http_status, var_client_certificate, var_client_certificate_issuer, var_client_certificate_subject, var_client_certificate_serial, var_client_certificate_fingerprint, var_client_certificate_verification)"
                    ),
                ));
            }
        }
    };
    if !response
        && matches!(
            variable,
            ServerVariable::ResponseHeader(_) | ServerVariable::Status
        )
    {
        return Err(ConfigError::new(
            format!("{path}.variable"),
            format!("{name:?} is known only once the response arrives: use it in response_headers"),
        ));
    }
    let pattern = regex_automata::meta::Regex::builder()
        .syntax(
            regex_automata::util::syntax::Config::new()
                .case_insensitive(raw.ignore_case.unwrap_or(true)),
        )
        .build(&raw.pattern)
        .map_err(|e| {
            ConfigError::new(
                format!("{path}.pattern"),
                format!("{:?} is not a regular expression: {e}", raw.pattern),
            )
        })?;
    Ok(RewriteCondition {
        variable,
        pattern,
        negate: raw.negate,
    })
}
