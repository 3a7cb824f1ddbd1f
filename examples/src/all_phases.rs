//! The handler.lua page's `CustomHandler`: implements every phase and only logs its name.
//! (It has no `response`: a plugin cannot define it together with the filter phases.)

use kong_pdk::prelude::*;

/// Logs each phase it is called in.
#[plugin(priority = 10, version = "1.0.0", name = "all-phases")]
pub struct AllPhases {}

#[handler]
impl Handler for AllPhases {
    async fn init_worker(kong: &Worker<()>) -> kong_pdk::Result {
        kong.log().notice("init_worker");
        Ok(())
    }

    async fn configure(kong: &Worker<()>, _configs: Option<&[Instance<Self>]>) -> kong_pdk::Result {
        kong.log().notice("configure");
        Ok(())
    }

    async fn preread(&self, kong: &mut Kong<Preread>) -> kong_pdk::Result {
        kong.log().notice("preread");
        Ok(())
    }

    async fn certificate(&self, kong: &mut Kong<Certificate>) -> kong_pdk::Result {
        kong.log().notice("certificate");
        Ok(())
    }

    async fn rewrite(&self, kong: &mut Kong<Rewrite>) -> kong_pdk::Result {
        kong.log().notice("rewrite");
        Ok(())
    }

    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        kong.log().notice("access");
        Ok(())
    }

    async fn ws_handshake(&self, kong: &mut Kong<WsHandshake>) -> kong_pdk::Result {
        kong.log().notice("ws_handshake");
        Ok(())
    }

    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        kong.log().notice("header_filter");
        Ok(())
    }

    async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> kong_pdk::Result {
        kong.log().notice("ws_client_frame");
        Ok(())
    }

    async fn ws_upstream_frame(&self, kong: &mut Kong<WsUpstreamFrame>) -> kong_pdk::Result {
        kong.log().notice("ws_upstream_frame");
        Ok(())
    }

    async fn body_filter(&self, kong: &mut Kong<BodyFilter>) -> kong_pdk::Result {
        kong.log().notice("body_filter");
        Ok(())
    }

    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        kong.log().notice("log");
        Ok(())
    }

    async fn ws_close(&self, kong: &mut Kong<WsClose>) -> kong_pdk::Result {
        kong.log().notice("ws_close");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kong_pdk::Phase;
    use kong_pdk::pdk::{Frame, FrameKind};
    use kong_pdk::testing::{Harness, MockResponse, TestRequest, WsSend};
    use serde_json::json;

    use super::*;

    fn phases(logs: &[kong_pdk::pdk::LogLine]) -> Vec<String> {
        logs.iter()
            .map(|l| l.message.trim_start_matches("[all-phases] ").to_owned())
            .collect()
    }

    #[test]
    fn implements_every_phase_but_response() {
        let all: Vec<Phase> = AllPhases::PHASES.iter().collect();
        assert_eq!(all.len(), 13);
        assert!(!AllPhases::PHASES.contains(Phase::Response));
    }

    #[tokio::test]
    async fn http_request_runs_the_http_phases_in_order() {
        let gw = Harness::new().plugin::<AllPhases>(json!({})).start().await.unwrap();
        let res = gw
            .send(TestRequest::get("/"), |_| {
                MockResponse::new(200).chunks([Bytes::from("a"), Bytes::from("b")])
            })
            .await;
        assert_eq!(
            phases(res.logs()),
            [
                "rewrite",
                "access",
                "header_filter",
                "body_filter",
                "body_filter",
                "log"
            ]
        );
    }

    #[tokio::test]
    async fn websocket_session_runs_the_ws_phases() {
        let gw = Harness::new().plugin::<AllPhases>(json!({})).start().await.unwrap();
        let out = gw
            .websocket(
                TestRequest::get("/ws"),
                [
                    WsSend::Client(Frame::new(FrameKind::Text, "hi")),
                    WsSend::Upstream(Frame::new(FrameKind::Text, "hi")),
                ],
            )
            .await;
        assert_eq!(
            phases(&out.logs),
            [
                "rewrite",
                "ws_handshake",
                "ws_client_frame",
                "ws_upstream_frame",
                "ws_close"
            ]
        );
        assert_eq!(out.to_upstream, [Frame::new(FrameKind::Text, "hi")]);
        assert_eq!(out.to_client, [Frame::new(FrameKind::Text, "hi")]);
    }
}
