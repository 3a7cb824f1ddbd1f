//! prometheus (Kong's `spec/03-plugins/26-prometheus`): counters and histograms by value after
//! traffic, on the Admin API and the Status API, Kong's exact series lines, and a scrape that
//! parses as Prometheus' text format.

use std::collections::HashMap;
use std::time::Duration;

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Conf, Gateway};
use kong_plugins::prometheus::Prometheus;
use serde_json::json;

/// Every sample of a scrape, parsed: `name{labels sorted}` → value; histograms by bucket.
fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a Prometheus text exposition")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name} is not a single value: {other:?}"),
        })
}

/// The buckets (upper bound → cumulative count) of the histogram `name` with `labels`.
fn buckets(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> HashMap<String, f64> {
    let sample = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no histogram {name} {labels:?}"));
    match &sample.value {
        prometheus_parse::Value::Histogram(h) => h.iter().map(|b| (b.less_than.to_string(), b.count)).collect(),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

async fn scrape(kong: &Gateway) -> String {
    let res = kong.admin_client().get("/metrics").send().await;
    assert_eq!(res.header("content-type"), Some("text/plain; charset=UTF-8"));
    res.assert_status(200)
}

/// Waits until the admin scrape holds `line` (the log phase runs after the answer is sent).
async fn scrape_with(kong: &Gateway, line: &str) -> String {
    let mut last = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            last = scrape(kong).await;
            if last.contains(line) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "the scrape never held {line}:\n{last}");
    last
}

const ALL: [&str; 4] = [
    "status_code_metrics",
    "latency_metrics",
    "bandwidth_metrics",
    "per_consumer",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_latencies_and_bandwidth_are_counted_by_value() {
    assert_eq!((Prometheus::NAME, Prometheus::PRIORITY), ("prometheus", 13));
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let service = bp.services().insert(json!({ "name": "mock-service" })).await;
        bp.routes()
            .insert(json!({ "name": "http-route", "paths": ["/"], "service": { "id": service["id"] } }))
            .await;
        let anonymous = bp
            .routes()
            .insert(json!({ "paths": ["/anon"], "service": { "id": service["id"] } }))
            .await;
        let config: serde_json::Map<_, _> = ALL.iter().map(|k| (k.to_string(), json!(true))).collect();
        bp.plugins()
            .insert(json!({ "name": "prometheus", "config": config }))
            .await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();

        proxy.get("/status/200").send().await.assert_status(200);
        let text = scrape_with(
            &kong,
            r#"kong_http_requests_total{service="mock-service",route="http-route",code="200",source="service",workspace="default",consumer=""} 1"#,
        )
        .await;
        assert!(text.contains("kong_nginx_metric_errors_total 0"), "[#{strategy}]");
        proxy.get("/status/400").send().await.assert_status(400);
        proxy.post("/post").body("0123456789").send().await.assert_status(200);
        let anon_line = format!(
            r#"kong_http_requests_total{{service="mock-service",route="{}",code="200",source="service",workspace="default",consumer=""}} 1"#,
            anonymous["id"].as_str().unwrap()
        );
        proxy.get("/anon/get").send().await.assert_status(200);
        let text = scrape_with(&kong, &anon_line).await;
        let text = if text.contains(r#"code="400""#) && text.contains(r#"direction="ingress""#) {
            text
        } else {
            scrape_with(&kong, r#"direction="ingress""#).await
        };

        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("kong"),
                "[#{strategy}] {line}"
            );
        }
        let s = parse(&text);
        let route = [
            ("service", "mock-service"),
            ("route", "http-route"),
            ("workspace", "default"),
        ];
        let with_code = |code| {
            [
                ("service", "mock-service"),
                ("route", "http-route"),
                ("code", code),
                ("source", "service"),
                ("consumer", ""),
            ]
        };
        assert_eq!(
            value(&s, "kong_http_requests_total", &with_code("200")),
            Some(2.0),
            "[#{strategy}]"
        );
        assert_eq!(
            value(&s, "kong_http_requests_total", &with_code("400")),
            Some(1.0),
            "[#{strategy}]"
        );
        // Three requests on http-route: each latency histogram counted them all.
        for histogram in [
            "kong_request_latency_ms",
            "kong_upstream_latency_ms",
            "kong_kong_latency_ms",
        ] {
            let b = buckets(&s, histogram, &route);
            assert_eq!(b.get("inf"), Some(&3.0), "[#{strategy}] {histogram}: {b:?}");
            assert_eq!(
                value(&s, &format!("{histogram}_count"), &route),
                Some(3.0),
                "[#{strategy}]"
            );
        }
        // Kong's bounds, as plain numbers.
        assert!(text.contains(
            r#"kong_kong_latency_ms_bucket{service="mock-service",route="http-route",workspace="default",le="1"}"#
        ));
        assert!(text.contains(r#"kong_upstream_latency_ms_bucket{service="mock-service",route="http-route",workspace="default",le="60000"}"#));
        let ingress = [("route", "http-route"), ("direction", "ingress"), ("consumer", "")];
        assert_eq!(value(&s, "kong_bandwidth_bytes", &ingress), Some(10.0), "[#{strategy}]");
        let egress = [("route", "http-route"), ("direction", "egress")];
        assert!(
            value(&s, "kong_bandwidth_bytes", &egress).unwrap() > 0.0,
            "[#{strategy}]"
        );
        // The node's own gauges.
        assert!(text.contains("kong_datastore_reachable 1"), "[#{strategy}]");
        assert!(value(&s, "kong_nginx_requests_total", &[("subsystem", "http")]).unwrap() >= 4.0);
        assert!(value(&s, "kong_nginx_connections_total", &[("state", "accepted")]).unwrap() >= 1.0);
        assert!(value(&s, "kong_memory_workers_lua_vms_bytes", &[("kong_subsystem", "http")]).unwrap() > 0.0);
        assert_eq!(value(&s, "kong_node_info", &[("version", "3.10.0")]), Some(1.0));
        assert!(text.contains("# HELP kong_http_requests_total HTTP status codes per consumer/service/route in Kong\n# TYPE kong_http_requests_total counter\n"));
        assert!(text.contains("# TYPE kong_kong_latency_ms histogram\n"));

        // The Status API serves the same scrape.
        let status = kong.status_client().get("/metrics").send().await;
        assert_eq!(status.header("content-type"), Some("text/plain; charset=UTF-8"));
        assert!(status.assert_status(200).contains(&anon_line), "[#{strategy}]");
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_kong_gave_itself_and_consumers_are_labelled() {
    let bp = helpers::get_db_utils(helpers::Strategy::Sqlite, &["bundled"]).await;
    let service = bp.services().insert(json!({ "name": "mock-service" })).await;
    let route = bp
        .routes()
        .insert(
            json!({ "name": "http-route", "paths": ["/get"], "strip_path": false, "service": { "id": service["id"] } }),
        )
        .await;
    bp.plugins()
        .insert(json!({ "name": "key-auth", "route": { "id": route["id"] } }))
        .await;
    let alice = bp.consumers().insert(json!({ "username": "alice" })).await;
    bp.table("keyauth_credentials")
        .insert(json!({ "key": "secret", "consumer": { "id": alice["id"] } }))
        .await;
    bp.plugins()
        .insert(json!({ "name": "prometheus", "config": { "status_code_metrics": true, "per_consumer": true, "latency_metrics": true } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let proxy = kong.proxy_client();
    proxy.get("/get").send().await.assert_status(401);
    proxy
        .get("/get")
        .header("apikey", "secret")
        .send()
        .await
        .assert_status(200);
    // No route matched: nothing is recorded.
    proxy.get("/nowhere").send().await.assert_status(404);
    scrape_with(
        &kong,
        r#"kong_http_requests_total{service="mock-service",route="http-route",code="401",source="kong",workspace="default",consumer=""} 1"#,
    )
    .await;
    let text = scrape_with(
        &kong,
        r#"kong_http_requests_total{service="mock-service",route="http-route",code="200",source="service",workspace="default",consumer="alice"} 1"#,
    )
    .await;
    let s = parse(&text);
    let route = [("route", "http-route")];
    // The 401 was never proxied: it has a request latency but no upstream latency.
    assert_eq!(value(&s, "kong_request_latency_ms_count", &route), Some(2.0));
    assert_eq!(value(&s, "kong_upstream_latency_ms_count", &route), Some(1.0));
    assert!(!text.contains(r#"code="404""#));
    // Bandwidth was not asked for.
    assert!(!text.contains("kong_bandwidth_bytes{"));
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_instance_only_the_node_is_exported() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled"]).await;
    bp.routes().insert(json!({ "paths": ["/"] })).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    kong.proxy_client().get("/get").send().await.assert_status(200);
    let text = scrape(&kong).await;
    assert!(
        text.contains("kong_datastore_reachable 1"),
        "DB-less: the datastore is in memory"
    );
    assert!(text.contains("# TYPE kong_nginx_connections_total gauge\n"));
    assert!(!text.contains("kong_nginx_metric_errors_total"));
    assert!(!text.contains("kong_http_requests_total"));
    assert!(!text.contains("kong_kong_latency_ms"));
    parse(&text);
    // Only GET reads the metrics.
    let res = kong.admin_client().post("/metrics").send().await;
    assert_eq!(res.status(), 405);
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_kongs() {
    let bp = helpers::get_db_utils(helpers::Strategy::Off, &["bundled"]).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let res = kong.admin_client().get("/schemas/plugins/prometheus").send().await;
    let schema = res.assert_json();
    let config = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.get("config"))
        .unwrap();
    let names: Vec<&str> = config["fields"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f.as_object().unwrap().keys().map(String::as_str))
        .collect();
    assert_eq!(
        names,
        [
            "per_consumer",
            "status_code_metrics",
            "ai_metrics",
            "latency_metrics",
            "bandwidth_metrics",
            "upstream_health_metrics",
            "wasm_metrics"
        ]
    );
    let res = kong
        .admin_client()
        .post("/schemas/plugins/validate")
        .json(&json!({ "name": "prometheus", "config": { "per_consumer": "yes" } }))
        .send()
        .await;
    assert_eq!(
        res.assert_json()["fields"]["config"]["per_consumer"],
        "expected a boolean"
    );
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_target_health_follows_the_balancer() {
    let bp = helpers::get_db_utils(helpers::Strategy::Sqlite, &["bundled"]).await;
    let checked = bp
        .upstreams()
        .insert(
            json!({ "name": "checked.test", "healthchecks": { "passive": { "unhealthy": { "http_failures": 1 } } } }),
        )
        .await;
    let plain = bp.upstreams().insert(json!({ "name": "plain.test" })).await;
    for (u, target) in [
        (&checked, "127.0.0.1:1"),
        (&checked, "127.0.0.1:2"),
        (&plain, "127.0.0.1:3"),
    ] {
        bp.targets()
            .insert(json!({ "upstream": { "id": u["id"] }, "target": target }))
            .await;
    }
    bp.plugins()
        .insert(json!({ "name": "prometheus", "config": { "upstream_health_metrics": true } }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let path = "/upstreams/checked.test/targets/127.0.0.1:2/unhealthy";
    kong.admin_client().put(path).send().await.assert_status(204);
    let text = scrape(&kong).await;
    let s = parse(&text);
    let health = |target: &str, upstream: &str, state: &str| {
        value(
            &s,
            "kong_upstream_target_health",
            &[
                ("upstream", upstream),
                ("target", target),
                ("address", target),
                ("state", state),
                ("subsystem", "http"),
            ],
        )
    };
    assert_eq!(health("127.0.0.1:1", "checked.test", "healthy"), Some(1.0), "{text}");
    assert_eq!(health("127.0.0.1:1", "checked.test", "unhealthy"), Some(0.0));
    assert_eq!(health("127.0.0.1:2", "checked.test", "unhealthy"), Some(1.0));
    assert_eq!(health("127.0.0.1:2", "checked.test", "dns_error"), Some(0.0));
    assert_eq!(health("127.0.0.1:3", "plain.test", "healthchecks_off"), Some(1.0));
    assert_eq!(health("127.0.0.1:3", "plain.test", "healthy"), Some(0.0));
    kong.stop().await;
    let _ = Prometheus::NAME;
}
