//! The [`Upstream`] entity (`/upstreams`, Kong's `kong/db/schema/entities/upstreams.lua`): a
//! virtual host spread over its targets, how requests are spread, and how targets' health is
//! checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::ForeignKey;

/// How an upstream spreads requests over its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Weighted round-robin (the default).
    #[default]
    RoundRobin,
    /// A ring of `slots` points: the same hash input keeps its target.
    ConsistentHashing,
    /// The target with the fewest requests in flight for its weight.
    LeastConnections,
    /// The target with the lowest response time (a decaying average) for its weight.
    Latency,
}

/// What the consistent-hashing balancer hashes (`hash_on`, `hash_fallback`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// Nothing (the default).
    #[default]
    None,
    /// The authenticated consumer's id, else its credential's id.
    Consumer,
    /// The client's address.
    Ip,
    /// A request header (`hash_on_header` / `hash_fallback_header`).
    Header,
    /// A cookie (`hash_on_cookie`), set by the gateway when the request has none.
    Cookie,
    /// The request path.
    Path,
    /// A query argument (`hash_on_query_arg` / `hash_fallback_query_arg`).
    QueryArg,
    /// A capture group of the matched route's path (`hash_on_uri_capture` /
    /// `hash_fallback_uri_capture`).
    UriCapture,
}

/// How active probes talk to targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckType {
    /// A TCP connection.
    Tcp,
    /// An HTTP request (the default).
    #[default]
    Http,
    /// An HTTPS request.
    Https,
    /// gRPC health checking (accepted as in Kong; probed as HTTP/2 is not, see the README).
    Grpc,
    /// gRPC over TLS (as `grpc`).
    Grpcs,
}

/// A load-balancing upstream (`/upstreams`): a virtual host name that services use as their
/// `host`, spread over its [`Target`](super::Target)s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    /// Primary key.
    pub id: Uuid,
    /// The virtual host name services point at.
    pub name: String,
    /// How requests are spread over the targets.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// What consistent hashing hashes.
    #[serde(default)]
    pub hash_on: HashOn,
    /// What it hashes when `hash_on` yields nothing.
    #[serde(default)]
    pub hash_fallback: HashOn,
    /// The header for `hash_on = header`.
    #[serde(default)]
    pub hash_on_header: Option<String>,
    /// The header for `hash_fallback = header`.
    #[serde(default)]
    pub hash_fallback_header: Option<String>,
    /// The cookie for `hash_on = cookie` (or `hash_fallback = cookie`).
    #[serde(default)]
    pub hash_on_cookie: Option<String>,
    /// The `Path` of the cookie the gateway sets.
    #[serde(default = "Upstream::default_cookie_path")]
    pub hash_on_cookie_path: String,
    /// The query argument for `hash_on = query_arg`.
    #[serde(default)]
    pub hash_on_query_arg: Option<String>,
    /// The query argument for `hash_fallback = query_arg`.
    #[serde(default)]
    pub hash_fallback_query_arg: Option<String>,
    /// The capture group for `hash_on = uri_capture`.
    #[serde(default)]
    pub hash_on_uri_capture: Option<String>,
    /// The capture group for `hash_fallback = uri_capture`.
    #[serde(default)]
    pub hash_fallback_uri_capture: Option<String>,
    /// The consistent-hashing ring's size (10..=65536; below 1000 counts as 1000, as in Kong).
    #[serde(default = "Upstream::default_slots")]
    pub slots: u32,
    /// Active and passive health checks.
    #[serde(default)]
    pub healthchecks: Healthchecks,
    /// The `Host` header sent to targets instead of the upstream's name.
    #[serde(default)]
    pub host_header: Option<String>,
    /// The certificate presented to `https` targets when the service has none of its own.
    #[serde(default)]
    pub client_certificate: Option<ForeignKey>,
    /// Use the SRV record's target name (rather than its address) as the `Host` and SNI.
    #[serde(default)]
    pub use_srv_name: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl Upstream {
    fn default_cookie_path() -> String {
        "/".into()
    }

    fn default_slots() -> u32 {
        10_000
    }

    /// Kong's `shorthand_fields` for upstreams, applied to an input before it is validated:
    /// `algorithm = least-connections` or `latency` clears `hash_on`, and a `hash_on` given
    /// picks the algorithm (`none` → `round-robin`, anything else → `consistent-hashing`).
    /// `previous` is the stored entity of an update: a field whose value it already had
    /// counts as not given.
    ///
    /// ```
    /// use kong_pdk::entities::Upstream;
    /// let mut input = serde_json::json!({ "name": "u", "hash_on": "ip" });
    /// Upstream::apply_shorthands(input.as_object_mut().unwrap(), None);
    /// assert_eq!(input["algorithm"], "consistent-hashing");
    /// ```
    pub fn apply_shorthands(input: &mut Map<String, Value>, previous: Option<&Value>) {
        let given = |input: &Map<String, Value>, field: &str| {
            input
                .get(field)
                .is_some_and(|v| previous.is_none_or(|p| p.get(field) != Some(v)))
        };
        if given(input, "algorithm") && matches!(input["algorithm"].as_str(), Some("least-connections" | "latency")) {
            input.insert("hash_on".into(), Value::from("none"));
        } else if given(input, "hash_on") {
            match input["hash_on"].as_str() {
                None => {
                    input.insert("hash_on".into(), Value::from("none"));
                }
                Some("none") => {
                    input.insert("algorithm".into(), Value::from("round-robin"));
                }
                Some(_) => {
                    input.insert("algorithm".into(), Value::from("consistent-hashing"));
                }
            }
        }
    }

    /// Whether any health check is on (Kong's `is_upstream_using_healthcheck`): an active
    /// interval, or a passive failure threshold.
    pub fn uses_healthchecks(&self) -> bool {
        let h = &self.healthchecks;
        h.active.healthy.interval() > 0.0
            || h.active.unhealthy.interval() > 0.0
            || h.passive.unhealthy.tcp_failures > 0
            || h.passive.unhealthy.timeouts > 0
            || h.passive.unhealthy.http_failures > 0
    }
}

/// An upstream's health checks (`healthchecks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Healthchecks {
    /// Probes the gateway sends.
    #[serde(default)]
    pub active: ActiveChecks,
    /// Judging targets by the proxied traffic (the circuit breaker).
    #[serde(default)]
    pub passive: PassiveChecks,
    /// The percentage of the targets' weight that must be available for the upstream to
    /// count as healthy (0 by default: any).
    #[serde(default)]
    pub threshold: f64,
}

/// Active health checks (`healthchecks.active`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveChecks {
    /// `tcp`, `http` (the default) or `https`.
    #[serde(default, rename = "type")]
    pub kind: CheckType,
    /// Seconds a probe may take (1 by default).
    #[serde(default = "ActiveChecks::default_timeout")]
    pub timeout: f64,
    /// How many targets are probed at once (10 by default).
    #[serde(default = "ActiveChecks::default_concurrency")]
    pub concurrency: u32,
    /// The path HTTP probes ask for (`/` by default).
    #[serde(default = "ActiveChecks::default_path")]
    pub http_path: String,
    /// The server name HTTPS probes send (the target's host by default).
    #[serde(default)]
    pub https_sni: Option<String>,
    /// Whether HTTPS probes verify the target's certificate (true by default).
    #[serde(default = "yes")]
    pub https_verify_certificate: bool,
    /// Extra headers HTTP probes send.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    /// When a target counts as healthy again, and how often healthy targets are probed.
    #[serde(default = "Healthy::active", deserialize_with = "active_healthy")]
    pub healthy: Healthy,
    /// When a target counts as unhealthy, and how often unhealthy targets are probed.
    #[serde(default = "Unhealthy::active", deserialize_with = "active_unhealthy")]
    pub unhealthy: Unhealthy,
}

fn yes() -> bool {
    true
}

impl ActiveChecks {
    fn default_timeout() -> f64 {
        1.0
    }

    fn default_concurrency() -> u32 {
        10
    }

    fn default_path() -> String {
        "/".into()
    }
}

impl Default for ActiveChecks {
    fn default() -> ActiveChecks {
        ActiveChecks {
            kind: CheckType::Http,
            timeout: 1.0,
            concurrency: 10,
            http_path: "/".into(),
            https_sni: None,
            https_verify_certificate: true,
            headers: None,
            healthy: Healthy::active(),
            unhealthy: Unhealthy::active(),
        }
    }
}

/// Passive health checks (`healthchecks.passive`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassiveChecks {
    /// `tcp` or `http` (the default): whether response statuses count.
    #[serde(default, rename = "type")]
    pub kind: CheckType,
    /// Which responses count as successes.
    #[serde(default = "Healthy::passive", deserialize_with = "passive_healthy")]
    pub healthy: Healthy,
    /// Which responses and failures count against a target, and how many open the circuit.
    #[serde(default = "Unhealthy::passive", deserialize_with = "passive_unhealthy")]
    pub unhealthy: Unhealthy,
}

impl Default for PassiveChecks {
    fn default() -> PassiveChecks {
        PassiveChecks {
            kind: CheckType::Http,
            healthy: Healthy::passive(),
            unhealthy: Unhealthy::passive(),
        }
    }
}

/// The `healthy` half of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Healthy {
    /// Seconds between probes of healthy targets (active only; 0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<f64>,
    /// Statuses that count as successes.
    pub http_statuses: Vec<u16>,
    /// Successes in a row that make an unhealthy target healthy (0 = never).
    pub successes: u32,
}

/// The `unhealthy` half of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unhealthy {
    /// Seconds between probes of unhealthy targets (active only; 0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<f64>,
    /// Statuses that count as HTTP failures.
    pub http_statuses: Vec<u16>,
    /// TCP failures that make a target unhealthy (0 = never).
    pub tcp_failures: u32,
    /// Timeouts that make a target unhealthy (0 = never).
    pub timeouts: u32,
    /// HTTP failures that make a target unhealthy (0 = never).
    pub http_failures: u32,
}

impl Healthy {
    /// Kong's defaults for `active.healthy`.
    pub fn active() -> Healthy {
        Healthy {
            interval: Some(0.0),
            http_statuses: vec![200, 302],
            successes: 0,
        }
    }

    /// Kong's defaults for `passive.healthy`.
    pub fn passive() -> Healthy {
        Healthy {
            interval: None,
            http_statuses: vec![
                200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306, 307, 308,
            ],
            successes: 0,
        }
    }

    /// Seconds between probes of healthy targets; 0 when off.
    pub fn interval(&self) -> f64 {
        self.interval.unwrap_or(0.0)
    }
}

impl Unhealthy {
    /// Kong's defaults for `active.unhealthy`.
    pub fn active() -> Unhealthy {
        Unhealthy {
            interval: Some(0.0),
            http_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
            tcp_failures: 0,
            timeouts: 0,
            http_failures: 0,
        }
    }

    /// Kong's defaults for `passive.unhealthy`.
    pub fn passive() -> Unhealthy {
        Unhealthy {
            interval: None,
            http_statuses: vec![429, 500, 503],
            tcp_failures: 0,
            timeouts: 0,
            http_failures: 0,
        }
    }

    /// Seconds between probes of unhealthy targets; 0 when off.
    pub fn interval(&self) -> f64 {
        self.interval.unwrap_or(0.0)
    }
}

/// What an input gives of a `healthy` record; the rest comes from the defaults.
#[derive(Deserialize, Default)]
struct GivenHealthy {
    interval: Option<f64>,
    http_statuses: Option<Vec<u16>>,
    successes: Option<u32>,
}

/// What an input gives of an `unhealthy` record.
#[derive(Deserialize, Default)]
struct GivenUnhealthy {
    interval: Option<f64>,
    http_statuses: Option<Vec<u16>>,
    tcp_failures: Option<u32>,
    timeouts: Option<u32>,
    http_failures: Option<u32>,
}

fn healthy_with<'de, D: Deserializer<'de>>(d: D, mut out: Healthy) -> Result<Healthy, D::Error> {
    let given = Option::<GivenHealthy>::deserialize(d)?.unwrap_or_default();
    if out.interval.is_some() {
        out.interval = Some(given.interval.unwrap_or(0.0));
    }
    out.http_statuses = given.http_statuses.unwrap_or(out.http_statuses);
    out.successes = given.successes.unwrap_or(out.successes);
    Ok(out)
}

fn unhealthy_with<'de, D: Deserializer<'de>>(d: D, mut out: Unhealthy) -> Result<Unhealthy, D::Error> {
    let given = Option::<GivenUnhealthy>::deserialize(d)?.unwrap_or_default();
    if out.interval.is_some() {
        out.interval = Some(given.interval.unwrap_or(0.0));
    }
    out.http_statuses = given.http_statuses.unwrap_or(out.http_statuses);
    out.tcp_failures = given.tcp_failures.unwrap_or(out.tcp_failures);
    out.timeouts = given.timeouts.unwrap_or(out.timeouts);
    out.http_failures = given.http_failures.unwrap_or(out.http_failures);
    Ok(out)
}

fn active_healthy<'de, D: Deserializer<'de>>(d: D) -> Result<Healthy, D::Error> {
    healthy_with(d, Healthy::active())
}

fn passive_healthy<'de, D: Deserializer<'de>>(d: D) -> Result<Healthy, D::Error> {
    healthy_with(d, Healthy::passive())
}

fn active_unhealthy<'de, D: Deserializer<'de>>(d: D) -> Result<Unhealthy, D::Error> {
    unhealthy_with(d, Unhealthy::active())
}

fn passive_unhealthy<'de, D: Deserializer<'de>>(d: D) -> Result<Unhealthy, D::Error> {
    unhealthy_with(d, Unhealthy::passive())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_healthchecks_keep_kongs_defaults() {
        let u: Upstream = serde_json::from_value(json!({
            "id": Uuid::nil(), "name": "u",
            "healthchecks": { "active": { "healthy": { "interval": 5 } }, "passive": { "unhealthy": { "http_failures": 2 } } }
        }))
        .unwrap();
        assert_eq!(u.healthchecks.active.healthy.interval(), 5.0);
        assert_eq!(u.healthchecks.active.healthy.http_statuses, vec![200, 302]);
        assert_eq!(u.healthchecks.active.unhealthy.http_statuses.len(), 8);
        assert_eq!(u.healthchecks.passive.unhealthy.http_failures, 2);
        assert_eq!(u.healthchecks.passive.unhealthy.http_statuses, vec![429, 500, 503]);
        assert_eq!(u.healthchecks.passive.healthy.interval, None);
        assert!(u.uses_healthchecks());
        assert_eq!(u.slots, 10_000);
        let shown = serde_json::to_value(&u).unwrap();
        assert!(shown["healthchecks"]["passive"]["healthy"].get("interval").is_none());
        assert_eq!(shown["algorithm"], "round-robin");
    }

    #[test]
    fn shorthands_couple_algorithm_and_hash_on() {
        let mut lc = json!({ "algorithm": "least-connections", "hash_on": "ip" });
        Upstream::apply_shorthands(lc.as_object_mut().unwrap(), None);
        assert_eq!(lc["hash_on"], "none");
        let mut none = json!({ "algorithm": "consistent-hashing", "hash_on": "none" });
        Upstream::apply_shorthands(none.as_object_mut().unwrap(), None);
        assert_eq!(none["algorithm"], "round-robin");
        // An update that keeps hash_on as it was leaves the algorithm alone.
        let previous = json!({ "algorithm": "consistent-hashing", "hash_on": "ip" });
        let mut update = json!({ "algorithm": "round-robin", "hash_on": "ip" });
        Upstream::apply_shorthands(update.as_object_mut().unwrap(), Some(&previous));
        assert_eq!(update["algorithm"], "round-robin");
    }
}
