//! A raw HTTP/2 client for tests that must send what ordinary clients refuse to: frames written
//! by hand over a real TLS connection (ALPN `h2`), header blocks encoded with HPACK's literal
//! representation without indexing (RFC 7541 §6.2.2), so that any name or value, however
//! malformed, goes out byte for byte, in any order.
//!
//! It reads back only what the tests decide on: RST_STREAM and GOAWAY with their error codes, and
//! a response's `:status` when the server encodes it from HPACK's static table (200, 204, 206,
//! 304, 400, 404, 500: h2 does), which is all a refusal or a success needs.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::tls_connect;
use crate::within;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// RFC 9113 §7: PROTOCOL_ERROR.
pub const PROTOCOL_ERROR: u32 = 0x1;

/// How the server answered one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response head; its status when it is one of the static table's, else `None`.
    Response(Option<u16>),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code (a connection error, which ends the stream too).
    GoAway(u32),
    /// The connection closed with neither.
    Closed,
}

impl Outcome {
    /// A refusal of a malformed request (RFC 9113 §8.1.1): a stream or connection error of type
    /// PROTOCOL_ERROR, or a 400 answer.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Outcome::Reset(PROTOCOL_ERROR)
                | Outcome::GoAway(PROTOCOL_ERROR)
                | Outcome::Response(Some(400))
        )
    }
}

/// One HTTP/2 connection spoken frame by frame.
pub struct RawH2 {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

/// A header field as it goes on the wire, name and value byte for byte (CR, LF, NUL and
/// uppercase included).
pub type Field<'a> = (&'a str, &'a str);

impl RawH2 {
    /// Connects with TLS (SNI `sni`, ALPN `h2` only), sends the connection preface and an empty
    /// SETTINGS frame.
    pub async fn connect(addr: SocketAddr, sni: &str, config: Arc<ClientConfig>) -> RawH2 {
        let stream = tls_connect(addr, sni, config)
            .await
            .expect("TLS handshake with the gateway");
        assert_eq!(
            stream.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "the gateway agreed on h2"
        );
        let mut h2 = RawH2 {
            stream,
            buf: Vec::new(),
        };
        let mut hello = PREFACE.to_vec();
        frame(&mut hello, SETTINGS, 0, 0, &[]);
        h2.write(&hello).await;
        h2
    }

    async fn write(&mut self, bytes: &[u8]) {
        within("write to the gateway", self.stream.write_all(bytes))
            .await
            .expect("write to the gateway");
    }

    /// HEADERS (with END_HEADERS) on `stream`, `end_stream` as asked.
    pub async fn headers(&mut self, stream: u32, fields: &[Field<'_>], end_stream: bool) {
        let block = encode(fields);
        let mut out = Vec::new();
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame(&mut out, HEADERS, flags, stream, &block);
        self.write(&out).await;
    }

    /// A DATA frame on `stream`.
    pub async fn data(&mut self, stream: u32, payload: &[u8], end_stream: bool) {
        let mut out = Vec::new();
        frame(
            &mut out,
            DATA,
            if end_stream { END_STREAM } else { 0 },
            stream,
            payload,
        );
        self.write(&out).await;
    }

    /// Reads frames until `stream` gets a response head, is reset, or the connection ends;
    /// SETTINGS and PING are acknowledged on the way.
    pub async fn outcome(&mut self, stream: u32) -> Outcome {
        within("the gateway's answer on an HTTP/2 stream", async {
            loop {
                let Some((kind, flags, id, payload)) = self.read_frame().await else {
                    return Outcome::Closed;
                };
                match kind {
                    SETTINGS if flags & ACK == 0 => {
                        let mut ack = Vec::new();
                        frame(&mut ack, SETTINGS, ACK, 0, &[]);
                        self.write(&ack).await;
                    }
                    PING if flags & ACK == 0 => {
                        let mut pong = Vec::new();
                        frame(&mut pong, PING, ACK, 0, &payload);
                        self.write(&pong).await;
                    }
                    HEADERS if id == stream => return Outcome::Response(status(&payload, flags)),
                    RST_STREAM if id == stream => return Outcome::Reset(code(&payload, 0)),
                    GOAWAY => return Outcome::GoAway(code(&payload, 4)),
                    _ => {}
                }
            }
        })
        .await
    }

    async fn read_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let kind = self.buf[3];
                    let flags = self.buf[4];
                    let id = u32::from_be_bytes([
                        self.buf[5] & 0x7f,
                        self.buf[6],
                        self.buf[7],
                        self.buf[8],
                    ]);
                    let payload = self.buf[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    return Some((kind, flags, id, payload));
                }
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Appends one frame (RFC 9113 §4.1).
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A header block of literal fields without indexing, names and values as given, no Huffman
/// coding (RFC 7541 §6.2.2, §5.2).
pub fn encode(fields: &[Field<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        string(&mut out, name.as_bytes());
        string(&mut out, value.as_bytes());
    }
    out
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1: an integer with an `n`-bit prefix, `high` holding the bits above it.
fn integer(out: &mut Vec<u8>, high: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(high | v as u8);
        return;
    }
    out.push(high | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// The response's status when its first field is an indexed `:status` from the static table
/// (RFC 7541 Appendix A, indexes 8–14).
fn status(payload: &[u8], flags: u8) -> Option<u16> {
    // PADDED (0x8) and PRIORITY (0x20) move the header block.
    let mut block = payload;
    let mut pad = 0;
    if flags & 0x8 != 0 {
        pad = *block.first()? as usize;
        block = &block[1..];
    }
    if flags & 0x20 != 0 {
        block = block.get(5..)?;
    }
    let block = &block[..block.len().checked_sub(pad)?];
    // A dynamic table size update (001xxxxx) may come first.
    let first = block.iter().copied().find(|b| b & 0xe0 != 0x20)?;
    match first {
        0x88 => Some(200),
        0x89 => Some(204),
        0x8a => Some(206),
        0x8b => Some(304),
        0x8c => Some(400),
        0x8d => Some(404),
        0x8e => Some(500),
        _ => None,
    }
}

fn code(payload: &[u8], at: usize) -> u32 {
    payload
        .get(at..at + 4)
        .map_or(u32::MAX, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_rfc_7541_c_1() {
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        integer(&mut out, 0, 7, 127);
        assert_eq!(out, [127, 0]);
    }
}
