//! What the node knows about each upstream target address, across configuration changes:
//! whether it is healthy (Kong's health checker, `lua-resty-healthcheck`), how many requests
//! it has in flight (least-connections) and how fast it answers (the latency balancer's
//! decaying average).
//!
//! Health moves as Kong's does: an address counts successes and failures (HTTP statuses, TCP
//! failures, timeouts), a success clears the failure counts and a failure clears the
//! successes, and a count reaching its threshold (0 = never) flips the address. Active probes
//! and proxied traffic (passive checks) report with their own thresholds.
//!
//! ```
//! use kong_pdk::health::{HealthBook, Report, Thresholds};
//! let book = HealthBook::default();
//! let peer = book.peer(uuid::Uuid::nil(), "10.0.0.1", 80);
//! let passive = Thresholds { successes: 1, http_failures: 2, tcp_failures: 1, timeouts: 1 };
//! assert!(peer.is_healthy());
//! assert_eq!(peer.report(Report::HttpFailure, &passive), None);
//! assert_eq!(peer.report(Report::HttpFailure, &passive), Some(false)); // now unhealthy
//! assert_eq!(peer.report(Report::Success, &passive), Some(true));
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use uuid::Uuid;

use crate::entities::{Healthy, Unhealthy};

/// The node's peer states, by upstream and address.
#[derive(Debug, Default)]
pub struct HealthBook {
    peers: Mutex<HashMap<(Uuid, String, u16), Arc<PeerState>>>,
    /// Targets whose host name resolved to nothing: (upstream id, target) → upstream name.
    dns_errors: Mutex<HashMap<(Uuid, String), String>>,
}

impl HealthBook {
    /// The state of `host:port` in upstream `upstream`, created healthy on first use.
    pub fn peer(&self, upstream: Uuid, host: &str, port: u16) -> Arc<PeerState> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .entry((upstream, host.to_owned(), port))
            .or_insert_with(|| Arc::new(PeerState::new()))
            .clone()
    }

    /// The state of `host:port` in upstream `upstream`, if it has one.
    pub fn get(&self, upstream: Uuid, host: &str, port: u16) -> Option<Arc<PeerState>> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&(upstream, host.to_owned(), port)).cloned()
    }

    /// Every address's health, sorted by upstream, target and address: the prometheus
    /// plugin's `kong_upstream_target_health`. `state` is `healthy`, `unhealthy`, or
    /// `healthchecks_off` when the upstream has no check on.
    pub fn targets(&self) -> Vec<TargetHealth> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<TargetHealth> = peers
            .iter()
            .filter_map(|((_, host, port), peer)| {
                let labels = peer.labels.lock().unwrap_or_else(|e| e.into_inner());
                let labels = labels.as_ref()?;
                let address = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                let state = match (labels.checks_on, peer.is_healthy()) {
                    (false, _) => "healthchecks_off",
                    (true, true) => "healthy",
                    (true, false) => "unhealthy",
                };
                Some(TargetHealth {
                    upstream: labels.upstream.clone(),
                    target: labels.target.clone(),
                    address,
                    state,
                })
            })
            .collect();
        let errors = self.dns_errors.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(errors.iter().map(|((_, target), upstream)| TargetHealth {
            upstream: upstream.clone(),
            target: target.clone(),
            address: String::new(),
            state: "dns_error",
        }));
        out.sort_by(|a, b| (&a.upstream, &a.target, &a.address).cmp(&(&b.upstream, &b.target, &b.address)));
        out
    }

    /// Records whether the target `target` (`host:port`) of upstream `upstream` (named
    /// `name`) resolved to nothing.
    pub fn set_dns_error(&self, upstream: Uuid, name: &str, target: &str, failed: bool) {
        let mut errors = self.dns_errors.lock().unwrap_or_else(|e| e.into_inner());
        if failed {
            errors.insert((upstream, target.to_owned()), name.to_owned());
        } else {
            errors.remove(&(upstream, target.to_owned()));
        }
    }

    /// Forgets the addresses `keep` refuses (targets and upstreams no longer configured).
    pub fn retain(&self, mut keep: impl FnMut(Uuid, &str, u16) -> bool) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|(u, h, p), _| keep(*u, h, *p));
    }

    /// Forgets the name errors of the upstreams `keep` refuses.
    pub fn retain_dns_errors(&self, mut keep: impl FnMut(Uuid) -> bool) {
        let mut errors = self.dns_errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.retain(|(u, _), _| keep(*u));
    }
}

/// One address's health, with the names it is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// The upstream's name.
    pub upstream: String,
    /// The target (`host:port`).
    pub target: String,
    /// The address (`ip:port`).
    pub address: String,
    /// `healthy`, `unhealthy` or `healthchecks_off`.
    pub state: &'static str,
}

/// The names an address is known by.
#[derive(Debug)]
struct Labels {
    upstream: String,
    target: String,
    checks_on: bool,
}

/// What a request or probe tells about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A healthy status, or a probe's connection that succeeded.
    Success,
    /// An unhealthy status.
    HttpFailure,
    /// A connection that failed.
    TcpFailure,
    /// A connection or response that timed out.
    Timeout,
}

impl Report {
    /// What `status` counts as: a success when `healthy` lists it, an HTTP failure when
    /// `unhealthy` does, nothing otherwise.
    pub fn of_status(status: u16, healthy: &Healthy, unhealthy: &Unhealthy) -> Option<Report> {
        if healthy.http_statuses.contains(&status) {
            Some(Report::Success)
        } else if unhealthy.http_statuses.contains(&status) {
            Some(Report::HttpFailure)
        } else {
            None
        }
    }
}

/// How many reports in a row flip an address (0 = never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Thresholds {
    /// Successes that make an unhealthy address healthy.
    pub successes: u32,
    /// HTTP failures that make a healthy address unhealthy.
    pub http_failures: u32,
    /// TCP failures that make a healthy address unhealthy.
    pub tcp_failures: u32,
    /// Timeouts that make a healthy address unhealthy.
    pub timeouts: u32,
}

impl Thresholds {
    /// The thresholds of one side (active or passive) of an upstream's checks.
    pub fn of(healthy: &Healthy, unhealthy: &Unhealthy) -> Thresholds {
        Thresholds {
            successes: healthy.successes,
            http_failures: unhealthy.http_failures,
            tcp_failures: unhealthy.tcp_failures,
            timeouts: unhealthy.timeouts,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    successes: u32,
    http_failures: u32,
    tcp_failures: u32,
    timeouts: u32,
}

/// One address's state.
#[derive(Debug)]
pub struct PeerState {
    healthy: AtomicBool,
    counts: Mutex<Counts>,
    in_flight: AtomicU32,
    /// The latency balancer's average response time (seconds) and when it was last updated.
    latency: Mutex<Option<(f64, Instant)>>,
    labels: Mutex<Option<Labels>>,
}

/// How fast the latency average forgets (Kong's `DECAY_TIME`, seconds).
const DECAY_SECONDS: f64 = 10.0;

impl PeerState {
    fn new() -> PeerState {
        PeerState {
            healthy: AtomicBool::new(true),
            counts: Mutex::default(),
            in_flight: AtomicU32::new(0),
            latency: Mutex::new(None),
            labels: Mutex::new(None),
        }
    }

    /// Names the address: its upstream, its target (`host:port`) and whether the upstream
    /// has health checks on (the latest configuration's).
    pub fn label(&self, upstream: &str, target: &str, checks_on: bool) {
        *self.labels.lock().unwrap_or_else(|e| e.into_inner()) = Some(Labels {
            upstream: upstream.to_owned(),
            target: target.to_owned(),
            checks_on,
        });
    }

    /// Whether the address takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the address healthy or not (the Admin API's `PUT .../healthy`), clearing its
    /// counts. Returns whether that changed it.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()) = Counts::default();
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    /// Counts `report` against `limits`; `Some(healthy)` when that flipped the address. A
    /// report whose threshold is 0 counts for nothing (lua-resty-healthcheck's `incr_counter`).
    pub fn report(&self, report: Report, limits: &Thresholds) -> Option<bool> {
        let limit = match report {
            Report::Success => limits.successes,
            Report::HttpFailure => limits.http_failures,
            Report::TcpFailure => limits.tcp_failures,
            Report::Timeout => limits.timeouts,
        };
        if limit == 0 {
            return None;
        }
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let healthy = self.is_healthy();
        let (count, limit, to) = match report {
            Report::Success => {
                c.http_failures = 0;
                c.tcp_failures = 0;
                c.timeouts = 0;
                if healthy {
                    return None;
                }
                c.successes += 1;
                (c.successes, limits.successes, true)
            }
            failure => {
                c.successes = 0;
                if !healthy {
                    return None;
                }
                let (count, limit) = match failure {
                    Report::HttpFailure => (&mut c.http_failures, limits.http_failures),
                    Report::TcpFailure => (&mut c.tcp_failures, limits.tcp_failures),
                    _ => (&mut c.timeouts, limits.timeouts),
                };
                *count += 1;
                (*count, limit, false)
            }
        };
        if limit == 0 || count < limit {
            return None;
        }
        *c = Counts::default();
        self.healthy.store(to, Ordering::Relaxed);
        Some(to)
    }

    /// Requests in flight to the address.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The latency average (seconds), decayed to now; `None` before the first response.
    pub fn latency(&self) -> Option<f64> {
        let l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        l.map(|(ewma, at)| ewma * (-at.elapsed().as_secs_f64() / DECAY_SECONDS).exp())
    }

    /// Folds a response time (seconds) into the latency average, as Kong's `decay_ewma`.
    pub fn record_latency(&self, seconds: f64) {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        *l = Some(match *l {
            None => (seconds, now),
            Some((ewma, at)) => {
                let weight = (-(now - at).as_secs_f64() / DECAY_SECONDS).exp();
                (ewma * weight + seconds * (1.0 - weight), now)
            }
        });
    }
}

/// A request in flight to an address, counted until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<PeerState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_of_each_kind_count_separately_and_successes_clear_them() {
        let p = PeerState::new();
        let t = Thresholds {
            successes: 2,
            http_failures: 2,
            tcp_failures: 3,
            timeouts: 1,
        };
        assert_eq!(p.report(Report::HttpFailure, &t), None);
        assert_eq!(p.report(Report::Success, &t), None); // clears the HTTP failure
        // With no success threshold, successes clear nothing: failures add up.
        let no_successes = Thresholds { successes: 0, ..t };
        let q = PeerState::new();
        assert_eq!(q.report(Report::HttpFailure, &no_successes), None);
        assert_eq!(q.report(Report::Success, &no_successes), None);
        assert_eq!(q.report(Report::HttpFailure, &no_successes), Some(false));
        assert_eq!(p.report(Report::HttpFailure, &t), None);
        assert_eq!(p.report(Report::TcpFailure, &t), None);
        assert_eq!(p.report(Report::HttpFailure, &t), Some(false));
        assert!(!p.is_healthy());
        assert_eq!(p.report(Report::Success, &t), None);
        assert_eq!(p.report(Report::Timeout, &t), None); // clears the success
        assert_eq!(p.report(Report::Success, &t), None);
        assert_eq!(p.report(Report::Success, &t), Some(true));
        // Zero thresholds never flip.
        let off = Thresholds::default();
        for _ in 0..10 {
            assert_eq!(p.report(Report::Timeout, &off), None);
        }
        assert!(p.is_healthy());
    }

    #[test]
    fn the_node_view_names_addresses_and_names_that_failed() {
        let book = HealthBook::default();
        let up = Uuid::new_v4();
        let peer = book.peer(up, "10.0.0.1", 80);
        peer.label("u", "10.0.0.1:80", true);
        book.set_dns_error(up, "u", "gone.test:80", true);
        let all = book.targets();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].address.as_str(), all[0].state), ("10.0.0.1:80", "healthy"));
        assert_eq!(
            (all[1].target.as_str(), all[1].address.as_str(), all[1].state),
            ("gone.test:80", "", "dns_error")
        );
        book.set_dns_error(up, "u", "gone.test:80", false);
        assert_eq!(book.targets().len(), 1);
        book.set_dns_error(up, "u", "gone.test:80", true);
        book.retain(|_, _, _| false);
        book.retain_dns_errors(|_| false);
        assert!(book.targets().is_empty());
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let p = Arc::new(PeerState::new());
        let a = p.start_request();
        let b = p.start_request();
        assert_eq!(p.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn latency_average_moves_toward_new_samples() {
        let p = PeerState::new();
        assert_eq!(p.latency(), None);
        p.record_latency(1.0);
        let first = p.latency().unwrap();
        assert!(first > 0.99 && first <= 1.0, "{first}");
        p.record_latency(0.0);
        assert!(p.latency().unwrap() <= first);
    }
}
