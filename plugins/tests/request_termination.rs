//! request-termination (Kong's `spec/03-plugins/14-request-termination`), through the harness.

use kong_pdk::Plugin as _;
use kong_pdk::testing::{Harness, LoadError, MockResponse, TestGateway, TestRequest};
use kong_plugins::request_termination::RequestTermination;
use serde_json::{Value, json};

async fn gateway(config: Value) -> TestGateway {
    Harness::new()
        .plugin::<RequestTermination>(config)
        .start()
        .await
        .unwrap()
}

async fn refused(config: Value) -> Value {
    match Harness::new().plugin::<RequestTermination>(config).start().await {
        Err(LoadError::Invalid { violation, .. }) => violation.fields()["config"].clone(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted"),
    }
}

fn upstream(_: &kong_pdk::testing::UpstreamRequest) -> MockResponse {
    MockResponse::ok("from the upstream")
}

#[tokio::test]
async fn the_schema_is_kongs() {
    assert_eq!(
        (RequestTermination::NAME, RequestTermination::PRIORITY),
        ("request-termination", 2)
    );
    assert_eq!(
        refused(json!({ "status_code": 600 })).await["status_code"],
        "value should be between 100 and 599"
    );
    assert_eq!(
        refused(json!({ "message": "x", "body": "y" })).await,
        "message cannot be used with content_type or body"
    );
    assert_eq!(
        refused(json!({ "content_type": "text/plain" })).await,
        "content_type requires a body"
    );
    assert_eq!(
        refused(json!({ "echo": true, "content_type": "text/plain", "body": "y" })).await,
        "echo cannot be used with content_type and body"
    );
}

#[tokio::test]
async fn the_default_is_503_service_unavailable() {
    let gw = gateway(json!({})).await;
    let res = gw.send(TestRequest::get("/status/200"), upstream).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.json(), json!({ "message": "Service unavailable" }));
    assert!(res.upstream_request().is_none(), "nothing was proxied");
}

#[tokio::test]
async fn status_message_and_body_are_the_configured_ones() {
    let res = gateway(json!({ "status_code": 404 }))
        .await
        .send(TestRequest::get("/"), upstream)
        .await;
    assert_eq!((res.status(), res.json()), (404, json!({ "message": "Not found" })));
    let res = gateway(json!({ "status_code": 406, "message": "Invalid" }))
        .await
        .send(TestRequest::get("/"), upstream)
        .await;
    assert_eq!((res.status(), res.json()), (406, json!({ "message": "Invalid" })));
    // No message of Kong's for 418: no body.
    let res = gateway(json!({ "status_code": 418 }))
        .await
        .send(TestRequest::get("/"), upstream)
        .await;
    assert_eq!((res.status(), res.body().len()), (418, 0));
    assert_eq!(res.header("content-length"), Some("0"));
    let res = gateway(json!({ "status_code": 200, "body": "<html>hi</html>", "content_type": "text/html" }))
        .await
        .send(TestRequest::get("/"), upstream)
        .await;
    assert_eq!((res.status(), res.body_text().as_str()), (200, "<html>hi</html>"));
    assert_eq!(res.header("content-type"), Some("text/html"));
    let res = gateway(json!({ "status_code": 200, "body": "raw" }))
        .await
        .send(TestRequest::get("/"), upstream)
        .await;
    assert_eq!((res.body_text().as_str(), res.header("content-type")), ("raw", None));
}

#[tokio::test]
async fn a_trigger_terminates_only_requests_that_carry_it() {
    let gw = gateway(json!({ "trigger": "x-terminate" })).await;
    let passed = gw.send(TestRequest::get("/"), upstream).await;
    assert_eq!(
        (passed.status(), passed.body_text().as_str()),
        (200, "from the upstream")
    );
    let by_header = gw
        .send(TestRequest::get("/").header("X-Terminate", "1"), upstream)
        .await;
    assert_eq!(by_header.status(), 503);
    let by_query = gw.send(TestRequest::get("/?x-terminate"), upstream).await;
    assert_eq!(by_query.status(), 503);
}

#[tokio::test]
async fn echo_answers_with_the_request() {
    let gw = gateway(json!({ "status_code": 404, "echo": true })).await;
    let res = gw
        .send(
            TestRequest::post("/echo?a=1&a=2&flag", r#"{"hello":"world"}"#)
                .header("X-Custom", "yes")
                .header("Content-Type", "application/json"),
            upstream,
        )
        .await;
    assert_eq!(res.status(), 404);
    let echo = res.json();
    assert_eq!(echo["message"], "Not found");
    let request = &echo["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(request["path"], "/echo");
    assert_eq!(request["headers"]["x-custom"], "yes");
    assert_eq!(request["query"], json!({ "a": ["1", "2"], "flag": true }));
    assert_eq!(request["body"], json!({ "hello": "world" }));
    assert_eq!(request["raw_body"], r#"{"hello":"world"}"#);
    assert!(echo["matched_route"]["id"].is_string());
    assert!(echo["kong"]["node_id"].is_string());
}
