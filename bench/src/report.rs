//! Results, their medians over rounds, and the markdown / JSON output.

use std::fmt::Write as _;

use clap::ValueEnum;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::peers::Peer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// HTTP/1.1 keep-alive, closed loop.
    Http,
    /// HTTP/1.1 keep-alive through a listener whose rule is decided by the built-in
    /// basic-rules router plugin (`router = "builtin"`); direct is the same plain keep-alive.
    #[value(name = "http-router")]
    HttpRouter,
    /// HTTP/1.1 keep-alive while the gateway reloads its configuration file (SIGHUP) every
    /// `--reload-every` (wasmgate only); direct is the same plain keep-alive.
    #[value(name = "http-reload")]
    HttpReload,
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
            Self::HttpReload => "http-reload",
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

impl Serialize for Scenario {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

/// What a run measured: the backend reached directly, or one of the proxies in front of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Direct,
    Wasmgate,
    Peer(Peer),
}

impl Via {
    pub fn key(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Wasmgate => "wasmgate",
            Self::Peer(p) => p.key(),
        }
    }
}

impl Serialize for Via {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

/// One measured run of a load scenario against one target.
#[derive(Debug, Serialize)]
pub struct RunResult {
    pub scenario: Scenario,
    pub via: Via,
    pub round: u32,
    pub workers: usize,
    pub ops: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub first_error: Option<String>,
    #[serde(serialize_with = "figure")]
    pub measured_s: f64,
    #[serde(rename = "ops_per_s", serialize_with = "figure")]
    pub rate: f64,
    #[serde(serialize_with = "figure")]
    pub p50_us: f64,
    #[serde(serialize_with = "figure")]
    pub p90_us: f64,
    #[serde(serialize_with = "figure")]
    pub p99_us: f64,
    #[serde(serialize_with = "figure")]
    pub p999_us: f64,
    #[serde(serialize_with = "figure")]
    pub max_us: f64,
    /// The proxy's CPU time (user + system, all its processes) per operation; proxy runs only.
    #[serde(rename = "proxy_cpu_us_per_op", serialize_with = "opt_figure")]
    pub gateway_cpu_us_per_op: Option<f64>,
    /// The part of it spent in user space (the proxy's own code and its libraries).
    #[serde(rename = "proxy_user_cpu_us_per_op", serialize_with = "opt_figure")]
    pub gateway_user_us_per_op: Option<f64>,
    /// The proxy's CPU use over the measured window, in % of one core.
    #[serde(rename = "proxy_cpu_pct", serialize_with = "opt_figure")]
    pub gateway_cpu_pct: Option<f64>,
    /// The harness's CPU time (load generator + backend, user + system) per operation.
    #[serde(serialize_with = "opt_figure")]
    pub harness_cpu_us_per_op: Option<f64>,
    /// The harness's own CPU use (load generator + backend), % of one core.
    #[serde(serialize_with = "figure")]
    pub harness_cpu_pct: f64,
}

/// One round of the idle-session scenario, through one proxy.
#[derive(Debug, Serialize)]
pub struct IdleResult {
    pub via: Via,
    pub round: u32,
    pub requested: usize,
    pub opened: usize,
    pub errors: u64,
    pub first_error: Option<String>,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_closed_kib: u64,
    #[serde(serialize_with = "figure")]
    pub kib_per_session: f64,
    pub checked: usize,
    pub alive: usize,
}

#[derive(Serialize)]
pub struct Settings {
    pub cpus: usize,
    pub rounds: u32,
    #[serde(serialize_with = "figure")]
    pub duration_s: f64,
    #[serde(serialize_with = "figure")]
    pub warmup_s: f64,
    pub connections: usize,
    pub ws_sessions: usize,
    pub ws_message_bytes: usize,
    pub idle_sessions: usize,
    #[serde(serialize_with = "figure")]
    pub settle_s: f64,
    pub client_threads: usize,
    pub backend_threads: usize,
    pub source_addrs: usize,
    pub gateway: Option<String>,
    /// The gateway's worker threads (0: its default, one per core).
    #[serde(skip)]
    pub gateway_workers: usize,
    /// The proxies measured, in column order, with their versions (in the JSON: an object from
    /// proxy to version).
    #[serde(serialize_with = "proxy_versions")]
    pub proxies: Vec<(Via, String)>,
    pub scenarios: Vec<Scenario>,
    /// How often the http-reload scenario reloads the gateway's configuration.
    #[serde(skip)]
    pub reload_every: std::time::Duration,
    /// Whether the peers added wasmgate's forwarding fields to every request.
    #[serde(skip)]
    pub peer_forwarding_headers: bool,
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

/// The share of every core the harness and the proxy must use together for the rate to be
/// set by their CPU time per operation (see [`Report::ceiling`]).
const SATURATED: f64 = 0.9;

const ERRORS: &str = "errors (sum of rounds)";
const RECONNECTS: &str = "keep-alive closes by peer (sum of rounds)";

/// Counts summed over rounds, for which a ratio means nothing.
fn is_total(metric: &str) -> bool {
    metric == ERRORS || metric == RECONNECTS
}

/// Reads one per-run count out of a result.
type Count = fn(&RunResult) -> u64;

/// Reads one per-run figure out of a result, where the run has it.
type Figure = fn(&RunResult) -> Option<f64>;

/// Which way a metric improves, for picking the best peer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

struct Row {
    metric: &'static str,
    /// One value per column of [`Report::columns`].
    values: Vec<Option<f64>>,
    better: Better,
    format: fn(f64) -> String,
}

impl Row {
    fn value(&self, columns: &[Via], via: Via) -> Option<f64> {
        let i = columns.iter().position(|&v| v == via)?;
        self.values[i]
    }

    /// wasmgate ÷ direct.
    fn ratio_direct(&self, columns: &[Via]) -> Option<f64> {
        if is_total(self.metric) {
            return None;
        }
        let d = self.value(columns, Via::Direct)?;
        let g = self.value(columns, Via::Wasmgate)?;
        (d > 0.0).then(|| g / d)
    }

    /// wasmgate ÷ the best peer (the highest rate, the lowest latency, CPU or memory).
    fn ratio_best_peer(&self, columns: &[Via]) -> Option<f64> {
        if is_total(self.metric) {
            return None;
        }
        let g = self.value(columns, Via::Wasmgate)?;
        let peers = columns
            .iter()
            .zip(&self.values)
            .filter(|(v, _)| matches!(v, Via::Peer(_)))
            .filter_map(|(_, x)| *x);
        let best = match self.better {
            Better::Higher => peers.fold(None, |b: Option<f64>, x| Some(b.map_or(x, |b| b.max(x)))),
            Better::Lower => peers.fold(None, |b: Option<f64>, x| Some(b.map_or(x, |b| b.min(x)))),
        }?;
        (best > 0.0).then(|| g / best)
    }
}

impl Report {
    /// Table columns: direct, then every proxy in the order measured.
    fn columns(&self) -> Vec<Via> {
        let mut columns = vec![Via::Direct];
        columns.extend(self.settings.proxies.iter().map(|(v, _)| *v));
        columns
    }

    fn has_peers(&self) -> bool {
        self.settings
            .proxies
            .iter()
            .any(|(v, _)| matches!(v, Via::Peer(_)))
    }

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
                "HTTP/1.1 keep-alive routed by the built-in router plugin (wasmgate only), {} connections",
                s.connections
            ),
            Scenario::HttpReload => format!(
                "HTTP/1.1 keep-alive while wasmgate reloads its configuration (SIGHUP every {:?}; wasmgate only), {} connections",
                s.reload_every, s.connections
            ),
            Scenario::Newconn => format!("new connection per request, {} clients", s.connections),
            Scenario::Tls => format!(
                "HTTPS keep-alive (TLS 1.3) via proxy; direct is plain HTTP, {} connections",
                s.connections
            ),
            Scenario::Tlsnew => format!(
                "full TLS handshake per request via proxy (handshakes/s); direct is plain new connections, {} clients",
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
        let columns = self.columns();
        let per = |f: Figure| -> Vec<Option<f64>> {
            columns
                .iter()
                .map(|&via| self.median_of(scenario, via, f))
                .collect()
        };
        let mut rows = vec![
            Row {
                metric: scenario.unit(),
                values: per(|r| Some(r.rate)),
                better: Better::Higher,
                format: fmt_count,
            },
            Row {
                metric: "p50 latency (µs)",
                values: per(|r| Some(r.p50_us)),
                better: Better::Lower,
                format: fmt_us,
            },
            Row {
                metric: "p99 latency (µs)",
                values: per(|r| Some(r.p99_us)),
                better: Better::Lower,
                format: fmt_us,
            },
        ];
        // CPU rows, each shown when any column has a figure.
        let cpu: [(&'static str, Figure); 3] = [
            ("proxy CPU per op (µs)", |r| r.gateway_cpu_us_per_op),
            ("proxy user-space CPU per op (µs)", |r| {
                r.gateway_user_us_per_op
            }),
            ("harness CPU per op (µs)", |r| r.harness_cpu_us_per_op),
        ];
        for (metric, f) in cpu {
            let values = per(f);
            if values.iter().any(Option::is_some) {
                rows.push(Row {
                    metric,
                    values,
                    better: Better::Lower,
                    format: fmt_us,
                });
            }
        }
        let totals: [(&'static str, Count); 2] =
            [(ERRORS, |r| r.errors), (RECONNECTS, |r| r.reconnects)];
        for (metric, f) in totals {
            let values: Vec<Option<f64>> = columns
                .iter()
                .map(|&via| self.sum_of(scenario, via, f))
                .collect();
            if values.iter().any(|v| v.unwrap_or(0.0) > 0.0) {
                rows.push(Row {
                    metric,
                    values,
                    better: Better::Lower,
                    format: fmt_count,
                });
            }
        }
        rows
    }

    fn idle_rows(&self) -> Vec<Row> {
        let columns = self.columns();
        let per = |f: fn(&IdleResult) -> f64| -> Vec<Option<f64>> {
            columns
                .iter()
                .map(|&via| {
                    let mut values: Vec<f64> =
                        self.idle.iter().filter(|r| r.via == via).map(f).collect();
                    median(&mut values)
                })
                .collect()
        };
        let mut rows = vec![
            Row {
                metric: "RSS per session (KiB)",
                values: per(|r| r.kib_per_session),
                better: Better::Lower,
                format: fmt_kib,
            },
            Row {
                metric: "RSS before opening (MiB)",
                values: per(|r| r.rss_before_kib as f64 / 1024.0),
                better: Better::Lower,
                format: fmt_mib,
            },
            Row {
                metric: "RSS growth left after closing (MiB)",
                values: per(|r| (r.rss_closed_kib as f64 - r.rss_before_kib as f64) / 1024.0),
                better: Better::Lower,
                format: fmt_mib,
            },
        ];
        let errors: Vec<Option<f64>> = columns
            .iter()
            .map(|&via| {
                let mut any = false;
                let mut sum = 0;
                for r in self.idle.iter().filter(|r| r.via == via) {
                    any = true;
                    sum += r.errors;
                }
                any.then_some(sum as f64)
            })
            .collect();
        if errors.iter().any(|v| v.unwrap_or(0.0) > 0.0) {
            rows.push(Row {
                metric: ERRORS,
                values: errors,
                better: Better::Lower,
                format: fmt_count,
            });
        }
        rows
    }

    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let columns = self.columns();
        let peers = self.has_peers();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Median of {} round(s); each run: {} warm-up, then {} measured. {} CPU(s) shared by \
             the load generator ({} thread(s)), the in-process backend ({} thread(s)) and the proxy.",
            s.rounds,
            fmt_secs(s.warmup_s),
            fmt_secs(s.duration_s),
            s.cpus,
            s.client_threads,
            s.backend_threads,
        );
        if !s.proxies.is_empty() {
            let versions: Vec<String> = s.proxies.iter().map(|(_, v)| v.clone()).collect();
            let _ = writeln!(out, "\nProxies: {}.", versions.join(", "));
        }
        if s.peer_forwarding_headers && self.has_peers() {
            out.push_str(
                "\nThe peers add the forwarding fields wasmgate adds to every request \
                 (`--peer-forwarding-headers`: X-Forwarded-For, -Proto, -Port, X-Original-Host, \
                 X-Original-URL, X-AppGW-Trace-Id), so the backend gets the same requests from \
                 every proxy.\n",
            );
        }
        if s.gateway.is_some() {
            let workers = match s.gateway_workers {
                0 => "one per core (its default)".to_string(),
                n => format!("{n} (`--workers {n}`)"),
            };
            let _ = writeln!(out, "\nwasmgate's worker threads: {workers}.");
        }
        out.push('\n');
        out.push_str("| scenario | metric |");
        for via in &columns {
            let _ = write!(out, " {} |", via.key());
        }
        out.push_str(" wasmgate / direct |");
        if peers {
            out.push_str(" wasmgate / best peer |");
        }
        out.push_str("\n| --- | --- |");
        for _ in 0..columns.len() + 1 + usize::from(peers) {
            out.push_str(" ---: |");
        }
        out.push('\n');
        let mut sections: Vec<(String, Vec<Row>)> = s
            .scenarios
            .iter()
            .filter(|&&sc| sc != Scenario::Idle)
            .map(|&sc| (self.title(sc), self.rows(sc)))
            .collect();
        if !self.idle.is_empty() {
            sections.push((self.title(Scenario::Idle), self.idle_rows()));
        }
        for (title, rows) in sections {
            for (i, row) in rows.iter().enumerate() {
                let title = if i == 0 { title.as_str() } else { "" };
                let cell = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), row.format);
                let ratio =
                    |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}"));
                let _ = write!(out, "| {title} | {} |", row.metric);
                for v in &row.values {
                    let _ = write!(out, " {} |", cell(*v));
                }
                let _ = write!(out, " {} |", ratio(row.ratio_direct(&columns)));
                if peers {
                    let _ = write!(out, " {} |", ratio(row.ratio_best_peer(&columns)));
                }
                out.push('\n');
            }
        }
        out.push('\n');
        out.push_str(
            "Latencies are per operation as seen by the client (for new connections: \
             connect + request + response). Ratios are of the medians; the best peer is the \
             one with the highest rate or the lowest latency, CPU or memory in that row. \
             \"Proxy CPU per op\" is the proxy's user + system CPU time (all its processes) over \
             the measured window divided by the operations completed in it; its user-space part \
             is the proxy's own code and libraries, the rest is the kernel working for it. \
             \"Harness CPU per op\" is the same for the load generator and the backend together \
             (this process), whatever the target. Idle-session memory \
             is VmRSS growth (all the proxy's processes) / sessions, a fresh proxy per round.\n",
        );
        let ceilings: Vec<String> = s
            .scenarios
            .iter()
            .filter_map(|&sc| {
                let (ratio, peer) = self.ceiling(sc)?;
                Some(format!("{} {ratio:.2}× {peer}", sc.key()))
            })
            .collect();
        if !ceilings.is_empty() {
            let _ = writeln!(
                out,
                "\nThe rate wasmgate would reach if its own code took no CPU at all, over the best \
                 peer's rate: {}. The model: with the cores saturated (harness and proxy together \
                 at {} % or more), the rate is the cores' time over the harness's and the proxy's \
                 CPU per operation, and the proxy's user-space time is taken out while the \
                 harness's and the kernel's stay as measured.",
                ceilings.join(", "),
                SATURATED * 100.0,
            );
        }
        if s.gateway.is_none() {
            out.push_str("\nNo gateway was given (--gateway): wasmgate was not measured.\n");
        }
        out
    }

    /// How far wasmgate's rate in `scenario` could go if its user-space CPU time were zero,
    /// as a ratio to the best peer's measured rate (and that peer's name). `None` without
    /// peers, CPU figures, or cores saturated in wasmgate's runs (where the model holds).
    fn ceiling(&self, scenario: Scenario) -> Option<(f64, &'static str)> {
        let med = |f: Figure| self.median_of(scenario, Via::Wasmgate, f);
        let rate = med(|r| Some(r.rate))?;
        let proxy = med(|r| r.gateway_cpu_us_per_op)?;
        let user = med(|r| r.gateway_user_us_per_op)?;
        let harness = med(|r| r.harness_cpu_us_per_op)?;
        let busy = med(|r| Some(r.gateway_cpu_pct? + r.harness_cpu_pct))?;
        if busy < SATURATED * 100.0 * self.settings.cpus as f64 || harness + proxy - user <= 0.0 {
            return None;
        }
        let (peer, best) = self
            .settings
            .proxies
            .iter()
            .filter(|(v, _)| matches!(v, Via::Peer(_)))
            .filter_map(|&(v, _)| Some((v, self.median_of(scenario, v, |r| Some(r.rate))?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        let ceiling = rate * (harness + proxy) / (harness + proxy - user);
        Some((ceiling / best, peer.key()))
    }

    /// Every run, every idle round and the summary rows, as JSON.
    pub fn json(&self) -> String {
        let columns = self.columns();
        let mut sections: Vec<(Scenario, Vec<Row>)> = self
            .settings
            .scenarios
            .iter()
            .filter(|&&sc| sc != Scenario::Idle)
            .map(|&sc| (sc, self.rows(sc)))
            .collect();
        if !self.idle.is_empty() {
            sections.push((Scenario::Idle, self.idle_rows()));
        }
        let summary: Vec<SummaryRow<'_>> = sections
            .iter()
            .flat_map(|(scenario, rows)| {
                rows.iter().map(|row| SummaryRow {
                    scenario: *scenario,
                    row,
                    columns: &columns,
                })
            })
            .collect();
        let json = JsonReport {
            settings: &self.settings,
            runs: &self.runs,
            idle: &self.idle,
            summary,
        };
        let mut out = serde_json::to_string_pretty(&json).expect("a report serialises");
        out.push('\n');
        out
    }
}

/// The JSON file's layout.
#[derive(Serialize)]
struct JsonReport<'a> {
    settings: &'a Settings,
    runs: &'a [RunResult],
    idle: &'a [IdleResult],
    summary: Vec<SummaryRow<'a>>,
}

/// A summary row as JSON: `scenario`, `metric`, one field per column (`direct`, `wasmgate`, each
/// peer) and the two ratios.
struct SummaryRow<'a> {
    scenario: Scenario,
    row: &'a Row,
    columns: &'a [Via],
}

impl Serialize for SummaryRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.columns.len() + 4))?;
        map.serialize_entry("scenario", &self.scenario)?;
        map.serialize_entry("metric", self.row.metric)?;
        for (via, value) in self.columns.iter().zip(&self.row.values) {
            map.serialize_entry(via.key(), &value.map(rounded))?;
        }
        map.serialize_entry(
            "wasmgate_over_direct",
            &self.row.ratio_direct(self.columns).map(rounded),
        )?;
        map.serialize_entry(
            "wasmgate_over_best_peer",
            &self.row.ratio_best_peer(self.columns).map(rounded),
        )?;
        map.end()
    }
}

/// Three decimals are far below the run-to-run noise; a figure that is not finite is `null`
/// (serde_json writes it so).
fn rounded(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        v
    }
}

fn figure<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    rounded(*v).serialize(s)
}

fn opt_figure<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    v.map(rounded).serialize(s)
}

fn proxy_versions<S: Serializer>(proxies: &[(Via, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(proxies.iter().map(|(via, version)| (via.key(), version)))
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

    fn run(via: Via, rate: f64, cpu: Option<(f64, f64)>, harness_us: f64) -> RunResult {
        let measured_s = 5.0;
        let pct = |us_per_op: f64| us_per_op * rate / 1e4;
        RunResult {
            scenario: Scenario::Http,
            via,
            round: 1,
            workers: 2,
            ops: (rate * measured_s) as u64,
            errors: 0,
            reconnects: 0,
            first_error: None,
            measured_s,
            rate,
            p50_us: 900.0,
            p90_us: 1_000.0,
            p99_us: 2_000.0,
            p999_us: 3_000.0,
            max_us: 4_000.0,
            gateway_cpu_us_per_op: cpu.map(|(total, _)| total),
            gateway_user_us_per_op: cpu.map(|(_, user)| user),
            gateway_cpu_pct: cpu.map(|(total, _)| pct(total)),
            harness_cpu_us_per_op: Some(harness_us),
            harness_cpu_pct: pct(harness_us),
        }
    }

    fn report(runs: Vec<RunResult>) -> Report {
        Report {
            settings: Settings {
                cpus: 2,
                rounds: 1,
                duration_s: 5.0,
                warmup_s: 1.0,
                connections: 64,
                ws_sessions: 64,
                ws_message_bytes: 32,
                idle_sessions: 0,
                settle_s: 2.0,
                client_threads: 1,
                backend_threads: 1,
                source_addrs: 64,
                gateway: Some("wasmgate".into()),
                gateway_workers: 0,
                proxies: vec![
                    (Via::Wasmgate, "wasmgate".into()),
                    (Via::Peer(Peer::Nginx), "nginx".into()),
                    (Via::Peer(Peer::Haproxy), "haproxy".into()),
                ],
                scenarios: vec![Scenario::Http],
                reload_every: std::time::Duration::from_secs(1),
                peer_forwarding_headers: false,
            },
            runs,
            idle: Vec::new(),
        }
    }

    #[test]
    fn the_ceiling_takes_out_wasmgates_user_time_and_compares_with_the_best_peer() {
        // 2 cores saturated: 60,000 ops/s × (18 + 15) µs = 198 %.
        let saturated = report(vec![
            run(Via::Direct, 140_000.0, None, 14.0),
            run(Via::Wasmgate, 60_000.0, Some((15.0, 5.0)), 18.0),
            run(Via::Peer(Peer::Nginx), 62_000.0, Some((14.0, 2.0)), 18.0),
            run(Via::Peer(Peer::Haproxy), 64_000.0, Some((13.5, 3.0)), 17.5),
        ]);
        let (ratio, peer) = saturated.ceiling(Scenario::Http).expect("a ceiling");
        // 60,000 × 33 / 28 = 70,714 against HAProxy's 64,000.
        assert!((ratio - 70_714.3 / 64_000.0).abs() < 1e-3, "{ratio}");
        assert_eq!(peer, "haproxy");
        assert!(saturated.markdown().contains("http 1.10× haproxy"));

        // Half the cores idle: the rate is not set by CPU time, so no ceiling is claimed.
        let idle = report(vec![
            run(Via::Wasmgate, 30_000.0, Some((15.0, 5.0)), 18.0),
            run(Via::Peer(Peer::Nginx), 31_000.0, Some((14.0, 2.0)), 18.0),
        ]);
        assert_eq!(idle.ceiling(Scenario::Http), None);
        assert!(!idle.markdown().contains("if its own code took no CPU"));
    }

    #[test]
    fn the_json_has_every_run_and_the_summary() {
        let mut wasmgate = run(Via::Wasmgate, 60_000.123_456, Some((15.0, 5.0)), 18.0);
        wasmgate.first_error = Some("reset \"by\" peer\n".into());
        let r = report(vec![
            run(Via::Direct, 140_000.0, None, 14.0),
            wasmgate,
            run(Via::Peer(Peer::Nginx), 62_000.0, Some((14.0, 2.0)), 18.0),
        ]);
        let json: serde_json::Value = serde_json::from_str(&r.json()).expect("valid JSON");
        assert_eq!(json["settings"]["duration_s"], 5.0);
        assert_eq!(json["settings"]["proxies"]["nginx"], "nginx");
        assert_eq!(json["settings"]["scenarios"][0], "http");
        assert!(json["settings"].get("reload_every").is_none());
        let run = &json["runs"][1];
        assert_eq!(run["via"], "wasmgate");
        assert_eq!(run["ops_per_s"], 60_000.123);
        assert_eq!(run["proxy_cpu_us_per_op"], 15.0);
        assert_eq!(run["proxy_user_cpu_us_per_op"], 5.0);
        assert_eq!(run["first_error"], "reset \"by\" peer\n");
        assert!(json["runs"][0]["proxy_cpu_pct"].is_null());
        assert_eq!(json["idle"].as_array().map(Vec::len), Some(0));
        let rate = &json["summary"][0];
        assert_eq!(rate["scenario"], "http");
        assert_eq!(rate["metric"], "requests/s");
        assert_eq!(rate["direct"], 140_000.0);
        assert_eq!(rate["nginx"], 62_000.0);
        assert_eq!(rate["wasmgate_over_direct"], 0.429);
        assert_eq!(rate["wasmgate_over_best_peer"], 0.968);
        assert!(rounded(f64::NAN).is_nan());
        assert_eq!(
            serde_json::to_string(&Some(rounded(f64::NAN))).unwrap(),
            "null"
        );
    }
}
