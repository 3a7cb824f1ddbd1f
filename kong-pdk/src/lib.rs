//! # kong-pdk: Kong Gateway plugins in Rust
//!
//! Write a Kong plugin as a Rust struct (its configuration) and an impl of the phases it
//! needs. The SDK gives you Kong's model exactly — phases, PRIORITY and VERSION, `schema.lua`
//! typedefs and validation messages, the PDK's `kong.request`, `kong.response`, `kong.service`,
//! `kong.client`, `kong.ctx`, `kong.log` — with Rust's guarantees on top: a PDK call Kong
//! forbids in a phase, a bad VERSION or a default of the wrong type do not compile.
//!
//! ## The quick start plugin
//!
//! Kong's quick start `my-plugin` adds a header to every response; its name is configurable:
//!
//! ```
//! use kong_pdk::prelude::*;
//!
//! /// Adds a header to every response.
//! #[plugin(priority = 1000, version = "0.0.1")] // name defaults to "my-plugin"
//! pub struct MyPlugin {
//!     /// Name of the response header to set.
//!     #[field(typedef = header_name, default = "X-MyPlugin")]
//!     response_header_name: String,
//! }
//!
//! #[handler]
//! impl Handler for MyPlugin {
//!     async fn response(&self, kong: &mut Kong<Response>) -> kong_pdk::Result {
//!         kong.response().set_header(&self.response_header_name, "response")?;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! - [`#[plugin]`](macro@plugin) turns the struct into the plugin's config: Kong's schema
//!   ([`schema`]), deserialisation with defaults, NAME/PRIORITY/VERSION ([`Plugin`]) and a
//!   registration every gateway binary linking the crate finds.
//! - [`#[handler]`](macro@handler) on `impl Handler` records which phases you define; the
//!   gateway never calls the others. See [`Handler`] for every phase.
//! - Each phase gets a [`Kong<Phase>`](Kong) context with the PDK ([`pdk`]); what Kong forbids
//!   in that phase is not there ([`phase`]).
//!
//! ## Testing
//!
//! [`testing`] runs a plugin through the same request pipeline as the gateway, with a
//! synthetic request and a fake upstream; with the `testing` feature, `testing::helpers` runs
//! it in a real gateway on every store strategy, as Kong's `spec.helpers` do.
//!
//! ## From `kong-pdk new` to your own gateway
//!
//! kong-pdk is not on crates.io yet: depend on a checkout (`cargo add kong-pdk --path
//! <checkout>/kong-pdk`, or `--git`), or let the scaffold do it.
//!
//! 1. `cargo install --path kong-pdk` in a checkout gives the `kong-pdk` command; `kong-pdk new
//!    my-plugin` writes a crate that depends on that checkout: `src/lib.rs` (the plugin),
//!    `tests/integration.rs`, `examples/kong-gateway.rs`, `kong.conf` and a README.
//! 2. `cargo test` runs the plugin in a real gateway per store strategy (`testing::helpers`,
//!    with the dev-dependency's `testing` feature).
//! 3. The gateway binary is any `main` that links the plugin and hands over to Kong's command
//!    line (`cli::main`, feature `cli`):
//!
//!    ```ignore
//!    use kong_pdk::Plugin as _;
//!
//!    fn main() -> std::process::ExitCode {
//!        let _ = my_plugin::MyPlugin::NAME; // naming the plugin links it
//!        kong_pdk::cli::main("kong-gateway", &[])
//!    }
//!    ```
//!
//!    `cargo run --example kong-gateway -- start -c kong.conf`, with `plugins = bundled,my-plugin`
//!    in kong.conf, serves it: the Admin API attaches it to services, routes and consumers as
//!    Kong's does.
//!
//! ## What a plugin crate sees
//!
//! | module | Kong |
//! |---|---|
//! | [`plugin`](mod@plugin) | `handler.lua`: PRIORITY, VERSION, phase methods |
//! | [`schema`] | `schema.lua`, `typedefs.lua`, schema violations |
//! | [`pdk`] | `kong.*`, one module per `kong/pdk/*.lua` |
//! | [`phase`] | `kong/pdk/private/phases.lua`, as types |
//! | [`entities`] | services, routes, consumers, credentials |
//! | [`dao`](mod@dao) | a plugin's `daos.lua`: its own entities |
//! | [`testing`] | Pongo / `spec.helpers` |
//!
//! Without features the crate is only this: no HTTP server, no database driver, no TLS.
//!
//! ## The engine (features `gateway`, `admin`, `cli`)
//!
//! Layered bottom to top, each module using only those below it (`tests/architecture.rs`
//! checks it):
//!
//! | file | Kong |
//! |---|---|
//! | `model.rs` | plugin metadata, scopes, the node, its log |
//! | `transaction.rs` | `ngx.ctx` and the request `kong.*` reads: one request's state |
//! | `pdk/` | `kong/pdk/*.lua` |
//! | `registry.rs` | `kong/db/dao/plugins.lua`: compiled-in plugins, loading, erased calls |
//! | `executor.rs` | `runloop/plugins_iterator.lua`: who runs in a phase, config precedence, failures |
//! | `router/` | `kong/router/`: `traditional_compatible` matching, upstream paths |
//! | `runloop.rs` | `init.lua` + `runloop/handler.lua`: the order of a request's phases and Kong's own work between them, driven alike by the gateway and the harness |
//! | `gateway/` | nginx: listeners, the HTTP/1 guard, TLS, the upstream pool, balancers, kong.yml |
//! | `admin/` | `kong/api/`: the Admin API and its stores |
//! | `cli/` | `bin/kong`: kong.conf and the commands |
//!
//! The engine modules `executor`, `registry`, `router` and `transaction` are public for the
//! gateway binaries and benches built on this crate, hidden from these docs, and carry no
//! stability promise.

#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Lets the macros' `::kong_pdk::` paths resolve inside this crate's own tests.
extern crate self as kong_pdk;

#[cfg(feature = "admin")]
pub mod admin;
pub mod api;
pub mod cache;
#[cfg(feature = "cli")]
pub mod cli;
pub mod counters;
pub mod dao;
#[cfg(feature = "gateway")]
mod engine;
pub mod entities;
mod error;
#[doc(hidden)]
pub mod executor;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod health;
mod model;
pub mod outbound;
pub mod pdk;
pub mod phase;
pub mod plugin;
pub mod redis;
#[doc(hidden)]
pub mod registry;
#[doc(hidden)]
pub mod router;
mod runloop;
pub mod schema;
pub mod stats;
pub mod testing;
pub mod text;
pub mod timer;
pub mod tracer;
#[doc(hidden)]
pub mod transaction;
pub mod vault;

pub use error::{Error, PdkError, Result};
pub use model::Scope;
pub use pdk::{Exit, Kong, Worker};
pub use phase::{Phase, Phases};
pub use plugin::{Handler, Instance, Plugin};
pub use transaction::TypeMap;

/// Declares a plugin: the struct's fields are its configuration.
///
/// Arguments: `priority = <i32>` (required), `version = "x.y.z"` (required), `name = "..."`
/// (default: the struct's name in kebab-case), `protocols = protocols | protocols_http`,
/// `no_consumer`, `no_route`, `no_service`, and entity checks (see [`schema`]). Fields take
/// `#[field(...)]` attributes (see [`schema`]).
///
/// ```compile_fail
/// use kong_pdk::prelude::*;
/// #[plugin(version = "1.0.0")] // error: missing `priority`
/// pub struct NoPriority {}
/// ```
pub use kong_pdk_macros::plugin;

/// Declares a nested configuration record (a struct used as a field type).
pub use kong_pdk_macros::record;

/// Marks a plugin's `impl Handler for ...`: records its phases, checks Kong's load rules and
/// defaults `type State` to `()`.
///
/// ```compile_fail
/// use kong_pdk::prelude::*;
/// #[plugin(priority = 1, version = "1.0.0")]
/// pub struct Both {}
/// #[handler]
/// impl Handler for Both {
///     async fn response(&self, _: &mut Kong<Response>) -> kong_pdk::Result { Ok(()) }
///     async fn header_filter(&self, _: &mut Kong<HeaderFilter>) -> kong_pdk::Result { Ok(()) }
/// }
/// ```
pub use kong_pdk_macros::handler;

/// The phase markers, from the phase table.
macro_rules! prelude_markers {
    ($($(#[$doc:meta])* $variant:ident $method:ident,)*) => {
        pub use crate::phase::{$($variant),*};
    };
}

/// Everything a plugin author needs: `use kong_pdk::prelude::*;`. It brings `json!` too, for
/// Kong's JSON answers:
///
/// ```
/// use kong_pdk::prelude::*;
///
/// #[plugin(priority = 1000, version = "0.1.0", name = "deny-all")]
/// pub struct DenyAll {}
///
/// #[handler]
/// impl Handler for DenyAll {
///     async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
///         kong.response().exit(403, json!({ "message": "denied" }))
///     }
/// }
/// ```
pub mod prelude {
    crate::phase::request_phases!(prelude_markers);
    pub use crate::{Exit, Handler, Instance, Kong, Phase, Plugin, Worker, handler, plugin, record};
    pub use serde_json::json;
}

/// The JSON crate the PDK speaks (`Value` bodies, configs, entities): a plugin needs no
/// dependency of its own for it.
pub use serde_json;

#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use serde;
    pub use serde_json;
}
