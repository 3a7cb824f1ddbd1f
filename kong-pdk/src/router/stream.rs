//! The stream router (Kong's `traditional_compatible` flavor for `tcp`, `tls`, `udp` and
//! `tls_passthrough` routes): a connection matches a route when every attribute the route
//! sets matches (any one entry of `sources`, of `destinations`; `snis` when the connection
//! has a server name), and routes are tried by Kong's ATC priority.

use std::net::IpAddr;
use std::sync::Arc;

use crate::entities::{CidrPort, Route, Service};
use crate::model::{NodeInfo, in_network};

/// What a stream connection offers the router.
#[derive(Debug, Clone, Copy)]
pub struct StreamInfo<'a> {
    /// The client's address (after PROXY protocol, from a trusted peer).
    pub source: (IpAddr, u16),
    /// The address the client connected to (its port after `port_maps`).
    pub destination: (IpAddr, u16),
    /// The TLS server name the client sent, if any.
    pub sni: Option<&'a str>,
    /// Whether the connection is TLS (terminated or passed through): a route's `snis` then
    /// must match its server name, which it must have sent.
    pub tls: bool,
}

/// One `sources`/`destinations` entry, parsed.
#[derive(Debug, Clone)]
struct Endpoint {
    network: Option<(IpAddr, u8)>,
    port: Option<u16>,
}

impl Endpoint {
    fn parse(entry: &CidrPort) -> Option<Endpoint> {
        let network = match &entry.ip {
            Some(ip) => Some(*NodeInfo::parse_trusted_ips(&[ip.as_str()])?.first()?),
            None => None,
        };
        Some(Endpoint {
            network,
            port: entry.port,
        })
    }

    fn matches(&self, (ip, port): (IpAddr, u16)) -> bool {
        self.network.is_none_or(|(net, bits)| in_network(ip, net, bits)) && self.port.is_none_or(|p| p == port)
    }
}

/// A route's server name pattern: exact, `*.suffix` or `prefix.*`.
#[derive(Debug, Clone)]
enum Sni {
    Exact(String),
    Suffix(String),
    Prefix(String),
}

impl Sni {
    fn parse(name: &str) -> Sni {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(rest) = name.strip_prefix("*.") {
            Sni::Suffix(format!(".{rest}"))
        } else if let Some(rest) = name.strip_suffix(".*") {
            Sni::Prefix(format!("{rest}."))
        } else {
            Sni::Exact(name)
        }
    }

    fn matches(&self, sni: &str) -> bool {
        match self {
            Sni::Exact(n) => n.eq_ignore_ascii_case(sni),
            Sni::Suffix(s) => sni.len() > s.len() && sni.to_ascii_lowercase().ends_with(s.as_str()),
            Sni::Prefix(p) => sni.len() > p.len() && sni.to_ascii_lowercase().starts_with(p.as_str()),
        }
    }
}

#[derive(Debug)]
struct StreamMatcher {
    route: Arc<Route>,
    service: Option<Arc<Service>>,
    sources: Vec<Endpoint>,
    destinations: Vec<Endpoint>,
    snis: Vec<Sni>,
    priority: u64,
}

/// The stream routes, by priority.
#[derive(Debug, Default)]
pub(crate) struct StreamRouter {
    matchers: Vec<StreamMatcher>,
}

/// Kong's ATC weight of a `sources`/`destinations` list: IP 8, port 4, CIDR 1, ORed over its
/// entries.
fn weight(entries: &[CidrPort]) -> u64 {
    entries.iter().fold(0, |w, e| {
        let ip = match &e.ip {
            Some(ip) if ip.contains('/') => 1,
            Some(_) => 8,
            None => 0,
        };
        w | ip | if e.port.is_some() { 4 } else { 0 }
    })
}

/// Whether `route` is a stream route.
pub(crate) fn is_stream(route: &Route) -> bool {
    route
        .protocols
        .iter()
        .any(|p| matches!(p.as_str(), "tcp" | "tls" | "udp" | "tls_passthrough"))
}

impl StreamRouter {
    pub(crate) fn add(&mut self, route: Arc<Route>, service: Option<Arc<Service>>) -> Result<(), String> {
        let parse = |list: &Option<Vec<CidrPort>>| -> Result<Vec<Endpoint>, String> {
            list.iter()
                .flatten()
                .map(|e| {
                    Endpoint::parse(e)
                        .ok_or_else(|| format!("invalid ip or cidr range: '{}'", e.ip.as_deref().unwrap_or("")))
                })
                .collect()
        };
        let sources = parse(&route.sources)?;
        let destinations = parse(&route.destinations)?;
        let snis: Vec<Sni> = route.snis.iter().flatten().map(|s| Sni::parse(s)).collect();
        let both = !sources.is_empty() && !destinations.is_empty();
        let sni_bit = if !snis.is_empty() || both { 1 << 61 } else { 0 };
        let src = weight(route.sources.as_deref().unwrap_or_default());
        let dst = weight(route.destinations.as_deref().unwrap_or_default());
        self.matchers.push(StreamMatcher {
            route,
            service,
            sources,
            destinations,
            snis,
            priority: sni_bit | (src << 4) | dst,
        });
        Ok(())
    }

    /// Orders the routes by priority (stable: equal ones keep the order they were added in).
    pub(crate) fn finish(&mut self) {
        self.matchers.sort_by_key(|m| std::cmp::Reverse(m.priority));
    }

    /// The route a connection matches, with its service.
    pub(crate) fn find(&self, c: &StreamInfo<'_>) -> Option<(Arc<Route>, Option<Arc<Service>>)> {
        self.matchers
            .iter()
            .find(|m| {
                (m.sources.is_empty() || m.sources.iter().any(|e| e.matches(c.source)))
                    && (m.destinations.is_empty() || m.destinations.iter().any(|e| e.matches(c.destination)))
                    && (m.snis.is_empty() || !c.tls || c.sni.is_some_and(|sni| m.snis.iter().any(|p| p.matches(sni))))
            })
            .map(|m| (m.route.clone(), m.service.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        protocols: &[&str],
        sources: &[(Option<&str>, Option<u16>)],
        destinations: &[(Option<&str>, Option<u16>)],
        snis: &[&str],
    ) -> Arc<Route> {
        let entries = |list: &[(Option<&str>, Option<u16>)]| {
            (!list.is_empty()).then(|| {
                list.iter()
                    .map(|(ip, port)| CidrPort {
                        ip: ip.map(str::to_owned),
                        port: *port,
                    })
                    .collect()
            })
        };
        let mut r = Route::new(&[]);
        r.paths = None;
        r.protocols = protocols.iter().map(|p| p.to_string()).collect();
        r.sources = entries(sources);
        r.destinations = entries(destinations);
        r.snis = (!snis.is_empty()).then(|| snis.iter().map(|s| s.to_string()).collect());
        r.name = Some(format!("{protocols:?}{sources:?}{destinations:?}{snis:?}"));
        Arc::new(r)
    }

    fn conn(src: &str, dst: &str, sni: Option<&'static str>) -> StreamInfo<'static> {
        let split = |s: &str| {
            let a: std::net::SocketAddr = s.parse().unwrap();
            (a.ip(), a.port())
        };
        StreamInfo {
            source: split(src),
            destination: split(dst),
            sni,
            tls: sni.is_some(),
        }
    }

    fn router(routes: &[Arc<Route>]) -> StreamRouter {
        let mut r = StreamRouter::default();
        for route in routes {
            r.add(route.clone(), None).unwrap();
        }
        r.finish();
        r
    }

    fn found(r: &StreamRouter, c: &StreamInfo<'_>) -> Option<Uuid> {
        r.find(c).map(|(route, _)| route.id)
    }

    use uuid::Uuid;

    #[test]
    fn every_attribute_set_must_match() {
        let by_port = route(&["tcp"], &[], &[(None, Some(19000))], &[]);
        let by_source = route(&["tcp"], &[(Some("10.0.0.0/8"), None)], &[], &[]);
        let r = router(&[by_port.clone(), by_source.clone()]);
        assert_eq!(
            found(&r, &conn("127.0.0.1:5000", "127.0.0.1:19000", None)),
            Some(by_port.id)
        );
        assert_eq!(
            found(&r, &conn("10.1.2.3:5000", "127.0.0.1:18000", None)),
            Some(by_source.id)
        );
        assert_eq!(found(&r, &conn("192.168.0.1:5000", "127.0.0.1:18000", None)), None);
    }

    #[test]
    fn priority_follows_kongs_weights() {
        // Source IP (8 << 4) beats destination IP and port (12); a route with both sources and
        // destinations gets the SNI bit.
        let dst = route(&["tcp"], &[], &[(Some("127.0.0.1"), Some(18000))], &[]);
        let src = route(&["tcp"], &[(Some("127.0.0.1"), None)], &[], &[]);
        let both = route(&["tcp"], &[(Some("10.0.0.0/8"), None)], &[(None, Some(18000))], &[]);
        let r = router(&[dst.clone(), src.clone(), both.clone()]);
        assert_eq!(found(&r, &conn("127.0.0.1:1", "127.0.0.1:18000", None)), Some(src.id));
        assert_eq!(found(&r, &conn("10.0.0.1:1", "127.0.0.1:18000", None)), Some(both.id));
        assert_eq!(found(&r, &conn("192.0.2.1:1", "127.0.0.1:18000", None)), Some(dst.id));
    }

    #[test]
    fn snis_match_exactly_or_by_wildcard_and_only_tls_connections() {
        let exact = route(&["tls"], &[], &[], &["foobar.example.com."]);
        let suffix = route(&["tls_passthrough"], &[], &[], &["*.foo.test"]);
        let prefix = route(&["tls_passthrough"], &[], &[], &["bar.*"]);
        let r = router(&[exact.clone(), suffix.clone(), prefix.clone()]);
        assert_eq!(
            found(&r, &conn("127.0.0.1:1", "127.0.0.1:2", Some("foobar.example.com"))),
            Some(exact.id)
        );
        assert_eq!(
            found(&r, &conn("127.0.0.1:1", "127.0.0.1:2", Some("a.b.foo.test"))),
            Some(suffix.id)
        );
        assert_eq!(
            found(&r, &conn("127.0.0.1:1", "127.0.0.1:2", Some("bar.y.z"))),
            Some(prefix.id)
        );
        assert_eq!(found(&r, &conn("127.0.0.1:1", "127.0.0.1:2", Some("other.test"))), None);
        // A connection that is not TLS passes the SNI condition (traditional_compatible); a
        // TLS one without a server name does not.
        assert!(found(&r, &conn("127.0.0.1:1", "127.0.0.1:2", None)).is_some());
        let nameless_tls = StreamInfo {
            tls: true,
            ..conn("127.0.0.1:1", "127.0.0.1:2", None)
        };
        assert_eq!(found(&r, &nameless_tls), None);
    }
}
