//! The HTTP proxy that runs the phase pipeline: a hyper 1 server whose requests are routed by
//! [`Router`], run through the [`PluginSet`]
//! and proxied upstream over pooled keep-alive connections, bodies streaming both ways.
//!
//! Configuration is an immutable [`Snapshot`] (router + plugin instances) that
//! [`Proxy::swap`] replaces atomically: no restart, no lock on the request path, and requests
//! in flight finish on the snapshot they started with.

pub(crate) mod accept;
mod balancer;
mod body;
pub mod declarative;
mod h1client;
pub(crate) mod h1guard;
pub(crate) mod kinds;
mod listen;
pub mod mock_upstream;
mod proxy;
mod request_body;
mod response_body;
#[cfg(target_os = "linux")]
mod splice;
mod stream;
mod udp;
pub use stream::StreamListen;
pub mod tls;
mod upstream;
pub mod upstream_tls;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

pub use balancer::dns::{Dns, DnsRecord, DnsSettings, RecordKind, Resolution};
pub(crate) use balancer::split_target;
pub use balancer::{Address, Balancer, Balancers, PickState, format_target};
pub use body::ProxyBody;
pub use listen::{DEFAULT_BACKLOG, Keepalive, SocketOptions};
pub use request_body::BodyLimits;

use crate::executor::PluginSet;
use crate::phase::Phase;
use crate::router::Router;
use crate::transaction::{ClientConn, Transaction};
use tls::{CertificatePair, Certificates};

/// The Kong version whose behaviour this gateway implements (`Via`, `Server`).
pub const KONG_VERSION: &str = crate::runloop::kong_version!();

pub use crate::runloop::HeaderSettings;
pub(crate) use crate::runloop::SERVER_TOKEN;

/// What the proxy serves: routes, plugin instances and certificates, swapped as a whole.
/// The parts are shared: a change to consumers or plugin entities alone makes a snapshot
/// that keeps the router, plugins and upstreams of the one before ([`Snapshot::with_data`]).
pub struct Snapshot {
    /// The router.
    pub router: Arc<Router>,
    /// The configured plugin instances.
    pub plugins: Arc<PluginSet>,
    /// Certificates by server name (certificate and SNI entities).
    pub certificates: Arc<Certificates>,
    /// Upstreams (load balancers) by name.
    pub upstreams: Arc<Balancers>,
    /// How each service's `https` upstream is spoken to.
    pub upstream_tls: Arc<upstream_tls::UpstreamTls>,
    /// Consumers and plugin entities, for `kong.db()`.
    pub data: Arc<crate::dao::DataStore>,
}

impl Snapshot {
    /// A snapshot with no routes and no plugin instances, before a configuration is loaded.
    pub fn empty(plugins: Arc<crate::registry::Plugins>) -> Snapshot {
        Snapshot::new(Router::empty(), PluginSet::empty(plugins))
    }

    /// A snapshot of `router` and `plugins`, without certificates.
    pub fn new(router: Router, plugins: PluginSet) -> Snapshot {
        Snapshot {
            router: Arc::new(router),
            plugins: Arc::new(plugins),
            certificates: Arc::default(),
            upstreams: Arc::default(),
            upstream_tls: Arc::default(),
            data: crate::dao::DataStore::empty(),
        }
    }

    /// This snapshot with `data` for its consumers and plugin entities, sharing everything
    /// else (what an Admin API write of a consumer or a credential changes).
    pub fn with_data(&self, data: Arc<crate::dao::DataStore>) -> Snapshot {
        Snapshot {
            router: self.router.clone(),
            plugins: self.plugins.clone(),
            certificates: self.certificates.clone(),
            upstreams: self.upstreams.clone(),
            upstream_tls: self.upstream_tls.clone(),
            data,
        }
    }
}

/// The proxy: the current snapshot, the upstream connection pool and the settings.
pub struct Proxy {
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Tasks a request leaves behind (log, WebSocket tunnels and sessions), which shutdown
    /// waits for.
    tasks: tokio_util::task::TaskTracker,
    /// Fired when shutdown starts: WebSocket sessions close with 1001 `Going Away`.
    closing: tokio_util::sync::CancellationToken,
    pool: Arc<upstream::Pool>,
    headers: HeaderSettings,
    tls: Option<tls::ServerConfigs>,
    /// How long a client may take to complete a TLS handshake or send a request head (and
    /// stay idle between keep-alive requests).
    client_header_timeout: Duration,
    /// The limits on clients' request bodies, and where large ones are buffered.
    body_limits: BodyLimits,
    /// `port_maps`: the port a listener's port stands for (`80:8000` makes 8000 look like 80).
    port_maps: Vec<(u16, u16)>,
    /// Whether TLS listeners offer h2 by ALPN (Kong's `http2` listen flag).
    http2: bool,
    /// The upstreams' active health checkers.
    checkers: balancer::checks::Checkers,
    /// The DNS client that resolves targets named by host (`None`: the system resolver, at
    /// each connection).
    dns: Option<Arc<Dns>>,
    /// The upstreams' resolvers.
    refreshers: balancer::dns::Refreshers,
}

/// The connection a request arrived on.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    /// The local (listener) port.
    pub(crate) port: u16,
    pub(crate) tls: bool,
    pub(crate) sni: Option<String>,
    /// What the TLS handshake settled.
    pub(crate) session: Option<Arc<crate::transaction::TlsSession>>,
    /// The peer's address and the listener port as header values, formatted once.
    pub(crate) values: crate::runloop::ConnValues,
    /// The address the client connected to (nginx's `$server_addr`).
    pub(crate) server_ip: std::net::IpAddr,
    /// The connection's serial number on this node (nginx's `$connection`).
    pub(crate) serial: u64,
    /// Requests made on the connection so far (nginx's `$connection_requests`).
    requests: Arc<std::sync::atomic::AtomicU64>,
    /// The connection counted in the node's statistics until it closes.
    pub(crate) open: Arc<crate::stats::OpenConnection>,
}

/// Connections accepted by this process, for `$connection`.
static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Connection {
    fn new(
        peer: SocketAddr,
        server_ip: std::net::IpAddr,
        port: u16,
        tls: bool,
        stats: &Arc<crate::stats::ServerStats>,
    ) -> Connection {
        Connection {
            peer,
            port,
            tls,
            sni: None,
            session: None,
            values: crate::runloop::ConnValues::new(peer.ip(), port),
            server_ip,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            requests: Arc::default(),
            open: Arc::new(stats.open_connection()),
        }
    }

    /// The client side of a transaction on this connection, before any forwarding headers.
    pub(crate) fn client(&self) -> ClientConn {
        ClientConn {
            ip: self.peer.ip(),
            port: self.peer.port(),
            forwarded_ip: self.peer.ip(),
            forwarded_port: self.peer.port(),
            tls: self.tls,
            sni: self.sni.clone(),
            session: self.session.clone(),
            server_ip: self.server_ip,
            serial: self.serial,
            requests: self.requests.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The client side of the connection's next request: [`client`](Self::client), counted.
    pub(crate) fn next_request(&self) -> ClientConn {
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.client()
    }
}

/// How long a client may take to complete a TLS handshake or send a request head, by default
/// (nginx's `client_header_timeout`).
const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Proxy {
    /// A proxy serving `snapshot`.
    pub fn new(snapshot: Snapshot, headers: HeaderSettings) -> Proxy {
        let checkers = balancer::checks::Checkers::default();
        snapshot.upstreams.adopt(&snapshot.plugins.plugins().node().health);
        checkers.sync(&snapshot.upstreams);
        Proxy {
            checkers,
            dns: None,
            refreshers: Default::default(),
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            tasks: tokio_util::task::TaskTracker::new(),
            closing: tokio_util::sync::CancellationToken::new(),
            pool: Arc::default(),
            headers,
            tls: None,
            client_header_timeout: CLIENT_HEADER_TIMEOUT,
            body_limits: BodyLimits::default(),
            port_maps: Vec::new(),
            http2: true,
        }
    }

    /// Kong's `port_maps` (`host port`, `kong port` pairs): a connection that arrives on the
    /// Kong port is taken as arriving on the host port (routing by destination port, the
    /// `X-Forwarded-Port` header, `server_port` in the stream log), as behind a port-mapping
    /// container runtime or load balancer.
    pub fn with_port_maps(mut self, maps: &[(u16, u16)]) -> Proxy {
        self.port_maps = maps.to_vec();
        self
    }

    /// Whether TLS listeners ([`Proxy::serve_tls`]) offer HTTP/2: with `false`, ALPN offers
    /// http/1.1 alone, as Kong's nginx does when no `proxy_listen` entry has the `http2` flag.
    /// On by default, as in Kong's default `proxy_listen` (`0.0.0.0:8443 http2 ssl`).
    ///
    /// ```
    /// # use kong_pdk::gateway::{HeaderSettings, Proxy, Snapshot};
    /// # fn with(snapshot: Snapshot) -> Proxy {
    /// Proxy::new(snapshot, HeaderSettings::default()).with_http2(false)
    /// # }
    /// ```
    pub fn with_http2(mut self, on: bool) -> Proxy {
        self.http2 = on;
        self
    }

    /// The port `local` stands for under `port_maps`.
    pub(crate) fn mapped_port(&self, local: u16) -> u16 {
        self.port_maps
            .iter()
            .find(|(_, kong)| *kong == local)
            .map_or(local, |(host, _)| *host)
    }

    /// Resolves upstream targets named by host with `dns` (Kong's DNS client: record TTLs,
    /// SRV, `dns_order`, the hosts file) instead of the system resolver at each connection.
    pub fn with_dns(mut self, dns: Dns) -> Proxy {
        let dns = Arc::new(dns);
        let snapshot = self.snapshot();
        self.refreshers
            .sync(&snapshot.upstreams, &dns, &snapshot.plugins.plugins().node().health);
        self.dns = Some(dns);
        self
    }

    /// Sets how long a client may take to complete a TLS handshake or send a request head, and
    /// stay idle between keep-alive requests (nginx's `client_header_timeout`, 60 s by
    /// default); then the connection is closed.
    pub fn with_client_header_timeout(mut self, timeout: Duration) -> Proxy {
        self.client_header_timeout = timeout;
        self
    }

    /// Sets the limits on clients' request bodies (nginx's `client_body_buffer_size`,
    /// `client_max_body_size`, `client_body_timeout`) and the directory where bodies past the
    /// memory buffer are written while a route's `request_buffering` holds them.
    pub fn with_body_limits(mut self, limits: BodyLimits) -> Proxy {
        self.body_limits = limits;
        self
    }

    /// Enables [`Proxy::serve_tls`]: `default` is served to handshakes without a server name or
    /// whose name matches no SNI entity (Kong's `ssl_cert`/`ssl_cert_key`).
    pub fn with_default_certificate(mut self, default: CertificatePair) -> Proxy {
        self.tls = Some(tls::ServerConfigs::new(tls::Resolver {
            snapshots: self.snapshot.clone(),
            default,
        }));
        self
    }

    /// The snapshot new requests use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot. Call `snapshot.plugins.configure()` first, as Kong runs
    /// `configure` before the new configuration takes traffic.
    pub fn swap(&self, snapshot: Snapshot) {
        let live = self.snapshot();
        if Arc::ptr_eq(&snapshot.upstreams, &live.upstreams) {
            // The same upstreams (a change of consumers or plugin entities): their balancers,
            // checkers and resolvers go on as they are.
            self.snapshot.store(Arc::new(snapshot));
            return;
        }
        let health = &snapshot.plugins.plugins().node().health;
        snapshot.upstreams.seed_from(&live.upstreams, health);
        snapshot.upstreams.adopt(health);
        self.checkers.sync(&snapshot.upstreams);
        if let Some(dns) = &self.dns {
            self.refreshers.sync(&snapshot.upstreams, dns, health);
        }
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish (for up to 30 s) and closes idle keep-alive connections. A
    /// `proxy_listen` entry without flags.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.accept_loop(listener, Wire::Plain, shutdown).await
    }

    /// Serves HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on `listener`, as
    /// [`Proxy::serve`] does: a plain `proxy_listen` entry with the `http2` flag. Each
    /// connection's first bytes say which it speaks.
    pub async fn serve_h2c(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.accept_loop(listener, Wire::PlainH2c, shutdown).await
    }

    /// Serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN) on `listener`, as [`Proxy::serve`] does.
    /// Each handshake runs the `certificate` phase of the global plugins.
    ///
    /// # Panics
    /// Without [`Proxy::with_default_certificate`].
    pub async fn serve_tls(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        assert!(self.tls.is_some(), "serve_tls needs Proxy::with_default_certificate");
        self.accept_loop(listener, Wire::Tls, shutdown).await
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, wire: Wire, shutdown: impl Future<Output = ()>) {
        let tls = wire == Wire::Tls;
        let port = self.mapped_port(listener.local_addr().map_or(0, |a| a.port()));
        let stats = self.snapshot().plugins.plugins().node().stats.clone();
        let mut shutdown = std::pin::pin!(shutdown);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                (stream, peer) = crate::gateway::accept::accept(&listener) => {
                    let _ = stream.set_nodelay(true);
                    let server_ip = stream.local_addr().map_or(peer.ip(), |a| a.ip());
                    let proxy = self.clone();
                    let stop = stop_rx.clone();
                    let conn = Connection::new(peer, server_ip, port, tls, &stats);
                    conns.spawn(async move {
                        match wire {
                            Wire::Tls => proxy.accept_tls(stream, conn, stop).await,
                            Wire::Plain => proxy.connection(stream, conn, Http::One, stop).await,
                            Wire::PlainH2c => proxy.connection(stream, conn, Http::Either, stop).await,
                        }
                    });
                }
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        self.closing.cancel();
        // In-flight requests finish, then the log phases (and tunnels) they left behind.
        let drain = async {
            while conns.join_next().await.is_some() {}
            self.tasks.close();
            self.tasks.wait().await;
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            conns.abort_all();
        }
    }

    async fn accept_tls(
        self: Arc<Self>,
        stream: TcpStream,
        mut conn: Connection,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(configs) = self.tls.as_ref() else { return };
        let handshake = async {
            let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
            let start = acceptor.await.ok()?;
            conn.sni = start.client_hello().server_name().map(str::to_ascii_lowercase);
            let snapshot = self.snapshot();
            let mut asked = Default::default();
            if snapshot.plugins.has_globals(Phase::Certificate) {
                let mut tx = Transaction::handshake(conn.client(), conn.port, snapshot.plugins.plugins().node_arc());
                crate::runloop::certificate(&snapshot.plugins, &mut tx).await;
                asked = tx.handshake_requests();
            }
            start.into_stream(configs.get(asked, self.http2)).await.ok()
        };
        match tokio::time::timeout(self.client_header_timeout, handshake).await {
            Ok(Some(stream)) => {
                conn.session = Some(Arc::new(tls::session_of(stream.get_ref().1)));
                // ALPN said which protocol the client speaks.
                let http = match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Http::Two,
                    _ => Http::One,
                };
                self.clone().connection(stream, conn, http, stop).await
            }
            _ => tracing::debug!(target: "kong", "TLS handshake with {} failed", conn.peer),
        }
    }

    async fn connection<I>(
        self: Arc<Self>,
        io: I,
        conn: Connection,
        http: Http,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Arc::new(conn);
        let guard = h1guard::Guarded::with_proxy(io, self.clone(), conn.clone());
        let io = TokioIo::new(match http {
            Http::One => guard.http1_only(),
            Http::Two | Http::Either => guard,
        });
        let proxy = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            let conn = conn.clone();
            // Boxed: hyper keeps the request's future for the connection's life, and an idle
            // keep-alive connection then holds a pointer rather than the whole future.
            Box::pin(async move { Ok::<_, std::convert::Infallible>(proxy::handle(&proxy, req, &conn).await) })
        });
        // Both protocols' settings, whichever builder takes them: half_close, because the
        // guard ends the read side after a rejected head while an earlier request may still
        // be answered; HTTP/2 heads get the HTTP/1 head's bound (4 × 8 KiB), as nginx's
        // buffers do.
        macro_rules! http1 {
            ($builder:expr) => {
                // The guard times the head (`client_header_timeout`) with one timer per
                // connection; hyper's own would take a new one per request.
                $builder
                    .half_close(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(None)
            };
        }
        macro_rules! http2 {
            ($builder:expr) => {
                $builder
                    .timer(TokioTimer::new())
                    .max_header_list_size(h1guard::HEAD_MAX as u32)
            };
        }
        // Serves until the connection ends; once `stop` turns true, what is in flight
        // finishes and the connection closes.
        macro_rules! drive {
            ($serving:expr) => {{
                let mut serving = std::pin::pin!($serving);
                tokio::select! {
                    _ = serving.as_mut() => return,
                    _ = stop.wait_for(|s| *s) => {}
                }
                serving.as_mut().graceful_shutdown();
                let _ = serving.await;
            }};
        }
        match http {
            Http::One => {
                let mut builder = hyper::server::conn::http1::Builder::new();
                http1!(builder);
                drive!(builder.serve_connection(io, service).with_upgrades())
            }
            Http::Two => {
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                http2!(builder);
                drive!(builder.serve_connection(io, service))
            }
            Http::Either => {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                http1!(builder.http1());
                http2!(builder.http2());
                drive!(builder.serve_connection_with_upgrades(io, service))
            }
        }
    }
}

/// What a listener speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// HTTP/1.1.
    Plain,
    /// HTTP/1.1 and h2c, told apart by the connection's first bytes.
    PlainH2c,
    /// TLS, then the protocol ALPN agreed on.
    Tls,
}

/// The HTTP a connection is served with.
#[derive(Clone, Copy)]
enum Http {
    One,
    Two,
    Either,
}

#[cfg(test)]
mod parity_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod request_body_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tls_tests;
#[cfg(test)]
pub(crate) mod upstream_tls_tests;
#[cfg(test)]
mod websocket_tests;
