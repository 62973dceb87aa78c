//! Results, their medians over rounds, and the markdown / JSON output.

use std::fmt::Write as _;

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// HTTP/1.1 keep-alive, closed loop.
    Http,
    /// HTTP/1.1 keep-alive through a listener whose rule is decided by the built-in
    /// basic-rules router plugin (`router = "builtin"`); direct is the same plain keep-alive.
    #[value(name = "http-router")]
    HttpRouter,
    /// A new TCP connection (and `Connection: close`) per request.
    Newconn,
    /// WebSocket echo, closed loop.
    Ws,
    /// HTTPS keep-alive through the gateway (direct: plain HTTP keep-alive).
    Tls,
    /// A full TLS handshake per request through the gateway (direct: plain new connections).
    Tlsnew,
    /// Gateway memory per idle WebSocket session.
    Idle,
}

impl Scenario {
    pub fn key(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::HttpRouter => "http-router",
            Self::Newconn => "newconn",
            Self::Ws => "ws",
            Self::Tls => "tls",
            Self::Tlsnew => "tlsnew",
            Self::Idle => "idle",
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Tlsnew)
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Ws => "messages/s",
            _ => "requests/s",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Direct,
    Gateway,
}

impl Via {
    pub fn key(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Gateway => "gateway",
        }
    }
}

/// One measured run of a load scenario against one target.
#[derive(Debug)]
pub struct RunResult {
    pub scenario: Scenario,
    pub via: Via,
    pub round: u32,
    pub workers: usize,
    pub ops: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub first_error: Option<String>,
    pub measured_s: f64,
    pub rate: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Gateway CPU time (user + system) per operation; gateway runs only.
    pub gateway_cpu_us_per_op: Option<f64>,
    /// Gateway CPU use over the measured window, in % of one core.
    pub gateway_cpu_pct: Option<f64>,
    /// The harness's own CPU use (load generator + backend), % of one core.
    pub harness_cpu_pct: f64,
}

/// One round of the idle-session scenario, always through the gateway.
#[derive(Debug)]
pub struct IdleResult {
    pub round: u32,
    pub requested: usize,
    pub opened: usize,
    pub errors: u64,
    pub first_error: Option<String>,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_closed_kib: u64,
    pub kib_per_session: f64,
    pub checked: usize,
    pub alive: usize,
}

pub struct Settings {
    pub cpus: usize,
    pub rounds: u32,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    pub ws_sessions: usize,
    pub ws_message_bytes: usize,
    pub idle_sessions: usize,
    pub settle_s: f64,
    pub client_threads: usize,
    pub backend_threads: usize,
    pub source_addrs: usize,
    pub gateway: Option<String>,
    pub scenarios: Vec<Scenario>,
}

pub struct Report {
    pub settings: Settings,
    pub runs: Vec<RunResult>,
    pub idle: Vec<IdleResult>,
}

/// Median; the mean of the two middle values for an even count.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if !values.len().is_multiple_of(2) {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

const ERRORS: &str = "errors (sum of rounds)";
const RECONNECTS: &str = "keep-alive closes by peer (sum of rounds)";

/// Counts summed over rounds, for which a ratio means nothing.
fn is_total(metric: &str) -> bool {
    metric == ERRORS || metric == RECONNECTS
}

/// Reads one per-run count out of a result.
type Count = fn(&RunResult) -> u64;

struct Row {
    metric: &'static str,
    direct: Option<f64>,
    gateway: Option<f64>,
    format: fn(f64) -> String,
}

impl Report {
    fn median_of(
        &self,
        scenario: Scenario,
        via: Via,
        f: impl Fn(&RunResult) -> Option<f64>,
    ) -> Option<f64> {
        let mut values: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.scenario == scenario && r.via == via)
            .filter_map(f)
            .collect();
        median(&mut values)
    }

    fn sum_of(&self, scenario: Scenario, via: Via, f: Count) -> Option<f64> {
        let runs = self
            .runs
            .iter()
            .filter(|r| r.scenario == scenario && r.via == via);
        let mut any = false;
        let mut sum = 0;
        for r in runs {
            any = true;
            sum += f(r);
        }
        any.then_some(sum as f64)
    }

    fn title(&self, scenario: Scenario) -> String {
        let s = &self.settings;
        match scenario {
            Scenario::Http => format!("HTTP/1.1 keep-alive, {} connections", s.connections),
            Scenario::HttpRouter => format!(
                "HTTP/1.1 keep-alive routed by the built-in router plugin, {} connections",
                s.connections
            ),
            Scenario::Newconn => format!("new connection per request, {} clients", s.connections),
            Scenario::Tls => format!(
                "HTTPS keep-alive (TLS 1.3) via gateway; direct is plain HTTP, {} connections",
                s.connections
            ),
            Scenario::Tlsnew => format!(
                "full TLS handshake per request via gateway (handshakes/s); direct is plain new connections, {} clients",
                s.connections
            ),
            Scenario::Ws => format!(
                "WebSocket echo, {}-byte text, {} sessions",
                s.ws_message_bytes, s.ws_sessions
            ),
            Scenario::Idle => format!("{} idle WebSocket sessions", s.idle_sessions),
        }
    }

    fn rows(&self, scenario: Scenario) -> Vec<Row> {
        let m = |via, f: fn(&RunResult) -> Option<f64>| self.median_of(scenario, via, f);
        let mut rows = vec![
            Row {
                metric: scenario.unit(),
                direct: m(Via::Direct, |r| Some(r.rate)),
                gateway: m(Via::Gateway, |r| Some(r.rate)),
                format: fmt_count,
            },
            Row {
                metric: "p50 latency (µs)",
                direct: m(Via::Direct, |r| Some(r.p50_us)),
                gateway: m(Via::Gateway, |r| Some(r.p50_us)),
                format: fmt_us,
            },
            Row {
                metric: "p99 latency (µs)",
                direct: m(Via::Direct, |r| Some(r.p99_us)),
                gateway: m(Via::Gateway, |r| Some(r.p99_us)),
                format: fmt_us,
            },
        ];
        let gateway_cpu = m(Via::Gateway, |r| r.gateway_cpu_us_per_op);
        if gateway_cpu.is_some() {
            rows.push(Row {
                metric: "gateway CPU per op (µs)",
                direct: None,
                gateway: gateway_cpu,
                format: fmt_us,
            });
        }
        let totals: [(&'static str, Count); 2] =
            [(ERRORS, |r| r.errors), (RECONNECTS, |r| r.reconnects)];
        for (metric, f) in totals {
            let direct = self.sum_of(scenario, Via::Direct, f);
            let gateway = self.sum_of(scenario, Via::Gateway, f);
            if direct.unwrap_or(0.0) > 0.0 || gateway.unwrap_or(0.0) > 0.0 {
                rows.push(Row {
                    metric,
                    direct,
                    gateway,
                    format: fmt_count,
                });
            }
        }
        rows
    }

    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Median of {} round(s); each run: {} warm-up, then {} measured. {} CPU(s) shared by \
             the load generator ({} thread(s)), the in-process backend ({} thread(s)) and the gateway.",
            s.rounds,
            fmt_secs(s.warmup_s),
            fmt_secs(s.duration_s),
            s.cpus,
            s.client_threads,
            s.backend_threads,
        );
        out.push('\n');
        out.push_str("| scenario | metric | direct | gateway | gateway / direct |\n");
        out.push_str("| --- | --- | ---: | ---: | ---: |\n");
        for &scenario in &s.scenarios {
            if scenario == Scenario::Idle {
                continue;
            }
            for (i, row) in self.rows(scenario).iter().enumerate() {
                let title = if i == 0 {
                    self.title(scenario)
                } else {
                    String::new()
                };
                let cell = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), row.format);
                let ratio = match (row.direct, row.gateway) {
                    (Some(d), Some(g)) if d > 0.0 && !is_total(row.metric) => {
                        format!("{:.2}", g / d)
                    }
                    _ => "—".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    title,
                    row.metric,
                    cell(row.direct),
                    cell(row.gateway),
                    ratio
                );
            }
        }
        if !self.idle.is_empty() {
            let mut per = self
                .idle
                .iter()
                .map(|r| r.kib_per_session)
                .collect::<Vec<_>>();
            let mut base = self
                .idle
                .iter()
                .map(|r| r.rss_before_kib as f64)
                .collect::<Vec<_>>();
            let mut closed = self
                .idle
                .iter()
                .map(|r| r.rss_closed_kib as f64 - r.rss_before_kib as f64)
                .collect::<Vec<_>>();
            let errors: u64 = self.idle.iter().map(|r| r.errors).sum();
            let title = self.title(Scenario::Idle);
            let cell = |v: Option<f64>, f: fn(f64) -> String| v.map_or_else(|| "—".to_owned(), f);
            let _ = writeln!(
                out,
                "| {title} | gateway RSS per session (KiB) | n/a | {} | — |",
                cell(median(&mut per), fmt_kib)
            );
            let _ = writeln!(
                out,
                "| | gateway RSS before opening (MiB) | n/a | {} | — |",
                cell(median(&mut base).map(|k| k / 1024.0), fmt_mib)
            );
            let _ = writeln!(
                out,
                "| | gateway RSS growth left after closing (MiB) | n/a | {} | — |",
                cell(median(&mut closed).map(|k| k / 1024.0), fmt_mib)
            );
            if errors > 0 {
                let _ = writeln!(out, "| | errors (sum of rounds) | n/a | {errors} | — |");
            }
        }
        out.push('\n');
        out.push_str(
            "Latencies are per operation as seen by the client (for new connections: \
             connect + request + response). Ratios are of the medians. \
             \"Gateway CPU per op\" is the gateway's user + system CPU time over the measured \
             window divided by the operations completed in it. Idle-session memory is measured \
             on the gateway only (VmRSS growth / sessions, fresh gateway per round): the direct \
             backend runs inside the harness, whose RSS also holds the client side.\n",
        );
        if s.gateway.is_none() {
            out.push_str("\nNo gateway was given (--gateway): direct figures only.\n");
        }
        out
    }

    pub fn json(&self) -> String {
        let s = &self.settings;
        let mut o = String::new();
        o.push_str("{\n  \"settings\": {");
        let _ = write!(
            o,
            "\"cpus\": {}, \"rounds\": {}, \"duration_s\": {}, \"warmup_s\": {}, \"connections\": {}, \
             \"ws_sessions\": {}, \"ws_message_bytes\": {}, \"idle_sessions\": {}, \"settle_s\": {}, \
             \"client_threads\": {}, \"backend_threads\": {}, \"source_addrs\": {}, \"gateway\": {}, \
             \"scenarios\": [{}]",
            s.cpus,
            s.rounds,
            num(s.duration_s),
            num(s.warmup_s),
            s.connections,
            s.ws_sessions,
            s.ws_message_bytes,
            s.idle_sessions,
            num(s.settle_s),
            s.client_threads,
            s.backend_threads,
            s.source_addrs,
            opt_str(s.gateway.as_deref()),
            s.scenarios
                .iter()
                .map(|sc| string(sc.key()))
                .collect::<Vec<_>>()
                .join(", "),
        );
        o.push_str("},\n  \"runs\": [");
        for (i, r) in self.runs.iter().enumerate() {
            o.push_str(if i == 0 { "\n    " } else { ",\n    " });
            let _ = write!(
                o,
                "{{\"scenario\": {}, \"via\": {}, \"round\": {}, \"workers\": {}, \"ops\": {}, \
                 \"errors\": {}, \"reconnects\": {}, \"first_error\": {}, \"measured_s\": {}, \"ops_per_s\": {}, \
                 \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}, \
                 \"gateway_cpu_us_per_op\": {}, \"gateway_cpu_pct\": {}, \"harness_cpu_pct\": {}}}",
                string(r.scenario.key()),
                string(r.via.key()),
                r.round,
                r.workers,
                r.ops,
                r.errors,
                r.reconnects,
                opt_str(r.first_error.as_deref()),
                num(r.measured_s),
                num(r.rate),
                num(r.p50_us),
                num(r.p90_us),
                num(r.p99_us),
                num(r.p999_us),
                num(r.max_us),
                opt_num(r.gateway_cpu_us_per_op),
                opt_num(r.gateway_cpu_pct),
                num(r.harness_cpu_pct),
            );
        }
        o.push_str("\n  ],\n  \"idle\": [");
        for (i, r) in self.idle.iter().enumerate() {
            o.push_str(if i == 0 { "\n    " } else { ",\n    " });
            let _ = write!(
                o,
                "{{\"round\": {}, \"requested\": {}, \"opened\": {}, \"errors\": {}, \"first_error\": {}, \
                 \"rss_before_kib\": {}, \"rss_open_kib\": {}, \"rss_closed_kib\": {}, \
                 \"kib_per_session\": {}, \"checked\": {}, \"alive\": {}}}",
                r.round,
                r.requested,
                r.opened,
                r.errors,
                opt_str(r.first_error.as_deref()),
                r.rss_before_kib,
                r.rss_open_kib,
                r.rss_closed_kib,
                num(r.kib_per_session),
                r.checked,
                r.alive,
            );
        }
        o.push_str("\n  ],\n  \"summary\": [");
        let mut first = true;
        for &scenario in &s.scenarios {
            if scenario == Scenario::Idle {
                continue;
            }
            for row in self.rows(scenario) {
                o.push_str(if first { "\n    " } else { ",\n    " });
                first = false;
                let ratio = match (row.direct, row.gateway) {
                    (Some(d), Some(g)) if d > 0.0 && !is_total(row.metric) => Some(g / d),
                    _ => None,
                };
                let _ = write!(
                    o,
                    "{{\"scenario\": {}, \"metric\": {}, \"direct\": {}, \"gateway\": {}, \"ratio\": {}}}",
                    string(scenario.key()),
                    string(row.metric),
                    opt_num(row.direct),
                    opt_num(row.gateway),
                    opt_num(ratio),
                );
            }
        }
        o.push_str("\n  ]\n}\n");
        o
    }
}

fn fmt_secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// Integer with thousands separators.
pub fn fmt_count(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds: one decimal below 100 µs, whole numbers above.
pub fn fmt_us(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        fmt_count(v)
    }
}

fn fmt_kib(v: f64) -> String {
    format!("{v:.1}")
}

fn fmt_mib(v: f64) -> String {
    format!("{v:.1}")
}

fn num(v: f64) -> String {
    if v.is_finite() {
        // Three decimals are far below the run-to-run noise.
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        "null".to_owned()
    }
}

fn opt_num(v: Option<f64>) -> String {
    v.map_or_else(|| "null".to_owned(), num)
}

fn opt_str(v: Option<&str>) -> String {
    v.map_or_else(|| "null".to_owned(), string)
}

/// A JSON string literal.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
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
    fn median_odd_even_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn counts_get_separators() {
        assert_eq!(fmt_count(0.0), "0");
        assert_eq!(fmt_count(999.4), "999");
        assert_eq!(fmt_count(1000.0), "1,000");
        assert_eq!(fmt_count(1234567.0), "1,234,567");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn json_numbers_are_trimmed() {
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(f64::NAN), "null");
    }
}
