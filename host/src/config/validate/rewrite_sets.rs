//! `[[rewrite_sets]]`: Application Gateway's rewrite rules (conditions on server variables,
//! header and URL actions), and the header lists that are a shorthand for one-action rules.

use std::collections::HashSet;

use http::{HeaderName, HeaderValue};

use super::Result;
use crate::config::raw::{RawRewriteCondition, RawRewriteRule, RawRewriteSet, RawUrlRewrite};
use crate::config::*;

/// Application Gateway's default rule sequence.
const DEFAULT_SEQUENCE: u32 = 100;

pub(super) fn rewrite_set(path: &str, raw: &RawRewriteSet) -> Result<RewriteSet> {
    let header_lists = !raw.request_headers.is_empty() || !raw.response_headers.is_empty();
    if !raw.rules.is_empty() && header_lists {
        return Err(ConfigError::new(
            format!("{path}.rules"),
            "a rewrite set has either rules or request_headers/response_headers lists, not both",
        ));
    }
    let mut rules = Vec::new();
    // The shorthand: each header rewrite is a rule of its own, with its own conditions.
    for (section, list) in [
        ("request_headers", &raw.request_headers),
        ("response_headers", &raw.response_headers),
    ] {
        let response = section == "response_headers";
        let mut seen = HashSet::new();
        for (i, h) in list.iter().enumerate() {
            let field = format!("{path}.{section}[{i}]");
            let mut conditions = conditions(&field, &h.conditions, response)?;
            let action = header_action(
                &field,
                &h.name,
                h.value.as_deref(),
                &mut conditions,
                response,
            )?;
            // Conditional rewrites of one header may differ by condition.
            if h.conditions.is_empty() && !seen.insert(action.name.clone()) {
                return Err(ConfigError::new(
                    format!("{field}.name"),
                    format!("{:?} is rewritten twice in this set", h.name),
                ));
            }
            let (request_headers, response_headers) = if response {
                (Vec::new(), vec![action])
            } else {
                (vec![action], Vec::new())
            };
            rules.push(RewriteRule {
                name: format!("{section}[{i}]"),
                sequence: DEFAULT_SEQUENCE,
                conditions,
                request_headers,
                response_headers,
                url: None,
            });
        }
    }
    let mut names = HashSet::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let field = format!("{path}.rules[{i}]");
        if !names.insert(r.name.as_str()) {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("{:?} names two rules of this set", r.name),
            ));
        }
        rules.push(rewrite_rule(&field, r)?);
    }
    // Application Gateway applies rules by ascending sequence; a stable sort keeps the written
    // order among equals.
    rules.sort_by_key(|r| r.sequence);
    let reroutes = rules
        .iter()
        .any(|r| r.url.as_ref().is_some_and(|u| u.reroute));
    // Application Gateway requires a conditional rule, or one that does not re-evaluate the
    // path map: otherwise every evaluation would lead to another.
    if reroutes
        && rules
            .iter()
            .all(|r| r.conditions.is_empty() && r.url.as_ref().is_some_and(|u| u.reroute))
    {
        return Err(ConfigError::new(
            format!("{path}.rules"),
            "every rule re-evaluates the path map unconditionally, which would never end: add a condition, or a rule without reroute",
        ));
    }
    Ok(RewriteSet {
        name: raw.name.clone(),
        rules,
        reroutes,
    })
}

fn rewrite_rule(field: &str, raw: &RawRewriteRule) -> Result<RewriteRule> {
    // A rule that acts on the request is decided on the request: it cannot wait for the
    // response's variables.
    let response_only = raw.request_headers.is_empty() && raw.url_configuration.is_none();
    let mut conditions = conditions(field, &raw.conditions, response_only)?;
    let mut actions = |section: &str, list: &[crate::config::raw::RawHeaderAction]| {
        let response = section == "response_headers";
        let mut seen = HashSet::new();
        list.iter()
            .enumerate()
            .map(|(j, h)| {
                let hf = format!("{field}.{section}[{j}]");
                let action =
                    header_action(&hf, &h.name, h.value.as_deref(), &mut conditions, response)?;
                if !seen.insert(action.name.clone()) {
                    return Err(ConfigError::new(
                        format!("{hf}.name"),
                        format!("{:?} is rewritten twice in this rule", h.name),
                    ));
                }
                Ok(action)
            })
            .collect::<Result<Vec<_>>>()
    };
    let request_headers = actions("request_headers", &raw.request_headers)?;
    let response_headers = actions("response_headers", &raw.response_headers)?;
    let url = raw
        .url_configuration
        .as_ref()
        .map(|u| url_rewrite(&format!("{field}.url_configuration"), u, &mut conditions))
        .transpose()?;
    if request_headers.is_empty() && response_headers.is_empty() && url.is_none() {
        return Err(ConfigError::new(
            field,
            "a rule needs an action: request_headers, response_headers or url_configuration",
        ));
    }
    Ok(RewriteRule {
        name: raw.name.clone(),
        sequence: raw.rule_sequence.unwrap_or(DEFAULT_SEQUENCE),
        conditions,
        request_headers,
        response_headers,
        url,
    })
}

fn header_action(
    field: &str,
    name: &str,
    value: Option<&str>,
    conditions: &mut [RewriteCondition],
    response: bool,
) -> Result<HeaderAction> {
    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        ConfigError::new(
            format!("{field}.name"),
            format!("{name:?} is not a header name"),
        )
    })?;
    // Application Gateway refuses these: they carry the connection's own state (RFC 9110
    // §7.6.1), and rewriting them would break upgrades such as WebSocket.
    if header == http::header::CONNECTION || header == http::header::UPGRADE {
        return Err(ConfigError::new(
            format!("{field}.name"),
            format!("{name:?} cannot be rewritten"),
        ));
    }
    let value = match value {
        None | Some("") => None,
        Some(v) => {
            let vf = format!("{field}.value");
            let t = template(&vf, v, conditions, response)?;
            for part in &t.parts {
                if let TemplatePart::Text(text) = part
                    && HeaderValue::from_str(text).is_err()
                {
                    return Err(ConfigError::new(
                        vf,
                        format!("{v:?} is not a valid header value"),
                    ));
                }
            }
            Some(t)
        }
    };
    Ok(HeaderAction {
        name: header,
        value,
    })
}

fn url_rewrite(
    field: &str,
    raw: &RawUrlRewrite,
    conditions: &mut [RewriteCondition],
) -> Result<UrlRewrite> {
    let path = match raw.modified_path.as_deref() {
        None => None,
        Some(p) => {
            let pf = format!("{field}.modified_path");
            let t = template(&pf, p, conditions, false)?;
            // A path is absolute; one that starts with a variable gets a "/" if its value lacks
            // one.
            let absolute = match t.parts.first() {
                None => false,
                Some(TemplatePart::Text(s)) => s.starts_with('/'),
                Some(_) => true,
            };
            if !absolute {
                return Err(ConfigError::new(
                    pf,
                    format!("{p:?} does not start with \"/\""),
                ));
            }
            check_url_text(&pf, p, &t, b"?#")?;
            Some(t)
        }
    };
    let query = match raw.modified_query_string.as_deref() {
        None => None,
        Some(q) => {
            let qf = format!("{field}.modified_query_string");
            if q.starts_with('?') {
                return Err(ConfigError::new(
                    qf,
                    format!("{q:?}: the query string is written without the leading \"?\""),
                ));
            }
            let t = template(&qf, q, conditions, false)?;
            check_url_text(&qf, q, &t, b"#")?;
            Some(t)
        }
    };
    if path.is_none() && query.is_none() && !raw.reroute {
        return Err(ConfigError::new(
            field,
            "a URL configuration needs modified_path, modified_query_string or reroute",
        ));
    }
    Ok(UrlRewrite {
        path,
        query,
        reroute: raw.reroute,
    })
}

/// The written text of a URL part may hold only what a request target can (RFC 9112 §3.2):
/// visible ASCII, without `excluded`. Variables' values are percent-encoded where they need it.
fn check_url_text(field: &str, written: &str, t: &Template, excluded: &[u8]) -> Result<()> {
    let bad = t.parts.iter().any(|p| match p {
        TemplatePart::Text(s) => s
            .bytes()
            .any(|b| !b.is_ascii_graphic() || excluded.contains(&b)),
        _ => false,
    });
    if bad {
        let excluded: Vec<String> = excluded
            .iter()
            .map(|b| format!("{:?}", *b as char))
            .collect();
        return Err(ConfigError::new(
            field,
            format!(
                "{written:?} holds a character a URL cannot carry here (spaces, controls, non-ASCII, {})",
                excluded.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A value: text, with `{variable}` and `{variable_N}` (group N of what the rule's condition on
/// that variable matched) in braces. Braces around anything that is not a variable's name
/// (`var_`, `http_req_`, `http_resp_`) are text.
fn template(
    field: &str,
    written: &str,
    conditions: &mut [RewriteCondition],
    response: bool,
) -> Result<Template> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = written;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + len];
        let lower = name.to_ascii_lowercase();
        if !["var_", "http_req_", "http_resp_"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            text.push_str(&rest[..open + len + 1]);
            rest = &rest[open + len + 1..];
            continue;
        }
        text.push_str(&rest[..open]);
        if !text.is_empty() {
            parts.push(TemplatePart::Text(std::mem::take(&mut text).into()));
        }
        let part = variable_part(field, name, conditions)?;
        if part.on_response(conditions) && !response {
            return Err(ConfigError::new(
                field,
                format!(
                    "{{{name}}} is known only once the response arrives: use it in response_headers"
                ),
            ));
        }
        parts.push(part);
        rest = &rest[open + len + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(TemplatePart::Text(text.into()));
    }
    Ok(Template {
        parts: parts.into(),
    })
}

/// `{name}`: a capture when `name` is `<variable>_<N>` and a condition of the rule tests
/// `<variable>` (Application Gateway's `{var_uri_path_1}`, `{http_req_Host_2}`), else a variable.
fn variable_part(
    field: &str,
    name: &str,
    conditions: &mut [RewriteCondition],
) -> Result<TemplatePart> {
    let capture = name.rsplit_once('_').and_then(|(prefix, digits)| {
        let group = digits.parse::<usize>().ok()?;
        Some((prefix, group, ServerVariable::parse(prefix)?))
    });
    if let Some((prefix, group, variable)) = capture {
        if let Some(i) = conditions.iter().position(|c| c.variable == variable) {
            let c = &mut conditions[i];
            let groups = c
                .pattern
                .group_info()
                .group_len(regex_automata::PatternID::ZERO)
                - 1;
            if group > groups {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "{{{name}}} uses capture group {group} of the condition on {prefix}, whose pattern has {groups}"
                    ),
                ));
            }
            c.captures_used = true;
            return Ok(TemplatePart::Capture {
                condition: i,
                group,
            });
        }
        // A header name with an underscore is no header the gateway forwards (see
        // `drop_unusual_names`): `{http_req_Host_1}` is always a capture.
        if !matches!(ServerVariable::parse(name), Some(ServerVariable::Cookie(_))) {
            return Err(ConfigError::new(
                field,
                format!(
                    "{{{name}}} uses a capture of {prefix}, which no condition of this rule tests"
                ),
            ));
        }
    }
    ServerVariable::parse(name)
        .map(TemplatePart::Variable)
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!(
                    "{{{name}}} is not a supported server variable ({})",
                    ServerVariable::NAMES
                ),
            )
        })
}

fn conditions(
    field: &str,
    raw: &[RawRewriteCondition],
    response: bool,
) -> Result<Vec<RewriteCondition>> {
    raw.iter()
        .enumerate()
        .map(|(j, c)| rewrite_condition(&format!("{field}.conditions[{j}]"), c, response))
        .collect()
}

/// A rewrite condition: a server variable Application Gateway names (`var_uri_path`,
/// `http_req_<header>`, `http_resp_<header>`), and an RE2-style regular expression (the
/// `regex` family's syntax: no look-around or back-references, as RE2).
fn rewrite_condition(
    path: &str,
    raw: &RawRewriteCondition,
    response: bool,
) -> Result<RewriteCondition> {
    let name = raw.variable.as_str();
    let lower = name.to_ascii_lowercase();
    let variable = ServerVariable::parse(name).ok_or_else(|| {
        let reason = if lower.starts_with("http_req_") || lower.starts_with("http_resp_") {
            format!("{name:?} does not name a header")
        } else {
            format!(
                "{name:?} is not a supported server variable ({})",
                ServerVariable::NAMES
            )
        };
        ConfigError::new(format!("{path}.variable"), reason)
    })?;
    if !response && variable.on_response() {
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
            // The syntax error's last line says what is wrong ("unclosed group"); the lines
            // above it draw the pattern.
            let why = std::error::Error::source(&e).map_or_else(
                || e.to_string(),
                |s| {
                    let text = s.to_string();
                    let last = text.lines().last().unwrap_or_default();
                    last.strip_prefix("error: ").unwrap_or(last).to_owned()
                },
            );
            ConfigError::new(
                format!("{path}.pattern"),
                format!("{:?} is not a regular expression: {why}", raw.pattern),
            )
        })?;
    Ok(RewriteCondition {
        variable,
        pattern,
        negate: raw.negate,
        captures_used: false,
    })
}
