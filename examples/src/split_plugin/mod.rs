//! The handler.lua page's plugin split across modules: `access` and `body_filter` live in
//! their own files, and the handler impl delegates to them.

use kong_pdk::prelude::*;

mod access;
mod body_filter;

/// Logs in access and upper-cases the response body.
#[plugin(priority = 10, version = "1.0.0", name = "my-custom-plugin")]
pub struct MyCustomPlugin {}

#[handler]
impl Handler for MyCustomPlugin {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        access::run(self, kong)
    }

    async fn body_filter(&self, kong: &mut Kong<BodyFilter>) -> kong_pdk::Result {
        body_filter::run(self, kong)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kong_pdk::testing::{Harness, MockResponse, TestRequest};
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn phases_from_separate_modules_run() {
        let gw = Harness::new()
            .plugin::<MyCustomPlugin>(json!({}))
            .start()
            .await
            .unwrap();
        let res = gw
            .send(TestRequest::get("/"), |_| {
                MockResponse::new(200).chunks([Bytes::from("ab"), Bytes::from("c")])
            })
            .await;
        assert!(res.logged("access phase"));
        assert!(res.logged("body_filter phase"));
        assert_eq!(res.body_text(), "ABC");
    }
}
