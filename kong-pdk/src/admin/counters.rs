//! [`ClusterCounters`] in the node's database: reads go straight to it (bounded by a
//! timeout); increments go through a bounded queue to one task that folds them together and
//! writes each batch in one transaction, and now and then deletes expired rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::Store;
use crate::counters::{ClusterCounters, CounterFuture, CounterKey, CounterTable};

/// Increments waiting to be written, in batches of requests.
const QUEUE: usize = 4096;
/// Distinct counters written in one transaction at most.
const BATCH: usize = 512;
/// How long a read may take before it counts as the database failing.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often expired rows are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60);

type Increments = (CounterTable, Vec<(CounterKey, i64, i64)>);

/// The counters of one node, on its store.
pub(crate) struct DbCounters {
    store: Store,
    queue: mpsc::Sender<Increments>,
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl DbCounters {
    /// The counters on `store`, with their writer task spawned on the current runtime. The
    /// task ends when the counters are dropped, after writing what was queued.
    pub(crate) fn start(store: Store) -> Arc<DbCounters> {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(store.clone(), rx));
        Arc::new(DbCounters { store, queue })
    }
}

impl ClusterCounters for DbCounters {
    fn get<'a>(&'a self, table: CounterTable, keys: &'a [CounterKey]) -> CounterFuture<'a, Vec<i64>> {
        Box::pin(async move {
            match tokio::time::timeout(READ_TIMEOUT, self.store.counter_values(table, keys, now())).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("timeout reading {}", table.name())),
            }
        })
    }

    fn add(&self, table: CounterTable, increments: Vec<(CounterKey, i64, i64)>) -> Result<(), String> {
        self.queue
            .try_send((table, increments))
            .map_err(|_| format!("{}: too many increments waiting for the database", table.name()))
    }
}

/// Increments folded by counter: (delta, expiry).
type Pending = HashMap<(CounterTable, CounterKey), (i64, i64)>;

fn fold((table, increments): Increments, pending: &mut Pending) {
    let at = now();
    for (key, delta, ttl) in increments {
        let slot = pending.entry((table, key)).or_insert((0, 0));
        slot.0 += delta;
        slot.1 = slot.1.max(at + ttl);
    }
}

/// Writes queued increments, folding those that arrived together.
async fn writer(store: Store, mut rx: mpsc::Receiver<Increments>) {
    let mut last_purge = Instant::now();
    while let Some(first) = rx.recv().await {
        let mut pending = Pending::new();
        fold(first, &mut pending);
        while pending.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => fold(more, &mut pending),
                Err(_) => break,
            }
        }
        for table in [CounterTable::RateLimiting, CounterTable::ResponseRateLimiting] {
            let rows: Vec<(&CounterKey, i64, i64)> = pending
                .iter()
                .filter(|((t, _), _)| *t == table)
                .map(|((_, key), (delta, expires))| (key, *delta, *expires))
                .collect();
            if rows.is_empty() {
                continue;
            }
            if let Err(e) = store.add_counters(table, &rows).await {
                tracing::error!(target: "kong", "could not increment {}: {e}", table.name());
            }
        }
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = Instant::now();
            for table in [CounterTable::RateLimiting, CounterTable::ResponseRateLimiting] {
                if let Err(e) = store.purge_counters(table, now()).await {
                    tracing::error!(target: "kong", "could not delete expired {}: {e}", table.name());
                }
            }
        }
    }
}
