//! Stream proxying over real sockets (issue 17): TCP connections routed by destination port
//! and source with Kong's priorities, `preread` exits with Kong's rules, ip-restriction in preread, the stream
//! shape of `kong.log.serialize()`, and the Admin API's stream route rules.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use kong_pdk::prelude::*;
use kong_pdk::testing::helpers::{self, Conf, Gateway};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP echo server that prefixes what it echoes with `tag`.
async fn echo(tag: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut out = tag.as_bytes().to_vec();
                            out.extend_from_slice(&buf[..n]);
                            if tcp.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends `data`, half-closes, and reads everything until the gateway closes.
async fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(data).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("the gateway ends the session");
    got
}

/// Exits in preread with the configured status and body.
#[plugin(priority = 1000, version = "1.0.0", name = "stream-exit", protocols = protocols)]
pub struct StreamExit {
    /// The status.
    pub status: u16,
}

/// What `log` saw, by session.
static LOGGED: Mutex<Vec<Value>> = Mutex::new(Vec::new());

#[handler]
impl Handler for StreamExit {
    async fn preread(&self, _kong: &mut Kong<Preread>) -> kong_pdk::Result {
        Err(Exit::new(
            self.status,
            json!({ "status": self.status, "message": "plugin executed" }),
        )
        .into())
    }
}

/// Records `kong.log.serialize()` in log.
#[plugin(priority = 10, version = "1.0.0", name = "stream-logger", protocols = protocols)]
pub struct StreamLogger {}

#[handler]
impl Handler for StreamLogger {
    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        LOGGED.lock().unwrap().push(kong.log().serialize());
        Ok(())
    }
}

async fn logged(port: u16) -> Value {
    let mut found = None;
    helpers::wait_until("the session's log", Duration::from_secs(10), || {
        let hit = LOGGED
            .lock()
            .unwrap()
            .iter()
            .find(|l| l["upstream"]["received"].as_u64() == Some(port as u64) || l["session"]["server_port"] == port)
            .cloned();
        let done = hit.is_some();
        found = hit;
        async move { done }
    })
    .await;
    found.unwrap()
}

async fn service(bp: &helpers::Blueprint, name: &str, upstream: SocketAddr) -> Value {
    bp.services()
        .insert(json!({ "name": name, "url": format!("tcp://{upstream}") }))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_routed_and_proxied_both_ways() {
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled", "stream-logger"]).await;
        let (a, b) = (echo("a:").await, echo("b:").await);
        let sa = service(&bp, "a", a).await;
        let sb = service(&bp, "b", b).await;
        // The gateway's stream port is not known before it starts: route by source (the
        // test's loopback address) and by a destination port nothing listens on.
        bp.routes()
            .insert(
                json!({ "protocols": ["tcp"], "sources": [{ "ip": "127.0.0.0/8" }], "service": { "id": sa["id"] } }),
            )
            .await;
        bp.routes()
            .insert(json!({ "protocols": ["tcp"], "destinations": [{ "port": 1 }], "service": { "id": sb["id"] } }))
            .await;
        bp.plugins()
            .insert(json!({ "name": "stream-logger", "protocols": ["tcp", "tls"] }))
            .await;
        let kong: Gateway = helpers::start_kong(&bp, Conf::default()).await;
        let got = exchange(kong.stream_addr(), b"hello over tcp").await;
        assert_eq!(got, b"a:hello over tcp", "[#{strategy}]");
        // A megabyte each way, in chunks.
        let big = vec![b'x'; 1 << 20];
        let got = exchange(kong.stream_addr(), &big).await;
        assert_eq!(
            got.len(),
            big.len() + 2 * got.windows(2).filter(|w| w == b"a:").count(),
            "[#{strategy}]"
        );
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_routes_are_picked_by_kongs_priority_over_real_sockets() {
    // Every route matches a connection from 127.0.0.1 to the gateway on 127.0.0.1; Kong's
    // weights pick one: sources and destinations together first, then a source IP, then a
    // source CIDR, then a destination IP.
    let routes = [
        (
            "both:",
            json!({ "sources": [{ "ip": "127.0.0.0/8" }], "destinations": [{ "ip": "127.0.0.1" }] }),
        ),
        ("source-ip:", json!({ "sources": [{ "ip": "127.0.0.1" }] })),
        ("source-cidr:", json!({ "sources": [{ "ip": "127.0.0.0/8" }] })),
        ("destination-ip:", json!({ "destinations": [{ "ip": "127.0.0.1" }] })),
    ];
    let strategy = helpers::all_strategies()[0];
    for first in 0..routes.len() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        // The routes from `first` on, added lowest priority first: insertion order does not decide.
        for (tag, attributes) in routes[first..].iter().rev() {
            let svc = service(&bp, tag.trim_end_matches(':'), echo(tag).await).await;
            let mut route = attributes.clone();
            route["protocols"] = json!(["tcp"]);
            route["service"] = json!({ "id": svc["id"] });
            bp.routes().insert(route).await;
        }
        let kong: Gateway = helpers::start_kong(&bp, Conf::default()).await;
        let got = exchange(kong.stream_addr(), b"hi").await;
        let expected = format!("{}hi", routes[first].0);
        assert_eq!(
            String::from_utf8_lossy(&got),
            expected,
            "[#{strategy}] routes from {first}"
        );
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serializer_has_kongs_stream_shape() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled", "stream-logger"]).await;
    // The mock upstream's TCP echo.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(kong_pdk::gateway::mock_upstream::serve_tcp_echo(
        listener,
        std::future::pending(),
    ));
    let s = service(&bp, "echo", up).await;
    bp.routes()
        .insert(json!({ "name": "by-source", "protocols": ["tcp"], "sources": [{ "ip": "127.0.0.1" }], "service": { "id": s["id"] } }))
        .await;
    bp.plugins()
        .insert(json!({ "name": "stream-logger", "protocols": ["tcp"] }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let got = exchange(kong.stream_addr(), b"12345").await;
    assert_eq!(got, b"12345");
    let entry = logged(kong.stream_addr().port()).await;
    assert_eq!(entry["session"]["received"], 5);
    assert_eq!(entry["session"]["sent"], 5);
    assert_eq!(entry["session"]["status"], 200);
    assert_eq!(entry["upstream"], json!({ "received": 5, "sent": 5 }));
    assert_eq!(entry["route"]["name"], "by-source");
    assert_eq!(entry["service"]["name"], "echo");
    assert!(entry.get("request").is_none() && entry.get("response").is_none());
    assert!(entry["latencies"]["session"].is_u64());
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preread_exits_follow_kongs_stream_rules() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled", "stream-exit"]).await;
    let up = echo("").await;
    let s = service(&bp, "echo", up).await;
    let ok = bp
        .routes()
        .insert(json!({ "protocols": ["tcp"], "sources": [{ "ip": "127.0.0.1" }], "service": { "id": s["id"] } }))
        .await;
    bp.plugins()
        .insert(json!({ "name": "stream-exit", "route": { "id": ok["id"] }, "protocols": ["tcp"], "config": { "status": 200 } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    // 200: the body, then the end of the session (the upstream never sees the bytes).
    let got = exchange(kong.stream_addr(), b"ignored").await;
    assert_eq!(
        serde_json::from_slice::<Value>(&got).unwrap(),
        json!({ "status": 200, "message": "plugin executed" })
    );
    kong.stop().await;

    // 403 (ip-restriction): no body, the session ends.
    assert_eq!(
        <kong_plugins::ip_restriction::IpRestriction as kong_pdk::Plugin>::NAME,
        "ip-restriction"
    );
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled"]).await;
    let s = service(&bp, "echo", up).await;
    let r = bp
        .routes()
        .insert(json!({ "protocols": ["tcp"], "sources": [{ "ip": "127.0.0.1" }], "service": { "id": s["id"] } }))
        .await;
    let restriction = bp
        .plugins()
        .insert(json!({ "name": "ip-restriction", "route": { "id": r["id"] }, "config": { "deny": ["127.0.0.1"] } }))
        .await;
    assert_eq!(
        restriction["protocols"],
        json!(["http", "https", "tcp", "tls", "grpc", "grpcs"]),
        "Kong's ip-restriction covers streams by default"
    );
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    assert_eq!(exchange(kong.stream_addr(), b"let me in").await, b"");
    assert!(
        kong.error_log()
            .iter()
            .any(|l| l.contains("IP address not allowed: 127.0.0.1")),
        "{:?}",
        kong.error_log()
    );
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_no_service_and_a_dead_upstream_end_the_session() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled"]).await;
    // Nothing listens on the service's port.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let s = service(&bp, "dead", dead).await;
    bp.routes()
        .insert(json!({ "protocols": ["tcp"], "sources": [{ "ip": "127.0.0.1" }], "service": { "id": s["id"] } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    assert_eq!(exchange(kong.stream_addr(), b"anyone?").await, b"");
    kong.stop().await;
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled"]).await;
    bp.routes()
        .insert(json!({ "protocols": ["tcp"], "destinations": [{ "port": 1 }] }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    assert_eq!(exchange(kong.stream_addr(), b"anyone?").await, b"");
    assert!(
        kong.error_log()
            .iter()
            .any(|l| l.contains("no Route found with those values")),
        "{:?}",
        kong.error_log()
    );
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_routes_follow_kongs_schema() {
    let bp = helpers::get_db_utils(helpers::Strategy::Sqlite, &["bundled"]).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let admin = kong.admin_client();
    let post = |path: &'static str, body: Value| {
        let admin = &admin;
        async move {
            let res = admin.post(path).json(&body).send().await;
            (res.status(), res.assert_json())
        }
    };
    let (_, body) = post("/routes", json!({ "protocols": ["tcp"] })).await;
    assert_eq!(
        body["fields"]["@entity"],
        json!(["must set one of 'sources', 'destinations', 'snis' when 'protocols' is 'tcp', 'tls' or 'udp'"])
    );
    let (_, body) = post(
        "/routes",
        json!({ "protocols": ["tcp"], "paths": ["/x"], "sources": [{ "port": 1 }] }),
    )
    .await;
    assert_eq!(
        body["fields"]["paths"],
        "cannot set 'paths' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'"
    );
    let (_, body) = post(
        "/routes",
        json!({ "protocols": ["tls_passthrough"], "sources": [{ "port": 1 }] }),
    )
    .await;
    assert_eq!(
        body["fields"]["@entity"],
        json!(["must set snis when 'protocols' is 'tls_passthrough'"])
    );
    let (_, body) = post(
        "/routes",
        json!({ "protocols": ["tcp"], "sources": [{ "ip": "10.0.0.0/33" }] }),
    )
    .await;
    assert_eq!(
        body["fields"]["sources"],
        json!([{ "ip": "invalid ip or cidr range: '10.0.0.0/33'" }])
    );
    let (_, body) = post("/routes", json!({ "protocols": ["tcp"], "sources": [{}] })).await;
    assert_eq!(
        body["fields"]["sources"],
        json!([{ "@entity": ["at least one of these fields must be non-empty: 'ip', 'port'"] }])
    );
    let (_, body) = post(
        "/routes",
        json!({ "protocols": ["http"], "paths": ["/"], "sources": [{ "port": 1 }] }),
    )
    .await;
    assert_eq!(
        body["fields"]["sources"],
        "cannot set 'sources' when 'protocols' is 'http' or 'https'"
    );
    let (_, body) = post(
        "/routes",
        json!({ "protocols": ["tcp", "http"], "sources": [{ "port": 1 }] }),
    )
    .await;
    assert!(
        body["fields"]["protocols"]
            .as_str()
            .unwrap()
            .starts_with("these sets are mutually exclusive")
    );
    let (status, route) = post(
        "/routes",
        json!({ "protocols": ["tcp", "tls"], "destinations": [{ "ip": "10.0.0.1", "port": 9000 }] }),
    )
    .await;
    assert_eq!(status, 201, "{route}");
    assert_eq!(route["destinations"], json!([{ "ip": "10.0.0.1", "port": 9000 }]));
    let (_, body) = post(
        "/services",
        json!({ "name": "t", "protocol": "tcp", "host": "h", "path": "/x" }),
    )
    .await;
    assert_eq!(body["fields"]["path"], "value must be null");
    kong.stop().await;
}

/// The mock upstream's TLS echo for `name` (what it echoes is prefixed with the server name
/// the client sent). Returns its address and its certificate (DER).
async fn tls_echo(name: &'static str) -> (SocketAddr, Vec<u8>) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let (pair, cert, _) = kong_pdk::gateway::tls::CertificatePair::self_signed(&[name]).unwrap();
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        kong_pdk::gateway::mock_upstream::serve_tls_echo(listener, &pair, std::future::pending()).await
    });
    (addr, der.to_vec())
}

/// Counts the phases of TLS stream sessions.
#[plugin(priority = 500, version = "1.0.0", name = "stream-phases", protocols = protocols)]
pub struct StreamPhases {}

static PHASES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

#[handler]
impl Handler for StreamPhases {
    async fn certificate(&self, _kong: &mut Kong<Certificate>) -> kong_pdk::Result {
        PHASES.lock().unwrap().push("certificate");
        Ok(())
    }

    async fn preread(&self, _kong: &mut Kong<Preread>) -> kong_pdk::Result {
        PHASES.lock().unwrap().push("preread");
        Ok(())
    }

    async fn log(&self, _kong: &mut Kong<Log>) -> kong_pdk::Result {
        PHASES.lock().unwrap().push("log");
        Ok(())
    }
}

/// Writes `data` over `io`, ends its side, reads to the end.
async fn exchange_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut io: S, data: &[u8]) -> Vec<u8> {
    io.write_all(data).await.unwrap();
    io.shutdown().await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut got))
        .await
        .expect("the gateway ends the session");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_terminated_or_passed_through_as_the_route_says() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled", "stream-phases"]).await;
    let plain = echo("plain:").await;
    let (secure, upstream_cert) = tls_echo("pass.test").await;
    let terminated = service(&bp, "terminated", plain).await;
    let passed = service(&bp, "passed", secure).await;
    bp.routes()
        .insert(json!({ "protocols": ["tls"], "snis": ["term.test"], "service": { "id": terminated["id"] } }))
        .await;
    bp.routes()
        .insert(json!({ "protocols": ["tls_passthrough"], "snis": ["pass.test"], "service": { "id": passed["id"] } }))
        .await;
    bp.plugins()
        .insert(json!({ "name": "stream-phases", "protocols": ["tcp", "tls", "tls_passthrough"] }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;

    // Terminated: the gateway's certificate, plaintext to the upstream; certificate, preread
    // and log once each.
    let tls = helpers::tls_client(kong.stream_ssl_addr(), "term.test").await.unwrap();
    assert_eq!(exchange_over(tls, b"secret").await, b"plain:secret");
    helpers::wait_until("the session's log", Duration::from_secs(10), || async {
        PHASES.lock().unwrap().contains(&"log")
    })
    .await;
    assert_eq!(*PHASES.lock().unwrap(), ["certificate", "preread", "log"]);
    assert_ne!(
        helpers::served_certificate(kong.stream_ssl_addr(), "term.test")
            .await
            .unwrap(),
        upstream_cert
    );
    helpers::wait_until("that session's log", Duration::from_secs(10), || async {
        PHASES.lock().unwrap().iter().filter(|p| **p == "log").count() >= 2
    })
    .await;
    PHASES.lock().unwrap().clear();

    // Passed through: the upstream's certificate and its TLS, the client's server name.
    assert_eq!(
        helpers::served_certificate(kong.stream_ssl_addr(), "pass.test")
            .await
            .unwrap(),
        upstream_cert
    );
    let tls = helpers::tls_client(kong.stream_ssl_addr(), "pass.test").await.unwrap();
    assert_eq!(exchange_over(tls, b"hello").await, b"pass.test:hello");
    helpers::wait_until("the passthrough sessions' logs", Duration::from_secs(10), || async {
        PHASES.lock().unwrap().iter().filter(|p| **p == "log").count() >= 2
    })
    .await;
    assert!(
        !PHASES.lock().unwrap().contains(&"certificate"),
        "no certificate phase when passing through"
    );
    // A server name no route has: the session ends.
    assert!(
        helpers::tls_client(kong.stream_ssl_addr(), "nobody.test")
            .await
            .is_err()
    );
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_services_speak_tls_to_their_upstream() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled"]).await;
    let (secure, _) = tls_echo("localhost").await;
    let s = bp
        .services()
        .insert(json!({ "name": "secure", "url": format!("tls://localhost:{}", secure.port()) }))
        .await;
    bp.routes()
        .insert(json!({ "protocols": ["tcp"], "sources": [{ "ip": "127.0.0.1" }], "service": { "id": s["id"] } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    assert_eq!(exchange(kong.stream_addr(), b"in clear").await, b"localhost:in clear");
    kong.stop().await;
}

/// Counts requests and sessions it sees, by subsystem.
#[plugin(priority = 400, version = "1.0.0", name = "subsystem-probe", protocols = protocols)]
pub struct SubsystemProbe {}

static SEEN_BY: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
/// `kong.client.get_protocol()` in preread.
static PROTOCOLS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[handler]
impl Handler for SubsystemProbe {
    async fn access(&self, _kong: &mut Kong<Access>) -> kong_pdk::Result {
        SEEN_BY.lock().unwrap().push("http");
        Ok(())
    }

    async fn preread(&self, kong: &mut Kong<Preread>) -> kong_pdk::Result {
        SEEN_BY.lock().unwrap().push("stream");
        let protocol = kong.client().get_protocol()?;
        PROTOCOLS.lock().unwrap().push(protocol);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_runs_in_the_subsystems_of_its_protocols() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled", "subsystem-probe"]).await;
    let up = echo("").await;
    let s = service(&bp, "echo", up).await;
    bp.routes()
        .insert(json!({ "protocols": ["tcp"], "sources": [{ "ip": "127.0.0.1" }], "service": { "id": s["id"] } }))
        .await;
    bp.routes().insert(json!({ "paths": ["/"] })).await;
    // Global, HTTP protocols only (the default): streams do not run it.
    bp.plugins().insert(json!({ "name": "subsystem-probe" })).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    kong.proxy_client().get("/anything").send().await.assert_status(200);
    assert_eq!(exchange(kong.stream_addr(), b"x").await, b"x");
    assert_eq!(*SEEN_BY.lock().unwrap(), ["http"]);
    kong.stop().await;
    SEEN_BY.lock().unwrap().clear();
    // Stream protocols only: HTTP requests do not run it.
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled", "subsystem-probe"]).await;
    let s = service(&bp, "echo", up).await;
    bp.routes()
        .insert(json!({ "protocols": ["tcp"], "sources": [{ "ip": "127.0.0.1" }], "service": { "id": s["id"] } }))
        .await;
    bp.routes().insert(json!({ "paths": ["/"] })).await;
    bp.plugins()
        .insert(json!({ "name": "subsystem-probe", "protocols": ["tcp"] }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    kong.proxy_client().get("/anything").send().await.assert_status(200);
    assert_eq!(exchange(kong.stream_addr(), b"x").await, b"x");
    assert_eq!(*SEEN_BY.lock().unwrap(), ["stream"]);
    assert_eq!(
        *PROTOCOLS.lock().unwrap(),
        ["tcp"],
        "a route with one protocol: that one"
    );
    kong.stop().await;
}

/// A UDP echo server that prefixes its answers with `tag`.
async fn udp_echo(tag: &'static str) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut out = tag.as_bytes().to_vec();
            out.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&out, from).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_make_sessions_logged_once_when_idle() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled", "stream-logger"]).await;
    let up = udp_echo("u:").await;
    let s = bp
        .services()
        .insert(json!({ "name": "udp-echo", "url": format!("udp://{up}"), "read_timeout": 300 }))
        .await;
    bp.routes()
        .insert(json!({ "name": "udp", "protocols": ["udp"], "sources": [{ "ip": "127.0.0.1" }], "service": { "id": s["id"] } }))
        .await;
    bp.plugins()
        .insert(json!({ "name": "stream-logger", "protocols": ["udp"] }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(kong.stream_udp_addr()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    for message in [&b"one"[..], b"two"] {
        client.send(message).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(&buf[..n], [b"u:", message].concat().as_slice());
    }
    // Both datagrams were one session: logged once, after 300 ms of silence.
    let mut entry = None;
    helpers::wait_until("the UDP session's log", Duration::from_secs(10), || {
        let found = LOGGED
            .lock()
            .unwrap()
            .iter()
            .find(|l| l["route"]["name"] == "udp")
            .cloned();
        let done = found.is_some();
        entry = found;
        async move { done }
    })
    .await;
    let entry = entry.unwrap();
    assert_eq!(entry["session"]["received"], 6, "{entry}");
    assert_eq!(entry["session"]["sent"], 10);
    assert_eq!(entry["upstream"], json!({ "received": 10, "sent": 6 }));
    assert_eq!(
        LOGGED
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["route"]["name"] == "udp")
            .count(),
        1
    );
    kong.stop().await;
}

/// Answers each session with `kong.client.get_protocol()`.
#[plugin(priority = 300, version = "1.0.0", name = "protocol-echo", protocols_default = ["tcp", "tls"])]
pub struct ProtocolEcho {}

#[handler]
impl Handler for ProtocolEcho {
    async fn preread(&self, kong: &mut Kong<Preread>) -> kong_pdk::Result {
        let protocol = kong.client().get_protocol()?;
        Err(Exit::new(200, protocol).into())
    }
}

#[tokio::test]
async fn a_multi_protocol_stream_route_reports_the_service_side() {
    use kong_pdk::testing::{Harness, TestSession};
    // The harness's stream route takes tcp and tls; its service is tcp.
    let gw = Harness::new().plugin::<ProtocolEcho>(json!({})).start().await.unwrap();
    let plain = gw.stream(TestSession::new("x"), |_| Vec::new()).await;
    assert_eq!((plain.status, plain.to_client.as_ref()), (200, &b"tcp"[..]));
    let tls = gw.stream(TestSession::new("x").tls("a.test"), |_| Vec::new()).await;
    assert_eq!(
        tls.to_client.as_ref(),
        b"tcp",
        "the service is tcp, whatever the client spoke"
    );
    assert!(
        tls.to_upstream.is_none(),
        "the exit ended the session before the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_services_verify_their_upstream_when_asked() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled"]).await;
    let (secure, _) = tls_echo("localhost").await;
    // Verified against the system's roots, which did not sign the upstream's self-signed
    // certificate (CA entities go through the same TLS settings as https services').
    let verified = bp
        .services()
        .insert(json!({
            "name": "verified", "url": format!("tls://localhost:{}", secure.port()), "tls_verify": true,
        }))
        .await;
    bp.routes()
        .insert(
            json!({ "protocols": ["tcp"], "sources": [{ "ip": "127.0.0.1" }], "service": { "id": verified["id"] } }),
        )
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    assert_eq!(
        exchange(kong.stream_addr(), b"trust me").await,
        b"",
        "an upstream no trusted CA signed: the session ends"
    );
    kong.stop().await;
}

/// Turns the upstream TLS of `tls` services off for each session.
#[plugin(priority = 200, version = "1.0.0", name = "tls-off", protocols_default = ["tcp"])]
pub struct TlsOff {}

#[handler]
impl Handler for TlsOff {
    async fn preread(&self, kong: &mut Kong<Preread>) -> kong_pdk::Result {
        kong.service().request().disable_tls();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_tls_sends_a_tls_service_plain_tcp() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled", "tls-off"]).await;
    let plain = echo("plain:").await;
    let s = bp
        .services()
        .insert(json!({ "name": "said-tls", "url": format!("tls://{plain}") }))
        .await;
    let r = bp
        .routes()
        .insert(json!({ "protocols": ["tcp"], "sources": [{ "ip": "127.0.0.1" }], "service": { "id": s["id"] } }))
        .await;
    bp.plugins()
        .insert(json!({ "name": "tls-off", "route": { "id": r["id"] } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    assert_eq!(exchange(kong.stream_addr(), b"clear").await, b"plain:clear");
    kong.stop().await;
}
