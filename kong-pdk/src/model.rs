//! The vocabulary every layer shares, depending on nothing else in the crate: a plugin type's
//! static facts ([`PluginMeta`]), where an instance applies ([`Scope`]), the node
//! ([`NodeInfo`]) and its log ([`Level`], [`LogLine`], [`ErrorLog`]). The layers above it, in
//! order: `transaction`, `pdk`, `plugin`, `registry`, `executor`, `runloop`, and the gateway,
//! Admin API, testing and command line on top.

use std::net::IpAddr;

use uuid::Uuid;

use crate::phase::Phases;

/// Static facts about a loaded plugin type.
#[derive(Debug, Clone)]
pub struct PluginMeta {
    /// Name.
    pub name: &'static str,
    /// PRIORITY.
    pub priority: i32,
    /// VERSION.
    pub version: &'static str,
    /// Implemented phases.
    pub phases: Phases,
    /// Position in the loaded set (keys `kong.ctx.plugin`).
    pub index: usize,
    /// The schema declares `no_consumer`.
    pub no_consumer: bool,
    /// The schema declares `no_route`.
    pub no_route: bool,
    /// The schema declares `no_service`.
    pub no_service: bool,
}

/// The scope a plugin instance is attached to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Route id.
    pub route: Option<Uuid>,
    /// Service id.
    pub service: Option<Uuid>,
    /// Consumer id.
    pub consumer: Option<Uuid>,
}

impl Scope {
    /// A global instance.
    pub const GLOBAL: Scope = Scope {
        route: None,
        service: None,
        consumer: None,
    };

    /// Whether no route, service or consumer is set.
    pub fn is_global(&self) -> bool {
        *self == Scope::GLOBAL
    }
}

/// This gateway node: its identity, the settings the PDK consults, and the services the
/// engine provides to plugins (Redis connections, timers, shared counters).
#[derive(Clone)]
pub struct NodeInfo {
    /// `kong.node.get_id()`.
    pub id: Uuid,
    /// `kong.node.get_hostname()`.
    pub hostname: String,
    /// `trusted_ips` as (network, prefix length) pairs.
    pub trusted_ips: Vec<(IpAddr, u8)>,
    /// Where the node also keeps its recent log lines (the testing helpers read it); `None`
    /// logs through `tracing` only.
    pub error_log: Option<std::sync::Arc<ErrorLog>>,
    /// The counters shared through the node's database, once it has one
    /// ([`Kong::cluster_counters`](crate::Kong::cluster_counters)).
    pub counters: crate::counters::CounterSlot,
    /// The node's Redis connections ([`Kong::redis`](crate::Kong::redis)); the gateway's by
    /// default, `None` without the `gateway` feature.
    pub redis: Option<std::sync::Arc<dyn crate::redis::RedisClient>>,
    /// The node's timers ([`Kong::timer_at`](crate::Kong::timer_at)); the gateway's by
    /// default, `None` without the `gateway` feature.
    pub timers: Option<std::sync::Arc<dyn crate::timer::Timers>>,
    /// The node's HTTP client ([`Kong::http_client`](crate::Kong::http_client)); the
    /// gateway's by default, `None` without the `gateway` feature.
    pub http: Option<std::sync::Arc<dyn crate::outbound::HttpClient>>,
    /// The node's TCP client ([`Kong::tcp_client`](crate::Kong::tcp_client)); the gateway's
    /// by default, `None` without the `gateway` feature.
    pub tcp: Option<std::sync::Arc<dyn crate::outbound::TcpClient>>,
    /// The node's connection and request counters and its datastore's health
    /// ([`Kong::nginx`](crate::Kong::nginx)).
    pub stats: std::sync::Arc<crate::stats::ServerStats>,
    /// `kong.cluster.get_id()`: set once the node has a database (DB-less nodes have none).
    pub cluster_id: std::sync::OnceLock<Uuid>,
    /// `tracing_instrumentations` and `tracing_sampling_rate` ([`Kong::tracing`](crate::Kong::tracing)).
    pub tracing: std::sync::Arc<crate::tracer::NodeTracing>,
    /// `kong.cache` ([`Kong::cache`](crate::Kong::cache)).
    pub cache: std::sync::Arc<crate::cache::Cache>,
    /// Upstream target addresses' health, requests in flight and latency, across
    /// configuration changes.
    pub health: std::sync::Arc<crate::health::HealthBook>,
    /// `router_flavor`: how routes join paths (see [`RouterFlavor`]).
    pub router_flavor: RouterFlavor,
}

/// Kong's `router_flavor` (kong.conf). Both flavors match requests the same way (Kong's
/// `traditional_compatible` router was made to match as `traditional` does); they differ in
/// how a route with `path_handling = "v1"` builds the upstream path.
///
/// ```
/// use kong_pdk::pdk::RouterFlavor;
/// assert_eq!(RouterFlavor::default(), RouterFlavor::TraditionalCompatible);
/// assert_eq!("traditional".parse(), Ok(RouterFlavor::Traditional));
/// assert!("expressions".parse::<RouterFlavor>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouterFlavor {
    /// Kong's default: every route joins paths as `v0`; `v1` routes are accepted with
    /// Kong's deprecation warning and joined as `v0`.
    #[default]
    TraditionalCompatible,
    /// Kong's `traditional`: `v1` routes join as `v1` (Kong's `kong/router/traditional.lua`).
    Traditional,
}

impl std::str::FromStr for RouterFlavor {
    type Err = String;

    /// `traditional_compatible` or `traditional`; `expressions` (routes written as ATC
    /// expressions) is refused: this gateway's routes are the traditional ones.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "traditional_compatible" => Ok(RouterFlavor::TraditionalCompatible),
            "traditional" => Ok(RouterFlavor::Traditional),
            "expressions" => Err(
                "router_flavor = expressions is not supported by this gateway: its routes are Kong's traditional ones (use traditional_compatible, Kong's default, or traditional)"
                    .to_owned(),
            ),
            other => Err(format!(
                "router_flavor has an invalid value: '{other}' (traditional, traditional_compatible, expressions)"
            )),
        }
    }
}

impl std::fmt::Debug for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeInfo")
            .field("id", &self.id)
            .field("hostname", &self.hostname)
            .field("trusted_ips", &self.trusted_ips)
            .field("counters", &self.counters)
            .field("redis", &self.redis.is_some())
            .field("timers", &self.timers.is_some())
            .field("http", &self.http.is_some())
            .field("tcp", &self.tcp.is_some())
            .field("stats", &self.stats.statistics())
            .field("cluster_id", &self.cluster_id.get())
            .finish_non_exhaustive()
    }
}

impl Default for NodeInfo {
    fn default() -> Self {
        NodeInfo {
            id: Uuid::new_v4(),
            hostname: "localhost".into(),
            trusted_ips: Vec::new(),
            error_log: None,
            counters: Default::default(),
            #[cfg(feature = "gateway")]
            redis: Some(std::sync::Arc::new(crate::engine::RedisPool::default())),
            #[cfg(not(feature = "gateway"))]
            redis: None,
            #[cfg(feature = "gateway")]
            timers: Some(std::sync::Arc::new(crate::engine::TokioTimers::default())),
            #[cfg(not(feature = "gateway"))]
            timers: None,
            #[cfg(feature = "gateway")]
            http: Some(std::sync::Arc::new(crate::engine::Http::default())),
            #[cfg(not(feature = "gateway"))]
            http: None,
            #[cfg(feature = "gateway")]
            tcp: Some(std::sync::Arc::new(crate::engine::Tcp::default())),
            #[cfg(not(feature = "gateway"))]
            tcp: None,
            stats: Default::default(),
            cluster_id: Default::default(),
            router_flavor: RouterFlavor::default(),
            tracing: Default::default(),
            cache: Default::default(),
            health: Default::default(),
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

/// Whether `ip` is in the network `net`/`bits`.
pub(crate) fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
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

/// A log level of Kong's (`kong.log.<level>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `notice` (what `kong.log(...)` uses).
    Notice,
    /// `warn`.
    Warn,
    /// `err`.
    Err,
    /// `crit`.
    Crit,
    /// `alert`.
    Alert,
    /// `emerg`.
    Emerg,
}

/// A line a plugin logged, as kept by the [testing](crate::testing) harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Level.
    pub level: Level,
    /// `[plugin-name] message`.
    pub message: String,
    /// When, in ns since the Unix epoch.
    pub time_ns: u64,
    /// The span active when it was logged, when the request is traced.
    pub span_id: Option<crate::tracer::SpanId>,
}

impl Level {
    /// Kong's name for the level, as in `error.log` (`[error]`, `[notice]`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warn => "warn",
            Level::Err => "error",
            Level::Crit => "crit",
            Level::Alert => "alert",
            Level::Emerg => "emerg",
        }
    }
}

/// The recent lines a node logged, kept in memory (the `error.log` the testing helpers print
/// when an assertion fails). Set it as [`NodeInfo::error_log`](crate::pdk::NodeInfo::error_log).
///
/// ```
/// use kong_pdk::pdk::{ErrorLog, Level};
/// let log = ErrorLog::new(2);
/// log.push(Level::Notice, "[my-plugin] one");
/// log.push(Level::Err, "[my-plugin] two");
/// log.push(Level::Warn, "[my-plugin] three");
/// assert_eq!(log.lines(), ["[error] [my-plugin] two", "[warn] [my-plugin] three"]);
/// ```
#[derive(Debug)]
pub struct ErrorLog {
    capacity: usize,
    lines: std::sync::Mutex<std::collections::VecDeque<String>>,
}

impl ErrorLog {
    /// A log keeping the last `capacity` lines.
    pub fn new(capacity: usize) -> ErrorLog {
        ErrorLog {
            capacity: capacity.max(1),
            lines: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    /// Appends a line as `[level] line`, dropping the oldest when full.
    pub fn push(&self, level: Level, line: &str) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(format!("[{}] {line}", level.as_str()));
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
