//! Redis for plugins: the gateway keeps one multiplexed, reconnecting connection per server,
//! user and database, and a handler sends pipelines of commands through
//! [`Kong::redis`](crate::Kong::redis) without depending on a Redis crate or a runtime itself
//! (Kong's `resty.redis` with its connection pools).
//!
//! ```
//! use kong_pdk::Error;
//! use kong_pdk::prelude::*;
//! use kong_pdk::redis::{RedisCommand, RedisSettings};
//!
//! #[plugin(priority = 10, version = "1.0.0")]
//! pub struct Visits {}
//!
//! #[handler]
//! impl Handler for Visits {
//!     async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
//!         let Some(redis) = kong.redis() else { return Ok(()) };
//!         let server = RedisSettings::new("127.0.0.1", 6379);
//!         let replies = redis
//!             .pipeline(&server, vec![RedisCommand::new("INCR").arg("visits")])
//!             .await
//!             .map_err(Error::msg)?;
//!         if let Some(n) = replies[0].as_int() {
//!             kong.response().set_header("X-Visits", n)?;
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Where a Redis server is and how to log in (Kong's `redis` config record).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connect, send and read timeout.
    pub timeout: Duration,
    /// ACL user name (with `password`).
    pub username: Option<String>,
    /// Password: `AUTH` when set and not empty.
    pub password: Option<String>,
    /// Database number (`SELECT`).
    pub database: i64,
    /// Speak TLS.
    pub ssl: bool,
    /// Verify the server's certificate against the system's roots.
    pub ssl_verify: bool,
    /// The name the certificate is checked against, when not `host`.
    pub server_name: Option<String>,
}

impl RedisSettings {
    /// `host:port`, database 0, no login, plain TCP, Kong's 2 s timeout.
    pub fn new(host: impl Into<String>, port: u16) -> RedisSettings {
        RedisSettings {
            host: host.into(),
            port,
            timeout: Duration::from_millis(2000),
            username: None,
            password: None,
            database: 0,
            ssl: false,
            ssl_verify: false,
            server_name: None,
        }
    }
}

/// One command: its name and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCommand(pub Vec<Vec<u8>>);

impl RedisCommand {
    /// The command `name` with no arguments yet.
    pub fn new(name: &str) -> RedisCommand {
        RedisCommand(vec![name.as_bytes().to_vec()])
    }

    /// Appends an argument (text, numbers as text, bytes).
    #[must_use]
    pub fn arg(mut self, arg: impl ToString) -> RedisCommand {
        self.0.push(arg.to_string().into_bytes());
        self
    }
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisReply {
    /// `nil`.
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk string.
    Data(Vec<u8>),
    /// A status (`OK`).
    Status(String),
    /// An array.
    Array(Vec<RedisReply>),
}

impl RedisReply {
    /// The integer (or a bulk string holding one).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            RedisReply::Int(n) => Some(*n),
            RedisReply::Data(d) => std::str::from_utf8(d).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// A future of a pipeline's replies, or why it failed.
pub type RedisFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<RedisReply>, String>> + Send + 'a>>;

/// The gateway's Redis connections.
pub trait RedisClient: Send + Sync + 'static {
    /// Sends `commands` to `server` in one pipeline and answers their replies in order;
    /// fails as a whole (connection, login, timeout, or a command's error).
    fn pipeline<'a>(&'a self, server: &'a RedisSettings, commands: Vec<RedisCommand>) -> RedisFuture<'a>;
}
