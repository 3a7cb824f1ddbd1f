//! One request's way through the gateway: rewrite, routing, access, the upstream call with
//! retries and timeouts, response, header_filter, the filtered body and log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::{self, IncomingSlot, ProxyBody};
use super::h1guard::Rejected;
use super::upstream::{Pool, SendError, Target, Tls, UpstreamBody};
use super::{Connection, Proxy, headers};
use crate::pdk::ErrorFormat;
use crate::pdk::request::normalize_path;
use crate::phase::Phase;
use crate::router::{RequestInfo, upstream_path};
use crate::transaction::{ClientRequest, Latencies, RequestBody, Source, Transaction, UpstreamResponse};

enum UpstreamError {
    Connect,
    /// The service's upstream has no target to send to.
    NoPeer,
    Timeout,
    Invalid,
}

pub(super) async fn handle(proxy: &Proxy, req: Request<Incoming>, conn: &Connection) -> Response<ProxyBody> {
    let port = conn.port;
    let snap = proxy.snapshot();
    let set = &snap.plugins;
    let (mut parts, incoming) = req.into_parts();
    // A WebSocket upgrade is proxied as a request whose 101 answer turns both connections
    // into one tunnel (Kong's http/https services).
    let client_upgrade = if headers::is_websocket(&parts.headers) {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let host = {
        let authority = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']') || h.ends_with(']') => h,
            _ => authority,
        };
        host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
    };
    let slot = IncomingSlot::new(incoming);
    let request = ClientRequest {
        method: parts.method.clone(),
        scheme: if conn.tls { "https" } else { "http" },
        host,
        port,
        raw_path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        version: parts.version,
        headers: parts.headers,
        body: RequestBody::Pending(Box::new(slot.clone())),
    };
    let client = conn.client();
    // Boxed at once: the transaction is large and would otherwise be copied into the body.
    let mut tx = Box::new(Transaction::new(request, client, set.plugins().node_arc()));
    tx.set_data(snap.data.clone());

    set.run_rewrite(&mut tx).await;
    let mut stripped = None;
    if tx.exit().is_none() {
        let path = normalize_path(&tx.request.raw_path);
        let found = snap.router.find(&RequestInfo {
            method: tx.request.method.as_str(),
            host: &tx.request.host,
            port,
            path: &path,
            headers: &tx.request.headers,
            sni: conn.sni.as_deref(),
        });
        match found {
            None => tx.error_response(404, "no Route matched with those values", None),
            Some(m) => {
                tx.route = Some(m.route.clone());
                tx.captures = m.captures;
                if let Some(service) = m.service {
                    let strip = m.route.strip_path;
                    tx.upstream.path = upstream_path(service.path.as_deref(), &path, m.matched_path.as_deref(), strip);
                    tx.set_service(service);
                    if strip {
                        stripped = m.matched_path;
                    }
                }
                if !https_allowed(&tx, &m.route) {
                    https_required(&mut tx, m.route.https_redirect_status_code);
                } else {
                    set.run_access(&mut tx).await;
                }
                if tx.exit().is_none() && tx.service.is_none() {
                    tx.error_response(503, "no Service found with those values", None);
                }
            }
        }
    }

    let access_done = Instant::now();
    let mut upstream_body = None;
    let mut upstream_ms = 0;
    if tx.exit().is_none() {
        let outgoing = match tx.request.body {
            RequestBody::Buffered(ref b) => Some(b.clone()),
            RequestBody::Pending(_) => None,
        };
        let body = match (tx.upstream.body.clone(), outgoing) {
            (Some(replaced), _) => Outgoing::Bytes(replaced),
            (None, Some(read)) => Outgoing::Bytes(read),
            (None, None) => match slot.take() {
                // No body at all (most GETs): known bytes, so a failed connection can be retried.
                Some(incoming) if http_body::Body::is_end_stream(&incoming) => Outgoing::Bytes(Bytes::new()),
                Some(incoming) => Outgoing::Stream(incoming.map_err(|e| Box::new(e) as body::BoxError).boxed_unsync()),
                None => Outgoing::Bytes(Bytes::new()),
            },
        };
        let headers = headers::upstream(&mut tx, conn, stripped.as_deref(), &proxy.headers);
        let result = send(proxy, &snap, &tx, headers, body, client_upgrade.is_some()).await;
        upstream_ms = access_done.elapsed().as_millis() as u64;
        match result {
            Ok(mut resp) => {
                let tunnel = match client_upgrade {
                    Some(client) if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                        Some((client, hyper::upgrade::on(&mut resp)))
                    }
                    _ => None,
                };
                let (parts, incoming) = resp.into_parts();
                let mut upstream_headers = parts.headers;
                let upgrade_to = upstream_headers.get(http::header::UPGRADE).cloned();
                headers::strip_hop_by_hop(&mut upstream_headers);
                if let Some((client, upstream)) = tunnel {
                    upstream_headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
                    if let Some(to) = upgrade_to {
                        upstream_headers.insert(http::header::UPGRADE, to);
                    }
                    tokio::spawn(async move {
                        if let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) {
                            let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                        }
                    });
                }
                let plugin_set = std::mem::replace(&mut tx.response.headers, upstream_headers.clone());
                for (name, value) in plugin_set.iter() {
                    tx.response.headers.insert(name.clone(), value.clone());
                }
                tx.response.status = parts.status.as_u16();
                tx.upstream_response = Some(UpstreamResponse {
                    status: parts.status.as_u16(),
                    headers: upstream_headers,
                    body: None,
                });
                if tx.response.status == 101 {
                    upstream_body = Some(body::Source::Bytes(Bytes::new()));
                } else if tx.is_buffered() {
                    match incoming.collect().await {
                        Ok(collected) => {
                            let bytes = collected.to_bytes();
                            if let Some(r) = tx.upstream_response.as_mut() {
                                r.body = Some(bytes.clone());
                            }
                            tx.response
                                .headers
                                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                            set.run_response(&mut tx).await;
                            upstream_body = Some(body::Source::Bytes(bytes));
                        }
                        Err(_) => upstream_error(&mut tx, UpstreamError::Invalid),
                    }
                } else {
                    upstream_body = Some(body::Source::Upstream(incoming));
                }
            }
            Err(e) => upstream_error(&mut tx, e),
        }
    }
    set.run_header_filter(&mut tx).await;
    let proxied = tx.upstream_response.is_some() && tx.exit().is_none();
    let proxy_ms = tx.elapsed_ms().saturating_sub(upstream_ms);
    headers::response(&mut tx, &proxy.headers, proxied, upstream_ms, proxy_ms);
    tx.set_latencies(Latencies {
        proxy: proxied.then_some(upstream_ms),
        kong: Some(proxy_ms),
        receive: None,
    });

    let source = match (tx.exit(), upstream_body) {
        (Some(exit), _) => body::Source::Bytes(exit.body.clone()),
        (None, Some(source)) => source,
        (None, None) => body::Source::Bytes(Bytes::new()),
    };
    // body_filter and log read the response headers; without them the map moves out.
    let filter = snap.plugins.handles(&tx, Phase::BodyFilter);
    let log = snap.plugins.handles(&tx, Phase::Log);
    let mut builder = Response::builder().status(tx.response.status);
    if let Some(h) = builder.headers_mut() {
        *h = if filter || log {
            tx.response.headers.clone()
        } else {
            std::mem::take(&mut tx.response.headers)
        };
    }
    // HEAD responses carry no body, but body_filter (with an empty last chunk) and log still run.
    let source = if tx.request.method == http::Method::HEAD {
        body::Source::Bytes(Bytes::new())
    } else {
        source
    };
    let body = body::filtered(snap, tx, source, filter, log);
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(body::full(Bytes::new())))
}

/// Kong's answer to a request head the guard refused (400, 414, 494 as 400): the error goes
/// through the global plugins' `header_filter` and `body_filter`, and `log` runs after it, as
/// nginx's `error_page` → `Kong.handle_error` does. Returns the whole response, which closes
/// the connection.
pub(super) async fn rejected(proxy: Arc<Proxy>, conn: Arc<Connection>, r: Rejected) -> Bytes {
    let snap = proxy.snapshot();
    let set = &snap.plugins;
    let mut request_headers = http::HeaderMap::new();
    if let Some(accept) = r.accept.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
        request_headers.insert(http::header::ACCEPT, accept);
    }
    let (path, query) = match r.target.as_deref() {
        Some(t) => match t.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (t.to_owned(), None),
        },
        None => ("/".to_owned(), None),
    };
    let request = ClientRequest {
        method: r
            .method
            .as_deref()
            .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(http::Method::GET),
        scheme: if conn.tls { "https" } else { "http" },
        host: String::new(),
        port: conn.port,
        raw_path: path,
        query,
        version: http::Version::HTTP_11,
        headers: request_headers,
        body: RequestBody::Buffered(Bytes::new()),
    };
    let mut tx = Box::new(Transaction::new(request, conn.client(), set.plugins().node_arc()));
    tx.set_data(snap.data.clone());
    tx.error_response_as(r.status, r.message, None, ErrorFormat::Plain);
    tx.set_source(Source::Error);
    set.run_header_filter(&mut tx).await;
    let elapsed = tx.elapsed_ms();
    headers::response(&mut tx, &proxy.headers, false, 0, elapsed);
    let body = tx.exit().map(|e| e.body.clone()).unwrap_or_default();
    let body = if set.handles(&tx, Phase::BodyFilter) {
        set.run_body_filter(&mut tx, body, true).await
    } else {
        body
    };
    let reason = http::StatusCode::from_u16(tx.response.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", tx.response.status).into_bytes();
    for (name, value) in tx.response.headers.iter() {
        if matches!(
            *name,
            http::header::CONTENT_LENGTH | http::header::CONNECTION | http::header::TRANSFER_ENCODING
        ) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    if set.handles(&tx, Phase::Log) {
        let snap = snap.clone();
        tokio::spawn(async move { snap.plugins.run_log(&mut tx).await });
    }
    out.into()
}

/// Whether the request may use `route`: a route whose protocols include `https` but not `http`
/// takes only TLS requests, or requests a trusted proxy marked `X-Forwarded-Proto: https`.
fn https_allowed(tx: &Transaction, route: &crate::entities::Route) -> bool {
    let has = |p: &str| route.protocols.iter().any(|x| x == p);
    if tx.request.scheme == "https" || !has("https") || has("http") {
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
            .insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
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

fn upstream_error(tx: &mut Transaction, e: UpstreamError) {
    // nginx's proxy errors default to text/plain; the balancer's is `kong.response.error`
    // (JSON unless the client asks otherwise).
    let (status, message, default) = match e {
        UpstreamError::Timeout => (504, "The upstream server is timing out", ErrorFormat::Plain),
        UpstreamError::NoPeer => (503, "failure to get a peer from the ring-balancer", ErrorFormat::Json),
        UpstreamError::Connect | UpstreamError::Invalid => (
            502,
            "An invalid response was received from the upstream server",
            ErrorFormat::Plain,
        ),
    };
    tx.response.headers.clear();
    tx.error_response_as(status, message, None, default);
    tx.set_source(Source::Error);
}

/// The request body sent upstream: known bytes can be sent again on a retry, a stream cannot.
enum Outgoing {
    Bytes(Bytes),
    Stream(ProxyBody),
}

async fn send(
    proxy: &Proxy,
    snap: &super::Snapshot,
    tx: &Transaction,
    mut headers: http::HeaderMap,
    body: Outgoing,
    websocket: bool,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let up = &tx.upstream;
    let balancer = snap.upstreams.get(&up.host);
    if let Some(host) = balancer.and_then(|b| b.host_header.as_deref()) {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(HOST, v);
        }
    }
    // nginx's `proxy_ssl_name $upstream_host`: the Host sent, without its port.
    let server_name = (up.scheme == "https").then(|| {
        let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or(&up.host);
        headers::without_port(host).to_owned()
    });
    let tls = server_name.as_deref().map(|server_name| Tls {
        config: snap.upstream_tls.get(tx.service.as_ref().map(|s| s.id)),
        server_name,
    });
    if websocket {
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let uri = match &up.query {
        Some(q) => Uri::try_from(format!("{}?{q}", up.path)),
        None => Uri::try_from(up.path.as_str()),
    }
    .map_err(|_| UpstreamError::Invalid)?;
    let build = |headers: http::HeaderMap, body: ProxyBody| {
        let mut req = Request::new(body);
        *req.method_mut() = up.method.clone();
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers;
        req
    };
    let (connect, read) = (
        Duration::from_millis(up.timeouts.connect),
        Duration::from_millis(up.timeouts.read),
    );
    // A request that was never sent (no connection) comes back and is retried as it is. A
    // known body may also be sent once more when a reused connection turns out closed; that
    // needs a copy of the headers.
    let (mut req, replay, mut spare) = match body {
        Outgoing::Bytes(b) => (build(headers.clone(), body::full(b.clone())), Some(b), Some(headers)),
        Outgoing::Stream(s) => (build(headers, s), None, None),
    };
    let mut attempt = 0;
    loop {
        let (host, port) = match balancer {
            Some(b) => b.pick(attempt).ok_or(UpstreamError::NoPeer)?,
            None => (up.host.as_str(), up.port),
        };
        let target = Target { host, port, tls };
        let sent = if websocket {
            Pool::send_upgrade(target, req, connect, read).await
        } else {
            proxy.pool.send(target, req, connect, read).await
        };
        req = match sent {
            Ok(resp) => return Ok(resp),
            Err(SendError::Connect(back) | SendError::ConnectTimeout(back)) if attempt < up.retries => {
                attempt += 1;
                back
            }
            Err(SendError::Connect(_)) => return Err(UpstreamError::Connect),
            Err(SendError::ConnectTimeout(_) | SendError::Timeout) => return Err(UpstreamError::Timeout),
            Err(SendError::Stale) => match (spare.take(), &replay) {
                (Some(headers), Some(b)) => build(headers, body::full(b.clone())),
                _ => return Err(UpstreamError::Invalid),
            },
            Err(SendError::Invalid) => return Err(UpstreamError::Invalid),
        };
    }
}
