//! Binary upgrade as an operator does it: `wasmgate upgrade` while HTTP requests flow and
//! WebSocket sessions exchange messages; a new binary that cannot start; the drain timeout.
//! And `wasmgate run --processes N`: a process killed under load, a reload through the one
//! admin listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

mod support;
use support::free_port;

const TOKEN: &str = "upgrade-test-admin-token-01";

/// A backend answering `GET` with 200 and `name`, and echoing every WebSocket message.
async fn backend() -> SocketAddr {
    named_backend("ok").await
}

async fn named_backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |mut req: Request<Incoming>| async move {
                    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                        return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))));
                    };
                    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                        key.as_bytes(),
                    );
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(upgraded) = upgrade.await else { return };
                        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                            TokioIo::new(upgraded),
                            Role::Server,
                            None,
                        )
                        .await;
                        while let Some(Ok(message)) = ws.next().await {
                            if message.is_text() && ws.send(message).await.is_err() {
                                return;
                            }
                        }
                    });
                    let mut res = Response::new(Full::new(Bytes::new()));
                    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    let h = res.headers_mut();
                    h.insert(header::UPGRADE, "websocket".parse().expect("value"));
                    h.insert(header::CONNECTION, "Upgrade".parse().expect("value"));
                    h.insert("sec-websocket-accept", accept.parse().expect("value"));
                    Ok(res)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fn config(port: u16, admin: u16, pool: SocketAddr, drain: &str) -> String {
    format!(
        r#"[[listeners]]
name = "web"
port = {port}
bind_address = "127.0.0.1"

[[backend_pools]]
name = "pool"
addresses = ["{pool}"]

[[backend_settings]]
name = "settings"
port = {pool_port}
# A WebSocket session lasts at most this long (Application Gateway's request timeout).
request_timeout = 3600

[[rules]]
name = "rule"
listener = "web"
backend_pool = "pool"
backend_settings = "settings"

[limits]
upgrade_drain_timeout = "{drain}"

[admin]
port = {admin}
token = "{TOKEN}"
"#,
        pool = pool.ip(),
        pool_port = pool.port(),
    )
}

/// A process this test started (directly or through an upgrade), ended when the test ends.
struct Process(u32);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether `pid` has exited (gone, or a zombie nobody reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// One GET over a fresh connection: the status line's code, or why there was none.
async fn get(port: u16) -> Result<u16, String> {
    get_text(port, "/", None).await.map(|(status, _)| status)
}

/// One request over a fresh connection: the status and the body.
async fn get_text(
    port: u16,
    path: &str,
    post_with_token: Option<&str>,
) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let head = match post_with_token {
        None => format!(
            "GET {path} HTTP/1.1\r\nHost: example.com\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        ),
        Some(token) => format!(
            "POST {path} HTTP/1.1\r\nHost: example.com\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    };
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer in 20 s".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}

fn start(executable: &Path, file: &Path, log: &Path) -> Child {
    Command::new(executable)
        .args(["run", "--no-watch", "--workers", "2", "--config"])
        .arg(file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("start wasmgate")
}

/// `wasmgate upgrade`: Ok(new pid) or Err(its error output).
async fn upgrade(admin: u16) -> Result<u32, String> {
    let out = tokio::task::spawn_blocking(move || {
        support::wasmgate()
            .args(["upgrade", "--admin", &format!("http://127.0.0.1:{admin}")])
            .args(["--token", TOKEN])
            .output()
            .expect("wasmgate upgrade")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    stdout
        .split_whitespace()
        .nth(2)
        .and_then(|pid| pid.parse().ok())
        .ok_or(stdout)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(port: u16) -> Result<Ws, String> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

async fn echo(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text => Ok(()),
        other => Err(format!("no echo of {text}: {other:?}")),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmgate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The longest wait for an answer to a fresh connection, in microseconds.
    longest: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, e: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().expect("lock");
        if errors.len() < 10 {
            errors.push(e);
        }
    }
}

/// WebSocket sessions held across the upgrades; `scripts/bench-upgrade` raises it.
fn held_sessions() -> usize {
    std::env::var("WASMGATE_UPGRADE_SESSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_upgrades_under_load_refuse_nothing_and_drop_no_session() {
    let pool = backend().await;
    let (port, admin) = (free_port(), free_port());
    let dir = temp_dir("upgrade-load");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, config(port, admin, pool, "60s")).expect("write");
    let mut first = start(
        Path::new(env!("CARGO_BIN_EXE_wasmgate")),
        &file,
        &dir.join("log"),
    );
    let mut processes = vec![Process(first.id())];
    eventually("the gateway to serve", async || get(port).await == Ok(200)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(Tally::default());
    let sessions = Arc::new(Tally::default());
    let opened = Arc::new(Tally::default());

    // Sessions opened before the first upgrade, exchanging messages across all three.
    let mut held = Vec::new();
    let count = held_sessions();
    for i in 0..count {
        let mut ws = open(port).await.expect("session");
        let (stop, tally) = (stop.clone(), sessions.clone());
        held.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = echo(&mut ws, &format!("{i}-{n}")).await {
                    tally.fail(format!("session {i} after {n} messages: {e}"));
                    return;
                }
                n += 1;
                tally.ok.fetch_add(1, Ordering::Relaxed);
                // Every 20 ms with 100 sessions, every 200 ms with 1,000.
                tokio::time::sleep(Duration::from_micros(200 * count as u64)).await;
            }
            let _ = ws.close(None).await;
        }));
    }
    // Requests over fresh connections, and sessions opened and closed, all along.
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (stop, tally) = (stop.clone(), requests.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match get(port).await {
                    Ok(200) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        tally
                            .longest
                            .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                    Ok(status) => tally.fail(format!("status {status}")),
                    Err(e) => tally.fail(e),
                }
            }
        }));
    }
    {
        let (stop, tally) = (stop.clone(), opened.clone());
        loops.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let result = async {
                    let mut ws = open(port).await?;
                    echo(&mut ws, &format!("new-{n}")).await?;
                    ws.close(None).await.map_err(|e| format!("close: {e}"))
                }
                .await;
                match result {
                    Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tally.fail(e);
                        0
                    }
                };
                n += 1;
            }
        }));
    }

    let mut pids = vec![first.id()];
    for round in 1..=3 {
        let before = requests.ok.load(Ordering::Relaxed);
        eventually("requests to flow", async || {
            requests.ok.load(Ordering::Relaxed) > before + 20
        })
        .await;
        let pid = upgrade(admin)
            .await
            .unwrap_or_else(|e| panic!("upgrade {round}: {e}"));
        processes.push(Process(pid));
        pids.push(pid);
    }
    let before = (
        requests.ok.load(Ordering::Relaxed),
        opened.ok.load(Ordering::Relaxed),
    );
    eventually(
        "the last process to serve requests and sessions",
        async || {
            requests.ok.load(Ordering::Relaxed) > before.0 + 50
                && opened.ok.load(Ordering::Relaxed) > before.1 + 5
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in held.into_iter().chain(loops) {
        task.await.expect("join");
    }
    let errors = |t: &Tally| t.errors.lock().expect("lock").clone();
    eprintln!(
        "3 upgrades: {} requests, {} messages over {count} held sessions, {} sessions opened; \
         longest wait for an answer on a fresh connection {} ms",
        requests.ok.load(Ordering::Relaxed),
        sessions.ok.load(Ordering::Relaxed),
        opened.ok.load(Ordering::Relaxed),
        requests.longest.load(Ordering::Relaxed) / 1000,
    );
    assert_eq!(
        requests.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        errors(&requests)
    );
    assert_eq!(
        sessions.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        errors(&sessions)
    );
    assert_eq!(
        opened.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        errors(&opened)
    );

    // Their sessions ended, the three old processes exit; the last one serves on.
    for pid in &pids[..3] {
        eventually("an old process to exit", async || exited(*pid)).await;
    }
    assert!(!exited(pids[3]), "the last process serves");
    assert_eq!(get(port).await, Ok(200));
    let _ = first.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_that_fails_leaves_the_old_one_serving() {
    let pool = backend().await;
    let (port, admin) = (free_port(), free_port());
    let dir = temp_dir("upgrade-fail");
    // The binary is run from a copy, replaced as a package manager would: by renaming a new
    // file over it.
    let executable = dir.join("wasmgate");
    let replace = |content: &[u8], mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let next = dir.join("wasmgate.next");
        std::fs::write(&next, content).expect("write binary");
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode)).expect("chmod");
        std::fs::rename(&next, &executable).expect("rename");
    };
    let real = std::fs::read(env!("CARGO_BIN_EXE_wasmgate")).expect("read binary");
    replace(&real, 0o755);
    let file = dir.join("gateway.toml");
    let valid = config(port, admin, pool, "1s");
    std::fs::write(&file, &valid).expect("write");
    let mut first = start(&executable, &file, &dir.join("log"));
    let _first = Process(first.id());
    eventually("the gateway to serve", async || get(port).await == Ok(200)).await;
    let mut ws = open(port).await.expect("session");
    echo(&mut ws, "before").await.expect("echo");

    // An invalid configuration: the new process refuses it and says why.
    std::fs::write(
        &file,
        valid.replace("backend_pool = \"pool\"", "backend_pool = \"missing\""),
    )
    .expect("write");
    let error = upgrade(admin).await.expect_err("an invalid configuration");
    assert!(
        error.contains("rules[0].backend_pool") && error.contains("keeps serving"),
        "{error}"
    );
    assert_eq!(get(port).await, Ok(200));
    echo(&mut ws, "after a refused configuration")
        .await
        .expect("echo");

    // A binary that dies at once.
    std::fs::write(&file, &valid).expect("write");
    replace(b"#!/bin/sh\nexit 3\n", 0o755);
    let error = upgrade(admin).await.expect_err("a binary that exits");
    assert!(error.contains("exit status: 3"), "{error}");
    assert_eq!(get(port).await, Ok(200));
    echo(&mut ws, "after a crash").await.expect("echo");

    // The real binary again: it takes over; the old process keeps the session until the drain
    // timeout, then closes it with 1001 and exits.
    replace(&real, 0o755);
    let pid = upgrade(admin).await.expect("upgrade");
    let _second = Process(pid);
    assert_eq!(get(port).await, Ok(200));
    echo(&mut ws, "after the upgrade").await.expect("echo");
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                other => panic!("no Close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("Close within the drain timeout");
    assert_eq!(close, Some(CloseCode::Away));
    let old = first.id();
    eventually("the old process to exit", async || exited(old)).await;
    let _ = first.wait();
    assert_eq!(get(port).await, Ok(200));
}

/// The processes' ids as the supervisor's status lists them.
async fn process_ids(admin: u16) -> Vec<Option<u64>> {
    let Ok((200, body)) = get_text(admin, "/api/status", None).await else {
        return Vec::new();
    };
    let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    status["processes"]
        .as_array()
        .map(|ps| ps.iter().map(|p| p["pid"].as_u64()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_share_the_ports_replace_a_killed_one_and_reload_together() {
    let (a, b) = (named_backend("a").await, named_backend("b").await);
    let (port, admin) = (free_port(), free_port());
    let dir = temp_dir("processes");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, config(port, admin, a, "60s")).expect("write");
    let mut supervisor = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args([
            "run",
            "--no-watch",
            "--processes",
            "2",
            "--workers",
            "1",
            "--config",
        ])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).expect("log"))
        .spawn()
        .expect("start wasmgate");
    let _supervisor = Process(supervisor.id());
    eventually("two processes", async || {
        let ids = process_ids(admin).await;
        ids.len() == 2 && ids.iter().all(Option::is_some)
    })
    .await;
    eventually("the gateway to serve", async || {
        get_text(port, "/", None).await.map(|(_, b)| b) == Ok("a".into())
    })
    .await;
    let ids = process_ids(admin).await;
    let _children: Vec<Process> = ids.iter().flatten().map(|p| Process(*p as u32)).collect();

    // Sessions spread over both processes by the kernel; one process killed.
    let mut sessions = Vec::new();
    for _ in 0..20 {
        sessions.push(open(port).await.expect("session"));
    }
    let killed = ids[0].expect("pid");
    let status = Command::new("kill")
        .args(["-KILL", &killed.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    eventually("the killed process to be replaced", async || {
        let now = process_ids(admin).await;
        now.len() == 2 && now.iter().all(|p| p.is_some_and(|p| p != killed))
    })
    .await;
    let _replacement: Vec<Process> = process_ids(admin)
        .await
        .iter()
        .flatten()
        .map(|p| Process(*p as u32))
        .collect();
    let mut survived = 0;
    for (i, ws) in sessions.iter_mut().enumerate() {
        if echo(ws, &format!("after-{i}")).await.is_ok() {
            survived += 1;
        }
    }
    eprintln!("{survived} of 20 sessions survived the kill of one of 2 processes");
    // Only the killed process's sessions are lost (the kernel gave it some, very likely not all).
    assert!(survived > 0 && survived < 20, "{survived} of 20 survived");
    for _ in 0..10 {
        assert_eq!(get(port).await, Ok(200));
    }

    // A reload through the one admin listener reaches every process.
    std::fs::write(&file, config(port, admin, b, "60s")).expect("write");
    let (status, body) = get_text(admin, "/api/reload", Some(TOKEN))
        .await
        .expect("reload");
    assert_eq!(status, 200, "{body}");
    for _ in 0..20 {
        assert_eq!(
            get_text(port, "/", None).await.map(|(_, b)| b),
            Ok("b".into()),
            "every process routes to b"
        );
    }
    let (status, metrics) = get_text(admin, "/metrics", None).await.expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("wasmgate_"), "{metrics}");
    let _ = supervisor.kill();
    let _ = supervisor.wait();
}
