//! The engine behind the PDK's runtime services (with the `gateway` feature): Redis
//! connections ([`crate::redis`]), timers ([`crate::timer`]) and the HTTP client
//! and TCP clients ([`crate::outbound`]), on tokio. Every node's
//! [`NodeInfo`](crate::pdk::NodeInfo) has them by default.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::outbound::{
    HttpClient, OutboundFuture, OutboundRequest, OutboundResponse, SendFuture, TcpClient, TcpTarget,
};
use crate::redis::{RedisClient, RedisCommand, RedisFuture, RedisReply, RedisSettings};
use crate::timer::{Task, TimerCounts, Timers};

/// Connections kept at most; beyond, they are all dropped and made again as needed.
const MAX_CONNECTIONS: usize = 64;

/// One multiplexed, reconnecting connection per server, login and database.
#[derive(Default)]
pub(crate) struct RedisPool {
    connections: Mutex<HashMap<RedisSettings, ConnectionManager>>,
}

impl RedisPool {
    /// The connection for `server`, made lazily (connecting happens with the first command).
    fn connection(&self, server: &RedisSettings) -> Result<ConnectionManager, String> {
        let mut map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(server) {
            return Ok(c.clone());
        }
        let addr = if server.ssl {
            ConnectionAddr::TcpTls {
                host: server.host.clone(),
                port: server.port,
                insecure: !server.ssl_verify,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(server.host.clone(), server.port)
        };
        let mut login = RedisConnectionInfo::default()
            .set_db(server.database)
            .set_skip_set_lib_name();
        // AUTH only with a password (Kong's `is_present`), with the user name when one is set.
        if let Some(password) = server.password.as_deref().filter(|p| !p.is_empty()) {
            login = login.set_password(password);
            if let Some(user) = server.username.as_deref().filter(|u| !u.is_empty()) {
                login = login.set_username(user);
            }
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| e.to_string())?
            .set_redis_settings(login);
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let timeout = server.timeout.max(Duration::from_millis(1));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        if map.len() >= MAX_CONNECTIONS {
            map.clear();
        }
        map.insert(server.clone(), manager.clone());
        Ok(manager)
    }
}

fn reply(v: redis::Value) -> RedisReply {
    match v {
        redis::Value::Nil => RedisReply::Nil,
        redis::Value::Int(n) => RedisReply::Int(n),
        redis::Value::BulkString(d) => RedisReply::Data(d),
        redis::Value::SimpleString(s) => RedisReply::Status(s),
        redis::Value::Okay => RedisReply::Status("OK".into()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            RedisReply::Array(items.into_iter().map(reply).collect())
        }
        other => RedisReply::Status(format!("{other:?}")),
    }
}

impl RedisClient for RedisPool {
    fn pipeline<'a>(&'a self, server: &'a RedisSettings, commands: Vec<RedisCommand>) -> RedisFuture<'a> {
        Box::pin(async move {
            let mut conn = self.connection(server)?;
            let mut pipe = redis::pipe();
            for RedisCommand(parts) in &commands {
                let Some((name, args)) = parts.split_first() else {
                    return Err("an empty Redis command".into());
                };
                let cmd = pipe.cmd(std::str::from_utf8(name).map_err(|e| e.to_string())?);
                for arg in args {
                    cmd.arg(arg.as_slice());
                }
            }
            let timeout = server.timeout.max(Duration::from_millis(1));
            let values = tokio::time::timeout(timeout, pipe.query_async::<Vec<redis::Value>>(&mut conn))
                .await
                .map_err(|_| "timeout".to_owned())?
                .map_err(|e| e.to_string())?;
            Ok(values.into_iter().map(reply).collect())
        })
    }
}

/// Timers on the tokio runtime the gateway runs on.
#[derive(Default)]
pub(crate) struct TokioTimers {
    counts: Arc<TimerCounters>,
}

#[derive(Default)]
struct TimerCounters {
    pending: AtomicU64,
    running: AtomicU64,
}

/// One task's place in the counts: pending, then running; dropped (done or cancelled with
/// the runtime), it leaves them.
struct Counted {
    counts: Arc<TimerCounters>,
    running: bool,
}

impl Counted {
    fn start(&mut self) {
        self.counts.pending.fetch_sub(1, Relaxed);
        self.counts.running.fetch_add(1, Relaxed);
        self.running = true;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let count = if self.running {
            &self.counts.running
        } else {
            &self.counts.pending
        };
        count.fetch_sub(1, Relaxed);
    }
}

impl Timers for TokioTimers {
    fn at(&self, delay: Duration, task: Task) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        self.counts.pending.fetch_add(1, Relaxed);
        let mut counted = Counted {
            counts: self.counts.clone(),
            running: false,
        };
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            counted.start();
            task.await;
            drop(counted);
        });
        true
    }

    fn sleep(&self, delay: Duration) -> Task {
        Box::pin(tokio::time::sleep(delay))
    }

    fn counts(&self) -> TimerCounts {
        TimerCounts {
            running: self.counts.running.load(Relaxed),
            pending: self.counts.pending.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_server_is_an_error() {
        // A port nothing listens on: refused at once, or timed out.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut server = RedisSettings::new("127.0.0.1", port);
        server.timeout = Duration::from_millis(300);
        let pool = RedisPool::default();
        let err = pool
            .pipeline(&server, vec![RedisCommand::new("PING")])
            .await
            .unwrap_err();
        assert!(!err.is_empty());
    }

    #[tokio::test]
    async fn timers_run_their_task_after_the_delay() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let timers = TokioTimers::default();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        assert!(timers.at(
            Duration::from_millis(10),
            Box::pin(async move {
                let _ = tx.send(());
                let _ = wait.await;
            })
        ));
        assert_eq!(timers.counts(), TimerCounts { running: 0, pending: 1 });
        tokio::time::timeout(Duration::from_secs(5), rx).await.unwrap().unwrap();
        assert_eq!(timers.counts(), TimerCounts { running: 1, pending: 0 });
        go.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while timers.counts() != TimerCounts::default() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the finished task leaves the counts");
    }
}

/// Idle connections kept per host at most.
const IDLE_PER_HOST: usize = 8;
/// Answer bytes read at most.
const MAX_ANSWER: usize = 64 * 1024;

type PoolKey = (String, String, u16);
/// A connection's request side.
type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// The HTTP client plugins send with: HTTP/1.1 over TCP or TLS (not verified), connections
/// kept alive per host.
#[derive(Default)]
pub(crate) struct Http {
    idle: Mutex<HashMap<PoolKey, Vec<(Sender, std::time::Instant)>>>,
}

/// Accepts any server certificate (Kong's log plugins do not verify), keeping the last one
/// presented (what the testing helpers report as served). Signatures are still checked.
#[derive(Debug)]
pub(crate) struct AnyServer {
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Option<Vec<u8>>>,
}

impl AnyServer {
    pub(crate) fn new(provider: std::sync::Arc<rustls::crypto::CryptoProvider>) -> AnyServer {
        AnyServer {
            provider,
            seen: Mutex::new(None),
        }
    }

    /// The DER of the last certificate a server presented.
    #[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
    pub(crate) fn take_seen(&self) -> Option<Vec<u8>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> std::sync::Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::LazyLock<std::sync::Arc<rustls::ClientConfig>> = std::sync::LazyLock::new(|| {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer::new(provider)))
            .with_no_client_auth();
        std::sync::Arc::new(config)
    });
    CONFIG.clone()
}

impl Http {
    async fn connect(&self, r: &OutboundRequest) -> Result<Sender, String> {
        let key = (r.scheme.clone(), r.host.clone(), r.port);
        loop {
            let reused = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(&key).and_then(Vec::pop)
            };
            match reused {
                Some((sender, until)) if until > std::time::Instant::now() && !sender.is_closed() => return Ok(sender),
                Some(_) => continue,
                None => break,
            }
        }
        let tls = (r.scheme == "https").then(|| r.host.clone());
        let io = dial(&r.host, r.port, tls, r.timeout).await?;
        handshake(hyper_util::rt::TokioIo::new(io)).await
    }
}

/// A connection: plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Connects to `host:port`, with TLS (certificates not verified) when `tls` names the server,
/// each step within `timeout`.
async fn dial(host: &str, port: u16, tls: Option<String>, timeout: Duration) -> Result<Box<dyn Io>, String> {
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let Some(name) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp),
    )
    .await
    .map_err(|_| "timeout".to_owned())?
    .map_err(|e| format!("failed to perform TLS handshake: {e}"))?;
    Ok(Box::new(tls))
}

/// HTTP/1.1 over `io`, its connection driven by a task of its own.
async fn handshake<I>(io: I) -> Result<Sender, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

impl HttpClient for Http {
    fn send(&self, r: OutboundRequest) -> OutboundFuture<'_> {
        Box::pin(async move {
            use http_body_util::BodyExt;
            let mut sender = self.connect(&r).await?;
            let mut builder = hyper::Request::builder().method(r.method.as_str()).uri(r.path.as_str());
            if !r.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
                let default_port = if r.scheme == "https" { 443 } else { 80 };
                let host = if r.port == default_port {
                    r.host.clone()
                } else {
                    format!("{}:{}", r.host, r.port)
                };
                builder = builder.header("Host", host);
            }
            for (n, v) in &r.headers {
                builder = builder.header(n.as_str(), v.as_str());
            }
            let request = builder
                .body(http_body_util::Full::new(bytes::Bytes::from(r.body.clone())))
                .map_err(|e| e.to_string())?;
            let exchange = async {
                let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let mut body = response.into_body();
                let mut answer = Vec::new();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data()
                        && answer.len() < MAX_ANSWER
                    {
                        let room = MAX_ANSWER - answer.len();
                        answer.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Ok::<_, String>(OutboundResponse { status, body: answer })
            };
            let answer = tokio::time::timeout(r.timeout, exchange)
                .await
                .map_err(|_| "timeout".to_owned())??;
            if !sender.is_closed() && !r.keepalive.is_zero() {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < MAX_CONNECTIONS {
                    let slot = idle.entry((r.scheme.clone(), r.host.clone(), r.port)).or_default();
                    if slot.len() < IDLE_PER_HOST {
                        slot.push((sender, std::time::Instant::now() + r.keepalive));
                    }
                }
            }
            Ok(answer)
        })
    }
}

/// A connection of the TCP client.
type Stream = Box<dyn Io>;

/// The TCP client plugins write with: connections kept alive per target.
#[derive(Default)]
pub(crate) struct Tcp {
    idle: Mutex<HashMap<TcpTarget, Vec<(Stream, std::time::Instant)>>>,
}

impl Tcp {
    async fn connect(&self, t: &TcpTarget) -> Result<Stream, String> {
        loop {
            let reused = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(t).and_then(Vec::pop)
            };
            match reused {
                Some((stream, until)) if until > std::time::Instant::now() => return Ok(stream),
                Some(_) => continue,
                None => break,
            }
        }
        let tls = t.tls.then(|| t.sni.clone().unwrap_or_else(|| t.host.clone()));
        dial(&t.host, t.port, tls, t.timeout).await
    }
}

impl TcpClient for Tcp {
    fn send(&self, target: TcpTarget, data: Vec<u8>) -> SendFuture<'_> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = self.connect(&target).await?;
            let write = async {
                stream.write_all(&data).await?;
                stream.flush().await
            };
            tokio::time::timeout(target.timeout, write)
                .await
                .map_err(|_| "timeout".to_owned())?
                .map_err(|e| e.to_string())?;
            if !target.keepalive.is_zero() {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < MAX_CONNECTIONS {
                    let until = std::time::Instant::now() + target.keepalive;
                    let slot = idle.entry(target).or_default();
                    if slot.len() < IDLE_PER_HOST {
                        slot.push((stream, until));
                    }
                }
            }
            Ok(())
        })
    }
}
