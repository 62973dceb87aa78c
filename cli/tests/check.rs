//! `wasmgate check` loads the plugins as `run` would, and both report a refused plugin in one
//! line; compiled plugins go to the per-user cache directory unless that is turned off.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::{free_port, wasmgate};

/// A built component from `target/plugins` (or `$WASMGATE_PLUGIN_DIR`).
fn component(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("WASMGATE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins with scripts/build-plugins",
            path.display()
        )
    })
}

/// The canary router sending everything to pool `pool`.
const CANARY_CONFIG: &str =
    r#"{"variants": [{"name": "v", "pool": "pool", "settings": "settings", "weight": 1}]}"#;

/// A folder with `gateway.toml` (a listener, a pool, settings and a rule, then `plugins`), the
/// components under `plugins/`, and its own cache home.
struct Case {
    dir: PathBuf,
}

impl Case {
    fn new(rule_extra: &str, plugins: &str, files: &[(&str, Vec<u8>)]) -> Case {
        let dir = std::env::temp_dir().join(format!("wasmgate-check-{}", fastrand_u64()));
        std::fs::create_dir_all(dir.join("plugins")).expect("temp dir");
        for (name, bytes) in files {
            std::fs::write(dir.join("plugins").join(name), bytes).expect("component");
        }
        let toml = format!(
            r#"[[listeners]]
name = "web"
port = {port}
bind_address = "127.0.0.1"
{listener_router}

[[backend_pools]]
name = "pool"
addresses = ["127.0.0.1:9"]

[[backend_settings]]
name = "settings"
port = 80

[[rules]]
name = "shop"
listener = "web"
backend_pool = "pool"
backend_settings = "settings"
{rule_extra}

{plugins}
"#,
            port = free_port(),
            listener_router = if plugins.contains("name = \"edge\"") {
                "router = \"edge\""
            } else {
                ""
            },
        );
        std::fs::write(dir.join("gateway.toml"), toml).expect("config");
        Case { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("gateway.toml")
    }

    fn cache_home(&self) -> PathBuf {
        self.dir.join("cache-home")
    }

    /// `wasmgate` with this case's cache home and no override.
    fn command(&self) -> Command {
        let mut c = wasmgate();
        c.env("XDG_CACHE_HOME", self.cache_home())
            .env_remove("WASMGATE_PLUGIN_CACHE_DIR")
            .env("RUST_LOG", "warn");
        c
    }

    fn check(&self, extra: &[&str]) -> Output {
        self.command()
            .arg("check")
            .arg("-c")
            .arg(self.config())
            .args(extra)
            .output()
            .expect("run wasmgate check")
    }

    fn run(&self) -> Output {
        self.command()
            .arg("run")
            .arg("-c")
            .arg(self.config())
            .arg("--no-watch")
            .output()
            .expect("run wasmgate run")
    }

    fn plugin_file(&self, name: &str) -> String {
        self.dir.join("plugins").join(name).display().to_string()
    }

    /// The compiled artifacts in the default cache directory.
    fn cached(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.cache_home().join("wasmgate")) {
            Err(_) => Vec::new(),
            Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
        }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

/// The one `error:` line of a failed command, and that it failed.
fn error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "should fail; stderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line; stderr:\n{stderr}");
    assert!(
        !stderr.contains("RUST_BACKTRACE"),
        "no hint the operator cannot act on; stderr:\n{stderr}"
    );
    errors[0].to_owned()
}

fn router(name: &str, file: &str, extra: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nkind = \"router\"\npath = \"plugins/{file}\"\n{extra}\n"
    )
}

/// Each refused plugin: `check` fails as `run` does, with the same line.
fn refused_by_check_and_run(case: &Case, expected: &str) {
    assert_eq!(error_line(&case.check(&[])), expected, "check");
    assert_eq!(error_line(&case.run()), expected, "run");
}

#[test]
fn a_plugin_file_holding_text_is_refused_by_check_and_run() {
    let case = Case::new(
        "router = \"x\"",
        &router("x", "x.wasm", ""),
        &[("x.wasm", b"hello, this is text\n".to_vec())],
    );
    let expected = format!(
        "error: plugin \"x\" ({}): not a WebAssembly component (the file starts with \"hello, this is t\")",
        case.plugin_file("x.wasm")
    );
    refused_by_check_and_run(&case, &expected);
    // --no-plugins checks the configuration alone.
    let out = case.check(&["--no-plugins"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("plugins not loaded (--no-plugins)"),
        "{stdout}"
    );
}

#[test]
fn a_probe_component_declared_as_a_router_is_refused_by_check_and_run() {
    let case = Case::new(
        "router = \"x\"",
        &router("x", "probe.wasm", ""),
        &[("probe.wasm", component("example-json-health-probe"))],
    );
    refused_by_check_and_run(
        &case,
        "error: plugin \"x\": is a router plugin, but the component does not export \
         wasmgate:plugin/router@0.1.2 or wasmgate:plugin/packed-router@0.1.2",
    );
}

#[test]
fn a_plugin_whose_init_panics_is_refused_by_check_and_run() {
    let case = Case::new(
        "router = \"x\"",
        &router("x", "panic.wasm", "config = \"level=3\""),
        &[("panic.wasm", component("fixture-init-panic"))],
    );
    refused_by_check_and_run(
        &case,
        "error: plugin \"x\": init trapped: panicked at fixtures/init-panic/src/lib.rs:9:9: \
         init-panic fixture refuses config \"level=3\"",
    );
}

#[test]
fn a_sample_answered_otherwise_is_refused_by_check_and_run() {
    let sample = "[[plugins.samples]]\nhost = \"shop.example\"\nexpect = \"redirect\"\n";
    let case = Case::new(
        "router = \"canary\"",
        &router(
            "canary",
            "canary.wasm",
            &format!("config = '{CANARY_CONFIG}'\n{sample}"),
        ),
        &[("canary.wasm", component("example-canary-router"))],
    );
    refused_by_check_and_run(
        &case,
        "error: plugin \"canary\": sample 0 failed: GET shop.example/ expected redirect, got \
         forward to pool \"pool\" with settings \"settings\" (1 header edits)",
    );
}

#[test]
fn check_lists_the_plugins_and_who_uses_each_and_caches_them_for_the_user() {
    let samples = "[[plugins.samples]]\nhost = \"shop.example\"\nexpect = \"forward\"\npool = \"pool\"\n\n\
                   [[plugins.samples]]\nhost = \"shop.example\"\npath = \"/a\"\nexpect = \"forward\"\n";
    let plugins = format!(
        "{}{}{}[[plugins]]\nname = \"health\"\nkind = \"probe\"\npath = \"plugins/probe.wasm\"\n\n\
         [[plugins]]\nname = \"later\"\nkind = \"router\"\n",
        router(
            "canary",
            "canary.wasm",
            &format!("config = '{CANARY_CONFIG}'\n{samples}")
        ),
        router(
            "edge",
            "canary.wasm",
            &format!("config = '{CANARY_CONFIG}'")
        ),
        router(
            "spare",
            "canary.wasm",
            &format!("config = '{CANARY_CONFIG}'")
        ),
    );
    let case = Case::new(
        "router = \"canary\"",
        &plugins,
        &[
            ("canary.wasm", component("example-canary-router")),
            ("probe.wasm", component("example-json-health-probe")),
        ],
    );
    // The probe plugin judges the settings' probes.
    let toml = std::fs::read_to_string(case.config())
        .unwrap()
        .replace("port = 80\n", "port = 80\nprobe_plugin = \"health\"\n");
    std::fs::write(case.config(), toml).unwrap();

    let out = case.check(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let canary = case.plugin_file("canary.wasm");
    let probe = case.plugin_file("probe.wasm");
    let section: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "plugins:")
        .take(6)
        .collect();
    assert_eq!(
        section,
        [
            "plugins:".to_owned(),
            format!("  canary               router {canary}  used by rule \"shop\""),
            format!("  edge                 router {canary}  used by listener \"web\""),
            format!("  spare                router {canary}  used by nothing"),
            format!("  health               probe  {probe}  used by backend settings \"settings\""),
            "  later                router (no path: loaded through the admin API)  used by nothing"
                .to_owned(),
        ],
        "{stdout}"
    );
    let loaded: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "plugins loaded:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    let names: Vec<&str> = loaded
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["canary", "edge", "spare", "health"], "{stdout}");
    assert!(loaded[0].ends_with(", 2 samples passed"), "{stdout}");
    assert!(loaded[3].contains(" compiled in "), "{stdout}");
    assert!(
        stdout.ends_with(&format!("{}: valid\n", case.config().display())),
        "{stdout}"
    );

    // Compiled once per component into $XDG_CACHE_HOME/wasmgate, owner-only; the next check
    // reads them back.
    let cached = case.cached();
    assert_eq!(cached.len(), 2, "{cached:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&case.cache_home().join("wasmgate")), 0o700);
        assert!(cached.iter().all(|f| mode(f) == 0o600), "{cached:?}");
    }
    let again = String::from_utf8_lossy(&case.check(&[]).stdout).into_owned();
    let from_cache = again
        .lines()
        .filter(|l| l.contains("read from the cache in"))
        .count();
    assert_eq!(from_cache, 4, "{again}");
}

#[test]
fn the_cache_can_be_turned_off_in_the_configuration_or_the_environment() {
    let plugins = format!(
        "{}\n[plugin_engine]\ncache_dir = false\n",
        router(
            "canary",
            "canary.wasm",
            &format!("config = '{CANARY_CONFIG}'")
        )
    );
    let case = Case::new(
        "router = \"canary\"",
        &plugins,
        &[("canary.wasm", component("example-canary-router"))],
    );
    let out = case.check(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(case.cached(), Vec::<PathBuf>::new(), "cache_dir = false");
    assert!(!case.cache_home().exists(), "nothing created");

    // The environment overrides the configuration: `off`, or a directory.
    let case = Case::new(
        "router = \"canary\"",
        &router(
            "canary",
            "canary.wasm",
            &format!("config = '{CANARY_CONFIG}'"),
        ),
        &[("canary.wasm", component("example-canary-router"))],
    );
    let run = |value: &Path| {
        let out = case
            .command()
            .env("WASMGATE_PLUGIN_CACHE_DIR", value)
            .arg("check")
            .arg("-c")
            .arg(case.config())
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Path::new("off"));
    assert!(!case.cache_home().exists(), "WASMGATE_PLUGIN_CACHE_DIR=off");
    let elsewhere = case.dir.join("elsewhere");
    run(&elsewhere);
    assert!(!case.cache_home().exists());
    assert_eq!(std::fs::read_dir(&elsewhere).expect("dir").count(), 1);
}
