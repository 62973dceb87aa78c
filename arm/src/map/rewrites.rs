//! `rewriteRuleSets`: `[[rewrite_sets]]`.

use crate::ArmError;
use crate::emit::{Section, Tv};
use crate::json::Node;
use crate::template::join;

use super::Mapper;
use super::access::is_set;

impl Mapper<'_> {
    pub(super) fn rewrites(&mut self, props: &Node) -> Result<Vec<Section>, ArmError> {
        let mut out = Vec::new();
        for item in self.items(props, "rewriteRuleSets")? {
            let (p, path) = (&*item.props, item.path.as_str());
            self.keys(p, path, &["rewriteRules"], &[])?;
            let mut s = Section::new(
                "rewrite_sets",
                path.trim_end_matches(".properties").to_string(),
            );
            s.set("name", Tv::str(&item.name));
            let rules_path = join(path, "rewriteRules");
            let mut rules: Vec<(i64, usize, &Node)> = Vec::new();
            if let Some(list) = p.get("rewriteRules").filter(|n| is_set(n)) {
                let items = list
                    .as_array()
                    .ok_or_else(|| self.err(list, &rules_path, "expected an array"))?;
                for (i, r) in items.iter().enumerate() {
                    let rp = format!("{rules_path}[{i}]");
                    // Application Gateway applies rules in ascending ruleSequence (default 100).
                    let seq = self.int(r, "ruleSequence", &rp)?.unwrap_or(100);
                    rules.push((seq, i, r));
                }
            }
            rules.sort_by_key(|(seq, i, _)| (*seq, *i));
            // Each rule as Application Gateway writes it; a set whose rules only set headers to
            // fixed values is written in the shorter header-list form.
            let mut mapped = Vec::new();
            for (seq, i, r) in rules {
                mapped.push(self.rewrite_rule(r, &format!("{rules_path}[{i}]"), seq)?);
            }
            let rules_form = mapped.iter().any(|m| m.needs_rules);
            if rules_form {
                for m in mapped {
                    s.children.push(("rules", m.section));
                }
                s.notes.push("rewrite rules in ruleSequence order".into());
            } else {
                let mut request = Vec::new();
                let mut response = Vec::new();
                for m in mapped {
                    for (into, list) in [(&mut request, m.request), (&mut response, m.response)] {
                        for mut members in list {
                            if !m.conditions.is_empty() {
                                members.push((
                                    "conditions".to_string(),
                                    Tv::Array(m.conditions.clone()),
                                ));
                            }
                            into.push(Tv::Inline(members));
                        }
                    }
                }
                if !request.is_empty() {
                    s.set("request_headers", Tv::Array(request));
                }
                if !response.is_empty() {
                    s.set("response_headers", Tv::Array(response));
                }
                s.notes.push(
                    "rewrite rules flattened in ruleSequence order; an empty value deletes the header"
                        .into(),
                );
            }
            out.push(s);
        }
        Ok(out)
    }

    /// One of `rewriteRules`: its conditions, header actions and URL configuration.
    fn rewrite_rule(&mut self, r: &Node, rp: &str, seq: i64) -> Result<MappedRule, ArmError> {
        self.keys(
            r,
            rp,
            &["name", "ruleSequence", "conditions", "actionSet"],
            &[],
        )?;
        let name = self.string(r, "name", rp)?.unwrap_or_default();
        let mut section = Section::new("rules", rp.to_string());
        section.set("name", Tv::Str(name));
        section.set("rule_sequence", Tv::Int(seq));
        let mut conditions = Vec::new();
        if let Some(list) = r.get("conditions").filter(|n| is_set(n)) {
            let cp = join(rp, "conditions");
            let items = list
                .as_array()
                .ok_or_else(|| self.err(list, &cp, "expected an array"))?;
            for (k, c) in items.iter().enumerate() {
                let p = format!("{cp}[{k}]");
                self.keys(c, &p, &["variable", "pattern", "ignoreCase", "negate"], &[])?;
                let variable = self.string(c, "variable", &p)?.ok_or_else(|| {
                    self.err(c, &join(&p, "variable"), "a condition needs \"variable\"")
                })?;
                let pattern = self.string(c, "pattern", &p)?.ok_or_else(|| {
                    self.err(c, &join(&p, "pattern"), "a condition needs \"pattern\"")
                })?;
                let mut members = vec![
                    ("variable".to_string(), Tv::Str(variable)),
                    ("pattern".to_string(), Tv::Str(pattern)),
                ];
                // Application Gateway's default is a case-insensitive match.
                let ignore_case = self.bool(c, "ignoreCase", &p)?.unwrap_or(true);
                members.push(("ignore_case".to_string(), Tv::Bool(ignore_case)));
                if self.bool(c, "negate", &p)? == Some(true) {
                    members.push(("negate".to_string(), Tv::Bool(true)));
                }
                conditions.push(Tv::Inline(members));
            }
        }
        if !conditions.is_empty() {
            section.set("conditions", Tv::Array(conditions.clone()));
        }
        let mut mapped = MappedRule {
            section,
            conditions,
            request: Vec::new(),
            response: Vec::new(),
            needs_rules: false,
        };
        let Some(actions) = r.get("actionSet").filter(|n| is_set(n)) else {
            return Ok(mapped);
        };
        let ap = join(rp, "actionSet");
        self.keys(
            actions,
            &ap,
            &[
                "requestHeaderConfigurations",
                "responseHeaderConfigurations",
                "urlConfiguration",
            ],
            &[],
        )?;
        for (key, field, response) in [
            ("requestHeaderConfigurations", "request_headers", false),
            ("responseHeaderConfigurations", "response_headers", true),
        ] {
            let Some(list) = actions.get(key).filter(|n| is_set(n)) else {
                continue;
            };
            let lp = join(&ap, key);
            let headers = list
                .as_array()
                .ok_or_else(|| self.err(list, &lp, "expected an array"))?;
            let mut all = Vec::new();
            for (j, h) in headers.iter().enumerate() {
                let hp = format!("{lp}[{j}]");
                self.keys(
                    h,
                    &hp,
                    &["headerName", "headerValue", "headerValueMatcher"],
                    &[],
                )?;
                if let Some(n) = h.get("headerValueMatcher").filter(|n| is_set(n)) {
                    return Err(self.err(
                        n,
                        &join(&hp, "headerValueMatcher"),
                        "rewriting part of a header value by pattern is not supported",
                    ));
                }
                let name = self.string(h, "headerName", &hp)?.ok_or_else(|| {
                    self.err(
                        h,
                        &join(&hp, "headerName"),
                        "a header configuration needs \"headerName\"",
                    )
                })?;
                let value = self.string(h, "headerValue", &hp)?.unwrap_or_default();
                mapped.needs_rules |= server_variable(&value).is_some();
                let mut members = vec![("name".to_string(), Tv::Str(name))];
                if !value.is_empty() {
                    members.push(("value".to_string(), Tv::Str(value)));
                }
                all.push(members);
            }
            mapped.section.set(
                field,
                Tv::Array(all.iter().cloned().map(Tv::Inline).collect()),
            );
            if response {
                mapped.response = all;
            } else {
                mapped.request = all;
            }
        }
        if let Some(u) = actions.get("urlConfiguration").filter(|n| is_set(n)) {
            let up = join(&ap, "urlConfiguration");
            self.keys(
                u,
                &up,
                &["modifiedPath", "modifiedQueryString", "reroute"],
                &[],
            )?;
            let mut members = Vec::new();
            // Absent (or null) keeps the path or query; an empty query string removes it.
            if let Some(path) = self.string(u, "modifiedPath", &up)? {
                members.push(("modified_path".to_string(), Tv::Str(path)));
            }
            if let Some(query) = self.string(u, "modifiedQueryString", &up)? {
                members.push(("modified_query_string".to_string(), Tv::Str(query)));
            }
            if self.bool(u, "reroute", &up)? == Some(true) {
                members.push(("reroute".to_string(), Tv::Bool(true)));
            }
            mapped.section.set("url_configuration", Tv::Inline(members));
            mapped.needs_rules = true;
        }
        Ok(mapped)
    }
}

/// A rewrite rule mapped both ways: as a `[[rewrite_sets.rules]]` entry, and as the header
/// lists' entries (usable when no rule of the set needs the rule form).
struct MappedRule {
    section: Section,
    conditions: Vec<Tv>,
    request: Vec<Vec<(String, Tv)>>,
    response: Vec<Vec<(String, Tv)>>,
    /// A URL configuration, or a value with server variables.
    needs_rules: bool,
}

/// The first server variable in a rewrite value (`{var_client_ip}`, `{http_req_Host}`, ...).
pub(super) fn server_variable(value: &str) -> Option<&str> {
    let start = value.find('{')?;
    let rest = &value[start + 1..];
    let end = rest.find('}')?;
    let name = &rest[..end];
    let lower = name.to_ascii_lowercase();
    (lower.starts_with("var_") || lower.starts_with("http_req_") || lower.starts_with("http_resp_"))
        .then_some(name)
}
