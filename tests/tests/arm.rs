//! Application Gateway ARM templates run as they are: each fixture in `tests/fixtures/arm/` (in
//! the shape of Azure's quickstarts) is imported, the TOML it becomes is started on loopback in
//! front of real backends, and requests are checked against Application Gateway's documented
//! behaviour.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use wasmgate_arm::{self as arm, Binding, ImportError, ImportOptions, Imported, PortBinding};
use wasmgate_tests::tls::{HttpsBackend, Pki, client_config, https_get, presented, tls_connect};
use wasmgate_tests::{
    HttpBackend, ProbeAnswer, assert_routed, eventually, free_ports, get, get_with, listener_addr,
    start_gateway,
};

/// Fixtures written for the 2017 API, with `resourceId(<gateway id>, '/child/name')`, which
/// Azure Resource Manager refuses: imported with `lenient`.
const LENIENT: &[&str] = &["v1-resource-ids"];

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/arm")
        .join(path)
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh folder for one import's certificate files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wasmgate-arm-{name}-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    dir
}

/// Imports fixture folder `name` (with its parameters file when `params`), binding 127.0.0.1
/// and mapping template ports as `ports` says. Certificates go to an absolute folder, so the
/// TOML text stands alone.
fn try_import(
    name: &str,
    params: bool,
    sets: &[(&str, String)],
    ports: &[(u16, u16)],
) -> Result<Imported, ImportError> {
    try_import_with(name, params, sets, ports, None)
}

/// [`try_import`] with `wasmgate import --error-pages` given.
fn try_import_with(
    name: &str,
    params: bool,
    sets: &[(&str, String)],
    ports: &[(u16, u16)],
    error_pages: Option<PathBuf>,
) -> Result<Imported, ImportError> {
    let dir = scratch(name);
    arm::import(&ImportOptions {
        template: fixture(&format!("{name}/azuredeploy.json")),
        parameters: params.then(|| fixture(&format!("{name}/azuredeploy.parameters.json"))),
        sets: sets
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        binding: Binding {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: ports
                .iter()
                .map(|(from, to)| {
                    (
                        *from,
                        PortBinding {
                            ip: None,
                            port: Some(*to),
                        },
                    )
                })
                .collect(),
        },
        base: dir.clone(),
        cert_dir: dir.join("certs"),
        error_pages,
        lenient: LENIENT.contains(&name),
    })
}

fn import(name: &str, params: bool, sets: &[(&str, String)], ports: &[(u16, u16)]) -> Imported {
    try_import(name, params, sets, ports)
        .unwrap_or_else(|e| panic!("importing fixture {name} failed: {e}"))
}

/// Backends listening on one port at 127.0.0.2, 127.0.0.3, ...: Application Gateway pools list
/// bare addresses and take the port from the backend settings, so servers of one pool (or of
/// pools sharing settings) share a port.
async fn shared_port_backends(names: &[&str]) -> (u16, Vec<HttpBackend>) {
    let ip = |i: usize| Ipv4Addr::new(127, 0, 0, 2 + i as u8);
    for _ in 0..20 {
        let first = StdTcpListener::bind((ip(0), 0)).expect("bind 127.0.0.2:0");
        let port = first.local_addr().expect("local_addr").port();
        let rest: Vec<_> = (1..names.len())
            .map(|i| StdTcpListener::bind((ip(i), port)))
            .collect();
        if rest.iter().any(Result::is_err) {
            continue;
        }
        drop((first, rest));
        let mut backends = Vec::new();
        for (i, name) in names.iter().enumerate() {
            backends.push(
                HttpBackend::builder(name)
                    .bind(SocketAddr::from((ip(i), port)))
                    .start()
                    .await,
            );
        }
        return (port, backends);
    }
    panic!("no port free on 127.0.0.2.. for {} backends", names.len());
}

fn fixture_cert(name: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(fixture(&format!("certs/{name}.pem"))).expect("fixture cert")
}

fn warned(imported: &Imported, path_part: &str) -> bool {
    imported.warnings.iter().any(|w| w.path.contains(path_part))
}

#[tokio::test]
async fn basic_rule_spreads_requests_over_the_pool() {
    let (port, backends) = shared_port_backends(&["vm1", "vm2"]).await;
    let [front] = free_ports(1)[..] else {
        unreachable!()
    };
    let imported = import(
        "basic",
        true,
        &[
            ("backendIpAddress1", "127.0.0.2".into()),
            ("backendIpAddress2", "127.0.0.3".into()),
            ("backendPort", port.to_string()),
        ],
        &[(80, front)],
    );
    // Azure-only parts are listed, with the reason, in the output and as warnings.
    for part in [
        "properties.sku",
        "gatewayIPConfigurations",
        "autoscaleConfiguration",
        "Microsoft.Network/virtualNetworks 'myVNet'",
    ] {
        assert!(
            warned(&imported, part),
            "{part} should be listed as ignored: {:?}",
            imported.warnings
        );
    }
    assert!(
        imported
            .toml
            .contains("# - resources[2].properties.sku: instance size"),
        "{}",
        imported.toml
    );
    assert!(
        imported
            .toml
            .contains("# from resources[2].properties.httpListeners[0]\n"),
        "{}",
        imported.toml
    );
    // The reference spelled 'MYHTTPSETTING' resolves to 'myHTTPSetting' (ARM names are case-insensitive).
    assert!(
        imported
            .toml
            .contains("backend_settings = \"myHTTPSetting\""),
        "{}",
        imported.toml
    );

    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "myListener");
    assert_eq!(addr.port(), front);
    // Round robin over the two healthy servers: four requests, two each.
    for _ in 0..4 {
        let reply = get(addr, "contoso.com", "/").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(
        (backends[0].hits(), backends[1].hits()),
        (2, 2),
        "a basic rule forwards to every server of its pool in turn"
    );
    // The listener is basic (no host name): any Host is accepted.
    assert_eq!(get(addr, "anything.example", "/x").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn path_based_rule_sends_each_path_to_its_pool() {
    let (port, _backends) = shared_port_backends(&["default", "images", "video"]).await;
    let [front] = free_ports(1)[..] else {
        unreachable!()
    };
    let imported = import(
        "path-based",
        false,
        &[
            ("defaultBackend", "127.0.0.2".into()),
            ("imagesBackend", "127.0.0.3".into()),
            ("videoBackend", "127.0.0.4".into()),
            ("backendPort", port.to_string()),
        ],
        &[(80, front)],
    );
    // The quickstart's rule has no priority (v1): the rule keeps its template position.
    assert!(!imported.toml.contains("priority ="), "{}", imported.toml);
    assert!(
        imported.toml.contains("kind = \"path_based\""),
        "{}",
        imported.toml
    );
    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "appGatewayHttpListener");
    assert_routed(
        addr,
        "contoso.com",
        "/images/cat.png",
        "images",
        "pathRule1 /images/*",
    )
    .await;
    assert_routed(
        addr,
        "contoso.com",
        "/video/intro.mp4",
        "video",
        "pathRule2 /video/*",
    )
    .await;
    assert_routed(
        addr,
        "contoso.com",
        "/IMAGES/Cat.png",
        "images",
        "paths match without regard to case",
    )
    .await;
    assert_routed(
        addr,
        "contoso.com",
        "/",
        "default",
        "the path map's default pool",
    )
    .await;
    assert_routed(
        addr,
        "contoso.com",
        "/imagesque/a",
        "default",
        "/images/* needs the slash",
    )
    .await;
    assert_routed(
        addr,
        "contoso.com",
        "/images/a?size=large",
        "images",
        "the query is not part of the path",
    )
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn multi_site_https_presents_each_sites_certificate() {
    let contoso = HttpBackend::start("contoso").await;
    let pki = Pki::new("fabrikam backend CA");
    let leaf = pki.issue(&["backend.fabrikam.internal"]);
    let fabrikam = HttpsBackend::start("fabrikam", pki.server_config(&leaf)).await;
    let root_b64 = base64::engine::general_purpose::STANDARD.encode(pki.ca_pem());
    let [front] = free_ports(1)[..] else {
        unreachable!()
    };
    let imported = import(
        "multi-site-https",
        true,
        &[
            ("contosoBackend", "127.0.0.1".into()),
            ("contosoBackendPort", contoso.addr.port().to_string()),
            ("fabrikamBackend", "127.0.0.1".into()),
            ("fabrikamBackendPort", fabrikam.addr.port().to_string()),
            ("backendRootCertData", root_b64),
        ],
        &[(443, front)],
    );
    assert!(
        imported.toml.contains("require_sni = true"),
        "{}",
        imported.toml
    );
    assert!(
        imported.toml.contains("min_tls_version = \"1.2\""),
        "{}",
        imported.toml
    );
    assert!(
        warned(&imported, "sslPolicy.policyName"),
        "{:?}",
        imported.warnings
    );
    // The private keys are written readable by their owner only.
    let key = imported
        .toml
        .lines()
        .find_map(|l| l.strip_prefix("certificate_key = "))
        .expect("a key file")
        .trim_matches('"')
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{key} must not be readable by others");

    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "contosoListener");
    assert_eq!(
        addr,
        listener_addr(&gw, "fabrikamListener"),
        "both sites share port 443's socket"
    );
    let ca = fixture_cert("ca");
    let client = client_config(&[ca], &["h2", "http/1.1"]);

    // SNI picks the certificate; the Host header picks the site.
    let stream = tls_connect(addr, "www.contoso.com", client.clone())
        .await
        .expect("TLS to contoso");
    assert_eq!(
        presented(&stream),
        fixture_cert("contoso"),
        "www.contoso.com gets contosoCert"
    );
    drop(stream);
    let reply = https_get(
        addr,
        "www.contoso.com",
        client.clone(),
        "www.contoso.com",
        "/",
    )
    .await;
    assert_eq!(
        (reply.status.as_u16(), reply.backend()),
        (200, Some("contoso")),
        "{}",
        reply.text()
    );

    let stream = tls_connect(addr, "fabrikam.com", client.clone())
        .await
        .expect("TLS to fabrikam");
    assert_eq!(
        presented(&stream),
        fixture_cert("fabrikam"),
        "fabrikam.com gets fabrikamCert"
    );
    drop(stream);
    let reply = https_get(
        addr,
        "www.fabrikam.com",
        client.clone(),
        "www.fabrikam.com",
        "/",
    )
    .await;
    assert_eq!(
        (reply.status.as_u16(), reply.backend()),
        (200, Some("fabrikam")),
        "{}",
        reply.text()
    );
    // End-to-end TLS: the backend was reached with the settings' host name as SNI and Host,
    // and its certificate verified against the template's trusted root.
    let seen = fabrikam.requests();
    let last = seen.last().expect("the fabrikam backend saw the request");
    assert_eq!(last.sni.as_deref(), Some("backend.fabrikam.internal"));
    assert_eq!(last.host.as_deref(), Some("backend.fabrikam.internal"));

    // requireServerNameIndication on every listener of the port: no SNI, no handshake.
    let no_sni = tls_connect(addr, "127.0.0.1", client.clone()).await;
    assert!(no_sni.is_err(), "a handshake without SNI must fail");
    gw.shutdown().await;
}

#[tokio::test]
async fn custom_probe_checks_its_path_and_takes_failing_servers_out() {
    let (port, backends) = shared_port_backends(&["a", "b"]).await;
    let [front] = free_ports(1)[..] else {
        unreachable!()
    };
    let imported = import(
        "probe",
        false,
        &[
            ("backend1", "127.0.0.2".into()),
            ("backend2", "127.0.0.3".into()),
            ("backendPort", port.to_string()),
        ],
        &[(80, front)],
    );
    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "appListener");
    for b in &backends {
        let probe = b.probes().first().cloned().expect("probed before serving");
        assert_eq!(probe.path(), "/healthz", "the custom probe's path");
        // pickHostNameFromBackendHttpSettings: the settings' hostName.
        assert_eq!(probe.header("host"), Some("app.contoso.com"));
    }
    // Requests carry the settings' host name too.
    get(addr, "www.contoso.com", "/").await;
    let seen = backends[0]
        .requests()
        .into_iter()
        .chain(backends[1].requests())
        .next()
        .expect("a request");
    assert_eq!(seen.header("host"), Some("app.contoso.com"));

    // Both servers serve while healthy (each is in rotation once its first probe passed).
    eventually("both servers in rotation", || async {
        let before = backends[1].hits();
        for _ in 0..4 {
            get(addr, "www.contoso.com", "/").await;
        }
        (backends[1].hits() > before && backends[0].hits() > 0).then_some(())
    })
    .await;
    // One failed probe (unhealthyThreshold 1, every second) takes server b out of rotation.
    backends[1].set_probe_answer(ProbeAnswer::Status(503)).await;
    let probes_before = backends[1].probe_hits();
    eventually(
        "server b leaves the rotation after failing its probe",
        || async {
            let before = backends[1].hits();
            for _ in 0..4 {
                get(addr, "www.contoso.com", "/").await;
            }
            (backends[1].hits() == before).then_some(())
        },
    )
    .await;
    assert!(
        backends[1].probe_hits() > probes_before,
        "server b left the rotation only after a probe saw it fail"
    );
    let before = backends[0].hits();
    for _ in 0..4 {
        assert_eq!(get(addr, "www.contoso.com", "/").await.backend(), Some("a"));
    }
    assert_eq!(backends[0].hits(), before + 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn redirects_answer_with_their_type_and_target() {
    let site = HttpBackend::start("site").await;
    let [http_port, https_port] = free_ports(2)[..] else {
        unreachable!()
    };
    let imported = import(
        "redirects",
        true,
        &[
            ("backend", "127.0.0.1".into()),
            ("backendPort", site.addr.port().to_string()),
        ],
        &[(80, http_port), (443, https_port)],
    );
    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "httpListener");
    let cases = [
        // (path and query, status, Location)
        (
            "/account/settings?tab=2",
            301,
            format!("https://www.contoso.com:{https_port}/account/settings?tab=2"),
        ),
        (
            "/old/blog/post?utm=x",
            301,
            "https://new.contoso.com/old/blog/post".to_string(),
        ),
        (
            "/found/a?b=c",
            302,
            "https://www.contoso.com/landing".to_string(),
        ),
        (
            "/submit?id=7",
            303,
            "http://status.contoso.com/report?id=7".to_string(),
        ),
        // includePath and includeQueryString absent: both false in Application Gateway.
        (
            "/temporary/page?q=1",
            307,
            "https://maintenance.contoso.com/".to_string(),
        ),
    ];
    for (target, status, location) in cases {
        let reply = get(addr, "www.contoso.com", target).await;
        assert_eq!(
            (reply.status.as_u16(), reply.header("location")),
            (status, Some(location.as_str())),
            "GET {target}"
        );
    }
    assert_eq!(site.hits(), 0, "redirects never reach the backend");
    // The redirect's target listener serves the site.
    let client = client_config(&[fixture_cert("ca")], &["http/1.1"]);
    let https = listener_addr(&gw, "httpsListener");
    let reply = https_get(
        https,
        "www.contoso.com",
        client,
        "www.contoso.com",
        "/account/settings",
    )
    .await;
    assert_eq!(
        (reply.status.as_u16(), reply.backend()),
        (200, Some("site"))
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn header_rewrites_apply_in_rule_sequence() {
    let app = HttpBackend::builder("app")
        .header("server", "backend/1.0")
        .header("x-powered-by", "php")
        .start()
        .await;
    let imported = import(
        "rewrite",
        false,
        &[
            ("backend", "127.0.0.1".into()),
            ("backendPort", app.addr.port().to_string()),
        ],
        &[(80, 0)],
    );
    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "appListener");
    let reply = get_with(
        addr,
        "www.contoso.com",
        "/",
        &[("x-internal-token", "secret")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = app.last();
    assert_eq!(seen.header("x-gateway"), Some("wasmgate"));
    assert_eq!(seen.header("accept-charset"), Some("utf-8"));
    assert_eq!(
        seen.header("x-internal-token"),
        None,
        "an empty value removes the header"
    );
    assert_eq!(
        reply.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(reply.header("x-powered-by"), None);
    assert_eq!(
        reply.header("server"),
        None,
        "hideServer (ruleSequence 50) removes Server"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn rewrite_conditions_on_server_variables_decide_each_rewrite() {
    let app = HttpBackend::start("app").await;
    let imported = import(
        "rewrite-conditions",
        false,
        &[
            ("backend", "127.0.0.1".into()),
            ("backendPort", app.addr.port().to_string()),
        ],
        &[(80, 0)],
    );
    assert!(
        imported
            .toml
            .contains("variable = \"http_req_User-Agent\", pattern = \"Mobile|Android\""),
        "{}",
        imported.toml
    );
    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "appListener");

    // mobileOnly: http_req_User-Agent matches "Mobile|Android", without regard to case.
    get_with(
        addr,
        "www.contoso.com",
        "/",
        &[("user-agent", "Mozilla/5.0 (Linux; ANDROID 14)")],
    )
    .await;
    assert_eq!(app.last().header("x-device"), Some("mobile"));
    get_with(
        addr,
        "www.contoso.com",
        "/",
        &[("user-agent", "Mozilla/5.0 (X11; Linux)")],
    )
    .await;
    assert_eq!(app.last().header("x-device"), None, "no match, no rewrite");
    get(addr, "www.contoso.com", "/").await;
    assert_eq!(
        app.last().header("x-device"),
        None,
        "an absent header matches nothing"
    );

    // cacheStatic: var_uri_path ^/static/ (the path as the client sent it, query excluded).
    let reply = get(addr, "www.contoso.com", "/static/site.css?v=2").await;
    assert_eq!(reply.header("cache-control"), Some("public, max-age=86400"));
    let reply = get(addr, "www.contoso.com", "/page?next=/static/").await;
    assert_eq!(reply.header("cache-control"), None);

    // notApi: not under /api/ (negate) and the backend answered with X-Backend "app"
    // (case-sensitive): a condition on the request and one on the response, both required.
    let reply = get(addr, "www.contoso.com", "/page").await;
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    let reply = get(addr, "www.contoso.com", "/api/orders").await;
    assert_eq!(
        reply.header("x-frame-options"),
        None,
        "negated condition matched"
    );
    gw.shutdown().await;

    // The same rule set, where the response condition no longer holds.
    let other = HttpBackend::start("APP").await;
    let imported = import(
        "rewrite-conditions",
        false,
        &[
            ("backend", "127.0.0.1".into()),
            ("backendPort", other.addr.port().to_string()),
        ],
        &[(80, 0)],
    );
    let gw = start_gateway(&imported.toml).await;
    let reply = get(
        listener_addr(&gw, "appListener"),
        "www.contoso.com",
        "/page",
    )
    .await;
    assert_eq!(
        reply.header("x-frame-options"),
        None,
        "ignoreCase false: APP is not app"
    );
    gw.shutdown().await;
}

#[test]
fn rewrite_conditions_wasmgate_cannot_test_are_refused() {
    let cases = [
        (
            // The first var_uri_path condition: cacheStatic's.
            "\"variable\": \"var_uri_path\"",
            "\"variable\": \"var_client_tcp_rtt\"",
            "response_headers[0].conditions[0].variable: \"var_client_tcp_rtt\" is not a supported server variable",
        ),
        (
            "\"variable\": \"http_req_User-Agent\"",
            "\"variable\": \"http_resp_Server\"",
            "request_headers[0].conditions[0].variable: \"http_resp_Server\" is known only once the response arrives",
        ),
        (
            "\"pattern\": \"Mobile|Android\"",
            "\"pattern\": \"Mobile(\"",
            "request_headers[0].conditions[0].pattern: \"Mobile(\" is not a regular expression",
        ),
    ];
    for (from, to, expected) in cases {
        let e = import_variant("rewrite-conditions", from, to).expect_err(expected);
        let text = e.to_string();
        assert!(text.contains(expected), "expected {expected:?} in: {text}");
        assert!(
            text.contains("(from resources[1].properties.rewriteRuleSets[0])"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn path_override_and_host_name_reach_the_backend() {
    let (port, backends) = shared_port_backends(&["api", "web"]).await;
    let [front] = free_ports(1)[..] else {
        unreachable!()
    };
    let imported = import(
        "path-override",
        false,
        &[
            ("apiBackend", "127.0.0.2".into()),
            ("webBackend", "127.0.0.3".into()),
            ("backendPort", port.to_string()),
        ],
        &[(80, front)],
    );
    let settings = |name: &str| {
        imported
            .config
            .backend_settings
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("settings {name}"))
            .clone()
    };
    assert_eq!(
        settings("apiSettings").request_timeout,
        Duration::from_secs(45)
    );
    let draining = settings("webSettings").draining;
    assert!(draining.enabled);
    assert_eq!(draining.timeout, Duration::from_secs(60));

    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "siteListener");
    assert_routed(
        addr,
        "www.contoso.com",
        "/api/users?active=1",
        "api",
        "the /api/* path rule",
    )
    .await;
    let seen = backends[0].last();
    // Application Gateway replaces the matched path rule's prefix with the override.
    assert_eq!(seen.uri, "/v2/users?active=1");
    assert_eq!(seen.header("host"), Some("api.internal"));
    assert_eq!(seen.header("x-original-host"), Some("www.contoso.com"));

    let reply = assert_routed(
        addr,
        "www.contoso.com",
        "/index.html",
        "web",
        "the default pool",
    )
    .await;
    assert_eq!(
        backends[1].last().header("host"),
        Some("127.0.0.3"),
        "pickHostNameFromBackendAddress"
    );
    assert!(
        reply.set_cookie("contosoAffinity").is_some(),
        "cookie affinity with affinityCookieName"
    );
    // The listener's host name: other hosts find no listener.
    assert_eq!(get(addr, "www.fabrikam.com", "/").await.status, 404);
    gw.shutdown().await;
}

/// Writes a variant of fixture `name` (its text with `from` replaced by `to`) and imports it.
/// The fixture's parameters file goes with it when it has one.
fn import_variant(name: &str, from: &str, to: &str) -> Result<Imported, ImportError> {
    let text =
        std::fs::read_to_string(fixture(&format!("{name}/azuredeploy.json"))).expect("fixture");
    assert!(text.contains(from), "{name} has no {from:?}");
    let dir = scratch(&format!("{name}-variant"));
    let template = dir.join("azuredeploy.json");
    std::fs::write(&template, text.replacen(from, to, 1)).expect("write the variant");
    arm::import(&ImportOptions {
        template,
        parameters: Some(fixture(&format!("{name}/azuredeploy.parameters.json")))
            .filter(|p| p.is_file()),
        sets: vec![],
        binding: Binding::default(),
        base: dir.clone(),
        cert_dir: dir.join("certs"),
        error_pages: None,
        lenient: LENIENT.contains(&name),
    })
}

#[test]
fn unsupported_parts_are_errors_naming_the_json_path() {
    let cases = [
        (
            "rewrite",
            "\"headerValue\": \"wasmgate\"",
            "\"headerValue\": \"wasmgate\", \"headerValueMatcher\": { \"pattern\": \"x\" }",
            "rewriteRules[0].actionSet.requestHeaderConfigurations[0].headerValueMatcher: rewriting part of a header value by pattern is not supported",
        ),
        (
            "basic",
            "\"[parameters('applicationGatewayName')]\",\n      \"location\"",
            "\"[concat('gw-', reference('gw-name').name)]\",\n      \"location\"",
            "resources[2].name: the template function 'reference' cannot be evaluated: it reads deployed resources",
        ),
        (
            "basic",
            "'myListener')]\"",
            "'yourListener')]\"",
            "requestRoutingRules[0].properties.httpListener.id: there is no httpListeners item named 'yourListener'",
        ),
        (
            "basic",
            "\"requireServerNameIndication\": false",
            "\"sslProfile\": { \"id\": \"x\" }",
            "httpListeners[0].properties.sslProfile.id: 'x' does not name a sslProfiles item",
        ),
        (
            "basic",
            "\"pickHostNameFromBackendAddress\": false,",
            "\"pickHostNameFromBackendAddress\": false, \"routingMagic\": true,",
            "backendHttpSettingsCollection[0].properties.routingMagic: not supported by wasmgate",
        ),
        (
            "path-based",
            "\"/images/*\"\n                    ],",
            "\"/images/*\"], \"loadDistributionPolicy\": { \"id\": \"x\" },",
            "pathRules[0].properties.loadDistributionPolicy: load distribution policies are not supported",
        ),
    ];
    for (name, from, to, expected) in cases {
        let e = import_variant(name, from, to).expect_err(expected);
        let text = e.to_string();
        assert!(text.contains(expected), "expected {expected:?} in: {text}");
        // File, line and column come first.
        let position = text.split(": ").next().unwrap_or_default();
        assert!(
            position.ends_with(|c: char| c.is_ascii_digit())
                && position.contains("azuredeploy.json:"),
            "no position in: {text}"
        );
    }
    // A function wasmgate does not have is named as unsupported.
    let e = import_variant(
        "basic",
        "\"[parameters('applicationGatewayName')]\",\n      \"location\"",
        "\"[dataUri(resourceGroup().id)]\",\n      \"location\"",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("'dataUri' cannot be evaluated: not supported (supported: parameters"),
        "{e}"
    );
}

#[test]
fn configuration_errors_name_the_template_item_they_came_from() {
    // Two rules on one listener: valid JSON, refused by wasmgate's validation, traced back.
    let e = import_variant(
        "redirects",
        "\"httpListener\": {\n                \"id\": \"[resourceId('Microsoft.Network/applicationGateways/httpListeners', parameters('applicationGatewayName'), 'httpsListener')]\"",
        "\"httpListener\": {\n                \"id\": \"[resourceId('Microsoft.Network/applicationGateways/httpListeners', parameters('applicationGatewayName'), 'httpListener')]\"",
    )
    .expect_err("two rules on one listener");
    let text = e.to_string();
    assert!(matches!(e, ImportError::Config { .. }), "{text}");
    assert!(
        text.contains("(from resources[1].properties.requestRoutingRules[1])"),
        "{text}"
    );
}

#[test]
fn backend_pool_membership_through_network_interfaces_is_refused() {
    let e = import_variant(
        "basic",
        "\"type\": \"Microsoft.Network/virtualNetworks\",",
        "\"type\": \"Microsoft.Network/networkInterfaces\", \"x\": { \"ipConfigurations\": [ { \"properties\": { \"applicationGatewayBackendAddressPools\": [ { \"id\": \"p\" } ] } } ] },",
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(
            "resources[1].x.ipConfigurations[0].properties.applicationGatewayBackendAddressPools"
        ),
        "{text}"
    );
}

/// Two multi-site listeners on one port whose host names overlap, each with a rule: `www` listed
/// after the wildcard. `priorities` gives the rules' priorities (wildcard, www), if any.
fn overlapping_sites(pool_port: u16, front: u16, priorities: Option<(i64, i64)>) -> Imported {
    let gw =
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/applicationGateways/sites";
    let rule = |name: &str, listener: &str, pool: &str, priority: Option<i64>| {
        let priority = priority
            .map(|p| format!("\"priority\": {p}, "))
            .unwrap_or_default();
        format!(
            r#"{{ "name": "{name}", "properties": {{ "ruleType": "Basic", {priority}"httpListener": {{ "id": "{gw}/httpListeners/{listener}" }}, "backendAddressPool": {{ "id": "{gw}/backendAddressPools/{pool}" }}, "backendHttpSettings": {{ "id": "{gw}/backendHttpSettingsCollection/settings" }} }} }}"#
        )
    };
    let template = format!(
        r#"{{
  "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
  "contentVersion": "1.0.0.0",
  "resources": [ {{
    "type": "Microsoft.Network/applicationGateways", "apiVersion": "2023-09-01", "name": "sites",
    "properties": {{
      "frontendPorts": [ {{ "name": "p80", "properties": {{ "port": 80 }} }} ],
      "httpListeners": [
        {{ "name": "wildcard", "properties": {{ "frontendPort": {{ "id": "{gw}/frontendPorts/p80" }}, "protocol": "Http", "hostNames": ["*.contoso.com"] }} }},
        {{ "name": "www", "properties": {{ "frontendPort": {{ "id": "{gw}/frontendPorts/p80" }}, "protocol": "Http", "hostName": "www.contoso.com" }} }}
      ],
      "backendAddressPools": [
        {{ "name": "tenants", "properties": {{ "backendAddresses": [ {{ "ipAddress": "127.0.0.2" }} ] }} }},
        {{ "name": "site", "properties": {{ "backendAddresses": [ {{ "ipAddress": "127.0.0.3" }} ] }} }}
      ],
      "backendHttpSettingsCollection": [ {{ "name": "settings", "properties": {{ "port": {pool_port}, "protocol": "Http" }} }} ],
      "requestRoutingRules": [ {}, {} ]
    }}
  }} ]
}}"#,
        rule(
            "tenantsRule",
            "wildcard",
            "tenants",
            priorities.map(|p| p.0)
        ),
        rule("siteRule", "www", "site", priorities.map(|p| p.1)),
    );
    let dir = scratch("sites");
    let path = dir.join("azuredeploy.json");
    std::fs::write(&path, template).expect("write the template");
    arm::import(&ImportOptions {
        template: path,
        parameters: None,
        sets: vec![],
        binding: Binding {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: vec![(
                80,
                PortBinding {
                    ip: None,
                    port: Some(front),
                },
            )],
        },
        base: dir.clone(),
        cert_dir: dir.join("certs"),
        error_pages: None,
        lenient: false,
    })
    .unwrap_or_else(|e| panic!("import: {e}"))
}

#[tokio::test]
async fn rules_without_priority_keep_the_template_order() {
    let (port, _backends) = shared_port_backends(&["tenants", "site"]).await;
    let [front_v1, front_v2] = free_ports(2)[..] else {
        unreachable!()
    };

    // v1 (no priorities): the rules are evaluated as listed, so the wildcard listener, listed
    // first, takes www.contoso.com too.
    let v1 = overlapping_sites(port, front_v1, None);
    let gw = start_gateway(&v1.toml).await;
    let addr = listener_addr(&gw, "www");
    assert_routed(
        addr,
        "www.contoso.com",
        "/",
        "tenants",
        "v1: the first listed rule wins",
    )
    .await;
    assert_routed(addr, "blue.contoso.com", "/", "tenants", "the wildcard").await;
    gw.shutdown().await;

    // v2: priorities decide (1 first), whatever the order.
    let v2 = overlapping_sites(port, front_v2, Some((20, 10)));
    let gw = start_gateway(&v2.toml).await;
    let addr = listener_addr(&gw, "www");
    assert_routed(
        addr,
        "www.contoso.com",
        "/",
        "site",
        "v2: priority 10 before 20",
    )
    .await;
    assert_routed(addr, "blue.contoso.com", "/", "tenants", "the wildcard").await;
    gw.shutdown().await;
}

#[test]
fn a_gateway_whose_condition_is_false_is_not_deployed() {
    let e = import_variant(
        "basic",
        "\"type\": \"Microsoft.Network/applicationGateways\",",
        "\"type\": \"Microsoft.Network/applicationGateways\", \"condition\": \"[parameters('deployGateway')]\",",
    )
    .expect_err("an undeclared parameter");
    assert!(
        e.to_string().contains("no parameter named 'deployGateway'"),
        "{e}"
    );
    let e = import_variant(
        "basic",
        "\"type\": \"Microsoft.Network/applicationGateways\",",
        "\"type\": \"Microsoft.Network/applicationGateways\", \"condition\": false,",
    )
    .expect_err("condition false");
    assert!(
        e.to_string()
            .contains("resources[2].condition: the gateway's condition is not true"),
        "{e}"
    );
}

/// The shapes templates written for the 2017 API still have: references built as
/// `resourceId(<gateway id>, '/httpListeners/name')` or with `concat`, resource types with a
/// trailing slash, `format()` / `toLower()` / `if()` / `json()` / `int()` in values, backend
/// addresses and ports from array and int parameters, and a tag that reads a deployed resource
/// with `reference()` (not imported, so it does not matter that it cannot be evaluated here).
#[tokio::test]
async fn v1_resource_ids_and_template_functions_route_by_host_name() {
    let (port, backends) = shared_port_backends(&["www1", "www2", "api"]).await;
    let [front] = free_ports(1)[..] else {
        unreachable!()
    };
    let imported = import(
        "v1-resource-ids",
        false,
        &[
            (
                "wwwAddresses",
                r#"[{"IpAddress": "127.0.0.2"}, {"IpAddress": "127.0.0.3"}]"#.into(),
            ),
            ("apiAddresses", r#"[{"ipAddress": "127.0.0.4"}]"#.into()),
            ("backendPort", port.to_string()),
        ],
        &[(80, front)],
    );
    assert!(
        warned(&imported, "resources[1].tags"),
        "{:?}",
        imported.warnings
    );
    assert!(
        imported.toml.contains("request_timeout = 30"),
        "{}",
        imported.toml
    );
    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "wwwListener");
    assert_eq!(addr, listener_addr(&gw, "apiListener"));
    for _ in 0..4 {
        assert_eq!(get(addr, "www.contoso.com", "/").await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(addr, "api.contoso.com", "/v1").await.status, 200);
    }
    assert_eq!(
        (backends[0].hits(), backends[1].hits(), backends[2].hits()),
        (2, 2, 3),
        "each host name reaches its own pool"
    );
    gw.shutdown().await;
}

#[test]
fn expressions_that_need_azure_fail_only_where_their_value_is_imported() {
    // A Key Vault certificate whose URI comes from reference(): refused at the certificate.
    let e = import_variant(
        "v1-resource-ids",
        "\"frontendPorts\": [",
        "\"sslCertificates\": [ { \"name\": \"kv\", \"properties\": { \"keyVaultSecretId\": \"[concat(reference('kv').vaultUri, 'secrets/site')]\" } } ], \"frontendPorts\": [",
    )
    .unwrap_err();
    let text = e.to_string();
    let part = "sslCertificates[0].properties.keyVaultSecretId: the template function 'reference' cannot be evaluated: it reads deployed resources";
    assert!(text.contains(part), "expected {part:?} in: {text}");
    // A syntax error fails the import even in a part that is not imported, as it fails the
    // deployment.
    let e = import_variant(
        "v1-resource-ids",
        "'ops')).principalId]",
        "'ops'))).principalId]",
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("resources[1].tags.owner: unexpected text after the expression"),
        "{text}"
    );
    // A listener's host name from reference(): refused at the host name, not silently dropped.
    let e = import_variant(
        "v1-resource-ids",
        "\"HostName\": \"[parameters('hostName2')]\"",
        "\"HostName\": \"[reference('api-ip').dnsSettings.fqdn]\"",
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("httpListeners[1].properties.HostName")
            && text.contains("'reference' cannot be evaluated"),
        "{text}"
    );
}

/// What Bicep writes for `[for ...]`: property copy loops (nested, for the pools' addresses), a
/// variable copy loop, `copyIndex('name')`, `add`/`mul` for priorities, `json(format(...))`
/// references, `createObject`/`null()` and `if` for optional parts. Each site's listener, pool
/// and settings come out of the loops and route its host names.
#[tokio::test]
async fn bicep_copy_loops_expand_into_one_site_per_item() {
    let (port, backends) = shared_port_backends(&["contoso", "fabrikam1", "fabrikam2"]).await;
    let [front] = free_ports(1)[..] else {
        unreachable!()
    };
    let sites = r#"[
        { "name": "contoso", "hostNames": ["contoso.com", "www.contoso.com"], "addresses": ["127.0.0.2"] },
        { "name": "fabrikam", "hostNames": ["fabrikam.com"], "addresses": ["127.0.0.3", "127.0.0.4"],
          "affinityCookieName": "FabrikamAffinity" } ]"#;
    let imported = import(
        "bicep-loops",
        false,
        &[("sites", sites.into()), ("backendPort", port.to_string())],
        &[(80, front)],
    );
    for line in [
        "priority = 100",
        "priority = 110",
        "name = \"fabrikam-pool\"",
    ] {
        assert!(imported.toml.contains(line), "{line}: {}", imported.toml);
    }
    for part in [
        "httpListeners[1].properties.firewallPolicy",
        "properties.firewallPolicy",
    ] {
        assert!(warned(&imported, part), "{part}: {:?}", imported.warnings);
    }
    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "contoso-listener");
    for host in ["contoso.com", "www.contoso.com"] {
        assert_eq!(get(addr, host, "/").await.status, 200);
    }
    assert_eq!(
        backends[0].hits(),
        2,
        "both contoso host names reach its pool"
    );
    // Fabrikam's settings have cookie affinity with the template's cookie name.
    let first = get(addr, "fabrikam.com", "/").await;
    assert_eq!(first.status, 200);
    let cookie = first
        .header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("FabrikamAffinity="))
        .unwrap_or_else(|| panic!("no FabrikamAffinity cookie: {:?}", first.headers))
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    for _ in 0..3 {
        let r = get_with(addr, "fabrikam.com", "/", &[("cookie", cookie.as_str())]).await;
        assert_eq!(r.status, 200);
    }
    let (f1, f2) = (backends[1].hits(), backends[2].hits());
    assert_eq!(f1 + f2, 4, "fabrikam requests stay in its pool");
    assert!(
        f1 == 4 || f2 == 4,
        "the affinity cookie keeps one server: {f1} and {f2}"
    );
    assert_eq!(backends[0].hits(), 2);
    gw.shutdown().await;
}

/// A server that joins a pool through its network interface (as VM quickstarts and templates
/// exported from Azure write it) is added to the pool by its static private address; one whose
/// address Azure assigns is refused, naming where to put the address.
#[test]
fn network_interfaces_with_a_static_address_join_their_pool() {
    let with_nic = |ip: &str| {
        import_variant(
            "basic",
            "\"resources\": [",
            &format!(
                "\"resources\": [ {{ \"type\": \"Microsoft.Network/networkInterfaces\", \"apiVersion\": \"2020-11-01\", \"name\": \"vm3-nic\", \"properties\": {{ \"ipConfigurations\": [ {{ \"name\": \"ipconfig1\", \"properties\": {{ {ip} \"subnet\": {{ \"id\": \"[resourceId('Microsoft.Network/virtualNetworks/subnets', 'myVNet', 'backend')]\" }}, \"applicationGatewayBackendAddressPools\": [ {{ \"id\": \"[resourceId('Microsoft.Network/applicationGateways/backendAddressPools', parameters('applicationGatewayName'), 'MYBACKENDPOOL')]\" }} ] }} }} ] }} }},"
            ),
        )
    };
    let imported =
        with_nic("\"privateIPAllocationMethod\": \"Static\", \"privateIPAddress\": \"10.1.0.9\",")
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        imported
            .toml
            .contains("addresses = [\"10.1.0.4\", \"10.1.0.5\", \"10.1.0.9\"]"),
        "{}",
        imported.toml
    );
    assert!(
        warned(
            &imported,
            "resources[0] (Microsoft.Network/networkInterfaces 'vm3-nic')"
        ),
        "{:?}",
        imported.warnings
    );
    // Interfaces from a resource copy loop, each with its static address.
    let imported = import_variant(
        "basic",
        "\"resources\": [",
        "\"resources\": [ { \"type\": \"Microsoft.Network/networkInterfaces\", \"apiVersion\": \"2020-11-01\", \"name\": \"[concat('web', copyIndex(1), '-nic')]\", \"copy\": { \"name\": \"nicLoop\", \"count\": 2 }, \"properties\": { \"ipConfigurations\": [ { \"name\": \"ipconfig1\", \"properties\": { \"privateIPAllocationMethod\": \"Static\", \"privateIPAddress\": \"[concat('10.1.1.', add(10, copyIndex('nicLoop')))]\", \"applicationGatewayBackendAddressPools\": [ { \"id\": \"[concat(resourceId('Microsoft.Network/applicationGateways', parameters('applicationGatewayName')), '/backendAddressPools/myBackendPool')]\" } ] } } ] } },",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        imported
            .toml
            .contains("addresses = [\"10.1.0.4\", \"10.1.0.5\", \"10.1.1.10\", \"10.1.1.11\"]"),
        "{}",
        imported.toml
    );
    let e = with_nic("\"privateIPAllocationMethod\": \"Dynamic\",").unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("resources[0].properties.ipConfigurations[0].properties.privateIPAddress: this network interface joins a backend pool, but its address is assigned by Azure"),
        "{text}"
    );
}

#[tokio::test]
async fn ssl_profiles_and_custom_error_pages_are_imported() {
    let contoso = HttpBackend::start("contoso").await;
    let partners = Pki::new("partner CA");
    let backend_ca = Pki::new("fabrikam backend CA");
    let b64 = |pem: String| base64::engine::general_purpose::STANDARD.encode(pem);
    let [front] = free_ports(1)[..] else {
        unreachable!()
    };
    let sets = [
        ("contosoBackend", "127.0.0.1".to_string()),
        ("contosoBackendPort", contoso.addr.port().to_string()),
        ("fabrikamBackend", "127.0.0.1".into()),
        // Nothing listens there: the gateway answers 502 itself.
        (
            "fabrikamBackendPort",
            wasmgate_tests::dead_address().port().to_string(),
        ),
        ("backendRootCertData", b64(backend_ca.ca_pem())),
        ("clientCaData", b64(partners.ca_pem())),
    ];

    // Without a folder of pages, the pages are reported, not fetched.
    let imported = try_import_with("mtls", true, &sets, &[(443, front)], None)
        .unwrap_or_else(|e| panic!("import: {e}"));
    for page in [
        "properties.customErrorConfigurations[0]",
        "properties.customErrorConfigurations[1]",
        "httpListeners[0].properties.customErrorConfigurations[0]",
    ] {
        let warning = imported
            .warnings
            .iter()
            .find(|w| w.path.ends_with(page))
            .unwrap_or_else(|| panic!("{page} not reported: {:?}", imported.warnings));
        assert!(warning.reason.contains("--error-pages"), "{warning}");
    }
    assert!(
        warned(&imported, "clientAuthConfiguration.verifyClientRevocation"),
        "OCSP is reported: {:?}",
        imported.warnings
    );
    assert!(
        !imported.toml.contains("custom_error_pages"),
        "{}",
        imported.toml
    );

    let imported = try_import_with(
        "mtls",
        true,
        &sets,
        &[(443, front)],
        Some(fixture("mtls/error-pages")),
    )
    .unwrap_or_else(|e| panic!("import with pages: {e}"));
    let toml = &imported.toml;
    for expected in [
        "[[ssl_profiles]]\nname = \"partnersProfile\"",
        "verify_client_cert_issuer_dn = true",
        "ssl_profile = \"partnersProfile\"",
        "[[listeners.custom_error_pages]]\nstatus = 502",
        "contoso-502.html",
        "[[custom_error_pages]]\nstatus = 403",
    ] {
        assert!(
            toml.contains(expected),
            "{expected:?} missing from:\n{toml}"
        );
    }

    let gw = start_gateway(toml).await;
    let addr = listener_addr(&gw, "contosoListener");
    let server_ca = fixture_cert("ca");
    // The contoso site asks for a partner certificate: none, no handshake.
    let plain = client_config(&[server_ca], &["http/1.1"]);
    let refused = tokio::spawn(https_get(
        addr,
        "www.contoso.com",
        plain.clone(),
        "www.contoso.com",
        "/",
    ))
    .await;
    assert!(
        refused.is_err(),
        "a client without a certificate is refused"
    );
    // The fabrikam site asks for none; its dead backend gets the gateway-wide 502 page.
    let reply = https_get(addr, "fabrikam.com", plain, "www.fabrikam.com", "/").await;
    assert_eq!(reply.status.as_u16(), 502);
    assert_eq!(reply.text(), "<h1>Our servers are resting</h1>\n");
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn url_rewrites_reroute_through_the_path_map_and_drop_the_query() {
    let (port, backends) = shared_port_backends(&["default", "images", "video"]).await;
    let [front] = free_ports(1)[..] else {
        unreachable!()
    };
    let imported = import(
        "url-rewrite",
        false,
        &[
            ("defaultBackend", "127.0.0.2".into()),
            ("imagesBackend", "127.0.0.3".into()),
            ("videoBackend", "127.0.0.4".into()),
            ("backendPort", port.to_string()),
        ],
        &[(80, front)],
    );
    assert!(
        imported.toml.contains(
            "url_configuration = { modified_path = \"/video/{var_uri_path_1}\", reroute = true }"
        ),
        "{}",
        imported.toml
    );
    assert!(
        imported
            .toml
            .contains("url_configuration = { modified_query_string = \"\" }"),
        "{}",
        imported.toml
    );
    let gw = start_gateway(&imported.toml).await;
    let addr = listener_addr(&gw, "appGatewayHttpListener");
    let [_, images, video] = &backends[..] else {
        unreachable!()
    };

    get(addr, "www.contoso.com", "/images/legacy/clip.mp4").await;
    assert_eq!(
        video.hits(),
        1,
        "reroute: the new path chose the video rule"
    );
    assert_eq!(video.last().uri, "/video/clip.mp4");
    assert_eq!(images.hits(), 0);

    get(addr, "www.contoso.com", "/images/a.png?token=s3cr3t").await;
    let seen = images.last();
    assert_eq!(
        seen.uri, "/images/a.png",
        "an empty query string removes it"
    );
    assert_eq!(seen.header("x-image-path"), Some("/images/a.png"));
    get_with(
        addr,
        "www.contoso.com",
        "/images/b.png?Token=kept",
        &[("x-keep-path", "yes")],
    )
    .await;
    let seen = images.last();
    assert_eq!(seen.uri, "/images/b.png?Token=kept", "ignoreCase false");
    assert_eq!(
        seen.header("x-image-path"),
        None,
        "negated condition matched"
    );
    gw.shutdown().await;
}

/// Azure Resource Manager wants a value for every parameter before it evaluates anything, so
/// the import names all that lack one in one error, instead of failing at the first use (which
/// for a certificate was inside the PKCS#12 decoder, given the text `[parameters('...')]`).
#[test]
fn parameters_without_a_value_are_all_named_first() {
    let template = fixture("multi-site-https/azuredeploy.json");
    let e = try_import("multi-site-https", false, &[], &[]).expect_err("no parameters given");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: parameters: no value for the parameters 'certPassword' (line 19), 'contosoCertData' (line 25), 'fabrikamCertData' (line 31), 'backendRootCertData' (line 37): they have no defaultValue; give values with --parameters or --set",
            template.display()
        )
    );
    // With the parameters file, only the one it leaves out.
    let e = try_import("multi-site-https", true, &[], &[]).expect_err("one parameter missing");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: parameters: no value for the parameter 'backendRootCertData' (line 37): it has no defaultValue; give values with --parameters or --set",
            template.display()
        )
    );
}

/// `resourceId(<gateway id>, '/child/name')`, as the 2017 templates wrote references, is refused
/// by Azure Resource Manager ("requires exactly one multi-segmented argument"): the import
/// refuses it with that reason, wherever it stands, unless asked to be lenient.
#[test]
fn resource_ids_azure_refuses_fail_the_import_unless_lenient() {
    let dir = scratch("strict");
    let options = |lenient| ImportOptions {
        template: fixture("v1-resource-ids/azuredeploy.json"),
        parameters: None,
        sets: vec![],
        binding: Binding::default(),
        base: dir.clone(),
        cert_dir: dir.join("certs"),
        error_pages: None,
        lenient,
    };
    let e = arm::import(&options(false)).expect_err("ARM refuses the template");
    assert_eq!(
        e.to_string(),
        format!(
            "{}:102:23: resources[1].properties.httpListeners[0].properties.FrontendIPConfiguration.Id: resourceId(): Azure Resource Manager refuses the call: \"function requires exactly one multi-segmented argument which must be resource type including resource provider namespace. Current function arguments '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wasmgate/providers/Microsoft.Network/applicationGateways/shop-agw,/frontendIPConfigurations/appGatewayFrontendIP'.\" (--lenient imports it, appending the names to the id given first) (character 2 of the expression)",
            fixture("v1-resource-ids/azuredeploy.json").display()
        )
    );
    let imported = arm::import(&options(true)).unwrap_or_else(|e| panic!("lenient: {e}"));
    assert_eq!(imported.config.listeners.len(), 2);
}
