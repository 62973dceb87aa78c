//! The gateway under test as a child process, the process handling shared with the peer
//! proxies, and the /proc readings the report needs (RSS and CPU time).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use crate::net::free_port;
use crate::tls::TestCert;

/// How long the gateway gets to start accepting connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A proxy under test running as a child process with its config directory. Dropping it stops
/// the process and everything it forked (nginx's workers), then removes the directory, so every
/// exit path of the harness, including errors, panics and Ctrl-C, cleans up.
pub struct Process {
    child: Child,
    dir: PathBuf,
    name: &'static str,
}

impl Process {
    /// Spawns `command` (its stdout goes to our stderr, so that the markdown table on our stdout
    /// stays clean); on failure the directory is removed.
    pub fn spawn(name: &'static str, mut command: Command, dir: PathBuf) -> Result<Self> {
        let spawned = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::inherit())
            .spawn();
        match spawned {
            Ok(child) => Ok(Self { child, dir, name }),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(e).with_context(|| format!("spawning {name}"))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `addr` accepts connections.
    pub async fn wait_until_listening(&mut self, addr: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not accept connections on {addr} within {START_TIMEOUT:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited: {status}", self.name),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGKILL (the bench has no use for a graceful drain), to the process's descendants
        // too: a worker whose master was killed keeps running. The master goes first, or it
        // would replace each worker killed before it.
        let pids = descendants(self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in pids {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A running gateway.
pub struct Gateway {
    process: Process,
    pub addr: SocketAddr,
    /// The HTTPS listener (same backend), for the TLS scenarios.
    pub tls_addr: SocketAddr,
    /// A listener whose rule the built-in router plugin decides (same backend), when asked for.
    pub router_addr: Option<SocketAddr>,
}

impl Gateway {
    /// `with_router` adds the listener routed by the built-in router plugin, which must have
    /// been built (`scripts/build-plugins`).
    pub async fn start(
        binary: &Path,
        workers: usize,
        backend: SocketAddr,
        with_router: bool,
        message_filter: Option<&Path>,
        cert: &TestCert,
    ) -> Result<Self> {
        if !binary.is_file() {
            bail!("gateway binary {} does not exist", binary.display());
        }
        let port = free_port().context("picking a port for the gateway")?;
        let tls_port = free_port().context("picking a port for the HTTPS listener")?;
        let dir = bench_dir("wasmgate", port)?;
        cert.write(&dir)?;
        let config = dir.join("gateway.toml");
        let router_port = if with_router {
            Some(free_port().context("picking a port for the router listener")?)
        } else {
            None
        };
        let mut toml =
            config_toml(port, tls_port, backend) + &crate::probing::extra_config(backend);
        if let Some(router_port) = router_port {
            toml += &format!(
                "\n[[listeners]]\nname = \"http-router\"\nport = {router_port}\nbind_address = \"127.0.0.1\"\n\n\
                 [[rules]]\nname = \"bench-router\"\npriority = 102\nlistener = \"http-router\"\n\
                 backend_pool = \"bench\"\nbackend_settings = \"bench\"\nrouter = \"builtin\"\n"
            );
        }
        if let Some(filter) = message_filter {
            let filter = filter
                .canonicalize()
                .with_context(|| format!("message filter {}", filter.display()))?;
            // The plain listener's rule (the WebSocket scenarios' route) gets the filter.
            toml = toml.replacen(
                "listener = \"http\"\nbackend_pool = \"bench\"\nbackend_settings = \"bench\"\n",
                "listener = \"http\"\nbackend_pool = \"bench\"\nbackend_settings = \"bench\"\nmessage_filter = \"bench-filter\"\n",
                1,
            );
            toml += &format!(
                "\n[[plugins]]\nname = \"bench-filter\"\npath = {:?}\nkind = \"message-filter\"\n",
                filter.display().to_string()
            );
        }
        fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;

        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn");
        if workers > 0 {
            command.arg("--workers").arg(workers.to_string());
        }
        let process = Process::spawn("wasmgate", command, dir)?;
        let mut gateway = Self {
            process,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            tls_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, tls_port)),
            router_addr: router_port.map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
        };
        gateway.process.wait_until_listening(gateway.addr).await?;
        Ok(gateway)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Fails if the gateway process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.process.check_alive()
    }
}

/// A fresh directory for one proxy's configuration, removed with its [`Process`].
pub fn bench_dir(name: &str, port: u16) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "wasmgate-bench-{}-{name}-{port}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Every process descended from `root` (nginx's workers, for instance), found through the
/// parent pid in /proc/*/stat.
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Field 4 (ppid) is the second after the command name's closing parenthesis.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// CPU time of a process and its descendants, in microseconds.
pub fn tree_cpu_time_us(root: u32) -> Result<CpuTime> {
    let mut total = cpu_time_us(Some(root))?;
    for pid in descendants(root) {
        // A worker may exit between listing and reading.
        total = total + cpu_time_us(Some(pid)).unwrap_or_default();
    }
    Ok(total)
}

/// Resident set size of a process and its descendants, in KiB. Pages shared between them (an
/// nginx master and its workers) are counted in each, which only the baseline carries: the
/// growth per session is private memory.
pub fn tree_rss_kib(root: u32) -> Result<u64> {
    let mut total = rss_kib(root)?;
    for pid in descendants(root) {
        total += rss_kib(pid).unwrap_or(0);
    }
    Ok(total)
}

fn config_toml(port: u16, tls_port: u16, backend: SocketAddr) -> String {
    format!(
        r#"# Written by wasmgate-bench; removed when the run ends.
[[listeners]]
name = "http"
port = {port}
bind_address = "127.0.0.1"

[[listeners]]
name = "https"
protocol = "https"
port = {tls_port}
bind_address = "127.0.0.1"
certificate = "cert.pem"
certificate_key = "key.pem"

[[rules]]
name = "bench-https"
priority = 101
listener = "https"
backend_pool = "bench"
backend_settings = "bench"

[[backend_pools]]
name = "bench"
addresses = ["{backend}"]

[[backend_settings]]
name = "bench"
port = 80
request_timeout = 3600

[[rules]]
name = "bench"
priority = 100
listener = "http"
backend_pool = "bench"
backend_settings = "bench"
"#
    )
}

/// Resident set size of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// CPU time in microseconds, split into user space and the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user_us: u64,
    pub system_us: u64,
}

impl CpuTime {
    pub fn total_us(self) -> u64 {
        self.user_us + self.system_us
    }

    /// What was spent between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user_us: self.user_us.saturating_sub(earlier.user_us),
            system_us: self.system_us.saturating_sub(earlier.system_us),
        }
    }
}

impl std::ops::Add for CpuTime {
    type Output = CpuTime;

    fn add(self, other: CpuTime) -> CpuTime {
        CpuTime {
            user_us: self.user_us + other.user_us,
            system_us: self.system_us + other.system_us,
        }
    }
}

/// User and system CPU time of a process (all its threads, live and exited).
pub fn cpu_time_us(pid: Option<u32>) -> Result<CpuTime> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_time(&stat).with_context(|| format!("malformed {path}"))
}

/// utime and stime out of a `/proc/PID/stat` line.
fn parse_cpu_time(stat: &str) -> Option<CpuTime> {
    // The command name (field 2) may contain spaces and parentheses, so the
    // numeric fields are counted from the last ')'. The first field after it
    // is field 3 (state); utime and stime are fields 14 and 15.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || fields.next()?.parse::<u64>().ok();
    // USER_HZ, the unit of these fields, is fixed at 100 by the Linux ABI on
    // every mainstream architecture (x86, arm, riscv).
    let user_us = next()? * 10_000;
    let system_us = next()? * 10_000;
    Some(CpuTime { user_us, system_us })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_parentheses() {
        let stat =
            "4242 (nginx: worker (x)) S 1 4242 4242 0 -1 4194624 10 0 0 0 123 45 0 0 20 0 1 0";
        assert_eq!(
            parse_cpu_time(stat),
            Some(CpuTime {
                user_us: 1_230_000,
                system_us: 450_000
            })
        );
        assert_eq!(parse_cpu_time("4242 (x) S 1"), None);
    }
}
