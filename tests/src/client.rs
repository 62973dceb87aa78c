//! Clients: a hyper HTTP/1.1 client (one fresh connection per request, so the test knows the
//! client's address) and raw TCP for requests no HTTP library would send.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::{content_length, read_head};
use crate::{WAIT, within};

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's end of the connection: what X-Forwarded-For must carry.
    pub local_addr: SocketAddr,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The `x-backend` header of an [`crate::HttpBackend`]'s answer: which backend served it.
    pub fn backend(&self) -> Option<&str> {
        self.header("x-backend")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `Set-Cookie` header whose cookie is named `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.header_all("set-cookie").into_iter().find(|c| {
            c.split_once('=')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
    }

    /// The value of the cookie `name` set by this response, if any.
    pub fn cookie_value(&self, name: &str) -> Option<String> {
        let c = self.set_cookie(name)?;
        let (_, rest) = c.split_once('=')?;
        Some(
            rest.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        )
    }
}

/// GET `path` with `Host: host` on a fresh connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    get_with(addr, host, path, &[]).await
}

/// GET `path` with `Host: host` and extra headers on a fresh connection.
pub async fn get_with(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path).header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(addr, req.body(String::new()).expect("request")).await
}

/// Sends `req` on a fresh connection and reads the whole response; fails the test on a
/// transport error or after [`WAIT`].
pub async fn send(addr: SocketAddr, req: Request<String>) -> Reply {
    let what = format!("{} {} via {addr}", req.method(), req.uri());
    match try_send(addr, req).await {
        Ok(reply) => reply,
        Err(e) => panic!("{what}: no HTTP response: {e}"),
    }
}

/// Like [`send`], but returns transport errors (refused, reset, closed early) instead of failing.
pub async fn try_send(addr: SocketAddr, req: Request<String>) -> Result<Reply, String> {
    try_send_for(WAIT, addr, req).await
}

/// [`try_send`] with its own bound.
pub async fn try_send_for(
    limit: Duration,
    addr: SocketAddr,
    req: Request<String>,
) -> Result<Reply, String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let local_addr = stream.local_addr().map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("response body: {e}"))?
            .to_bytes();
        conn.abort();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            local_addr,
        })
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no response within {limit:?}")),
    }
}

/// A response read off a raw TCP connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and headers as text.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects, writes `request` exactly as given, and reads one response. Write errors are
/// ignored (a gateway may answer and close before reading everything); `Err` means the
/// connection ended without a response.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Result<RawResponse, String> {
    let mut stream = within("connect to the gateway", TcpStream::connect(addr))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = within("write the raw request", stream.write_all(request)).await;
    read_response(&mut stream).await
}

/// Reads one response from `stream`, bounded by [`WAIT`].
pub async fn read_response(stream: &mut TcpStream) -> Result<RawResponse, String> {
    let read = async {
        let mut buf = Vec::new();
        let end = read_head(stream, &mut buf, 1024 * 1024)
            .await
            .ok_or_else(|| {
                format!(
                    "connection ended without a complete response head (got {:?})",
                    String::from_utf8_lossy(&buf)
                )
            })?;
        let head = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP response head: {head:?}"))?;
        let mut body = buf[end..].to_vec();
        let chunked = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                n.trim().eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
            })
        });
        if let Some(len) = content_length(&head) {
            while body.len() < len {
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            body.truncate(len);
        } else if chunked {
            while !body.ends_with(b"0\r\n\r\n") {
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            body = dechunk(&body);
        } else if !(status < 200 || status == 204 || status == 304) {
            loop {
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
        }
        Ok(RawResponse { status, head, body })
    };
    match tokio::time::timeout(WAIT, read).await {
        Ok(r) => r,
        Err(_) => Err(format!("no complete response within {WAIT:?}")),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // Bounded by the data: each round consumes at least one line.
    while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..i]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        data = &data[i + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Reads from `stream` until it is closed by the peer or `limit` passes; returns whether it was
/// closed (EOF or reset) and what arrived before.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(limit, read).await.is_ok();
    (closed, got)
}
