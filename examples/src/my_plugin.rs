//! The quick start's `my-plugin`: adds a response header, `X-MyPlugin: response` by default.
//!
//! Kong's `schema.lua` declares `response_header_name = typedefs.header_name { required = false,
//! default = "X-MyPlugin" }`; the struct below generates the same schema.

use kong_pdk::prelude::*;

/// Adds a header to every response.
#[plugin(priority = 1000, version = "0.0.1")]
pub struct MyPlugin {
    /// Name of the response header to set.
    #[field(typedef = header_name, default = "X-MyPlugin")]
    pub response_header_name: String,
}

#[handler]
impl Handler for MyPlugin {
    async fn response(&self, kong: &mut Kong<Response>) -> kong_pdk::Result {
        kong.response().set_header(&self.response_header_name, "response")?;
        Ok(())
    }
}

/// The quick start's first version: a fixed header and an empty configuration.
pub mod v1 {
    use kong_pdk::prelude::*;

    /// Adds `X-MyPlugin: response` to every response.
    #[plugin(priority = 1000, version = "0.0.1", name = "my-plugin-v1")]
    pub struct MyPluginV1 {}

    #[handler]
    impl Handler for MyPluginV1 {
        async fn response(&self, kong: &mut Kong<Response>) -> kong_pdk::Result {
            kong.response().set_header("X-MyPlugin", "response")?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use kong_pdk::testing::{Harness, MockResponse, TestRequest};
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn sets_the_default_header_on_the_response() {
        let gw = Harness::new()
            .route_plugin::<MyPlugin>(json!({}))
            .start()
            .await
            .unwrap();
        let res = gw.send(TestRequest::get("/anything"), |_| MockResponse::ok("{}")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.header("X-MyPlugin"), Some("response"));
        assert!(gw.plugin_set().plugins().contains("my-plugin"));
    }

    #[tokio::test]
    async fn uses_the_configured_header_name() {
        let gw = Harness::new()
            .route_plugin::<MyPlugin>(json!({ "response_header_name": "X-CustomHeaderName" }))
            .start()
            .await
            .unwrap();
        let res = gw.send(TestRequest::get("/anything"), |_| MockResponse::ok("{}")).await;
        assert_eq!(res.header("X-CustomHeaderName"), Some("response"));
        assert_eq!(res.header("X-MyPlugin"), None);
    }

    #[tokio::test]
    async fn rejects_a_bad_header_name_as_kong_does() {
        let err = Harness::new()
            .plugin::<MyPlugin>(json!({ "response_header_name": "X My Plugin" }))
            .start()
            .await
            .err()
            .expect("invalid config");
        assert_eq!(
            err.to_string(),
            "invalid configuration for plugin my-plugin: schema violation (config.response_header_name: bad header name 'X My Plugin', allowed characters are A-Z, a-z, 0-9, '_', and '-')"
        );
    }

    #[tokio::test]
    async fn v1_sets_the_fixed_header() {
        let gw = Harness::new()
            .plugin::<v1::MyPluginV1>(json!({}))
            .start()
            .await
            .unwrap();
        let res = gw.send(TestRequest::get("/"), |_| MockResponse::ok("")).await;
        assert_eq!(res.header("X-MyPlugin"), Some("response"));
    }
}
