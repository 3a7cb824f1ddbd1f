//! The plugin quick start's `spec/my-plugin/01-integration_spec.lua`, ported: for every
//! strategy, a route `/mock` with `my-plugin`, and `GET /mock/anything` gets the header. Then
//! the guide's second step: `config.response_header_name = X-CustomHeaderName`.

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Conf, Gateway, Strategy};
use kong_pdk_examples::my_plugin::MyPlugin;
use serde_json::{Value, json};

// Matches the plugin's name (`#[plugin]` derives it from the struct: "my-plugin").
const PLUGIN_NAME: &str = MyPlugin::NAME;

/// The spec's `setup`: a blueprint with a route, the plugin on it (with `config`), and Kong.
async fn setup(strategy: Strategy, config: Value) -> Gateway {
    // A blueprint: a store of this test's own, with the plugin marked as loaded.
    let bp = helpers::get_db_utils(strategy, &["bundled", PLUGIN_NAME]).await;
    // The route gets a default service pointing at this test's mock upstream.
    let test_route = bp.routes().insert(json!({ "paths": ["/mock"] })).await;
    bp.plugins()
        .insert(json!({ "name": PLUGIN_NAME, "route": { "id": test_route["id"] }, "config": config }))
        .await;
    helpers::start_kong(&bp, Conf::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_gets_a_x_myplugin_header() {
    for strategy in helpers::all_strategies() {
        let kong = setup(strategy, json!({})).await;
        let client = kong.proxy_client();

        let r = client.get("/mock/anything").send().await;
        // The request succeeded...
        r.assert_status(200);
        // ...and the header is there, with the plugin's value.
        let header_value = r.assert_header("X-MyPlugin");
        assert_eq!(header_value, "response", "[#{strategy}]");

        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_gets_the_configured_header_name() {
    for strategy in helpers::all_strategies() {
        let kong = setup(strategy, json!({ "response_header_name": "X-CustomHeaderName" })).await;

        let r = kong.proxy_client().get("/mock/anything").send().await;
        r.assert_status(200);
        assert_eq!(r.assert_header("X-CustomHeaderName"), "response", "[#{strategy}]");
        r.assert_no_header("X-MyPlugin");

        kong.stop().await;
    }
}

#[tokio::test]
async fn a_bad_header_name_is_rejected_with_kongs_message() {
    let bp = helpers::get_db_utils(Strategy::Sqlite, &[PLUGIN_NAME]).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let res = kong
        .admin_client()
        .post("/plugins")
        .form(&json!({ "name": PLUGIN_NAME, "config": { "response_header_name": "bad header" } }))
        .send()
        .await;
    let body = res.assert_status(400);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["name"], "schema violation");
    assert!(
        body["fields"]["config"]["response_header_name"]
            .as_str()
            .is_some_and(|m| m.starts_with("bad header name 'bad header'")),
        "{body:#}"
    );
}
