//! A WebSocket frame plugin: clients of a chat service send JSON messages, and the fields the
//! configuration names (`password` by default) are replaced by `"[redacted]"` before the
//! upstream sees them. Text that is not a JSON object passes untouched; a client message that
//! is not even UTF-8 ends the session with 1007, as Kong's validator does.

use kong_pdk::pdk::FrameKind;
use kong_pdk::prelude::*;
use serde_json::Value;

/// Redacts fields of the JSON messages clients send.
#[plugin(priority = 900, version = "0.1.0", name = "ws-redact")]
pub struct WsRedact {
    /// The top-level fields to redact.
    #[field(required, default = ["password"])]
    pub fields: Vec<String>,
}

#[handler]
impl Handler for WsRedact {
    async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> kong_pdk::Result {
        let mut client = kong.websocket().client();
        let frame = client.get_frame()?;
        if frame.kind != FrameKind::Text {
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(&frame.data) else {
            client.close(Some(1007), Some("Invalid Frame Payload Data"), None, None)?;
            return Ok(());
        };
        let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(text) else {
            return Ok(());
        };
        let mut changed = false;
        for field in &self.fields {
            if let Some(v) = message.get_mut(field) {
                *v = Value::from("[redacted]");
                changed = true;
            }
        }
        if changed {
            client.set_frame_data(Value::Object(message).to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kong_pdk::pdk::Frame;
    use kong_pdk::testing::{Harness, TestRequest, WsSend};
    use serde_json::json;

    use super::*;

    fn text(s: &str) -> Frame {
        Frame::new(FrameKind::Text, s.to_owned())
    }

    #[tokio::test]
    async fn configured_fields_are_redacted_in_client_messages_only() {
        let gw = Harness::new()
            .plugin::<WsRedact>(json!({ "fields": ["password", "pin"] }))
            .start()
            .await
            .unwrap();
        let out = gw
            .websocket(
                TestRequest::get("/chat"),
                [
                    WsSend::Client(text(r#"{"user":"ann","password":"hunter2","pin":1234}"#)),
                    WsSend::Client(text("not json")),
                    WsSend::Client(Frame::new(FrameKind::Binary, r#"{"password":"x"}"#)),
                    WsSend::Upstream(text(r#"{"password":"from upstream"}"#)),
                ],
            )
            .await;
        let first: Value = serde_json::from_slice(&out.to_upstream[0].data).unwrap();
        assert_eq!(
            first,
            json!({ "user": "ann", "password": "[redacted]", "pin": "[redacted]" })
        );
        assert_eq!(out.to_upstream[1], text("not json"));
        assert_eq!(out.to_upstream[2].kind, FrameKind::Binary, "binary passes untouched");
        assert_eq!(out.to_client, [text(r#"{"password":"from upstream"}"#)]);
    }

    #[tokio::test]
    async fn text_that_is_not_utf8_closes_the_session_with_1007() {
        let gw = Harness::new().plugin::<WsRedact>(json!({})).start().await.unwrap();
        let out = gw
            .websocket(
                TestRequest::get("/chat"),
                [WsSend::Client(Frame::new(FrameKind::Text, vec![0xff, 0xfe]))],
            )
            .await;
        assert_eq!(out.to_client, [Frame::close(1007, "Invalid Frame Payload Data")]);
        assert_eq!(out.to_upstream.len(), 1, "the upstream gets a bare close");
        assert_eq!(out.to_upstream[0].status, None);
    }
}
