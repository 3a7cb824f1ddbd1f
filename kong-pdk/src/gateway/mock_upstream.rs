//! Kong's test mock upstream (`spec/fixtures/mock_upstream.lua`): an HTTP server that echoes
//! requests as JSON, so newcomers and tests have an upstream without internet.
//!
//! Every JSON response has `X-Powered-By: mock_upstream`, `Server: mock-upstream/1.0.0` and
//! `Content-Type: application/json`, and its body ends with a newline. Paths: `/` (with
//! `valid_routes`), `/anything*` and `/request*` (any method), `/get` (GET only), `/post` (POST
//! only), `/status/{code}`, `/delay/{seconds}`, `/response-headers?k=v`, `/cache/{n}`,
//! `/stream/{n}` (n JSON lines, chunked), `/xml`; anything else is a 404 with the echo.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use super::body::{ProxyBody, full};
use crate::pdk::request::parse_args;

/// The mock upstream's default address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:15555";

/// The TCP echo's default address (Kong's `mock_upstream_stream_port`).
pub const DEFAULT_STREAM_ADDR: &str = "127.0.0.1:15557";

/// The TLS echo's default address (Kong's `mock_upstream_stream_ssl_port`).
pub const DEFAULT_STREAM_SSL_ADDR: &str = "127.0.0.1:15558";

/// Kong's stream mock upstream (`mock_upstream_stream_port`): echoes what each connection
/// sends until it ends its side, on `listener` until `shutdown` completes.
pub async fn serve_tcp_echo(listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            (mut tcp, _) = crate::gateway::accept::accept(&listener) => {
                tokio::spawn(async move {
                    let (mut r, mut w) = tcp.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        }
    }
}

/// Kong's TLS stream mock upstream (`mock_upstream_stream_ssl_port`): a TLS server with
/// `certificate` that answers each read with `<server name the client sent>:` (`-` for none)
/// followed by the bytes read, on `listener` until `shutdown` completes.
pub async fn serve_tls_echo(
    listener: TcpListener,
    certificate: &super::tls::CertificatePair,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(config) = certificate.server_config() else {
        tracing::error!(target: "kong", "the TLS mock upstream's certificate is unusable");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            (tcp, _) = crate::gateway::accept::accept(&listener) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let mut out = format!("{sni}:").into_bytes();
                        out.extend_from_slice(&buf[..n]);
                        if tls.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        }
    }
}

/// Serves the mock upstream on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
    let logs = Logs::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            (stream, peer) = crate::gateway::accept::accept(&listener) => {
                let local = stream.local_addr().ok();
                let logs = logs.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let logs = logs.clone();
                        async move { Ok::<_, Infallible>(respond(req, peer, local, &logs).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

fn args_json(query: &str) -> Value {
    crate::pdk::request::args_json(query, 100)
}

/// The default JSON body (`get_default_json_response`).
fn echo(parts: &http::request::Parts, body: &Bytes, peer: SocketAddr, local: Option<SocketAddr>) -> Map<String, Value> {
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let v = Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(a)) => a.push(v),
            Some(prev) => *prev = Value::Array(vec![prev.clone(), v]),
            None => {
                headers.insert(name.as_str().to_owned(), v);
            }
        }
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:15555");
    let request_uri = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let query = parts.uri.query().unwrap_or("");
    let ct = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let text = String::from_utf8_lossy(body).into_owned();
    let (kind, params) = if ct.starts_with("application/json") {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => ("json", v),
            Err(_) => ("json (error)", Value::Null),
        }
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        ("form", args_json(&text))
    } else if ct.starts_with("multipart/form-data") {
        ("multipart-form", Value::Null)
    } else {
        ("unknown", Value::Null)
    };
    let server_port = local.map_or(15555, |l| l.port());
    let mut out = Map::new();
    out.insert("headers".into(), Value::Object(headers));
    out.insert(
        "post_data".into(),
        json!({ "text": text, "kind": kind, "params": params }),
    );
    out.insert("url".into(), Value::from(format!("http://{host}{request_uri}")));
    out.insert("uri_args".into(), args_json(query));
    out.insert(
        "vars".into(),
        json!({
            "uri": parts.uri.path(),
            "host": host.split(':').next().unwrap_or(host),
            "hostname": "localhost",
            "https": "",
            "scheme": "http",
            "is_args": if parts.uri.query().is_some() { "?" } else { "" },
            "server_addr": local.map_or("127.0.0.1".to_owned(), |l| l.ip().to_string()),
            "server_port": server_port.to_string(),
            "server_name": "mock_upstream",
            "server_protocol": format!("{:?}", parts.version),
            "remote_addr": peer.ip().to_string(),
            "remote_port": peer.port().to_string(),
            "realip_remote_addr": peer.ip().to_string(),
            "realip_remote_port": peer.port().to_string(),
            "request": format!("{} {} {:?}", parts.method, request_uri, parts.version),
            "request_uri": request_uri,
            "request_method": parts.method.as_str(),
            "request_length": body.len().to_string(),
            "ssl_server_name": "no SNI",
        }),
    );
    out
}

fn json_response(status: u16, body: Map<String, Value>) -> Response<ProxyBody> {
    let mut text = Value::Object(body).to_string();
    text.push('\n');
    Response::builder()
        .status(status)
        .header("X-Powered-By", "mock_upstream")
        .header("Server", "mock-upstream/1.0.0")
        .header("Content-Type", "application/json")
        .body(full(Bytes::from(text)))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn text_response(status: u16, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert("Server", HeaderValue::from_static("mock-upstream/1.0.0"));
    r
}

/// Lines sent one per frame (chunked).
struct Lines(VecDeque<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = super::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|l| Ok(http_body::Frame::data(l))))
    }
}

/// `/ws`: a WebSocket echo. Text and binary messages come back as sent, a ping gets its pong
/// and a close is answered; the text `$_REQUEST` is answered with the handshake the mock saw
/// (`{"headers": {...}, "path": ..., "query": ...}`), as Kong Enterprise's mock does.
fn websocket_echo(req: &mut Request<Incoming>) -> Response<ProxyBody> {
    let wants = |name: http::header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let key = req.headers().get("sec-websocket-key").cloned();
    let (true, true, Some(key)) = (
        wants(http::header::UPGRADE, "websocket"),
        wants(http::header::CONNECTION, "upgrade"),
        key,
    ) else {
        return text_response(400, "Expected a WebSocket upgrade request");
    };
    // What `$_REQUEST` answers: the handshake as the mock saw it.
    let mut seen = Map::new();
    for (name, value) in req.headers() {
        let value = Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match seen.get_mut(name.as_str()) {
            Some(Value::Array(all)) => all.push(value),
            Some(one) => *one = Value::Array(vec![one.take(), value]),
            None => {
                seen.insert(name.as_str().to_owned(), value);
            }
        }
    }
    let handshake = Value::from(Map::from_iter([
        ("headers".to_owned(), Value::Object(seen)),
        ("path".to_owned(), Value::from(req.uri().path())),
        ("query".to_owned(), Value::from(req.uri().query().unwrap_or_default())),
    ]))
    .to_string();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        // Text and binary come back; pings are answered and a close is echoed by tungstenite
        // (the stream ends after the echo is sent).
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) if t.as_str() == "$_REQUEST" => Message::text(handshake.as_str()),
                Message::Text(_) | Message::Binary(_) => msg,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                return;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

/// Entries stored by `/post_log/{name}` (for logging plugins' tests), per mock instance.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<Value>>>>);

impl Logs {
    fn with<T>(&self, f: impl FnOnce(&mut std::collections::HashMap<String, Vec<Value>>) -> T) -> T {
        let mut guard = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

/// `/basic-auth/{user}/{pass}`: 200 when the Basic credentials match, else 401.
fn basic_auth(parts: &http::request::Parts, user: &str, pass: &str) -> Response<ProxyBody> {
    use base64::Engine as _;
    let given = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if given.as_deref() == Some(&format!("{user}:{pass}")) {
        let mut data = Map::new();
        data.insert("authenticated".into(), Value::Bool(true));
        data.insert("user".into(), Value::from(user));
        return json_response(200, data);
    }
    let mut r = text_response(401, "Unauthorized");
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("mock_upstream"),
    );
    r
}

async fn respond(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    logs: &Logs,
) -> Response<ProxyBody> {
    if req.uri().path() == "/ws" {
        return websocket_echo(&mut req);
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut data = echo(&parts, &body, peer, local);
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => {
            data.insert(
                "valid_routes".into(),
                json!({
                    "/anything": "Accepts any request and echoes it",
                    "/request": "Alias of /anything",
                    "/get": "Accepts a GET request and returns it in JSON format",
                    "/post": "Accepts a POST request and returns it in JSON format",
                    "/status/:code": "Returns a response with the specified <status code>",
                    "/delay/:duration": "Delay the response for <duration> seconds",
                    "/response-headers?:key=:val": "Returns given response headers",
                    "/cache/:n": "Sets a Cache-Control header for n seconds",
                    "/stream/:num": "Stream <num> chunks of JSON data via chunked Transfer Encoding",
                    "/xml": "Returns a simple XML document",
                    "/ws": "Echoes WebSocket messages; $_REQUEST answers the handshake",
                }),
            );
            json_response(200, data)
        }
        [first, ..] if first.starts_with("anything") || first.starts_with("request") => json_response(200, data),
        ["basic-auth", user, pass] => basic_auth(&parts, user, pass),
        ["timestamp"] => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let mut r = json_response(200, Map::new());
            if let Ok(v) = HeaderValue::from_str(&format!("{now:.3}")) {
                r.headers_mut().insert("Server-Time", v);
            }
            r
        }
        ["post_log", name] if parts.method == Method::POST => {
            let entry = serde_json::from_slice(&body).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&body)));
            logs.with(|l| l.entry((*name).to_owned()).or_default().push(entry));
            json_response(200, Map::new())
        }
        ["read_log", name] => {
            let entries = logs.with(|l| l.get(*name).cloned().unwrap_or_default());
            let mut data = Map::new();
            data.insert("count".into(), Value::from(entries.len()));
            data.insert("entries".into(), Value::Array(entries));
            json_response(200, data)
        }
        ["count_log", name] => {
            let n = logs.with(|l| l.get(*name).map_or(0, Vec::len));
            let mut r = text_response(200, "");
            *r.body_mut() = full(Bytes::from(n.to_string()));
            r
        }
        ["reset_log", name] => {
            logs.with(|l| l.remove(*name));
            json_response(200, Map::new())
        }
        ["get"] if parts.method != Method::GET => text_response(405, "Method not allowed for the requested URL"),
        ["post"] if parts.method != Method::POST => text_response(405, "Method not allowed for the requested URL"),
        ["get"] | ["post"] => json_response(200, data),
        ["status", code] if code.len() == 3 => match code.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => {
                data.insert("code".into(), Value::from(c));
                json_response(c, data)
            }
            _ => json_response(404, data),
        },
        ["delay", secs] => match secs.parse::<f64>() {
            Ok(s) if (0.0..=60.0).contains(&s) => {
                tokio::time::sleep(Duration::from_secs_f64(s)).await;
                data.insert("delay".into(), Value::from(s));
                json_response(200, data)
            }
            _ => json_response(404, data),
        },
        ["response-headers"] => {
            let mut r = json_response(200, data);
            for (k, v) in parse_args(parts.uri.query().unwrap_or(""), 100) {
                if let (Ok(name), Some(v)) = (http::HeaderName::from_bytes(k.as_bytes()), v.as_str())
                    && let Ok(v) = HeaderValue::from_str(v)
                {
                    r.headers_mut().insert(name, v);
                }
            }
            r
        }
        ["cache", n] if n.parse::<u64>().is_ok() => {
            let mut r = json_response(200, data);
            if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={n}")) {
                r.headers_mut().insert(http::header::CACHE_CONTROL, v);
            }
            r
        }
        ["stream", n] if n.parse::<usize>().is_ok_and(|n| n <= 1000) => {
            let n: usize = n.parse().unwrap_or(0);
            let lines = (0..n)
                .map(|i| {
                    let mut line = data.clone();
                    line.insert("id".into(), Value::from(i));
                    let mut s = Value::Object(line).to_string();
                    s.push('\n');
                    Bytes::from(s)
                })
                .collect();
            let mut r = Response::new(BodyExt::boxed_unsync(Lines(lines)));
            r.headers_mut()
                .insert("Content-Type", HeaderValue::from_static("application/json"));
            r.headers_mut()
                .insert("X-Powered-By", HeaderValue::from_static("mock_upstream"));
            r.headers_mut()
                .insert("Server", HeaderValue::from_static("mock-upstream/1.0.0"));
            r
        }
        ["xml"] => {
            let mut r = text_response(
                200,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<note>\n  <body>Kong, Monolith destroyer.</body>\n</note>\n",
            );
            r.headers_mut()
                .insert("Content-Type", HeaderValue::from_static("application/xml"));
            r
        }
        _ => json_response(404, data),
    }
}
