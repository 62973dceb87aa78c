//! `GET /metrics`: every metric family, in Prometheus text or OpenMetrics
//! ([`crate::metrics::text`]). Counters are read from the workers' shards and the control plane
//! at the scrape; gauges (server health, plugin instances, breakers) from the state they
//! describe. Each family's help names its Application Gateway counterpart where there is one.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use crate::control::ControlHandle;
use crate::metrics::HistogramValue;
use crate::metrics::text::{Exposition, Format};
use crate::plugin::BreakerState;
use crate::probe::Status;

/// The scrape's body.
pub fn render(control: &ControlHandle, format: Format) -> String {
    let mut out = Exposition::new(format);
    let metrics = control.metrics();
    let requests = metrics.collect_requests();

    out.counter(
        "wasmgate_requests",
        "Requests answered, by listener, rule, backend pool, backend settings and status class (Application Gateway: TotalRequests, ResponseStatus).",
        &["listener", "rule", "backend_pool", "backend_settings", "status_class"],
        requests.counter("requests"),
    );
    out.counter(
        "wasmgate_failed_requests",
        "Requests that failed, by listener and reason (Application Gateway: FailedRequests).",
        &["listener", "reason"],
        requests.counter("failed_requests"),
    );
    out.histogram(
        "wasmgate_request_duration_seconds",
        "From a request's arrival to its response's last byte (Application Gateway: ApplicationGatewayTotalTime).",
        &["listener"],
        requests.histogram("total_time"),
    );
    out.histogram(
        "wasmgate_backend_connect_duration_seconds",
        "Time to establish a new connection to a backend server, TLS included (Application Gateway: BackendConnectTime).",
        &["backend_pool", "backend_settings"],
        requests.histogram("connect_time"),
    );
    out.histogram(
        "wasmgate_backend_first_byte_duration_seconds",
        "From sending a request to a backend server to its response head (Application Gateway: BackendFirstByteResponseTime).",
        &["backend_pool", "backend_settings"],
        requests.histogram("first_byte_time"),
    );
    out.histogram(
        "wasmgate_backend_last_byte_duration_seconds",
        "From sending a request to a backend server to its response's last byte (Application Gateway: BackendLastByteResponseTime).",
        &["backend_pool", "backend_settings"],
        requests.histogram("last_byte_time"),
    );
    out.counter(
        "wasmgate_received_bytes",
        "Bytes received from clients, request heads and bodies (Application Gateway: BytesReceived).",
        &["listener"],
        requests.counter("received_bytes"),
    );
    out.counter(
        "wasmgate_sent_bytes",
        "Bytes sent to clients, response heads and bodies (Application Gateway: BytesSent).",
        &["listener"],
        requests.counter("sent_bytes"),
    );

    let (opened, closed) = metrics.connections();
    let none: &[&str] = &[];
    // Not `wasmgate_client_connections`: OpenMetrics names the counter's family so.
    out.gauge(
        "wasmgate_client_connections_open",
        "Client connections open (Application Gateway: CurrentConnections).",
        &[],
        [(none, opened.saturating_sub(closed) as f64)],
    );
    out.counter(
        "wasmgate_client_connections",
        "Client connections accepted (Application Gateway: NewConnectionsPerSecond, as a rate).",
        &[],
        [(none, opened)],
    );
    let (handshakes, tls_failed) = metrics.tls();
    let handshakes: Vec<([&str; 1], u64)> = handshakes.into_iter().map(|(v, n)| ([v], n)).collect();
    out.counter(
        "wasmgate_tls_handshakes",
        "Client TLS handshakes completed, by protocol version (Application Gateway: ClientTlsProtocol).",
        &["tls_version"],
        handshakes.iter().map(|(l, n)| (&l[..], *n)),
    );
    out.counter(
        "wasmgate_tls_handshake_failures",
        "Client TLS handshakes that failed or timed out.",
        &[],
        [(none, tls_failed)],
    );

    backend_health(control, &mut out);
    websocket(&requests, &mut out);
    plugins(control, &mut out);

    let (succeeded, failed) = metrics.reloads();
    out.counter(
        "wasmgate_config_reloads",
        "Configuration reloads, by result (a refused one leaves the running configuration serving).",
        &["result"],
        [(&["success"][..], succeeded), (&["failure"][..], failed)],
    );
    let running = metrics.running_config();
    let hash = running.hash.as_deref().unwrap_or("");
    out.gauge(
        "wasmgate_config_info",
        "The running configuration: the SHA-256 of its text (empty when it was not read from text).",
        &["hash"],
        [(&[hash][..], 1.0)],
    );
    let loaded = running
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64 / 1e3);
    out.gauge(
        "wasmgate_config_load_timestamp_seconds",
        "When the running configuration was applied (Unix time).",
        &[],
        [(none, loaded)],
    );
    config_store(control, &mut out);
    out.counter(
        "wasmgate_access_log_dropped_records",
        "Access-log records dropped because the writer fell behind.",
        &[],
        [(none, control.access_log_dropped())],
    );
    if let Some(spans) = control.span_export() {
        out.counter(
            "wasmgate_spans_exported",
            "Spans the OpenTelemetry collector accepted.",
            &[],
            [(none, spans.exported)],
        );
        out.counter(
            "wasmgate_spans_dropped",
            "Spans dropped because the export queue was full.",
            &[],
            [(none, spans.dropped)],
        );
        out.counter(
            "wasmgate_spans_failed",
            "Spans given up after the retries, or refused by the collector.",
            &[],
            [(none, spans.failed)],
        );
        out.counter(
            "wasmgate_span_export_retries",
            "Requests to the collector sent again after a failure.",
            &[],
            [(none, spans.retries)],
        );
    }
    out.gauge(
        "wasmgate_build_info",
        "The running build.",
        &["version"],
        [(&[env!("CARGO_PKG_VERSION")][..], 1.0)],
    );
    out.finish()
}

/// Healthy and unhealthy servers per pool and settings, and the probes' results and latency.
fn backend_health(control: &ControlHandle, out: &mut Exposition) {
    #[derive(Default)]
    struct PerTarget {
        healthy: u64,
        unhealthy: u64,
        probes_healthy: u64,
        probes_unhealthy: u64,
        latencies: HistogramValue,
    }
    let snapshot = control.snapshot();
    let mut by_target: BTreeMap<[String; 2], PerTarget> = BTreeMap::new();
    for t in snapshot.targets.iter() {
        let key = t.health.key();
        let entry = by_target
            .entry([key.pool.to_string(), key.settings.to_string()])
            .or_default();
        // A server not yet probed takes no traffic: unhealthy, as Application Gateway counts it.
        match t.health.status() {
            Status::Healthy => entry.healthy += 1,
            _ => entry.unhealthy += 1,
        }
        let detail = t.health.detail();
        entry.probes_healthy += detail.probes_healthy;
        entry.probes_unhealthy += detail.probes_unhealthy;
        entry.latencies.merge(&detail.latencies);
    }
    let labels = ["backend_pool", "backend_settings"];
    out.gauge(
        "wasmgate_backend_healthy_servers",
        "Servers in rotation per backend pool and settings (Application Gateway: HealthyHostCount).",
        &labels,
        by_target.iter().map(|(k, v)| (&k[..], v.healthy as f64)),
    );
    out.gauge(
        "wasmgate_backend_unhealthy_servers",
        "Servers out of rotation (unhealthy, or not yet probed) per backend pool and settings (Application Gateway: UnhealthyHostCount).",
        &labels,
        by_target.iter().map(|(k, v)| (&k[..], v.unhealthy as f64)),
    );
    let probes: Vec<([String; 3], u64)> = by_target
        .iter()
        .flat_map(|([pool, settings], v)| {
            [
                (
                    [pool.clone(), settings.clone(), "healthy".into()],
                    v.probes_healthy,
                ),
                (
                    [pool.clone(), settings.clone(), "unhealthy".into()],
                    v.probes_unhealthy,
                ),
            ]
        })
        .collect();
    out.counter(
        "wasmgate_probes",
        "Health probes, by result, per backend pool and settings.",
        &["backend_pool", "backend_settings", "result"],
        probes.iter().map(|(l, n)| (&l[..], *n)),
    );
    out.histogram(
        "wasmgate_probe_duration_seconds",
        "Health probes' latency per backend pool and settings.",
        &labels,
        by_target.iter().map(|(k, v)| (&k[..], &v.latencies)),
    );
}

fn websocket(requests: &crate::metrics::Collected, out: &mut Exposition) {
    out.gauge(
        "wasmgate_websocket_sessions_open",
        "WebSocket sessions being relayed, per backend pool.",
        &["backend_pool"],
        requests.counter("ws_open").map(|(l, n)| (l, n as f64)),
    );
    out.counter(
        "wasmgate_websocket_sessions",
        "WebSocket sessions opened, per backend pool.",
        &["backend_pool"],
        requests.counter("ws_opened"),
    );
    out.counter(
        "wasmgate_websocket_sessions_closed",
        "WebSocket sessions ended, by close code (\"none\" without one) and who ended them.",
        &["backend_pool", "close_code", "closed_by"],
        requests.counter("ws_closed"),
    );
    out.counter(
        "wasmgate_websocket_messages",
        "WebSocket messages relayed, per backend pool and direction (counted when a session ends).",
        &["backend_pool", "direction"],
        requests.counter("ws_messages"),
    );
    out.counter(
        "wasmgate_websocket_bytes",
        "WebSocket bytes relayed, frames included, per backend pool and direction (counted when a session ends).",
        &["backend_pool", "direction"],
        requests.counter("ws_bytes"),
    );
}

/// Message filters' counters, per filter name (over its versions).
fn filters(slots: &[std::sync::Arc<crate::plugin::PluginSlot>], out: &mut Exposition) {
    let counts: Vec<(String, crate::metrics::filters::FilterCounts)> = slots
        .iter()
        .filter_map(|s| Some((s.name().to_owned(), s.filter_metrics()?.counts())))
        .collect();
    if counts.is_empty() {
        return;
    }
    let mut messages: Vec<([String; 2], u64)> = Vec::new();
    let mut sessions: Vec<([String; 2], u64)> = Vec::new();
    for (name, c) in &counts {
        for (outcome, n) in [
            ("in", c.messages_in),
            ("out", c.messages_out),
            ("dropped", c.dropped),
            ("replaced", c.replaced),
            ("answered", c.answered),
        ] {
            messages.push(([name.clone(), outcome.into()], n));
        }
        for (outcome, n) in [
            ("closed_by_filter", c.sessions_closed),
            ("refused", c.sessions_refused),
        ] {
            sessions.push(([name.clone(), outcome.into()], n));
        }
    }
    out.counter(
        "wasmgate_filter_messages",
        "WebSocket messages a message filter was given (in) and what became of them.",
        &["plugin", "outcome"],
        messages.iter().map(|(l, n)| (&l[..], *n)),
    );
    out.counter(
        "wasmgate_filter_sessions",
        "WebSocket sessions a message filter closed or refused.",
        &["plugin", "outcome"],
        sessions.iter().map(|(l, n)| (&l[..], *n)),
    );
    let names: Vec<[String; 1]> = counts.iter().map(|(n, _)| [n.clone()]).collect();
    out.histogram(
        "wasmgate_filter_call_duration_seconds",
        "Message filter on-message call time, waiting for an instance included.",
        &["plugin"],
        names
            .iter()
            .zip(&counts)
            .map(|(n, (_, c))| (&n[..], &c.call_time)),
    );
}

fn plugins(control: &ControlHandle, out: &mut Exposition) {
    let slots = control.plugins().all();
    filters(&slots, out);
    let names: Vec<[String; 1]> = slots.iter().map(|s| [s.name().to_owned()]).collect();
    let stats: Vec<_> = slots.iter().map(|s| s.stats()).collect();
    out.counter(
        "wasmgate_plugin_calls",
        "Calls into a plugin's active version that reached an instance.",
        &["plugin"],
        names.iter().zip(&stats).map(|(n, s)| (&n[..], s.calls)),
    );
    let mut errors: Vec<([String; 2], u64)> = Vec::new();
    for (n, s) in names.iter().zip(&stats) {
        for (kind, count) in [
            ("deadline", s.deadlines),
            ("trap", s.traps),
            ("memory", s.memory_limits),
            ("invalid_decision", s.invalid_decisions),
            ("breaker_open", s.rejected),
        ] {
            errors.push(([n[0].clone(), kind.into()], count));
        }
    }
    out.counter(
        "wasmgate_plugin_errors",
        "Plugin calls that failed, by kind (breaker_open: refused while the circuit breaker was open).",
        &["plugin", "kind"],
        errors.iter().map(|(l, n)| (&l[..], *n)),
    );
    let times: Vec<HistogramValue> = slots
        .iter()
        .map(|s| {
            let (buckets, sum) = s.call_time_buckets();
            HistogramValue::from_buckets(buckets.into_iter(), sum)
        })
        .collect();
    out.histogram(
        "wasmgate_plugin_call_duration_seconds",
        "Plugin call time, waiting for an instance excluded (sampled: each instance's first call and every eighth after it).",
        &["plugin"],
        names.iter().zip(&times).map(|(n, h)| (&n[..], h)),
    );
    let mut breakers: Vec<([String; 2], f64)> = Vec::new();
    for (n, slot) in names.iter().zip(&slots) {
        let current = match slot.breaker_state() {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        };
        for state in ["closed", "open", "half_open"] {
            breakers.push((
                [n[0].clone(), state.into()],
                f64::from(u8::from(state == current)),
            ));
        }
    }
    out.gauge(
        "wasmgate_plugin_breaker_state",
        "1 for the state each plugin's circuit breaker is in.",
        &["plugin", "state"],
        breakers.iter().map(|(l, v)| (&l[..], *v)),
    );
    out.gauge(
        "wasmgate_plugin_instances",
        "Plugin instances alive (created and not yet discarded), per plugin's active version.",
        &["plugin"],
        names.iter().zip(&stats).map(|(n, s)| {
            (
                &n[..],
                s.instances_created.saturating_sub(s.instances_discarded) as f64,
            )
        }),
    );
}

/// The configuration store's facts, when the configuration comes from one (etcd): the revision
/// running, whether the store is reachable, whether the gateway serves its cached copy.
fn config_store(control: &ControlHandle, out: &mut Exposition) {
    let Some(store) = control.source() else {
        return;
    };
    let status = control.status();
    let none: &[&str] = &[];
    out.gauge(
        "wasmgate_config_revision",
        "The configuration store's revision of the running configuration (0: none applied from the store).",
        &[],
        [(none, status.config.revision.unwrap_or(0) as f64)],
    );
    out.gauge(
        "wasmgate_config_store_latest_revision",
        "The newest revision of the configuration seen in the store (applied or refused).",
        &[],
        [(none, store.latest_revision.unwrap_or(0) as f64)],
    );
    out.gauge(
        "wasmgate_config_store_reachable",
        "Whether the configuration store answered the last time it was asked (0: unreachable; the last applied configuration keeps serving).",
        &[],
        [(none, if store.reachable { 1.0 } else { 0.0 })],
    );
    out.gauge(
        "wasmgate_config_from_cache",
        "Whether the gateway serves the local cached copy of its configuration because the store was unreachable at start.",
        &[],
        [(none, if store.from_cache { 1.0 } else { 0.0 })],
    );
}
