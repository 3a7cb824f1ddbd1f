//! The headers Kong adds and removes: upstream (Host, X-Forwarded-*, Via, hop-by-hop) and on
//! the response (Via, Server, latencies, request id).

use http::header::{CONNECTION, HOST, HeaderName, HeaderValue, SERVER, VIA};
use http::{HeaderMap, Version};

use super::{Connection, HeaderSettings, SERVER_TOKEN, VIA_TOKEN};
use crate::transaction::Transaction;

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
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) names first: most messages carry none, or only `Connection`.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let mut named = Vec::new();
    for v in headers.get_all(CONNECTION) {
        for token in v.to_str().unwrap_or_default().split(',') {
            let token = token.trim();
            if !token.eq_ignore_ascii_case("close") && !token.eq_ignore_ascii_case("keep-alive") {
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
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

/// Whether the client asks to upgrade to WebSocket (`Upgrade: websocket`, any case).
/// A `Host` value without its port: `example.com:8443` → `example.com`, `[::1]:80` → `::1`.
pub(super) fn without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

pub(super) fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A header value from a string built for it, without copying it again.
fn owned(s: String) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).unwrap_or_else(|_| HeaderValue::from_static(""))
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

/// The text of `ip` as a header value; the connection's peer is formatted once per connection.
fn ip_value(tx: &Transaction, ip: std::net::IpAddr, peer: &HeaderValue) -> HeaderValue {
    if ip == tx.client.ip {
        peer.clone()
    } else {
        owned(ip.to_string())
    }
}

/// The headers sent upstream (Kong's `runloop/handler.lua` and nginx template).
/// The plugins' upstream headers are moved out of `tx` (no phase after access changes them).
pub(super) fn upstream(
    tx: &mut Transaction,
    conn: &Connection,
    stripped_prefix: Option<&str>,
    settings: &HeaderSettings,
) -> HeaderMap {
    let mut h = std::mem::take(&mut tx.upstream.headers);
    let tx = &*tx;
    strip_hop_by_hop(&mut h);
    let trusted = tx.node_info().is_trusted(tx.client.ip);
    let req = &tx.request;
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
            owned(format!("{}:{}", tx.upstream.host, tx.upstream.port))
        }
    };
    h.insert(HOST, host);
    let xff = match req.headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => owned(format!("{prev}, {}", tx.client.ip)),
        None => ip_value(tx, tx.client.forwarded_ip, &conn.peer_ip),
    };
    h.insert(X_FORWARDED_FOR, xff);
    let keep = |name: &HeaderName| if trusted { req.headers.get(name).cloned() } else { None };
    let proto = keep(&X_FORWARDED_PROTO).unwrap_or_else(|| HeaderValue::from_static(req.scheme));
    let fhost = keep(&X_FORWARDED_HOST).unwrap_or_else(|| value(&req.host));
    let fport = keep(&X_FORWARDED_PORT).unwrap_or_else(|| conn.port_value.clone());
    let fpath = keep(&X_FORWARDED_PATH).unwrap_or_else(|| value(&req.raw_path));
    h.insert(X_FORWARDED_PROTO, proto);
    h.insert(X_FORWARDED_HOST, fhost);
    h.insert(X_FORWARDED_PORT, fport);
    h.insert(X_FORWARDED_PATH, fpath);
    match keep(&X_FORWARDED_PREFIX).or_else(|| stripped_prefix.filter(|p| *p != "/").map(value)) {
        Some(p) => h.insert(X_FORWARDED_PREFIX, p),
        None => h.remove(X_FORWARDED_PREFIX),
    };
    h.insert(X_REAL_IP, ip_value(tx, tx.client.forwarded_ip, &conn.peer_ip));
    if settings.upstream_request_id {
        h.insert(X_KONG_REQUEST_ID, value(tx.request_id()));
    }
    let via = upstream_via(req.version);
    match req.headers.get(VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => h.insert(VIA, owned(format!("{prev}, {via}"))),
        None => h.insert(VIA, HeaderValue::from_static(via)),
    };
    h
}

/// Adds Kong's response headers (`headers` setting): `proxied` responses get Via, upstream
/// and proxy latency; others Server and the response latency.
pub(super) fn response(
    tx: &mut Transaction,
    settings: &HeaderSettings,
    proxied: bool,
    upstream_ms: u64,
    proxy_ms: u64,
) {
    let total = tx.elapsed_ms();
    let id = settings.request_id.then(|| value(tx.request_id()));
    let h = &mut tx.response.headers;
    if proxied {
        if settings.server_tokens {
            let via = match h.get(VIA).and_then(|v| v.to_str().ok()) {
                Some(prev) => owned(format!("{prev}, {VIA_TOKEN}")),
                None => HeaderValue::from_static(VIA_TOKEN),
            };
            h.insert(VIA, via);
            if !h.contains_key(SERVER) {
                h.insert(SERVER, HeaderValue::from_static(SERVER_TOKEN));
            }
        }
        if settings.latency_tokens {
            h.insert(X_KONG_UPSTREAM_LATENCY, HeaderValue::from(upstream_ms));
            h.insert(X_KONG_PROXY_LATENCY, HeaderValue::from(proxy_ms));
        }
    } else {
        if settings.server_tokens {
            h.insert(SERVER, HeaderValue::from_static(SERVER_TOKEN));
        }
        if settings.latency_tokens {
            h.insert(X_KONG_RESPONSE_LATENCY, HeaderValue::from(total));
        }
    }
    if settings.upstream_status {
        if let Some(status) = tx.upstream_response.as_ref().map(|r| r.status) {
            tx.response
                .headers
                .insert(X_KONG_UPSTREAM_STATUS, HeaderValue::from(status));
        }
    }
    if let Some(id) = id {
        tx.response.headers.insert(X_KONG_REQUEST_ID, id);
    }
}
