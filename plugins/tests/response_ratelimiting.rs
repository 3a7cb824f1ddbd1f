//! response-ratelimiting (Kong's `spec/03-plugins/24-response-rate-limiting`): the upstream's
//! costs counted per client and limit name, headers both ways, refusals; the `cluster` and
//! `redis` policies end to end.

use std::time::Duration;

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Conf};
use kong_pdk::testing::{Harness, MockResponse, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::response_ratelimiting::ResponseRatelimiting;
use serde_json::{Value, json};

async fn gateway(config: Value) -> TestGateway {
    Harness::new()
        .route_plugin::<ResponseRatelimiting>(config)
        .start()
        .await
        .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Counting tests must not straddle an hour: with under 10 s of it left, wait for the next.
async fn fresh_window() {
    let left = 3600 - now() % 3600;
    if left < 10 {
        tokio::time::sleep(Duration::from_secs(left)).await;
    }
}

/// An upstream whose responses cost `costs` (`X-Kong-Limit` lines).
fn costing(costs: &'static [&'static str]) -> impl FnMut(&UpstreamRequest) -> MockResponse {
    move |_| {
        let mut res = MockResponse::ok("body");
        for c in costs {
            res = res.header("X-Kong-Limit", c);
        }
        res
    }
}

#[tokio::test]
async fn the_upstreams_costs_are_counted_and_a_spent_limit_refuses() {
    assert_eq!(
        (ResponseRatelimiting::NAME, ResponseRatelimiting::PRIORITY),
        ("response-ratelimiting", 900)
    );
    fresh_window().await;
    let gw = gateway(json!({ "limits": { "video": { "hour": 3 }, "image": { "hour": 10, "day": 20 } } })).await;
    for left in [2, 1, 0] {
        let res = gw.send(TestRequest::get("/"), costing(&["video=1, image=2"])).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.header("X-RateLimit-Limit-video-hour"), Some("3"));
        assert_eq!(
            res.header("X-RateLimit-Remaining-video-hour"),
            Some(left.to_string().as_str())
        );
        assert_eq!(res.header("X-RateLimit-Limit-image-day"), Some("20"));
        assert!(res.header("X-Kong-Limit").is_none(), "the cost header is the gateway's");
        // The upstream is told what is left before this response: the least of the windows.
        let up = res.upstream_request().unwrap();
        assert_eq!(
            up.headers
                .get("X-RateLimit-Remaining-video")
                .and_then(|v| v.to_str().ok()),
            Some((left + 1).to_string().as_str())
        );
    }
    let res = gw.send(TestRequest::get("/"), costing(&["image=2"])).await;
    assert_eq!(res.header("X-RateLimit-Remaining-image-hour"), Some("2"));
    assert_eq!(res.header("X-RateLimit-Remaining-image-day"), Some("12"));
    // A spent limit: the upstream is called, then its answer is replaced by a bare 429.
    let res = gw.send(TestRequest::get("/"), costing(&["video=1"])).await;
    assert_eq!(res.status(), 429);
    assert!(res.upstream_request().is_some());
    assert!(res.body().is_empty(), "{:?}", res.body());
    // A response that costs nothing of a spent limit passes, and the refusal was not counted.
    let res = gw.send(TestRequest::get("/"), costing(&["image=1"])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.header("X-RateLimit-Remaining-image-hour"), Some("1"));
    assert_eq!(
        res.upstream_request()
            .unwrap()
            .headers
            .get("X-RateLimit-Remaining-video")
            .and_then(|v| v.to_str().ok()),
        Some("0")
    );
}

#[tokio::test]
async fn costs_parse_as_kong_parses_them() {
    fresh_window().await;
    let gw =
        gateway(json!({ "header_name": "X-Cost", "limits": { "a": { "hour": 100 }, "b": { "hour": 100 } } })).await;
    let upstream = |_: &UpstreamRequest| {
        MockResponse::ok("")
            .header("X-Cost", "a=3, unknown=5, b=x")
            .header("X-Cost", "b = 4")
    };
    let res = gw.send(TestRequest::get("/"), upstream).await;
    assert_eq!(res.header("X-RateLimit-Remaining-a-hour"), Some("97"));
    assert_eq!(res.header("X-RateLimit-Remaining-b-hour"), Some("96"));
    assert!(res.header("X-Cost").is_none());
    let res = gw
        .send(TestRequest::get("/"), |_: &UpstreamRequest| MockResponse::ok(""))
        .await;
    assert_eq!(res.header("X-RateLimit-Remaining-a-hour"), Some("97"), "counted once");
    assert_eq!(res.header("X-RateLimit-Remaining-b-hour"), Some("96"));
}

#[tokio::test]
async fn block_on_first_violation_refuses_before_proxying_and_headers_can_hide() {
    fresh_window().await;
    let config =
        json!({ "block_on_first_violation": true, "hide_client_headers": true, "limits": { "video": { "hour": 1 } } });
    let gw = gateway(config).await;
    let res = gw.send(TestRequest::get("/"), costing(&["video=1"])).await;
    assert_eq!(res.status(), 200);
    assert!(res.header("X-RateLimit-Limit-video-hour").is_none());
    let res = gw.send(TestRequest::get("/"), costing(&["video=1"])).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.json()["message"], "API rate limit exceeded for 'video'");
    assert!(res.upstream_request().is_none());
}

#[tokio::test]
async fn config_rules_and_messages_are_kongs() {
    let schema = ResponseRatelimiting::schema();
    let fields = |config: Value| schema.validate_config(config).unwrap_err().fields().clone();
    let f = fields(json!({}));
    assert_eq!(f["config"]["limits"], "required field missing");
    let f = fields(json!({ "limits": { "video": { "second": 10, "minute": 5 } } }));
    assert_eq!(
        f["config"]["limits"]["video"],
        "the limit for minute(5.0) cannot be lower than the limit for second(10.0)"
    );
    let f = fields(json!({ "limits": { "video": {} } }));
    assert_eq!(
        f["config"]["limits"]["video"]["@entity"],
        json!(["at least one of these fields must be non-empty: 'second', 'minute', 'hour', 'day', 'month', 'year'"])
    );
    let f = fields(json!({ "limits": { "video": { "hour": 1 } }, "limit_by": "header" }));
    assert_eq!(f["config"]["limit_by"], "expected one of: consumer, credential, ip");
    let ok = schema
        .validate_config(json!({ "limits": { "video": { "hour": 1 } } }))
        .unwrap();
    assert_eq!(ok["header_name"], "x-kong-limit");
    assert_eq!(ok["policy"], "local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_costs_through_the_database_or_redis() {
    fresh_window().await;
    let redis = helpers::redis_or_skip();
    for strategy in helpers::each_strategy() {
        for policy in ["cluster", "redis"] {
            let mut config = json!({ "policy": policy, "limit_by": "ip", "limits": { "video": { "hour": 3 } } });
            if policy == "redis" {
                let Some((host, port)) = &redis else { continue };
                config["redis"] = json!({ "host": host, "port": port });
            }
            let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
            let route = bp.routes().insert(json!({ "paths": ["/"] })).await;
            bp.plugins()
                .insert(json!({ "name": "response-ratelimiting", "route": { "id": route["id"] }, "config": config }))
                .await;
            let first = helpers::start_kong(&bp, Conf::default()).await;
            let second = helpers::start_another_kong(&bp, Conf::default()).await;
            // The mock upstream echoes `X-Kong-Limit` from the query string's response headers.
            let spend = |node: &helpers::Gateway| {
                let client = node.proxy_client();
                async move {
                    let res = client.get("/response-headers?x-kong-limit=video%3D1").send().await;
                    (
                        res.status(),
                        res.header("X-RateLimit-Remaining-video-hour").map(str::to_owned),
                    )
                }
            };
            assert_eq!(spend(&first).await, (200, Some("2".into())), "[#{strategy} {policy}]");
            // Costs are counted after the response: wait until the other node sees them.
            helpers::wait_until("the cost on the other node", Duration::from_secs(10), || async {
                let res = second.proxy_client().get("/request").send().await;
                res.header("X-RateLimit-Remaining-video-hour") == Some("2")
            })
            .await;
            assert_eq!(spend(&second).await, (200, Some("1".into())), "[#{strategy} {policy}]");
            first.stop().await;
            second.stop().await;
        }
    }
}
