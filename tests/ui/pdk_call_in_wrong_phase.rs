use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct LateHeader {}

#[handler]
impl Handler for LateHeader {
    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        kong.response().set_header("X-Too-Late", "yes")?;
        Ok(())
    }
}

fn main() {}
