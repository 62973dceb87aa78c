//! WebSocket: an echo backend that records its handshakes and the close frames it receives, and
//! a tokio-tungstenite client helper. The backend answers the gateway's health probes (plain
//! GETs) with a switchable [`ProbeAnswer`].

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::backend::{ProbeAnswer, read_head};
use crate::{WAIT, within};

/// A client session through the gateway.
pub type WsClient = WebSocketStream<TcpStream>;

/// A handshake as the backend received it.
#[derive(Debug, Clone)]
pub struct WsHandshake {
    pub uri: String,
    pub headers: HeaderMap,
}

impl WsHandshake {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Default)]
struct WsState {
    handshakes: Vec<WsHandshake>,
    /// Close frames the backend received: `None` for a close without a code.
    closes: Vec<Option<u16>>,
    /// Sessions that ended, however they ended.
    ended: usize,
    /// Health probes answered.
    probes: usize,
    probe_answer: Option<ProbeAnswer>,
}

/// A WebSocket backend on 127.0.0.1. It echoes text and binary messages, answers pings, and
/// echoes the client's close code. Text `close:<code>` makes it close the session itself with
/// that code; text `whoami` answers with its name. It accepts the first subprotocol offered.
#[derive(Debug)]
pub struct WsBackend {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<Mutex<WsState>>,
    task: JoinHandle<()>,
}

impl WsBackend {
    /// An echo backend.
    pub async fn start(name: &str) -> WsBackend {
        Self::start_with(name, None).await
    }

    /// A backend that answers every upgrade request with `status` instead of 101.
    pub async fn refusing(name: &str, status: u16) -> WsBackend {
        Self::start_with(name, Some(StatusCode::from_u16(status).expect("status"))).await
    }

    async fn start_with(name: &str, refuse: Option<StatusCode>) -> WsBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind WebSocket backend");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(Mutex::new(WsState::default()));
        let task = {
            let state = state.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    tokio::spawn(session(stream, name.clone(), refuse, state.clone()));
                }
            })
        };
        WsBackend {
            name: name.to_string(),
            addr,
            state,
            task,
        }
    }

    pub fn handshakes(&self) -> Vec<WsHandshake> {
        self.state.lock().expect("ws record").handshakes.clone()
    }

    /// The latest handshake; fails the test if there was none.
    pub fn last_handshake(&self) -> WsHandshake {
        self.handshakes()
            .pop()
            .unwrap_or_else(|| panic!("WebSocket backend {} saw no handshake", self.name))
    }

    /// Close codes received from the gateway, in order.
    pub fn close_codes(&self) -> Vec<Option<u16>> {
        self.state.lock().expect("ws record").closes.clone()
    }

    pub fn sessions_ended(&self) -> usize {
        self.state.lock().expect("ws record").ended
    }

    pub fn probe_hits(&self) -> usize {
        self.state.lock().expect("ws record").probes
    }

    /// Changes how probes are answered from now on (`Refusing` is not supported here).
    pub fn set_probe_answer(&self, answer: ProbeAnswer) {
        assert_ne!(answer, ProbeAnswer::Refusing, "WsBackend cannot refuse");
        self.state.lock().expect("ws record").probe_answer = Some(answer);
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    mut stream: TcpStream,
    name: String,
    refuse: Option<StatusCode>,
    state: Arc<Mutex<WsState>>,
) {
    let mut head = Vec::new();
    let Some(end) = read_head(&mut stream, &mut head, 64 * 1024).await else {
        return;
    };
    let upgrade = String::from_utf8_lossy(&head[..end])
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("upgrade:"));
    if !upgrade {
        // A plain request: the gateway's health probe.
        let answer = {
            let mut s = state.lock().expect("ws record");
            s.probes += 1;
            s.probe_answer.clone().unwrap_or(ProbeAnswer::Healthy)
        };
        let (status, body) = answer.respond().await;
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        return;
    }
    let stream = Prefixed {
        head,
        pos: 0,
        inner: stream,
    };
    let record = state.clone();
    // The callback's shape is tungstenite's; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        record
            .lock()
            .expect("ws record")
            .handshakes
            .push(WsHandshake {
                uri: req.uri().to_string(),
                headers: req.headers().clone(),
            });
        if let Some(status) = refuse {
            let mut err = ErrorResponse::new(Some("upgrade refused by the backend".into()));
            *err.status_mut() = status;
            return Err(err);
        }
        let offered = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|p| p.trim().to_string());
        if let Some(p) = offered
            && let Ok(value) = HeaderValue::from_str(&p)
        {
            resp.headers_mut().insert("sec-websocket-protocol", value);
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    // Ends when the peer closes or the connection fails; the backend's drop aborts the rest.
    while let Some(msg) = ws.next().await {
        let reply = match msg {
            Ok(Message::Text(t)) => {
                if let Some(code) = t.as_str().strip_prefix("close:") {
                    let code: u16 = code.trim().parse().unwrap_or(1000);
                    Some(Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: "backend closing".into(),
                    })))
                } else if t.as_str() == "whoami" {
                    Some(Message::text(name.clone()))
                } else {
                    Some(Message::Text(t))
                }
            }
            Ok(Message::Binary(b)) => Some(Message::Binary(b)),
            Ok(Message::Close(frame)) => {
                state
                    .lock()
                    .expect("ws record")
                    .closes
                    .push(frame.map(|f| u16::from(f.code)));
                // tungstenite answers the close with the same code on the next poll.
                None
            }
            Ok(_) => None,
            Err(_) => break,
        };
        if let Some(reply) = reply
            && ws.send(reply).await.is_err()
        {
            break;
        }
    }
    state.lock().expect("ws record").ended += 1;
}

/// A stream that first yields bytes already read from it.
struct Prefixed {
    head: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.head[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Opens a WebSocket session to the gateway at `addr` with `Host: host`, requesting `path`,
/// with extra handshake headers. `Err` carries tungstenite's error, e.g. `Error::Http` with the
/// response when the upgrade was refused.
pub async fn ws_connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(WsClient, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut req = format!("ws://{host}{path}")
        .into_client_request()
        .expect("WebSocket request");
    for (name, value) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let stream = within("connect to the gateway", TcpStream::connect(addr))
        .await
        .map_err(tungstenite::Error::Io)?;
    within(
        "WebSocket handshake through the gateway",
        tokio_tungstenite::client_async(req, stream),
    )
    .await
}

/// [`ws_connect`] that fails the test unless the upgrade succeeds.
pub async fn ws_open(addr: SocketAddr, host: &str, path: &str) -> WsClient {
    match ws_connect(addr, host, path, &[]).await {
        Ok((ws, _)) => ws,
        Err(e) => panic!("WebSocket upgrade through the gateway failed: {e}"),
    }
}

/// The next message, bounded by [`WAIT`]; fails the test if the session ends first.
pub async fn recv(ws: &mut WsClient, what: &str) -> Message {
    match within(what, ws.next()).await {
        Some(Ok(m)) => m,
        Some(Err(e)) => panic!("{what}: session failed: {e}"),
        None => panic!("{what}: session ended"),
    }
}

/// Sends `msg` and returns the next data message (pings/pongs skipped), bounded.
pub async fn round_trip(ws: &mut WsClient, msg: Message, what: &str) -> Message {
    within(what, ws.send(msg))
        .await
        .unwrap_or_else(|e| panic!("{what}: send failed: {e}"));
    // Bounded: at most 100 control frames before the reply.
    for _ in 0..100 {
        match recv(ws, what).await {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
    panic!("{what}: only control frames arrived")
}

/// How a session ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A Close frame with this code (`None`: no code).
    Close(Option<u16>),
    /// The stream ended or failed without a Close frame (e.g. 1006 abnormal closure).
    Abrupt(String),
}

/// Reads until the session ends (skipping data and control frames), within `limit`; returns how
/// it ended and when, measured from the call. `None` if still open at `limit`.
pub async fn wait_end(ws: &mut WsClient, limit: Duration) -> Option<(Ending, Duration)> {
    let start = Instant::now();
    let read = async {
        // Bounded by `limit` below; each message is at least one frame.
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return Ending::Close(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Ending::Abrupt(e.to_string()),
                None => return Ending::Abrupt("stream ended".into()),
            }
        }
    };
    let ended = tokio::time::timeout(limit, read)
        .await
        .ok()
        .map(|e| (e, start.elapsed()));
    if matches!(ended, Some((Ending::Close(_), _))) {
        finish_close(ws).await;
    }
    ended
}

/// After a Close frame arrived: keeps polling so that tungstenite sends its Close reply and
/// sees the connection end, as a real client would (bounded by [`WAIT`]).
pub async fn finish_close(ws: &mut WsClient) {
    let drain = async {
        // Bounded by the timeout below.
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(WAIT, drain).await;
}

/// Sends a Close frame with `code`, then waits for the session to end; returns the code of the
/// Close frame that came back.
pub async fn close_with(ws: &mut WsClient, code: u16) -> Ending {
    within(
        "send Close",
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "client done".into(),
        }))),
    )
    .await
    .expect("send Close");
    match wait_end(ws, WAIT).await {
        Some((ending, _)) => ending,
        None => panic!("no Close answer within {WAIT:?} after closing with {code}"),
    }
}
