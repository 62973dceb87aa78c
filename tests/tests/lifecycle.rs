//! Starting and stopping: shutdown finishes in-flight work and stops accepting.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wasmgate_tests::client::try_send;
use wasmgate_tests::config::single_route;
use wasmgate_tests::ws::{Ending, round_trip, wait_end, ws_open};
use wasmgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_an_in_flight_request_finish() {
    let slow = HttpBackend::builder("slow")
        .delay(Duration::from_millis(700))
        .start()
        .await;
    let gw = start_gateway(&single_route(&[slow.addr], "")).await;
    let addr = listener_addr(&gw, "web");

    // The backend answers 700 ms after the request reaches it, so no earlier than this plus 700 ms.
    let sent = Instant::now();
    let in_flight = tokio::spawn(async move {
        let req = http::Request::get("/in-flight")
            .header("host", "life.test")
            .body(String::new())
            .expect("request");
        try_send(addr, req).await
    });
    eventually("the slow request reaches the backend", || async {
        (slow.hits_under("/in-flight") == 1).then_some(())
    })
    .await;

    within("shutdown with a request in flight", gw.shutdown()).await;
    let shutdown_at = sent.elapsed();

    let reply = within("the in-flight request", in_flight)
        .await
        .expect("request task")
        .unwrap_or_else(|e| panic!("shutdown must let the in-flight request finish, but: {e}"));
    assert_eq!(
        (reply.status.as_u16(), reply.backend()),
        (200, Some("slow")),
        "the in-flight request completes normally during shutdown"
    );
    assert!(
        shutdown_at >= Duration::from_millis(700),
        "shutdown returned {shutdown_at:?} after the request was sent, before the backend (700 ms) could answer it"
    );

    let refused = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await;
    let answered = match refused {
        Ok(Ok(mut stream)) => {
            // Connected to a socket nobody serves any more (or to its backlog): no answer.
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut stream,
                b"GET / HTTP/1.1\r\nHost: life.test\r\n\r\n",
            )
            .await;
            let (_, got) =
                wasmgate_tests::client::read_until_closed(&mut stream, Duration::from_millis(500))
                    .await;
            !got.is_empty()
        }
        _ => false,
    };
    assert!(!answered, "after shutdown the listener no longer serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_closes_websocket_sessions_with_1001() {
    let backend = WsBackend::start("echo").await;
    let gw = start_gateway(&single_route(&[backend.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let mut ws = ws_open(addr, "ws.test", "/").await;
    round_trip(&mut ws, Message::text("hi"), "echo before shutdown").await;

    let shutdown = tokio::spawn(gw.shutdown());
    let ended = wait_end(&mut ws, WAIT).await;
    assert!(
        matches!(ended, Some((Ending::Close(Some(1001)), _))),
        "shutdown closes open WebSocket sessions with 1001 (going away), got {ended:?}"
    );
    within("shutdown with a WebSocket session", shutdown)
        .await
        .expect("shutdown task");
    eventually("the backend side of the session ends", || async {
        (backend.sessions_ended() == 1).then_some(())
    })
    .await;
    assert_eq!(
        backend.close_codes(),
        [Some(1001)],
        "shutdown closes the backend side of the session with a Close frame, code 1001"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_gateway_shuts_down_promptly() {
    let b = HttpBackend::start("app").await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    assert_eq!(get(addr, "life.test", "/").await.status.as_u16(), 200);
    // With nothing in flight shutdown is prompt: bounded far below the 30 s shutdown timeout it
    // would otherwise wait out.
    within("shutdown of an idle gateway", gw.shutdown()).await;
}
