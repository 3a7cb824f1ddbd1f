//! Load balancing end to end, over real sockets with several scripted targets: each
//! algorithm's distribution, stickiness for every `hash_on`, failover on retries, passive and
//! active health checks, the health endpoints, and the Admin API's upstream rules.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kong_pdk::prelude::*;
use kong_pdk::testing::helpers::{self, Blueprint, Conf, Gateway, Strategy};
use serde_json::{Value, json};

/// The `tries` of each request's `kong.log.serialize()`.
static TRIES: std::sync::Mutex<Vec<Value>> = std::sync::Mutex::new(Vec::new());

/// Records `kong.log.serialize()["tries"]` in log.
#[plugin(priority = 10, version = "1.0.0", name = "tries-logger")]
pub struct TriesLogger {}

#[handler]
impl Handler for TriesLogger {
    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        TRIES.lock().unwrap().push(kong.log().serialize()["tries"].clone());
        Ok(())
    }
}

/// A scripted target: answers with its name; `/status/{n}` answers `n`; `/slow` waits 300 ms;
/// `/health` answers the target's current health status (200 until changed); `/host` answers
/// the Host it got.
struct Scripted {
    name: String,
    addr: SocketAddr,
    health: Arc<AtomicU16>,
    probes: Arc<AtomicUsize>,
}

async fn scripted(name: &str) -> Scripted {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = Arc::new(AtomicU16::new(200));
    let probes = Arc::new(AtomicUsize::new(0));
    let (me, h, p) = (name.to_owned(), health.clone(), probes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (me, h, p) = (me.clone(), h.clone(), p.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (me, h, p) = (me.clone(), h.clone(), p.clone());
                    async move {
                        let path = req.uri().path().to_owned();
                        if path == "/host" {
                            let host = req
                                .headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or_default();
                            return Ok(hyper::Response::new(Full::new(Bytes::from(host.to_owned()))));
                        }
                        let status = if path == "/health" {
                            p.fetch_add(1, Ordering::Relaxed);
                            h.load(Ordering::Relaxed)
                        } else if let Some(n) = path.strip_prefix("/status/") {
                            n.parse().unwrap_or(200)
                        } else {
                            if path == "/slow" {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            200
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(me)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Scripted {
        name: name.to_owned(),
        addr,
        health,
        probes,
    }
}

/// An upstream `lb.test` with `fields`, the `targets` (weight each), a service over it with
/// `retries`, and a route `/lb` (with a regex route `/cap/(?<part>[a-z]+)` too).
async fn balanced(bp: &Blueprint, fields: Value, targets: &[(&Scripted, u32)], retries: u32) -> Value {
    let mut upstream = json!({ "name": "lb.test" });
    for (k, v) in fields.as_object().unwrap() {
        upstream[k] = v.clone();
    }
    let upstream = bp.upstreams().insert(upstream).await;
    for (t, weight) in targets {
        bp.targets()
            .insert(json!({ "upstream": { "id": upstream["id"] }, "target": t.addr.to_string(), "weight": weight }))
            .await;
    }
    bp.services()
        .insert(json!({ "name": "lb", "host": "lb.test", "port": 80, "retries": retries, "connect_timeout": 1000 }))
        .await;
    bp.routes()
        .insert(json!({ "paths": ["/lb", "~/cap/(?<part>[a-z]+)"], "service": { "name": "lb" } }))
        .await;
    upstream
}

async fn who(kong: &Gateway, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = kong.proxy_client().get(path);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = req.send().await;
    res.assert_status(200);
    res.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_follows_the_weights_and_retries_fail_over() {
    let (a, b) = (scripted("a").await, scripted("b").await);
    // A target nobody listens on: its tries fail and move on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let bp = helpers::get_db_utils(Strategy::Sqlite, &["tries-logger"]).await;
    let upstream = balanced(&bp, json!({}), &[(&a, 10), (&b, 30)], 5).await;
    bp.targets()
        .insert(json!({ "upstream": { "id": upstream["id"] }, "target": dead.to_string(), "weight": 10 }))
        .await;
    bp.plugins().insert(json!({ "name": "tries-logger" })).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let mut counts = std::collections::HashMap::new();
    for _ in 0..50 {
        *counts.entry(who(&kong, "/lb", &[]).await).or_insert(0) += 1;
    }
    // Every request succeeded, the dead target's share went elsewhere; b gets about 3× a.
    let (na, nb) = (counts["a"], counts["b"]);
    assert_eq!(na + nb, 50, "{counts:?}");
    assert!(nb >= 2 * na, "{counts:?}");
    kong.stop().await;
    // kong.log.serialize()'s tries: a request that met the dead target shows the failed try,
    // then the one that answered.
    let tries = TRIES.lock().unwrap().clone();
    assert_eq!(tries.len(), 50);
    let retried = tries
        .iter()
        .find(|t| t.as_array().unwrap().len() == 2)
        .expect("some request met the dead target");
    assert_eq!(retried[0]["port"], dead.port());
    assert_eq!(retried[0]["state"], "failed");
    assert_eq!(retried[0]["code"], 502);
    assert!(retried[0]["balancer_start"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(retried[1].get("state").is_none());
    assert!([a.addr.port(), b.addr.port()].contains(&(retried[1]["port"].as_u64().unwrap() as u16)));
}

/// A request: its path and headers.
type Req<'a> = (&'a str, Vec<(&'a str, &'a str)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_sticks_for_every_hash_on() {
    let targets = [scripted("a").await, scripted("b").await, scripted("c").await];
    let cases: Vec<(Value, Vec<Req>)> = vec![
        (
            json!({ "hash_on": "header", "hash_on_header": "x-user" }),
            (0..12).map(|_| ("/lb", vec![("x-user", "")])).collect(),
        ),
        (json!({ "hash_on": "ip" }), vec![("/lb", vec![])]),
        (
            json!({ "hash_on": "path" }),
            vec![("/lb/one", vec![]), ("/lb/two", vec![]), ("/lb/three", vec![])],
        ),
        (
            json!({ "hash_on": "query_arg", "hash_on_query_arg": "user" }),
            vec![("/lb?user=1", vec![]), ("/lb?user=2", vec![]), ("/lb?user=3", vec![])],
        ),
        (
            json!({ "hash_on": "uri_capture", "hash_on_uri_capture": "part" }),
            vec![("/cap/one", vec![]), ("/cap/two", vec![]), ("/cap/three", vec![])],
        ),
        (
            json!({ "hash_on": "cookie", "hash_on_cookie": "lb-id" }),
            vec![
                ("/lb", vec![("cookie", "lb-id=one")]),
                ("/lb", vec![("cookie", "lb-id=two")]),
            ],
        ),
    ];
    for (fields, requests) in cases {
        let bp = helpers::get_db_utils(Strategy::Sqlite, &[]).await;
        let upstream = balanced(
            &bp,
            fields.clone(),
            &[(&targets[0], 10), (&targets[1], 10), (&targets[2], 10)],
            0,
        )
        .await;
        // Kong's shorthand: a hash_on picks consistent hashing.
        assert_eq!(upstream["algorithm"], "consistent-hashing", "{fields}");
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let mut seen = std::collections::HashSet::new();
        for (i, (path, headers)) in requests.iter().enumerate() {
            // Header values differ per request, so the header case spreads.
            let value = format!("user-{i}");
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (*k, if v.is_empty() { value.as_str() } else { *v }))
                .collect();
            let first = who(&kong, path, &headers).await;
            for _ in 0..4 {
                assert_eq!(who(&kong, path, &headers).await, first, "{fields} {path} {headers:?}");
            }
            seen.insert(first);
        }
        if fields["hash_on"] == "header" {
            assert!(seen.len() > 1, "12 users all on one target: {seen:?}");
        }
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_on_a_missing_cookie_sets_one_that_sticks() {
    let targets = [scripted("a").await, scripted("b").await];
    let bp = helpers::get_db_utils(Strategy::Sqlite, &[]).await;
    balanced(
        &bp,
        json!({ "hash_on": "cookie", "hash_on_cookie": "lb-id", "hash_on_cookie_path": "/lb" }),
        &[(&targets[0], 10), (&targets[1], 10)],
        0,
    )
    .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let res = kong.proxy_client().get("/lb").send().await;
    res.assert_status(200);
    let first = res.text();
    let cookie = res.assert_header("set-cookie");
    let (pair, attrs) = cookie.split_once(';').unwrap();
    assert!(pair.starts_with("lb-id="), "{cookie}");
    assert_eq!(attrs, " Path=/lb; Same-Site=Lax; HttpOnly");
    for _ in 0..5 {
        let res = kong.proxy_client().get("/lb").header("cookie", pair).send().await;
        assert_eq!(res.text(), first);
        res.assert_no_header("set-cookie");
    }
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_on_the_consumer_sticks_per_consumer() {
    let targets = [scripted("a").await, scripted("b").await, scripted("c").await];
    let bp = helpers::get_db_utils(Strategy::Sqlite, &["bundled"]).await;
    balanced(
        &bp,
        json!({ "hash_on": "consumer" }),
        &[(&targets[0], 10), (&targets[1], 10), (&targets[2], 10)],
        0,
    )
    .await;
    bp.plugins().insert(json!({ "name": "key-auth" })).await;
    for i in 0..6 {
        let c = bp.consumers().insert(json!({ "username": format!("user{i}") })).await;
        bp.table("keyauth_credentials")
            .insert(json!({ "consumer": { "id": c["id"] }, "key": format!("key{i}") }))
            .await;
    }
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..6 {
        let key = format!("key{i}");
        let first = who(&kong, "/lb", &[("apikey", &key)]).await;
        for _ in 0..3 {
            assert_eq!(who(&kong, "/lb", &[("apikey", &key)]).await, first);
        }
        seen.insert(first);
    }
    assert!(seen.len() > 1, "six consumers all on one target");
    kong.stop().await;
    let _ = <kong_plugins::key_auth::KeyAuth as kong_pdk::Plugin>::NAME;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_busy_target() {
    let (a, b) = (scripted("a").await, scripted("b").await);
    let bp = helpers::get_db_utils(Strategy::Sqlite, &[]).await;
    balanced(
        &bp,
        json!({ "algorithm": "least-connections" }),
        &[(&a, 10), (&b, 10)],
        0,
    )
    .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    // Sequential requests spread.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(who(&kong, "/lb", &[]).await);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // While a slow request holds one target, the others go to the other.
    let client = kong.proxy_client();
    let slow = tokio::spawn(async move { client.get("/lb/slow").send().await.text() });
    // Tied targets take turns; once the slow request is in flight, quick requests all go to
    // the other target.
    let busy = Arc::new(std::sync::Mutex::new(None));
    helpers::wait_until("the slow request to be in flight", Duration::from_secs(5), || {
        let (kong, busy) = (&kong, busy.clone());
        async move {
            let got = who(kong, "/lb", &[]).await;
            let again = who(kong, "/lb", &[]).await;
            if got == again {
                *busy.lock().unwrap() = Some(if got == "a" { "b" } else { "a" }.to_owned());
            }
            got == again
        }
    })
    .await;
    let busy = busy.lock().unwrap().clone().unwrap();
    for _ in 0..3 {
        assert_ne!(who(&kong, "/lb", &[]).await, busy);
    }
    assert_eq!(slow.await.unwrap(), busy);
    kong.stop().await;
}

async fn health(kong: &Gateway) -> Vec<(String, String)> {
    let res = kong.admin_client().get("/upstreams/lb.test/health").send().await;
    let body = res.assert_json();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["target"].as_str().unwrap().to_owned(),
                t["health"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn health_of(kong: &Gateway, target: &Scripted) -> String {
    let key = target.addr.to_string();
    health(kong).await.into_iter().find(|(t, _)| *t == key).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_checks_open_the_circuit() {
    let (a, b) = (scripted("a").await, scripted("b").await);
    let bp = helpers::get_db_utils(Strategy::Sqlite, &[]).await;
    balanced(
        &bp,
        json!({ "healthchecks": { "passive": { "unhealthy": { "http_failures": 2 } } } }),
        &[(&a, 10), (&b, 10)],
        0,
    )
    .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    assert_eq!(health_of(&kong, &a).await, "HEALTHY");
    // 500s from whichever target: after two on one, it is out.
    for _ in 0..4 {
        kong.proxy_client()
            .get("/lb/status/500")
            .send()
            .await
            .assert_status(500);
    }
    let states = health(&kong).await;
    assert!(states.iter().all(|(_, h)| h == "UNHEALTHY"), "{states:?}");
    // No target left: Kong's 503.
    let res = kong.proxy_client().get("/lb").send().await;
    res.assert_status(503);
    assert_eq!(
        res.assert_json()["message"],
        "failure to get a peer from the ring-balancer"
    );
    // The Admin API puts one back.
    let path = format!("/upstreams/lb.test/targets/{}/healthy", a.addr);
    kong.admin_client().put(&path).send().await.assert_status(204);
    assert_eq!(who(&kong, "/lb", &[]).await, a.name);
    let balancer = kong
        .admin_client()
        .get("/upstreams/lb.test/health?balancer_health=1")
        .send()
        .await
        .assert_json();
    assert_eq!(balancer["data"]["health"], "HEALTHY");
    assert_eq!(balancer["data"]["details"]["weight"]["available"], 10);
    assert_eq!(balancer["data"]["details"]["weight"]["total"], 20);
    assert!(balancer["node_id"].is_string());
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_probes_mark_a_target_down_and_up() {
    let (a, b) = (scripted("a").await, scripted("b").await);
    let bp = helpers::get_db_utils(Strategy::Sqlite, &[]).await;
    balanced(
        &bp,
        json!({ "healthchecks": { "active": {
            "http_path": "/health", "timeout": 1,
            "healthy": { "interval": 0.05, "successes": 1 },
            "unhealthy": { "interval": 0.05, "http_failures": 2 }
        } } }),
        &[(&a, 10), (&b, 10)],
        0,
    )
    .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    helpers::wait_until("probes", Duration::from_secs(10), || async {
        a.probes.load(Ordering::Relaxed) > 0
    })
    .await;
    a.health.store(500, Ordering::Relaxed);
    helpers::wait_until("a to be unhealthy", Duration::from_secs(10), || async {
        health_of(&kong, &a).await == "UNHEALTHY"
    })
    .await;
    for _ in 0..4 {
        assert_eq!(who(&kong, "/lb", &[]).await, b.name);
    }
    a.health.store(200, Ordering::Relaxed);
    helpers::wait_until("a to be healthy again", Duration::from_secs(10), || async {
        health_of(&kong, &a).await == "HEALTHY"
    })
    .await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(who(&kong, "/lb", &[]).await);
    }
    assert_eq!(seen.len(), 2);
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_and_upstream_rules_in_the_admin_api() {
    let a = scripted("a").await;
    let bp = helpers::get_db_utils(Strategy::Sqlite, &[]).await;
    let upstream = balanced(&bp, json!({}), &[(&a, 10)], 0).await;
    bp.targets()
        .insert(json!({ "upstream": { "id": upstream["id"] }, "target": "127.0.0.1:1", "weight": 0 }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let admin = kong.admin_client();
    // Health checks off: each target says so, with its addresses.
    let body = admin.get("/upstreams/lb.test/health").send().await.assert_json();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let live = data.iter().find(|t| t["weight"] == 10).unwrap();
    assert_eq!(live["health"], "HEALTHCHECKS_OFF");
    assert_eq!(live["data"]["addresses"][0]["ip"], "127.0.0.1");
    assert_eq!(live["data"]["addresses"][0]["port"], a.addr.port());
    assert_eq!(live["data"]["dns"], "A");
    assert_eq!(body["next"], Value::Null);
    assert!(body["node_id"].is_string());
    // /targets/all lists every target, weight 0 included.
    let all = admin.get("/upstreams/lb.test/targets/all").send().await.assert_json();
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    // Unknown targets and upstreams.
    admin
        .put("/upstreams/lb.test/targets/10.9.9.9:1/healthy")
        .send()
        .await
        .assert_status(404);
    admin.get("/upstreams/nope.test/health").send().await.assert_status(404);
    // An address that is not the target's: 400.
    let res = admin
        .put(&format!("/upstreams/lb.test/targets/{}/10.1.1.1/unhealthy", a.addr))
        .send()
        .await;
    res.assert_status(400);
    // A target stored as Kong formats it.
    let t = admin
        .post("/upstreams/lb.test/targets")
        .json(&json!({ "target": "example.test" }))
        .send()
        .await
        .assert_json();
    assert_eq!(t["target"], "example.test:8000");
    // Kong's rules: a header hash needs its header, fallbacks differ, names are hostnames.
    let res = admin
        .post("/upstreams")
        .json(&json!({ "name": "h.test", "hash_on": "header" }))
        .send()
        .await;
    res.assert_status(400);
    let err = res.assert_json();
    assert_eq!(err["fields"]["hash_on_header"], "required field missing", "{err}");
    let res = admin
        .post("/upstreams")
        .json(&json!({ "name": "h.test", "hash_on": "ip", "hash_fallback": "ip" }))
        .send()
        .await;
    res.assert_status(400);
    let res = admin
        .post("/upstreams")
        .json(&json!({ "name": "10.0.0.1" }))
        .send()
        .await;
    res.assert_status(400);
    assert_eq!(
        res.assert_json()["fields"]["name"],
        "Invalid name ('10.0.0.1'); no ip addresses allowed"
    );
    // least-connections drops the hash; the defaults are Kong's.
    let u = admin
        .post("/upstreams")
        .json(&json!({ "name": "lc.test", "algorithm": "least-connections", "hash_on": "ip" }))
        .send()
        .await
        .assert_json();
    assert_eq!(u["hash_on"], "none");
    assert_eq!(
        u["healthchecks"]["active"]["unhealthy"]["http_statuses"],
        json!([429, 404, 500, 501, 502, 503, 504, 505])
    );
    assert_eq!(u["healthchecks"]["passive"]["healthy"]["successes"], 0);
    assert_eq!(u["healthchecks"]["threshold"], 0);
    assert_eq!(u["hash_on_cookie_path"], "/");
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dbless_node_takes_health_writes() {
    let a = scripted("a").await;
    let yaml = format!(
        "_format_version: \"3.0\"\nupstreams:\n- name: lb.test\n  healthchecks: {{ passive: {{ unhealthy: {{ tcp_failures: 1 }} }} }}\n  targets:\n  - target: {}\nservices:\n- name: lb\n  host: lb.test\n  routes:\n  - paths: [\"/lb\"]\n",
        a.addr
    );
    let bp = helpers::get_db_utils(Strategy::Off, &[]).await;
    let kong = helpers::start_kong(&bp, Conf::default().declarative_config(&yaml)).await;
    assert_eq!(who(&kong, "/lb", &[]).await, "a");
    let path = format!("/upstreams/lb.test/targets/{}/unhealthy", a.addr);
    kong.admin_client().put(&path).send().await.assert_status(204);
    kong.proxy_client().get("/lb").send().await.assert_status(503);
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_header_is_the_targets_unless_preserved() {
    let bp = helpers::get_db_utils(Strategy::Sqlite, &[]).await;
    let mock = bp.mock_upstream();
    for (name, host_header) in [("plain.test", None), ("named.test", Some("virtual.test"))] {
        let u = bp
            .upstreams()
            .insert(json!({ "name": name, "host_header": host_header }))
            .await;
        bp.targets()
            .insert(json!({ "upstream": { "id": u["id"] }, "target": mock.to_string() }))
            .await;
        let s = bp.services().insert(json!({ "name": name, "host": name })).await;
        bp.routes()
            .insert(json!({ "paths": [format!("/{name}")], "service": { "id": s["id"] } }))
            .await;
    }
    let kept = bp.services().insert(json!({ "host": "named.test" })).await;
    bp.routes()
        .insert(json!({ "paths": ["/kept"], "preserve_host": true, "service": { "id": kept["id"] } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let host = |path: &'static str| {
        let kong = &kong;
        async move {
            let res = kong.proxy_client().get(path).header("host", "client.test").send().await;
            res.assert_status(200);
            res.request().header("host").unwrap()
        }
    };
    assert_eq!(host("/plain.test").await, mock.to_string());
    assert_eq!(host("/named.test").await, format!("virtual.test:{}", mock.port()));
    assert_eq!(host("/kept").await, "client.test");
    kong.stop().await;
}

/// A local DNS server: answers each query from `records` (name → records), NXDOMAIN for
/// names it does not know, after `delay` milliseconds.
#[derive(Clone, Default)]
struct DnsStub(
    Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<hickory_proto::rr::Record>>>>,
    Arc<std::sync::atomic::AtomicU64>,
);

impl DnsStub {
    async fn start(&self) -> SocketAddr {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records = self.0.clone();
        let delay = self.1.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut answer = Message::new();
                answer
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_recursion_desired(true)
                    .set_recursion_available(true)
                    .set_authoritative(true)
                    .add_queries(query.queries().to_vec());
                let q = &query.queries()[0];
                let name = q.name().to_utf8().trim_end_matches('.').to_ascii_lowercase();
                let known = records.lock().unwrap().get(&name).cloned();
                match known {
                    Some(all) => {
                        answer.add_answers(all.into_iter().filter(|r| r.record_type() == q.query_type()));
                    }
                    None => {
                        answer.set_response_code(ResponseCode::NXDomain);
                    }
                }
                tokio::time::sleep(Duration::from_millis(delay.load(Ordering::Relaxed))).await;
                let _ = socket.send_to(&answer.to_vec().unwrap(), peer).await;
            }
        });
        addr
    }

    fn set(&self, name: &str, records: Vec<hickory_proto::rr::Record>) {
        self.0.lock().unwrap().insert(name.to_owned(), records);
    }
}

fn a_record(name: &str, ttl: u32) -> hickory_proto::rr::Record {
    use hickory_proto::rr::{Name, RData, Record, rdata::A};
    Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, RData::A(A::new(127, 0, 0, 1)))
}

fn srv_record(name: &str, ttl: u32, port: u16, weight: u16, target: &str) -> hickory_proto::rr::Record {
    use hickory_proto::rr::{Name, RData, Record, rdata::SRV};
    let srv = SRV::new(1, weight, port, Name::from_ascii(target).unwrap());
    Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, RData::SRV(srv))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_named_by_host_follow_dns_srv_ttls_and_the_hosts_file() {
    let (a, b, c) = (scripted("a").await, scripted("b").await, scripted("c").await);
    let stub = DnsStub::default();
    // srv.test: SRV to a.test (a's port), 1 s TTL; a.test and b.test are 127.0.0.1.
    stub.set("srv.test", vec![srv_record("srv.test", 1, a.addr.port(), 10, "a.test")]);
    stub.set("a.test", vec![a_record("a.test", 60)]);
    stub.set("b.test", vec![a_record("b.test", 60)]);
    let resolver = stub.start().await;
    let dir = std::env::temp_dir().join(format!("kong-balancer-dns-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 hosts.test\n").unwrap();

    let bp = helpers::get_db_utils(Strategy::Sqlite, &[]).await;
    let srv = bp
        .upstreams()
        .insert(json!({ "name": "srv.upstream", "use_srv_name": true }))
        .await;
    bp.targets()
        .insert(json!({ "upstream": { "id": srv["id"] }, "target": "srv.test:80" }))
        .await;
    let named = bp.upstreams().insert(json!({ "name": "named.upstream" })).await;
    bp.targets()
        .insert(json!({ "upstream": { "id": named["id"] }, "target": format!("hosts.test:{}", c.addr.port()) }))
        .await;
    let missing = bp.upstreams().insert(json!({ "name": "missing.upstream" })).await;
    bp.targets()
        .insert(json!({ "upstream": { "id": missing["id"] }, "target": "nowhere.test:80" }))
        .await;
    for name in ["srv", "named", "missing"] {
        let s = bp
            .services()
            .insert(json!({ "name": name, "host": format!("{name}.upstream") }))
            .await;
        bp.routes()
            .insert(json!({ "paths": [format!("/{name}")], "service": { "id": s["id"] } }))
            .await;
    }
    let kong = helpers::start_kong(&bp, Conf::default().dns_resolver(resolver, &hosts)).await;

    // SRV: the record's port, and (use_srv_name) its target name as the Host.
    helpers::wait_until("srv.test to resolve", Duration::from_secs(10), || async {
        let res = kong.proxy_client().get("/srv").send().await;
        res.status() == 200 && res.text() == "a"
    })
    .await;
    let health = kong
        .admin_client()
        .get("/upstreams/srv.upstream/health")
        .send()
        .await
        .assert_json();
    assert_eq!(health["data"][0]["data"]["dns"], "SRV", "{health}");
    assert_eq!(health["data"][0]["data"]["addresses"][0]["port"], a.addr.port());
    // Kong's balancer keeps an SRV answer's target name as the address.
    assert_eq!(health["data"][0]["data"]["addresses"][0]["ip"], "a.test", "{health}");
    // The answer changes; once its TTL is over, requests follow it.
    stub.set("srv.test", vec![srv_record("srv.test", 1, b.addr.port(), 10, "b.test")]);
    helpers::wait_until("srv.test's new answer", Duration::from_secs(10), || async {
        kong.proxy_client().get("/srv").send().await.text() == "b"
    })
    .await;
    // use_srv_name: the SRV record's target name is the Host.
    assert_eq!(
        kong.proxy_client().get("/srv/host").send().await.text(),
        format!("b.test:{}", b.addr.port())
    );
    // The hosts file answers without a query.
    helpers::wait_until("hosts.test", Duration::from_secs(10), || async {
        let health = kong
            .admin_client()
            .get("/upstreams/named.upstream/health")
            .send()
            .await
            .assert_json();
        health["data"][0]["data"]["dns"] == "A" && health["data"][0]["data"]["addresses"][0]["ip"] == "127.0.0.1"
    })
    .await;
    assert_eq!(who(&kong, "/named", &[]).await, "c");
    // The Host is the target's name, not the address it resolved to.
    assert_eq!(
        kong.proxy_client().get("/named/host").send().await.text(),
        format!("hosts.test:{}", c.addr.port())
    );
    // A configuration change starts from what the names resolved to: while the new
    // configuration's first query is slow, requests still go where DNS said (the system
    // resolver knows nothing of srv.test).
    stub.1.store(1000, Ordering::Relaxed);
    kong.admin_client()
        .post("/consumers")
        .json(&json!({ "username": "swap" }))
        .send()
        .await
        .assert_status(201);
    for _ in 0..3 {
        assert_eq!(who(&kong, "/srv", &[]).await, "b");
    }
    stub.1.store(0, Ordering::Relaxed);
    // A name nothing answers: DNS_ERROR, and no peer.
    helpers::wait_until("nowhere.test to fail", Duration::from_secs(10), || async {
        let health = kong
            .admin_client()
            .get("/upstreams/missing.upstream/health")
            .send()
            .await
            .assert_json();
        health["data"][0]["health"] == "DNS_ERROR"
    })
    .await;
    let res = kong.proxy_client().get("/missing").send().await;
    res.assert_status(503);
    kong.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
