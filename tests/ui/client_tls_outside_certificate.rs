use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct LateMtls {}

#[handler]
impl Handler for LateMtls {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        kong.client().tls().request_client_certificate()?;
        Ok(())
    }

    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        let _ = kong.client().tls().get_full_client_certificate_chain();
        Ok(())
    }
}

fn main() {}
