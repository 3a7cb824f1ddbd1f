//! The Plugin Development Kit: what a handler can see and do, module by module as in Kong
//! (`kong.request`, `kong.response`, `kong.service`, `kong.client`, `kong.ctx`, `kong.log`,
//! `kong.node`, `kong.nginx`, `kong.cluster`, `kong.router`, `kong.ip`, `kong.plugin`).
//!
//! A handler receives `&mut Kong<Phase>`; each module is a method (`kong.response()`), and each
//! function carries the phase rule Kong checks at run time as a trait bound checked at compile
//! time (see the [phase module](crate::phase)).
//!
//! ```
//! use kong_pdk::prelude::*;
//!
//! #[plugin(priority = 1000, version = "1.0.0")]
//! pub struct Guard {
//!     #[field(typedef = header_name, default = "X-Api-Key")]
//!     header: String,
//! }
//!
//! #[handler]
//! impl Handler for Guard {
//!     async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
//!         if kong.request().get_header(&self.header).is_none() {
//!             return kong.response().error(401, Some("No API key found in request"));
//!         }
//!         kong.service().request().set_header("X-Checked", "yes")?;
//!         Ok(())
//!     }
//! }
//! ```

mod client;
mod ctx;
pub(crate) mod error_template;
mod ip;
pub(crate) mod log;
mod node;
pub(crate) mod request;
mod response;
mod router;
mod service;
mod spans;
mod websocket;

use std::marker::PhantomData;
use std::sync::Arc;

use uuid::Uuid;

pub use client::{Client, ClientTls};
pub use ctx::Ctx;
pub use error_template::{ErrorFormat, default_message};
pub use ip::Networks;
pub use log::{ErrorLog, Level, Log, LogLine, MAX_REQUEST_LINES, Measures};
pub use node::{Cluster, Nginx, Node, NodeInfo, RouterFlavor};
pub use request::{QueryValue, Request, percent_decode, percent_encode_component};
pub(crate) use response::overlay;
pub use response::{Exit, ExitBody, Response};
pub use router::Router;
pub use service::{Service, ServiceRequest, ServiceResponse};
pub use spans::Tracing;
pub use websocket::{
    DEFAULT_CLIENT_MAX_PAYLOAD, DEFAULT_UPSTREAM_MAX_PAYLOAD, Direction, FromClient, FromUpstream, MAX_PAYLOAD_SIZE,
    WebSocket, WsSide,
};

#[doc(inline)]
pub use crate::transaction::{Frame, FrameKind, UriCaptures};

use crate::model::PluginMeta;
use crate::phase::{self, RequestPhase};
use crate::transaction::Transaction;

/// The context a phase handler receives: Kong's `kong` global, for one request, one plugin,
/// one phase `P`. `S` is the plugin type's [`Handler::State`](crate::Handler::State).
///
/// Handlers receive it as `&mut Kong<Access>` (or `&mut Kong<Access, MyState>`): it borrows
/// the request for the duration of one handler call, with the running plugin's metadata and
/// state.
pub struct Kong<'a, P: RequestPhase, S = ()> {
    pub(crate) tx: &'a mut Transaction,
    meta: &'a PluginMeta,
    state: &'a S,
    instance: Uuid,
    scope: crate::model::Scope,
    _phase: PhantomData<fn() -> P>,
}

impl<'a, P: RequestPhase, S: Send + Sync + 'static> Kong<'a, P, S> {
    /// The context of one handler call of the plugin instance `instance`.
    pub(crate) fn new(
        tx: &'a mut Transaction,
        meta: &'a PluginMeta,
        state: &'a S,
        instance: Uuid,
        scope: crate::model::Scope,
    ) -> Self {
        Kong {
            tx,
            meta,
            state,
            instance,
            scope,
            _phase: PhantomData,
        }
    }

    fn plugin(&self) -> &PluginMeta {
        self.meta
    }

    /// `kong.request`: the client request.
    pub fn request(&mut self) -> Request<'_, P>
    where
        P: phase::RequestRead,
    {
        Request::new(self.tx)
    }

    /// `kong.response`: the response sent to the client.
    pub fn response(&mut self) -> Response<'_, P> {
        let name = self.plugin().name;
        Response::new(self.tx, name)
    }

    /// `kong.service`: the upstream target, and `kong.service.request`/`.response`.
    pub fn service(&mut self) -> Service<'_, P> {
        Service::new(self.tx)
    }

    /// `kong.db`: the consumers and plugin entities ([`crate::dao`](mod@crate::dao)) of the configuration the
    /// request runs with. Reads are in memory: no I/O on the request path.
    pub fn db(&self) -> &crate::dao::DataStore {
        &self.tx.data
    }

    /// The counters every node on this node's database shares (Kong's `ratelimiting_metrics`,
    /// the `cluster` policy of the rate-limiting plugins); `None` without a database.
    pub fn cluster_counters(&self) -> Option<Arc<dyn crate::counters::ClusterCounters>> {
        self.tx.node.counters.get()
    }

    /// The node's Redis connections (Kong's `resty.redis` with its pools): send pipelines of
    /// commands to any server; `None` on an engine without them.
    pub fn redis(&self) -> Option<Arc<dyn crate::redis::RedisClient>> {
        self.tx.node.redis.clone()
    }

    /// The node's HTTP client (Kong's `resty.http`): requests a plugin sends itself; `None`
    /// on an engine without one.
    pub fn http_client(&self) -> Option<Arc<dyn crate::outbound::HttpClient>> {
        self.tx.node.http.clone()
    }

    /// The node's TCP client (Kong's `ngx.socket.tcp`): bytes a plugin writes itself; `None`
    /// on an engine without one.
    pub fn tcp_client(&self) -> Option<Arc<dyn crate::outbound::TcpClient>> {
        self.tx.node.tcp.clone()
    }

    /// The node's timers, to keep for work scheduled from outside a request (a queue's
    /// retries); `None` on an engine without them.
    pub fn timers(&self) -> Option<Arc<dyn crate::timer::Timers>> {
        self.tx.node.timers.clone()
    }

    /// `kong.timer:at(delay, task)`: runs `task` once `delay` has passed, outside the request;
    /// `false` when the engine has no timers or is shutting down.
    pub fn timer_at(
        &self,
        delay: std::time::Duration,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> bool {
        match &self.tx.node.timers {
            Some(timers) => timers.at(delay, Box::pin(task)),
            None => false,
        }
    }

    /// `kong.client`: the connected client, its consumer and credential.
    pub fn client(&mut self) -> Client<'_, P> {
        Client::new(self.tx)
    }

    /// `kong.ctx`: per-request storage, shared by all plugins or private to this plugin type.
    pub fn ctx(&mut self) -> Ctx<'_> {
        let index = self.plugin().index;
        Ctx::new(self.tx, index)
    }

    /// `kong.log`: logging prefixed with the plugin's name, and (in `log`) `serialize()`.
    pub fn log(&mut self) -> Log<'_, P> {
        let name = self.plugin().name;
        Log::new(Some(self.tx), name)
    }

    /// `kong.node`: this gateway node.
    pub fn node(&self) -> Node<'_> {
        Node::new(&self.tx.node)
    }

    /// `kong.nginx`: the subsystem and the node's connection and request counters.
    pub fn nginx(&self) -> Nginx<'_> {
        Nginx::new(&self.tx.node)
    }

    /// `kong.cluster`: the cluster's id.
    pub fn cluster(&self) -> Cluster<'_> {
        Cluster::new(&self.tx.node)
    }

    /// `kong.vault`: secret references (`{vault://env/NAME}`), parsed and resolved.
    pub fn vault(&self) -> crate::vault::Vault {
        crate::vault::Vault
    }

    /// `kong.cache`: the node's cache of loaded values (credentials, consumers, whatever a
    /// plugin loads), invalidated when the entities behind the keys change.
    pub fn cache(&self) -> Arc<crate::cache::Cache> {
        self.tx.node.cache.clone()
    }

    /// `kong.tracing`: the request's spans and trace context.
    pub fn tracing(&mut self) -> Tracing<'_, P>
    where
        P: phase::Traced,
    {
        Tracing::new(self.tx)
    }

    /// `kong.router`: the matched route and service.
    pub fn router(&self) -> Router<'_>
    where
        P: phase::AuthAndLater,
    {
        Router::new(self.tx)
    }

    /// `kong.ip.is_trusted`: whether `ip` is in the `trusted_ips` setting.
    pub fn ip_is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.tx.node.is_trusted(ip)
    }

    /// `kong.plugin.get_id`: the id of the plugin instance running.
    pub fn plugin_id(&self) -> Uuid {
        self.instance
    }

    /// What the running plugin instance is attached to (Kong's `conf.route_id`,
    /// `conf.service_id`, `conf.consumer_id`): all `None` for a global instance.
    pub fn plugin_scope(&self) -> crate::model::Scope {
        self.scope
    }

    /// The plugin's name.
    pub fn plugin_name(&self) -> &'static str {
        self.plugin().name
    }

    /// `kong.websocket`: frames (`ws_client_frame`, `ws_upstream_frame`) and payload limits
    /// (`ws_handshake`) of a session with a WebSocket service.
    pub fn websocket(&mut self) -> WebSocket<'_, P>
    where
        P: phase::WebSocketPdk,
    {
        WebSocket::new(self.tx)
    }

    /// The plugin type's state (`type State` of the handler impl). It outlives the borrow of
    /// `kong`, so it can be held while other PDK calls are made.
    pub fn state(&self) -> &'a S {
        self.state
    }
}

/// The context of `init_worker` and `configure`: no request, but the plugin's state, its
/// logger and the node.
pub struct Worker<S> {
    plugin: Arc<PluginMeta>,
    state: Arc<S>,
    node: Arc<NodeInfo>,
}

impl<S> Worker<S> {
    pub(crate) fn new(plugin: Arc<PluginMeta>, state: Arc<S>, node: Arc<NodeInfo>) -> Self {
        Worker { plugin, state, node }
    }

    /// The plugin type's state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// `kong.log`, prefixed with the plugin name.
    pub fn log(&self) -> Log<'_, phase::Log> {
        Log::new(None, self.plugin.name)
    }

    /// `kong.node`.
    pub fn node(&self) -> Node<'_> {
        Node::new(&self.node)
    }

    /// `kong.nginx`.
    pub fn nginx(&self) -> Nginx<'_> {
        Nginx::new(&self.node)
    }

    /// `kong.cluster`.
    pub fn cluster(&self) -> Cluster<'_> {
        Cluster::new(&self.node)
    }

    /// `kong.vault`.
    pub fn vault(&self) -> crate::vault::Vault {
        crate::vault::Vault
    }

    /// `kong.cache`.
    pub fn cache(&self) -> &crate::cache::Cache {
        &self.node.cache
    }

    /// The plugin's name.
    pub fn plugin_name(&self) -> &'static str {
        self.plugin.name
    }
}
