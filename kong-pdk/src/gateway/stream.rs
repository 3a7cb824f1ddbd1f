//! Stream proxying (Kong's `stream_listen`, `nginx_kong_stream.lua`): TCP connections are
//! routed by source, destination and server name, run `preread` and go to the service's
//! upstream with its retries and timeouts; the bytes flow both ways with backpressure until
//! either side is done, then `log` runs once with the session's stream shape.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Proxy;
use crate::router::StreamInfo;
use crate::runloop;
use crate::transaction::{ClientConn, Transaction};

/// The bytes read from one side before they are written to the other: what a session holds
/// per direction.
const CHUNK: usize = 16 * 1024;

impl Proxy {
    /// Serves stream (TCP) connections on `listener` until `shutdown` (Kong's
    /// `stream_listen`). Sessions in progress end with shutdown.
    pub async fn serve_stream(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.stream_loop(listener, false, shutdown).await
    }

    /// Serves TLS streams on `listener` (a `stream_listen` entry with `ssl`): the server name
    /// in the ClientHello routes the connection, whose route's protocols say whether the
    /// gateway terminates TLS (`tls`: the certificate phase, then plaintext to `preread` and
    /// the upstream) or passes the client's TLS bytes through (`tls_passthrough`).
    ///
    /// # Panics
    /// Without [`Proxy::with_default_certificate`].
    pub async fn serve_stream_tls(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        assert!(
            self.tls.is_some(),
            "serve_stream_tls needs Proxy::with_default_certificate"
        );
        self.stream_loop(listener, true, shutdown).await
    }

    async fn stream_loop(self: Arc<Self>, listener: TcpListener, tls: bool, shutdown: impl Future<Output = ()>) {
        let local = listener.local_addr().ok();
        let stats = self.snapshot().plugins.plugins().node().stats.clone();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                (tcp, peer) = super::accept::accept(&listener) => {
                    let _ = tcp.set_nodelay(true);
                    let server = tcp.local_addr().ok().or(local).unwrap_or(peer);
                    let open = stats.open_connection();
                    let proxy = self.clone();
                    sessions.spawn(async move {
                        let _open = open;
                        if tls {
                            proxy.tls_stream(tcp, peer, server).await;
                        } else {
                            let conn = client_conn(peer, server, None);
                            proxy.stream_session(tcp, conn, server, Bytes::new()).await;
                        }
                    });
                }
            }
        }
        sessions.abort_all();
    }

    /// A connection on a TLS stream listener: the ClientHello is read (and kept), its server
    /// name routes the connection (Kong's first pass: no plugins), then the session is
    /// terminated or passed through as the route says.
    async fn tls_stream(&self, mut tcp: TcpStream, peer: SocketAddr, server: SocketAddr) {
        let Some(configs) = self.tls.as_ref() else { return };
        let Ok(Some((hello, sni))) = tokio::time::timeout(self.client_header_timeout, client_hello(&mut tcp)).await
        else {
            tracing::debug!(target: "kong", "no TLS ClientHello from {peer}");
            return;
        };
        let snap = self.snapshot();
        let info = StreamInfo {
            source: (peer.ip(), peer.port()),
            destination: (server.ip(), server.port()),
            sni: sni.as_deref(),
        };
        let Some((route, _)) = snap.router.find_stream(&info) else {
            tracing::error!(target: "kong", "no Route found with those values");
            return;
        };
        let has = |p: &str| route.protocols.iter().any(|x| x == p);
        if has("tls_passthrough") {
            let conn = client_conn(peer, server, sni);
            return self.stream_session(tcp, conn, server, hello).await;
        }
        if !has("tls") {
            tracing::error!(target: "kong", "unexpected protocols in matched Route");
            return;
        }
        // Termination: the handshake reads the ClientHello again from what was kept.
        let mut conn = client_conn(peer, server, sni);
        conn.tls = true;
        let handshake = async {
            let io = Prefixed {
                prefix: hello,
                inner: tcp,
            };
            let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
            let start = acceptor.await.ok()?;
            let mut asked = Default::default();
            if snap.plugins.has_globals(crate::phase::Phase::Certificate) {
                let node = snap.plugins.plugins().node_arc();
                let mut tx = Transaction::handshake(conn.clone(), server.port(), node);
                tx.request.scheme = "tls";
                tx.subsystem = crate::transaction::Subsystem::Stream;
                runloop::certificate(&snap.plugins, &mut tx).await;
                asked = tx.handshake_requests();
            }
            start.into_stream(configs.get_stream(asked)).await.ok()
        };
        match tokio::time::timeout(self.client_header_timeout, handshake).await {
            Ok(Some(stream)) => {
                conn.session = Some(Arc::new(super::tls::session_of(stream.get_ref().1)));
                self.stream_session(stream, conn, server, Bytes::new()).await
            }
            _ => tracing::debug!(target: "kong", "TLS handshake with {peer} failed"),
        }
    }

    /// One session: routing and `preread`, the upstream, the bytes (`first` goes upstream
    /// before the client's next ones: a passed-through ClientHello), then `log`.
    async fn stream_session<C>(&self, mut client: C, conn: ClientConn, server: SocketAddr, first: Bytes)
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let snap = self.snapshot();
        let peer = (conn.ip, conn.port);
        let node = snap.plugins.plugins().node_arc();
        let mut tx = Box::new(Transaction::stream(conn, server.port(), node));
        tx.set_data(snap.data.clone());
        let sni = tx.client.sni.clone();
        let info = StreamInfo {
            source: peer,
            destination: (server.ip(), server.port()),
            sni: sni.as_deref(),
        };
        runloop::preread(&snap.plugins, &snap.router, &mut tx, &info).await;
        let preread_done = std::time::Instant::now();
        match tx.exit().map(|e| (e.status, e.body.clone())) {
            Some((status, body)) => {
                // Kong writes the body of an answer under 400, then ends the session; errors
                // end it without one.
                if status < 400 && !body.is_empty() {
                    let written = tokio::time::timeout(Duration::from_secs(60), client.write_all(&body)).await;
                    if matches!(written, Ok(Ok(()))) {
                        tx.session.sent = body.len() as u64;
                    }
                } else {
                    let message = String::from_utf8_lossy(&body).into_owned();
                    crate::pdk::log::record(
                        &mut tx,
                        crate::pdk::Level::Err,
                        format!("unable to proxy stream connection, status: {status}, err: {message}"),
                    );
                }
                let _ = client.shutdown().await;
                tx.session.status = status;
            }
            None => {
                tx.latencies.kong = Some(preread_done.duration_since(tx.started).as_millis() as u64);
                let idle = Duration::from_millis(tx.upstream.timeouts.read.max(1));
                let write = Duration::from_millis(tx.upstream.timeouts.write.max(1));
                let relayed = match connect_upstream(&snap, &tx).await {
                    Some(Upstream::Plain(mut up)) => match up.write_all(&first).await {
                        Ok(()) => Some(relay(client, up, idle, write).await),
                        Err(_) => None,
                    },
                    Some(Upstream::Tls(mut up)) => match up.write_all(&first).await {
                        Ok(()) => Some(relay(client, *up, idle, write).await),
                        Err(_) => None,
                    },
                    None => {
                        let _ = client.shutdown().await;
                        None
                    }
                };
                match relayed {
                    Some((from_client, from_upstream)) => {
                        tx.session.received = from_client;
                        tx.session.upstream_sent = from_client + first.len() as u64;
                        tx.session.upstream_received = from_upstream;
                        tx.session.sent = from_upstream;
                        tx.session.status = 200;
                    }
                    None => tx.session.status = 502,
                }
            }
        }
        runloop::log(&snap.plugins, &mut tx).await;
    }
}

/// The client side of a stream session.
fn client_conn(peer: SocketAddr, server: SocketAddr, sni: Option<String>) -> ClientConn {
    ClientConn {
        ip: peer.ip(),
        port: peer.port(),
        forwarded_ip: peer.ip(),
        forwarded_port: peer.port(),
        tls: false,
        sni,
        session: None,
        server_ip: server.ip(),
        serial: super::SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
        requests: 1,
    }
}

/// The most a ClientHello may take (records of 16 KiB, and a little): a client that sends
/// more before its hello is complete is not a TLS client.
const HELLO_MAX: usize = 64 * 1024;

/// Reads the client's ClientHello, keeping every byte read: the bytes and the server name
/// (lower case); `None` for what is not a TLS ClientHello.
async fn client_hello(tcp: &mut TcpStream) -> Option<(Bytes, Option<String>)> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut kept = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.ok().filter(|n| *n > 0)?;
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > HELLO_MAX {
            return None;
        }
        let mut fresh = &buf[..n];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh).ok()? == 0 {
                return None;
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_ascii_lowercase);
                return Some((Bytes::from(kept), sni));
            }
            Ok(None) => {}
            Err(_) => return None,
        }
    }
}

/// A stream that yields `prefix` before what `inner` reads (the ClientHello read ahead).
struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            let chunk = self.prefix.split_to(n);
            out.put_slice(&chunk);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The upstream connection of a stream session.
enum Upstream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to the service's upstream: the balancer's targets in turn, up to `retries` more
/// times, each within `connect_timeout`.
async fn connect_upstream(snap: &super::Snapshot, tx: &Transaction) -> Option<Upstream> {
    let up = &tx.upstream;
    // A `tls` service: TLS to the upstream, verified and with a client certificate as its
    // settings say; the name sent is the client's with `preserve_host`, else the host's.
    let tls = (up.scheme == "https").then(|| {
        let preserve = tx.route.as_ref().is_some_and(|r| r.preserve_host);
        let name = match (&tx.client.sni, preserve) {
            (Some(sni), true) => sni.clone(),
            _ => up.host.clone(),
        };
        (snap.upstream_tls.get(tx.service.as_ref().map(|s| s.id)).clone(), name)
    });
    let balancer = snap.upstreams.get(&up.host);
    let timeout = Duration::from_millis(up.timeouts.connect.max(1));
    for attempt in 0..=up.retries {
        let (host, port) = match balancer {
            Some(b) => b.pick(attempt)?,
            None => (up.host.as_str(), up.port),
        };
        let open = async {
            for addr in tokio::net::lookup_host((host, port)).await.ok()? {
                if let Ok(tcp) = TcpStream::connect(addr).await {
                    return Some(tcp);
                }
            }
            None
        };
        match tokio::time::timeout(timeout, open).await {
            Ok(Some(tcp)) => {
                let _ = tcp.set_nodelay(true);
                let Some((config, name)) = &tls else {
                    return Some(Upstream::Plain(tcp));
                };
                let server_name = rustls::pki_types::ServerName::try_from(name.clone()).ok()?;
                let handshake = tokio_rustls::TlsConnector::from(config.clone()).connect(server_name, tcp);
                match tokio::time::timeout(timeout, handshake).await {
                    Ok(Ok(stream)) => return Some(Upstream::Tls(Box::new(stream))),
                    Ok(Err(e)) => {
                        tracing::error!(target: "kong", "TLS handshake with {host}:{port} failed (stream): {e}");
                        return None;
                    }
                    Err(_) => {
                        tracing::error!(target: "kong", "upstream timed out during the TLS handshake with {host}:{port} (stream)")
                    }
                }
            }
            Ok(None) => tracing::error!(target: "kong", "connect() to {host}:{port} failed (stream)"),
            Err(_) => tracing::error!(target: "kong", "upstream timed out while connecting to {host}:{port} (stream)"),
        }
    }
    None
}

/// Copies both ways until each side has ended its direction (or gone quiet for `idle`, nginx's
/// `proxy_timeout`, or refused a write for `write`). Returns the bytes from the client and
/// from the upstream.
async fn relay<C, U>(client: C, upstream: U, idle: Duration, write: Duration) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let activity = Activity::default();
    tokio::join!(
        pump(client_read, upstream_write, idle, write, &activity),
        pump(upstream_read, client_write, idle, write, &activity)
    )
}

/// When either direction last moved bytes: the session is idle only when both are.
#[derive(Default)]
struct Activity {
    start: std::sync::OnceLock<std::time::Instant>,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.start.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(std::sync::atomic::Ordering::Relaxed)),
        )
    }
}

/// One direction: reads of at most [`CHUNK`] bytes, each written before the next read (so a
/// slow reader holds back the sender); the end of the input ends the output.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    idle: Duration,
    write: Duration,
    activity: &Activity,
) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    activity.touch();
    loop {
        let n = match tokio::time::timeout(idle, from.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => break,
            // Quiet here, but the other direction moved: wait on.
            Err(_) if activity.idle_for() < idle => continue,
            Err(_) => break,
        };
        activity.touch();
        match tokio::time::timeout(write, to.write_all(&buf[..n])).await {
            Ok(Ok(())) => total += n as u64,
            _ => break,
        }
        activity.touch();
    }
    let _ = to.shutdown().await;
    total
}
