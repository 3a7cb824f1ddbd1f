//! Threads that do a log plugin's blocking I/O (file appends, datagrams) off the request
//! path: one per destination, each fed by a bounded queue. A full queue drops what it cannot
//! take, counted, instead of holding requests; the number of threads is bounded too.
//!
//! A worker takes what has queued up in batches (`batches`) and rests a millisecond between
//! them: under load, a request's hand-off is then a store in the queue, not a wake-up of a
//! sleeping thread (a futex call and two context switches, which cost more than the log line).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::Duration;

/// Items waiting for one worker at most.
const QUEUE: usize = 10_000;
/// Workers one node runs at most, per plugin.
const MAX_WORKERS: usize = 256;

struct Worker<T> {
    items: SyncSender<T>,
    dropped: u64,
}

/// What became of an item.
pub(crate) enum Sent {
    /// Queued for the worker.
    Queued,
    /// Dropped: the worker is behind; the count so far.
    Dropped(u64),
    /// Dropped: too many workers already.
    TooMany,
    /// Dropped: the worker could not start (why), or had stopped (it starts again next time).
    NotStarted(String),
}

/// A plugin's workers, by destination (a plugin type's `State`).
pub struct Workers<K, T> {
    workers: Mutex<HashMap<K, Worker<T>>>,
}

impl<K, T> Default for Workers<K, T> {
    fn default() -> Self {
        Workers {
            workers: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, T> std::fmt::Debug for Workers<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Workers")
    }
}

impl<K: Eq + Hash + Clone, T: Send + 'static> Workers<K, T> {
    /// Hands `item` to `key`'s worker; without one yet, `start` starts it with its queue
    /// (an error is the reason it could not).
    pub(crate) fn send(&self, key: &K, item: T, start: impl FnOnce(Receiver<T>) -> Result<(), String>) -> Sent {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if !workers.contains_key(key) {
            if workers.len() >= MAX_WORKERS {
                return Sent::TooMany;
            }
            let (tx, rx) = sync_channel(QUEUE);
            if let Err(e) = start(rx) {
                return Sent::NotStarted(e);
            }
            workers.insert(key.clone(), Worker { items: tx, dropped: 0 });
        }
        let Some(worker) = workers.get_mut(key) else {
            return Sent::NotStarted("no worker".into());
        };
        match worker.items.try_send(item) {
            Ok(()) => Sent::Queued,
            Err(TrySendError::Full(_)) => {
                worker.dropped += 1;
                Sent::Dropped(worker.dropped)
            }
            Err(TrySendError::Disconnected(_)) => {
                workers.remove(key);
                Sent::NotStarted("the worker had stopped".into())
            }
        }
    }
}

/// How long a worker rests after a batch before it looks at its queue again.
const REST: Duration = Duration::from_millis(1);

/// Runs `each` on the items of `queue`, in order, a batch (what had queued up) at a time,
/// resting [`REST`] between batches and blocking while the queue stays empty; returns once
/// every sender is gone. `each` gets the batch to take items from; what it leaves is dropped.
pub(crate) fn batches<T>(queue: Receiver<T>, mut each: impl FnMut(&mut Vec<T>)) {
    let mut batch = Vec::new();
    while let Ok(first) = queue.recv() {
        batch.push(first);
        loop {
            batch.extend(queue.try_iter().take(QUEUE));
            each(&mut batch);
            batch.clear();
            std::thread::sleep(REST);
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

impl Sent {
    /// The error line for a request's log, if this outcome needs one: `worker` names the
    /// worker ("the writer of /var/log/x"), `items` what it takes ("lines"), `too_many` the
    /// line when no worker could be added. Drops are reported on the first and every
    /// thousandth.
    pub(crate) fn problem(
        self,
        worker: impl FnOnce() -> String,
        items: &str,
        too_many: impl FnOnce() -> String,
    ) -> Option<String> {
        match self {
            Sent::Queued => None,
            Sent::Dropped(n) if worth_logging(n) => Some(format!("{} is behind: {n} {items} dropped", worker())),
            Sent::Dropped(_) => None,
            Sent::TooMany => Some(too_many()),
            Sent::NotStarted(e) => Some(e),
        }
    }
}

/// Whether the `n`th drop is worth a log line (the first, then every thousandth).
pub(crate) fn worth_logging(n: u64) -> bool {
    n == 1 || n.is_multiple_of(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_reported_once_in_a_thousand_drops() {
        let line = |sent: Sent| sent.problem(|| "the writer of /x".into(), "lines", || "too many".into());
        assert_eq!(line(Sent::Queued), None);
        assert_eq!(
            line(Sent::Dropped(1)).as_deref(),
            Some("the writer of /x is behind: 1 lines dropped")
        );
        assert_eq!(line(Sent::Dropped(2)), None);
        assert!(line(Sent::Dropped(2000)).is_some());
        assert_eq!(line(Sent::TooMany).as_deref(), Some("too many"));
        assert_eq!(line(Sent::NotStarted("no".into())).as_deref(), Some("no"));
    }

    #[test]
    fn batches_keep_the_order_and_end_with_the_senders() {
        let (tx, rx) = sync_channel(16);
        let worker = std::thread::spawn(move || {
            let mut seen = Vec::new();
            batches(rx, |batch| seen.append(batch));
            seen
        });
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        drop(tx);
        assert_eq!(worker.join().unwrap(), (0..10).collect::<Vec<_>>());
    }
}
