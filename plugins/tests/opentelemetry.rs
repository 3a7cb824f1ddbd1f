//! opentelemetry (Kong's `spec/03-plugins/37-opentelemetry`): spans exported as OTLP/HTTP
//! protobuf to an in-process collector that decodes them, trace context propagation to the
//! upstream, sampling, log records, and the config's messages.

use std::collections::HashMap;

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Conf, Gateway};
use kong_pdk::testing::{Harness, LoadError};
use kong_plugins::opentelemetry::OpenTelemetry;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};

mod common;
use common::{Received, receiver, wait_for};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER: &str = "b7ad6b7169203331";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attribute<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attrs, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Every span the collector got, and the resource attributes of the last export.
fn spans(got: &[Received]) -> (Vec<Span>, Vec<KeyValue>) {
    let mut all = Vec::new();
    let mut resource = Vec::new();
    for r in got {
        assert_eq!(r.line, "POST /v1/traces HTTP/1.1");
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        let req = ExportTraceServiceRequest::decode(r.body.as_slice()).expect("an OTLP export request");
        for rs in req.resource_spans {
            resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                let scope = ss.scope.expect("a scope");
                assert_eq!(
                    (scope.name.as_str(), scope.version.as_str()),
                    ("kong-internal", "0.1.0")
                );
                all.extend(ss.spans);
            }
        }
    }
    (all, resource)
}

/// Waits until the collector holds a span named `name`, and returns all it holds.
async fn spans_until(got: &std::sync::Arc<std::sync::Mutex<Vec<Received>>>, name: &str) -> (Vec<Span>, Vec<KeyValue>) {
    helpers::wait_until(
        &format!("a {name} span"),
        std::time::Duration::from_secs(10),
        || async { spans(&got.lock().unwrap()).0.iter().any(|s| s.name == name) },
    )
    .await;
    spans(&got.lock().unwrap())
}

async fn traced_gateway(strategy: helpers::Strategy, config: Value) -> (helpers::Blueprint, Gateway) {
    let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
    let service = bp.services().insert(json!({ "name": "mock-service" })).await;
    bp.routes()
        .insert(json!({ "name": "traced", "paths": ["/"], "service": { "id": service["id"] } }))
        .await;
    bp.plugins()
        .insert(json!({ "name": "opentelemetry", "config": config }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default().tracing("all", 1.0)).await;
    (bp, kong)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_every_step_reach_the_collector_with_the_callers_trace() {
    assert_eq!((OpenTelemetry::NAME, OpenTelemetry::PRIORITY), ("opentelemetry", 14));
    for strategy in helpers::all_strategies() {
        let (port, got) = receiver(vec![]).await;
        let (_bp, kong) = traced_gateway(
            strategy,
            json!({
                "traces_endpoint": format!("http://127.0.0.1:{port}/v1/traces"),
                "queue": { "max_coalescing_delay": 0.01 },
                "resource_attributes": { "service.name": "edge", "deployment.environment": "test" },
                "http_response_header_for_traceid": "x-trace-id",
            }),
        )
        .await;
        let res = kong
            .proxy_client()
            .get("/request")
            .header("traceparent", &format!("00-{TRACE}-{CALLER}-01"))
            .send()
            .await;
        res.assert_status(200);
        assert_eq!(res.header("x-trace-id"), Some(TRACE), "[#{strategy}]");
        // The upstream sees the caller's trace, sampled, with the balancer span as its parent.
        let sent = res.request().header("traceparent").expect("traceparent upstream");
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", TRACE, "01"),
            "[#{strategy}] {sent}"
        );
        assert_ne!(parts[2], CALLER);

        let (spans, resource) = spans_until(&got, "kong.balancer").await;
        let by_name: HashMap<&str, &Span> = spans.iter().map(|s| (s.name.as_str(), s)).collect();
        for name in [
            "kong",
            "kong.router",
            "kong.access.plugin.opentelemetry",
            "kong.header_filter.plugin.opentelemetry",
            "kong.balancer",
        ] {
            assert!(
                by_name.contains_key(name),
                "[#{strategy}] no {name} span in {:?}",
                by_name.keys()
            );
        }
        assert!(
            spans.iter().all(|s| hex(&s.trace_id) == TRACE),
            "[#{strategy}] one trace"
        );
        assert!(
            spans
                .iter()
                .all(|s| s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0),
            "[#{strategy}] spans end after they start"
        );
        let root = by_name["kong"];
        assert_eq!(
            hex(&root.parent_span_id),
            CALLER,
            "[#{strategy}] the caller's span is the root's parent"
        );
        assert_eq!(root.kind, 2, "server");
        assert_eq!(
            attribute(&root.attributes, "http.status_code"),
            Some(&any_value::Value::IntValue(200))
        );
        assert_eq!(string(&root.attributes, "http.method").as_deref(), Some("GET"));
        assert_eq!(string(&root.attributes, "http.route").as_deref(), Some("/"));
        assert!(string(&root.attributes, "http.url").unwrap().ends_with("/request"));
        for child in ["kong.router", "kong.access.plugin.opentelemetry", "kong.balancer"] {
            assert_eq!(
                by_name[child].parent_span_id, root.span_id,
                "[#{strategy}] {child}'s parent"
            );
        }
        let balancer = by_name["kong.balancer"];
        assert_eq!(
            hex(&balancer.span_id),
            parts[2],
            "[#{strategy}] the upstream's parent is the balancer span"
        );
        assert_eq!(balancer.kind, 3, "client");
        assert_eq!(
            attribute(&balancer.attributes, "try_count"),
            Some(&any_value::Value::DoubleValue(1.0))
        );
        assert!(attribute(&balancer.attributes, "net.peer.port").is_some());
        assert_eq!(
            string(&resource, "service.name").as_deref(),
            Some("edge"),
            "configured over Kong's default"
        );
        assert_eq!(string(&resource, "deployment.environment").as_deref(), Some("test"));
        assert_eq!(string(&resource, "service.version").as_deref(), Some("3.10.0"));
        assert!(string(&resource, "service.instance.id").is_some());
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_traces_are_propagated_but_not_exported() {
    let (port, got) = receiver(vec![]).await;
    let (_bp, kong) = traced_gateway(
        helpers::Strategy::Off,
        json!({
            "traces_endpoint": format!("http://127.0.0.1:{port}/v1/traces"),
            "queue": { "max_coalescing_delay": 0.01 },
        }),
    )
    .await;
    let proxy = kong.proxy_client();
    let other = "1af7651916cd43dd8448eb211c80319c";
    let res = proxy
        .get("/request")
        .header("traceparent", &format!("00-{other}-{CALLER}-00"))
        .send()
        .await;
    let sent = res.request().header("traceparent").unwrap();
    assert!(
        sent.starts_with(&format!("00-{other}-")) && sent.ends_with("-00"),
        "{sent}"
    );
    // A sampled request afterwards: what the collector has is that trace only.
    proxy
        .get("/request")
        .header("traceparent", &format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .await
        .assert_status(200);
    let (spans, _) = spans_until(&got, "kong.balancer").await;
    assert!(
        spans.iter().all(|s| hex(&s.trace_id) == TRACE),
        "the unsampled trace was exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_node_tracing_the_plugin_only_propagates() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled"]).await;
    bp.routes().insert(json!({ "paths": ["/"] })).await;
    bp.plugins()
        .insert(json!({ "name": "opentelemetry", "config": {
            "traces_endpoint": "http://127.0.0.1:1/v1/traces",
            "header_type": "jaeger",
        } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let proxy = kong.proxy_client();
    // b3 in, preserved as b3 (8-byte trace id kept), and jaeger added (header_type).
    let res = proxy
        .get("/request")
        .header("x-b3-traceid", "463ac35c9f6413ad")
        .header("x-b3-spanid", CALLER)
        .header("x-b3-sampled", "1")
        .send()
        .await;
    let echoed = res.request();
    assert_eq!(echoed.header("x-b3-traceid").as_deref(), Some("463ac35c9f6413ad"));
    let span = echoed.header("x-b3-spanid").unwrap();
    assert_ne!(span, CALLER, "the gateway's span id goes upstream");
    assert_eq!(
        echoed.header("x-b3-sampled").as_deref(),
        Some("0"),
        "tracing is off: not sampled"
    );
    assert_eq!(
        echoed.header("uber-trace-id"),
        Some(format!("463ac35c9f6413ad:{span}:{CALLER}:00"))
    );
    // No incoming context: a new trace in the default format.
    let res = proxy.get("/request").send().await;
    let sent = res.request().header("traceparent").expect("w3c by default");
    assert!(sent.starts_with("00-") && sent.ends_with("-00"), "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_settings_extract_clear_and_inject() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled"]).await;
    bp.routes().insert(json!({ "paths": ["/"] })).await;
    bp.plugins()
        .insert(json!({ "name": "opentelemetry", "config": {
            "traces_endpoint": "http://127.0.0.1:1/v1/traces",
            "propagation": {
                "extract": ["w3c"],
                "clear": ["x-b3-traceid", "ot-tracer-spanid"],
                "inject": ["preserve", "b3-single", "datadog"],
                "default_format": "ot",
            },
        } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default().tracing("all", 1.0)).await;
    let proxy = kong.proxy_client();
    let res = proxy
        .get("/request")
        .header("traceparent", &format!("00-{TRACE}-{CALLER}-01"))
        .header("x-b3-traceid", "463ac35c9f6413ad")
        .send()
        .await;
    let echoed = res.request();
    assert_eq!(echoed.header("x-b3-traceid"), None, "cleared");
    let w3c = echoed.header("traceparent").unwrap();
    let span = w3c.split('-').nth(2).unwrap().to_owned();
    assert_eq!(w3c, format!("00-{TRACE}-{span}-01"), "preserve: w3c, as extracted");
    // b3-single with the balancer span's parent, the root span.
    let b3 = echoed.header("b3").unwrap();
    assert!(
        b3.starts_with(&format!("{TRACE}-{span}-1-")) && b3.len() == 32 + 16 + 16 + 4,
        "{b3}"
    );
    let low = u64::from_str_radix(&TRACE[16..], 16).unwrap();
    assert_eq!(
        echoed.header("x-datadog-trace-id"),
        Some(low.to_string()),
        "datadog: the low 64 bits"
    );
    // Nothing extractable (b3 is not extracted here): `preserve` is the default format.
    let res = proxy
        .get("/request")
        .header("x-b3-traceid", "463ac35c9f6413ad")
        .header("x-b3-spanid", CALLER)
        .send()
        .await;
    let echoed = res.request();
    assert!(echoed.header("ot-tracer-traceid").is_some(), "default_format ot");
    assert_ne!(echoed.header("ot-tracer-traceid").as_deref(), Some("463ac35c9f6413ad"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_collector_gets_the_batch_again() {
    let (port, got) = receiver(vec![500]).await;
    let (_bp, kong) = traced_gateway(
        helpers::Strategy::Off,
        json!({
            "traces_endpoint": format!("http://127.0.0.1:{port}/v1/traces"),
            "headers": { "Authorization": "Bearer t0ken" },
            "queue": { "max_coalescing_delay": 0.01, "initial_retry_delay": 0.01 },
        }),
    )
    .await;
    kong.proxy_client().get("/request").send().await.assert_status(200);
    let all = wait_for(&got, 2).await;
    assert_eq!(all[0].body, all[1].body, "the same batch, sent again after a 500");
    assert_eq!(all[1].header("authorization"), Some("Bearer t0ken"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requests_log_lines_are_exported_as_log_records() {
    let (port, got) = receiver(vec![]).await;
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled"]).await;
    bp.routes().insert(json!({ "paths": ["/"] })).await;
    bp.plugins()
        .insert(json!({ "name": "opentelemetry", "config": {
            "logs_endpoint": format!("http://127.0.0.1:{port}/v1/logs"),
            "traces_endpoint": "http://127.0.0.1:1/v1/traces",
            "queue": { "max_coalescing_delay": 0.01 },
        } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default().tracing("all", 1.0)).await;
    let res = kong
        .proxy_client()
        .get("/request")
        .header("traceparent", "00-not-a-trace-01")
        .send()
        .await;
    res.assert_status(200);
    let request_id = res.header("x-kong-request-id").expect("a request id").to_owned();
    let all = wait_for(&got, 1).await;
    assert_eq!(all[0].line, "POST /v1/logs HTTP/1.1");
    let req = ExportLogsServiceRequest::decode(all[0].body.as_slice()).unwrap();
    let records: Vec<_> = req.resource_logs[0].scope_logs[0].log_records.clone();
    let warning = records
        .iter()
        .find(|r| {
            matches!(r.body.as_ref().and_then(|b| b.value.as_ref()),
                Some(any_value::Value::StringValue(s)) if s.contains("invalid W3C traceparent header; ignoring."))
        })
        .unwrap_or_else(|| panic!("no warning in {records:?}"));
    assert_eq!((warning.severity_number, warning.severity_text.as_str()), (13, "WARN"));
    assert_eq!(string(&warning.attributes, "request.id"), Some(request_id));
    assert_eq!(warning.trace_id.len(), 16, "the request's trace");
    assert_eq!(warning.span_id.len(), 8, "the span active then");
}

async fn refused(config: Value) -> Value {
    match Harness::new().plugin::<OpenTelemetry>(config).start().await {
        Err(LoadError::Invalid { violation, .. }) => violation.fields()["config"].clone(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[tokio::test]
async fn the_schema_is_kongs() {
    assert_eq!(
        refused(json!({})).await["@entity"],
        json!(["at least one of these fields must be non-empty: 'traces_endpoint', 'logs_endpoint'"])
    );
    assert_eq!(
        refused(json!({ "traces_endpoint": "http://c/v1/traces", "sampling_rate": 2 })).await["sampling_rate"],
        json!("value should be between 0 and 1")
    );
    assert_eq!(
        refused(json!({ "traces_endpoint": "http://c/v1/traces", "header_type": "zipkin" })).await["header_type"],
        json!("expected one of: preserve, ignore, b3, b3-single, w3c, jaeger, ot, aws, gcp, datadog, instana")
    );
    assert_eq!(
        refused(json!({ "traces_endpoint": "http://c/v1/traces", "propagation": { "extract": ["b3-single"] } })).await
            ["propagation"]["extract"],
        json!(["expected one of: w3c, b3, jaeger, ot, datadog, aws, gcp, instana"])
    );
    // The deprecated `endpoint` is `traces_endpoint`; Kong's defaults fill the rest.
    let bp = helpers::get_db_utils(helpers::Strategy::Sqlite, &["bundled"]).await;
    let stored = bp
        .plugins()
        .insert(json!({ "name": "opentelemetry", "config": { "endpoint": "http://c:4318/v1/traces" } }))
        .await;
    let config = &stored["config"];
    assert_eq!(config["traces_endpoint"], "http://c:4318/v1/traces");
    assert_eq!(config["queue"]["max_batch_size"], 200);
    assert_eq!(config["propagation"]["default_format"], "w3c");
    assert_eq!(config["header_type"], "preserve");
    assert_eq!(
        (
            &config["connect_timeout"],
            &config["send_timeout"],
            &config["read_timeout"]
        ),
        (&json!(1000), &json!(5000), &json!(5000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_serializer_gets_the_trace_id_in_each_injected_format() {
    use kong_pdk::testing::{MockResponse, TestRequest};
    let (port, got) = receiver(vec![]).await;
    let gw = Harness::new()
        .plugin::<OpenTelemetry>(json!({
            "traces_endpoint": "http://127.0.0.1:1/v1/traces",
            "propagation": { "extract": ["w3c"], "inject": ["preserve", "jaeger"] },
        }))
        .route_plugin::<kong_plugins::http_log::HttpLog>(json!({
            "http_endpoint": format!("http://127.0.0.1:{port}/logs"),
        }))
        .start()
        .await
        .unwrap();
    gw.send(
        TestRequest::get("/").header("traceparent", &format!("00-{TRACE}-{CALLER}-01")),
        |_| MockResponse::ok("{}"),
    )
    .await;
    let entry = wait_for(&got, 1).await[0].json();
    assert_eq!(entry["trace_id"], json!({ "w3c": TRACE, "jaeger": TRACE }));
}
