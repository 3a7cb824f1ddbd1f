//! Admin API endpoints a plugin adds (Kong's `api.lua`): the Admin API hands each request it
//! does not serve itself to the plugins' [`Handler::admin_api`](crate::Handler::admin_api),
//! with the plugin type's state and its configured instances, and answers with the first
//! answer given. The Status API (`status_listen`) does the same with
//! [`Handler::status_api`](crate::Handler::status_api) (Kong's `status_api.lua`).
//!
//! ```
//! use kong_pdk::api::{AdminAnswer, AdminRequest};
//! use kong_pdk::prelude::*;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! #[plugin(priority = 5, version = "1.0.0")]
//! pub struct Counter {}
//!
//! #[derive(Default)]
//! pub struct Hits(AtomicU64);
//!
//! #[handler]
//! impl Handler for Counter {
//!     type State = Hits;
//!
//!     async fn log(&self, kong: &mut Kong<Log, Hits>) -> kong_pdk::Result {
//!         kong.state().0.fetch_add(1, Ordering::Relaxed);
//!         Ok(())
//!     }
//!
//!     // GET /counter answers {"hits": N}; DELETE /counter resets it.
//!     fn admin_api(api: &AdminRequest<'_, Hits>) -> Option<AdminAnswer> {
//!         match (api.method(), api.segments()) {
//!             ("GET", ["counter"]) => Some(AdminAnswer::json(200, serde_json::json!({
//!                 "hits": api.state().0.load(Ordering::Relaxed)
//!             }))),
//!             ("DELETE", ["counter"]) => {
//!                 api.state().0.store(0, Ordering::Relaxed);
//!                 Some(AdminAnswer::empty(204))
//!             }
//!             _ => None,
//!         }
//!     }
//! }
//! ```

use serde_json::Value;
use uuid::Uuid;

use crate::model::NodeInfo;

/// An Admin API request offered to a plugin type.
pub struct AdminRequest<'a, S> {
    method: &'a str,
    segments: &'a [&'a str],
    body: &'a Value,
    state: &'a S,
    instances: &'a [(Uuid, &'a Value)],
    node: &'a NodeInfo,
}

impl<'a, S> AdminRequest<'a, S> {
    /// A request: its method, its path's (decoded) segments, its body (JSON or form, `Null`
    /// when none), the plugin type's state, its instances (id and config) and the node.
    pub fn new(
        method: &'a str,
        segments: &'a [&'a str],
        body: &'a Value,
        state: &'a S,
        instances: &'a [(Uuid, &'a Value)],
        node: &'a NodeInfo,
    ) -> Self {
        AdminRequest {
            method,
            segments,
            body,
            state,
            instances,
            node,
        }
    }

    /// The node serving the request (its id, its counters: `kong.node`, `kong.nginx`).
    pub fn node(&self) -> &'a NodeInfo {
        self.node
    }

    /// The method (`GET`, `DELETE`, ...).
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The path's segments, percent-decoded: `/proxy-cache/abc` is `["proxy-cache", "abc"]`.
    pub fn segments(&self) -> &'a [&'a str] {
        self.segments
    }

    /// The body, parsed (`Null` without one).
    pub fn body(&self) -> &'a Value {
        self.body
    }

    /// The plugin type's state (`type State` of its handler).
    pub fn state(&self) -> &'a S {
        self.state
    }

    /// The plugin's configured instances: (id, config), in id order.
    pub fn instances(&self) -> &'a [(Uuid, &'a Value)] {
        self.instances
    }
}

/// A plugin's answer: a status and a JSON body (`Null` sends none), or a text body with its
/// content type.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminAnswer {
    /// The status.
    pub status: u16,
    /// The body: JSON, or the text itself when `content_type` is set.
    pub body: Value,
    /// The text body's content type; `None` for a JSON body.
    pub content_type: Option<&'static str>,
}

impl AdminAnswer {
    /// `status` with `body`.
    pub fn json(status: u16, body: Value) -> AdminAnswer {
        AdminAnswer {
            status,
            body,
            content_type: None,
        }
    }

    /// `status` with `text` as the body, sent as it is with `content_type`
    /// (`text/plain; charset=UTF-8` for Prometheus' exposition).
    pub fn text(status: u16, content_type: &'static str, text: String) -> AdminAnswer {
        AdminAnswer {
            status,
            body: Value::String(text),
            content_type: Some(content_type),
        }
    }

    /// `status` without a body (`204`).
    pub fn empty(status: u16) -> AdminAnswer {
        AdminAnswer {
            status,
            body: Value::Null,
            content_type: None,
        }
    }
}
