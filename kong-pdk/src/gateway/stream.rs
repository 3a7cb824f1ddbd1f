//! Stream proxying (Kong's `stream_listen`, `nginx_kong_stream.lua`): TCP connections are
//! routed by source, destination and server name, run `preread` and go to the service's
//! upstream with its retries and timeouts; the bytes flow both ways with backpressure until
//! either side is done, then `log` runs once with the session's stream shape.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
                        proxy.stream_session(tcp, peer, server).await;
                    });
                }
            }
        }
        sessions.abort_all();
    }

    /// One TCP session: routing and `preread`, the upstream, the bytes, then `log`.
    async fn stream_session(&self, mut client: TcpStream, peer: SocketAddr, server: SocketAddr) {
        let snap = self.snapshot();
        let conn = ClientConn {
            ip: peer.ip(),
            port: peer.port(),
            forwarded_ip: peer.ip(),
            forwarded_port: peer.port(),
            tls: false,
            sni: None,
            session: None,
            server_ip: server.ip(),
            serial: super::SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            requests: 1,
        };
        let node = snap.plugins.plugins().node_arc();
        let mut tx = Box::new(Transaction::stream(conn, server.port(), node));
        tx.set_data(snap.data.clone());
        let info = StreamInfo {
            source: (peer.ip(), peer.port()),
            destination: (server.ip(), server.port()),
            sni: None,
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
                match connect_upstream(&snap, &tx).await {
                    Some(upstream) => {
                        let idle = Duration::from_millis(tx.upstream.timeouts.read.max(1));
                        let write = Duration::from_millis(tx.upstream.timeouts.write.max(1));
                        let (from_client, from_upstream) = relay(client, upstream, idle, write).await;
                        tx.session.received = from_client;
                        tx.session.upstream_sent = from_client;
                        tx.session.upstream_received = from_upstream;
                        tx.session.sent = from_upstream;
                        tx.session.status = 200;
                    }
                    None => {
                        let _ = client.shutdown().await;
                        tx.session.status = 502;
                    }
                }
            }
        }
        runloop::log(&snap.plugins, &mut tx).await;
    }
}

/// Connects to the service's upstream: the balancer's targets in turn, up to `retries` more
/// times, each within `connect_timeout`.
async fn connect_upstream(snap: &super::Snapshot, tx: &Transaction) -> Option<TcpStream> {
    let up = &tx.upstream;
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
                return Some(tcp);
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
async fn relay(client: TcpStream, upstream: TcpStream, idle: Duration, write: Duration) -> (u64, u64) {
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
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
