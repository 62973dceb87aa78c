//! Rewrite sets, as Application Gateway applies them: a set's rules in sequence, each acting
//! when all its conditions hold. On the request (decided in the route phase, since a URL
//! rewrite may re-evaluate the path map) the header and URL actions; on the response, the
//! response header actions, whose conditions may test the response. Conditions and values
//! read server variables through one function, [`lookup`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use regex_automata::Input;
use regex_automata::util::captures::Captures;

use super::headers::X_FORWARDED_FOR;
use crate::config::{
    Config, RewriteCondition, RewriteRule, RewriteSet, RewriteSetId, ServerVariable, Template,
    TemplatePart,
};
use crate::tls::ClientCertificate;

/// What a request's rewrites can read, as the client sent it (its URL as rewritten, once a
/// rewrite re-evaluated the path map).
pub struct RequestFacts<'a> {
    pub headers: &'a HeaderMap,
    pub client: SocketAddr,
    /// The request's authority (Host, or HTTP/2's `:authority`), and its host without a port.
    pub authority: &'a str,
    pub host: &'a str,
    pub method: &'a str,
    pub version: Version,
    pub path_and_query: &'a str,
    pub scheme: &'a str,
    /// The listener's port.
    pub server_port: u16,
    /// The TLS version of an HTTPS connection (`TLSv1.3`).
    pub tls_protocol: Option<&'a str>,
    /// The client's certificate, on a mutual TLS connection that presented one.
    pub client_certificate: Option<&'a ClientCertificate>,
}

/// What response rewrites can read: the response as the backend sent it.
pub struct ResponseFacts<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
}

/// Where a variable is looked up: the variables of the request exist on the request, those of
/// the response (`http_resp_*`, `http_status`, `sent_bytes`) on the response.
#[derive(Clone, Copy)]
pub enum Facts<'a> {
    Request(&'a RequestFacts<'a>),
    Response(&'a ResponseFacts<'a>),
}

/// A server variable's value; `None` when it has none (an absent header or cookie).
pub fn lookup<'a>(v: &ServerVariable, facts: Facts<'a>) -> Option<Cow<'a, str>> {
    let f = match facts {
        Facts::Request(f) => f,
        Facts::Response(r) => {
            return match v {
                ServerVariable::ResponseHeader(name) => header_str(r.headers, name),
                ServerVariable::Status => Some(Cow::Borrowed(r.status.as_str())),
                ServerVariable::SentBytes => {
                    // "HTTP/1.1 200 OK\r\n", the fields, the blank line, the announced body.
                    let line: u64 =
                        9 + 4 + r.status.canonical_reason().map_or(0, |s| s.len() as u64) + 2;
                    Some(Cow::Owned((line + head_len(r.headers)).to_string()))
                }
                // Validation keeps request variables out of what is decided on the response.
                _ => None,
            };
        }
    };
    let (path, query) = f
        .path_and_query
        .split_once('?')
        .unwrap_or((f.path_and_query, ""));
    let text = |s: &'a str| Some(Cow::Borrowed(s));
    match v {
        // An HTTP/2 request carries its host as `:authority`, which stands for Host.
        ServerVariable::RequestHeader(name) if name == header::HOST => {
            header_str(f.headers, name).or(Some(Cow::Borrowed(f.authority)))
        }
        ServerVariable::RequestHeader(name) => header_str(f.headers, name),
        ServerVariable::AddXForwardedForProxy => {
            let ip = f.client.ip();
            Some(Cow::Owned(match header_str(f.headers, &X_FORWARDED_FOR) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            }))
        }
        ServerVariable::ClientIp => Some(Cow::Owned(f.client.ip().to_string())),
        ServerVariable::ClientPort => Some(Cow::Owned(f.client.port().to_string())),
        ServerVariable::ClientUser => basic_user(f.headers).map(Cow::Owned),
        ServerVariable::Cookie(name) => f
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (n, value) = pair.trim().split_once('=')?;
                (n == &**name).then_some(Cow::Borrowed(value))
            }),
        ServerVariable::Host | ServerVariable::ServerName => text(f.host),
        ServerVariable::Method => text(f.method),
        ServerVariable::HttpVersion => text(match f.version {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2.0",
            Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        }),
        ServerVariable::QueryString | ServerVariable::RequestQuery => text(query),
        ServerVariable::ReceivedBytes => {
            // The request line ("GET /x HTTP/1.1\r\n"), the fields, the blank line, the body.
            let line = (f.method.len() + 1 + f.path_and_query.len() + 1 + 8 + 2) as u64;
            Some(Cow::Owned((line + head_len(f.headers)).to_string()))
        }
        ServerVariable::Scheme => text(f.scheme),
        ServerVariable::RequestUri => text(f.path_and_query),
        ServerVariable::ServerPort => Some(Cow::Owned(f.server_port.to_string())),
        ServerVariable::SslConnectionProtocol => text(f.tls_protocol.unwrap_or("")),
        ServerVariable::SslEnabled => text(if f.tls_protocol.is_some() { "on" } else { "" }),
        ServerVariable::UriPath => text(path),
        ServerVariable::ClientCertificate => f.client_certificate.map(|c| Cow::Borrowed(&*c.pem)),
        ServerVariable::ClientCertificateIssuer => {
            f.client_certificate.map(|c| Cow::Borrowed(&*c.issuer))
        }
        ServerVariable::ClientCertificateSubject => {
            f.client_certificate.map(|c| Cow::Borrowed(&*c.subject))
        }
        ServerVariable::ClientCertificateSerial => {
            f.client_certificate.map(|c| Cow::Borrowed(&*c.serial))
        }
        ServerVariable::ClientCertificateFingerprint => {
            f.client_certificate.map(|c| Cow::Borrowed(&*c.fingerprint))
        }
        ServerVariable::ClientCertificateVerification => {
            text(f.client_certificate.map_or("NONE", |c| &*c.verification))
        }
        ServerVariable::ResponseHeader(_) | ServerVariable::Status | ServerVariable::SentBytes => {
            None
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(Cow::Borrowed)
}

/// The header section's length as sent (`name: value\r\n` each, then `\r\n`) plus the body's
/// announced length.
fn head_len(headers: &HeaderMap) -> u64 {
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    let body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    (fields + 2) as u64 + body
}

/// RFC 7617: the user id of `Authorization: Basic base64(user:password)`.
fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _) = text.split_once(':')?;
    Some(user.to_owned())
}

/// What a request's rewrite sets decided on it.
#[derive(Debug, Default)]
pub struct RequestRewrite {
    /// Request header actions in the order they apply: a value sets, `None` deletes.
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// The path the backend gets, when a rule set it.
    pub path: Option<String>,
    /// The query the backend gets, when a rule set it (empty: none).
    pub query: Option<String>,
    /// Whether a rule that acted asked for the path map to be evaluated again.
    pub reroute: bool,
    /// Rules whose conditions on the request held and that act on the response.
    pub response: Vec<ResponseRule>,
}

/// A rule to finish on the response: its conditions on the response, then its header actions.
#[derive(Debug)]
pub struct ResponseRule {
    set: RewriteSetId,
    rule: usize,
    /// Each action's value with what the request knows filled in (`None` deletes).
    values: Vec<Option<Vec<Piece>>>,
}

/// Part of a response value: what the request knew, or a part of the template to read on the
/// response (its text, or what only the response knows).
#[derive(Debug)]
enum Piece {
    Text(String),
    Later(usize),
}

/// The captures of one rule's conditions that its values use: (condition, its value, groups).
type Captured<'a> = Vec<(usize, Cow<'a, str>, Captures)>;

/// Whether the conditions of `rule` that `facts` can answer hold; the captures its values use
/// are recorded in `captured`.
fn conditions_hold<'a>(rule: &RewriteRule, facts: Facts<'a>, captured: &mut Captured<'a>) -> bool {
    let on_response = matches!(facts, Facts::Response(_));
    rule.conditions
        .iter()
        .enumerate()
        .filter(|(_, c)| c.variable.on_response() == on_response)
        .all(|(i, c)| {
            let value = lookup(&c.variable, facts);
            if c.captures_used && !c.negate {
                let Some(value) = value else { return false };
                let mut caps = c.pattern.create_captures();
                c.pattern
                    .search_captures(&Input::new(value.as_ref()), &mut caps);
                let matched = caps.is_match();
                if matched {
                    captured.push((i, value, caps));
                }
                matched
            } else {
                holds(c, value.as_deref())
            }
        })
}

/// A condition's verdict on a value: the pattern is searched for (not anchored), a missing
/// value matches nothing, and `negate` turns the result around.
fn holds(c: &RewriteCondition, value: Option<&str>) -> bool {
    value.is_some_and(|v| c.pattern.is_match(v)) != c.negate
}

/// Group `group` of what condition `condition` matched; empty when it did not take part.
fn capture<'c>(captured: &'c Captured<'_>, condition: usize, group: usize) -> &'c str {
    captured
        .iter()
        .find(|(i, ..)| *i == condition)
        .and_then(|(_, value, caps)| caps.get_group(group).map(|span| &value[span.range()]))
        .unwrap_or("")
}

/// How a rendered value is written: as is (headers), or percent-encoded where a URL's path or
/// query cannot carry a byte (RFC 3986 §2.1).
#[derive(Clone, Copy)]
enum Encoding {
    Header,
    Path,
    Query,
}

fn push_encoded(out: &mut String, value: &str, encoding: Encoding) {
    let excluded: &[u8] = match encoding {
        Encoding::Header => return out.push_str(value),
        Encoding::Path => b"?#",
        Encoding::Query => b"#",
    };
    for b in value.bytes() {
        if b.is_ascii_graphic() && !excluded.contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// A template's value on the request.
fn render(
    t: &Template,
    facts: &RequestFacts<'_>,
    captured: &Captured<'_>,
    encoding: Encoding,
) -> String {
    let mut out = String::new();
    for part in &t.parts {
        render_part(part, facts, captured, encoding, &mut out);
    }
    out
}

fn render_part(
    part: &TemplatePart,
    facts: &RequestFacts<'_>,
    captured: &Captured<'_>,
    encoding: Encoding,
    out: &mut String,
) {
    match part {
        TemplatePart::Text(s) => out.push_str(s),
        TemplatePart::Variable(v) => {
            if let Some(value) = lookup(v, Facts::Request(facts)) {
                push_encoded(out, &value, encoding);
            }
        }
        TemplatePart::Capture { condition, group } => {
            push_encoded(out, capture(captured, *condition, *group), encoding)
        }
    }
}

/// Evaluates `set`'s rules on the request into `out`. Every condition sees the request as it
/// was before the set: a rule does not see what an earlier one rewrote.
pub fn on_request(
    id: RewriteSetId,
    set: &RewriteSet,
    facts: &RequestFacts<'_>,
    out: &mut RequestRewrite,
) {
    let mut captured = Vec::new();
    for (index, rule) in set.rules.iter().enumerate() {
        captured.clear();
        if !conditions_hold(rule, Facts::Request(facts), &mut captured) {
            continue;
        }
        for action in &rule.request_headers {
            let value = action.value.as_ref().and_then(|t| {
                let text = render(t, facts, &captured, Encoding::Header);
                // A variable's value may be empty, which deletes as an empty value does.
                (!text.is_empty())
                    .then(|| HeaderValue::from_str(&text).ok())
                    .flatten()
            });
            out.headers.push((action.name.clone(), value));
        }
        if let Some(url) = &rule.url {
            if let Some(path) = &url.path {
                let mut p = render(path, facts, &captured, Encoding::Path);
                if !p.starts_with('/') {
                    p.insert(0, '/');
                }
                out.path = Some(p);
            }
            if let Some(query) = &url.query {
                out.query = Some(render(query, facts, &captured, Encoding::Query));
            }
            out.reroute |= url.reroute;
        }
        if !rule.response_headers.is_empty() {
            let values = rule
                .response_headers
                .iter()
                .map(|a| {
                    a.value.as_ref().map(|t| {
                        t.parts
                            .iter()
                            .enumerate()
                            .map(|(i, part)| match part {
                                // What the request knows is written now; the template's text
                                // and what only the response knows are read on the response.
                                TemplatePart::Text(_) => Piece::Later(i),
                                _ if part.on_response(&rule.conditions) => Piece::Later(i),
                                _ => {
                                    let mut text = String::new();
                                    render_part(
                                        part,
                                        facts,
                                        &captured,
                                        Encoding::Header,
                                        &mut text,
                                    );
                                    Piece::Text(text)
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            out.response.push(ResponseRule {
                set: id,
                rule: index,
                values,
            });
        }
    }
}

impl RequestRewrite {
    /// Applies the request header actions.
    pub fn apply_headers(&mut self, headers: &mut HeaderMap) {
        for (name, value) in self.headers.drain(..) {
            match value {
                Some(v) => {
                    headers.insert(name, v);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }

    /// The URL after the actions, given the URL before them.
    pub fn url(&self, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut url = self.path.as_deref().unwrap_or(path).to_owned();
        match self.query.as_deref().or(query) {
            Some(q) if !q.is_empty() => {
                url.push('?');
                url.push_str(q);
            }
            _ => {}
        }
        url
    }

    /// Whether the URL changes.
    pub fn rewrites_url(&self) -> bool {
        self.path.is_some() || self.query.is_some()
    }
}

/// Finishes the response rules on the response: their conditions on the response (which see
/// it as the backend sent it), then their header actions in order.
pub fn on_response(
    config: &Config,
    rules: &[ResponseRule],
    status: StatusCode,
    headers: &mut HeaderMap,
) {
    if rules.is_empty() {
        return;
    }
    let mut edits: Vec<(HeaderName, Option<HeaderValue>)> = Vec::new();
    {
        let facts = ResponseFacts {
            status,
            headers: &*headers,
        };
        let mut captured = Vec::new();
        for r in rules {
            let rule = &config.rewrite_sets[r.set.0].rules[r.rule];
            captured.clear();
            if !conditions_hold(rule, Facts::Response(&facts), &mut captured) {
                continue;
            }
            for (action, value) in rule.response_headers.iter().zip(&r.values) {
                let value = value.as_ref().and_then(|pieces| {
                    let template = action.value.as_ref()?;
                    let mut text = String::new();
                    for piece in pieces {
                        match piece {
                            Piece::Text(s) => text.push_str(s),
                            Piece::Later(i) => match &template.parts[*i] {
                                TemplatePart::Variable(v) => {
                                    if let Some(value) = lookup(v, Facts::Response(&facts)) {
                                        text.push_str(&value);
                                    }
                                }
                                TemplatePart::Capture { condition, group } => {
                                    text.push_str(capture(&captured, *condition, *group))
                                }
                                TemplatePart::Text(s) => text.push_str(s),
                            },
                        }
                    }
                    (!text.is_empty())
                        .then(|| HeaderValue::from_str(&text).ok())
                        .flatten()
                });
                edits.push((action.name.clone(), value));
            }
        }
    }
    for (name, value) in edits {
        match value {
            Some(v) => {
                headers.insert(name, v);
            }
            None => {
                headers.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rewrite set of a configuration whose one set has these rules.
    fn set(rules: &str) -> Config {
        let toml = format!(
            "[[listeners]]\nname = \"web\"\nport = 8080\n\n[[backend_pools]]\nname = \"pool\"\naddresses = [\"10.0.0.4\"]\n\n[[backend_settings]]\nname = \"settings\"\nport = 80\n\n[[rules]]\nname = \"rule\"\nlistener = \"web\"\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"\n\n[[rewrite_sets]]\nname = \"rw\"\n{rules}"
        );
        Config::from_toml(&toml).unwrap()
    }

    fn facts<'a>(headers: &'a HeaderMap, path_and_query: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            headers,
            client: "192.0.2.7:50000".parse().unwrap(),
            authority: "www.contoso.com:443",
            host: "www.contoso.com",
            method: "POST",
            version: Version::HTTP_2,
            path_and_query,
            scheme: "https",
            server_port: 443,
            tls_protocol: Some("TLSv1.3"),
            client_certificate: None,
        }
    }

    #[test]
    fn client_certificate_variables_without_and_with_a_certificate() {
        let headers = HeaderMap::new();
        let mut f = facts(&headers, "/");
        let value = |v: ServerVariable, f: &RequestFacts<'_>| {
            lookup(&v, Facts::Request(f)).map(|c| c.into_owned())
        };
        // No certificate: the verdict is NONE and the other variables have no value.
        assert_eq!(
            value(ServerVariable::ClientCertificateVerification, &f).as_deref(),
            Some("NONE")
        );
        assert_eq!(value(ServerVariable::ClientCertificateSubject, &f), None);
        let alice = ClientCertificate {
            pem: "-----BEGIN%20CERTIFICATE-----".into(),
            subject: "CN=alice".into(),
            issuer: "CN=ca".into(),
            serial: "01".into(),
            fingerprint: "00ff".into(),
            verification: "SUCCESS".into(),
        };
        f.client_certificate = Some(&alice);
        for (v, expected) in [
            (
                ServerVariable::ClientCertificate,
                "-----BEGIN%20CERTIFICATE-----",
            ),
            (ServerVariable::ClientCertificateSubject, "CN=alice"),
            (ServerVariable::ClientCertificateIssuer, "CN=ca"),
            (ServerVariable::ClientCertificateSerial, "01"),
            (ServerVariable::ClientCertificateFingerprint, "00ff"),
            (ServerVariable::ClientCertificateVerification, "SUCCESS"),
        ] {
            assert_eq!(value(v, &f).as_deref(), Some(expected));
        }
    }

    #[test]
    fn every_request_variable_has_its_documented_value() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.1".parse().unwrap());
        h.insert("cookie", "a=1; session=xyz".parse().unwrap());
        h.insert("authorization", "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
        h.insert("content-length", "10".parse().unwrap());
        let f = facts(&h, "/a/b?x=1&y=2");
        let value = |name: &str| {
            let v = ServerVariable::parse(name).unwrap_or_else(|| panic!("{name}"));
            lookup(&v, Facts::Request(&f)).map(|c| c.into_owned())
        };
        let cases = [
            ("var_add_x_forwarded_for_proxy", "203.0.113.1, 192.0.2.7"),
            ("var_client_ip", "192.0.2.7"),
            ("var_client_port", "50000"),
            ("var_client_user", "alice"),
            ("var_cookie_session", "xyz"),
            ("var_host", "www.contoso.com"),
            ("var_http_method", "POST"),
            ("var_http_version", "HTTP/2.0"),
            ("var_query_string", "x=1&y=2"),
            ("var_request_query", "x=1&y=2"),
            ("var_request_scheme", "https"),
            ("var_request_uri", "/a/b?x=1&y=2"),
            ("var_server_name", "www.contoso.com"),
            ("var_server_port", "443"),
            ("var_ssl_connection_protocol", "TLSv1.3"),
            ("var_ssl_enabled", "on"),
            ("var_uri_path", "/a/b"),
            ("http_req_Cookie", "a=1; session=xyz"),
            ("http_req_Host", "www.contoso.com:443"),
        ];
        for (name, expected) in cases {
            assert_eq!(value(name).as_deref(), Some(expected), "{name}");
        }
        // "POST /a/b?x=1&y=2 HTTP/1.1\r\n" (28) + fields (4 of them) + "\r\n" + 10 body bytes.
        let fields: usize = h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
        assert_eq!(
            value("var_received_bytes"),
            Some((28 + fields + 2 + 10).to_string())
        );
        assert_eq!(
            value("var_cookie_none"),
            None,
            "an absent cookie has no value"
        );
        assert_eq!(value("http_req_X-None"), None);

        let mut res = HeaderMap::new();
        res.insert("content-length", "5".parse().unwrap());
        let r = ResponseFacts {
            status: StatusCode::NOT_FOUND,
            headers: &res,
        };
        let sent = lookup(&ServerVariable::SentBytes, Facts::Response(&r)).unwrap();
        // "HTTP/1.1 404 Not Found\r\n" (24) + "content-length: 5\r\n" (19) + "\r\n" + 5.
        assert_eq!(sent, "50");
        assert_eq!(
            lookup(&ServerVariable::Status, Facts::Response(&r)).as_deref(),
            Some("404")
        );
    }

    #[test]
    fn captured_values_are_percent_encoded_in_the_url_only() {
        let config = set(r#"[[rewrite_sets.rules]]
name = "r"
conditions = [{ variable = "http_req_X-Name", pattern = '^(.*)$' }]
request_headers = [{ name = "x-copy", value = "{http_req_X-Name_1}" }]
url_configuration = { modified_path = "{http_req_X-Name_1}", modified_query_string = "n={http_req_X-Name_1}" }
"#);
        let mut h = HeaderMap::new();
        h.insert("x-name", "a b?c#d".parse().unwrap());
        let f = facts(&h, "/old?q=1");
        let mut out = RequestRewrite::default();
        on_request(RewriteSetId(0), &config.rewrite_sets[0], &f, &mut out);
        assert_eq!(
            out.path.as_deref(),
            Some("/a%20b%3Fc%23d"),
            "a leading / is added"
        );
        assert_eq!(out.query.as_deref(), Some("n=a%20b?c%23d"));
        assert_eq!(out.url("/old?q=1"), "/a%20b%3Fc%23d?n=a%20b?c%23d");
        assert_eq!(out.headers[0].1.as_ref().unwrap(), "a b?c#d");
    }

    #[test]
    fn response_rules_finish_on_the_response() {
        let config = set(r#"[[rewrite_sets.rules]]
name = "r"
conditions = [
  { variable = "var_uri_path", pattern = '^/(\w+)' },
  { variable = "http_resp_Location", pattern = '^http://internal/(.*)$' },
]
response_headers = [
  { name = "location", value = "https://{var_host}/{http_resp_Location_1}" },
  { name = "x-section", value = "{var_uri_path_1} {var_http_status}" },
  { name = "server" },
]
"#);
        let h = HeaderMap::new();
        let f = facts(&h, "/shop/x");
        let mut out = RequestRewrite::default();
        on_request(RewriteSetId(0), &config.rewrite_sets[0], &f, &mut out);
        assert_eq!(out.response.len(), 1, "the request's condition held");

        let mut res = HeaderMap::new();
        res.insert("location", "http://internal/next?a=1".parse().unwrap());
        res.insert("server", "backend".parse().unwrap());
        on_response(&config, &out.response, StatusCode::FOUND, &mut res);
        assert_eq!(res["location"], "https://www.contoso.com/next?a=1");
        assert_eq!(res["x-section"], "shop 302");
        assert!(!res.contains_key("server"));

        let mut other = HeaderMap::new();
        other.insert("location", "https://elsewhere/".parse().unwrap());
        on_response(&config, &out.response, StatusCode::FOUND, &mut other);
        assert_eq!(other.len(), 1, "the response's condition failed: {other:?}");

        let f = facts(&h, "/");
        let mut out = RequestRewrite::default();
        on_request(RewriteSetId(0), &config.rewrite_sets[0], &f, &mut out);
        assert!(out.response.is_empty(), "the request's condition failed");
    }
}
