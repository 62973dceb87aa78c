//! The gateway under test as a child process, plus the /proc readings the
//! report needs (RSS and CPU time).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;

use crate::net::free_port;

/// How long the gateway gets to start accepting connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running gateway. Dropping it kills the process (SIGKILL: the bench has
/// no use for a graceful drain) and removes its config directory, so every
/// exit path of the harness, including errors, panics and Ctrl-C, cleans up.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// The HTTPS listener (same backend), for the TLS scenarios.
    pub tls_addr: SocketAddr,
    /// A listener whose rule the built-in router plugin decides (same backend), when asked for.
    pub router_addr: Option<SocketAddr>,
    /// The CA of the HTTPS listener's certificate, generated per gateway.
    pub ca: CertificateDer<'static>,
    dir: PathBuf,
}

impl Gateway {
    /// `with_router` adds the listener routed by the built-in router plugin, which must have
    /// been built (`scripts/build-plugins`).
    pub async fn start(binary: &Path, backend: SocketAddr, with_router: bool) -> Result<Self> {
        if !binary.is_file() {
            bail!("gateway binary {} does not exist", binary.display());
        }
        let port = free_port().context("picking a port for the gateway")?;
        let tls_port = free_port().context("picking a port for the HTTPS listener")?;
        let dir =
            std::env::temp_dir().join(format!("wasmgate-bench-{}-{}", std::process::id(), port));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = crate::tls::write_certificate(&dir)?;
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
        fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;

        // Its stdout goes to our stderr so that the markdown table on our
        // stdout stays clean.
        let spawned = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::inherit())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e).with_context(|| format!("spawning {}", binary.display()));
            }
        };
        let mut gateway = Self {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            tls_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, tls_port)),
            router_addr: router_port.map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
            ca,
            dir,
        };
        gateway.wait_until_listening().await?;
        Ok(gateway)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_until_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "gateway did not accept connections on {} within {:?}",
                    self.addr,
                    START_TIMEOUT
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails if the gateway process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("gateway exited: {status}"),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
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

/// User + system CPU time of a process (all its threads, live and exited),
/// in microseconds.
pub fn cpu_time_us(pid: Option<u32>) -> Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces and parentheses, so the
    // numeric fields are counted from the last ')'. The first field after it
    // is field 3 (state); utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("malformed {path}"))?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || -> Result<u64> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("malformed {path}"))
    };
    let ticks = next()? + next()?;
    // USER_HZ, the unit of these fields, is fixed at 100 by the Linux ABI on
    // every mainstream architecture (x86, arm, riscv).
    Ok(ticks * 10_000)
}
