//! Configuration reload while traffic flows: validated before anything changes, listeners added
//! and removed, rules and pools changed, connection draining of removed servers, WebSocket
//! sessions of servers that stay left alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wasmgate::Config;
use wasmgate_tests::client::try_send_for;
use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::ws::{WsClient, finish_close, round_trip, ws_open};
use wasmgate_tests::*;

/// `web` → `pool` of `addrs`, with backend settings lines `extra`.
fn one_route(addrs: &[SocketAddr], extra: &str) -> String {
    let mut text = listener("web", 0, &[]);
    text += &pool("pool", addrs);
    text += &settings("settings", extra);
    text += &basic_rule("rule", "web", "pool", "settings", "");
    text
}

fn config(toml: &str) -> Config {
    Config::from_toml(toml).unwrap_or_else(|e| panic!("test configuration refused: {e}\n{toml}"))
}

async fn reload(gw: &wasmgate::Gateway, toml: &str) -> wasmgate::control::ReloadReport {
    match within("reload", gw.reload(config(toml))).await {
        Ok(report) => report,
        Err(e) => panic!("reload refused: {e}\n--- config ---\n{toml}"),
    }
}

/// Waits until every server of the current snapshot has had a probe answered.
async fn probed(gw: &wasmgate::Gateway) {
    assert!(
        gw.wait_for_first_probes(WAIT).await,
        "the probes after the reload did not complete"
    );
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmgate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write config");
    path
}

/// Sends `whoami` and returns the backend's name.
async fn whoami(ws: &mut WsClient) -> String {
    match round_trip(ws, Message::text("whoami"), "whoami").await {
        Message::Text(t) => t.to_string(),
        other => panic!("whoami answered {other:?}"),
    }
}

/// Reads until the session ends, within `limit`; returns the close code.
async fn close_code(ws: &mut WsClient, limit: Duration) -> Option<u16> {
    let end = within_for(limit, "the session's end", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("the session broke instead of closing: {e}"),
                None => panic!("the session ended without a Close frame"),
            }
        }
    })
    .await;
    finish_close(ws).await;
    end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_pools_and_listeners_change_while_serving() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let gw = start_gateway(&one_route(&[a.addr], "")).await;
    let web = listener_addr(&gw, "web");
    assert_routed(web, "example.com", "/", "a", "routing after reload").await;

    // The rule now forwards to another pool, and a second listener appears on a port of its own.
    let mut next = listener("web", 0, &[]);
    next += &listener("extra", 0, &[]);
    next += &pool("pool", &[a.addr]);
    next += &pool("other", &[b.addr]);
    next += &settings("settings", "");
    next += &basic_rule("rule", "web", "other", "settings", "");
    next += &basic_rule("extra-rule", "extra", "pool", "settings", "");
    let report = reload(&gw, &next).await;
    assert_eq!(report.sockets_added.len(), 1, "{report:?}");
    assert!(report.sockets_removed.is_empty(), "{report:?}");
    probed(&gw).await;
    assert_eq!(
        listener_addr(&gw, "web"),
        web,
        "a listener that stays keeps its socket"
    );
    assert_routed(web, "example.com", "/", "b", "routing after reload").await;
    let extra = listener_addr(&gw, "extra");
    assert_routed(extra, "example.com", "/", "a", "routing after reload").await;

    // The second listener goes away again: its port stops accepting.
    let report = reload(&gw, &one_route(&[b.addr], "")).await;
    assert_eq!(report.sockets_removed.len(), 1, "{report:?}");
    assert!(gw.listener_addr("extra").is_none());
    eventually(
        "the removed listener's port to refuse connections",
        || async {
            tokio::net::TcpStream::connect(extra)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    probed(&gw).await;
    assert_routed(web, "example.com", "/", "b", "routing after reload").await;
    gw.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_configuration_changes_nothing() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let path = temp_file("invalid.toml", &one_route(&[a.addr], ""));
    let gw = start_gateway(&one_route(&[a.addr], "")).await;
    gw.set_config_file(path.clone(), false);
    let web = listener_addr(&gw, "web");

    // A rule naming a pool that does not exist: refused with the field named.
    let mut broken = one_route(&[b.addr], "");
    broken = broken.replace("backend_pool = \"pool\"", "backend_pool = \"missing\"");
    std::fs::write(&path, &broken).expect("write");
    let err = gw
        .reload_from_file()
        .await
        .expect_err("a rule naming a missing pool must be refused");
    let message = err.to_string();
    assert!(
        message.contains("rules[0].backend_pool") && message.contains("missing"),
        "the error names the field and the value: {message}"
    );
    assert_routed(web, "example.com", "/", "a", "routing after reload").await;

    // A port that cannot be bound: refused before anything changes, the new rule included.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut clash = listener("web", 0, &[]);
    clash += &listener("clash", port, &[]);
    clash += &pool("pool", &[b.addr]);
    clash += &settings("settings", "");
    clash += &basic_rule("rule", "web", "pool", "settings", "");
    clash += &basic_rule("clash-rule", "clash", "pool", "settings", "");
    let err = gw
        .reload(config(&clash))
        .await
        .expect_err("a port in use must refuse the reload");
    assert!(err.to_string().contains("clash"), "{err}");
    assert_routed(web, "example.com", "/", "a", "routing after reload").await;
    assert!(gw.listener_addr("clash").is_none());

    // The valid file applies.
    std::fs::write(&path, one_route(&[b.addr], "")).expect("write");
    gw.reload_from_file().await.expect("a valid file applies");
    probed(&gw).await;
    assert_routed(web, "example.com", "/", "b", "routing after reload").await;
    gw.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_file_is_applied_by_itself() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let path = temp_file("watched.toml", &one_route(&[a.addr], ""));
    let gw = start_gateway(&one_route(&[a.addr], "")).await;
    gw.set_config_file(path.clone(), true);
    let web = listener_addr(&gw, "web");
    assert_routed(web, "example.com", "/", "a", "routing after reload").await;
    // File stamps have a one-second resolution on some file systems: the rewrite gets a later one.
    write_changed(&path, &one_route(&[b.addr], ""));
    eventually("the changed file to route to b", || async {
        let reply = get(web, "example.com", "/").await;
        (reply.backend() == Some("b")).then_some(())
    })
    .await;
    gw.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_sessions_of_servers_that_stay_are_untouched() {
    let ws1 = WsBackend::start("ws1").await;
    let ws2 = WsBackend::start("ws2").await;
    let gw = start_gateway(&one_route(&[ws1.addr], "request_timeout = 60")).await;
    let web = listener_addr(&gw, "web");
    let mut session = ws_open(web, "example.com", "/chat").await;
    assert_eq!(whoami(&mut session).await, "ws1");

    // The pool gains a server, a listener appears, the timeout changes: ws1 stays.
    let mut next = listener("web", 0, &[]);
    next += &listener("extra", 0, &[]);
    next += &pool("pool", &[ws1.addr, ws2.addr]);
    next += &settings("settings", "request_timeout = 90");
    next += &basic_rule("rule", "web", "pool", "settings", "");
    next += &basic_rule("extra-rule", "extra", "pool", "settings", "");
    let report = reload(&gw, &next).await;
    assert!(report.servers_draining.is_empty(), "{report:?}");
    for i in 0..5 {
        let text = format!("still here {i}");
        assert_eq!(
            round_trip(
                &mut session,
                Message::text(text.clone()),
                "echo after reload"
            )
            .await,
            Message::text(text)
        );
    }
    assert_eq!(whoami(&mut session).await, "ws1");
    assert!(
        ws1.close_codes().is_empty(),
        "ws1 saw {:?}",
        ws1.close_codes()
    );
    session.close(None).await.expect("close");
    gw.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_server_drains_then_its_sessions_close_with_1001() {
    let ws1 = WsBackend::start("ws1").await;
    let ws2 = WsBackend::start("ws2").await;
    let draining = "request_timeout = 60\nconnection_draining = { enabled = true, timeout = 1 }";
    let gw = start_gateway(&one_route(&[ws1.addr], draining)).await;
    let web = listener_addr(&gw, "web");
    let mut session = ws_open(web, "example.com", "/chat").await;
    assert_eq!(whoami(&mut session).await, "ws1");

    let report = reload(&gw, &one_route(&[ws2.addr], draining)).await;
    assert_eq!(report.servers_draining.len(), 1, "{report:?}");
    let snapshot = gw.snapshot();
    assert_eq!(snapshot.draining.len(), 1);
    assert_eq!(
        snapshot.draining[0].status(),
        wasmgate::probe::Status::Draining
    );
    let view = wasmgate::admin::BackendHealth::of(&snapshot);
    let servers: Vec<_> = view
        .backend_address_pools
        .iter()
        .flat_map(|p| &p.backend_http_settings_collection)
        .flat_map(|c| &c.servers)
        .map(|s| (s.address.clone(), s.health, s.in_rotation))
        .collect();
    assert!(
        servers.contains(&(
            ws1.addr.to_string(),
            wasmgate::probe::Status::Draining,
            false
        )),
        "the health view shows the removed server draining: {servers:?}"
    );
    // Within the draining time the session goes on.
    assert_eq!(
        round_trip(
            &mut session,
            Message::text("during drain"),
            "echo while draining"
        )
        .await,
        Message::text("during drain")
    );
    probed(&gw).await;
    // New sessions go to the server that stays.
    let mut fresh = ws_open(web, "example.com", "/chat").await;
    assert_eq!(whoami(&mut fresh).await, "ws2");
    // Then the drained session ends cleanly, with 1001 (going away), at the end of the 1 s
    // draining time, long before its 60 s request timeout.
    let code = close_code(&mut session, WAIT).await;
    assert_eq!(code, Some(1001));
    eventually("ws1 to get its Close 1001", || async {
        ws1.close_codes().contains(&Some(1001)).then_some(())
    })
    .await;
    // The session on the server that stays is untouched.
    assert_eq!(whoami(&mut fresh).await, "ws2");
    fresh.close(None).await.expect("close");
    gw.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_draining_a_removed_servers_sessions_close_at_once() {
    let ws1 = WsBackend::start("ws1").await;
    let ws2 = WsBackend::start("ws2").await;
    let gw = start_gateway(&one_route(&[ws1.addr], "request_timeout = 60")).await;
    let web = listener_addr(&gw, "web");
    let mut session = ws_open(web, "example.com", "/chat").await;
    assert_eq!(whoami(&mut session).await, "ws1");
    reload(&gw, &one_route(&[ws2.addr], "request_timeout = 60")).await;
    // At once: long before its 60 s request timeout.
    let code = close_code(&mut session, WAIT).await;
    assert_eq!(code, Some(1001));
    gw.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_api_reloads_the_file() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let admin = "[admin]\nport = 0\ntoken = \"reload-secret-token-0123\"\n";
    let path = temp_file("admin.toml", &(one_route(&[a.addr], "") + admin));
    let gw = start_gateway(&(one_route(&[a.addr], "") + admin)).await;
    gw.set_config_file(path.clone(), false);
    let web = listener_addr(&gw, "web");
    let admin_addr = gw.admin_addr().expect("admin listener");
    let post = |token: &'static str| {
        http::Request::post("/api/reload")
            .header("host", "admin")
            .header("authorization", format!("Bearer {token}"))
            .body(String::new())
            .expect("request")
    };
    std::fs::write(&path, one_route(&[b.addr], "") + admin).expect("write");
    let refused = send(admin_addr, post("wrong")).await;
    assert_eq!(refused.status, 401);
    assert_routed(web, "example.com", "/", "a", "routing after reload").await;

    let applied = send(admin_addr, post("reload-secret-token-0123")).await;
    assert_eq!(applied.status, 200, "{}", applied.text());
    assert!(
        applied.text().contains("\"listeners\": 1"),
        "{}",
        applied.text()
    );
    probed(&gw).await;
    assert_routed(web, "example.com", "/", "b", "routing after reload").await;

    std::fs::write(&path, "[[listeners]]\nname = 7\n").expect("write");
    let invalid = send(admin_addr, post("reload-secret-token-0123")).await;
    assert_eq!(invalid.status, 422, "{}", invalid.text());
    assert!(
        invalid.text().contains("admin.toml line 2"),
        "the error says where: {}",
        invalid.text()
    );
    assert_routed(web, "example.com", "/", "b", "routing after reload").await;
    gw.shutdown_within(Duration::from_secs(5)).await;
}

/// Counts of a load run.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
}

/// Under continuous HTTP requests and WebSocket sessions, 50 reloads alternate between two
/// configurations that differ in rules, listeners and settings but keep every server: no
/// request fails and no session drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_reloads_under_load_fail_nothing() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let ws = WsBackend::start("ws").await;
    let build = |variant: usize| {
        let mut text = listener("web", 0, &[]);
        if variant % 2 == 1 {
            text += &listener("extra", 0, &[]);
        }
        text += &pool("http", &[a.addr, b.addr]);
        text += &pool("ws", &[ws.addr]);
        text += &settings(
            "settings",
            &format!("request_timeout = {}", 60 + variant % 2),
        );
        text += "[[url_path_maps]]\nname = \"paths\"\ndefault_backend_pool = \"http\"\ndefault_backend_settings = \"settings\"\n";
        text += "[[url_path_maps.path_rules]]\nname = \"chat\"\npaths = [\"/chat*\"]\nbackend_pool = \"ws\"\nbackend_settings = \"settings\"\n\n";
        text += "[[rules]]\nname = \"rule\"\nlistener = \"web\"\nurl_path_map = \"paths\"\n\n";
        if variant % 2 == 1 {
            text += &basic_rule("extra-rule", "extra", "http", "settings", "");
        }
        text
    };
    let gw = Arc::new(start_gateway(&build(0)).await);
    let web = listener_addr(&gw, "web");
    let stop = Arc::new(AtomicBool::new(false));
    let http = Arc::new(Tally::default());
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, http) = (stop.clone(), http.clone());
        workers.push(tokio::spawn(async move {
            // Bounded by `stop`, which the test sets after the reloads (themselves bounded).
            while !stop.load(Ordering::Relaxed) {
                match try_send_for(
                    Duration::from_secs(5),
                    web,
                    http::Request::get("/")
                        .header("host", "example.com")
                        .body(String::new())
                        .expect("request"),
                )
                .await
                {
                    Ok(r) if r.status == 200 => http.ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("request failed during reloads: {} {}", r.status, r.text());
                        http.failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("request failed during reloads: {e}");
                        http.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let messages = Arc::new(Tally::default());
    let mut sessions = Vec::new();
    for s in 0..8 {
        let (stop, messages) = (stop.clone(), messages.clone());
        sessions.push(tokio::spawn(async move {
            let mut session = ws_open(web, "example.com", "/chat").await;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("session {s} message {n}");
                match tokio::time::timeout(Duration::from_secs(5), async {
                    session.send(Message::text(text.clone())).await.ok()?;
                    match session.next().await {
                        Some(Ok(Message::Text(t))) if t.as_str() == text => Some(()),
                        _ => None,
                    }
                })
                .await
                {
                    Ok(Some(())) => messages.ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        messages.failed.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                };
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            session.close(None).await.is_ok()
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 1..=50 {
        reload(&gw, &build(i)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        within("an HTTP load task to stop", w)
            .await
            .expect("worker");
    }
    let mut clean = 0;
    for s in sessions {
        if within("a WebSocket session task to stop", s)
            .await
            .expect("session")
        {
            clean += 1;
        }
    }
    let (ok, failed) = (
        http.ok.load(Ordering::Relaxed),
        http.failed.load(Ordering::Relaxed),
    );
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > 200, "only {ok} requests were made during the reloads");
    assert_eq!(messages.failed.load(Ordering::Relaxed), 0);
    assert_eq!(
        clean, 8,
        "every session lasted through the reloads and closed cleanly"
    );
    assert!(messages.ok.load(Ordering::Relaxed) > 100);
    assert!(
        ws.close_codes().iter().all(|c| *c != Some(1001)),
        "no session was closed by the gateway: {:?}",
        ws.close_codes()
    );
    match Arc::try_unwrap(gw) {
        Ok(gw) => gw.shutdown_within(Duration::from_secs(5)).await,
        Err(_) => panic!("the gateway is still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_that_stay_keep_their_probe_schedule() {
    let a = HttpBackend::start("a").await;
    let gw = start_gateway(&one_route(&[a.addr], "")).await;
    let web = listener_addr(&gw, "web");
    let probes = a.probe_hits();
    assert!(probes >= 1);
    for i in 0..10 {
        reload(
            &gw,
            &one_route(&[a.addr], &format!("request_timeout = {}", 20 + i)),
        )
        .await;
    }
    probed(&gw).await;
    assert_routed(
        web,
        "example.com",
        "/",
        "a",
        "the kept server stays in rotation",
    )
    .await;
    assert_eq!(
        a.probe_hits(),
        probes,
        "ten reloads must not probe a kept server again before its interval (30 s)"
    );
    gw.shutdown_within(Duration::from_secs(5)).await;
}

/// Listener `web`: `/new/*` → pool `new_path_pool`, anything else → pool `old`; `pools` are the
/// backend pool sections. Default probe (timeout 30 s).
fn moving_path(pools: &str, new_path_pool: &str) -> String {
    let mut text = listener("web", 0, &[]);
    text += pools;
    text += &settings("settings", "");
    text += "[[url_path_maps]]\nname = \"paths\"\ndefault_backend_pool = \"old\"\ndefault_backend_settings = \"settings\"\n";
    text += &format!(
        "[[url_path_maps.path_rules]]\nname = \"new\"\npaths = [\"/new/*\"]\nbackend_pool = {new_path_pool:?}\nbackend_settings = \"settings\"\n\n"
    );
    text += "[[rules]]\nname = \"rule\"\nlistener = \"web\"\nurl_path_map = \"paths\"\n\n";
    text
}

/// A reload that sends a path to a brand-new pool fails none of the requests flowing to that
/// path: the new server is probed before the new configuration routes anything to it (its first
/// probe is held until a request sent meanwhile has been answered), and the old configuration
/// serves until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_path_moved_to_a_new_pool_fails_no_request_while_its_server_is_probed() {
    let old = HttpBackend::start("old").await;
    let fresh = HttpBackend::start("fresh").await;
    let gate = ProbeGate::new();
    fresh
        .set_probe_answer(ProbeAnswer::Held(gate.clone()))
        .await;
    let gw = start_gateway(&moving_path(&pool("old", &[old.addr]), "old")).await;
    let web = listener_addr(&gw, "web");

    // One request at a time, until the new server has served 20 (at most 5,000 requests).
    const LIMIT: usize = 5_000;
    let client = tokio::spawn({
        let gate = gate.clone();
        async move {
            let (mut served, mut failed) = (Vec::new(), Vec::new());
            for i in 0..LIMIT {
                let held = gate.has_arrived();
                match wasmgate_tests::client::try_send(web, get_request(&format!("/new/{i}"))).await
                {
                    Ok(r) if r.status == 200 => served.push(r.backend().unwrap_or("?").to_owned()),
                    Ok(r) => failed.push(format!("request {i}: {} {}", r.status, r.text())),
                    Err(e) => failed.push(format!("request {i}: {e}")),
                }
                // A request sent while the new server's first probe was held has been answered.
                if held {
                    gate.open();
                }
                if served.iter().filter(|b| *b == "fresh").count() == 20 {
                    break;
                }
            }
            (served, failed)
        }
    });
    let pools = pool("old", &[old.addr]) + &pool("fresh", &[fresh.addr]);
    let report = reload(&gw, &moving_path(&pools, "fresh")).await;
    let (served, failed) = within("the client's requests", client)
        .await
        .expect("client task");
    assert!(
        failed.is_empty(),
        "no request fails across the reload: {} failed of {}: {:?}",
        failed.len(),
        failed.len() + served.len(),
        &failed[..failed.len().min(5)]
    );
    let by_old = served.iter().filter(|b| *b == "old").count();
    assert!(
        by_old >= 1,
        "the old configuration served while the new server was probed: {served:?}"
    );
    assert_eq!(
        served.iter().filter(|b| *b == "fresh").count(),
        20,
        "then the new pool serves the path"
    );
    assert_eq!(
        report.servers_added,
        [format!(
            "{} in pool fresh with settings settings: Healthy",
            fresh.addr
        )],
        "{report:?}"
    );
    assert!(report.servers_unknown.is_empty(), "{report:?}");
    gw.shutdown().await;
}

fn get_request(path: &str) -> http::Request<String> {
    http::Request::get(path)
        .header("host", "reload.test")
        .body(String::new())
        .expect("request")
}
