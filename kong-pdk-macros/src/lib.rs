//! Procedural macros of [kong-pdk](https://docs.rs/kong-pdk). Use them through `kong_pdk`,
//! which re-exports them: `use kong_pdk::prelude::*;`.
//!
//! - `#[plugin(priority = 1000, version = "0.0.1")]` on a struct: the struct's fields are the
//!   plugin's configuration. Generates the Kong schema, deserialisation, `kong_pdk::Plugin`
//!   (NAME, PRIORITY, VERSION) and the registration that lets a gateway find the plugin.
//! - `#[record]` on a struct: a nested configuration record.
//! - `#[handler]` on `impl Handler for MyPlugin { ... }`: records the phases the impl defines.
//! - `#[derive(Dao)]` with `#[dao(...)]` on a `#[record]` struct: a plugin entity.
//!
//! Each macro parses its input into a model, checks the model (reporting every error at the
//! user's token), then generates code.

mod attr;
mod ctxt;
mod dao;
mod expand;
mod handler;
mod model;

use proc_macro::TokenStream;

/// Declares a plugin whose configuration is this struct. See `kong_pdk::plugin`.
#[proc_macro_attribute]
pub fn plugin(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::expand(expand::Kind::Plugin, args.into(), input.into()).into()
}

/// Declares a nested configuration record. See `kong_pdk::record`.
#[proc_macro_attribute]
pub fn record(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::expand(expand::Kind::Record, args.into(), input.into()).into()
}

/// Declares a plugin entity on its `#[record]` struct. See `kong_pdk::dao::Dao`.
#[proc_macro_derive(Dao, attributes(dao))]
pub fn derive_dao(input: TokenStream) -> TokenStream {
    dao::expand(input.into()).into()
}

/// Marks a plugin's `Handler` impl. See `kong_pdk::handler`.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, input: TokenStream) -> TokenStream {
    handler::expand(args.into(), input.into()).into()
}
