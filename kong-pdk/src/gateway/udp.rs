//! UDP streams (a `stream_listen` entry with `udp`): datagrams with the same source make one
//! session, routed and run through `preread` on the first, forwarded to the service's upstream
//! from a socket of their own, the answers sent back to the source, until neither side has
//! sent anything for the service's `read_timeout`; then `log` runs once (Kong's UDP sessions).
//!
//! A socket bound to a wildcard address (`0.0.0.0`, `[::]`) learns each datagram's destination
//! from the kernel (`IP_PKTINFO`, Linux): routes match on it, sessions are per source and
//! destination, and answers leave from the address the client sent to, as nginx's do.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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

/// Sessions by source and the local address the datagrams reached.
type Sessions = Arc<Mutex<HashMap<(SocketAddr, IpAddr), mpsc::Sender<Bytes>>>>;

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
        // On a wildcard address, each datagram says where it went, and answers leave from there.
        let wildcard = server.ip().is_unspecified() && destination::watch(&socket).is_ok();
        let mut buf = vec![0u8; DATAGRAM_MAX];
        let mut control = destination::Control::default();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                got = receive(&socket, &mut buf, wildcard.then_some(&mut control)) => {
                    let Ok((n, source, to)) = got else { continue };
                    if queued.load(Relaxed) + n > QUEUED_BYTES_MAX {
                        continue;
                    }
                    let local = to.unwrap_or(server.ip());
                    let datagram = Bytes::copy_from_slice(&buf[..n]);
                    let mut map = sessions.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(session) = map.get(&(source, local)) {
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
                    map.insert((source, local), sender);
                    drop(map);
                    let (proxy, socket, sessions, queued) = (self.clone(), socket.clone(), sessions.clone(), queued.clone());
                    let listener = Listener { socket, server: SocketAddr::new(local, server.port()), reply_from: to };
                    tasks.spawn(async move {
                        proxy.udp_session(&listener, source, queue, &queued).await;
                        sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&(source, local));
                    });
                }
            }
        }
        tasks.abort_all();
    }

    async fn udp_session(
        &self,
        listener: &Listener,
        source: SocketAddr,
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
        let server = listener.server;
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
            if status < 400 && !body.is_empty() && listener.answer(&body, source).await.is_ok() {
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
                            if listener.answer(&buf[..n], source).await.is_ok() {
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

/// The listening socket as one session sees it.
struct Listener {
    socket: Arc<UdpSocket>,
    /// The address the session's datagrams reached (the port as `port_maps` maps it).
    server: SocketAddr,
    /// On a wildcard socket, the address answers leave from: the one the client sent to.
    reply_from: Option<IpAddr>,
}

impl Listener {
    /// Sends `datagram` back to the session's client.
    async fn answer(&self, datagram: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        match self.reply_from {
            Some(from) => destination::send(&self.socket, datagram, to, from).await,
            None => self.socket.send_to(datagram, to).await,
        }
    }
}

/// The next datagram: its length, its source, and with `control` (a wildcard socket whose
/// destinations are watched) the address it was sent to.
async fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    control: Option<&mut destination::Control>,
) -> std::io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    match control {
        Some(control) => destination::receive(socket, buf, control).await,
        None => socket.recv_from(buf).await.map(|(n, source)| (n, source, None)),
    }
}

/// A datagram's destination on a wildcard socket: `IP_PKTINFO` / `IPV6_PKTINFO` on the way in,
/// the same as the source address on the way out.
#[cfg(target_os = "linux")]
mod destination {
    use std::io;
    use std::net::{IpAddr, SocketAddr};

    use nix::libc;
    use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, sockopt};
    use std::io::{IoSlice, IoSliceMut};
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    /// Room for one packet-info control message, reused from datagram to datagram.
    pub(super) struct Control(Vec<u8>);

    impl Default for Control {
        fn default() -> Self {
            Control(nix::cmsg_space!(libc::in6_pktinfo))
        }
    }

    /// Asks the kernel to say where each datagram was sent.
    pub(super) fn watch(socket: &UdpSocket) -> io::Result<()> {
        match socket.local_addr()? {
            SocketAddr::V4(_) => socket::setsockopt(socket, sockopt::Ipv4PacketInfo, &true)?,
            SocketAddr::V6(_) => socket::setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?,
        }
        Ok(())
    }

    pub(super) async fn receive(
        socket: &UdpSocket,
        buf: &mut [u8],
        control: &mut Control,
    ) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        socket
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(buf)];
                let msg = socket::recvmsg::<SockaddrStorage>(
                    socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut control.0),
                    MsgFlags::empty(),
                )?;
                let source = msg
                    .address
                    .as_ref()
                    .and_then(|a| match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                        (Some(v4), _) => Some(SocketAddr::from(*v4)),
                        (_, Some(v6)) => Some(SocketAddr::from(*v6)),
                        _ => None,
                    })
                    .ok_or_else(|| io::Error::other("a datagram without a source address"))?;
                let to = msg.cmsgs()?.find_map(|c| match c {
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        Some(IpAddr::from(u32::from_be(info.ipi_addr.s_addr).to_be_bytes()))
                    }
                    ControlMessageOwned::Ipv6PacketInfo(info) => Some(IpAddr::from(info.ipi6_addr.s6_addr)),
                    _ => None,
                });
                Ok((msg.bytes, source, to))
            })
            .await
    }

    /// Sends `datagram` to `to` from the local address `from`.
    pub(super) async fn send(socket: &UdpSocket, datagram: &[u8], to: SocketAddr, from: IpAddr) -> io::Result<usize> {
        let to = SockaddrStorage::from(to);
        let (v4, v6);
        let info = match from {
            IpAddr::V4(ip) => {
                v4 = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                ControlMessage::Ipv4PacketInfo(&v4)
            }
            IpAddr::V6(ip) => {
                v6 = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr { s6_addr: ip.octets() },
                    ipi6_ifindex: 0,
                };
                ControlMessage::Ipv6PacketInfo(&v6)
            }
        };
        socket
            .async_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(datagram)];
                Ok(socket::sendmsg(
                    socket.as_raw_fd(),
                    &iov,
                    &[info],
                    MsgFlags::empty(),
                    Some(&to),
                )?)
            })
            .await
    }
}

/// Elsewhere than Linux a wildcard socket does not learn destinations: datagrams count as
/// sent to the bound address, and answers leave from the address the system picks.
#[cfg(not(target_os = "linux"))]
mod destination {
    use std::io;
    use std::net::{IpAddr, SocketAddr};

    use tokio::net::UdpSocket;

    #[derive(Default)]
    pub(super) struct Control;

    pub(super) fn watch(_: &UdpSocket) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(super) async fn receive(
        _: &UdpSocket,
        _: &mut [u8],
        _: &mut Control,
    ) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(super) async fn send(socket: &UdpSocket, datagram: &[u8], to: SocketAddr, _: IpAddr) -> io::Result<usize> {
        socket.send_to(datagram, to).await
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::net::UdpSocket;

    use super::super::tests::snapshot;
    use crate::entities::{CidrPort, Route, Service};
    use crate::gateway::{HeaderSettings, Proxy};
    use crate::pdk::NodeInfo;
    use crate::registry::Plugins;

    /// A UDP echo that prefixes its answers with `tag`.
    async fn echo(tag: &'static [u8]) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&[tag, &buf[..n]].concat(), from).await;
            }
        });
        addr
    }

    /// A udp route to the echo at `up` for datagrams sent to `destination`.
    fn udp_route(destination: &str, up: SocketAddr) -> (Arc<Route>, Option<Arc<Service>>) {
        let mut service = Service::new("127.0.0.1", up.port());
        service.protocol = "udp".into();
        let mut route = Route::new(&[]);
        route.paths = None;
        route.protocols = vec!["udp".into()];
        route.destinations = Some(vec![CidrPort {
            ip: Some(destination.into()),
            port: None,
        }]);
        (Arc::new(route), Some(Arc::new(service)))
    }

    #[tokio::test]
    async fn a_wildcard_socket_routes_by_the_address_each_datagram_reached_and_answers_from_it() {
        let (one, two) = (echo(b"one:").await, echo(b"two:").await);
        let plugins = Arc::new(Plugins::builder(NodeInfo::default()).build());
        let snap = snapshot(
            &plugins,
            vec![udp_route("127.0.0.1", one), udp_route("127.0.0.2", two)],
            vec![],
        )
        .await;
        let proxy = Arc::new(Proxy::new(snap, HeaderSettings::default()));
        let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        tokio::spawn(proxy.serve_udp(socket, std::future::pending()));
        // One client sends to both addresses: two sessions, each routed by its destination. A
        // connected socket takes answers only from the address it sent to.
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for (to, expected) in [
            ("127.0.0.2", &b"two:x"[..]),
            ("127.0.0.1", b"one:x"),
            ("127.0.0.2", b"two:x"),
        ] {
            client.connect((to, port)).await.unwrap();
            client.send(b"x").await.unwrap();
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("an answer from {to}"))
                .unwrap();
            assert_eq!(&buf[..n], expected, "sent to {to}");
        }
    }
}
