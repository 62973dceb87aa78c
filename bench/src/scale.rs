//! The scale run (`wasmgate-bench scale`): many concurrent proxied WebSocket sessions held
//! across several gateway processes that share one port with SO_REUSEPORT.
//!
//! The open-file limit (20,000 per process here, not raisable) bounds every process, the
//! harness included, so the run is split over processes of this same binary:
//!
//! - `scale-backend`: a WebSocket echo backend on a port of its own. The gateways' pool lists
//!   every backend, so the gateway-to-backend connections spread over several destinations
//!   (one destination address and port allows only about 28,000 source ports).
//! - `wasmgate run` × N, all with one configuration whose listener port is fixed: the kernel
//!   spreads the client connections over them.
//! - `scale-client`: opens its share of the sessions from its own source addresses in
//!   127.0.0.0/8 (raw RFC 6455 handshakes, nothing buffered per session), reports, checks a
//!   sample for echoes when asked, and holds them until its stdin closes.
//!
//! The parent counts the established connections on the gateways' port in /proc/net/tcp and
//! each gateway's descriptors and memory, and prints a markdown table.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::gateway::{Process, bench_dir, rss_kib};
use crate::net::{SourceAddrs, connect, free_port};

/// Bound on opening every session of one client process.
const OPEN_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on one handshake or one echo.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight per client process.
const PARALLEL: usize = 64;
/// Sessions per gateway process the defaults aim at: two descriptors each, under 20,000.
const SOURCES_PER_CLIENT: u8 = 8;

#[derive(Parser, Debug)]
#[command(
    name = "wasmgate-bench scale",
    about = "Holds many proxied WebSocket sessions across gateway processes sharing one port"
)]
pub struct ScaleArgs {
    /// Path to the wasmgate binary.
    #[arg(long)]
    gateway: PathBuf,
    /// Concurrent WebSocket sessions to open and hold.
    #[arg(long, default_value_t = 100_000)]
    sessions: u32,
    /// Gateway processes sharing the listening port.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=64))]
    gateways: u32,
    /// Backend processes (each on a port of its own).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    backends: u32,
    /// Client processes opening the sessions.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=30))]
    clients: u32,
    /// How long all sessions are held before the echo check.
    #[arg(long, default_value_t = 5)]
    hold_secs: u64,
}

#[derive(Parser, Debug)]
#[command(name = "wasmgate-bench scale-client")]
pub struct ClientArgs {
    #[arg(long)]
    connect: SocketAddr,
    #[arg(long)]
    sessions: usize,
    /// First source address is 127.0.0.(first_source).
    #[arg(long)]
    first_source: u8,
    #[arg(long, default_value_t = SOURCES_PER_CLIENT)]
    sources: u8,
}

/// A helper process of the run, killed when dropped.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    name: String,
}

impl Helper {
    fn spawn(name: String, args: &[String]) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the harness binary")?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
            name,
        })
    }

    /// The helper's next line on stdout (blocking).
    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("{} ended without answering", self.name);
        }
        Ok(line.trim_end().to_owned())
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wasmgate-bench scale-backend`: an echo backend on 127.0.0.1; prints its address and runs
/// until stdin closes.
pub fn backend_main() -> Result<()> {
    let backend = crate::backend::Backend::start(1)?;
    println!("listening {}", backend.addr);
    std::io::stdout().flush()?;
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {
        sink.clear();
    }
    drop(backend);
    Ok(())
}

/// `wasmgate-bench scale-client`: opens its sessions, prints `opened N errors E first-error`,
/// answers `check` with `alive A of S`, and holds the sessions until stdin closes.
pub fn client_main(args: ClientArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let sources = SourceAddrs::range(args.first_source, args.sources);
        let deadline = Instant::now() + OPEN_TIMEOUT;
        let per = args.sessions.div_ceil(PARALLEL);
        let mut handles = Vec::new();
        for opener in 0..PARALLEL {
            let sources = sources.clone();
            let first = opener * per;
            let last = ((opener + 1) * per).min(args.sessions);
            handles.push(tokio::spawn(async move {
                let mut opened = Vec::with_capacity(last.saturating_sub(first));
                let mut errors = 0u64;
                let mut first_error = None;
                for i in first..last {
                    if Instant::now() >= deadline {
                        errors += (last - i) as u64;
                        first_error.get_or_insert_with(|| "deadline passed".to_owned());
                        break;
                    }
                    match timeout(OP_TIMEOUT, handshake(sources.get(i), args.connect)).await {
                        Ok(Ok(s)) => opened.push(s),
                        Ok(Err(e)) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                        Err(_) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| "handshake timed out".to_owned());
                        }
                    }
                }
                (opened, errors, first_error)
            }));
        }
        let mut sessions = Vec::with_capacity(args.sessions);
        let mut errors = 0;
        let mut first_error = None;
        for h in handles {
            let (opened, e, fe) = h.await?;
            sessions.extend(opened);
            errors += e;
            if first_error.is_none() {
                first_error = fe;
            }
        }
        println!(
            "opened {} errors {errors} {}",
            sessions.len(),
            first_error.unwrap_or_default().replace('\n', " ")
        );
        std::io::stdout().flush()?;

        // Commands from the parent, read on a thread of their own (stdin is blocking).
        let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = commands.recv().await {
            if line.trim() == "check" {
                // Every 100th session, spread over the whole set.
                let mut checked = 0;
                let mut alive = 0;
                for s in sessions.iter_mut().step_by(100) {
                    checked += 1;
                    if timeout(OP_TIMEOUT, echo(s)).await.is_ok_and(|r| r.is_ok()) {
                        alive += 1;
                    }
                }
                println!("alive {alive} of {checked}");
                std::io::stdout().flush()?;
            }
        }
        drop(sessions);
        Ok::<_, anyhow::Error>(())
    })
}

/// An RFC 6455 §4.1 opening handshake on a fresh connection to `/ws`.
async fn handshake(src: Ipv4Addr, dst: SocketAddr) -> Result<TcpStream> {
    let mut stream = connect(src, dst).await.context("connect")?;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {dst}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("closed during the handshake");
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            bail!("response head too long");
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        bail!("no upgrade: {}", String::from_utf8_lossy(line));
    }
    Ok(stream)
}

/// Sends a masked 4-byte text frame and reads its unmasked echo (RFC 6455 §5.2).
async fn echo(stream: &mut TcpStream) -> Result<()> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let payload = *b"ping";
    let mut frame = vec![0x81, 0x80 | 4];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    stream.write_all(&frame).await?;
    let mut reply = [0u8; 6];
    stream.read_exact(&mut reply).await?;
    if reply[..2] != [0x81, 4] || reply[2..] != payload {
        bail!("unexpected echo {reply:?}");
    }
    Ok(())
}

/// Listening sockets and established connections on `port` (local side), from /proc/net/tcp.
fn sockets_on_port(port: u16) -> Result<(usize, usize)> {
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    let suffix = format!(":{port:04X}");
    let mut listening = 0;
    let mut established = 0;
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(local), Some(_remote), Some(state)) =
            (fields.nth(1), fields.next(), fields.next())
        else {
            continue;
        };
        if !local.ends_with(&suffix) {
            continue;
        }
        match state {
            "0A" => listening += 1,
            "01" => established += 1,
            _ => {}
        }
    }
    Ok((listening, established))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub fn scale_main(args: ScaleArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: ScaleArgs) -> Result<()> {
    let started = std::time::Instant::now();
    if u32::from(SOURCES_PER_CLIENT) * args.clients + 2 > 250 {
        bail!("--clients too high for the source addresses in 127.0.0.0/24");
    }
    // Backends, each on its own port.
    let mut backends = Vec::new();
    let mut backend_addrs = Vec::new();
    for i in 0..args.backends {
        let mut b = Helper::spawn(format!("backend {i}"), &["scale-backend".to_owned()])?;
        let line = b.line()?;
        let addr: SocketAddr = line
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("backend {i} said {line:?}"))?;
        backend_addrs.push(addr);
        backends.push(b);
    }

    // Gateways, all on one port.
    let port = free_port()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let pool = backend_addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "[[listeners]]\nname = \"ws\"\nport = {port}\nbind_address = \"127.0.0.1\"\n\n\
         [[backend_pools]]\nname = \"echo\"\naddresses = [{pool}]\n\n\
         [[backend_settings]]\nname = \"echo\"\nport = 80\nrequest_timeout = 3600\n\n\
         [[rules]]\nname = \"ws\"\npriority = 100\nlistener = \"ws\"\nbackend_pool = \"echo\"\n\
         backend_settings = \"echo\"\n"
    );
    let mut gateways = Vec::new();
    for i in 0..args.gateways {
        let dir = bench_dir(&format!("scale{i}"), port)?;
        let path = dir.join("gateway.toml");
        std::fs::write(&path, &config)?;
        let mut command = Command::new(&args.gateway);
        command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn");
        gateways.push(Process::spawn("wasmgate", command, dir)?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for g in &mut gateways {
            g.check_alive()?;
        }
        let (listening, _) = sockets_on_port(port)?;
        if listening >= gateways.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {listening} of {} gateways listen on {addr}",
                gateways.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every gateway must proxy before the run: its first health probes must have put the
    // backends in rotation. Connections from successive source ports land on all gateways.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ok = 0;
    let mut i = 0usize;
    while ok < 20 * gateways.len() {
        if Instant::now() > deadline {
            bail!("WebSocket handshakes through {addr} keep failing");
        }
        let proxied = async {
            let mut s = handshake(Ipv4Addr::LOCALHOST, addr).await?;
            echo(&mut s).await
        };
        match timeout(OP_TIMEOUT, proxied).await {
            Ok(Ok(())) => ok += 1,
            _ => {
                ok = 0;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        i += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<(usize, u64)> = gateways
        .iter()
        .map(|g| (open_fds(g.pid()), rss_kib(g.pid()).unwrap_or(0)))
        .collect();
    eprintln!(
        "scale: {} backends, {} gateways on {addr} ({i} checks passed); opening {} sessions from {} client processes",
        backends.len(),
        gateways.len(),
        args.sessions,
        args.clients
    );

    // Clients, each from its own source addresses.
    let opening = std::time::Instant::now();
    let per = (args.sessions as usize).div_ceil(args.clients as usize);
    let mut clients = Vec::new();
    for c in 0..args.clients as usize {
        let count = per.min(args.sessions as usize - (c * per).min(args.sessions as usize));
        let first_source = 2 + c as u8 * SOURCES_PER_CLIENT;
        clients.push(Helper::spawn(
            format!("client {c}"),
            &[
                "scale-client".to_owned(),
                "--connect".to_owned(),
                addr.to_string(),
                "--sessions".to_owned(),
                count.to_string(),
                "--first-source".to_owned(),
                first_source.to_string(),
            ],
        )?);
    }
    let mut opened = 0usize;
    let mut errors = 0usize;
    let mut first_error = String::new();
    for c in &mut clients {
        let line = c.line()?;
        let mut parts = line.splitn(5, ' ');
        let (Some("opened"), Some(n), Some("errors"), Some(e)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("{} said {line:?}", c.name);
        };
        opened += n.parse::<usize>()?;
        errors += e.parse::<usize>()?;
        if first_error.is_empty() {
            first_error = parts.next().unwrap_or_default().to_owned();
        }
    }
    let open_secs = opening.elapsed().as_secs_f64();
    eprintln!(
        "scale: {opened} sessions open after {open_secs:.1} s, {errors} errors {first_error}"
    );
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;

    for g in &mut gateways {
        g.check_alive()?;
    }
    let (_, established) = sockets_on_port(port)?;
    let after: Vec<(usize, u64)> = gateways
        .iter()
        .map(|g| (open_fds(g.pid()), rss_kib(g.pid()).unwrap_or(0)))
        .collect();
    let mut alive = 0;
    let mut checked = 0;
    for c in &mut clients {
        c.send("check")?;
    }
    for c in &mut clients {
        let line = c.line()?;
        let mut parts = line.split(' ');
        let (Some("alive"), Some(a), Some("of"), Some(n)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(anyhow!("{} said {line:?}", c.name));
        };
        alive += a.parse::<usize>()?;
        checked += n.parse::<usize>()?;
    }

    let per_gateway: Vec<(usize, f64)> = before
        .iter()
        .zip(&after)
        .map(|(&(fd0, rss0), &(fd1, rss1))| {
            // Two descriptors per proxied session: the client's and the backend's.
            let sessions = fd1.saturating_sub(fd0) / 2;
            let kib = rss1.saturating_sub(rss0) as f64 / sessions.max(1) as f64;
            (sessions, kib)
        })
        .collect();
    let min_s = per_gateway.iter().map(|p| p.0).min().unwrap_or(0);
    let max_s = per_gateway.iter().map(|p| p.0).max().unwrap_or(0);
    let mut kib: Vec<f64> = per_gateway.iter().map(|p| p.1).collect();
    let kib_median = crate::report::median(&mut kib).unwrap_or(f64::NAN);
    let rss_total: u64 = after.iter().map(|a| a.1).sum();
    let max_fds = after.iter().map(|a| a.0).max().unwrap_or(0);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "| gateways | sessions asked | opened | errors | established on the port | sessions per gateway (min–max) | most descriptors in one gateway | RSS growth per session (median) | RSS of all gateways | sampled sessions echoing | time to open |"
    );
    let _ = writeln!(
        out,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        out,
        "| {} | {} | {opened} | {errors} | {established} | {min_s}–{max_s} | {max_fds} | {kib_median:.1} KiB | {:.0} MiB | {alive} / {checked} | {open_secs:.1} s |",
        gateways.len(),
        args.sessions,
        rss_total as f64 / 1024.0,
    );
    print!("{out}");
    if !first_error.is_empty() {
        println!("\nFirst error: {first_error}");
    }
    eprintln!("scale: done in {:.1} s", started.elapsed().as_secs_f64());
    drop(clients);
    drop(gateways);
    drop(backends);
    Ok(())
}
