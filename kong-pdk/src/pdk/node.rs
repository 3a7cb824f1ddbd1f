//! `kong.node`, `kong.nginx` and the node-wide settings the PDK needs (`trusted_ips`).

use serde_json::Value;
use uuid::Uuid;

use crate::stats::{Statistics, UnitError};

pub use crate::model::{NodeInfo, RouterFlavor};

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

    /// The node's tracing settings (`tracing_instrumentations`, `tracing_sampling_rate`) and
    /// whether requests keep their log lines for an exporter.
    pub fn tracing(&self) -> &'a crate::tracer::NodeTracing {
        &self.info.tracing
    }

    /// `kong.node.get_hostname()`.
    pub fn get_hostname(&self) -> &str {
        &self.info.hostname
    }

    /// `kong.node.get_memory_stats(unit, scale)`: Kong's shape, in unit `b` (bytes, the
    /// default), `k`, `m` or `g` with `scale` decimals (see
    /// [`memory_stats`](crate::stats::memory_stats)).
    pub fn get_memory_stats(&self, unit: Option<&str>, scale: Option<f64>) -> Result<Value, UnitError> {
        crate::stats::memory_stats(unit.unwrap_or("b"), scale)
    }
}

/// `kong.cluster`: the cluster the node belongs to.
pub struct Cluster<'a> {
    info: &'a NodeInfo,
}

impl<'a> Cluster<'a> {
    pub(crate) fn new(info: &'a NodeInfo) -> Self {
        Cluster { info }
    }

    /// `kong.cluster.get_id()`: the id every node on the same database shares (Kong's
    /// `parameters.cluster_id`); `None` without a database (DB-less, the test harness).
    pub fn get_id(&self) -> Option<Uuid> {
        self.info.cluster_id.get().copied()
    }
}

/// `kong.nginx`: the subsystem and the server's counters.
pub struct Nginx<'a> {
    info: &'a NodeInfo,
}

impl<'a> Nginx<'a> {
    pub(crate) fn new(info: &'a NodeInfo) -> Self {
        Nginx { info }
    }

    /// `kong.nginx.get_subsystem()`: `"http"`.
    pub fn get_subsystem(&self) -> &'static str {
        "http"
    }

    /// `kong.nginx.get_statistics()`: the node's connections and requests so far.
    pub fn get_statistics(&self) -> Statistics {
        self.info.stats.statistics()
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
