//! Stream proxying (Kong's `stream_listen`, `nginx_kong_stream.lua`): TCP connections are
//! routed by source, destination and server name, run `preread` and go to the service's
//! upstream with its retries and timeouts; the bytes flow both ways with backpressure until
//! either side is done, then `log` runs once with the session's stream shape.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Proxy;
use crate::router::StreamInfo;
use crate::runloop;
use crate::transaction::{ClientConn, Transaction};

/// The bytes read from one side before they are written to the other: what a session holds
/// per direction (nginx's `proxy_buffer_size`).
const CHUNK: usize = 16 * 1024;
/// What a direction's buffer grows to once a read has filled it: a bulk transfer then takes
/// a quarter of the system calls, while quiet sessions keep [`CHUNK`].
const CHUNK_BULK: usize = 64 * 1024;

impl Proxy {
    /// Serves stream (TCP) connections on `listener` until `shutdown` (Kong's
    /// `stream_listen`). Sessions in progress end with shutdown.
    pub async fn serve_stream(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.serve_stream_with(listener, StreamListen::default(), shutdown)
            .await
    }

    /// Serves TLS streams on `listener` (a `stream_listen` entry with `ssl`): the server name
    /// in the ClientHello routes the connection, whose route's protocols say whether the
    /// gateway terminates TLS (`tls`: the certificate phase, then plaintext to `preread` and
    /// the upstream) or passes the client's TLS bytes through (`tls_passthrough`).
    ///
    /// # Panics
    /// Without [`Proxy::with_default_certificate`].
    pub async fn serve_stream_tls(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let options = StreamListen {
            ssl: true,
            ..StreamListen::default()
        };
        self.serve_stream_with(listener, options, shutdown).await
    }

    /// Serves streams on `listener` as a `stream_listen` entry with `options` says.
    ///
    /// # Panics
    /// With `ssl` and without [`Proxy::with_default_certificate`].
    pub async fn serve_stream_with(
        self: Arc<Self>,
        listener: TcpListener,
        options: StreamListen,
        shutdown: impl Future<Output = ()>,
    ) {
        assert!(
            !options.ssl || self.tls.is_some(),
            "an ssl stream listener needs Proxy::with_default_certificate"
        );
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
                    // The listener's own address when it has a specific one (no getsockname).
                    let mut server = match local {
                        Some(l) if !l.ip().is_unspecified() => l,
                        _ => tcp.local_addr().ok().or(local).unwrap_or(peer),
                    };
                    server.set_port(self.mapped_port(server.port()));
                    let open = stats.open_connection();
                    let proxy = self.clone();
                    sessions.spawn(async move {
                        let _open = open;
                        let mut tcp = tcp;
                        let mut client = peer;
                        if options.proxy_protocol {
                            // Required on such a listener; honoured only from trusted peers.
                            match tokio::time::timeout(proxy.client_header_timeout, proxy_header(&mut tcp)).await {
                                Ok(Ok(Some(real))) if proxy.trusts(peer.ip()) => client = real,
                                Ok(Ok(_)) => {}
                                _ => {
                                    tracing::error!(target: "kong", "broken header while reading PROXY protocol from {peer}");
                                    return;
                                }
                            }
                        }
                        if options.ssl {
                            proxy.tls_stream(tcp, peer, client, server).await;
                        } else {
                            let conn = client_conn(peer, client, server, None);
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
    async fn tls_stream(&self, mut tcp: TcpStream, peer: SocketAddr, client: SocketAddr, server: SocketAddr) {
        let Some(configs) = self.tls.as_ref() else { return };
        let Ok(Some((hello, sni))) = tokio::time::timeout(self.client_header_timeout, client_hello(&mut tcp)).await
        else {
            tracing::debug!(target: "kong", "no TLS ClientHello from {peer}");
            return;
        };
        let snap = self.snapshot();
        let info = StreamInfo {
            source: (client.ip(), client.port()),
            destination: (server.ip(), server.port()),
            sni: sni.as_deref(),
            tls: true,
        };
        let Some((route, _)) = snap.router.find_stream(&info) else {
            tracing::error!(target: "kong", "no Route found with those values");
            return;
        };
        let has = |p: &str| route.protocols.iter().any(|x| x == p);
        if has("tls_passthrough") {
            let conn = client_conn(peer, client, server, sni);
            return self.stream_session(tcp, conn, server, hello).await;
        }
        if !has("tls") {
            tracing::error!(target: "kong", "unexpected protocols in matched Route");
            return;
        }
        // Termination: the handshake reads the ClientHello again from what was kept.
        let mut conn = client_conn(peer, client, server, sni);
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
    async fn stream_session<C: Client>(&self, mut client: C, conn: ClientConn, server: SocketAddr, first: Bytes) {
        let snap = self.snapshot();
        let source = (conn.forwarded_ip, conn.forwarded_port);
        let node = snap.plugins.plugins().node_arc();
        let mut tx = Box::new(Transaction::stream(conn, server.port(), node));
        tx.set_data(snap.data.clone());
        let sni = tx.client.sni.clone();
        let client_tls = tx.client.tls;
        let info = StreamInfo {
            source,
            destination: (server.ip(), server.port()),
            sni: sni.as_deref(),
            // Terminated here, or passed through (the ClientHello went ahead as `first`).
            tls: client_tls || !first.is_empty(),
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
                let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
                tx.session.status = status;
            }
            None => {
                tx.latencies.kong = Some(preread_done.duration_since(tx.started).as_millis() as u64);
                let idle = Duration::from_millis(tx.upstream.timeouts.read.max(1));
                let write = Duration::from_millis(tx.upstream.timeouts.write.max(1));
                let mut pick = super::proxy::balance(&snap, &mut tx);
                let mut tries = Vec::new();
                let connected = connect_upstream(&snap, &tx, pick.as_mut(), &mut tries).await;
                tx.balancer_lease = pick.and_then(|p| p.into_lease());
                tx.tries = tries;
                let relayed = match connected {
                    Some(Upstream::Plain(mut up)) => match up.write_all(&first).await {
                        Ok(()) => Some(match client.plain() {
                            Some(tcp) => relay_tcp(tcp, &up, idle, write).await,
                            None => relay(client, up, (client_tls, false), idle, write).await,
                        }),
                        Err(_) => None,
                    },
                    Some(Upstream::Tls(mut up)) => match up.write_all(&first).await {
                        Ok(()) => Some(relay(client, *up, (client_tls, true), idle, write).await),
                        Err(_) => None,
                    },
                    None => {
                        let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
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

/// How a `stream_listen` entry serves (its flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamListen {
    /// `ssl`: TLS streams, terminated or passed through by route.
    pub ssl: bool,
    /// `proxy_protocol`: each connection starts with a PROXY protocol header (v1 or v2); its
    /// client address is the session's when the peer is in `trusted_ips`.
    pub proxy_protocol: bool,
    /// `udp`: datagrams, served by [`Proxy::serve_udp`] on a UDP socket.
    pub udp: bool,
    /// The socket's options (`reuseport`, `backlog=`, `ipv6only=`, `so_keepalive=`), applied
    /// by whoever binds the socket: [`SocketOptions::bind_tcp`](super::SocketOptions::bind_tcp)
    /// or [`SocketOptions::bind_udp`](super::SocketOptions::bind_udp).
    pub socket: super::SocketOptions,
}

impl Proxy {
    fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.snapshot().plugins.plugins().node().is_trusted(ip)
    }
}

/// The client side of a stream session: `peer` connected, on behalf of `client` (the PROXY
/// protocol's address from a trusted peer, else the peer).
pub(super) fn client_conn(peer: SocketAddr, client: SocketAddr, server: SocketAddr, sni: Option<String>) -> ClientConn {
    ClientConn {
        ip: peer.ip(),
        port: peer.port(),
        forwarded_ip: client.ip(),
        forwarded_port: client.port(),
        tls: false,
        sni,
        session: None,
        server_ip: server.ip(),
        serial: super::SERIAL.fetch_add(1, Relaxed) + 1,
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
async fn connect_upstream(
    snap: &super::Snapshot,
    tx: &Transaction,
    mut pick: Option<&mut super::balancer::PickState>,
    tries: &mut Vec<crate::transaction::BalancerTry>,
) -> Option<Upstream> {
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
    let current = snap.upstreams.get(&up.host).filter(|_| pick.is_some());
    let balancer = current.as_ref();
    let timeout = Duration::from_millis(up.timeouts.connect.max(1));
    for _ in 0..=up.retries {
        let start_ns = crate::tracer::now_ns();
        let (host, port, picked) = match (balancer, pick.as_deref_mut()) {
            (Some(b), Some(state)) => {
                let i = b.pick(state)?;
                state.start(b, i);
                let a = b.address(i);
                (a.host.as_str(), a.port, Some((b, i)))
            }
            _ => (up.host.as_str(), up.port, None),
        };
        let started = std::time::Instant::now();
        let picked_ns = crate::tracer::now_ns();
        let open = async {
            for addr in tokio::net::lookup_host((host, port)).await.ok()? {
                if let Ok(tcp) = TcpStream::connect(addr).await {
                    return Some(tcp);
                }
            }
            None
        };
        let opened = tokio::time::timeout(timeout, open).await;
        tries.push(crate::transaction::BalancerTry {
            start_ns,
            picked_ns,
            end_ns: crate::tracer::now_ns(),
            ip: picked.map(|_| host.to_owned()),
            port,
            failed: match &opened {
                Ok(Some(_)) => None,
                Ok(None) => Some(502),
                Err(_) => Some(504),
            },
        });
        if let Some((b, i)) = picked {
            b.record_connect(
                i,
                started.elapsed(),
                match &opened {
                    Ok(Some(_)) => None,
                    Ok(None) => Some(crate::health::Report::TcpFailure),
                    Err(_) => Some(crate::health::Report::Timeout),
                },
            );
        }
        match opened {
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

/// Copies both ways until each side has ended its direction, or until the session ends: both
/// directions quiet for `idle` (nginx's `proxy_timeout`), a write refused for `write`, or an
/// error either way. Returns the bytes from the client and from the upstream. `tls` says which
/// sides (client, upstream) speak TLS.
async fn relay<C, U>(client: C, upstream: U, tls: (bool, bool), idle: Duration, write: Duration) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let activity = Activity::default();
    let moved = [AtomicU64::new(0), AtomicU64::new(0)];
    both(
        pump(client_read, upstream_write, tls.1, idle, write, &activity, &moved[0]),
        pump(upstream_read, client_write, tls.0, idle, write, &activity, &moved[1]),
    )
    .await;
    (moved[0].load(Relaxed), moved[1].load(Relaxed))
}

/// What a read under the idle timeout came to.
enum Read {
    /// Bytes arrived.
    Bytes(usize),
    /// The input ended.
    End,
    /// Nothing arrived in time, but the other direction moved since: read again.
    Quiet,
    /// An error, or both directions quiet for the idle timeout: the session ends.
    Failed,
}

/// How one direction of a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Its input ended (and the end was passed on): the other direction goes on.
    Input,
    /// The session is over: an error, the idle timeout or the write timeout.
    Session,
}

/// Runs both directions until each has ended its input, or until one ends the session, which
/// stops the other at once.
async fn both(a: impl Future<Output = Ended>, b: impl Future<Output = Ended>) {
    tokio::pin!(a, b);
    let (mut a_done, mut b_done) = (false, false);
    while !(a_done && b_done) {
        let ended = tokio::select! {
            ended = &mut a, if !a_done => { a_done = true; ended }
            ended = &mut b, if !b_done => { b_done = true; ended }
        };
        if ended == Ended::Session {
            return;
        }
    }
}

/// The client side of a stream session: plain TCP, which [`relay_tcp`] relays without
/// splitting (and splices on Linux), or TLS terminated here.
trait Client: AsyncRead + AsyncWrite + Unpin + Send {
    /// The plain TCP connection, when the client is one.
    fn plain(&self) -> Option<&TcpStream>;
}

impl Client for TcpStream {
    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Client for tokio_rustls::server::TlsStream<Prefixed<TcpStream>> {
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

/// [`relay`] between two plain TCP connections, with the same rules. Both directions borrow
/// the sockets (no split halves to lock), and on Linux a direction that moves bulk data goes
/// through a pipe with splice(2): its bytes pass from socket to socket in the kernel.
async fn relay_tcp(client: &TcpStream, upstream: &TcpStream, idle: Duration, write: Duration) -> (u64, u64) {
    let activity = Activity::default();
    let moved = [AtomicU64::new(0), AtomicU64::new(0)];
    both(
        pump_tcp(client, upstream, idle, write, &activity, &moved[0]),
        pump_tcp(upstream, client, idle, write, &activity, &moved[1]),
    )
    .await;
    // The sockets are borrowed and outlive the relay (the session logs before it lets them
    // go): both ends are told now, the second end of input or a session cut short included.
    for tcp in [client, upstream] {
        let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Both);
    }
    (moved[0].load(Relaxed), moved[1].load(Relaxed))
}

/// [`pump`] between plain TCP sockets: reads into a buffer of [`CHUNK`] bytes until one fills
/// it, then (Linux) splices through a pipe, or (elsewhere, or when no pipe can be opened) reads
/// [`CHUNK_BULK`] bytes at a time.
async fn pump_tcp(
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
    write: Duration,
    activity: &Activity,
    moved: &AtomicU64,
) -> Ended {
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    #[cfg(target_os = "linux")]
    let mut pipe: Option<super::splice::Pipe> = None;
    activity.touch();
    loop {
        #[cfg(target_os = "linux")]
        if let Some(pipe) = pipe.as_mut() {
            let n = match activity.read(idle, pipe.fill(from)).await {
                Read::Bytes(n) => n,
                Read::End => break,
                Read::Quiet => continue,
                Read::Failed => return Ended::Session,
            };
            if pipe.drain(to, write, || activity.touch()).await.is_err() {
                return Ended::Session;
            }
            moved.fetch_add(n as u64, Relaxed);
            continue;
        }
        buf.clear();
        let n = match activity.read(idle, read_tcp(from, &mut buf)).await {
            Read::Bytes(n) => n,
            Read::End => break,
            Read::Quiet => continue,
            Read::Failed => return Ended::Session,
        };
        if write_tcp(to, &buf[..n], write, activity).await.is_err() {
            return Ended::Session;
        }
        moved.fetch_add(n as u64, Relaxed);
        if n == buf.capacity() && n < CHUNK_BULK {
            #[cfg(target_os = "linux")]
            if let Ok(opened) = super::splice::Pipe::new() {
                pipe = Some(opened);
                buf = Vec::new();
                continue;
            }
            buf.clear();
            buf.reserve_exact(CHUNK_BULK);
        }
    }
    // As in `pump`: the first input to end is passed on (half-close); `relay_tcp` shuts both
    // sockets down after the second.
    if !activity.one_done.swap(true, Relaxed) {
        let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
    }
    Ended::Input
}

/// One read from `from` into `buf`'s spare capacity, when it is readable.
async fn read_tcp(from: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        from.readable().await?;
        match from.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

/// All of `bytes` into `to`, waiting at most `wait` each time its send buffer is full (nginx's
/// timeout between two successive writes); each write that moves bytes is activity.
async fn write_tcp(to: &TcpStream, mut bytes: &[u8], wait: Duration, activity: &Activity) -> std::io::Result<()> {
    while !bytes.is_empty() {
        tokio::time::timeout(wait, to.writable())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        match to.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                activity.touch();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// When either direction last moved bytes: the session is idle only when both are.
#[derive(Default)]
struct Activity {
    start: std::sync::OnceLock<std::time::Instant>,
    last_ms: std::sync::atomic::AtomicU64,
    /// One direction has ended.
    one_done: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.start.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Relaxed);
    }

    /// A read, bounded by the idle timeout.
    async fn read(&self, idle: Duration, read: impl Future<Output = std::io::Result<usize>>) -> Read {
        match tokio::time::timeout(idle, read).await {
            Ok(Ok(0)) => Read::End,
            Ok(Ok(n)) => {
                self.touch();
                Read::Bytes(n)
            }
            Ok(Err(_)) => Read::Failed,
            // Quiet here, but the other direction moved: wait on.
            Err(_) if self.idle_for() < idle => Read::Quiet,
            Err(_) => Read::Failed,
        }
    }

    /// All of `bytes` into `to`, each write bounded by the write timeout (nginx's timeout
    /// between two successive writes) and counted as activity: whether all were written.
    async fn write(&self, write: Duration, to: &mut (impl AsyncWrite + Unpin), mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match tokio::time::timeout(write, to.write(bytes)).await {
                Ok(Ok(n)) if n > 0 => {
                    bytes = &bytes[n..];
                    self.touch();
                }
                _ => return false,
            }
        }
        true
    }

    fn idle_for(&self) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(self.last_ms.load(Relaxed)))
    }
}

/// One direction: reads of at most [`CHUNK`] bytes ([`CHUNK_BULK`] once one read filled the
/// buffer), each written before the next read (so a slow reader holds back the sender), the
/// bytes written counted in `moved`; the end of the input ends the output.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    to_tls: bool,
    idle: Duration,
    write: Duration,
    activity: &Activity,
    moved: &AtomicU64,
) -> Ended {
    // Capacity only: bytes are written as they arrive, so a session that moves little never
    // clears (or commits) its whole buffer.
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    activity.touch();
    loop {
        buf.clear();
        let n = match activity.read(idle, from.read_buf(&mut buf)).await {
            Read::Bytes(n) => n,
            Read::End => break,
            Read::Quiet => continue,
            Read::Failed => return Ended::Session,
        };
        if !activity.write(write, &mut to, &buf[..n]).await {
            return Ended::Session;
        }
        moved.fetch_add(n as u64, Relaxed);
        if n == buf.capacity() && n < CHUNK_BULK {
            buf.clear();
            buf.reserve_exact(CHUNK_BULK);
        }
    }
    // The first direction to end passes the end on (half-close); after the second, both
    // connections close at once, so a plain TCP side needs no shutdown (a TLS side still gets
    // its close_notify).
    if !activity.one_done.swap(true, Relaxed) || to_tls {
        // Bounded: a TLS side's close_notify goes to a peer that may not read any more.
        let _ = tokio::time::timeout(write, to.shutdown()).await;
    }
    Ended::Input
}

/// The PROXY protocol header's source address (v1 text or v2 binary, as HAProxy defines
/// them), read without reading past it; `Ok(None)` for `UNKNOWN`/`LOCAL` (the peer speaks for
/// itself), `Err` for anything that is not a PROXY header (nginx's "broken header": the
/// connection is closed).
pub(crate) async fn proxy_header<S: AsyncRead + Unpin>(io: &mut S) -> Result<Option<SocketAddr>, &'static str> {
    const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
    let mut start = [0u8; 6];
    io.read_exact(&mut start).await.map_err(|_| "broken header")?;
    if &start == b"PROXY " {
        // v1: at most 107 bytes in all, ending in CRLF.
        let mut line = Vec::with_capacity(64);
        loop {
            let mut b = [0u8; 1];
            io.read_exact(&mut b).await.map_err(|_| "broken header")?;
            line.push(b[0]);
            if line.ends_with(b"\r\n") {
                break;
            }
            if line.len() > 101 {
                return Err("broken header");
            }
        }
        let text = std::str::from_utf8(&line[..line.len() - 2]).map_err(|_| "broken header")?;
        let parts: Vec<&str> = text.split(' ').collect();
        return match parts.as_slice() {
            ["UNKNOWN", ..] => Ok(None),
            [family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
                let ip: std::net::IpAddr = src.parse().map_err(|_| "broken header")?;
                if ip.is_ipv4() != (*family == "TCP4") {
                    return Err("broken header");
                }
                let port: u16 = sport.parse().map_err(|_| "broken header")?;
                Ok(Some(SocketAddr::new(ip, port)))
            }
            _ => Err("broken header"),
        };
    }
    let mut rest = [0u8; 10];
    io.read_exact(&mut rest).await.map_err(|_| "broken header")?;
    let mut head = [0u8; 16];
    head[..6].copy_from_slice(&start);
    head[6..].copy_from_slice(&rest);
    if head[..12] != V2_SIGNATURE || head[12] >> 4 != 2 {
        return Err("broken header");
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > 1024 {
        return Err("broken header");
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await.map_err(|_| "broken header")?;
    if head[12] & 0x0f == 0 {
        return Ok(None); // LOCAL
    }
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match head[13] >> 4 {
        1 if len >= 12 => {
            let ip = std::net::Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Ok(Some(SocketAddr::new(ip.into(), port(8))))
        }
        2 if len >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            Ok(Some(SocketAddr::new(std::net::Ipv6Addr::from(octets).into(), port(32))))
        }
        0 => Ok(None),
        _ => Err("broken header"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::declarative::Config;
    use crate::gateway::{HeaderSettings, Snapshot};
    use crate::pdk::NodeInfo;
    use crate::registry::Plugins;

    /// A TCP echo server.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = tcp.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A proxy_protocol stream listener whose node trusts `trusted`, routing 192.0.2.0/24 to
    /// an echo server.
    async fn listener(trusted: &[&str]) -> SocketAddr {
        let node = NodeInfo {
            trusted_ips: NodeInfo::parse_trusted_ips(trusted).unwrap(),
            ..NodeInfo::default()
        };
        let plugins = Arc::new(Plugins::builder(node).build());
        let up = echo().await;
        let config = Config::from_value(serde_json::json!({
            "_format_version": "3.0",
            "services": [{
                "name": "echo", "url": format!("tcp://{up}"),
                "routes": [{ "protocols": ["tcp"], "sources": [{ "ip": "192.0.2.0/24" }] }],
            }],
        }))
        .unwrap();
        let snapshot: Snapshot = config.snapshot(&plugins).await.unwrap();
        let proxy = Arc::new(Proxy::new(snapshot, HeaderSettings::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = StreamListen {
            proxy_protocol: true,
            ..StreamListen::default()
        };
        tokio::spawn(proxy.serve_stream_with(listener, options, std::future::pending()));
        addr
    }

    async fn session(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
            .await
            .unwrap();
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn port_maps_make_the_listener_port_the_host_port() {
        let plugins = Arc::new(Plugins::builder(NodeInfo::default()).build());
        let up = echo().await;
        let config = Config::from_value(serde_json::json!({
            "_format_version": "3.0",
            "services": [{
                "name": "echo", "url": format!("tcp://{up}"),
                "routes": [{ "protocols": ["tcp"], "destinations": [{ "port": 19000 }] }],
            }],
        }))
        .unwrap();
        let snapshot: Snapshot = config.snapshot(&plugins).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let unmapped = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let unmapped_addr = unmapped.local_addr().unwrap();
        let proxy = Arc::new(Proxy::new(snapshot, HeaderSettings::default()).with_port_maps(&[(19000, addr.port())]));
        tokio::spawn(proxy.clone().serve_stream(listener, std::future::pending()));
        tokio::spawn(proxy.serve_stream(unmapped, std::future::pending()));
        assert_eq!(session(addr, b"mapped").await, b"mapped");
        assert_eq!(session(unmapped_addr, b"not").await, b"", "no route for the real port");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_proxy_protocol_address_routes_only_from_trusted_peers() {
        let header = b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 7000\r\nping";
        let trusted = listener(&["127.0.0.1"]).await;
        assert_eq!(session(trusted, header).await, b"ping", "routed by the header's source");
        assert_eq!(session(trusted, b"ping").await, b"", "a header is required");
        let untrusted = listener(&[]).await;
        assert_eq!(
            session(untrusted, header).await,
            b"",
            "the peer's own address: no route"
        );
    }

    /// Two connected sockets: (the test's end, the relay's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (far, _) = listener.accept().await.unwrap();
        (near, far)
    }

    /// Sends `bytes` and half-closes while reading everything the other side sends.
    async fn send_and_read_all(mut tcp: TcpStream, bytes: Vec<u8>) -> Vec<u8> {
        let (mut r, mut w) = tcp.split();
        let send = async {
            w.write_all(&bytes).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let (_, read) = tokio::join!(send, r.read_to_end(&mut got));
        read.unwrap();
        got
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| ((i + seed) % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_tcp_relays_chatty_then_bulk_bytes_both_ways_and_passes_half_closes_on() {
        let ten = Duration::from_secs(10);
        let (mut client, mut upstream, relay) = relay_kept_open(ten, ten).await;
        // Chatty first (a buffer of CHUNK), then more than a buffer at once (the bulk mode: a
        // pipe on Linux), then the client's half-close.
        client.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        upstream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        let up_bytes = pattern(2 * 1024 * 1024 + 3, 1);
        let down_bytes = pattern(3 * 1024 * 1024 + 5, 7);
        let (sent_up, sent_down) = (up_bytes.clone(), down_bytes.clone());
        let client_side = tokio::spawn(send_and_read_all(client, sent_up));
        let upstream_side = tokio::spawn(send_and_read_all(upstream, sent_down));
        let upstream_got = upstream_side.await.unwrap();
        let client_got = client_side.await.unwrap();
        assert!(upstream_got == up_bytes, "the client's bytes arrive whole and in order");
        assert!(
            client_got == down_bytes,
            "the upstream's bytes arrive whole and in order"
        );
        let (counted, _, _) = relay.await.unwrap();
        assert_eq!(counted, (5 + up_bytes.len() as u64, down_bytes.len() as u64));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_tcp_sessions_end_when_both_directions_are_quiet_for_the_read_timeout() {
        let (mut client, client_far) = pair().await;
        let (mut upstream, upstream_far) = pair().await;
        let idle = Duration::from_millis(300);
        let relay =
            tokio::spawn(async move { relay_tcp(&client_far, &upstream_far, idle, Duration::from_secs(10)).await });
        // A burst that fills a buffer (the client's direction splices from here on), then a
        // byte every 100 ms from the client only: the upstream's direction is quiet for
        // longer than the timeout, but the session is not.
        let burst = pattern(100 * 1024, 3);
        client.write_all(&burst).await.unwrap();
        let mut got = vec![0u8; burst.len()];
        upstream.read_exact(&mut got).await.unwrap();
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b".").await.unwrap();
            let mut one = [0u8; 1];
            upstream.read_exact(&mut one).await.unwrap();
            assert!(!relay.is_finished(), "one direction moving keeps the session");
        }
        // Now both are quiet: the session ends, and both peers see the end.
        let counted = tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .expect("the session ends after the timeout")
            .unwrap();
        assert_eq!(counted, (burst.len() as u64 + 8, 0));
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), upstream.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
    }

    /// `relay_tcp` in a task that keeps both sockets open after it returns, as a session does
    /// until its `log` phase is over: (the client's end, the upstream's end, the relay).
    async fn relay_kept_open(
        idle: Duration,
        write: Duration,
    ) -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<((u64, u64), TcpStream, TcpStream)>,
    ) {
        let (client, client_far) = pair().await;
        let (upstream, upstream_far) = pair().await;
        let relay = tokio::spawn(async move {
            let counted = relay_tcp(&client_far, &upstream_far, idle, write).await;
            (counted, client_far, upstream_far)
        });
        (client, upstream, relay)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_second_end_reaches_the_client_before_the_session_lets_its_sockets_go() {
        let ten = Duration::from_secs(10);
        let (mut client, mut upstream, relay) = relay_kept_open(ten, ten).await;
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(ten, upstream.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"ping", "the client's end passed on");
        // The upstream answers after the client's end, then ends too: the client sees both
        // while the relay's sockets are still open.
        upstream.write_all(b"pong").await.unwrap();
        upstream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("the client sees the end")
            .unwrap();
        assert_eq!(answer, b"pong");
        let (counted, _kept, _open) = relay.await.unwrap();
        assert_eq!(counted, (4, 4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        // Each write waits at most 1.5 s, and the session's read timeout is 1.5 s too. Small
        // socket buffers toward the upstream, which takes 8 KiB at a time (about every 170 ms
        // here): moving one pipe's worth takes seconds, with progress all along.
        let timeout = Duration::from_millis(1500);
        let (mut client, client_far) = pair().await;
        let (mut upstream, upstream_far) = pair().await;
        socket2::SockRef::from(&upstream_far)
            .set_send_buffer_size(4096)
            .unwrap();
        socket2::SockRef::from(&upstream).set_recv_buffer_size(4096).unwrap();
        let relay = tokio::spawn(async move {
            let counted = relay_tcp(&client_far, &upstream_far, timeout, timeout).await;
            (counted, client_far, upstream_far)
        });
        let data = pattern(192 * 1024, 5);
        client.write_all(&data).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 8 * 1024];
        while got.len() < data.len() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let n = tokio::time::timeout(Duration::from_secs(5), upstream.read(&mut chunk))
                .await
                .expect("bytes keep coming")
                .unwrap();
            assert!(n > 0, "the session was cut off after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got == data, "the bytes arrive whole and in order");
        let ((from_client, _), _, _) = relay.await.unwrap();
        assert_eq!(from_client, data.len() as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn urgent_data_does_not_stall_a_spliced_direction() {
        let ten = Duration::from_secs(10);
        let (mut client, mut upstream, _relay) = relay_kept_open(ten, ten).await;
        // Enough to fill the first buffer (the direction splices from here on), then an
        // urgent byte: like recv(2), the relay steps over it and goes on.
        let bulk = pattern(64 * 1024, 9);
        client.write_all(&bulk).await.unwrap();
        let mut got = vec![0u8; bulk.len()];
        tokio::time::timeout(ten, upstream.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        client.write_all(b"before").await.unwrap();
        socket2::SockRef::from(&client).send_out_of_band(b"!").unwrap();
        client.write_all(b"after").await.unwrap();
        let mut rest = vec![0u8; b"beforeafter".len()];
        tokio::time::timeout(Duration::from_secs(5), upstream.read_exact(&mut rest))
            .await
            .expect("the bytes behind the urgent one arrive")
            .unwrap();
        assert_eq!(rest, b"beforeafter");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_stops_reading_ends_the_session_after_the_write_timeout() {
        for generic in [false, true] {
            stalled_upstream(generic).await;
        }
    }

    /// The upstream reads nothing; `generic`: through [`relay`] (as TLS sessions), else
    /// [`relay_tcp`].
    async fn stalled_upstream(generic: bool) {
        let (client, client_far) = pair().await;
        let (_upstream, upstream_far) = pair().await;
        let (idle, write) = (Duration::from_secs(30), Duration::from_millis(300));
        let relay = tokio::spawn(async move {
            if generic {
                relay(client_far, upstream_far, (false, false), idle, write).await
            } else {
                relay_tcp(&client_far, &upstream_far, idle, write).await
            }
        });
        // The upstream reads nothing: once the socket buffers are full, the relay's write
        // waits, and gives up after the write timeout.
        let sender = tokio::spawn(async move {
            let mut client = client;
            let chunk = vec![7u8; 256 * 1024];
            let mut sent = 0u64;
            while sent < 256 * 1024 * 1024 {
                if client.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len() as u64;
            }
            sent
        });
        let (from_client, from_upstream) = tokio::time::timeout(Duration::from_secs(20), relay)
            .await
            .expect("the session ends after the write timeout")
            .unwrap();
        assert_eq!(from_upstream, 0, "generic: {generic}");
        assert!(from_client < 256 * 1024 * 1024, "what the upstream took: {from_client}");
        sender.abort();
    }

    async fn parse(bytes: &[u8]) -> (Result<Option<SocketAddr>, &'static str>, Vec<u8>) {
        let mut io = bytes;
        let got = proxy_header(&mut io).await;
        (got, io.to_vec())
    }

    #[tokio::test]
    async fn proxy_headers_v1_and_v2_are_read_without_reading_past_them() {
        let (got, rest) = parse(b"PROXY TCP4 192.0.2.1 198.51.100.1 5000 7000\r\npayload").await;
        assert_eq!(
            (got, rest.as_slice()),
            (Ok(Some("192.0.2.1:5000".parse().unwrap())), &b"payload"[..])
        );
        let (got, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 5000 7000\r\n").await;
        assert_eq!(got, Ok(Some("[2001:db8::1]:5000".parse().unwrap())));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").await.0, Ok(None));
        assert_eq!(
            parse(b"PROXY TCP4 2001:db8::1 1.1.1.1 1 2\r\n").await.0,
            Err("broken header")
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n").await.0, Err("broken header"));
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 9, 198, 51, 100, 1, 0x13, 0x88, 0x1b, 0x58]);
        v2.extend_from_slice(b"after");
        let (got, rest) = parse(&v2).await;
        assert_eq!(
            (got, rest.as_slice()),
            (Ok(Some("192.0.2.9:5000".parse().unwrap())), &b"after"[..])
        );
        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).await.0, Ok(None));
        let long = format!("PROXY TCP4 {} 1.1.1.1 1 2\r\n", "1".repeat(200));
        assert_eq!(parse(long.as_bytes()).await.0, Err("broken header"));
    }
}
