//! Spans as OTLP protobuf (Kong's `kong/observability/otlp`): one `ExportTraceServiceRequest`
//! per batch, the node's resource attributes, the `kong-internal` scope.

use kong_pdk::pdk::{Level, LogLine};
use kong_pdk::tracer::{AttributeValue, Span, TraceId};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span};
use prost::Message;

/// Kong's version, as `service.version`.
const KONG_VERSION: &str = "3.10.0";

fn value(v: &AttributeValue) -> AnyValue {
    let value = match v {
        AttributeValue::String(s) => any_value::Value::StringValue(s.to_string()),
        AttributeValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttributeValue::Int(i) => any_value::Value::IntValue(*i),
        AttributeValue::Double(d) => any_value::Value::DoubleValue(*d),
    };
    AnyValue { value: Some(value) }
}

fn key_value(key: &str, v: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(v),
        ..KeyValue::default()
    }
}

/// One span, encoded (Kong's `transform_span`), with the request's trace id when it has one
/// (the one a propagation header gave).
pub(crate) fn encode_span(s: &Span, trace_id: Option<TraceId>) -> Vec<u8> {
    let pb = opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: trace_id.unwrap_or(s.trace_id).0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        parent_span_id: s.parent_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        name: s.name.to_string(),
        kind: s.kind as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns.unwrap_or(0),
        attributes: s.attributes.iter().map(|(k, v)| key_value(k, value(v))).collect(),
        events: s
            .events
            .iter()
            .map(|e| span::Event {
                time_unix_nano: e.time_ns,
                name: e.name.to_string(),
                attributes: e.attributes.iter().map(|(k, v)| key_value(k, value(v))).collect(),
                ..span::Event::default()
            })
            .collect(),
        status: s.status.map(|code| Status {
            code: code as i32,
            ..Status::default()
        }),
        ..Default::default()
    };
    pb.encode_to_vec()
}

/// The resource attributes: Kong's defaults (`service.name`, `service.instance.id`,
/// `service.version`) under the configured ones, by name.
pub(crate) fn resource(node_id: &str, configured: &[(String, String)]) -> Vec<KeyValue> {
    let mut all: Vec<(String, String)> = vec![
        ("service.instance.id".into(), node_id.to_owned()),
        ("service.name".into(), "kong".into()),
        ("service.version".into(), KONG_VERSION.into()),
    ];
    for (k, v) in configured {
        match all.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.clone(),
            None => all.push((k.clone(), v.clone())),
        }
    }
    all.sort();
    all.into_iter()
        .map(|(k, v)| key_value(&k, value(&AttributeValue::from(v))))
        .collect()
}

/// Kong's scope of every span and log record.
fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "kong-internal".into(),
        version: "0.1.0".into(),
        ..InstrumentationScope::default()
    })
}

/// OpenTelemetry's severity number and Kong's text for a level (Kong's `map_severity`).
fn severity(level: Level) -> (i32, &'static str) {
    match level {
        Level::Debug => (5, "DEBUG"),
        Level::Info => (9, "INFO"),
        Level::Notice => (11, "NOTICE"),
        Level::Warn => (13, "WARN"),
        Level::Err => (17, "ERR"),
        Level::Crit => (19, "CRIT"),
        Level::Alert => (21, "ALERT"),
        Level::Emerg => (23, "EMERG"),
    }
}

/// One of the request's log lines as an encoded OTLP log record (Kong's `prepare_logs`):
/// the request id, the trace it belongs to and the span active when it was logged.
pub(crate) fn encode_log(line: &LogLine, request_id: &str, trace_id: Option<TraceId>) -> Vec<u8> {
    let (number, text) = severity(line.level);
    LogRecord {
        time_unix_nano: line.time_ns,
        observed_time_unix_nano: line.time_ns,
        severity_number: number,
        severity_text: text.into(),
        body: Some(value(&AttributeValue::from(line.message.clone()))),
        attributes: vec![key_value(
            "request.id",
            value(&AttributeValue::from(request_id.to_owned())),
        )],
        trace_id: trace_id.map(|t| t.0.to_vec()).unwrap_or_default(),
        span_id: line.span_id.map(|s| s.0.to_vec()).unwrap_or_default(),
        ..LogRecord::default()
    }
    .encode_to_vec()
}

/// A batch of encoded log records as one export request's body.
pub(crate) fn encode_logs_batch(records: &[Vec<u8>], resource: &[KeyValue]) -> Vec<u8> {
    let log_records = records
        .iter()
        .filter_map(|r| LogRecord::decode(r.as_slice()).ok())
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource.to_vec(),
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec()
}

/// A batch of encoded spans as one export request's body; spans that do not decode (none
/// should) are left out.
pub(crate) fn encode_batch(spans: &[Vec<u8>], resource: &[KeyValue]) -> Vec<u8> {
    let spans = spans
        .iter()
        .filter_map(|s| opentelemetry_proto::tonic::trace::v1::Span::decode(s.as_slice()).ok())
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource.to_vec(),
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}
