//! The built-in basic-rules plugin against the native rules: generated configurations (host
//! names with wildcards, shared ports, priorities, path maps, redirects, path overrides,
//! rewrite sets) × generated requests, the decision of each compared. Both sides run
//! `wasmgate_rules` (routing, redirects, path overrides), so what this checks is that one
//! implementation decides alike compiled natively and for Wasm, and that each side reads the
//! configuration into it alike. Deterministic (fixed seed); needs the component built by
//! `scripts/build-plugins`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, builtin};
use crate::plugin::{Decision, EngineConfig, NoPools, PluginEngine, PluginSpec, RequestHead};
use crate::snapshot::{CompiledTarget, Snapshot};

const CONFIGS: usize = 250;
const REQUESTS_PER_CONFIG: usize = 420;

/// A decision in terms both sides can give.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Pool, settings, and the path the backend gets.
    Forward(String, String, String),
    Redirect(u16, String),
    /// The native rules answer (no listener matched; or a target with a rewrite set, which the
    /// plugin leaves to them).
    Native,
}

fn component() -> Vec<u8> {
    let dir = match std::env::var_os("WASMGATE_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
    };
    let path = dir.join(builtin::BUILTIN_FILE);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; build the plugins with scripts/build-plugins (scripts/test does)",
            path.display()
        )
    })
}

const HOST_PATTERNS: &[&str] = &[
    "app.contoso.com",
    "*.contoso.com",
    "api?.contoso.com",
    "*.com",
    "www.*.net",
    "*",
    "shop.fabrikam.com",
    "*shop*",
    "a?c.fabrikam.com",
    "[::1]",
];

const HOSTS: &[&str] = &[
    "app.contoso.com",
    "APP.Contoso.com:8080",
    "api1.contoso.com",
    "api12.contoso.com",
    "contoso.com",
    "www.fabrikam.net",
    "shop.fabrikam.com",
    "myshop.example.org",
    "abc.fabrikam.com",
    "ac.fabrikam.com",
    "other.org",
    "[::1]:8443",
    "[::1]",
    "10.0.0.5",
    "x.contoso.com.evil",
];

const PATH_PATTERNS: &[&str] = &[
    "/api/*",
    "/api*",
    "/api",
    "/images/*",
    "/IMG*",
    "/about",
    "/",
    "/*",
    "/v1/users/*",
];

const PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/API/users",
    "/apiary",
    "/images/a.png",
    "/images",
    "/img/x",
    "/About",
    "/about/",
    "/v1/users/7",
    "/v1/users",
    "/%41pi/x",
    "/x/y/z",
];

const QUERIES: &[Option<&str>] = &[None, Some("a=1"), Some("q=x&y=2"), Some("")];

/// A random configuration, as TOML. A draw may break a validation rule (multi-site listeners
/// sharing a port must agree on their bind address, say); the caller skips those.
fn config(rng: &mut fastrand::Rng) -> String {
    let pick = |rng: &mut fastrand::Rng, list: &[&'static str]| list[rng.usize(..list.len())];
    let mut toml = String::new();
    let pools = rng.usize(1..=3);
    for p in 0..pools {
        toml +=
            &format!("[[backend_pools]]\nname = \"pool{p}\"\naddresses = [\"10.0.0.{p}:80\"]\n\n");
    }
    let settings = rng.usize(1..=3);
    for s in 0..settings {
        toml += &format!("[[backend_settings]]\nname = \"set{s}\"\nport = 80\n");
        match rng.usize(..3) {
            0 => toml += "path = \"/base\"\n",
            1 => toml += "path = \"/v2/\"\n",
            _ => {}
        }
        toml += "\n";
    }
    toml += "[[rewrite_sets]]\nname = \"rw\"\n[[rewrite_sets.request_headers]]\nname = \"x-a\"\nvalue = \"1\"\n\n";
    let listeners = rng.usize(1..=6);
    let ports = [8001, 8002, 0];
    let mut basic_on_port = std::collections::HashSet::new();
    for l in 0..listeners {
        let port = ports[rng.usize(..ports.len())];
        let hosts: Vec<String> = if rng.u8(..4) == 0 && (port == 0 || basic_on_port.insert(port)) {
            Vec::new()
        } else {
            (0..rng.usize(1..=3))
                .map(|_| format!("{:?}", pick(rng, HOST_PATTERNS)))
                .collect()
        };
        toml += &format!(
            "[[listeners]]\nname = \"l{l}\"\nport = {port}\nbind_address = \"127.0.0.1\"\nhost_names = [{}]\n\n",
            hosts.join(", ")
        );
    }
    let redirects = rng.usize(0..=2);
    for r in 0..redirects {
        toml += &format!("[[redirects]]\nname = \"r{r}\"\n");
        toml += pick(
            rng,
            &[
                "",
                "redirect_type = \"found\"\n",
                "redirect_type = \"temporary\"\n",
            ],
        );
        if rng.bool() {
            toml += &format!("target_listener = \"l{}\"\n", rng.usize(..listeners));
        } else {
            toml += pick(
                rng,
                &[
                    "target_url = \"https://example.com/\"\n",
                    "target_url = \"http://example.com/landing?from=gw\"\n",
                ],
            );
        }
        toml += &format!(
            "include_path = {}\ninclude_query_string = {}\n\n",
            rng.bool(),
            rng.bool()
        );
    }
    let target = |rng: &mut fastrand::Rng, prefix: &str| {
        if redirects > 0 && rng.u8(..5) == 0 {
            format!("{prefix}redirect = \"r{}\"\n", rng.usize(..redirects))
        } else {
            let mut t = format!(
                "{prefix}backend_pool = \"pool{}\"\n{prefix}backend_settings = \"set{}\"\n",
                rng.usize(..pools),
                rng.usize(..settings)
            );
            if rng.u8(..8) == 0 {
                t += &format!("{prefix}rewrite_set = \"rw\"\n");
            }
            t
        }
    };
    let maps = rng.usize(0..=2);
    for m in 0..maps {
        toml += &format!(
            "[[url_path_maps]]\nname = \"m{m}\"\n{}\n",
            target(rng, "default_")
        );
        for pr in 0..rng.usize(1..=3) {
            let paths: Vec<String> = (0..rng.usize(1..=2))
                .map(|_| format!("{:?}", pick(rng, PATH_PATTERNS)))
                .collect();
            toml += &format!(
                "[[url_path_maps.path_rules]]\nname = \"pr{pr}\"\npaths = [{}]\n{}\n",
                paths.join(", "),
                target(rng, "")
            );
        }
    }
    let mut priorities: Vec<u32> = (1..=20).collect();
    rng.shuffle(&mut priorities);
    for (l, priority) in priorities.iter().take(listeners).enumerate() {
        toml += &format!("[[rules]]\nname = \"rule{l}\"\nlistener = \"l{l}\"\n");
        if rng.bool() {
            toml += &format!("priority = {priority}\n");
        }
        if maps > 0 && rng.bool() {
            toml += &format!("url_path_map = \"m{}\"\n", rng.usize(..maps));
        } else {
            toml += &target(rng, "");
        }
        toml += "\n";
    }
    toml
}

fn native(
    snapshot: &Snapshot,
    socket: usize,
    authority: &str,
    path: &str,
    query: Option<&str>,
) -> Answer {
    let host = wasmgate_rules::matching::host_without_port(authority);
    let Some(routed) = snapshot.route(socket, host, path) else {
        return Answer::Native;
    };
    match routed.target {
        CompiledTarget::Redirect(id) => Answer::Redirect(
            snapshot.config.redirects[id.0].status.as_u16(),
            snapshot.redirect_location(*id, authority, path, query),
        ),
        CompiledTarget::Forward(t) if t.rewrite_set.is_some() => Answer::Native,
        CompiledTarget::Forward(t) => {
            let settings = snapshot.config.settings(t.settings);
            let backend_path = match &settings.path {
                None => path.to_owned(),
                Some(prefix) => {
                    wasmgate_rules::matching::override_path(prefix, path, routed.matched_prefix)
                }
            };
            Answer::Forward(
                snapshot.config.pool(t.pool).name.clone(),
                settings.name.clone(),
                backend_path,
            )
        }
    }
}

/// What the gateway does with the plugin's decision, in the same terms.
fn plugin_answer(snapshot: &Snapshot, decision: Decision, path: &str) -> Answer {
    match decision {
        Decision::Defer => Answer::Native,
        Decision::Redirect(r) => Answer::Redirect(r.status, r.location),
        Decision::Respond(r) => panic!("the basic rules never answer directly: {}", r.status),
        Decision::Forward(f) => {
            assert!(f.server.is_none() && f.header_edits.is_empty());
            let settings = snapshot
                .config
                .backend_settings
                .iter()
                .find(|s| s.name == f.settings)
                .expect("the plugin names configured settings");
            let backend_path = match (f.path, &settings.path) {
                (Some(p), _) => p,
                (None, Some(prefix)) => wasmgate_rules::matching::override_path(prefix, path, None),
                (None, None) => path.to_owned(),
            };
            Answer::Forward(f.pool, f.settings, backend_path)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_plugin_decides_exactly_as_the_native_rules() {
    let wasm: Arc<[u8]> = component().into();
    let engine = PluginEngine::new(EngineConfig {
        cache_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache")),
        total_component_instances: 16,
        total_core_instances: 64,
        total_memories: 16,
        total_tables: 32,
        total_stacks: 16,
        ..EngineConfig::default()
    })
    .expect("engine");
    let mut rng = fastrand::Rng::with_seed(0x5eed_ba51c);
    let (mut cases, mut configs, mut differences) = (0usize, 0usize, Vec::new());
    let mut kinds = [0usize; 3];
    while configs < CONFIGS {
        let text = config(&mut rng);
        let Ok(config) = Config::from_toml(&text) else {
            continue;
        };
        configs += 1;
        let rules = serde_json::to_string(&builtin::basic_rules(&config)).expect("serialise");
        let snapshot = Snapshot::build(config, None, 1);
        let mut spec = PluginSpec::new("builtin", wasm.clone(), rules);
        spec.limits.max_concurrency = 1;
        let (plugin, _) = engine
            .load(spec, Arc::new(NoPools))
            .await
            .expect("the basic-rules plugin loads");
        for _ in 0..REQUESTS_PER_CONFIG {
            let socket = rng.usize(..snapshot.sockets.len());
            let listeners = &snapshot.sockets[socket].listeners;
            let listener = listeners[rng.usize(..listeners.len())];
            let authority = HOSTS[rng.usize(..HOSTS.len())].to_ascii_lowercase();
            let path = PATHS[rng.usize(..PATHS.len())];
            let query = QUERIES[rng.usize(..QUERIES.len())];
            let expected = native(&snapshot, socket, &authority, path, query);
            let head = RequestHead {
                method: "GET".into(),
                scheme: "http".into(),
                authority: authority.clone(),
                path: path.into(),
                query: query.map(Into::into),
                headers: Vec::new(),
                client_address: "127.0.0.1:5000".into(),
                listener: snapshot.config.listener(listener).name.clone(),
                websocket: false,
                tls_sni: None,
            };
            let decision = plugin.route(&head).await.expect("the plugin answers");
            let got = plugin_answer(&snapshot, decision, path);
            kinds[match &expected {
                Answer::Forward(..) => 0,
                Answer::Redirect(..) => 1,
                Answer::Native => 2,
            }] += 1;
            cases += 1;
            if got != expected && differences.len() < 10 {
                differences.push(format!(
                    "{authority}{path}?{query:?} on {}: native {expected:?}, plugin {got:?}\n--- config ---\n{text}",
                    head.listener
                ));
            } else if got != expected {
                differences.push(String::new());
            }
        }
    }
    assert!(cases >= 100_000, "{cases} cases");
    assert!(
        differences.is_empty(),
        "{} of {cases} decisions differ; the first:\n{}",
        differences.len(),
        differences
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The generator must exercise every kind of decision, not only one.
    assert!(
        kinds.iter().all(|&k| k > cases / 50),
        "forward/redirect/native: {kinds:?}"
    );
}
