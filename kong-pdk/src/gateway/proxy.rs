//! One request's way through the gateway: the [runloop](crate::runloop)'s steps over a hyper
//! request, the upstream call with retries and timeouts, and the filtered body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::{self, ProxyBody};
use super::h1client::RequestHead;
use super::h1guard::Rejected;
use super::request_body::{self, Buffered, IncomingSlot, Pace, Paced, Spooled};
use super::response_body::Upstream;
use super::upstream::{HeadWait, Pool, SendError, Target, Tls, UpstreamBody};
use super::{Connection, Proxy};
use crate::runloop::{self, ResponseBody, UpstreamFailure};
use crate::transaction::{ClientRequest, RequestBody, Transaction};

/// One request on a client connection, through the [runloop](crate::runloop): the runloop
/// decides what happens when; this function moves the bytes.
pub(super) async fn handle(proxy: &Proxy, req: Request<Incoming>, conn: &Connection) -> Response<ProxyBody> {
    let _in_flight = conn.open.request();
    let snap = proxy.snapshot();
    let set = &snap.plugins;
    let (mut parts, incoming) = req.into_parts();
    // A WebSocket upgrade is proxied as a request whose 101 answer turns both connections
    // into one tunnel (Kong's http/https services).
    let client_upgrade = if is_websocket(&parts.headers) {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let host = runloop::request_host(&parts.headers, parts.uri.authority().map(|a| a.as_str()));
    let slot = IncomingSlot::new(incoming, &proxy.body_limits);
    let request = ClientRequest {
        method: parts.method.clone(),
        scheme: if conn.tls { "https" } else { "http" },
        host,
        port: conn.port,
        raw_path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        version: parts.version,
        headers: parts.headers,
        body: RequestBody::Pending(Box::new(slot.clone())),
    };
    // Boxed at once: the transaction is large and would otherwise be copied into the body.
    let mut tx = Box::new(Transaction::new(request, conn.next_request(), set.plugins().node_arc()));
    tx.set_data(snap.data.clone());

    let refusal = h2_refusal(&tx.request).or_else(|| too_large(&tx.request.headers, proxy.body_limits.max_size));
    let proxying = match refusal {
        Some((status, message)) => {
            runloop::refused(&mut tx, status, message);
            runloop::Proxying::default()
        }
        None => runloop::before_proxy(set, &snap.router, &mut tx, conn.sni.as_deref()).await,
    };
    if let Some(failure) = slot.failure() {
        // A plugin's read of the body failed: nginx ends the request with the failure's
        // answer, whatever the plugin did next.
        let (status, message) = failure.answer();
        runloop::refused(&mut tx, status, message);
    }
    let access_done = Instant::now();
    let mut upstream_body = None;
    let mut upstream_ms = 0;
    if tx.is_websocket() && tx.exit().is_none() {
        // A WebSocket service: the upstream's handshake, then the session of frames.
        let started = ws_connect(proxy, &snap, &mut tx, conn, &proxying, client_upgrade).await;
        upstream_ms = access_done.elapsed().as_millis() as u64;
        if let Some((client, upstream)) = started {
            runloop::header_filter(set, &mut tx, &proxy.headers, upstream_ms).await;
            let mut response = Response::new(body::full(Bytes::new()));
            *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            *response.headers_mut() = tx.response.headers.clone();
            let closing = proxy.closing.clone();
            let snap = snap.clone();
            // A session may last for hours: the upstream's 101 headers are past (no WebSocket
            // phase reads them), and the heads' header values, which share the connections'
            // read buffers (16 KiB), are copied out so that the buffers go now.
            if let Some(upstream) = &mut tx.upstream_response {
                upstream.headers = http::HeaderMap::new();
            }
            tx.request.headers = copied(&tx.request.headers);
            tx.response.headers = copied(&tx.response.headers);
            proxy.tasks.spawn(async move {
                if let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) {
                    let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    super::websocket::session(&snap.plugins, &mut tx, client, upstream, &closing).await;
                }
                runloop::log(&snap.plugins, &mut tx).await;
            });
            return response;
        }
        upstream_body = Some(ResponseBody::Bytes(Bytes::new()));
    } else if tx.exit().is_none() {
        let outgoing = match tx.request.body {
            RequestBody::Buffered(ref b) => Some(b.clone()),
            RequestBody::Pending(_) => None,
        };
        // A route's `request_buffering` (on by default): the whole body before the upstream
        // is called, so a slow client never holds an upstream connection and retries can
        // send it again.
        let buffering = tx.route.as_ref().is_none_or(|r| r.request_buffering);
        let body = match (tx.upstream.body.clone(), outgoing) {
            (Some(replaced), _) => Ok(Outgoing::Bytes(replaced)),
            (None, Some(read)) => Ok(Outgoing::Bytes(read)),
            (None, None) => match slot.take() {
                // No body at all (most GETs): known bytes, so a failed connection can be retried.
                unread if unread.is_empty() => Ok(Outgoing::Bytes(Bytes::new())),
                unread if buffering => match request_body::read_whole(unread, &proxy.body_limits).await {
                    Ok(Buffered::Memory(b)) => {
                        tx.request.body = RequestBody::Buffered(b.clone());
                        Ok(Outgoing::Bytes(b))
                    }
                    Ok(Buffered::File(file)) => {
                        slot.spooled(file.clone());
                        Ok(Outgoing::File(file))
                    }
                    Err(failure) => Err(failure),
                },
                request_body::Unread {
                    read,
                    rest: Some(incoming),
                    ..
                } if read.is_empty() => Ok(Outgoing::Stream(incoming.boxed_unsync(), slot.clone())),
                // What a plugin's limited read left, then the rest.
                unread => Ok(Outgoing::Stream(unread.into_body(), slot.clone())),
            },
        };
        let body = match body {
            Ok(body) => body,
            Err(failure) => {
                let (status, message) = failure.answer();
                runloop::refused(&mut tx, status, message);
                return respond(proxy, snap, tx, None, 0).await;
            }
        };
        let headers = runloop::upstream_headers(&mut tx, &conn.values, &proxying, &proxy.headers);
        let mut tries = Some(Vec::new());
        let mut pick = balance(&snap, &mut tx);
        let result = send(
            proxy,
            &snap,
            &tx,
            headers,
            body,
            client_upgrade.is_some(),
            Balancing {
                tries: tries.as_mut(),
                pick: pick.as_mut(),
            },
        )
        .await;
        tx.balancer_lease = pick.and_then(|p| p.into_lease());
        if let Some(tries) = tries {
            runloop::balancer_tries(&mut tx, tries);
        }
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
                let upgrade_to = parts.headers.get(http::header::UPGRADE).cloned();
                runloop::upstream_head(&mut tx, parts.status.as_u16(), parts.headers);
                if let Some((client, upstream)) = tunnel {
                    let h = &mut tx.response.headers;
                    h.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
                    if let Some(to) = upgrade_to {
                        h.insert(http::header::UPGRADE, to);
                    }
                    proxy.tasks.spawn(async move {
                        if let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) {
                            let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                        }
                    });
                }
                if tx.response.status == 101 {
                    upstream_body = Some(ResponseBody::Bytes(Bytes::new()));
                } else if tx.is_buffered() {
                    match whole(incoming).await {
                        Ok(bytes) => {
                            runloop::response(set, &mut tx, bytes.clone()).await;
                            upstream_body = Some(ResponseBody::Bytes(bytes));
                        }
                        // nginx: no headers sent yet, so a stalled body is the gateway timeout.
                        Err(e) if e.is::<super::upstream::BodyTimeout>() => {
                            runloop::upstream_failed(&mut tx, UpstreamFailure::Timeout)
                        }
                        Err(_) => runloop::upstream_failed(&mut tx, UpstreamFailure::Invalid),
                    }
                } else if tx.route.as_ref().is_none_or(|r| r.response_buffering) {
                    // Kong's default: read ahead of the client, so a slow one never holds the
                    // upstream's connection.
                    let ahead = Upstream::buffered(incoming, &proxy.body_limits.temp_dir, &proxy.tasks);
                    upstream_body = Some(ResponseBody::Upstream(ahead));
                } else {
                    upstream_body = Some(ResponseBody::Upstream(Upstream::Direct(None, incoming)));
                }
            }
            // A streamed body the client failed to send is the client's failure.
            Err(e) => match slot.failure() {
                Some(failure) => {
                    let (status, message) = failure.answer();
                    runloop::refused(&mut tx, status, message);
                }
                None => runloop::upstream_failed(&mut tx, e),
            },
        }
    }
    respond(proxy, snap, tx, upstream_body, upstream_ms).await
}

/// All of a body: its one frame as it came, or its frames joined.
async fn whole(mut body: UpstreamBody) -> Result<Bytes, body::BoxError> {
    let mut first = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        match (&first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(one), None) => {
                let mut all = bytes::BytesMut::with_capacity(one.len() + data.len());
                all.extend_from_slice(one);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
            (Some(_), Some(all)) => all.extend_from_slice(&data),
        }
    }
    Ok(joined.map_or_else(|| first.unwrap_or_default(), bytes::BytesMut::freeze))
}

/// The response to the client: `header_filter`, then the body through `body_filter`.
async fn respond(
    proxy: &Proxy,
    snap: Arc<super::Snapshot>,
    mut tx: Box<Transaction>,
    upstream_body: Option<ResponseBody<Upstream>>,
    upstream_ms: u64,
) -> Response<ProxyBody> {
    let set = &snap.plugins;
    runloop::header_filter(set, &mut tx, &proxy.headers, upstream_ms).await;
    let source = runloop::response_body(&tx, upstream_body);
    // body_filter and log read the response headers; without them the map moves out.
    let (filter, log) = runloop::body_phases(set, &tx);
    let mut builder = Response::builder().status(tx.response.status);
    if let Some(h) = builder.headers_mut() {
        *h = if filter || log {
            tx.response.headers.clone()
        } else {
            std::mem::take(&mut tx.response.headers)
        };
    }
    let body = body::filtered(&proxy.tasks, snap, tx, source, filter, log);
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(body::full(Bytes::new())))
}

/// nginx's `client_max_body_size` (`0`: none) against the announced `Content-Length`: 413
/// before any phase runs.
fn too_large(headers: &http::HeaderMap, max_size: u64) -> Option<(u16, &'static str)> {
    if max_size == 0 {
        return None;
    }
    let announced = headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    (announced > max_size).then_some((413, "Payload too large"))
}

/// nginx's limits for HTTP/2 requests, which the HTTP/1 guard never sees
/// (`large_client_header_buffers`): a request target over 8 KiB is 414, a header field over
/// 8 KiB is 400.
fn h2_refusal(request: &ClientRequest) -> Option<(u16, &'static str)> {
    use super::h1guard::LINE_MAX;
    if request.version != http::Version::HTTP_2 {
        return None;
    }
    let target = request.raw_path.len() + request.query.as_ref().map_or(0, |q| q.len() + 1);
    if target > LINE_MAX {
        return Some((414, "URI too long"));
    }
    if request
        .headers
        .iter()
        .any(|(n, v)| n.as_str().len() + v.len() + 2 > LINE_MAX)
    {
        return Some((400, "Request header or cookie too large"));
    }
    None
}

/// Whether the client asks to upgrade to WebSocket (`Upgrade: websocket`, any case).
fn is_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"))
}

/// `headers` with every value in an allocation of its own (parsed values share the buffer
/// their head was read into).
fn copied(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut out = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut copy =
            HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes())).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        out.append(name.clone(), copy);
    }
    out
}

/// Headers of the client's handshake the gateway sets itself toward a WebSocket service.
const WS_MANAGED: [&str; 5] = [
    "origin",
    "sec-websocket-extensions",
    "sec-websocket-key",
    "sec-websocket-version",
    "via",
];

/// Headers of the upstream's 101 that are not passed to the client (Kong's list, and the
/// accept key, which the gateway computes for the client's own key).
const WS_101_DROPPED: [&str; 10] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "sec-websocket-accept",
];

/// The upstream side of a WebSocket service's handshake (Kong's `ws_proxy`): a handshake of
/// the gateway's own toward the service, with the client's headers and Kong's forwarding
/// headers. On 101 the client's 101 is prepared in `tx` and the two upgrades are returned;
/// otherwise `tx` holds the upstream's answer (its status and headers, no body) or Kong's
/// 502/504.
async fn ws_connect(
    proxy: &Proxy,
    snap: &super::Snapshot,
    tx: &mut Transaction,
    conn: &Connection,
    proxying: &runloop::Proxying,
    client: Option<hyper::upgrade::OnUpgrade>,
) -> Option<(hyper::upgrade::OnUpgrade, hyper::upgrade::OnUpgrade)> {
    use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
    let Some(client) = client else {
        // An HTTP/2 request has no connection to take over.
        tx.error_response(
            400,
            "Cannot complete WebSocket handshake: invalid/missing 'Upgrade' header",
            None,
        );
        return None;
    };
    let client_key = tx.request.headers.get("sec-websocket-key").cloned()?;
    let mut headers = runloop::upstream_headers(tx, &conn.values, proxying, &proxy.headers);
    for name in WS_MANAGED {
        headers.remove(name);
    }
    if let Some(origin) = tx.request.headers.get(http::header::ORIGIN) {
        headers.insert(http::header::ORIGIN, origin.clone());
    }
    let key = generate_key();
    headers.insert("sec-websocket-key", HeaderValue::from_str(&key).ok()?);
    headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    let mut tries = Some(Vec::new());
    let mut pick = balance(snap, tx);
    let sent = send(
        proxy,
        snap,
        tx,
        headers,
        Outgoing::Bytes(Bytes::new()),
        true,
        Balancing {
            tries: tries.as_mut(),
            pick: pick.as_mut(),
        },
    )
    .await;
    tx.balancer_lease = pick.and_then(|p| p.into_lease());
    if let Some(tries) = tries {
        runloop::balancer_tries(tx, tries);
    }
    let mut resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            runloop::upstream_failed(tx, e);
            return None;
        }
    };
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let (parts, _) = resp.into_parts();
        runloop::upstream_head(tx, parts.status.as_u16(), parts.headers);
        return None;
    }
    let accepted = resp
        .headers()
        .get("sec-websocket-accept")
        .is_some_and(|v| v.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes());
    if !accepted {
        runloop::upstream_failed(tx, UpstreamFailure::Invalid);
        return None;
    }
    let upstream = hyper::upgrade::on(&mut resp);
    if let Some(extensions) = resp.headers().get("sec-websocket-extensions") {
        // Never asked for: the upstream is closed with 1002, the client answered 501.
        let message = format!(
            "WebSocket upstream sent unsupported Sec-WebSocket-Extensions ({})",
            String::from_utf8_lossy(extensions.as_bytes())
        );
        tx.error_response(501, &message, None);
        proxy.tasks.spawn(async move {
            if let Ok(upgraded) = upstream.await {
                super::websocket::refuse(TokioIo::new(upgraded)).await;
            }
        });
        return None;
    }
    let (parts, _) = resp.into_parts();
    let mut head = parts.headers;
    for name in WS_101_DROPPED {
        head.remove(name);
    }
    runloop::upstream_head(tx, 101, head);
    let h = &mut tx.response.headers;
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
    let accept = derive_accept_key(client_key.as_bytes());
    h.insert("sec-websocket-accept", HeaderValue::from_str(&accept).ok()?);
    Some((client, upstream))
}

/// Kong's answer to a request head the guard refused (400, 414, 494 as 400): the error goes
/// through the global plugins' `header_filter` and `body_filter`, and `log` runs after it, as
/// nginx's `error_page` → `Kong.handle_error` does. Returns the response's head and body;
/// the connection closes after them.
pub(super) async fn rejected(proxy: Arc<Proxy>, conn: Arc<Connection>, r: Rejected) -> (http::response::Parts, Bytes) {
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
    let mut tx = Box::new(Transaction::new(request, conn.next_request(), set.plugins().node_arc()));
    tx.set_data(snap.data.clone());
    runloop::refused(&mut tx, r.status, r.message);
    runloop::header_filter(set, &mut tx, &proxy.headers, 0).await;
    let (filter, log) = runloop::body_phases(set, &tx);
    let body = match runloop::response_body::<()>(&tx, None) {
        ResponseBody::Bytes(b) if filter => runloop::body_chunk(set, &mut tx, b, true).await,
        ResponseBody::Bytes(b) => b,
        ResponseBody::Upstream(()) => Bytes::new(),
    };
    let mut head = Response::new(()).into_parts().0;
    head.status = http::StatusCode::from_u16(tx.response.status).unwrap_or(http::StatusCode::BAD_REQUEST);
    head.headers = if log {
        tx.response.headers.clone()
    } else {
        std::mem::take(&mut tx.response.headers)
    };
    if log {
        body::spawn_log(&proxy.tasks, snap.clone(), tx);
    }
    (head, body)
}

/// The balancer's state for a request whose service host names an upstream (`None` for a
/// plain host): its hash input read, and the cookie Kong sets when hashing on a cookie the
/// request lacks kept for the response.
pub(crate) fn balance(snap: &super::Snapshot, tx: &mut Transaction) -> Option<super::balancer::PickState> {
    let b = snap.upstreams.get(&tx.upstream.host)?;
    let (input, cookie) = super::balancer::hash_input(&b.upstream, tx);
    if cookie.is_some() {
        tx.hash_cookie = cookie;
    }
    Some(super::balancer::PickState::new(input.as_deref(), &b))
}

/// A request's balancer state and its record of tries.
struct Balancing<'a> {
    tries: Option<&'a mut Vec<runloop::BalancerTry>>,
    pick: Option<&'a mut super::balancer::PickState>,
}

/// The request body sent upstream: known bytes and a buffered file can be sent again on a
/// retry, a stream (with the client's side of it, which may fail) cannot.
enum Outgoing {
    Bytes(Bytes),
    File(Arc<Spooled>),
    Stream(ProxyBody, IncomingSlot),
}

impl Outgoing {
    /// The body for one try, the body again if it can be, and the client's body when it is
    /// streamed.
    fn body(self) -> (ProxyBody, Option<Outgoing>, Option<IncomingSlot>) {
        match self {
            Outgoing::Bytes(b) => (request_body::in_frames(b.clone()), Some(Outgoing::Bytes(b)), None),
            Outgoing::File(f) => (f.body(), Some(Outgoing::File(f)), None),
            Outgoing::Stream(s, client) => (s, None, Some(client)),
        }
    }

    /// The body once more, for another try.
    fn again(&self) -> Option<ProxyBody> {
        match self {
            Outgoing::Bytes(b) => Some(request_body::in_frames(b.clone())),
            Outgoing::File(f) => Some(f.body()),
            Outgoing::Stream(..) => None,
        }
    }
}

async fn send(
    proxy: &Proxy,
    snap: &super::Snapshot,
    tx: &Transaction,
    mut headers: http::HeaderMap,
    body: Outgoing,
    websocket: bool,
    balancing: Balancing<'_>,
) -> Result<Response<UpstreamBody>, UpstreamFailure> {
    let Balancing { mut tries, mut pick } = balancing;
    let up = &tx.upstream;
    let current = snap.upstreams.get(&up.host).filter(|_| pick.is_some());
    let balancer = current.as_ref();
    // Kong's `set_host_header`: through a balancer, each try's Host is the upstream's
    // `host_header`, else the target's host, with the port unless the scheme's default; a
    // route's `preserve_host` and a plugin's explicit Host stay.
    let host_per_try =
        balancer.is_some() && up.host_header.is_none() && !tx.route.as_ref().is_some_and(|r| r.preserve_host);
    // nginx's `proxy_ssl_name $upstream_host`: the Host sent, without its port.
    let server_name = (up.scheme == "https").then(|| {
        let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or(&up.host);
        runloop::without_port(host).to_owned()
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
    // A body is written to the upstream under its `write_timeout` (between two writes),
    // and the read timeout counts from when it is all sent.
    let pace = match &body {
        Outgoing::Bytes(b) if b.is_empty() => None,
        _ if websocket => None,
        _ => Some(Pace::new()),
    };
    let paced = |body: ProxyBody| match &pace {
        Some(pace) => Paced::wrap(body, pace),
        None => body,
    };
    let connect = Duration::from_millis(up.timeouts.connect);
    // A WebSocket service's handshake answer is awaited for the connect timeout (Kong's).
    let read = Duration::from_millis(if tx.is_websocket() {
        up.timeouts.connect
    } else {
        up.timeouts.read
    });
    let wait = HeadWait {
        read,
        paced: pace.clone().map(|p| (p, Duration::from_millis(up.timeouts.write))),
    };
    // A request that was never sent (no connection) comes back and is retried as it is. A
    // known body is also sent again when a reused connection turns out closed: on the next
    // pooled one, and at last on a new one. As in nginx, such a failure is not a try; the
    // pool's size bounds them.
    // A target that cannot go in a request line is refused before any connection is taken.
    if !websocket && !super::h1client::target_ok(&up.path, up.query.as_deref()) {
        return Err(UpstreamFailure::Invalid);
    }
    let (first, replay, client) = body.body();
    let mut body = paced(first);
    let mut attempt = 0;
    // A reused connection found closed: the request goes again to the same address.
    let mut resend = None;
    loop {
        let start_ns = tries.as_ref().map(|_| crate::tracer::now_ns());
        let (host, port, picked) = match (resend.take(), balancer, pick.as_deref_mut()) {
            (Some(same), _, _) => same,
            (None, Some(b), Some(state)) => {
                let i = b.pick(state).ok_or(UpstreamFailure::NoPeer)?;
                state.start(b, i);
                let a = b.address(i);
                (a.host.as_str(), a.port, Some((b, i)))
            }
            _ => (up.host.as_str(), up.port, None),
        };
        let try_host = match picked {
            Some((b, i)) if host_per_try => {
                // The target's name (the SRV target with use_srv_name), never a resolved address.
                let name = b.host_header.as_deref().unwrap_or(&b.address(i).name);
                let name = if name.contains(':') && !name.starts_with('[') {
                    std::borrow::Cow::Owned(format!("[{name}]"))
                } else {
                    std::borrow::Cow::Borrowed(name)
                };
                let default_port = if up.scheme == "https" { 443 } else { 80 };
                let value = if port == default_port {
                    name.into_owned()
                } else {
                    format!("{name}:{port}")
                };
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(HOST, v);
                }
                Some(value)
            }
            _ => None,
        };
        let try_tls = match (tls, &try_host) {
            (Some(t), Some(h)) => Some(Tls {
                config: t.config,
                server_name: runloop::without_port(h),
            }),
            (t, _) => t,
        };
        let target = Target {
            host,
            port,
            tls: try_tls,
        };
        let picked_ns = start_ns.map(|_| crate::tracer::now_ns());
        let started = picked.map(|_| std::time::Instant::now());
        if let Some(pace) = &pace {
            pace.restart();
        }
        let sent = if websocket {
            let uri = match &up.query {
                Some(q) => Uri::try_from(format!("{}?{q}", up.path)),
                None => Uri::try_from(up.path.as_str()),
            }
            .map_err(|_| UpstreamFailure::Invalid)?;
            let mut req = Request::new(body);
            *req.method_mut() = up.method.clone();
            *req.uri_mut() = uri;
            *req.headers_mut() = headers.clone();
            Pool::send_upgrade(target, req, connect, read)
                .await
                .map_err(|e| e.map(Request::into_body))
        } else {
            let head = RequestHead {
                method: &up.method,
                path: &up.path,
                query: up.query.as_deref(),
                headers: &headers,
            };
            proxy.pool.send(target, head, body, connect, &wait).await
        };
        // A client that failed to send its body is not the target's failure.
        let client_failed = client.as_ref().is_some_and(|c| c.failure().is_some());
        if let (Some((b, i)), Some(started)) = (picked, started)
            && !client_failed
        {
            b.record(
                i,
                started.elapsed(),
                match &sent {
                    Ok(resp) => Ok(resp.status().as_u16()),
                    Err(SendError::Stale) => Ok(0),
                    Err(SendError::ConnectTimeout(_) | SendError::Timeout) => Err(crate::health::Report::Timeout),
                    Err(_) => Err(crate::health::Report::TcpFailure),
                },
            );
        }
        if matches!(sent, Err(SendError::Stale)) {
            resend = Some((host, port, picked));
        } else if let (Some(tries), Some(start_ns)) = (tries.as_deref_mut(), start_ns) {
            tries.push(runloop::BalancerTry {
                start_ns,
                picked_ns: picked_ns.unwrap_or(start_ns),
                end_ns: crate::tracer::now_ns(),
                // A plain service's host is the transaction's: no copy.
                ip: picked.map(|_| host.to_owned()),
                port,
                failed: match &sent {
                    Ok(_) => None,
                    Err(SendError::ConnectTimeout(_) | SendError::Timeout) => Some(504),
                    Err(_) => Some(502),
                },
            });
        }
        body = match sent {
            Ok(resp) => return Ok(resp),
            Err(SendError::Connect(back) | SendError::ConnectTimeout(back)) if attempt < up.retries => {
                attempt += 1;
                back
            }
            Err(SendError::Connect(_)) => return Err(UpstreamFailure::Connect),
            // A WebSocket handshake that got no answer, or a broken one, is tried again as a
            // connection that failed is (Kong retries the whole handshake).
            Err(SendError::Timeout | SendError::Invalid) if tx.is_websocket() && attempt < up.retries => {
                attempt += 1;
                match replay.as_ref().and_then(Outgoing::again) {
                    Some(body) => paced(body),
                    None => return Err(UpstreamFailure::Timeout),
                }
            }
            Err(SendError::ConnectTimeout(_) | SendError::Timeout) => return Err(UpstreamFailure::Timeout),
            Err(SendError::Stale) => match replay.as_ref().and_then(Outgoing::again) {
                Some(body) => paced(body),
                None => return Err(UpstreamFailure::Invalid),
            },
            Err(SendError::Invalid) => return Err(UpstreamFailure::Invalid),
        };
    }
}
