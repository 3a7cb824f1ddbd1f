//! Active health checks (Kong's `healthchecks.active`, run by `lua-resty-healthcheck`): per
//! upstream, a task probes its healthy addresses every `healthy.interval` seconds and its
//! unhealthy ones every `unhealthy.interval` seconds, `concurrency` at a time, each probe
//! bounded by `timeout`. A probe is a TCP connection (`tcp`), or an HTTP/1.0 `GET http_path`
//! over it (`http`) or over TLS (`https`, with `https_sni` and `https_verify_certificate`);
//! its outcome counts toward the active thresholds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use super::{Balancer, Balancers, Slot};
use crate::entities::{CheckType, Upstream};
use crate::health::{Report, Thresholds};

/// What a running checker was started for: a change restarts it.
#[derive(PartialEq)]
struct Started {
    upstream: Upstream,
    addresses: Vec<(String, u16, u32)>,
}

impl Started {
    /// The configuration's side of `b`: its upstream and targets (not what DNS made of them).
    fn of(b: &Balancer) -> Started {
        Started {
            upstream: b.upstream.clone(),
            addresses: b
                .targets
                .iter()
                .map(|t| (t.host.clone(), t.port, t.entity.weight))
                .collect(),
        }
    }
}

/// A running checker: what it was started for, the slot it probes, and its task.
type Running = (Started, Arc<Slot>, tokio::task::AbortHandle);

/// The running checkers, by upstream id; they stop when this drops.
#[derive(Default)]
pub(crate) struct Checkers {
    running: Mutex<HashMap<Uuid, Running>>,
}

impl Checkers {
    /// Makes the running checkers those `balancers` ask for: new upstreams (or changed ones)
    /// get a checker, removed ones lose theirs. Outside a Tokio runtime, nothing starts.
    pub(crate) fn sync(&self, balancers: &Balancers) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: HashMap<Uuid, (&Arc<Slot>, Started)> = balancers
            .slots()
            .filter_map(|slot| {
                let b = slot.load();
                let a = &b.upstream.healthchecks.active;
                (a.healthy.interval() > 0.0 || a.unhealthy.interval() > 0.0)
                    .then(|| (b.upstream.id, (slot, Started::of(&b))))
            })
            .collect();
        running.retain(|id, (started, probed, task)| {
            // A new configuration's slot (which DNS keeps current) restarts the checker too.
            let keep = wanted
                .get(id)
                .is_some_and(|(slot, now)| now == started && Arc::ptr_eq(slot, probed));
            if !keep {
                task.abort();
            }
            keep
        });
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for (id, (slot, started)) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let task = runtime.spawn(run(slot.clone()));
            running.insert(id, (started, slot.clone(), task.abort_handle()));
        }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, _, task) in running.values() {
            task.abort();
        }
    }
}

/// Probes the addresses of the slot's balancer (as DNS leaves it) until aborted.
async fn run(slot: Arc<Slot>) {
    let b = slot.load_full();
    let active = &b.upstream.healthchecks.active;
    let limits = Thresholds::of(&active.healthy, &active.unhealthy);
    let side = |healthy: bool, every: f64| {
        let slot = slot.clone();
        async move {
            if every <= 0.0 {
                return std::future::pending().await;
            }
            let mut tick = tokio::time::interval(Duration::from_secs_f64(every.min(MAX_SECONDS)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                round(&slot.load_full(), healthy, &limits).await;
            }
        }
    };
    tokio::join!(
        side(true, active.healthy.interval()),
        side(false, active.unhealthy.interval())
    );
}

/// One round: the addresses whose health is `healthy`, probed `concurrency` at a time.
async fn round(b: &Balancer, healthy: bool, limits: &Thresholds) {
    let due: Vec<usize> = (0..b.addresses.len())
        .filter(|&i| b.addresses[i].state.is_healthy() == healthy)
        .collect();
    let concurrency = b.upstream.healthchecks.active.concurrency.max(1) as usize;
    futures_util::stream::iter(due)
        .for_each_concurrent(concurrency, |i| async move {
            if let Some(report) = probe(b, i).await {
                b.apply(i, report, limits, "active");
            }
        })
        .await;
}

/// Probes address `i` once; `None` when the answer's status is in neither list.
async fn probe(b: &Balancer, i: usize) -> Option<Report> {
    let active = &b.upstream.healthchecks.active;
    let a = &b.addresses[i];
    let timeout = Duration::from_secs_f64(active.timeout.clamp(0.001, MAX_SECONDS));
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((a.host.as_str(), a.port))).await {
        Err(_) => return Some(Report::Timeout),
        Ok(Err(_)) => return Some(Report::TcpFailure),
        Ok(Ok(tcp)) => tcp,
    };
    let host = b.upstream.host_header.clone().unwrap_or_else(|| a.host.clone());
    match active.kind {
        CheckType::Tcp => Some(Report::Success),
        CheckType::Http | CheckType::Grpc => http_probe(tcp, &host, b, timeout).await,
        CheckType::Https | CheckType::Grpcs => {
            let config = crate::gateway::upstream_tls::probe_client_config(active.https_verify_certificate);
            let sni = active
                .https_sni
                .clone()
                .unwrap_or_else(|| crate::runloop::without_port(&host).to_owned());
            let name = match rustls::pki_types::ServerName::try_from(sni) {
                Ok(n) => n,
                Err(_) => return Some(Report::TcpFailure),
            };
            let connector = tokio_rustls::TlsConnector::from(config);
            match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
                Err(_) => Some(Report::Timeout),
                Ok(Err(_)) => Some(Report::TcpFailure),
                Ok(Ok(tls)) => http_probe(tls, &host, b, timeout).await,
            }
        }
    }
}

/// The longest interval or timeout (Kong's schema: 65535 s).
const MAX_SECONDS: f64 = 65_535.0;

/// The longest status line a probe reads.
const STATUS_LINE_MAX: usize = 1024;

async fn http_probe<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    host: &str,
    b: &Balancer,
    timeout: Duration,
) -> Option<Report> {
    let active = &b.upstream.healthchecks.active;
    let mut request = format!(
        "GET {} HTTP/1.0\r\nConnection: close\r\nHost: {host}\r\n",
        active.http_path
    );
    for (name, values) in active.headers.iter().flatten() {
        for v in values {
            request.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    request.push_str("\r\n");
    let exchange = async {
        io.write_all(request.as_bytes()).await?;
        let mut line = Vec::with_capacity(64);
        let mut byte = [0u8; 256];
        while !line.contains(&b'\n') && line.len() < STATUS_LINE_MAX {
            let n = io.read(&mut byte).await?;
            if n == 0 {
                break;
            }
            line.extend_from_slice(&byte[..n]);
        }
        Ok::<_, std::io::Error>(line)
    };
    let line = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Some(Report::Timeout),
        Ok(Err(_)) => return Some(Report::TcpFailure),
        Ok(Ok(line)) => line,
    };
    // "HTTP/1.1 200 OK": the status is the second word.
    let status = std::str::from_utf8(&line)
        .ok()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    // No status (Kong's 0) is an HTTP failure.
    match status {
        Some(status) => Report::of_status(status, &active.healthy, &active.unhealthy),
        None => Some(Report::HttpFailure),
    }
}
