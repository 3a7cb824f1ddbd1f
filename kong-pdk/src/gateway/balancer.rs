//! Upstreams and their targets: a service whose `host` names an upstream is proxied to the
//! upstream's targets by weighted round-robin; a retry after a connection failure moves on to
//! the next target, as Kong's balancer does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::entities::{Target, Upstream};

/// One upstream's targets, ready to pick from.
#[derive(Debug)]
pub struct Balancer {
    /// The `Host` header sent to targets, when the upstream sets one.
    pub host_header: Option<String>,
    /// (host, port) of the targets with a weight above 0.
    targets: Vec<(String, u16)>,
    /// The order targets are used in: each appears in proportion to its weight, spread out
    /// (nginx's smooth weighted round-robin, computed once per configuration).
    wheel: Vec<usize>,
    next: AtomicUsize,
}

/// The longest wheel; weights are scaled down to fit.
const WHEEL_MAX: u64 = 4096;

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

impl Balancer {
    /// The target for attempt `attempt` of a request (0 first): consecutive requests and
    /// retries walk the targets in proportion to their weights. `None` when every target has
    /// weight 0 or the upstream has none.
    pub fn pick(&self, attempt: u32) -> Option<(&str, u16)> {
        if self.wheel.is_empty() {
            return None;
        }
        let at = if attempt == 0 {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            // A retry: further along the wheel, so another target when there is one.
            self.next.load(Ordering::Relaxed) + attempt as usize
        };
        let (host, port) = &self.targets[self.wheel[at % self.wheel.len()]];
        Some((host.as_str(), *port))
    }
}

/// Upstreams by name.
#[derive(Debug, Default)]
pub struct Balancers(HashMap<String, Balancer>);

impl Balancers {
    /// Indexes `upstreams` with their `targets` (`host:port`, port 8000 when omitted).
    pub fn new(upstreams: &[Upstream], targets: &[Target]) -> Balancers {
        let mut map = HashMap::new();
        for u in upstreams {
            let live: Vec<&Target> = targets
                .iter()
                .filter(|t| t.upstream.id == u.id && t.weight > 0)
                .collect();
            let weights: Vec<u64> = live.iter().map(|t| u64::from(t.weight)).collect();
            map.insert(
                u.name.to_ascii_lowercase(),
                Balancer {
                    host_header: u.host_header.clone(),
                    targets: live.iter().map(|t| split_target(&t.target)).collect(),
                    wheel: wheel(&weights),
                    next: AtomicUsize::new(0),
                },
            );
        }
        Balancers(map)
    }

    /// The upstream named `host`, if any.
    pub fn get(&self, host: &str) -> Option<&Balancer> {
        if self.0.is_empty() {
            return None;
        }
        // Names are kept lowercase; most hosts already are, so no allocation then.
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.0.get(&host.to_ascii_lowercase())
        } else {
            self.0.get(host)
        }
    }
}

/// `host:port` → (host, port); port 8000 when omitted, brackets kept off IPv6 hosts.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::ForeignKey;
    use uuid::Uuid;

    fn target(up: Uuid, t: &str, weight: u32) -> Target {
        Target {
            id: Uuid::new_v4(),
            upstream: ForeignKey { id: up },
            target: t.into(),
            weight,
            tags: None,
        }
    }

    #[test]
    fn weighted_round_robin_and_retries_move_on() {
        let up = Upstream {
            id: Uuid::new_v4(),
            name: "Backend".into(),
            algorithm: "round-robin".into(),
            host_header: None,
            client_certificate: None,
            tags: None,
        };
        let targets = [
            target(up.id, "a:1", 100),
            target(up.id, "b:2", 300),
            target(up.id, "c:3", 0),
        ];
        let b = Balancers::new(&[up], &targets);
        let bal = b.get("backend").unwrap();
        let mut counts = HashMap::new();
        for _ in 0..400 {
            *counts.entry(bal.pick(0).unwrap().0.to_owned()).or_insert(0) += 1;
        }
        assert_eq!(counts.get("a"), Some(&100));
        assert_eq!(counts.get("b"), Some(&300));
        assert_eq!(counts.get("c"), None, "weight 0 is out of rotation");
        let spread: Vec<&str> = (0..4).map(|_| bal.pick(0).unwrap().0).collect();
        assert_eq!(spread.iter().filter(|t| **t == "a").count(), 1, "{spread:?}");
        assert_ne!(spread[..2], ["b", "b"], "spread out, not in blocks: {spread:?}");
        assert_eq!(wheel(&[100, 100]), [0, 1]);
        assert!(wheel(&[50_000, 1]).len() <= 4097, "long wheels are scaled down");
        assert!(wheel(&[50_000, 1]).contains(&1), "every live target keeps a place");
        assert!(b.get("other").is_none());
    }

    #[test]
    fn targets_default_to_port_8000() {
        assert_eq!(split_target("example.test"), ("example.test".into(), 8000));
        assert_eq!(split_target("10.0.0.1:81"), ("10.0.0.1".into(), 81));
        assert_eq!(split_target("[::1]:82"), ("::1".into(), 82));
        assert_eq!(split_target("[::1]"), ("::1".into(), 8000));
    }
}
