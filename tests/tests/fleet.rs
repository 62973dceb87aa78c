//! Several instances as one fleet: nothing a client relies on lives in one process (an affinity
//! cookie from one instance is honoured by another), each instance probes by itself and shows
//! the hash of the configuration it runs; what an orchestrator needs (liveness, readiness,
//! draining); and a Kubernetes ConfigMap update — files replaced through the `..data` symlink
//! swap — picked up by the file watch while traffic flows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use wasmgate::Config;
use wasmgate_cli::admin::client::AdminApi;
use wasmgate_cli::admin::drain::{DrainArgs, drain};
use wasmgate_tests::client::try_send_for;
use wasmgate_tests::config::{basic_rule, pool, settings};
use wasmgate_tests::*;

const TOKEN: &str = "fleet-admin-token-0123456789";

/// Listener `web` on `bind` (a free port), pool `pool` of `addrs` with cookie-based affinity,
/// and a loopback admin listener with a token.
fn instance_config(bind: &str, addrs: &[SocketAddr]) -> String {
    let mut text = format!(
        "[[listeners]]\nname = \"web\"\nport = 0\nbind_address = {bind:?}\nhost_names = []\n\n"
    );
    text += &pool("pool", addrs);
    text += &settings("settings", "cookie_based_affinity = true");
    text += &basic_rule("rule", "web", "pool", "settings", "");
    text += &format!("[admin]\nbind_address = \"127.0.0.1\"\nport = 0\ntoken = {TOKEN:?}\n");
    text
}

async fn admin_get(gw: &wasmgate::Gateway, path: &str, token: Option<&str>) -> Reply {
    let addr = gw.admin_addr().expect("the admin listener is on");
    let mut req = http::Request::get(path).header("host", "admin");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    send(addr, req.body(String::new()).expect("request")).await
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.text()))
}

/// The configuration hash an instance reports in `/api/status` and in its metrics.
async fn reported_hashes(gw: &wasmgate::Gateway) -> (String, String) {
    let status = json(&admin_get(gw, "/api/status", Some(TOKEN)).await);
    let status_hash = status["config"]["hash"]
        .as_str()
        .unwrap_or_else(|| panic!("/api/status has no config.hash: {status}"))
        .to_owned();
    let metrics = admin_get(gw, "/metrics", Some(TOKEN)).await.text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("wasmgate_config_info{"))
        .unwrap_or_else(|| panic!("no wasmgate_config_info in the metrics:\n{metrics}"));
    let metrics_hash = line
        .split("hash=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no hash label: {line}"))
        .to_owned();
    (status_hash, metrics_hash)
}

/// Two instances on different loopback addresses, configured alike: a client pinned by one is
/// sent to the same server by the other, because the cookie's value derives from the
/// configuration (pool and address) alone. Each probed the servers itself before serving, and
/// each shows the hash of the text it runs, in its status and its metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_affinity_cookie_from_one_instance_is_honoured_by_another() {
    let backends = [
        HttpBackend::start("a").await,
        HttpBackend::start("b").await,
        HttpBackend::start("c").await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let text_one = instance_config("127.0.0.2", &addrs);
    let text_two = instance_config("127.0.0.3", &addrs);
    let one = start_gateway(&text_one).await;
    let probes_before_two: Vec<usize> = backends.iter().map(HttpBackend::probe_hits).collect();
    let two = start_gateway(&text_two).await;
    // The second instance did not borrow the first one's health: it started serving only after
    // probing every server itself.
    for (b, before) in backends.iter().zip(&probes_before_two) {
        assert!(
            b.probe_hits() > *before,
            "the second instance must probe {} itself before serving",
            b.name
        );
    }
    for gw in [&one, &two] {
        let health = json(&admin_get(gw, "/api/backend-health", Some(TOKEN)).await);
        let servers =
            &health["backendAddressPools"][0]["backendHttpSettingsCollection"][0]["servers"];
        let healthy = servers
            .as_array()
            .map_or(0, |s| s.iter().filter(|s| s["health"] == "Healthy").count());
        assert_eq!(healthy, 3, "each instance's own view: {health}");
    }
    let web_one = listener_addr(&one, "web");
    let web_two = listener_addr(&two, "web");
    assert_eq!(web_one.ip().to_string(), "127.0.0.2");
    assert_eq!(web_two.ip().to_string(), "127.0.0.3");

    // Clients pinned by instance one, spread over the three servers, each sent on to two.
    let mut pinned_servers = std::collections::HashSet::new();
    for i in 0..9 {
        let first = get(web_one, "fleet.test", &format!("/first/{i}")).await;
        assert_eq!(first.status.as_u16(), 200, "{}", first.text());
        let server = first.backend().expect("x-backend").to_owned();
        let value = first
            .cookie_value("ApplicationGatewayAffinity")
            .unwrap_or_else(|| panic!("no affinity cookie: {:?}", first.header_all("set-cookie")));
        let cookie = format!("ApplicationGatewayAffinity={value}");
        for j in 0..3 {
            let reply = get_with(
                web_two,
                "fleet.test",
                &format!("/next/{i}/{j}"),
                &[("cookie", &cookie)],
            )
            .await;
            assert_eq!(
                reply.backend(),
                Some(server.as_str()),
                "instance two must honour instance one's cookie {value}"
            );
            assert!(
                reply.set_cookie("ApplicationGatewayAffinity").is_none(),
                "an affine request gets no new cookie from the other instance"
            );
        }
        pinned_servers.insert(server);
    }
    assert!(
        pinned_servers.len() > 1,
        "new clients are spread over the servers: {pinned_servers:?}"
    );

    for (gw, text) in [(&one, &text_one), (&two, &text_two)] {
        let expected = wasmgate::config::source_hash(text).to_string();
        let (status, metrics) = reported_hashes(gw).await;
        assert_eq!(
            status, expected,
            "/api/status shows the running text's hash"
        );
        assert_eq!(
            metrics, expected,
            "the metrics show the running text's hash"
        );
    }
    one.shutdown_within(Duration::from_secs(5)).await;
    two.shutdown_within(Duration::from_secs(5)).await;
}

/// `/api/live` and `/api/ready` answer without a token (a kubelet's probe carries none); ready
/// means serving. `POST /api/drain` needs the token, turns the readiness to 503 for good, and
/// the instance keeps serving meanwhile; `wasmgate drain`'s client does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_turns_to_draining_while_traffic_is_still_served() {
    let b = HttpBackend::start("app").await;
    let gw = start_gateway(&instance_config("127.0.0.1", &[b.addr])).await;
    let web = listener_addr(&gw, "web");

    let live = admin_get(&gw, "/api/live", None).await;
    assert_eq!(live.status.as_u16(), 200, "{}", live.text());
    let ready = admin_get(&gw, "/api/ready", None).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.text());
    assert_eq!(json(&ready)["state"], "ready");

    let admin = gw.admin_addr().expect("admin");
    let unauthorized = raw_exchange(
        admin,
        b"POST /api/drain HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("admin answers");
    assert_eq!(unauthorized.status, 401, "draining needs the token");
    assert_eq!(
        admin_get(&gw, "/api/ready", None).await.status.as_u16(),
        200,
        "a refused drain changes nothing"
    );

    let api = AdminApi::new(&format!("http://{admin}"), Some(TOKEN), None).expect("admin URL");
    let args = DrainArgs { delay: 0, wait: 0 };
    within("wasmgate drain", drain(&api, &args))
        .await
        .expect("the drain is accepted");
    let ready = admin_get(&gw, "/api/ready", None).await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.text());
    assert_eq!(json(&ready)["state"], "draining");
    assert_eq!(
        admin_get(&gw, "/api/live", None).await.status.as_u16(),
        200,
        "a draining instance is alive"
    );
    let served = get(web, "drain.test", "/still").await;
    assert_eq!(
        served.status.as_u16(),
        200,
        "a draining instance still serves"
    );
    let state = json(&admin_get(&gw, "/api/drain", Some(TOKEN)).await);
    assert_eq!(state["draining"], true, "{state}");
    gw.shutdown_within(Duration::from_secs(5)).await;
}

/// A mounted ConfigMap as the kubelet writes it: the data in a timestamped directory,
/// `..data` a symbolic link to it, and each file a link through `..data`.
struct ConfigMapVolume {
    dir: PathBuf,
    generation: usize,
}

impl ConfigMapVolume {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("wasmgate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("volume dir");
        let mut volume = Self { dir, generation: 0 };
        let data = volume.write_generation(files);
        std::os::unix::fs::symlink(&data, volume.dir.join("..data")).expect("..data");
        for (file, _) in files {
            std::os::unix::fs::symlink(Path::new("..data").join(file), volume.dir.join(file))
                .expect("file link");
        }
        volume
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A new timestamped directory with `files`; its name relative to the volume.
    fn write_generation(&mut self, files: &[(&str, &str)]) -> PathBuf {
        self.generation += 1;
        let name = PathBuf::from(format!(
            "..2026_12_07_23_00_{:02}.00000000{}",
            self.generation, self.generation
        ));
        let data = self.dir.join(&name);
        std::fs::create_dir(&data).expect("timestamped dir");
        for (file, contents) in files {
            std::fs::write(data.join(file), contents).expect("write");
        }
        name
    }

    /// The kubelet's update: the new data in a new timestamped directory, a `..data_tmp` link
    /// to it renamed over `..data` (atomic), then the old directory removed.
    fn update(&mut self, files: &[(&str, &str)]) {
        let old = std::fs::read_link(self.dir.join("..data")).expect("..data");
        let new = self.write_generation(files);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).expect("..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old data");
    }
}

impl Drop for ConfigMapVolume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `..data` swap is seen by the file watch and applied while requests flow, none failing.
/// The new file has the old one's length and modification time (the kubelet may well write
/// one of each): what changes is the file the path leads to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_configmap_update_through_the_data_link_swap_is_applied_without_a_failed_request() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let route = |addr: SocketAddr| {
        let mut text = listener_text();
        text += &pool("pool", &[addr]);
        text += &settings("settings", "");
        text += &basic_rule("rule", "web", "pool", "settings", "");
        text
    };
    // Both files end in a comment that gives them the same length.
    let (mut first, mut second) = (route(a.addr) + "#", route(b.addr) + "#");
    let len = first.len().max(second.len());
    for text in [&mut first, &mut second] {
        while text.len() < len {
            text.push('#');
        }
    }
    let mut volume = ConfigMapVolume::new("configmap", &[("config.toml", &first)]);
    let path = volume.path("config.toml");
    let config = Config::from_file(&path).expect("the mounted configuration");
    let gw = within("Gateway::start", wasmgate::Gateway::start(config))
        .await
        .expect("the gateway starts");
    assert!(gw.wait_for_first_probes(WAIT).await);
    gw.set_config_file(path.clone(), true);
    let web = listener_addr(&gw, "web");
    assert_eq!(get(web, "cm.test", "/").await.backend(), Some("a"));

    // Requests flow, one after another on fresh connections, until the update is seen.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic = tokio::spawn({
        let (stop, sent) = (stop.clone(), sent.clone());
        async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get("/flow")
                    .header("host", "cm.test")
                    .body(String::new())
                    .expect("request");
                match try_send_for(WAIT, web, req).await {
                    Ok(reply) if reply.status.as_u16() == 200 => {}
                    Ok(reply) => failures.push(format!("{}: {}", reply.status, reply.text())),
                    Err(e) => failures.push(e),
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }
    });

    let old_modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    volume.update(&[("config.toml", &second)]);
    // The same stamp as the old file: only the file's identity tells them apart.
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(old_modified))
        .expect("set the new file's mtime");
    assert_eq!(
        std::fs::metadata(&path).map(|m| m.len()).ok(),
        Some(first.len() as u64)
    );

    // The watch checks every 2 s and applies a change once it holds for one more check.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if get(web, "cm.test", "/").await.backend() == Some("b") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the swapped ConfigMap was not applied within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let failures = within("the traffic to stop", traffic)
        .await
        .expect("traffic task");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the swap: {failures:?}",
        failures.len(),
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(
        gw.snapshot().config.source_hash.as_deref(),
        Some(&*wasmgate::config::source_hash(&second)),
        "the running configuration is the new file's"
    );
    gw.shutdown_within(Duration::from_secs(5)).await;
}

fn listener_text() -> String {
    wasmgate_tests::config::listener("web", 0, &[])
}
