//! `opentelemetry` (Kong's `kong/plugins/opentelemetry`): the request's spans exported as
//! OTLP/HTTP protobuf in batches, and the trace context propagated to the upstream in W3C,
//! b3, Jaeger, OpenTracing, Datadog, AWS, GCP and Instana headers.
//!
//! The spans are the gateway's own (the root `kong`, `kong.router`, each plugin's rewrite,
//! access and header_filter, each balancer try: what the node's `tracing_instrumentations`
//! enables) and any a plugin starts through [`Kong::tracing`]. With tracing off (Kong's
//! default) the plugin only propagates: the upstream gets the caller's trace with the
//! gateway's span id, and nothing is exported.

mod otlp;
mod propagation;

use std::sync::Arc;
use std::time::Duration;

use kong_pdk::outbound::OutboundRequest;
use kong_pdk::prelude::*;
use kong_pdk::schema::{ConfigType, FieldKind, FieldSchema};
use kong_pdk::tracer::{SpanId, TraceId};
use serde_json::Value;

use crate::http_log::Endpoint;
pub use crate::queue::Queues;
use crate::queue::{Batched200, Queue, QueueConfig};

/// The plugin's configuration (Kong's `opentelemetry/schema.lua`).
#[plugin(
    priority = 14,
    version = "3.10.0",
    name = "opentelemetry",
    protocols = protocols_http,
    at_least_one_of("traces_endpoint", "logs_endpoint"),
    shorthand("endpoint", "traces_endpoint")
)]
pub struct OpenTelemetry {
    /// Where spans are sent (OTLP/HTTP, protobuf).
    #[field(typedef = url, referenceable)]
    pub traces_endpoint: Option<String>,
    /// Where the request's log lines are sent as OTLP log records.
    #[field(typedef = url, referenceable)]
    pub logs_endpoint: Option<String>,
    /// Headers added to each export request (authentication tokens for the APM backend).
    pub headers: Option<ExportHeaders>,
    /// Resource attributes, over Kong's `service.name` (`kong`), `service.version` and
    /// `service.instance.id` (the node id).
    pub resource_attributes: Option<ResourceAttributes>,
    /// The export queue (200 spans per batch by default).
    pub queue: Batched200,
    /// Deprecated: the queue's `max_batch_size`.
    pub batch_span_count: Option<i64>,
    /// Deprecated: the queue's `max_coalescing_delay`, in seconds.
    pub batch_flush_delay: Option<i64>,
    /// Connecting to the collector, in milliseconds.
    #[field(typedef = timeout, default = 1000)]
    pub connect_timeout: Option<u64>,
    /// Sending an export request, in milliseconds.
    #[field(typedef = timeout, default = 5000)]
    pub send_timeout: Option<u64>,
    /// Reading the collector's answer, in milliseconds.
    #[field(typedef = timeout, default = 5000)]
    pub read_timeout: Option<u64>,
    /// A response header that gets the trace id.
    pub http_response_header_for_traceid: Option<String>,
    /// Deprecated (use `propagation`): the header format expected and sent.
    #[field(default = "preserve", one_of = ["preserve", "ignore", "b3", "b3-single", "w3c", "jaeger", "ot", "aws", "gcp", "datadog", "instana"])]
    pub header_type: Option<String>,
    /// The sampling rate, over the node's `tracing_sampling_rate`.
    #[field(between = (0, 1))]
    pub sampling_rate: Option<f64>,
    /// Which formats are read, cleared and written.
    pub propagation: Propagation,
}

/// Kong's `typedefs.propagation`.
#[record]
#[derive(Clone)]
pub struct Propagation {
    /// The formats read from the request, in order: the first found wins.
    #[field(elements(one_of = ["w3c", "b3", "jaeger", "ot", "datadog", "aws", "gcp", "instana"]))]
    pub extract: Option<Vec<String>>,
    /// Headers removed from the upstream request.
    #[field(elements(typedef = header_name))]
    pub clear: Option<Vec<String>>,
    /// The formats written on the upstream request (`preserve`: the one read).
    #[field(elements(one_of = ["preserve", "w3c", "b3", "b3-single", "jaeger", "ot", "datadog", "aws", "gcp", "instana"]))]
    pub inject: Option<Vec<String>>,
    /// The format `preserve` writes when nothing was read.
    #[field(required, default = "w3c", one_of = ["w3c", "b3", "b3-single", "jaeger", "ot", "datadog", "aws", "gcp", "instana"])]
    pub default_format: String,
}

/// Headers of the export requests: header names to (referenceable) values.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ExportHeaders(pub std::collections::BTreeMap<String, String>);

impl ConfigType for ExportHeaders {
    fn field_schema() -> FieldSchema {
        let key = FieldSchema::checked_string(|v| {
            kong_pdk::schema::typedefs::validate_header_name(v.as_str().unwrap_or_default()).map(|_| ())
        });
        let mut value = FieldSchema::of(FieldKind::String);
        value.referenceable = true;
        FieldSchema::of(FieldKind::Map {
            keys: Box::new(key),
            values: Box::new(value),
        })
    }
}

/// Resource attributes: names to non-empty strings.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ResourceAttributes(pub std::collections::BTreeMap<String, String>);

impl ConfigType for ResourceAttributes {
    fn field_schema() -> FieldSchema {
        let mut key = FieldSchema::of(FieldKind::String);
        key.required = true;
        let mut value = FieldSchema::of(FieldKind::String);
        value.required = true;
        FieldSchema::of(FieldKind::Map {
            keys: Box::new(key),
            values: Box::new(value),
        })
    }
}

/// What propagation reads, clears and writes (Kong's `get_plugin_params`): the
/// `propagation` record when it sets anything besides `default_format`, else what the
/// deprecated `header_type` means.
struct Params {
    extract: Vec<String>,
    clear: Vec<String>,
    inject: Vec<String>,
    default_format: String,
}

impl OpenTelemetry {
    fn params(&self) -> Params {
        let p = &self.propagation;
        let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
        let mut params = Params {
            extract: list(&p.extract),
            clear: list(&p.clear),
            inject: list(&p.inject),
            default_format: p.default_format.clone(),
        };
        if p.extract.is_some() || p.clear.is_some() || p.inject.is_some() {
            return params;
        }
        let every: Vec<String> = propagation::PRESERVE_EXTRACT.iter().map(|s| s.to_string()).collect();
        match self.header_type.as_deref() {
            Some("preserve") => {
                params.extract = every;
                params.inject = vec!["preserve".into()];
            }
            Some("ignore") => params.inject = vec![params.default_format.clone()],
            Some(other) => {
                params.extract = every;
                params.inject = vec!["preserve".into(), other.to_owned()];
            }
            None => {}
        }
        params
    }

    fn queue_config(&self) -> QueueConfig {
        let mut q = QueueConfig::from(self.queue.clone());
        if let Some(size) = self.batch_span_count {
            q.max_batch_size = Some(size);
        }
        if let Some(delay) = self.batch_flush_delay {
            q.max_coalescing_delay = Some(delay as f64);
        }
        q
    }

    /// The trace context sent upstream (Kong's `get_inject_ctx`): the caller's trace id on
    /// the span the upstream sees as its parent (the balancer's, else the root), the caller's
    /// span as the root's parent, and the sampling decision.
    fn inject_context(&self, kong: &mut Kong<Access, Queues>, mut ctx: propagation::Context) -> propagation::Context {
        let mut tracing = kong.tracing();
        let propagation_only = !tracing.is_recording();
        let root = tracing.propagation_only();
        let trace_id = ctx
            .trace_id
            .as_deref()
            .and_then(|t| <[u8; 16]>::try_from(t).ok())
            .map(TraceId);
        let caller = ctx
            .span_id
            .as_deref()
            .or(ctx.parent_id.as_deref())
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(SpanId);
        if let Some(id) = trace_id {
            tracing.set_trace_id(id);
        }
        if let (Some(caller), Some(root)) = (caller, tracing.span_mut(root)) {
            root.parent_id = Some(caller);
        }
        let sampled = !propagation_only && tracing.sampling_decision(ctx.should_sample, self.sampling_rate);
        tracing.set_should_sample(sampled);
        let injected = match tracing.balancer_span_mut() {
            Some(balancer) => Some(balancer),
            None => tracing.span_mut(root),
        };
        if let Some(span) = injected {
            if let Some(id) = trace_id {
                span.trace_id = id;
            }
            span.should_sample = Some(sampled);
            ctx.trace_id = Some(span.trace_id.0.to_vec());
            ctx.span_id = Some(span.span_id.0.to_vec());
            ctx.parent_id = span.parent_id.map(|p| p.0.to_vec());
        }
        ctx.should_sample = Some(sampled);
        ctx
    }

    /// The queue exporting `signal` to `endpoint` (Kong's `<plugin id>:traces` and
    /// `<plugin id>:logs` queues).
    fn export_queue(&self, kong: &mut Kong<Log, Queues>, signal: Signal, endpoint: &str) -> Option<Arc<Queue>> {
        let (Some(client), Some(timers)) = (kong.http_client(), kong.timers()) else {
            kong.log().err("[otel] this gateway has no HTTP client to export with");
            return None;
        };
        let Some(target) = Endpoint::parse(endpoint) else {
            kong.log().err(format!("[otel] could not parse url {endpoint}"));
            return None;
        };
        let id = kong.plugin_id();
        let node = kong.node().get_id().to_string();
        let name = format!("{id}:{}", signal.name());
        let encode = signal.encoder();
        let queue = kong.state().get_or_insert_with(name.clone(), || {
            let configured: Vec<(String, String)> = self
                .resource_attributes
                .iter()
                .flat_map(|r| r.0.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect();
            let resource = otlp::resource(&node, &configured);
            let mut headers: Vec<(String, String)> = self.headers.iter().flat_map(|h| h.0.clone()).collect();
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                headers.push(("Content-Type".into(), "application/x-protobuf".into()));
            }
            // One timeout bounds each step (connect, send, read): the longest configured.
            let timeout = [self.connect_timeout, self.send_timeout, self.read_timeout]
                .into_iter()
                .map(|t| t.unwrap_or(5000))
                .max()
                .unwrap_or(5000)
                .max(1);
            let timeout = Duration::from_millis(timeout);
            let send: crate::queue::Send = Arc::new(move |entries: &[Vec<u8>]| {
                let request = OutboundRequest {
                    method: "POST".into(),
                    scheme: target.scheme.clone(),
                    host: target.host.clone(),
                    port: target.port,
                    path: target.path.clone(),
                    headers: headers.clone(),
                    body: encode(entries, &resource),
                    timeout,
                    keepalive: Duration::from_secs(60),
                };
                let client = client.clone();
                Box::pin(async move {
                    let answer = client
                        .send(request)
                        .await
                        .map_err(|e| format!("[otel] failed to send request: {e}"))?;
                    if answer.status == 200 {
                        Ok(())
                    } else {
                        Err(format!(
                            "[otel] response error: {}, body: {}",
                            answer.status,
                            String::from_utf8_lossy(&answer.body)
                        ))
                    }
                })
            });
            Queue::new(
                format!("opentelemetry plugin {name}"),
                self.queue_config(),
                send,
                timers,
            )
        });
        Some(queue)
    }
}

#[handler]
impl Handler for OpenTelemetry {
    type State = Queues;

    async fn access(&self, kong: &mut Kong<Access, Queues>) -> kong_pdk::Result {
        if self.traces_endpoint.is_none() {
            return Ok(());
        }
        let params = self.params();
        let extraction = propagation::extract(&params.extract, kong.request().get_headers());
        for warning in &extraction.warnings {
            kong.log().warn(*warning);
        }
        let context = self.inject_context(kong, extraction.context);
        for name in &params.clear {
            kong.service().request().clear_header(name)?;
        }
        let mut formats = serde_json::Map::new();
        let mut errors = Vec::new();
        for format in &params.inject {
            let format = match format.as_str() {
                "preserve" => match extraction.from.unwrap_or(params.default_format.as_str()) {
                    "b3" if context.single_header => "b3-single",
                    other => other,
                },
                other => other,
            };
            match propagation::inject(format, &context) {
                Ok(injected) => {
                    for (name, value) in &injected.headers {
                        kong.service().request().set_header(name, value)?;
                    }
                    formats.insert(injected.trace_id.0.to_owned(), injected.trace_id.1);
                }
                Err(e) => errors.push(e),
            }
        }
        if !formats.is_empty() {
            kong.log().set_serialize_value("trace_id", Value::Object(formats));
        }
        if !errors.is_empty() {
            kong.log().err(errors.join(", "));
        }
        Ok(())
    }

    async fn header_filter(&self, kong: &mut Kong<HeaderFilter, Queues>) -> kong_pdk::Result {
        let (Some(_), Some(header)) = (&self.traces_endpoint, &self.http_response_header_for_traceid) else {
            return Ok(());
        };
        let tracing = kong.tracing();
        let trace_id = tracing
            .trace_id()
            .or_else(|| tracing.root_span().and_then(|r| tracing.span(r)).map(|s| s.trace_id));
        if let Some(id) = trace_id {
            kong.response().add_header(header, id)?;
        }
        Ok(())
    }

    /// Kong's `observability_logs` hook: requests keep their log lines while an instance
    /// exports logs.
    async fn configure(kong: &Worker<Queues>, configs: Option<&[Instance<Self>]>) -> kong_pdk::Result {
        let logs = configs
            .unwrap_or_default()
            .iter()
            .any(|c| c.config.logs_endpoint.is_some());
        kong.node().tracing().set_request_logs(logs);
        Ok(())
    }

    async fn log(&self, kong: &mut Kong<Log, Queues>) -> kong_pdk::Result {
        if let Some(endpoint) = self.traces_endpoint.as_deref() {
            self.export_spans(kong, endpoint);
        }
        if let Some(endpoint) = self.logs_endpoint.as_deref() {
            self.export_logs(kong, endpoint);
        }
        Ok(())
    }
}

/// What an export queue sends.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Traces,
    Logs,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }

    fn encoder(self) -> fn(&[Vec<u8>], &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<u8> {
        match self {
            Signal::Traces => otlp::encode_batch,
            Signal::Logs => otlp::encode_logs_batch,
        }
    }
}

impl OpenTelemetry {
    fn enqueue(&self, kong: &mut Kong<Log, Queues>, signal: Signal, endpoint: &str, entries: Vec<Vec<u8>>) {
        if entries.is_empty() {
            return;
        }
        let Some(queue) = self.export_queue(kong, signal, endpoint) else {
            return;
        };
        for entry in entries {
            if let Some(warning) = queue.enqueue(entry) {
                kong.log().warn(warning);
            }
        }
    }

    /// The request's sampled spans, with the request's trace id (Kong's `traces.log`).
    fn export_spans(&self, kong: &mut Kong<Log, Queues>, endpoint: &str) {
        let tracing = kong.tracing();
        let trace_id = tracing.trace_id();
        let spans: Vec<Vec<u8>> = tracing
            .spans()
            .iter()
            .filter(|s| s.should_sample != Some(false))
            .map(|s| otlp::encode_span(s, trace_id))
            .collect();
        self.enqueue(kong, Signal::Traces, endpoint, spans);
    }

    /// The lines logged during the request at Kong's default level (`notice`) and above, as
    /// log records of the request's trace (Kong's `logs.log`).
    fn export_logs(&self, kong: &mut Kong<Log, Queues>, endpoint: &str) {
        let trace_id = kong.tracing().trace_id();
        let request_id = kong.request().get_id().to_owned();
        let records: Vec<Vec<u8>> = kong
            .log()
            .request_lines()
            .iter()
            .filter(|l| l.level >= kong_pdk::pdk::Level::Notice)
            .map(|l| otlp::encode_log(l, &request_id, trace_id))
            .collect();
        self.enqueue(kong, Signal::Logs, endpoint, records);
    }
}
