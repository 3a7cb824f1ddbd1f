//! `response-ratelimiting` (Kong's `kong/plugins/response-ratelimiting`): limits the upstream
//! sets. Each response carries `X-Kong-Limit: videos=1, images=2` (the header is named by
//! `header_name`); the plugin counts those per client and limit name, tells the upstream what
//! is left (`X-RateLimit-Remaining-<name>` on the request), tells the client
//! (`X-RateLimit-Limit-<name>-<period>`, `X-RateLimit-Remaining-<name>-<period>`), and refuses
//! with 429 once a limit is spent.

use std::collections::BTreeMap;

use kong_pdk::counters::{CounterKey, CounterTable};
use kong_pdk::prelude::*;
use kong_pdk::{Error, Scope};
use serde_json::Value;

use crate::limits::local::{LocalCounters, LocalKey};
use crate::limits::redis as redis_policy;
use crate::limits::{self, Period, Policy, RedisConfig, number, or_nil};

/// The plugin's configuration (Kong's `response-ratelimiting/schema.lua`).
#[plugin(
    priority = 900,
    version = "3.10.0",
    name = "response-ratelimiting",
    protocols = protocols_http,
    conditional(if_field = "config.policy", if_match(one_of = ["redis"]), then_field = "config.redis.host", then_match(required)),
    conditional(if_field = "config.policy", if_match(one_of = ["redis"]), then_field = "config.redis.port", then_match(required)),
    conditional(if_field = "config.policy", if_match(one_of = ["redis"]), then_field = "config.redis.timeout", then_match(required)),
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
pub struct ResponseRatelimiting {
    /// The upstream response header that says what a response costs.
    #[field(default = "x-kong-limit")]
    pub header_name: Option<String>,
    /// Who is counted: `consumer` (else the credential), `credential` or `ip`; the client's
    /// address when the request has none.
    #[field(default = "consumer", one_of = ["consumer", "credential", "ip"])]
    pub limit_by: Option<String>,
    /// Where counters live: `local`, `cluster` or `redis`.
    #[field(default = "local", one_of = ["local", "cluster", "redis"])]
    pub policy: Option<String>,
    /// Let requests through when counters cannot be read (else answer 500).
    #[field(required, default = true)]
    pub fault_tolerant: bool,
    /// The Redis server, with `policy = redis`.
    pub redis: RedisConfig,
    /// Refuse a request as soon as any of its limits is spent.
    #[field(required, default = false)]
    pub block_on_first_violation: bool,
    /// Send no rate-limiting headers to clients.
    #[field(required, default = false)]
    pub hide_client_headers: bool,
    /// The limits, by the names the upstream uses.
    #[field(required, len_min = 1)]
    pub limits: BTreeMap<String, Limits>,
}

/// One limit name's allowance per window.
#[record(
    at_least_one_of("second", "minute", "hour", "day", "month", "year"),
    custom_validator = check_order
)]
pub struct Limits {
    /// Per second.
    #[field(gt = 0)]
    pub second: Option<f64>,
    /// Per minute.
    #[field(gt = 0)]
    pub minute: Option<f64>,
    /// Per hour.
    #[field(gt = 0)]
    pub hour: Option<f64>,
    /// Per day.
    #[field(gt = 0)]
    pub day: Option<f64>,
    /// Per month.
    #[field(gt = 0)]
    pub month: Option<f64>,
    /// Per year.
    #[field(gt = 0)]
    pub year: Option<f64>,
}

impl Limits {
    fn windows(&self) -> impl Iterator<Item = (Period, f64)> + '_ {
        let values = [self.second, self.minute, self.hour, self.day, self.month, self.year];
        Period::ALL.into_iter().zip(values).filter_map(|(p, v)| Some((p, v?)))
    }
}

/// Kong's `validate_periods_order` for one limit (lowercase, unlike rate-limiting's).
fn check_order(limit: &Value) -> Result<(), String> {
    let limits: Vec<(Period, Option<f64>)> = Period::ALL.iter().map(|p| (*p, limit[p.name()].as_f64())).collect();
    limits::check_order(&limits, |longer, v2, shorter, v1| {
        format!("the limit for {longer}({v2:.1}) cannot be lower than the limit for {shorter}({v1:.1})")
    })
}

/// The node's `local` counters.
#[derive(Debug, Default)]
pub struct Counters {
    local: LocalCounters,
}

/// A limit name's windows: (window, limit, remaining).
type Windows = Vec<(Period, f64, f64)>;

/// What access found, for header_filter and log (Kong's `kong.ctx.plugin`).
#[derive(Debug, Clone)]
struct Usage {
    identifier: String,
    now: i64,
    /// Per limit name: (window, limit, remaining).
    limits: Vec<(String, Windows)>,
    /// Per limit name: what the upstream said the response costs.
    increments: Vec<(String, f64)>,
    /// The response was refused: nothing is counted.
    refused: bool,
}

impl ResponseRatelimiting {
    fn policy(&self) -> Policy {
        Policy::parse(self.policy.as_deref().unwrap_or("local"))
    }

    /// Kong's `get_identifier`.
    fn identifier(&self, kong: &mut Kong<Access, Counters>) -> String {
        let client = kong.client();
        let found = match self.limit_by.as_deref().unwrap_or("consumer") {
            "consumer" => (client.get_consumer().map(|c| c.id)).or_else(|| client.get_credential().map(|c| c.id)),
            "credential" => client.get_credential().map(|c| c.id),
            _ => None,
        };
        found.map_or_else(|| kong.client().get_forwarded_ip().to_string(), |id| id.to_string())
    }

    fn local_key(scope: Scope, identifier: &str, name: &str, period: Period, start: i64) -> LocalKey {
        LocalKey {
            prefix: "response-ratelimit",
            route: or_nil(scope.route),
            service: or_nil(scope.service),
            identifier: identifier.to_owned(),
            start,
            period: format!("{name}:{}", period.name()).into(),
        }
    }

    /// Kong's `response-ratelimit:<route>:<service>:<identifier>:<start ms>:<name>:<period>`.
    fn redis_key(scope: Scope, identifier: &str, name: &str, period: Period, start: i64) -> String {
        format!(
            "response-ratelimit:{}:{}:{identifier}:{}:{name}:{}",
            or_nil(scope.route),
            or_nil(scope.service),
            start * 1000,
            period.name()
        )
    }

    fn cluster_key(scope: Scope, identifier: &str, name: &str, period: Period, start: i64) -> CounterKey {
        CounterKey {
            route_id: or_nil(scope.route),
            service_id: or_nil(scope.service),
            identifier: identifier.to_owned(),
            period: format!("{name}_{}", period.name()),
            period_date: start,
        }
    }

    /// The usage of each configured (name, window), in the order of `self.limits`.
    async fn usage(
        &self,
        kong: &mut Kong<'_, Access, Counters>,
        identifier: &str,
        now: i64,
    ) -> Result<Vec<i64>, String> {
        let scope = kong.plugin_scope();
        let wanted: Vec<(&str, Period)> = (self.limits.iter())
            .flat_map(|(name, l)| l.windows().map(move |(p, _)| (name.as_str(), p)))
            .collect();
        match self.policy() {
            Policy::Local => {
                let local = &kong.state().local;
                Ok(wanted
                    .iter()
                    .map(|(name, p)| local.get(&Self::local_key(scope, identifier, name, *p, p.start(now)), now))
                    .collect())
            }
            Policy::Cluster => {
                let counters = kong
                    .cluster_counters()
                    .ok_or("the cluster policy needs a database (this node has none)")?;
                let keys: Vec<CounterKey> = (wanted.iter())
                    .map(|(name, p)| Self::cluster_key(scope, identifier, name, *p, p.start(now)))
                    .collect();
                counters.get(CounterTable::ResponseRateLimiting, &keys).await
            }
            Policy::Redis => {
                let redis = kong.redis().ok_or("this gateway has no Redis client")?;
                let keys: Vec<String> = (wanted.iter())
                    .map(|(name, p)| Self::redis_key(scope, identifier, name, *p, p.start(now)))
                    .collect();
                redis_policy::get(&*redis, &self.redis.settings(), &keys).await
            }
        }
    }

    /// Adds `by` to every window of `name` (Kong counts all six, configured or not).
    async fn increment(
        &self,
        kong: &mut Kong<'_, Log, Counters>,
        usage: &Usage,
        name: &str,
        by: f64,
    ) -> Result<(), String> {
        let scope = kong.plugin_scope();
        let (identifier, now) = (usage.identifier.as_str(), usage.now);
        let by = by as i64;
        match self.policy() {
            Policy::Local => {
                for p in Period::ALL {
                    let key = Self::local_key(scope, identifier, name, p, p.start(now));
                    kong.state().local.incr(&key, by, p.seconds(), now);
                }
                Ok(())
            }
            Policy::Cluster => {
                let counters = kong.cluster_counters().ok_or("no database")?;
                let increments = Period::ALL
                    .iter()
                    .map(|p| {
                        (
                            Self::cluster_key(scope, identifier, name, *p, p.start(now)),
                            by,
                            p.seconds(),
                        )
                    })
                    .collect();
                counters.add(CounterTable::ResponseRateLimiting, increments)
            }
            Policy::Redis => {
                let redis = kong.redis().ok_or("this gateway has no Redis client")?;
                let keys: Vec<(String, i64)> = Period::ALL
                    .iter()
                    .map(|p| (Self::redis_key(scope, identifier, name, *p, p.start(now)), p.seconds()))
                    .collect();
                redis_policy::add(&*redis, &self.redis.settings(), &keys, by).await
            }
        }
    }

    /// The upstream's costs (Kong's `parse_header`): `name=N` pairs separated by commas over
    /// every line of the header, for configured names only; a cost that is not a number is
    /// ignored.
    fn costs(&self, header: &[&str]) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = Vec::new();
        for part in header.iter().flat_map(|line| line.split(',')) {
            let pieces: Vec<&str> = part.splitn(3, '=').collect();
            if pieces.len() != 2 {
                continue;
            }
            let name = pieces[0].trim();
            if !self.limits.contains_key(name) {
                continue;
            }
            let cost = pieces[1].trim().parse::<f64>().ok();
            out.retain(|(n, _)| n != name);
            if let Some(cost) = cost {
                out.push((name.to_owned(), cost));
            }
        }
        out
    }
}

#[handler]
impl Handler for ResponseRatelimiting {
    type State = Counters;

    async fn access(&self, kong: &mut Kong<Access, Counters>) -> kong_pdk::Result {
        if self.limits.is_empty() {
            return Ok(());
        }
        let now = limits::now();
        let identifier = self.identifier(kong);
        let counts = match self.usage(kong, &identifier, now).await {
            Ok(counts) => counts,
            Err(e) if !self.fault_tolerant => return Err(Error::msg(e)),
            Err(e) => {
                kong.log().err(format!("failed to get usage: {e}"));
                return Ok(());
            }
        };
        let mut counts = counts.into_iter();
        let mut usage = Usage {
            identifier,
            now,
            limits: Vec::with_capacity(self.limits.len()),
            increments: Vec::new(),
            refused: false,
        };
        for (name, limits) in &self.limits {
            let windows: Windows = limits
                .windows()
                .map(|(p, limit)| (p, limit, limit - counts.next().unwrap_or_default() as f64))
                .collect();
            let mut least: Option<f64> = None;
            for (_, _, remaining) in &windows {
                if self.block_on_first_violation && *remaining == 0.0 {
                    return kong
                        .response()
                        .error(429, Some(&format!("API rate limit exceeded for '{name}'")));
                }
                least = Some(least.map_or(*remaining, |l| l.min(*remaining)));
            }
            if let Some(least) = least {
                kong.service()
                    .request()
                    .set_header(&format!("X-RateLimit-Remaining-{name}"), number(least))?;
            }
            usage.limits.push((name.clone(), windows));
        }
        kong.ctx().plugin().insert(usage);
        Ok(())
    }

    async fn header_filter(&self, kong: &mut Kong<HeaderFilter, Counters>) -> kong_pdk::Result {
        if self.limits.is_empty() {
            return Ok(());
        }
        let header_name = self.header_name.as_deref().unwrap_or("x-kong-limit");
        let lines: Vec<String> = kong
            .service()
            .response()
            .get_headers()
            .map(|h| {
                h.get_all(header_name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let costs = self.costs(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        let Some(mut usage) = kong.ctx().plugin().get::<Usage>().cloned() else {
            return Ok(());
        };
        let cost = |name: &str| costs.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
        let mut stop = false;
        {
            let mut response = kong.response();
            for (name, windows) in &usage.limits {
                for (period, limit, remaining) in windows {
                    if !self.hide_client_headers {
                        let left = (remaining - cost(name).unwrap_or(0.0)).max(0.0);
                        response.set_header(&format!("X-RateLimit-Limit-{name}-{}", period.name()), number(*limit))?;
                        response
                            .set_header(&format!("X-RateLimit-Remaining-{name}-{}", period.name()), number(left))?;
                    }
                    if cost(name).is_some_and(|c| c > 0.0) && *remaining <= 0.0 {
                        stop = true;
                    }
                }
            }
            response.clear_header(header_name)?;
        }
        usage.increments = costs;
        usage.refused = stop;
        kong.ctx().plugin().insert(usage);
        if stop {
            return kong.response().exit(429, ());
        }
        Ok(())
    }

    async fn log(&self, kong: &mut Kong<Log, Counters>) -> kong_pdk::Result {
        let Some(usage) = kong.ctx().plugin().get::<Usage>().cloned() else {
            return Ok(());
        };
        if usage.refused {
            return Ok(());
        }
        for (name, _) in &usage.limits {
            let Some((_, by)) = usage.increments.iter().find(|(n, _)| n == name) else {
                continue;
            };
            if *by == 0.0 {
                continue;
            }
            if let Err(e) = self.increment(kong, &usage, name, *by).await {
                kong.log().err(format!("could not increment counter for '{name}': {e}"));
            }
        }
        Ok(())
    }
}
