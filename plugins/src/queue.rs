//! Kong's plugin queue (`kong/tools/queue.lua`, `queue_schema.lua`): entries a log plugin
//! produces wait in a bounded queue and are sent in batches by one task, outside requests;
//! failed batches are retried with a doubling delay until `max_retry_time`. A full queue drops
//! its oldest entries, counted in the log: a slow or dead receiver never blocks a request nor
//! grows memory past `max_entries` (and `max_bytes`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kong_pdk::prelude::*;
use kong_pdk::timer::Timers;

/// Defines a queue settings record (Kong's `typedefs.queue`) whose `max_batch_size`
/// defaults to `$batch` (plugins override that default, as Kong's `typedefs.queue { default
/// = ... }` does).
macro_rules! queue_record {
    ($(#[$doc:meta])* $name:ident, $batch:tt) => {
        $(#[$doc])*
        #[record]
        #[derive(Clone)]
        pub struct $name {
            /// Entries sent together at most.
            #[field(default = $batch, between = (1, 1000000))]
            pub max_batch_size: Option<i64>,
            /// How long, in seconds, a batch waits for more entries before it goes.
            #[field(default = 1, between = (0, 3600))]
            pub max_coalescing_delay: Option<f64>,
            /// Entries waiting at most (the oldest are dropped beyond).
            #[field(default = 10000, between = (1, 1000000))]
            pub max_entries: Option<i64>,
            /// Bytes waiting at most.
            pub max_bytes: Option<i64>,
            /// How long, in seconds, a failing batch is retried.
            #[field(default = 60)]
            pub max_retry_time: Option<f64>,
            /// The first retry's delay, in seconds; each next one doubles.
            #[field(default = 0.01, between = (0.001, 1000000))]
            pub initial_retry_delay: Option<f64>,
            /// The longest retry delay, in seconds.
            #[field(default = 60, between = (0.001, 1000000))]
            pub max_retry_delay: Option<f64>,
            /// `1`: one sender; `-1`: no queue, each entry sent at once on its own.
            #[field(default = 1, one_of = [-1, 1])]
            pub concurrency_limit: Option<i64>,
        }
    };
}

queue_record!(
    /// The queue's settings (Kong's `queue` record).
    QueueConfig,
    1
);

queue_record!(
    /// The queue's settings of a plugin that batches 200 entries by default (Kong's
    /// `typedefs.queue { default = { max_batch_size = 200 } }`: opentelemetry).
    Batched200,
    200
);

impl From<Batched200> for QueueConfig {
    fn from(q: Batched200) -> QueueConfig {
        QueueConfig {
            max_batch_size: q.max_batch_size,
            max_coalescing_delay: q.max_coalescing_delay,
            max_entries: q.max_entries,
            max_bytes: q.max_bytes,
            max_retry_time: q.max_retry_time,
            initial_retry_delay: q.initial_retry_delay,
            max_retry_delay: q.max_retry_delay,
            concurrency_limit: q.concurrency_limit,
        }
    }
}

/// Queues kept at most by one node (a node that sees more distinct queue names starts over:
/// configurations that change all the time cannot grow it without bound).
const MAX_QUEUES: usize = 256;

/// A plugin's queues on this node, by Kong's queue name: instances with the same parameters
/// share one.
#[derive(Default)]
pub struct Queues {
    queues: Mutex<std::collections::HashMap<String, Arc<Queue>>>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queues")
    }
}

impl Queues {
    /// The queue named `name`, created by `create` when there is none yet.
    /// The queue named `name`, if it is there.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    pub(crate) fn get_or_insert_with(&self, name: String, create: impl FnOnce() -> Arc<Queue>) -> Arc<Queue> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get(&name) {
            return q.clone();
        }
        if queues.len() >= MAX_QUEUES {
            queues.clear();
        }
        let q = create();
        queues.insert(name, q.clone());
        q
    }
}

/// What sends a batch (it reads the entries before it returns its future, so a retry sends
/// the same entries without copying them): `Err` retries it.
pub(crate) type Send = Arc<
    dyn Fn(&[Vec<u8>]) -> Pin<Box<dyn Future<Output = Result<(), String>> + std::marker::Send>>
        + std::marker::Send
        + Sync,
>;

struct Waiting {
    entries: VecDeque<Vec<u8>>,
    bytes: usize,
    running: bool,
    dropped: u64,
}

/// One queue (shared by the plugin instances that send to the same place).
pub(crate) struct Queue {
    name: String,
    config: QueueConfig,
    waiting: Mutex<Waiting>,
    send: Send,
    timers: Arc<dyn Timers>,
}

impl Queue {
    pub(crate) fn new(name: String, config: QueueConfig, send: Send, timers: Arc<dyn Timers>) -> Arc<Queue> {
        Arc::new(Queue {
            name,
            config,
            waiting: Mutex::new(Waiting {
                entries: VecDeque::new(),
                bytes: 0,
                running: false,
                dropped: 0,
            }),
            send,
            timers,
        })
    }

    fn secs(v: Option<f64>, default: f64) -> Duration {
        Duration::from_secs_f64(v.unwrap_or(default).clamp(0.0, 1e6))
    }

    /// Adds an entry; answers a warning to log when older entries had to go.
    pub(crate) fn enqueue(self: &Arc<Self>, entry: Vec<u8>) -> Option<String> {
        if self.config.concurrency_limit == Some(-1) {
            // No queue: this entry goes on its own, now.
            let this = self.clone();
            self.timers
                .at(Duration::ZERO, Box::pin(async move { this.deliver(vec![entry]).await }));
            return None;
        }
        let max_entries = self.config.max_entries.unwrap_or(10_000).max(1) as usize;
        let max_bytes = self.config.max_bytes.filter(|b| *b > 0).map(|b| b as usize);
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        while !waiting.entries.is_empty()
            && (waiting.entries.len() >= max_entries || max_bytes.is_some_and(|m| waiting.bytes + entry.len() > m))
        {
            if let Some(old) = waiting.entries.pop_front() {
                waiting.bytes -= old.len();
                dropped += 1;
            }
        }
        waiting.dropped += dropped;
        waiting.bytes += entry.len();
        waiting.entries.push_back(entry);
        if !waiting.running {
            waiting.running = true;
            let this = self.clone();
            self.timers
                .at(Duration::ZERO, Box::pin(async move { this.run().await }));
        }
        (dropped > 0).then(|| {
            format!(
                "queue {}: maximum number of entries reached, {} oldest dropped ({} in all)",
                self.name, dropped, waiting.dropped
            )
        })
    }

    /// The sender task: batches until the queue is empty.
    async fn run(self: Arc<Self>) {
        let batch_size = self.config.max_batch_size.unwrap_or(1).max(1) as usize;
        let coalescing = Self::secs(self.config.max_coalescing_delay, 1.0);
        loop {
            let short = {
                let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                waiting.entries.len() < batch_size
            };
            // A batch that is not full waits for more, at most the coalescing delay.
            if short && batch_size > 1 && !coalescing.is_zero() {
                self.timers.sleep(coalescing).await;
            }
            let batch: Vec<Vec<u8>> = {
                let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                let n = waiting.entries.len().min(batch_size);
                let batch: Vec<Vec<u8>> = waiting.entries.drain(..n).collect();
                waiting.bytes -= batch.iter().map(Vec::len).sum::<usize>();
                if batch.is_empty() {
                    waiting.running = false;
                    return;
                }
                batch
            };
            self.deliver(batch).await;
        }
    }

    /// Sends a batch, retrying with a doubling delay until `max_retry_time` has passed.
    async fn deliver(&self, batch: Vec<Vec<u8>>) {
        let started = Instant::now();
        let max_retry_time = self.config.max_retry_time.unwrap_or(60.0);
        let mut delay = Self::secs(self.config.initial_retry_delay, 0.01);
        let max_delay = Self::secs(self.config.max_retry_delay, 60.0);
        let mut tries = 0;
        loop {
            tries += 1;
            match (self.send)(&batch).await {
                Ok(()) => return,
                Err(e) => {
                    let out_of_time = max_retry_time < 0.0
                        || started.elapsed() + delay > Duration::from_secs_f64(max_retry_time.max(0.0));
                    if out_of_time {
                        tracing::error!(
                            target: "kong",
                            "queue {}: could not send entries due to max_retry_time exceeded. {} queue entries were lost (after {tries} tries, last error: {e})",
                            self.name,
                            batch.len()
                        );
                        return;
                    }
                    tracing::warn!(target: "kong", "queue {}: handler could not process entries: {e}", self.name);
                    self.timers.sleep(delay).await;
                    delay = (delay * 2).min(max_delay);
                }
            }
        }
    }
}
