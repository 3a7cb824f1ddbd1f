//! The plugins of Kong's plugin development pages, written with kong-pdk:
//!
//! - [`my_plugin`]: the quick start's `my-plugin`, configurable response header (and
//!   [`my_plugin::v1`], the first version with a fixed header);
//! - [`all_phases`]: the handler.lua page's handler that logs every phase it runs in;
//! - [`split_plugin`]: a plugin whose phases live in their own modules;
//! - [`multi_protocol`]: one plugin for WebSocket and non-WebSocket services;
//! - [`ws_redact`]: a WebSocket frame plugin that redacts fields of clients' JSON messages.
//!
//! Linking this crate registers them all (see `kong_pdk::registry`). The `kong-gateway` binary
//! serves them with Kong's bundled plugins through `kong_pdk::cli`.

pub mod all_phases;
pub mod multi_protocol;
pub mod my_plugin;
pub mod split_plugin;
pub mod ws_redact;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kong_pdk::cli::conf::{Settings, parse_config};

    #[test]
    fn the_shipped_configurations_load_and_the_declarative_one_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // The files as shipped: KONG_* variables (KONG_DATABASE narrows the test strategies)
        // are not what the README's commands see.
        let load = |name: &str| Settings::load_with_env(Some(&root.join(name)), None, []).unwrap();
        let embedded = load("kong.conf");
        assert_eq!(embedded.database, "sqlite");
        assert_eq!(embedded.admin_listen, vec!["127.0.0.1:8001".parse().unwrap()]);
        assert_eq!(embedded.mock_upstream, Some("127.0.0.1:15555".parse().unwrap()));
        assert!(embedded.proxy_listen.iter().any(|l| l.ssl));
        let dbless = load("kong-dbless.conf");
        assert_eq!(dbless.database, "off");
        // The path in kong-dbless.conf is relative to the repository root, where README runs it.
        let yml = dbless.declarative_config.as_deref().unwrap();
        parse_config(&dbless, &root.parent().unwrap().join(yml), false).unwrap();
    }
}
