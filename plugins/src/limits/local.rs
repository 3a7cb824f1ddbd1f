//! The `local` policy's counters (Kong's `kong_rate_limiting_counters` shared dict): one
//! lock-free map per node, shared by every worker thread; counters expire with their window,
//! and the map is bounded like the dict: when full, expired counters go first, then the
//! counters closest to expiring.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use uuid::Uuid;

/// Counters kept at most (Kong's dict holds about this many in its 12 MiB).
const CAPACITY: usize = 100_000;

/// One counter's key: Kong's `ratelimit:<route>:<service>:<identifier>:<start>:<period>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LocalKey {
    /// `ratelimit` or `response-ratelimit`.
    pub prefix: &'static str,
    /// The instance's route (nil when none).
    pub route: Uuid,
    /// The instance's service (nil when none).
    pub service: Uuid,
    /// Who is counted.
    pub identifier: String,
    /// The window's start, in seconds.
    pub start: i64,
    /// The window (or `<name>:<window>`).
    pub period: std::borrow::Cow<'static, str>,
}

#[derive(Debug)]
struct Counter {
    value: AtomicI64,
    /// Seconds since the epoch after which the counter is gone.
    expires: i64,
}

/// A node's counters.
#[derive(Debug)]
pub(crate) struct LocalCounters {
    map: papaya::HashMap<LocalKey, Counter>,
    /// The second expired counters were last swept.
    swept: AtomicU64,
    capacity: usize,
}

impl Default for LocalCounters {
    fn default() -> Self {
        LocalCounters::with_capacity(CAPACITY)
    }
}

impl LocalCounters {
    pub(crate) fn with_capacity(capacity: usize) -> LocalCounters {
        LocalCounters {
            map: papaya::HashMap::new(),
            swept: AtomicU64::new(0),
            capacity,
        }
    }

    /// The counter's value at `now` (0 when absent or expired).
    pub(crate) fn get(&self, key: &LocalKey, now: i64) -> i64 {
        match self.map.pin().get(key) {
            Some(c) if c.expires > now => c.value.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Adds `delta`, creating the counter to live `ttl` seconds; returns the new value.
    pub(crate) fn incr(&self, key: &LocalKey, delta: i64, ttl: i64, now: i64) -> i64 {
        let map = self.map.pin();
        if let Some(c) = map.get(key)
            && c.expires > now
        {
            return c.value.fetch_add(delta, Ordering::Relaxed) + delta;
        }
        self.make_room(now);
        let fresh = || Counter {
            value: AtomicI64::new(0),
            expires: now + ttl,
        };
        // An expired counter is replaced; a live one (another thread's) is shared.
        let counter = map.compute(key.clone(), |old| match old {
            Some((_, c)) if c.expires > now => papaya::Operation::Abort(()),
            _ => papaya::Operation::Insert(fresh()),
        });
        let counter = match counter {
            papaya::Compute::Inserted(_, c) | papaya::Compute::Updated { new: (_, c), .. } => c,
            papaya::Compute::Aborted(()) => match map.get(key) {
                Some(c) => c,
                None => return self.incr(key, delta, ttl, now),
            },
            papaya::Compute::Removed(..) => return self.incr(key, delta, ttl, now),
        };
        counter.value.fetch_add(delta, Ordering::Relaxed) + delta
    }

    /// Number of counters held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Sweeps expired counters once a second; when still full, evicts those expiring first.
    fn make_room(&self, now: i64) {
        let second = now as u64;
        let last = self.swept.load(Ordering::Relaxed);
        let full = self.map.len() >= self.capacity;
        if (last < second || full)
            && self
                .swept
                .compare_exchange(
                    last,
                    second.max(last + u64::from(full)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let map = self.map.pin();
            map.retain(|_, c| c.expires > now);
            let len = map.len();
            if len >= self.capacity {
                // Drop the eighth of the counters that expire soonest.
                let mut expiries: Vec<i64> = map.values().map(|c| c.expires).collect();
                let cut = (len / 8).max(1);
                let (_, threshold, _) = expiries.select_nth_unstable(cut - 1);
                let threshold = *threshold;
                map.retain(|_, c| c.expires > threshold);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> LocalKey {
        LocalKey {
            prefix: "ratelimit",
            route: Uuid::nil(),
            service: Uuid::nil(),
            identifier: id.into(),
            start: 0,
            period: "minute".into(),
        }
    }

    #[test]
    fn counters_count_expire_and_stay_bounded() {
        let c = LocalCounters::with_capacity(16);
        assert_eq!(c.get(&key("a"), 100), 0);
        assert_eq!(c.incr(&key("a"), 1, 60, 100), 1);
        assert_eq!(c.incr(&key("a"), 2, 60, 100), 3);
        assert_eq!(c.get(&key("a"), 159), 3);
        assert_eq!(c.get(&key("a"), 160), 0, "expired with its window");
        assert_eq!(c.incr(&key("a"), 1, 60, 160), 1, "a new window starts from zero");
        for i in 0..100 {
            c.incr(&key(&i.to_string()), 1, 60 + i, 200);
        }
        assert!(c.len() <= 16, "bounded: {}", c.len());
        assert_eq!(c.get(&key("99"), 200), 1, "the latest-expiring counters stay");
    }

    #[test]
    fn threads_share_one_counter() {
        let c = std::sync::Arc::new(LocalCounters::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.incr(&key("shared"), 1, 60, 10);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(&key("shared"), 10), 4000);
    }
}
