//! The exposition formats: Prometheus text 0.0.4, and OpenMetrics 1.0 when the scraper asks for
//! it. They differ in three places only — a counter family's name on its `# TYPE` line (with
//! `_total` in Prometheus text, without in OpenMetrics), the closing `# EOF`, and the content
//! type — so one writer serves both.

use std::fmt::Write as _;

use super::{BOUNDS_US, HistogramValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, else Prometheus text.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Writes metric families one after the other.
pub struct Exposition {
    out: String,
    format: Format,
}

impl Exposition {
    pub fn new(format: Format) -> Self {
        Self {
            out: String::with_capacity(16 * 1024),
            format,
        }
    }

    /// A counter family; `name` without `_total`.
    pub fn counter<'a, L: AsRef<str> + 'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        samples: impl IntoIterator<Item = (&'a [L], u64)>,
    ) {
        let total = format!("{name}_total");
        let family = match self.format {
            Format::Prometheus => total.as_str(),
            Format::OpenMetrics => name,
        };
        self.header(family, help, "counter");
        for (values, n) in samples {
            self.sample(&total, labels, values, None, &n.to_string());
        }
    }

    pub fn gauge<'a, L: AsRef<str> + 'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        samples: impl IntoIterator<Item = (&'a [L], f64)>,
    ) {
        self.header(name, help, "gauge");
        for (values, v) in samples {
            self.sample(name, labels, values, None, &number(v));
        }
    }

    /// A histogram of durations; `name` ends in `_seconds`.
    pub fn histogram<'a, L: AsRef<str> + 'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        samples: impl IntoIterator<Item = (&'a [L], &'a HistogramValue)>,
    ) {
        self.header(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        for (values, h) in samples {
            let mut cumulative = 0;
            for (i, n) in h.counts.iter().enumerate() {
                cumulative += n;
                let le = match BOUNDS_US.get(i) {
                    Some(us) => number(*us as f64 / 1e6),
                    None => "+Inf".to_owned(),
                };
                self.sample(&bucket, labels, values, Some(&le), &cumulative.to_string());
            }
            self.sample(
                &format!("{name}_sum"),
                labels,
                values,
                None,
                &number(h.sum_us as f64 / 1e6),
            );
            self.sample(
                &format!("{name}_count"),
                labels,
                values,
                None,
                &cumulative.to_string(),
            );
        }
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample<L: AsRef<str>>(
        &mut self,
        name: &str,
        labels: &[&str],
        values: &[L],
        le: Option<&str>,
        value: &str,
    ) {
        self.out.push_str(name);
        if !labels.is_empty() || le.is_some() {
            self.out.push('{');
            let mut first = true;
            let pairs = labels
                .iter()
                .zip(values.iter().map(|v| v.as_ref()))
                .chain(le.map(|le| (&"le", le)));
            for (label, value) in pairs {
                if !first {
                    self.out.push(',');
                }
                first = false;
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_value(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }

    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// A number as both formats read it: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values escape backslash, double quote and line feed (both formats).
fn escape_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_each_format_wants() {
        let samples: Vec<(&[&str], u64)> = vec![(&["a\"b"], 3)];
        let mut p = Exposition::new(Format::Prometheus);
        p.counter("x_requests", "Requests.", &["listener"], samples.clone());
        assert_eq!(
            p.finish(),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
             x_requests_total{listener=\"a\\\"b\"} 3\n"
        );
        let mut o = Exposition::new(Format::OpenMetrics);
        o.counter("x_requests", "Requests.", &["listener"], samples);
        assert_eq!(
            o.finish(),
            "# HELP x_requests Requests.\n# TYPE x_requests counter\n\
             x_requests_total{listener=\"a\\\"b\"} 3\n# EOF\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_in_seconds() {
        let mut h = HistogramValue::default();
        h.counts[0] = 1;
        h.counts[1] = 2;
        h.sum_us = 1_500;
        let mut p = Exposition::new(Format::Prometheus);
        let none: &[&str] = &[];
        p.histogram("t_seconds", "Time.", &[], [(none, &h)]);
        let text = p.finish();
        assert!(
            text.contains("t_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{le=\"0.001\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_sum 0.0015\n"), "{text}");
        assert!(text.contains("t_seconds_count 3\n"), "{text}");
    }
}
