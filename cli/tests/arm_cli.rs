//! The `wasmgate` binary with Application Gateway templates: `import`, `check --config x.json`
//! and `run --config x.json`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

mod support;
use support::{backend, free_port, get, wasmgate};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/arm")
        .join(path)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmgate-arm-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

#[test]
fn import_writes_commented_toml_and_pem_files() {
    let dir = scratch("import");
    let out = dir.join("gateway.toml");
    let root = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(fixture("certs/ca.pem")).expect("the fixture CA"));
    let result = wasmgate()
        .args(["import", "--template"])
        .arg(fixture("multi-site-https/azuredeploy.json"))
        .arg("--parameters")
        .arg(fixture("multi-site-https/azuredeploy.parameters.json"))
        .arg("--set")
        .arg(format!("backendRootCertData={root}"))
        .args(["--bind", "127.0.0.1", "--bind-port", "443=0", "-o"])
        .arg(&out)
        .output()
        .expect("run wasmgate import");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "import failed: {stderr}");
    assert!(
        stderr.contains("warning: ignored resources[1].properties.sku"),
        "{stderr}"
    );
    let toml = std::fs::read_to_string(&out).expect("the output file");
    assert!(
        toml.contains("# from resources[1].properties.httpListeners[1]"),
        "{toml}"
    );
    // Paths relative to the output file, so the folder can move as a whole.
    assert!(
        toml.contains("certificate = \"gateway.certs/contosocert.crt.pem\""),
        "{toml}"
    );
    for file in [
        "contosocert.crt.pem",
        "contosocert.key.pem",
        "fabrikamcert.crt.pem",
        "fabrikambackendroot.root.pem",
    ] {
        assert!(
            dir.join("gateway.certs").join(file).is_file(),
            "{file} missing"
        );
    }
    // The written configuration is an ordinary configuration file.
    let check = wasmgate()
        .args(["check", "--config"])
        .arg(&out)
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_reports_template_errors_with_position_and_path() {
    let result = wasmgate()
        .args(["check", "--config"])
        .arg(fixture("basic/azuredeploy.json"))
        .args(["--set", "skuName=Basic"])
        .output()
        .expect("run wasmgate check");
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("basic/azuredeploy.json:")
            && stderr.contains(": parameters.skuName: 'Basic' is not one of the allowedValues"),
        "{stderr}"
    );
    // One line: the error is not repeated by its source chain.
    assert_eq!(stderr.matches("allowedValues").count(), 1, "{stderr}");

    let ok = wasmgate()
        .args(["check", "--config"])
        .arg(fixture("rewrite-conditions/azuredeploy.json"))
        .output()
        .expect("run wasmgate check");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("rewrite-conditions/azuredeploy.json: valid"),
        "{stdout}"
    );
}

#[test]
fn run_serves_a_template_directly() {
    let pool = backend("vm");
    let port = free_port();
    let mut child = wasmgate()
        .args(["run", "--config"])
        .arg(fixture("basic/azuredeploy.json"))
        .args(["--bind", "127.0.0.1", "--bind-port", &format!("80={port}")])
        .args([
            "--set",
            "backendIpAddress1=127.0.0.1",
            "--set",
            "backendIpAddress2=127.0.0.2",
        ])
        .args(["--set", &format!("backendPort={}", pool.port())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmgate run");
    let deadline = Instant::now() + Duration::from_secs(15);
    let answer = loop {
        match get(port, "www.contoso.com") {
            Ok(text) if text.starts_with("HTTP/1.1 200") => break Ok(text),
            other if Instant::now() > deadline => break Err(other),
            // Exited (a refused configuration): no point waiting.
            other if child.try_wait().ok().flatten().is_some() => break Err(other),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    // SIGTERM: a clean stop, which removes the imported configuration's private folder.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let mut stderr = String::new();
    let waited = Instant::now();
    while child.try_wait().expect("wait").is_none() && waited.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().expect("wait").is_none() {
        let _ = child.kill();
    }
    let status = child.wait().expect("exit status");
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    let text = answer
        .unwrap_or_else(|e| panic!("no 200 through the template's listener: {e:?}\n{stderr}"));
    assert!(text.ends_with("vm"), "{text}");
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("warning: ignored resources[2].properties.sku"),
        "{stderr}"
    );
    let folder = std::env::temp_dir().join(format!("wasmgate-azuredeploy-{}", child.id()));
    assert!(
        !folder.exists(),
        "{} should be removed at exit",
        folder.display()
    );
}

#[test]
fn run_imports_a_changed_template_again() {
    let (first, second) = (backend("first"), backend("second"));
    let dir = scratch("reimport");
    let template = dir.join("azuredeploy.json");
    let original = std::fs::read_to_string(fixture("basic/azuredeploy.json")).expect("fixture");
    let with_port = |port: u16| {
        original.replacen(
            "\"defaultValue\": 80",
            &format!("\"defaultValue\": {port}"),
            1,
        )
    };
    std::fs::write(&template, with_port(first.port())).expect("write the template");
    let port = free_port();
    let mut child = wasmgate()
        .args(["run", "--config"])
        .arg(&template)
        .args(["--bind", "127.0.0.1", "--bind-port", &format!("80={port}")])
        .args(["--set", "backendIpAddress1=127.0.0.1"])
        .args(["--set", "backendIpAddress2=127.0.0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmgate run");
    // Waits (bounded) until the gateway answers with `name`'s body.
    let answered_by = |name: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match get(port, "www.contoso.com") {
                Ok(text) if text.starts_with("HTTP/1.1 200") && text.ends_with(name) => {
                    return true;
                }
                _ if Instant::now() > deadline => return false,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    };
    let before = answered_by("first");
    // The template now points the settings at the second backend's port.
    std::fs::write(&template, with_port(second.port())).expect("rewrite the template");
    let after = before && answered_by("second");
    // SIGTERM, so the gateway removes its imported folder; SIGKILL only if it does not stop.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let waited = Instant::now();
    while child.try_wait().expect("wait").is_none() && waited.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert!(before, "the first template was not served\n{stderr}");
    assert!(after, "the changed template was not applied\n{stderr}");
    assert!(
        stderr.contains("the template changed: imported again"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A template Azure Resource Manager refuses (`resourceId(<gateway id>, '/child/name')`) is
/// refused by `import` with ARM's reason; `--lenient` imports it.
#[test]
fn import_refuses_what_azure_refuses_unless_lenient() {
    let dir = scratch("lenient");
    let out = dir.join("gateway.toml");
    let import = |lenient: bool| {
        let mut cmd = wasmgate();
        cmd.arg("import")
            .arg("--template")
            .arg(fixture("v1-resource-ids/azuredeploy.json"))
            .arg("-o")
            .arg(&out);
        if lenient {
            cmd.arg("--lenient");
        }
        cmd.output().expect("run wasmgate import")
    };
    let strict = import(false);
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success(), "{stderr}");
    assert!(
        stderr.contains("function requires exactly one multi-segmented argument")
            && stderr.contains("--lenient"),
        "{stderr}"
    );
    let lenient = import(true);
    assert!(
        lenient.status.success(),
        "{}",
        String::from_utf8_lossy(&lenient.stderr)
    );
    let toml = std::fs::read_to_string(&out).expect("the configuration");
    assert!(toml.contains("wwwListener"), "{toml}");
    let _ = std::fs::remove_dir_all(dir);
}
