//! A real browser for the tests: Debian's headless Chromium driven over WebDriver by
//! chromedriver on a loopback port (`apt-get install chromium chromium-driver`; `scripts/test`
//! installs them).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::within_for;

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Upper bound for the browser to start or answer one command on a loaded machine.
pub const BROWSER_WAIT: Duration = Duration::from_secs(60);

/// A headless Chromium session; [`Browser::close`] ends it, and dropping it stops chromedriver
/// (which stops the browser) and removes the profile.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium with a fresh
    /// profile and a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Browser {
        let mut driver = Command::new(CHROMEDRIVER)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {CHROMEDRIVER}: {e}; install it with `apt-get install -y chromium chromium-driver` (scripts/test does)"
                )
            });
        let stdout = driver.stdout.take().expect("chromedriver stdout");
        // chromedriver prints the port it chose, then keeps writing its log to stdout: read the
        // rest on a thread of its own so that it never blocks on a full pipe.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = within_for(BROWSER_WAIT, "chromedriver to start", rx)
            .await
            .expect("chromedriver exited before saying its port");
        let profile =
            std::env::temp_dir().join(format!("wasmgate-browser-{}-{port}", std::process::id()));
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            &format!("--window-size={width},{height}"),
            &format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = within_for(
            BROWSER_WAIT,
            "a Chromium session",
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot start Chromium ({CHROMIUM}) through chromedriver: {e}"));
        Browser {
            client,
            driver,
            profile,
        }
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns
    /// what it returns.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        within_for(BROWSER_WAIT, script, self.client.execute(script, args))
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `check` against the page every 50 ms, at most 600 times (30 s plus the browser's
    /// own time), until it yields `Some`; then fails the test with `what` and the last state.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
        mut check: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        let mut last = Value::Null;
        for _ in 0..600 {
            last = self.eval(script, args.clone()).await;
            if let Some(v) = check(&last) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the page never showed {what}; last seen: {last}");
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        within_for(BROWSER_WAIT, "a screenshot", self.client.screenshot())
            .await
            .expect("screenshot")
    }

    /// Ends the session (and the browser).
    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = within_for(BROWSER_WAIT, "closing the browser", client.close()).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
