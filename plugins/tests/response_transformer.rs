//! response-transformer (Kong's `spec/03-plugins/15-response-transformer`): headers in Kong's
//! order, JSON bodies, what is left alone, and the config's messages.

use kong_pdk::Plugin as _;
use kong_pdk::testing::{Harness, MockResponse, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::response_transformer::ResponseTransformer;
use serde_json::{Value, json};

async fn gateway(config: Value) -> TestGateway {
    Harness::new()
        .route_plugin::<ResponseTransformer>(config)
        .start()
        .await
        .unwrap()
}

fn json_body(body: &'static str) -> impl FnMut(&UpstreamRequest) -> MockResponse {
    move |_| {
        MockResponse::ok(body)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-Old", "o1")
            .header("X-Old", "o2")
            .header("X-Keep", "k")
    }
}

#[tokio::test]
async fn headers_change_in_kongs_order_against_the_upstreams_headers() {
    assert_eq!(
        (ResponseTransformer::NAME, ResponseTransformer::PRIORITY),
        ("response-transformer", 800)
    );
    let gw = gateway(json!({
        "remove": { "headers": ["X-Keep"] },
        "rename": { "headers": ["X-Old:X-New"] },
        "replace": { "headers": ["X-Keep:replaced", "X-Absent:never"] },
        "add": { "headers": ["X-Keep:not-added", "X-Added:yes", "X-Empty:"] },
        "append": { "headers": ["X-Added:again", "X-List:one"] },
    }))
    .await;
    let res = gw.send(TestRequest::get("/"), json_body("{}")).await;
    let all = |name: &str| -> Vec<String> {
        res.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert!(all("X-Old").is_empty());
    assert_eq!(all("X-New"), ["o1", "o2"], "every value moves");
    // Removed, then replaced: replace looks at the headers as they came.
    assert_eq!(all("X-Keep"), ["replaced"]);
    assert!(all("X-Absent").is_empty());
    assert_eq!(all("X-Added"), ["yes", "again"]);
    assert!(all("X-Empty").is_empty());
    assert_eq!(all("X-List"), ["one"]);
    assert_eq!(res.body_text(), "{}", "headers only: the body is untouched");
}

#[tokio::test]
async fn json_bodies_change_member_by_member() {
    let gw = gateway(json!({
        "remove": { "json": ["secret"] },
        "rename": { "json": ["old:new"] },
        "replace": { "json": ["count:42", "flag:true", "missing:x"], "json_types": ["number", "boolean", "string"] },
        "add": { "json": ["added:hello", "present:no", "falsy:yes", "bad:abc"], "json_types": ["string", "string", "string", "number"] },
        "append": { "json": ["list:c", "single:b", "fresh:a"] },
    }))
    .await;
    let body =
        r#"{"secret":"s","old":1,"count":1,"flag":false,"present":"p","falsy":false,"list":["a","b"],"single":"a"}"#;
    let res = gw.send(TestRequest::get("/"), json_body(body)).await;
    let out: Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(
        out,
        json!({
            "new": 1, "count": 42, "flag": false, "present": "p", "falsy": "yes",
            "list": ["a", "b", "c"], "single": ["a", "b"], "added": "hello", "fresh": ["a"]
        })
    );
    // The length changed: Kong drops the upstream's Content-Length (the body goes chunked).
    assert!(res.header("Content-Length").is_none());
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_left_alone() {
    let config = json!({ "add": { "json": ["a:1"] } });
    let gw = gateway(config).await;
    let text = |_: &UpstreamRequest| MockResponse::ok("plain").header("Content-Type", "text/plain");
    assert_eq!(gw.send(TestRequest::get("/"), text).await.body_text(), "plain");
    let broken = |_: &UpstreamRequest| MockResponse::ok("{not json").header("Content-Type", "application/json");
    let res = gw.send(TestRequest::get("/"), broken).await;
    assert_eq!(res.body_text(), "{not json");
    assert!(
        res.logged("body transform failed: failed parsing json body"),
        "{:?}",
        res.logs()
    );
    let problem = |_: &UpstreamRequest| MockResponse::ok("{}").header("Content-Type", "application/problem+json");
    assert_eq!(
        gw.send(TestRequest::get("/"), problem).await.body_text(),
        r#"{"a":"1"}"#
    );
}

#[tokio::test]
async fn config_messages_are_kongs() {
    let schema = ResponseTransformer::schema();
    let fields = |config: Value| schema.validate_config(config).unwrap_err().fields().clone();
    let f = fields(json!({ "add": { "json": ["no-colon"] } }));
    assert_eq!(f["config"]["add"]["json"], json!(["invalid value: no-colon"]));
    let f = fields(json!({ "rename": { "headers": ["X-Ok:bad name"] } }));
    assert_eq!(
        f["config"]["rename"]["headers"],
        json!(["'bad name' is not a valid header"])
    );
    let f = fields(json!({ "append": { "json_types": ["object"] } }));
    assert_eq!(
        f["config"]["append"]["json_types"],
        json!(["expected one of: boolean, number, string"])
    );
    let ok = schema.validate_config(json!({})).unwrap();
    assert_eq!(ok["remove"], json!({ "json": [], "headers": [] }));
    assert_eq!(ok["add"], json!({ "json": [], "json_types": [], "headers": [] }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_json_body_of_known_length_is_rewritten_on_every_strategy() {
    use kong_pdk::testing::helpers::{self, Conf};
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let route = bp.routes().insert(json!({ "paths": ["/"] })).await;
        bp.plugins()
            .insert(json!({ "name": "response-transformer", "route": { "id": route["id"] },
                "config": { "add": { "json": ["added:yes"], "headers": ["X-Added:1"] }, "remove": { "json": ["headers"] } } }))
            .await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let res = kong.proxy_client().get("/request").send().await;
        assert_eq!(res.status(), 200, "[#{strategy}]");
        assert_eq!(res.header("X-Added"), Some("1"));
        assert!(res.header("Content-Length").is_none(), "[#{strategy}]");
        let body = res.assert_json();
        assert_eq!(body["added"], "yes", "[#{strategy}] {body}");
        assert!(
            body.get("headers").is_none() && body["url"].is_string(),
            "[#{strategy}] {body}"
        );
        kong.stop().await;
    }
}
