//! websocket-validator (Kong Enterprise's `spec/03-plugins/websocket-validator`): the schema's
//! rules, and client and upstream messages checked through the harness's runloop.

use kong_pdk::Plugin as _;
use kong_pdk::pdk::{Frame, FrameKind};
use kong_pdk::testing::{Harness, LoadError, TestRequest, WsSend};
use kong_plugins::websocket_validator::WebsocketValidator;
use serde_json::{Value, json};

const PERSON: &str = r#"{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}"#;

async fn refused(config: Value) -> Value {
    match Harness::new().plugin::<WebsocketValidator>(config).start().await {
        Err(LoadError::Invalid { violation, .. }) => violation.fields()["config"].clone(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[tokio::test]
async fn the_schema_is_kongs() {
    assert_eq!(
        (WebsocketValidator::NAME, WebsocketValidator::PRIORITY),
        ("websocket-validator", 1006)
    );
    assert_eq!(
        refused(json!({})).await["@entity"],
        json!(["at least one of these fields must be non-empty: 'client', 'upstream'"])
    );
    assert_eq!(
        refused(json!({ "client": {} })).await["client"]["@entity"],
        json!(["at least one of these fields must be non-empty: 'text', 'binary'"])
    );
    let bad_type = refused(json!({ "client": { "text": { "type": "draft7", "schema": PERSON } } })).await;
    assert_eq!(bad_type["client"]["text"]["type"], "expected one of: draft4");
    let not_json = refused(json!({ "client": { "text": { "type": "draft4", "schema": "{nope" } } })).await;
    let message = not_json["client"]["text"]["schema"].as_str().unwrap();
    assert!(message.starts_with("not a JSON Schema"), "{message}");
    let not_draft4 = refused(json!({ "client": { "text": { "type": "draft4", "schema": r#"{"type": 12}"# } } })).await;
    let message = not_draft4["client"]["text"]["schema"].as_str().unwrap();
    assert!(
        message.starts_with("not a valid JSON Schema draft 4 schema"),
        "{message}"
    );
    let ping = refused(json!({ "client": { "ping": { "type": "draft4", "schema": PERSON } } })).await;
    assert_eq!(ping["client"]["ping"], "unknown field");
}

fn text(s: &str) -> Frame {
    Frame::new(FrameKind::Text, s.to_owned())
}

#[tokio::test]
async fn invalid_messages_close_the_session_with_1007_to_their_sender() {
    let gw = Harness::new()
        .plugin::<WebsocketValidator>(json!({ "client": { "text": { "type": "draft4", "schema": PERSON } } }))
        .start()
        .await
        .unwrap();
    // Valid client text, any binary, anything from the upstream: untouched.
    let binary = Frame::new(FrameKind::Binary, "not json at all");
    let out = gw
        .websocket(
            TestRequest::get("/"),
            [
                WsSend::Client(text(r#"{"name": "ann"}"#)),
                WsSend::Client(binary.clone()),
                WsSend::Upstream(text("[1, 2]")),
            ],
        )
        .await;
    assert_eq!(out.to_upstream, [text(r#"{"name": "ann"}"#), binary]);
    assert_eq!(out.to_client, [text("[1, 2]")]);
    let bare_close = Frame {
        kind: FrameKind::Close,
        data: Default::default(),
        status: None,
    };
    for bad in [r#"{"name": 7}"#, "{}", "not json", ""] {
        let out = gw
            .websocket(
                TestRequest::get("/"),
                [WsSend::Client(text(bad)), WsSend::Client(text("after"))],
            )
            .await;
        assert_eq!(
            out.to_client,
            [Frame::close(1007, "Invalid Frame Payload Data")],
            "{bad:?}"
        );
        assert_eq!(out.to_upstream, std::slice::from_ref(&bare_close), "{bad:?}");
    }
}

#[tokio::test]
async fn upstream_schemas_check_the_upstreams_messages() {
    let gw = Harness::new()
        .plugin::<WebsocketValidator>(json!({ "upstream": { "binary": { "type": "draft4", "schema": PERSON } } }))
        .start()
        .await
        .unwrap();
    let out = gw
        .websocket(
            TestRequest::get("/"),
            [
                WsSend::Client(Frame::new(FrameKind::Binary, "from the client")),
                WsSend::Upstream(Frame::new(FrameKind::Binary, r#"{"age": 3}"#)),
            ],
        )
        .await;
    assert_eq!(out.to_upstream[0], Frame::new(FrameKind::Binary, "from the client"));
    assert_eq!(out.to_upstream[1], Frame::close(1007, "Invalid Frame Payload Data"));
    assert_eq!(out.to_client.len(), 1);
    assert_eq!(
        (out.to_client[0].kind, out.to_client[0].status),
        (FrameKind::Close, None)
    );
}
