//! rate-limiting (Kong's `spec/03-plugins/23-rate-limiting`): the headers and answers through
//! the harness (`local` policy), the config rules, and every policy end to end: `cluster` on
//! each database and `redis` on a real Redis, with two gateway nodes sharing one limit.

use std::time::Duration;

use kong_pdk::Plugin as _;
use kong_pdk::counters::{CounterKey, CounterTable};
use kong_pdk::testing::helpers::{self, Blueprint, Conf, Gateway};
use kong_pdk::testing::{Harness, MockResponse, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::key_auth::KeyAuth;
use kong_plugins::rate_limiting::RateLimiting;
use serde_json::{Value, json};
use uuid::Uuid;

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

async fn gateway(config: Value) -> TestGateway {
    Harness::new()
        .route_plugin::<RateLimiting>(config)
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

/// Counting tests must not straddle a window boundary: when fewer than 10 s of the current
/// minute (and hour) are left, wait for the next one to start.
async fn fresh_window() {
    let left = |window: u64| window - now() % window;
    if left(60) < 10 || left(3600) < 10 {
        let wait = left(60);
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

fn header<'a>(res: &'a kong_pdk::testing::Outcome, name: &str) -> &'a str {
    res.header(name).unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn six_an_hour_then_429_with_kongs_headers() {
    assert_eq!(
        (RateLimiting::NAME, RateLimiting::PRIORITY, RateLimiting::VERSION),
        ("rate-limiting", 910, "3.10.0")
    );
    fresh_window().await;
    let gw = gateway(json!({ "hour": 6 })).await;
    for left in (0..6).rev() {
        let res = gw.send(TestRequest::get("/"), ok).await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "X-RateLimit-Limit-Hour"), "6");
        assert_eq!(header(&res, "X-RateLimit-Remaining-Hour"), left.to_string());
        assert_eq!(header(&res, "RateLimit-Limit"), "6");
        assert_eq!(header(&res, "RateLimit-Remaining"), left.to_string());
        let reset: i64 = header(&res, "RateLimit-Reset").parse().unwrap();
        assert!((1..=3600).contains(&reset), "{reset}");
        assert!(res.header("Retry-After").is_none());
        assert!(res.header("X-RateLimit-Limit-Minute").is_none());
    }
    for _ in 0..2 {
        let res = gw.send(TestRequest::get("/"), ok).await;
        assert_eq!(res.status(), 429);
        assert_eq!(res.json()["message"], "API rate limit exceeded");
        assert!(res.upstream_request().is_none());
        assert_eq!(header(&res, "X-RateLimit-Limit-Hour"), "6");
        assert_eq!(header(&res, "X-RateLimit-Remaining-Hour"), "0");
        assert_eq!(header(&res, "RateLimit-Remaining"), "0");
        assert_eq!(res.header("Retry-After"), res.header("RateLimit-Reset"));
    }
}

#[tokio::test]
async fn the_header_window_is_the_one_with_least_left_and_refusals_name_their_window() {
    fresh_window().await;
    let gw = gateway(json!({ "minute": 2, "hour": 100, "year": 1000 })).await;
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(header(&res, "X-RateLimit-Remaining-Minute"), "1");
    assert_eq!(header(&res, "X-RateLimit-Remaining-Hour"), "99");
    assert_eq!(header(&res, "X-RateLimit-Remaining-Year"), "999");
    assert_eq!(header(&res, "X-RateLimit-Limit-Year"), "1000");
    assert_eq!(header(&res, "RateLimit-Limit"), "2");
    assert_eq!(header(&res, "RateLimit-Remaining"), "1");
    gw.send(TestRequest::get("/"), ok).await;
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(res.status(), 429);
    // Only the window over its limit counts this request in its headers.
    assert_eq!(header(&res, "X-RateLimit-Remaining-Minute"), "0");
    assert_eq!(header(&res, "X-RateLimit-Remaining-Hour"), "98");
    assert_eq!(header(&res, "RateLimit-Limit"), "2");
    let reset: i64 = header(&res, "Retry-After").parse().unwrap();
    assert!((1..=60).contains(&reset), "{reset}");

    // On a tie the longer window is shown.
    let gw = gateway(json!({ "second": 5, "minute": 5 })).await;
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(header(&res, "RateLimit-Limit"), "5");
    let reset: i64 = header(&res, "RateLimit-Reset").parse().unwrap();
    assert!(reset >= 1, "the minute's reset: {reset}");
}

#[tokio::test]
async fn one_a_second_refuses_the_second_request_of_a_second() {
    let gw = gateway(json!({ "second": 1 })).await;
    // Two requests in the same second: retried if they straddled a boundary.
    let mut refused = None;
    for _ in 0..5 {
        let first = gw.send(TestRequest::get("/"), ok).await;
        let second = gw.send(TestRequest::get("/"), ok).await;
        if second.status() == 429 {
            assert_eq!(first.status(), 200);
            assert_eq!(header(&first, "RateLimit-Remaining"), "0");
            refused = Some(second);
            break;
        }
    }
    let refused = refused.expect("a second request within one second is refused");
    assert_eq!(header(&refused, "Retry-After"), "1");
    let started = now();
    helpers::wait_until("a new second", Duration::from_secs(3), || async { now() > started }).await;
    assert_eq!(gw.send(TestRequest::get("/"), ok).await.status(), 200);
}

#[tokio::test]
async fn limits_count_per_address_header_or_path_with_the_address_as_fallback() {
    fresh_window().await;
    let a = |ip: &str| TestRequest::get("/").client_ip(ip.parse().unwrap());
    let gw = gateway(json!({ "hour": 1, "limit_by": "ip" })).await;
    assert_eq!(gw.send(a("10.0.0.1"), ok).await.status(), 200);
    assert_eq!(gw.send(a("10.0.0.1"), ok).await.status(), 429);
    assert_eq!(gw.send(a("10.0.0.2"), ok).await.status(), 200);

    let gw = gateway(json!({ "hour": 1, "limit_by": "header", "header_name": "X-Tenant" })).await;
    let tenant = |t: &str| a("10.0.0.1").header("X-Tenant", t);
    assert_eq!(gw.send(tenant("one"), ok).await.status(), 200);
    assert_eq!(gw.send(tenant("one"), ok).await.status(), 429);
    assert_eq!(gw.send(tenant("two"), ok).await.status(), 200);
    // No header: counted by the address, which has not been counted yet.
    assert_eq!(gw.send(a("10.0.0.1"), ok).await.status(), 200);
    assert_eq!(gw.send(a("10.0.0.1"), ok).await.status(), 429);

    let gw = gateway(json!({ "hour": 1, "limit_by": "path", "path": "/limited" })).await;
    let path = |p: &str, ip: &str| TestRequest::get(p).client_ip(ip.parse().unwrap());
    assert_eq!(gw.send(path("/limited", "10.0.0.1"), ok).await.status(), 200);
    assert_eq!(
        gw.send(path("/limited", "10.0.0.2"), ok).await.status(),
        429,
        "one count for the path"
    );
    assert_eq!(gw.send(path("/other", "10.0.0.3"), ok).await.status(), 200);
    assert_eq!(
        gw.send(path("/other", "10.0.0.3"), ok).await.status(),
        429,
        "by address"
    );

    let gw = gateway(json!({ "hour": 1, "limit_by": "service" })).await;
    assert_eq!(gw.send(a("10.0.0.1"), ok).await.status(), 200);
    assert_eq!(
        gw.send(a("10.0.0.2"), ok).await.status(),
        429,
        "one count for the service"
    );
}

#[tokio::test]
async fn hidden_headers_and_a_custom_answer() {
    fresh_window().await;
    let gw = gateway(
        json!({ "hour": 1, "hide_client_headers": true, "error_code": 404, "error_message": "Fake Not Found" }),
    )
    .await;
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(res.status(), 200);
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.json()["message"], "Fake Not Found");
    for res in [&res] {
        for name in [
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
            "Retry-After",
            "X-RateLimit-Limit-Hour",
        ] {
            assert!(res.header(name).is_none(), "{name}");
        }
    }
}

#[tokio::test]
async fn config_rules_and_messages_are_kongs() {
    let schema = RateLimiting::schema();
    let fields = |entity: Value| schema.validate_entity(entity).unwrap_err().fields().clone();
    let f = fields(json!({ "config": {} }));
    assert_eq!(
        f["@entity"],
        json!([
            "at least one of these fields must be non-empty: 'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'"
        ])
    );
    let f = fields(json!({ "config": { "second": 20, "hour": 10 } }));
    assert_eq!(
        f["config"],
        "The limit for hour(10.0) cannot be lower than the limit for second(20.0)"
    );
    let f = fields(json!({ "config": { "second": 1, "sync_rate": 1 } }));
    assert_eq!(f["config"], "sync_rate can only be used with the redis policy");
    let f =
        fields(json!({ "config": { "second": 1, "policy": "redis", "sync_rate": 0.01, "redis": { "host": "r" } } }));
    assert_eq!(f["config"], "sync_rate must be greater than 0.02, or -1 to disable");
    let f = fields(json!({ "config": { "second": 1, "policy": "redis" } }));
    assert_eq!(f["config"]["redis"]["host"], "required field missing");
    assert_eq!(
        f["@entity"],
        json!(["failed conditional validation given value of field 'config.policy'"])
    );
    let f = fields(json!({ "config": { "second": 1, "limit_by": "header" } }));
    assert_eq!(f["config"]["header_name"], "required field missing");
    let f = fields(json!({ "config": { "second": 0, "policy": "everywhere" } }));
    assert_eq!(f["config"]["second"], "value must be greater than 0");
    assert_eq!(f["config"]["policy"], "expected one of: local, cluster, redis");

    let ok = schema
        .validate_config(json!({ "minute": 5, "policy": "redis", "redis": { "host": "127.0.0.1" } }))
        .unwrap();
    assert_eq!(ok["redis"]["port"], 6379);
    assert_eq!(ok["redis"]["timeout"], 2000);
    assert_eq!(ok["redis"]["database"], 0);
    assert_eq!(ok["limit_by"], "consumer");
    assert_eq!(ok["error_code"], 429);
    assert_eq!(ok["sync_rate"], -1);
    // The schema publishes the plugin-level checks at the top, as Kong's /schemas does.
    let published = schema.to_json();
    assert_eq!(published["entity_checks"][0]["at_least_one_of"][0], "config.second");
}

/// A route with key-auth and rate-limiting by consumer, two consumers; answers the route's
/// id and bob's.
async fn consumers(bp: &Blueprint, config: Value) -> (Uuid, Uuid) {
    let route = bp.routes().insert(json!({ "paths": ["/limited"] })).await;
    bp.plugins()
        .insert(json!({ "name": KeyAuth::NAME, "route": { "id": route["id"] } }))
        .await;
    bp.plugins()
        .insert(json!({ "name": RateLimiting::NAME, "route": { "id": route["id"] }, "config": config }))
        .await;
    let mut bob = Uuid::nil();
    for name in ["bob", "alice"] {
        let c = bp.consumers().insert(json!({ "username": name })).await;
        bp.table("keyauth_credentials")
            .insert(json!({ "key": name, "consumer": { "id": c["id"] } }))
            .await;
        if name == "bob" {
            bob = c["id"].as_str().unwrap().parse().unwrap();
        }
    }
    (route["id"].as_str().unwrap().parse().unwrap(), bob)
}

async fn status(kong: &Gateway, path: &str, key: &str) -> (u16, Option<String>) {
    let res = kong.proxy_client().get(path).header("apikey", key).send().await;
    let left = res.header("X-RateLimit-Remaining-Hour").map(str::to_owned);
    (res.status(), left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_counted_apart_on_every_strategy() {
    fresh_window().await;
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        consumers(&bp, json!({ "hour": 2 })).await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        assert_eq!(
            status(&kong, "/limited", "bob").await,
            (200, Some("1".into())),
            "[#{strategy}]"
        );
        assert_eq!(
            status(&kong, "/limited", "bob").await,
            (200, Some("0".into())),
            "[#{strategy}]"
        );
        assert_eq!(status(&kong, "/limited", "bob").await.0, 429, "[#{strategy}]");
        assert_eq!(status(&kong, "/limited", "alice").await.0, 200, "[#{strategy}]");
        kong.stop().await;
    }
}

/// Waits until the database holds `n` of bob's requests this hour on `route` (the `cluster`
/// policy writes in the background).
async fn counted(bp: &Blueprint, route: Uuid, bob: Uuid, n: i64) {
    let now = now() as i64;
    let key = CounterKey {
        route_id: route,
        service_id: Uuid::nil(),
        identifier: bob.to_string(),
        period: "hour".into(),
        period_date: now - now % 3600,
    };
    helpers::wait_until("the count in the database", Duration::from_secs(10), || async {
        let values = bp
            .store()
            .counter_values(CounterTable::RateLimiting, std::slice::from_ref(&key), now)
            .await
            .unwrap();
        values[0] == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_enforce_one_limit() {
    fresh_window().await;
    for strategy in helpers::each_strategy() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let (route, bob) = consumers(&bp, json!({ "hour": 3, "policy": "cluster" })).await;
        let first = helpers::start_kong(&bp, Conf::default()).await;
        let second = helpers::start_another_kong(&bp, Conf::default()).await;
        let nodes = [&first, &second, &first, &second];
        for (i, node) in nodes.iter().enumerate() {
            let (code, left) = status(node, "/limited", "bob").await;
            if i < 3 {
                assert_eq!(
                    (code, left),
                    (200, Some((2 - i).to_string())),
                    "[#{strategy}] request {i}"
                );
                counted(&bp, route, bob, i as i64 + 1).await;
            } else {
                assert_eq!(code, 429, "[#{strategy}] the other node's requests count");
            }
        }
        // The refusal is not counted; alice has her own allowance.
        counted(&bp, route, bob, 3).await;
        assert_eq!(status(&second, "/limited", "alice").await.0, 200, "[#{strategy}]");
        first.stop().await;
        second.stop().await;
    }
}

/// Two harness nodes with a global instance counting by a header unique to the test.
async fn redis_nodes(config: Value) -> (TestGateway, TestGateway) {
    let node = || async {
        Harness::new()
            .plugin::<RateLimiting>(config.clone())
            .start()
            .await
            .unwrap()
    };
    (node().await, node().await)
}

fn tenant(id: &str) -> TestRequest {
    TestRequest::get("/").header("X-Tenant", id)
}

fn redis_config(host: &str, port: u16, extra: Value) -> Value {
    let mut config = json!({
        "hour": 3,
        "policy": "redis",
        "limit_by": "header",
        "header_name": "X-Tenant",
        "redis": { "host": host, "port": port },
    });
    for (k, v) in extra.as_object().unwrap() {
        if k == "redis" {
            for (rk, rv) in v.as_object().unwrap() {
                config["redis"][rk] = rv.clone();
            }
        } else {
            config[k] = v.clone();
        }
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_enforce_one_limit() {
    let Some((host, port)) = helpers::redis_or_skip() else {
        return;
    };
    fresh_window().await;
    let (a, b) = redis_nodes(redis_config(&host, port, json!({}))).await;
    let id = Uuid::new_v4().to_string();
    for (i, node) in [&a, &b, &a].into_iter().enumerate() {
        let res = node.send(tenant(&id), ok).await;
        assert_eq!(res.status(), 200, "request {i}");
        assert_eq!(header(&res, "X-RateLimit-Remaining-Hour"), (2 - i).to_string());
    }
    let res = b.send(tenant(&id), ok).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "RateLimit-Remaining"), "0");
    // Another tenant, another count.
    assert_eq!(b.send(tenant(&Uuid::new_v4().to_string()), ok).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_sync_rate_nodes_count_locally_and_send_their_counts_to_redis() {
    let Some((host, port)) = helpers::redis_or_skip() else {
        return;
    };
    fresh_window().await;
    let (a, b) = redis_nodes(redis_config(
        &host,
        port,
        json!({ "sync_rate": 0.05, "redis": { "database": 1 } }),
    ))
    .await;
    let id = Uuid::new_v4().to_string();
    assert_eq!(
        header(&a.send(tenant(&id), ok).await, "X-RateLimit-Remaining-Hour"),
        "2"
    );
    assert_eq!(
        header(&a.send(tenant(&id), ok).await, "X-RateLimit-Remaining-Hour"),
        "1"
    );
    // The node's count reaches Redis (database 1) within the sync rate.
    let now = now() as i64;
    let key = format!(
        "ratelimit:{0}:{0}:{id}:{1}:hour",
        Uuid::nil(),
        (now - now % 3600) * 1000
    );
    let redis = kong_pdk::pdk::NodeInfo::default()
        .redis
        .expect("the gateway's Redis client");
    let mut server = kong_pdk::redis::RedisSettings::new(host.clone(), port);
    server.database = 1;
    helpers::wait_until("the synced count in Redis", Duration::from_secs(10), || async {
        let replies = redis
            .pipeline(&server, vec![kong_pdk::redis::RedisCommand::new("GET").arg(&key)])
            .await
            .unwrap();
        replies[0].as_int() == Some(2)
    })
    .await;
    // The other node starts from Redis's count.
    let res = b.send(tenant(&id), ok).await;
    assert_eq!((res.status(), header(&res, "X-RateLimit-Remaining-Hour")), (200, "0"));
    assert_eq!(b.send(tenant(&id), ok).await.status(), 429);
}

#[tokio::test]
async fn redis_failures_let_traffic_through_or_answer_500_as_configured() {
    // A port nothing listens on, and a password the server does not expect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = redis_config("127.0.0.1", port, json!({ "redis": { "timeout": 500 } }));
    let gw = gateway(down.clone()).await;
    let res = gw.send(tenant("t"), ok).await;
    assert_eq!(res.status(), 200, "fault tolerant by default");
    assert!(res.header("RateLimit-Limit").is_none(), "no usage, no headers");
    assert!(res.logged("failed to get usage"), "{:?}", res.logs());

    let mut strict = down;
    strict["fault_tolerant"] = json!(false);
    let gw = gateway(strict).await;
    let res = gw.send(tenant("t"), ok).await;
    assert_eq!(res.status(), 500);
    assert_eq!(res.json()["message"], "An unexpected error occurred");
    assert!(res.upstream_request().is_none());

    let Some((host, port)) = helpers::redis_or_skip() else {
        return;
    };
    let wrong = redis_config(
        &host,
        port,
        json!({ "fault_tolerant": false, "redis": { "password": "not-this-one" } }),
    );
    let res = gateway(wrong).await.send(tenant("t"), ok).await;
    assert_eq!(res.status(), 500, "a failed AUTH is a failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_redis_fields_are_accepted_and_shown_as_kong_does() {
    let bp = helpers::get_db_utils(helpers::Strategy::Sqlite, &["bundled"]).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let admin = kong.admin_client();
    let config = json!({ "minute": 5, "policy": "redis", "redis_host": "redis.local", "redis_port": 6380 });
    let res = admin
        .post("/plugins")
        .json(&json!({ "name": "rate-limiting", "config": config }))
        .send()
        .await;
    let created: Value = serde_json::from_str(&res.assert_status(201)).unwrap();
    let c = &created["config"];
    assert_eq!(
        (&c["redis"]["host"], &c["redis"]["port"]),
        (&json!("redis.local"), &json!(6380))
    );
    // The old names are shown with the new fields' values.
    assert_eq!(
        (&c["redis_host"], &c["redis_port"]),
        (&json!("redis.local"), &json!(6380))
    );
    assert_eq!(c["redis_timeout"], 2000);
    assert_eq!(c["redis_password"], Value::Null);
    let id = created["id"].as_str().unwrap();
    let shown = admin.get(&format!("/plugins/{id}")).send().await.assert_json();
    assert_eq!(shown["config"]["redis_database"], 0);

    // A PATCH by an old name changes the new field, and keeps the rest of the record.
    let res = admin
        .patch(&format!("/plugins/{id}"))
        .json(&json!({ "config": { "redis_host": "other.local" } }))
        .send()
        .await;
    let patched: Value = serde_json::from_str(&res.assert_status(200)).unwrap();
    assert_eq!(patched["config"]["redis"]["host"], "other.local");
    assert_eq!(patched["config"]["redis"]["port"], 6380, "the record merged");

    // Both names with different values is Kong's error at the old one.
    let res = admin
        .post("/plugins")
        .json(&json!({ "name": "rate-limiting", "route": null, "config": {
            "minute": 5, "policy": "redis", "redis_host": "a", "redis": { "host": "b" } } }))
        .send()
        .await;
    let err: Value = serde_json::from_str(&res.assert_status(400)).unwrap();
    assert_eq!(
        err["fields"]["config"]["redis_host"],
        "both deprecated and new field are used but their values mismatch: redis_host = a vs redis.host = b"
    );
    kong.stop().await;
}
