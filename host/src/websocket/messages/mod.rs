//! The message relay: WebSocket sessions on a route with a message filter
//! (`message_filter = "name"`).
//!
//! Where the byte relay ([`super::relay`]) only follows frame boundaries, this one reads whole
//! frames, reassembles each data message from its fragments (up to the filter's
//! `max_message_bytes`; a larger one closes the session with 1009, RFC 6455 §7.4.1), checks a
//! text message's UTF-8 as its fragments arrive (1007, §8.1), asks the filter what becomes of it
//! (`on-message`, with the session's state), and writes what the filter decided as whole frames,
//! masked towards the backend (where the gateway is the client, §5.1, §5.3) and unmasked
//! towards the client.
//!
//! Control frames keep the host's handling: pings, pongs and Close frames pass to the other
//! side as they arrive (between messages, so never inside the message being reassembled, §5.4),
//! and the closing handshake completes between the peers themselves; a Close the gateway starts
//! (the filter's `close`, an oversized message, a protocol error, a failed call under
//! `fail_closed`, a timeout, shutdown) goes to both peers, whose replies are awaited for
//! `close_grace`.
//!
//! No extension is negotiated on a filtered session (the proxy strips the client's offer), so
//! frames with RSV bits set are a protocol error (1002).
//!
//! Hibernation: an idle session holds no plugin instance and no buffer, only its state bytes.
//! Reads borrow a pooled chunk for their duration; the unparsed bytes, the message being
//! reassembled and the bytes waiting to be written are held only while they exist.
//!
//! One task runs both directions. While the filter decides on a message, the session reads
//! nothing more (a slow filter slows its own session only), and a peer that does not read
//! stops the reading of what would be written to it (backpressure past [`HIGH_WATER`] bytes).

mod codec;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::relay::chunk::Chunk;
use super::relay::{RelayConfig, RelayEnd, RelayOutcome, Side, TimeoutMode};
use crate::config::FailPolicy;
use crate::metrics::filters::{FilterMetrics, MessageOutcome};
use crate::plugin::{
    Action, FilterClosedBy, Message, Opcode, PluginError, PluginSlot, SessionClose,
};
use codec::{BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, Utf8Check};

pub use codec::{Header, parse_header};

/// Bytes waiting to be written to a peer past which the session stops reading what would add
/// to them.
pub const HIGH_WATER: usize = 256 * 1024;

/// Reads one session may do in a single poll before yielding to other tasks.
const READS_PER_POLL: u32 = 16;

/// A filtered session's filter: where its versions are found, its counters, and the session's
/// state (the only thing an idle session keeps for it).
pub struct FilterBinding {
    pub slot: Arc<PluginSlot>,
    pub metrics: Arc<FilterMetrics>,
    /// What `on-open` returned; replaced by each decision that returns a new state.
    pub state: Vec<u8>,
    /// The largest message reassembled (the filter's `max_message_bytes` when it opened).
    pub max_message_bytes: usize,
}

/// A number for each filtered session of the process (`session-open.session`).
pub fn next_session_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// The clock `message.at-ms` reads: milliseconds since the first filtered session.
fn now_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Relays a filtered session until it ends, then tells the filter (`on-close`). `read_ahead`:
/// bytes each peer sent with the upgrade, before the relay took over its stream.
pub fn relay_messages<C, B, S>(
    client: C,
    backend: B,
    cfg: RelayConfig,
    shutdown: S,
    filter: FilterBinding,
    read_ahead: (&[u8], &[u8]),
) -> impl Future<Output = RelayOutcome> + use<C, B, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    let start = Instant::now();
    let mut session = Session {
        client: Peer::new(client, Side::Client),
        backend: Peer::new(backend, Side::Backend),
        filter,
        filtered: true,
        closing: None,
        first_close: None,
        close_reason: String::new(),
        by_filter: false,
        finishing: None,
        last_read: start,
        cfg,
        arm_grace: false,
        in_grace: false,
        turn: false,
    };
    session.client.inbuf.extend_from_slice(read_ahead.0);
    session.backend.inbuf.extend_from_slice(read_ahead.1);
    async move {
        // One timer: the session's timeout, then, once the session is ending, the grace period
        // of its closing handshake.
        let timer = tokio::time::sleep_until(later(start, cfg.timeout));
        tokio::pin!(timer, shutdown);
        loop {
            let event = std::future::poll_fn(|cx| {
                session.poll_event(cx, shutdown.as_mut(), timer.as_mut())
            })
            .await;
            match event {
                // Boxed: the call's future is large, and an idle session's task would otherwise
                // keep room for it.
                Event::Message(from, opcode, payload) => {
                    Box::pin(session.on_message(from, opcode, payload)).await
                }
                Event::End(end) => {
                    Box::pin(session.tell_filter(end)).await;
                    return session.outcome(end);
                }
            }
        }
    }
}

/// What the session's poll found.
enum Event {
    /// A whole data message from a peer, for the filter.
    Message(Side, Opcode, Vec<u8>),
    End(RelayEnd),
}

/// What reading a peer gave.
enum Step {
    Message(Opcode, Vec<u8>),
    /// The peer broke the protocol, or sent a message over the limit: close with this code.
    Fail(u16, &'static str),
    /// The peer sent a Close frame (its code and reason).
    Close(Option<u16>, String),
    Eof,
    Failed(io::ErrorKind),
    Pending,
}

struct Session<C, B> {
    client: Peer<C>,
    backend: Peer<B>,
    filter: FilterBinding,
    /// False once a failed call under `fail_open` left the session unfiltered.
    filtered: bool,
    /// The gateway started closing the session, and how it is reported.
    closing: Option<RelayEnd>,
    /// The first Close frame a peer sent.
    first_close: Option<RelayEnd>,
    /// The reason of the Close the session ended with, for `on-close`.
    close_reason: String,
    /// The gateway's Close was the filter's own.
    by_filter: bool,
    /// A peer went away without a Close: what is pending is written, then the session ends.
    finishing: Option<RelayEnd>,
    last_read: Instant,
    cfg: RelayConfig,
    /// The grace period for the closing handshake starts at the next poll.
    arm_grace: bool,
    /// The timer counts the grace period (no longer the session's timeout).
    in_grace: bool,
    /// Which peer is read first in this poll (alternating, so neither starves the other).
    turn: bool,
}

struct Peer<S> {
    io: S,
    side: Side,
    /// Bytes read and not yet parsed (a partial frame).
    inbuf: Vec<u8>,
    /// Frames to write, `out[out_pos..]` not yet written.
    out: Vec<u8>,
    out_pos: usize,
    unflushed: bool,
    /// The data message being reassembled.
    message: Option<Assembly>,
    eof: bool,
    /// Reading or writing failed: never used again.
    failed: bool,
    close_received: bool,
    close_sent: bool,
    shut: bool,
    /// This peer broke the protocol (or sent a message over the limit): the Close payload it
    /// gets once the other peer has answered the Close sent to it in turn.
    failed_with: Option<Vec<u8>>,
    /// How far the text frame arriving now was checked for UTF-8 before it is whole.
    precheck: Precheck,
    messages: u64,
    /// Bytes written to this peer.
    written: u64,
}

/// UTF-8 checked in a text frame still arriving, so that an invalid sequence fails the session
/// as soon as it is read, not when the frame ends (RFC 6455 §8.1, Autobahn 6.4.3–6.4.4).
#[derive(Default)]
struct Precheck {
    /// Payload bytes of the frame in progress already checked.
    checked: usize,
    /// A character cut at `checked`: its first bytes.
    carry: [u8; 4],
    carry_len: usize,
}

struct Assembly {
    opcode: Opcode,
    payload: Vec<u8>,
    utf8: Utf8Check,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    fn new(io: S, side: Side) -> Self {
        Peer {
            io,
            side,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            unflushed: false,
            message: None,
            eof: false,
            failed: false,
            close_received: false,
            close_sent: false,
            shut: false,
            failed_with: None,
            precheck: Precheck::default(),
            messages: 0,
            written: 0,
        }
    }

    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Queues a data message to this peer (nothing once it was sent a Close or failed).
    fn send(&mut self, opcode: Opcode, payload: &[u8]) -> bool {
        if self.close_sent || self.failed {
            return false;
        }
        let op = match opcode {
            Opcode::Text => TEXT,
            Opcode::Binary => BINARY,
        };
        codec::write_frame(&mut self.out, op, payload, self.side == Side::Backend);
        true
    }

    fn send_control(&mut self, opcode: u8, payload: &[u8]) {
        if self.close_sent || self.failed {
            return;
        }
        codec::write_frame(&mut self.out, opcode, payload, self.side == Side::Backend);
        if opcode == CLOSE {
            self.close_sent = true;
        }
    }

    /// Writes what is queued, then flushes. `Err` when writing failed.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::ErrorKind>> {
        if self.failed {
            return Poll::Ready(Ok(()));
        }
        while self.out_pos < self.out.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero)),
                Poll::Ready(Ok(n)) => {
                    self.out_pos += n;
                    self.written += n as u64;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.kind())),
            }
        }
        // Written out: an idle session keeps no buffer.
        self.out = Vec::new();
        self.out_pos = 0;
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.kind())),
                Poll::Ready(Ok(())) => self.unflushed = false,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Shuts the write half down once (errors only mean the peer is gone already).
    fn poll_shut(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.failed || self.shut {
            return Poll::Ready(());
        }
        if Pin::new(&mut self.io).poll_shutdown(cx).is_pending() {
            return Poll::Pending;
        }
        self.shut = true;
        Poll::Ready(())
    }

    /// Nothing more is owed to this peer or expected from it.
    fn settled(&self) -> bool {
        self.failed
            || (self.pending_out() == 0
                && !self.unflushed
                && self.close_sent
                && (self.close_received || self.eof))
    }
}

/// Reads frames from `from` until a data message is whole, a Close or an error arrives, or
/// nothing more can be read now. Pings and pongs go on to `to` as they arrive. `closing`: the
/// gateway is closing the session, data is read only to be dropped.
fn step<R, W>(
    cx: &mut Context<'_>,
    from: &mut Peer<R>,
    to: &mut Peer<W>,
    max_message: usize,
    closing: bool,
    last_read: &mut Instant,
) -> Step
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncRead + AsyncWrite + Unpin,
{
    let mut reads = 0;
    loop {
        match parse(from, to, max_message, closing) {
            Step::Pending => {}
            other => return other,
        }
        if from.eof || from.failed || from.close_received {
            return Step::Pending;
        }
        // Backpressure: a peer that does not read stops what would be written to it.
        if !closing && (to.pending_out() >= HIGH_WATER || from.pending_out() >= HIGH_WATER) {
            return Step::Pending;
        }
        if reads == READS_PER_POLL {
            cx.waker().wake_by_ref();
            return Step::Pending;
        }
        reads += 1;
        let mut chunk = Chunk::take();
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut from.io).poll_read(cx, &mut buf) {
            // Idle: the chunk goes back to the pool.
            Poll::Pending => return Step::Pending,
            Poll::Ready(Err(e)) => {
                from.failed = true;
                return Step::Failed(e.kind());
            }
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                from.eof = true;
                return Step::Eof;
            }
            Poll::Ready(Ok(())) => {
                from.inbuf.extend_from_slice(buf.filled());
                *last_read = Instant::now();
            }
        }
    }
}

/// Takes the complete frames at the start of `from.inbuf`.
fn parse<R, W>(from: &mut Peer<R>, to: &mut Peer<W>, max_message: usize, closing: bool) -> Step
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncRead + AsyncWrite + Unpin,
{
    if from.close_received {
        // Nothing a peer sends after its Close (or after failing the protocol) counts.
        from.inbuf = Vec::new();
        return Step::Pending;
    }
    let mut at = 0;
    let step = loop {
        let Some(h) = parse_header(&from.inbuf[at..]) else {
            break Step::Pending;
        };
        if let Some(fail) = check_header(&h, from, max_message) {
            // The connection is failed (RFC 6455 §7.1.7): nothing more is read from this peer.
            from.inbuf = Vec::new();
            from.close_received = true;
            from.message = None;
            return fail;
        }
        let frame_len = h.frame_len() as usize;
        if from.inbuf.len() - at < frame_len {
            let text = match h.opcode {
                TEXT => true,
                CONTINUATION => from
                    .message
                    .as_ref()
                    .is_some_and(|m| m.opcode == Opcode::Text),
                _ => false,
            };
            if text && !closing && precheck_text(from, at, &h).is_err() {
                from.close_received = true;
                from.message = None;
                from.inbuf = Vec::new();
                return Step::Fail(1007, "invalid UTF-8 in a text message");
            }
            break Step::Pending;
        }
        from.precheck = Precheck::default();
        let payload_at = at + h.header_len;
        at += frame_len;
        let payload = &mut from.inbuf[payload_at..at];
        if h.masked {
            codec::apply_mask(payload, h.mask, 0);
        }
        match h.opcode {
            PING | PONG => {
                if !closing {
                    to.send_control(h.opcode, payload);
                }
            }
            CLOSE => {
                from.close_received = true;
                from.message = None;
                let code = codec::close_code(payload);
                let reason = payload
                    .get(2..)
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .unwrap_or_default();
                if !closing {
                    // The peers complete their closing handshake themselves; a peer that broke
                    // the protocol gets the gateway's Close instead of this one.
                    match to.failed_with.take() {
                        Some(fail) => to.send_control(CLOSE, &fail),
                        None => to.send_control(CLOSE, payload),
                    }
                }
                break Step::Close(code, reason);
            }
            _ if closing || from.close_received => {}
            opcode => {
                let assembly = from.message.get_or_insert_with(|| Assembly {
                    opcode: if opcode == TEXT {
                        Opcode::Text
                    } else {
                        Opcode::Binary
                    },
                    payload: Vec::new(),
                    utf8: Utf8Check::default(),
                });
                assembly.payload.extend_from_slice(payload);
                if assembly.opcode == Opcode::Text && assembly.utf8.feed(&assembly.payload).is_err()
                {
                    from.close_received = true;
                    from.message = None;
                    break Step::Fail(1007, "invalid UTF-8 in a text message");
                }
                if h.fin {
                    let Assembly {
                        opcode,
                        payload,
                        utf8,
                    } = from.message.take().expect("just set");
                    if opcode == Opcode::Text && !utf8.complete(&payload) {
                        from.close_received = true;
                        break Step::Fail(1007, "invalid UTF-8 in a text message");
                    }
                    from.messages += 1;
                    break Step::Message(opcode, payload);
                }
            }
        }
    };
    if at > 0 {
        if at == from.inbuf.len() {
            // All parsed: an idle session keeps no buffer.
            from.inbuf = Vec::new();
        } else {
            from.inbuf.drain(..at);
        }
    }
    step
}

/// [`Session::fail_peer`] for one pair: the other peer is sent the Close now, the offender once
/// the other has answered (at once if the other will not answer).
fn fail_one<X, Y>(offender: &mut Peer<X>, other: &mut Peer<Y>, payload: Vec<u8>)
where
    X: AsyncRead + AsyncWrite + Unpin,
    Y: AsyncRead + AsyncWrite + Unpin,
{
    other.send_control(CLOSE, &payload);
    if other.close_received || other.eof || other.failed {
        offender.send_control(CLOSE, &payload);
    } else {
        offender.failed_with = Some(payload);
    }
}

/// Checks the UTF-8 of the part of an incomplete text frame read since the last look.
fn precheck_text<R>(from: &mut Peer<R>, at: usize, h: &Header) -> Result<(), ()> {
    let start = at + h.header_len;
    let available = from.inbuf.len().saturating_sub(start);
    let p = &mut from.precheck;
    if available <= p.checked {
        return Ok(());
    }
    let mut fresh = Vec::with_capacity(4 + available - p.checked);
    if p.checked == 0 {
        // The message's earlier frames may end inside a character: its first bytes lead.
        if let Some(m) = &from.message {
            fresh.extend_from_slice(m.utf8.pending(&m.payload));
        }
    } else {
        fresh.extend_from_slice(&p.carry[..p.carry_len]);
    }
    let new_at = fresh.len();
    fresh.extend_from_slice(&from.inbuf[start + p.checked..start + available]);
    if h.masked {
        codec::apply_mask(&mut fresh[new_at..], h.mask, p.checked);
    }
    match std::str::from_utf8(&fresh) {
        Ok(_) => p.carry_len = 0,
        Err(e) if e.error_len().is_none() => {
            let rest = &fresh[e.valid_up_to()..];
            p.carry[..rest.len()].copy_from_slice(rest);
            p.carry_len = rest.len();
        }
        Err(_) => return Err(()),
    }
    p.checked = available;
    Ok(())
}

/// RFC 6455 §5.2–5.5 as they apply to a frame from `from`, and the message limit.
fn check_header<R>(h: &Header, from: &Peer<R>, max_message: usize) -> Option<Step> {
    if h.rsv != 0 {
        return Some(Step::Fail(1002, "reserved bits set without an extension"));
    }
    // §5.1: a client masks every frame, a server none.
    if h.masked != (from.side == Side::Client) {
        return Some(Step::Fail(1002, "frame masking is wrong for its direction"));
    }
    match h.opcode {
        PING | PONG | CLOSE => {
            if !h.fin || h.payload_len > 125 {
                return Some(Step::Fail(
                    1002,
                    "a control frame fragmented or over 125 bytes",
                ));
            }
            if h.opcode == CLOSE && h.payload_len == 1 {
                return Some(Step::Fail(1002, "a Close frame with a one-byte payload"));
            }
        }
        TEXT | BINARY if from.message.is_some() => {
            return Some(Step::Fail(1002, "a new message inside a fragmented one"));
        }
        CONTINUATION if from.message.is_none() => {
            return Some(Step::Fail(
                1002,
                "a continuation frame with no message to continue",
            ));
        }
        TEXT | BINARY | CONTINUATION => {
            let so_far = from.message.as_ref().map_or(0, |m| m.payload.len()) as u64;
            if so_far.saturating_add(h.payload_len) > max_message as u64 {
                return Some(Step::Fail(1009, "message too big"));
            }
        }
        _ => return Some(Step::Fail(1002, "an unknown opcode")),
    }
    None
}

impl<C, B> Session<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_event<S: Future<Output = ()>>(
        &mut self,
        cx: &mut Context<'_>,
        mut shutdown: Pin<&mut S>,
        mut timer: Pin<&mut Sleep>,
    ) -> Poll<Event> {
        loop {
            if std::mem::take(&mut self.arm_grace) {
                self.in_grace = true;
                timer
                    .as_mut()
                    .reset(later(Instant::now(), self.cfg.close_grace));
            }
            // What is owed to each peer goes out first.
            for side in [Side::Client, Side::Backend] {
                let written = match side {
                    Side::Client => self.client.poll_write_out(cx),
                    Side::Backend => self.backend.poll_write_out(cx),
                };
                if let Poll::Ready(Err(kind)) = written {
                    match side {
                        Side::Client => self.client.failed = true,
                        Side::Backend => self.backend.failed = true,
                    }
                    if self.closing.is_none() && self.first_close.is_none() {
                        return Poll::Ready(Event::End(RelayEnd::Error { side, kind }));
                    }
                }
            }
            if let Some(end) = self.finishing {
                let flushed = |p_out: usize, failed: bool| failed || p_out == 0;
                if (flushed(self.client.pending_out(), self.client.failed)
                    && flushed(self.backend.pending_out(), self.backend.failed))
                    || (self.in_grace && timer.as_mut().poll(cx).is_ready())
                {
                    if self.client.poll_shut(cx).is_pending()
                        || self.backend.poll_shut(cx).is_pending()
                    {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Event::End(end));
                }
                return Poll::Pending;
            }
            let ending = self.closing.or(self.first_close);
            if let Some(end) = ending {
                if self.client.settled() && self.backend.settled() {
                    if self.client.poll_shut(cx).is_pending()
                        || self.backend.poll_shut(cx).is_pending()
                    {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Event::End(end));
                }
                if self.in_grace && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::End(end));
                }
            } else {
                if shutdown.as_mut().poll(cx).is_ready() {
                    self.close_with(1001, "", RelayEnd::Shutdown);
                    continue;
                }
                if timer.as_mut().poll(cx).is_ready() {
                    let idle_until = later(self.last_read, self.cfg.timeout);
                    if self.cfg.mode == TimeoutMode::Idle && idle_until > Instant::now() {
                        timer.as_mut().reset(idle_until);
                        continue;
                    }
                    self.close_with(1001, "", RelayEnd::Timeout);
                    continue;
                }
            }
            let closing = self.closing.is_some();
            let max = self.filter.max_message_bytes;
            self.turn = !self.turn;
            let order = if self.turn {
                [Side::Client, Side::Backend]
            } else {
                [Side::Backend, Side::Client]
            };
            let queued = self.client.pending_out() + self.backend.pending_out();
            let mut acted = false;
            for side in order {
                let step = match side {
                    Side::Client => step(
                        cx,
                        &mut self.client,
                        &mut self.backend,
                        max,
                        closing,
                        &mut self.last_read,
                    ),
                    Side::Backend => step(
                        cx,
                        &mut self.backend,
                        &mut self.client,
                        max,
                        closing,
                        &mut self.last_read,
                    ),
                };
                match step {
                    Step::Pending => {}
                    Step::Message(opcode, payload) => {
                        return Poll::Ready(Event::Message(side, opcode, payload));
                    }
                    Step::Fail(code, reason) => {
                        self.fail_peer(side, code, reason);
                        acted = true;
                        break;
                    }
                    Step::Close(code, reason) => {
                        if self.first_close.is_none() && self.closing.is_none() {
                            self.first_close = Some(match side {
                                Side::Client => RelayEnd::ClientClosed { code },
                                Side::Backend => RelayEnd::BackendClosed { code },
                            });
                            self.close_reason = reason;
                            self.arm_grace = true;
                        }
                        acted = true;
                        break;
                    }
                    Step::Eof | Step::Failed(_) if ending.is_some() => {
                        acted = true;
                        break;
                    }
                    Step::Eof => {
                        self.finishing = Some(match side {
                            Side::Client => RelayEnd::ClientClosed { code: None },
                            Side::Backend => RelayEnd::BackendClosed { code: None },
                        });
                        self.arm_grace = true;
                        acted = true;
                        break;
                    }
                    Step::Failed(kind) => {
                        return Poll::Ready(Event::End(RelayEnd::Error { side, kind }));
                    }
                }
            }
            // Control frames passed on while reading are written before the task sleeps.
            if !acted && self.client.pending_out() + self.backend.pending_out() == queued {
                return Poll::Pending;
            }
        }
    }

    /// Starts the gateway's closing handshake: a Close with `code` and `reason` to each peer
    /// not already sent one; data from now on is dropped, and the peers' replies are awaited
    /// for `close_grace` (from the next poll).
    fn close_with(&mut self, code: u16, reason: &str, end: RelayEnd) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(end);
        self.close_reason = reason.to_owned();
        let payload = [&code.to_be_bytes()[..], reason.as_bytes()].concat();
        self.client.send_control(CLOSE, &payload);
        self.backend.send_control(CLOSE, &payload);
        self.arm_grace = true;
    }

    /// `side` broke the protocol or sent a message over the limit (RFC 6455 §7.1.7: fail the
    /// connection). The other peer is sent the Close first, so that what it already sent (the
    /// answers to the offender's earlier messages) still reaches the offender, as it would
    /// without the gateway; the offender gets the Close once the other peer has answered (or
    /// when the grace period ends).
    fn fail_peer(&mut self, side: Side, code: u16, reason: &str) {
        let payload = [&code.to_be_bytes()[..], reason.as_bytes()].concat();
        match side {
            Side::Client => fail_one(&mut self.client, &mut self.backend, payload),
            Side::Backend => fail_one(&mut self.backend, &mut self.client, payload),
        }
        if self.first_close.is_none() && self.closing.is_none() {
            self.first_close = Some(RelayEnd::GatewayClosed { code });
            self.close_reason = reason.to_owned();
            self.arm_grace = true;
        }
    }

    /// Asks the filter about a message from `from`, and carries out its decision.
    async fn on_message(&mut self, from: Side, opcode: Opcode, payload: Vec<u8>) {
        if !self.filtered {
            self.to(from.other()).send(opcode, &payload);
            return;
        }
        let version = self.filter.slot.active();
        let Some(version) = version else {
            let error = PluginError::NotLoaded {
                plugin: self.filter.slot.name().to_owned(),
            };
            return self.failed_call(from, opcode, payload, error);
        };
        let message = Message {
            direction: match from {
                Side::Client => crate::plugin::Direction::ToServer,
                Side::Backend => crate::plugin::Direction::ToClient,
            },
            opcode,
            payload,
            at_ms: now_ms(),
        };
        let started = std::time::Instant::now();
        let result = version
            .plugin
            .on_message(&message, &self.filter.state)
            .await;
        let took = started.elapsed();
        let payload = message.payload;
        let decision = match result {
            Ok(d) => d,
            Err(error) => return self.failed_call(from, opcode, payload, error),
        };
        let mut outcome = MessageOutcome::default();
        for action in decision.actions {
            match action {
                Action::Forward => {
                    outcome.forwarded = true;
                    outcome.sent += u64::from(self.to(from.other()).send(opcode, &payload));
                }
                Action::Send(m) => {
                    outcome.replaced = true;
                    outcome.sent += u64::from(self.to(from.other()).send(m.opcode, &m.payload));
                }
                Action::Answer(m) => {
                    outcome.answered += u64::from(self.to(from).send(m.opcode, &m.payload));
                }
                Action::Close(c) => {
                    outcome.closed = true;
                    self.by_filter = true;
                    self.close_with(c.code, &c.reason, RelayEnd::GatewayClosed { code: c.code });
                    break;
                }
            }
        }
        if let Some(state) = decision.state {
            self.filter.state = state;
        }
        self.filter.metrics.message(outcome, took);
    }

    /// A call failed: `fail_open` relays this message and the rest of the session unfiltered,
    /// `fail_closed` closes the session with 1011 (RFC 6455 §7.4.1: an unexpected condition).
    fn failed_call(&mut self, from: Side, opcode: Opcode, payload: Vec<u8>, error: PluginError) {
        self.filter.metrics.failure();
        tracing::debug!(target: "wasmgate::plugin", error = %error, "message filter failed");
        match self.filter.slot.fail_policy() {
            FailPolicy::FailOpen => {
                self.filtered = false;
                self.to(from.other()).send(opcode, &payload);
            }
            FailPolicy::FailClosed => self.close_with(
                1011,
                "message filter failed",
                RelayEnd::GatewayClosed { code: 1011 },
            ),
        }
    }

    fn to(&mut self, side: Side) -> &mut dyn SendTo {
        match side {
            Side::Client => &mut self.client,
            Side::Backend => &mut self.backend,
        }
    }

    /// `on-close`, once the session is over (its failure changes nothing but the counters).
    async fn tell_filter(&mut self, end: RelayEnd) {
        if !self.filtered {
            return;
        }
        let Some(version) = self.filter.slot.active() else {
            return;
        };
        let (code, closed_by) = match end {
            RelayEnd::ClientClosed { code } => (code, FilterClosedBy::Client),
            RelayEnd::BackendClosed { code } => (code, FilterClosedBy::Server),
            RelayEnd::GatewayClosed { code } if self.by_filter => {
                (Some(code), FilterClosedBy::Filter)
            }
            RelayEnd::GatewayClosed { code } => (Some(code), FilterClosedBy::Gateway),
            RelayEnd::Timeout | RelayEnd::Shutdown => (Some(1001), FilterClosedBy::Gateway),
            RelayEnd::Error {
                side: Side::Client, ..
            } => (None, FilterClosedBy::Client),
            RelayEnd::Error {
                side: Side::Backend,
                ..
            } => (None, FilterClosedBy::Server),
        };
        let close = SessionClose {
            code,
            reason: std::mem::take(&mut self.close_reason),
            closed_by,
        };
        if version
            .plugin
            .on_close(&close, &self.filter.state)
            .await
            .is_err()
        {
            self.filter.metrics.failure();
        }
    }

    fn outcome(&self, end: RelayEnd) -> RelayOutcome {
        RelayOutcome {
            end,
            client_to_backend: self.backend.written,
            backend_to_client: self.client.written,
            messages_from_client: self.client.messages,
            messages_from_backend: self.backend.messages,
        }
    }
}

/// Queues a data message to a peer, whatever its stream type.
trait SendTo {
    fn send(&mut self, opcode: Opcode, payload: &[u8]) -> bool;
}

impl<S: AsyncRead + AsyncWrite + Unpin> SendTo for Peer<S> {
    fn send(&mut self, opcode: Opcode, payload: &[u8]) -> bool {
        Peer::send(self, opcode, payload)
    }
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Client => Side::Backend,
            Side::Backend => Side::Client,
        }
    }
}

/// Adds without panicking on absurd timeouts (`Duration::MAX` means "never").
fn later(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d.min(FAR)).unwrap_or(t)
}
