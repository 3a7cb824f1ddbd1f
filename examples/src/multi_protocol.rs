//! The handler.lua page's `MultiProtoHandler`: works for WebSocket and non-WebSocket
//! services. `access` and `ws_handshake` record the request type in `kong.ctx.plugin`; `log`
//! and `ws_close` share one function, generic over the phase.

use kong_pdk::phase::{RequestPhase, RequestRead};
use kong_pdk::prelude::*;

/// The kind of request, kept in `kong.ctx.plugin` between phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestType(pub &'static str);

/// Logs whether each finished request was a WebSocket one.
#[plugin(priority = 1000, version = "0.1.0", name = "multi-proto")]
pub struct MultiProto {}

/// Shared by `log` and `ws_close`: any phase that can read the request.
fn finish<P: RequestPhase + RequestRead>(kong: &mut Kong<P>) {
    let kind = kong
        .ctx()
        .plugin()
        .get::<RequestType>()
        .copied()
        .unwrap_or(RequestType("unknown"));
    kong.log().notice(format!("finishing {} request", kind.0));
}

#[handler]
impl Handler for MultiProto {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        kong.ctx().plugin().insert(RequestType("non-WebSocket"));
        Ok(())
    }

    async fn ws_handshake(&self, kong: &mut Kong<WsHandshake>) -> kong_pdk::Result {
        kong.ctx().plugin().insert(RequestType("WebSocket"));
        Ok(())
    }

    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        finish(kong);
        Ok(())
    }

    async fn ws_close(&self, kong: &mut Kong<WsClose>) -> kong_pdk::Result {
        finish(kong);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kong_pdk::testing::{Harness, MockResponse, TestRequest};
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn http_requests_are_non_websocket() {
        let gw = Harness::new().plugin::<MultiProto>(json!({})).start().await.unwrap();
        let res = gw.send(TestRequest::get("/"), |_| MockResponse::ok("")).await;
        assert!(res.logged("[multi-proto] finishing non-WebSocket request"));
    }

    #[tokio::test]
    async fn websocket_sessions_are_websocket() {
        let gw = Harness::new().plugin::<MultiProto>(json!({})).start().await.unwrap();
        let out = gw.websocket(TestRequest::get("/ws"), vec![]).await;
        assert!(
            out.logs
                .iter()
                .any(|l| l.message == "[multi-proto] finishing WebSocket request")
        );
    }
}
