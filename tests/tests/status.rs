//! The node's own numbers (Kong's `kong/api/routes/health.lua`, `kong/status/*`,
//! `kong/pdk/nginx.lua`, `kong/pdk/node.lua`): `GET /status` on the Admin API and the Status
//! API with the proxy's counters and the memory in Kong's units, `/status/ready`, and
//! `kong.nginx.get_statistics()` / `kong.node.get_memory_stats()` / `kong.cluster.get_id()` for
//! plugins, through the harness and the gateway.

use kong_pdk::prelude::*;
use kong_pdk::testing::helpers::{self, Conf, Strategy};
use kong_pdk::testing::{Harness, MockResponse, TestRequest};
use serde_json::{Value, json};

/// Reports `kong.nginx` and `kong.node.get_memory_stats` in a response header.
#[plugin(priority = 100, version = "1.0.0", name = "nginx-probe")]
pub struct NginxProbe {}

#[handler]
impl Handler for NginxProbe {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let report = json!({
            "subsystem": kong.nginx().get_subsystem(),
            "cluster_id": kong.cluster().get_id(),
            "statistics": kong.nginx().get_statistics(),
            "memory": kong.node().get_memory_stats(Some("k"), Some(1.0)).map_err(|e| kong_pdk::Error::msg(e.0))?,
            "bad_unit": kong.node().get_memory_stats(Some("x"), None).unwrap_err().0,
        });
        kong.response().set_header("X-Report", report.to_string())?;
        Ok(())
    }
}

const COUNTERS: [&str; 7] = [
    "connections_active",
    "connections_reading",
    "connections_writing",
    "connections_waiting",
    "connections_accepted",
    "connections_handled",
    "total_requests",
];

#[tokio::test]
async fn plugins_read_the_counters_through_the_harness() {
    let gw = Harness::new().plugin::<NginxProbe>(json!({})).start().await.unwrap();
    for n in 1..=2 {
        let res = gw.send(TestRequest::get("/"), |_| MockResponse::ok("")).await;
        let report: Value = serde_json::from_str(res.header("X-Report").unwrap()).unwrap();
        assert_eq!(report["subsystem"], "http");
        assert_eq!(report["cluster_id"], Value::Null, "no database, no cluster id");
        let s = &report["statistics"];
        assert_eq!(s["total_requests"], n);
        // The request being answered is the one writing, on the one open connection.
        assert_eq!(
            (s["connections_active"].as_u64(), s["connections_writing"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(s["connections_accepted"], n);
        let gc = report["memory"]["workers_lua_vms"][0]["http_allocated_gc"]
            .as_str()
            .unwrap();
        assert!(
            gc.ends_with(" KiB") && gc.split(' ').next().unwrap().split('.').nth(1).unwrap().len() == 1,
            "{gc}"
        );
        assert_eq!(report["memory"]["lua_shared_dicts"], json!({}));
        assert_eq!(report["bad_unit"], "invalid unit 'x' (expected 'k/K', 'm/M', or 'g/G')");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_the_proxys_connections_and_requests() {
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled", "nginx-probe"]).await;
        let route = bp.routes().insert(json!({ "paths": ["/"] })).await;
        bp.plugins()
            .insert(json!({ "name": "nginx-probe", "route": { "id": route["id"] } }))
            .await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();
        let mut last = Value::Null;
        for _ in 0..3 {
            let res = proxy.get("/get").send().await;
            res.assert_status(200);
            last = serde_json::from_str(&res.assert_header("X-Report")).unwrap();
        }
        assert!(
            last["statistics"]["total_requests"].as_u64().unwrap() >= 3,
            "[#{strategy}] {last}"
        );
        assert!(
            last["statistics"]["connections_writing"].as_u64().unwrap() >= 1,
            "[#{strategy}]"
        );

        for client in [kong.admin_client(), kong.status_client()] {
            let status = client.get("/status").send().await.assert_json();
            for counter in COUNTERS {
                assert!(status["server"][counter].is_u64(), "[#{strategy}] {counter}: {status}");
            }
            assert!(
                status["server"]["total_requests"].as_u64().unwrap() >= 3,
                "[#{strategy}]"
            );
            assert!(status["server"]["connections_accepted"].as_u64().unwrap() >= 1);
            let gc = status["memory"]["workers_lua_vms"][0]["http_allocated_gc"]
                .as_str()
                .unwrap();
            assert!(gc.ends_with(" MiB"), "[#{strategy}] the default unit is m: {gc}");
            assert_eq!(status["memory"]["workers_lua_vms"][0]["pid"], std::process::id());
            assert_eq!(status["memory"]["lua_shared_dicts"], json!({}));
            match strategy {
                Strategy::Off => {
                    assert!(status.get("database").is_none());
                    assert!(status["configuration_hash"].is_string());
                }
                _ => assert_eq!(status["database"], json!({ "reachable": true }), "[#{strategy}]"),
            }
        }
        let admin = kong.admin_client();
        let bytes = admin.get("/status?unit=b").send().await.assert_json();
        assert!(
            bytes["memory"]["workers_lua_vms"][0]["http_allocated_gc"]
                .as_u64()
                .unwrap()
                > 0
        );
        let kib = admin.get("/status?unit=K&scale=3").send().await.assert_json();
        let gc = kib["memory"]["workers_lua_vms"][0]["http_allocated_gc"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            gc.ends_with(" KiB") && gc.split(['.', ' ']).nth(1).unwrap().len() == 3,
            "{gc}"
        );
        for (query, message) in [
            ("unit=V", "invalid unit 'V' (expected 'k/K', 'm/M', or 'g/G')"),
            ("unit=g&scale=-1", "scale must be equal or greater than 0"),
        ] {
            let res = admin.get(&format!("/status?{query}")).send().await;
            res.assert_status(400);
            assert_eq!(res.assert_json(), json!({ "message": message }), "{query}");
        }
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_api_answers_readiness_and_nothing_else() {
    let bp = helpers::get_db_utils(Strategy::Sqlite, &["bundled"]).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let status = kong.status_client();
    let ready = status.get("/status/ready").send().await;
    ready.assert_status(200);
    assert_eq!(ready.assert_json(), json!({ "message": "ready" }));
    // The Admin API's entities are not on the Status API.
    let res = status.get("/services").send().await;
    res.assert_status(404);
    assert_eq!(res.assert_json(), json!({ "message": "Not found" }));
    assert_eq!(status.put("/status").send().await.status(), 405);
    status
        .post("/status/ready")
        .json(&json!({ "status": "nope" }))
        .send()
        .await
        .assert_status(400);
    status
        .post("/status/ready")
        .form(&json!({ "status": "draining" }))
        .send()
        .await
        .assert_status(204);
    let draining = status.get("/status/ready").send().await;
    draining.assert_status(503);
    assert_eq!(draining.assert_json(), json!({ "message": "draining" }));
    kong.stop().await;

    // DB-less without any configuration: not ready.
    let empty = helpers::get_db_utils(Strategy::Off, &["bundled"]).await;
    let kong = helpers::start_kong(&empty, Conf::default()).await;
    let res = kong.status_client().get("/status/ready").send().await;
    res.assert_status(503);
    assert_eq!(
        res.assert_json(),
        json!({ "message": "no configuration available (empty configuration present)" })
    );
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_database_share_the_cluster_id() {
    let report = |kong: &helpers::Gateway| {
        let client = kong.proxy_client();
        async move {
            let res = client.get("/get").send().await;
            let report: Value = serde_json::from_str(&res.assert_header("X-Report")).unwrap();
            report["cluster_id"].clone()
        }
    };
    // With a database only: a DB-less node has none (`None` through the harness, above).
    for strategy in helpers::each_strategy() {
        let bp = helpers::get_db_utils(strategy, &["bundled", "nginx-probe"]).await;
        bp.routes().insert(json!({ "paths": ["/"] })).await;
        bp.plugins().insert(json!({ "name": "nginx-probe" })).await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let id = report(&kong).await;
        let id = id.as_str().expect("a cluster id").to_owned();
        uuid::Uuid::parse_str(&id).expect("a uuid");
        let other = helpers::start_another_kong(&bp, Conf::default()).await;
        assert_eq!(report(&other).await, id, "[#{strategy}] the second node");
        other.stop().await;
        kong.stop().await;
        // A restart keeps it.
        let again = helpers::start_kong(&bp, Conf::default()).await;
        assert_eq!(report(&again).await, id, "[#{strategy}] after a restart");
        again.stop().await;
    }
}

/// Reads `kong.request.get_uri_captures()` in every phase Kong allows it after routing.
#[plugin(priority = 100, version = "1.0.0", name = "captures-probe")]
pub struct CapturesProbe {}

static CAPTURED: std::sync::Mutex<Vec<(&'static str, String)>> = std::sync::Mutex::new(Vec::new());

fn captured(phase: &'static str, captures: &kong_pdk::pdk::UriCaptures) {
    let id = captures.named.get("id").cloned().unwrap_or_default();
    CAPTURED.lock().unwrap().push((phase, id));
}

#[handler]
impl Handler for CapturesProbe {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        captured("access", kong.request().get_uri_captures());
        Ok(())
    }

    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        captured("header_filter", kong.request().get_uri_captures());
        Ok(())
    }

    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        captured("log", kong.request().get_uri_captures());
        Ok(())
    }
}

#[tokio::test]
async fn uri_captures_are_readable_in_every_phase_after_routing() {
    let gw = Harness::new()
        .with_route(|r| r.paths = Some(vec![r"~/users/(?<id>\d+)$".into()]))
        .plugin::<CapturesProbe>(json!({}))
        .start()
        .await
        .unwrap();
    gw.send(TestRequest::get("/users/42"), |_| MockResponse::ok("")).await;
    assert_eq!(
        *CAPTURED.lock().unwrap(),
        [
            ("access", "42".to_owned()),
            ("header_filter", "42".into()),
            ("log", "42".into())
        ]
    );
}
