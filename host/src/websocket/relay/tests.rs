use super::*;
use crate::websocket::frame::OPCODE_CLOSE;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// Upper bound for every test, so a hang fails instead of blocking. Tests over in-memory pipes
/// run on tokio's paused clock: time moves only when every task waits, so the timeouts under
/// test fire exactly when due, however slow the machine, and a deadlock reaches `LIMIT` at once.
const LIMIT: Duration = Duration::from_secs(20);

/// Timers fire on whole milliseconds of tokio's clock: a deadline may be met up to 1 ms late.
const TICK: Duration = Duration::from_millis(1);

/// Asserts that `took` is `expected`, to the timer's resolution.
fn assert_took(took: Duration, expected: Duration) {
    assert!(
        took >= expected && took <= expected + TICK,
        "took {took:?}, expected {expected:?}"
    );
}
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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
        assert_took(started.elapsed(), t);
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
        // The handshake completed at once: no grace period was waited for.
        assert_took(started.elapsed(), t);
        assert_eq!((out.client_to_backend, out.backend_to_client), (0, 0));
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
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
        assert_took(started.elapsed(), t + grace);
        expect_eof(&mut client).await;
        expect_eof(&mut backend).await;
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
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
        // 700 ms of traffic, alternating directions, more than 3x the timeout; a gap of a
        // quarter of the timeout between messages.
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
        assert_took(silent_since.elapsed(), t);
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

#[tokio::test(start_paused = true)]
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
        // The backend is mid-frame: nothing may be inserted yet, however long the frame
        // takes (within the close grace).
        let mut b = [0u8; 1];
        assert!(
            timeout(Duration::from_secs(1), backend.read(&mut b))
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

#[tokio::test(start_paused = true)]
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
        assert_took(started.elapsed(), t + grace);
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
    // sockets, the timer entry, the frame followers with their message counts (for the
    // session's metrics and access-log record); no buffers. Debug builds lay it out in 488 bytes.
    let size = std::mem::size_of_val(&future);
    assert!(size <= 496, "{size}");
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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
        assert_took(done_at.elapsed(), grace);
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
async fn idle_session_holds_no_buffer() {
    // The current-thread runtime polls the relay on this test's thread,
    // so this thread's count covers it. Each `sleep` lets the relay run until
    // it waits (the paused clock moves only then).
    timeout(LIMIT, async {
        let out = chunk::borrowed_on_this_thread;
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
