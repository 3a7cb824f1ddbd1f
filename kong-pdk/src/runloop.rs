//! The life of a request, written once (Kong's `init.lua` with `runloop/handler.lua`).
//!
//! This module does no I/O. The gateway's HTTP/1 and HTTP/2 connections, the head guard's
//! refused requests and the [test harness](crate::testing) all drive a request through these
//! steps, in this order, and differ only in where bytes come from and go to:
//!
//! | step | Kong | what happens |
//! |---|---|---|
//! | [`certificate`] | `ssl_certificate_by_lua` | global plugins, per TLS handshake |
//! | [`before_proxy`] | `rewrite` + `access` | rewrite (globals), routing applied once, the https-only check, access (collecting), 503 without a service |
//! | [`upstream_headers`] | `balancer` input | Host, `X-Forwarded-*`, `Via`, hop-by-hop removal |
//! | [`upstream_head`] / [`upstream_failed`] | `header_filter` input | the upstream's status and headers merged under the plugins', or Kong's 502/503/504 |
//! | [`response`] | `response` | buffered proxying: the whole body to `response` handlers |
//! | [`header_filter`] | `header_filter` | plugins, then Kong's response headers and latencies |
//! | [`body_chunk`] | `body_filter` | each chunk; [`response_body`] says which chunks there are |
//! | [`log`] | `log` | once, after the client has the response |
//! | [`preread`] | `preread` | a stream connection: stream routing, then preread (collecting) |
//! | [`ws_frame`] | `ws_client_frame`, `ws_upstream_frame` | each message of a WebSocket session, with what to do with it |
//!
//! A WebSocket service's handshake takes the same way: [`before_proxy`] runs `ws_handshake`
//! in place of `access` and checks the handshake, and [`log`] runs `ws_close` in place of `log`.
//!
//! Which plugins run, in which order and with which consequences for a failure is the
//! [`executor`](crate::executor)'s job; this module decides when each phase runs and what the
//! gateway itself does between them.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderName, HeaderValue, SERVER, VIA};
use http::{HeaderMap, Method, Version};

use crate::entities::{PathHandling, Route};
use crate::executor::PluginSet;
use crate::model::RouterFlavor;
use crate::pdk::ErrorFormat;
use crate::pdk::request::normalize_path;
use crate::phase::Phase;
use crate::router::{RequestInfo, Router, upstream_path, upstream_path_v1};
use crate::tracer::{AttributeValue, Instrumentations, SpanKind, SpanOptions, Status, Trace};
use crate::transaction::{CloseMsg, Frame, FrameState, Latencies, Side, Source, Transaction, UpstreamResponse};

/// The Kong version whose behaviour this crate implements (`Via`, `Server`).
macro_rules! kong_version {
    () => {
        "3.10.0"
    };
}
#[cfg(feature = "gateway")]
pub(crate) use kong_version;

/// `Server` as Kong sends it.
pub(crate) const SERVER_TOKEN: &str = concat!("kong/", kong_version!());
/// Kong's own `Via` entry on responses.
pub(crate) const VIA_TOKEN: &str = concat!("1.1 kong/", kong_version!());

/// Which headers Kong adds (Kong's `headers` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSettings {
    /// `Server` and `Via` (`server_tokens`).
    pub server_tokens: bool,
    /// `X-Kong-Upstream-Latency`, `X-Kong-Proxy-Latency`, `X-Kong-Response-Latency`.
    pub latency_tokens: bool,
    /// `X-Kong-Request-Id` on responses.
    pub request_id: bool,
    /// `X-Kong-Upstream-Status`.
    pub upstream_status: bool,
    /// `X-Kong-Request-Id` sent upstream (`headers_upstream`).
    pub upstream_request_id: bool,
}

impl Default for HeaderSettings {
    fn default() -> Self {
        HeaderSettings {
            server_tokens: true,
            latency_tokens: true,
            request_id: true,
            upstream_status: false,
            upstream_request_id: true,
        }
    }
}

impl HeaderSettings {
    /// Parses Kong's `headers` value (`server_tokens, latency_tokens, X-Kong-Request-Id`, `off`).
    pub fn parse(value: &str) -> Result<HeaderSettings, String> {
        let mut s = HeaderSettings {
            server_tokens: false,
            latency_tokens: false,
            request_id: false,
            upstream_status: false,
            upstream_request_id: true,
        };
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.to_ascii_lowercase().as_str() {
                "off" => {}
                "server_tokens" | "server" | "via" => s.server_tokens = true,
                "latency_tokens" | "x-kong-upstream-latency" | "x-kong-proxy-latency" | "x-kong-response-latency" => {
                    s.latency_tokens = true
                }
                "x-kong-request-id" => s.request_id = true,
                "x-kong-upstream-status" => s.upstream_status = true,
                "x-kong-admin-latency" => {}
                other => return Err(format!("invalid header value: {other}")),
            }
        }
        Ok(s)
    }
}

/// The host a request is for, as nginx's `$host` (`kong.request.get_host()`,
/// `X-Forwarded-Host`): the request line's authority when the target is in absolute form, else
/// the `Host` header; without its port, brackets or case: `Example.test:8000` → `example.test`,
/// `[::1]:8000` → `::1`.
pub(crate) fn request_host(headers: &HeaderMap, authority: Option<&str>) -> String {
    let authority = authority
        .or_else(|| headers.get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or_default();
    without_port(authority).to_ascii_lowercase()
}

/// The host the router matches: the `Host` header's, as Kong's router reads it, even when
/// the request line names another (an absolute-form target); else nginx's `$host`.
fn routing_host(req: &crate::transaction::ClientRequest) -> std::borrow::Cow<'_, str> {
    match req.headers.get(HOST).and_then(|h| h.to_str().ok()).map(without_port) {
        Some(header) if !header.eq_ignore_ascii_case(&req.host) => header.to_ascii_lowercase().into(),
        _ => req.host.as_str().into(),
    }
}

/// A `Host` value without its port: `example.com:8443` → `example.com`, `[::1]:80` → `::1`.
pub(crate) fn without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address, no port.
        Some((name, _)) if name.contains(':') => host,
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Runs `certificate` of the global plugins for a TLS handshake.
#[cfg(feature = "gateway")]
pub(crate) async fn certificate(set: &PluginSet, tx: &mut Transaction) {
    set.run_certificate(tx).await;
}

/// What [`before_proxy`] leaves for the upstream request.
#[derive(Debug, Default)]
pub(crate) struct Proxying {
    /// The path prefix `strip_path` removed (`X-Forwarded-Prefix`).
    pub(crate) stripped: Option<String>,
}

/// The port of a Host header (`example.com:8000`, `[::1]:8000`), when it has one.
fn host_header_port(host: &str) -> Option<u16> {
    let after = match host.rfind(']') {
        Some(i) => &host[i + 1..],
        None => host,
    };
    after.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// Rewrite, routing, the https-only check and access. Afterwards the request goes upstream
/// when `tx.exit()` is `None`; otherwise the response is the exit a plugin or Kong produced.
pub(crate) async fn before_proxy(
    set: &PluginSet,
    router: &Router,
    tx: &mut Transaction,
    sni: Option<&str>,
) -> Proxying {
    let mut proxying = Proxying::default();
    begin_trace(tx);
    set.run_rewrite(tx).await;
    if tx.exit().is_some() {
        return proxying;
    }
    let path = normalize_path(&tx.request.raw_path);
    // Kong's router: the Host header's port when it has one, else the listener's.
    let port = tx
        .request
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_header_port)
        .unwrap_or(tx.request.port);
    let router_span = tx.trace.as_mut().and_then(|t| {
        let span = t
            .records(Instrumentations::ROUTER)
            .then(|| t.start_span("kong.router", SpanOptions::default()));
        // Created ahead so that access plugins can send its id upstream (Kong's
        // `precreate_balancer_span`).
        t.precreate_balancer();
        span.flatten()
    });
    let host = routing_host(&tx.request);
    let found = router.find(&RequestInfo {
        method: tx.request.method.as_str(),
        host: &host,
        port,
        path: &path,
        headers: &tx.request.headers,
        sni,
    });
    if let (Some(trace), Some(span)) = (tx.trace.as_mut(), router_span) {
        if found.is_none()
            && let Some(s) = trace.span_mut(span)
        {
            s.set_status(Status::Error);
        }
        trace.finish(span, None);
    }
    let Some(m) = found else {
        tx.error_response(404, "no Route matched with those values", None);
        return proxying;
    };
    tx.route = Some(m.route.clone());
    tx.captures = m.captures;
    if let Some(service) = m.service {
        let strip = m.route.strip_path;
        let join = match (set.plugins().node().router_flavor, m.route.path_handling) {
            (RouterFlavor::Traditional, PathHandling::V1) => upstream_path_v1,
            _ => upstream_path,
        };
        tx.upstream.path = join(service.path.as_deref(), &path, m.matched_path.as_deref(), strip);
        tx.set_service(service);
        if strip {
            proxying.stripped = m.matched_path;
        }
    }
    // A WebSocket service's session: `ws_handshake` collects instead of `access` (Kong's
    // `@websocket` location, entered before any access handler).
    tx.websocket = tx.service.as_ref().is_some_and(|s| is_ws(&s.protocol));
    if !https_allowed(tx, &m.route) {
        https_required(tx, m.route.https_redirect_status_code);
    } else if tx.websocket {
        set.run_ws_handshake(tx).await;
        if tx.exit().is_none()
            && let Err(problem) = client_handshake(&tx.request)
        {
            let message = format!("Cannot complete WebSocket handshake: {problem}");
            tx.exit_with(400, Bytes::from(message), Source::Exit);
        }
    } else {
        set.run_access(tx).await;
    }
    if tx.exit().is_none() && tx.service.is_none() {
        tx.error_response(503, "no Service found with those values", None);
    }
    proxying
}

/// Starts the request's trace when the node traces (Kong's `instrumentation.request`): the
/// root span `kong`, from when the request arrived.
fn begin_trace(tx: &mut Transaction) {
    if tx.captured_logs.is_none() && tx.node_info().tracing.request_logs() {
        tx.captured_logs = Some(Vec::new());
    }
    let settings = tx.node_info().tracing.get();
    if !settings.instrumentations.enabled() || tx.trace.is_some() {
        return;
    }
    let req = &tx.request;
    let started = crate::tracer::now_ns().saturating_sub(tx.started.elapsed().as_nanos() as u64);
    let flavor = match req.version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2.0",
        Version::HTTP_3 => "3.0",
        _ => "1.1",
    };
    let target = match &req.query {
        Some(q) => format!("{}://{}{}?{q}", req.scheme, req.host, req.raw_path),
        None => format!("{}://{}{}", req.scheme, req.host, req.raw_path),
    };
    let attributes = vec![
        (
            "http.method".into(),
            AttributeValue::from(req.method.as_str().to_owned()),
        ),
        ("http.url".into(), AttributeValue::from(target)),
        ("http.host".into(), AttributeValue::from(req.host.clone())),
        ("http.scheme".into(), AttributeValue::from(req.scheme)),
        ("http.flavor".into(), AttributeValue::from(flavor)),
        (
            "http.client_ip".into(),
            AttributeValue::from(tx.client.forwarded_ip.to_string()),
        ),
        ("net.peer.ip".into(), AttributeValue::from(tx.client.ip.to_string())),
        (
            "kong.request.id".into(),
            AttributeValue::from(tx.request_id().to_owned()),
        ),
    ];
    let mut trace = Box::new(Trace::new(&settings));
    let options = SpanOptions {
        kind: SpanKind::Server,
        start_ns: Some(started),
        attributes,
    };
    trace.start_span("kong", options);
    tx.trace = Some(trace);
}

/// The root span's `http.status_code` and `http.route`, before `header_filter` (Kong's
/// `runloop_before_header_filter`).
fn trace_status(tx: &mut Transaction) {
    // Nothing to do (and nothing copied) for the untraced requests of the hot path.
    let Some(trace) = tx.trace.as_mut() else { return };
    let status = tx.response.status;
    let route = tx
        .route
        .as_ref()
        .and_then(|r| r.paths.as_ref().and_then(|p| p.first().cloned()))
        .unwrap_or_default();
    if let Some(root) = trace.root().and_then(|r| trace.span_mut(r))
        && root.attribute("kong.propagation_only").is_none()
    {
        root.set_attribute("http.status_code", i64::from(status));
        root.set_attribute("http.route", route);
    }
}

#[cfg(feature = "gateway")]
pub(crate) use crate::transaction::BalancerTry;

/// Records the balancer's tries as `kong.balancer` spans: the failed ones as they ended, the
/// last (successful) one as the pre-created span, which ends with the response.
/// Also keeps them for `kong.log.serialize()`'s `tries`.
#[cfg(feature = "gateway")]
pub(crate) fn balancer_tries(tx: &mut Transaction, tries: Vec<BalancerTry>) {
    trace_tries(tx, &tries);
    tx.tries = tries;
}

#[cfg(feature = "gateway")]
fn trace_tries(tx: &mut Transaction, tries: &[BalancerTry]) {
    if tx.trace.is_none() {
        return;
    }
    let host = tx.upstream.host.clone();
    let Some(trace) = tx.trace.as_mut() else { return };
    if !trace.records(Instrumentations::BALANCER) || tries.is_empty() {
        return;
    }
    let Some(root) = trace.root() else { return };
    let count = tries.len();
    for (i, t) in tries.iter().enumerate() {
        let last = i + 1 == count && t.failed.is_none();
        let attributes = vec![
            ("try_count".into(), AttributeValue::Double((i + 1) as f64)),
            (
                "net.peer.ip".into(),
                AttributeValue::from(t.ip.clone().unwrap_or_else(|| host.clone())),
            ),
            ("net.peer.port".into(), AttributeValue::Double(f64::from(t.port))),
        ];
        let span = if last { trace.link_balancer(t.start_ns) } else { None };
        let span = span.or_else(|| {
            trace.set_active_span(root);
            let options = SpanOptions {
                kind: SpanKind::Client,
                start_ns: Some(t.start_ns),
                attributes: Vec::new(),
            };
            trace.start_span("kong.balancer", options)
        });
        let Some(span) = span else { return };
        if let Some(s) = trace.span_mut(span) {
            s.attributes = attributes;
            if let Some(code) = t.failed {
                s.set_attribute("http.status_code", i64::from(code));
                s.set_status(Status::Error);
            }
            s.set_attribute("net.peer.name", host.clone());
        }
        if !last {
            trace.finish(span, Some(t.end_ns));
        }
        trace.set_active_span(root);
    }
}

/// Ends the request's spans once the response is sent (Kong's `runloop_log_before`): the
/// balancer's last try and the root span end with the body.
fn end_trace(tx: &mut Transaction) {
    let Some(trace) = tx.trace.as_mut() else { return };
    let now = crate::tracer::now_ns();
    let open: Vec<_> = (0..trace.spans().len())
        .filter(|&i| trace.spans()[i].end_ns.is_none() && trace.spans()[i].name == "kong.balancer")
        .collect();
    for i in open {
        if let Some(r) = trace.span_ref(i) {
            trace.finish(r, Some(now));
        }
    }
    if let Some(root) = trace.root() {
        trace.finish(root, Some(now));
    }
}

/// Routing and `preread` of a stream connection (Kong's `Kong.preread`): the route and its
/// service, then the collecting `preread`. Afterwards the connection goes upstream when
/// `tx.exit()` is `None`; otherwise the exit says how the session ends (a body under 400 is
/// sent first). No route is a 500, a route without a service a 503 (Kong's).
pub(crate) async fn preread(
    set: &PluginSet,
    router: &Router,
    tx: &mut Transaction,
    conn: &crate::router::StreamInfo<'_>,
) {
    let Some((route, service)) = router.find_stream(conn) else {
        crate::pdk::log::record(tx, crate::pdk::Level::Err, "no Route found with those values".into());
        tx.exit_with(500, Bytes::new(), Source::Error);
        return;
    };
    tx.route = Some(route);
    if let Some(service) = service {
        tx.set_service(service);
    }
    set.run_preread(tx).await;
    if tx.exit().is_none() && tx.service.is_none() {
        crate::pdk::log::record(tx, crate::pdk::Level::Warn, "no Service found with those values".into());
        tx.exit_with(503, Bytes::new(), Source::Error);
    }
}

/// Whether `protocol` is a WebSocket service's (`ws`, `wss`).
pub(crate) fn is_ws(protocol: &str) -> bool {
    matches!(protocol, "ws" | "wss")
}

/// What is wrong with a WebSocket handshake request (RFC 6455 4.1, as Kong checks it), in
/// the words of Kong's `Cannot complete WebSocket handshake: ...` answer.
fn client_handshake(req: &crate::transaction::ClientRequest) -> Result<(), &'static str> {
    let one = |name: &str| {
        let mut all = req.headers.get_all(name).iter();
        match (all.next(), all.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        }
    };
    let contains = |v: Option<&str>, token: &str| v.is_some_and(|v| v.to_ascii_lowercase().contains(token));
    if req.method != Method::GET {
        return Err("invalid request method");
    }
    if !contains(one("connection"), "upgrade") {
        return Err("invalid/missing 'Connection' header");
    }
    if !req
        .headers
        .get_all(http::header::UPGRADE)
        .iter()
        .any(|v| contains(v.to_str().ok(), "websocket"))
    {
        return Err("invalid/missing 'Upgrade' header");
    }
    if one("sec-websocket-key").is_none() {
        return Err("invalid/missing 'Sec-WebSocket-Key' header");
    }
    if one("sec-websocket-version") != Some("13") {
        return Err("invalid/missing 'Sec-WebSocket-Version' header");
    }
    Ok(())
}

/// Whether the request may use `route`: a route whose protocols include `https` but not `http`
/// (or `wss` but not `ws`) takes only TLS requests, or requests a trusted proxy marked
/// `X-Forwarded-Proto: https`.
fn https_allowed(tx: &Transaction, route: &Route) -> bool {
    let has = |p: &str| route.protocols.iter().any(|x| x == p);
    let tls_only = (has("https") && !has("http")) || (has("wss") && !has("ws"));
    if tx.request.scheme == "https" || !tls_only {
        return true;
    }
    tx.node_info().is_trusted(tx.client.ip)
        && tx
            .request
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Kong's answer to plain HTTP on an HTTPS-only route: 426 "Please use HTTPS protocol", or a
/// redirect to the same URL over https.
fn https_required(tx: &mut Transaction, status: u16) {
    if status == 426 {
        tx.error_response(426, "Please use HTTPS protocol", None);
        tx.response
            .headers
            .insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        tx.response
            .headers
            .insert(http::header::UPGRADE, HeaderValue::from_static("TLS/1.2, HTTP/1.1"));
        return;
    }
    let query = tx.request.query.as_deref().map(|q| format!("?{q}")).unwrap_or_default();
    let location = format!("https://{}{}{query}", tx.request.host, tx.request.raw_path);
    tx.exit_with(status, Bytes::new(), Source::Exit);
    if let Ok(v) = HeaderValue::from_str(&location) {
        tx.response.headers.insert(http::header::LOCATION, v);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_KONG_REQUEST_ID: HeaderName = HeaderName::from_static("x-kong-request-id");
const X_KONG_UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("x-kong-upstream-latency");
const X_KONG_PROXY_LATENCY: HeaderName = HeaderName::from_static("x-kong-proxy-latency");
const X_KONG_RESPONSE_LATENCY: HeaderName = HeaderName::from_static("x-kong-response-latency");
const X_KONG_UPSTREAM_STATUS: HeaderName = HeaderName::from_static("x-kong-upstream-status");

const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("proxy"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) names first: most messages carry none, or only `Connection`.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let mut named = Vec::new();
    for v in headers.get_all(CONNECTION) {
        for token in v.to_str().unwrap_or_default().split(',') {
            let token = token.trim();
            if !token.eq_ignore_ascii_case("close")
                && !token.eq_ignore_ascii_case("keep-alive")
                && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
            {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn value(s: &str) -> HeaderValue {
    crate::text::shared_value(s.as_bytes()).unwrap_or_else(|| HeaderValue::from_static(""))
}

/// A header value written as `format!` would, shared by its clones.
macro_rules! formatted {
    ($($arg:tt)*) => {
        crate::text::shared_fmt(format_args!($($arg)*)).unwrap_or_else(|| HeaderValue::from_static(""))
    };
}

/// Kong's `Via` entry on the upstream request, by the client's HTTP version.
fn upstream_via(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => concat!("1.0 kong/", kong_version!()),
        Version::HTTP_2 => concat!("2 kong/", kong_version!()),
        Version::HTTP_3 => concat!("3 kong/", kong_version!()),
        _ => concat!("1.1 kong/", kong_version!()),
    }
}

/// Header values of the client connection, formatted once per connection rather than per
/// request.
#[derive(Debug, Clone)]
pub(crate) struct ConnValues {
    /// The peer's address (`X-Forwarded-For`, `X-Real-IP`).
    pub(crate) peer_ip: HeaderValue,
    /// The listener port (`X-Forwarded-Port`).
    pub(crate) port: HeaderValue,
}

impl ConnValues {
    pub(crate) fn new(peer: std::net::IpAddr, port: u16) -> ConnValues {
        ConnValues {
            peer_ip: formatted!("{peer}"),
            port: HeaderValue::from(port),
        }
    }
}

/// The headers sent upstream (Kong's `runloop/handler.lua` and nginx template). The plugins'
/// upstream headers move out of `tx`: no phase after access changes them.
pub(crate) fn upstream_headers(
    tx: &mut Transaction,
    conn: &ConnValues,
    proxying: &Proxying,
    settings: &HeaderSettings,
) -> HeaderMap {
    let mut h = std::mem::take(&mut tx.upstream.headers);
    let tx = &*tx;
    strip_hop_by_hop(&mut h);
    // `TE: trailers` is the one TE the upstream gets (Kong's `upstream_te`).
    let te = tx.request.headers.get(http::header::TE).and_then(|v| v.to_str().ok());
    if te.is_some_and(|v| v.trim().eq_ignore_ascii_case("trailers")) {
        h.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    let trusted = tx.node_info().is_trusted(tx.client.ip);
    let req = &tx.request;
    let ip = |ip: std::net::IpAddr| {
        if ip == tx.client.ip {
            conn.peer_ip.clone()
        } else {
            formatted!("{ip}")
        }
    };
    let preserve = tx.route.as_ref().is_some_and(|r| r.preserve_host);
    let host = if let Some(explicit) = &tx.upstream.host_header {
        value(explicit)
    } else if preserve {
        req.headers.get(HOST).cloned().unwrap_or_else(|| value(&req.host))
    } else {
        let default_port = if tx.upstream.scheme == "https" { 443 } else { 80 };
        if tx.upstream.port == default_port {
            value(&tx.upstream.host)
        } else {
            formatted!("{}:{}", tx.upstream.host, tx.upstream.port)
        }
    };
    h.insert(HOST, host);
    let xff = match req.headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => formatted!("{prev}, {}", tx.client.ip),
        None => ip(tx.client.forwarded_ip),
    };
    h.insert(X_FORWARDED_FOR, xff);
    let keep = |name: &HeaderName| if trusted { req.headers.get(name).cloned() } else { None };
    let proto = keep(&X_FORWARDED_PROTO).unwrap_or_else(|| HeaderValue::from_static(req.scheme));
    let fhost = keep(&X_FORWARDED_HOST).unwrap_or_else(|| value(&req.host));
    let fport = keep(&X_FORWARDED_PORT).unwrap_or_else(|| conn.port.clone());
    let fpath = keep(&X_FORWARDED_PATH).unwrap_or_else(|| value(&req.raw_path));
    h.insert(X_FORWARDED_PROTO, proto);
    h.insert(X_FORWARDED_HOST, fhost);
    h.insert(X_FORWARDED_PORT, fport);
    h.insert(X_FORWARDED_PATH, fpath);
    let stripped = proxying.stripped.as_deref().filter(|p| *p != "/");
    match keep(&X_FORWARDED_PREFIX).or_else(|| stripped.map(value)) {
        Some(p) => h.insert(X_FORWARDED_PREFIX, p),
        None => h.remove(X_FORWARDED_PREFIX),
    };
    h.insert(X_REAL_IP, ip(tx.client.forwarded_ip));
    if settings.upstream_request_id {
        h.insert(X_KONG_REQUEST_ID, value(tx.request_id()));
    }
    let via = upstream_via(req.version);
    match req.headers.get(VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => h.insert(VIA, formatted!("{prev}, {via}")),
        None => h.insert(VIA, HeaderValue::from_static(via)),
    };
    h
}

/// The upstream's response head: hop-by-hop headers go, headers plugins set in access stay
/// over the upstream's, and `kong.service.response` sees the upstream's own.
pub(crate) fn upstream_head(tx: &mut Transaction, status: u16, mut headers: HeaderMap) {
    strip_hop_by_hop(&mut headers);
    let plugin_set = std::mem::replace(&mut tx.response.headers, headers.clone());
    crate::pdk::overlay(&mut tx.response.headers, plugin_set);
    tx.response.status = status;
    tx.upstream_response = Some(UpstreamResponse {
        status,
        headers,
        body: None,
    });
}

/// Runs `response` (buffered proxying) over the upstream's whole body.
pub(crate) async fn response(set: &PluginSet, tx: &mut Transaction, body: Bytes) {
    tx.response
        .headers
        .insert(CONTENT_LENGTH, crate::text::decimal(body.len() as u64));
    if let Some(r) = tx.upstream_response.as_mut() {
        r.body = Some(body);
    }
    set.run_response(tx).await;
}

/// Why the upstream gave no usable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection could be made (after the retries): 502.
    Connect,
    /// The service's upstream has no target to send to: 503.
    NoPeer,
    /// Connecting or reading took longer than the service's timeouts: 504.
    Timeout,
    /// The upstream's answer was not valid HTTP: 502.
    Invalid,
}

/// Kong's answer when the upstream failed: nginx's errors are `text/plain` by default, the
/// balancer's is `kong.response.error` (JSON unless the client asks otherwise).
pub(crate) fn upstream_failed(tx: &mut Transaction, failure: UpstreamFailure) {
    let (status, message, default) = match failure {
        UpstreamFailure::Timeout => (504, "The upstream server is timing out", ErrorFormat::Plain),
        UpstreamFailure::NoPeer => (503, "failure to get a peer from the ring-balancer", ErrorFormat::Json),
        UpstreamFailure::Connect | UpstreamFailure::Invalid => (
            502,
            "An invalid response was received from the upstream server",
            ErrorFormat::Plain,
        ),
    };
    tx.response.headers.clear();
    tx.error_response_as(status, message, None, default);
    tx.set_source(Source::Error);
    // Without a peer nothing was sent; otherwise the request was proxied and failed there.
    tx.upstream_failed = !matches!(failure, UpstreamFailure::NoPeer);
}

/// A request the connection refused before it was one (400, 414, 494): Kong's error in plain
/// text, as nginx's `error_page` hands it to `Kong.handle_error`.
#[cfg(feature = "gateway")]
pub(crate) fn refused(tx: &mut Transaction, status: u16, message: &str) {
    tx.error_response_as(status, message, None, ErrorFormat::Plain);
    tx.set_source(Source::Error);
}

/// Runs `header_filter`, then adds Kong's response headers and records the latencies.
/// `upstream_ms` is the time spent waiting for the upstream (0 when nothing was proxied).
pub(crate) async fn header_filter(set: &PluginSet, tx: &mut Transaction, settings: &HeaderSettings, upstream_ms: u64) {
    trace_status(tx);
    // Kong's `header_filter.before`: the cookie a `hash_on = cookie` upstream made up.
    if let Some(cookie) = tx.hash_cookie.take()
        && let Ok(v) = HeaderValue::from_str(&cookie)
    {
        // It replaces a cookie of the same name the upstream set.
        let prefix = &cookie[..cookie.find('=').map_or(0, |i| i + 1)];
        let others: Vec<HeaderValue> = tx
            .response
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter(|c| !c.as_bytes().starts_with(prefix.as_bytes()))
            .cloned()
            .collect();
        tx.response.headers.remove(http::header::SET_COOKIE);
        for c in others {
            tx.response.headers.append(http::header::SET_COOKIE, c);
        }
        tx.response.headers.append(http::header::SET_COOKIE, v);
    }
    set.run_header_filter(tx).await;
    let proxied =
        (tx.upstream_response.is_some() && tx.exit().is_none()) || tx.upstream_failed || tx.answered_for_upstream;
    let total = tx.elapsed_ms();
    let proxy_ms = total.saturating_sub(upstream_ms);
    tx.set_latencies(Latencies {
        proxy: proxied.then_some(upstream_ms),
        kong: Some(proxy_ms),
        receive: None,
    });
    let id = settings.request_id.then(|| value(tx.request_id()));
    let upstream_status = tx.upstream_response.as_ref().map(|r| r.status);
    let h = &mut tx.response.headers;
    if proxied {
        if settings.server_tokens {
            let via = match h.get(VIA).and_then(|v| v.to_str().ok()) {
                Some(prev) => formatted!("{prev}, {VIA_TOKEN}"),
                None => HeaderValue::from_static(VIA_TOKEN),
            };
            h.insert(VIA, via);
            if !h.contains_key(SERVER) {
                h.insert(SERVER, HeaderValue::from_static(SERVER_TOKEN));
            }
        }
        if settings.latency_tokens {
            h.insert(X_KONG_UPSTREAM_LATENCY, crate::text::decimal(upstream_ms));
            h.insert(X_KONG_PROXY_LATENCY, crate::text::decimal(proxy_ms));
        }
    } else {
        if settings.server_tokens {
            h.insert(SERVER, HeaderValue::from_static(SERVER_TOKEN));
        }
        if settings.latency_tokens {
            h.insert(X_KONG_RESPONSE_LATENCY, crate::text::decimal(total));
        }
    }
    if settings.upstream_status
        && let Some(status) = upstream_status
    {
        h.insert(X_KONG_UPSTREAM_STATUS, crate::text::decimal(status.into()));
    }
    if let Some(id) = id {
        h.insert(X_KONG_REQUEST_ID, id);
    }
}

/// Where the response body comes from, once the head is settled.
pub(crate) enum ResponseBody<U> {
    /// Known bytes: an exit, an error, a buffered upstream body, or nothing (HEAD).
    Bytes(Bytes),
    /// The upstream's body, streamed.
    Upstream(U),
}

/// The body the client gets: the exit's when a plugin or Kong produced one, else the
/// upstream's; nothing for HEAD, though `body_filter` (with one empty, last chunk) and `log`
/// still run.
pub(crate) fn response_body<U>(tx: &Transaction, upstream: Option<ResponseBody<U>>) -> ResponseBody<U> {
    if tx.request.method == Method::HEAD {
        return ResponseBody::Bytes(Bytes::new());
    }
    match (tx.exit(), upstream) {
        (Some(exit), _) => ResponseBody::Bytes(exit.body.clone()),
        (None, Some(body)) => body,
        (None, None) => ResponseBody::Bytes(Bytes::new()),
    }
}

/// Which of the body phases have handlers for this request: (`body_filter`, `log`, or
/// `ws_close` for a WebSocket session). Without them chunks pass untouched and the
/// transaction needs no keeping.
pub(crate) fn body_phases(set: &PluginSet, tx: &Transaction) -> (bool, bool) {
    (set.handles(tx, Phase::BodyFilter), set.handles(tx, last_phase(tx)))
}

/// The phase that runs once the exchange is over: `log`, or `ws_close` for a session with a
/// WebSocket service.
fn last_phase(tx: &Transaction) -> Phase {
    if tx.websocket { Phase::WsClose } else { Phase::Log }
}

/// Runs `body_filter` over one chunk and returns what to send. Afterwards the body ends when
/// `eof` or a plugin ended it (`tx.body_ended()`), and is cut short when `tx.is_aborted()`.
pub(crate) async fn body_chunk(set: &PluginSet, tx: &mut Transaction, chunk: Bytes, eof: bool) -> Bytes {
    set.run_body_filter(tx, chunk, eof).await
}

/// Runs `log` (`ws_close` for a WebSocket session): once per request, after the response,
/// or after the session's last frame.
pub(crate) async fn log(set: &PluginSet, tx: &mut Transaction) {
    tx.log_elapsed_ms = Some(tx.elapsed_ms());
    end_trace(tx);
    match last_phase(tx) {
        Phase::WsClose => set.run_ws_close(tx).await,
        _ => set.run_log(tx).await,
    }
}

/// What becomes of a WebSocket frame after the frame handlers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameVerdict {
    /// Send it (as the handlers left it) to the other side.
    Forward(Frame),
    /// Send nothing; the session goes on.
    Drop,
    /// End the session: `sender` goes to the side the frame came from, `peer` to the other.
    Close { sender: CloseMsg, peer: CloseMsg },
}

/// The payload limit of messages from `side`, in bytes: what a plugin set in `ws_handshake`,
/// else Kong's default (1 MiB from clients, 16 MiB from upstreams).
pub(crate) fn ws_limit(tx: &Transaction, side: Side) -> u64 {
    use crate::pdk::{DEFAULT_CLIENT_MAX_PAYLOAD, DEFAULT_UPSTREAM_MAX_PAYLOAD};
    match side {
        Side::Client => tx.ws_limits.client.unwrap_or(DEFAULT_CLIENT_MAX_PAYLOAD),
        Side::Upstream => tx.ws_limits.upstream.unwrap_or(DEFAULT_UPSTREAM_MAX_PAYLOAD),
    }
}

/// The end of a session whose `side` sent a message over its limit: it gets 1009
/// `Payload Too Large`, the other side a 1001 without a reason.
pub(crate) fn payload_too_large() -> FrameVerdict {
    FrameVerdict::Close {
        sender: CloseMsg::new(1009, "Payload Too Large"),
        peer: CloseMsg {
            status: Some(1001),
            reason: Bytes::new(),
        },
    }
}

/// Runs `ws_client_frame` or `ws_upstream_frame` (by `from`) over one message or control
/// frame and says what to do with it. Without frame handlers it is forwarded untouched.
pub(crate) async fn ws_frame(set: &PluginSet, tx: &mut Transaction, from: Side, frame: Frame) -> FrameVerdict {
    let phase = match from {
        Side::Client => Phase::WsClientFrame,
        Side::Upstream => Phase::WsUpstreamFrame,
    };
    if !set.handles(tx, phase) {
        return FrameVerdict::Forward(frame);
    }
    tx.frame = Some(FrameState {
        frame,
        dropped: false,
        close: None,
        failed: false,
    });
    set.run_ws_frame(tx, from == Side::Client).await;
    let Some(state) = tx.frame.take() else {
        return FrameVerdict::Drop;
    };
    if state.failed {
        let error = CloseMsg::new(1011, "Internal Server Error");
        return FrameVerdict::Close {
            sender: error.clone(),
            peer: error,
        };
    }
    match state.close {
        Some((sender, peer)) => FrameVerdict::Close { sender, peer },
        None if state.dropped => FrameVerdict::Drop,
        None => FrameVerdict::Forward(state.frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_port_brackets_and_case() {
        let mut h = HeaderMap::new();
        for (host, want) in [
            ("Example.TEST:8000", "example.test"),
            ("example.test", "example.test"),
            ("[::1]:8000", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("127.0.0.1:80", "127.0.0.1"),
        ] {
            h.insert(HOST, HeaderValue::from_str(host).unwrap());
            assert_eq!(request_host(&h, None), want, "{host}");
        }
        assert_eq!(
            request_host(&HeaderMap::new(), Some("[2001:db8::1]:443")),
            "2001:db8::1"
        );
    }

    #[test]
    fn the_headers_setting_parses_kongs_names() {
        let s = HeaderSettings::parse("server_tokens, X-Kong-Upstream-Status").unwrap();
        assert!(s.server_tokens && s.upstream_status && !s.latency_tokens && !s.request_id);
        assert_eq!(
            HeaderSettings::parse("x-bogus").unwrap_err(),
            "invalid header value: x-bogus"
        );
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
