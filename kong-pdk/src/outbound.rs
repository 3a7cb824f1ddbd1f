//! Connections a plugin makes itself, without depending on an HTTP stack or a runtime: HTTP
//! requests (Kong's `resty.http`), such as http-log's batches, through
//! [`Kong::http_client`](crate::Kong::http_client), and bytes over TCP (Kong's
//! `ngx.socket.tcp`), such as tcp-log's lines, through
//! [`Kong::tcp_client`](crate::Kong::tcp_client). Both keep connections alive per host, speak
//! TLS (certificates not verified, as Kong's log plugins do) and time out.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    /// The method.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The host (a name or an address).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path and query.
    pub path: String,
    /// Headers, in order (`Host` is the host's unless given).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// How long connecting, sending and reading the answer may take, each.
    pub timeout: Duration,
    /// How long the connection may idle in the pool after the answer.
    pub keepalive: Duration,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundResponse {
    /// The status.
    pub status: u16,
    /// The body (at most 64 KiB are read; the rest is dropped).
    pub body: Vec<u8>,
}

/// A future of an answer, or why there is none.
pub type OutboundFuture<'a> = Pin<Box<dyn Future<Output = Result<OutboundResponse, String>> + Send + 'a>>;

/// The gateway's HTTP client.
pub trait HttpClient: Send + Sync + 'static {
    /// Sends `request` and reads the answer.
    fn send(&self, request: OutboundRequest) -> OutboundFuture<'_>;
}

/// Where a TCP client sends (Kong's `ngx.socket.tcp` as tcp-log uses it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpTarget {
    /// The host (a name or an address).
    pub host: String,
    /// The port.
    pub port: u16,
    /// Speak TLS (certificates not verified).
    pub tls: bool,
    /// The server name sent in the TLS handshake (else the host's).
    pub sni: Option<String>,
    /// How long connecting and sending may take, each.
    pub timeout: Duration,
    /// How long the connection may idle in the pool after a send.
    pub keepalive: Duration,
}

/// A future of a send, or why it failed.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// The gateway's TCP client: writes bytes over kept-alive connections.
pub trait TcpClient: Send + Sync + 'static {
    /// Writes `data` to `target`, over a kept-alive connection when one is idle.
    fn send(&self, target: TcpTarget, data: Vec<u8>) -> SendFuture<'_>;
}
