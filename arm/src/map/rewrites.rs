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
            let mut request = Vec::new();
            let mut response = Vec::new();
            for (_, i, r) in rules {
                let rp = format!("{rules_path}[{i}]");
                self.keys(
                    r,
                    &rp,
                    &["name", "ruleSequence", "conditions", "actionSet"],
                    &[],
                )?;
                // A rule's conditions (all must hold) go with each of its header rewrites.
                let mut conditions = Vec::new();
                if let Some(list) = r.get("conditions").filter(|n| is_set(n)) {
                    let cp = join(&rp, "conditions");
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
                let Some(actions) = r.get("actionSet").filter(|n| is_set(n)) else {
                    continue;
                };
                let ap = join(&rp, "actionSet");
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
                if let Some(u) = actions.get("urlConfiguration").filter(|n| is_set(n)) {
                    return Err(self.err(u, &join(&ap, "urlConfiguration"), "URL rewrites are not supported (path overrides are: backend settings \"path\")"));
                }
                for (key, into) in [
                    ("requestHeaderConfigurations", &mut request),
                    ("responseHeaderConfigurations", &mut response),
                ] {
                    let Some(list) = actions.get(key).filter(|n| is_set(n)) else {
                        continue;
                    };
                    let lp = join(&ap, key);
                    let headers = list
                        .as_array()
                        .ok_or_else(|| self.err(list, &lp, "expected an array"))?;
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
                        if let Some(var) = server_variable(&value) {
                            return Err(self.err(
                                h,
                                &join(&hp, "headerValue"),
                                &format!("the value uses server variable '{{{var}}}', which cannot be expressed: wasmgate's rewrite sets set fixed values (conditions may test variables)"),
                            ));
                        }
                        let mut members = vec![("name".to_string(), Tv::Str(name))];
                        if !value.is_empty() {
                            members.push(("value".to_string(), Tv::Str(value)));
                        }
                        if !conditions.is_empty() {
                            members.push(("conditions".to_string(), Tv::Array(conditions.clone())));
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
            out.push(s);
        }
        Ok(out)
    }
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
