//! `wasmgate run --processes N`: a supervisor that starts N gateway processes with the same
//! configuration, all listening on every port (SO_REUSEPORT: the kernel spreads new connections
//! over them), restarts one that dies (with backoff), and serves the one admin listener of the
//! configuration: each request is asked of every process over its own Unix socket, and the
//! answers are merged — views from the first process that answers (they all run the same
//! configuration), metrics summed, changes (reload, plugin operations) applied to all and
//! answered once when they agree.

use std::convert::Infallible;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use wasmgate::Config;
use wasmgate::admin::{METRICS_PATH, STATUS_PATH, console, constant_time_eq};
use wasmgate::upgrade::{Signal, signal};

/// The hidden `run` option that starts a supervised process with its admin API on this socket.
pub const CHILD_ADMIN_ARG: &str = "--child-admin";

/// How long one process may take to answer the supervisor (plugin uploads compile).
const ASK_LIMIT: Duration = Duration::from_secs(120);
/// The first restart waits this long, doubled for each quick death, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long before dying is restarted without waiting.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// One process the supervisor keeps running.
struct Slot {
    socket: PathBuf,
    pid: Option<u32>,
    restarts: u32,
}

struct Supervisor {
    slots: Vec<Mutex<Slot>>,
    token: Option<Arc<str>>,
    stopping: tokio::sync::watch::Sender<bool>,
}

/// Runs `processes` gateway processes started as `program args --child-admin SOCKET`, until
/// SIGTERM or Ctrl-C (passed on to them, then waited for). SIGHUP is passed on too.
pub async fn run(config_path: &Path, processes: usize, args: Vec<OsString>) -> anyhow::Result<()> {
    // Refused here, once, rather than by N processes in a restart loop.
    let config = Config::from_file(config_path)?;
    let program = std::env::current_exe().context("cannot tell this program's path")?;
    let dir = private_dir()?;
    let admin = match &config.admin {
        None => None,
        Some(admin) => {
            let tls = admin
                .tls
                .as_ref()
                .map(|t| wasmgate::tls::server::admin_acceptor(t.certificate.clone()))
                .transpose()
                .context("admin certificate")?;
            let listener = tokio::net::TcpListener::bind(admin.bind)
                .await
                .with_context(|| format!("cannot bind the admin listener to {}", admin.bind))?;
            tracing::info!(address = %listener.local_addr()?, processes, "supervisor: admin listening");
            Some((listener, tls))
        }
    };
    let supervisor = Arc::new(Supervisor {
        slots: (0..processes)
            .map(|i| {
                Mutex::new(Slot {
                    socket: dir.join(format!("process-{i}.sock")),
                    pid: None,
                    restarts: 0,
                })
            })
            .collect(),
        token: config
            .admin
            .as_ref()
            .and_then(|a| a.token.as_deref())
            .map(Arc::from),
        stopping: tokio::sync::watch::Sender::new(false),
    });
    let mut keepers = Vec::new();
    for i in 0..processes {
        let (supervisor, program, args) = (supervisor.clone(), program.clone(), args.clone());
        keepers.push(std::thread::spawn(move || {
            keep_running(&supervisor, i, &program, &args)
        }));
    }
    if let Some((listener, tls)) = admin {
        tokio::spawn(serve_admin(listener, tls, supervisor.clone()));
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            r = tokio::signal::ctrl_c() => { r?; break }
            _ = hangup.recv() => supervisor.signal_all(Signal::HUP),
        }
    }
    tracing::info!("supervisor: stopping the processes");
    supervisor.stopping.send_replace(true);
    supervisor.signal_all(Signal::TERM);
    tokio::task::spawn_blocking(move || {
        for keeper in keepers {
            let _ = keeper.join();
        }
    })
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

impl Supervisor {
    fn signal_all(&self, sig: Signal) {
        for slot in &self.slots {
            if let Some(pid) = lock(slot).pid {
                let _ = signal(pid, sig);
            }
        }
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// The admin sockets of the processes running now, with their ids.
    fn running(&self) -> Vec<(u32, PathBuf)> {
        self.slots
            .iter()
            .filter_map(|slot| {
                let slot = lock(slot);
                Some((slot.pid?, slot.socket.clone()))
            })
            .collect()
    }
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocking, on a thread of its own: starts process `i`, waits for it, starts it again when it
/// dies (after a backoff when it dies quickly), until the supervisor stops.
fn keep_running(supervisor: &Supervisor, i: usize, program: &Path, args: &[OsString]) {
    let mut backoff = FIRST_BACKOFF;
    while !supervisor.is_stopping() {
        let socket = lock(&supervisor.slots[i]).socket.clone();
        let started = Instant::now();
        let mut child: Child = match Command::new(program)
            .args(args)
            .arg(CHILD_ADMIN_ARG)
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(process = i, error = %e, "supervisor: cannot start a process");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        lock(&supervisor.slots[i]).pid = Some(child.id());
        tracing::info!(process = i, pid = child.id(), "supervisor: process started");
        let status = child.wait();
        {
            let mut slot = lock(&supervisor.slots[i]);
            slot.pid = None;
        }
        if supervisor.is_stopping() {
            break;
        }
        tracing::warn!(process = i, status = ?status, "supervisor: process ended; starting another");
        if started.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        } else {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        lock(&supervisor.slots[i]).restarts += 1;
    }
}

/// A folder only this user can enter, for the processes' admin sockets.
fn private_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("wasmgate-supervisor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

async fn serve_admin(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    supervisor: Arc<Supervisor>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (supervisor, tls) = (supervisor.clone(), tls.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let supervisor = supervisor.clone();
                async move { Ok::<_, Infallible>(answer(req, &supervisor).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(tls) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await
                    {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            }
        });
    }
}

/// One process's answer.
struct Answer {
    pid: u32,
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

async fn answer(req: Request<Incoming>, supervisor: &Supervisor) -> Response<Full<Bytes>> {
    if let Some(res) = console::asset(&req) {
        return res;
    }
    if let Some(token) = &supervisor.token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            let mut res = json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a valid admin token is required (Authorization: Bearer <token>)"}),
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wasmgate admin\""),
            );
            return res;
        }
    }
    let path = req.uri().path().to_owned();
    if path == wasmgate::admin::upgrade::PATH {
        return json(
            StatusCode::CONFLICT,
            serde_json::json!({"error": "a supervisor's processes are not upgraded one by one: restart the supervisor with the new binary"}),
        );
    }
    let method = req.method().clone();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let forwarded: Vec<_> = [header::ACCEPT, header::CONTENT_TYPE]
        .into_iter()
        .filter_map(|name| Some((name.clone(), req.headers().get(&name)?.clone())))
        .collect();
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("cannot read the request body: {e}")}),
            );
        }
    };
    let running = supervisor.running();
    if running.is_empty() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "no process is running"}),
        );
    }
    let asks = running.iter().map(|(pid, socket)| {
        ask(
            *pid,
            socket,
            method.clone(),
            &path_and_query,
            &forwarded,
            body.clone(),
        )
    });
    let answers: Vec<Result<Answer, String>> = futures_util::future::join_all(asks).await;
    let processes = running.len();
    if method == Method::GET || method == Method::HEAD {
        let ok: Vec<Answer> = answers.into_iter().filter_map(Result::ok).collect();
        let Some(first) = ok.first() else {
            return json(
                StatusCode::BAD_GATEWAY,
                serde_json::json!({"error": "no process answered"}),
            );
        };
        if path == METRICS_PATH && first.status.is_success() {
            let texts: Vec<&[u8]> = ok.iter().map(|a| &a.body[..]).collect();
            return respond(
                first.status,
                first.content_type.clone(),
                sum_metrics(&texts),
            );
        }
        if path == STATUS_PATH
            && first.status.is_success()
            && let Ok(mut status) = serde_json::from_slice::<serde_json::Value>(&first.body)
        {
            {
                status["processes"] = serde_json::json!(
                    supervisor
                        .slots
                        .iter()
                        .map(|slot| {
                            let slot = lock(slot);
                            serde_json::json!({"pid": slot.pid, "restarts": slot.restarts})
                        })
                        .collect::<Vec<_>>()
                );
                return json(first.status, status);
            }
        }
        return respond(first.status, first.content_type.clone(), first.body.clone());
    }
    // A change: every process applied it the same way, or the answer says who did what.
    let agreed = answers
        .iter()
        .all(|a| matches!((a, &answers[0]), (Ok(a), Ok(b)) if a.status == b.status));
    if agreed {
        if let Some(Ok(first)) = answers.into_iter().next() {
            let mut res = respond(first.status, first.content_type, first.body);
            res.headers_mut()
                .insert("x-wasmgate-processes", HeaderValue::from(processes));
            return res;
        }
        return json(
            StatusCode::BAD_GATEWAY,
            serde_json::json!({"error": "no process answered"}),
        );
    }
    let listed: Vec<serde_json::Value> = answers
        .iter()
        .map(|a| match a {
            Ok(a) => serde_json::json!({
                "pid": a.pid,
                "status": a.status.as_u16(),
                "answer": serde_json::from_slice::<serde_json::Value>(&a.body)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&a.body).into_owned().into()),
            }),
            Err(e) => serde_json::json!({ "error": e }),
        })
        .collect();
    json(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({
            "error": "the processes did not all apply the change alike",
            "answers": listed,
        }),
    )
}

/// Asks the process behind `socket` over HTTP/1.1.
async fn ask(
    pid: u32,
    socket: &Path,
    method: Method,
    path_and_query: &str,
    headers: &[(http::HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<Answer, String> {
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("process {pid}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("process {pid}: {e}"))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, "localhost");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("process {pid}: {e}"))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| format!("process {pid}: {e}"))?;
        let status = res.status();
        let content_type = res.headers().get(header::CONTENT_TYPE).cloned();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("process {pid}: {e}"))?
            .to_bytes();
        Ok(Answer {
            pid,
            status,
            content_type,
            body,
        })
    };
    tokio::time::timeout(ASK_LIMIT, exchange)
        .await
        .map_err(|_| format!("process {pid}: no answer"))?
}

/// Prometheus or OpenMetrics texts of several processes as one: each sample's values summed
/// over the processes (counters and gauges alike: connections, requests, sessions add up);
/// `_info` samples and comments from the first.
fn sum_metrics(texts: &[&[u8]]) -> Bytes {
    let mut order: Vec<String> = Vec::new();
    let mut sums: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    let mut kept: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (i, text) in texts.iter().enumerate() {
        for line in String::from_utf8_lossy(text).lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                if i == 0 && !line.starts_with("# EOF") {
                    order.push(line.to_owned());
                    kept.insert(line.to_owned());
                }
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            match sums.get_mut(series) {
                Some(sum) if !name.ends_with("_info") => *sum += value,
                Some(_) => {}
                None => {
                    order.push(series.to_owned());
                    sums.insert(series.to_owned(), value);
                }
            }
        }
    }
    let mut out = String::new();
    for line in order {
        if kept.contains(&line) {
            out.push_str(&line);
        } else if let Some(v) = sums.get(&line) {
            out.push_str(&format!("{line} {v}"));
        }
        out.push('\n');
    }
    if texts
        .first()
        .is_some_and(|t| String::from_utf8_lossy(t).contains("# EOF"))
    {
        out.push_str("# EOF\n");
    }
    Bytes::from(out)
}

fn respond(
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    if let Some(ct) = content_type {
        res.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    respond(
        status,
        Some(HeaderValue::from_static("application/json")),
        Bytes::from(serde_json::to_vec_pretty(&value).unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use super::sum_metrics;

    #[test]
    fn samples_add_up_and_info_does_not() {
        let a = b"# TYPE x counter\nx_total{a=\"1\"} 2\nbuild_info{v=\"1\"} 1\n";
        let b =
            b"# TYPE x counter\nx_total{a=\"1\"} 3\nx_total{a=\"2\"} 1\nbuild_info{v=\"1\"} 1\n";
        let sum = sum_metrics(&[a, b]);
        assert_eq!(
            String::from_utf8_lossy(&sum),
            "# TYPE x counter\nx_total{a=\"1\"} 5\nbuild_info{v=\"1\"} 1\nx_total{a=\"2\"} 1\n"
        );
    }
}
