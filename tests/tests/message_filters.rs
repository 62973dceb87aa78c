//! WebSocket message filters in a running gateway: the fixture filter's decisions on real
//! sessions (forward, replace, drop, answer, close, refuse, subprotocol), the message limit,
//! hostile filters contained to their own session, `fail_open`, and a filter replaced while a
//! session is open.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::{self, Message};
use wasmgate::plugin::{ComponentSource, VersionRequest};
use wasmgate_tests::config::single_route;
use wasmgate_tests::ws::{Ending, WsClient, recv, round_trip, wait_end, ws_connect, ws_open};
use wasmgate_tests::*;

/// A gateway whose route to one echo backend has the fixture filter (`filter_extra`: more lines
/// for its `[[plugins]]` entry, such as `[plugins.limits]`).
async fn filtered(filter_extra: &str) -> (wasmgate::Gateway, WsBackend) {
    let backend = WsBackend::start("echo").await;
    let mut toml = plugin_engine_section();
    toml += &single_route(&[backend.addr], "");
    toml = toml.replace(
        "backend_settings = \"settings\"\n",
        "backend_settings = \"settings\"\nmessage_filter = \"filter\"\n",
    );
    toml += &plugin_section(
        "filter",
        "fixture-message-filter",
        "message-filter",
        filter_extra,
    );
    (start_gateway(&toml).await, backend)
}

async fn say(ws: &mut WsClient, text: &str) -> Message {
    round_trip(ws, Message::text(text), text).await
}

fn counts(gw: &wasmgate::Gateway) -> wasmgate::metrics::filters::FilterCounts {
    let slots = gw.plugins();
    let slot = slots
        .iter()
        .find(|s| s.name() == "filter")
        .expect("filter slot");
    slot.filter_metrics().expect("filter counters").counts()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filter_decisions_apply_to_real_sessions() {
    let (gw, backend) = filtered("").await;
    let addr = listener_addr(&gw, "web");
    let (mut ws, _) = ws_connect(
        addr,
        "ws.test",
        "/chat",
        &[(
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits",
        )],
    )
    .await
    .expect("upgrade");
    assert_eq!(
        backend.last_handshake().header("sec-websocket-extensions"),
        None,
        "no extension is offered to the backend of a filtered session"
    );

    assert_eq!(
        say(&mut ws, "hello").await,
        Message::text("hello"),
        "forward"
    );
    assert_eq!(
        say(&mut ws, "replace:changed").await,
        Message::text("changed"),
        "the backend echoes the replacement"
    );
    assert_eq!(
        say(&mut ws, "answer:from the filter").await,
        Message::text("from the filter"),
        "the filter answers the sender"
    );
    // A dropped message never reaches the backend: the next echo is the next message's.
    ws.send(Message::text("drop")).await.expect("send");
    assert_eq!(say(&mut ws, "after").await, Message::text("after"), "drop");
    // Forward and answer: the answer comes at once, the echo after the backend's round trip.
    assert_eq!(say(&mut ws, "both:ack").await, Message::text("ack"));
    assert_eq!(
        recv(&mut ws, "echo of both").await,
        Message::text("both:ack")
    );
    let bytes = vec![0u8, 1, 2, 255];
    assert_eq!(
        round_trip(&mut ws, Message::binary(bytes.clone()), "binary").await,
        Message::binary(bytes)
    );
    // A message larger than a read comes back whole.
    let big = "x".repeat(200_000);
    assert_eq!(say(&mut ws, &big).await, Message::text(big.clone()));
    // Pings keep the host's handling: they cross to the backend, whose pong comes back.
    ws.send(Message::Ping(b"p".to_vec().into()))
        .await
        .expect("ping");
    assert_eq!(
        recv(&mut ws, "pong").await,
        Message::Pong(b"p".to_vec().into())
    );

    // Every message, either way, counts in the state: hello, replace, after, both, binary and
    // big with their echoes (12), answer and drop (2), then this one.
    let count = say(&mut ws, "count").await;
    assert_eq!(
        count,
        Message::text("v1:15"),
        "the session's state is kept between calls"
    );

    ws.send(Message::text("close")).await.expect("send");
    let (ending, _) = wait_end(&mut ws, WAIT)
        .await
        .expect("the filter closes the session");
    assert_eq!(ending, Ending::Close(Some(4000)));
    eventually("the backend got the filter's Close", || async {
        backend.close_codes().contains(&Some(4000)).then_some(())
    })
    .await;
    let c = counts(&gw);
    // Not forwarded nor replaced: answer, drop, count and close.
    assert_eq!((c.dropped, c.replaced, c.answered), (4, 1, 3), "{c:?}");
    assert_eq!((c.sessions_closed, c.messages_in), (1, 16), "{c:?}");
    assert_eq!(c.call_time.count(), c.messages_in, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_open_refuses_or_picks_the_subprotocol() {
    let (gw, backend) = filtered("").await;
    let addr = listener_addr(&gw, "web");
    match ws_connect(addr, "ws.test", "/refuse-me", &[]).await {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("expected a 403 refusal, got {other:?}"),
    }
    assert!(
        backend.handshakes().is_empty(),
        "a refused session never reaches the backend"
    );
    assert_eq!(counts(&gw).sessions_refused, 1);

    let (mut ws, res) = ws_connect(
        addr,
        "ws.test",
        "/chat",
        &[("sec-websocket-protocol", "chat.v1, chat.v2")],
    )
    .await
    .expect("upgrade");
    assert_eq!(
        backend.last_handshake().header("sec-websocket-protocol"),
        Some("chat.v2"),
        "the backend is offered only the filter's pick"
    );
    assert_eq!(
        res.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"chat.v2"[..])
    );
    assert_eq!(say(&mut ws, "hi").await, Message::text("hi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_over_the_limit_closes_its_session_with_1009() {
    let (gw, backend) = filtered("[plugins.limits]\nmax_message_bytes = 1000").await;
    let addr = listener_addr(&gw, "web");
    let mut ws = ws_open(addr, "ws.test", "/chat").await;
    let mut other = ws_open(addr, "ws.test", "/chat").await;
    let fits = "a".repeat(1000);
    assert_eq!(say(&mut ws, &fits).await, Message::text(fits.clone()));
    ws.send(Message::text("b".repeat(1001)))
        .await
        .expect("send");
    let (ending, _) = wait_end(&mut ws, WAIT).await.expect("closed");
    assert_eq!(ending, Ending::Close(Some(1009)));
    eventually("the backend got 1009", || async {
        backend.close_codes().contains(&Some(1009)).then_some(())
    })
    .await;
    assert_eq!(
        say(&mut other, "still here").await,
        Message::text("still here")
    );
}

/// Each hostile message on a gateway of its own (the breaker opens after five failures): the
/// session that sent it closes with 1011, another session of the same filter carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_filters_close_only_their_own_session() {
    for hostile in ["loop", "bomb", "trap", "huge", "bigstate"] {
        let (gw, _backend) =
            filtered("[plugins.limits]\ncall_timeout = \"50ms\"\nmax_memory_mb = 32").await;
        let addr = listener_addr(&gw, "web");
        let mut victim = ws_open(addr, "ws.test", "/chat").await;
        let mut bystander = ws_open(addr, "ws.test", "/chat").await;
        assert_eq!(say(&mut bystander, "before").await, Message::text("before"));
        victim.send(Message::text(hostile)).await.expect("send");
        let (ending, _) = wait_end(&mut victim, WAIT)
            .await
            .unwrap_or_else(|| panic!("{hostile}: the session was not closed"));
        assert_eq!(ending, Ending::Close(Some(1011)), "{hostile}");
        assert_eq!(
            say(&mut bystander, "after").await,
            Message::text("after"),
            "{hostile}: another session keeps working"
        );
        assert_eq!(counts(&gw).failures, 1, "{hostile}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_open_relays_the_rest_of_the_session_unfiltered() {
    let (gw, _backend) = filtered("fail_policy = \"fail_open\"").await;
    let addr = listener_addr(&gw, "web");
    let mut ws = ws_open(addr, "ws.test", "/chat").await;
    assert_eq!(
        say(&mut ws, "replace:x").await,
        Message::text("x"),
        "filtered"
    );
    assert_eq!(
        say(&mut ws, "trap").await,
        Message::text("trap"),
        "relayed as it was"
    );
    assert_eq!(
        say(&mut ws, "replace:x").await,
        Message::text("replace:x"),
        "unfiltered from then on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_filter_takes_the_next_message_with_the_session_state() {
    let (gw, _backend) = filtered("").await;
    let addr = listener_addr(&gw, "web");
    let mut ws = ws_open(addr, "ws.test", "/chat").await;
    assert_eq!(say(&mut ws, "count").await, Message::text("v1:1"));
    within_for(
        Duration::from_secs(60),
        "replace the filter",
        gw.plugin_registry().replace(
            "filter",
            VersionRequest {
                component: ComponentSource::Path(plugin_path("fixture-message-filter")),
                kind: None,
                config: Some("v2".into()),
            },
        ),
    )
    .await
    .expect("replaced");
    assert_eq!(
        say(&mut ws, "count").await,
        Message::text("v2:2"),
        "the new version answers, with the state the old one left"
    );
}

/// The Rust rate limiter example: a session's bucket, then the client's shared by its sessions
/// (one instance, so the per-client bucket is exact). Rates are so low that nothing refills
/// during the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limiter_limits_each_session_and_each_client() {
    let backend = WsBackend::start("echo").await;
    let mut toml = plugin_engine_section();
    toml += &single_route(&[backend.addr], "");
    toml = toml.replace(
        "backend_settings = \"settings\"\n",
        "backend_settings = \"settings\"\nmessage_filter = \"limit\"\n",
    );
    toml += &plugin_section(
        "limit",
        "example-rate-limit-filter",
        "message-filter",
        r#"config = '{"session_rate": 0.001, "session_burst": 3, "client_rate": 0.001, "client_burst": 5, "notice": "slow down"}'
[plugins.limits]
max_concurrency = 1"#,
    );
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");
    let mut first = ws_open(addr, "ws.test", "/chat").await;
    for i in 0..3 {
        let text = format!("m{i}");
        assert_eq!(say(&mut first, &text).await, Message::text(text));
    }
    assert_eq!(
        say(&mut first, "m3").await,
        Message::text("slow down"),
        "session limit"
    );
    let mut second = ws_open(addr, "ws.test", "/chat").await;
    for i in 0..2 {
        let text = format!("n{i}");
        assert_eq!(say(&mut second, &text).await, Message::text(text));
    }
    assert_eq!(
        say(&mut second, "n2").await,
        Message::text("slow down"),
        "the client's limit, shared by its sessions"
    );
}
