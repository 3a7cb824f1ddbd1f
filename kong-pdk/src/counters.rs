//! Counters the nodes of a cluster share through their database: Kong's `ratelimiting_metrics`
//! and `response_ratelimiting_metrics`, which the `cluster` policies of `rate-limiting` and
//! `response-ratelimiting` count in.
//!
//! A handler reaches them with [`Kong::cluster_counters`](crate::Kong::cluster_counters):
//! `None` on a node without a database (DB-less). Reads go to the database; increments are
//! queued and written in batches by a background task, so a request never waits for a write,
//! and a burst of requests costs one transaction per batch rather than one per request.
//!
//! ```
//! use kong_pdk::counters::{CounterKey, CounterTable};
//! use kong_pdk::Error;
//! use kong_pdk::prelude::*;
//!
//! #[plugin(priority = 10, version = "1.0.0")]
//! pub struct Hits {}
//!
//! #[handler]
//! impl Handler for Hits {
//!     async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
//!         let Some(counters) = kong.cluster_counters() else {
//!             return Ok(()); // DB-less: nothing shared
//!         };
//!         let key = CounterKey {
//!             route_id: uuid::Uuid::nil(),
//!             service_id: uuid::Uuid::nil(),
//!             identifier: "everyone".into(),
//!             period: "minute".into(),
//!             period_date: 0,
//!         };
//!         let table = CounterTable::RateLimiting;
//!         let seen = counters.get(table, std::slice::from_ref(&key)).await.map_err(Error::msg)?;
//!         kong.response().set_header("X-Seen", seen[0].to_string())?;
//!         counters.add(table, vec![(key, 1, 60)]).map_err(Error::msg)?;
//!         Ok(())
//!     }
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use uuid::Uuid;

/// A table of counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterTable {
    /// `ratelimiting_metrics` (`rate-limiting`).
    RateLimiting,
    /// `response_ratelimiting_metrics` (`response-ratelimiting`).
    ResponseRateLimiting,
}

impl CounterTable {
    /// The table's name in the database.
    pub fn name(self) -> &'static str {
        match self {
            CounterTable::RateLimiting => "ratelimiting_metrics",
            CounterTable::ResponseRateLimiting => "response_ratelimiting_metrics",
        }
    }
}

/// One counter: Kong's primary key of the metrics tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKey {
    /// The route the counting plugin instance is attached to (nil when none).
    pub route_id: Uuid,
    /// The service the counting plugin instance is attached to (nil when none).
    pub service_id: Uuid,
    /// Who is counted (a consumer id, an address, ...).
    pub identifier: String,
    /// The window's name (`second` ... `year`, or `<limit name>_<period>`).
    pub period: String,
    /// When the window started, in seconds since the epoch.
    pub period_date: i64,
}

/// What a counter operation returns: a future of the result, or the reason it failed.
pub type CounterFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Counters shared by every node on one database.
pub trait ClusterCounters: Send + Sync + 'static {
    /// The current values of `keys`, in order (0 for a counter never incremented or expired).
    fn get<'a>(&'a self, table: CounterTable, keys: &'a [CounterKey]) -> CounterFuture<'a, Vec<i64>>;

    /// Adds each `(key, delta, ttl)`: the counter grows by `delta` and lives `ttl` seconds
    /// from now. Queued and applied shortly after in a batch; fails only when the queue is
    /// full (the database is not keeping up), and then nothing of `increments` is counted.
    fn add(&self, table: CounterTable, increments: Vec<(CounterKey, i64, i64)>) -> Result<(), String>;
}

/// Where a node keeps its [`ClusterCounters`] once a database is opened.
#[derive(Clone, Default)]
pub struct CounterSlot(Arc<OnceLock<Arc<dyn ClusterCounters>>>);

impl CounterSlot {
    /// The counters, when the node has a database.
    pub fn get(&self) -> Option<Arc<dyn ClusterCounters>> {
        self.0.get().cloned()
    }

    /// Installs the node's counters; the first installed stays.
    pub fn set(&self, counters: Arc<dyn ClusterCounters>) {
        let _ = self.0.set(counters);
    }
}

impl std::fmt::Debug for CounterSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "CounterSlot(database)"
        } else {
            "CounterSlot(none)"
        })
    }
}
