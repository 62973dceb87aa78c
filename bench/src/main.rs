//! wasmgate-bench: measures the gateway against its backend reached directly,
//! in the same run, and prints a markdown table of medians over rounds.
//!
//! Threads on a small machine: the load generator runs on its own tokio
//! runtime (1 thread by default), the backend on another (1 thread, on its
//! own OS thread), and the gateway is a separate process with its own
//! threads. Direct runs therefore use one core for the client and one for
//! the backend; gateway runs add the gateway's threads on the same cores,
//! which is the honest price of an extra hop on a saturated machine. The
//! gateway's CPU time per operation is reported as well, as a figure that
//! depends less on that contention.

mod backend;
mod gateway;
mod load;
mod net;
mod peers;
mod probing;
mod report;
mod scale;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::backend::Backend;
use crate::gateway::{CpuTime, Gateway, cpu_time_us, tree_cpu_time_us, tree_rss_kib};
use crate::load::{Target, Window};
use crate::net::SourceAddrs;
use crate::peers::{Peer, PeerProxy};
use crate::report::{IdleResult, Report, RunResult, Scenario, Settings, Via, fmt_count, fmt_us};
use crate::tls::TestCert;

/// Pause between runs, so that the sockets of one run are closed before the
/// next one starts.
const PAUSE: Duration = Duration::from_millis(500);

/// Handshakes in flight while opening idle sessions.
const IDLE_OPEN_PARALLEL: usize = 64;

/// Upper bound on opening all idle sessions.
const IDLE_OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// File descriptors kept free for everything but the idle sessions.
const FD_RESERVE: u64 = 256;

#[derive(Parser, Debug)]
#[command(
    name = "wasmgate-bench",
    about = "Benchmarks wasmgate against its backend reached directly, in the same run",
    after_help = "Linux only (reads /proc). Raise the open-file limit first (`ulimit -n \
                  $(ulimit -Hn)`; scripts/bench does): the harness holds two descriptors per \
                  idle WebSocket session (client and backend side)."
)]
struct Args {
    /// Path to the wasmgate binary; without it wasmgate is not measured.
    #[arg(long)]
    gateway: Option<PathBuf>,

    /// Have the peers add to every request the forwarding fields wasmgate adds (X-Forwarded-For,
    /// -Proto, -Port, X-Original-Host, X-Original-URL, X-AppGW-Trace-Id), so that the backend
    /// gets the same requests from every proxy. Off: each peer as its documentation configures it.
    #[arg(long)]
    peer_forwarding_headers: bool,

    /// A message filter component (e.g. target/plugins/example-passthrough-filter.wasm) on the
    /// gateway's route: every WebSocket scenario then measures filtered sessions. Run once with
    /// and once without to compare.
    #[arg(long)]
    message_filter: Option<PathBuf>,

    /// Worker threads of the measured gateway (`wasmgate run --workers`; 0: its default, one
    /// per core).
    #[arg(long, default_value_t = 0)]
    gateway_workers: usize,

    /// Peer proxies measured in the same run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "nginx,haproxy,caddy"
    )]
    peers: Vec<Peer>,

    /// Measure no peer proxy (wasmgate against the backend only).
    #[arg(long)]
    no_peers: bool,

    /// Measured time per run (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,

    /// Warm-up before each measured run; connections are opened during it.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,

    /// Rounds; each alternates the order of direct and gateway runs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
    rounds: u32,

    /// Concurrent HTTP connections (keep-alive) or clients (new connection per request).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,

    /// Concurrent WebSocket echo sessions.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    ws_sessions: u32,

    /// Size of each WebSocket echo message in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    ws_message_bytes: u32,

    /// Idle WebSocket sessions opened through the gateway to measure its memory.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=9000))]
    idle_ws: u32,

    /// Pause before each memory reading of the idle scenario.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,

    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "http,newconn,ws,idle"
    )]
    scenarios: Vec<Scenario>,

    /// Also write all rounds and the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Load-generator threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    client_threads: u32,

    /// Backend threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    backend_threads: u32,

    /// Client source addresses 127.0.0.2..=127.0.0.(1+N); 0 = 127.0.0.1 only.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u8).range(0..=250))]
    source_addrs: u8,

    /// Health-probe targets added to the gateway's configuration (probing the backend).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=5000))]
    probe_targets: u32,

    /// Probe interval of those targets.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    probe_interval: Duration,

    /// How often the http-reload scenario sends the gateway SIGHUP (a full configuration reload).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    reload_every: Duration,
}

/// Accepts "10s", "1.5s", "500ms", "2m" or a bare number of seconds, up to an hour.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 10s, 500ms, 1m)"))?;
    let secs = value * unit;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("duration out of range (0 to 1 h): {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    // The scale run and its helper processes are subcommands of the same binary.
    let helper = match std::env::args().nth(1).as_deref() {
        Some("scale") => Some(scale::scale_main(scale::ScaleArgs::parse_from(
            std::env::args().skip(1),
        ))),
        Some("scale-backend") => Some(scale::backend_main()),
        Some("scale-client") => Some(scale::client_main(scale::ClientArgs::parse_from(
            std::env::args().skip(1),
        ))),
        _ => None,
    };
    if let Some(result) = helper {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    if args.duration < Duration::from_millis(100) {
        eprintln!("error: --duration must be at least 100ms");
        return ExitCode::from(2);
    }
    let runtime = if args.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads as usize)
            .thread_name("loadgen")
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: building the load-generator runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Dropping `run` on a signal drops the gateway handle, which kills the
    // child process; the backend thread stops when its handle drops.
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&args) => r,
            signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));

    match result {
        Ok(report) => {
            print!("{}", report.markdown());
            if let Some(path) = &args.json
                && let Err(e) = std::fs::write(path, report.json())
            {
                eprintln!("error: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = sigterm => "SIGTERM",
    }
}

/// A proxy under test: wasmgate or a peer.
enum Proxy {
    Wasmgate(Gateway),
    Peer(PeerProxy),
}

impl Proxy {
    async fn start(
        via: Via,
        args: &Args,
        backend: SocketAddr,
        with_router: bool,
        cert: &TestCert,
    ) -> Result<Self> {
        match via {
            Via::Wasmgate => {
                let binary = args.gateway.as_ref().context("no --gateway")?;
                Ok(Self::Wasmgate(
                    Gateway::start(
                        binary,
                        args.gateway_workers,
                        backend,
                        with_router,
                        args.message_filter.as_deref(),
                        cert,
                    )
                    .await?,
                ))
            }
            Via::Peer(peer) => Ok(Self::Peer(
                PeerProxy::start(peer, backend, cert, args.peer_forwarding_headers).await?,
            )),
            Via::Direct => bail!("the direct target is not a proxy"),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Self::Wasmgate(g) => g.addr,
            Self::Peer(p) => p.addr,
        }
    }

    fn tls_addr(&self) -> SocketAddr {
        match self {
            Self::Wasmgate(g) => g.tls_addr,
            Self::Peer(p) => p.tls_addr,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Self::Wasmgate(g) => g.pid(),
            Self::Peer(p) => p.pid(),
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        match self {
            Self::Wasmgate(g) => g.check_alive(),
            Self::Peer(p) => p.check_alive(),
        }
    }

    /// Checks that the proxy really proxies: `count` keep-alive GETs answered with the
    /// backend's body and `count` WebSocket echoes, then one GET over its HTTPS listener.
    async fn check(
        &self,
        via: Via,
        sources: &SourceAddrs,
        count: usize,
        payload: &Utf8Bytes,
        cert: &TestCert,
    ) -> Result<()> {
        load::warm_up(&Target::new(self.addr(), sources.clone()), count, payload)
            .await
            .with_context(|| {
                format!("checking {} (GET / and a WebSocket echo on /ws)", via.key())
            })?;
        let tls = Target::new(self.tls_addr(), sources.clone())
            .with_tls(tls::TlsClient::new(&cert.ca, false)?);
        load::check_http(&tls, 2)
            .await
            .with_context(|| format!("checking {} over HTTPS", via.key()))
    }
}

async fn run(args: &Args) -> Result<Report> {
    probing::configure(args.probe_targets, args.probe_interval);
    let mut scenarios = Vec::new();
    for &s in &args.scenarios {
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    }
    let peers: Vec<Peer> = if args.no_peers {
        Vec::new()
    } else {
        let mut peers = Vec::new();
        for &p in &args.peers {
            if !peers.contains(&p) {
                peers.push(p);
            }
        }
        peers
    };
    peers::check_installed(&peers)?;
    let mut proxies: Vec<(Via, String)> = Vec::new();
    if args.gateway.is_some() {
        proxies.push((
            Via::Wasmgate,
            format!("wasmgate {}", env!("CARGO_PKG_VERSION")),
        ));
    }
    for &peer in &peers {
        proxies.push((Via::Peer(peer), peer.version()?));
    }
    let sources = SourceAddrs::detect(args.source_addrs);
    let settings = Settings {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rounds: args.rounds,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        connections: args.connections as usize,
        ws_sessions: args.ws_sessions as usize,
        ws_message_bytes: args.ws_message_bytes as usize,
        idle_sessions: idle_budget(args.idle_ws as usize, scenarios.contains(&Scenario::Idle)),
        settle_s: args.settle.as_secs_f64(),
        client_threads: args.client_threads as usize,
        backend_threads: args.backend_threads as usize,
        source_addrs: sources.len(),
        gateway: args.gateway.as_ref().map(|p| p.display().to_string()),
        gateway_workers: args.gateway_workers,
        proxies,
        scenarios,
        reload_every: args.reload_every,
        peer_forwarding_headers: args.peer_forwarding_headers,
    };
    let mut report = Report {
        settings,
        runs: Vec::new(),
        idle: Vec::new(),
    };
    let payload = Utf8Bytes::from("x".repeat(args.ws_message_bytes as usize));
    let cert = TestCert::generate()?;

    let backend = Backend::start(args.backend_threads as usize)?;
    let direct = Target::new(backend.addr, sources.clone());
    load::warm_up(&direct, 10, &payload)
        .await
        .context("checking the backend")?;

    let load_scenarios: Vec<Scenario> = report
        .settings
        .scenarios
        .iter()
        .copied()
        .filter(|&s| s != Scenario::Idle)
        .collect();
    let vias: Vec<Via> = report.settings.proxies.iter().map(|(v, _)| *v).collect();
    // One process per proxy serves all load runs; the idle scenario starts its own per round.
    let mut running: Vec<(Via, Proxy)> = Vec::new();
    if !load_scenarios.is_empty() {
        let with_router = load_scenarios.contains(&Scenario::HttpRouter);
        for &via in &vias {
            let proxy = Proxy::start(via, args, backend.addr, with_router, &cert).await?;
            proxy.check(via, &sources, 10, &payload, &cert).await?;
            eprintln!(
                "{} pid {} listening on {}",
                via.key(),
                proxy.pid(),
                proxy.addr()
            );
            if via == Via::Wasmgate && args.probe_targets > 0 {
                // What probing alone costs: the gateway's CPU while no traffic flows.
                sleep(Duration::from_secs(2)).await;
                let before = cpu_time_us(Some(proxy.pid()))?;
                let window = Duration::from_secs(5);
                sleep(window).await;
                let used = cpu_time_us(Some(proxy.pid()))?.since(before).total_us();
                eprintln!(
                    "probing {} targets every {:?}: gateway CPU {:.1}% of one core with no traffic",
                    args.probe_targets,
                    args.probe_interval,
                    used as f64 / window.as_micros() as f64 * 100.0
                );
            }
            running.push((via, proxy));
        }
    }
    if args.gateway.is_none() && report.settings.scenarios.contains(&Scenario::HttpRouter) {
        eprintln!(
            "note: the http-router scenario measures wasmgate only; skipped without --gateway"
        );
    }

    for round in 1..=args.rounds {
        for &scenario in &load_scenarios {
            // Rotating the order from round to round cancels slow drifts (thermal, page
            // cache, TIME_WAIT build-up, other work on the machine) between the targets.
            let mut order = vec![Via::Direct];
            order.extend(running.iter().map(|(v, _)| *v));
            let shift = (round as usize - 1) % order.len();
            order.rotate_left(shift);
            for via in order {
                let proxy = running.iter().find(|(v, _)| *v == via).map(|(_, p)| p);
                let target = match (via, proxy) {
                    (Via::Direct, _) => direct.clone(),
                    (_, None) => continue,
                    (_, Some(p)) if scenario.is_tls() => {
                        // Full handshakes for the handshake rate; keep-alive reuses one anyway.
                        let client = tls::TlsClient::new(&cert.ca, false)?;
                        Target::new(p.tls_addr(), sources.clone()).with_tls(client)
                    }
                    (_, Some(Proxy::Wasmgate(gw))) if scenario == Scenario::HttpRouter => {
                        let addr = gw
                            .router_addr
                            .context("the gateway has no router listener")?;
                        Target::new(addr, sources.clone())
                    }
                    // The router and reload scenarios are wasmgate's own.
                    (_, Some(Proxy::Peer(_)))
                        if matches!(scenario, Scenario::HttpRouter | Scenario::HttpReload) =>
                    {
                        continue;
                    }
                    (_, Some(p)) => Target::new(p.addr(), sources.clone()),
                };
                let pid = proxy.map(Proxy::pid);
                let result = run_load(args, scenario, via, round, &target, pid, &payload).await?;
                print_progress(args.rounds, &result);
                report.runs.push(result);
                if let Some((_, p)) = running.iter_mut().find(|(v, _)| *v == via) {
                    p.check_alive()?;
                }
                sleep(PAUSE).await;
            }
        }
        if report.settings.scenarios.contains(&Scenario::Idle) {
            let mut order = vias.clone();
            if !order.is_empty() {
                let shift = (round as usize - 1) % order.len();
                order.rotate_left(shift);
            }
            for via in order {
                let result = idle_round(
                    args,
                    via,
                    &backend,
                    &sources,
                    round,
                    report.settings.idle_sessions,
                    &payload,
                    &cert,
                )
                .await?;
                eprintln!(
                    "[round {round}/{}] idle    {:<8} {:>6} sessions  {:.1} KiB/session  \
                     (RSS {} -> {} KiB, {} KiB after closing; {}/{} sampled sessions alive)",
                    args.rounds,
                    via.key(),
                    result.opened,
                    result.kib_per_session,
                    result.rss_before_kib,
                    result.rss_open_kib,
                    result.rss_closed_kib,
                    result.alive,
                    result.checked,
                );
                if let Some(e) = &result.first_error {
                    eprintln!("    {} errors, first: {e}", result.errors);
                }
                report.idle.push(result);
            }
        }
    }
    drop(running);
    drop(backend);
    Ok(report)
}

/// Limits the idle-session count to what the open-file limit allows: the
/// harness holds both ends (client and in-process backend) of every session.
/// The gateway inherits the same limit and also needs two per session.
fn idle_budget(requested: usize, needed: bool) -> usize {
    if !needed {
        return requested;
    }
    let Some(limit) = open_file_limit() else {
        return requested;
    };
    let budget = usize::try_from(limit.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX);
    if budget < requested {
        eprintln!(
            "note: open-file limit {limit} allows only {budget} idle sessions (raise it with \
             `ulimit -n $(ulimit -Hn)`); using {budget}"
        );
        budget.max(1)
    } else {
        requested
    }
}

/// The soft RLIMIT_NOFILE, read from /proc since the harness has no libc.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn run_load(
    args: &Args,
    scenario: Scenario,
    via: Via,
    round: u32,
    target: &Target,
    gateway_pid: Option<u32>,
    payload: &Utf8Bytes,
) -> Result<RunResult> {
    let workers = match scenario {
        Scenario::Ws => args.ws_sessions,
        _ => args.connections,
    } as usize;
    let window = Window::starting_now(args.warmup, args.duration);
    let workers_done = load::run_workers(workers, |id| {
        load::worker(scenario, target.clone(), payload.clone(), id, window)
    });
    let reloads = async {
        match (scenario, via, gateway_pid) {
            (Scenario::HttpReload, Via::Wasmgate, Some(pid)) => {
                reload_repeatedly(pid, args.reload_every, window).await
            }
            _ => Ok(0),
        }
    };
    let (stats, cpu, reloads) =
        tokio::join!(workers_done, sample_cpu(window, gateway_pid), reloads);
    let stats = stats?;
    let reloads = reloads?;
    if reloads > 0 {
        eprintln!("    {reloads} configuration reloads (SIGHUP) during the run");
    }

    let measured_s = (window.end - window.measure_start).as_secs_f64();
    let quantile_us = |q: f64| stats.hist.value_at_quantile(q) as f64 / 1000.0;
    let ops = stats.ops;
    let gateway_cpu_us = cpu.gateway.map(|t| t.total_us() as f64);
    let per_op = |us: Option<u64>| us.filter(|_| ops > 0).map(|us| us as f64 / ops as f64);
    Ok(RunResult {
        scenario,
        via,
        round,
        workers,
        ops,
        errors: stats.errors,
        reconnects: stats.reconnects,
        first_error: stats.first_error.clone(),
        measured_s,
        rate: ops as f64 / measured_s,
        p50_us: quantile_us(0.5),
        p90_us: quantile_us(0.9),
        p99_us: quantile_us(0.99),
        p999_us: quantile_us(0.999),
        max_us: stats.hist.max() as f64 / 1000.0,
        gateway_cpu_us_per_op: per_op(cpu.gateway.map(CpuTime::total_us)),
        gateway_user_us_per_op: per_op(cpu.gateway.map(|t| t.user_us)),
        gateway_cpu_pct: gateway_cpu_us.map(|us| us / (measured_s * 1e4)),
        harness_cpu_us_per_op: per_op(cpu.harness.map(CpuTime::total_us)),
        harness_cpu_pct: cpu
            .harness
            .map_or(f64::NAN, |t| t.total_us() as f64 / (measured_s * 1e4)),
    })
}

/// Sends the gateway SIGHUP every `every` from the start of the measured window to its end;
/// each makes it read, validate and apply its configuration file again. Returns how many.
async fn reload_repeatedly(pid: u32, every: Duration, window: Window) -> Result<u64> {
    sleep_until(window.measure_start).await;
    let mut tick = tokio::time::interval(every);
    let mut sent = 0;
    loop {
        tick.tick().await;
        if Instant::now() >= window.end {
            return Ok(sent);
        }
        // Off the load generator's thread: a fork and exec per reload.
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
        })
        .await
        .context("sending SIGHUP")?
        .context("sending SIGHUP")?;
        if !status.success() {
            bail!("kill -HUP {pid} failed: {status}");
        }
        sent += 1;
    }
}

struct CpuUse {
    gateway: Option<CpuTime>,
    harness: Option<CpuTime>,
}

/// CPU time consumed during the measured window by the gateway and by this
/// process (load generator + backend).
async fn sample_cpu(window: Window, gateway_pid: Option<u32>) -> CpuUse {
    let read = || {
        (
            gateway_pid.and_then(|pid| tree_cpu_time_us(pid).ok()),
            cpu_time_us(None).ok(),
        )
    };
    sleep_until(window.measure_start).await;
    let (g0, h0) = read();
    sleep_until(window.end).await;
    let (g1, h1) = read();
    let delta = |a: Option<CpuTime>, b: Option<CpuTime>| Some(b?.since(a?));
    CpuUse {
        gateway: delta(g0, g1),
        harness: delta(h0, h1),
    }
}

fn print_progress(rounds: u32, r: &RunResult) {
    let unit = if r.scenario == Scenario::Ws {
        "msg/s"
    } else {
        "req/s"
    };
    let gateway_cpu = r
        .gateway_cpu_us_per_op
        .map(|us| format!("  proxy CPU {} µs/op", fmt_us(us)))
        .unwrap_or_default();
    eprintln!(
        "[round {}/{rounds}] {:<7} {:<8} {:>9} {unit}  p50 {:>6} µs  p99 {:>6} µs  harness CPU {:.0}%{gateway_cpu}",
        r.round,
        r.scenario.key(),
        r.via.key(),
        fmt_count(r.rate),
        fmt_us(r.p50_us),
        fmt_us(r.p99_us),
        r.harness_cpu_pct,
    );
    if let Some(e) = &r.first_error {
        eprintln!("    {} errors, first: {e}", r.errors);
    }
    if r.reconnects > 0 {
        eprintln!(
            "    {} keep-alive connections closed by the peer (reconnected)",
            r.reconnects
        );
    }
}

/// One round of the idle-session scenario on a freshly started proxy, so that memory freed by
/// earlier rounds (which the allocator keeps) does not hide the growth.
#[allow(clippy::too_many_arguments)]
async fn idle_round(
    args: &Args,
    via: Via,
    backend: &Backend,
    sources: &SourceAddrs,
    round: u32,
    count: usize,
    payload: &Utf8Bytes,
    cert: &TestCert,
) -> Result<IdleResult> {
    let settle = args.settle;
    let mut proxy = Proxy::start(via, args, backend.addr, false, cert).await?;
    let pid = proxy.pid();
    let target = Target::new(proxy.addr(), sources.clone());

    // Bring the proxy past its first-use allocations (runtime workers, buffers, backend pool)
    // so that the baseline holds them.
    load::warm_up(&target, 64, payload)
        .await
        .with_context(|| format!("warming up {}", via.key()))?;
    let deadline = Instant::now() + IDLE_OPEN_TIMEOUT;
    let (warm, _) =
        load::open_idle_sessions(&target, IDLE_OPEN_PARALLEL, IDLE_OPEN_PARALLEL, deadline).await;
    drop(warm);
    sleep(settle).await;
    let rss_before_kib = tree_rss_kib(pid)?;

    let deadline = Instant::now() + IDLE_OPEN_TIMEOUT;
    let (mut sessions, stats) =
        load::open_idle_sessions(&target, count, IDLE_OPEN_PARALLEL, deadline).await;
    if sessions.is_empty() {
        bail!(
            "no idle session could be opened through {}: {}",
            via.key(),
            stats.first_error.as_deref().unwrap_or("no error recorded")
        );
    }
    sleep(settle).await;
    let rss_open_kib = tree_rss_kib(pid)?;
    proxy.check_alive()?;

    // A few sessions, spread over the set, must still echo: otherwise the proxy dropped them
    // and the memory figure means nothing.
    let step = (sessions.len() / 10).max(1);
    let mut checked = 0;
    let mut alive = 0;
    for ws in sessions.iter_mut().step_by(step) {
        checked += 1;
        if load::ws_round_trip_bounded(ws, payload).await.is_ok() {
            alive += 1;
        }
    }

    let opened = sessions.len();
    drop(sessions);
    sleep(settle).await;
    let rss_closed_kib = tree_rss_kib(pid)?;
    let grown = rss_open_kib.saturating_sub(rss_before_kib);
    Ok(IdleResult {
        via,
        round,
        requested: count,
        opened,
        errors: stats.errors,
        first_error: stats.first_error,
        rss_before_kib,
        rss_open_kib,
        rss_closed_kib,
        kib_per_session: grown as f64 / opened as f64,
        checked,
        alive,
    })
}
