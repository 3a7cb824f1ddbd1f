//! `websocket-validator` (Kong Enterprise's `kong/plugins/websocket-validator`): messages of a
//! WebSocket service are checked against JSON Schemas (draft 4), per direction and message
//! type. A message that is not JSON, is empty, or does not match ends the session: its sender
//! gets 1007 `Invalid Frame Payload Data`, the other side a bare close. Message types and
//! directions without a schema pass untouched.

use std::sync::Arc;

use kong_pdk::Error;
use kong_pdk::pdk::{Direction, FrameKind, WsSide};
use kong_pdk::phase;
use kong_pdk::prelude::*;
use kong_pdk::schema::{ConfigType, FieldSchema};
use serde_json::Value;

/// The plugin's configuration: schemas for the client's messages, the upstream's, or both.
#[plugin(
    priority = 1006,
    version = "3.10.0",
    name = "websocket-validator",
    protocols = protocols_ws,
    at_least_one_of("client", "upstream")
)]
pub struct WebsocketValidator {
    /// Schemas of the messages clients send.
    pub client: Option<Schemas>,
    /// Schemas of the messages the upstream sends.
    pub upstream: Option<Schemas>,
}

/// The schemas of one direction, by message type.
#[record(at_least_one_of("text", "binary"))]
pub struct Schemas {
    /// For text messages.
    pub text: Option<Validation>,
    /// For binary messages.
    pub binary: Option<Validation>,
}

/// One schema.
#[record]
pub struct Validation {
    /// The schema's dialect: `draft4`, the only one.
    #[field(required, one_of = ["draft4"])]
    pub r#type: String,
    /// The JSON Schema, as a string; checked when the plugin is configured.
    #[field(required)]
    pub schema: Draft4,
}

/// A JSON Schema (draft 4), compiled once when the configuration is loaded.
#[derive(Clone)]
pub struct Draft4(Arc<jsonschema::Validator>);

impl std::fmt::Debug for Draft4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Draft4(..)")
    }
}

/// Compiles `text` as a draft 4 JSON Schema.
fn compile(text: &str) -> Result<jsonschema::Validator, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| format!("not a JSON Schema: {e}"))?;
    jsonschema::draft4::new(&schema).map_err(|e| format!("not a valid JSON Schema draft 4 schema: {e}"))
}

impl<'de> serde::Deserialize<'de> for Draft4 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        compile(&text)
            .map(|v| Draft4(Arc::new(v)))
            .map_err(serde::de::Error::custom)
    }
}

impl ConfigType for Draft4 {
    fn field_schema() -> FieldSchema {
        FieldSchema::checked_string(|v| compile(v.as_str().unwrap_or_default()).map(drop))
    }
}

impl Draft4 {
    /// Whether `payload` is JSON that matches.
    fn accepts(&self, payload: &[u8]) -> bool {
        serde_json::from_slice::<Value>(payload).is_ok_and(|message| self.0.is_valid(&message))
    }
}

#[handler]
impl Handler for WebsocketValidator {
    async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> kong_pdk::Result {
        check(self.client.as_ref(), kong.websocket().client())
    }

    async fn ws_upstream_frame(&self, kong: &mut Kong<WsUpstreamFrame>) -> kong_pdk::Result {
        check(self.upstream.as_ref(), kong.websocket().upstream())
    }
}

/// Validates the frame in flight from `side` against `schemas`; closes the session with 1007
/// when it does not pass.
fn check<P: phase::Frame, D: Direction>(schemas: Option<&Schemas>, mut side: WsSide<'_, P, D>) -> Result<(), Error> {
    let Some(schemas) = schemas else { return Ok(()) };
    let frame = side.get_frame()?;
    let schema = match frame.kind {
        FrameKind::Text => schemas.text.as_ref(),
        FrameKind::Binary => schemas.binary.as_ref(),
        _ => None,
    };
    match schema {
        Some(v) if !v.schema.accepts(&frame.data) => {
            side.close(Some(1007), Some("Invalid Frame Payload Data"), None, None)?;
            Ok(())
        }
        _ => Ok(()),
    }
}
