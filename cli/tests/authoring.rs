//! `wasmgate plugin new|build|test`: projects from the templates, the install command of a
//! missing toolchain, and components asked about requests, probe responses and samples through
//! the gateway's plugin engine, with the exit code CI needs.

use std::path::{Path, PathBuf};
use std::process::Output;

mod support;
use support::wasmgate;

/// A built component from `target/plugins` (or `$WASMGATE_PLUGIN_DIR`).
fn component(name: &str) -> PathBuf {
    let dir = std::env::var_os("WASMGATE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{}: build the plugins with scripts/build-plugins",
        path.display()
    );
    path
}

/// A fresh folder of its own.
fn temp_dir(tag: &str) -> PathBuf {
    use std::hash::{BuildHasher, RandomState};
    let dir = std::env::temp_dir().join(format!(
        "wasmgate-authoring-{tag}-{}",
        RandomState::new().hash_one(std::process::id())
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn new_writes_a_project_for_every_language_and_kind() {
    let dir = temp_dir("new");
    let cases = [
        ("rust", "router", &["Cargo.toml", "src/lib.rs"][..]),
        ("rust", "probe", &["Cargo.toml", "src/lib.rs"]),
        ("python", "router", &["app.py", "wit/plugin.wit"]),
        ("python", "probe", &["app.py", "wit/plugin.wit"]),
        (
            "js",
            "router",
            &["app.js", "package.json", "wit/plugin.wit"],
        ),
        ("js", "probe", &["app.js", "package.json", "wit/plugin.wit"]),
        ("c", "router", &["app.c", "wit/plugin.wit"]),
        ("c", "probe", &["app.c", "wit/plugin.wit"]),
    ];
    for (lang, kind, files) in cases {
        let name = format!("my-{lang}-{kind}");
        let out = wasmgate()
            .current_dir(&dir)
            .args(["plugin", "new", &name, "--lang", lang, "--kind", kind])
            .output()
            .expect("run wasmgate");
        assert!(out.status.success(), "{lang} {kind}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("wasmgate plugin build"),
            "{}",
            stdout(&out)
        );
        let project = dir.join(&name);
        for file in files
            .iter()
            .chain(&["gateway.toml", "wasmgate-plugin.toml", ".gitignore"])
        {
            let text = std::fs::read_to_string(project.join(file))
                .unwrap_or_else(|e| panic!("{lang} {kind}: {file}: {e}"));
            assert!(
                !text.contains("{{"),
                "{lang} {kind}: {file} keeps a placeholder"
            );
        }
        let project_file = std::fs::read_to_string(project.join("wasmgate-plugin.toml")).unwrap();
        assert!(
            project_file.contains(&format!("language = \"{lang}\""))
                && project_file.contains(&format!("kind = \"{kind}\"")),
            "{project_file}"
        );
        let gateway = std::fs::read_to_string(project.join("gateway.toml")).unwrap();
        assert!(
            gateway.contains(&format!("path = \"{name}.wasm\"")),
            "{gateway}"
        );
    }
    // The gateway configuration a router project gets is valid as it stands (once built).
    std::fs::write(dir.join("my-python-router/my-python-router.wasm"), b"built").unwrap();
    let out = wasmgate()
        .args(["check", "--no-plugins", "-c"])
        .arg(dir.join("my-python-router/gateway.toml"))
        .output()
        .expect("run wasmgate");
    assert!(out.status.success(), "{}", stderr(&out));

    let again = wasmgate()
        .current_dir(&dir)
        .args(["plugin", "new", "my-c-router", "--lang", "c"])
        .output()
        .expect("run wasmgate");
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("my-c-router: exists and is not empty"),
        "{}",
        stderr(&again)
    );
    let bad = wasmgate()
        .current_dir(&dir)
        .args(["plugin", "new", "Beta_Router", "--lang", "c"])
        .output()
        .expect("run wasmgate");
    assert!(
        stderr(&bad).contains("NAME: \"Beta_Router\": use lower-case letters"),
        "{}",
        stderr(&bad)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn build_names_the_install_command_of_a_missing_tool() {
    let dir = temp_dir("build");
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let cases = [
        (
            "python",
            "componentize-py is needed to build python plugins and was not found; install it with:\n  python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1",
        ),
        (
            "js",
            "install it with:\n  apt-get install -y nodejs npm && npm install",
        ),
        (
            "c",
            "wit-bindgen is needed to build c plugins and was not found; install it with:\n  cargo install --locked wit-bindgen-cli@0.63.0",
        ),
        ("rust", "cargo is needed to build rust plugins"),
    ];
    for (lang, expected) in cases {
        let name = format!("p-{lang}");
        let new = wasmgate()
            .current_dir(&dir)
            .args(["plugin", "new", &name, "--lang", lang])
            .output()
            .expect("run wasmgate");
        assert!(new.status.success(), "{}", stderr(&new));
        let out = wasmgate()
            .args(["plugin", "build"])
            .arg(dir.join(&name))
            .env("PATH", &empty)
            .output()
            .expect("run wasmgate");
        assert!(!out.status.success(), "{lang}: built without tools?");
        assert!(stderr(&out).contains(expected), "{lang}: {}", stderr(&out));
    }
    let out = wasmgate()
        .args(["plugin", "build"])
        .arg(&empty)
        .output()
        .expect("run wasmgate");
    assert!(
        stderr(&out).contains("not a plugin project (no wasmgate-plugin.toml or Cargo.toml)"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The canary router sending everything to pool `pool` with settings `settings`.
const CANARY_CONFIG: &str =
    r#"{"variants": [{"name": "v", "pool": "pool", "settings": "settings", "weight": 1}]}"#;

#[test]
fn test_prints_the_decision_and_fails_on_a_failed_call() {
    let out = wasmgate()
        .args(["plugin", "test"])
        .arg(component("example-canary-router"))
        .args(["--config", CANARY_CONFIG])
        .args([
            "--request",
            "GET https://shop.example/cart?id=1",
            "-H",
            "x-user-id: 42",
            "--trace",
        ])
        .output()
        .expect("run wasmgate");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("router, "), "{text}");
    assert!(
        text.contains(r#"decision: forward to pool "pool" with settings "settings""#),
        "{text}"
    );
    // The trace: the head as the plugin got it, and the whole decision.
    assert!(
        text.contains(r#"scheme "https", authority "shop.example", path "/cart", query Some("id=1"), headers [host: shop.example, x-user-id: 42]"#),
        "{text}"
    );
    assert!(text.contains("-> forward {pool \"pool\""), "{text}");
    assert!(text.contains("\ncall: "), "{text}");

    // A decision naming a pool the host does not have fails as it would in a gateway.
    let out = wasmgate()
        .args(["plugin", "test"])
        .arg(component("fixture-unknown-pool"))
        .args([
            "--request",
            "GET http://shop.example/",
            "--pool",
            "web=127.0.0.1:9001",
        ])
        .output()
        .expect("run wasmgate");
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains(
            r#"failed: plugin "fixture-unknown-pool": invalid decision: no backend pool "no-such-pool" with backend settings "web""#
        ),
        "{}",
        stdout(&out)
    );

    // A panic in init: the load error, and what the plugin wrote to stderr.
    let out = wasmgate()
        .args(["plugin", "test"])
        .arg(component("fixture-init-panic"))
        .args(["--request", "GET http://shop.example/"])
        .output()
        .expect("run wasmgate");
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains(r#"load failed: plugin "fixture-init-panic": init trapped: panicked at"#),
        "{text}"
    );
    assert!(
        text.contains("stderr: init-panic fixture refuses config"),
        "{text}"
    );

    let out = wasmgate()
        .args(["plugin", "test"])
        .arg(component("example-canary-router"))
        .args(["--config", CANARY_CONFIG, "--request", "GET /cart"])
        .output()
        .expect("run wasmgate");
    assert!(
        stderr(&out).contains(r#"--request: "/cart" is not an absolute URL (http://host/path)"#),
        "{}",
        stderr(&out)
    );
}

#[test]
fn test_judges_a_probe_response() {
    let out = wasmgate()
        .args(["plugin", "test"])
        .arg(component("example-json-health-probe"))
        .args(["--response", "200", "--body", r#"{"status": "degraded"}"#])
        .output()
        .expect("run wasmgate");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("probe evaluator"), "{text}");
    assert!(text.contains("verdict: unhealthy: "), "{text}");

    let out = wasmgate()
        .args(["plugin", "test"])
        .arg(component("example-json-health-probe"))
        .args(["--response", "error:Connection refused"])
        .output()
        .expect("run wasmgate");
    assert!(
        stdout(&out).contains("verdict: unhealthy: Connection refused"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn test_runs_the_samples_of_a_configuration_offline() {
    let dir = temp_dir("samples");
    let wasm = component("example-canary-router");
    let file = dir.join("gateway.toml");
    let toml = format!(
        r#"[[backend_pools]]
name = "pool"
addresses = ["127.0.0.1:9001"]

[[backend_settings]]
name = "settings"
port = 80

[[plugins]]
name = "canary"
path = {path:?}
config = '{CANARY_CONFIG}'

[[plugins.samples]]
host = "shop.example"
expect = "forward"
pool = "pool"

[[plugins.samples]]
host = "shop.example"
path = "/cart"
expect = "defer"
"#,
        path = wasm.to_string_lossy()
    );
    std::fs::write(&file, toml).unwrap();
    let out = wasmgate()
        .args(["plugin", "test"])
        .arg(&wasm)
        .arg("--samples")
        .arg(&file)
        .output()
        .expect("run wasmgate");
    let text = stdout(&out);
    assert!(
        !out.status.success(),
        "a failed sample must fail the command:\n{text}"
    );
    assert!(text.contains("plugin \"canary\""), "{text}");
    assert!(text.contains("sample 0: GET shop.example/\n"), "{text}");
    assert!(text.contains("(as expected)"), "{text}");
    assert!(
        text.contains(
            r#"FAILED: GET shop.example/cart expected defer, got forward to pool "pool""#
        ),
        "{text}"
    );
    assert!(text.contains("1 of 2 samples passed"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_c_example_routes_by_prefix() {
    let dir = temp_dir("c");
    let wasm = component("example-c-router");
    let file = dir.join("gateway.toml");
    let toml = format!(
        r#"[[plugins]]
name = "c"
path = {path:?}
config = """
/api/   api   api   # the API
/img/   static web
"""

[[plugins.samples]]
host = "shop.example"
path = "/api/users"
expect = "forward"
pool = "api"
settings = "api"

[[plugins.samples]]
host = "shop.example"
path = "/healthz"
expect = "respond"
status = 200

[[plugins.samples]]
host = "shop.example"
path = "/cart"
expect = "defer"
"#,
        path = wasm.to_string_lossy()
    );
    std::fs::write(&file, toml).unwrap();
    let out = wasmgate()
        .args(["plugin", "test"])
        .arg(&wasm)
        .arg("--samples")
        .arg(&file)
        .output()
        .expect("run wasmgate");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("log info: 2 routes"), "{text}");
    assert!(text.contains("set x-routed-by: c (as expected)"), "{text}");
    assert!(text.contains("3 of 3 samples passed"), "{text}");

    // init refuses a bad line, naming it.
    let out = wasmgate()
        .args(["plugin", "test"])
        .arg(&wasm)
        .args([
            "--config",
            "/api/ api",
            "--request",
            "GET http://shop.example/",
        ])
        .output()
        .expect("run wasmgate");
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains(
            r#"load failed: plugin "example-c-router": init failed: config line 1: expected PREFIX POOL SETTINGS"#
        ),
        "{}",
        stdout(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
