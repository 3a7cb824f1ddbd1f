//! request-size-limiting (Kong's `spec/03-plugins/12-request-size-limiting`), through the
//! harness.

use kong_pdk::Plugin as _;
use kong_pdk::testing::{Harness, MockResponse, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::request_size_limiting::RequestSizeLimiting;
use serde_json::{Value, json};

async fn gateway(config: Value) -> TestGateway {
    Harness::new()
        .plugin::<RequestSizeLimiting>(config)
        .start()
        .await
        .unwrap()
}

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

fn body(n: usize) -> TestRequest {
    TestRequest::post("/request", vec![b'a'; n])
}

#[tokio::test]
async fn bodies_up_to_the_limit_pass_and_larger_ones_get_413() {
    assert_eq!(
        (RequestSizeLimiting::NAME, RequestSizeLimiting::PRIORITY),
        ("request-size-limiting", 951)
    );
    let gw = gateway(json!({ "allowed_payload_size": 10, "size_unit": "bytes" })).await;
    assert_eq!(gw.send(body(10), ok).await.status(), 200, "equal passes");
    let res = gw.send(body(11), ok).await;
    assert_eq!(res.status(), 413);
    assert_eq!(res.json()["message"], "Request size limit exceeded");
    assert!(res.upstream_request().is_none());
    // With Expect: 100-continue the answer is 417.
    let res = gw.send(body(11).header("Expect", " 100-Continue "), ok).await;
    assert_eq!(res.status(), 417);
    // Without Content-Length the body itself is measured, and a short one still goes upstream.
    let res = gw.send(body(11).without_header("content-length"), ok).await;
    assert_eq!(res.status(), 413);
    let res = gw.send(body(7).without_header("content-length"), ok).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.upstream_body().map(|b| b.len()), Some(7));
}

#[tokio::test]
async fn units_scale_the_limit_and_the_default_is_128_megabytes() {
    let gw = gateway(json!({ "allowed_payload_size": 1, "size_unit": "kilobytes" })).await;
    assert_eq!(gw.send(body(1024), ok).await.status(), 200);
    assert_eq!(gw.send(body(1025), ok).await.status(), 413);
    let gw = gateway(json!({})).await;
    // Only the declared length counts when there is one.
    let declared = |n: u64| {
        TestRequest::post("/", "x")
            .without_header("content-length")
            .header("Content-Length", &n.to_string())
    };
    assert_eq!(gw.send(declared(128 << 20), ok).await.status(), 200);
    assert_eq!(gw.send(declared((128 << 20) + 1), ok).await.status(), 413);
}

#[tokio::test]
async fn require_content_length_refuses_bodies_without_one_unless_chunked() {
    let gw = gateway(json!({ "require_content_length": true })).await;
    let res = gw.send(TestRequest::get("/request"), ok).await;
    assert_eq!(res.status(), 411);
    assert_eq!(res.json()["message"], "A valid Content-Length header is required");
    let chunked = body(3)
        .without_header("content-length")
        .header("Transfer-Encoding", "chunked");
    assert_eq!(gw.send(chunked, ok).await.status(), 200);
    assert_eq!(gw.send(body(3), ok).await.status(), 200);
}
