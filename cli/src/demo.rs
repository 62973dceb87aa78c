//! `wasmgate demo`: two small backends and a gateway configuration in front of them, so the
//! gateway can be tried with nothing else installed.
//!
//! The backends ("server-1" and "server-2") listen on loopback ports chosen by the OS and answer:
//! - `GET /`: an HTML page naming the server and the forwarding headers it received, with a small
//!   WebSocket chat client;
//! - `/api/...`: `{"server":"server-1","path":"/api/..."}`;
//! - WebSocket `/ws/echo`: every text or binary message sent back;
//! - WebSocket `/ws/chat`: a chat room shared by both servers, each line prefixed by the server the
//!   sender is connected to;
//! - WebSocket `/ws/moderated`: the same room, reached through the gateway's chat moderation filter
//!   (the Python example `examples/python-moderation`), which masks the words of
//!   [`MODERATED_WORDS`] in what these sessions send.
//!
//! [`DemoBackends::config_toml`] routes two gateway listeners to them: a path-based rule on the
//! chosen port and a basic rule on the next one ([`basic_port`]). The moderation filter is a
//! component built by `scripts/build-plugins`, not part of the binary: without it the demo runs
//! the same, and `/ws/moderated` sessions are told that moderation is off.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

const PAGE: &str = include_str!("demo/page.html");

/// The two servers: name, and the page's accent colour so the two are told apart at a glance.
const SERVERS: [(&str, &str); 2] = [("server-1", "#2563eb"), ("server-2", "#0f9d58")];

/// Headers the page lists: the ones a client sends and the ones the gateway adds on the way.
const SHOWN_HEADERS: [&str; 7] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-original-host",
    "x-original-url",
    "x-appgw-trace-id",
];

/// After a shutdown signal, open connections get this long to finish before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Chat lines kept for a session that reads slowly; past that it is told how many it missed.
const CHAT_BACKLOG: usize = 64;

/// The moderation filter's component, as `scripts/build-plugins` names it.
pub const MODERATION_FILE: &str = "example-python-moderation.wasm";

/// The words the demo's moderation filter masks on `/ws/moderated`.
pub const MODERATED_WORDS: [&str; 3] = ["darn", "drat", "heck"];

/// Where the moderation filter's component is: in `$WASMGATE_PLUGIN_DIR`, next to the executable,
/// or in the source tree's `target/plugins` (where `scripts/build-plugins` puts it), in that
/// order; or why the demo runs without it.
pub fn moderation_component() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("WASMGATE_PLUGIN_DIR") {
        candidates.push(PathBuf::from(dir).join(MODERATION_FILE));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join(MODERATION_FILE));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/plugins")
            .join(MODERATION_FILE),
    );
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        // Without the source tree's `cli/..` in what the configuration shows.
        return Ok(found.canonicalize().unwrap_or_else(|_| found.clone()));
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "the moderation filter is not built: build it with scripts/build-plugins (looked for {})",
        looked.join(", ")
    ))
}

/// The port of the demo's second listener (the basic rule): the one after `port`, or the one
/// before when `port` is the last. Port 0 stays 0 (each listener then gets a free port of its own).
pub fn basic_port(port: u16) -> u16 {
    match port {
        0 => 0,
        u16::MAX => u16::MAX - 1,
        p => p + 1,
    }
}

/// The two demo backends, running. They stop on [`DemoBackends::shutdown`], or when this value is
/// dropped: the tasks notice the shutdown channel closing, close their WebSocket sessions with
/// 1001 (going away) and end.
pub struct DemoBackends {
    addrs: [SocketAddr; 2],
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    room: Arc<ChatRoom>,
    /// The moderation filter's component, or why there is none.
    moderation: Result<PathBuf, String>,
}

/// Starts the two demo backends on 127.0.0.1, on ports chosen by the OS, with the moderation filter
/// on `/ws/moderated` if its component is built ([`moderation_component`]).
pub async fn start_backends() -> std::io::Result<DemoBackends> {
    start_backends_with(moderation_component()).await
}

/// [`start_backends`] with the moderation filter's component given (`Err`: why there is none).
pub async fn start_backends_with(
    moderation: Result<PathBuf, String>,
) -> std::io::Result<DemoBackends> {
    let (stop, stop_rx) = watch::channel(false);
    let room = Arc::new(ChatRoom::new(moderation.is_ok()));
    let mut addrs = [SocketAddr::from((Ipv4Addr::LOCALHOST, 0)); 2];
    let mut tasks = Vec::with_capacity(SERVERS.len());
    for (i, (name, accent)) in SERVERS.into_iter().enumerate() {
        // On an error here, `stop` is dropped on return, which stops the server already started.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        addrs[i] = listener.local_addr()?;
        let backend = Arc::new(Backend {
            name,
            accent,
            room: room.clone(),
            stop: stop_rx.clone(),
        });
        tasks.push(tokio::spawn(serve(listener, backend)));
    }
    Ok(DemoBackends {
        addrs,
        stop,
        tasks,
        room,
        moderation,
    })
}

impl DemoBackends {
    /// The addresses of server-1 and server-2, in that order.
    pub fn addrs(&self) -> [SocketAddr; 2] {
        self.addrs
    }

    /// The moderation filter's component, or why the demo runs without it.
    pub fn moderation(&self) -> Result<&Path, &str> {
        self.moderation.as_deref().map_err(String::as_str)
    }

    /// Starts the gateway in front of the backends with [`DemoBackends::config_toml`]. Should the
    /// moderation filter fail to load (a component built from an older interface, say), the
    /// gateway starts without it, `/ws/moderated` sessions are told so, and the reason is returned
    /// beside the gateway.
    pub async fn start_gateway(
        &mut self,
        port: u16,
    ) -> anyhow::Result<(wasmgate::Gateway, Option<String>)> {
        use anyhow::Context as _;
        let config = wasmgate::config::Config::from_toml(&self.config_toml(port))
            .context("the demo configuration")?;
        let error = match wasmgate::Gateway::start(config).await {
            Ok(gateway) => return Ok((gateway, None)),
            Err(e) if self.moderation.is_ok() => format!("{e:#}"),
            Err(e) => return Err(e.into()),
        };
        let why = format!("the moderation filter did not load: {error}");
        self.moderation = Err(why.clone());
        self.room.moderated.store(false, Ordering::Relaxed);
        let config = wasmgate::config::Config::from_toml(&self.config_toml(port))
            .context("the demo configuration")?;
        Ok((wasmgate::Gateway::start(config).await?, Some(why)))
    }

    /// Stops both servers: no new connections, open ones get a moment to finish, WebSocket
    /// sessions are closed with 1001 (going away). Returns once both listeners are closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// The gateway configuration for the demo, as TOML: listeners on 127.0.0.1:`port` (path-based
    /// rule) and 127.0.0.1:[`basic_port`]`(port)` (basic rule), routing to the two backends.
    pub fn config_toml(&self, port: u16) -> String {
        let [one, two] = self.addrs;
        let basic = basic_port(port);
        let (moderated_rule, moderation_plugin) = match &self.moderation {
            Ok(path) => moderation_toml(path),
            Err(why) => (
                format!(
                    "# /ws/moderated: not filtered ({why}); sessions there are told that moderation\n# is off.\n"
                ),
                String::new(),
            ),
        };
        format!(
            r#"# wasmgate demo configuration
#
# Two demo backends run inside this process: server-1 on {one} and server-2 on {two}.
# Two listeners put the gateway in front of them:
#   http://127.0.0.1:{port}/  a path-based rule: /api/* goes to server-1 only, /ws/* carries
#                           long-lived WebSocket sessions, anything else alternates between servers
#   http://127.0.0.1:{basic}/  a basic rule: every request alternates between the servers

[[listeners]]
name = "demo-http"
port = {port}
bind_address = "127.0.0.1"

[[listeners]]
name = "demo-basic"
port = {basic}
bind_address = "127.0.0.1"

# Both servers, taken in turn (round robin). Each address carries its own port, so the port in the
# backend settings below is not used for them.
[[backend_pools]]
name = "web"
addresses = ["{one}", "{two}"]

# server-1 alone: the /api/* path rule sends here, so its answers always name server-1.
[[backend_pools]]
name = "api"
addresses = ["{one}"]

# Both servers again, as a pool of their own for WebSocket sessions: this round robin runs apart
# from the one of "web", so the chat socket each page opens does not decide which server answers
# the next page.
[[backend_pools]]
name = "chat"
addresses = ["{one}", "{two}"]

# Plain HTTP, with Application Gateway's default request timeout: a backend has 20 s to answer.
[[backend_settings]]
name = "web-settings"
port = 80
request_timeout = 20

# For WebSocket. Application Gateway applies the request timeout to a whole WebSocket session, so
# with "web-settings" every chat would be cut after 20 s. websocket_timeout = "idle" makes the
# timeout bound silence instead (traffic either way resets it), and 300 s lets a quiet chat stay
# open for five minutes.
[[backend_settings]]
name = "ws-settings"
port = 80
request_timeout = 300
websocket_timeout = "idle"

[[url_path_maps]]
name = "demo-paths"
# Where requests go that no path rule matches.
default_backend_pool = "web"
default_backend_settings = "web-settings"

[[url_path_maps.path_rules]]
name = "api"
paths = ["/api/*"]
backend_pool = "api"
backend_settings = "web-settings"

{moderated_rule}
[[url_path_maps.path_rules]]
name = "websocket"
paths = ["/ws/*"]
backend_pool = "chat"
backend_settings = "ws-settings"

[[rules]]
name = "by-path"
priority = 100
listener = "demo-http"
kind = "path_based"
url_path_map = "demo-paths"

# A basic rule looks at nothing but the listener. WebSocket sessions through it use "web-settings",
# so they end after 20 s: Application Gateway's own behaviour, for comparison with port {port}.
[[rules]]
name = "everything"
priority = 200
listener = "demo-basic"
backend_pool = "web"
backend_settings = "web-settings"
{moderation_plugin}"#
        )
    }
}

/// The path rule that sends `/ws/moderated` through the moderation filter, and the filter's
/// `[[plugins]]` entry (component at `path`).
fn moderation_toml(path: &Path) -> (String, String) {
    let words: Vec<String> = MODERATED_WORDS.iter().map(|w| json_string(w)).collect();
    let rule = r#"# Path rules are tried in order: this one comes before /ws/*. Its sessions go to the same chat
# room, through the message filter "moderation", which sees every message they send.
[[url_path_maps.path_rules]]
name = "moderated-chat"
paths = ["/ws/moderated"]
backend_pool = "chat"
backend_settings = "ws-settings"
message_filter = "moderation"
"#
    .to_string();
    let plugin = format!(
        r#"
# The chat moderation filter (examples/python-moderation, a Python component built by
# scripts/build-plugins): it masks the listed words in what clients send, e.g. "oh heck" becomes
# "oh ****". "action": "drop" would drop such messages instead and tell the sender.
[[plugins]]
name = "moderation"
kind = "message-filter"
path = {path}
config = '{{"words": [{words}], "action": "replace"}}'
"#,
        path = toml_string(&path.display().to_string()),
        words = words.join(", "),
    );
    (rule, plugin)
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the demo prints once the gateway is up: the URLs, and what to try with them, and whether
/// `/ws/moderated` is filtered (`moderation`: the filter's component, or why there is none).
pub fn banner(port: u16, moderation: Result<&Path, &str>) -> String {
    let basic = basic_port(port);
    let moderated = match moderation {
        Ok(_) => format!(
            "/ws/moderated the same chat through a Python message filter that masks {}",
            MODERATED_WORDS.join(", ")
        ),
        Err(why) => format!("/ws/moderated the same chat, unfiltered: {why}"),
    };
    format!(
        r#"wasmgate demo: the gateway is up, in front of two demo backends (server-1, server-2).

  http://127.0.0.1:{port}/   path-based rule
      /api/*    server-1 only
      /ws/*     both servers, WebSocket sessions kept open while active (idle timeout 300 s)
      {moderated}
      others    both servers, in turn
  http://127.0.0.1:{basic}/   basic rule: every path to both servers, in turn; WebSocket sessions
                           end after 20 s (Application Gateway's request timeout bounds a session)

Try:
  Open http://127.0.0.1:{port}/ in a browser: the page names the server that answered and the
  headers the gateway added; reload to see the other server. Its chat runs over WebSocket
  (/ws/chat); open a second tab to chat between them. /ws/echo answers every message with itself.
  Tick "moderated" on the page to chat through /ws/moderated and try "oh heck": everyone sees
  "oh ****".

  The path rule sends /api/* to server-1 alone; the basic rule ignores the path:
    curl -sw '\n' http://127.0.0.1:{port}/api/hello
    curl -sw '\n' http://127.0.0.1:{basic}/api/hello      (twice: server-1, then server-2)

Press Ctrl-C to stop.
"#
    )
}

/// One demo server.
struct Backend {
    name: &'static str,
    accent: &'static str,
    room: Arc<ChatRoom>,
    stop: watch::Receiver<bool>,
}

/// The chat room. Both servers share it, as two instances of an application would share a message
/// bus: with the sessions spread over both servers by the gateway, separate rooms would leave two
/// browser tabs unable to see each other.
struct ChatRoom {
    lines: broadcast::Sender<Arc<str>>,
    guests: AtomicU64,
    /// Whether the gateway runs the moderation filter on `/ws/moderated`.
    moderated: AtomicBool,
}

impl ChatRoom {
    fn new(moderated: bool) -> Self {
        Self {
            lines: broadcast::channel(CHAT_BACKLOG).0,
            guests: AtomicU64::new(0),
            moderated: AtomicBool::new(moderated),
        }
    }

    fn say(&self, line: String) {
        // An error only means nobody is listening.
        let _ = self.lines.send(line.into());
    }
}

/// Resolves once a shutdown is asked for, or the [`DemoBackends`] is dropped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn serve(listener: TcpListener, backend: Arc<Backend>) {
    let mut stop = backend.stop.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer, backend.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait for some to be released.
                    tracing::warn!(server = backend.name, "demo backend cannot accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    // Dropping the set aborts the connections still open.
}

async fn connection(stream: TcpStream, peer: SocketAddr, backend: Arc<Backend>) {
    let mut stop = backend.stop.clone();
    let service = service_fn(move |req| {
        let backend = backend.clone();
        async move { Ok::<_, Infallible>(handle(req, peer, &backend)) }
    });
    // The timer enables hyper's header read timeout, so an idle half-open client cannot hold a
    // connection forever.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stopped(&mut stop) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

fn handle(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    backend: &Arc<Backend>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    if is_websocket_upgrade(&req) {
        let session = match path {
            "/ws/echo" => Session::Echo,
            "/ws/chat" => Session::Chat { moderated: false },
            "/ws/moderated" => Session::Chat { moderated: true },
            _ => return not_found(backend, path),
        };
        return upgrade(&mut req, session, backend);
    }
    match path {
        "/ws/echo" | "/ws/chat" | "/ws/moderated" => {
            let mut response = text(
                StatusCode::UPGRADE_REQUIRED,
                format!(
                    "{} speaks WebSocket here; connect with a WebSocket client\n",
                    backend.name
                ),
            );
            response
                .headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            response
        }
        "/" if matches!(*req.method(), Method::GET | Method::HEAD) => page(&req, peer, backend),
        "/" => {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{}: / takes GET\n", backend.name),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        p if p == "/api" || p.starts_with("/api/") => api(backend, p),
        p => not_found(backend, p),
    }
}

fn page(req: &Request<Incoming>, peer: SocketAddr, backend: &Backend) -> Response<Full<Bytes>> {
    let mut rows = String::new();
    for name in SHOWN_HEADERS {
        let values = header_values(req.headers(), name);
        let label = display_header_name(name);
        let _ = match values {
            Some(v) => writeln!(
                rows,
                "    <tr><th>{label}</th><td>{}</td></tr>",
                escape_html(&v)
            ),
            None => writeln!(
                rows,
                "    <tr><th>{label}</th><td class=\"absent\">not sent</td></tr>"
            ),
        };
    }
    let request = format!("{} {} {:?}", req.method(), req.uri(), req.version());
    let body = PAGE
        .replace("{{server}}", backend.name)
        .replace("{{accent}}", backend.accent)
        .replace("{{request}}", &escape_html(&request))
        .replace("{{peer}}", &peer.to_string())
        .replace("{{moderated_words}}", &quoted_words())
        .replace(
            "{{moderation_off}}",
            if backend.room.moderated.load(Ordering::Relaxed) {
                ""
            } else {
                " <strong>Off in this run:</strong> the gateway started without the filter (its output says why)."
            },
        )
        .replace("{{rows}}", rows.trim_end_matches('\n'));
    let mut response = respond(StatusCode::OK, "text/html; charset=utf-8", body);
    // Every reload must reach the gateway again, or the round robin would not show.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// [`MODERATED_WORDS`] for the page: “darn”, “drat” and “heck”.
fn quoted_words() -> String {
    let quoted: Vec<String> = MODERATED_WORDS.iter().map(|w| format!("“{w}”")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn api(backend: &Backend, path: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "{{\"server\":{},\"path\":{}}}",
        json_string(backend.name),
        json_string(path)
    );
    respond(StatusCode::OK, "application/json", body)
}

fn not_found(backend: &Backend, path: &str) -> Response<Full<Bytes>> {
    text(
        StatusCode::NOT_FOUND,
        format!("{}: nothing at {path}; try / or /api/hello\n", backend.name),
    )
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// All values of a header, joined as a list (RFC 9110 §5.3); `None` when absent.
fn header_values(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<_> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// `x-forwarded-for` → `X-Forwarded-For`, and the two Application Gateway spells its own way.
fn display_header_name(name: &str) -> String {
    match name {
        "x-appgw-trace-id" => return "X-AppGW-Trace-Id".to_string(),
        "x-original-url" => return "X-Original-URL".to_string(),
        _ => {}
    }
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether a header holds `token` in its comma-separated list, ignoring case
/// (`Connection: keep-alive, Upgrade`).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// An RFC 6455 opening handshake: a GET asking to upgrade the connection to `websocket`.
fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && has_token(req.headers(), header::CONNECTION, "upgrade")
        && has_token(req.headers(), header::UPGRADE, "websocket")
}

#[derive(Clone, Copy)]
enum Session {
    Echo,
    /// The chat room; `moderated`: reached through `/ws/moderated`.
    Chat {
        moderated: bool,
    },
}

/// Answers the handshake with 101 and runs the session on the upgraded connection.
fn upgrade(
    req: &mut Request<Incoming>,
    session: Session,
    backend: &Arc<Backend>,
) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return text(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake needs Sec-WebSocket-Key\n".to_string(),
        );
    };
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        // RFC 6455 §4.4: name the version this server speaks.
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is supported\n".to_string(),
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    let backend = backend.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(server = backend.name, "WebSocket upgrade failed: {e}");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        match session {
            Session::Echo => echo(ws, &backend).await,
            Session::Chat { moderated } => chat(ws, &backend, moderated).await,
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    response
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn going_away(ws: &mut Ws) {
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: "demo backend shutting down".into(),
    };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, ws.close(Some(frame))).await;
}

async fn echo(mut ws: Ws, backend: &Backend) {
    let mut stop = backend.stop.clone();
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                }
                // Pings are answered and closes acknowledged by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            () = stopped(&mut stop) => return going_away(&mut ws).await,
        }
    }
}

async fn chat(mut ws: Ws, backend: &Backend, moderated: bool) {
    let mut stop = backend.stop.clone();
    let room = &backend.room;
    // Subscribe first, so this session sees its own arrival like everyone else's.
    let mut lines = room.lines.subscribe();
    let guest = format!("guest-{}", room.guests.fetch_add(1, Ordering::Relaxed) + 1);
    let server = backend.name;
    let welcome = format!(
        "[{server}] Welcome, {guest}: you are connected to {server}. {} in the room.",
        match room.lines.receiver_count() {
            1 => "Nobody else is".to_string(),
            2 => "1 other person is".to_string(),
            n => format!("{} other people are", n - 1),
        }
    );
    if ws.send(Message::text(welcome)).await.is_err() {
        return;
    }
    if moderated {
        let notice = if room.moderated.load(Ordering::Relaxed) {
            format!(
                "[{server}] This path is moderated: the gateway masks {} in what you send.",
                MODERATED_WORDS.join(", ")
            )
        } else {
            format!(
                "[{server}] Moderation is off: the gateway runs without its filter (see its output)."
            )
        };
        if ws.send(Message::text(notice)).await.is_err() {
            return;
        }
    }
    room.say(format!("[{server}] {guest} joined."));
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    room.say(format!("[{server}] {guest}: {}", text.as_str()));
                }
                // Binary messages have no place in a text chat; pings and closes are handled
                // by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            line = lines.recv() => {
                let line: Arc<str> = match line {
                    Ok(line) => line,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        format!("[{server}] ({missed} messages missed: this connection is too slow)").into()
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if ws.send(Message::text(line.as_ref())).await.is_err() {
                    break;
                }
            }
            () = stopped(&mut stop) => return going_away(&mut ws).await,
        }
    }
    room.say(format!("[{server}] {guest} left."));
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use wasmgate::config::{Config, PluginKind, RuleAction, WebSocketTimeout};

    const LIMIT: Duration = Duration::from_secs(5);

    async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
        tokio::time::timeout(LIMIT, future)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
    }

    /// GETs `path` from `addr` over a fresh HTTP/1.1 connection.
    async fn get(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        within("GET", async {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut req = Request::get(path).header(header::HOST, "demo.example:8080");
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let response = sender
                .send_request(req.body(Empty::<Bytes>::new()).unwrap())
                .await
                .unwrap();
            let (parts, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            (
                parts.status,
                parts.headers,
                String::from_utf8(body.to_vec()).unwrap(),
            )
        })
        .await
    }

    async fn next_text<S>(ws: &mut WebSocketStream<S>) -> String
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        loop {
            match within("WebSocket message", ws.next()).await {
                Some(Ok(Message::Text(text))) => return text.as_str().to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The backends as on a machine where the moderation filter is not built.
    async fn unmoderated() -> DemoBackends {
        start_backends_with(Err("not built here".into()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn demo_config_is_valid() {
        let backends = unmoderated().await;
        let text = backends.config_toml(18080);
        let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

        let ports: Vec<u16> = config.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [18080, 18081]);
        let web = config
            .backend_pools
            .iter()
            .find(|p| p.name == "web")
            .unwrap();
        let addrs: Vec<String> = web.addresses.iter().map(|a| a.to_string()).collect();
        let expected: Vec<String> = backends.addrs().iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, expected);
        assert!(matches!(config.rules[0].action, RuleAction::PathBased(_)));
        assert!(matches!(config.rules[1].action, RuleAction::Basic(_)));
        let ws = config
            .backend_settings
            .iter()
            .find(|s| s.name == "ws-settings")
            .unwrap();
        assert_eq!(ws.websocket_timeout, WebSocketTimeout::Idle);
        assert_eq!(ws.request_timeout, Duration::from_secs(300));

        // The edges of the port range still give a valid configuration.
        for port in [0, 1, u16::MAX] {
            Config::from_toml(&backends.config_toml(port)).unwrap();
        }
        assert!(config.plugins.is_empty(), "no filter without its component");
        assert!(text.contains("/ws/moderated: not filtered (not built here)"));
        backends.shutdown().await;
    }

    #[tokio::test]
    async fn demo_config_filters_the_moderated_path_with_the_component() {
        // A folder name that needs escaping in TOML; the configuration reads the file.
        let dir = std::env::temp_dir().join(format!("wasmgate-demo \"{}\"", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let component = dir.join(MODERATION_FILE);
        std::fs::write(&component, b"\0asm").unwrap();
        let component = component.as_path();
        let backends = start_backends_with(Ok(component.to_path_buf()))
            .await
            .unwrap();
        let text = backends.config_toml(18080);
        let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let [moderation] = &config.plugins[..] else {
            panic!("one plugin expected: {:?}", config.plugins);
        };
        assert_eq!(moderation.name, "moderation");
        assert_eq!(moderation.kind, PluginKind::MessageFilter);
        assert_eq!(moderation.path.as_deref(), Some(component));
        let json: serde_json::Value = serde_json::from_str(&moderation.config).unwrap();
        assert_eq!(json["words"], serde_json::json!(MODERATED_WORDS));
        let map = &config.url_path_maps[0];
        let names: Vec<&str> = map.path_rules.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["api", "moderated-chat", "websocket"],
            "the moderated path comes before /ws/*: path rules are tried in order"
        );
        assert!(map.path_rules[1].message_filter.is_some());
        assert!(map.path_rules[2].message_filter.is_none());
        backends.shutdown().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn banner_names_both_listeners() {
        let text = banner(8080, Ok(Path::new("moderation.wasm")));
        assert!(text.contains("http://127.0.0.1:8080/"));
        assert!(text.contains("http://127.0.0.1:8081/"));
        assert!(text.contains("/api/hello"));
        assert!(text.contains("masks darn, drat, heck"));
        assert_eq!(basic_port(u16::MAX), u16::MAX - 1);
        let text = banner(8080, Err("the moderation filter is not built"));
        assert!(text.contains(
            "/ws/moderated the same chat, unfiltered: the moderation filter is not built"
        ));
    }

    #[tokio::test]
    async fn page_and_api() {
        let backends = unmoderated().await;
        let [one, two] = backends.addrs();

        let (status, headers, body) = get(
            one,
            "/",
            &[
                ("x-forwarded-for", "203.0.113.7:50123"),
                ("x-appgw-trace-id", "<trace-1>"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(body.contains("Answered by <span class=\"server\">server-1</span>"));
        assert!(body.contains("<td>demo.example:8080</td>"));
        assert!(body.contains("<td>203.0.113.7:50123</td>"));
        // Header values are escaped before they reach the page.
        assert!(body.contains("<td>&lt;trace-1&gt;</td>"));
        assert!(body.contains("'/ws/chat'"));
        assert!(body.contains("'/ws/moderated'"));
        assert!(body.contains("“darn”, “drat” and “heck” in what you send"));
        assert!(
            body.contains("Off in this run"),
            "the page says the filter is missing"
        );
        assert!(!body.contains("{{"), "a placeholder was left in the page");

        let (status, headers, body) = get(two, "/api/x", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body, r#"{"server":"server-2","path":"/api/x"}"#);

        let (status, _, body) = get(one, "/nothing", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.starts_with("server-1:"));

        let (status, _, _) = get(one, "/ws/echo", &[]).await;
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);

        backends.shutdown().await;
    }

    #[tokio::test]
    async fn websocket_echo() {
        let backends = unmoderated().await;
        let [one, _] = backends.addrs();
        let (mut ws, response) = within(
            "WebSocket handshake",
            tokio_tungstenite::connect_async(format!("ws://{one}/ws/echo")),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

        within("send", ws.send(Message::text("hello")))
            .await
            .unwrap();
        assert_eq!(next_text(&mut ws).await, "hello");
        within("send", ws.send(Message::binary(vec![0u8, 1, 2, 255])))
            .await
            .unwrap();
        match within("echo", ws.next()).await {
            Some(Ok(Message::Binary(data))) => assert_eq!(&data[..], [0, 1, 2, 255]),
            other => panic!("expected the binary message back, got {other:?}"),
        }
        within("close", ws.close(None)).await.unwrap();
        backends.shutdown().await;
    }

    #[tokio::test]
    async fn moderated_path_is_the_same_room_and_says_whether_it_is_filtered() {
        let backends = unmoderated().await;
        let [one, two] = backends.addrs();
        let (mut plain, _) = within(
            "handshake",
            tokio_tungstenite::connect_async(format!("ws://{one}/ws/chat")),
        )
        .await
        .unwrap();
        next_text(&mut plain).await;
        let (mut moderated, _) = within(
            "handshake",
            tokio_tungstenite::connect_async(format!("ws://{two}/ws/moderated")),
        )
        .await
        .unwrap();
        let welcome = next_text(&mut moderated).await;
        assert!(welcome.contains("connected to server-2"), "{welcome}");
        let notice = next_text(&mut moderated).await;
        assert_eq!(
            notice,
            "[server-2] Moderation is off: the gateway runs without its filter (see its output)."
        );
        within(
            "send",
            moderated.send(Message::text("hello from the moderated path")),
        )
        .await
        .unwrap();
        loop {
            let line = next_text(&mut plain).await;
            if line.ends_with(": hello from the moderated path") {
                break;
            }
        }
        backends.shutdown().await;
    }

    #[tokio::test]
    async fn chat_reaches_sessions_on_both_servers() {
        let backends = unmoderated().await;
        let [one, two] = backends.addrs();
        let (mut alice, _) = within(
            "handshake",
            tokio_tungstenite::connect_async(format!("ws://{one}/ws/chat")),
        )
        .await
        .unwrap();
        let welcome = next_text(&mut alice).await;
        assert!(
            welcome.starts_with("[server-1] Welcome, guest-"),
            "{welcome}"
        );
        let (mut bob, _) = within(
            "handshake",
            tokio_tungstenite::connect_async(format!("ws://{two}/ws/chat")),
        )
        .await
        .unwrap();
        let welcome = next_text(&mut bob).await;
        assert!(welcome.contains("connected to server-2"), "{welcome}");

        within("send", alice.send(Message::text("hi bob")))
            .await
            .unwrap();
        for ws in [&mut alice, &mut bob] {
            // Join notices may come first.
            loop {
                let line = next_text(ws).await;
                if line.ends_with(": hi bob") {
                    assert!(line.starts_with("[server-1] guest-"), "{line}");
                    break;
                }
            }
        }

        // A shutdown closes the sessions with 1001 (going away) and the listeners.
        backends.shutdown().await;
        loop {
            match within("close", alice.next()).await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(frame.code, CloseCode::Away);
                    break;
                }
                Some(Ok(Message::Text(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
        assert!(TcpStream::connect(one).await.is_err());
    }
}
