//! http-log (Kong's `spec/03-plugins/03-http-log`): entries to an HTTP receiver, batches,
//! retries, a bounded queue, and the config's messages.

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers;
use kong_pdk::testing::{Harness, MockResponse, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::http_log::HttpLog;
use serde_json::{Value, json};

mod common;
use common::{receiver, wait_for};

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

async fn gateway(config: Value) -> TestGateway {
    Harness::new().route_plugin::<HttpLog>(config).start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_entry_is_posted_as_a_json_object() {
    assert_eq!((HttpLog::NAME, HttpLog::PRIORITY), ("http-log", 12));
    let (port, got) = receiver(vec![]).await;
    let gw = gateway(json!({
        "http_endpoint": format!("http://bob:s%20cret@127.0.0.1:{port}/logs?ignored=1"),
        "headers": { "X-Custom": "yes" },
    }))
    .await;
    gw.send(TestRequest::get("/one"), ok).await;
    gw.send(TestRequest::get("/two"), ok).await;
    let all = wait_for(&got, 2).await;
    assert_eq!(all[0].line, "POST /logs HTTP/1.1");
    assert_eq!(all[0].header("content-type"), Some("application/json"));
    assert_eq!(all[0].header("authorization"), Some("Basic Ym9iOnMgY3JldA=="));
    assert_eq!(all[0].header("x-custom"), Some("yes"));
    assert_eq!(all[0].json()["request"]["uri"], "/one");
    assert_eq!(all[1].json()["request"]["uri"], "/two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_json_arrays_and_failed_ones_are_retried() {
    let (port, got) = receiver(vec![500]).await;
    let gw = gateway(json!({
        "http_endpoint": format!("http://127.0.0.1:{port}"),
        "method": "PUT",
        "queue": { "max_batch_size": 3, "max_coalescing_delay": 0.2, "initial_retry_delay": 0.05 },
    }))
    .await;
    for path in ["/a", "/b", "/c"] {
        gw.send(TestRequest::get(path), ok).await;
    }
    // The first answer is a 500: the same batch comes again.
    let all = wait_for(&got, 2).await;
    assert_eq!(all[0].line, "PUT / HTTP/1.1");
    let batch = all[0].json();
    let uris: Vec<&str> = batch
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, ["/a", "/b", "/c"]);
    assert_eq!(all[1].body, all[0].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_costs_the_oldest_entries_not_the_requests() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gw = gateway(json!({
        "http_endpoint": format!("http://127.0.0.1:{port}"),
        "queue": { "max_entries": 2, "max_retry_time": 30, "initial_retry_delay": 1 },
    }))
    .await;
    let mut dropped = false;
    for _ in 0..6 {
        let res = gw.send(TestRequest::get("/"), ok).await;
        assert_eq!(res.status(), 200);
        dropped |= res.logged("maximum number of entries reached");
    }
    assert!(dropped, "the oldest entries went");
}

#[tokio::test]
async fn config_messages_are_kongs() {
    let schema = HttpLog::schema();
    let fields = |config: Value| schema.validate_config(config).unwrap_err().fields().clone();
    let f = fields(json!({ "http_endpoint": "http://a.example", "headers": { "Host": "x" } }));
    assert_eq!(
        f["config"]["headers"],
        json!({ "Host": "cannot contain 'Host' header" })
    );
    let f = fields(json!({ "http_endpoint": "http://a.example", "headers": { "X-A": "" } }));
    assert_eq!(f["config"]["headers"]["X-A"], "length must be at least 1");
    let f = fields(json!({ "http_endpoint": "http://u:p@a.example", "headers": { "authorization": "x" } }));
    assert_eq!(
        f["config"],
        "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed"
    );
    assert_eq!(fields(json!({}))["config"]["http_endpoint"], "required field missing");
    let f = fields(json!({ "http_endpoint": "http://a.example", "queue": { "concurrency_limit": 2 } }));
    assert_eq!(f["config"]["queue"]["concurrency_limit"], "expected one of: -1, 1");
    let ok = schema
        .validate_config(json!({ "http_endpoint": "http://a.example" }))
        .unwrap();
    assert_eq!(ok["queue"]["max_batch_size"], 1);
    assert_eq!(ok["queue"]["max_entries"], 10000);
    assert_eq!(ok["method"], "POST");
}

/// `http_endpoint` is referenceable: a `{vault://env/...}` reference is stored as it is and
/// resolved when the gateway loads the configuration (issue 16, item 17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_reference_in_http_endpoint_is_resolved_at_load() {
    let (port, got) = receiver(vec![]).await;
    // SAFETY: the variable is this test's own; the gateway reads it in this process.
    unsafe { std::env::set_var("KONG_PDK_TEST_LOG_ENDPOINT", format!("http://127.0.0.1:{port}/vaulted")) };
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        bp.routes().insert(json!({ "paths": ["/"] })).await;
        let plugin = bp
            .plugins()
            .insert(json!({ "name": HttpLog::NAME, "config": { "http_endpoint": "{vault://env/kong-pdk-test-log-endpoint}" } }))
            .await;
        let kong = helpers::start_kong(&bp, helpers::Conf::default()).await;
        // The Admin API keeps the reference, not the secret.
        let stored = kong
            .admin_client()
            .get(&format!("/plugins/{}", plugin["id"].as_str().unwrap()))
            .send()
            .await
            .assert_json();
        assert_eq!(
            stored["config"]["http_endpoint"],
            "{vault://env/kong-pdk-test-log-endpoint}"
        );
        let before = got.lock().unwrap().len();
        kong.proxy_client().get("/get").send().await.assert_status(200);
        let all = wait_for(&got, before + 1).await;
        assert_eq!(all[before].line, "POST /vaulted HTTP/1.1", "[#{strategy}]");
        kong.stop().await;
    }
    // A reference in a field that is not referenceable is only text: refused as a URL would be.
    let bp = helpers::get_db_utils(helpers::Strategy::Sqlite, &["bundled"]).await;
    let kong = helpers::start_kong(&bp, helpers::Conf::default()).await;
    let res = kong
        .admin_client()
        .post("/plugins")
        .json(&json!({ "name": HttpLog::NAME, "config": { "http_endpoint": "http://127.0.0.1:1/", "method": "{vault://env/x}" } }))
        .send()
        .await;
    res.assert_status(400);
    kong.stop().await;
}
