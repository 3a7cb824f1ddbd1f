//! Dynamic plugin ordering (Kong Enterprise's `ordering`, issue 16 item 19), on every
//! strategy: stored and shown by the Admin API, applied to `access` only, and contradicting
//! orderings refused.

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Conf, Strategy};
use kong_plugins::{cors::Cors, key_auth::KeyAuth, request_termination::RequestTermination};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordering_moves_a_plugin_in_access() {
    assert_eq!((KeyAuth::PRIORITY, RequestTermination::PRIORITY), (1250, 2));
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let plain = bp.routes().insert(json!({ "paths": ["/plain"] })).await;
        let ordered = bp.routes().insert(json!({ "paths": ["/ordered"] })).await;
        for route in [&plain, &ordered] {
            bp.plugins()
                .insert(json!({ "name": "key-auth", "route": { "id": route["id"] } }))
                .await;
        }
        // request-termination (priority 2) runs after key-auth (1250) unless told otherwise.
        bp.plugins()
            .insert(json!({ "name": "request-termination", "route": { "id": plain["id"] },
                            "config": { "status_code": 503, "message": "closed" } }))
            .await;
        let moved = bp
            .plugins()
            .insert(json!({ "name": "request-termination", "route": { "id": ordered["id"] },
                            "config": { "status_code": 503, "message": "closed" },
                            "ordering": { "before": { "access": ["key-auth"] } } }))
            .await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();
        let res = proxy.get("/plain/get").send().await;
        res.assert_status(401);
        let res = proxy.get("/ordered/get").send().await;
        res.assert_status(503);
        assert_eq!(res.assert_json(), json!({ "message": "closed" }), "[#{strategy}]");

        let shown = kong
            .admin_client()
            .get(&format!("/plugins/{}", moved["id"].as_str().unwrap()))
            .send()
            .await
            .assert_json();
        assert_eq!(
            shown["ordering"]["before"]["access"],
            json!(["key-auth"]),
            "[#{strategy}]"
        );
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicting_orderings_are_refused() {
    assert_eq!((KeyAuth::NAME, Cors::NAME), ("key-auth", "cors"));
    let bp = helpers::get_db_utils(Strategy::Sqlite, &["bundled"]).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let admin = kong.admin_client();
    admin
        .post("/plugins")
        .json(&json!({ "name": "key-auth", "ordering": { "before": { "access": ["cors"] } } }))
        .send()
        .await
        .assert_status(201);
    let res = admin
        .post("/plugins")
        .json(&json!({ "name": "cors", "ordering": { "before": { "access": ["key-auth"] } } }))
        .send()
        .await;
    res.assert_status(400);
    assert_eq!(
        res.assert_json()["fields"]["ordering"],
        "There is a circular dependency in the graph. It is not possible to derive a topological sort."
    );
    // The shape is checked.
    let res = admin
        .post("/plugins")
        .json(&json!({ "name": "cors", "ordering": { "before": { "access": "key-auth" } } }))
        .send()
        .await;
    res.assert_status(400);
    assert_eq!(
        res.assert_json()["fields"]["ordering"]["before"]["access"],
        "expected an array"
    );
    kong.stop().await;
}
