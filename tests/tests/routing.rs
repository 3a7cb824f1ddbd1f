//! Routing by host on every strategy: a route's hosts may carry a port (Kong's
//! `typedefs.hosts`), which the request's Host must then match.

use kong_pdk::testing::helpers::{self, Conf};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_with_a_port_match_the_host_header_with_that_port() {
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        bp.routes()
            .insert(json!({ "hosts": ["preserved.com:123", "*.wild.test"], "paths": ["/"] }))
            .await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let status = |host: &'static str| {
            let client = kong.proxy_client();
            async move { client.get("/request").header("Host", host).send().await.status() }
        };
        assert_eq!(status("preserved.com:123").await, 200, "[#{strategy}]");
        assert_eq!(status("preserved.com").await, 404, "[#{strategy}] another port");
        assert_eq!(status("a.wild.test").await, 200, "[#{strategy}]");
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_hosts_are_checked_with_kongs_messages() {
    let bp = helpers::get_db_utils(helpers::Strategy::Sqlite, &["bundled"]).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let admin = kong.admin_client();
    for (host, message) in [
        ("a.*.b*", "invalid wildcard: must have at most one wildcard"),
        (
            "a*b.test",
            "invalid wildcard: must be placed at leftmost or rightmost label",
        ),
        ("example.com:99999", "invalid port number"),
    ] {
        let res = admin.post("/routes").json(&json!({ "hosts": [host] })).send().await;
        let body: serde_json::Value = serde_json::from_str(&res.assert_status(400)).unwrap();
        assert_eq!(body["fields"]["hosts"], json!([message]), "{host}");
    }
    kong.stop().await;
}
