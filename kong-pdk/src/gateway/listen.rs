//! Listening sockets with nginx's `listen` parameters, as `proxy_listen` and `stream_listen`
//! entries give them: `reuseport`, `backlog=N`, `ipv6only=on|off` and
//! `so_keepalive=on|off|[idle]:[interval]:[count]`.
//!
//! ```
//! # async fn run() -> std::io::Result<()> {
//! use kong_pdk::gateway::SocketOptions;
//!
//! let options = SocketOptions::parse_flags(["reuseport", "backlog=16384", "so_keepalive=30s::3"])
//!     .map_err(std::io::Error::other)?;
//! let listener = options.bind_tcp("127.0.0.1:0".parse().unwrap())?;
//! # drop(listener);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, UdpSocket};

/// nginx's default `backlog` on Linux (`NGX_LISTEN_BACKLOG`).
pub const DEFAULT_BACKLOG: u32 = 511;

/// The socket options of one listen entry. The defaults are nginx's: no `SO_REUSEPORT`, a
/// backlog of [`DEFAULT_BACKLOG`], IPv6 sockets that take IPv6 only, and the system's
/// keep-alive settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SocketOptions {
    /// `reuseport`: other sockets (another gateway process) may listen on the same address,
    /// and the kernel spreads connections between them.
    pub reuseport: bool,
    /// `backlog=N`: the length of the queue of connections not accepted yet.
    pub backlog: Option<u32>,
    /// `ipv6only=on|off`: whether a socket on an IPv6 address (`[::]`) takes IPv4 too; `on`
    /// when unset, as in nginx.
    pub ipv6only: Option<bool>,
    /// `so_keepalive=...`: TCP keep-alive for accepted connections; `None` leaves the
    /// system's setting.
    pub so_keepalive: Option<Keepalive>,
}

/// `so_keepalive`: off, on with the system's timers, or on with some timers set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keepalive {
    /// `so_keepalive=off`.
    Off,
    /// `so_keepalive=on`, or `idle:interval:count` with any part left empty for the
    /// system's value (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`).
    On {
        /// Idle time before the first probe.
        idle: Option<Duration>,
        /// Time between probes.
        interval: Option<Duration>,
        /// Unanswered probes before the connection is dropped.
        count: Option<u32>,
    },
}

impl SocketOptions {
    /// Reads the socket flags among a listen entry's flags; other flags are left to the
    /// caller. `Err` names a flag whose value does not parse.
    pub fn parse_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> Result<SocketOptions, String> {
        let mut options = SocketOptions::default();
        for flag in flags {
            options.apply(flag)?;
        }
        Ok(options)
    }

    /// Takes `flag` if it is a socket flag: `Ok(true)` when it was one, `Ok(false)` when it is
    /// not a socket flag, `Err` when it is one with a bad value.
    pub fn apply(&mut self, flag: &str) -> Result<bool, String> {
        let bad = || format!("invalid value in listen flag '{flag}'");
        match flag {
            "reuseport" => self.reuseport = true,
            "ipv6only=on" => self.ipv6only = Some(true),
            "ipv6only=off" => self.ipv6only = Some(false),
            "so_keepalive=on" => {
                self.so_keepalive = Some(Keepalive::On {
                    idle: None,
                    interval: None,
                    count: None,
                })
            }
            "so_keepalive=off" => self.so_keepalive = Some(Keepalive::Off),
            _ => {
                if let Some(n) = flag.strip_prefix("backlog=") {
                    self.backlog = Some(n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?);
                } else if let Some(timers) = flag.strip_prefix("so_keepalive=") {
                    let mut parts = timers.split(':');
                    let (Some(idle), Some(interval), Some(count), None) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        return Err(bad());
                    };
                    let optional = |s: &str, parse: fn(&str) -> Option<u64>| match s {
                        "" => Ok(None),
                        s => parse(s).filter(|n| *n > 0).map(Some).ok_or_else(bad),
                    };
                    self.so_keepalive = Some(Keepalive::On {
                        idle: optional(idle, seconds)?.map(Duration::from_secs),
                        interval: optional(interval, seconds)?.map(Duration::from_secs),
                        count: optional(count, |s| s.parse().ok())?.map(|n| n.min(u32::MAX as u64) as u32),
                    });
                } else {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// A TCP listener on `addr` with these options (and `SO_REUSEADDR`, as nginx sets it).
    pub fn bind_tcp(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = self.socket(addr, Type::STREAM, Protocol::TCP)?;
        // Accepted connections inherit the listener's keep-alive settings.
        match self.so_keepalive {
            None => {}
            Some(Keepalive::Off) => socket.set_keepalive(false)?,
            Some(Keepalive::On { idle, interval, count }) => {
                let mut params = TcpKeepalive::new();
                if let Some(idle) = idle {
                    params = params.with_time(idle);
                }
                if let Some(interval) = interval {
                    params = params.with_interval(interval);
                }
                if let Some(count) = count {
                    params = params.with_retries(count);
                }
                socket.set_tcp_keepalive(&params)?;
            }
        }
        socket.bind(&addr.into())?;
        let backlog = self.backlog.unwrap_or(DEFAULT_BACKLOG).min(i32::MAX as u32) as i32;
        socket.listen(backlog)?;
        TcpListener::from_std(socket.into())
    }

    /// A UDP socket on `addr` with these options (`backlog` and `so_keepalive` do not apply).
    pub fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let socket = self.socket(addr, Type::DGRAM, Protocol::UDP)?;
        socket.bind(&addr.into())?;
        UdpSocket::from_std(socket.into())
    }

    fn socket(&self, addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
        socket.set_nonblocking(true)?;
        if kind == Type::STREAM {
            socket.set_reuse_address(true)?;
        }
        if addr.is_ipv6() {
            socket.set_only_v6(self.ipv6only.unwrap_or(true))?;
        }
        if self.reuseport {
            socket.set_reuse_port(true)?;
        }
        Ok(socket)
    }
}

/// nginx's time with seconds as the unit: `30`, `30s`, `5m`, `2h`, `1d`.
fn seconds(s: &str) -> Option<u64> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use socket2::SockRef;

    use super::*;

    /// Whether `SO_REUSEPORT` is on for `socket`.
    fn reuse_port<'s>(socket: impl Into<SockRef<'s>>) -> bool {
        socket.into().reuse_port().unwrap()
    }

    #[test]
    fn flags_parse_as_nginx_reads_them() {
        let o =
            SocketOptions::parse_flags(["reuseport", "backlog=16384", "ipv6only=off", "so_keepalive=1m::3"]).unwrap();
        assert_eq!(
            o,
            SocketOptions {
                reuseport: true,
                backlog: Some(16384),
                ipv6only: Some(false),
                so_keepalive: Some(Keepalive::On {
                    idle: Some(Duration::from_secs(60)),
                    interval: None,
                    count: Some(3)
                }),
            }
        );
        let mut o = SocketOptions::default();
        assert_eq!(o.apply("ssl"), Ok(false), "not a socket flag");
        for bad in [
            "backlog=",
            "backlog=x",
            "backlog=0",
            "so_keepalive=1x::",
            "so_keepalive=1:2",
            "so_keepalive=::0",
        ] {
            assert!(o.apply(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn listeners_get_their_options() {
        let options = SocketOptions::parse_flags(["reuseport", "so_keepalive=30s:10s:4"]).unwrap();
        let first = options.bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        assert!(reuse_port(&first));
        // reuseport: a second socket may listen on the same address; without it, not.
        let second = options.bind_tcp(addr).unwrap();
        assert!(SocketOptions::default().bind_tcp(addr).is_err());
        // Keep-alive is set on the listener, and connections inherit it.
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = tokio::select! {
            a = first.accept() => a.unwrap().0,
            a = second.accept() => a.unwrap().0,
        };
        let sock = SockRef::from(&accepted);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        drop(client);
        // Without options: no keep-alive, no reuseport.
        let plain = SocketOptions::default()
            .bind_tcp("127.0.0.1:0".parse().unwrap())
            .unwrap();
        assert!(!reuse_port(&plain));
        let udp = SocketOptions::parse_flags(["reuseport"])
            .unwrap()
            .bind_udp("127.0.0.1:0".parse().unwrap())
            .unwrap();
        assert!(reuse_port(&udp));
    }

    #[tokio::test]
    async fn an_ipv6_wildcard_takes_ipv6_only_unless_told_otherwise() {
        let Ok(only) = SocketOptions::default().bind_tcp("[::]:0".parse().unwrap()) else {
            eprintln!("skipped: no IPv6 on this machine");
            return;
        };
        assert!(SockRef::from(&only).only_v6().unwrap());
        let both = SocketOptions::parse_flags(["ipv6only=off"])
            .unwrap()
            .bind_tcp("[::]:0".parse().unwrap())
            .unwrap();
        assert!(!SockRef::from(&both).only_v6().unwrap());
    }
}
