//! Health probes and the backend-health view: backends switched between healthy, failing
//! status, wrong body, slow and refusing; the transitions and their reasons; min_servers;
//! all-down; traffic following health; WebSocket sessions across a health change; the admin
//! API, its token, and the `wasmgate health` table; probe configuration errors.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;
use wasmgate::Config;
use wasmgate::admin::BackendHealth;
use wasmgate::admin::view::ServerHealth;
use wasmgate::probe::Status;
use wasmgate_cli::admin::client;
use wasmgate_tests::config::{basic_rule, listener, pool, settings, single_route};
use wasmgate_tests::ws::{close_with, round_trip, ws_open};
use wasmgate_tests::*;

/// A custom probe `health` on `/health` every 100 ms (timeout 300 ms, down after 2 failures,
/// body must contain "ok"), plus `extra` lines.
fn probe_section(extra: &str) -> String {
    format!(
        "[[probes]]\nname = \"health\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"300ms\"\nunhealthy_threshold = 2\nmatch = {{ status_codes = [\"200-399\"], body = \"ok\" }}\n{extra}\n\n"
    )
}

/// Listener `web` → pool `pool` of `addrs` with settings `settings` probed by `health`.
fn probed_route(addrs: &[SocketAddr], probe_extra: &str) -> String {
    single_route(addrs, "probe = \"health\"") + &probe_section(probe_extra)
}

/// The view's entry for the server written as `addr` in any pool.
fn server(gw: &wasmgate::Gateway, addr: &str) -> ServerHealth {
    BackendHealth::of(&gw.snapshot())
        .backend_address_pools
        .into_iter()
        .flat_map(|p| p.backend_http_settings_collection)
        .flat_map(|s| s.servers)
        .find(|s| s.address == addr)
        .unwrap_or_else(|| panic!("the health view has no server {addr}"))
}

/// Waits (bounded) until the server reaches `status`; returns its view entry.
async fn reaches(
    gw: &wasmgate::Gateway,
    addr: SocketAddr,
    status: Status,
    why: &str,
) -> ServerHealth {
    let addr = addr.to_string();
    eventually(&format!("{addr} becomes {status}: {why}"), || async {
        let s = server(gw, &addr);
        (s.health == status).then_some(s)
    })
    .await
}

/// Waits (bounded) until the server is in rotation, or out of it. The rotation follows a status
/// change a moment later (it is recomputed for the whole pool).
async fn in_rotation(gw: &wasmgate::Gateway, addr: SocketAddr, expected: bool, why: &str) {
    let addr = addr.to_string();
    eventually(why, || async {
        (server(gw, &addr).in_rotation == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_transition_with_its_reason() {
    let b = HttpBackend::start("b").await;
    let gw = start_gateway(&probed_route(&[b.addr], "")).await;

    let s = reaches(&gw, b.addr, Status::Healthy, "it answers 200 ok").await;
    assert_eq!(s.health_probe_log, "Success: received 200");
    assert_eq!(s.consecutive_failures, 0, "{s:?}");
    in_rotation(&gw, b.addr, true, "a healthy server is in rotation").await;
    assert!(
        s.last_probe_time
            .as_deref()
            .is_some_and(|t| t.ends_with('Z')),
        "{s:?}"
    );
    assert!(
        s.latency_ms.is_some_and(|ms| (0.0..300.0).contains(&ms)),
        "{s:?}"
    );
    let p = b.probes().pop().expect("probes arrived");
    assert_eq!((p.method.as_str(), p.uri.as_str()), ("GET", "/health"));

    let cases = [
        (
            ProbeAnswer::Status(500),
            "Status code mismatch: expected 200-399, received 500",
        ),
        (
            ProbeAnswer::Body("nope".into()),
            "Body mismatch: 'ok' not found",
        ),
        (
            ProbeAnswer::Slow(Duration::from_secs(2)),
            "Timeout: no answer within 300 ms",
        ),
        (ProbeAnswer::Refusing, "Connection refused"),
    ];
    for (answer, reason) in cases {
        b.set_probe_answer(answer.clone()).await;
        let s = reaches(
            &gw,
            b.addr,
            Status::Unhealthy,
            &format!("probes get {answer:?}"),
        )
        .await;
        assert_eq!(s.health_probe_log, reason, "the reason for {answer:?}");
        in_rotation(
            &gw,
            b.addr,
            false,
            "an unhealthy server leaves the rotation",
        )
        .await;
        assert!(
            s.consecutive_failures >= 2,
            "down only after 2 consecutive failures: {s:?}"
        );

        b.set_probe_answer(ProbeAnswer::Healthy).await;
        let s = reaches(&gw, b.addr, Status::Healthy, "probes succeed again").await;
        assert_eq!(s.health_probe_log, "Success: received 200");
        assert_eq!(s.consecutive_failures, 0, "{s:?}");
        in_rotation(&gw, b.addr, true, "a server up again rejoins the rotation").await;
        assert_routed(
            listener_addr(&gw, "web"),
            "h.test",
            "/app/back",
            "b",
            &format!("back in rotation after {answer:?}"),
        )
        .await;
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn down_after_the_threshold_up_after_one_success() {
    let b = HttpBackend::start("b").await;
    let toml = probed_route(&[b.addr], "")
        .replace("unhealthy_threshold = 2", "unhealthy_threshold = 3")
        .replace("interval = \"100ms\"", "interval = \"150ms\"");
    let gw = start_gateway(&toml).await;
    reaches(&gw, b.addr, Status::Healthy, "first probe").await;

    b.set_probe_answer(ProbeAnswer::Status(503)).await;
    // Watch every state the view passes through on the way down.
    let key = b.addr.to_string();
    let mut seen: Vec<(Status, u32)> = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let s = server(&gw, &key);
        let state = (s.health, s.consecutive_failures);
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        if s.health == Status::Unhealthy || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        seen.last(),
        Some(&(Status::Unhealthy, 3)),
        "down exactly at the 3rd consecutive failure; states seen {seen:?}"
    );
    assert!(
        seen.iter().all(|&(st, n)| st == Status::Healthy || n >= 3),
        "healthy until the threshold: {seen:?}"
    );
    assert!(
        seen.contains(&(Status::Healthy, 1)) || seen.contains(&(Status::Healthy, 2)),
        "failures below the threshold keep the server healthy: {seen:?}"
    );

    b.set_probe_answer(ProbeAnswer::Healthy).await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let s = server(&gw, &key);
        if seen.last() != Some(&(s.health, s.consecutive_failures)) {
            seen.push((s.health, s.consecutive_failures));
        }
        if s.health == Status::Healthy || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        seen.last(),
        Some(&(Status::Healthy, 0)),
        "one success brings the server back: {seen:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_probe_is_application_gateways() {
    let b = HttpBackend::start("b").await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let s = server(&gw, &b.addr.to_string());
    assert_eq!(
        (s.health, s.health_probe_log.as_str()),
        (Status::Healthy, "Success: received 200")
    );
    let view = BackendHealth::of(&gw.snapshot());
    assert_eq!(
        view.backend_address_pools[0].backend_http_settings_collection[0]
            .backend_http_settings
            .probe,
        None,
        "no custom probe: the default one"
    );
    let p = b.probes().first().cloned().expect("a probe at start");
    assert_eq!((p.method.as_str(), p.uri.as_str()), ("GET", "/"));
    assert_eq!(p.header("host"), Some("127.0.0.1"), "default probe Host");
    gw.shutdown().await;

    let gw = start_gateway(&single_route(&[b.addr], "host_name = \"backend.internal\"")).await;
    let p = b.probes().pop().expect("a probe at start");
    assert_eq!(
        p.header("host"),
        Some("backend.internal"),
        "the default probe sends the settings' host name when they have one"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_probe_host_path_and_port() {
    let traffic = HttpBackend::start("traffic").await;
    let health_port = HttpBackend::start("health-port").await;
    let toml = probed_route(
        &[traffic.addr],
        &format!(
            "host = \"probe.internal\"\nport = {}",
            health_port.addr.port()
        ),
    )
    .replace("path = \"/health\"", "path = \"/healthz?deep=1\"");
    let gw = start_gateway(&toml).await;
    let p = health_port
        .probes()
        .pop()
        .expect("the probe went to the probe's port");
    assert_eq!(p.uri, "/healthz?deep=1");
    assert_eq!(p.header("host"), Some("probe.internal"));
    assert_eq!(traffic.probe_hits(), 0, "nothing probes the traffic port");
    reaches(&gw, traffic.addr, Status::Healthy, "its probe port answers").await;
    gw.shutdown().await;

    let toml = single_route(
        &[traffic.addr],
        "probe = \"health\"\nhost_name = \"site.example\"",
    ) + &probe_section("pick_host_name_from_backend_settings = true");
    let gw = start_gateway(&toml).await;
    let p = traffic.probes().pop().expect("probe");
    assert_eq!(
        p.header("host"),
        Some("site.example"),
        "pick_host_name_from_backend_settings sends the settings' host_name"
    );
    gw.shutdown().await;
}

/// The port opens only once every server has had its first probe answered: a request that
/// arrives meanwhile waits in the accept queue and is served, instead of meeting a pool that is
/// all Unknown (502). The first probe is held until a client has sent a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_while_the_first_probes_run_at_start() {
    let b = HttpBackend::start("b").await;
    let gate = ProbeGate::new();
    b.set_probe_answer(ProbeAnswer::Held(gate.clone())).await;
    let port = free_port();
    // A probe timeout far beyond what opening the gate takes, on any machine.
    let toml = (listener("web", port, &[])
        + &pool("pool", &[b.addr])
        + &settings("settings", "probe = \"health\"")
        + &basic_rule("rule", "web", "pool", "settings", "")
        + &probe_section(""))
        .replace("timeout = \"300ms\"", "timeout = \"10s\"");
    let config =
        Config::from_toml(&toml).unwrap_or_else(|e| panic!("configuration refused: {e}\n{toml}"));

    // The client starts once the first probe is held (the port is bound by then), sends its
    // first request, lets the probe go, and goes on sending, one request at a time.
    const REQUESTS: usize = 50;
    let client = tokio::spawn({
        let gate = gate.clone();
        async move {
            within("the first probe arrives", gate.arrived()).await;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut answers = Vec::with_capacity(REQUESTS);
            for i in 0..REQUESTS {
                let request =
                    format!("GET /app/{i} HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n");
                let answer = within("one request", async {
                    let mut stream = tokio::net::TcpStream::connect(addr).await?;
                    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await?;
                    // Sent while the first probe is held: let it go.
                    gate.open();
                    wasmgate_tests::client::read_response(&mut stream)
                        .await
                        .map_err(std::io::Error::other)
                })
                .await;
                answers.push(match answer {
                    Ok(r) => (r.status, r.header("x-backend").map(str::to_owned)),
                    Err(e) => panic!("request {i}: {e}"),
                });
            }
            answers
        }
    });
    let gw = match within_for(2 * WAIT, "Gateway::start", wasmgate::Gateway::start(config)).await {
        Ok(gw) => gw,
        Err(e) => panic!("gateway failed to start: {e}"),
    };
    assert_eq!(
        server(&gw, &b.addr.to_string()).health,
        Status::Healthy,
        "the gateway starts serving once the first probes have answered"
    );
    let answers = within_for(2 * WAIT, "the client's requests", client)
        .await
        .expect("client task");
    let failed: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| **a != (200, Some("b".to_owned())))
        .collect();
    assert!(
        failed.is_empty(),
        "every request sent from the moment the port was bound is served by b; failed: {failed:?}"
    );
    assert_eq!(b.hits_under("/app/"), REQUESTS);
    gw.shutdown().await;
}

/// Round robin over the servers in rotation only: each takes an equal share, whatever the
/// number and the position of the servers down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_spreads_evenly_over_the_healthy_servers() {
    // Which servers are down, and how many requests each healthy one gets.
    let patterns: [(&[bool], usize); 4] = [
        (&[true, false, true], 3),
        (&[false, true, true, false, true], 3),
        (&[true, true, false, false], 4),
        (&[false, false, false, true], 3),
    ];
    for (up, each) in patterns {
        let mut backends = Vec::new();
        for (i, up) in up.iter().enumerate() {
            let b = HttpBackend::start(&format!("s{i}")).await;
            if !up {
                b.set_probe_answer(ProbeAnswer::Status(503)).await;
            }
            backends.push(b);
        }
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
        let gw = start_gateway(&probed_route(&addrs, "")).await;
        let addr = listener_addr(&gw, "web");
        let healthy = up.iter().filter(|u| **u).count();
        for i in 0..healthy * each {
            let reply = get(addr, "h.test", &format!("/app/rr/{i}")).await;
            assert_eq!(reply.status.as_u16(), 200, "request {i} over {up:?}");
        }
        let shares: Vec<usize> = backends.iter().map(|b| b.hits_under("/app/rr/")).collect();
        let expected: Vec<usize> = up.iter().map(|u| if *u { each } else { 0 }).collect();
        assert_eq!(
            shares,
            expected,
            "{} requests over servers up {up:?}: {each} to each healthy one, none to those down",
            healthy * each
        );
        gw.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_follows_health() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let gw = start_gateway(&probed_route(&[a.addr, b.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    for i in 0..10 {
        get(addr, "h.test", &format!("/app/before/{i}")).await;
    }
    assert_eq!(
        (a.hits_under("/app/before/"), b.hits_under("/app/before/")),
        (5, 5),
        "both healthy: round robin"
    );

    b.set_probe_answer(ProbeAnswer::Status(503)).await;
    reaches(&gw, b.addr, Status::Unhealthy, "its probes fail").await;
    for i in 0..20 {
        assert_routed(addr, "h.test", &format!("/app/down/{i}"), "a", "b is down").await;
    }
    assert_eq!(
        b.hits_under("/app/down/"),
        0,
        "no request reaches a server marked down"
    );

    b.set_probe_answer(ProbeAnswer::Healthy).await;
    reaches(&gw, b.addr, Status::Healthy, "its probes succeed").await;
    for i in 0..10 {
        get(addr, "h.test", &format!("/app/again/{i}")).await;
    }
    assert_eq!(
        (a.hits_under("/app/again/"), b.hits_under("/app/again/")),
        (5, 5),
        "b is back in the rotation"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_down_is_502_at_once_without_trying() {
    let a = HttpBackend::builder("a")
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let b = HttpBackend::builder("b")
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let gw = start_gateway(&probed_route(&[a.addr, b.addr], "")).await;
    a.set_probe_answer(ProbeAnswer::Status(500)).await;
    b.set_probe_answer(ProbeAnswer::Refusing).await;
    reaches(&gw, a.addr, Status::Unhealthy, "failing status").await;
    reaches(&gw, b.addr, Status::Unhealthy, "refusing").await;

    let reply = get(listener_addr(&gw, "web"), "h.test", "/app/x").await;
    assert_eq!(reply.status.as_u16(), 502, "{}", reply.text());
    assert!(
        reply.text().contains("no healthy server"),
        "the 502 says why: {}",
        reply.text()
    );
    // Answered at once: a server tried would have recorded the request.
    assert_eq!(
        a.hits_under("/app/") + b.hits_under("/app/"),
        0,
        "no server was tried"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_servers_keeps_servers_in_rotation() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let gw = start_gateway(&probed_route(&[a.addr, b.addr], "min_servers = 1")).await;
    let addr = listener_addr(&gw, "web");
    a.set_probe_answer(ProbeAnswer::Status(500)).await;
    b.set_probe_answer(ProbeAnswer::Status(500)).await;
    reaches(&gw, a.addr, Status::Unhealthy, "failing").await;
    reaches(&gw, b.addr, Status::Unhealthy, "failing").await;
    eventually(
        "min_servers = 1 keeps the first server (in pool order) in rotation, only that one",
        || async {
            let (sa, sb) = (
                server(&gw, &a.addr.to_string()),
                server(&gw, &b.addr.to_string()),
            );
            (sa.in_rotation && !sb.in_rotation).then_some(())
        },
    )
    .await;
    for i in 0..4 {
        assert_routed(
            addr,
            "h.test",
            &format!("/app/kept/{i}"),
            "a",
            "kept by min_servers",
        )
        .await;
    }

    b.set_probe_answer(ProbeAnswer::Healthy).await;
    reaches(&gw, b.addr, Status::Healthy, "recovers").await;
    eventually("a leaves the rotation once b is healthy", || async {
        (!server(&gw, &a.addr.to_string()).in_rotation).then_some(())
    })
    .await;
    for i in 0..4 {
        assert_routed(
            addr,
            "h.test",
            &format!("/app/b/{i}"),
            "b",
            "one healthy server suffices",
        )
        .await;
    }
    assert_eq!(a.hits_under("/app/b/"), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_never_pile_up() {
    let b = HttpBackend::start("b").await;
    b.set_probe_answer(ProbeAnswer::Slow(Duration::from_millis(250)))
        .await;
    let toml = probed_route(&[b.addr], "")
        .replace("timeout = \"300ms\"", "timeout = \"2s\"")
        .replace("interval = \"100ms\"", "interval = \"20ms\"");
    let gw = start_gateway(&toml).await;
    // Probes started every 20 ms regardless of answers would overlap by the second one.
    let before = b.probe_hits();
    eventually("four more probes after the first round", || async {
        (b.probe_hits() >= before + 4).then_some(())
    })
    .await;
    assert_eq!(
        b.most_probes_in_flight(),
        1,
        "one probe in flight per target: the next is sent only once the last is answered"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_session_survives_its_server_turning_unhealthy() {
    let a = WsBackend::start("ws-a").await;
    let b = WsBackend::start("ws-b").await;
    let gw = start_gateway(&probed_route(&[a.addr, b.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let mut ws = ws_open(addr, "ws.test", "/chat").await;
    let who = match round_trip(&mut ws, Message::text("whoami"), "whoami").await {
        Message::Text(t) => t.to_string(),
        other => panic!("whoami answered {other:?}"),
    };
    let (down, up) = if who == "ws-a" { (&a, &b) } else { (&b, &a) };

    down.set_probe_answer(ProbeAnswer::Status(500));
    reaches(&gw, down.addr, Status::Unhealthy, "its probes fail").await;
    assert_eq!(
        round_trip(
            &mut ws,
            Message::text("still there?"),
            "echo after the server went down"
        )
        .await,
        Message::text("still there?"),
        "an open session to a server that turns unhealthy keeps running"
    );
    let handshakes_before = down.handshakes().len();
    for i in 0..4 {
        let mut fresh = ws_open(addr, "ws.test", &format!("/new/{i}")).await;
        assert_eq!(
            round_trip(&mut fresh, Message::text("whoami"), "whoami").await,
            Message::text(up.name.clone()),
            "new sessions avoid the unhealthy server"
        );
        close_with(&mut fresh, 1000).await;
    }
    assert_eq!(down.handshakes().len(), handshakes_before);
    close_with(&mut ws, 1000).await;
    gw.shutdown().await;
}

const TOKEN: &str = "test-admin-token-0123456789";

async fn admin_gateway(b: &HttpBackend) -> wasmgate::Gateway {
    let toml = probed_route(&[b.addr], "")
        + &format!("[admin]\nbind_address = \"127.0.0.1\"\nport = 0\ntoken = {TOKEN:?}\n");
    start_gateway(&toml).await
}

async fn admin_get(gw: &wasmgate::Gateway, path: &str, auth: Option<&str>) -> Reply {
    let addr = gw.admin_addr().expect("admin listener");
    let mut req = http::Request::get(path).header("host", "admin");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    send(addr, req.body(String::new()).expect("request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_api_answers_application_gateways_shape() {
    let b = HttpBackend::start("b").await;
    let gw = admin_gateway(&b).await;
    let reply = admin_get(&gw, "/api/backend-health", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    let pool = &json["backendAddressPools"][0];
    assert_eq!(pool["backendAddressPool"]["name"], "pool");
    let settings = &pool["backendHttpSettingsCollection"][0];
    assert_eq!(settings["backendHttpSettings"]["name"], "settings");
    assert_eq!(settings["backendHttpSettings"]["probe"], "health");
    let s = &settings["servers"][0];
    assert_eq!(s["address"], b.addr.to_string());
    assert_eq!(s["health"], "Healthy");
    assert_eq!(s["healthProbeLog"], "Success: received 200");
    assert_eq!(s["inRotation"], true);
    assert_eq!(s["consecutiveFailures"], 0);
    assert!(s["latencyMs"].is_number(), "{s}");
    let time = s["lastProbeTime"].as_str().expect("lastProbeTime");
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );

    b.set_probe_answer(ProbeAnswer::Status(500)).await;
    reaches(&gw, b.addr, Status::Unhealthy, "failing").await;
    in_rotation(&gw, b.addr, false, "out of rotation").await;
    let reply = admin_get(&gw, "/api/backend-health", Some(&format!("Bearer {TOKEN}"))).await;
    let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    let s = &json["backendAddressPools"][0]["backendHttpSettingsCollection"][0]["servers"][0];
    assert_eq!(s["health"], "Unhealthy");
    assert_eq!(
        s["healthProbeLog"],
        "Status code mismatch: expected 200-399, received 500"
    );
    assert_eq!(s["inRotation"], false);

    let other = admin_get(&gw, "/api/other", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(other.status.as_u16(), 404);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_api_refuses_a_missing_or_wrong_token() {
    let b = HttpBackend::start("b").await;
    let gw = admin_gateway(&b).await;
    for (auth, what) in [
        (None, "no token"),
        (
            Some("Bearer wrong-token-0123456789".to_string()),
            "a wrong token",
        ),
        (
            Some(format!("Bearer {TOKEN}x")),
            "the token with a byte more",
        ),
        (
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
            "a prefix of the token",
        ),
        (Some(format!("Basic {TOKEN}")), "another scheme"),
    ] {
        let reply = admin_get(&gw, "/api/backend-health", auth.as_deref()).await;
        assert_eq!(reply.status.as_u16(), 401, "{what}: {}", reply.text());
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{what}: 401 names the scheme"
        );
        assert!(
            !reply.text().contains(&b.addr.to_string()),
            "{what}: a refused request learns nothing about the backends"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_health_command_prints_a_table() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let toml =
        probed_route(&[a.addr, b.addr], "") + &format!("[admin]\nport = 0\ntoken = {TOKEN:?}\n");
    let gw = start_gateway(&toml).await;
    b.set_probe_answer(ProbeAnswer::Body("nope".into())).await;
    reaches(&gw, b.addr, Status::Unhealthy, "wrong body").await;

    let url = format!("http://{}", gw.admin_addr().expect("admin"));
    let api = client::AdminApi::new(&url, Some(TOKEN), None).expect("admin URL");
    let view = within("wasmgate health", client::fetch(&api))
        .await
        .expect("the health view");
    let table = view.table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one line per server:\n{table}");
    assert!(
        lines[0].starts_with("POOL") && lines[0].contains("HEALTH"),
        "{table}"
    );
    let line_a = lines
        .iter()
        .find(|l| l.contains(&a.addr.to_string()))
        .expect("a");
    let line_b = lines
        .iter()
        .find(|l| l.contains(&b.addr.to_string()))
        .expect("b");
    assert!(
        line_a.contains("Healthy") && line_a.contains("Success: received 200"),
        "{table}"
    );
    assert!(
        line_b.contains("Unhealthy") && line_b.contains("Body mismatch: 'ok' not found"),
        "{table}"
    );
    assert!(line_a.contains("settings (probe health)"), "{table}");

    let wrong = client::AdminApi::new(&url, Some("not-the-token-0123456"), None).expect("URL");
    let refused = client::fetch(&wrong).await;
    assert!(
        matches!(refused, Err(client::ClientError::Unauthorized { .. })),
        "a wrong token is reported as such: {refused:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dns_name_is_probed_and_shown_as_written() {
    let b = HttpBackend::start("b").await;
    let name = format!("localhost:{}", b.addr.port());
    let toml = listener("web", 0, &[])
        + &format!("[[backend_pools]]\nname = \"pool\"\naddresses = [{name:?}]\n\n")
        + &settings("settings", "")
        + "[[rules]]\nname = \"rule\"\nlistener = \"web\"\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"\n\n";
    let gw = start_gateway(&toml).await;
    let s = server(&gw, &name);
    assert_eq!(s.health, Status::Healthy, "{s:?}");
    assert_eq!(s.note, None, "the name resolves: nothing to note");
    gw.shutdown().await;
}

// Configuration.

fn config_error(toml: &str) -> String {
    match Config::from_toml(toml) {
        Ok(_) => panic!("accepted, expected an error:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

fn with_probe(probe_extra: &str) -> String {
    probed_route(&["127.0.0.1:9001".parse().unwrap()], probe_extra)
}

#[test]
fn probe_configuration_errors_name_the_field() {
    let cases = [
        (
            with_probe("").replace(
                "status_codes = [\"200-399\"]",
                "status_codes = [\"200-399\", \"600-700\"]",
            ),
            r#"probes[0].match.status_codes[1]: "600-700" is not a status range"#.to_string(),
        ),
        (
            with_probe("").replace("status_codes = [\"200-399\"]", "status_codes = [\"399-200\"]"),
            r#"probes[0].match.status_codes[0]: "399-200" is not a status range"#.into(),
        ),
        (
            with_probe("").replace("unhealthy_threshold = 2", "unhealthy_threshold = 21"),
            "probes[0].unhealthy_threshold: 21 is out of range; it must be from 1 to 20".into(),
        ),
        (
            with_probe("").replace("body = \"ok\"", &format!("body = {:?}", "x".repeat(4091))),
            "probes[0].match.body: is 4091 characters long; at most 4090 are allowed".into(),
        ),
        (
            with_probe("").replace("interval = \"100ms\"", "interval = \"0ms\""),
            "probes[0].interval: 0 s is out of range; it must be more than 0 and at most 86400 s"
                .into(),
        ),
        (
            with_probe("").replace("path = \"/health\"", "path = \"health\""),
            r#"probes[0].path: "health" must start with '/' and hold no fragment, spaces or control characters"#.into(),
        ),
        (
            with_probe("host = \"a.example\"\npick_host_name_from_backend_settings = true"),
            "probes[0].host: set either host or pick_host_name_from_backend_settings, not both"
                .into(),
        ),
        (
            with_probe("pick_host_name_from_backend_settings = true"),
            r#"backend_settings[0].probe: probe "health" picks its host name from the backend settings, but these settings set neither host_name nor pick_host_name_from_backend_address"#.into(),
        ),
        (
            with_probe("protocol = \"https\""),
            r#"backend_settings[0].probe: probe "health" uses https but these settings use http; a probe's protocol must equal its backend settings'"#.into(),
        ),
        (
            with_probe("").replace("probe = \"health\"", "probe = \"nope\""),
            r#"backend_settings[0].probe: no probe named "nope""#.into(),
        ),
        (
            with_probe("") + "[admin]\nbind_address = \"0.0.0.0\"\n",
            "admin.token: is required when the admin listener binds 0.0.0.0, which is not a loopback address".into(),
        ),
        (
            with_probe("") + "[admin]\ntoken = \"short\"\n",
            "admin.token: must be at least 16 characters long".into(),
        ),
    ];
    let mut wrong = Vec::new();
    for (toml, expected) in cases {
        let got = config_error(&toml);
        if got != expected {
            wrong.push(format!("expected {expected:?}\n     got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn probe_configuration_accepts_sub_second_durations_and_ranges() {
    let config = Config::from_toml(&with_probe("min_servers = 1\nport = 8080").replace(
        "status_codes = [\"200-399\"]",
        "status_codes = [\"200-399\", \"401\"]",
    ))
    .expect("valid");
    let p = &config.probes[0];
    assert_eq!(p.interval, Duration::from_millis(100));
    assert_eq!(p.timeout, Duration::from_millis(300));
    assert_eq!(
        (p.unhealthy_threshold, p.min_servers, p.port),
        (2, 1, Some(8080))
    );
    assert_eq!(
        p.status_codes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["200-399", "401"]
    );
    assert_eq!(p.body.as_deref(), Some("ok"));
    assert_eq!(config.backend_settings[0].probe.map(|id| id.0), Some(0));

    let defaults = Config::from_toml(
        &(single_route(&["127.0.0.1:9001".parse().unwrap()], "probe = \"p\"")
            + "[[probes]]\nname = \"p\"\n[admin]\n"),
    )
    .expect("valid");
    let p = &defaults.probes[0];
    assert_eq!(
        (
            p.interval,
            p.timeout,
            p.unhealthy_threshold,
            p.path.as_str()
        ),
        (Duration::from_secs(30), Duration::from_secs(30), 3, "/"),
        "Application Gateway's defaults"
    );
    let admin = defaults.admin.expect("admin");
    assert_eq!(
        admin.bind.to_string(),
        "127.0.0.1:9190",
        "loopback by default"
    );
}
