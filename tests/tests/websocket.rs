//! WebSocket services end to end on every strategy: a `ws` service whose host is an Upstream
//! entity (the balancer picks the target), sessions through it, and `$_REQUEST` showing the
//! handshake the mock upstream got.

use kong_pdk::pdk::{Frame, FrameKind};
use kong_pdk::testing::helpers::{self, Conf};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ws_service_balanced_over_an_upstream_entity() {
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let upstream = bp.upstreams().insert(json!({ "name": "echo-upstream" })).await;
        bp.targets()
            .insert(json!({ "upstream": { "id": upstream["id"] }, "target": bp.mock_upstream().to_string() }))
            .await;
        let service = bp
            .services()
            .insert(json!({ "protocol": "ws", "host": "echo-upstream", "port": 80, "path": "/ws" }))
            .await;
        bp.routes()
            .insert(json!({ "protocols": ["ws"], "paths": ["/chat"], "service": { "id": service["id"] } }))
            .await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let mut ws = kong.websocket("/chat", &[]).await.expect("a session");
        ws.send(Frame::new(FrameKind::Text, "through the balancer")).await;
        assert_eq!(
            ws.receive().await,
            Some(Frame::new(FrameKind::Text, "through the balancer")),
            "[#{strategy}]"
        );
        ws.send(Frame::new(FrameKind::Text, "$_REQUEST")).await;
        let seen: Value = serde_json::from_slice(&ws.receive().await.unwrap().data).unwrap();
        assert_eq!(seen["path"], "/ws");
        // The Host is the target's host and port (Kong's set_host_header).
        assert_eq!(seen["headers"]["host"], bp.mock_upstream().to_string(), "[#{strategy}]");
        ws.send(Frame::close(1000, "bye")).await;
        assert_eq!(ws.receive().await, Some(Frame::close(1000, "bye")));
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_must_share_a_protocol_with_its_route() {
    use kong_pdk::Plugin as _;
    assert_eq!(kong_plugins::key_auth::KeyAuth::NAME, "key-auth");
    for strategy in helpers::each_strategy() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let admin = kong.admin_client();
        let post = |path: &'static str, body: Value| {
            let admin = &admin;
            async move {
                let res = admin.post(path).json(&body).send().await;
                (res.status(), res.assert_json())
            }
        };
        let (_, ws) = post("/services", json!({ "name": "ws", "url": "ws://echo.test" })).await;
        let (_, ws_route) = post(
            "/routes",
            json!({ "paths": ["/ws"], "protocols": ["ws"], "service": { "id": ws["id"] } }),
        )
        .await;
        let (_, web) = post("/services", json!({ "name": "web", "url": "http://echo.test" })).await;
        let (_, web_route) = post(
            "/routes",
            json!({ "paths": ["/web"], "protocols": ["https"], "service": { "id": web["id"] } }),
        )
        .await;

        // key-auth serves WebSocket services: its protocols include ws and wss by default.
        let (status, key_auth) = post(
            "/plugins",
            json!({ "name": "key-auth", "route": { "id": ws_route["id"] } }),
        )
        .await;
        assert_eq!(status, 201, "[#{strategy}] {key_auth}");
        assert_eq!(
            key_auth["protocols"],
            json!(["grpc", "grpcs", "http", "https", "ws", "wss"])
        );
        // cors does not.
        let (status, body) = post("/plugins", json!({ "name": "cors", "route": { "id": ws_route["id"] } })).await;
        assert_eq!(status, 400, "[#{strategy}]");
        assert_eq!(
            body,
            json!({
                "code": 2,
                "name": "schema violation",
                "message": "schema violation (protocols: must match the associated route's protocols)",
                "fields": { "protocols": "must match the associated route's protocols" },
            })
        );
        let (status, body) = post(
            "/plugins",
            json!({ "name": "websocket-size-limit", "route": { "id": web_route["id"] }, "config": { "client_max_payload": 1024 } }),
        )
        .await;
        assert_eq!(
            status, 400,
            "[#{strategy}] a WebSocket plugin on an https route: {body}"
        );
        assert_eq!(
            body["fields"]["protocols"],
            "must match the associated route's protocols"
        );
        let (status, _) = post(
            "/plugins",
            json!({ "name": "cors", "route": { "id": web_route["id"] }, "protocols": ["http"] }),
        )
        .await;
        assert_eq!(status, 400, "[#{strategy}] http only on an https route");
        let (status, body) = post(
            "/plugins",
            json!({ "name": "cors", "service": { "id": web["id"] }, "protocols": ["grpc"] }),
        )
        .await;
        assert_eq!(status, 400, "[#{strategy}]");
        assert_eq!(
            body["fields"]["protocols"],
            "must match the protocols of at least one route pointing to this Plugin's service"
        );
        let (status, _) = post(
            "/plugins",
            json!({ "name": "cors", "service": { "id": web["id"] }, "protocols": ["https"] }),
        )
        .await;
        assert_eq!(status, 201, "[#{strategy}]");
        // A PATCH that leaves the scope alone is not checked again.
        let res = admin
            .patch(&format!("/plugins/{}", key_auth["id"].as_str().unwrap()))
            .json(&json!({ "config": { "hide_credentials": true } }))
            .send()
            .await;
        assert_eq!(res.status(), 200, "[#{strategy}]");
        let res = admin
            .patch(&format!("/plugins/{}", key_auth["id"].as_str().unwrap()))
            .json(&json!({ "protocols": ["http"] }))
            .send()
            .await;
        assert_eq!(res.status(), 400, "[#{strategy}] a scope change is");
        kong.stop().await;
    }
}
