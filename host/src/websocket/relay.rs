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
//! bytes wait to be written.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::frame::{CLOSE_GOING_AWAY, FrameTracker, close_frame_masked, close_frame_unmasked};

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

/// Size of a relay chunk: one read, one write.
const CHUNK_SIZE: usize = 16 * 1024;

/// Chunks kept per thread for reuse; beyond that they are freed, so a burst
/// of busy sessions does not pin memory forever.
const FREE_CHUNKS_PER_THREAD: usize = 64;

/// Reads one direction may do in a single poll before yielding, so that one
/// busy direction cannot starve the other, the timer or other tasks.
const READS_PER_POLL: u32 = 32;

thread_local! {
    static FREE_CHUNKS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Chunks currently borrowed on this thread, to check idle sessions hold none.
    static CHUNKS_OUT: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

/// A relay buffer borrowed from the per-thread free list; dropping it gives
/// it back (tasks may migrate, so it may land on another thread's list).
struct Chunk(Box<[u8]>);

impl Chunk {
    fn take() -> Self {
        #[cfg(test)]
        CHUNKS_OUT.with(|n| n.set(n.get() + 1));
        let reused = FREE_CHUNKS
            .try_with(|free| free.borrow_mut().pop())
            .ok()
            .flatten();
        Chunk(reused.unwrap_or_else(|| vec![0; CHUNK_SIZE].into_boxed_slice()))
    }

    /// A one-off buffer holding `bytes`, for more than a chunk's worth; never reused.
    fn oversized(bytes: &[u8]) -> Self {
        #[cfg(test)]
        CHUNKS_OUT.with(|n| n.set(n.get() + 1));
        Chunk(bytes.into())
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        #[cfg(test)]
        let _ = CHUNKS_OUT.try_with(|n| n.set(n.get() - 1));
        let buf = std::mem::take(&mut self.0);
        // `try_with` fails only while the thread is being torn down; the
        // buffer is then simply freed.
        let _ = FREE_CHUNKS.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < FREE_CHUNKS_PER_THREAD && buf.len() == CHUNK_SIZE {
                free.push(buf);
            }
        });
    }
}

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
            chunk.0[..bytes.len()].copy_from_slice(bytes);
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
            match Pin::new(&mut *dst).poll_write(cx, &chunk.0[self.pos..self.end]) {
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
        let mut reads = 0;
        loop {
            ready!(self.poll_write_pending(cx, dst))?;
            if self.read_eof {
                self.chunk = None;
                ready!(self.poll_flush(cx, dst))?;
                self.shutdown_started = true;
                ready!(Pin::new(&mut *dst).poll_shutdown(cx))
                    .map_err(|e| Failure::new(self.to, &e))?;
                self.write_shut = true;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            if reads == READS_PER_POLL {
                self.chunk = None;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            let mut chunk = self.chunk.take().unwrap_or_else(Chunk::take);
            match poll_read_into(cx, src, &mut chunk.0) {
                Poll::Pending => {
                    // Idle: give the chunk back before sleeping.
                    drop(chunk);
                    // Nothing more to write for now: push out what
                    // buffering writers (TLS) may still hold.
                    if let Poll::Ready(Err(f)) = self.poll_flush(cx, dst) {
                        return Poll::Ready(Err(f));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::new(self.from, &e))),
                Poll::Ready(Ok(0)) => self.read_eof = true,
                Poll::Ready(Ok(n)) => {
                    self.tracker.advance(&chunk.0[..n]);
                    self.pos = 0;
                    self.end = n;
                    self.chunk = Some(chunk);
                    *activity = true;
                }
            }
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
        let mut reads = 0;
        loop {
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
            if reads == READS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            // Bytes past the frame in flight are read only to be dropped; they
            // must not land in a chunk that still holds bytes to write.
            let mut chunk = if self.pos < self.end {
                Chunk::take()
            } else {
                self.chunk.take().unwrap_or_else(Chunk::take)
            };
            match poll_read_into(cx, src, &mut chunk.0) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.abandon(self.from);
                    return Poll::Ready(Err(Failure::new(self.from, &e)));
                }
                Poll::Ready(Ok(0)) => {
                    self.read_eof = true;
                    self.source_done = true;
                    if self.forwarding {
                        // The frame in flight was cut short: `to` holds a
                        // partial frame and cannot be sent a Close.
                        self.stop_forwarding();
                    }
                }
                Poll::Ready(Ok(n)) => {
                    let data = &chunk.0[..n];
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
            }
        }
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
mod tests {
    use super::*;
    use crate::websocket::frame::OPCODE_CLOSE;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;
    use tokio::time::{sleep, timeout};

    /// Upper bound for every test, so a hang fails instead of blocking.
    const LIMIT: Duration = Duration::from_secs(20);
    const GOING_AWAY: [u8; 2] = 1001u16.to_be_bytes();

    fn config(timeout: Duration, mode: TimeoutMode, close_grace: Duration) -> RelayConfig {
        RelayConfig {
            timeout,
            mode,
            close_grace,
        }
    }

    fn long() -> RelayConfig {
        config(
            Duration::from_secs(60),
            TimeoutMode::Session,
            Duration::from_secs(5),
        )
    }

    /// Starts a relay over two in-memory pipes; returns the client peer, the
    /// backend peer and the relay task.
    fn start<S>(
        cfg: RelayConfig,
        pipe: usize,
        shutdown: S,
    ) -> (DuplexStream, DuplexStream, JoinHandle<RelayOutcome>)
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let (client_peer, client_side) = duplex(pipe);
        let (backend_peer, backend_side) = duplex(pipe);
        let task = tokio::spawn(relay(client_side, backend_side, cfg, shutdown));
        (client_peer, backend_peer, task)
    }

    /// Encodes one final frame; client frames are masked (RFC 6455 §5.3).
    fn encode(opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = fastrand::u32(..).to_ne_bytes();
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    fn close(code: u16, masked: bool) -> Vec<u8> {
        encode(OPCODE_CLOSE, masked, &code.to_be_bytes())
    }

    #[derive(Debug)]
    struct Frame {
        opcode: u8,
        masked: bool,
        payload: Vec<u8>,
    }

    /// Decodes one frame by hand (RFC 6455 §5.2), unmasking the payload.
    async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Frame {
        let mut head = [0u8; 2];
        r.read_exact(&mut head).await.expect("frame header");
        assert_eq!(head[0] & 0x70, 0, "RSV bits clear");
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7F {
            126 => u64::from(r.read_u16().await.unwrap()),
            127 => r.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut key = [0u8; 4];
        if masked {
            r.read_exact(&mut key).await.unwrap();
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).await.unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        Frame {
            opcode: head[0] & 0x0F,
            masked,
            payload,
        }
    }

    /// Reads until EOF; fails if anything but EOF arrives.
    async fn expect_eof<R: AsyncRead + Unpin>(r: &mut R) {
        let mut b = [0u8; 1];
        assert_eq!(r.read(&mut b).await.unwrap(), 0, "expected EOF, got {b:?}");
    }

    fn assert_going_away(f: &Frame, masked: bool) {
        assert_eq!(f.opcode, OPCODE_CLOSE);
        assert_eq!(f.masked, masked);
        assert_eq!(f.payload, GOING_AWAY);
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test]
    async fn relays_bytes_unchanged_both_ways() {
        timeout(LIMIT, async {
            let (mut client, mut backend, task) = start(long(), 64 * 1024, std::future::pending());
            let up = [
                encode(0x1, true, b"hello"),
                encode(0x2, true, &pattern(1 << 20, 1)),
            ]
            .concat();
            let down = [
                encode(0x1, false, b"world"),
                encode(0x2, false, &pattern(1 << 20, 7)),
            ]
            .concat();

            let (mut client_rx, mut client_tx) = tokio::io::split(&mut client);
            let (mut backend_rx, mut backend_tx) = tokio::io::split(&mut backend);
            let send_up = async {
                for c in up.chunks(1000) {
                    client_tx.write_all(c).await.unwrap();
                }
            };
            let send_down = async {
                for c in down.chunks(4093) {
                    backend_tx.write_all(c).await.unwrap();
                }
            };
            let recv_up = async {
                let mut got = vec![0u8; up.len()];
                backend_rx.read_exact(&mut got).await.unwrap();
                got
            };
            let recv_down = async {
                let mut got = vec![0u8; down.len()];
                client_rx.read_exact(&mut got).await.unwrap();
                got
            };
            let ((), (), got_up, got_down) = tokio::join!(send_up, send_down, recv_up, recv_down);
            assert!(got_up == up, "client to backend bytes differ");
            assert!(got_down == down, "backend to client bytes differ");

            // The peers' own close handshake passes through unchanged.
            let client_close = close(1000, true);
            client.write_all(&client_close).await.unwrap();
            let mut seen = vec![0u8; client_close.len()];
            backend.read_exact(&mut seen).await.unwrap();
            assert_eq!(seen, client_close);
            backend.write_all(&close(1000, false)).await.unwrap();
            backend.shutdown().await.unwrap();
            let reply = read_frame(&mut client).await;
            assert_eq!(
                (reply.opcode, reply.masked, &reply.payload[..]),
                (OPCODE_CLOSE, false, &[3u8, 0xE8][..])
            );
            expect_eof(&mut client).await;
            client.shutdown().await.unwrap();
            expect_eof(&mut backend).await;

            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::ClientClosed { code: Some(1000) });
            assert_eq!(
                out.client_to_backend,
                (up.len() + client_close.len()) as u64
            );
            assert_eq!(out.backend_to_client, (down.len() + 4) as u64);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn backend_initiated_close_is_relayed() {
        timeout(LIMIT, async {
            let (mut client, mut backend, task) = start(long(), 4096, std::future::pending());
            backend.write_all(&close(1000, false)).await.unwrap();
            let f = read_frame(&mut client).await;
            assert_eq!((f.opcode, f.masked), (OPCODE_CLOSE, false));
            client.write_all(&close(1000, true)).await.unwrap();
            let f = read_frame(&mut backend).await;
            assert_eq!((f.opcode, f.masked), (OPCODE_CLOSE, true));
            // The server closes TCP first (RFC 6455 §7.1.1); it flows through.
            backend.shutdown().await.unwrap();
            expect_eof(&mut client).await;
            client.shutdown().await.unwrap();
            expect_eof(&mut backend).await;
            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::BackendClosed { code: Some(1000) });
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn half_close_propagates() {
        timeout(LIMIT, async {
            let (mut client, mut backend, task) = start(long(), 4096, std::future::pending());
            let hello = encode(0x1, true, b"last words");
            client.write_all(&hello).await.unwrap();
            client.shutdown().await.unwrap();

            let mut got = vec![0u8; hello.len()];
            backend.read_exact(&mut got).await.unwrap();
            assert_eq!(got, hello);
            expect_eof(&mut backend).await;

            // The other direction still works after the half-close.
            let answer = encode(0x1, false, b"still here");
            backend.write_all(&answer).await.unwrap();
            let mut got = vec![0u8; answer.len()];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, answer);
            assert!(!task.is_finished());

            backend.shutdown().await.unwrap();
            expect_eof(&mut client).await;
            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::ClientClosed { code: None });
            assert_eq!(out.client_to_backend, hello.len() as u64);
            assert_eq!(out.backend_to_client, answer.len() as u64);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn simultaneous_large_writes_do_not_deadlock() {
        timeout(LIMIT, async {
            // Small pipes: each direction stalls on writes all the time.
            let (client, backend, task) = start(long(), 1024, std::future::pending());
            let up = encode(0x2, true, &pattern(4 << 20, 3));
            let down = encode(0x2, false, &pattern(4 << 20, 5));
            let (mut client_rx, mut client_tx) = tokio::io::split(client);
            let (mut backend_rx, mut backend_tx) = tokio::io::split(backend);
            let (got_up, got_down, (), ()) = tokio::join!(
                async {
                    let mut v = vec![0u8; up.len()];
                    backend_rx.read_exact(&mut v).await.unwrap();
                    v
                },
                async {
                    let mut v = vec![0u8; down.len()];
                    client_rx.read_exact(&mut v).await.unwrap();
                    v
                },
                async {
                    client_tx.write_all(&up).await.unwrap();
                    client_tx.shutdown().await.unwrap();
                },
                async {
                    backend_tx.write_all(&down).await.unwrap();
                    backend_tx.shutdown().await.unwrap();
                },
            );
            assert!(got_up == up && got_down == down);
            let out = task.await.unwrap();
            assert_eq!(out.client_to_backend, up.len() as u64);
            assert_eq!(out.backend_to_client, down.len() as u64);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn echoing_backend_does_not_deadlock() {
        // The backend only reads again once its echo is written: a relay
        // that blocked reading the backend while writing to it would hang.
        timeout(LIMIT, async {
            let (client, mut backend, task) = start(long(), 2048, std::future::pending());
            let echo = tokio::spawn(async move {
                let mut buf = [0u8; 700];
                loop {
                    let n = backend.read(&mut buf).await.unwrap();
                    if n == 0 {
                        backend.shutdown().await.unwrap();
                        return;
                    }
                    backend.write_all(&buf[..n]).await.unwrap();
                }
            });
            let data = encode(0x2, true, &pattern(2 << 20, 9));
            let (mut rx, mut tx) = tokio::io::split(client);
            let (got, ()) = tokio::join!(
                async {
                    let mut v = Vec::new();
                    rx.read_to_end(&mut v).await.unwrap();
                    v
                },
                async {
                    tx.write_all(&data).await.unwrap();
                    tx.shutdown().await.unwrap();
                },
            );
            assert!(got == data);
            echo.await.unwrap();
            assert_eq!(
                task.await.unwrap().end,
                RelayEnd::ClientClosed { code: None }
            );
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn session_timeout_sends_going_away_to_both_peers() {
        timeout(LIMIT, async {
            let t = Duration::from_millis(200);
            let started = Instant::now();
            let (mut client, mut backend, task) = start(
                config(t, TimeoutMode::Session, Duration::from_secs(3)),
                4096,
                std::future::pending(),
            );

            // Towards the client the gateway is the server: unmasked.
            let f = read_frame(&mut client).await;
            assert!(started.elapsed() >= t);
            assert_going_away(&f, false);
            // Towards the backend it is the client: masked.
            let f = read_frame(&mut backend).await;
            assert_going_away(&f, true);

            client.write_all(&close(1001, true)).await.unwrap();
            backend.write_all(&close(1001, false)).await.unwrap();
            backend.shutdown().await.unwrap();

            // The gateway closes both streams once the handshake is done.
            expect_eof(&mut client).await;
            expect_eof(&mut backend).await;
            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::Timeout);
            assert!(
                started.elapsed() < t + Duration::from_millis(400),
                "{:?}",
                started.elapsed()
            );
            assert_eq!((out.client_to_backend, out.backend_to_client), (0, 0));
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn unresponsive_peers_are_cut_after_close_grace() {
        timeout(LIMIT, async {
            let t = Duration::from_millis(100);
            let grace = Duration::from_millis(200);
            let started = Instant::now();
            let (mut client, mut backend, task) = start(
                config(t, TimeoutMode::Session, grace),
                4096,
                std::future::pending(),
            );
            assert_going_away(&read_frame(&mut client).await, false);
            assert_going_away(&read_frame(&mut backend).await, true);
            // Neither peer answers; data sent now is dropped.
            client
                .write_all(&encode(0x1, true, b"ignored"))
                .await
                .unwrap();
            backend
                .write_all(&encode(0x1, false, b"ignored"))
                .await
                .unwrap();
            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::Timeout);
            assert_eq!((out.client_to_backend, out.backend_to_client), (0, 0));
            let took = started.elapsed();
            assert!(took >= t + grace, "{took:?}");
            assert!(took < t + grace + Duration::from_millis(400), "{took:?}");
            expect_eof(&mut client).await;
            expect_eof(&mut backend).await;
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn idle_mode_traffic_keeps_session_alive() {
        timeout(LIMIT, async {
            let t = Duration::from_millis(200);
            let (mut client, mut backend, task) = start(
                config(t, TimeoutMode::Idle, Duration::from_secs(3)),
                4096,
                std::future::pending(),
            );
            let ping = encode(0x1, true, b"ping");
            let pong = encode(0x1, false, b"pong");
            let mut buf = [0u8; 16];
            // 700 ms of traffic, alternating directions, more than 3x the timeout.
            for i in 0..14 {
                sleep(Duration::from_millis(50)).await;
                if i % 2 == 0 {
                    client.write_all(&ping).await.unwrap();
                    backend.read_exact(&mut buf[..ping.len()]).await.unwrap();
                    assert_eq!(buf[..ping.len()], ping[..]);
                } else {
                    backend.write_all(&pong).await.unwrap();
                    client.read_exact(&mut buf[..pong.len()]).await.unwrap();
                    assert_eq!(buf[..pong.len()], pong[..]);
                }
            }
            assert!(!task.is_finished());
            let silent_since = Instant::now();

            assert_going_away(&read_frame(&mut client).await, false);
            let quiet = silent_since.elapsed();
            assert!(quiet >= t - Duration::from_millis(20), "{quiet:?}");
            assert!(quiet < t + Duration::from_millis(300), "{quiet:?}");
            assert_going_away(&read_frame(&mut backend).await, true);

            client.write_all(&close(1001, true)).await.unwrap();
            backend.write_all(&close(1001, false)).await.unwrap();
            backend.shutdown().await.unwrap();
            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::Timeout);
            assert_eq!(out.client_to_backend, 7 * ping.len() as u64);
            assert_eq!(out.backend_to_client, 7 * pong.len() as u64);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn deadline_mid_frame_waits_for_the_frame_to_end() {
        timeout(LIMIT, async {
            let t = Duration::from_millis(200);
            let (mut client, mut backend, task) = start(
                config(t, TimeoutMode::Session, Duration::from_secs(3)),
                4096,
                std::future::pending(),
            );
            let frame = encode(0x2, true, &pattern(100, 11));
            let (first, rest) = frame.split_at(frame.len() - 50);
            client.write_all(first).await.unwrap();
            let mut got = vec![0u8; first.len()];
            backend.read_exact(&mut got).await.unwrap();

            // The client direction is at a boundary: its Close comes on time.
            assert_going_away(&read_frame(&mut client).await, false);
            // The backend is mid-frame: nothing may be inserted yet.
            let mut b = [0u8; 1];
            assert!(
                timeout(Duration::from_millis(300), backend.read(&mut b))
                    .await
                    .is_err()
            );

            // The frame ends; what follows it is not forwarded.
            let extra = encode(0x1, true, b"too late");
            client
                .write_all(&[rest, &extra[..]].concat())
                .await
                .unwrap();
            let mut got = vec![0u8; rest.len()];
            backend.read_exact(&mut got).await.unwrap();
            assert_eq!(got, rest);
            assert_going_away(&read_frame(&mut backend).await, true);

            client.write_all(&close(1001, true)).await.unwrap();
            backend.write_all(&close(1001, false)).await.unwrap();
            backend.shutdown().await.unwrap();
            expect_eof(&mut backend).await;
            expect_eof(&mut client).await;
            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::Timeout);
            assert_eq!(out.client_to_backend, frame.len() as u64);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn frame_that_never_ends_is_cut_after_close_grace() {
        timeout(LIMIT, async {
            let t = Duration::from_millis(100);
            let grace = Duration::from_millis(300);
            let started = Instant::now();
            let (mut client, mut backend, task) = start(
                config(t, TimeoutMode::Session, grace),
                4096,
                std::future::pending(),
            );
            let frame = encode(0x2, true, &pattern(100, 1));
            client.write_all(&frame[..20]).await.unwrap();
            let mut got = [0u8; 20];
            backend.read_exact(&mut got).await.unwrap();
            assert_going_away(&read_frame(&mut client).await, false);

            // The client's frame towards the backend never ends: no Close
            // can be put in the middle of it, so TCP is cut.
            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::Timeout);
            let took = started.elapsed();
            assert!(took >= t + grace, "{took:?}");
            assert!(took < t + grace + Duration::from_millis(300), "{took:?}");
            expect_eof(&mut backend).await;
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn idle_session_state_is_small() {
        let (a, _a) = tcp_pair().await;
        let (b, _b) = tcp_pair().await;
        let future = relay(a, b, long(), std::future::pending::<()>());
        // Everything an idle session keeps besides the runtime's per-socket state: the two
        // sockets, the timer entry, the frame followers; no buffers.
        // 456 bytes in release builds; debug builds lay it out a little larger (472).
        let size = std::mem::size_of_val(&future);
        assert!(size <= 480, "{size}");
    }

    #[tokio::test]
    async fn read_ahead_is_relayed_first_and_followed() {
        timeout(LIMIT, async {
            let (mut client, client_side) = duplex(4096);
            let (mut backend, backend_side) = duplex(4096);
            // The backend's first frame and the start of the client's arrived with the
            // handshake.
            let greeting = encode(0x1, false, b"welcome");
            let hello = encode(0x1, true, b"hello");
            let (ahead, rest) = hello.split_at(3);
            let task = tokio::spawn(
                relay(client_side, backend_side, long(), std::future::pending())
                    .with_read_ahead(ahead, &greeting),
            );
            let mut got = vec![0u8; greeting.len()];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, greeting);
            client.write_all(rest).await.unwrap();
            let mut got = vec![0u8; hello.len()];
            backend.read_exact(&mut got).await.unwrap();
            assert_eq!(got, hello);

            // A Close from the client is seen through the read-ahead's frame.
            client.write_all(&close(1000, true)).await.unwrap();
            let f = read_frame(&mut backend).await;
            assert_eq!(f.opcode, OPCODE_CLOSE);
            backend.write_all(&close(1000, false)).await.unwrap();
            let f = read_frame(&mut client).await;
            assert_eq!(f.opcode, OPCODE_CLOSE);
            drop(backend);
            client.shutdown().await.unwrap();
            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::ClientClosed { code: Some(1000) });
            assert_eq!(out.backend_to_client, greeting.len() as u64 + 4);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn close_already_received_is_not_sent_twice() {
        timeout(LIMIT, async {
            let t = Duration::from_millis(200);
            let (mut client, mut backend, task) = start(
                config(t, TimeoutMode::Session, Duration::from_secs(3)),
                4096,
                std::future::pending(),
            );
            // The client starts a close handshake the backend never answers.
            client.write_all(&close(4000, true)).await.unwrap();
            let f = read_frame(&mut backend).await;
            assert_eq!(
                (f.opcode, f.payload),
                (OPCODE_CLOSE, 4000u16.to_be_bytes().to_vec())
            );

            // At the deadline only the client still needs a Close (§5.5.1).
            assert_going_away(&read_frame(&mut client).await, false);
            expect_eof(&mut client).await;
            backend.shutdown().await.unwrap();
            // No second Close towards the backend, just the end of the stream.
            expect_eof(&mut backend).await;
            assert_eq!(task.await.unwrap().end, RelayEnd::Timeout);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn shutdown_signal_closes_cleanly() {
        timeout(LIMIT, async {
            let (fire, fired) = tokio::sync::oneshot::channel::<()>();
            let (mut client, mut backend, task) = start(long(), 4096, async move {
                let _ = fired.await;
            });
            let hello = encode(0x1, true, b"hello");
            client.write_all(&hello).await.unwrap();
            let mut got = vec![0u8; hello.len()];
            backend.read_exact(&mut got).await.unwrap();

            fire.send(()).unwrap();
            assert_going_away(&read_frame(&mut client).await, false);
            assert_going_away(&read_frame(&mut backend).await, true);
            client.write_all(&close(1001, true)).await.unwrap();
            backend.write_all(&close(1001, false)).await.unwrap();
            backend.shutdown().await.unwrap();
            expect_eof(&mut client).await;
            expect_eof(&mut backend).await;
            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::Shutdown);
            assert_eq!(out.client_to_backend, hello.len() as u64);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn completed_handshake_without_tcp_close_is_cut_after_grace() {
        timeout(LIMIT, async {
            let grace = Duration::from_millis(200);
            let (mut client, mut backend, task) = start(
                config(Duration::from_secs(60), TimeoutMode::Session, grace),
                4096,
                std::future::pending(),
            );
            client.write_all(&close(1000, true)).await.unwrap();
            read_frame(&mut backend).await;
            backend.write_all(&close(1000, false)).await.unwrap();
            read_frame(&mut client).await;
            let done_at = Instant::now();
            // Neither peer closes TCP.
            let out = task.await.unwrap();
            assert_eq!(out.end, RelayEnd::ClientClosed { code: Some(1000) });
            let took = done_at.elapsed();
            assert!(took < grace + Duration::from_millis(300), "{took:?}");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn broken_backend_is_an_error() {
        timeout(LIMIT, async {
            let (mut client, backend, task) = start(long(), 4096, std::future::pending());
            drop(backend);
            // Whatever the client sends now cannot be delivered.
            let _ = client.write_all(&encode(0x1, true, b"anyone?")).await;
            let out = task.await.unwrap();
            assert_eq!(
                out.end,
                RelayEnd::Error {
                    side: Side::Backend,
                    kind: io::ErrorKind::BrokenPipe
                }
            );
        })
        .await
        .unwrap();
    }

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn relays_over_tcp_and_reports_reset() {
        timeout(LIMIT, async {
            let (mut client, client_side) = tcp_pair().await;
            let (mut backend, backend_side) = tcp_pair().await;
            let task = tokio::spawn(relay(
                client_side,
                backend_side,
                long(),
                std::future::pending(),
            ));

            let up = encode(0x2, true, &pattern(300_000, 2));
            let (got, ()) = tokio::join!(
                async {
                    let mut v = vec![0u8; up.len()];
                    backend.read_exact(&mut v).await.unwrap();
                    v
                },
                async { client.write_all(&up).await.unwrap() },
            );
            assert!(got == up);
            let down = encode(0x1, false, b"ok");
            backend.write_all(&down).await.unwrap();
            let mut got = vec![0u8; down.len()];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, down);

            // An abortive close: the relay sees a reset from the backend.
            backend.set_zero_linger().unwrap();
            drop(backend);
            let out = task.await.unwrap();
            assert_eq!(
                out.end,
                RelayEnd::Error {
                    side: Side::Backend,
                    kind: io::ErrorKind::ConnectionReset
                }
            );
            assert_eq!(out.client_to_backend, up.len() as u64);
            assert_eq!(out.backend_to_client, down.len() as u64);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn idle_session_holds_no_buffer() {
        // The current-thread runtime polls the relay on this test's thread,
        // so this thread's count covers it.
        timeout(LIMIT, async {
            let out = || CHUNKS_OUT.with(|n| n.get());
            let (mut client, mut backend, task) = start(long(), 1024, std::future::pending());
            let hello = encode(0x1, true, b"hello");
            client.write_all(&hello).await.unwrap();
            let mut got = vec![0u8; hello.len()];
            backend.read_exact(&mut got).await.unwrap();
            sleep(Duration::from_millis(20)).await;
            assert_eq!(out(), 0, "idle session holds a chunk");

            // A write stalled on a full pipe keeps exactly that chunk.
            let big = encode(0x2, true, &pattern(8192, 4));
            let (write_big, ()) = tokio::join!(client.write_all(&big), async {
                sleep(Duration::from_millis(20)).await;
                assert_eq!(out(), 1);
                let mut got = vec![0u8; big.len()];
                backend.read_exact(&mut got).await.unwrap();
                assert!(got == big);
            });
            write_big.unwrap();
            sleep(Duration::from_millis(20)).await;
            assert_eq!(out(), 0);

            client.shutdown().await.unwrap();
            backend.shutdown().await.unwrap();
            task.await.unwrap();
            assert_eq!(out(), 0);
        })
        .await
        .unwrap();
    }
}
