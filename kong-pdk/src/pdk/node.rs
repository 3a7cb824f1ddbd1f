//! `kong.node` and the node-wide settings the PDK needs (`trusted_ips`).

use std::net::IpAddr;

use uuid::Uuid;

/// This gateway node: its identity and the settings the PDK consults.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `kong.node.get_id()`.
    pub id: Uuid,
    /// `kong.node.get_hostname()`.
    pub hostname: String,
    /// `trusted_ips` as (network, prefix length) pairs.
    pub trusted_ips: Vec<(IpAddr, u8)>,
    /// Where the node also keeps its recent log lines (the testing helpers read it); `None`
    /// logs through `tracing` only.
    pub error_log: Option<std::sync::Arc<super::ErrorLog>>,
}

impl Default for NodeInfo {
    fn default() -> Self {
        NodeInfo {
            id: Uuid::new_v4(),
            hostname: "localhost".into(),
            trusted_ips: Vec::new(),
            error_log: None,
        }
    }
}

impl NodeInfo {
    /// Parses Kong's `trusted_ips` list (`0.0.0.0/0`, `::/0`, addresses and CIDRs); `None` for
    /// an invalid entry.
    pub fn parse_trusted_ips(list: &[&str]) -> Option<Vec<(IpAddr, u8)>> {
        list.iter()
            .map(|s| {
                let (addr, bits) = s.split_once('/').map_or((*s, None), |(a, b)| (a, Some(b)));
                let ip: IpAddr = addr.parse().ok()?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits = match bits {
                    Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max)?,
                    None => max,
                };
                Some((ip, bits))
            })
            .collect()
    }

    /// `kong.ip.is_trusted(ip)`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_ips.iter().any(|(net, bits)| in_network(ip, *net, *bits))
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `kong.node`.
pub struct Node<'a> {
    info: &'a NodeInfo,
}

impl<'a> Node<'a> {
    pub(crate) fn new(info: &'a NodeInfo) -> Self {
        Node { info }
    }

    /// `kong.node.get_id()`.
    pub fn get_id(&self) -> Uuid {
        self.info.id
    }

    /// `kong.node.get_hostname()`.
    pub fn get_hostname(&self) -> &str {
        &self.info.hostname
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_ips_match_cidrs_and_everything() {
        let node = NodeInfo {
            trusted_ips: NodeInfo::parse_trusted_ips(&["10.0.0.0/8", "::1"]).unwrap(),
            ..NodeInfo::default()
        };
        assert!(node.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(!node.is_trusted("11.1.2.3".parse().unwrap()));
        assert!(node.is_trusted("::1".parse().unwrap()));
        let all = NodeInfo {
            trusted_ips: NodeInfo::parse_trusted_ips(&["0.0.0.0/0", "::/0"]).unwrap(),
            ..NodeInfo::default()
        };
        assert!(all.is_trusted("203.0.113.9".parse().unwrap()));
        assert!(!NodeInfo::default().is_trusted("127.0.0.1".parse().unwrap()));
        assert!(NodeInfo::parse_trusted_ips(&["10.0.0.0/33"]).is_none());
    }
}
