//! `kong.node` and the node-wide settings the PDK needs (`trusted_ips`).

use uuid::Uuid;

pub use crate::model::NodeInfo;

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
