//! Span export over OTLP/HTTP to a real receiver that decodes the OpenTelemetry protobuf:
//! what a span carries, batching by size and by interval, retries, a full queue that drops and
//! counts instead of waiting, and the spans still queued sent at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1 as proto;
use wasmgate::config::Config;
use wasmgate::otlp::{ExportOptions, ExportStats, OtlpExporter, Span, SpanKind};
use wasmgate_tests::config::single_route;
use wasmgate_tests::otlp::{Export, OtlpReceiver};
use wasmgate_tests::*;

fn span(n: u8) -> Span {
    Span {
        trace_id: [n; 16],
        span_id: [n.wrapping_add(1); 8],
        parent_span_id: n.is_multiple_of(2).then_some([0xab; 8]),
        name: format!("GET rule-{n}"),
        start_unix_nanos: 1_700_000_000_000_000_000 + u64::from(n) * 1000,
        end_unix_nanos: 1_700_000_000_000_250_000 + u64::from(n) * 1000,
        kind: SpanKind::Server,
        method: Method::GET,
        url_path: format!("/items/{n}"),
        server_address: "shop.example".into(),
        http_status: if n == 5 { 503 } else { 200 },
        listener: Some(Arc::from("web")),
        rule: Some(Arc::from(format!("rule-{n}"))),
        backend_pool: Some(Arc::from("app")),
        peer_address: Some(SocketAddr::from(([10, 0, 0, 4], 8080))),
    }
}

fn spans_of(export: &Export) -> Vec<proto::Span> {
    export
        .request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect()
}

fn attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
}

fn text(s: &str) -> Option<AnyValue> {
    Some(AnyValue::StringValue(s.into()))
}

fn endpoint(receiver: &OtlpReceiver) -> wasmgate::config::OtlpEndpoint {
    let toml = format!(
        "{}[telemetry]\notlp_endpoint = {:?}\n",
        single_route(&[dead_address()], ""),
        receiver.endpoint()
    );
    Config::from_toml(&toml)
        .expect("configuration")
        .telemetry
        .otlp
        .expect("endpoint")
}

/// A gateway configured with `[telemetry]` exports the spans handed to its exporter, each
/// field where OTLP puts it, under the configured service name.
#[tokio::test]
async fn gateway_spans_reach_the_collector() {
    let receiver = OtlpReceiver::start().await;
    let toml = format!(
        "{}[telemetry]\notlp_endpoint = {:?}\nservice_name = \"edge-gateway\"\n",
        single_route(&[dead_address()], ""),
        receiver.endpoint()
    );
    let gw = start_gateway(&toml).await;
    let spans = gw
        .spans()
        .expect("an exporter when otlp_endpoint is set")
        .clone();
    assert_eq!(
        spans.endpoint(),
        format!("{}/v1/traces", receiver.endpoint())
    );
    spans.export(span(4));
    spans.export(span(5));

    // Sent after the default interval (one second) without shutting down.
    let export = receiver.next().await;
    assert_eq!(export.method, "POST");
    assert_eq!(export.path, "/v1/traces");
    assert_eq!(
        export.content_type.as_deref(),
        Some("application/x-protobuf")
    );
    let resource = export.request.resource_spans[0]
        .resource
        .as_ref()
        .expect("resource");
    assert_eq!(
        attribute(&resource.attributes, "service.name"),
        text("edge-gateway")
    );
    let scope = export.request.resource_spans[0].scope_spans[0]
        .scope
        .as_ref()
        .expect("scope");
    assert_eq!(scope.name, "wasmgate");

    let got = spans_of(&export);
    assert_eq!(got.len(), 2, "{got:?}");
    let (a, b) = (&got[0], &got[1]);
    assert_eq!(a.trace_id, vec![4; 16]);
    assert_eq!(a.span_id, vec![5; 8]);
    assert_eq!(a.parent_span_id, vec![0xab; 8]);
    assert_eq!(
        b.parent_span_id,
        Vec::<u8>::new(),
        "a root span has no parent"
    );
    assert_eq!(a.name, "GET rule-4");
    assert_eq!(a.kind, proto::span::SpanKind::Server as i32);
    assert_eq!(a.start_time_unix_nano, 1_700_000_000_000_004_000);
    assert_eq!(a.end_time_unix_nano, 1_700_000_000_000_254_000);
    for (key, value) in [
        ("http.request.method", text("GET")),
        ("url.path", text("/items/4")),
        ("server.address", text("shop.example")),
        ("http.response.status_code", Some(AnyValue::IntValue(200))),
        ("wasmgate.listener", text("web")),
        ("wasmgate.rule", text("rule-4")),
        ("wasmgate.backend_pool", text("app")),
        ("network.peer.address", text("10.0.0.4")),
        ("network.peer.port", Some(AnyValue::IntValue(8080))),
    ] {
        assert_eq!(attribute(&a.attributes, key), value, "{key}");
    }
    assert_eq!(a.status, None, "a 200 leaves the status unset");
    assert_eq!(
        b.status.as_ref().map(|s| s.code),
        Some(proto::status::StatusCode::Error as i32),
        "a 5xx marks the server span as an error"
    );
    gw.shutdown_within(Duration::from_secs(5)).await;
    assert_eq!(spans.stats().exported, 2);
}

/// Full batches go at once; a partial one waits for the interval, or for the shutdown, which
/// sends what is queued.
#[tokio::test]
async fn batches_by_size_interval_and_shutdown() {
    let receiver = OtlpReceiver::start().await;
    let by_size = OtlpExporter::start(
        &endpoint(&receiver),
        "wasmgate",
        ExportOptions {
            batch_size: 3,
            interval: Duration::from_secs(3600),
            ..ExportOptions::default()
        },
    );
    for n in 0..7 {
        by_size.export(span(n));
    }
    let first = spans_of(&receiver.next().await);
    let second = spans_of(&receiver.next().await);
    let names = |spans: &[proto::Span]| spans.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&first), ["GET rule-0", "GET rule-1", "GET rule-2"]);
    assert_eq!(names(&second), ["GET rule-3", "GET rule-4", "GET rule-5"]);
    assert!(
        receiver.try_next().await.is_none(),
        "the seventh span waits for a full batch or the interval"
    );
    by_size.shutdown(WAIT).await;
    assert_eq!(names(&spans_of(&receiver.next().await)), ["GET rule-6"]);
    assert_eq!(
        by_size.stats(),
        ExportStats {
            exported: 7,
            batches: 3,
            ..ExportStats::default()
        }
    );

    let by_interval = OtlpExporter::start(
        &endpoint(&receiver),
        "wasmgate",
        ExportOptions {
            batch_size: 100,
            interval: Duration::from_millis(50),
            ..ExportOptions::default()
        },
    );
    by_interval.export(span(1));
    by_interval.export(span(2));
    let export = receiver.next().await;
    assert_eq!(
        names(&spans_of(&export)).len(),
        2,
        "both within one interval"
    );
    by_interval.shutdown(WAIT).await;
}

/// A collector answering 503 gets the batch again after a pause, a bounded number of times; a
/// 400 is not retried. Either way the spans are counted.
#[tokio::test]
async fn retries_are_bounded() {
    let receiver = OtlpReceiver::start().await;
    let exporter = OtlpExporter::start(
        &endpoint(&receiver),
        "wasmgate",
        ExportOptions {
            batch_size: 1,
            retries: 2,
            backoff: Duration::from_millis(10),
            ..ExportOptions::default()
        },
    );
    receiver.answer(&[503, 503]);
    exporter.export(span(1));
    for _ in 0..3 {
        assert_eq!(spans_of(&receiver.next().await)[0].name, "GET rule-1");
    }
    eventually("the retried batch counted", || async {
        (exporter.stats().exported == 1).then_some(())
    })
    .await;
    assert_eq!(exporter.stats().retries, 2);

    receiver.answer(&[503, 503, 503]);
    exporter.export(span(2));
    for _ in 0..3 {
        receiver.next().await;
    }
    eventually("a batch given up after its retries", || async {
        (exporter.stats().failed == 1).then_some(())
    })
    .await;

    receiver.answer(&[400]);
    exporter.export(span(3));
    receiver.next().await;
    eventually("a refused batch", || async {
        (exporter.stats().failed == 2).then_some(())
    })
    .await;
    exporter.export(span(4));
    assert_eq!(
        spans_of(&receiver.next().await)[0].name,
        "GET rule-4",
        "no retry of the refused batch"
    );
    exporter.shutdown(WAIT).await;
    let stats = exporter.stats();
    assert_eq!(
        (stats.exported, stats.failed, stats.retries),
        (2, 2, 4),
        "{stats:?}"
    );
}

/// While the collector does not answer, spans wait in the bounded queue; beyond it they are
/// dropped and counted, and `export` goes on returning at once. Queued spans go out once the
/// collector answers again.
#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let receiver = OtlpReceiver::start().await;
    let exporter = OtlpExporter::start(
        &endpoint(&receiver),
        "wasmgate",
        ExportOptions {
            queue: 4,
            batch_size: 1,
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(60),
            ..ExportOptions::default()
        },
    );
    receiver.hold();
    exporter.export(span(0));
    // The exporter's one task now waits for the collector's answer.
    receiver.next().await;
    for n in 1..=7 {
        exporter.export(span(n));
    }
    assert_eq!(exporter.stats().dropped, 3, "4 queued, 3 dropped");
    receiver.release();
    for n in 1..=4 {
        assert_eq!(
            spans_of(&receiver.next().await)[0].name,
            format!("GET rule-{n}")
        );
    }
    exporter.shutdown(WAIT).await;
    let stats = exporter.stats();
    assert_eq!((stats.exported, stats.dropped), (5, 3), "{stats:?}");
}

/// A collector that is not there: the batch is retried, then given up, and shutting down
/// still completes.
#[tokio::test]
async fn an_absent_collector_costs_nothing_but_counts() {
    let toml = format!(
        "{}[telemetry]\notlp_endpoint = \"http://{}\"\n",
        single_route(&[dead_address()], ""),
        dead_address()
    );
    let endpoint = Config::from_toml(&toml).unwrap().telemetry.otlp.unwrap();
    let exporter = OtlpExporter::start(
        &endpoint,
        "wasmgate",
        ExportOptions {
            batch_size: 1,
            retries: 1,
            backoff: Duration::from_millis(10),
            ..ExportOptions::default()
        },
    );
    exporter.export(span(1));
    eventually("the span given up", || async {
        (exporter.stats().failed == 1).then_some(())
    })
    .await;
    exporter.shutdown(WAIT).await;
}

/// Requests served by a gateway with `[telemetry]` become spans at the collector: a request that
/// came with a `traceparent` continues its trace (same trace id, the caller's span as parent), one
/// without starts a trace; each span is named by method and rule, never by path, and carries the
/// request's attributes and the backend server that answered.
#[tokio::test]
async fn served_requests_are_exported_as_spans() {
    let receiver = OtlpReceiver::start().await;
    let backend = HttpBackend::start("app").await;
    let toml = format!(
        "{}[admin]\nbind_address = \"127.0.0.1\"\nport = 0\n\n[telemetry]\notlp_endpoint = {:?}\n",
        single_route(&[backend.addr], ""),
        receiver.endpoint()
    );
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");
    let continued = get_with(
        addr,
        "shop.example",
        "/items/7?color=red",
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )],
    )
    .await;
    assert_eq!(continued.status.as_u16(), 200);
    let started = get(addr, "shop.example", "/").await;
    assert_eq!(started.status.as_u16(), 200);

    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(spans_of(&receiver.next().await));
    }
    assert_eq!(got.len(), 2, "{got:?}");
    let by_path = |path: &str| {
        got.iter()
            .find(|s| attribute(&s.attributes, "url.path") == text(path))
            .unwrap_or_else(|| panic!("no span for {path}: {got:?}"))
            .clone()
    };
    let a = by_path("/items/7");
    assert_eq!(
        a.trace_id,
        [
            0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80,
            0x31, 0x9c
        ]
    );
    assert_eq!(
        a.parent_span_id,
        [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
    );
    assert_ne!(a.span_id, a.parent_span_id, "the gateway's span is its own");
    assert_eq!(a.name, "GET rule");
    assert!(a.start_time_unix_nano > 0 && a.start_time_unix_nano <= a.end_time_unix_nano);
    for (key, value) in [
        ("http.request.method", text("GET")),
        ("server.address", text("shop.example")),
        ("http.response.status_code", Some(AnyValue::IntValue(200))),
        ("wasmgate.listener", text("web")),
        ("wasmgate.rule", text("rule")),
        ("wasmgate.backend_pool", text("pool")),
        ("network.peer.address", text(&backend.addr.ip().to_string())),
        (
            "network.peer.port",
            Some(AnyValue::IntValue(i64::from(backend.addr.port()))),
        ),
    ] {
        assert_eq!(attribute(&a.attributes, key), value, "{key}");
    }
    // The client saw the same trace id the span carries.
    assert_eq!(
        continued.header("x-appgw-trace-id"),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    let b = by_path("/");
    assert!(b.parent_span_id.is_empty(), "a trace started here: {b:?}");
    assert_ne!(b.trace_id, a.trace_id);

    // The exporter's counters are in /metrics.
    let admin = gw.admin_addr().expect("admin listener");
    eventually("the exported spans counted in /metrics", || async {
        let res = wasmgate_tests::client::raw_exchange(
            admin,
            b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .await
        .ok()?;
        let text = res.text();
        let lines: Vec<&str> = text.lines().collect();
        (lines.contains(&"wasmgate_spans_exported_total 2")
            && lines.contains(&"wasmgate_spans_dropped_total 0"))
        .then_some(())
    })
    .await;
    gw.shutdown().await;
}
