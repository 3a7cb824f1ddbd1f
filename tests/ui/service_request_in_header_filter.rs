use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct LateUpstreamHeader {}

#[handler]
impl Handler for LateUpstreamHeader {
    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        kong.service().request().set_header("X-Too-Late", "yes")?;
        Ok(())
    }
}

fn main() {}
