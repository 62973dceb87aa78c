//! The `wasmgate` binary as an operator runs it: `run`, SIGHUP, `reload`, SIGTERM, SIGUSR1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{backend, free_port, get, wasmgate};

const TOKEN: &str = "cli-test-admin-token-0123";

fn config(port: u16, admin: u16, pool: SocketAddr) -> String {
    format!(
        r#"[[listeners]]
name = "web"
port = {port}
bind_address = "127.0.0.1"

[[backend_pools]]
name = "pool"
addresses = ["{pool}"]

[[backend_settings]]
name = "settings"
port = 80

[[rules]]
name = "rule"
listener = "web"
backend_pool = "pool"
backend_settings = "settings"

[admin]
port = {admin}
token = "{TOKEN}"
"#
    )
}

/// The body of `GET /` on `port`, or `None` if the gateway does not answer 200.
fn body(port: u16) -> Option<String> {
    let text = get(port, "example.com").ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.split("\r\n\r\n").nth(1).map(str::to_owned)
}

/// Polls `check` every 50 ms for at most 15 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} failed");
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

struct Running {
    child: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_and_reload_apply_the_file_and_refuse_an_invalid_one() {
    let a = backend("a");
    let b = backend("b");
    let (port, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("wasmgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("gateway.toml");
    let log = dir.join("gateway.log");
    std::fs::write(&file, config(port, admin, a)).expect("write");
    let child = wasmgate()
        .args(["run", "--no-watch", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start wasmgate");
    let mut gw = Running { child, log };
    eventually("the gateway to route to a", || {
        body(port).as_deref() == Some("a")
    });

    // SIGHUP applies the changed file.
    std::fs::write(&file, config(port, admin, b)).expect("write");
    signal(&gw.child, "HUP");
    eventually("SIGHUP to route to b", || {
        body(port).as_deref() == Some("b")
    });

    // An invalid file is refused with the field named; the running configuration stays.
    let invalid =
        config(port, admin, a).replace("backend_pool = \"pool\"", "backend_pool = \"missing\"");
    std::fs::write(&file, &invalid).expect("write");
    signal(&gw.child, "HUP");
    eventually("the refusal in the log", || {
        log_text(&gw.log).contains("rules[0].backend_pool")
    });
    assert_eq!(body(port).as_deref(), Some("b"));
    let out = wasmgate()
        .args(["reload", "--admin", &format!("http://127.0.0.1:{admin}")])
        .args(["--token", TOKEN])
        .output()
        .expect("wasmgate reload");
    assert!(!out.status.success(), "reload of an invalid file must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rules[0].backend_pool") && stderr.contains("missing"),
        "the error names the field: {stderr}"
    );
    assert_eq!(body(port).as_deref(), Some("b"));

    // `wasmgate reload` applies a valid file and prints what it did.
    std::fs::write(&file, config(port, admin, a)).expect("write");
    let out = wasmgate()
        .args(["reload", "--admin", &format!("http://127.0.0.1:{admin}")])
        .env("WASMGATE_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("wasmgate reload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"listeners\": 1"));
    eventually("reload to route to a", || {
        body(port).as_deref() == Some("a")
    });

    // SIGTERM stops it.
    signal(&gw.child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = gw.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wasmgate did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigusr1_reopens_the_access_log_and_logs_to_a_file_carry_no_colour_codes() {
    let a = backend("a");
    let (port, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("wasmgate-cli-usr1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("gateway.toml");
    let log = dir.join("gateway.log");
    let access = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let _ = std::fs::remove_file(&access);
    let _ = std::fs::remove_file(&rotated);
    let text = config(port, admin, a)
        + &format!(
            "\n[logging]\nformat = \"json\"\naccess_log = {:?}\n",
            access.display().to_string()
        );
    std::fs::write(&file, text).expect("write");
    let child = wasmgate()
        .args(["run", "--no-watch", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start wasmgate");
    let gw = Running { child, log };
    eventually("a request's record in the access log", || {
        body(port).is_some() && log_text(&access).contains("\"httpStatus\":200")
    });

    // logrotate: move the file, then SIGUSR1; records go to a new file at the old path.
    std::fs::rename(&access, &rotated).expect("rotate");
    signal(&gw.child, "USR1");
    eventually("records in the reopened file", || {
        body(port).is_some() && log_text(&access).contains("\"httpStatus\":200")
    });
    assert!(log_text(&rotated).contains("\"httpStatus\":200"));
    let diagnostics = log_text(&gw.log);
    assert!(diagnostics.contains("SIGUSR1"), "{diagnostics}");
    assert!(
        !diagnostics.contains('\u{1b}'),
        "colour codes in a log written to a file: {diagnostics:?}"
    );
}
