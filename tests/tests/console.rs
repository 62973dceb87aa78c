//! The web console in a real browser (headless Chromium over WebDriver): it asks for the admin
//! token and shows a wrong one refused, then shows a server turning Unhealthy within one refresh
//! after its backend stops and Healthy again once it is back, a plugin's new version after a
//! replacement through the admin API, and the reloads with their outcome; it stays readable on
//! a phone-sized screen. Writes `target/console.png` (the README's screenshot) and
//! `target/console-phone.png`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use wasmgate::admin::plugins::percent_encode;
use wasmgate::config::Config;
use wasmgate_cli::admin::client::{AdminApi, ClientError, call};
use wasmgate_tests::browser::Browser;
use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::*;

const TOKEN: &str = "console-admin-token-0123456789";

/// What the test reads from the page in one go (arguments: a server's address, a plugin's
/// name), so that each check sees one consistent state.
const PAGE_STATE: &str = r##"
const body = document.body.dataset;
const server = document.querySelector(`#health-rows tr[data-server="${arguments[0]}"]`);
const plugin = document.querySelector(`#plugin-rows tr[data-plugin="${arguments[1]}"]`);
return {
  auth: body.auth || null,
  started: Number(body.started || 0),
  refreshes: Number(body.refreshes || 0),
  health: server ? server.dataset.health : null,
  version: plugin ? plugin.dataset.version : null,
  loginShown: !document.getElementById("login").hidden,
  dataShown: !document.getElementById("data").hidden,
  loginMessage: document.getElementById("login-message").textContent,
  reloads: [...document.querySelectorAll("#reload-rows tr[data-outcome]")].map((r) => r.dataset.outcome),
  configHash: document.getElementById("config-hash").title,
  url: location.href,
};
"##;

/// Listener `web` → pool `app` of `app` through router plugin `router` (the canary router,
/// everything to `app`), probed every 200 ms and down at the first failure, and an admin
/// listener with a token.
fn gateway_toml(app: &[std::net::SocketAddr]) -> String {
    let mut toml = plugin_engine_section();
    toml += &listener("web", 0, &[]);
    toml += &pool("app", app);
    toml += &settings("web", "probe = \"health\"");
    toml += &basic_rule("site", "web", "app", "web", "router = \"router\"");
    toml += "[[probes]]\nname = \"health\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"1s\"\nunhealthy_threshold = 1\n\n";
    toml += &format!("[admin]\nbind_address = \"127.0.0.1\"\nport = 0\ntoken = {TOKEN:?}\n\n");
    toml += &plugin_section(
        "router",
        "example-canary-router",
        "router",
        r#"config = '{"variants": [{"name": "stable", "pool": "app", "settings": "web", "weight": 1}]}'"#,
    );
    toml
}

async fn admin_api(gw: &wasmgate::Gateway, method: Method, path: &str) -> Result<Value, String> {
    let url = format!("http://{}", gw.admin_addr().expect("admin listener"));
    let admin = AdminApi::new(&url, Some(TOKEN), None).expect("admin URL");
    match within_for(
        Duration::from_secs(120),
        path,
        call(&admin, method, path, Bytes::new()),
    )
    .await
    {
        Ok((_, body)) => Ok(serde_json::from_slice(&body).expect("JSON")),
        Err(ClientError::Status { status, body, .. }) => Err(format!("{status}: {body}")),
        Err(e) => panic!("{path}: {e}"),
    }
}

async fn api_health(gw: &wasmgate::Gateway, server: &str) -> String {
    let view = admin_api(gw, Method::GET, "/api/backend-health")
        .await
        .expect("backend health");
    view["backendAddressPools"][0]["backendHttpSettingsCollection"][0]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["address"] == server)
        .map(|s| s["health"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Waits until the admin API reports `server` as `health`, then checks that the page shows it
/// after at most one more refresh: the first refresh that started after the API's answer.
async fn shown_within_one_refresh(
    browser: &Browser,
    gw: &wasmgate::Gateway,
    server: &str,
    health: &str,
) {
    eventually(
        &format!("the admin API reports {server} {health}"),
        || async { (api_health(gw, server).await == health).then_some(()) },
    )
    .await;
    let args = vec![json!(server), json!("router")];
    let before = browser.eval(PAGE_STATE, args.clone()).await;
    let next = before["started"].as_u64().expect("started") + 1;
    let state = browser
        .wait_for(&format!("refresh {next} done"), PAGE_STATE, args, |s| {
            (s["refreshes"].as_u64() >= Some(next)).then(|| s.clone())
        })
        .await;
    assert_eq!(
        state["health"], health,
        "refresh {next} started after the API reported {server} {health}, and the page still shows {}",
        state["health"]
    );
}

fn target_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser() {
    let one = HttpBackend::start("one").await;
    let two = HttpBackend::start("two").await;
    let servers = [one.addr, two.addr];
    let toml = gateway_toml(&servers);
    let dir = std::env::temp_dir().join(format!("wasmgate-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, &toml).expect("config file");
    let config = Config::from_file(&file).expect("configuration");
    let gw = within_for(
        Duration::from_secs(120),
        "Gateway::start",
        wasmgate::Gateway::start(config),
    )
    .await
    .expect("gateway starts");
    assert!(gw.wait_for_first_probes(WAIT).await, "first probes");
    gw.set_config_file(file.clone(), false);

    // Traffic for the plugin's counters, and two reloads: one refused, one applied.
    let web = listener_addr(&gw, "web");
    for _ in 0..20 {
        assert_eq!(
            get(web, "site.example", "/").await.status,
            200,
            "through the router"
        );
    }
    write_changed(
        &file,
        &toml.replace("[[probes]]", "[[probes]]\nnot_a_field = 1"),
    );
    let refused = admin_api(&gw, Method::POST, "/api/reload")
        .await
        .unwrap_err();
    assert!(refused.contains("not_a_field"), "{refused}");
    write_changed(
        &file,
        &gateway_toml(&servers).replace("[[listeners]]", "# second revision\n[[listeners]]"),
    );
    admin_api(&gw, Method::POST, "/api/reload")
        .await
        .expect("reload applies");
    let status = admin_api(&gw, Method::GET, "/api/status")
        .await
        .expect("status");
    let reloads = status["reloads"].as_array().expect("reloads");
    assert_eq!(
        reloads
            .iter()
            .map(|r| r["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["applied", "failed"],
        "{status}"
    );
    assert_eq!(
        status["config"]["hash"], reloads[0]["configHash"],
        "{status}"
    );
    assert_eq!(reloads[1]["configHash"], Value::Null, "{status}");

    let browser = Browser::start(1280, 1500).await;
    let page = format!("http://{}/?refresh=0.5", gw.admin_addr().unwrap());
    within_for(
        Duration::from_secs(60),
        "the console to load",
        browser.client.goto(&page),
    )
    .await
    .expect("console loads");
    let args = vec![json!(two.addr.to_string()), json!("router")];

    // No token yet: the page asks for one and shows no data.
    let state = browser
        .wait_for("the token prompt", PAGE_STATE, args.clone(), |s| {
            (s["auth"] == "required").then(|| s.clone())
        })
        .await;
    assert_eq!(
        (state["loginShown"].as_bool(), state["dataShown"].as_bool()),
        (Some(true), Some(false))
    );

    // A wrong token is refused, and the page says so.
    sign_in(&browser, "not-the-admin-token-000000").await;
    let state = browser
        .wait_for("the wrong token refused", PAGE_STATE, args.clone(), |s| {
            (s["auth"] == "refused").then(|| s.clone())
        })
        .await;
    assert!(
        state["loginMessage"].as_str().unwrap().contains("refused"),
        "{state}"
    );
    assert_eq!(state["dataShown"], false, "{state}");

    // The right token: data, and the token in no URL.
    sign_in(&browser, TOKEN).await;
    let state = browser
        .wait_for("the data after signing in", PAGE_STATE, args.clone(), |s| {
            (s["auth"] == "token" && s["health"] == "Healthy").then(|| s.clone())
        })
        .await;
    assert!(!state["url"].as_str().unwrap().contains(TOKEN), "{state}");
    assert_eq!(state["reloads"], json!(["applied", "failed"]), "{state}");
    assert_eq!(state["configHash"], status["config"]["hash"], "{state}");

    // A plugin replaced through the admin API: the page shows the new version.
    let path = plugin_path("example-tenant-router");
    let replaced = admin_api(
        &gw,
        Method::POST,
        &format!(
            "/api/plugins/router/replace?path={}&config={}",
            percent_encode(&path.display().to_string()),
            percent_encode(
                r#"{"domain": "saas.example", "pool_prefix": "tenant-", "settings": "web"}"#
            )
        ),
    )
    .await
    .expect("replace");
    let new_version = replaced["contentHash"]
        .as_str()
        .expect("content hash")
        .to_owned();
    assert_ne!(Some(new_version.as_str()), state["version"].as_str());
    let before = browser.eval(PAGE_STATE, args.clone()).await;
    let next = before["started"].as_u64().unwrap() + 1;
    let state = browser
        .wait_for(
            "a refresh after the replacement",
            PAGE_STATE,
            args.clone(),
            |s| (s["refreshes"].as_u64() >= Some(next)).then(|| s.clone()),
        )
        .await;
    assert_eq!(state["version"], new_version.as_str(), "{state}");

    // A backend stops: its server turns Unhealthy within one refresh; then back.
    two.set_probe_answer(ProbeAnswer::Refusing).await;
    shown_within_one_refresh(&browser, &gw, &two.addr.to_string(), "Unhealthy").await;
    let shot = browser.screenshot().await;
    assert!(shot.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(target_dir().join("console.png"), &shot).expect("write target/console.png");

    // On a phone: one card per row, nothing wider than the screen.
    within_for(
        Duration::from_secs(30),
        "resize",
        browser.client.set_window_size(390, 844),
    )
    .await
    .expect("resize");
    let layout = browser
        .eval(
            "return { overflow: document.documentElement.scrollWidth - window.innerWidth, \
             head: getComputedStyle(document.querySelector('#health thead')).display };",
            vec![],
        )
        .await;
    assert_eq!(
        layout,
        json!({ "overflow": 0, "head": "none" }),
        "phone layout"
    );
    std::fs::write(
        target_dir().join("console-phone.png"),
        browser.screenshot().await,
    )
    .expect("write target/console-phone.png");

    two.set_probe_answer(ProbeAnswer::Healthy).await;
    shown_within_one_refresh(&browser, &gw, &two.addr.to_string(), "Healthy").await;

    browser.close().await;
    gw.shutdown_within(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn sign_in(browser: &Browser, token: &str) {
    use fantoccini::Locator;
    let input = within_for(
        Duration::from_secs(30),
        "the token field",
        browser.client.wait().for_element(Locator::Id("token")),
    )
    .await
    .expect("token field");
    input.clear().await.expect("clear");
    input.send_keys(token).await.expect("type the token");
    browser
        .client
        .find(Locator::Id("login-submit"))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("sign in");
}

/// The page and its assets are served without the token, data endpoints are not.
#[tokio::test]
async fn page_open_data_under_token() {
    let one = HttpBackend::start("one").await;
    let gw = start_gateway(&gateway_toml(&[one.addr])).await;
    let admin = gw.admin_addr().unwrap();
    for path in ["/", "/console.js", "/console.css", "/favicon.svg"] {
        let reply = get(admin, "localhost", path).await;
        assert_eq!(reply.status.as_u16(), 200, "{path}");
        assert!(reply.header("content-security-policy").is_some(), "{path}");
    }
    for path in ["/api/status", "/api/backend-health", "/api/plugins"] {
        assert_eq!(
            get(admin, "localhost", path).await.status.as_u16(),
            401,
            "{path}"
        );
        let authorised = get_with(
            admin,
            "localhost",
            path,
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
        assert_eq!(authorised.status.as_u16(), 200, "{path}");
    }
    gw.shutdown_within(Duration::from_secs(5)).await;
}
