//! What the node counts about itself: its connections and requests (nginx's `stub_status`,
//! Kong's `kong.nginx.get_statistics()`), whether its datastore answers, and its memory
//! (`kong.node.get_memory_stats()`). The gateway bumps atomics as connections open and
//! requests run; `/status`, the prometheus plugin and plugins read a [`Statistics`] copy.
//!
//! ```
//! use kong_pdk::stats::ServerStats;
//! use std::sync::Arc;
//!
//! let stats = Arc::new(ServerStats::default());
//! let conn = stats.open_connection();
//! assert_eq!(stats.statistics().connections_reading, 1); // no request yet
//! let request = conn.request();
//! let now = stats.statistics();
//! assert_eq!((now.connections_writing, now.total_requests), (1, 1));
//! drop(request);
//! assert_eq!(stats.statistics().connections_waiting, 1); // kept alive, idle
//! drop(conn);
//! assert_eq!(stats.statistics().connections_active, 0);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};

use serde::Serialize;
use serde_json::{Map, Value, json};

/// The node's counters, shared by its listeners.
#[derive(Debug, Default)]
pub struct ServerStats {
    accepted: AtomicU64,
    active: AtomicU64,
    reading: AtomicU64,
    writing: AtomicU64,
    requests: AtomicU64,
    /// 0: no database, 1: reachable, 2: unreachable.
    datastore: AtomicU8,
}

/// `kong.nginx.get_statistics()`: a copy of the counters, with Kong's field names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Statistics {
    /// Open client connections (reading, writing and waiting).
    pub connections_active: u64,
    /// Connections whose first request has not arrived yet (TLS handshake, request head).
    pub connections_reading: u64,
    /// Requests being answered.
    pub connections_writing: u64,
    /// Connections kept alive between requests.
    pub connections_waiting: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections handled since start (every accepted one: no connection limit drops any).
    pub connections_handled: u64,
    /// Requests received since start.
    pub total_requests: u64,
}

impl ServerStats {
    /// Counts a connection just accepted: it is reading until its first request arrives, and
    /// active until the returned handle drops.
    pub fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.accepted.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        self.reading.fetch_add(1, Relaxed);
        OpenConnection {
            stats: self.clone(),
            fresh: AtomicBool::new(true),
        }
    }

    /// A copy of the counters. `waiting` is what is active and neither reading nor writing.
    pub fn statistics(&self) -> Statistics {
        let accepted = self.accepted.load(Relaxed);
        let active = self.active.load(Relaxed);
        let reading = self.reading.load(Relaxed);
        let writing = self.writing.load(Relaxed);
        Statistics {
            connections_active: active,
            connections_reading: reading,
            connections_writing: writing,
            connections_waiting: active.saturating_sub(reading + writing),
            connections_accepted: accepted,
            connections_handled: accepted,
            total_requests: self.requests.load(Relaxed),
        }
    }

    /// Records whether the node's database answered its last query.
    pub fn set_datastore_reachable(&self, reachable: bool) {
        self.datastore.store(if reachable { 1 } else { 2 }, Relaxed);
    }

    /// Whether the node's database answered its last query; `None` without a database.
    pub fn datastore_reachable(&self) -> Option<bool> {
        match self.datastore.load(Relaxed) {
            0 => None,
            n => Some(n == 1),
        }
    }
}

/// A connection counted as active; dropping it counts it closed.
#[derive(Debug)]
pub struct OpenConnection {
    stats: Arc<ServerStats>,
    /// No request has arrived yet.
    fresh: AtomicBool,
}

impl OpenConnection {
    /// Counts a request arriving on the connection; it is being written until the returned
    /// handle drops.
    pub fn request(&self) -> InFlight<'_> {
        if self.fresh.swap(false, Relaxed) {
            self.stats.reading.fetch_sub(1, Relaxed);
        }
        self.stats.requests.fetch_add(1, Relaxed);
        self.stats.writing.fetch_add(1, Relaxed);
        InFlight(&self.stats)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if *self.fresh.get_mut() {
            self.stats.reading.fetch_sub(1, Relaxed);
        }
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

/// A request being answered; dropping it ends its count.
#[derive(Debug)]
pub struct InFlight<'a>(&'a ServerStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.writing.fetch_sub(1, Relaxed);
    }
}

/// A unit `bytes_to_str` refuses, or a negative scale: Kong's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError(pub String);

impl std::fmt::Display for UnitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnitError {}

/// Kong's `bytes_to_str` (`kong/tools/string.lua`): `bytes` in unit `b` (a number, no
/// scale), `k`, `m` or `g` (a string with `scale` decimals, 2 by default: `"5.24 MiB"`).
///
/// ```
/// use kong_pdk::stats::convert_bytes;
/// assert_eq!(convert_bytes(5497558, "m", None).unwrap(), "5.24 MiB");
/// assert_eq!(convert_bytes(5497558, "B", Some(3.0)).unwrap(), 5497558);
/// assert_eq!(
///     convert_bytes(1, "V", None).unwrap_err().to_string(),
///     "invalid unit 'V' (expected 'k/K', 'm/M', or 'g/G')"
/// );
/// ```
pub fn convert_bytes(bytes: u64, unit: &str, scale: Option<f64>) -> Result<Value, UnitError> {
    let lower = unit.to_ascii_lowercase();
    if lower.is_empty() || lower == "b" {
        return Ok(Value::from(bytes));
    }
    let scale = scale.unwrap_or(2.0);
    if scale.is_nan() || scale < 0.0 {
        return Err(UnitError("scale must be equal or greater than 0".into()));
    }
    let (divisor, suffix) = match lower.as_str() {
        "k" => (1024f64, "KiB"),
        "m" => (1024f64 * 1024.0, "MiB"),
        "g" => (1024f64 * 1024.0 * 1024.0, "GiB"),
        _ => {
            return Err(UnitError(format!(
                "invalid unit '{unit}' (expected 'k/K', 'm/M', or 'g/G')"
            )));
        }
    };
    // C's printf caps what a precision can usefully be; so does this.
    let precision = scale.min(64.0) as usize;
    Ok(Value::from(format!("{:.precision$} {suffix}", bytes as f64 / divisor)))
}

/// `kong.node.get_memory_stats(unit, scale)`: Kong's shape. This process is the one worker
/// (`workers_lua_vms`, its resident memory as `http_allocated_gc`, as there is no Lua VM);
/// there are no nginx shared dicts (`lua_shared_dicts` is empty).
///
/// ```
/// let stats = kong_pdk::stats::memory_stats("k", Some(1.0)).unwrap();
/// assert!(stats["lua_shared_dicts"].as_object().unwrap().is_empty());
/// assert_eq!(stats["workers_lua_vms"][0]["pid"], std::process::id());
/// ```
pub fn memory_stats(unit: &str, scale: Option<f64>) -> Result<Value, UnitError> {
    convert_bytes(0, unit, scale)?;
    let pid = std::process::id();
    let worker = match resident_bytes() {
        Ok(bytes) => json!({ "pid": pid, "http_allocated_gc": convert_bytes(bytes, unit, scale)? }),
        Err(e) => json!({ "pid": pid, "err": format!("could not get worker's HTTP Lua VM memory (pid: {pid}): {e}") }),
    };
    Ok(json!({ "workers_lua_vms": [worker], "lua_shared_dicts": Map::new() }))
}

/// The process's resident memory in bytes (`VmRSS` of `/proc/self/status`).
pub fn resident_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "reported value is corrupted".to_owned())?;
    Ok(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Active, reading, writing, waiting.
    fn states(s: &Statistics) -> (u64, u64, u64, u64) {
        (
            s.connections_active,
            s.connections_reading,
            s.connections_writing,
            s.connections_waiting,
        )
    }

    #[test]
    fn reading_writing_and_waiting_follow_a_connection() {
        let stats = Arc::new(ServerStats::default());
        let a = stats.open_connection();
        let b = stats.open_connection();
        let r = a.request();
        let s = stats.statistics();
        assert_eq!(states(&s), (2, 1, 1, 0));
        drop(r);
        drop(b);
        let s = stats.statistics();
        assert_eq!(states(&s), (1, 0, 0, 1));
        let _again = a.request();
        assert_eq!(stats.statistics().total_requests, 2);
        assert_eq!(stats.statistics().connections_handled, 2);
    }

    #[test]
    fn bytes_to_str_matches_kong() {
        assert_eq!(convert_bytes(5497558, "G", Some(3.0)).unwrap(), "0.005 GiB");
        assert_eq!(convert_bytes(2048, "k", Some(0.0)).unwrap(), "2 KiB");
        assert_eq!(convert_bytes(0, "", None).unwrap(), 0);
        assert_eq!(
            convert_bytes(0, "m", Some(-1.0)).unwrap_err().0,
            "scale must be equal or greater than 0"
        );
        // `b` takes no scale, so a bad one is not looked at.
        assert!(convert_bytes(0, "b", Some(-1.0)).is_ok());
    }

    #[test]
    fn datastore_health_starts_unknown() {
        let stats = ServerStats::default();
        assert_eq!(stats.datastore_reachable(), None);
        stats.set_datastore_reachable(false);
        assert_eq!(stats.datastore_reachable(), Some(false));
    }
}
