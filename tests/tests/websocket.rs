//! WebSocket through the gateway (RFC 6455), with tokio-tungstenite as the client.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};
use wasmgate_tests::config::single_route;
use wasmgate_tests::ws::{
    Ending, WsClient, close_with, finish_close, recv, round_trip, wait_end, ws_connect, ws_open,
};
use wasmgate_tests::*;

/// A gateway in front of one echo backend; `settings` adds backend settings lines.
async fn gateway(settings: &str) -> (wasmgate::Gateway, WsBackend) {
    let backend = WsBackend::start("echo").await;
    let gw = start_gateway(&single_route(&[backend.addr], settings)).await;
    (gw, backend)
}

/// Sends a text every `every` and reads whatever comes back, until the session ends (returns
/// how and when) or `for_at_most` passes (returns `None`).
async fn chatter(
    ws: &mut WsClient,
    every: Duration,
    for_at_most: Duration,
) -> Option<(Ending, Duration)> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + for_at_most;
    let mut tick = tokio::time::interval(every);
    let mut sent = 0usize;
    let mut echoed = 0usize;
    // Bounded by the deadline.
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                // The echoes may lag on a busy machine; some must have come back.
                assert!(echoed > 0, "none of {sent} messages came back while chatting");
                return None;
            }
            _ = tick.tick() => {
                if let Err(e) = ws.send(Message::text(format!("tick {sent}"))).await {
                    return Some((Ending::Abrupt(format!("send failed: {e}")), start.elapsed()));
                }
                sent += 1;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(frame))) => {
                    let elapsed = start.elapsed();
                    finish_close(ws).await;
                    return Some((Ending::Close(frame.map(|f| u16::from(f.code))), elapsed));
                }
                Some(Ok(Message::Text(_))) => echoed += 1,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some((Ending::Abrupt(e.to_string()), start.elapsed())),
                None => return Some((Ending::Abrupt("stream ended".into()), start.elapsed())),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_binary_and_ping_cross_the_gateway() {
    let (gw, backend) = gateway("").await;
    let addr = listener_addr(&gw, "web");
    let mut ws = ws_open(addr, "ws.test", "/chat").await;

    assert_eq!(
        round_trip(&mut ws, Message::text("whoami"), "whoami").await,
        Message::text("echo"),
        "the session reaches the WebSocket backend"
    );
    assert_eq!(
        round_trip(&mut ws, Message::text("hello ✓"), "text echo").await,
        Message::text("hello ✓"),
        "a text message round trip"
    );
    let bytes = vec![0u8, 1, 2, 254, 255];
    assert_eq!(
        round_trip(&mut ws, Message::binary(bytes.clone()), "binary echo").await,
        Message::binary(bytes),
        "a binary message round trip"
    );

    within("send ping", ws.send(Message::Ping("are you there".into())))
        .await
        .expect("send ping");
    let mut pong = None;
    for _ in 0..10 {
        if let Message::Pong(p) = recv(&mut ws, "pong").await {
            pong = Some(p);
            break;
        }
    }
    assert_eq!(
        pong.as_deref(),
        Some(&b"are you there"[..]),
        "a ping is answered with a pong carrying the same payload"
    );
    assert_eq!(backend.handshakes().len(), 1);
    assert_eq!(close_with(&mut ws, 1000).await, Ending::Close(Some(1000)));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_codes_travel_both_ways() {
    let (gw, backend) = gateway("").await;
    let addr = listener_addr(&gw, "web");

    let mut ws = ws_open(addr, "ws.test", "/").await;
    round_trip(&mut ws, Message::text("warm up"), "first echo").await;
    assert_eq!(
        close_with(&mut ws, 4000).await,
        Ending::Close(Some(4000)),
        "the client closes with 4000: the backend answers with 4000 and the answer reaches the client"
    );
    eventually(
        "the backend receives the client's close code 4000",
        || async { backend.close_codes().contains(&Some(4000)).then_some(()) },
    )
    .await;

    let mut ws = ws_open(addr, "ws.test", "/").await;
    within(
        "ask the backend to close",
        ws.send(Message::text("close:4001")),
    )
    .await
    .expect("send");
    let ended = wait_end(&mut ws, WAIT).await;
    assert!(
        matches!(ended, Some((Ending::Close(Some(4001)), _))),
        "a close initiated by the backend with 4001 reaches the client, got {ended:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_mebibyte_messages() {
    let (gw, _backend) = gateway("").await;
    let addr = listener_addr(&gw, "web");
    let mut ws = ws_open(addr, "ws.test", "/big").await;

    let text: String = (0..1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let back = round_trip(&mut ws, Message::text(text.clone()), "1 MiB text").await;
    assert!(
        back == Message::text(text),
        "a 1 MiB text message comes back intact"
    );
    let bytes: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let back = round_trip(&mut ws, Message::binary(bytes.clone()), "1 MiB binary").await;
    assert!(
        back == Message::binary(bytes),
        "a 1 MiB binary message comes back intact"
    );
    assert_eq!(close_with(&mut ws, 1000).await, Ending::Close(Some(1000)));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_sessions() {
    let (gw, backend) = gateway("").await;
    let addr = listener_addr(&gw, "web");

    let mut sessions = tokio::task::JoinSet::new();
    for s in 0..100 {
        sessions.spawn(async move {
            let mut ws = ws_open(addr, "ws.test", &format!("/s/{s}")).await;
            for m in 0..5 {
                let text = format!("session {s} message {m}");
                let back = round_trip(&mut ws, Message::text(text.clone()), &text).await;
                assert_eq!(
                    back,
                    Message::text(text),
                    "concurrent sessions must not mix messages"
                );
            }
            close_with(&mut ws, 1000).await
        });
    }
    let mut done = 0;
    while let Some(result) = within_for(
        Duration::from_secs(30),
        "100 concurrent sessions",
        sessions.join_next(),
    )
    .await
    {
        let ending = result.expect("session task");
        assert_eq!(ending, Ending::Close(Some(1000)), "clean close");
        done += 1;
    }
    assert_eq!(done, 100);
    assert_eq!(backend.handshakes().len(), 100, "one backend session each");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handshake_headers_are_forwarded() {
    let (gw, backend) = gateway("").await;
    let addr = listener_addr(&gw, "web");

    let (mut ws, response) = ws_connect(
        addr,
        "ws.test",
        "/socket?room=1",
        &[
            ("sec-websocket-protocol", "chat, superchat"),
            ("origin", "https://app.example"),
            ("cookie", "session=abc"),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("upgrade with subprotocols: {e}"));
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("chat"),
        "the backend's chosen subprotocol reaches the client"
    );
    round_trip(&mut ws, Message::text("x"), "echo").await;

    let seen = backend.last_handshake();
    assert_eq!(
        seen.uri, "/socket?room=1",
        "path and query reach the backend"
    );
    assert_eq!(
        seen.header("sec-websocket-protocol"),
        Some("chat, superchat"),
        "offered subprotocols are forwarded"
    );
    assert_eq!(
        seen.header("origin"),
        Some("https://app.example"),
        "Origin is forwarded"
    );
    assert_eq!(
        seen.header("cookie"),
        Some("session=abc"),
        "Cookie is forwarded"
    );
    assert_eq!(
        seen.header("host"),
        Some("ws.test"),
        "Host is passed through"
    );
    let xff = seen.header("x-forwarded-for").unwrap_or_default();
    assert!(
        xff.starts_with("127.0.0.1:"),
        "X-Forwarded-For carries the client's ip:port on the upgrade request, got {xff:?}"
    );
    assert!(
        seen.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "Upgrade: websocket is forwarded for a WebSocket handshake"
    );
    assert!(
        seen.header("sec-websocket-key").is_some(),
        "Sec-WebSocket-Key is forwarded"
    );
    close_with(&mut ws, 1000).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_upgrade_reaches_the_client() {
    let backend = WsBackend::refusing("refuser", 403).await;
    let gw = start_gateway(&single_route(&[backend.addr], "")).await;
    let addr = listener_addr(&gw, "web");

    match ws_connect(addr, "ws.test", "/", &[]).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(
            response.status().as_u16(),
            403,
            "a backend answering 403 instead of 101: the client sees 403"
        ),
        Err(e) => panic!("a refused upgrade should reach the client as HTTP 403, got {e}"),
        Ok(_) => panic!("the backend refused the upgrade, but the client got a session"),
    }
    assert_eq!(
        backend.handshakes().len(),
        1,
        "the refused handshake was tried once"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_timeout_bounds_the_whole_session_by_default() {
    let (gw, backend) = gateway("request_timeout = \"500ms\"").await;
    let addr = listener_addr(&gw, "web");
    // The session cannot start before its handshake is sent.
    let opened = Instant::now();
    let mut ws = ws_open(addr, "ws.test", "/").await;

    // Traffic every 100 ms does not extend a session in the default mode: it ends, well before
    // the bound here (a session the traffic kept alive would reach it).
    let ended = chatter(&mut ws, Duration::from_millis(100), WAIT).await;
    let Some((ending, _)) = ended else {
        panic!(
            "a busy session outlived request_timeout = 500 ms by {WAIT:?} in the default (session) mode"
        )
    };
    assert_eq!(
        ending,
        Ending::Close(Some(1001)),
        "the session timeout closes the client side with 1001 (going away)"
    );
    let lasted = opened.elapsed();
    assert!(
        lasted >= Duration::from_millis(500),
        "the session ended after {lasted:?}, before the 500 ms request timeout"
    );
    assert_backend_got_going_away(&backend, "a timed-out session").await;
    gw.shutdown().await;
}

/// Waits (bounded) for the backend side of the session to end, and asserts that the gateway
/// closed it with one Close frame, 1001 (going away), rather than by cutting TCP.
async fn assert_backend_got_going_away(backend: &WsBackend, what: &str) {
    eventually(&format!("the backend side of {what} ends"), || async {
        (backend.sessions_ended() == 1).then_some(())
    })
    .await;
    assert_eq!(
        backend.close_codes(),
        [Some(1001)],
        "the gateway ends the backend side of {what} with a Close frame, code 1001"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_mode_keeps_busy_sessions_and_ends_silent_ones() {
    // A message every 100 ms against a 1 s idle timeout: only a pause of ten message intervals
    // would end the busy session.
    let (gw, backend) = gateway("request_timeout = \"1s\"\nwebsocket_timeout = \"idle\"").await;
    let addr = listener_addr(&gw, "web");
    let mut ws = ws_open(addr, "ws.test", "/").await;

    let ended = chatter(
        &mut ws,
        Duration::from_millis(100),
        Duration::from_millis(3200),
    )
    .await;
    assert!(
        ended.is_none(),
        "websocket_timeout = \"idle\": a session with a message every 100 ms must outlive 3 × the 1 s timeout, but it ended: {ended:?}"
    );
    // The gateway reads this message after it is sent: the silence starts no earlier.
    let last_sent = Instant::now();
    within("send after chatting", ws.send(Message::text("still here")))
        .await
        .expect("the idle-mode session is still open after chatting");
    // Echoes of the last ticks may still be on their way: at most a few dozen.
    let mut echoed = false;
    for _ in 0..50 {
        if recv(&mut ws, "echo after chatting").await == Message::text("still here") {
            echoed = true;
            break;
        }
    }
    assert!(echoed, "the session still echoes after chatting");

    let silent = wait_end(&mut ws, WAIT).await;
    let Some((ending, _)) = silent else {
        panic!(
            "websocket_timeout = \"idle\": a silent session outlived the 1 s idle timeout by {WAIT:?}"
        )
    };
    assert_eq!(
        ending,
        Ending::Close(Some(1001)),
        "an idle session is closed with 1001"
    );
    let silence = last_sent.elapsed();
    assert!(
        silence >= Duration::from_secs(1),
        "the silent session ended after {silence:?} of silence, before the 1 s idle timeout"
    );
    assert_backend_got_going_away(&backend, "an idle session").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_tokens_are_case_insensitive_and_listed() {
    let (gw, backend) = gateway("").await;
    let addr = listener_addr(&gw, "web");
    // Firefox sends `Connection: keep-alive, Upgrade`; tokens are case-insensitive (RFC 6455 §4.2.1).
    let handshake = "GET /ff HTTP/1.1\r\n\
        Host: ws.test\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Upgrade: WebSocket\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        \r\n";
    let mut stream = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    within(
        "write handshake",
        tokio::io::AsyncWriteExt::write_all(&mut stream, handshake.as_bytes()),
    )
    .await
    .expect("write handshake");
    let reply = wasmgate_tests::client::read_response(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("no answer to a Firefox-style handshake: {e}"));
    assert_eq!(
        reply.status, 101,
        "`Connection: keep-alive, Upgrade` with `Upgrade: WebSocket` is a WebSocket handshake:\n{}",
        reply.head
    );
    assert_eq!(
        reply.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the backend's Sec-WebSocket-Accept reaches the client (RFC 6455 §1.3)"
    );
    assert_eq!(backend.handshakes().len(), 1);
    drop(stream);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_rules_route_websocket_and_plain_requests() {
    use wasmgate_tests::config::{listener, pool, settings};
    let ws_backend = WsBackend::start("ws").await;
    let http_backend = HttpBackend::start("http").await;
    let mut toml = listener("web", 0, &[]);
    toml += &pool("ws", &[ws_backend.addr]);
    toml += &pool("http", &[http_backend.addr]);
    toml += &settings("settings", "");
    toml += "[[rules]]\nname = \"paths\"\nlistener = \"web\"\nurl_path_map = \"map\"\n\n";
    toml += "[[url_path_maps]]\nname = \"map\"\ndefault_backend_pool = \"http\"\ndefault_backend_settings = \"settings\"\n\n";
    toml += "[[url_path_maps.path_rules]]\nname = \"ws\"\npaths = [\"/ws/*\"]\nbackend_pool = \"ws\"\nbackend_settings = \"settings\"\n\n";
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    let mut ws = ws_open(addr, "ws.test", "/ws/room").await;
    assert_eq!(
        round_trip(&mut ws, Message::text("whoami"), "whoami").await,
        Message::text("ws"),
        "a WebSocket handshake is routed by its path rule"
    );
    assert_routed(
        addr,
        "ws.test",
        "/page",
        "http",
        "plain requests on the same listener go to the map's default",
    )
    .await;
    close_with(&mut ws, 1000).await;
    gw.shutdown().await;
}
