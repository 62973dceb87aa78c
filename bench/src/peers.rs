//! The peer proxies wasmgate is measured against in the same run: nginx, HAProxy and Caddy
//! (Debian packages), each a child process on loopback with a configuration generated into a
//! temporary directory, set up the way its documentation recommends for a WebSocket-capable
//! reverse proxy in front of one HTTP/1.1 backend:
//!
//! - keep-alive connections to the backend (nginx `proxy_http_version 1.1` with an `upstream`
//!   `keepalive` pool and the `Upgrade`/`Connection` map; HAProxy `option http-keep-alive`;
//!   Caddy's `reverse_proxy` defaults, which pool and upgrade by themselves);
//! - one worker per core (nginx `worker_processes auto`, HAProxy `nbthread` = cores, Caddy's
//!   `GOMAXPROCS` default);
//! - access logging off, errors only;
//! - one-hour client, backend and tunnel timeouts, like the gateway's `request_timeout = 3600`;
//! - an HTTPS listener with the run's test certificate, HTTP/1.1 by ALPN.
//!
//! Limits that would cut a benchmark short are raised to what the gateway has: nginx's
//! per-connection request cap (`keepalive_requests`, 1,000 by default on both sides) and its
//! worker connection count; HAProxy sizes `maxconn` from the open-file limit by itself.

use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::gateway::{Process, bench_dir};
use crate::net::free_port;
use crate::tls::TestCert;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    Nginx,
    Haproxy,
    Caddy,
}

impl Peer {
    pub fn key(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
            Self::Caddy => "caddy",
        }
    }

    /// The peer's name and version as it reports them, e.g. `nginx/1.22.1`.
    pub fn version(self) -> Result<String> {
        let (program, arg) = match self {
            Self::Nginx => ("nginx", "-v"),
            Self::Haproxy => ("haproxy", "-v"),
            Self::Caddy => ("caddy", "version"),
        };
        let out = Command::new(program).arg(arg).output().with_context(|| {
            format!("running `{program} {arg}` (install it: apt-get install -y {program})")
        })?;
        // nginx prints its version on stderr.
        let text = String::from_utf8_lossy(if out.stdout.is_empty() {
            &out.stderr
        } else {
            &out.stdout
        })
        .into_owned();
        let line = text.lines().next().unwrap_or_default().trim();
        Ok(match self {
            Self::Nginx => line.trim_start_matches("nginx version: ").to_owned(),
            Self::Haproxy => {
                // "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
                let v = line.split_whitespace().nth(2).unwrap_or(line);
                format!("HAProxy {v}")
            }
            Self::Caddy => format!("Caddy {}", line.split_whitespace().next().unwrap_or(line)),
        })
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A running peer proxy.
pub struct PeerProxy {
    process: Process,
    pub addr: SocketAddr,
    pub tls_addr: SocketAddr,
}

impl PeerProxy {
    /// With `forwarding`, the peer adds to every request the six fields wasmgate adds
    /// (Application Gateway's X-Forwarded-For, -Proto and -Port, X-Original-Host,
    /// X-Original-URL and X-AppGW-Trace-Id), so that both send the backend the same work.
    pub async fn start(
        peer: Peer,
        backend: SocketAddr,
        cert: &TestCert,
        forwarding: bool,
    ) -> Result<Self> {
        let port = free_port().context("picking a port")?;
        let tls_port = free_port().context("picking a TLS port")?;
        let dir = bench_dir(peer.key(), port)?;
        if let Err(e) = cert.write(&dir) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let command = match write_config(peer, &dir, port, tls_port, backend, cores, forwarding) {
            Ok(command) => command,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let process = Process::spawn(peer.key(), command, dir)?;
        let mut proxy = Self {
            process,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            tls_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, tls_port)),
        };
        proxy.process.wait_until_listening(proxy.addr).await?;
        proxy.process.wait_until_listening(proxy.tls_addr).await?;
        Ok(proxy)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.process.check_alive()
    }
}

/// Writes the peer's configuration into `dir` and returns the command that runs it in the
/// foreground.
fn write_config(
    peer: Peer,
    dir: &Path,
    port: u16,
    tls_port: u16,
    backend: SocketAddr,
    cores: usize,
    forwarding: bool,
) -> Result<Command> {
    let d = dir.display();
    match peer {
        Peer::Nginx => {
            let forwarding = if forwarding {
                "\n            proxy_set_header X-Forwarded-For $remote_addr:$remote_port;\n            \
                 proxy_set_header X-Forwarded-Proto $scheme;\n            \
                 proxy_set_header X-Forwarded-Port $server_port;\n            \
                 proxy_set_header X-Original-Host $http_host;\n            \
                 proxy_set_header X-Original-URL $request_uri;\n            \
                 proxy_set_header X-AppGW-Trace-Id $request_id;"
            } else {
                ""
            };
            // https://nginx.org/en/docs/http/websocket.html and ngx_http_upstream_module's
            // `keepalive` ("proxy_http_version 1.1" and an empty Connection header for
            // pooled upstream connections; the map sends "upgrade" when the client asked).
            let conf = format!(
                r#"# Written by wasmgate-bench; removed when the run ends.
daemon off;
master_process on;
worker_processes {cores};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log error;

events {{
    worker_connections 19000;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 3600s;
    client_header_timeout 3600s;
    client_body_timeout 3600s;
    send_timeout 3600s;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}

    upstream bench {{
        server {backend};
        keepalive 128;
        keepalive_requests 1000000000;
        keepalive_timeout 3600s;
    }}

    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;

        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;{forwarding}
        }}
    }}
}}
"#
            );
            let path = dir.join("nginx.conf");
            fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
            let mut command = Command::new("nginx");
            command
                .arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&path);
            Ok(command)
        }
        Peer::Haproxy => {
            // HAProxy 2.6 configuration manual: http-keep-alive is the default mode and is
            // named here for clarity; WebSocket needs no option, `timeout tunnel` bounds it.
            let conf = format!(
                r#"# Written by wasmgate-bench; removed when the run ends.
global
    nbthread {cores}
    tune.ssl.default-dh-param 2048

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-keep-alive 1h
    timeout http-request 1h

frontend bench
    bind 127.0.0.1:{port}
    bind 127.0.0.1:{tls_port} ssl crt {d}/combined.pem alpn http/1.1{forwarding}
    default_backend bench

backend bench
    server s1 {backend}
"#
            );
            let path = dir.join("haproxy.cfg");
            fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
            let mut command = Command::new("haproxy");
            // -db: foreground, no daemon.
            command.arg("-db").arg("-f").arg(&path);
            Ok(command)
        }
        Peer::Caddy => {
            // Caddy's reverse_proxy pools keep-alive connections and proxies upgrades by
            // default; access logs are off unless a site asks for them. It sets
            // X-Forwarded-For (the address alone), -Proto and -Host by itself.
            let forwarding = if forwarding {
                " {\n        header_up X-Forwarded-For {remote_host}:{remote_port}\n        \
                 header_up X-Forwarded-Port {http.request.port}\n        \
                 header_up X-Original-Host {hostport}\n        \
                 header_up X-Original-URL {uri}\n        \
                 header_up X-AppGW-Trace-Id {http.request.uuid}\n    }"
            } else {
                ""
            };
            let conf = format!(
                r#"# Written by wasmgate-bench; removed when the run ends.
{{
    admin off
    auto_https off
    storage file_system {d}/data
    log {{
        level ERROR
    }}
    servers {{
        timeouts {{
            read_body 1h
            read_header 1h
            write 1h
            idle 1h
        }}
    }}
}}

http://127.0.0.1:{port} {{
    bind 127.0.0.1
    reverse_proxy {backend}{forwarding}
}}

https://:{tls_port} {{
    bind 127.0.0.1
    tls {d}/cert.pem {d}/key.pem
    reverse_proxy {backend}{forwarding}
}}
"#
            );
            let path = dir.join("Caddyfile");
            fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
            let mut command = Command::new("caddy");
            command
                .arg("run")
                .arg("--adapter")
                .arg("caddyfile")
                .arg("--config")
                .arg(&path)
                .env("HOME", dir)
                .env("XDG_DATA_HOME", dir.join("data"))
                .env("XDG_CONFIG_HOME", dir.join("config"));
            Ok(command)
        }
    }
}

/// Fails with the install command if a peer's binary is missing.
pub fn check_installed(peers: &[Peer]) -> Result<()> {
    let missing: Vec<&str> = peers
        .iter()
        .filter(|p| {
            Command::new(p.key())
                .arg(if **p == Peer::Caddy { "version" } else { "-v" })
                .output()
                .is_err()
        })
        .map(|p| p.key())
        .collect();
    if !missing.is_empty() {
        bail!(
            "peer proxies not installed: {} (apt-get install -y {}; scripts/bench does this), \
             or leave them out with --peers",
            missing.join(", "),
            missing.join(" ")
        );
    }
    Ok(())
}
