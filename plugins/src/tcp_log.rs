//! `tcp-log` (Kong's `kong/plugins/tcp-log`): each request's log serializer output, one JSON
//! object per line, written to a TCP (or TLS) server over a kept-alive connection. Writing
//! happens after the request, in a timer; at most a bounded number of writes wait at once, the
//! rest are dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use kong_pdk::outbound::TcpTarget;
use kong_pdk::prelude::*;

use crate::file_log::NoLua;

/// The plugin's configuration (Kong's `tcp-log/schema.lua`).
#[plugin(priority = 7, version = "3.10.0", name = "tcp-log")]
pub struct TcpLog {
    /// The server's host name or address.
    #[field(required, typedef = host)]
    pub host: String,
    /// Its port.
    #[field(required, typedef = port)]
    pub port: u16,
    /// Connect and send timeout, in milliseconds.
    #[field(default = 10000)]
    pub timeout: Option<f64>,
    /// How long an idle connection is kept, in milliseconds.
    #[field(default = 60000)]
    pub keepalive: Option<f64>,
    /// Speak TLS (certificates not verified).
    #[field(required, default = false)]
    pub tls: bool,
    /// The server name sent in the TLS handshake.
    pub tls_sni: Option<String>,
    /// Kong's Lua expressions for extra fields: not supported (there is no Lua here).
    pub custom_fields_by_lua: Option<NoLua>,
}

/// Writes waiting at once at most, per node.
const IN_FLIGHT: usize = 10_000;

/// The node's writes under way, and those dropped.
#[derive(Debug, Default)]
pub struct Writes {
    in_flight: Arc<AtomicUsize>,
    dropped: AtomicU64,
}

#[handler]
impl Handler for TcpLog {
    type State = Writes;

    async fn log(&self, kong: &mut Kong<Log, Writes>) -> kong_pdk::Result {
        let mut line = kong.log().serialize_json();
        line.push(b'\n');
        let Some(tcp) = kong.tcp_client() else {
            kong.log().err("this gateway has no TCP client to send logs with");
            return Ok(());
        };
        let writes = kong.state();
        if writes.in_flight.fetch_add(1, Ordering::AcqRel) >= IN_FLIGHT {
            writes.in_flight.fetch_sub(1, Ordering::AcqRel);
            let n = writes.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if crate::workers::worth_logging(n) {
                kong.log()
                    .err(format!("too many log writes waiting: {n} lines dropped"));
            }
            return Ok(());
        }
        let in_flight = writes.in_flight.clone();
        let target = TcpTarget {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls,
            sni: self.tls_sni.clone(),
            timeout: Duration::from_millis(self.timeout.unwrap_or(10_000.0).max(1.0) as u64),
            keepalive: Duration::from_millis(self.keepalive.unwrap_or(60_000.0).max(0.0) as u64),
        };
        let (host, port) = (self.host.clone(), self.port);
        let scheduled = kong.timer_at(Duration::ZERO, async move {
            if let Err(e) = tcp.send(target, line).await {
                tracing::error!(target: "kong", "[tcp-log] failed to send data to {host}:{port}: {e}");
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        if !scheduled {
            kong.state().in_flight.fetch_sub(1, Ordering::AcqRel);
            kong.log().err("failed to create timer: the gateway is shutting down");
        }
        Ok(())
    }
}
