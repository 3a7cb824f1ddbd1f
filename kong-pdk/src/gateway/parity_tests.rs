//! One table of request cases, run through the [test harness](crate::testing) and through the
//! gateway over real sockets: both drive the same runloop, so a plugin that passes its harness
//! tests behaves the same in the gateway. Each case compares the status, the body, the
//! response headers and what the upstream received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::tests::snapshot;
use super::{HeaderSettings, Proxy};
use crate::entities::{ForeignKey, Route, Service};
use crate::executor::PluginEntity;
use crate::pdk::NodeInfo;
use crate::prelude::*;
use crate::registry::Plugins;
use crate::testing::{Harness, MockResponse, TestRequest, UpstreamFailure};

/// Exits in the phase its config names; in access and header_filter it also sets headers, to
/// show how they merge with the upstream's.
#[plugin(priority = 900, version = "1.0.0", name = "gw-parity")]
struct Parity {
    #[field(default = "none")]
    exit_in: String,
}

#[handler]
impl Handler for Parity {
    async fn rewrite(&self, kong: &mut Kong<Rewrite>) -> crate::Result {
        if self.exit_in == "rewrite" {
            kong.response().exit(418, "from rewrite")?;
        }
        Ok(())
    }

    async fn access(&self, kong: &mut Kong<Access>) -> crate::Result {
        kong.response().set_header("x-dup", "plugin")?;
        kong.response().set_header("x-from-access", "1")?;
        if self.exit_in == "access" {
            kong.response().exit(403, json!({ "message": "from access" }))?;
        }
        Ok(())
    }

    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> crate::Result {
        kong.response().set_header("x-parity", "seen")?;
        if self.exit_in == "header_filter" {
            kong.response().exit(451, "from header_filter")?;
        }
        Ok(())
    }
}

/// Turns on buffered proxying; exits from `response` when configured to.
#[plugin(priority = 800, version = "1.0.0", name = "gw-parity-buffer")]
struct ParityBuffer {
    #[field(default = false)]
    exit: bool,
}

#[handler]
impl Handler for ParityBuffer {
    async fn response(&self, kong: &mut Kong<Response>) -> crate::Result {
        if self.exit {
            kong.response().exit(409, "from response")?;
        } else {
            kong.response().set_header("x-buffered", "1")?;
        }
        Ok(())
    }
}

/// How the upstream behaves for a case.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Upstream {
    /// 200 "hello" with hop-by-hop headers, a header the plugin overrides and one it keeps.
    Answers,
    /// Nobody listens.
    Refuses,
    /// Accepts and never answers (the service's read timeout is short).
    Stalls,
    /// Answers with bytes that are not HTTP.
    Garbage,
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    route: fn(&mut Route),
    has_service: bool,
    plugins: Vec<PluginEntity>,
    upstream: Upstream,
}

fn case(name: &'static str) -> Case {
    Case {
        name,
        method: "GET",
        path: "/ok",
        headers: &[("host", "example.test")],
        route: |_| {},
        has_service: true,
        plugins: vec![],
        upstream: Upstream::Answers,
    }
}

fn parity(exit_in: &str) -> PluginEntity {
    PluginEntity::new("gw-parity", json!({ "exit_in": exit_in }))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            headers: &[
                ("host", "example.test"),
                ("connection", "x-client-secret"),
                ("x-client-secret", "1"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
            plugins: vec![parity("none")],
            ..case("proxied, hop-by-hop headers stripped both ways, plugin headers over the upstream's")
        },
        Case {
            method: "HEAD",
            plugins: vec![parity("none")],
            ..case("HEAD")
        },
        Case {
            route: |r| r.protocols = vec!["https".into()],
            ..case("https-only route over http")
        },
        Case {
            path: "/ok?q=1",
            route: |r| {
                r.protocols = vec!["https".into()];
                r.https_redirect_status_code = 301;
            },
            ..case("https-only route redirecting")
        },
        Case {
            has_service: false,
            ..case("route without a service")
        },
        Case {
            path: "/nowhere",
            headers: &[("host", "example.test"), ("accept", "text/html")],
            ..case("no route, HTML error")
        },
        Case {
            headers: &[("host", "[::1]:8000")],
            route: |r| r.hosts = Some(vec!["::1".into()]),
            plugins: vec![parity("none")],
            ..case("IPv6 Host routed by host")
        },
        Case {
            plugins: vec![parity("rewrite")],
            ..case("exit in rewrite")
        },
        Case {
            plugins: vec![parity("access")],
            ..case("exit in access")
        },
        Case {
            plugins: vec![parity("header_filter")],
            ..case("exit in header_filter")
        },
        Case {
            plugins: vec![
                parity("none"),
                PluginEntity::new("gw-parity-buffer", json!({ "exit": true })),
            ],
            ..case("exit in response")
        },
        Case {
            plugins: vec![PluginEntity::new("gw-parity-buffer", json!({}))],
            ..case("buffered proxying")
        },
        Case {
            upstream: Upstream::Refuses,
            ..case("upstream refuses connections")
        },
        Case {
            headers: &[("host", "example.test"), ("accept", "application/json")],
            upstream: Upstream::Stalls,
            ..case("upstream times out")
        },
        Case {
            upstream: Upstream::Garbage,
            ..case("upstream answers garbage")
        },
    ]
}

/// What a client and the upstream saw, with per-run values (request ids, latencies, the
/// gateway's port) masked.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    headers: BTreeMap<String, Vec<String>>,
    body: String,
    upstream: Option<BTreeMap<String, Vec<String>>>,
}

/// Headers that differ by transport, not by pipeline: hyper frames bodies and dates itself.
const TRANSPORT: [&str; 4] = ["date", "content-length", "transfer-encoding", "connection"];
const MASKED: [&str; 5] = [
    "x-kong-request-id",
    "x-kong-upstream-latency",
    "x-kong-proxy-latency",
    "x-kong-response-latency",
    "x-forwarded-port",
];

fn masked(headers: &http::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        if TRANSPORT.contains(&name) {
            continue;
        }
        let value = if MASKED.contains(&name) {
            "*".to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        out.entry(name.to_owned()).or_default().push(value);
    }
    out
}

fn seen(status: u16, headers: &http::HeaderMap, body: &[u8], upstream: Option<BTreeMap<String, Vec<String>>>) -> Seen {
    let mut body = String::from_utf8_lossy(body).into_owned();
    if let Some(id) = headers.get("x-kong-request-id").and_then(|v| v.to_str().ok()) {
        body = body.replace(id, "<request id>");
    }
    Seen {
        status,
        headers: masked(headers),
        body,
        upstream,
    }
}

fn service(case: &Case, upstream: SocketAddr) -> Service {
    let mut s = Service::new("127.0.0.1", upstream.port());
    s.name = Some("parity".into());
    s.retries = 0;
    if case.upstream == Upstream::Stalls {
        s.read_timeout = 300;
    }
    s
}

fn route(case: &Case, service: &Service) -> Route {
    let mut r = Route::new(&["/ok"]);
    r.service = case.has_service.then_some(ForeignKey { id: service.id });
    (case.route)(&mut r);
    r
}

fn mock(upstream: Upstream) -> MockResponse {
    match upstream {
        Upstream::Answers => MockResponse::new(200)
            .header("content-type", "text/plain")
            .header("x-dup", "upstream")
            .header("x-kept", "1")
            .header("connection", "close, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .body("hello"),
        Upstream::Refuses => MockResponse::failure(UpstreamFailure::Connect),
        Upstream::Stalls => MockResponse::failure(UpstreamFailure::Timeout),
        Upstream::Garbage => MockResponse::failure(UpstreamFailure::Invalid),
    }
}

/// A scripted upstream over raw TCP: answers one request per connection as `upstream` says
/// and records each request head it read.
async fn scripted(upstream: Upstream) -> (SocketAddr, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    if upstream == Upstream::Refuses {
        return (addr, heads); // dropped: nobody listens
    }
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let mut parsed = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut parsed);
                let _ = req.parse(&buf);
                let head = req.method == Some("HEAD");
                let mut headers = http::HeaderMap::new();
                for h in req.headers.iter() {
                    if let (Ok(n), Ok(v)) = (
                        http::HeaderName::from_bytes(h.name.as_bytes()),
                        http::HeaderValue::from_bytes(h.value),
                    ) {
                        headers.append(n, v);
                    }
                }
                seen.lock().unwrap().push(headers);
                match upstream {
                    Upstream::Answers => {
                        let body = if head { "" } else { "hello" };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-dup: upstream\r\nx-kept: 1\r\nconnection: close, x-secret\r\nx-secret: 1\r\nkeep-alive: timeout=5\r\ncontent-length: 5\r\n\r\n{body}"
                        );
                        let _ = s.write_all(answer.as_bytes()).await;
                    }
                    Upstream::Garbage => {
                        let _ = s.write_all(b"this is not HTTP\r\n\r\n").await;
                    }
                    Upstream::Stalls => tokio::time::sleep(Duration::from_secs(5)).await,
                    Upstream::Refuses => {}
                }
            });
        }
    });
    (addr, heads)
}

/// The request headers that the pipeline (not the transport) decides, as the upstream got them.
fn upstream_view(headers: &http::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut view = masked(headers);
    view.retain(|name, _| {
        name.starts_with("x-") || matches!(name.as_str(), "host" | "via" | "keep-alive" | "te" | "upgrade")
    });
    view
}

async fn through_harness(case: &Case, svc: &Service, rt: &Route) -> Seen {
    let (svc, rt) = (svc.clone(), rt.clone());
    let mut h = Harness::new()
        .load::<Parity>()
        .load::<ParityBuffer>()
        .with_service(move |s| *s = svc)
        .with_route(move |r| *r = rt);
    for p in &case.plugins {
        h = h.plugin_entity::<Parity>(p.clone());
    }
    let gw = h.start().await.unwrap();
    let mut req = TestRequest::new(case.method.parse().unwrap(), case.path);
    for (k, v) in case.headers {
        req = if *k == "host" { req.host(v) } else { req.header(k, v) };
    }
    let mut upstream = None;
    let res = gw
        .send(req, |up| {
            // A refused connection never carries the request.
            if case.upstream != Upstream::Refuses {
                upstream = Some(upstream_view(&up.headers));
            }
            mock(case.upstream)
        })
        .await;
    seen(res.status(), res.headers(), res.body(), upstream)
}

async fn through_gateway(case: &Case, svc: &Service, rt: &Route, upstream: Arc<Mutex<Vec<http::HeaderMap>>>) -> Seen {
    let plugins = Arc::new(
        Plugins::builder(NodeInfo::default())
            .with::<Parity>()
            .with::<ParityBuffer>()
            .build(),
    );
    let svc = Arc::new(svc.clone());
    let routes = vec![(Arc::new(rt.clone()), case.has_service.then(|| svc.clone()))];
    let snap = snapshot(&plugins, routes, case.plugins.clone()).await;
    let proxy = Arc::new(Proxy::new(snap, HeaderSettings::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy.serve(listener, async move {
        let _ = stopped.await;
    }));

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(case.method).uri(case.path);
    for (k, v) in case.headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let _ = stop.send(());
    let upstream = upstream.lock().unwrap().first().map(upstream_view);
    seen(status, &headers, &body, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_and_the_gateway_answer_every_case_alike() {
    let mut checked = 0;
    for case in cases() {
        let (addr, heads) = scripted(case.upstream).await;
        let svc = service(&case, addr);
        let rt = route(&case, &svc);
        let harness = through_harness(&case, &svc, &rt).await;
        let gateway = through_gateway(&case, &svc, &rt, heads).await;
        assert_eq!(harness, gateway, "case: {}", case.name);
        checked += 1;
    }
    assert_eq!(checked, cases().len());
}

/// The table pins what each case means, so a change that breaks both paths alike fails too.
#[tokio::test]
async fn each_case_gets_kongs_answer() {
    let want: [(&str, u16, Option<&str>); 15] = [
        ("proxied", 200, Some("hello")),
        ("HEAD", 200, Some("")),
        ("https-only route over http", 426, None),
        ("https-only route redirecting", 301, Some("")),
        ("route without a service", 503, None),
        ("no route", 404, None),
        ("IPv6", 200, Some("hello")),
        ("exit in rewrite", 418, Some("from rewrite")),
        ("exit in access", 403, Some(r#"{"message":"from access"}"#)),
        ("exit in header_filter", 451, Some("from header_filter")),
        ("exit in response", 409, Some("from response")),
        ("buffered proxying", 200, Some("hello")),
        ("upstream refuses", 502, None),
        ("upstream times out", 504, None),
        ("upstream answers garbage", 502, None),
    ];
    for (case, (prefix, status, body)) in cases().iter().zip(want) {
        assert!(case.name.starts_with(prefix), "{} / {prefix}", case.name);
        let (addr, _) = scripted(case.upstream).await;
        let svc = service(case, addr);
        let rt = route(case, &svc);
        let got = through_harness(case, &svc, &rt).await;
        assert_eq!(got.status, status, "{}", case.name);
        if let Some(body) = body {
            assert_eq!(got.body, body, "{}", case.name);
        }
        match case.name {
            n if n.starts_with("proxied") => {
                let up = got.upstream.as_ref().unwrap();
                assert!(!up.contains_key("x-client-secret"), "{up:?}");
                assert_eq!(up["x-forwarded-for"], ["203.0.113.9, 127.0.0.1"]);
                assert_eq!(got.headers["x-dup"], ["plugin"]);
                assert_eq!(got.headers["x-kept"], ["1"]);
                assert!(!got.headers.contains_key("x-secret") && !got.headers.contains_key("keep-alive"));
                assert_eq!(got.headers["via"], ["1.1 kong/3.10.0"]);
            }
            n if n.starts_with("IPv6") => {
                assert_eq!(got.upstream.as_ref().unwrap()["x-forwarded-host"], ["::1"]);
            }
            n if n.starts_with("https-only route redirecting") => {
                assert_eq!(got.headers["location"], ["https://example.test/ok?q=1"]);
            }
            n if n.starts_with("no route") => assert!(got.body.contains("<p>no Route matched with those values.</p>")),
            n if n.starts_with("upstream times out") => {
                let v: Value = serde_json::from_str(&got.body).unwrap();
                assert_eq!(v["message"], "The upstream server is timing out");
            }
            _ => {}
        }
    }
}
