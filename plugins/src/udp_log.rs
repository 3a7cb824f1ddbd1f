//! `udp-log` (Kong's `kong/plugins/udp-log`): each request's log serializer output, as one
//! JSON datagram to a host and port. The log phase hands the datagram to a sender thread of
//! that destination's own (a bounded queue: a stalled sender drops datagrams, counted, rather
//! than holding requests); name resolution happens there too.

use std::net::{ToSocketAddrs, UdpSocket};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use kong_pdk::prelude::*;

use crate::file_log::NoLua;
use crate::workers::{Sent, Workers};

/// The plugin's configuration (Kong's `udp-log/schema.lua`).
#[plugin(priority = 8, version = "3.10.0", name = "udp-log")]
pub struct UdpLog {
    /// Where datagrams go.
    #[field(required, typedef = host)]
    pub host: String,
    /// Its port.
    #[field(required, typedef = port)]
    pub port: u16,
    /// How long a send may take, in milliseconds.
    #[field(default = 10000)]
    pub timeout: Option<f64>,
    /// Kong's Lua expressions for extra fields: not supported (there is no Lua here).
    pub custom_fields_by_lua: Option<NoLua>,
}

/// The node's senders, by destination and timeout.
pub type Senders = Workers<(String, u16, u64), Vec<u8>>;

/// The sender thread: resolves the destination, then sends each datagram.
fn send_datagrams(host: String, port: u16, timeout: Duration, datagrams: Receiver<Vec<u8>>) {
    let socket = (|| {
        let to = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or_else(|| "no address".to_owned())?;
        let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        socket.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        socket.connect(to).map_err(|e| e.to_string())?;
        Ok::<_, String>(socket)
    })();
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: "kong", "[udp-log] could not connect to {host}:{port}: {e}");
            return;
        }
    };
    crate::workers::batches(datagrams, |batch| {
        for datagram in batch.drain(..) {
            if let Err(e) = socket.send(&datagram) {
                tracing::error!(target: "kong", "[udp-log] could not send data to {host}:{port}: {e}");
            }
        }
    });
}

#[handler]
impl Handler for UdpLog {
    type State = Senders;

    async fn log(&self, kong: &mut Kong<Log, Senders>) -> kong_pdk::Result {
        let datagram = kong.log().serialize_json();
        let timeout = self.timeout.unwrap_or(10_000.0).max(1.0) as u64;
        let key = (self.host.clone(), self.port, timeout);
        let sent = kong.state().send(&key, datagram, |datagrams| {
            let (host, port) = (self.host.clone(), self.port);
            std::thread::Builder::new()
                .name("udp-log".into())
                .spawn(move || send_datagrams(host, port, Duration::from_millis(timeout), datagrams))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        let (host, port) = (&self.host, self.port);
        // A sender that gave up (the destination did not resolve) starts again next time.
        let problem = match sent {
            Sent::NotStarted(e) => Some(format!("could not send to {host}:{port}: {e}")),
            sent => sent.problem(
                || format!("the sender to {host}:{port}"),
                "datagrams",
                || format!("too many udp-log destinations, not sending to {host}:{port}"),
            ),
        };
        if let Some(line) = problem {
            kong.log().err(line);
        }
        Ok(())
    }
}
