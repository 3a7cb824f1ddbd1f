//! The headers Kong adds and removes: upstream (Host, X-Forwarded-*, Via, hop-by-hop) and on
//! the response (Via, Server, latencies, request id).

use http::header::{CONNECTION, HOST, HeaderName, HeaderValue, SERVER, VIA};
use http::{HeaderMap, Version};

use super::{HeaderSettings, KONG_VERSION, SERVER_TOKEN, VIA_TOKEN};
use crate::transaction::Transaction;

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether the client asks to upgrade to WebSocket (`Upgrade: websocket`, any case).
pub(super) fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn version_token(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// The headers sent upstream (Kong's `runloop/handler.lua` and nginx template).
/// The plugins' upstream headers are moved out of `tx` (no phase after access changes them).
pub(super) fn upstream(tx: &mut Transaction, stripped_prefix: Option<&str>, settings: &HeaderSettings) -> HeaderMap {
    let mut h = std::mem::take(&mut tx.upstream.headers);
    let tx = &*tx;
    strip_hop_by_hop(&mut h);
    let trusted = tx.node_info().is_trusted(tx.client.ip);
    let req = &tx.request;
    let preserve = tx.route.as_ref().is_some_and(|r| r.preserve_host);
    let host = if let Some(explicit) = &tx.upstream.host_header {
        explicit.clone()
    } else if preserve {
        req.headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(&req.host)
            .to_owned()
    } else {
        let default_port = if tx.upstream.scheme == "https" { 443 } else { 80 };
        if tx.upstream.port == default_port {
            tx.upstream.host.clone()
        } else {
            format!("{}:{}", tx.upstream.host, tx.upstream.port)
        }
    };
    h.insert(HOST, value(&host));
    let client_ip = tx.client.ip.to_string();
    let xff = match req.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client_ip}"),
        None => tx.client.forwarded_ip.to_string(),
    };
    h.insert("x-forwarded-for", value(&xff));
    let keep = |name: &str| if trusted { req.headers.get(name).cloned() } else { None };
    let proto = keep("x-forwarded-proto").unwrap_or_else(|| HeaderValue::from_static(req.scheme));
    let fhost = keep("x-forwarded-host").unwrap_or_else(|| value(&req.host));
    let fport = keep("x-forwarded-port").unwrap_or_else(|| HeaderValue::from(req.port));
    let fpath = keep("x-forwarded-path").unwrap_or_else(|| value(&req.raw_path));
    h.insert("x-forwarded-proto", proto);
    h.insert("x-forwarded-host", fhost);
    h.insert("x-forwarded-port", fport);
    h.insert("x-forwarded-path", fpath);
    match keep("x-forwarded-prefix").or_else(|| stripped_prefix.filter(|p| *p != "/").map(value)) {
        Some(p) => h.insert("x-forwarded-prefix", p),
        None => h.remove("x-forwarded-prefix"),
    };
    h.insert("x-real-ip", value(&tx.client.forwarded_ip.to_string()));
    if settings.upstream_request_id {
        h.insert(HeaderName::from_static("x-kong-request-id"), value(tx.request_id()));
    }
    let via = format!("{} kong/{KONG_VERSION}", version_token(req.version));
    match req.headers.get(VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => h.insert(VIA, value(&format!("{prev}, {via}"))),
        None => h.insert(VIA, value(&via)),
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
                Some(prev) => value(&format!("{prev}, {VIA_TOKEN}")),
                None => HeaderValue::from_static(VIA_TOKEN),
            };
            h.insert(VIA, via);
            if !h.contains_key(SERVER) {
                h.insert(SERVER, HeaderValue::from_static(SERVER_TOKEN));
            }
        }
        if settings.latency_tokens {
            h.insert("x-kong-upstream-latency", HeaderValue::from(upstream_ms));
            h.insert("x-kong-proxy-latency", HeaderValue::from(proxy_ms));
        }
    } else {
        if settings.server_tokens {
            h.insert(SERVER, HeaderValue::from_static(SERVER_TOKEN));
        }
        if settings.latency_tokens {
            h.insert("x-kong-response-latency", HeaderValue::from(total));
        }
    }
    if settings.upstream_status {
        if let Some(status) = tx.upstream_response.as_ref().map(|r| r.status) {
            tx.response
                .headers
                .insert("x-kong-upstream-status", HeaderValue::from(status));
        }
    }
    if let Some(id) = id {
        tx.response.headers.insert("x-kong-request-id", id);
    }
}
