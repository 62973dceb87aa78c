//! Writes the imported configuration as TOML a person can read and edit: one `[[table]]` per
//! item, each under a comment naming the template path it came from, ignored template parts
//! listed at the top with the reason.

use std::fmt::Write as _;

/// A TOML value as the importer produces them.
#[derive(Debug, Clone, PartialEq)]
pub enum Tv {
    Str(String),
    Int(i64),
    Bool(bool),
    Array(Vec<Tv>),
    /// An inline table (`{ enabled = true, timeout = 30 }`).
    Inline(Vec<(String, Tv)>),
}

impl Tv {
    pub fn str(s: impl Into<String>) -> Tv {
        Tv::Str(s.into())
    }
}

/// One `[[table]]` entry.
#[derive(Debug, Clone)]
pub struct Section {
    /// `listeners`, `backend_pools`, ...
    pub table: &'static str,
    /// The template path the entry came from.
    pub origin: String,
    /// Extra comment lines (what was adapted and why).
    pub notes: Vec<String>,
    pub fields: Vec<(String, Tv)>,
    /// Sub-entries written as `[[table.child]]` (a URL path map's path rules).
    pub children: Vec<(&'static str, Section)>,
}

impl Section {
    pub fn new(table: &'static str, origin: String) -> Self {
        Section {
            table,
            origin,
            notes: Vec::new(),
            fields: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: Tv) {
        self.fields.push((key.to_string(), value));
    }
}

/// The whole document.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    pub header: Vec<String>,
    pub sections: Vec<Section>,
}

impl Doc {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            comment(&mut out, line);
        }
        let mut last_table = "";
        for s in &self.sections {
            if s.table != last_table {
                // A banner per kind of item keeps a long file navigable.
                let _ = write!(out, "\n# ---- {} ----\n", s.table);
                last_table = s.table;
            }
            section(&mut out, s.table, s);
        }
        out
    }
}

fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
    if text.is_empty() {
        out.push_str("#\n");
    }
}

fn section(out: &mut String, table: &str, s: &Section) {
    out.push('\n');
    comment(out, &format!("from {}", s.origin));
    for n in &s.notes {
        comment(out, n);
    }
    let _ = writeln!(out, "[[{table}]]");
    for (k, v) in &s.fields {
        let _ = writeln!(out, "{k} = {}", field_value(v));
    }
    for (child_table, child) in &s.children {
        section(out, &format!("{table}.{child_table}"), child);
    }
}

/// A field's value: a long array of tables is written one item per line.
fn field_value(v: &Tv) -> String {
    let one_line = value(v);
    match v {
        Tv::Array(items)
            if one_line.len() > 80 && items.iter().all(|i| matches!(i, Tv::Inline(_))) =>
        {
            let mut out = String::from("[\n");
            for item in items {
                let _ = writeln!(out, "    {},", value(item));
            }
            out.push(']');
            out
        }
        _ => one_line,
    }
}

/// A TOML value (TOML 1.0 §String: basic strings escape `"`, `\` and control characters).
pub fn value(v: &Tv) -> String {
    match v {
        Tv::Str(s) => quote(s),
        Tv::Int(i) => i.to_string(),
        Tv::Bool(b) => b.to_string(),
        Tv::Array(items) => format!(
            "[{}]",
            items.iter().map(value).collect::<Vec<_>>().join(", ")
        ),
        Tv::Inline(members) => format!(
            "{{ {} }}",
            members
                .iter()
                .map(|(k, v)| format!("{k} = {}", value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_readable_toml_that_parses_back() {
        let mut listener = Section::new(
            "listeners",
            "resources[0].properties.httpListeners[0]".into(),
        );
        listener
            .notes
            .push("port 80 of the template, bound to 127.0.0.1:8080".into());
        listener.set("name", Tv::str("web \"main\"\\\n\u{1}"));
        listener.set("port", Tv::Int(8080));
        listener.set(
            "host_names",
            Tv::Array(vec![Tv::str("a.com"), Tv::str("*.b.com")]),
        );
        let mut map = Section::new("url_path_maps", "urlPathMaps[0]".into());
        map.set("name", Tv::str("m"));
        map.set(
            "draining",
            Tv::Inline(vec![
                ("enabled".into(), Tv::Bool(true)),
                ("timeout".into(), Tv::Int(30)),
            ]),
        );
        let mut rule = Section::new(
            "path_rules",
            "urlPathMaps[0].properties.pathRules[0]".into(),
        );
        rule.set("name", Tv::str("r"));
        map.children.push(("path_rules", rule));
        let long = |n: &str| {
            Tv::Inline(vec![
                ("name".into(), Tv::str(n)),
                ("value".into(), Tv::str("x".repeat(40))),
            ])
        };
        map.set("headers", Tv::Array(vec![long("a"), long("b")]));
        let doc = Doc {
            header: vec!["imported".into(), "".into(), "two\nlines".into()],
            sections: vec![listener, map],
        };
        let text = doc.render();
        assert!(
            text.starts_with("# imported\n#\n# two\n# lines\n"),
            "{text}"
        );
        assert!(
            text.contains("# from resources[0].properties.httpListeners[0]\n# port 80"),
            "{text}"
        );
        assert!(text.contains("[[url_path_maps.path_rules]]"), "{text}");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let l = &parsed["listeners"].as_array().unwrap()[0];
        assert_eq!(l["name"].as_str(), Some("web \"main\"\\\n\u{1}"));
        assert_eq!(l["port"].as_integer(), Some(8080));
        let m = &parsed["url_path_maps"].as_array().unwrap()[0];
        assert_eq!(m["draining"]["timeout"].as_integer(), Some(30));
        assert!(text.contains("headers = [\n    { name = \"a\", "), "{text}");
        assert_eq!(
            m["headers"].as_array().unwrap()[1]["name"].as_str(),
            Some("b")
        );
        assert_eq!(
            m["path_rules"].as_array().unwrap()[0]["name"].as_str(),
            Some("r")
        );
    }
}
