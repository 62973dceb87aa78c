//! A fleet of gateways following one configuration kept in a real three-member etcd cluster
//! (Debian's etcd-server), each instance on its own loopback address (127.0.0.2 and up):
//! changes pushed reach every instance while traffic flows, members fail and come back,
//! concurrent pushes conflict, invalid configurations are refused everywhere, and instances
//! ride out a store that is gone (and start from their cache while it is).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use wasmgate::workers::WorkerOptions;
use wasmgate_cli::fleet::config_cmd::{self, PushError};
use wasmgate_cli::fleet::status::fleet;
use wasmgate_cli::fleet::{FleetMember, FollowOptions, StoreArgs, StoreUrl};
use wasmgate_tests::client::try_send_for;
use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::etcd::EtcdCluster;
use wasmgate_tests::ws::{round_trip, ws_open};
use wasmgate_tests::*;

/// Bound of every wait for the fleet (convergence, reconnection): generous, for slow machines;
/// the tests wait for the event itself, never for a time.
const FLEET_WAIT: Duration = Duration::from_secs(60);

/// The ports every instance binds at its own address.
#[derive(Clone, Copy)]
struct Ports {
    web: u16,
    chat: u16,
    admin: u16,
}

impl Ports {
    fn pick() -> Self {
        let p = free_ports(3);
        Self {
            web: p[0],
            chat: p[1],
            admin: p[2],
        }
    }
}

/// The fleet's configuration: `web` → the HTTP backend, `chat` → the WebSocket backend, and an
/// admin listener; `timeout` tells one version from the next.
fn fleet_config(ports: Ports, http: SocketAddr, ws: SocketAddr, timeout: u32) -> String {
    let mut text = listener("web", ports.web, &[]);
    text += &listener("chat", ports.chat, &[]);
    text += &pool("http", &[http]);
    text += &pool("ws", &[ws]);
    text += &settings("settings", &format!("request_timeout = {timeout}"));
    text += &basic_rule("web-rule", "web", "http", "settings", "");
    text += &basic_rule("chat-rule", "chat", "ws", "settings", "");
    text += &format!(
        "[admin]\nbind_address = \"127.0.0.1\"\nport = {}\n\n",
        ports.admin
    );
    text
}

fn store_url(cluster: &EtcdCluster, prefix: &str) -> StoreUrl {
    cluster.url(prefix).parse().expect("store url")
}

fn instance_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmgate-fleet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn options(url: &StoreUrl, n: u8, cache: &Path) -> FollowOptions {
    FollowOptions {
        url: url.clone(),
        store: StoreArgs::default(),
        cache_dir: Some(cache.to_owned()),
        instance_id: Some(format!("gw{n}")),
        bind_address: Some(instance_ip(n)),
        workers: WorkerOptions {
            count: 1,
            yield_every: 0,
        },
    }
}

/// Starts the instance on 127.0.0.`n`, with its own cache folder under `cache`.
async fn start_member(url: &StoreUrl, n: u8, cache: &Path) -> FleetMember {
    let options = options(url, n, &cache.join(format!("gw{n}")));
    within("an instance to start", FleetMember::start(options))
        .await
        .unwrap_or_else(|e| panic!("instance {n} did not start: {e:#}"))
}

/// Pushes `text` (validated, compared with the revision read just before); retries while the
/// cluster has no quorum. Returns the revision written.
async fn push(url: &StoreUrl, text: &str) -> i64 {
    let started = Instant::now();
    loop {
        let attempt = async {
            let client = wasmgate_cli::fleet::store::connect(url, &StoreArgs::default())
                .await
                .map_err(|e| format!("{e:#}"))?;
            config_cmd::push(&client, url, text, None)
                .await
                .map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(pushed) => return pushed.revision,
            Err(e) => {
                assert!(started.elapsed() < FLEET_WAIT, "push kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until `check` holds, polling every 2 ms (fine enough to time convergence), at most
/// [`FLEET_WAIT`]; returns how long it took.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < FLEET_WAIT,
            "not satisfied within {FLEET_WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

fn running_revision(member: &FleetMember) -> Option<i64> {
    member.gateway().status().config.revision
}

/// Waits until every instance runs `revision` (or a later one).
async fn converged(members: &[FleetMember], revision: i64) -> Duration {
    wait_until(
        &format!("every instance to run revision {revision}"),
        || {
            members
                .iter()
                .all(|m| running_revision(m).is_some_and(|r| r >= revision))
        },
    )
    .await
}

fn store_reachable(member: &FleetMember) -> bool {
    member.gateway().status().store.is_some_and(|s| s.reachable)
}

/// The revisions an instance applied, oldest first, from its status's reload history.
fn applied_revisions(member: &FleetMember) -> Vec<i64> {
    let status = member.gateway().status();
    let mut revisions: Vec<i64> = status
        .reloads
        .iter()
        .filter(|r| r.outcome == "applied")
        .filter_map(|r| r.revision)
        .collect();
    revisions.reverse();
    revisions
}

/// Requests to every instance and one WebSocket session through each, until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    echoes: Arc<AtomicUsize>,
    http: Vec<JoinHandle<()>>,
    sessions: Vec<JoinHandle<Result<(), String>>>,
}

impl Traffic {
    async fn start(members: &[FleetMember]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let echoes = Arc::new(AtomicUsize::new(0));
        let mut http = Vec::new();
        let mut sessions = Vec::new();
        for m in members {
            let web = listener_addr(m.gateway(), "web");
            let chat = listener_addr(m.gateway(), "chat");
            let (halt, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            http.push(tokio::spawn(async move {
                // Bounded: at most this many requests per instance, however long the test.
                for _ in 0..100_000 {
                    if halt.load(Ordering::Relaxed) {
                        return;
                    }
                    let req = http::Request::get("/")
                        .header("host", "example.com")
                        .body(String::new())
                        .expect("request");
                    match try_send_for(WAIT, web, req).await {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            eprintln!("request to {web} answered {}: {}", r.status, r.text());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("request to {web} failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
            let mut session = ws_open(chat, "example.com", "/chat").await;
            let (halt, echoes) = (stop.clone(), echoes.clone());
            sessions.push(tokio::spawn(async move {
                for i in 0..100_000u32 {
                    if halt.load(Ordering::Relaxed) {
                        break;
                    }
                    let text = format!("message {i}");
                    let echo = round_trip(&mut session, Message::text(text.clone()), "echo").await;
                    if echo != Message::text(text) {
                        return Err(format!("session through {chat} answered {echo:?}"));
                    }
                    echoes.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                session
                    .close(None)
                    .await
                    .map_err(|e| format!("session through {chat} could not close: {e}"))
            }));
        }
        Self {
            stop,
            ok,
            failed,
            echoes,
            http,
            sessions,
        }
    }

    /// Stops and checks: no failed request, no dropped session.
    async fn stop_and_check(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.http {
            within("the request loop to stop", t)
                .await
                .expect("request loop");
        }
        let mut dropped = Vec::new();
        for t in self.sessions {
            match within("a session to end", t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => dropped.push(e),
                Err(e) => dropped.push(format!("the session broke: {e}")),
            }
        }
        let (ok, failed) = (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
        assert!(
            dropped.is_empty(),
            "WebSocket sessions dropped: {dropped:?}"
        );
        assert!(ok > 0 && self.echoes.load(Ordering::Relaxed) > 0);
    }
}

async fn shutdown(members: Vec<FleetMember>) {
    for m in members {
        m.shutdown().await;
    }
}

/// Fetches an admin resource of an instance.
async fn admin_get(member: &FleetMember, path: &str) -> String {
    let admin = member.gateway().admin_addr().expect("admin listener");
    let reply = get(admin, "admin", path).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pushed_change_reaches_every_instance_while_traffic_flows() {
    let cluster = EtcdCluster::start(3).await;
    let url = store_url(&cluster, "wasmgate/converge");
    let http = HttpBackend::start("a").await;
    let ws = WsBackend::start("ws").await;
    let ports = Ports::pick();
    let cache = temp_dir("converge");
    let first = push(&url, &fleet_config(ports, http.addr, ws.addr, 30)).await;
    let mut members = Vec::new();
    for n in 2..=6 {
        members.push(start_member(&url, n, &cache).await);
    }
    for (m, n) in members.iter().zip(2..) {
        assert_eq!(running_revision(m), Some(first));
        assert_eq!(
            listener_addr(m.gateway(), "web"),
            SocketAddr::new(instance_ip(n), ports.web)
        );
    }
    let traffic = Traffic::start(&members).await;

    let mut times = Vec::new();
    let mut last = first;
    for i in 1..=50 {
        let revision = push(&url, &fleet_config(ports, http.addr, ws.addr, 30 + i)).await;
        assert!(revision > last);
        times.push(converged(&members, revision).await);
        last = revision;
    }
    traffic.stop_and_check().await;
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = times[(times.len() * 99).div_ceil(100) - 1];
    eprintln!(
        "fleet convergence over {} pushes to 5 instances: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        ms(times[times.len() / 2]),
        ms(p99),
        ms(times[times.len() - 1])
    );

    // The status and metrics of an instance name the revision and hash it runs.
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&members[0], "/api/status").await).expect("status JSON");
    assert_eq!(status["config"]["revision"], last, "{status}");
    assert_eq!(status["store"]["reachable"], true, "{status}");
    let hash = status["config"]["hash"].as_str().expect("hash").to_owned();
    let metrics = admin_get(&members[0], "/metrics").await;
    assert!(
        metrics.contains(&format!("wasmgate_config_revision {last}")),
        "{metrics}"
    );
    assert!(metrics.contains("wasmgate_config_store_reachable 1"));
    assert!(metrics.contains(&format!("wasmgate_config_info{{hash=\"{hash}\"}} 1")));

    // Every instance registered itself; once their records caught up, none lags.
    let client = cluster.client().await;
    let view = loop {
        let view = fleet(&client, &url).await.expect("fleet status");
        if view.instances.len() == 5 && view.laggards().count() == 0 {
            break view;
        }
        assert!(
            running_revision(&members[0]) == Some(last),
            "an instance moved on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(view.current, last);
    let table = view.table();
    assert!(
        table.contains("gw2") && table.contains("5 instance(s), 0 lagging"),
        "{table}"
    );
    assert!(view.instances.iter().all(|i| i.healthy && i.hash == hash));

    // etcd kept the revisions: the history walks back through them.
    let (history, _) = config_cmd::history(&client, &url, 5)
        .await
        .expect("history");
    assert_eq!(history.len(), 5);
    assert_eq!(history[0].revision, last);
    assert!(history.windows(2).all(|w| w[0].revision > w[1].revision));

    shutdown(members).await;
    // Stopped instances take their records with them: each revokes its lease on the way out
    // (and a record whose lease was not revoked goes when the lease runs out, 10 s).
    let mut view = fleet(&client, &url).await.expect("fleet status");
    for _ in 0..150 {
        if view.instances.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        view = fleet(&client, &url).await.expect("fleet status");
    }
    assert!(view.instances.is_empty(), "{}", view.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_ride_out_members_failing_and_apply_revisions_in_order() {
    let mut cluster = EtcdCluster::start(3).await;
    let url = store_url(&cluster, "wasmgate/failover");
    let http = HttpBackend::start("a").await;
    let ws = WsBackend::start("ws").await;
    let ports = Ports::pick();
    let cache = temp_dir("failover");
    let mut timeout = 30;
    push(&url, &fleet_config(ports, http.addr, ws.addr, timeout)).await;
    let mut members = Vec::new();
    for n in 2..=4 {
        members.push(start_member(&url, n, &cache).await);
    }
    let traffic = Traffic::start(&members).await;

    // The leader dies: the other two keep a quorum, pushes go on.
    let leader = cluster.leader().await;
    cluster.kill(leader);
    for _ in 0..3 {
        timeout += 1;
        let revision = push(&url, &fleet_config(ports, http.addr, ws.addr, timeout)).await;
        converged(&members, revision).await;
    }

    // A second member dies: no quorum. Every instance says the store is unreachable, and
    // keeps serving.
    let other = (0..cluster.len()).find(|i| *i != leader).expect("a member");
    cluster.kill(other);
    wait_until("every instance to see the store unreachable", || {
        members.iter().all(|m| !store_reachable(m))
    })
    .await;
    let metrics = admin_get(&members[0], "/metrics").await;
    assert!(
        metrics.contains("wasmgate_config_store_reachable 0"),
        "{metrics}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&members[0], "/api/status").await).expect("status JSON");
    assert_eq!(status["store"]["reachable"], false, "{status}");
    assert!(status["store"]["error"].is_string(), "{status}");

    // A push waits for the quorum, which comes back with the second member.
    timeout += 1;
    let text = fleet_config(ports, http.addr, ws.addr, timeout);
    let pending = {
        let url = url.clone();
        tokio::spawn(async move { push(&url, &text).await })
    };
    cluster.restart(other);
    within_for(FLEET_WAIT, "the push once the quorum is back", pending)
        .await
        .expect("push");
    for _ in 0..3 {
        timeout += 1;
        push(&url, &fleet_config(ports, http.addr, ws.addr, timeout)).await;
    }
    cluster.restart(leader);
    let client = cluster.client().await;
    let latest = wasmgate_cli::fleet::store::read_config(&client, &url, None)
        .await
        .expect("read")
        .expect("stored")
        .revision;
    converged(&members, latest).await;
    wait_until("every instance to reach the store again", || {
        members.iter().all(store_reachable)
    })
    .await;
    for m in &members {
        assert_eq!(running_revision(m), Some(latest));
        let applied = applied_revisions(m);
        assert!(
            applied.windows(2).all(|w| w[0] < w[1]),
            "{} applied revisions out of order: {applied:?}",
            m.id()
        );
    }
    traffic.stop_and_check().await;
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_concurrent_pushes_exactly_one_wins() {
    let cluster = EtcdCluster::start(3).await;
    let url = store_url(&cluster, "wasmgate/conflict");
    let http = HttpBackend::start("a").await;
    let ws = WsBackend::start("ws").await;
    let ports = Ports::pick();
    let base = push(&url, &fleet_config(ports, http.addr, ws.addr, 30)).await;

    // Two operators, two clients, both expecting the revision they read.
    let a = wasmgate_cli::fleet::store::connect(&url, &StoreArgs::default())
        .await
        .expect("client a");
    let b = wasmgate_cli::fleet::store::connect(&url, &StoreArgs::default())
        .await
        .expect("client b");
    let text_a = fleet_config(ports, http.addr, ws.addr, 41);
    let text_b = fleet_config(ports, http.addr, ws.addr, 42);
    let (ra, rb) = tokio::join!(
        config_cmd::push(&a, &url, &text_a, Some(base)),
        config_cmd::push(&b, &url, &text_b, Some(base)),
    );
    let (won, lost) = match (ra, rb) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        (ra, rb) => panic!("expected exactly one winner: {ra:?} / {rb:?}"),
    };
    match &lost {
        PushError::Conflict {
            expected, current, ..
        } => {
            assert_eq!(*expected, base);
            assert_eq!(*current, won.revision);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let message = lost.to_string();
    assert!(
        message.starts_with("conflict: /wasmgate/conflict/config is at revision")
            && message.contains(&format!("not {base} as expected")),
        "{message}"
    );

    // An invalid file is refused before anything is written, naming the field.
    let invalid = fleet_config(ports, http.addr, ws.addr, 30)
        .replace("backend_pool = \"http\"", "backend_pool = \"missing\"");
    let refused = config_cmd::push(&a, &url, &invalid, None)
        .await
        .expect_err("an invalid configuration is refused");
    assert!(
        refused.to_string().contains("rules[0].backend_pool"),
        "{refused}"
    );
    let client = cluster.client().await;
    let stored = wasmgate_cli::fleet::store::read_config(&client, &url, None)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.revision, won.revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_configuration_written_past_validation_is_refused_by_every_instance() {
    let cluster = EtcdCluster::start(3).await;
    let url = store_url(&cluster, "wasmgate/invalid");
    let http = HttpBackend::start("a").await;
    let ws = WsBackend::start("ws").await;
    let ports = Ports::pick();
    let cache = temp_dir("invalid");
    let good = push(&url, &fleet_config(ports, http.addr, ws.addr, 30)).await;
    let mut members = Vec::new();
    for n in 2..=4 {
        members.push(start_member(&url, n, &cache).await);
    }

    // Written with etcd's own client: no validation on the way in.
    let invalid = fleet_config(ports, http.addr, ws.addr, 30)
        .replace("backend_pool = \"http\"", "backend_pool = \"missing\"");
    let client = cluster.client().await;
    let put = client
        .kv_client()
        .put(url.config_key(), invalid, None)
        .await
        .expect("raw put");
    let bad = put.header().expect("header").revision();
    wait_until("every instance to refuse the invalid revision", || {
        members.iter().all(|m| {
            m.gateway()
                .status()
                .reloads
                .first()
                .is_some_and(|r| r.revision == Some(bad))
        })
    })
    .await;
    for m in &members {
        let status = m.gateway().status();
        let refusal = &status.reloads[0];
        assert_eq!(refusal.outcome, "failed");
        let error = refusal.error.as_deref().unwrap_or_default();
        assert!(error.contains("rules[0].backend_pool"), "{error}");
        assert_eq!(status.config.revision, Some(good));
        assert_eq!(
            status.store.as_ref().and_then(|s| s.latest_revision),
            Some(bad)
        );
        // Still serving the previous revision.
        let web = listener_addr(m.gateway(), "web");
        assert_eq!(get(web, "example.com", "/").await.backend(), Some("a"));
    }
    // The fleet view shows the refusal.
    let view = loop {
        let view = fleet(&client, &url).await.expect("fleet status");
        if view.instances.len() == 3 && view.instances.iter().all(|i| !i.healthy) {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(view.laggards().count(), 3, "{}", view.table());
    assert!(
        view.table().contains("rules[0].backend_pool"),
        "{}",
        view.table()
    );

    // A valid push after it is applied everywhere.
    let fixed = push(&url, &fleet_config(ports, http.addr, ws.addr, 31)).await;
    converged(&members, fixed).await;
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_keep_serving_without_the_store_and_start_from_their_cache() {
    let mut cluster = EtcdCluster::start(3).await;
    let url = store_url(&cluster, "wasmgate/outage");
    let http = HttpBackend::start("a").await;
    let ws = WsBackend::start("ws").await;
    let ports = Ports::pick();
    let cache = temp_dir("outage");
    let revision = push(&url, &fleet_config(ports, http.addr, ws.addr, 30)).await;
    let running = start_member(&url, 2, &cache).await;
    // An instance that ran once, so that its cache holds the configuration.
    let once = start_member(&url, 3, &cache).await;
    once.shutdown().await;

    for i in 0..cluster.len() {
        cluster.kill(i);
    }
    wait_until("the instance to see the store unreachable", || {
        !store_reachable(&running)
    })
    .await;
    let web = listener_addr(running.gateway(), "web");
    assert_eq!(get(web, "example.com", "/").await.backend(), Some("a"));

    // Started while the store is down: from the cache, and saying so.
    let cached = start_member(&url, 3, &cache).await;
    let status = cached.gateway().status();
    let store = status.store.clone().expect("store state");
    assert!(store.from_cache && !store.reachable, "{store:?}");
    assert_eq!(status.config.revision, Some(revision));
    let web3 = listener_addr(cached.gateway(), "web");
    assert_eq!(get(web3, "example.com", "/").await.backend(), Some("a"));
    let metrics = admin_get(&cached, "/metrics").await;
    assert!(
        metrics.contains("wasmgate_config_from_cache 1"),
        "{metrics}"
    );

    // Without a cached copy: a clear error.
    let empty = temp_dir("outage-empty");
    let error = match FleetMember::start(options(&url, 4, &empty)).await {
        Ok(_) => panic!("started without the store and without a cache"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("the configuration store is unreachable and there is no cached copy at"),
        "{error}"
    );

    // The store comes back: both catch up from the revision they had, with nothing to reload.
    for i in 0..cluster.len() {
        cluster.restart(i);
    }
    let members = vec![running, cached];
    wait_until("the instances to reach the store again", || {
        members.iter().all(store_reachable)
    })
    .await;
    for m in &members {
        let status = m.gateway().status();
        assert!(status.reloads.is_empty(), "{:?}", status.reloads);
        assert!(!status.store.expect("store").from_cache);
    }
    let next = push(&url, &fleet_config(ports, http.addr, ws.addr, 31)).await;
    converged(&members, next).await;
    shutdown(members).await;
}
