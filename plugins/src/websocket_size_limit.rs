//! `websocket-size-limit` (Kong Enterprise's `kong/plugins/websocket-size-limit`): the largest
//! message clients and upstreams of a WebSocket service may send. A message over the limit
//! ends the session: its sender gets 1009 `Payload Too Large`, the other side 1001.

use kong_pdk::pdk::MAX_PAYLOAD_SIZE;
use kong_pdk::prelude::*;

/// The plugin's configuration: one limit or both, in bytes (1 to 32 MiB).
#[plugin(
    priority = 1003,
    version = "3.10.0",
    name = "websocket-size-limit",
    protocols = protocols_ws,
    at_least_one_of("client_max_payload", "upstream_max_payload")
)]
pub struct WebsocketSizeLimit {
    /// The largest message a client may send (Kong's default without the plugin: 1 MiB).
    #[field(between = (1, 33554432))]
    pub client_max_payload: Option<u64>,
    /// The largest message the upstream may send (Kong's default without the plugin: 16 MiB).
    #[field(between = (1, 33554432))]
    pub upstream_max_payload: Option<u64>,
}

#[handler]
impl Handler for WebsocketSizeLimit {
    async fn ws_handshake(&self, kong: &mut Kong<WsHandshake>) -> kong_pdk::Result {
        if let Some(limit) = self.client_max_payload {
            kong.websocket()
                .client()
                .set_max_payload_size(limit.min(MAX_PAYLOAD_SIZE))?;
        }
        if let Some(limit) = self.upstream_max_payload {
            kong.websocket()
                .upstream()
                .set_max_payload_size(limit.min(MAX_PAYLOAD_SIZE))?;
        }
        Ok(())
    }
}
