//! Every number of the configuration is checked before it is converted: a value too large,
//! negative or not a number is refused with the field and the accepted range, the same text
//! from `wasmgate check`, from `wasmgate run` at start, and from an admin reload (after which
//! the running configuration keeps serving). A duration of `1e30` seconds used to panic in the
//! conversion to a `Duration`.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{backend, free_port, get, wasmgate};

const TOKEN: &str = "numbers-test-admin-token-0123";

/// One bad number: the section it goes in, the line, and the exact "field: reason".
struct Case {
    section: &'static str,
    line: &'static str,
    error: &'static str,
}

const fn case(section: &'static str, line: &'static str, error: &'static str) -> Case {
    Case {
        section,
        line,
        error,
    }
}

fn cases() -> Vec<Case> {
    let day = "is out of range; it must be more than 0 and at most 86400 s";
    let hour = "is out of range; it must be more than 0 and at most 3600 s";
    let minute = "is out of range; it must be more than 0 and at most 60 s";
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        case(
            "settings",
            "request_timeout = 1e30",
            leak(format!("backend_settings[0].request_timeout: 1e30 s {day}")),
        ),
        case(
            "settings",
            "request_timeout = 1.7976931348623157e308",
            leak(format!(
                "backend_settings[0].request_timeout: 1.7976931348623157e308 s {day}"
            )),
        ),
        case(
            "settings",
            "request_timeout = inf",
            leak(format!("backend_settings[0].request_timeout: inf s {day}")),
        ),
        case(
            "settings",
            "request_timeout = nan",
            "backend_settings[0].request_timeout: nan is not a number of seconds",
        ),
        case(
            "settings",
            "request_timeout = -1",
            leak(format!("backend_settings[0].request_timeout: -1 s {day}")),
        ),
        case(
            "settings",
            "request_timeout = -0.5",
            leak(format!("backend_settings[0].request_timeout: -0.5 s {day}")),
        ),
        case(
            "settings",
            "request_timeout = 9223372036854775807",
            leak(format!(
                "backend_settings[0].request_timeout: 9223372036854775807 s {day}"
            )),
        ),
        case(
            "settings",
            "request_timeout = \"99999999999999999999h\"",
            leak(format!(
                "backend_settings[0].request_timeout: \"99999999999999999999h\" {day}"
            )),
        ),
        case(
            "settings",
            "port = 65536",
            "backend_settings[0].port: 65536 is out of range; it must be from 1 to 65535",
        ),
        case(
            "settings",
            "port = -80",
            "backend_settings[0].port: -80 is out of range; it must be from 1 to 65535",
        ),
        case(
            "draining",
            "timeout = 1e30",
            leak(format!(
                "backend_settings[0].connection_draining.timeout: 1e30 s {hour}"
            )),
        ),
        case(
            "listener",
            "port = 70000",
            "listeners[0].port: 70000 is out of range; it must be from 0 to 65535",
        ),
        case(
            "probe",
            "interval = 1e30",
            leak(format!("probes[0].interval: 1e30 s {day}")),
        ),
        case(
            "probe",
            "timeout = \"1e30\"",
            r#"probes[0].timeout: unknown unit "e30" in "1e30"; use ms, s, m or h"#,
        ),
        case(
            "probe",
            "unhealthy_threshold = -1",
            "probes[0].unhealthy_threshold: -1 is out of range; it must be from 1 to 20",
        ),
        case(
            "probe",
            "min_servers = 4294967296",
            "probes[0].min_servers: 4294967296 is out of range; it must be from 0 to 10000",
        ),
        case(
            "probe",
            "port = 0",
            "probes[0].port: 0 is out of range; it must be from 1 to 65535",
        ),
        case(
            "rule",
            "priority = 4294967297",
            "rules[0].priority: 4294967297 is out of range; it must be from 1 to 20000",
        ),
        case(
            "limits",
            "client_idle_timeout = 1e30",
            leak(format!("limits.client_idle_timeout: 1e30 s {day}")),
        ),
        case(
            "limits",
            "shutdown_timeout = -inf",
            leak(format!("limits.shutdown_timeout: -inf s {hour}")),
        ),
        case(
            "limits",
            "max_header_count = -9223372036854775808",
            "limits.max_header_count: -9223372036854775808 is out of range; it must be from 1 to 1000",
        ),
        case(
            "limits",
            "max_connections = 9223372036854775807",
            "limits.max_connections: 9223372036854775807 is out of range; it must be from 1 to 1000000",
        ),
        case(
            "limits",
            "max_request_body = \"99999999999GB\"",
            r#"limits.max_request_body: "99999999999GB" is not a size from 1 byte to 1 TB; write bytes (1048576) or a number with KB, MB or GB ("10MB")"#,
        ),
        case(
            "limits",
            "max_request_body = -1",
            r#"limits.max_request_body: -1 is not a size from 1 byte to 1 TB; write bytes (1048576) or a number with KB, MB or GB ("10MB")"#,
        ),
        case(
            "plugin_limits",
            "call_timeout = 1e30",
            leak(format!("plugins[0].limits.call_timeout: 1e30 s {minute}")),
        ),
        case(
            "plugin_limits",
            "max_memory_mb = 9007199254740993",
            "plugins[0].limits.max_memory_mb: 9007199254740993 is out of range; it must be from 1 to 4096",
        ),
        case(
            "plugin_limits",
            "max_concurrency = 0",
            "plugins[0].limits.max_concurrency: 0 is out of range; it must be from 1 to 1000",
        ),
        case(
            "engine",
            "max_instances = -1",
            "plugin_engine.max_instances: -1 is out of range; it must be from 1 to 10000",
        ),
    ]
}

/// A valid configuration routing `port` to `pool`, with the admin API on `admin`; `case` adds
/// its line to its section (replacing a line of the same key).
fn config(port: u16, admin: u16, pool: std::net::SocketAddr, case: Option<&Case>) -> String {
    let sections: [(&str, &str, String); 9] = [
        (
            "listener",
            "[[listeners]]",
            format!("name = \"web\"\nport = {port}\nbind_address = \"127.0.0.1\""),
        ),
        (
            "pool",
            "[[backend_pools]]",
            format!("name = \"pool\"\naddresses = [\"{pool}\"]"),
        ),
        (
            "settings",
            "[[backend_settings]]",
            "name = \"settings\"\nport = 80\nprobe = \"health\"".into(),
        ),
        ("draining", "[backend_settings.connection_draining]", String::new()),
        (
            "probe",
            "[[probes]]",
            "name = \"health\"\npath = \"/\"\ninterval = 1".into(),
        ),
        (
            "rule",
            "[[rules]]",
            "name = \"rule\"\nlistener = \"web\"\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"".into(),
        ),
        ("limits", "[limits]", String::new()),
        ("plugin_limits", "[[plugins]]\nname = \"router\"\nkind = \"router\"\n[plugins.limits]", String::new()),
        ("engine", "[plugin_engine]", String::new()),
    ];
    let mut out = String::new();
    for (name, header, body) in sections {
        let mut lines: Vec<String> = body.lines().map(str::to_owned).collect();
        if let Some(c) = case.filter(|c| c.section == name) {
            let key = c.line.split('=').next().unwrap_or_default();
            lines.retain(|l| !l.starts_with(key));
            lines.push(c.line.to_string());
        }
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("{header}\n{}\n\n", lines.join("\n")));
    }
    out.push_str(&format!("[admin]\nport = {admin}\ntoken = \"{TOKEN}\"\n"));
    out
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmgate-numbers-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_numbers_are_refused_by_check_and_at_start_with_the_field_named() {
    let pool = backend("a");
    let dir = scratch("check");
    let file = dir.join("gateway.toml");
    let mut failures = Vec::new();
    for c in cases() {
        std::fs::write(&file, config(free_port(), free_port(), pool, Some(&c))).expect("write");
        let expected = format!("error: {} {}\n", file.display(), c.error);
        for command in ["check", "run"] {
            let mut cmd = wasmgate();
            cmd.args([command, "--config"]).arg(&file);
            let out = output_within(cmd, Duration::from_secs(30));
            let stderr = stderr_of(&out);
            if out.status.success() || !stderr.ends_with(&expected) {
                failures.push(format!(
                    "{command} with {:?}: exit {}, expected {expected:?}, got {stderr:?}",
                    c.line, out.status
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs `cmd` to its end, killing it after `limit` (a `run` that accepted its configuration
/// would serve forever).
fn output_within(mut cmd: std::process::Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmgate");
    let id = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if finished.recv_timeout(limit).is_err() {
            let _ = std::process::Command::new("kill")
                .arg(id.to_string())
                .status();
        }
    });
    let out = child.wait_with_output().expect("wait for wasmgate");
    let _ = done.send(());
    out
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /` on `port` answers 200 with `a` within 15 s.
fn serves(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if get(port, "example.com").is_ok_and(|t| t.starts_with("HTTP/1.1 200") && t.ends_with("a"))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn bad_numbers_are_refused_by_an_admin_reload_and_the_running_configuration_stays() {
    let pool = backend("a");
    let (port, admin) = (free_port(), free_port());
    let dir = scratch("reload");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, config(port, admin, pool, None)).expect("write");
    let _gw = Running(
        wasmgate()
            .args(["run", "--no-watch", "--config"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wasmgate"),
    );
    assert!(serves(port), "the gateway serves the valid configuration");
    let mut failures = Vec::new();
    for c in cases() {
        std::fs::write(&file, config(port, admin, pool, Some(&c))).expect("write");
        let out = wasmgate()
            .args(["reload", "--admin", &format!("http://127.0.0.1:{admin}")])
            .args(["--token", TOKEN])
            .output()
            .expect("wasmgate reload");
        let stderr = stderr_of(&out);
        let expected = format!(
            "answered 422 Unprocessable Entity: invalid configuration: {} {}\n",
            file.display(),
            c.error
        );
        if out.status.success() || !stderr.ends_with(&expected) {
            failures.push(format!(
                "reload with {:?}: expected {expected:?}, got {stderr:?}",
                c.line
            ));
        }
        if !serves(port) {
            failures.push(format!(
                "after reloading {:?} the gateway stopped serving",
                c.line
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
