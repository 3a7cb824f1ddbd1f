//! The proxy over real sockets on random ports: routing, plugins, Kong's headers and errors,
//! streaming through body_filter, and configuration swaps.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::*;
use crate::entities::{Route, Service};
use crate::executor::{PluginEntity, PluginSet};
use crate::pdk::NodeInfo;
use crate::prelude::*;
use crate::registry::Plugins;

/// The quick start's plugin: sets a header, `X-MyPlugin` by default.
#[plugin(priority = 1000, version = "0.0.1", name = "gw-test-header")]
pub(crate) struct AddHeader {
    #[field(typedef = header_name, default = "X-MyPlugin")]
    response_header_name: String,
}

#[handler]
impl Handler for AddHeader {
    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> crate::Result {
        kong.response().set_header(&self.response_header_name, "response")?;
        Ok(())
    }
}

#[plugin(priority = 10, version = "1.0.0", name = "gw-test-upper")]
struct Upper {}

#[handler]
impl Handler for Upper {
    async fn body_filter(&self, kong: &mut Kong<BodyFilter>) -> crate::Result {
        let upper = kong.response().chunk().to_ascii_uppercase();
        kong.response().set_chunk(upper);
        Ok(())
    }
}

/// What `gw-test-logs` saw in `log`: `<status> <method> <path>` per request.
static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[plugin(priority = 1, version = "1.0.0", name = "gw-test-logs")]
struct Logs {}

#[handler]
impl Handler for Logs {
    async fn log(&self, kong: &mut Kong<Log>) -> crate::Result {
        let status = kong.response().get_status();
        let method = kong.request().get_method().to_owned();
        let line = format!("{status} {method} {}", kong.request().get_path());
        LOGGED.lock().unwrap().push(line);
        Ok(())
    }
}

/// With `X-Peek`, reads the request body within Kong's 8 KiB buffer and tells the upstream
/// what came of it (`X-Peeked`: the length, or the error).
#[plugin(priority = 3, version = "1.0.0", name = "gw-test-peek")]
pub(super) struct Peek {}

#[handler]
impl Handler for Peek {
    async fn access(&self, kong: &mut Kong<Access>) -> crate::Result {
        if kong.request().get_header("x-peek").is_none() {
            return Ok(());
        }
        let note = match kong.request().get_raw_body().await {
            Ok(body) => body.len().to_string(),
            Err(e) => e.to_string(),
        };
        kong.service().request().set_header("X-Peeked", &note)?;
        Ok(())
    }
}

/// Waits (up to 10 s, then fails) until `gw-test-logs` logged a line starting with `prefix`.
async fn logged(prefix: &str) -> String {
    let wait = async {
        loop {
            if let Some(line) = LOGGED.lock().unwrap().iter().find(|l| l.starts_with(prefix)) {
                return line.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no log line starting with {prefix:?} within 10 s: {:?}",
                LOGGED.lock().unwrap()
            )
        })
}

/// Writes `sent` and reads until the server closes the connection, which it must do within
/// 10 s; returns what it answered.
pub(crate) async fn closed_after(addr: SocketAddr, sent: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(sent).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(
        closed.is_ok(),
        "still open after 10 s: {:?}",
        String::from_utf8_lossy(sent)
    );
    got
}

/// Writes raw bytes and reads the whole answer (the gateway closes after an error).
pub(crate) async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[plugin(priority = 5, version = "1.0.0", name = "gw-test-panic")]
struct Panicky {}

#[handler]
impl Handler for Panicky {
    async fn access(&self, kong: &mut Kong<Access>) -> crate::Result {
        if kong.request().get_header("x-panic").is_some() {
            panic!("asked to");
        }
        Ok(())
    }
}

/// A raw TCP upstream on a random port: `serve` runs for each connection it accepts.
pub(super) async fn raw_upstream<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// An upstream that echoes the request as JSON (path, headers), or streams `/stream`.
pub(super) async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                    if path == "/stream" {
                        let chunks = ["abc", "def", "ghi"].into_iter().map(Bytes::from).collect();
                        return Ok::<_, Infallible>(Response::new(Chunks(chunks).boxed()));
                    }
                    let headers: serde_json::Map<String, Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), Value::from(v.to_str().unwrap_or_default())))
                        .collect();
                    let method = req.method().to_string();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let echo = json!({ "path": path, "method": method, "headers": headers, "body": String::from_utf8_lossy(&body) });
                    let resp = Response::builder()
                        .header("content-type", "application/json")
                        .header("server", "mock-upstream/1.0.0")
                        .body(
                            Full::new(Bytes::from(echo.to_string()))
                                .map_err(|never| match never {})
                                .boxed(),
                        )
                        .unwrap();
                    Ok(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A body sent as separate chunks (chunked transfer encoding).
pub(super) struct Chunks(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(http_body::Frame::data(c))))
    }
}

pub(super) struct Gateway {
    pub(super) addr: SocketAddr,
    pub(super) proxy: Arc<Proxy>,
    pub(super) plugins: Arc<Plugins>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Gateway {
    /// Starts the graceful shutdown.
    pub(super) fn stop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
    }
}

pub(super) fn service_at(addr: SocketAddr) -> Arc<Service> {
    let mut s = Service::new("127.0.0.1", addr.port());
    s.name = Some("mock".into());
    Arc::new(s)
}

pub(super) fn route(paths: &[&str], service: Option<&Arc<Service>>) -> (Arc<Route>, Option<Arc<Service>>) {
    (Arc::new(Route::new(paths)), service.cloned())
}

pub(super) async fn snapshot(
    plugins: &Arc<Plugins>,
    routes: Vec<(Arc<Route>, Option<Arc<Service>>)>,
    entities: Vec<PluginEntity>,
) -> Snapshot {
    let mut set = PluginSet::builder(plugins.clone());
    for e in entities {
        set.add(e).unwrap();
    }
    let set = set.build();
    set.configure().await;
    Snapshot::new(crate::router::Router::new(routes).unwrap(), set)
}

pub(super) async fn start(routes: Vec<(Arc<Route>, Option<Arc<Service>>)>, entities: Vec<PluginEntity>) -> Gateway {
    let plugins = Arc::new(
        Plugins::builder(NodeInfo::default())
            .with::<AddHeader>()
            .with::<Upper>()
            .with::<Panicky>()
            .with::<Logs>()
            .with::<Peek>()
            .build(),
    );
    let snap = snapshot(&plugins, routes, entities).await;
    serve(plugins, snap).await
}

/// Serves `snap` on a random port until the gateway is stopped or dropped.
pub(super) async fn serve(plugins: Arc<Plugins>, snap: Snapshot) -> Gateway {
    let proxy = Arc::new(Proxy::new(snap, HeaderSettings::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy.clone().serve(listener, async move {
        let _ = rx.await;
    }));
    Gateway {
        addr,
        proxy,
        plugins,
        shutdown: Some(tx),
    }
}

pub(super) struct Got {
    pub(super) status: u16,
    pub(super) headers: http::HeaderMap,
    pub(super) body: Bytes,
}

impl Got {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(super) async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got { status, headers, body }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_kongs_headers_and_runs_plugins() {
    let up = upstream().await;
    let svc = service_at(up);
    let r = route(&["/mock"], Some(&svc));
    let route_id = r.0.id;
    let gw = start(
        vec![r],
        vec![PluginEntity::new("gw-test-header", json!({})).route(route_id)],
    )
    .await;
    let res = get(gw.addr, "/mock/anything?a=1", &[("X-Forwarded-For", "203.0.113.7")]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("X-MyPlugin"), Some("response"));
    assert_eq!(res.header("via"), Some("1.1 kong/3.10.0"));
    assert_eq!(
        res.header("server"),
        Some("mock-upstream/1.0.0"),
        "the upstream's Server passes through"
    );
    assert!(res.header("x-kong-upstream-latency").is_some());
    assert!(res.header("x-kong-proxy-latency").is_some());
    assert_eq!(res.header("x-kong-request-id").map(str::len), Some(32));
    let echo = res.json();
    assert_eq!(echo["path"], "/anything?a=1", "strip_path removed /mock");
    assert_eq!(echo["headers"]["host"], format!("127.0.0.1:{}", up.port()));
    assert_eq!(echo["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert_eq!(echo["headers"]["x-forwarded-port"], gw.addr.port().to_string());
    assert_eq!(echo["headers"]["x-forwarded-prefix"], "/mock");
    assert_eq!(echo["headers"]["x-forwarded-path"], "/mock/anything");
    assert_eq!(echo["headers"]["via"], "1.1 kong/3.10.0");
    assert_eq!(
        echo["headers"]["x-kong-request-id"],
        res.header("x-kong-request-id").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_no_service_and_upstream_failures_use_kongs_errors() {
    let up = upstream().await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let gw = start(
        vec![
            route(&["/orphan"], None),
            route(&["/dead"], Some(&service_at(dead))),
            route(&["/ok"], Some(&service_at(up))),
        ],
        vec![],
    )
    .await;

    let res = get(gw.addr, "/nowhere", &[]).await;
    assert_eq!(res.status, 404);
    let id = res.header("x-kong-request-id").unwrap().to_owned();
    assert_eq!(
        res.body,
        format!("{{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"{id}\"\n}}")
    );
    assert_eq!(res.header("server"), Some("kong/3.10.0"));
    assert!(res.header("x-kong-response-latency").is_some());

    let res = get(gw.addr, "/orphan", &[]).await;
    assert_eq!(res.status, 503);
    assert_eq!(res.json()["message"], "no Service found with those values");

    let res = get(gw.addr, "/dead", &[]).await;
    assert_eq!(res.status, 502);
    let id = res.header("x-kong-request-id").unwrap().to_owned();
    assert_eq!(
        res.body,
        format!("An invalid response was received from the upstream server\nrequest_id: {id}\n")
    );
    assert_eq!(res.header("content-type"), Some("text/plain; charset=utf-8"));

    let res = get(gw.addr, "/dead", &[("Accept", "application/json")]).await;
    assert_eq!(
        res.json()["message"],
        "An invalid response was received from the upstream server"
    );
    assert_eq!(get(gw.addr, "/ok", &[]).await.status, 200, "the gateway keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_plugins_run_over_requests_the_guard_refuses() {
    let up = upstream().await;
    let svc = service_at(up);
    let globals = ["gw-test-header", "gw-test-upper", "gw-test-logs"].map(|n| PluginEntity::new(n, json!({})));
    let gw = start(vec![route(&["/"], Some(&svc))], globals.into()).await;

    // 414: header_filter adds its header, body_filter rewrites the body (and its length), log
    // sees the request line's method and path.
    let long = format!("GET /refused-414-{}?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let out = raw(gw.addr, long.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
    assert!(out.contains("\r\nx-myplugin: response\r\n"), "{out}");
    assert!(out.contains("\r\nserver: kong/3.10.0\r\n"), "{out}");
    assert!(out.contains("\r\nx-kong-request-id: "), "{out}");
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(body.starts_with("URI TOO LONG\nREQUEST_ID: "), "{out}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{out}"
    );
    assert!(head.contains("\r\nConnection: close"), "{out}");
    assert_eq!(
        logged("414 GET /refused-414-").await.len(),
        "414 GET /refused-414-".len() + 9000
    );

    // A smuggling shape: 400, JSON for a client that asks for it.
    let smuggle = b"POST /refused-400 HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let out = raw(gw.addr, smuggle).await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(out.contains("\r\ncontent-type: application/json"), "{out}");
    assert!(out.contains("\"MESSAGE\":\"BAD REQUEST\""), "{out}");
    assert_eq!(logged("400 POST /refused-400").await, "400 POST /refused-400");

    // Not even a request line: the plugins still run, with `/` as the path.
    let out = raw(gw.addr, b"\x01\x02 nonsense\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(out.contains("x-myplugin: response"), "{out}");
    assert_eq!(
        get(gw.addr, "/anything", &[]).await.status,
        200,
        "the gateway keeps serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_filter_sees_each_streamed_chunk() {
    let up = upstream().await;
    let gw = start(
        vec![route(&["/"], Some(&service_at(up)))],
        vec![PluginEntity::new("gw-test-upper", json!({}))],
    )
    .await;
    let res = get(gw.addr, "/stream", &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, "ABCDEFGHI");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_panic_is_a_500_and_other_requests_keep_flowing() {
    let up = upstream().await;
    let gw = start(
        vec![route(&["/"], Some(&service_at(up)))],
        vec![PluginEntity::new("gw-test-panic", json!({}))],
    )
    .await;
    let res = get(gw.addr, "/", &[("X-Panic", "1")]).await;
    assert_eq!(res.status, 500);
    assert_eq!(res.json()["message"], "An unexpected error occurred");
    assert_eq!(get(gw.addr, "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_swap_takes_effect_without_restart() {
    let up = upstream().await;
    let svc = service_at(up);
    let gw = start(vec![route(&["/old"], Some(&svc))], vec![]).await;
    assert_eq!(get(gw.addr, "/old", &[]).await.status, 200);
    assert_eq!(get(gw.addr, "/new", &[]).await.status, 404);
    let snap = snapshot(
        &gw.plugins,
        vec![route(&["/new"], Some(&svc))],
        vec![PluginEntity::new(
            "gw-test-header",
            json!({ "response_header_name": "X-Swapped" }),
        )],
    )
    .await;
    gw.proxy.swap(snap);
    let res = get(gw.addr, "/new", &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("X-Swapped"), Some("response"));
    assert_eq!(get(gw.addr, "/old", &[]).await.status, 404);
}

pub(super) async fn mock_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(mock_upstream::serve(listener, std::future::pending()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_upstream_answers_as_kongs_does() {
    let mock = mock_upstream().await;
    let res = get(mock, "/anything/x?a=1&b", &[("X-Test", "1")]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-powered-by"), Some("mock_upstream"));
    assert_eq!(res.header("server"), Some("mock-upstream/1.0.0"));
    assert!(res.body.ends_with(b"\n"));
    let j = res.json();
    assert_eq!(j["uri_args"], json!({ "a": "1", "b": true }));
    assert_eq!(j["headers"]["x-test"], "1");
    assert_eq!(j["url"], format!("http://{mock}/anything/x?a=1&b"));
    assert_eq!(j["vars"]["request_method"], "GET");
    assert_eq!(get(mock, "/status/418", &[]).await.status, 418);
    assert_eq!(get(mock, "/status/418", &[]).await.json()["code"], 418);
    assert_eq!(get(mock, "/post", &[]).await.status, 405);
    assert_eq!(get(mock, "/nope", &[]).await.status, 404);
    assert!(get(mock, "/", &[]).await.json()["valid_routes"]["/anything"].is_string());
    let res = get(mock, "/response-headers?X-Custom=yes", &[]).await;
    assert_eq!(res.header("x-custom"), Some("yes"));
    let res = get(mock, "/stream/3", &[]).await;
    assert_eq!(res.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_to_the_mock_upstream_like_the_quick_start() {
    let mock = mock_upstream().await;
    let r = route(&["/mock"], Some(&service_at(mock)));
    let id = r.0.id;
    let gw = start(vec![r], vec![PluginEntity::new("gw-test-header", json!({})).route(id)]).await;
    let res = get(gw.addr, "/mock/anything", &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("X-MyPlugin"), Some("response"));
    assert_eq!(res.header("x-powered-by"), Some("mock_upstream"));
    assert_eq!(res.json()["vars"]["uri"], "/anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_swaps_under_load_lose_no_request() {
    let mock = mock_upstream().await;
    let svc = service_at(mock);
    let gw = start(vec![route(&["/mock"], Some(&svc))], vec![]).await;
    let addr = gw.addr;
    // Clients keep sending until the swaps are done; each swap waits for a request to finish
    // after the previous one, so every configuration served traffic whatever the scheduler.
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (done, stop) = (done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && statuses.len() < 10_000 {
                    statuses.push(get(addr, "/mock/anything", &[]).await.status);
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                statuses
            })
        })
        .collect();
    const SWAPS: usize = 20;
    for swap in 0..SWAPS {
        let header = if swap % 2 == 0 { "X-Even" } else { "X-Odd" };
        let snap = snapshot(
            &gw.plugins,
            vec![route(&["/mock"], Some(&svc))],
            vec![PluginEntity::new(
                "gw-test-header",
                json!({ "response_header_name": header }),
            )],
        )
        .await;
        let before = done.load(std::sync::atomic::Ordering::SeqCst);
        gw.proxy.swap(snap);
        let served = async {
            while done.load(std::sync::atomic::Ordering::SeqCst) == before {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), served)
            .await
            .unwrap_or_else(|_| panic!("no request finished within 10 s after swap {swap}"));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        let statuses = c.await.unwrap();
        total += statuses.len();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "every request answered 200: {statuses:?}"
        );
    }
    assert!(total >= SWAPS, "{total} requests across {SWAPS} configurations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_tunnelled_to_the_mock_echo() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mock = mock_upstream().await;
    let gw = start(vec![route(&["/mock"], Some(&service_at(mock)))], vec![]).await;
    for (addr, path) in [(mock, "/ws"), (gw.addr, "/mock/ws")] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
            .await
            .unwrap();
        assert_eq!(resp.status(), 101);
        if addr == gw.addr {
            assert_eq!(resp.headers().get("via").unwrap(), "1.1 kong/3.10.0");
        }
        for text in ["hello", "world"] {
            ws.send(Message::text(text)).await.unwrap();
            let back = ws.next().await.unwrap().unwrap();
            assert_eq!(back, Message::text(text), "{path}");
        }
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(vec![1u8, 2, 3]));
        ws.close(None).await.unwrap();
    }
    // The gateway keeps serving plain requests after tunnels close.
    assert_eq!(get(gw.addr, "/mock/anything", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_upstream_checks_basic_auth_and_stores_logs() {
    let mock = mock_upstream().await;
    let res = get(mock, "/basic-auth/alice/secret", &[]).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.header("www-authenticate"), Some("mock_upstream"));
    // "alice:secret" in base64.
    let res = get(
        mock,
        "/basic-auth/alice/secret",
        &[("Authorization", "Basic YWxpY2U6c2VjcmV0")],
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({ "authenticated": true, "user": "alice" }));
    let wrong = get(
        mock,
        "/basic-auth/alice/other",
        &[("Authorization", "Basic YWxpY2U6c2VjcmV0")],
    )
    .await;
    assert_eq!(wrong.status, 401);

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for entry in [json!({ "n": 1 }), json!({ "n": 2 })] {
        let req = Request::post(format!("http://{mock}/post_log/http"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(entry.to_string())))
            .unwrap();
        assert_eq!(client.request(req).await.unwrap().status(), 200);
    }
    assert_eq!(get(mock, "/count_log/http", &[]).await.body, "2");
    let read = get(mock, "/read_log/http", &[]).await.json();
    assert_eq!(read["entries"], json!([{ "n": 1 }, { "n": 2 }]));
    assert_eq!(get(mock, "/reset_log/http", &[]).await.status, 200);
    assert_eq!(get(mock, "/count_log/http", &[]).await.body, "0");
    assert!(get(mock, "/timestamp", &[]).await.header("server-time").is_some());
}

static LOG_RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();
static LOG_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A log phase that waits to be released.
#[plugin(priority = 1, version = "1.0.0", name = "gw-test-slow-log")]
struct SlowLog {}

#[handler]
impl Handler for SlowLog {
    async fn log(&self, _kong: &mut Kong<Log>) -> crate::Result {
        LOG_RELEASE.notified().await;
        LOG_DONE.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_log_phases_requests_left_behind() {
    let up = upstream().await;
    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).with::<SlowLog>().build());
    let snap = snapshot(
        &plugins,
        vec![route(&["/"], Some(&service_at(up)))],
        vec![PluginEntity::new("gw-test-slow-log", json!({}))],
    )
    .await;
    let proxy = Arc::new(Proxy::new(snap, HeaderSettings::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(proxy.serve(listener, async move {
        let _ = stopped.await;
    }));
    assert_eq!(
        raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .split(' ')
            .nth(1),
        Some("200")
    );
    let _ = stop.send(());
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), &mut serving)
            .await
            .is_err(),
        "serve returned while a log phase was still running"
    );
    LOG_RELEASE.notify_one();
    tokio::time::timeout(std::time::Duration::from_secs(10), serving)
        .await
        .expect("serve returns once the log phase is done")
        .unwrap();
    assert!(LOG_DONE.load(std::sync::atomic::Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_a_head_are_closed_after_the_header_timeout() {
    let up = upstream().await;
    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).build());
    let snap = snapshot(&plugins, vec![route(&["/"], Some(&service_at(up)))], vec![]).await;
    let proxy = Arc::new(
        Proxy::new(snap, HeaderSettings::default()).with_client_header_timeout(std::time::Duration::from_millis(300)),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));

    // Nothing, a partial request line, a partial head, TLS bytes on a plain port, and an idle
    // keep-alive connection after a whole exchange: each is closed, none is held.
    let idle_after = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".as_slice();
    for sent in [
        &b""[..],
        b"GET /slow",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        idle_after,
    ] {
        let got = closed_after(addr, sent).await;
        if sent == idle_after {
            assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_meet_the_same_head_limits() {
    let up = upstream().await;
    let gw = start(vec![route(&["/"], Some(&service_at(up)))], vec![]).await;
    // A listener with Kong's `http2` flag.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h2c = listener.local_addr().unwrap();
    tokio::spawn(gw.proxy.clone().serve_h2c(listener, std::future::pending()));
    // HTTP/1.1 there too.
    assert_eq!(get(h2c, "/ok", &[]).await.status, 200);
    let stream = tokio::net::TcpStream::connect(h2c).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut get = |path: String, headers: Vec<String>| {
        let mut req = Request::builder().uri(format!("http://x{path}"));
        for (i, h) in headers.into_iter().enumerate() {
            req = req.header(format!("x-big-{i}"), h);
        }
        let fut = send.send_request(req.body(Full::new(Bytes::new())).unwrap());
        async move { fut.await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(get("/ok".into(), vec![]).await.unwrap(), 200);
    assert_eq!(get(format!("/{}", "a".repeat(9 * 1024)), vec![]).await.unwrap(), 414);
    assert_eq!(get("/ok".into(), vec!["b".repeat(9 * 1024)]).await.unwrap(), 400);
    // Fields within bounds: a 21 KiB head is fine (as over HTTP/1), one past the whole
    // head's bound (32 KiB) is refused by the HTTP/2 layer.
    assert_eq!(get("/ok".into(), vec!["c".repeat(7 * 1024); 3]).await.unwrap(), 200);
    let huge = get("/ok".into(), vec!["c".repeat(7 * 1024); 6]).await;
    assert!(huge.map_or(true, |s| s != 200), "a 42 KiB head was accepted");
}

#[tokio::test]
async fn a_listener_without_the_http2_flag_speaks_http1_only() {
    let up = upstream().await;
    let gw = start(vec![route(&["/"], Some(&service_at(up)))], vec![]).await;
    // The HTTP/2 preface is no HTTP/1.1 request: refused as nginx refuses it, in HTTP/1.1.
    let answer = closed_after(gw.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(get(gw.addr, "/ok", &[]).await.status, 200);
}

/// Turns on buffered proxying (`response` reads the whole upstream body).
#[plugin(priority = 1, version = "1.0.0", name = "gw-test-buffer")]
struct Buffer {}

#[handler]
impl Handler for Buffer {
    async fn response(&self, _kong: &mut Kong<crate::phase::Response>) -> crate::Result {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_timeout_runs_between_reads_of_the_upstream_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that sends its head and 3 of 10 body bytes, then stalls.
    let up = raw_upstream(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    })
    .await;
    let mut svc = Service::new("127.0.0.1", up.port());
    svc.read_timeout = 300;
    let svc = Arc::new(svc);
    let streamed = route(&["/streamed"], Some(&svc));
    let buffered = route(&["/buffered"], Some(&svc));
    let buffered_id = buffered.0.id;
    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).with::<Buffer>().build());
    let snap = snapshot(
        &plugins,
        vec![streamed, buffered],
        vec![PluginEntity::new("gw-test-buffer", json!({})).route(buffered_id)],
    )
    .await;
    let proxy = Arc::new(Proxy::new(snap, HeaderSettings::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));

    // Streamed: the head and the first bytes went out; the stall cuts the body short.
    let got = closed_after(addr, b"GET /streamed HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nabc"), "the body is cut short: {text}");
    // Buffered: nothing was sent yet, so the client gets Kong's 504.
    let got = closed_after(addr, b"GET /buffered HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"), "{text}");
    assert!(text.contains("The upstream server is timing out"), "{text}");
}

/// An absolute-form target (`GET http://a.test/p`) routes by the `Host` header, as Kong's
/// router reads it, while `X-Forwarded-Host` and `kong.request.get_host()` take nginx's
/// `$host`: the request line's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_routes_by_host_and_forwards_the_request_lines_host() {
    let up = upstream().await;
    let mut r = Route::new(&["/"]);
    r.hosts = Some(vec!["b.test".into()]);
    let gw = start(vec![(Arc::new(r), Some(service_at(up)))], vec![]).await;
    let answer = raw(
        gw.addr,
        b"GET http://A.test:9000/abs HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let echo: Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["path"], "/abs");
    assert_eq!(echo["headers"]["x-forwarded-host"], "a.test");
    // The request line's host alone does not route.
    let answer = raw(
        gw.addr,
        b"GET http://b.test/abs HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

/// The read timeout is between two reads, not for the whole body: an upstream that sends a
/// chunk every 100 ms for a second is read to its end under a 300 ms timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_upstream_body_is_read_to_its_end() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = raw_upstream(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n").await;
        for _ in 0..10 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let _ = s.write_all(b"x").await;
        }
    })
    .await;
    let mut svc = Service::new("127.0.0.1", up.port());
    svc.read_timeout = 300;
    let gw = start(vec![route(&["/slow"], Some(&Arc::new(svc)))], vec![]).await;
    let got = closed_after(gw.addr, b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.ends_with("\r\n\r\nxxxxxxxxxx"), "{text}");
}

/// A plugin's read that stops at its limit leaves the body whole: the upstream gets every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_past_its_limit_still_reaches_the_upstream_whole() {
    let up = upstream().await;
    let svc = service_at(up);
    let r = route(&["/peek"], Some(&svc));
    let id = r.0.id;
    let gw = start(vec![r], vec![PluginEntity::new("gw-test-peek", json!({})).route(id)]).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Chunks>();
    for size in [5usize, 20_000] {
        // 1 KiB chunks, streamed (no Content-Length).
        let chunks = vec![b'x'; size].chunks(1024).map(Bytes::copy_from_slice).collect();
        let req = Request::post(format!("http://{}/peek", gw.addr))
            .header("x-peek", "1")
            .body(Chunks(chunks))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let echo: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(
            echo["body"].as_str().unwrap().len(),
            size,
            "the upstream got the whole body"
        );
        let peeked = echo["headers"]["x-peeked"].as_str().unwrap().to_owned();
        if size < 8192 {
            assert_eq!(peeked, size.to_string());
        } else {
            assert!(peeked.contains("did not fit into client body buffer"), "{peeked}");
        }
    }
}

/// A request proxied to an upstream that is down was proxied: Kong's 502 carries the upstream
/// and proxy latencies, not the response latency of answers Kong makes itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upstream_answer_carries_the_proxied_latency_headers() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mut svc = Service::new("127.0.0.1", closed.port());
    svc.retries = 0;
    let gw = start(vec![route(&["/down"], Some(&Arc::new(svc)))], vec![]).await;
    let res = get(gw.addr, "/down", &[]).await;
    assert_eq!(res.status, 502);
    assert!(res.header("x-kong-upstream-latency").is_some());
    assert!(res.header("x-kong-proxy-latency").is_some());
    assert_eq!(res.header("x-kong-response-latency"), None);
    // Kong's own answers keep the response latency.
    let res = get(gw.addr, "/nowhere", &[]).await;
    assert_eq!(res.status, 404);
    assert!(res.header("x-kong-response-latency").is_some());
    assert_eq!(res.header("x-kong-upstream-latency"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_path_handling_joins_as_v1_only_under_the_traditional_router_flavor() {
    let up = upstream().await;
    let mut service = Service::new("127.0.0.1", up.port());
    service.path = Some("/service".into());
    let service = Arc::new(service);
    let mut v1 = Route::new(&["/route"]);
    v1.path_handling = crate::entities::PathHandling::V1;
    let mut kept = Route::new(&["/kept"]);
    kept.path_handling = crate::entities::PathHandling::V1;
    kept.strip_path = false;
    let v0 = Route::new(&["/plain"]);
    let routes = || {
        [&v1, &kept, &v0]
            .into_iter()
            .map(|r| (Arc::new(r.clone()), Some(service.clone())))
            .collect::<Vec<_>>()
    };
    for (flavor, want) in [
        (
            crate::model::RouterFlavor::TraditionalCompatible,
            ["/service/req", "/service/kept/x", "/service/req"],
        ),
        (
            crate::model::RouterFlavor::Traditional,
            ["/servicereq", "/servicekept/x", "/service/req"],
        ),
    ] {
        let node = NodeInfo {
            router_flavor: flavor,
            ..NodeInfo::default()
        };
        let plugins = Arc::new(Plugins::builder(node).build());
        let gw = serve(plugins.clone(), snapshot(&plugins, routes(), vec![]).await).await;
        for (request, want) in ["/routereq", "/kept/x", "/plainreq"].into_iter().zip(want) {
            let res = get(gw.addr, request, &[]).await;
            assert_eq!(res.json()["path"], want, "{flavor:?}: {request}");
        }
    }
}
