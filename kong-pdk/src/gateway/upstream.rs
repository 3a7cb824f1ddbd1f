//! The upstream side of the proxy: keep-alive HTTP/1.1 connections to targets, pooled per
//! target and driven by the request that uses them.
//!
//! A connection has no task of its own. The request that checks it out writes its request
//! and reads the response head on it ([`super::h1client`]), then hands it to the response
//! body ([`UpstreamBody`]), which reads the body from it and puts it back in the pool once the
//! body has ended. So a proxied request crosses no task boundary and no channel wake-up, as
//! an nginx worker's upstream connection does not. A connection is checked before reuse: one
//! poll notices an upstream that closed it while it was idle.
//!
//! WebSocket handshakes get a connection of their own, driven by a hyper task, so that a
//! `101` answer can turn it into a tunnel.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::body::ProxyBody;
use super::h1client::{Conn, Failure, Reading, RequestHead, Stream};

/// How long an idle connection is kept (nginx's `keepalive_timeout` for upstreams).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per target host.
const MAX_IDLE_PER_HOST: usize = 512;

/// Where a request goes: a target and how to speak to it.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    pub(super) host: &'a str,
    pub(super) port: u16,
    /// How to speak TLS to https targets; `None` is plain HTTP.
    pub(super) tls: Option<Tls<'a>>,
}

/// TLS towards a target: the client configuration and the server name sent and verified.
#[derive(Clone, Copy)]
pub(super) struct Tls<'a> {
    pub(super) config: &'a Arc<rustls::ClientConfig>,
    pub(super) server_name: &'a str,
}

/// A pooled connection's TLS: configuration (compared by identity) and server name.
type TlsKey = Option<(Arc<rustls::ClientConfig>, Box<str>)>;

/// Where a connection goes: its pool key (target host, port, TLS configuration and server
/// name), made once when the connection is opened.
pub(super) struct Home {
    host: Box<str>,
    port: u16,
    tls: TlsKey,
}

impl Home {
    pub(super) fn new(target: Target<'_>) -> Home {
        Home {
            host: target.host.into(),
            port: target.port,
            tls: target.tls.map(|t| (t.config.clone(), t.server_name.into())),
        }
    }

    /// Whether a connection to here serves `port` with `tls` (the host is the pool's key).
    fn serves(&self, port: u16, tls: Option<Tls<'_>>) -> bool {
        self.port == port
            && match (&self.tls, tls) {
                (None, None) => true,
                (Some((config, name)), Some(t)) => Arc::ptr_eq(config, t.config) && **name == *t.server_name,
                _ => false,
            }
    }
}

/// Why a request got no response.
pub(super) enum SendError<B> {
    /// No connection could be opened. The request's body was not sent and comes back.
    Connect(B),
    /// Opening the connection took longer than the connect timeout. The body comes back.
    ConnectTimeout(B),
    /// No response head within the read timeout.
    Timeout,
    /// A reused connection turned out closed after the request was (partly) written: a known
    /// body may be sent again on another connection.
    Stale,
    /// Anything else: an invalid response, a broken connection, a request that cannot be
    /// written.
    Invalid,
}

impl<B> SendError<B> {
    /// The same failure, with what comes back made into `C`.
    pub(super) fn map<C>(self, f: impl FnOnce(B) -> C) -> SendError<C> {
        match self {
            SendError::Connect(b) => SendError::Connect(f(b)),
            SendError::ConnectTimeout(b) => SendError::ConnectTimeout(f(b)),
            SendError::Timeout => SendError::Timeout,
            SendError::Stale => SendError::Stale,
            SendError::Invalid => SendError::Invalid,
        }
    }
}

impl<B> std::fmt::Debug for SendError<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::Connect(_) => "Connect",
            SendError::ConnectTimeout(_) => "ConnectTimeout",
            SendError::Timeout => "Timeout",
            SendError::Stale => "Stale",
            SendError::Invalid => "Invalid",
        })
    }
}

/// An idle connection, and since when.
struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Idle keep-alive connections by target host, most recently used last.
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<HashMap<Box<str>, Vec<Idle>>>,
}

impl Pool {
    /// Sends `head` and `body` to `target` over a pooled connection or a new one, and waits
    /// for the response head as `wait` says.
    pub(super) async fn send(
        self: &Arc<Self>,
        target: Target<'_>,
        head: RequestHead<'_>,
        body: ProxyBody,
        connect_timeout: Duration,
        wait: &HeadWait,
    ) -> Result<Response<UpstreamBody>, SendError<ProxyBody>> {
        let (conn, reused) = match std::future::poll_fn(|cx| Poll::Ready(self.checkout(target, cx))).await {
            Some(conn) => (conn, true),
            None => match connect(target, connect_timeout).await {
                Ok(stream) => (Box::new(Conn::new(stream, Home::new(target))), false),
                Err(true) => return Err(SendError::ConnectTimeout(body)),
                Err(false) => return Err(SendError::Connect(body)),
            },
        };
        // nginx resends a request lost on a cached connection, unless it is a POST, PATCH or
        // LOCK of which something was sent already.
        let idempotent = !matches!(head.method.as_str(), "POST" | "PATCH" | "LOCK");
        let mut exchange = conn.exchange(head, body).map_err(|_| SendError::Invalid)?;
        match wait.run(std::future::poll_fn(|cx| exchange.poll_head(cx))).await {
            None => Err(SendError::Timeout),
            Some(Ok(head)) => {
                let reading = exchange.into_body(&head);
                let mut response = Response::new(UpstreamBody::lean(reading, self.clone(), wait.read));
                *response.status_mut() = head.status;
                *response.version_mut() = head.version;
                *response.headers_mut() = head.headers;
                Ok(response)
            }
            Some(Err(Failure::Closed)) if reused && (idempotent || !exchange.wrote()) => Err(SendError::Stale),
            Some(Err(_)) => Err(SendError::Invalid),
        }
    }

    /// Sends a WebSocket handshake over a new connection whose task keeps running after a
    /// `101`, so that `hyper::upgrade::on` can take the connection over.
    pub(super) async fn send_upgrade(
        target: Target<'_>,
        req: Request<ProxyBody>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, SendError<Request<ProxyBody>>> {
        let stream = match connect(target, connect_timeout).await {
            Ok(stream) => stream,
            Err(true) => return Err(SendError::ConnectTimeout(req)),
            Err(false) => return Err(SendError::Connect(req)),
        };
        let Ok((mut sender, conn)) = http1::Builder::new().handshake(TokioIo::new(stream)).await else {
            return Err(SendError::Connect(req));
        };
        tokio::spawn(conn.with_upgrades());
        match tokio::time::timeout(read_timeout, sender.send_request(req)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(resp)) => Ok(resp.map(|inner| UpstreamBody::hyper(inner, read_timeout))),
            Ok(Err(_)) => Err(SendError::Invalid),
        }
    }

    /// The most recently used idle connection to `target` that is still open and ready.
    fn checkout(&self, target: Target<'_>, cx: &mut Context<'_>) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(target.host)?;
        while let Some(at) = list.iter().rposition(|i| i.conn.home.serves(target.port, target.tls)) {
            let mut candidate = list.swap_remove(at).conn;
            if candidate.is_idle_open(cx) {
                return Some(candidate);
            }
        }
        None
    }

    fn checkin(&self, mut conn: Box<Conn>) {
        conn.idle();
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = match idle.get_mut(&*conn.home.host) {
            Some(list) => list,
            None => idle.entry(conn.home.host.clone()).or_default(),
        };
        // Oldest first: drop those idle too long, and the oldest when the list is full.
        let expired = list.iter().take_while(|i| now - i.since > IDLE_TIMEOUT).count();
        list.drain(..expired.max((list.len() + 1).saturating_sub(MAX_IDLE_PER_HOST)));
        list.push(Idle { conn, since: now });
    }

    /// Idle connections held, over all targets.
    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |m| m.values().map(Vec::len).sum())
    }
}

/// How long the answer's head is waited for: the service's `read_timeout`, and with a request
/// body its `write_timeout` between two writes of it (nginx's `proxy_send_timeout`), the
/// read timeout then counting from the moment it is all sent.
pub(super) struct HeadWait {
    pub(super) read: Duration,
    pub(super) paced: Option<(Arc<super::request_body::Pace>, Duration)>,
}

impl HeadWait {
    /// `head`'s output, or `None` when a timer ran out first.
    async fn run<F: Future>(&self, head: F) -> Option<F::Output> {
        let Some((pace, write)) = &self.paced else {
            return tokio::time::timeout(self.read, head).await.ok();
        };
        let mut head = std::pin::pin!(head);
        // While the body waits for the client, the upstream's timers wait too: look again later.
        let again = (*write).min(self.read);
        let mut sleep = std::pin::pin!(tokio::time::sleep(again));
        loop {
            tokio::select! {
                biased;
                out = &mut head => return Some(out),
                () = &mut sleep => {
                    let now = Instant::now();
                    let next = match pace.deadline(*write, self.read) {
                        Some(at) if at <= now => return None,
                        Some(at) => at,
                        None => now + again,
                    };
                    sleep.as_mut().reset(next.into());
                }
            }
        }
    }
}

/// Opens a connection to `target`: every resolved address in turn, within `timeout` in all.
/// `Err(true)` when the time ran out.
async fn connect(target: Target<'_>, timeout: Duration) -> Result<Stream, bool> {
    let open = async {
        let mut last = None;
        for addr in tokio::net::lookup_host((target.host, target.port))
            .await
            .map_err(|_| false)?
        {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    last = Some(tcp);
                    break;
                }
                Err(e) => tracing::debug!(target: "kong", "connect() to {addr} failed: {e}"),
            }
        }
        let tcp = last.ok_or(false)?;
        let _ = tcp.set_nodelay(true);
        let stream = match target.tls {
            None => Either::Left(tcp),
            Some(Tls { config, server_name }) => {
                let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|_| false)?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        tracing::error!(target: "kong", "TLS handshake with {}:{} failed: {e}", target.host, target.port);
                        false
                    })?;
                Either::Right(Box::new(tls))
            }
        };
        Ok(stream)
    };
    tokio::time::timeout(timeout, open).await.map_err(|_| true)?
}

/// The upstream's response body. It reads its connection while it is read and returns the
/// connection to the pool once it has ended.
pub struct UpstreamBody {
    inner: Inner,
    /// nginx's `proxy_read_timeout`: the longest wait between two reads of the body.
    idle: super::body::IdleTimer,
}

enum Inner {
    /// Read from a pooled connection; `None` once the connection is back or gone.
    Lean(Option<Reading>, Arc<Pool>),
    /// The body of a WebSocket handshake's answer, from hyper.
    Hyper(Incoming),
}

/// The upstream sent no part of its body for the service's read timeout.
#[derive(Debug)]
pub struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream's body stalled past the read timeout")
    }
}

impl std::error::Error for BodyTimeout {}

/// The upstream's body broke off or broke its framing.
#[derive(Debug)]
pub struct BodyBroken;

impl std::fmt::Display for BodyBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream's body ended early or is not validly framed")
    }
}

impl std::error::Error for BodyBroken {}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").finish_non_exhaustive()
    }
}

impl UpstreamBody {
    fn lean(reading: Reading, pool: Arc<Pool>, read_timeout: Duration) -> UpstreamBody {
        let mut body = UpstreamBody {
            inner: Inner::Lean(Some(reading), pool),
            idle: super::body::IdleTimer::new(read_timeout),
        };
        // A body without content (HEAD, 204, 304, `Content-Length: 0`) has ended already.
        body.release_if_done();
        body
    }

    fn hyper(inner: Incoming, read_timeout: Duration) -> UpstreamBody {
        UpstreamBody {
            inner: Inner::Hyper(inner),
            idle: super::body::IdleTimer::new(read_timeout),
        }
    }

    /// Once the body has ended, its connection goes back to the pool (when it may).
    fn release_if_done(&mut self) {
        if let Inner::Lean(reading, pool) = &mut self.inner
            && reading.as_ref().is_some_and(Reading::is_done)
            && let Some(conn) = reading.take().and_then(Reading::into_reusable)
        {
            pool.checkin(conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = super::body::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Hyper(incoming) => Pin::new(incoming)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| Box::new(e) as Self::Error))),
            Inner::Lean(None, _) => Poll::Ready(None),
            Inner::Lean(Some(reading), _) => reading
                .poll_data(cx)
                .map(|data| data.map(|r| r.map(Frame::data).map_err(|_| Box::new(BodyBroken) as Self::Error))),
        };
        match &polled {
            Poll::Pending => {
                if this.idle.expired(cx) {
                    // The connection is mid-body: it cannot be reused.
                    if let Inner::Lean(reading, _) = &mut this.inner {
                        *reading = None;
                    }
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                }
                return Poll::Pending;
            }
            Poll::Ready(Some(Err(_))) => {
                if let Inner::Lean(reading, _) = &mut this.inner {
                    *reading = None;
                }
            }
            Poll::Ready(_) => this.release_if_done(),
        }
        this.idle.read();
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper(incoming) => incoming.is_end_stream(),
            Inner::Lean(reading, _) => reading.as_ref().is_none_or(Reading::is_done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper(incoming) => incoming.size_hint(),
            Inner::Lean(None, _) => SizeHint::with_exact(0),
            Inner::Lean(Some(reading), _) => reading.remaining().map_or_else(SizeHint::new, SizeHint::with_exact),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::super::tests::{get, route, service_at, start};

    /// What the scripted upstream does with a request head.
    enum Answer {
        Respond(&'static str),
        /// Answer, then close the connection.
        RespondThenClose(&'static str),
        /// Close the connection without an answer.
        Close,
        /// Answer once the upstream has accepted two connections.
        RespondWhenTwoOpen(&'static str),
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    const OK_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
    const EMPTY: &str = "HTTP/1.1 204 No Content\r\n\r\n";

    type Script = fn(usize, usize, &str) -> Answer;

    struct Scripted {
        addr: SocketAddr,
        accepted: &'static AtomicUsize,
        /// Notified each time the upstream closes a connection.
        closed: &'static tokio::sync::Notify,
    }

    /// An upstream that answers request `n` of connection `c` with `script(c, n, head)`, and
    /// counts the connections it accepted.
    async fn scripted(script: Script) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let closed: &'static tokio::sync::Notify = Box::leak(Box::default());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let conn = accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    serve(&mut s, conn, script, accepted).await;
                    drop(s);
                    closed.notify_one();
                });
            }
        });
        Scripted { addr, accepted, closed }
    }

    async fn serve(s: &mut TcpStream, conn: usize, script: Script, accepted: &AtomicUsize) {
        let mut buf = Vec::new();
        for n in 0.. {
            let end = loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                let mut chunk = [0; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            };
            let head: Vec<u8> = buf.drain(..end).collect();
            match script(conn, n, &String::from_utf8_lossy(&head)) {
                Answer::Respond(text) => s.write_all(text.as_bytes()).await.unwrap(),
                Answer::RespondThenClose(text) => return s.write_all(text.as_bytes()).await.unwrap(),
                Answer::Close => return,
                Answer::RespondWhenTwoOpen(text) => {
                    let two = async {
                        while accepted.load(Ordering::SeqCst) < 2 {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    };
                    tokio::time::timeout(Duration::from_secs(5), two)
                        .await
                        .expect("a second connection");
                    s.write_all(text.as_bytes()).await.unwrap();
                }
            }
        }
    }

    /// A request on a connection of its own; the response status.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> u16 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        text.get(9..12)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{text}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keep_alive_connections_are_reused_after_bodies_heads_and_empty_answers() {
        let up = scripted(|_, n, head| {
            Answer::Respond(match (n % 3, head.starts_with("HEAD")) {
                (2, _) => EMPTY,
                (_, true) => OK_HEAD,
                _ => OK,
            })
        })
        .await;
        let gw = start(vec![route(&["/up"], Some(&service_at(up.addr)))], vec![]).await;
        for (i, method) in ["GET", "HEAD", "GET", "GET", "HEAD", "GET", "GET"].iter().enumerate() {
            let want = if i % 3 == 2 { 204 } else { 200 };
            assert_eq!(request(gw.addr, method, "/up").await, want, "request {i} ({method})");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1, "one upstream connection for all");
        assert_eq!(gw.proxy.pool.idle_count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_the_upstream_closed_while_idle_is_not_reused() {
        let up = scripted(|conn, _, _| match conn {
            0 => Answer::RespondThenClose(OK),
            _ => Answer::Respond(OK),
        })
        .await;
        let gw = start(vec![route(&["/up"], Some(&service_at(up.addr)))], vec![]).await;
        assert_eq!(get(gw.addr, "/up", &[]).await.status, 200);
        tokio::time::timeout(Duration::from_secs(5), up.closed.notified())
            .await
            .expect("the upstream closes its first connection");
        assert_eq!(get(gw.addr, "/up", &[]).await.status, 200);
        assert_eq!(get(gw.addr, "/up", &[]).await.status, 200);
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_lost_on_a_reused_connection_is_sent_again_when_its_body_is_known() {
        // Each connection takes a second request and drops it unanswered, as an upstream
        // closing an idle connection at the moment the request arrives does.
        let up = scripted(|_, n, _| match n {
            0 => Answer::Respond(OK),
            _ => Answer::Close,
        })
        .await;
        let gw = start(vec![route(&["/up"], Some(&service_at(up.addr)))], vec![]).await;
        assert_eq!(request(gw.addr, "GET", "/up").await, 200);
        assert_eq!(
            request(gw.addr, "GET", "/up").await,
            200,
            "sent again on a new connection"
        );
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        // nginx does not resend a POST, PATCH or LOCK once some of it was sent: the upstream
        // may have acted on it.
        assert_eq!(request(gw.addr, "POST", "/up").await, 502, "a POST is not sent again");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunked_and_interim_answers_reach_the_client_whole_and_keep_the_connection() {
        const CHUNKED: &str = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n4;ext=1\r\nchun\r\n6\r\nked ok\r\n0\r\nX-Trailer: t\r\n\r\n";
        let up = scripted(|_, _, _| Answer::Respond(CHUNKED)).await;
        let gw = start(vec![route(&["/up"], Some(&service_at(up.addr)))], vec![]).await;
        for _ in 0..3 {
            let got = get(gw.addr, "/up", &[]).await;
            assert_eq!(got.status, 200);
            assert_eq!(got.header("x-up"), Some("1"));
            assert_eq!(&got.body[..], b"chunked ok");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1, "one upstream connection for all");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_up_to_the_close_is_passed_whole_and_its_connection_not_reused() {
        let up = scripted(|_, _, _| Answer::RespondThenClose("HTTP/1.1 200 OK\r\nX-Up: 1\r\n\r\nto the end")).await;
        let gw = start(vec![route(&["/up"], Some(&service_at(up.addr)))], vec![]).await;
        for _ in 0..2 {
            let got = get(gw.addr, "/up", &[]).await;
            assert_eq!(got.status, 200);
            assert_eq!(&got.body[..], b"to the end");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(gw.proxy.pool.idle_count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broken_answers_are_kongs_502_and_the_gateway_keeps_serving() {
        let up = scripted(|conn, _, head| match (conn, head.starts_with("GET /bad-length")) {
            (_, true) => Answer::RespondThenClose("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"),
            _ if head.starts_with("GET /not-http") => Answer::RespondThenClose("SSH-2.0-OpenSSH_9.2\r\n\r\n"),
            _ => Answer::Respond(OK),
        })
        .await;
        let gw = start(vec![route(&["/up"], Some(&service_at(up.addr)))], vec![]).await;
        for path in ["/up/bad-length", "/up/not-http"] {
            let got = get(gw.addr, path, &[("Accept", "application/json")]).await;
            assert_eq!(got.status, 502, "{path}");
            assert_eq!(
                got.json()["message"],
                "An invalid response was received from the upstream server",
                "{path}"
            );
        }
        assert_eq!(get(gw.addr, "/up/fine", &[]).await.status, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_lost_on_every_pooled_connection_goes_on_to_a_new_one_as_nginx_does() {
        // Each connection answers its first request and drops the next one unanswered, so
        // every pooled connection is stale. nginx does not count a failure on a cached
        // keep-alive connection as a try: the request goes on to the next one, then a new one.
        let up = scripted(|_, n, _| match n {
            0 => Answer::RespondWhenTwoOpen(OK),
            _ => Answer::Close,
        })
        .await;
        let gw = start(vec![route(&["/up"], Some(&service_at(up.addr)))], vec![]).await;
        let (a, b) = tokio::join!(request(gw.addr, "GET", "/up"), request(gw.addr, "GET", "/up"));
        assert_eq!((a, b), (200, 200));
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(gw.proxy.pool.idle_count(), 2, "two connections pooled");
        assert_eq!(request(gw.addr, "GET", "/up").await, 200);
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            3,
            "both stale ones tried, then a new one"
        );
    }
}
