//! websocket-size-limit (Kong Enterprise's `spec/03-plugins/websocket-size-limit`): the
//! schema's rules, and sessions through the harness's runloop with limits of 64 bytes.

use kong_pdk::Plugin as _;
use kong_pdk::pdk::{Frame, FrameKind};
use kong_pdk::testing::{Harness, LoadError, TestRequest, WsSend};
use kong_plugins::websocket_size_limit::WebsocketSizeLimit;
use serde_json::{Value, json};

async fn refused(config: Value) -> Value {
    match Harness::new().plugin::<WebsocketSizeLimit>(config).start().await {
        Err(LoadError::Invalid { violation, .. }) => violation.fields().clone(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[tokio::test]
async fn the_schema_is_kongs() {
    assert_eq!(WebsocketSizeLimit::NAME, "websocket-size-limit");
    assert_eq!(WebsocketSizeLimit::PRIORITY, 1003);
    assert_eq!(
        refused(json!({})).await["config"]["@entity"],
        json!(["at least one of these fields must be non-empty: 'client_max_payload', 'upstream_max_payload'"])
    );
    assert_eq!(
        refused(json!({ "client_max_payload": 0 })).await["config"]["client_max_payload"],
        "value should be between 1 and 33554432"
    );
    assert_eq!(
        refused(json!({ "upstream_max_payload": 33554433 })).await["config"]["upstream_max_payload"],
        "value should be between 1 and 33554432"
    );
}

fn text(n: usize) -> Frame {
    Frame::new(FrameKind::Text, "x".repeat(n))
}

#[tokio::test]
async fn messages_up_to_the_limit_pass_and_one_byte_more_ends_the_session() {
    let gw = Harness::new()
        .plugin::<WebsocketSizeLimit>(json!({ "client_max_payload": 64, "upstream_max_payload": 64 }))
        .start()
        .await
        .unwrap();
    // At the limit, and control frames over it, pass.
    let ping = Frame::new(FrameKind::Ping, vec![0u8; 65]);
    let out = gw
        .websocket(
            TestRequest::get("/"),
            [
                WsSend::Client(text(64)),
                WsSend::Client(ping.clone()),
                WsSend::Upstream(text(64)),
            ],
        )
        .await;
    assert_eq!(out.to_upstream, [text(64), ping]);
    assert_eq!(out.to_client, [text(64)]);
    // One byte over from the client: it gets 1009, the upstream 1001; nothing after counts.
    let out = gw
        .websocket(
            TestRequest::get("/"),
            [WsSend::Client(text(65)), WsSend::Client(text(1))],
        )
        .await;
    assert_eq!(out.to_client, [Frame::close(1009, "Payload Too Large")]);
    assert_eq!(out.to_upstream, [Frame::close(1001, "")]);
    // And from the upstream, the other way round.
    let out = gw.websocket(TestRequest::get("/"), [WsSend::Upstream(text(65))]).await;
    assert_eq!(out.to_upstream, [Frame::close(1009, "Payload Too Large")]);
    assert_eq!(out.to_client, [Frame::close(1001, "")]);
}

#[tokio::test]
async fn without_the_plugin_kongs_defaults_apply() {
    let gw = Harness::new().start().await.unwrap();
    let mib = 1024 * 1024;
    let out = gw
        .websocket(
            TestRequest::get("/"),
            [WsSend::Client(text(mib)), WsSend::Client(text(mib + 1))],
        )
        .await;
    assert_eq!(out.to_upstream, [text(mib), Frame::close(1001, "")]);
    assert_eq!(out.to_client, [Frame::close(1009, "Payload Too Large")]);
}
