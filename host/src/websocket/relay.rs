//! Bidirectional WebSocket relay between a client and a backend connection.
//!
//! After the HTTP/1.1 101 handshake both connections carry raw RFC 6455
//! frames. The relay forwards bytes unchanged in both directions, in one task,
//! with each direction progressing on its own so that a stalled write in one
//! direction never blocks the other. It only follows frame boundaries
//! (see [`FrameTracker`]) so that, when the request timeout expires or the
//! gateway shuts down, it can end the session with a proper close handshake
//! (RFC 6455 §7.1.2) instead of cutting TCP in the middle of a frame.
//!
//! Idle sessions hold no read buffer: a 16 KiB chunk is borrowed from a
//! per-thread free list for the duration of a read and kept only while its
//! bytes wait to be written (the `chunk` module).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::frame::{CLOSE_GOING_AWAY, FrameTracker, close_frame_masked, close_frame_unmasked};

pub(super) mod chunk;

use chunk::{CHUNK_SIZE, Chunk};

/// How the backend settings' request timeout applies to a WebSocket session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutMode {
    /// The session ends `timeout` after it started, whatever the traffic.
    Session,
    /// The session ends after `timeout` without a byte in either direction.
    Idle,
}

/// Limits applied to one relayed session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// The backend settings' request timeout.
    pub timeout: Duration,
    /// Whether `timeout` bounds the whole session or only silence.
    pub mode: TimeoutMode,
    /// How long the close handshake may take once the gateway initiates it
    /// (first for the frame in flight to end, then for the peers' replies);
    /// after that TCP is cut. Also bounds how long connections may linger
    /// after the peers completed their own close handshake.
    pub close_grace: Duration,
}

/// One end of the relayed session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

/// Why a relayed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// The client ended the session: it sent the first Close frame, or, if
    /// no Close frame was seen, it closed its TCP stream first. `code` is the
    /// status code of the client's Close frame, if it had one.
    ClientClosed { code: Option<u16> },
    /// The backend ended the session (same rules as `ClientClosed`).
    BackendClosed { code: Option<u16> },
    /// The request timeout expired and the gateway closed the session.
    /// (If the peers had already exchanged Close frames, the session is
    /// reported as `ClientClosed`/`BackendClosed` instead.)
    Timeout,
    /// The shutdown signal fired and the gateway closed the session (same
    /// exception as `Timeout`).
    Shutdown,
    /// Reading from or writing to `side` failed (reset, broken pipe, ...)
    /// while relaying. Failures while the gateway is already closing the
    /// session only end that side early; the session still reports
    /// `Timeout` or `Shutdown`.
    Error { side: Side, kind: io::ErrorKind },
    /// The gateway closed the session with `code`: a message filter's decision or failure, a
    /// message over its limit, or a peer breaking the protocol (message relay only).
    GatewayClosed { code: u16 },
}

/// Result of [`relay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOutcome {
    pub end: RelayEnd,
    /// Bytes forwarded from the client to the backend (excluding Close frames
    /// injected by the gateway).
    pub client_to_backend: u64,
    /// Bytes forwarded from the backend to the client (excluding Close frames
    /// injected by the gateway).
    pub backend_to_client: u64,
    /// Messages (data frames with FIN set) sent by the client and by the backend.
    pub messages_from_client: u64,
    pub messages_from_backend: u64,
}

/// Relays a WebSocket session between `client` and `backend` until it ends.
///
/// Half-close propagates: EOF from one side shuts down the other side's
/// write half once everything read has been written; the session ends when
/// both directions are done. When `cfg.timeout` expires or `shutdown`
/// completes, the gateway waits for the frame in flight in each direction to
/// end, sends Close 1001 (Going Away) to each peer that has not already
/// received a Close, discards further data, and waits up to
/// `cfg.close_grace` for the peers' replies before closing both streams.
pub fn relay<C, B, S>(client: C, backend: B, cfg: RelayConfig, shutdown: S) -> Relay<C, B, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    let start = Instant::now();
    Relay {
        session: Session::new(client, backend, cfg, start),
        timer: tokio::time::sleep_until(later(start, cfg.timeout)),
        shutdown,
    }
}

pin_project! {
    /// The relay of one session, as returned by [`relay`]. A named future rather than an
    /// `async fn`: an idle session is mostly this state, and an `async fn` would store its
    /// arguments twice (as passed, and again as the locals they are moved into).
    pub struct Relay<C, B, S> {
        session: Session<C, B>,
        #[pin]
        timer: Sleep,
        #[pin]
        shutdown: S,
    }
}

impl<C, B, S> Relay<C, B, S> {
    /// Bytes that arrived with the upgrade, before the relay took over the streams (hyper's
    /// read-ahead): they are relayed first, in each direction, and followed like the rest.
    pub fn with_read_ahead(mut self, from_client: &[u8], from_backend: &[u8]) -> Self {
        self.session.c2b.preload(from_client);
        self.session.b2c.preload(from_backend);
        self
    }
}

impl<C, B, S> Future for Relay<C, B, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    type Output = RelayOutcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayOutcome> {
        let this = self.project();
        this.session.poll(cx, this.shutdown, this.timer)
    }
}

/// Reads one direction may do in a single poll before yielding, so that one
/// busy direction cannot starve the other, the timer or other tasks.
const READS_PER_POLL: u32 = 32;

/// An I/O failure and the side it happened on.
#[derive(Debug, Clone, Copy)]
struct Failure {
    side: Side,
    kind: io::ErrorKind,
}

impl Failure {
    fn new(side: Side, err: &io::Error) -> Self {
        Failure {
            side,
            kind: err.kind(),
        }
    }
}

fn poll_read_into<R: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    src: &mut R,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut rb = ReadBuf::new(buf);
    ready!(Pin::new(src).poll_read(cx, &mut rb))?;
    Poll::Ready(Ok(rb.filled().len()))
}

/// Adds without panicking on absurd timeouts (`Duration::MAX` means "never").
fn later(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d.min(FAR)).unwrap_or(t)
}

/// One direction of the session: bytes read from `from`, written to `to`.
struct Direction {
    from: Side,
    to: Side,
    /// Holds bytes read but not yet written (`pos..end`); `None` otherwise.
    chunk: Option<Chunk>,
    pos: usize,
    end: usize,
    tracker: FrameTracker,
    forwarded: u64,
    /// EOF read from `from`.
    read_eof: bool,
    /// Bytes written to `to` since its last flush.
    unflushed: bool,
    /// `poll_shutdown` has been called on `to`'s write half.
    shutdown_started: bool,
    /// `to`'s write half is shut down.
    write_shut: bool,
    /// Normal relaying is over: EOF propagated to `to`.
    done: bool,

    // Gateway-initiated close (RFC 6455 §7.1.2).
    /// Still forwarding the frame that was in flight when the close began.
    forwarding: bool,
    /// Close frame to write to `to` once the frame in flight has passed:
    /// `close[close_pos..close_len]` remains to be written.
    close: [u8; 8],
    close_pos: u8,
    close_len: u8,
    /// `to` has received a Close frame in this direction (or can no longer
    /// be written to), and everything for it is flushed.
    delivered: bool,
    /// Nothing more is expected from `from`.
    source_done: bool,
    /// `to` failed; never write to it again.
    to_dead: bool,
}

impl Direction {
    fn new(from: Side, to: Side) -> Self {
        Direction {
            from,
            to,
            chunk: None,
            pos: 0,
            end: 0,
            tracker: FrameTracker::new(),
            forwarded: 0,
            read_eof: false,
            unflushed: false,
            shutdown_started: false,
            write_shut: false,
            done: false,
            forwarding: false,
            close: [0; 8],
            close_pos: 0,
            close_len: 0,
            delivered: false,
            source_done: false,
            to_dead: false,
        }
    }

    /// Queues `bytes` (read before the relay started) to be written to `to` first.
    fn preload(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let chunk = if bytes.len() <= CHUNK_SIZE {
            let mut chunk = Chunk::take();
            chunk[..bytes.len()].copy_from_slice(bytes);
            chunk
        } else {
            Chunk::oversized(bytes)
        };
        self.tracker.advance(bytes);
        self.pos = 0;
        self.end = bytes.len();
        self.chunk = Some(chunk);
    }

    /// Writes the pending bytes of the current chunk to `dst`.
    fn poll_write_pending<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut W,
    ) -> Poll<Result<(), Failure>> {
        while self.pos < self.end {
            let Some(chunk) = &self.chunk else { break };
            match Pin::new(&mut *dst).poll_write(cx, &chunk[self.pos..self.end]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Failure {
                        side: self.to,
                        kind: io::ErrorKind::WriteZero,
                    }));
                }
                Poll::Ready(Ok(n)) => {
                    self.pos += n;
                    self.forwarded += n as u64;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::new(self.to, &e))),
            }
        }
        self.pos = 0;
        self.end = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut W,
    ) -> Poll<Result<(), Failure>> {
        if self.unflushed {
            ready!(Pin::new(&mut *dst).poll_flush(cx)).map_err(|e| Failure::new(self.to, &e))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Normal relaying: copies until EOF from `src` has been propagated to
    /// `dst` as a write shutdown (TCP half-close).
    fn poll_forward<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
        activity: &mut bool,
    ) -> Poll<Result<(), Failure>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        self.poll_relay::<false, R, W>(cx, src, dst, activity)
    }

    /// Gateway-initiated close: finishes the frame in flight, delivers the
    /// Close frame, and reads (discarding) from `src` until nothing more is
    /// expected from it. Ready once both are done.
    fn poll_closing<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
    ) -> Poll<Result<(), Failure>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        self.poll_relay::<true, R, W>(cx, src, dst, &mut false)
    }

    /// The read loop of both phases: writes what is owed to `dst` (`CLOSING`: the rest of the
    /// frame in flight, then the Close frame), then reads from `src` until it would block, at
    /// most [`READS_PER_POLL`] times. What a read means depends on the phase: bytes to forward
    /// ([`Self::forwarded_read`]) or, once closing, bytes to drop past the frame in flight
    /// ([`Self::closing_read`]). The phase is a constant, so each caller gets its own loop.
    #[inline(always)]
    fn poll_relay<const CLOSING: bool, R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
        activity: &mut bool,
    ) -> Poll<Result<(), Failure>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut reads = 0;
        loop {
            if CLOSING {
                if let Poll::Ready(Err(f)) = self.poll_deliver(cx, dst) {
                    return Poll::Ready(Err(f));
                }
                if self.source_done {
                    return if self.delivered {
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Pending
                    };
                }
                if self.forwarding && self.pos < self.end {
                    // The destination is slow; its waker is registered.
                    return Poll::Pending;
                }
            } else {
                ready!(self.poll_write_pending(cx, dst))?;
                if self.read_eof {
                    return self.poll_propagate_eof(cx, dst);
                }
            }
            if reads == READS_PER_POLL {
                if !CLOSING {
                    self.chunk = None;
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            // A chunk that still holds bytes to write (a slow destination while closing) must
            // not be read into: bytes past the frame in flight go to a chunk of their own.
            let mut chunk = if self.pos < self.end {
                Chunk::take()
            } else {
                self.chunk.take().unwrap_or_else(Chunk::take)
            };
            match poll_read_into(cx, src, &mut chunk) {
                Poll::Pending => {
                    // Idle: give the chunk back before sleeping.
                    drop(chunk);
                    // Nothing more to write for now: push out what
                    // buffering writers (TLS) may still hold.
                    if !CLOSING && let Poll::Ready(Err(f)) = self.poll_flush(cx, dst) {
                        return Poll::Ready(Err(f));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    if CLOSING {
                        self.abandon(self.from);
                    }
                    return Poll::Ready(Err(Failure::new(self.from, &e)));
                }
                Poll::Ready(Ok(n)) if CLOSING => self.closing_read(chunk, n),
                Poll::Ready(Ok(n)) => self.forwarded_read(chunk, n, activity),
            }
        }
    }

    /// EOF was read: once everything read is written, shuts down `dst`'s write half.
    fn poll_propagate_eof<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut W,
    ) -> Poll<Result<(), Failure>> {
        self.chunk = None;
        ready!(self.poll_flush(cx, dst))?;
        self.shutdown_started = true;
        ready!(Pin::new(&mut *dst).poll_shutdown(cx)).map_err(|e| Failure::new(self.to, &e))?;
        self.write_shut = true;
        self.done = true;
        Poll::Ready(Ok(()))
    }

    /// `n` bytes read into `chunk` while relaying normally: all of them are to be written.
    #[inline(always)]
    fn forwarded_read(&mut self, chunk: Chunk, n: usize, activity: &mut bool) {
        if n == 0 {
            self.read_eof = true;
            return;
        }
        self.tracker.advance(&chunk[..n]);
        self.pos = 0;
        self.end = n;
        self.chunk = Some(chunk);
        *activity = true;
    }

    /// `n` bytes read into `chunk` while closing: only the rest of the frame in flight is
    /// written; what follows is followed (to notice the peer's Close) and dropped.
    fn closing_read(&mut self, chunk: Chunk, n: usize) {
        if n == 0 {
            self.read_eof = true;
            self.source_done = true;
            if self.forwarding {
                // The frame in flight was cut short: `to` holds a
                // partial frame and cannot be sent a Close.
                self.stop_forwarding();
            }
            return;
        }
        let data = &chunk[..n];
        if self.forwarding {
            let keep = self.tracker.advance_to_boundary(data);
            if self.tracker.at_boundary() {
                self.stop_forwarding();
            }
            // Whatever follows the frame in flight is dropped, but
            // still followed to notice the peer's Close.
            self.tracker.advance(&data[keep..]);
            if keep > 0 {
                self.pos = 0;
                self.end = keep;
                self.chunk = Some(chunk);
            }
        } else {
            self.tracker.advance(data);
        }
        if self.from == Side::Client && self.tracker.close_seen() {
            self.source_done = true;
        }
    }

    /// Switches this direction to the gateway-initiated close.
    fn begin_close(&mut self) {
        if self.done {
            // EOF already propagated: `to` sees the end of the stream and
            // `from` has nothing more to say.
            self.source_done = true;
            self.delivered = true;
            return;
        }
        // A client that sent its Close is done sending (RFC 6455 §5.5.1). The
        // backend's TCP close is awaited instead, because the server closes
        // the connection first (§7.1.1); leaving that to the backend keeps
        // TIME_WAIT off the gateway's outgoing ports.
        self.source_done =
            self.read_eof || (self.from == Side::Client && self.tracker.close_seen());
        if self.source_done || self.tracker.at_boundary() {
            self.stop_forwarding();
        } else {
            self.forwarding = true;
        }
    }

    /// Stops forwarding data and decides whether `to` needs a Close frame.
    fn stop_forwarding(&mut self) {
        self.forwarding = false;
        // A Close may only be inserted between frames (§5.2); a peer that
        // already received a Close in this direction must not get a second
        // one (§5.5.1); a shut down or failed stream cannot take one.
        let inject = self.tracker.at_boundary()
            && !self.tracker.close_seen()
            && !self.shutdown_started
            && !self.to_dead;
        self.close_pos = 0;
        self.close_len = 0;
        if inject {
            // Towards the client the gateway is the server: unmasked. Towards
            // the backend it is the client: masked (§5.1).
            match self.to {
                Side::Client => {
                    self.close[..4].copy_from_slice(&close_frame_unmasked(CLOSE_GOING_AWAY));
                    self.close_len = 4;
                }
                Side::Backend => {
                    self.close = close_frame_masked(CLOSE_GOING_AWAY);
                    self.close_len = 8;
                }
            }
        }
    }

    /// Marks `side` as failed: nothing more is read from or written to it.
    fn abandon(&mut self, side: Side) {
        if self.from == side {
            self.source_done = true;
            if self.forwarding {
                self.stop_forwarding();
            }
        }
        if self.to == side {
            self.to_dead = true;
            self.forwarding = false;
            self.delivered = true;
            self.chunk = None;
            self.pos = 0;
            self.end = 0;
        }
    }

    /// Writes the rest of the frame in flight, then the Close frame.
    fn poll_deliver<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut W,
    ) -> Poll<Result<(), Failure>> {
        if self.delivered {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_write_pending(cx, dst))?;
        if self.forwarding {
            // The frame in flight has not ended yet; the read side of this
            // direction is what makes progress now.
            return Poll::Pending;
        }
        self.chunk = None;
        while self.close_pos < self.close_len {
            let frame = &self.close[usize::from(self.close_pos)..usize::from(self.close_len)];
            match ready!(Pin::new(&mut *dst).poll_write(cx, frame)) {
                Ok(0) => {
                    return Poll::Ready(Err(Failure {
                        side: self.to,
                        kind: io::ErrorKind::WriteZero,
                    }));
                }
                // At most 8 bytes.
                Ok(n) => self.close_pos += n as u8,
                Err(e) => return Poll::Ready(Err(Failure::new(self.to, &e))),
            }
            self.unflushed = true;
        }
        ready!(self.poll_flush(cx, dst))?;
        self.delivered = true;
        Poll::Ready(Ok(()))
    }
}

/// State of one relayed session.
struct Session<C, B> {
    client: C,
    backend: B,
    cfg: RelayConfig,
    start: Instant,
    /// Time of the last byte read in either direction (Idle mode).
    last_activity: Instant,
    c2b: Direction,
    b2c: Direction,
    /// Who sent the first Close frame, and who sent EOF first.
    first_close: Option<Side>,
    first_eof: Option<Side>,
    /// Both peers have sent a Close: the handshake is complete and the TCP
    /// connections must close by this time.
    linger_until: Option<Instant>,
    /// Set once the gateway starts ending the session (timeout, shutdown).
    closing: Option<Closing>,
    /// Writing to the backend failed while what it sent before closing may still be
    /// unread: reported once the client has been given it.
    deferred: Option<(Side, io::ErrorKind)>,
}

struct Closing {
    end: RelayEnd,
    /// The close grace was re-armed once both Close frames were delivered.
    grace_rearmed: bool,
    client_finished: bool,
    backend_finished: bool,
}

impl<C, B> Session<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    fn new(client: C, backend: B, cfg: RelayConfig, start: Instant) -> Self {
        Session {
            client,
            backend,
            cfg,
            start,
            last_activity: start,
            c2b: Direction::new(Side::Client, Side::Backend),
            b2c: Direction::new(Side::Backend, Side::Client),
            first_close: None,
            first_eof: None,
            linger_until: None,
            closing: None,
            deferred: None,
        }
    }

    fn outcome(&self, end: RelayEnd) -> RelayOutcome {
        RelayOutcome {
            end,
            client_to_backend: self.c2b.forwarded,
            backend_to_client: self.b2c.forwarded,
            messages_from_client: self.c2b.tracker.messages(),
            messages_from_backend: self.b2c.tracker.messages(),
        }
    }

    /// How a session ended by the peers themselves is reported.
    fn peer_end(&self) -> RelayEnd {
        match self.first_close.or(self.first_eof).unwrap_or(Side::Client) {
            Side::Client => RelayEnd::ClientClosed {
                code: self.c2b.tracker.close_code(),
            },
            Side::Backend => RelayEnd::BackendClosed {
                code: self.b2c.tracker.close_code(),
            },
        }
    }

    /// When the gateway must act next while relaying normally.
    fn next_deadline(&self) -> Instant {
        let since = match self.cfg.mode {
            TimeoutMode::Session => self.start,
            TimeoutMode::Idle => self.last_activity,
        };
        let due = later(since, self.cfg.timeout);
        match self.linger_until {
            Some(linger) => due.min(linger),
            None => due,
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
        mut timer: Pin<&mut Sleep>,
    ) -> Poll<RelayOutcome> {
        loop {
            if self.closing.is_some() {
                return self.poll_closing(cx, timer);
            }

            let mut activity = false;
            if !self.c2b.done {
                let r =
                    self.c2b
                        .poll_forward(cx, &mut self.client, &mut self.backend, &mut activity);
                if let Poll::Ready(Err(f)) = r {
                    if f.side == Side::Backend && !self.b2c.done {
                        // A backend that closed (or reset) after answering: its last bytes
                        // are still delivered to the client, as on a direct connection.
                        self.c2b.done = true;
                        self.deferred = Some((f.side, f.kind));
                    } else {
                        return Poll::Ready(self.outcome(RelayEnd::Error {
                            side: f.side,
                            kind: f.kind,
                        }));
                    }
                }
            }
            if !self.b2c.done {
                let r =
                    self.b2c
                        .poll_forward(cx, &mut self.backend, &mut self.client, &mut activity);
                if let Poll::Ready(Err(f)) = r {
                    return Poll::Ready(self.outcome(RelayEnd::Error {
                        side: f.side,
                        kind: f.kind,
                    }));
                }
            }
            if self.first_close.is_none() {
                if self.c2b.tracker.close_seen() {
                    self.first_close = Some(Side::Client);
                } else if self.b2c.tracker.close_seen() {
                    self.first_close = Some(Side::Backend);
                }
            }
            if self.first_eof.is_none() {
                if self.c2b.read_eof {
                    self.first_eof = Some(Side::Client);
                } else if self.b2c.read_eof {
                    self.first_eof = Some(Side::Backend);
                }
            }
            if self.c2b.done && self.b2c.done {
                let end = match self.deferred {
                    Some((side, kind)) => RelayEnd::Error { side, kind },
                    None => self.peer_end(),
                };
                return Poll::Ready(self.outcome(end));
            }

            if activity && self.cfg.mode == TimeoutMode::Idle {
                // Recorded only, once per wake-up rather than per chunk; the
                // timer is re-armed lazily when it fires.
                self.last_activity = Instant::now();
            }
            if self.linger_until.is_none()
                && self.c2b.tracker.close_seen()
                && self.b2c.tracker.close_seen()
            {
                // Close handshake complete (§7.1.2): the connections should
                // now close; don't let a peer keep them open indefinitely.
                let linger = later(Instant::now(), self.cfg.close_grace);
                self.linger_until = Some(linger);
                if linger < timer.deadline() {
                    timer.as_mut().reset(linger);
                }
            }

            if shutdown.as_mut().poll(cx).is_ready() {
                let end = if self.linger_until.is_some() {
                    self.peer_end()
                } else {
                    RelayEnd::Shutdown
                };
                self.begin_close(end, timer.as_mut());
                continue;
            }

            // Loop until the timer is armed (Pending) or fires for real.
            while timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                if self.linger_until.is_some_and(|t| t <= now) {
                    // Peers completed the handshake but did not close TCP.
                    return Poll::Ready(self.outcome(self.peer_end()));
                }
                let due = self.next_deadline();
                if due <= now {
                    let end = if self.linger_until.is_some() {
                        self.peer_end()
                    } else {
                        RelayEnd::Timeout
                    };
                    self.begin_close(end, timer.as_mut());
                    break;
                }
                timer.as_mut().reset(due);
            }
            if self.closing.is_none() {
                return Poll::Pending;
            }
        }
    }

    fn begin_close(&mut self, end: RelayEnd, timer: Pin<&mut Sleep>) {
        self.c2b.begin_close();
        self.b2c.begin_close();
        self.closing = Some(Closing {
            end,
            grace_rearmed: false,
            client_finished: false,
            backend_finished: false,
        });
        timer.reset(later(Instant::now(), self.cfg.close_grace));
    }

    fn abandon(&mut self, side: Side) {
        self.c2b.abandon(side);
        self.b2c.abandon(side);
        if let Some(closing) = &mut self.closing {
            match side {
                Side::Client => closing.client_finished = true,
                Side::Backend => closing.backend_finished = true,
            }
        }
    }

    fn poll_closing(
        &mut self,
        cx: &mut Context<'_>,
        mut timer: Pin<&mut Sleep>,
    ) -> Poll<RelayOutcome> {
        loop {
            let c2b = self
                .c2b
                .poll_closing(cx, &mut self.client, &mut self.backend);
            if let Poll::Ready(Err(f)) = c2b {
                self.abandon(f.side);
                continue;
            }
            let b2c = self
                .b2c
                .poll_closing(cx, &mut self.backend, &mut self.client);
            if let Poll::Ready(Err(f)) = b2c {
                self.abandon(f.side);
                continue;
            }
            break;
        }
        let Some(closing) = &mut self.closing else {
            return Poll::Pending;
        };

        // A side is finished once it has received a Close and sent its own
        // (client) or closed TCP (backend): then its write half is shut down.
        if !closing.client_finished && self.b2c.delivered && self.c2b.source_done {
            // A failed shutdown leaves nothing more to do with that side.
            if self.b2c.write_shut
                || self.b2c.to_dead
                || Pin::new(&mut self.client).poll_shutdown(cx).is_ready()
            {
                closing.client_finished = true;
            }
        }
        if !closing.backend_finished && self.c2b.delivered && self.b2c.source_done {
            // A failed shutdown leaves nothing more to do with that side.
            if self.c2b.write_shut
                || self.c2b.to_dead
                || Pin::new(&mut self.backend).poll_shutdown(cx).is_ready()
            {
                closing.backend_finished = true;
            }
        }
        let end = closing.end;
        if closing.client_finished && closing.backend_finished {
            return Poll::Ready(self.outcome(end));
        }

        if !closing.grace_rearmed && self.c2b.delivered && self.b2c.delivered {
            // Both Close frames are out: the peers get a full grace period
            // to answer (§7.1.1).
            closing.grace_rearmed = true;
            timer
                .as_mut()
                .reset(later(Instant::now(), self.cfg.close_grace));
        }
        if timer.poll(cx).is_ready() {
            // Dropping the streams cuts TCP.
            return Poll::Ready(self.outcome(end));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
