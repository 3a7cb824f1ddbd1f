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
        // The Host is the upstream's name (port 80 is the default and is left out).
        assert_eq!(seen["headers"]["host"], "echo-upstream", "[#{strategy}]");
        ws.send(Frame::close(1000, "bye")).await;
        assert_eq!(ws.receive().await, Some(Frame::close(1000, "bye")));
        kong.stop().await;
    }
}
