//! The `redis` policy: Kong 3.10's `redis` config record (`kong/tools/redis/schema.lua`),
//! Kong's counting scripts sent through the gateway's connections ([`kong_pdk::redis`]), and
//! the `sync_rate` mode's node-local deltas flushed on a timer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kong_pdk::prelude::*;
use kong_pdk::redis::{RedisClient, RedisCommand, RedisSettings};

/// How to reach Redis (Kong's shared `redis` record).
#[record]
#[derive(Clone)]
pub struct RedisConfig {
    /// The server's host name or address.
    #[field(typedef = host)]
    pub host: Option<String>,
    /// The server's port.
    #[field(typedef = port, default = 6379)]
    pub port: Option<u16>,
    /// Connect, send and read timeout, in milliseconds.
    #[field(typedef = timeout, default = 2000)]
    pub timeout: Option<u64>,
    /// An ACL user name (Redis 6+); with `password`.
    #[field(referenceable)]
    pub username: Option<String>,
    /// The password (`AUTH`).
    #[field(referenceable, encrypted, len_min = 0)]
    pub password: Option<String>,
    /// The database number (`SELECT`).
    #[field(default = 0)]
    pub database: Option<i64>,
    /// Speak TLS.
    #[field(default = false)]
    pub ssl: Option<bool>,
    /// Verify the server's certificate (against the system's roots).
    #[field(default = false)]
    pub ssl_verify: Option<bool>,
    /// The name the server's certificate is checked against.
    #[field(typedef = sni)]
    pub server_name: Option<String>,
}

impl RedisConfig {
    /// Kong's `db_key`: `host:port;database`, what `sync_rate` counters are kept by.
    pub(crate) fn db_key(&self) -> String {
        format!(
            "{}:{};{}",
            self.host.as_deref().unwrap_or_default(),
            self.port.unwrap_or(6379),
            self.database.unwrap_or(0)
        )
    }

    /// The server, as the gateway's connections take it.
    pub(crate) fn settings(&self) -> RedisSettings {
        RedisSettings {
            host: self.host.clone().unwrap_or_default(),
            port: self.port.unwrap_or(6379),
            timeout: Duration::from_millis(self.timeout.unwrap_or(2000)),
            username: self.username.clone(),
            password: self.password.clone(),
            database: self.database.unwrap_or(0),
            ssl: self.ssl.unwrap_or(false),
            ssl_verify: self.ssl_verify.unwrap_or(false),
            server_name: self.server_name.clone(),
        }
    }
}

/// Kong's usage script: count this request, start the window's expiry with the first, and
/// answer the count before it.
const USAGE_SCRIPT: &str = r#"
local cache_key, expiration = KEYS[1], ARGV[1]
local result_incr = redis.call("incr", cache_key)
if result_incr == 1 then
  redis.call("expire", cache_key, expiration)
end
return result_incr - 1
"#;

/// Kong's sync script: add a node's delta, expiring a new key with its window.
const SYNC_SCRIPT: &str = r#"
local key, value, expiration = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local exists = redis.call("exists", key)
redis.call("incrby", key, value)
if not exists or exists == 0 then
  redis.call("expireat", key, expiration)
end
"#;

/// Counts this request in each `(key, window seconds)` and answers the counts before it, in
/// one round trip.
pub(crate) async fn usage(
    redis: &dyn RedisClient,
    server: &RedisSettings,
    keys: &[(String, i64)],
) -> Result<Vec<i64>, String> {
    let commands = keys
        .iter()
        .map(|(key, window)| RedisCommand::new("EVAL").arg(USAGE_SCRIPT).arg(1).arg(key).arg(window))
        .collect();
    let replies = redis.pipeline(server, commands).await?;
    replies
        .iter()
        .map(|r| r.as_int().ok_or_else(|| format!("unexpected reply from Redis: {r:?}")))
        .collect()
}

/// Adds `delta` to a key, expiring a new one after `ARGV[2]` seconds (response-ratelimiting's
/// `EXISTS`, `INCRBY`, `EXPIRE`, in one step).
const ADD_SCRIPT: &str = r#"
local key, value, ttl = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local exists = redis.call("exists", key)
redis.call("incrby", key, value)
if exists == 0 then
  redis.call("expire", key, ttl)
end
"#;

/// The values of `keys` (0 for a missing one), in one round trip.
pub(crate) async fn get(redis: &dyn RedisClient, server: &RedisSettings, keys: &[String]) -> Result<Vec<i64>, String> {
    let commands = keys.iter().map(|k| RedisCommand::new("GET").arg(k)).collect();
    let replies = redis.pipeline(server, commands).await?;
    Ok(replies.iter().map(|r| r.as_int().unwrap_or(0)).collect())
}

/// Adds `delta` to each `(key, window seconds)`, in one round trip.
pub(crate) async fn add(
    redis: &dyn RedisClient,
    server: &RedisSettings,
    keys: &[(String, i64)],
    delta: i64,
) -> Result<(), String> {
    let commands = keys
        .iter()
        .map(|(key, ttl)| {
            RedisCommand::new("EVAL")
                .arg(ADD_SCRIPT)
                .arg(1)
                .arg(key)
                .arg(delta)
                .arg(ttl)
        })
        .collect();
    redis.pipeline(server, commands).await.map(drop)
}

/// Counters cached per Redis database at most, in `sync_rate` mode.
const MAX_CACHED: usize = 100_000;
/// Redis databases whose `sync_rate` counters are kept at most.
const MAX_DATABASES: usize = 64;

/// The `sync_rate` mode's node-local counters (Kong's `cur_usage`, `cur_delta`), by Redis
/// database.
#[derive(Default)]
pub(crate) struct SyncedCounters {
    databases: Mutex<HashMap<String, Arc<Synced>>>,
}

impl std::fmt::Debug for SyncedCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncedCounters")
    }
}

impl SyncedCounters {
    fn database(&self, conf: &RedisConfig) -> Arc<Synced> {
        let mut map = self.databases.lock().unwrap_or_else(|e| e.into_inner());
        let key = conf.db_key();
        if map.len() >= MAX_DATABASES && !map.contains_key(&key) {
            map.clear();
        }
        map.entry(key).or_default().clone()
    }

    /// The count Redis gave when the key was first seen plus this node's delta since, until
    /// the window ends; `None` when the key is not cached.
    pub(crate) fn usage(&self, conf: &RedisConfig, key: &str, start: i64, window: i64, now: i64) -> Option<i64> {
        let db = self.database(conf);
        let mut counters = db.counters.lock().unwrap_or_else(|e| e.into_inner());
        let entry = counters.get_mut(key)?;
        let usage = entry.usage?;
        if entry.expire_at > now {
            return Some(usage + entry.delta);
        }
        *entry = Cached {
            usage: Some(0),
            expire_at: start + window,
            delta: 0,
        };
        Some(0)
    }

    /// Remembers the count Redis answered before this request, which the script counted: the
    /// node's view starts with it (`usage + 1`) and the delta at -1, so that the increment
    /// that follows is not sent twice. (Kong caches `usage` itself, which leaves each node's
    /// view and Redis one request short per sync; this counts every request once.)
    pub(crate) fn remember(&self, conf: &RedisConfig, key: &str, usage: i64, expire_at: i64) {
        let db = self.database(conf);
        let mut counters = db.counters.lock().unwrap_or_else(|e| e.into_inner());
        if counters.len() >= MAX_CACHED && !counters.contains_key(key) {
            return;
        }
        counters.insert(
            key.to_owned(),
            Cached {
                usage: Some(usage + 1),
                expire_at,
                delta: -1,
            },
        );
    }

    /// Adds this request to each `(key, expire_at)`; answers the task that sends the deltas
    /// to Redis when no sync is pending yet (Kong's `rate_limited_sync`): run it after
    /// `sync_rate` seconds.
    pub(crate) fn add(
        &self,
        conf: &RedisConfig,
        keys: &[(String, i64)],
        redis: Arc<dyn RedisClient>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let db = self.database(conf);
        {
            let mut counters = db.counters.lock().unwrap_or_else(|e| e.into_inner());
            for (key, expire_at) in keys {
                if counters.len() >= MAX_CACHED && !counters.contains_key(key) {
                    continue;
                }
                let entry = counters.entry(key.clone()).or_insert(Cached {
                    usage: None,
                    expire_at: *expire_at,
                    delta: 0,
                });
                entry.delta += 1;
            }
        }
        if db.pending.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return None; // the pending sync picks this up
        }
        let server = conf.settings();
        Some(async move {
            db.pending.store(false, std::sync::atomic::Ordering::Release);
            // Sent or not, the node starts over from what Redis holds (as Kong clears its
            // tables). A sync still running sends other deltas: each takes what it drains.
            let deltas: Vec<(String, i64, i64)> = {
                let mut counters = db.counters.lock().unwrap_or_else(|e| e.into_inner());
                counters
                    .drain()
                    .filter(|(_, c)| c.delta != 0)
                    .map(|(k, c)| (k, c.delta, c.expire_at))
                    .collect()
            };
            if deltas.is_empty() {
                return;
            }
            let commands = deltas
                .iter()
                .map(|(key, delta, expire_at)| {
                    RedisCommand::new("EVAL")
                        .arg(SYNC_SCRIPT)
                        .arg(1)
                        .arg(key)
                        .arg(delta)
                        .arg(expire_at)
                })
                .collect();
            if let Err(e) = redis.pipeline(&server, commands).await {
                tracing::error!(target: "kong", "[rate-limiting] failed to commit increment pipeline in Redis: {e}");
            }
        })
    }
}

/// One Redis database's counters in `sync_rate` mode.
#[derive(Default)]
struct Synced {
    counters: Mutex<HashMap<String, Cached>>,
    /// A sync is scheduled.
    pending: std::sync::atomic::AtomicBool,
}

struct Cached {
    /// What Redis answered (`None`: only deltas known).
    usage: Option<i64>,
    /// When the window ends, in seconds since the epoch.
    expire_at: i64,
    /// This node's increments not yet in Redis.
    delta: i64,
}
