//! The WebSocket message filter examples in a running gateway, with real sockets and real
//! components: the Python chat moderation filter (examples/python-moderation) masks or drops
//! listed words, the JavaScript command allow-list (examples/js-command-filter) closes sessions
//! sending anything but an allowed JSON command with 1008, and the demo page's chat, in a real
//! browser (headless Chromium), goes through the moderation filter on `/ws/moderated`.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wasmgate::config::Config;
use wasmgate_tests::browser::{BROWSER_WAIT, Browser};
use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::ws::{recv, round_trip, ws_open};
use wasmgate_tests::*;

/// How long a gateway may take to start when it compiles a Python or JavaScript component (the
/// first run; later ones read the compiled-code cache): seconds alone, minutes on a machine
/// busy with other builds.
const COMPILE_WAIT: Duration = Duration::from_secs(300);

/// Starts a gateway with interpreted (Python, JavaScript) plugins: the first run compiles them,
/// which takes seconds, so the bound is wider than [`start_gateway`]'s.
async fn start_with_plugins(toml: &str) -> wasmgate::Gateway {
    let config = Config::from_toml(toml)
        .unwrap_or_else(|e| panic!("test configuration refused: {e}\n--- config ---\n{toml}"));
    let gw = match within_for(
        COMPILE_WAIT,
        "Gateway::start",
        wasmgate::Gateway::start(config),
    )
    .await
    {
        Ok(gw) => gw,
        Err(e) => panic!("gateway failed to start: {e}\n--- config ---\n{toml}"),
    };
    assert!(gw.wait_for_first_probes(WAIT).await, "first probes");
    gw
}

/// Listeners named after `filters`, each with a rule to the echo backend `backend` that runs
/// the message filter of the same name (component `component`, `init` string the JSON given).
fn echo_through(backend: &WsBackend, component: &str, filters: &[(&str, &str)]) -> String {
    let mut toml = plugin_engine_section();
    toml += &pool("echo", &[backend.addr]);
    toml += &settings("ws", "");
    for (name, config) in filters {
        toml += &listener(name, 0, &[]);
        toml += &basic_rule(
            name,
            name,
            "echo",
            "ws",
            &format!("message_filter = {name:?}"),
        );
        toml += &plugin_section(
            name,
            component,
            "message-filter",
            &format!("config = '{config}'"),
        );
    }
    toml
}

fn text(message: Message, what: &str) -> String {
    match message {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("{what}: expected a text message, got {other:?}"),
    }
}

/// Sends `message` and returns the Close frame that follows (code, reason), failing the test
/// if any data message arrives first: the filter closed before the backend could echo it.
async fn closed_by(ws: &mut ws::WsClient, message: &str) -> (u16, String) {
    within("send", ws.send(Message::text(message)))
        .await
        .unwrap_or_else(|e| panic!("send {message:?}: {e}"));
    // Bounded: at most 100 control frames before the close.
    for _ in 0..100 {
        match recv(ws, "the filter's Close frame").await {
            Message::Close(Some(frame)) => {
                ws::finish_close(ws).await;
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("after {message:?}: expected a Close frame, got {other:?}"),
        }
    }
    panic!("after {message:?}: only control frames arrived")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_moderation_masks_or_drops_listed_words_and_passes_the_rest() {
    let echo = WsBackend::start("echo").await;
    let toml = echo_through(
        &echo,
        "example-python-moderation",
        &[
            ("mask", r#"{"words": ["heck", "oh darn"]}"#),
            (
                "drop",
                r#"{"words": ["heck"], "action": "drop", "notice": "not sent", "max_strikes": 2}"#,
            ),
        ],
    );
    let gw = start_with_plugins(&toml).await;

    let mut ws = ws_open(listener_addr(&gw, "mask"), "app", "/chat").await;
    for (sent, echoed) in [
        ("hello there", "hello there"),
        ("Heck, that checkered flag!", "****, that checkered flag!"),
        ("oh  darn it", "**  **** it"),
    ] {
        let back = round_trip(&mut ws, Message::text(sent), sent).await;
        assert_eq!(
            text(back, sent),
            echoed,
            "what the backend received and echoed"
        );
    }
    let back = round_trip(&mut ws, Message::binary(&b"heck"[..]), "binary").await;
    assert_eq!(
        back,
        Message::binary(&b"heck"[..]),
        "binary messages pass untouched"
    );
    ws::close_with(&mut ws, 1000).await;

    let mut ws = ws_open(listener_addr(&gw, "drop"), "app", "/chat").await;
    let notice = round_trip(&mut ws, Message::text("what the heck"), "dropped").await;
    assert_eq!(
        text(notice, "notice"),
        "not sent",
        "a dropped message is answered with the notice, to its sender only"
    );
    let back = round_trip(&mut ws, Message::text("fine words"), "after a drop").await;
    assert_eq!(
        text(back, "echo"),
        "fine words",
        "the dropped message never reached the backend: the next echo is the next message"
    );
    // The second strike (counted in the session's state) closes the session with 1008.
    let notice = round_trip(&mut ws, Message::text("HECK"), "second strike").await;
    assert_eq!(text(notice, "notice"), "not sent");
    match ws::wait_end(&mut ws, WAIT).await {
        Some((ws::Ending::Close(code), _)) => assert_eq!(code, Some(1008)),
        other => panic!("expected a Close 1008 after the second strike, got {other:?}"),
    }
    let codes = eventually("the backend's close", || async {
        let codes = echo.close_codes();
        (codes.len() >= 2).then_some(codes)
    })
    .await;
    assert_eq!(
        codes,
        [Some(1000), Some(1008)],
        "the filter's close reaches the backend too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn javascript_command_filter_passes_allowed_commands_and_closes_on_anything_else() {
    let echo = WsBackend::start("echo").await;
    let toml = echo_through(
        &echo,
        "example-js-command-filter",
        &[
            ("commands", r#"{"commands": ["say", "join"]}"#),
            ("ops", r#"{"commands": ["ping"], "field": "op"}"#),
        ],
    );
    let gw = start_with_plugins(&toml).await;
    let addr = listener_addr(&gw, "commands");

    let mut ws = ws_open(addr, "app", "/").await;
    for allowed in [
        r#"{"command":"join","room":"a"}"#,
        r#"{"command": "say", "text": "hi"}"#,
    ] {
        let back = round_trip(&mut ws, Message::text(allowed), allowed).await;
        assert_eq!(
            text(back, allowed),
            allowed,
            "an allowed command is relayed as it is"
        );
    }
    assert_eq!(
        closed_by(&mut ws, r#"{"command":"drop-table"}"#).await,
        (1008, r#"unknown command "drop-table""#.to_owned())
    );

    for (sent, reason) in [
        ("hello", "message is not JSON"),
        (r#"["say"]"#, "message is not a JSON object"),
        (r#"{"text":"hi"}"#, r#"no "command" string in the message"#),
    ] {
        let mut ws = ws_open(addr, "app", "/").await;
        assert_eq!(
            closed_by(&mut ws, sent).await,
            (1008, reason.to_owned()),
            "{sent}"
        );
    }

    // The command field is configurable.
    let mut ws = ws_open(listener_addr(&gw, "ops"), "app", "/").await;
    let allowed = r#"{"op":"ping"}"#;
    let back = round_trip(&mut ws, Message::text(allowed), allowed).await;
    assert_eq!(text(back, allowed), allowed);
    assert_eq!(
        closed_by(&mut ws, r#"{"command":"ping"}"#).await,
        (1008, r#"no "op" string in the message"#.to_owned())
    );

    let codes = eventually("the backend's closes", || async {
        let codes = echo.close_codes();
        (codes.len() >= 5).then_some(codes)
    })
    .await;
    assert_eq!(
        codes,
        [Some(1008); 5],
        "every filter close reaches the backend with 1008 too"
    );
}

/// What the test reads from the demo page: its chat lines and its status line.
const CHAT_STATE: &str = r##"
return {
  lines: [...document.querySelectorAll("#messages li")].map((li) => li.textContent),
  status: document.getElementById("status").textContent,
  moderated: document.getElementById("moderated").checked,
};
"##;

/// Waits until the page shows a chat line ending with `tail`, and returns it.
async fn page_line(browser: &Browser, tail: &str) -> String {
    browser
        .wait_for(
            &format!("a chat line ending with {tail:?}"),
            CHAT_STATE,
            vec![],
            |state| {
                state["lines"]
                    .as_array()?
                    .iter()
                    .filter_map(|l| l.as_str())
                    .find(|l| l.ends_with(tail))
                    .map(str::to_owned)
            },
        )
        .await
}

/// The next chat line of a WebSocket client ending with `tail` (join notices skipped).
async fn ws_line(ws: &mut ws::WsClient, tail: &str) -> String {
    // Bounded: a few join and welcome lines come first.
    for _ in 0..20 {
        let line = text(recv(ws, tail).await, tail);
        if line.ends_with(tail) {
            return line;
        }
    }
    panic!("no chat line ending with {tail:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_page_chats_through_the_moderation_filter_in_a_browser() {
    let component = wasmgate_cli::demo::moderation_component().unwrap_or_else(|e| panic!("{e}"));
    let mut backends = wasmgate_cli::demo::start_backends_with(Ok(component))
        .await
        .expect("demo backends");
    let (gw, error) = within_for(COMPILE_WAIT, "the demo gateway", backends.start_gateway(0))
        .await
        .expect("the demo gateway starts");
    assert_eq!(error, None, "the moderation filter loads");
    let addr = listener_addr(&gw, "demo-http");
    // Another tab, on the plain path.
    let mut plain = ws_open(addr, "demo", "/ws/chat").await;

    let browser = Browser::start(900, 800).await;
    within_for(
        BROWSER_WAIT,
        "open the demo page",
        browser.client.goto(&format!("http://{addr}/#moderated")),
    )
    .await
    .expect("the demo page opens");
    let notice = page_line(&browser, "in what you send.").await;
    assert!(
        notice.ends_with(
            "This path is moderated: the gateway masks darn, drat, heck in what you send."
        ),
        "{notice}"
    );
    let state = browser.eval(CHAT_STATE, vec![]).await;
    assert_eq!(state["moderated"], true, "#moderated ticks the box");
    assert!(
        state["status"]
            .as_str()
            .is_some_and(|s| s.ends_with("/ws/moderated")),
        "{state}"
    );

    browser
        .eval(
            r#"document.getElementById("text").value = arguments[0];
               document.getElementById("chat").requestSubmit();"#,
            vec![json!("oh heck, the Drat cat")],
        )
        .await;
    page_line(&browser, ": oh ****, the **** cat").await;
    ws_line(&mut plain, ": oh ****, the **** cat").await;

    // What the plain path sends is not filtered, whoever reads it.
    within("send", plain.send(Message::text("heck is fine here")))
        .await
        .unwrap();
    page_line(&browser, ": heck is fine here").await;

    browser.close().await;
    ws::close_with(&mut plain, 1000).await;
    gw.shutdown().await;
    backends.shutdown().await;
}
