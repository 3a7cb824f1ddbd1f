//! `prometheus` (Kong's `kong/plugins/prometheus`): per-request metrics by service, route and
//! consumer (status codes, latencies, bandwidth), and the node's own (connections, requests,
//! timers, datastore, memory), in Prometheus' text format at `GET /metrics` on the Admin API
//! and on the Status API (`status_listen`), with Kong's names, labels, help texts and order.
//!
//! The log phase only looks up its series (without allocating) and bumps atomics; the scrape
//! does the formatting. The node-level gauges are always exported while the plugin is
//! loaded; the per-request families only while at least one instance is configured.

mod exposition;
mod series;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use kong_pdk::api::{AdminAnswer, AdminRequest};
use kong_pdk::pdk::NodeInfo;
use kong_pdk::prelude::*;

use exposition::{Exposition, Kind};
use series::{Bandwidth, Family, KONG_BUCKETS, LabelsRef, Latencies, UPSTREAM_BUCKETS};

/// The plugin's configuration (Kong's `prometheus/schema.lua`): which metrics each instance
/// records.
#[plugin(priority = 13, version = "3.10.0")]
pub struct Prometheus {
    /// Fill the `consumer` label of `kong_http_requests_total` and `kong_bandwidth_bytes`
    /// with the authenticated consumer's username.
    #[field(default = false)]
    pub per_consumer: bool,
    /// Record `kong_http_requests_total`.
    #[field(default = false)]
    pub status_code_metrics: bool,
    /// Record the AI metrics (no AI proxy plugin runs here, so none are recorded).
    #[field(default = false)]
    pub ai_metrics: bool,
    /// Record `kong_kong_latency_ms`, `kong_upstream_latency_ms` and
    /// `kong_request_latency_ms`.
    #[field(default = false)]
    pub latency_metrics: bool,
    /// Record `kong_bandwidth_bytes`.
    #[field(default = false)]
    pub bandwidth_metrics: bool,
    /// Export `kong_upstream_target_health` (node-wide: on when any instance turns it on).
    #[field(default = false)]
    pub upstream_health_metrics: bool,
    /// Export Wasm filter metrics (node-wide; there are no Wasm filters here).
    #[field(default = false)]
    pub wasm_metrics: bool,
}

/// The node's metrics: the plugin type's state, shared by its instances.
#[derive(Default)]
pub struct Metrics {
    /// At least one instance is configured.
    enabled: AtomicBool,
    /// Some instance asks for `upstream_health_metrics`.
    upstream_health: AtomicBool,
    /// service, route, code, source, workspace, consumer.
    requests: Family<AtomicU64>,
    /// service, route, workspace.
    latencies: Family<Latencies>,
    /// service, route, workspace, consumer.
    bandwidth: Family<Bandwidth>,
    /// Observations dropped because a family was full.
    errors: AtomicU64,
}

const WORKSPACE: &str = "default";
const TEXT: &str = "text/plain; charset=UTF-8";

impl Metrics {
    fn dropped(&self, kept: bool) {
        if !kept {
            self.errors.fetch_add(1, Relaxed);
        }
    }

    /// Kong's `exporter.metric_data`: the scrape.
    fn scrape(&self, node: &NodeInfo) -> String {
        let mut e = Exposition::default();
        let node_id = node.id.to_string();
        let stats = node.stats.statistics();
        e.family(
            "nginx_connections_total",
            "Number of connections by subsystem",
            Kind::Gauge,
        );
        for (state, value) in [
            ("accepted", stats.connections_accepted),
            ("handled", stats.connections_handled),
            ("total", stats.total_requests),
            ("active", stats.connections_active),
            ("reading", stats.connections_reading),
            ("writing", stats.connections_writing),
            ("waiting", stats.connections_waiting),
        ] {
            let labels = [("node_id", node_id.as_str()), ("subsystem", "http"), ("state", state)];
            e.sample("nginx_connections_total", labels, value);
        }
        e.family("nginx_requests_total", "Number of requests total", Kind::Gauge);
        let labels = [("node_id", node_id.as_str()), ("subsystem", "http")];
        e.sample("nginx_requests_total", labels, stats.total_requests);
        e.family("nginx_timers", "Number of nginx timers", Kind::Gauge);
        let timers = node.timers.as_ref().map(|t| t.counts()).unwrap_or_default();
        e.sample("nginx_timers", [("state", "running")], timers.running);
        e.sample("nginx_timers", [("state", "pending")], timers.pending);
        e.family(
            "datastore_reachable",
            "Datastore reachable from Kong, 0 is unreachable",
            Kind::Gauge,
        );
        // DB-less, the datastore is the configuration in memory: always reachable.
        let reachable = node.stats.datastore_reachable().unwrap_or(true);
        e.sample("datastore_reachable", [], u64::from(reachable));
        e.family("node_info", "Kong Node metadata information", Kind::Gauge);
        let labels = [("node_id", node_id.as_str()), ("version", "3.10.0")];
        e.sample("node_info", labels, 1);
        e.family(
            "memory_workers_lua_vms_bytes",
            "Allocated bytes in worker Lua VM",
            Kind::Gauge,
        );
        if let Ok(bytes) = kong_pdk::stats::resident_bytes() {
            let pid = std::process::id().to_string();
            let labels = [
                ("node_id", node_id.as_str()),
                ("pid", pid.as_str()),
                ("kong_subsystem", "http"),
            ];
            e.sample("memory_workers_lua_vms_bytes", labels, bytes);
        }
        if self.upstream_health.load(Relaxed) {
            e.family(
                "upstream_target_health",
                "Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated.",
                Kind::Gauge,
            );
            for t in node.health.targets() {
                for state in ["healthchecks_off", "healthy", "unhealthy", "dns_error"] {
                    let labels = [
                        ("upstream", t.upstream.as_str()),
                        ("target", t.target.as_str()),
                        ("address", t.address.as_str()),
                        ("state", state),
                        ("subsystem", "http"),
                    ];
                    e.sample("upstream_target_health", labels, u64::from(t.state == state));
                }
            }
        }
        if self.enabled.load(Relaxed) {
            self.per_request(&mut e);
        }
        e.render("kong_")
    }

    /// The families recorded by the log phase.
    fn per_request(&self, e: &mut Exposition) {
        e.family(
            "nginx_metric_errors_total",
            "Number of nginx-lua-prometheus errors",
            Kind::Counter,
        );
        e.sample("nginx_metric_errors_total", [], self.errors.load(Relaxed));
        e.family(
            "http_requests_total",
            "HTTP status codes per consumer/service/route in Kong",
            Kind::Counter,
        );
        self.requests.each(|labels, count| {
            let names = ["service", "route", "code", "source", "workspace", "consumer"];
            e.sample(
                "http_requests_total",
                names.into_iter().zip(labels.values()),
                count.load(Relaxed),
            );
        });
        e.family(
            "kong_latency_ms",
            "Latency added by Kong and enabled plugins for each service/route in Kong",
            Kind::Histogram,
        );
        e.family(
            "upstream_latency_ms",
            "Latency added by upstream response for each service/route in Kong",
            Kind::Histogram,
        );
        e.family(
            "request_latency_ms",
            "Total latency incurred during requests for each service/route in Kong",
            Kind::Histogram,
        );
        self.latencies.each(|labels, l| {
            let labels = ["service", "route", "workspace"].into_iter().zip(labels.values());
            for (name, le, h) in [
                ("upstream_latency_ms", &UPSTREAM_BUCKETS[..], l.upstream.read_dyn()),
                ("request_latency_ms", &UPSTREAM_BUCKETS[..], l.request.read_dyn()),
                ("kong_latency_ms", &KONG_BUCKETS[..], l.kong.read_dyn()),
            ] {
                // A histogram nothing was observed in (upstream latency of answers Kong gave
                // itself) is not exported, as Kong creates its series on first observation.
                if h.1 > 0 {
                    e.histogram(name, labels.clone(), le, &h.0, h.1, h.2);
                }
            }
        });
        e.family(
            "bandwidth_bytes",
            "Total bandwidth (ingress/egress) throughput in bytes",
            Kind::Counter,
        );
        self.bandwidth.each(|labels, b| {
            let mut values = labels.values();
            let (service, route, workspace, consumer) = (
                values.next().unwrap_or_default(),
                values.next().unwrap_or_default(),
                values.next().unwrap_or_default(),
                values.next().unwrap_or_default(),
            );
            for (direction, bytes) in [("ingress", &b.ingress), ("egress", &b.egress)] {
                let bytes = bytes.load(Relaxed);
                if bytes > 0 {
                    let labels = [
                        ("service", service),
                        ("route", route),
                        ("direction", direction),
                        ("workspace", workspace),
                        ("consumer", consumer),
                    ];
                    e.sample("bandwidth_bytes", labels, bytes);
                }
            }
        });
    }
}

impl<const B: usize> series::Histogram<B> {
    fn read_dyn(&self) -> (Vec<u64>, u64, u64) {
        let (buckets, count, sum) = self.read();
        (buckets.to_vec(), count, sum)
    }
}

/// A status code as label text, without allocating.
fn code_text(status: u16, buf: &mut [u8; 5]) -> &str {
    let mut n = status;
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

#[handler]
impl Handler for Prometheus {
    type State = Metrics;

    /// Kong's `exporter.configure`: the per-request families are exported while any instance
    /// exists; `upstream_health_metrics` is on when any instance turns it on.
    async fn configure(kong: &Worker<Metrics>, configs: Option<&[Instance<Self>]>) -> kong_pdk::Result {
        let configs = configs.unwrap_or_default();
        let metrics = kong.state();
        metrics.enabled.store(!configs.is_empty(), Relaxed);
        let health = configs.iter().any(|c| c.config.upstream_health_metrics);
        metrics.upstream_health.store(health, Relaxed);
        Ok(())
    }

    /// Kong's `exporter.log`: nothing without a matched route.
    async fn log(&self, kong: &mut Kong<Log, Metrics>) -> kong_pdk::Result {
        let metrics = kong.state();
        if kong.router().get_route().is_none() {
            return Ok(());
        }
        let m = kong.log().measures();
        let from_service = kong.response().get_source() == "service";
        // Only with per_consumer: the username is copied out of the PDK's borrow.
        let consumer = match self.per_consumer {
            true => kong.client().get_consumer().and_then(|c| c.username.clone()),
            false => None,
        };
        let consumer = consumer.as_deref().unwrap_or("");
        let router = kong.router();
        let Some(route) = router.get_route() else { return Ok(()) };
        let route_id;
        let route_name = match &route.name {
            Some(name) => name.as_str(),
            None => {
                route_id = route.id.to_string();
                route_id.as_str()
            }
        };
        let service = router
            .get_service()
            .map_or("", |s| s.name.as_deref().unwrap_or(s.host.as_str()));
        if self.bandwidth_metrics && (m.request_size > 0 || m.response_size > 0) {
            let labels = LabelsRef([service, route_name, WORKSPACE, consumer]);
            metrics.dropped(metrics.bandwidth.with(labels, |b| {
                b.ingress.fetch_add(m.request_size, Relaxed);
                b.egress.fetch_add(m.response_size, Relaxed);
            }));
        }
        if self.status_code_metrics {
            let mut buf = [0; 5];
            let code = code_text(m.status, &mut buf);
            let source = if from_service { "service" } else { "kong" };
            let labels = LabelsRef([service, route_name, code, source, WORKSPACE, consumer]);
            metrics.dropped(metrics.requests.with(labels, |c| {
                c.fetch_add(1, Relaxed);
            }));
        }
        if self.latency_metrics {
            let labels = LabelsRef([service, route_name, WORKSPACE]);
            metrics.dropped(metrics.latencies.with(labels, |l| {
                l.request.observe(&UPSTREAM_BUCKETS, m.request_latency);
                if let Some(proxy) = m.proxy_latency {
                    l.upstream.observe(&UPSTREAM_BUCKETS, proxy);
                }
                l.kong.observe(&KONG_BUCKETS, m.kong_latency);
            }));
        }
        Ok(())
    }

    /// Kong's `prometheus/api.lua`: `GET /metrics`.
    fn admin_api(api: &AdminRequest<'_, Metrics>) -> Option<AdminAnswer> {
        metrics_endpoint(api)
    }

    /// Kong's `prometheus/status_api.lua`: `GET /metrics`.
    fn status_api(api: &AdminRequest<'_, Metrics>) -> Option<AdminAnswer> {
        metrics_endpoint(api)
    }
}

fn metrics_endpoint(api: &AdminRequest<'_, Metrics>) -> Option<AdminAnswer> {
    match (api.method(), api.segments()) {
        ("GET" | "HEAD", ["metrics"]) => Some(AdminAnswer::text(200, TEXT, api.state().scrape(api.node()))),
        (_, ["metrics"]) => Some(AdminAnswer::json(
            405,
            serde_json::json!({ "message": "Method not allowed" }),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_print_without_allocating() {
        let mut buf = [0; 5];
        assert_eq!(code_text(200, &mut buf), "200");
        assert_eq!(code_text(0, &mut buf), "0");
        assert_eq!(code_text(65535, &mut buf), "65535");
    }
}
