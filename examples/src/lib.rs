//! The plugins of Kong's plugin development pages, written with kong-pdk:
//!
//! - [`my_plugin`]: the quick start's `my-plugin`, configurable response header (and
//!   [`my_plugin::v1`], the first version with a fixed header);
//! - [`all_phases`]: the handler.lua page's handler that logs every phase it runs in;
//! - [`split_plugin`]: a plugin whose phases live in their own modules;
//! - [`multi_protocol`]: one plugin for WebSocket and non-WebSocket services.
//!
//! Linking this crate registers them all (see `kong_pdk::registry`). [`conf`] holds the settings
//! and commands of the `kong-gateway` binary.

pub mod all_phases;
pub mod conf;
pub mod multi_protocol;
pub mod my_plugin;
pub mod split_plugin;
