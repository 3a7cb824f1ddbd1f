//! `rate-limiting` (Kong's `kong/plugins/rate-limiting`): how many requests a client may make
//! per second, minute, hour, day, month and year, counted per consumer, credential, address,
//! service, header value or path, in this node's memory (`local`), in the database every node
//! shares (`cluster`) or in Redis (`redis`). Clients see their allowance in `RateLimit-*` and
//! `X-RateLimit-*` headers, and a refused request gets `429 API rate limit exceeded` with
//! `Retry-After`.

use kong_pdk::counters::{CounterKey, CounterTable};
use kong_pdk::prelude::*;
use kong_pdk::{Error, Scope};
use serde_json::Value;

use crate::limits::local::{LocalCounters, LocalKey};
use crate::limits::redis::{self as redis_policy, SyncedCounters};
use crate::limits::{self, Period, Policy, RedisConfig, number, or_nil};

/// The plugin's configuration (Kong's `rate-limiting/schema.lua`).
#[plugin(
    priority = 910,
    version = "3.10.0",
    name = "rate-limiting",
    protocols = protocols_http,
    at_least_one_of("config.second", "config.minute", "config.hour", "config.day", "config.month", "config.year"),
    conditional(if_field = "config.policy", if_match(one_of = ["redis"]), then_field = "config.redis.host", then_match(required)),
    conditional(if_field = "config.policy", if_match(one_of = ["redis"]), then_field = "config.redis.port", then_match(required)),
    conditional(if_field = "config.policy", if_match(one_of = ["redis"]), then_field = "config.redis.timeout", then_match(required)),
    conditional(if_field = "config.limit_by", if_match(one_of = ["header"]), then_field = "config.header_name", then_match(required)),
    conditional(if_field = "config.limit_by", if_match(one_of = ["path"]), then_field = "config.path", then_match(required)),
    custom_validator = check,
    shorthand("redis_host", "redis.host"),
    shorthand("redis_port", "redis.port"),
    shorthand("redis_password", "redis.password"),
    shorthand("redis_username", "redis.username"),
    shorthand("redis_ssl", "redis.ssl"),
    shorthand("redis_ssl_verify", "redis.ssl_verify"),
    shorthand("redis_server_name", "redis.server_name"),
    shorthand("redis_timeout", "redis.timeout"),
    shorthand("redis_database", "redis.database")
)]
pub struct RateLimiting {
    /// Requests per second.
    #[field(gt = 0)]
    pub second: Option<f64>,
    /// Requests per minute.
    #[field(gt = 0)]
    pub minute: Option<f64>,
    /// Requests per hour.
    #[field(gt = 0)]
    pub hour: Option<f64>,
    /// Requests per day.
    #[field(gt = 0)]
    pub day: Option<f64>,
    /// Requests per month.
    #[field(gt = 0)]
    pub month: Option<f64>,
    /// Requests per year.
    #[field(gt = 0)]
    pub year: Option<f64>,
    /// Who is counted: `consumer` (else the credential), `credential`, `ip`, `service`,
    /// `header` or `path`; the client's address when the request has none.
    #[field(default = "consumer", one_of = ["consumer", "credential", "ip", "service", "header", "path"])]
    pub limit_by: Option<String>,
    /// The header counted by, with `limit_by = header`.
    #[field(typedef = header_name)]
    pub header_name: Option<String>,
    /// The path counted by, with `limit_by = path`.
    #[field(typedef = path)]
    pub path: Option<String>,
    /// Where counters live: `local`, `cluster` or `redis`.
    #[field(default = "local", len_min = 0, one_of = ["local", "cluster", "redis"])]
    pub policy: Option<String>,
    /// Let requests through when counters cannot be read (else answer 500).
    #[field(required, default = true)]
    pub fault_tolerant: bool,
    /// The Redis server, with `policy = redis`.
    pub redis: RedisConfig,
    /// Send no rate-limiting headers to clients.
    #[field(required, default = false)]
    pub hide_client_headers: bool,
    /// The status of refused requests.
    #[field(default = 429, gt = 0)]
    pub error_code: Option<f64>,
    /// The message of refused requests.
    #[field(default = "API rate limit exceeded")]
    pub error_message: Option<String>,
    /// With `policy = redis`: how often, in seconds, this node sends its counts to Redis
    /// (`-1`: with every request).
    #[field(required, default = -1)]
    pub sync_rate: f64,
}

/// Kong's `validate_periods_order` and `sync_rate` rules.
fn check(config: &Value) -> Result<(), String> {
    let limits: Vec<(Period, Option<f64>)> = Period::ALL.iter().map(|p| (*p, config[p.name()].as_f64())).collect();
    limits::check_order(&limits, |longer, v2, shorter, v1| {
        format!("The limit for {longer}({v2:.1}) cannot be lower than the limit for {shorter}({v1:.1})")
    })?;
    let sync_rate = config["sync_rate"].as_f64().unwrap_or(-1.0);
    let redis = config["policy"] == "redis";
    if !redis && sync_rate != -1.0 {
        return Err("sync_rate can only be used with the redis policy".into());
    }
    if redis && sync_rate != -1.0 && sync_rate < 0.02 {
        return Err("sync_rate must be greater than 0.02, or -1 to disable".into());
    }
    Ok(())
}

/// What every instance of the plugin on a node shares: the `local` counters and the `redis`
/// policy's `sync_rate` counters.
#[derive(Debug, Default)]
pub struct Counters {
    local: LocalCounters,
    synced: SyncedCounters,
}

/// One configured window of a request: its limit, its start and its counter's key (built
/// once, for the look-up and the increment).
struct Window {
    period: Period,
    limit: f64,
    start: i64,
    key: Key,
}

/// A window's counter, where the policy keeps it.
enum Key {
    Local(LocalKey),
    Cluster(CounterKey),
    /// Kong's `ratelimit:<route>:<service>:<identifier>:<start ms>:<period>`.
    Redis(String),
}

impl RateLimiting {
    fn policy(&self) -> Policy {
        Policy::parse(self.policy.as_deref().unwrap_or("local"))
    }

    fn windows(&self, now: i64, scope: Scope, identifier: &str) -> Vec<Window> {
        let limits = [self.second, self.minute, self.hour, self.day, self.month, self.year];
        let policy = self.policy();
        let (route, service) = (or_nil(scope.route), or_nil(scope.service));
        Period::ALL
            .iter()
            .zip(limits)
            .filter_map(|(period, limit)| {
                let limit = limit?;
                let start = period.start(now);
                let key = match policy {
                    Policy::Local => Key::Local(LocalKey {
                        prefix: "ratelimit",
                        route,
                        service,
                        identifier: identifier.to_owned(),
                        start,
                        period: period.name().into(),
                    }),
                    Policy::Cluster => Key::Cluster(CounterKey {
                        route_id: route,
                        service_id: service,
                        identifier: identifier.to_owned(),
                        period: period.name().to_owned(),
                        period_date: start,
                    }),
                    Policy::Redis => Key::Redis(format!(
                        "ratelimit:{route}:{service}:{identifier}:{}:{}",
                        start * 1000,
                        period.name()
                    )),
                };
                Some(Window {
                    period: *period,
                    limit,
                    start,
                    key,
                })
            })
            .collect()
    }

    /// Kong's `get_identifier`.
    fn identifier(&self, kong: &mut Kong<Access, Counters>) -> String {
        let found = match self.limit_by.as_deref().unwrap_or("consumer") {
            "service" => kong.router().get_service().map(|s| s.id.to_string()),
            "consumer" => {
                let client = kong.client();
                (client.get_consumer().map(|c| c.id))
                    .or_else(|| client.get_credential().map(|c| c.id))
                    .map(|id| id.to_string())
            }
            "credential" => kong.client().get_credential().map(|c| c.id.to_string()),
            "header" => {
                let name = self.header_name.as_deref().unwrap_or_default();
                kong.request().get_header(name).map(str::to_owned)
            }
            "path" => {
                let path = kong.request().get_path();
                (Some(path.as_str()) == self.path.as_deref()).then_some(path)
            }
            _ => None,
        };
        found.unwrap_or_else(|| kong.client().get_forwarded_ip().to_string())
    }

    /// The requests counted so far in each window (Kong's `policy.usage`).
    async fn usage(
        &self,
        kong: &mut Kong<'_, Access, Counters>,
        windows: &[Window],
        now: i64,
    ) -> Result<Vec<i64>, String> {
        match self.policy() {
            Policy::Local => {
                let local = &kong.state().local;
                Ok(windows
                    .iter()
                    .map(|w| match &w.key {
                        Key::Local(key) => local.get(key, now),
                        _ => 0,
                    })
                    .collect())
            }
            Policy::Cluster => {
                let counters = kong
                    .cluster_counters()
                    .ok_or("the cluster policy needs a database (this node has none)")?;
                let keys: Vec<CounterKey> = (windows.iter())
                    .filter_map(|w| match &w.key {
                        Key::Cluster(key) => Some(key.clone()),
                        _ => None,
                    })
                    .collect();
                counters.get(CounterTable::RateLimiting, &keys).await
            }
            Policy::Redis => {
                let redis = kong.redis().ok_or("this gateway has no Redis client")?;
                let key = |w: &Window| match &w.key {
                    Key::Redis(key) => key.clone(),
                    _ => String::new(),
                };
                let synced = self.sync_rate != -1.0;
                let mut usage = vec![None; windows.len()];
                if synced {
                    for (i, w) in windows.iter().enumerate() {
                        usage[i] = (kong.state().synced).usage(&self.redis, &key(w), w.start, w.period.seconds(), now);
                    }
                }
                let missing: Vec<usize> = (0..windows.len()).filter(|i| usage[*i].is_none()).collect();
                if !missing.is_empty() {
                    let ask: Vec<(String, i64)> = missing
                        .iter()
                        .map(|i| (key(&windows[*i]), windows[*i].period.seconds()))
                        .collect();
                    let answers = redis_policy::usage(&*redis, &self.redis.settings(), &ask).await?;
                    for ((i, value), (k, _)) in missing.into_iter().zip(answers).zip(&ask) {
                        if synced {
                            let w = &windows[i];
                            (kong.state().synced).remember(&self.redis, k, value, w.start + w.period.seconds());
                        }
                        usage[i] = Some(value);
                    }
                }
                Ok(usage.into_iter().map(Option::unwrap_or_default).collect())
            }
        }
    }

    /// Counts the request in each window (Kong's `policy.increment`).
    fn increment(&self, kong: &mut Kong<'_, Access, Counters>, windows: Vec<Window>, now: i64) {
        match self.policy() {
            Policy::Local => {
                let local = &kong.state().local;
                for w in &windows {
                    if let Key::Local(key) = &w.key {
                        local.incr(key, 1, w.period.seconds(), now);
                    }
                }
            }
            Policy::Cluster => {
                let Some(counters) = kong.cluster_counters() else {
                    return;
                };
                let increments = (windows.into_iter())
                    .filter_map(|w| match w.key {
                        Key::Cluster(key) => Some((key, 1, w.period.seconds())),
                        _ => None,
                    })
                    .collect();
                if let Err(e) = counters.add(CounterTable::RateLimiting, increments) {
                    kong.log()
                        .err(format!("cluster policy: could not increment counter: {e}"));
                }
            }
            // Realtime: the usage script already counted the request.
            Policy::Redis if self.sync_rate == -1.0 => {}
            Policy::Redis => {
                let keys: Vec<(String, i64)> = (windows.into_iter())
                    .filter_map(|w| match w.key {
                        Key::Redis(key) => Some((key, w.start + w.period.seconds())),
                        _ => None,
                    })
                    .collect();
                let Some(redis) = kong.redis() else {
                    return;
                };
                if let Some(sync) = kong.state().synced.add(&self.redis, &keys, redis) {
                    let after = std::time::Duration::from_secs_f64(self.sync_rate.max(0.02));
                    if !kong.timer_at(after, sync) {
                        kong.log().err("failed to create timer: the gateway is shutting down");
                    }
                }
            }
        }
    }
}

#[handler]
impl Handler for RateLimiting {
    type State = Counters;

    async fn access(&self, kong: &mut Kong<Access, Counters>) -> kong_pdk::Result {
        let now = limits::now();
        let identifier = self.identifier(kong);
        let windows = self.windows(now, kong.plugin_scope(), &identifier);
        match self.usage(kong, &windows, now).await {
            Err(e) if !self.fault_tolerant => return Err(Error::msg(e)),
            Err(e) => kong.log().err(format!("failed to get usage: {e}")),
            Ok(usage) => {
                let remaining: Vec<f64> = windows.iter().zip(&usage).map(|(w, u)| w.limit - *u as f64).collect();
                // Kong remembers the last window over its limit.
                let stop = remaining.iter().rposition(|r| *r <= 0.0);
                let mut reset = 1;
                if !self.hide_client_headers {
                    // The header window: the least remaining, the longer window on ties.
                    let mut shown: Option<(f64, f64, i64)> = None;
                    let mut response = kong.response();
                    for (i, w) in windows.iter().enumerate() {
                        let mut left = remaining[i];
                        if stop.is_none() || stop == Some(i) {
                            left -= 1.0;
                        }
                        let left = left.max(0.0);
                        let window = w.period.seconds();
                        if shown.is_none_or(|(_, r, win)| left < r || (left == r && window > win)) {
                            shown = Some((w.limit, left, window));
                            reset = (window - (now - w.start)).max(1);
                        }
                        response.set_header(w.period.limit_header(), number(w.limit))?;
                        response.set_header(w.period.remaining_header(), number(left))?;
                    }
                    if let Some((limit, left, _)) = shown {
                        response.set_header("RateLimit-Limit", number(limit))?;
                        response.set_header("RateLimit-Remaining", number(left))?;
                        response.set_header("RateLimit-Reset", reset)?;
                    }
                }
                if stop.is_some() {
                    if !self.hide_client_headers {
                        kong.response().set_header("Retry-After", reset)?;
                    }
                    let status = self.error_code.unwrap_or(429.0);
                    let message = self.error_message.as_deref();
                    return kong.response().error(status as u16, message);
                }
            }
        }
        self.increment(kong, windows, now);
        Ok(())
    }
}
