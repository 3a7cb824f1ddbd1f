use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct StreamPlugin {}

#[handler]
impl Handler for StreamPlugin {
    async fn preread(&self, kong: &mut Kong<Preread>) -> kong_pdk::Result {
        let _ = kong.request().get_path();
        Ok(())
    }

    async fn rewrite(&self, kong: &mut Kong<Rewrite>) -> kong_pdk::Result {
        let _ = kong.client().get_consumer();
        Ok(())
    }
}

fn main() {}
