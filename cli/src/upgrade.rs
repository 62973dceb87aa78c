//! `wasmgate upgrade`: ask a running gateway to start the binary it was started from (replaced
//! on disk) and hand it the listening sockets; prints the new process once it serves, or why
//! it did not start (the running gateway then keeps serving, untouched).

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use wasmgate::admin::upgrade::PATH;
use wasmgate::upgrade::READY_TIMEOUT;

use crate::admin::client::{AdminApi, ClientError, call_within};

/// The new process may compile plugins and waits for its first probes.
const LIMIT: Duration = READY_TIMEOUT.saturating_add(Duration::from_secs(10));

/// What the gateway answered, in one line.
pub async fn upgrade(api: &AdminApi) -> Result<String, ClientError> {
    let (_, body) = call_within(LIMIT, api, Method::POST, PATH, Bytes::new()).await?;
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Ok(
        match (report["pid"].as_u64(), report["previousPid"].as_u64()) {
            (Some(pid), Some(previous)) => format!(
                "upgraded: process {pid} serves (ready after {} ms); process {previous} drains for at most {} s",
                report["readyAfterMs"], report["drainTimeoutSecs"]
            ),
            _ => String::from_utf8_lossy(&body).into_owned(),
        },
    )
}
