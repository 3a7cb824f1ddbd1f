//! Kong's DNS client for upstream targets (`kong/resty/dns/client.lua`, the `dns_*` settings):
//! a target named by host is resolved by record type in `dns_order` (`LAST` first: the type
//! that answered last time), an SRV answer's targets to their addresses, names in
//! `dns_hostsfile` without a query; each answer lives for its records' TTL, and a name that
//! stops resolving keeps its last answer for `dns_stale_ttl`.
//!
//! The queries go to `dns_resolver`'s servers (the system's `/etc/resolv.conf` by default)
//! through `hickory-resolver`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;

/// A record type Kong's `dns_order` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// The type that answered the name last time.
    Last,
    /// SRV.
    Srv,
    /// A (IPv4).
    A,
    /// AAAA (IPv6).
    Aaaa,
    /// CNAME (followed by the A and AAAA queries themselves).
    Cname,
}

/// The `dns_*` settings.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// `dns_resolver`: the servers to ask; empty means the system's.
    pub resolvers: Vec<SocketAddr>,
    /// `dns_hostsfile` (`/etc/hosts` by default).
    pub hostsfile: std::path::PathBuf,
    /// `dns_order` (`LAST,SRV,A,CNAME` by default).
    pub order: Vec<RecordKind>,
    /// `dns_stale_ttl`: how long a name that stops resolving keeps its last answer (3600 s).
    pub stale_ttl: Duration,
    /// `dns_valid_ttl`: a TTL every answer gets instead of its records' (unset by default).
    pub valid_ttl: Option<Duration>,
    /// `dns_not_found_ttl`: when a name that does not exist is asked again (30 s).
    pub not_found_ttl: Duration,
    /// `dns_error_ttl`: when a name whose query failed is asked again (1 s).
    pub error_ttl: Duration,
}

impl Default for DnsSettings {
    fn default() -> DnsSettings {
        DnsSettings {
            resolvers: Vec::new(),
            hostsfile: "/etc/hosts".into(),
            order: vec![RecordKind::Last, RecordKind::Srv, RecordKind::A, RecordKind::Cname],
            stale_ttl: Duration::from_secs(3600),
            valid_ttl: None,
            not_found_ttl: Duration::from_secs(30),
            error_ttl: Duration::from_secs(1),
        }
    }
}

impl DnsSettings {
    /// Parses `dns_order` (`LAST,SRV,A,AAAA,CNAME`, case-insensitive), with Kong's message for
    /// an unknown type.
    ///
    /// ```
    /// use kong_pdk::gateway::{DnsSettings, RecordKind};
    /// assert_eq!(DnsSettings::parse_order("srv, a").unwrap(), [RecordKind::Srv, RecordKind::A]);
    /// assert_eq!(DnsSettings::parse_order("MX").unwrap_err(), "invalid dns_order: MX");
    /// ```
    pub fn parse_order(value: &str) -> Result<Vec<RecordKind>, String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.to_ascii_uppercase().as_str() {
                "LAST" => Ok(RecordKind::Last),
                "SRV" => Ok(RecordKind::Srv),
                "A" => Ok(RecordKind::A),
                "AAAA" => Ok(RecordKind::Aaaa),
                "CNAME" => Ok(RecordKind::Cname),
                _ => Err(format!("invalid dns_order: {s}")),
            })
            .collect()
    }
}

/// One address a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// The address.
    pub ip: IpAddr,
    /// An SRV record's port (else the target's).
    pub port: Option<u16>,
    /// An SRV record's weight (else the target's).
    pub weight: Option<u16>,
    /// An SRV record's target name (`use_srv_name`).
    pub name: Option<String>,
}

/// What a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The record type that answered (`A`, `AAAA`, `SRV`), as Kong's health shows it.
    pub kind: &'static str,
    /// The addresses.
    pub records: Vec<DnsRecord>,
    /// How long the answer holds (the smallest TTL of its records; zero: ask again at each
    /// connection).
    pub ttl: Duration,
}

/// What a name resolved to, or why not and whether because it does not exist.
pub(crate) type Answer = Result<Resolution, (String, bool)>;

/// The DNS client.
pub struct Dns {
    resolver: TokioResolver,
    hosts: HashMap<String, Vec<IpAddr>>,
    order: Vec<RecordKind>,
    /// `dns_stale_ttl`.
    pub(crate) stale_ttl: Duration,
    valid_ttl: Option<Duration>,
    /// `dns_not_found_ttl` and `dns_error_ttl`.
    pub(crate) not_found_ttl: Duration,
    pub(crate) error_ttl: Duration,
    /// The type that answered each name last (`LAST`).
    last: Mutex<HashMap<String, RecordKind>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

/// The most names the LAST memory keeps.
const LAST_MAX: usize = 10_000;

impl Dns {
    /// A client with `settings`: the hosts file read now (a missing file is no hosts), the
    /// servers given or the system's.
    pub fn new(settings: &DnsSettings) -> Result<Dns, String> {
        let (config, mut opts) = if settings.resolvers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("dns_resolver: could not read the system's resolver configuration: {e}"))?
        } else {
            let mut group = NameServerConfigGroup::new();
            for addr in &settings.resolvers {
                group.merge(NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true));
            }
            (
                ResolverConfig::from_parts(None, Vec::new(), group),
                ResolverOpts::default(),
            )
        };
        // The hosts file is Kong's `dns_hostsfile`, read here; hickory keeps to the servers.
        opts.use_hosts_file = ResolveHosts::Never;
        // No cache below ours: each answer's TTLs are the server's (a cached answer's TTLs count
        // down to 0, which would read as Kong's "ttl=0").
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        let resolver = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Ok(Dns {
            resolver,
            hosts: read_hosts(&settings.hostsfile),
            order: settings.order.clone(),
            stale_ttl: settings.stale_ttl,
            valid_ttl: settings.valid_ttl,
            not_found_ttl: settings.not_found_ttl,
            error_ttl: settings.error_ttl,
            last: Mutex::default(),
        })
    }

    /// Resolves `name` (a host name) by `dns_order`; `Err` carries why nothing answered.
    pub async fn resolve(&self, name: &str) -> Result<Resolution, String> {
        self.resolve_kind(name).await.map_err(|(e, _)| e)
    }

    /// As [`resolve`](Self::resolve); the error also says whether the name does not exist
    /// (rather than a query that failed).
    pub(crate) async fn resolve_kind(&self, name: &str) -> Answer {
        let key = name.to_ascii_lowercase();
        if let Some(ips) = self.hosts.get(&key) {
            // The families dns_order asks for: A first, AAAA only when listed.
            let v4: Vec<IpAddr> = ips.iter().copied().filter(IpAddr::is_ipv4).collect();
            let (kind, ips) = if !v4.is_empty() && self.order.contains(&RecordKind::A) {
                ("A", v4)
            } else if self.order.contains(&RecordKind::Aaaa) {
                ("AAAA", ips.iter().copied().filter(IpAddr::is_ipv6).collect())
            } else {
                ("A", Vec::new())
            };
            if !ips.is_empty() {
                return Ok(Resolution {
                    kind,
                    records: ips.into_iter().map(record).collect(),
                    ttl: Duration::from_secs(10 * 365 * 24 * 3600),
                });
            }
        }
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied();
        let mut error = (
            format!("dns client error: no record of types {:?} for {name}", self.order),
            true,
        );
        for kind in &self.order {
            let kind = match kind {
                RecordKind::Last => match last {
                    Some(k) => k,
                    None => continue,
                },
                RecordKind::Cname => continue,
                k => *k,
            };
            match self.query(name, kind).await {
                Ok(mut r) if !r.records.is_empty() => {
                    if let Some(ttl) = self.valid_ttl {
                        r.ttl = ttl;
                    }
                    // Sorted, so a server that rotates its answers changes nothing.
                    r.records
                        .sort_by(|a, b| (a.ip, a.port, &a.name).cmp(&(b.ip, b.port, &b.name)));
                    let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                    if last.len() >= LAST_MAX {
                        last.clear();
                    }
                    last.insert(key, kind);
                    return Ok(r);
                }
                Ok(_) => {}
                Err(e) => error = e,
            }
        }
        Err(error)
    }

    async fn query(&self, name: &str, kind: RecordKind) -> Answer {
        // Kong's texts for a name that does not exist and for an empty answer.
        let failed = |e: hickory_resolver::ResolveError| {
            if e.is_nx_domain() {
                ("dns server error: 3 name error".to_owned(), true)
            } else if e.is_no_records_found() {
                ("dns client error: 101 empty record received".to_owned(), true)
            } else {
                (e.to_string(), false)
            }
        };
        // The answer's smallest record TTL (0 is Kong's "virtual SRV").
        let ttl_of = |lookup: &hickory_resolver::lookup::Lookup| {
            Duration::from_secs(u64::from(lookup.record_iter().map(|r| r.ttl()).min().unwrap_or(0)))
        };
        match kind {
            RecordKind::Srv => {
                let answer = self.resolver.srv_lookup(name).await.map_err(failed)?;
                let mut ttl_left = ttl_of(answer.as_lookup());
                // Only the best (lowest) priority is used.
                let best = answer.iter().map(|s| s.priority()).min();
                let mut records = Vec::new();
                for srv in answer.iter().filter(|s| Some(s.priority()) == best) {
                    let target = srv.target().to_utf8();
                    let target = target.trim_end_matches('.').to_owned();
                    let ips = match self.hosts.get(&target.to_ascii_lowercase()) {
                        Some(ips) => ips.clone(),
                        None => match self.resolver.ipv4_lookup(target.as_str()).await {
                            Ok(a) => {
                                ttl_left = ttl_left.min(ttl_of(a.as_lookup()));
                                a.iter().map(|ip| IpAddr::V4(ip.0)).collect()
                            }
                            Err(_) => Vec::new(),
                        },
                    };
                    for ip in ips {
                        records.push(DnsRecord {
                            ip,
                            // Port 0: the target's own (Kong's).
                            port: Some(srv.port()).filter(|p| *p != 0),
                            weight: Some(srv.weight()),
                            name: Some(target.clone()),
                        });
                    }
                }
                Ok(Resolution {
                    kind: "SRV",
                    records,
                    ttl: ttl_left,
                })
            }
            RecordKind::A => {
                let answer = self.resolver.ipv4_lookup(name).await.map_err(failed)?;
                Ok(Resolution {
                    kind: "A",
                    records: answer.iter().map(|ip| record(IpAddr::V4(ip.0))).collect(),
                    ttl: ttl_of(answer.as_lookup()),
                })
            }
            _ => {
                let answer = self.resolver.ipv6_lookup(name).await.map_err(failed)?;
                Ok(Resolution {
                    kind: "AAAA",
                    records: answer.iter().map(|ip| record(IpAddr::V6(ip.0))).collect(),
                    ttl: ttl_of(answer.as_lookup()),
                })
            }
        }
    }
}

fn record(ip: IpAddr) -> DnsRecord {
    DnsRecord {
        ip,
        port: None,
        weight: None,
        name: None,
    }
}

/// The hosts file's names (lowercase) and their addresses; a file that cannot be read has none.
fn read_hosts(path: &Path) -> HashMap<String, Vec<IpAddr>> {
    let mut hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return hosts;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        for name in words {
            let ips = hosts.entry(name.to_ascii_lowercase()).or_default();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_file_is_read_as_kong_reads_it() {
        let dir = std::env::temp_dir().join(format!("kong-dns-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        std::fs::write(
            &path,
            "# comment\n10.0.0.1 svc.local Svc2 # trailing\n::1 svc.local\nnot-an-ip x\n",
        )
        .unwrap();
        let hosts = read_hosts(&path);
        assert_eq!(
            hosts["svc.local"],
            ["10.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]
        );
        assert_eq!(hosts["svc2"], ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(!hosts.contains_key("x"));
        assert!(read_hosts(&dir.join("missing")).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The answer a name gave, without its remaining TTL: what a rebuild depends on.
fn same_answers(a: &super::Resolved, b: &super::Resolved) -> bool {
    let key = |r: &Result<Resolution, String>| match r {
        Ok(r) => Ok((r.kind, r.records.clone(), r.ttl.is_zero())),
        Err(e) => Err(e.clone()),
    };
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| key(v) == key(w)))
}

/// How many of an upstream's names are resolved at once.
const RESOLVING_AT_ONCE: usize = 8;
/// The shortest and longest wait between two resolutions of an upstream's names.
const MIN_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The running resolvers of upstreams' host names, one task per upstream that has some; a
/// new configuration restarts them, and they stop when this drops.
#[derive(Default)]
pub(crate) struct Refreshers {
    running: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Refreshers {
    /// Starts a resolver for each upstream of `balancers` with targets named by host (and
    /// stops those of the previous configuration). Outside a Tokio runtime, nothing starts.
    pub(crate) fn sync(
        &self,
        balancers: &super::Balancers,
        dns: &std::sync::Arc<Dns>,
        book: &std::sync::Arc<crate::health::HealthBook>,
    ) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for task in running.drain(..) {
            task.abort();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for slot in balancers.slots() {
            if slot.load().names().is_empty() {
                continue;
            }
            let task = runtime.spawn(refresh(slot.clone(), dns.clone(), book.clone()));
            running.push(task.abort_handle());
        }
    }
}

impl Drop for Refreshers {
    fn drop(&mut self) {
        for task in self.running.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

/// Resolves the slot's host names now and again when their answers expire, replacing the
/// balancer when an answer changes; a name that stops answering keeps its last answer for
/// `dns_stale_ttl`.
async fn refresh(
    slot: std::sync::Arc<super::Slot>,
    dns: std::sync::Arc<Dns>,
    book: std::sync::Arc<crate::health::HealthBook>,
) {
    // What the slot starts from (seeded from the configuration before it) counts as known.
    let seeded = slot.load().resolved.clone();
    let mut good: HashMap<String, (Resolution, Instant)> = seeded
        .iter()
        .filter_map(|(name, r)| Some((name.clone(), (r.as_ref().ok()?.clone(), Instant::now()))))
        .collect();
    let mut previous: Option<super::Resolved> = (!seeded.is_empty()).then_some(seeded);
    loop {
        let current = slot.load_full();
        let mut resolved = super::Resolved::new();
        let mut wait = MAX_WAIT;
        // The names at once (a few at a time), so a slow one does not hold the others back.
        let answers: Vec<(String, Answer)> = {
            use futures_util::StreamExt;
            let dns = &dns;
            futures_util::stream::iter(current.names())
                .map(|name| async move {
                    let answer = dns.resolve_kind(&name).await;
                    (name, answer)
                })
                .buffer_unordered(RESOLVING_AT_ONCE)
                .collect()
                .await
        };
        for (name, answer) in answers {
            match answer {
                Ok(r) => {
                    wait = wait.min(r.ttl);
                    good.insert(name.clone(), (r.clone(), Instant::now()));
                    resolved.insert(name, Ok(r));
                }
                Err((e, not_found)) => {
                    wait = wait.min(if not_found { dns.not_found_ttl } else { dns.error_ttl });
                    // Stale answers cover failed queries, not names that no longer exist.
                    match good.get(&name).filter(|_| !not_found) {
                        Some((r, at)) if at.elapsed() < dns.stale_ttl => {
                            tracing::warn!(target: "kong", "[dns] {name}: {e}; serving the answer of {}s ago", at.elapsed().as_secs());
                            resolved.insert(name, Ok(r.clone()));
                        }
                        _ => {
                            tracing::error!(target: "kong", "[dns] {name}: {e}");
                            resolved.insert(name, Err(e));
                        }
                    }
                }
            }
        }
        if previous.as_ref().is_none_or(|p| !same_answers(p, &resolved)) {
            let next = current.resolved(&book, &resolved);
            next.label();
            // The addresses DNS no longer gives are forgotten.
            let id = next.upstream.id;
            let live: std::collections::HashSet<(String, u16)> =
                next.addresses.iter().map(|a| (a.host.clone(), a.port)).collect();
            book.retain(|upstream, host, port| upstream != id || live.contains(&(host.to_owned(), port)));
            slot.store(std::sync::Arc::new(next));
            previous = Some(resolved);
        }
        tokio::time::sleep(wait.clamp(MIN_WAIT, MAX_WAIT)).await;
    }
}
