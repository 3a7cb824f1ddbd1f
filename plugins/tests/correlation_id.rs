//! correlation-id (Kong's `spec/03-plugins/11-correlation-id`): the generators, a client's id
//! kept, echoing to the client, and the id in the log serializer.

use std::sync::Mutex;

use kong_pdk::Plugin as _;
use kong_pdk::prelude::*;
use kong_pdk::testing::helpers::{self, Conf};
use kong_pdk::testing::{Harness, MockResponse, Outcome, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::correlation_id::CorrelationId;
use serde_json::{Value, json};

/// What the log serializer gave, for the test that asks.
static SERIALIZED: Mutex<Vec<Value>> = Mutex::new(Vec::new());

/// Keeps `kong.log.serialize()` of each request.
#[plugin(priority = 1, version = "1.0.0", name = "serialized")]
pub struct Serialized {}

#[handler]
impl Handler for Serialized {
    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        let value = kong.log().serialize();
        SERIALIZED.lock().unwrap().push(value);
        Ok(())
    }
}

async fn gateway(config: Value) -> TestGateway {
    Harness::new()
        .route_plugin::<CorrelationId>(config)
        .start()
        .await
        .unwrap()
}

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

fn sent(res: &Outcome, name: &str) -> Option<String> {
    let up = res.upstream_request()?;
    up.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test]
async fn uuid_counter_ids_count_per_node() {
    assert_eq!(
        (CorrelationId::NAME, CorrelationId::PRIORITY),
        ("correlation-id", 100001)
    );
    let gw = gateway(json!({})).await;
    let first = sent(&gw.send(TestRequest::get("/"), ok).await, "Kong-Request-ID").unwrap();
    let second = sent(&gw.send(TestRequest::get("/"), ok).await, "Kong-Request-ID").unwrap();
    let (node, n) = first.split_once('#').unwrap();
    assert_eq!((node.len(), n), (36, "1"), "{first}");
    assert_eq!(second, format!("{node}#2"));
}

#[tokio::test]
async fn uuid_and_tracker_generators_and_a_clients_id_kept() {
    let gw = gateway(json!({ "generator": "uuid", "header_name": "X-Trace" })).await;
    let id = sent(&gw.send(TestRequest::get("/"), ok).await, "X-Trace").unwrap();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok() && id.len() == 36 && id == id.to_lowercase(),
        "{id}"
    );
    let mine = gw.send(TestRequest::get("/").header("X-Trace", "client-id"), ok).await;
    assert_eq!(sent(&mine, "X-Trace").as_deref(), Some("client-id"));
    // An empty one is replaced.
    let empty = gw.send(TestRequest::get("/").header("X-Trace", ""), ok).await;
    assert_eq!(sent(&empty, "X-Trace").map(|v| v.len()), Some(36));

    let gw = gateway(json!({ "generator": "tracker" })).await;
    let id = sent(&gw.send(TestRequest::get("/"), ok).await, "Kong-Request-ID").unwrap();
    let re = regex::Regex::new(r"^127\.0\.0\.1-8000-\d+-1-1-\d+\.\d{3}$").unwrap();
    assert!(re.is_match(&id), "{id}");
}

#[tokio::test]
async fn ids_are_echoed_to_the_client_when_asked() {
    let gw = gateway(json!({ "echo_downstream": true })).await;
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(
        res.header("Kong-Request-ID").map(str::to_owned),
        sent(&res, "Kong-Request-ID")
    );
    let res = gw
        .send(TestRequest::get("/").header("Kong-Request-ID", "mine"), ok)
        .await;
    assert_eq!(res.header("Kong-Request-ID"), Some("mine"));
    let gw = gateway(json!({})).await;
    assert!(
        gw.send(TestRequest::get("/"), ok)
            .await
            .header("Kong-Request-ID")
            .is_none()
    );
}

#[tokio::test]
async fn the_id_is_in_the_log_serializer() {
    let gw = Harness::new()
        .route_plugin::<CorrelationId>(json!({ "generator": "uuid" }))
        .route_plugin::<Serialized>(json!({}))
        .start()
        .await
        .unwrap();
    let res = gw
        .send(TestRequest::get("/").header("Kong-Request-ID", "logged-id"), ok)
        .await;
    assert_eq!(res.status(), 200);
    let all = SERIALIZED.lock().unwrap();
    assert!(all.iter().any(|v| v["correlation_id"] == "logged-id"), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trackers_name_the_listener_and_count_requests_on_a_connection() {
    let bp = helpers::get_db_utils(helpers::Strategy::Sqlite, &["bundled"]).await;
    let route = bp.routes().insert(json!({ "paths": ["/"] })).await;
    bp.plugins()
        .insert(json!({ "name": "correlation-id", "route": { "id": route["id"] },
            "config": { "generator": "tracker", "echo_downstream": true } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let port = kong.proxy_addr().port();
    let res = kong.proxy_client().get("/request").send().await;
    let id = res.header("Kong-Request-ID").unwrap().to_owned();
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(parts[0], "127.0.0.1", "{id}");
    assert_eq!(parts[1], port.to_string(), "{id}");
    assert_eq!(parts[2], std::process::id().to_string(), "{id}");
    assert!(parts[3].parse::<u64>().unwrap() >= 1 && parts[4] == "1", "{id}");
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_field_sent_as_null_is_refused() {
    let bp = helpers::get_db_utils(helpers::Strategy::Sqlite, &["bundled"]).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let res = kong
        .admin_client()
        .post("/plugins")
        .json(&json!({ "name": CorrelationId::NAME, "config": { "generator": null } }))
        .send()
        .await;
    res.assert_status(400);
    assert_eq!(
        res.assert_json()["fields"]["config"]["generator"],
        "required field missing"
    );
    kong.stop().await;
}
