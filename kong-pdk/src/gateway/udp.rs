//! UDP streams (a `stream_listen` entry with `udp`): datagrams with the same source make one
//! session, routed and run through `preread` on the first, forwarded to the service's upstream
//! from a socket of their own, the answers sent back to the source, until neither side has
//! sent anything for the service's `read_timeout`; then `log` runs once (Kong's UDP sessions).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::Proxy;
use crate::router::StreamInfo;
use crate::runloop;
use crate::transaction::Transaction;

/// The largest datagram read.
const DATAGRAM_MAX: usize = 64 * 1024;
/// Sessions one listener keeps at most; datagrams from new sources beyond are dropped.
pub(crate) const SESSIONS_MAX: usize = 10_000;
/// Datagrams waiting for a session's upstream socket at most; more are dropped, as the
/// network would.
const QUEUED_MAX: usize = 256;
/// Bytes waiting in all of a socket's sessions at most (spoofed sources cannot make the
/// queues hold more); datagrams beyond are dropped.
const QUEUED_BYTES_MAX: usize = 64 * 1024 * 1024;

type Sessions = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>;

impl Proxy {
    /// Serves UDP sessions on `socket` until `shutdown`.
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket, shutdown: impl Future<Output = ()>) {
        let socket = Arc::new(socket);
        let Ok(mut server) = socket.local_addr() else { return };
        server.set_port(self.mapped_port(server.port()));
        let sessions: Sessions = Arc::default();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tasks = tokio::task::JoinSet::new();
        let mut buf = vec![0u8; DATAGRAM_MAX];
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                got = socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = got else { continue };
                    if queued.load(Relaxed) + n > QUEUED_BYTES_MAX {
                        continue;
                    }
                    let datagram = Bytes::copy_from_slice(&buf[..n]);
                    let mut map = sessions.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(session) = map.get(&source) {
                        // A full queue or an ended session: the datagram is lost, as on the network.
                        if session.try_send(datagram).is_ok() {
                            queued.fetch_add(n, Relaxed);
                        }
                        continue;
                    }
                    if map.len() >= SESSIONS_MAX {
                        tracing::warn!(target: "kong", "UDP session limit ({SESSIONS_MAX}) reached: datagram from {source} dropped");
                        continue;
                    }
                    let (sender, queue) = mpsc::channel(QUEUED_MAX);
                    if sender.try_send(datagram).is_ok() {
                        queued.fetch_add(n, Relaxed);
                    }
                    map.insert(source, sender);
                    drop(map);
                    let (proxy, socket, sessions, queued) = (self.clone(), socket.clone(), sessions.clone(), queued.clone());
                    tasks.spawn(async move {
                        proxy.udp_session(socket, source, server, queue, &queued).await;
                        sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&source);
                    });
                }
            }
        }
        tasks.abort_all();
    }

    async fn udp_session(
        &self,
        listener: Arc<UdpSocket>,
        source: SocketAddr,
        server: SocketAddr,
        mut queue: mpsc::Receiver<Bytes>,
        queued: &AtomicUsize,
    ) {
        // What is left in the queue when the session ends no longer counts.
        struct Drain<'a>(&'a mut mpsc::Receiver<Bytes>, &'a AtomicUsize);
        impl Drop for Drain<'_> {
            fn drop(&mut self) {
                self.0.close();
                while let Ok(d) = self.0.try_recv() {
                    self.1.fetch_sub(d.len(), Relaxed);
                }
            }
        }
        let drain = Drain(&mut queue, queued);
        let queue = &mut *drain.0;
        let snap = self.snapshot();
        let conn = super::stream::client_conn(source, source, server, None);
        let node = snap.plugins.plugins().node_arc();
        let mut tx = Box::new(Transaction::stream(conn, server.port(), node));
        tx.request.scheme = "udp";
        tx.set_data(snap.data.clone());
        let info = StreamInfo {
            source: (source.ip(), source.port()),
            destination: (server.ip(), server.port()),
            sni: None,
            tls: false,
        };
        runloop::preread(&snap.plugins, &snap.router, &mut tx, &info).await;
        if let Some((status, body)) = tx.exit().map(|e| (e.status, e.body.clone())) {
            if status < 400 && !body.is_empty() && listener.send_to(&body, source).await.is_ok() {
                tx.session.sent = body.len() as u64;
            }
            tx.session.status = status;
            runloop::log(&snap.plugins, &mut tx).await;
            return;
        }
        let idle = Duration::from_millis(tx.upstream.timeouts.read.max(1));
        match udp_upstream(&snap, &tx).await {
            Some(upstream) => {
                let c = &mut tx.session;
                let mut buf = vec![0u8; DATAGRAM_MAX];
                loop {
                    tokio::select! {
                        datagram = queue.recv() => {
                            let Some(datagram) = datagram else { break };
                            queued.fetch_sub(datagram.len(), Relaxed);
                            c.received += datagram.len() as u64;
                            if upstream.send(&datagram).await.is_ok() {
                                c.upstream_sent += datagram.len() as u64;
                            }
                        }
                        answer = upstream.recv(&mut buf) => {
                            let Ok(n) = answer else { break };
                            c.upstream_received += n as u64;
                            if listener.send_to(&buf[..n], source).await.is_ok() {
                                c.sent += n as u64;
                            }
                        }
                        () = tokio::time::sleep(idle) => break,
                    }
                }
                c.status = 200;
            }
            None => tx.session.status = 502,
        }
        runloop::log(&snap.plugins, &mut tx).await;
    }
}

/// A UDP socket of the session's own, connected to the service's upstream (the balancer's
/// target, else its host and port).
async fn udp_upstream(snap: &super::Snapshot, tx: &Transaction) -> Option<UdpSocket> {
    let up = &tx.upstream;
    let current = snap.upstreams.get(&up.host);
    let (host, port) = match current.as_ref() {
        Some(b) => {
            let (input, _) = super::balancer::hash_input(&b.upstream, tx);
            let a = b.address(b.pick(&mut super::PickState::new(input.as_deref(), b))?);
            (a.host.as_str(), a.port)
        }
        None => (up.host.as_str(), up.port),
    };
    let target = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.ok()?;
    socket.connect(target).await.ok()?;
    Some(socket)
}
