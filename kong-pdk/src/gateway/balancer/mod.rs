//! Upstreams and their targets, as Kong's ring balancer (`kong/runloop/balancer/*`): a service
//! whose `host` names an upstream is proxied to one of the upstream's target addresses, chosen
//! by the upstream's `algorithm`, among the addresses its health checks keep in; a retry moves
//! to another address.
//!
//! - `round-robin`: weighted, spread out (nginx's smooth weighted round-robin).
//! - `consistent-hashing`: Kong's continuum: `slots` points (at least 1000), each address
//!   owning points in proportion to its weight, placed by xxHash32 as Kong places them, so a
//!   hash input keeps its target across reloads and most keep theirs as targets come and go.
//! - `least-connections`: the fewest requests in flight for the weight.
//! - `latency`: the lowest decaying average response time for the weight.
//!
//! Health lives in the node's [`HealthBook`]: it outlives configuration changes, and the
//! balancers of every snapshot share it. Active probes run in [`checks`].

pub(crate) mod checks;
pub(crate) mod dns;
mod hash;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::entities::{Algorithm, CheckType, Target, Upstream};
use crate::health::{HealthBook, PeerState, Report, Thresholds};

pub(crate) use hash::hash_input;

/// One upstream, ready to pick from.
#[derive(Debug)]
pub struct Balancer {
    /// The upstream entity.
    pub upstream: Upstream,
    /// The `Host` header sent to targets, when the upstream sets one.
    pub host_header: Option<String>,
    /// The configured targets, in configuration order (weight 0 included).
    targets: Vec<TargetEntry>,
    /// The addresses that take traffic (targets with a weight above 0).
    addresses: Vec<Address>,
    picker: Picker,
    /// Where round-robin, and the tie-breaking of the other algorithms, goes next.
    next: AtomicUsize,
    total_weight: u64,
    passive: Thresholds,
    /// Whether any health check is on (passive reports are skipped otherwise).
    checks_on: bool,
    /// What the targets' host names resolved to when this balancer was built.
    resolved: Resolved,
}

#[derive(Debug)]
struct TargetEntry {
    entity: Target,
    host: String,
    port: u16,
    /// Kong's `dns` of the target's health: the record type that answered, `ttl=0, virtual
    /// SRV`, or the resolution's error.
    dns: String,
    /// Whether the name resolved to nothing (Kong's `DNS_ERROR`).
    dns_error: bool,
}

/// What the targets' host names resolved to, by lowercase name.
pub(crate) type Resolved = HashMap<String, Result<dns::Resolution, String>>;

/// An address a request can go to.
#[derive(Debug)]
pub struct Address {
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Weight (above 0).
    pub weight: u32,
    /// Its health, requests in flight and latency.
    pub state: Arc<PeerState>,
    /// The target it comes from (an index into the upstream's targets).
    target: usize,
    /// The name it is asked for by (the `Host` and TLS name of a try): its target's host, or
    /// with `use_srv_name` the SRV record's target.
    pub name: String,
    /// The SRV record's target name when the address comes from one: Kong's balancer keeps
    /// that name as the address (resolving it at each connection), so `/health` shows it and
    /// the hash ring places it by it.
    srv_target: Option<String>,
}

impl Address {
    /// The address as Kong's balancer names it (`/health`'s `ip`, the hash ring's key): the
    /// SRV record's target name, or the IP, an IPv6 one in brackets.
    fn kong_ip(&self) -> std::borrow::Cow<'_, str> {
        match &self.srv_target {
            Some(name) => std::borrow::Cow::Borrowed(name),
            None => shown_ip(&self.host),
        }
    }
}

#[derive(Debug)]
enum Picker {
    /// Address indexes, each in proportion to its weight, spread out.
    RoundRobin(Vec<usize>),
    /// The continuum: for each point, the address that owns it (`u32::MAX`: none).
    Hashing(Vec<u32>),
    LeastConnections,
    Latency,
}

/// The longest round-robin wheel; weights are scaled down to fit.
const WHEEL_MAX: u64 = 4096;
/// Points per address on the continuum when all weigh the same (Kong's `SERVER_POINTS`).
const SERVER_POINTS: u64 = 160;
/// The smallest continuum (Kong's `MIN_CONTINUUM_SIZE`).
const MIN_POINTS: u32 = 1000;
/// The largest continuum (`slots` is at most 2^16).
const MAX_POINTS: u32 = 65_536;
const NO_ADDRESS: u32 = u32::MAX;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Smooth weighted round-robin over `weights`, one full cycle.
fn wheel(weights: &[u64]) -> Vec<usize> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let mut w: Vec<u64> = weights.iter().map(|x| x / g).collect();
    let total: u64 = w.iter().sum();
    if total > WHEEL_MAX {
        w = w.iter().map(|x| (x * WHEEL_MAX / total).max(1)).collect();
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += *wi as i64;
        }
        let best = (0..w.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        current[best] -= total;
        out.push(best);
    }
    out
}

/// Kong's continuum index of `value` (1-based, as Kong's `get_continuum_index`).
fn continuum_index(value: &str, points: u32) -> u32 {
    xxhash_rust::xxh32::xxh32(value.as_bytes(), 0) % points + 1
}

/// Kong's continuum: addresses sorted by `host:port`, each owning points in proportion to its
/// weight, placed by hashing `"<ip>::<port> <n>"` (Kong's string, double colon included).
fn continuum(addresses: &[Address], targets: usize, slots: u32) -> Vec<u32> {
    let points = slots.clamp(MIN_POINTS, MAX_POINTS);
    let mut ring = vec![NO_ADDRESS; points as usize + 1];
    let total: u64 = addresses.iter().map(|a| u64::from(a.weight)).sum();
    if total == 0 {
        return ring;
    }
    let mut order: Vec<usize> = (0..addresses.len()).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&addresses[*a], &addresses[*b]);
        (a.kong_ip(), a.port).cmp(&(b.kong_ip(), b.port))
    });
    let mut name = String::new();
    for i in order {
        let a = &addresses[i];
        // Kong: floor(weight / total * #targets * 160), at least 1.
        let share = f64::from(a.weight) / total as f64 * targets as f64 * SERVER_POINTS as f64;
        let mut entries = (share.floor() as u64).max(1);
        let mut n = 1u64;
        while n <= entries {
            use std::fmt::Write;
            name.clear();
            let _ = write!(name, "{}::{} {n}", a.kong_ip(), a.port);
            let at = continuum_index(&name, points) as usize;
            if ring[at] == NO_ADDRESS {
                ring[at] = i as u32;
            } else {
                entries += 1; // a collision: one more try
            }
            n += 1;
            if n > u64::from(points) {
                tracing::error!(target: "kong", "consistent hashing balancer requires more entries to add the number of hosts requested, please increase the wheel size");
                return ring;
            }
        }
    }
    ring
}

/// Where one request stands with its balancer: the hash, and the addresses tried.
#[derive(Debug, Default)]
pub struct PickState {
    /// The continuum index of the request's hash input.
    hash: Option<u32>,
    /// Addresses tried so far (indexes).
    tried: Vec<usize>,
    /// The request counted in flight at the address of its latest try.
    lease: Option<crate::health::InFlight>,
}

impl PickState {
    /// A state for a request whose hash input (for `consistent-hashing`) is `input`.
    pub fn new(input: Option<&str>, balancer: &Balancer) -> PickState {
        let hash = match (&balancer.picker, input) {
            (Picker::Hashing(ring), input) => Some(continuum_index(input.unwrap_or(""), (ring.len() - 1) as u32)),
            _ => None,
        };
        PickState {
            hash,
            tried: Vec::new(),
            lease: None,
        }
    }

    /// Starts a try at address `index` of `balancer`: for least-connections, the request
    /// counts in flight there (and no longer at the previous try's address).
    pub fn start(&mut self, balancer: &Balancer, index: usize) {
        if matches!(balancer.picker, Picker::LeastConnections) {
            self.lease = Some(balancer.addresses[index].state.start_request());
        }
    }

    /// The in-flight count of the latest try, to hold until the request ends.
    pub fn into_lease(self) -> Option<crate::health::InFlight> {
        self.lease
    }
}

impl Balancer {
    fn new(upstream: &Upstream, targets: &[&Target], book: &HealthBook, resolved: &Resolved) -> Balancer {
        let mut entries = Vec::new();
        let mut addresses = Vec::new();
        for (index, t) in targets.iter().enumerate() {
            let (host, port) = split_target(&t.target);
            let ip = host.parse::<std::net::IpAddr>().ok();
            let target_host = host.clone();
            let mut add = |host: String, port: u16, weight: u32, srv_target: Option<String>| {
                let name = srv_target
                    .clone()
                    .filter(|_| upstream.use_srv_name)
                    .unwrap_or_else(|| target_host.clone());
                if t.weight > 0 && weight > 0 {
                    let state = book.peer(upstream.id, &host, port);
                    addresses.push(Address {
                        host,
                        port,
                        weight,
                        state,
                        target: index,
                        name,
                        srv_target,
                    });
                }
            };
            let (dns, dns_error) = match (ip, resolved.get(&host.to_ascii_lowercase())) {
                (Some(ip), _) => {
                    add(host.clone(), port, t.weight, None);
                    ((if ip.is_ipv4() { "A" } else { "AAAA" }).to_owned(), false)
                }
                // Not resolved yet (or no DNS client): the name, resolved at connection.
                (None, None) => {
                    add(host.clone(), port, t.weight, None);
                    ("unknown".to_owned(), false)
                }
                // TTL 0: Kong's "virtual SRV", the name resolved at each connection.
                (None, Some(Ok(r))) if r.ttl.is_zero() => {
                    add(host.clone(), port, t.weight, None);
                    ("ttl=0, virtual SRV".to_owned(), false)
                }
                (None, Some(Ok(r))) => {
                    for rec in &r.records {
                        let weight = rec.weight.map_or(t.weight, |w| u32::from(w.max(1)));
                        add(rec.ip.to_string(), rec.port.unwrap_or(port), weight, rec.name.clone());
                    }
                    (r.kind.to_owned(), false)
                }
                (None, Some(Err(e))) => (e.clone(), true),
            };
            if ip.is_none() {
                book.set_dns_error(upstream.id, &upstream.name, &format_target(&t.target), dns_error);
            }
            entries.push(TargetEntry {
                entity: (*t).clone(),
                host,
                port,
                dns,
                dns_error,
            });
        }
        let picker = match upstream.algorithm {
            Algorithm::RoundRobin => {
                let weights: Vec<u64> = addresses.iter().map(|a| u64::from(a.weight)).collect();
                Picker::RoundRobin(wheel(&weights))
            }
            Algorithm::ConsistentHashing => Picker::Hashing(continuum(&addresses, entries.len(), upstream.slots)),
            Algorithm::LeastConnections => Picker::LeastConnections,
            Algorithm::Latency => Picker::Latency,
        };
        let passive = &upstream.healthchecks.passive;
        Balancer {
            host_header: upstream.host_header.clone(),
            total_weight: addresses.iter().map(|a| u64::from(a.weight)).sum(),
            targets: entries,
            addresses,
            picker,
            next: AtomicUsize::new(0),
            passive: Thresholds::of(&passive.healthy, &passive.unhealthy),
            checks_on: upstream.uses_healthchecks(),
            upstream: upstream.clone(),
            resolved: resolved.clone(),
        }
    }

    /// The address at `index` (from [`pick`](Self::pick)).
    pub fn address(&self, index: usize) -> &Address {
        &self.addresses[index]
    }

    /// The addresses that take traffic.
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
    }

    /// Whether address `index` takes traffic: always, when the upstream has no health check on
    /// (Kong has no health checker then), else as its health says.
    fn available(&self, index: usize) -> bool {
        !self.checks_on || self.addresses[index].state.is_healthy()
    }

    /// The weight of the available addresses.
    pub fn available_weight(&self) -> u64 {
        (0..self.addresses.len())
            .filter(|&i| self.available(i))
            .map(|i| u64::from(self.addresses[i].weight))
            .sum()
    }

    /// Whether the upstream is healthy: some weight is available, and more than the
    /// `healthchecks.threshold` percentage of it.
    pub fn is_healthy(&self) -> bool {
        if self.total_weight == 0 {
            return false;
        }
        if !self.checks_on {
            return true;
        }
        let available = self.available_weight() as f64 / self.total_weight as f64 * 100.0;
        available > 0.0 && available > self.upstream.healthchecks.threshold
    }

    /// The address for the next try of a request (its index), skipping unhealthy ones and,
    /// while others are left, those it already tried. `None`: no address can take it (Kong's
    /// `failure to get a peer from the ring-balancer`).
    pub fn pick(&self, state: &mut PickState) -> Option<usize> {
        if !self.is_healthy() {
            return None;
        }
        let n = self.addresses.len();
        let mut chosen = None;
        // Addresses not tried yet first; once every available one was, round again.
        for _ in 0..2 {
            let tried = &state.tried;
            let usable = |i: usize| self.available(i) && !tried.contains(&i);
            chosen = match &self.picker {
                Picker::RoundRobin(wheel) if !wheel.is_empty() => {
                    let start = self.next.fetch_add(1, Ordering::Relaxed);
                    (0..wheel.len())
                        .map(|k| wheel[(start + k) % wheel.len()])
                        .find(|&i| usable(i))
                }
                Picker::RoundRobin(_) => None,
                Picker::Hashing(ring) => {
                    // Kong walks the continuum downwards from the hash's point.
                    let points = ring.len() - 1;
                    let start = state.hash.unwrap_or(1) as usize;
                    (0..points)
                        .map(|k| (start + points - 1 - k) % points + 1)
                        .map(|at| ring[at])
                        .find(|&i| i != NO_ADDRESS && usable(i as usize))
                        .map(|i| i as usize)
                }
                Picker::LeastConnections => self.lowest(&usable, |a| f64::from(a.state.in_flight() + 1)),
                Picker::Latency => {
                    // Kong's slow start: an address not measured yet scores the average.
                    let (sum, count) = self
                        .addresses
                        .iter()
                        .filter_map(|a| a.state.latency())
                        .fold((0.0, 0u32), |(sum, count), l| (sum + l, count + 1));
                    let seed = if count == 0 { 0.0 } else { sum / f64::from(count) };
                    self.lowest(&usable, |a| a.state.latency().unwrap_or(seed))
                }
            };
            if chosen.is_some() || n == 0 || state.tried.is_empty() {
                break;
            }
            state.tried.clear();
        }
        let i = chosen?;
        state.tried.push(i);
        Some(i)
    }

    /// The usable address with the lowest `score / weight`; ties go round in turn.
    fn lowest(&self, usable: &impl Fn(usize) -> bool, score: impl Fn(&Address) -> f64) -> Option<usize> {
        let n = self.addresses.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !usable(i) {
                continue;
            }
            let a = &self.addresses[i];
            let s = score(a) / f64::from(a.weight);
            if best.is_none_or(|(_, b)| s < b) {
                best = Some((i, s));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Names the addresses after the upstream and their targets (for the node's health view).
    pub(crate) fn label(&self) {
        for a in &self.addresses {
            let t = &self.targets[a.target];
            a.state
                .label(&self.upstream.name, &format_target(&t.entity.target), self.checks_on);
        }
    }

    /// This balancer with its targets' host names resolved as `resolved` says.
    pub(crate) fn resolved(&self, book: &HealthBook, resolved: &Resolved) -> Balancer {
        let targets: Vec<&Target> = self.targets.iter().map(|t| &t.entity).collect();
        Balancer::new(&self.upstream, &targets, book, resolved)
    }

    /// The host names among the targets (those the DNS client resolves).
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .targets
            .iter()
            .filter(|t| t.host.parse::<std::net::IpAddr>().is_err())
            .map(|t| t.host.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Records a try at address `index` that took `elapsed`: its response time for the
    /// latency balancer, and its outcome for the passive health checks (`Ok(0)`: a reused
    /// connection found closed, sent again, which says nothing about the target).
    pub(crate) fn record(&self, index: usize, elapsed: std::time::Duration, outcome: Result<u16, Report>) {
        if outcome == Ok(0) {
            return;
        }
        if matches!(self.picker, Picker::Latency) && outcome.is_ok() {
            self.addresses[index].state.record_latency(elapsed.as_secs_f64());
        }
        if self.checks_on {
            self.report(index, outcome);
        }
    }

    /// Records a stream connection to address `index` that took `elapsed`: `None` when it
    /// opened (a success for the passive checks), else the failure.
    pub(crate) fn record_connect(&self, index: usize, elapsed: std::time::Duration, failure: Option<Report>) {
        if matches!(self.picker, Picker::Latency) && failure.is_none() {
            self.addresses[index].state.record_latency(elapsed.as_secs_f64());
        }
        if self.checks_on {
            self.apply(index, failure.unwrap_or(Report::Success), &self.passive, "passive");
        }
    }

    /// Reports what a try at address `index` met to the passive health checks: `Ok(status)`
    /// for a response, `Err` for a failure to connect or a timeout.
    pub fn report(&self, index: usize, outcome: Result<u16, Report>) {
        let passive = &self.upstream.healthchecks.passive;
        let report = match outcome {
            Ok(_) if passive.kind == CheckType::Tcp => Some(Report::Success),
            Ok(status) => Report::of_status(status, &passive.healthy, &passive.unhealthy),
            Err(r) => Some(r),
        };
        if let Some(report) = report {
            self.apply(index, report, &self.passive, "passive");
        }
    }

    /// Counts `report` for address `index` with `limits`, logging a change of health.
    pub(crate) fn apply(&self, index: usize, report: Report, limits: &Thresholds, source: &str) {
        let a = &self.addresses[index];
        if let Some(healthy) = a.state.report(report, limits) {
            let now = if healthy { "healthy" } else { "unhealthy" };
            tracing::warn!(target: "kong", "[healthchecks] ({}) {source} check: target {}:{} is now {now}", self.upstream.name, a.host, a.port);
        }
    }

    /// Kong's `GET /upstreams/{u}/health` records' `health` and `data` for each target with
    /// the weight it has: `(target entity, health, data)`.
    pub fn target_health(&self) -> Vec<(Value, &'static str, Value)> {
        self.targets
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let addrs: Vec<&Address> = self.addresses.iter().filter(|a| a.target == index).collect();
                let mut health = "HEALTHCHECKS_OFF";
                for a in &addrs {
                    match self.address_health(a) {
                        "HEALTHY" => {
                            health = "HEALTHY";
                            break;
                        }
                        "UNHEALTHY" => health = "UNHEALTHY",
                        _ => {}
                    }
                }
                if t.dns_error {
                    health = "DNS_ERROR";
                }
                let entity = serde_json::to_value(&t.entity).unwrap_or(Value::Null);
                (entity, health, self.target_status(t, &addrs))
            })
            .collect()
    }

    /// An address's `health` in Kong's health answers.
    fn address_health(&self, a: &Address) -> &'static str {
        match (self.checks_on, a.state.is_healthy()) {
            (false, _) => "HEALTHCHECKS_OFF",
            (true, true) => "HEALTHY",
            (true, false) => "UNHEALTHY",
        }
    }

    fn target_status(&self, t: &TargetEntry, addrs: &[&Address]) -> Value {
        let total: u64 = addrs.iter().map(|a| u64::from(a.weight)).sum();
        let unavailable: u64 = addrs
            .iter()
            .filter(|a| !a.state.is_healthy())
            .map(|a| u64::from(a.weight))
            .sum();
        let dns = &t.dns;
        let addresses: Vec<Value> = if t.entity.weight == 0 {
            // Kong lists the address of a weight-0 target with its health checks off.
            vec![json!({ "ip": shown_ip(&t.host), "port": t.port, "weight": 0, "health": "HEALTHCHECKS_OFF" })]
        } else {
            addrs
                .iter()
                .map(|a| json!({ "ip": a.kong_ip(), "port": a.port, "weight": a.weight, "health": self.address_health(a) }))
                .collect()
        };
        json!({
            "host": t.host,
            "port": t.port,
            "dns": dns,
            "nodeWeight": t.entity.weight,
            "weight": { "total": total, "unavailable": unavailable, "available": total - unavailable },
            "addresses": addresses,
        })
    }

    /// Kong's `?balancer_health=1` record: the upstream's health and the balancer's status.
    pub fn balancer_health(&self) -> Value {
        let healthy = self.is_healthy();
        let available = self.available_weight();
        let balancer_health = if healthy { "HEALTHY" } else { "UNHEALTHY" };
        let hosts: Vec<Value> = self
            .targets
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let addrs: Vec<&Address> = self.addresses.iter().filter(|a| a.target == index).collect();
                let mut status = self.target_status(t, &addrs);
                for a in status["addresses"].as_array_mut().into_iter().flatten() {
                    let h = a["health"] != "UNHEALTHY";
                    a.as_object_mut().map(|m| m.remove("health"));
                    a["healthy"] = Value::Bool(h);
                }
                status
            })
            .collect();
        json!({
            "health": if self.checks_on { balancer_health } else { "HEALTHCHECKS_OFF" },
            "balancer_health": balancer_health,
            "id": self.upstream.id,
            "details": {
                "healthy": healthy,
                "weight": {
                    "total": self.total_weight,
                    "unavailable": self.total_weight - available,
                    "available": available,
                },
                "hosts": hosts,
            },
        })
    }

    /// Sets the health of the target `target` (`host:port` as stored), or of its address
    /// `address` (`ip` or `ip:port`): the Admin API's `PUT .../healthy` and `.../unhealthy`.
    /// `Err` names what was not found.
    pub fn set_health(&self, target: &str, address: Option<&str>, healthy: bool) -> Result<(), String> {
        if !self.checks_on {
            return Err(format!("no healthchecker found for {}", self.upstream.name));
        }
        let (host, port) = split_target(target);
        let index = self.targets.iter().position(|t| t.host == host && t.port == port);
        let given = address.map(split_address);
        let mut found = false;
        for a in self.addresses.iter().filter(|a| Some(a.target) == index) {
            // An address without a port means Kong's default, 8000.
            let same_address = given
                .as_ref()
                .is_none_or(|(ip, ip_port)| a.host == *ip && ip_port.unwrap_or(8000) == a.port);
            if same_address {
                found = true;
                if a.state.set_healthy(healthy) {
                    let now = if healthy { "healthy" } else { "unhealthy" };
                    tracing::warn!(target: "kong", "[healthchecks] ({}) target {}:{} set {now} through the Admin API", self.upstream.name, a.host, a.port);
                }
            }
        }
        if found {
            Ok(())
        } else {
            Err(format!("target not found for {}", address.unwrap_or(target)))
        }
    }
}

/// One upstream's balancer, replaced whole when DNS answers change its addresses.
pub(crate) type Slot = arc_swap::ArcSwap<Balancer>;

/// Upstreams by name.
#[derive(Debug, Default)]
pub struct Balancers(HashMap<String, Arc<Slot>>);

impl Balancers {
    /// Indexes `upstreams` with their `targets` (`host:port`, port 8000 when omitted); the
    /// addresses' health comes from, and stays in, `book`. Targets named by host go by the
    /// name until the DNS client resolves them.
    pub fn new(upstreams: &[Upstream], targets: &[Target], book: &HealthBook) -> Balancers {
        let mut map = HashMap::new();
        for u in upstreams {
            let mine: Vec<&Target> = targets.iter().filter(|t| t.upstream.id == u.id).collect();
            let b = Balancer::new(u, &mine, book, &Resolved::new());
            map.insert(u.name.to_ascii_lowercase(), Arc::new(Slot::from_pointee(b)));
        }
        Balancers(map)
    }

    /// Makes these balancers the node's: their addresses are named after their current
    /// upstream and target, and the health book forgets addresses no longer configured. Called
    /// when the configuration goes live (a configuration built but refused leaves the book as
    /// it was).
    pub fn adopt(&self, book: &HealthBook) {
        let mut live = std::collections::HashSet::new();
        // Upstreams with targets named by host keep their addresses' states: what DNS made of
        // the names is not known yet when a configuration goes live.
        let mut named = std::collections::HashSet::new();
        for b in self.iter() {
            b.label();
            for a in &b.addresses {
                live.insert((b.upstream.id, a.host.clone(), a.port));
            }
            if !b.names().is_empty() {
                named.insert(b.upstream.id);
            }
        }
        book.retain_dns_errors(|upstream| named.contains(&upstream));
        book.retain(|upstream, host, port| {
            named.contains(&upstream) || live.contains(&(upstream, host.to_owned(), port))
        });
    }

    /// Starts each upstream from what `live`'s same upstream resolved its names to, so a new
    /// configuration does not go back to unresolved names until its resolver answers.
    pub(crate) fn seed_from(&self, live: &Balancers, book: &HealthBook) {
        for slot in self.slots() {
            let next = slot.load_full();
            if next.names().is_empty() {
                continue;
            }
            if let Some(prev) = live.by_id(next.upstream.id)
                && !prev.resolved.is_empty()
            {
                slot.store(Arc::new(next.resolved(book, &prev.resolved)));
            }
        }
    }

    /// The upstream named `host`, if any.
    pub fn get(&self, host: &str) -> Option<Arc<Balancer>> {
        if self.0.is_empty() {
            return None;
        }
        // Names are kept lowercase; most hosts already are, so no allocation then.
        let slot = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.0.get(&host.to_ascii_lowercase())
        } else {
            self.0.get(host)
        };
        slot.map(|s| s.load_full())
    }

    /// The upstream with id `id`, if any.
    pub fn by_id(&self, id: Uuid) -> Option<Arc<Balancer>> {
        self.iter().find(|b| b.upstream.id == id)
    }

    /// Every upstream, as it stands.
    pub fn iter(&self) -> impl Iterator<Item = Arc<Balancer>> + '_ {
        self.0.values().map(|s| s.load_full())
    }

    /// Every upstream's slot.
    pub(crate) fn slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.0.values()
    }
}

/// `host:port` → (host, port); port 8000 when omitted, brackets kept off IPv6 hosts.
/// An address as Kong's balancer names it: an IPv6 address in brackets (Kong's DNS client
/// brackets AAAA answers), so that `/health` shows it and the hash ring places it as Kong does.
fn shown_ip(host: &str) -> std::borrow::Cow<'_, str> {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        std::borrow::Cow::Owned(format!("[{host}]"))
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

pub(crate) fn split_target(target: &str) -> (String, u16) {
    if let Some(rest) = target.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(8000);
        return (host.to_owned(), port);
    }
    match target.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_owned(), p.parse().unwrap_or(8000)),
        _ => (target.to_owned(), 8000),
    }
}

/// `ip`, `ip:port` or `[ip]:port` → (ip, port if given).
fn split_address(a: &str) -> (String, Option<u16>) {
    if let Some(rest) = a.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host.to_owned(), after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_owned(), p.parse().ok()),
        _ => (a.to_owned(), None),
    }
}

/// A target as Kong stores it (`format_host`): `host:port`, IPv6 in brackets, port 8000 when
/// omitted.
///
/// ```
/// use kong_pdk::gateway::format_target;
/// assert_eq!(format_target("example.test"), "example.test:8000");
/// assert_eq!(format_target("::1"), "[::1]:8000");
/// assert_eq!(format_target("10.0.0.1:81"), "10.0.0.1:81");
/// ```
pub fn format_target(target: &str) -> String {
    let (host, port) = split_target(target);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests;
