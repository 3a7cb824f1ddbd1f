//! `kong.log`: log lines prefixed with the plugin's name (through `tracing`, target `kong`),
//! and in `log` the request summary `serialize()` that logging plugins send.

use std::fmt::Display;
use std::marker::PhantomData;

use serde_json::{Map, Value, json};

pub use crate::model::{ErrorLog, Level, LogLine};
use crate::phase::{self, RequestPhase};
use crate::transaction::Transaction;

/// Emits one line at `level` for a request: to `tracing`, to the node's [`ErrorLog`] if it
/// keeps one, and to the unit-test harness's capture.
pub(crate) fn record(tx: &mut Transaction, level: Level, line: String) {
    emit(level, &line);
    if let Some(log) = &tx.node.error_log {
        log.push(level, &line);
    }
    if let Some(lines) = &mut tx.captured_logs
        && lines.len() < MAX_REQUEST_LINES
    {
        let span_id = tx
            .trace
            .as_ref()
            .and_then(|t| t.active_span().and_then(|s| t.span(s)))
            .map(|s| s.span_id);
        lines.push(LogLine {
            level,
            message: line,
            time_ns: crate::tracer::now_ns(),
            span_id,
        });
    }
}

/// The most lines one request keeps for [`Log::request_lines`] (Kong's `MAX_REQUEST_LOGS`);
/// later ones are only logged.
pub const MAX_REQUEST_LINES: usize = 1000;

/// Emits one line at `level`.
pub(crate) fn emit(level: Level, line: &str) {
    match level {
        Level::Debug => tracing::debug!(target: "kong", "{line}"),
        Level::Info => tracing::info!(target: "kong", "{line}"),
        // Kong's levels that tracing lacks travel in the target, for the filter and the
        // printed level (`kong start`'s log).
        Level::Notice => tracing::info!(target: "kong::notice", "{line}"),
        Level::Warn => tracing::warn!(target: "kong", "{line}"),
        Level::Err => tracing::error!(target: "kong", "{line}"),
        Level::Crit => tracing::error!(target: "kong::crit", "{line}"),
        Level::Alert => tracing::error!(target: "kong::alert", "{line}"),
        Level::Emerg => tracing::error!(target: "kong::emerg", "{line}"),
    }
}

/// `kong.log`.
pub struct Log<'a, P> {
    tx: Option<&'a mut Transaction>,
    plugin: &'static str,
    _phase: PhantomData<fn() -> P>,
}

macro_rules! level_fn {
    ($($(#[$doc:meta])* $name:ident => $level:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(&mut self, message: impl Display) {
            self.write(Level::$level, message);
        }
    )*};
}

impl<'a, P: RequestPhase> Log<'a, P> {
    /// The lines logged during this request so far, when the node keeps them (an exporter
    /// asked for them with [`NodeTracing::set_request_logs`](crate::tracer::NodeTracing::set_request_logs),
    /// or the test harness runs the request); at most [`MAX_REQUEST_LINES`].
    pub fn request_lines(&self) -> &[LogLine] {
        self.tx
            .as_deref()
            .and_then(|t| t.captured_logs.as_deref())
            .unwrap_or(&[])
    }

    pub(crate) fn new(tx: Option<&'a mut Transaction>, plugin: &'static str) -> Self {
        Log {
            tx,
            plugin,
            _phase: PhantomData,
        }
    }

    fn write(&mut self, level: Level, message: impl Display) {
        let line = format!("[{}] {message}", self.plugin);
        match self.tx.as_deref_mut() {
            Some(tx) => record(tx, level, line),
            None => emit(level, &line),
        }
    }

    level_fn! {
        /// `kong.log.debug(...)`.
        debug => Debug;
        /// `kong.log.info(...)`.
        info => Info;
        /// `kong.log.notice(...)`, also `kong.log(...)`.
        notice => Notice;
        /// `kong.log.warn(...)`.
        warn => Warn;
        /// `kong.log.err(...)`.
        err => Err;
        /// `kong.log.crit(...)`.
        crit => Crit;
        /// `kong.log.alert(...)`.
        alert => Alert;
        /// `kong.log.emerg(...)`.
        emerg => Emerg;
    }

    /// `set_serialize_value(key, value)`: sets a (dotted) key in what `serialize()` returns.
    pub fn set_serialize_value(&mut self, key: &str, value: Value) {
        if let Some(tx) = self.tx.as_deref_mut() {
            tx.serialize_values.retain(|(k, _)| k != key);
            tx.serialize_values.push((key.to_owned(), value));
        }
    }

    /// The numbers of `serialize()` (`response.status`, `request.size`, `response.size`,
    /// `latencies`) without building its JSON: what a metrics plugin reads on every request.
    pub fn measures(&self) -> Measures
    where
        P: phase::Serialize,
    {
        self.tx.as_deref().map(measures).unwrap_or_default()
    }

    /// `serialize()` as JSON bytes (`cjson.encode(kong.log.serialize())`), written straight
    /// from the request without building the [`Value`] first: what log plugins send.
    pub fn serialize_json(&self) -> Vec<u8>
    where
        P: phase::Serialize,
    {
        self.tx
            .as_deref()
            .map(serialize_json)
            .unwrap_or_else(|| b"null".to_vec())
    }

    /// `serialize()`: Kong's request summary (`request`, `response`, `route`, `service`,
    /// `consumer`, `latencies`, `client_ip`, `started_at`, `source`, ...).
    pub fn serialize(&self) -> Value
    where
        P: phase::Serialize,
    {
        match self.tx.as_deref() {
            Some(tx) => serialize(tx),
            None => Value::Null,
        }
    }
}

fn headers_json(headers: &http::HeaderMap, redact: bool) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| {
                if redact && (name == http::header::AUTHORIZATION || name == http::header::PROXY_AUTHORIZATION) {
                    Value::from("REDACTED")
                } else {
                    Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned())
                }
            })
            .collect();
        let v = if values.len() == 1 {
            values.into_iter().next().unwrap_or_default()
        } else {
            Value::Array(values)
        };
        out.insert(name.as_str().to_owned(), v);
    }
    Value::Object(out)
}

fn set_dotted(root: &mut Value, key: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(obj) = cur else { return };
        if i == parts.len() - 1 {
            obj.insert((*part).to_owned(), value);
            return;
        }
        cur = obj
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// The numbers of a request's log entry ([`Log::measures`]), as `serialize()` has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measures {
    /// `response.status`.
    pub status: u16,
    /// `request.size`: the request body's length (`Content-Length`), 0 without one.
    pub request_size: u64,
    /// `response.size`: the response body's length (`Content-Length`), 0 without one.
    pub response_size: u64,
    /// `latencies.kong`: milliseconds spent in the gateway and its plugins.
    pub kong_latency: u64,
    /// `latencies.proxy`: milliseconds waiting for the upstream; `None` (`-1`) when not
    /// proxied.
    pub proxy_latency: Option<u64>,
    /// `latencies.request`: milliseconds from the request's first byte until now.
    pub request_latency: u64,
    /// `latencies.receive`: milliseconds receiving the upstream's response.
    pub receive_latency: u64,
}

fn content_length(headers: &http::HeaderMap) -> u64 {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0)
}

pub(crate) fn measures(tx: &Transaction) -> Measures {
    let elapsed = tx.log_elapsed_ms.unwrap_or_else(|| tx.elapsed_ms());
    Measures {
        status: tx.response.status,
        request_size: content_length(&tx.request.headers),
        response_size: content_length(&tx.response.headers),
        kong_latency: tx.latencies.kong.unwrap_or(elapsed),
        proxy_latency: tx.latencies.proxy,
        request_latency: elapsed,
        receive_latency: tx.latencies.receive.unwrap_or(0),
    }
}

/// The request's `uri` and `url` as the serializer has them.
fn uri_and_url(tx: &Transaction) -> (String, String) {
    let req = &tx.request;
    let uri = match &req.query {
        Some(q) => format!("{}?{q}", req.raw_path),
        None => req.raw_path.clone(),
    };
    let default_port = if req.scheme == "https" { 443 } else { 80 };
    let url = if req.port == default_port {
        format!("{}://{}{}", req.scheme, req.host, uri)
    } else {
        format!("{}://{}:{}{}", req.scheme, req.host, req.port, uri)
    };
    (uri, url)
}

/// `request.tls`: nginx's `$ssl_client_verify` says a chain asked for but not verified
/// against any CA failed.
fn tls_json(tx: &Transaction) -> Option<Value> {
    let session = tx.client.session.as_ref()?;
    let verify = match (&tx.client_verify, &session.client_chain) {
        (Some(v), _) => v.as_str(),
        (None, Some(_)) => "FAILED:unable to get local issuer certificate",
        (None, None) => "NONE",
    };
    Some(json!({ "version": session.version, "cipher": session.cipher, "client_verify": verify }))
}

fn source_text(tx: &Transaction) -> &'static str {
    match tx.source() {
        crate::transaction::Source::Service => "upstream",
        _ => "kong",
    }
}

/// Kong's `balancer_data.tries`: per try its peer, when the balancer started it
/// (`balancer_start`, ms and ns since the epoch) and how long picking took
/// (`balancer_latency`, ms and ns); a try that failed also has `state` and `code`.
fn tries_json(tx: &Transaction) -> Value {
    Value::Array(
        tx.tries
            .iter()
            .map(|t| {
                let latency_ns = t.picked_ns.saturating_sub(t.start_ns);
                let mut v = json!({
                    "ip": t.ip.as_deref().unwrap_or(&tx.upstream.host),
                    "port": t.port,
                    "balancer_start": t.start_ns / 1_000_000,
                    "balancer_start_ns": t.start_ns,
                    "balancer_latency": latency_ns / 1_000_000,
                    "balancer_latency_ns": latency_ns,
                });
                if let Some(code) = t.failed {
                    v["state"] = Value::from("failed");
                    v["code"] = Value::from(code);
                }
                v
            })
            .collect(),
    )
}

const WORKSPACE_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The stream shape of `serialize()` (Kong's `kong/pdk/log.lua`, stream subsystem): the
/// session's bytes and status, the upstream's bytes, no request or response.
fn serialize_stream(tx: &Transaction) -> Value {
    let c = &tx.session;
    let session_ms = tx.log_elapsed_ms.unwrap_or_else(|| tx.elapsed_ms());
    let mut session = json!({
        "received": c.received,
        "sent": c.sent,
        "status": c.status,
        "server_port": tx.request.port,
    });
    if let Some(tls) = tls_json(tx) {
        session["tls"] = tls;
    }
    let mut out = json!({
        "session": session,
        "upstream": { "received": c.upstream_received, "sent": c.upstream_sent },
        "latencies": {
            "kong": tx.latencies.kong.unwrap_or(0),
            "session": session_ms,
        },
        "tries": tries_json(tx),
        "route": tx.route.as_deref(),
        "service": tx.service.as_deref(),
        "consumer": tx.consumer.as_deref(),
        "authenticated_entity": tx.credential.as_deref().map(|c| json!({ "id": c.id })),
        "client_ip": tx.client.forwarded_ip.to_string(),
        "started_at": tx.started_at_ms,
        "workspace": WORKSPACE_ID,
        "workspace_name": "default",
    });
    if let Value::Object(obj) = &mut out {
        obj.retain(|_, v| !v.is_null());
    }
    for (k, v) in &tx.serialize_values {
        set_dotted(&mut out, k, v.clone());
    }
    out
}

/// The serializer's JSON, written directly (the same bytes as `to_vec(&serialize(tx))`).
fn serialize_json(tx: &Transaction) -> Vec<u8> {
    if !tx.serialize_values.is_empty() || tx.subsystem == crate::transaction::Subsystem::Stream {
        // Values a plugin set go anywhere in the tree: through the Value.
        return serde_json::to_vec(&serialize(tx)).unwrap_or_default();
    }
    let (uri, url) = uri_and_url(tx);
    let req = &tx.request;
    let m = measures(tx);
    let entry = direct::Entry {
        request: direct::Request {
            id: &tx.id,
            uri: &uri,
            url: &url,
            querystring: direct::Query(req.query.as_deref().unwrap_or("")),
            method: req.method.as_str(),
            headers: direct::Headers(&req.headers, true),
            size: m.request_size,
            tls: tls_json(tx),
        },
        upstream_uri: tx.upstream.path_with_query(),
        upstream_status: tx.upstream_response.as_ref().map(|r| r.status.to_string()),
        response: direct::Response {
            status: m.status,
            headers: direct::Headers(&tx.response.headers, false),
            size: m.response_size,
        },
        latencies: direct::Latencies {
            kong: m.kong_latency,
            proxy: m.proxy_latency.map_or(-1, |p| i64::try_from(p).unwrap_or(i64::MAX)),
            request: m.request_latency,
            receive: m.receive_latency,
        },
        tries: [(); 0],
        route: tx.route.as_deref(),
        service: tx.service.as_deref(),
        consumer: tx.consumer.as_deref(),
        authenticated_entity: tx.credential.as_deref().map(|c| direct::Id { id: c.id }),
        client_ip: tx.client.forwarded_ip,
        started_at: tx.started_at_ms,
        source: source_text(tx),
        workspace: WORKSPACE_ID,
        workspace_name: "default",
    };
    let mut out = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut out, &entry) {
        Ok(()) => out,
        Err(_) => serde_json::to_vec(&serialize(tx)).unwrap_or_default(),
    }
}

/// The serializer's tree as borrowed structs, fields in the order of [`serialize`].
mod direct {
    use serde::ser::{Serialize, SerializeMap, Serializer};

    #[derive(serde::Serialize)]
    pub(super) struct Entry<'a> {
        pub request: Request<'a>,
        pub upstream_uri: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub upstream_status: Option<String>,
        pub response: Response<'a>,
        pub latencies: Latencies,
        pub tries: [(); 0],
        #[serde(skip_serializing_if = "Option::is_none")]
        pub route: Option<&'a crate::entities::Route>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub service: Option<&'a crate::entities::Service>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub consumer: Option<&'a crate::entities::Consumer>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub authenticated_entity: Option<Id>,
        pub client_ip: std::net::IpAddr,
        pub started_at: u64,
        pub source: &'static str,
        pub workspace: &'static str,
        pub workspace_name: &'static str,
    }

    #[derive(serde::Serialize)]
    pub(super) struct Request<'a> {
        pub id: &'a str,
        pub uri: &'a str,
        pub url: &'a str,
        pub querystring: Query<'a>,
        pub method: &'a str,
        pub headers: Headers<'a>,
        pub size: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub tls: Option<serde_json::Value>,
    }

    #[derive(serde::Serialize)]
    pub(super) struct Response<'a> {
        pub status: u16,
        pub headers: Headers<'a>,
        pub size: u64,
    }

    #[derive(serde::Serialize)]
    pub(super) struct Latencies {
        pub kong: u64,
        pub proxy: i64,
        pub request: u64,
        pub receive: u64,
    }

    #[derive(serde::Serialize)]
    pub(super) struct Id {
        pub id: uuid::Uuid,
    }

    /// The query arguments as `querystring` has them (100 at most).
    pub(super) struct Query<'a>(pub &'a str);

    impl Serialize for Query<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0.is_empty() {
                return s.serialize_map(Some(0))?.end();
            }
            crate::pdk::request::args_json(self.0, 100).serialize(s)
        }
    }

    fn text(value: &http::HeaderValue, hidden: bool) -> std::borrow::Cow<'_, str> {
        if hidden {
            std::borrow::Cow::Borrowed("REDACTED")
        } else {
            String::from_utf8_lossy(value.as_bytes())
        }
    }

    /// Headers as the serializer has them: one value as a string, several as an array;
    /// `Authorization` and `Proxy-Authorization` redacted in the request's.
    pub(super) struct Headers<'a>(pub &'a http::HeaderMap, pub bool);

    impl Serialize for Headers<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let (headers, redact) = (self.0, self.1);
            let mut map = s.serialize_map(Some(headers.keys_len()))?;
            for name in headers.keys() {
                let hidden =
                    redact && (name == http::header::AUTHORIZATION || name == http::header::PROXY_AUTHORIZATION);
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (Some(one), None) => map.serialize_entry(name.as_str(), &text(one, hidden))?,
                    _ => {
                        let all: Vec<_> = headers.get_all(name).iter().map(|v| text(v, hidden)).collect();
                        map.serialize_entry(name.as_str(), &all)?
                    }
                }
            }
            map.end()
        }
    }
}

pub(crate) fn serialize(tx: &Transaction) -> Value {
    if tx.subsystem == crate::transaction::Subsystem::Stream {
        return serialize_stream(tx);
    }
    let req = &tx.request;
    let querystring = crate::pdk::request::args_json(req.query.as_deref().unwrap_or(""), 100);
    let (uri, url) = uri_and_url(tx);
    let m = measures(tx);
    let mut out = json!({
        "request": {
            "id": tx.id,
            "uri": uri,
            "url": url,
            "querystring": querystring,
            "method": req.method.as_str(),
            "headers": headers_json(&req.headers, true),
            "size": m.request_size,
        },
        "upstream_uri": tx.upstream.path_with_query(),
        "upstream_status": tx.upstream_response.as_ref().map(|r| r.status.to_string()),
        "response": {
            "status": m.status,
            "headers": headers_json(&tx.response.headers, false),
            "size": m.response_size,
        },
        "latencies": {
            "kong": m.kong_latency,
            "proxy": m.proxy_latency.map_or(Value::from(-1), Value::from),
            "request": m.request_latency,
            "receive": m.receive_latency,
        },
        "tries": tries_json(tx),
        "route": tx.route.as_deref(),
        "service": tx.service.as_deref(),
        "consumer": tx.consumer.as_deref(),
        "authenticated_entity": tx.credential.as_deref().map(|c| json!({ "id": c.id })),
        "client_ip": tx.client.forwarded_ip.to_string(),
        "started_at": tx.started_at_ms,
        "source": source_text(tx),
        "workspace": WORKSPACE_ID,
        "workspace_name": "default",
    });
    if let Some(tls) = tls_json(tx) {
        set_dotted(&mut out, "request.tls", tls);
    }
    if let Value::Object(obj) = &mut out {
        obj.retain(|_, v| !v.is_null());
    }
    for (k, v) in &tx.serialize_values {
        set_dotted(&mut out, k, v.clone());
    }
    out
}
