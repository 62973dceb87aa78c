//! The `wasmgate` binary as an operator runs it: `run`, SIGHUP, `reload`, SIGTERM.

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
