//! `kong.ctx`: per-request storage. `shared()` is one map for every plugin (Kong's
//! `kong.ctx.shared`); `plugin()` is private to the plugin type (Kong's `kong.ctx.plugin`,
//! namespaced by plugin type, not by instance). Values are typed: store your own types.
//!
//! ```
//! use kong_pdk::prelude::*;
//!
//! #[derive(Debug, Clone, Copy, PartialEq)]
//! struct Started(u64);
//!
//! #[plugin(priority = 1, version = "1.0.0")]
//! pub struct Timer {}
//!
//! #[handler]
//! impl Handler for Timer {
//!     async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
//!         let now = kong.request().get_start_time();
//!         kong.ctx().plugin().insert(Started(now));
//!         Ok(())
//!     }
//!     async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
//!         if let Some(Started(t)) = kong.ctx().plugin().get::<Started>().copied() {
//!             kong.log().info(format!("started at {t}"));
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use crate::transaction::{Transaction, TypeMap};

/// `kong.ctx`.
pub struct Ctx<'a> {
    tx: &'a mut Transaction,
    index: usize,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(tx: &'a mut Transaction, index: usize) -> Self {
        Ctx { tx, index }
    }

    /// `kong.ctx.shared`: visible to every plugin for this request.
    pub fn shared(&mut self) -> &mut TypeMap {
        &mut self.tx.shared
    }

    /// `kong.ctx.plugin`: visible to this plugin type only, for this request.
    pub fn plugin(&mut self) -> &mut TypeMap {
        self.tx.plugin_ctx(self.index)
    }
}
