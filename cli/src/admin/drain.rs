//! `wasmgate drain`: what an orchestrator runs before it stops an instance (a Kubernetes
//! `preStop` hook). The gateway is told to drain — it keeps serving but reports itself not
//! ready, so load balancers stop sending it new connections —, then the command waits while
//! they notice, and then until the connections and WebSocket sessions in flight have ended on
//! their own, each step bounded. The stop that follows (SIGTERM) finishes what remains within
//! `limits.shutdown_timeout`.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use wasmgate::admin::readiness::DRAIN_PATH;

use super::client::{AdminApi, ClientError, call};

/// How long to wait, and for what.
#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    /// Seconds to keep serving after reporting not ready, while load balancers (a Service's
    /// endpoints) take the instance out of rotation.
    #[arg(long, default_value_t = 5)]
    pub delay: u64,
    /// Seconds to wait, after the delay, for the connections and WebSocket sessions in flight to
    /// end by themselves (0: do not wait).
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
}

/// How often the work in flight is asked for while waiting for it to end.
const POLL: Duration = Duration::from_millis(500);

/// Drains the gateway behind `api` as `args` say; returns what is still in flight at the end.
pub async fn drain(api: &AdminApi, args: &DrainArgs) -> Result<u64, ClientError> {
    let in_flight = ask(api, Method::POST).await?;
    eprintln!("draining: reported not ready; {in_flight} connections and sessions in flight");
    tokio::time::sleep(Duration::from_secs(args.delay)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
    let mut in_flight = ask(api, Method::GET).await?;
    while in_flight > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        in_flight = ask(api, Method::GET).await?;
    }
    Ok(in_flight)
}

/// `POST` (start draining) or `GET` on the drain resource; the work in flight.
async fn ask(api: &AdminApi, method: Method) -> Result<u64, ClientError> {
    let (url, body) = call(api, method, DRAIN_PATH, Bytes::new()).await?;
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("inFlight")?.as_u64())
        .ok_or_else(|| ClientError::BadBody {
            url,
            reason: "no inFlight count".into(),
        })
}
