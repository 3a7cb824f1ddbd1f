//! One request's (or stream connection's) state as it moves through the phases: the client
//! request, routing results, the request sent upstream, the upstream's response, the response
//! Kong sends, and the per-request contexts. Independent of sockets: a gateway fills it from
//! the wire, the [testing](crate::testing) harness from a synthetic request.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Version};
use serde_json::Value;

use crate::entities::{Consumer, Credential, Route, Service};
use crate::model::{LogLine, NodeInfo, PluginMeta, Scope};
use crate::phase::Phase;

/// HTTP or stream traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsystem {
    /// HTTP, HTTPS, gRPC, WebSocket.
    Http,
    /// TCP, TLS, UDP.
    Stream,
}

/// Where the response came from (`kong.response.get_source()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Proxied from the upstream.
    Service,
    /// Produced by a plugin's `exit`/`error`.
    Exit,
    /// An error (handler failure, upstream failure, no route).
    Error,
}

impl Source {
    /// Kong's name: `"service"`, `"exit"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Service => "service",
            Source::Exit => "exit",
            Source::Error => "error",
        }
    }
}

/// Kong's default `client_body_buffer_size` (8k).
pub const CLIENT_BODY_BUFFER_SIZE: usize = 8 * 1024;

/// Reads a request body that has not been read yet (implemented by the gateway over its
/// connection).
pub trait BodyReader: Send + Sync {
    /// Reads the whole body; `None` when it is larger than `limit` bytes (what was read then
    /// stays ahead of the rest, for a later read or the upstream).
    fn read_to_end(&mut self, limit: usize)
    -> Pin<Box<dyn Future<Output = Result<Option<Bytes>, String>> + Send + '_>>;

    /// Kong's `client_body_buffer_size`: how much of a body `kong.request.get_raw_body()`
    /// reads (a larger one would be in a file in Kong, and the call fails).
    fn buffer_size(&self) -> usize {
        CLIENT_BODY_BUFFER_SIZE
    }
}

/// The client request body.
pub enum RequestBody {
    /// Fully read.
    Buffered(Bytes),
    /// Still on the connection.
    Pending(Box<dyn BodyReader>),
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestBody::Buffered(b) => f.debug_tuple("Buffered").field(&b.len()).finish(),
            RequestBody::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// The request as the client sent it.
#[derive(Debug)]
pub struct ClientRequest {
    /// Method.
    pub method: Method,
    /// `"http"` or `"https"`.
    pub scheme: &'static str,
    /// Host, lowercase, without port.
    pub host: String,
    /// The port the request arrived on.
    pub port: u16,
    /// Path as received (no query).
    pub raw_path: String,
    /// Query string without `?`.
    pub query: Option<String>,
    /// HTTP version.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: RequestBody,
}

/// The client connection.
#[derive(Debug, Clone)]
pub struct ClientConn {
    /// The directly connected peer.
    pub ip: IpAddr,
    /// Its port.
    pub port: u16,
    /// The client address after trusted `X-Forwarded-For`/`real_ip` processing.
    pub forwarded_ip: IpAddr,
    /// Its port.
    pub forwarded_port: u16,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The TLS server name, when TLS.
    pub sni: Option<String>,
    /// What the TLS handshake settled, when TLS.
    pub session: Option<Arc<TlsSession>>,
    /// The address the client connected to (nginx's `$server_addr`).
    pub server_ip: IpAddr,
    /// The connection's serial number on this node (nginx's `$connection`).
    pub serial: u64,
    /// The requests made on the connection, this one included (`$connection_requests`).
    pub requests: u64,
}

/// What the TLS handshake of a client connection settled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSession {
    /// The protocol version, as nginx names it: `TLSv1.2`, `TLSv1.3`.
    pub version: &'static str,
    /// The cipher suite, as OpenSSL (and so nginx) names it.
    pub cipher: &'static str,
    /// The client's certificate chain, PEM, client certificate first: present when the
    /// `certificate` phase asked for one ([`request_client_certificate`]) and the client sent it.
    ///
    /// [`request_client_certificate`]: crate::pdk::ClientTls::request_client_certificate
    pub client_chain: Option<Arc<str>>,
}

/// What the `certificate` phase asked of the TLS handshake (`kong.client.tls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeRequests {
    /// Ask the client for a certificate, without requiring or verifying it.
    pub client_certificate: bool,
    /// Neither resume this session later nor issue tickets for it.
    pub no_session_reuse: bool,
}

impl Default for ClientConn {
    fn default() -> Self {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        ClientConn {
            ip,
            port: 0,
            forwarded_ip: ip,
            forwarded_port: 0,
            tls: false,
            sni: None,
            session: None,
            server_ip: ip,
            serial: 1,
            requests: 1,
        }
    }
}

/// Regex captures of the matched route path (`kong.request.get_uri_captures()`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UriCaptures {
    /// Unnamed groups, in order (group 0 is the whole match).
    pub unnamed: Vec<String>,
    /// Named groups.
    pub named: HashMap<String, String>,
}

/// Upstream timeouts in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect.
    pub connect: u64,
    /// Write.
    pub write: u64,
    /// Read.
    pub read: u64,
}

/// The request Kong sends upstream (`kong.service.request` changes it).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// `"http"` or `"https"`.
    pub scheme: String,
    /// Target host.
    pub host: String,
    /// Target port.
    pub port: u16,
    /// The Host header to send, when set explicitly.
    pub host_header: Option<String>,
    /// Method.
    pub method: Method,
    /// Path (already joined with the service path).
    pub path: String,
    /// Query string without `?`.
    pub query: Option<String>,
    /// Headers.
    pub headers: HeaderMap,
    /// A replacement body; `None` forwards the client's.
    pub body: Option<Bytes>,
    /// Retries on connection failure.
    pub retries: u32,
    /// Timeouts.
    pub timeouts: Timeouts,
}

impl UpstreamRequest {
    /// Path and query, as sent on the request line.
    pub fn path_with_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// The response the upstream sent (`kong.service.response`).
#[derive(Debug, Clone, Default)]
pub struct UpstreamResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body, when buffered proxying is on.
    pub body: Option<Bytes>,
}

/// A response produced by `exit`/`error` (or an error), replacing the upstream's.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
}

/// The response Kong sends to the client.
#[derive(Debug, Clone, Default)]
pub struct DownstreamResponse {
    /// Status (0 until known).
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Whether the headers have been sent (setters fail after that).
    pub headers_sent: bool,
}

/// Body-filter state for the current chunk.
#[derive(Debug, Default)]
pub(crate) struct BodyState {
    pub(crate) chunk: Bytes,
    pub(crate) eof: bool,
    /// Chunks held back by `get_raw_body`, until EOF.
    pub(crate) buffer: Option<BytesMut>,
}

/// A WebSocket message or control frame, as a frame handler sees it
/// (`kong.websocket().client().get_frame()`): fragments arrive as one message of the first
/// fragment's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its type.
    pub kind: FrameKind,
    /// The payload; for a close frame, the reason.
    pub data: Bytes,
    /// A close frame's status code (`None` for other frames, and for a close without one).
    pub status: Option<u16>,
}

impl Frame {
    /// A frame of `kind` with `data`.
    ///
    /// ```
    /// use kong_pdk::pdk::{Frame, FrameKind};
    /// let f = Frame::new(FrameKind::Text, "hi");
    /// assert_eq!((f.kind, &f.data[..], f.status), (FrameKind::Text, &b"hi"[..], None));
    /// ```
    pub fn new(kind: FrameKind, data: impl Into<Bytes>) -> Frame {
        Frame {
            kind,
            data: data.into(),
            status: None,
        }
    }

    /// A close frame with `status` and `reason`.
    pub fn close(status: u16, reason: impl Into<Bytes>) -> Frame {
        Frame {
            kind: FrameKind::Close,
            data: reason.into(),
            status: Some(status),
        }
    }
}

/// WebSocket frame types, as Kong names them to frame handlers (`continuation` frames are
/// never seen: fragments are joined first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// `text`: a UTF-8 message.
    Text,
    /// `binary`: a binary message.
    Binary,
    /// `ping`.
    Ping,
    /// `pong`.
    Pong,
    /// `close`.
    Close,
}

impl FrameKind {
    /// Kong's name of the type (`"text"`, `"close"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            FrameKind::Text => "text",
            FrameKind::Binary => "binary",
            FrameKind::Ping => "ping",
            FrameKind::Pong => "pong",
            FrameKind::Close => "close",
        }
    }
}

/// A side of a WebSocket session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

#[cfg(feature = "gateway")]
impl Side {
    /// `client` or `upstream`, as Kong's messages name them.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }

    /// The other side.
    pub(crate) const fn peer(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }
}

/// A close frame to send: with a status and reason, or bare (no status, empty payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseMsg {
    pub(crate) status: Option<u16>,
    pub(crate) reason: Bytes,
}

impl CloseMsg {
    /// A close frame with `status` and `reason`.
    pub(crate) fn new(status: u16, reason: &'static str) -> CloseMsg {
        CloseMsg {
            status: Some(status),
            reason: Bytes::from_static(reason.as_bytes()),
        }
    }
}

/// The frame the frame handlers work on, with what they decided about it.
#[derive(Debug)]
pub(crate) struct FrameState {
    pub(crate) frame: Frame,
    /// Not forwarded.
    pub(crate) dropped: bool,
    /// `close()`: (to the sender, to its peer).
    pub(crate) close: Option<(CloseMsg, CloseMsg)>,
    /// A handler failed: both sides get 1011.
    pub(crate) failed: bool,
}

/// `set_max_payload_size()` per side, in bytes (`None`: Kong's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WsLimits {
    pub(crate) client: Option<u64>,
    pub(crate) upstream: Option<u64>,
}

/// A boxed, sendable future (what erased plugin calls return).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A configured plugin instance as a request knows it: the executor collects them in access
/// and calls them in the later phases; the [registry](crate::registry) implements it for each
/// plugin type.
pub(crate) trait ErasedInstance: Send + Sync {
    fn meta(&self) -> &PluginMeta;
    fn scope(&self) -> Scope;
    fn as_any(&self) -> &dyn Any;
    fn call<'a>(&'a self, phase: Phase, tx: &'a mut Transaction) -> BoxFuture<'a, crate::Result>;
}

/// A type-keyed map: `kong.ctx.shared` and `kong.ctx.plugin`.
///
/// ```
/// let mut map = kong_pdk::TypeMap::default();
/// #[derive(Debug, PartialEq)]
/// struct RequestType(&'static str);
/// map.insert(RequestType("WebSocket"));
/// assert_eq!(map.get::<RequestType>(), Some(&RequestType("WebSocket")));
/// assert!(map.get::<u32>().is_none());
/// ```
#[derive(Default)]
pub struct TypeMap {
    map: Option<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl TypeMap {
    /// Stores `value`, returning the previous value of its type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> Option<T> {
        self.map
            .get_or_insert_with(HashMap::new)
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|b| b.downcast().ok().map(|b| *b))
    }

    /// The value of type `T`.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.map.as_ref()?.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// The value of type `T`, mutably.
    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        self.map.as_mut()?.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    /// Removes the value of type `T`.
    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        self.map
            .as_mut()?
            .remove(&TypeId::of::<T>())
            .and_then(|b| b.downcast().ok().map(|b| *b))
    }
}

impl fmt::Debug for TypeMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypeMap({} values)", self.map.as_ref().map_or(0, HashMap::len))
    }
}

/// One try of the balancer: for the `kong.balancer` spans and `kong.log.serialize()`'s
/// `tries`.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) struct BalancerTry {
    /// When the try started (before the balancer picked), when the pick was made and when
    /// the try ended, in ns since the Unix epoch.
    pub(crate) start_ns: u64,
    pub(crate) picked_ns: u64,
    pub(crate) end_ns: u64,
    /// The peer tried: a balancer's address, or `None` for the service's own host.
    pub(crate) ip: Option<String>,
    pub(crate) port: u16,
    /// Kong's status for a failed try (502 no connection, 504 timeout).
    pub(crate) failed: Option<u16>,
}

/// One request's state. Created by the gateway (or the test harness) per request; the executor
/// runs phases over it; the PDK reads and changes it.
pub struct Transaction {
    pub(crate) id: String,
    pub(crate) started_at_ms: u64,
    pub(crate) started: Instant,
    pub(crate) subsystem: Subsystem,
    pub(crate) node: Arc<NodeInfo>,
    /// The configuration's consumers and plugin entities (`kong.db()`).
    pub(crate) data: Arc<crate::dao::DataStore>,
    /// The client request.
    pub request: ClientRequest,
    /// The client connection.
    pub client: ClientConn,
    /// The matched route.
    pub route: Option<Arc<Route>>,
    /// The matched route's service.
    pub service: Option<Arc<Service>>,
    /// Captures of the matched regex path.
    pub captures: UriCaptures,
    pub(crate) consumer: Option<Arc<Consumer>>,
    pub(crate) credential: Option<Arc<Credential>>,
    /// The request to send upstream.
    pub upstream: UpstreamRequest,
    pub(crate) buffered: bool,
    /// The upstream's response, once received.
    pub upstream_response: Option<UpstreamResponse>,
    /// The response to the client.
    pub response: DownstreamResponse,
    pub(crate) exit: Option<Exit>,
    pub(crate) source: Option<Source>,
    pub(crate) body: BodyState,
    pub(crate) shared: TypeMap,
    pub(crate) plugin_ctx: Vec<(usize, TypeMap)>,
    pub(crate) frame: Option<FrameState>,
    /// A session with a WebSocket service (`ws`/`wss`): `ws_handshake` instead of `access`,
    /// `ws_close` instead of `log`.
    pub(crate) websocket: bool,
    pub(crate) ws_limits: WsLimits,
    pub(crate) serialize_values: Vec<(String, Value)>,
    pub(crate) collected: Option<Arc<[Arc<dyn ErasedInstance>]>>,
    pub(crate) aborted: bool,
    /// The `Set-Cookie` a `hash_on = cookie` upstream answers with (the request had none).
    pub(crate) hash_cookie: Option<String>,
    /// The balancer's tries, in order.
    pub(crate) tries: Vec<BalancerTry>,
    /// The request counted in flight at its upstream address until the transaction ends
    /// (least-connections).
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) balancer_lease: Option<crate::health::InFlight>,
    /// The request went to an upstream that failed to answer (Kong's `KONG_PROXIED` without
    /// a response): the latency headers are the proxied ones.
    pub(crate) upstream_failed: bool,
    /// A plugin answered for the upstream (Kong's `ngx.ctx.KONG_PROXIED = true`, as
    /// proxy-cache's hits): the response is reported as proxied.
    pub(crate) answered_for_upstream: bool,
    /// `kong.client.tls.set_client_verify()`: replaces `request.tls.client_verify` in the log.
    pub(crate) client_verify: Option<String>,
    pub(crate) handshake: HandshakeRequests,
    pub(crate) latencies: Latencies,
    pub(crate) captured_logs: Option<Vec<LogLine>>,
    /// The request's spans, when the node traces (`tracing_instrumentations`) or a plugin
    /// started a propagation-only trace.
    pub(crate) trace: Option<Box<crate::tracer::Trace>>,
    /// A stream session's byte counts and status (`kong.log.serialize()`'s `session`).
    pub(crate) session: SessionCounts,
    /// The request's age when `log` started: every reading of the latencies in `log` gives
    /// the same value (nginx's `$request_time` is fixed there too).
    pub(crate) log_elapsed_ms: Option<u64>,
}

/// What a stream session moved, and how it ended.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SessionCounts {
    /// Bytes from the client, and to it.
    pub(crate) received: u64,
    pub(crate) sent: u64,
    /// Bytes to the upstream, and from it.
    pub(crate) upstream_sent: u64,
    pub(crate) upstream_received: u64,
    /// nginx's `$status` of a stream session (200 when proxied to its end).
    pub(crate) status: u16,
}

/// Timings the gateway records for `serialize()` and the latency headers, in ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    /// Time spent waiting for the upstream.
    pub proxy: Option<u64>,
    /// Time spent in Kong before proxying.
    pub kong: Option<u64>,
    /// Time receiving the response.
    pub receive: Option<u64>,
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("id", &self.id)
            .field("request", &self.request)
            .field("upstream", &self.upstream)
            .field("response", &self.response)
            .field("exit", &self.exit)
            .finish_non_exhaustive()
    }
}

/// A request id: 32 lowercase hex digits from a per-thread generator (wyrand, seeded once
/// from the OS), so ids cost no system call.
pub(crate) fn new_request_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0 | 1);
    }
    fn next(state: &Cell<u64>) -> u64 {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }
    let (a, b) = STATE.with(|s| (next(s), next(s)));
    let mut id = String::with_capacity(32);
    for v in [a, b] {
        for i in (0..16).rev() {
            let nibble = ((v >> (i * 4)) & 0xf) as u8;
            id.push(char::from(if nibble < 10 { b'0' + nibble } else { b'a' + nibble - 10 }));
        }
    }
    id
}

impl Transaction {
    /// A transaction for an HTTP request. The upstream request starts as a copy of the client
    /// request; the gateway sets its target once routed.
    pub fn new(request: ClientRequest, client: ClientConn, node: Arc<NodeInfo>) -> Transaction {
        let upstream = UpstreamRequest {
            scheme: "http".into(),
            host: String::new(),
            port: 80,
            host_header: None,
            method: request.method.clone(),
            path: request.raw_path.clone(),
            query: request.query.clone(),
            headers: request.headers.clone(),
            body: None,
            retries: 5,
            timeouts: Timeouts {
                connect: 60_000,
                write: 60_000,
                read: 60_000,
            },
        };
        Transaction {
            id: new_request_id(),
            started_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            started: Instant::now(),
            subsystem: Subsystem::Http,
            node,
            data: crate::dao::DataStore::empty(),
            request,
            client,
            route: None,
            service: None,
            captures: UriCaptures::default(),
            consumer: None,
            credential: None,
            upstream,
            buffered: false,
            upstream_response: None,
            response: DownstreamResponse::default(),
            exit: None,
            source: None,
            body: BodyState::default(),
            shared: TypeMap::default(),
            plugin_ctx: Vec::new(),
            frame: None,
            websocket: false,
            ws_limits: WsLimits::default(),
            serialize_values: Vec::new(),
            collected: None,
            aborted: false,
            hash_cookie: None,
            tries: Vec::new(),
            balancer_lease: None,
            upstream_failed: false,
            answered_for_upstream: false,
            client_verify: None,
            handshake: HandshakeRequests::default(),
            latencies: Latencies::default(),
            captured_logs: None,
            trace: None,
            session: SessionCounts::default(),
            log_elapsed_ms: None,
        }
    }

    /// A transaction for a stream (TCP/TLS/UDP) connection.
    pub fn stream(client: ClientConn, server_port: u16, node: Arc<NodeInfo>) -> Transaction {
        let request = ClientRequest {
            method: Method::GET,
            scheme: if client.tls { "tls" } else { "tcp" },
            host: String::new(),
            port: server_port,
            raw_path: String::new(),
            query: None,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: RequestBody::Buffered(Bytes::new()),
        };
        let mut tx = Transaction::new(request, client, node);
        tx.subsystem = Subsystem::Stream;
        tx
    }

    /// A transaction for a TLS handshake on an HTTP listener (the `certificate` phase).
    pub fn handshake(client: ClientConn, server_port: u16, node: Arc<NodeInfo>) -> Transaction {
        let mut tx = Transaction::stream(client, server_port, node);
        tx.subsystem = Subsystem::Http;
        tx.request.scheme = "https";
        tx
    }

    /// What the `certificate` phase asked of the handshake (`kong.client.tls`).
    pub fn handshake_requests(&self) -> HandshakeRequests {
        self.handshake
    }

    /// The request id (`X-Kong-Request-Id`).
    pub fn request_id(&self) -> &str {
        &self.id
    }

    /// Gives the request the consumers and plugin entities of `data` (the gateway's snapshot).
    pub fn set_data(&mut self, data: Arc<crate::dao::DataStore>) {
        self.data = data;
    }

    /// The node settings the request runs with.
    pub fn node_info(&self) -> &NodeInfo {
        &self.node
    }

    /// Whether a body filter ended the body early (`set_raw_body`).
    pub fn body_ended(&self) -> bool {
        self.body.eof
    }

    /// The subsystem.
    pub fn subsystem(&self) -> Subsystem {
        self.subsystem
    }

    /// Whether a plugin asked for buffered proxying (it implements `response`, or called
    /// `enable_buffering`).
    pub fn is_buffered(&self) -> bool {
        self.buffered
    }

    /// The response a plugin (or an error) produced, replacing the upstream's.
    pub fn exit(&self) -> Option<&Exit> {
        self.exit.as_ref()
    }

    /// Marks where the response comes from (the gateway marks its own errors).
    pub fn set_source(&mut self, source: Source) {
        self.source = Some(source);
    }

    /// Where the response comes from.
    pub fn source(&self) -> Source {
        self.source.unwrap_or(if self.exit.is_some() {
            Source::Exit
        } else {
            Source::Service
        })
    }

    /// The authenticated consumer.
    pub fn consumer(&self) -> Option<&Arc<Consumer>> {
        self.consumer.as_ref()
    }

    /// The authenticated credential.
    pub fn credential(&self) -> Option<&Arc<Credential>> {
        self.credential.as_ref()
    }

    /// Whether a body filter failed and the response must be cut short.
    pub fn is_aborted(&self) -> bool {
        self.aborted
    }

    /// The WebSocket frame the frame handlers are working on.
    pub fn frame(&self) -> Option<&Frame> {
        self.frame.as_ref().map(|f| &f.frame)
    }

    /// Whether this is a session with a WebSocket (`ws`/`wss`) service.
    pub fn is_websocket(&self) -> bool {
        self.websocket
    }

    /// The request start time, ms since the epoch.
    pub fn started_at_ms(&self) -> u64 {
        self.started_at_ms
    }

    /// Milliseconds since the request started.
    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Records timings for `serialize()`.
    pub fn set_latencies(&mut self, latencies: Latencies) {
        self.latencies = latencies;
    }

    /// Points the upstream request at the matched service, joining paths as Kong (v0 path
    /// handling is the gateway's job; this sets target, retries and timeouts).
    pub fn set_service(&mut self, service: Arc<Service>) {
        self.upstream.scheme = match service.protocol.as_str() {
            "https" | "grpcs" | "wss" | "tls" => "https".into(),
            _ => "http".into(),
        };
        self.upstream.host = service.host.clone();
        self.upstream.port = service.port;
        self.upstream.retries = service.retries;
        self.upstream.timeouts = Timeouts {
            connect: service.connect_timeout,
            write: service.write_timeout,
            read: service.read_timeout,
        };
        self.service = Some(service);
    }

    pub(crate) fn plugin_ctx(&mut self, index: usize) -> &mut TypeMap {
        let pos = match self.plugin_ctx.iter().position(|(i, _)| *i == index) {
            Some(p) => p,
            None => {
                self.plugin_ctx.push((index, TypeMap::default()));
                self.plugin_ctx.len() - 1
            }
        };
        &mut self.plugin_ctx[pos].1
    }
}
