//! The per-request metrics: families of series keyed by their label values, each series a few
//! atomics. A request looks its series up without allocating (the labels are borrowed from
//! the request) and bumps them; only a new label combination allocates, once. Each family
//! holds at most [`MAX_SERIES`] series, as Kong's `prometheus_metrics` shared dict is
//! bounded: beyond, observations are dropped and counted in `kong_nginx_metric_errors_total`.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Series a family holds at most.
pub(super) const MAX_SERIES: usize = 65_536;

/// Kong's `KONG_LATENCY_BUCKETS` (`kong_kong_latency_ms`).
pub(super) const KONG_BUCKETS: [u64; 17] = [1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000];
/// Kong's `UPSTREAM_LATENCY_BUCKETS` (`kong_upstream_latency_ms`, `kong_request_latency_ms`).
pub(super) const UPSTREAM_BUCKETS: [u64; 13] = [25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000];

/// A series' label values, owned (a family's key).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Labels(Box<[Box<str>]>);

impl Labels {
    pub(super) fn values(&self) -> impl Iterator<Item = &str> + Clone {
        self.0.iter().map(|v| &**v)
    }
}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.len());
        for v in &*self.0 {
            v.hash(state);
        }
    }
}

/// A series' label values, borrowed from a request (a look-up key).
#[derive(Debug, Clone, Copy)]
pub(super) struct LabelsRef<'a, const N: usize>(pub(super) [&'a str; N]);

impl<const N: usize> Hash for LabelsRef<'_, N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(N);
        for v in &self.0 {
            v.hash(state);
        }
    }
}

impl<const N: usize> papaya::Equivalent<Labels> for LabelsRef<'_, N> {
    fn equivalent(&self, key: &Labels) -> bool {
        key.0.len() == N && self.0.iter().zip(key.0.iter()).all(|(a, b)| *a == &**b)
    }
}

impl<const N: usize> LabelsRef<'_, N> {
    fn owned(&self) -> Labels {
        Labels(self.0.iter().map(|v| Box::<str>::from(*v)).collect())
    }
}

/// The series of one metric (or of metrics that share their labels).
pub(super) struct Family<V> {
    series: papaya::HashMap<Labels, V>,
}

impl<V> Default for Family<V> {
    fn default() -> Self {
        Family {
            series: papaya::HashMap::new(),
        }
    }
}

impl<V: Default + Send + Sync> Family<V> {
    /// Runs `f` on the series of `labels`, made on first use; `false` when the family is full
    /// and the series is new.
    pub(super) fn with<const N: usize>(&self, labels: LabelsRef<'_, N>, f: impl FnOnce(&V)) -> bool {
        let series = self.series.pin();
        if let Some(v) = series.get(&labels) {
            f(v);
            return true;
        }
        if series.len() >= MAX_SERIES {
            return false;
        }
        f(series.get_or_insert_with(labels.owned(), V::default));
        true
    }

    /// Every series, in no order.
    pub(super) fn each(&self, mut f: impl FnMut(&Labels, &V)) {
        for (k, v) in self.series.pin().iter() {
            f(k, v);
        }
    }
}

/// A histogram: per-bucket counts (not cumulative: summed when exposed), the count and sum.
pub(super) struct Histogram<const B: usize> {
    buckets: [AtomicU64; B],
    /// Observations above the last bound.
    over: AtomicU64,
    sum: AtomicU64,
}

impl<const B: usize> Default for Histogram<B> {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            over: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const B: usize> Histogram<B> {
    /// Observes `value` against the bounds `le`.
    pub(super) fn observe(&self, le: &[u64; B], value: u64) {
        match le.iter().position(|b| value <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.over.fetch_add(1, Relaxed),
        };
        self.sum.fetch_add(value, Relaxed);
    }

    /// The cumulative counts per bound, then `+Inf` (the count), and the sum.
    pub(super) fn read(&self) -> ([u64; B], u64, u64) {
        let mut total = 0;
        let cumulative = std::array::from_fn(|i| {
            total += self.buckets[i].load(Relaxed);
            total
        });
        (cumulative, total + self.over.load(Relaxed), self.sum.load(Relaxed))
    }
}

/// The three latency histograms of a service/route.
#[derive(Default)]
pub(super) struct Latencies {
    pub(super) kong: Histogram<17>,
    pub(super) upstream: Histogram<13>,
    pub(super) request: Histogram<13>,
}

/// Ingress and egress bytes of a service/route/consumer.
#[derive(Default)]
pub(super) struct Bandwidth {
    pub(super) ingress: AtomicU64,
    pub(super) egress: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_and_owned_labels_find_the_same_series() {
        let family: Family<AtomicU64> = Family::default();
        for _ in 0..3 {
            assert!(family.with(LabelsRef(["svc", "route", "200"]), |c| {
                c.fetch_add(1, Relaxed);
            }));
        }
        family.with(LabelsRef(["svc", "route", "404"]), |c| {
            c.fetch_add(1, Relaxed);
        });
        let mut seen = Vec::new();
        family.each(|k, v| seen.push((k.values().collect::<Vec<_>>().join(","), v.load(Relaxed))));
        seen.sort();
        assert_eq!(
            seen,
            vec![("svc,route,200".to_owned(), 3), ("svc,route,404".to_owned(), 1)]
        );
    }

    #[test]
    fn histograms_are_cumulative_when_read() {
        let h: Histogram<13> = Histogram::default();
        for v in [0, 25, 26, 60_000, 60_001] {
            h.observe(&UPSTREAM_BUCKETS, v);
        }
        let (buckets, count, sum) = h.read();
        assert_eq!(buckets[0], 2, "le=25 holds 0 and 25");
        assert_eq!(buckets[1], 3);
        assert_eq!(buckets[12], 4, "le=60000");
        assert_eq!((count, sum), (5, 120_052));
    }

    #[test]
    fn a_full_family_refuses_new_series_but_keeps_counting_old_ones() {
        let family: Family<AtomicU64> = Family::default();
        for i in 0..MAX_SERIES {
            let name = i.to_string();
            assert!(family.with(LabelsRef([name.as_str()]), |_| {}));
        }
        assert!(!family.with(LabelsRef(["new"]), |_| {}));
        assert!(family.with(LabelsRef(["7"]), |c| {
            c.fetch_add(1, Relaxed);
        }));
    }
}
