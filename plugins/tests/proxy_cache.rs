//! proxy-cache (Kong's `spec/03-plugins/31-proxy-cache`): misses, hits, keys, bypasses,
//! `Cache-Control`, the diagnostic headers, streamed bodies, and the `/proxy-cache` Admin API.

use bytes::Bytes;
use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Conf};
use kong_pdk::testing::{Harness, MockResponse, Outcome, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::proxy_cache::ProxyCache;
use serde_json::{Value, json};

async fn gateway(config: Value) -> TestGateway {
    let mut config = config;
    config["strategy"] = json!("memory");
    Harness::new().route_plugin::<ProxyCache>(config).start().await.unwrap()
}

fn json_ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{\"hello\":\"world\"}").header("Content-Type", "application/json")
}

fn status(res: &Outcome) -> Option<&str> {
    res.header("X-Cache-Status")
}

#[tokio::test]
async fn a_miss_is_stored_and_the_next_request_hits() {
    assert_eq!((ProxyCache::NAME, ProxyCache::PRIORITY), ("proxy-cache", 100));
    let gw = gateway(json!({})).await;
    let first = gw.send(TestRequest::get("/get"), json_ok).await;
    assert_eq!(status(&first), Some("Miss"));
    let key = first.header("X-Cache-Key").unwrap().to_owned();
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let hit = gw
        .send(TestRequest::get("/get"), |_: &UpstreamRequest| -> MockResponse {
            panic!("a hit is not proxied")
        })
        .await;
    assert_eq!(hit.status(), 200);
    assert_eq!(status(&hit), Some("Hit"));
    assert_eq!(hit.header("X-Cache-Key"), Some(key.as_str()));
    assert!(hit.header("Age").is_some_and(|a| a.parse::<u64>().is_ok()));
    assert_eq!(hit.body_text(), "{\"hello\":\"world\"}");
    assert_eq!(hit.header("Content-Type"), Some("application/json"));
    assert!(hit.upstream_request().is_none());
    // A hit stands in for the upstream: reported as proxied, as Kong's are.
    assert!(hit.header("X-Kong-Proxy-Latency").is_some() && hit.header("X-Kong-Response-Latency").is_none());
    // Another query, another key; the order of arguments does not matter.
    let other = gw.send(TestRequest::get("/get?b=2&a=1"), json_ok).await;
    assert_eq!(status(&other), Some("Miss"));
    assert_ne!(other.header("X-Cache-Key"), Some(key.as_str()));
    let same = gw.send(TestRequest::get("/get?a=1&b=2"), json_ok).await;
    assert_eq!(status(&same), Some("Hit"));
}

#[tokio::test]
async fn keys_vary_by_the_configured_arguments_and_headers_only() {
    let gw = gateway(json!({ "vary_query_params": ["a"], "vary_headers": ["X-Tenant"] })).await;
    let req = |q: &str, tenant: &str| TestRequest::get(&format!("/get?{q}")).header("X-Tenant", tenant);
    assert_eq!(status(&gw.send(req("a=1&b=1", "t1"), json_ok).await), Some("Miss"));
    assert_eq!(
        status(&gw.send(req("a=1&b=2", "t1"), json_ok).await),
        Some("Hit"),
        "b does not vary"
    );
    assert_eq!(status(&gw.send(req("a=2", "t1"), json_ok).await), Some("Miss"));
    assert_eq!(
        status(&gw.send(req("a=1", "t2"), json_ok).await),
        Some("Miss"),
        "the header varies"
    );
    let gw = gateway(json!({ "ignore_uri_case": true })).await;
    assert_eq!(status(&gw.send(TestRequest::get("/Get"), json_ok).await), Some("Miss"));
    assert_eq!(status(&gw.send(TestRequest::get("/gET"), json_ok).await), Some("Hit"));
}

#[tokio::test]
async fn requests_and_responses_that_are_not_cacheable_bypass() {
    let gw = gateway(json!({})).await;
    let res = gw.send(TestRequest::post("/post", "x"), json_ok).await;
    assert_eq!(status(&res), Some("Bypass"));
    assert!(res.header("X-Cache-Key").is_none());
    let error = |_: &UpstreamRequest| MockResponse::new(500).header("Content-Type", "application/json");
    assert_eq!(status(&gw.send(TestRequest::get("/500"), error).await), Some("Bypass"));
    assert_eq!(
        status(&gw.send(TestRequest::get("/500"), error).await),
        Some("Bypass"),
        "never stored"
    );
    // Media types match exactly, parameters included.
    for (i, ct) in ["text/html", "application/json; charset=utf-8", "application/xml;"]
        .iter()
        .enumerate()
    {
        let up = |_: &UpstreamRequest| MockResponse::ok("x").header("Content-Type", ct);
        let res = gw.send(TestRequest::get(&format!("/t{i}")), up).await;
        assert_eq!(status(&res), Some("Bypass"), "{ct}");
    }
    let gw = gateway(json!({ "content_type": ["application/*; charset=utf-8"] })).await;
    let up = |_: &UpstreamRequest| MockResponse::ok("x").header("Content-Type", "application/json; charset=utf-8");
    assert_eq!(status(&gw.send(TestRequest::get("/w"), up).await), Some("Miss"));
    assert_eq!(status(&gw.send(TestRequest::get("/w"), up).await), Some("Hit"));
}

#[tokio::test]
async fn cache_control_is_honoured_when_configured() {
    let gw = gateway(json!({ "cache_control": true })).await;
    let with_cc = |cc: &'static str| {
        move |_: &UpstreamRequest| {
            MockResponse::ok("{}")
                .header("Content-Type", "application/json")
                .header("Cache-Control", cc)
        }
    };
    // No max-age nor Expires: not cacheable with cache_control.
    let plain = |_: &UpstreamRequest| MockResponse::ok("{}").header("Content-Type", "application/json");
    assert_eq!(status(&gw.send(TestRequest::get("/none"), plain).await), Some("Bypass"));
    assert_eq!(
        status(&gw.send(TestRequest::get("/zero"), with_cc("max-age=0")).await),
        Some("Bypass")
    );
    assert_eq!(
        status(
            &gw.send(TestRequest::get("/private"), with_cc("private, max-age=60"))
                .await
        ),
        Some("Bypass")
    );
    assert_eq!(
        status(&gw.send(TestRequest::get("/ok"), with_cc("max-age=60")).await),
        Some("Miss")
    );
    assert_eq!(
        status(&gw.send(TestRequest::get("/ok"), with_cc("max-age=60")).await),
        Some("Hit")
    );
    // The client's directives.
    let req = |cc: &str| TestRequest::get("/ok").header("Cache-Control", cc);
    assert_eq!(
        status(&gw.send(req("no-cache"), with_cc("max-age=60")).await),
        Some("Bypass")
    );
    assert_eq!(
        status(&gw.send(req("min-fresh=1000"), with_cc("max-age=60")).await),
        Some("Refresh")
    );
    let res = gw
        .send(
            TestRequest::get("/cold").header("Cache-Control", "only-if-cached"),
            plain,
        )
        .await;
    assert_eq!(res.status(), 504);
    assert!(res.upstream_request().is_none());
    // Without cache_control the client's directives do not matter.
    let gw = gateway(json!({})).await;
    gw.send(TestRequest::get("/x"), json_ok).await;
    assert_eq!(
        status(
            &gw.send(TestRequest::get("/x").header("Cache-Control", "no-cache"), json_ok)
                .await
        ),
        Some("Hit")
    );
}

#[tokio::test]
async fn diagnostic_headers_follow_the_config_or_kong_debug_and_hits_drop_hop_by_hop_ones() {
    let gw =
        gateway(json!({ "response_headers": { "age": false, "X-Cache-Status": false, "X-Cache-Key": false } })).await;
    let up = |_: &UpstreamRequest| {
        MockResponse::ok("{}")
            .header("Content-Type", "application/json")
            .header("X-RateLimit-Remaining-Minute", "4")
            .header("X-Custom", "kept")
            .header("Set-Cookie", "a=1")
            .header("Set-Cookie", "b=2")
    };
    let res = gw.send(TestRequest::get("/h"), up).await;
    assert!(status(&res).is_none() && res.header("X-Cache-Key").is_none());
    let hit = gw.send(TestRequest::get("/h"), up).await;
    assert!(status(&hit).is_none() && hit.header("Age").is_none());
    assert_eq!(hit.header("X-Custom"), Some("kept"));
    let cookies: Vec<_> = hit.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"], "every value of a stored header is replayed");
    assert!(
        hit.header("X-RateLimit-Remaining-Minute").is_none(),
        "rate-limit headers are not replayed"
    );
    let debug = gw.send(TestRequest::get("/h").header("Kong-Debug", "1"), up).await;
    assert_eq!(status(&debug), Some("Hit"));
    assert!(debug.header("Age").is_some() && debug.header("X-Cache-Key").is_some());
}

#[tokio::test]
async fn a_streamed_miss_reaches_the_client_as_it_comes_and_hits_replay_it_whole() {
    let gw = gateway(json!({ "content_type": ["text/plain"] })).await;
    let chunks = |_: &UpstreamRequest| {
        MockResponse::ok("")
            .header("Content-Type", "text/plain")
            .chunks(["one,", "two,", "three"].map(|s: &'static str| Bytes::from_static(s.as_bytes())))
    };
    let miss = gw.send(TestRequest::get("/stream"), chunks).await;
    assert_eq!(status(&miss), Some("Miss"));
    assert!(miss.chunks().len() >= 3, "streamed: {:?}", miss.chunks());
    let hit = gw.send(TestRequest::get("/stream"), chunks).await;
    assert_eq!(status(&hit), Some("Hit"));
    assert_eq!(hit.body_text(), "one,two,three");
    assert_eq!(hit.header("Content-Length"), Some("13"));
}

#[tokio::test]
async fn config_rules_are_kongs() {
    let schema = ProxyCache::schema();
    let fields = |config: Value| schema.validate_config(config).unwrap_err().fields().clone();
    assert_eq!(fields(json!({}))["config"]["strategy"], "required field missing");
    assert_eq!(
        fields(json!({ "strategy": "memory", "memory": { "dictionary_name": "nope" } }))["config"],
        "missing shared dict 'nope'"
    );
    assert_eq!(
        fields(json!({ "strategy": "memory", "response_code": [99] }))["config"]["response_code"],
        json!(["value should be between 100 and 900"])
    );
    assert_eq!(
        fields(json!({ "strategy": "memory", "cache_ttl": 0 }))["config"]["cache_ttl"],
        "value must be greater than 0"
    );
    let ok = schema.validate_config(json!({ "strategy": "memory" })).unwrap();
    assert_eq!(
        ok["response_headers"],
        json!({ "age": true, "X-Cache-Status": true, "X-Cache-Key": true })
    );
    assert_eq!(ok["memory"]["dictionary_name"], "kong_db_cache");
    assert_eq!(ok["response_code"], json!([200, 301, 404]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_looks_entries_up_and_purges_them() {
    for strategy in helpers::each_strategy() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let route = bp.routes().insert(json!({ "paths": ["/"] })).await;
        let plugin = bp
            .plugins()
            .insert(json!({ "name": "proxy-cache", "route": { "id": route["id"] },
                "config": { "strategy": "memory", "content_type": ["application/json"] } }))
            .await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();
        let admin = kong.admin_client();
        let res = proxy.get("/request").send().await;
        assert_eq!(res.header("X-Cache-Status"), Some("Miss"), "[#{strategy}]");
        let key = res.header("X-Cache-Key").unwrap().to_owned();
        // (The mock's answer has a Content-Length: the body is stored all the same.)
        assert_eq!(proxy.get("/request").send().await.header("X-Cache-Status"), Some("Hit"));

        let stored = admin.get(&format!("/proxy-cache/{key}")).send().await.assert_json();
        assert_eq!(stored["headers"]["x-cache-key"], key.as_str(), "[#{strategy}]");
        assert_eq!(stored["status"], 200, "{stored}");
        assert_eq!(stored["version"], 1);
        let id = plugin["id"].as_str().unwrap();
        let by_plugin = admin.get(&format!("/proxy-cache/{id}/caches/{key}")).send().await;
        by_plugin.assert_status(200);
        admin.get("/proxy-cache/0000").send().await.assert_status(404);

        admin
            .delete(&format!("/proxy-cache/{key}"))
            .send()
            .await
            .assert_status(204);
        admin
            .get(&format!("/proxy-cache/{key}"))
            .send()
            .await
            .assert_status(404);
        admin
            .delete(&format!("/proxy-cache/{key}"))
            .send()
            .await
            .assert_status(404);
        assert_eq!(
            proxy.get("/request").send().await.header("X-Cache-Status"),
            Some("Miss")
        );
        admin.delete("/proxy-cache").send().await.assert_status(204);
        assert_eq!(
            proxy.get("/request").send().await.header("X-Cache-Status"),
            Some("Miss")
        );
        admin
            .delete(&format!("/proxy-cache/{id}/caches/{key}"))
            .send()
            .await
            .assert_status(204);
        admin
            .get(&format!("/proxy-cache/{id}/caches/{key}"))
            .send()
            .await
            .assert_status(404);
        kong.stop().await;
    }
}
