use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct Both {}

#[handler]
impl Handler for Both {
    async fn response(&self, _kong: &mut Kong<Response>) -> kong_pdk::Result {
        Ok(())
    }

    async fn header_filter(&self, _kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        Ok(())
    }
}

fn main() {}
