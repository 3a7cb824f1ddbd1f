use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
struct Crossed {}

#[handler]
impl Handler for Crossed {
    async fn ws_upstream_frame(&self, kong: &mut Kong<WsUpstreamFrame>) -> kong_pdk::Result {
        kong.websocket().client().drop_frame()?;
        Ok(())
    }

    async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> kong_pdk::Result {
        kong.websocket().client().set_max_payload_size(64)?;
        Ok(())
    }

    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        kong.websocket();
        Ok(())
    }
}

fn main() {}
