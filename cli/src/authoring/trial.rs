//! `wasmgate plugin test`: a component loaded by the gateway's own plugin engine (the same
//! compile, limits, `init` and contract checks as in a running gateway) and asked about one
//! request, one probe response, or the `[[plugins.samples]]` of a configuration file. What the
//! plugin wrote (stdout, stderr, `host::log`) and what it asked the host are collected and
//! printed after the answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wasmgate::config::raw::RawSample;
use wasmgate::config::{PluginLimits, Sample};
use wasmgate::plugin::{
    ArtifactSource, Decision, EngineConfig, Header, HeaderEdit, Health, HostView, Plugin,
    PluginEngine, PluginSpec, ProbeResponse, RequestHead, RouterSample, ServerState, describe,
};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The component (.wasm).
    pub file: PathBuf,
    /// A router: the request, as "METHOD URL" (`GET https://shop.example/cart?id=1`).
    #[arg(long, conflicts_with_all = ["samples", "response"])]
    pub request: Option<String>,
    /// A request header, "name: value" (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The request's client address.
    #[arg(long, default_value = "192.0.2.1:40000")]
    pub client_address: String,
    /// The name of the listener the request arrived on.
    #[arg(long, default_value = "http")]
    pub listener: String,
    /// The request is a WebSocket opening handshake.
    #[arg(long)]
    pub websocket: bool,
    /// A probe evaluator: the probe's outcome, a status ("200") or "error:REASON" for a probe
    /// that got no response.
    #[arg(long, conflicts_with = "samples")]
    pub response: Option<String>,
    /// The probe response's body (its first 4 KiB are given to the plugin).
    #[arg(long, requires = "response", default_value = "")]
    pub body: String,
    /// The probed server, as "POOL/SETTINGS/ADDRESS".
    #[arg(long, requires = "response", default_value = "web/web/127.0.0.1:9001")]
    pub server: String,
    /// The probe's latency.
    #[arg(long, requires = "response", default_value_t = 5)]
    pub latency_ms: u32,
    /// Run the `[[plugins.samples]]` of this configuration file (the plugin's entry: --plugin,
    /// or the one whose `path` names FILE, or the only one).
    #[arg(long, value_name = "FILE.toml")]
    pub samples: Option<PathBuf>,
    /// The plugin's name (default: the file's name without `.wasm`, or the samples' entry).
    #[arg(long)]
    pub plugin: Option<String>,
    /// The string passed to the plugin's `init` (default: the samples' entry's `config`, else
    /// empty).
    #[arg(long)]
    pub config: Option<String>,
    /// A pool the host interface reports, "NAME=ADDRESS,ADDRESS" (repeatable; every server
    /// healthy). The pools of the samples' configuration file are reported too.
    #[arg(long = "pool", value_name = "NAME=ADDRESSES")]
    pub pools: Vec<String>,
    /// The time a call may run (as the configuration's `call_timeout`).
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub call_timeout: u64,
    /// The largest linear memory of an instance, in MiB (as the configuration's
    /// `max_memory_mb`).
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    pub max_memory_mb: usize,
    /// Print the decision trace: the request head as the plugin receives it, its calls to the
    /// host and its output in order, the whole decision and the checks applied to it.
    #[arg(long)]
    pub trace: bool,
}

/// What the plugin did during a call, in order: output lines, log records, host calls.
#[derive(Clone, Default)]
pub struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The host interface as the test gives it: fixed pools, every call written down.
struct RecordingHost {
    pools: BTreeMap<String, Vec<ServerState>>,
    transcript: Transcript,
}

impl HostView for RecordingHost {
    fn pools(&self) -> Vec<String> {
        let names: Vec<String> = self.pools.keys().cloned().collect();
        self.transcript.push(format!("host: pools() -> {names:?}"));
        names
    }

    fn pool_state(&self, pool: &str) -> Option<Vec<ServerState>> {
        let state = self.pools.get(pool).cloned();
        let shown = match &state {
            None => "none".to_owned(),
            Some(servers) => format!("{} servers, all healthy", servers.len()),
        };
        self.transcript
            .push(format!("host: pool-state({pool:?}) -> {shown}"));
        state
    }
}

/// Collects what plugins write (target `wasmgate::plugin`) into a [`Transcript`]; the rest of
/// the gateway's log goes to stderr as usual, warnings and errors only.
pub struct Capture {
    transcript: Transcript,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        if meta.target() != "wasmgate::plugin" {
            if *meta.level() <= tracing::Level::WARN {
                let mut fields = Fields::default();
                event.record(&mut fields);
                eprintln!("{}: {}", meta.level(), fields.message);
            }
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        // The gateway's own records about the plugin: "plugin loaded" (with more fields), and
        // failures, which begin with the plugin's name as every plugin error does (they are
        // printed as the call's result).
        if fields.gateway || (fields.stream.is_none() && fields.message.starts_with("plugin \"")) {
            return;
        }
        let line = match fields.stream.as_deref() {
            Some(stream) => format!("{stream}: {}", fields.message),
            None => format!(
                "log {}: {}",
                meta.level().as_str().to_ascii_lowercase(),
                fields.message
            ),
        };
        self.transcript.push(line);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    stream: Option<String>,
    /// A field beyond `plugin`, `message` and `stream`: a record the gateway writes about the
    /// plugin rather than one the plugin wrote.
    gateway: bool,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "stream" => self.stream = Some(format!("{value:?}")),
            "plugin" | "dropped" => {}
            _ => self.gateway = true,
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "stream" => self.stream = Some(value.to_owned()),
            "plugin" | "dropped" => {}
            _ => self.gateway = true,
        }
    }
}

/// Installs the log capture as the process's subscriber; returns where it collects.
pub fn capture_log() -> Transcript {
    use tracing_subscriber::layer::SubscriberExt as _;
    let transcript = Transcript::default();
    let subscriber = tracing_subscriber::registry().with(Capture {
        transcript: transcript.clone(),
    });
    let _ = tracing::subscriber::set_global_default(subscriber);
    transcript
}

/// The `[[plugins]]` entry the samples come from.
struct Entry {
    name: String,
    config: String,
    samples: Vec<Sample>,
    pools: BTreeMap<String, Vec<String>>,
    settings: Vec<String>,
}

/// The pools and backend settings a decision may name, when the test knows them.
#[derive(Default)]
struct Known {
    pools: Vec<String>,
    settings: Vec<String>,
}

impl Known {
    /// What a gateway would refuse in a forward decision, as its invalid-decision error says.
    fn check(&self, decision: &Decision) -> Result<(), String> {
        let Decision::Forward(f) = decision else {
            return Ok(());
        };
        let unknown = (!self.pools.is_empty() && !self.pools.contains(&f.pool))
            || (!self.settings.is_empty() && !self.settings.contains(&f.settings));
        if unknown {
            return Err(format!(
                "no backend pool {:?} with backend settings {:?}",
                f.pool, f.settings
            ));
        }
        Ok(())
    }
}

/// Runs the test; `Ok(false)` when the plugin failed or a sample was answered differently.
pub fn run(args: &TestArgs) -> anyhow::Result<bool> {
    let transcript = capture_log();
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let entry = args
        .samples
        .as_deref()
        .map(|file| read_entry(file, &args.file, args.plugin.as_deref()))
        .transpose()?;
    let name = args
        .plugin
        .clone()
        .or_else(|| entry.as_ref().map(|e| e.name.clone()))
        .unwrap_or_else(|| {
            args.file
                .file_stem()
                .map_or("plugin".to_owned(), |s| s.to_string_lossy().into_owned())
        });
    let config = args
        .config
        .clone()
        .or_else(|| entry.as_ref().map(|e| e.config.clone()))
        .unwrap_or_default();
    let mut pools = entry.as_ref().map(|e| e.pools.clone()).unwrap_or_default();
    for spec in &args.pools {
        let (pool, addresses) = spec
            .split_once('=')
            .with_context(|| format!("--pool {spec:?}: expected NAME=ADDRESS,ADDRESS"))?;
        pools.insert(
            pool.to_owned(),
            addresses.split(',').map(str::to_owned).collect(),
        );
    }
    let pool_states = pools
        .clone()
        .into_iter()
        .map(|(pool, addresses)| {
            let servers = addresses
                .into_iter()
                .map(|address| ServerState {
                    address,
                    settings: String::new(),
                    health: Health::Healthy,
                })
                .collect();
            (pool, servers)
        })
        .collect();
    let known = Known {
        pools: pools.keys().cloned().collect(),
        settings: entry
            .as_ref()
            .map(|e| e.settings.clone())
            .unwrap_or_default(),
    };
    let host = Arc::new(RecordingHost {
        pools: pool_states,
        transcript: transcript.clone(),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let engine = PluginEngine::new(EngineConfig {
            workers: 1,
            total_component_instances: 16,
            total_core_instances: 256,
            total_memories: 32,
            total_tables: 64,
            total_stacks: 16,
            ..EngineConfig::with_default_cache()
        })?;
        let mut spec = PluginSpec::new(name.clone(), wasm.clone(), config.clone());
        spec.origin = Some(args.file.display().to_string());
        spec.limits = PluginLimits {
            call_timeout: Duration::from_millis(args.call_timeout),
            max_memory_bytes: args.max_memory_mb << 20,
            ..PluginLimits::default()
        };
        let loaded = engine.load(spec, host).await;
        let init_output = transcript.take();
        let (plugin, report) = match loaded {
            Ok(p) => p,
            Err(e) => {
                println!("load failed: {e}");
                print_output(&init_output, "plugin output");
                return Ok(false);
            }
        };
        let kind = match (plugin.is_router(), plugin.is_probe_evaluator()) {
            (true, true) => "router and probe evaluator",
            (true, false) => "router",
            _ => "probe evaluator",
        };
        println!(
            "plugin {name:?} ({}, {} KB): {kind}, {} in {} ms, init in {:.1} ms",
            args.file.display(),
            wasm.len().div_ceil(1024),
            match report.artifact {
                ArtifactSource::Compiled => "compiled",
                ArtifactSource::Disk | ArtifactSource::Memory => "read from the cache",
            },
            report.compile_time.as_millis(),
            report.init_time.as_secs_f64() * 1000.0
        );
        if args.trace {
            println!("trace:");
            println!("  init({config:?}) -> ok");
            for line in &init_output {
                println!("  {line}");
            }
        } else {
            print_output(&init_output, "init output");
        }
        if let Some(entry) = &entry {
            return run_samples(&plugin, entry, &known, args.trace, &transcript).await;
        }
        if let Some(response) = &args.response {
            return probe(&plugin, args, response, &transcript).await;
        }
        let Some(request) = &args.request else {
            bail!("give --request (a router), --response (a probe evaluator) or --samples");
        };
        let head = request_head(request, args)?;
        route(&plugin, &head, &known, args.trace, &transcript, None).await
    })
}

/// Asks the router about `head`; prints the decision, the call's time and the output.
async fn route(
    plugin: &Plugin,
    head: &RequestHead,
    known: &Known,
    trace: bool,
    transcript: &Transcript,
    sample: Option<&Sample>,
) -> anyhow::Result<bool> {
    if trace {
        println!("  route({})", show_head(head));
    }
    let started = Instant::now();
    let result = plugin.route(head).await;
    let took = started.elapsed();
    // A pool or settings the configuration lacks fails the call in a gateway, as here.
    let result = result.and_then(|decision| match known.check(&decision) {
        Ok(()) => Ok(decision),
        Err(reason) => Err(plugin.report_invalid_decision(reason)),
    });
    let output = transcript.take();
    let mut ok = true;
    match &result {
        Ok(decision) => {
            if trace {
                for line in &output {
                    println!("  {line}");
                }
                println!("  -> {}", show_decision(decision));
                println!("  contract: passed (status, header names and values, body size, path)");
            }
            let verdict = match sample.map(|s| s.check(decision)) {
                Some(Ok(())) => " (as expected)".to_owned(),
                Some(Err(reason)) => {
                    ok = false;
                    format!("\n  FAILED: {reason}")
                }
                None => String::new(),
            };
            println!("decision: {}{verdict}", describe_full(decision));
        }
        Err(e) => {
            ok = false;
            if trace {
                for line in &output {
                    println!("  {line}");
                }
            }
            println!("failed: {e}");
        }
    }
    println!("call: {}", show_time(took));
    if !trace {
        print_output(&output, "plugin output");
    }
    Ok(ok)
}

async fn run_samples(
    plugin: &Plugin,
    entry: &Entry,
    known: &Known,
    trace: bool,
    transcript: &Transcript,
) -> anyhow::Result<bool> {
    if entry.samples.is_empty() {
        bail!("plugin {:?} has no [[plugins.samples]]", entry.name);
    }
    let mut failed = 0;
    for (i, sample) in entry.samples.iter().enumerate() {
        let r = &sample.request;
        println!(
            "\nsample {i}: {} {}{}{}",
            r.method,
            r.authority,
            r.path,
            r.query.as_ref().map_or(String::new(), |q| format!("?{q}"))
        );
        if !route(
            plugin,
            &sample.request_head(),
            known,
            trace,
            transcript,
            Some(sample),
        )
        .await?
        {
            failed += 1;
        }
    }
    let total = entry.samples.len();
    println!("\n{} of {total} samples passed", total - failed);
    Ok(failed == 0)
}

async fn probe(
    plugin: &Plugin,
    args: &TestArgs,
    outcome: &str,
    transcript: &Transcript,
) -> anyhow::Result<bool> {
    let mut parts = args.server.splitn(3, '/');
    let (Some(pool), Some(settings), Some(server)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("--server {:?}: expected POOL/SETTINGS/ADDRESS", args.server);
    };
    let (status, error) = match outcome.strip_prefix("error:") {
        Some(reason) => (None, Some(reason.trim().to_owned())),
        None => {
            let status: u16 = outcome
                .trim()
                .parse()
                .ok()
                .filter(|s| (100..=999).contains(s))
                .with_context(|| {
                    format!("--response {outcome:?}: expected a status (200) or error:REASON")
                })?;
            (Some(status), None)
        }
    };
    let mut body = args.body.as_bytes().to_vec();
    body.truncate(4096);
    let response = ProbeResponse {
        pool: pool.to_owned(),
        settings: settings.to_owned(),
        server: server.to_owned(),
        status,
        error,
        headers: vec![],
        body,
        latency_ms: args.latency_ms,
    };
    let shaped = plugin.shape_probe_request(pool, settings, server).await;
    let shape_output = transcript.take();
    if args.trace {
        println!("  shape-request({pool:?}, {settings:?}, {server:?})");
        for line in &shape_output {
            println!("  {line}");
        }
        match &shaped {
            Ok(None) => println!("  -> none (the configured probe)"),
            Ok(Some(r)) => println!(
                "  -> path {:?}, host {:?}, {} headers",
                r.path,
                r.host,
                r.headers.len()
            ),
            Err(e) => println!("  -> failed: {e}"),
        }
        println!(
            "  evaluate(status {status:?}, error {:?}, {} body bytes, {} ms)",
            response.error,
            response.body.len(),
            response.latency_ms
        );
    }
    let started = Instant::now();
    let result = plugin.evaluate(&response).await;
    let took = started.elapsed();
    let output = transcript.take();
    if args.trace {
        for line in &output {
            println!("  {line}");
        }
    }
    let ok = match &result {
        Ok(v) => {
            println!(
                "verdict: {}: {}",
                if v.healthy { "healthy" } else { "unhealthy" },
                v.reason
            );
            true
        }
        Err(e) => {
            println!("failed: {e}");
            false
        }
    };
    println!("call: {}", show_time(took));
    if !args.trace {
        print_output(&shape_output, "plugin output (shape-request)");
        print_output(&output, "plugin output");
    }
    Ok(ok && shaped.is_ok())
}

/// The request head for `--request "METHOD URL"` and the headers, built (and checked) as a
/// sample's is.
fn request_head(request: &str, args: &TestArgs) -> anyhow::Result<RequestHead> {
    let (method, url) = request
        .trim()
        .split_once(' ')
        .with_context(|| format!("--request {request:?}: expected \"METHOD URL\""))?;
    let uri: http::Uri = url
        .trim()
        .parse()
        .with_context(|| format!("--request: {url:?} is not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        bail!("--request: {url:?} is not an absolute URL (http://host/path)");
    };
    if scheme != "http" && scheme != "https" {
        bail!("--request: {url:?}: the scheme must be http or https");
    }
    let mut headers = BTreeMap::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("-H {h:?}: expected \"name: value\""))?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let raw = RawSample {
        host: authority.to_string(),
        path: uri.path_and_query().map(|p| p.to_string()),
        method: Some(method.to_owned()),
        headers,
        client_address: Some(args.client_address.clone()),
        listener: Some(args.listener.clone()),
        websocket: args.websocket,
        expect: "defer".into(),
        pool: None,
        settings: None,
        status: None,
        location: None,
    };
    let sample = Sample::validate(&raw).map_err(|(field, reason)| {
        let option = match field.as_str() {
            "client_address" => "--client-address".to_owned(),
            "method" | "host" | "path" => "--request".to_owned(),
            f => format!("-H ({f})"),
        };
        anyhow::anyhow!("{option}: {reason}")
    })?;
    let mut head = sample.request_head();
    head.scheme = scheme.to_owned();
    Ok(head)
}

/// Reads the plugin's entry, its samples and the file's pools from a configuration file (only
/// those parts: the rest of the file need not be complete).
fn read_entry(file: &Path, wasm: &Path, plugin: Option<&str>) -> anyhow::Result<Entry> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let doc: toml::Table = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
    let empty = Vec::new();
    let plugins = doc
        .get("plugins")
        .and_then(|p| p.as_array())
        .unwrap_or(&empty);
    let name_of = |p: &toml::Value| p.get("name").and_then(|n| n.as_str()).map(str::to_owned);
    let wasm_name = wasm.file_name();
    let index = match plugin {
        Some(name) => plugins
            .iter()
            .position(|p| name_of(p).as_deref() == Some(name))
            .with_context(|| format!("{}: no [[plugins]] named {name:?}", file.display()))?,
        None => plugins
            .iter()
            .position(|p| {
                p.get("path")
                    .and_then(|v| v.as_str())
                    .is_some_and(|path| Path::new(path).file_name() == wasm_name)
            })
            .or((plugins.len() == 1).then_some(0))
            .with_context(|| {
                format!(
                    "{}: no [[plugins]] entry has a path naming {}; say which with --plugin",
                    file.display(),
                    wasm.display()
                )
            })?,
    };
    let entry = &plugins[index];
    let field = |f: &str| format!("{}: plugins[{index}].{f}", file.display());
    let name = name_of(entry).with_context(|| field("name"))?;
    let config = match entry.get("config") {
        None => String::new(),
        Some(c) => c
            .as_str()
            .with_context(|| format!("{}: a string is required", field("config")))?
            .to_owned(),
    };
    let mut samples = Vec::new();
    for (i, raw) in entry
        .get("samples")
        .and_then(|s| s.as_array())
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        let raw: RawSample = raw
            .clone()
            .try_into()
            .with_context(|| field(&format!("samples[{i}]")))?;
        let sample = Sample::validate(&raw).map_err(|(f, reason)| {
            anyhow::anyhow!("{}: {reason}", field(&format!("samples[{i}].{f}")))
        })?;
        samples.push(sample);
    }
    let mut pools = BTreeMap::new();
    for pool in doc
        .get("backend_pools")
        .and_then(|p| p.as_array())
        .unwrap_or(&empty)
    {
        if let Some(name) = name_of(pool) {
            let addresses = pool
                .get("addresses")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            pools.insert(name, addresses);
        }
    }
    let settings = doc
        .get("backend_settings")
        .and_then(|p| p.as_array())
        .unwrap_or(&empty)
        .iter()
        .filter_map(name_of)
        .collect();
    Ok(Entry {
        name,
        config,
        samples,
        pools,
        settings,
    })
}

fn print_output(lines: &[String], title: &str) {
    if lines.is_empty() {
        return;
    }
    println!("{title}:");
    for line in lines {
        println!("  {line}");
    }
}

fn show_time(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    }
}

fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("{b:?}"),
    }
}

fn show_header(h: &Header) -> String {
    format!("{}: {}", h.name, show_bytes(&h.value))
}

fn show_head(h: &RequestHead) -> String {
    let headers: Vec<String> = h.headers.iter().map(show_header).collect();
    format!(
        "method {:?}, scheme {:?}, authority {:?}, path {:?}, query {:?}, headers [{}], client-address {:?}, listener {:?}, websocket {}, tls-sni {:?}",
        h.method,
        h.scheme,
        h.authority,
        h.path,
        h.query,
        headers.join(", "),
        h.client_address,
        h.listener,
        h.websocket,
        h.tls_sni
    )
}

fn show_edit(e: &HeaderEdit) -> String {
    match e {
        HeaderEdit::Set(h) => format!("set {}", show_header(h)),
        HeaderEdit::Append(h) => format!("append {}", show_header(h)),
        HeaderEdit::Remove(name) => format!("remove {name}"),
    }
}

/// Every field of a decision.
fn show_decision(d: &Decision) -> String {
    match d {
        Decision::Forward(f) => format!(
            "forward {{pool {:?}, settings {:?}, server {:?}, header-edits [{}], path {:?}}}",
            f.pool,
            f.settings,
            f.server,
            f.header_edits
                .iter()
                .map(show_edit)
                .collect::<Vec<_>>()
                .join(", "),
            f.path
        ),
        Decision::Redirect(r) => format!(
            "redirect {{status {}, location {:?}}}",
            r.status, r.location
        ),
        Decision::Respond(r) => format!(
            "respond {{status {}, headers [{}], body {:?}}}",
            r.status,
            r.headers
                .iter()
                .map(show_header)
                .collect::<Vec<_>>()
                .join(", "),
            show_bytes(&r.body)
        ),
        Decision::Defer => "defer".to_owned(),
    }
}

/// The decision in a line, with the header edits and a direct response's body spelled out.
fn describe_full(d: &Decision) -> String {
    let mut s = describe(d);
    match d {
        Decision::Forward(f) => {
            for e in &f.header_edits {
                let _ = write!(s, "\n  {}", show_edit(e));
            }
        }
        Decision::Respond(r) => {
            let _ = write!(s, "\n  body: {:?}", show_bytes(&r.body));
        }
        _ => {}
    }
    s
}
