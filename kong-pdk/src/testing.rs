//! Testing a plugin without a gateway: run its phases against a synthetic request and a fake
//! upstream, then assert what went upstream and what the client got. With the `testing`
//! feature, `testing::helpers` runs the plugin in a real gateway instead, over every
//! store strategy, the way Kong's `spec.helpers` do.
//!
//! ```
//! use kong_pdk::prelude::*;
//! use kong_pdk::testing::{Harness, MockResponse, TestRequest};
//!
//! #[plugin(priority = 1000, version = "0.0.1")]
//! pub struct MyPlugin {
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
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let gw = Harness::new().plugin::<MyPlugin>(serde_json::json!({})).start().await.unwrap();
//! let res = gw
//!     .send(TestRequest::get("/anything"), |_req| MockResponse::ok("hello"))
//!     .await;
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.header("X-MyPlugin"), Some("response"));
//! assert_eq!(res.body_text(), "hello");
//! # });
//! ```

#[cfg(feature = "testing")]
pub mod helpers;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use serde_json::Value;

use crate::entities::{Consumer, Route, Service};
#[doc(inline)]
pub use crate::executor::PluginEntity;
use crate::executor::PluginSet;
pub use crate::pdk::{Frame, FrameKind};
use crate::pdk::{LogLine, NodeInfo};
use crate::plugin::Handler;
#[doc(inline)]
pub use crate::registry::{LoadError, Scope};
use crate::registry::{Plugins, PluginsBuilder};
use crate::router::Router;
pub use crate::runloop::UpstreamFailure;
use crate::runloop::{self, ConnValues, HeaderSettings, ResponseBody};
use crate::transaction::{ClientConn, ClientRequest, RequestBody};
#[doc(inline)]
pub use crate::transaction::{Transaction, UpstreamRequest};

/// Appends a header given by a test, which must be valid.
fn append_header(headers: &mut HeaderMap, name: &str, value: &str) {
    let name = HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
    headers.append(name, HeaderValue::from_str(value).expect("valid header value"));
}

/// A synthetic client request.
#[derive(Debug, Clone)]
pub struct TestRequest {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    scheme: &'static str,
    client_ip: IpAddr,
    client_chain: Option<std::sync::Arc<str>>,
    routed: bool,
}

impl TestRequest {
    /// A request with `method` to `path_and_query` (`/a?b=c`).
    pub fn new(method: Method, path_and_query: &str) -> TestRequest {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("kong.test"));
        TestRequest {
            method,
            path,
            query,
            headers,
            body: Bytes::new(),
            scheme: "http",
            client_ip: IpAddr::from([127, 0, 0, 1]),
            client_chain: None,
            routed: true,
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> TestRequest {
        TestRequest::new(Method::GET, path)
    }

    /// `POST path` with a body.
    pub fn post(path: &str, body: impl Into<Bytes>) -> TestRequest {
        TestRequest::new(Method::POST, path).body(body)
    }

    /// Any method (`OPTIONS`, `PATCH`, ...) on `path`.
    ///
    /// # Panics
    /// When `method` is not a valid method token.
    pub fn method(method: &str, path: &str) -> TestRequest {
        let method = Method::from_bytes(method.as_bytes()).expect("a valid method token");
        TestRequest::new(method, path)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        append_header(&mut self.headers, name, value);
        self
    }

    /// Removes a header (the `Content-Length` [`body`](Self::body) sets, for a body sent
    /// without one).
    #[must_use]
    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.remove(name);
        self
    }

    /// Sets the `Host` header (`kong.test` by default), which routes by host and ends up in
    /// `X-Forwarded-Host`.
    #[must_use]
    pub fn host(mut self, host: &str) -> Self {
        self.headers.remove(HOST);
        append_header(&mut self.headers, "host", host);
        self
    }

    /// Sets the body (and Content-Length).
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self.headers.insert(CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        self
    }

    /// Sends it over HTTPS.
    #[must_use]
    pub fn https(mut self) -> Self {
        self.scheme = "https";
        self
    }

    /// Sends it over HTTPS with a client certificate chain (PEM, client certificate first),
    /// which `kong.client().tls().get_full_client_certificate_chain()` returns.
    #[must_use]
    pub fn client_certificate(mut self, chain_pem: &str) -> Self {
        self.scheme = "https";
        self.client_chain = Some(chain_pem.into());
        self
    }

    /// Sets the client's address.
    #[must_use]
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = ip;
        self
    }

    /// Makes the request match no route (Kong answers 404 after rewrite).
    #[must_use]
    pub fn unrouted(mut self) -> Self {
        self.routed = false;
        self
    }
}

/// A fake upstream response, or an upstream that fails.
#[derive(Debug, Clone)]
pub struct MockResponse {
    status: u16,
    headers: HeaderMap,
    chunks: Vec<Bytes>,
    failure: Option<UpstreamFailure>,
}

impl MockResponse {
    /// A response with `status` and no body.
    pub fn new(status: u16) -> MockResponse {
        MockResponse {
            status,
            headers: HeaderMap::new(),
            chunks: Vec::new(),
            failure: None,
        }
    }

    /// An upstream that fails as `failure` says: the client gets Kong's 502, 503 or 504.
    ///
    /// ```
    /// # use kong_pdk::testing::{Harness, MockResponse, TestRequest, UpstreamFailure};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let gw = Harness::new().start().await.unwrap();
    /// let res = gw.send(TestRequest::get("/"), |_| MockResponse::failure(UpstreamFailure::Timeout)).await;
    /// assert_eq!(res.status(), 504);
    /// assert!(res.body_text().starts_with("The upstream server is timing out\n"));
    /// # });
    /// ```
    pub fn failure(failure: UpstreamFailure) -> MockResponse {
        MockResponse {
            failure: Some(failure),
            ..MockResponse::new(0)
        }
    }

    /// `200` with `body`.
    pub fn ok(body: impl Into<Bytes>) -> MockResponse {
        MockResponse::new(200).body(body)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        append_header(&mut self.headers, name, value);
        self
    }

    /// Sets the body as one chunk.
    #[must_use]
    pub fn body(self, body: impl Into<Bytes>) -> Self {
        self.chunks([body.into()])
    }

    /// Sets the body as several chunks (each runs through body_filter separately).
    #[must_use]
    pub fn chunks(mut self, chunks: impl IntoIterator<Item = Bytes>) -> Self {
        self.chunks = chunks.into_iter().collect();
        let len: usize = self.chunks.iter().map(Bytes::len).sum();
        self.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        self
    }
}

/// What a request produced.
#[derive(Debug)]
pub struct Outcome {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    chunks: Vec<Bytes>,
    upstream: Option<(UpstreamRequest, Bytes)>,
    logs: Vec<LogLine>,
    aborted: bool,
    tx: Transaction,
}

impl Outcome {
    /// The status the client got.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every response header.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body the client got.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body_text()))
    }

    /// The body chunks as sent, after body_filter.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The request sent upstream, and its body (`None` when nothing was proxied).
    pub fn upstream_request(&self) -> Option<&UpstreamRequest> {
        self.upstream.as_ref().map(|(r, _)| r)
    }

    /// The body sent upstream.
    pub fn upstream_body(&self) -> Option<&Bytes> {
        self.upstream.as_ref().map(|(_, b)| b)
    }

    /// Lines plugins logged through `kong.log()`, and handler failures.
    pub fn logs(&self) -> &[LogLine] {
        &self.logs
    }

    /// Whether a log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|l| l.message.contains(needle))
    }

    /// Whether a body filter failed and the response was cut short.
    pub fn aborted(&self) -> bool {
        self.aborted
    }

    /// The finished transaction (contexts, consumer, ...).
    pub fn transaction(&self) -> &Transaction {
        &self.tx
    }
}

/// A frame sent into a [`TestGateway::websocket`] session, by the side that sends it.
#[derive(Debug, Clone)]
pub enum WsSend {
    /// From the client to the gateway.
    Client(Frame),
    /// From the upstream to the gateway.
    Upstream(Frame),
}

/// A TCP stream session for [`TestGateway::stream`]: who connects, and what they send.
#[derive(Debug, Clone)]
pub struct TestSession {
    client_ip: IpAddr,
    sni: Option<String>,
    sent: Bytes,
}

impl TestSession {
    /// A session from 127.0.0.1 that sends `bytes` and closes its side.
    pub fn new(bytes: impl Into<Bytes>) -> TestSession {
        TestSession {
            client_ip: IpAddr::from([127, 0, 0, 1]),
            sni: None,
            sent: bytes.into(),
        }
    }

    /// From another client address.
    #[must_use]
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = ip;
        self
    }

    /// A TLS session (terminated by the gateway) naming `sni`.
    #[must_use]
    pub fn tls(mut self, sni: &str) -> Self {
        self.sni = Some(sni.to_owned());
        self
    }
}

/// What a stream session produced.
#[derive(Debug)]
pub struct StreamOutcome {
    /// What the client received.
    pub to_client: Bytes,
    /// What the upstream received (`None`: the session ended in `preread`).
    pub to_upstream: Option<Bytes>,
    /// The session's status (200 proxied; a `preread` exit's status otherwise).
    pub status: u16,
    /// The plugins' log lines.
    pub logs: Vec<LogLine>,
    /// The transaction, after `log`.
    pub tx: Box<Transaction>,
}

/// What a WebSocket session produced.
#[derive(Debug)]
pub struct WsOutcome {
    /// The handshake's response when it was not accepted (a plugin's exit, a failed
    /// handshake check): status and body.
    pub rejected: Option<(u16, Bytes)>,
    /// What the upstream received, in order: forwarded messages, then a close frame when the
    /// session ended.
    pub to_upstream: Vec<Frame>,
    /// What the client received, in order.
    pub to_client: Vec<Frame>,
    /// Logged lines.
    pub logs: Vec<LogLine>,
}

/// A close frame as a side receives it (`None` status: a bare close).
fn close_frame(msg: crate::transaction::CloseMsg) -> Frame {
    Frame {
        kind: FrameKind::Close,
        data: msg.reason,
        status: msg.status,
    }
}

type AddType = fn(PluginsBuilder) -> PluginsBuilder;

/// Configures plugins, a route and a service, then [starts](Harness::start) a [`TestGateway`].
pub struct Harness {
    types: Vec<AddType>,
    entities: Vec<PluginEntity>,
    route: Route,
    service: Service,
    node: NodeInfo,
    headers: HeaderSettings,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

impl Harness {
    /// A route on `/` to a service `mock-upstream:80`, no plugins.
    pub fn new() -> Harness {
        let service = Service {
            name: Some("mock-upstream".into()),
            ..Service::new("mock-upstream", 80)
        };
        let mut route = Route::new(&["/"]);
        route.service = Some(crate::entities::ForeignKey { id: service.id });
        Harness {
            types: Vec::new(),
            entities: Vec::new(),
            route,
            service,
            node: NodeInfo::default(),
            headers: HeaderSettings::default(),
        }
    }

    /// Loads plugin type `T` without configuring an instance.
    #[must_use]
    pub fn load<T: Handler>(mut self) -> Self {
        self.types.push(|b| b.with::<T>());
        self
    }

    /// Adds a global instance of `T` with `config`.
    #[must_use]
    pub fn plugin<T: Handler>(self, config: Value) -> Self {
        self.plugin_entity::<T>(PluginEntity::new(T::NAME, config))
    }

    /// Adds an instance of `T` scoped to the harness's route.
    #[must_use]
    pub fn route_plugin<T: Handler>(self, config: Value) -> Self {
        let id = self.route.id;
        self.plugin_entity::<T>(PluginEntity::new(T::NAME, config).route(id))
    }

    /// Adds an instance of `T` as given.
    #[must_use]
    pub fn plugin_entity<T: Handler>(mut self, entity: PluginEntity) -> Self {
        self = self.load::<T>();
        self.entities.push(entity);
        self
    }

    /// The route requests match.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The route's service.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Changes the route. It is routed as in a gateway: a request it does not match gets
    /// Kong's 404, and a route without a service (`route.service = None`) Kong's 503.
    #[must_use]
    pub fn with_route(mut self, f: impl FnOnce(&mut Route)) -> Self {
        f(&mut self.route);
        self
    }

    /// Changes the service.
    #[must_use]
    pub fn with_service(mut self, f: impl FnOnce(&mut Service)) -> Self {
        f(&mut self.service);
        self
    }

    /// Sets the node's `trusted_ips`.
    #[must_use]
    pub fn trusted_ips(mut self, ips: &[&str]) -> Self {
        self.node.trusted_ips = NodeInfo::parse_trusted_ips(ips).expect("valid trusted_ips");
        self
    }

    /// Sets the node's `tracing_instrumentations` (comma-separated, as in kong.conf) and
    /// `tracing_sampling_rate`: requests get a trace ([`Kong::tracing`](crate::Kong::tracing)).
    ///
    /// # Panics
    /// On an unknown instrumentation.
    #[must_use]
    pub fn tracing(self, instrumentations: &str, sampling_rate: f64) -> Self {
        let names: Vec<&str> = instrumentations.split(',').map(str::trim).collect();
        let instrumentations =
            crate::tracer::Instrumentations::parse(&names).unwrap_or_else(|e| panic!("tracing: {e}"));
        self.node.tracing.set(crate::tracer::TracingSettings {
            instrumentations,
            sampling_rate,
        });
        self
    }

    /// Sets Kong's `headers` setting (which of `Server`, `Via`, the latencies and
    /// `X-Kong-Request-Id` responses carry), as `HeaderSettings::parse` reads it.
    ///
    /// # Panics
    /// On a value Kong refuses.
    #[must_use]
    pub fn headers(mut self, headers: &str) -> Self {
        self.headers = HeaderSettings::parse(headers).unwrap_or_else(|e| panic!("headers: {e}"));
        self
    }

    /// Loads the plugins, runs `init_worker` and `configure`, and returns the gateway.
    pub async fn start(self) -> Result<TestGateway, LoadError> {
        let mut builder = Plugins::builder(self.node);
        for add in &self.types {
            builder = add(builder);
        }
        let plugins = Arc::new(builder.build());
        if let Err(failures) = plugins.init_worker().await {
            let (name, err) = &failures[0];
            return Err(LoadError::Invalid {
                name: name.clone(),
                violation: crate::schema::SchemaViolation::new(
                    [("init_worker".to_owned(), Value::from(err.to_string()))]
                        .into_iter()
                        .collect(),
                ),
            });
        }
        let mut set = PluginSet::builder(plugins);
        for e in self.entities {
            set.add(e)?;
        }
        let set = set.build();
        set.configure().await;
        let route = Arc::new(self.route);
        let service = Arc::new(self.service);
        let routed = route.service.as_ref().map(|_| service.clone());
        let router = Router::new([(route.clone(), routed)]).map_err(|e| LoadError::Route(e.to_string()))?;
        let unrouted = Router::empty();
        let ws_router = {
            let mut ws_route = Route::clone(&route);
            ws_route.protocols = vec!["ws".into(), "wss".into()];
            let mut ws_service = Service::clone(&service);
            ws_service.protocol = if service.protocol == "https" { "wss" } else { "ws" }.into();
            let routed = route.service.as_ref().map(|_| Arc::new(ws_service));
            Router::new([(Arc::new(ws_route), routed)]).map_err(|e| LoadError::Route(e.to_string()))?
        };
        let stream_router = {
            let mut stream_route = Route::clone(&route);
            stream_route.protocols = vec!["tcp".into(), "tls".into()];
            stream_route.paths = None;
            stream_route.hosts = None;
            stream_route.methods = None;
            stream_route.sources = Some(vec![
                crate::entities::CidrPort {
                    ip: Some("0.0.0.0/0".into()),
                    port: None,
                },
                crate::entities::CidrPort {
                    ip: Some("::/0".into()),
                    port: None,
                },
            ]);
            let mut stream_service = Service::clone(&service);
            stream_service.protocol = "tcp".into();
            stream_service.path = None;
            let routed = route.service.as_ref().map(|_| Arc::new(stream_service));
            Router::new([(Arc::new(stream_route), routed)]).map_err(|e| LoadError::Route(e.to_string()))?
        };
        Ok(TestGateway {
            set,
            router,
            ws_router,
            stream_router,
            unrouted,
            route,
            headers: self.headers,
        })
    }
}

/// A started harness: sends requests through the phases.
pub struct TestGateway {
    set: PluginSet,
    router: Router,
    /// The router of [`TestRequest::unrouted`] requests: no routes.
    unrouted: Router,
    /// The router of [`TestGateway::websocket`] sessions: the route and service as `ws`.
    ws_router: Router,
    /// The router of [`TestGateway::stream`] sessions: the route as a `tcp`/`tls` route
    /// matching every source, the service as a `tcp` service.
    stream_router: Router,
    route: Arc<Route>,
    headers: HeaderSettings,
}

impl TestGateway {
    /// Whether plugin type `name` is loaded.
    pub fn has_plugin(&self, name: &str) -> bool {
        self.set.plugins().contains(name)
    }

    /// The plugin snapshot (engine internals).
    #[doc(hidden)]
    pub fn plugin_set(&self) -> &PluginSet {
        &self.set
    }

    /// Replaces the configured instances, as a gateway does on a configuration change: the
    /// new snapshot is validated and `configure`d before it takes traffic; on error the old one
    /// stays.
    pub async fn reconfigure(&mut self, entities: Vec<PluginEntity>) -> Result<(), LoadError> {
        let mut set = PluginSet::builder(self.set.plugins().clone());
        for e in entities {
            set.add(e)?;
        }
        let set = set.build();
        set.configure().await;
        self.set = set;
        Ok(())
    }

    fn transaction(&self, req: &TestRequest) -> Transaction {
        let request = ClientRequest {
            method: req.method.clone(),
            scheme: req.scheme,
            host: runloop::request_host(&req.headers, None),
            port: if req.scheme == "https" { 8443 } else { 8000 },
            raw_path: req.path.clone(),
            query: req.query.clone(),
            version: Version::HTTP_11,
            headers: req.headers.clone(),
            body: RequestBody::Buffered(req.body.clone()),
        };
        let client = ClientConn {
            ip: req.client_ip,
            forwarded_ip: req.client_ip,
            port: 40000,
            forwarded_port: 40000,
            tls: req.scheme == "https",
            sni: None,
            session: (req.scheme == "https").then(|| {
                std::sync::Arc::new(crate::transaction::TlsSession {
                    version: "TLSv1.3",
                    cipher: "TLS_AES_128_GCM_SHA256",
                    client_chain: req.client_chain.clone(),
                })
            }),
            ..ClientConn::default()
        };
        let mut tx = Transaction::new(request, client, self.set.plugins().node.clone());
        tx.captured_logs = Some(Vec::new());
        tx
    }

    /// Sends `req` through the same runloop as the gateway: rewrite, routing, access, the fake
    /// `upstream` (which sees the request as Kong sends it, forwarding headers included),
    /// response, header_filter with Kong's response headers, body_filter per chunk and log.
    pub async fn send(&self, req: TestRequest, mut upstream: impl FnMut(&UpstreamRequest) -> MockResponse) -> Outcome {
        // Each request arrives on a connection of its own, counted as the gateway counts them
        // (`kong.nginx.get_statistics()`).
        let connection = self.set.plugins().node.stats.open_connection();
        let _request = connection.request();
        let mut tx = self.transaction(&req);
        let set = &self.set;
        let mut proxied = None;
        let mut upstream_body = None;

        let router = if req.routed { &self.router } else { &self.unrouted };
        let proxying = runloop::before_proxy(set, router, &mut tx, None).await;
        if tx.exit().is_none() {
            let conn = ConnValues::new(tx.client.ip, tx.request.port);
            let headers = runloop::upstream_headers(&mut tx, &conn, &proxying, &self.headers);
            let mut sent = tx.upstream.clone();
            sent.headers = headers;
            let body = tx.upstream.body.clone().unwrap_or_else(|| req.body.clone());
            let mock = upstream(&sent);
            proxied = Some((sent, body));
            match mock.failure {
                Some(failure) => runloop::upstream_failed(&mut tx, failure),
                None => {
                    runloop::upstream_head(&mut tx, mock.status, mock.headers);
                    upstream_body = Some(if tx.is_buffered() {
                        let mut all = BytesMut::new();
                        for c in &mock.chunks {
                            all.extend_from_slice(c);
                        }
                        let all = all.freeze();
                        runloop::response(set, &mut tx, all.clone()).await;
                        ResponseBody::Bytes(all)
                    } else {
                        ResponseBody::Upstream(mock.chunks)
                    });
                }
            }
        }
        runloop::header_filter(set, &mut tx, &self.headers, 0).await;
        let source = match runloop::response_body(&tx, upstream_body) {
            ResponseBody::Bytes(b) => vec![b],
            ResponseBody::Upstream(chunks) => chunks,
        };
        let (filter, _) = runloop::body_phases(set, &tx);
        let mut chunks = Vec::new();
        let n = source.len().max(1);
        let mut iter = source.into_iter();
        for i in 0..n {
            let chunk = iter.next().unwrap_or_default();
            let eof = i == n - 1;
            let out = if filter {
                runloop::body_chunk(set, &mut tx, chunk, eof).await
            } else {
                chunk
            };
            if !out.is_empty() {
                chunks.push(out);
            }
            if tx.is_aborted() || tx.body_ended() && !eof {
                break;
            }
        }
        runloop::log(set, &mut tx).await;
        let mut body = BytesMut::new();
        for c in &chunks {
            body.extend_from_slice(c);
        }
        Outcome {
            status: tx.response.status,
            headers: tx.response.headers.clone(),
            body: body.freeze(),
            chunks,
            upstream: proxied,
            logs: tx.captured_logs.take().unwrap_or_default(),
            aborted: tx.is_aborted(),
            tx,
        }
    }

    /// Runs a TCP stream session through the same runloop as the gateway (the harness's route
    /// as a `tcp`/`tls` route for every source, its service as a `tcp` service): routing and
    /// `preread` (collecting), then the fake `upstream` gets what the client sent and answers,
    /// then `log` once, with the stream shape of `kong.log.serialize()`.
    pub async fn stream(&self, session: TestSession, upstream: impl FnOnce(&[u8]) -> Vec<u8>) -> StreamOutcome {
        let tls = session.sni.is_some();
        let client = ClientConn {
            ip: session.client_ip,
            forwarded_ip: session.client_ip,
            port: 40000,
            forwarded_port: 40000,
            tls,
            sni: session.sni.clone(),
            session: tls.then(|| {
                std::sync::Arc::new(crate::transaction::TlsSession {
                    version: "TLSv1.3",
                    cipher: "TLS_AES_128_GCM_SHA256",
                    client_chain: None,
                })
            }),
            ..ClientConn::default()
        };
        let mut tx = Box::new(Transaction::stream(client, 9000, self.set.plugins().node.clone()));
        tx.captured_logs = Some(Vec::new());
        let info = crate::router::StreamInfo {
            source: (session.client_ip, 40000),
            destination: (IpAddr::from([127, 0, 0, 1]), 9000),
            sni: session.sni.as_deref(),
            tls,
        };
        runloop::preread(&self.set, &self.stream_router, &mut tx, &info).await;
        let (to_client, to_upstream) = match tx.exit().map(|e| (e.status, e.body.clone())) {
            Some((status, body)) => {
                tx.session.status = status;
                let shown = if status < 400 { body } else { Bytes::new() };
                tx.session.sent = shown.len() as u64;
                (shown, None)
            }
            None => {
                let answer = Bytes::from(upstream(&session.sent));
                let c = &mut tx.session;
                c.received = session.sent.len() as u64;
                c.upstream_sent = c.received;
                c.upstream_received = answer.len() as u64;
                c.sent = c.upstream_received;
                c.status = 200;
                (answer, Some(session.sent.clone()))
            }
        };
        runloop::log(&self.set, &mut tx).await;
        StreamOutcome {
            to_client,
            to_upstream,
            status: tx.session.status,
            logs: tx.captured_logs.take().unwrap_or_default(),
            tx,
        }
    }

    /// Runs a WebSocket session through the same runloop as the gateway, with the harness's
    /// service as a `ws` service (`wss` when it is https) and its route taking `ws` and `wss`:
    /// rewrite, routing, `ws_handshake` and the handshake check, then each frame through
    /// `ws_client_frame` / `ws_upstream_frame` with Kong's payload limits and close rules,
    /// then `ws_close`. The handshake headers are added to `req` when it lacks them.
    ///
    /// ```
    /// use kong_pdk::prelude::*;
    /// use kong_pdk::pdk::{Frame, FrameKind};
    /// use kong_pdk::testing::{Harness, TestRequest, WsSend};
    ///
    /// #[plugin(priority = 10, version = "1.0.0")]
    /// struct Shout {}
    ///
    /// #[handler]
    /// impl Handler for Shout {
    ///     async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> kong_pdk::Result {
    ///         let mut client = kong.websocket().client();
    ///         let loud = client.get_frame()?.data.to_ascii_uppercase();
    ///         client.set_frame_data(loud)?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let gw = Harness::new().plugin::<Shout>(serde_json::json!({})).start().await.unwrap();
    /// let out = gw
    ///     .websocket(TestRequest::get("/"), [WsSend::Client(Frame::new(FrameKind::Text, "hi"))])
    ///     .await;
    /// assert_eq!(out.to_upstream, [Frame::new(FrameKind::Text, "HI")]);
    /// # });
    /// ```
    pub async fn websocket(&self, req: TestRequest, frames: impl IntoIterator<Item = WsSend>) -> WsOutcome {
        use crate::transaction::Side;
        let mut req = req;
        for (name, value) in [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ] {
            if !req.headers.contains_key(name) {
                req = req.header(name, value);
            }
        }
        let mut tx = self.transaction(&req);
        let set = &self.set;
        let router = if req.routed { &self.ws_router } else { &self.unrouted };
        runloop::before_proxy(set, router, &mut tx, None).await;
        let mut out = WsOutcome {
            rejected: None,
            to_upstream: Vec::new(),
            to_client: Vec::new(),
            logs: Vec::new(),
        };
        if let Some(exit) = tx.exit() {
            out.rejected = Some((exit.status, exit.body.clone()));
        } else {
            tx.response.status = 101;
            // Whether each side (client, upstream) has sent its close.
            let mut closed = [false, false];
            for send in frames {
                let (from, frame) = match send {
                    WsSend::Client(f) => (Side::Client, f),
                    WsSend::Upstream(f) => (Side::Upstream, f),
                };
                if closed[from as usize] {
                    continue;
                }
                let data_frame = matches!(frame.kind, FrameKind::Text | FrameKind::Binary);
                let verdict = if data_frame && frame.data.len() as u64 > runloop::ws_limit(&tx, from) {
                    runloop::payload_too_large()
                } else {
                    runloop::ws_frame(set, &mut tx, from, frame).await
                };
                let (own, peer) = match from {
                    Side::Client => (&mut out.to_client, &mut out.to_upstream),
                    Side::Upstream => (&mut out.to_upstream, &mut out.to_client),
                };
                match verdict {
                    runloop::FrameVerdict::Forward(f) => {
                        closed[from as usize] |= f.kind == FrameKind::Close;
                        peer.push(f);
                    }
                    runloop::FrameVerdict::Drop => {}
                    runloop::FrameVerdict::Close { sender, peer: to_peer } => {
                        own.push(close_frame(sender));
                        peer.push(close_frame(to_peer));
                        closed = [true, true];
                    }
                }
                if closed == [true, true] {
                    break;
                }
            }
        }
        runloop::log(set, &mut tx).await;
        out.logs = tx.captured_logs.take().unwrap_or_default();
        out
    }

    /// A consumer to authenticate as, for tests of consumer-scoped configs.
    pub fn consumer(username: &str) -> Consumer {
        Consumer::new(username)
    }

    /// The route's scope, for [`PluginEntity`]s.
    pub fn route_scope(&self) -> Scope {
        Scope {
            route: Some(self.route.id),
            ..Scope::GLOBAL
        }
    }
}
