//! Prometheus' text format as Kong's `prometheus.lua` writes it: every series key (the name
//! without the `kong_` prefix, then its labels in the metric's own order) sorted as a string,
//! histogram bounds zero-padded for that sort and printed as plain numbers, `# HELP` and
//! `# TYPE` before a family's first line.

use std::collections::HashMap;
use std::fmt::Write;

/// A metric's kind, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A scrape being written.
#[derive(Default)]
pub(super) struct Exposition {
    /// (key without the prefix, value).
    lines: Vec<(String, u64)>,
    /// name → (help, kind), for the families registered.
    families: HashMap<&'static str, (&'static str, Kind)>,
}

impl Exposition {
    /// Registers a family: its help text and kind.
    pub(super) fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) {
        self.families.insert(name, (help, kind));
    }

    /// One sample of `name` with `labels` (names and values in the metric's order).
    pub(super) fn sample<'a>(&mut self, name: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)>, value: u64) {
        let mut key = String::with_capacity(64);
        key.push_str(name);
        write_labels(&mut key, labels, None);
        self.lines.push((key, value));
    }

    /// A histogram's series: cumulative `buckets` against the bounds `le`, the count
    /// (`+Inf`) and the sum.
    pub(super) fn histogram<'a>(
        &mut self,
        name: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
        le: &[u64],
        buckets: &[u64],
        count: u64,
        sum: u64,
    ) {
        let width = le.iter().map(|b| b.to_string().len()).max().unwrap_or(1);
        for (bound, n) in le.iter().zip(buckets) {
            // Kong's bucket format: `%0{order + 2}.1f`, so that bounds sort as numbers.
            let padded = format!("{bound:0width$}.0");
            let mut key = format!("{name}_bucket");
            write_labels(&mut key, labels.clone(), Some(&padded));
            self.lines.push((key, *n));
        }
        let mut key = format!("{name}_bucket");
        write_labels(&mut key, labels.clone(), Some("Inf"));
        self.lines.push((key, count));
        let mut key = format!("{name}_count");
        write_labels(&mut key, labels.clone(), None);
        self.lines.push((key, count));
        let mut key = format!("{name}_sum");
        write_labels(&mut key, labels, None);
        self.lines.push((key, sum));
    }

    /// The text, each name prefixed with `prefix`.
    pub(super) fn render(mut self, prefix: &str) -> String {
        self.lines.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::with_capacity(self.lines.len() * 96);
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in &self.lines {
            let short = short_name(key);
            if !seen.contains(&short) {
                if let Some((help, kind)) = self.families.get(short) {
                    let _ = writeln!(out, "# HELP {prefix}{short} {help}");
                    let _ = writeln!(out, "# TYPE {prefix}{short} {}", kind.as_str());
                }
                seen.push(short);
            }
            out.push_str(prefix);
            match key.rfind(",le=\"").or_else(|| key.rfind("{le=\"")) {
                Some(at) => {
                    let (head, bound) = key.split_at(at + 5);
                    let bound = bound.trim_end_matches("\"}");
                    out.push_str(head);
                    match bound {
                        "Inf" => out.push_str("+Inf"),
                        padded => out.push_str(padded.trim_end_matches(".0").trim_start_matches('0')),
                    }
                    out.push_str("\"}");
                }
                None => out.push_str(key),
            }
            let _ = writeln!(out, " {value}");
        }
        out
    }
}

/// `{k="v",...}` (nothing without labels), with `le` last when given. Values escape `\` and
/// `"`, as Kong's do.
fn write_labels<'a>(key: &mut String, labels: impl IntoIterator<Item = (&'a str, &'a str)>, le: Option<&str>) {
    let mut first = true;
    for (name, value) in labels
        .into_iter()
        .map(|(n, v)| (n, Some(v)))
        .chain(le.map(|_| ("le", None)))
    {
        key.push(if first { '{' } else { ',' });
        first = false;
        key.push_str(name);
        key.push_str("=\"");
        match value {
            Some(v) => {
                for c in v.chars() {
                    match c {
                        '\\' => key.push_str("\\\\"),
                        '"' => key.push_str("\\\""),
                        c => key.push(c),
                    }
                }
            }
            None => key.push_str(le.unwrap_or_default()),
        }
        key.push('"');
    }
    if !first {
        key.push('}');
    }
}

/// The family a key belongs to: its name without labels, and for a histogram's buckets
/// without `_bucket` (Kong's `short_metric_name`).
fn short_name(key: &str) -> &str {
    let Some(open) = key.find('{') else { return key };
    match key.find("_bucket{") {
        Some(at) if key[open + 1..].contains("le=") => &key[..at],
        _ => &key[..open],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_as_kong_sorts_them_and_bounds_print_plainly() {
        let mut e = Exposition::default();
        e.family("latency_ms", "Latency", Kind::Histogram);
        e.family("requests_total", "Requests", Kind::Counter);
        e.sample("requests_total", [("code", "200"), ("route", "r\"1\\")], 3);
        e.histogram("latency_ms", [("route", "r")], &[1, 5, 1000], &[1, 1, 2], 3, 1002);
        let text = e.render("kong_");
        assert_eq!(
            text,
            "# HELP kong_latency_ms Latency\n\
             # TYPE kong_latency_ms histogram\n\
             kong_latency_ms_bucket{route=\"r\",le=\"1\"} 1\n\
             kong_latency_ms_bucket{route=\"r\",le=\"5\"} 1\n\
             kong_latency_ms_bucket{route=\"r\",le=\"1000\"} 2\n\
             kong_latency_ms_bucket{route=\"r\",le=\"+Inf\"} 3\n\
             kong_latency_ms_count{route=\"r\"} 3\n\
             kong_latency_ms_sum{route=\"r\"} 1002\n\
             # HELP kong_requests_total Requests\n\
             # TYPE kong_requests_total counter\n\
             kong_requests_total{code=\"200\",route=\"r\\\"1\\\\\"} 3\n"
        );
    }

    #[test]
    fn a_sample_without_labels_is_its_name() {
        let mut e = Exposition::default();
        e.family(
            "datastore_reachable",
            "Datastore reachable from Kong, 0 is unreachable",
            Kind::Gauge,
        );
        e.sample("datastore_reachable", [], 1);
        assert!(e.render("kong_").ends_with("\nkong_datastore_reachable 1\n"));
    }
}
