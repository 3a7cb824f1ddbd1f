//! `proxy-cache` (Kong's `kong/plugins/proxy-cache`, memory strategy): answers repeated
//! requests from a node-local cache. The key hashes the route, consumer, method, path, query
//! (`vary_query_params`) and headers (`vary_headers`) as Kong's `cache_key.lua` does; cacheable
//! methods, statuses and content types are configured; `Cache-Control` is honoured with
//! `cache_control`. Responses say `X-Cache-Status` (`Miss`, `Hit`, `Refresh`, `Bypass`),
//! `X-Cache-Key` and `Age`. A missed response streams to the client while it is stored. The
//! Admin API's `/proxy-cache` endpoints look entries up and purge them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use kong_pdk::api::{AdminAnswer, AdminRequest};
use kong_pdk::pdk::QueryValue;
use kong_pdk::phase;
use kong_pdk::prelude::*;
use serde_json::{Value, json};

use crate::limits::now;

/// The plugin's configuration (Kong's `proxy-cache/schema.lua`).
#[plugin(
    priority = 100,
    version = "3.10.0",
    name = "proxy-cache",
    custom_validator = check
)]
pub struct ProxyCache {
    /// Upstream statuses that are cached.
    #[field(required, default = [200, 301, 404], len_min = 1, elements(between = (100, 900)))]
    pub response_code: Vec<i64>,
    /// Request methods that are cached.
    #[field(required, default = ["GET", "HEAD"], elements(one_of = ["HEAD", "GET", "POST", "PATCH", "PUT"]))]
    pub request_method: Vec<String>,
    /// Response media types that are cached (`type/subtype`, `*` wildcards, parameters).
    #[field(required, default = ["text/plain", "application/json"])]
    pub content_type: Vec<String>,
    /// How long an entry is fresh, in seconds.
    #[field(default = 300, gt = 0)]
    pub cache_ttl: Option<i64>,
    /// Where entries live: `memory`.
    #[field(required, one_of = ["memory"])]
    pub strategy: String,
    /// Honour `Cache-Control` of requests and responses (RFC 7234).
    #[field(required, default = false)]
    pub cache_control: bool,
    /// Paths differing only by case share entries.
    #[field(default = false)]
    pub ignore_uri_case: Option<bool>,
    /// How long entries are kept, in seconds (else their freshness).
    pub storage_ttl: Option<i64>,
    /// The memory strategy's settings.
    pub memory: Memory,
    /// Query arguments that make entries differ (else all of them).
    pub vary_query_params: Option<Vec<String>>,
    /// Request headers that make entries differ (else none).
    pub vary_headers: Option<Vec<String>>,
    /// Which diagnostic headers responses carry (all of them when the request has
    /// `Kong-Debug`).
    pub response_headers: ResponseHeaders,
}

/// The memory strategy's settings.
#[record]
pub struct Memory {
    /// The shared dictionary entries live in.
    #[field(required, default = "kong_db_cache")]
    pub dictionary_name: String,
}

/// The diagnostic headers.
#[record]
pub struct ResponseHeaders {
    /// `Age` on hits.
    #[field(default = true)]
    pub age: Option<bool>,
    /// `X-Cache-Status`.
    #[field(default = true, rename = "X-Cache-Status")]
    pub x_cache_status: Option<bool>,
    /// `X-Cache-Key`.
    #[field(default = true, rename = "X-Cache-Key")]
    pub x_cache_key: Option<bool>,
}

/// Kong's shared dictionaries (its nginx template's `lua_shared_dict`s): the memory strategy
/// may use any of them.
const DICTIONARIES: &[&str] = &[
    "kong",
    "kong_locks",
    "kong_healthchecks",
    "kong_cluster_events",
    "kong_rate_limiting_counters",
    "kong_core_db_cache",
    "kong_core_db_cache_miss",
    "kong_db_cache",
    "kong_db_cache_miss",
    "kong_secrets",
];

/// Kong's entity check: the dictionary must exist.
fn check(config: &Value) -> Result<(), String> {
    let name = config["memory"]["dictionary_name"].as_str().unwrap_or_default();
    if config["strategy"] == "memory" && !DICTIONARIES.contains(&name) {
        return Err(format!("missing shared dict '{name}'"));
    }
    Ok(())
}

/// What an entry of a dictionary holds (Kong's stored object, `version` 1).
#[derive(Debug)]
struct Entry {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
    /// When it was stored, in seconds.
    timestamp: i64,
    /// How long it is fresh, in seconds.
    ttl: i64,
    /// When it goes, in seconds.
    expires: i64,
}

impl Entry {
    fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 16)
                .sum::<usize>()
            + 128
    }

    /// Kong's object as the Admin API shows it.
    fn to_json(&self) -> Value {
        let mut headers = serde_json::Map::new();
        for name in self.headers.keys() {
            let text = |v: &http::HeaderValue| Value::from(String::from_utf8_lossy(v.as_bytes()));
            let mut values = self.headers.get_all(name).iter().map(text);
            let value = match (values.next(), values.next()) {
                (Some(one), None) => one,
                (first, second) => first.into_iter().chain(second).chain(values).collect(),
            };
            headers.insert(name.as_str().to_owned(), value);
        }
        json!({
            "status": self.status,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
            "body_len": self.body.len(),
            "timestamp": self.timestamp,
            "ttl": self.ttl,
            "version": 1,
            "req_body": Value::Null,
        })
    }
}

/// A dictionary's bytes at most (Kong's `mem_cache_size` default, 128 MiB).
const DICTIONARY_BYTES: usize = 128 << 20;

/// One shared dictionary: a lock-free map bounded in bytes.
#[derive(Debug)]
struct Dictionary {
    entries: papaya::HashMap<String, Arc<Entry>>,
    bytes: AtomicUsize,
    capacity: usize,
}

impl Dictionary {
    fn new(capacity: usize) -> Dictionary {
        Dictionary {
            entries: papaya::HashMap::new(),
            bytes: AtomicUsize::new(0),
            capacity,
        }
    }

    fn get(&self, key: &str, now: i64) -> Option<Arc<Entry>> {
        self.entries.pin().get(key).filter(|e| e.expires > now).cloned()
    }

    fn insert(&self, key: String, entry: Entry, now: i64) {
        let size = entry.size();
        if size > self.capacity / 8 {
            return; // too big to be worth the room
        }
        if self.bytes.load(Ordering::Relaxed) + size > self.capacity {
            self.make_room(size, now);
        }
        let map = self.entries.pin();
        if let Some(old) = map.insert(key, Arc::new(entry)) {
            self.bytes.fetch_sub(old.size(), Ordering::Relaxed);
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
    }

    fn remove(&self, key: &str) -> bool {
        match self.entries.pin().remove(key) {
            Some(old) => {
                self.bytes.fetch_sub(old.size(), Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    fn flush(&self) {
        let map = self.entries.pin();
        for key in map.keys().cloned().collect::<Vec<_>>() {
            if let Some(old) = map.remove(&key) {
                self.bytes.fetch_sub(old.size(), Ordering::Relaxed);
            }
        }
    }

    /// Drops expired entries, then the oldest until `size` more bytes fit in seven eighths
    /// of the capacity (Kong's dictionaries evict the least recently used).
    fn make_room(&self, size: usize, now: i64) {
        let map = self.entries.pin();
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
        let goal = (self.capacity / 8 * 7).saturating_sub(size);
        if self.bytes.load(Ordering::Relaxed) <= goal {
            return;
        }
        let mut by_age: Vec<(i64, String)> = map.iter().map(|(k, e)| (e.timestamp, k.clone())).collect();
        by_age.sort_unstable();
        for (_, key) in by_age {
            if self.bytes.load(Ordering::Relaxed) <= goal {
                break;
            }
            self.remove(&key);
        }
    }
}

/// The node's dictionaries.
#[derive(Debug)]
pub struct Caches {
    dictionaries: BTreeMap<&'static str, Dictionary>,
}

impl Default for Caches {
    fn default() -> Self {
        Caches {
            dictionaries: DICTIONARIES
                .iter()
                .map(|d| (*d, Dictionary::new(DICTIONARY_BYTES)))
                .collect(),
        }
    }
}

impl Caches {
    fn dictionary(&self, name: &str) -> Option<&Dictionary> {
        self.dictionaries.get(name)
    }
}

/// Kong's `parse_directive_header`: `max-age=60, no-cache` → {max-age: 60, no-cache: true}.
fn directives<'a>(values: impl Iterator<Item = &'a str>) -> BTreeMap<String, Directive> {
    let mut out = BTreeMap::new();
    for part in values.flat_map(|v| v.split(',')) {
        let part = part.trim_start();
        if part.is_empty() {
            continue;
        }
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (part, None),
        };
        let directive = match value {
            None => Directive::Flag,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(n) => Directive::Number(n),
                Err(_) => Directive::Text,
            },
        };
        out.insert(name.to_ascii_lowercase(), directive);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Directive {
    Flag,
    Number(f64),
    Text,
}

fn number(d: &BTreeMap<String, Directive>, name: &str) -> Option<f64> {
    match d.get(name) {
        Some(Directive::Number(n)) => Some(*n),
        _ => None,
    }
}

/// Kong's `parse_mime_type`: (type, subtype, parameters), lower-cased names; `None` when it
/// is not a media type (an empty parameter, as in `application/xml;`, included).
fn media_type(text: &str) -> Option<(String, String, BTreeMap<String, String>)> {
    let mut parts = text.split(';');
    let (t, sub) = parts.next()?.trim().split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+*".contains(&b))
    };
    if !token(t) || !token(sub) {
        return None;
    }
    let mut params = BTreeMap::new();
    for p in parts {
        let (k, v) = p.trim().split_once('=')?;
        let v = v.trim();
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        params.insert(k.trim().to_ascii_lowercase(), v.to_owned());
    }
    Some((t.to_ascii_lowercase(), sub.to_ascii_lowercase(), params))
}

const X_CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("x-cache-status");
const X_CACHE_KEY: http::HeaderName = http::HeaderName::from_static("x-cache-key");

/// Hop-by-hop headers a hit does not replay.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// A missed response being stored (Kong's `ctx.proxy_cache`).
#[derive(Debug, Clone)]
struct Storing {
    key: String,
    headers: http::HeaderMap,
    ttl: i64,
    body: Vec<u8>,
    /// Cacheable so far (a response body over the bound is not).
    open: bool,
}

impl ProxyCache {
    fn debug(kong: &mut Kong<'_, impl phase::RequestRead, Caches>) -> bool {
        kong.request().get_header("Kong-Debug").is_some_and(|v| !v.is_empty())
    }

    fn wants(&self, header: &str, debug: bool) -> bool {
        debug
            || match header {
                "age" => self.response_headers.age.unwrap_or(true),
                "X-Cache-Status" => self.response_headers.x_cache_status.unwrap_or(true),
                _ => self.response_headers.x_cache_key.unwrap_or(true),
            }
    }

    /// Kong's `cache_key.lua`: sha256 of `prefix|method|uri|params|headers`, in hex.
    fn cache_key(&self, kong: &mut Kong<'_, Access, Caches>) -> String {
        let consumer = kong.client().get_consumer().map(|c| c.id);
        let route = kong.router().get_route().map(|r| r.id);
        let prefix = match (consumer, route) {
            (Some(c), Some(r)) => format!("{c}:{r}"),
            (_, Some(r)) => r.to_string(),
            _ => "default".to_owned(),
        };
        let request = kong.request();
        let method = request.get_method().to_owned();
        // nginx's `$request` with everything from the first `?` cut: the protocol goes with the
        // query, and stays without one.
        let mut uri = format!("{method} {}", request.get_raw_path());
        if request.get_raw_query().is_empty() {
            let version = match request.get_http_version() {
                v if v >= 2.0 => "HTTP/2.0".to_owned(),
                v => format!("HTTP/{v:.1}"),
            };
            uri.push(' ');
            uri.push_str(&version);
        }
        if self.ignore_uri_case.unwrap_or(false) {
            uri = uri.to_lowercase();
        }
        let query = request.get_query(100);
        let params = match self.vary_query_params.as_deref().filter(|v| !v.is_empty()) {
            Some(names) => vary(names.iter().map(|n| (n.as_str(), query.get(n).cloned()))),
            None => vary(query.iter().map(|(k, v)| (k.as_str(), Some(v.clone())))),
        };
        let headers = match self.vary_headers.as_deref().filter(|v| !v.is_empty()) {
            Some(names) => {
                let values: Vec<(&str, Option<QueryValue>)> = names
                    .iter()
                    .map(|n| {
                        let all: Vec<QueryValue> = request
                            .get_header_values(n)
                            .map(|v| QueryValue::Value(v.to_owned()))
                            .collect();
                        let value = match all.len() {
                            0 => None,
                            1 => all.into_iter().next(),
                            _ => Some(QueryValue::List(all)),
                        };
                        (n.as_str(), value)
                    })
                    .collect();
                vary(values.into_iter())
            }
            None => String::new(),
        };
        let text = format!("{prefix}|{method}|{uri}|{params}|{headers}");
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        kong_pdk::text::hex(digest.as_ref())
    }

    fn cacheable_response(&self, kong: &mut Kong<'_, HeaderFilter, Caches>) -> Option<i64> {
        let response = kong.response();
        let status = i64::from(response.get_status());
        if !self.response_code.contains(&status) {
            return None;
        }
        let headers = response.get_headers();
        let mut types = headers.get_all("content-type").iter();
        let content_type = types.next()?.to_str().ok().filter(|v| !v.is_empty())?;
        if types.next().is_some() {
            return None;
        }
        let (t, sub, params) = media_type(content_type)?;
        let matched = self.content_type.iter().any(|expected| {
            let Some((et, esub, eparams)) = media_type(expected) else {
                return false;
            };
            (et == "*" || et == t)
                && (esub == "*" || esub == sub)
                && eparams.iter().all(|(k, v)| params.get(k) == Some(v))
                && eparams.len() == params.len()
        });
        if !matched {
            return None;
        }
        if !self.cache_control {
            return Some(self.cache_ttl.unwrap_or(300));
        }
        let cc = directives(headers.get_all("cache-control").iter().filter_map(|v| v.to_str().ok()));
        if ["private", "no-store", "no-cache"].iter().any(|d| cc.contains_key(*d)) {
            return None;
        }
        let ttl = match number(&cc, "s-maxage").or_else(|| number(&cc, "max-age")) {
            Some(age) => age as i64,
            None => headers
                .get_all("expires")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |t| t.as_secs() as i64 - now()),
        };
        (ttl > 0).then_some(ttl)
    }

    fn dictionary<'k>(&self, kong: &'k Kong<'_, impl phase::RequestPhase, Caches>) -> Option<&'k Dictionary> {
        kong.state().dictionary(&self.memory.dictionary_name)
    }
}

/// Kong's `generate_key_from`: `name=value` (lists sorted and joined by `,`, flags bare) for
/// the names present, joined by `:`.
fn vary<'a>(values: impl Iterator<Item = (&'a str, Option<QueryValue>)>) -> String {
    let mut out: Vec<String> = Vec::new();
    for (name, value) in values {
        match value {
            None => {}
            Some(QueryValue::Flag) => out.push(name.to_owned()),
            Some(QueryValue::Value(v)) => out.push(format!("{name}={v}")),
            Some(QueryValue::List(items)) => {
                let mut items: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        QueryValue::Value(v) => v.clone(),
                        _ => "true".to_owned(),
                    })
                    .collect();
                items.sort();
                out.push(format!("{name}={}", items.join(",")));
            }
        }
    }
    out.join(":")
}

/// The longest body stored: larger responses stream through unstored.
const MAX_BODY: usize = 16 << 20;

#[handler]
impl Handler for ProxyCache {
    type State = Caches;

    async fn access(&self, kong: &mut Kong<Access, Caches>) -> kong_pdk::Result {
        let debug = Self::debug(kong);
        let cc = directives(kong.request().get_header_values("cache-control"));
        let method = kong.request().get_method().to_owned();
        let cacheable = self.request_method.contains(&method)
            && !(self.cache_control && (cc.contains_key("no-store") || cc.contains_key("no-cache")));
        if !cacheable {
            if self.wants("X-Cache-Status", debug) {
                kong.response().set_header("X-Cache-Status", "Bypass")?;
            }
            return Ok(());
        }
        let key = self.cache_key(kong);
        if self.wants("X-Cache-Key", debug) {
            kong.response().set_header("X-Cache-Key", &key)?;
        }
        let now = now();
        let Some(dictionary) = self.dictionary(kong) else {
            return Ok(());
        };
        let miss = |status: &str, kong: &mut Kong<Access, Caches>| -> kong_pdk::Result {
            kong.ctx().plugin().insert(Storing {
                key: key.clone(),
                headers: http::HeaderMap::new(),
                ttl: 0,
                body: Vec::new(),
                open: true,
            });
            if self.wants("X-Cache-Status", debug) {
                kong.response().set_header("X-Cache-Status", status)?;
            }
            Ok(())
        };
        let Some(entry) = dictionary.get(&key, now) else {
            if self.cache_control && cc.contains_key("only-if-cached") {
                return kong.response().exit(504, ());
            }
            return miss("Miss", kong);
        };
        let age = now - entry.timestamp;
        let stale = if self.cache_control {
            number(&cc, "max-age").is_some_and(|m| age as f64 > m)
                || number(&cc, "max-stale").is_some_and(|m| (age - entry.ttl) as f64 > m)
                || number(&cc, "min-fresh").is_some_and(|m| ((entry.ttl - age) as f64) < m)
        } else {
            age > self.cache_ttl.unwrap_or(300)
        };
        if stale {
            return miss("Refresh", kong);
        }
        // Names in a header map are lowercase already. Cloned values share the stored bytes.
        let mut headers = http::HeaderMap::with_capacity(entry.headers.len() + 3);
        for (name, value) in entry.headers.iter().filter(|(n, _)| {
            let n = n.as_str();
            !HOP_BY_HOP.contains(&n)
                && !n.contains("ratelimit-remaining")
                && !["age", "x-cache-status", "x-cache-key"].contains(&n)
        }) {
            headers.append(name, value.clone());
        }
        if self.wants("age", debug) {
            headers.insert(http::header::AGE, kong_pdk::text::decimal(age.max(0) as u64));
        }
        if self.wants("X-Cache-Status", debug) {
            headers.insert(X_CACHE_STATUS, http::HeaderValue::from_static("Hit"));
        }
        if self.wants("X-Cache-Key", debug) {
            // The key is hex: always a valid value.
            if let Ok(v) = http::HeaderValue::from_str(&key) {
                headers.insert(X_CACHE_KEY, v);
            }
        }
        // The stored answer replaces the headers set so far for this one.
        let mut response = kong.response();
        response.clear_header("X-Cache-Status")?;
        response.clear_header("X-Cache-Key")?;
        response.exit_for_upstream(entry.status, kong_pdk::pdk::ExitBody::Raw(entry.body.clone()), headers)
    }

    async fn header_filter(&self, kong: &mut Kong<HeaderFilter, Caches>) -> kong_pdk::Result {
        let Some(mut storing) = kong.ctx().plugin().get::<Storing>().cloned() else {
            return Ok(());
        };
        match self.cacheable_response(kong) {
            Some(ttl) => {
                storing.ttl = ttl;
                storing.headers = kong.response().get_headers().clone();
                kong.ctx().plugin().insert(storing);
            }
            None => {
                kong.ctx().plugin().remove::<Storing>();
                let debug = Self::debug(kong);
                if self.wants("X-Cache-Status", debug) {
                    kong.response().set_header("X-Cache-Status", "Bypass")?;
                }
            }
        }
        Ok(())
    }

    async fn body_filter(&self, kong: &mut Kong<BodyFilter, Caches>) -> kong_pdk::Result {
        let chunk = kong.response().chunk().clone();
        let eof = kong.response().is_eof();
        let status = kong.response().get_status();
        let mut ctx = kong.ctx();
        let Some(storing) = ctx.plugin().get_mut::<Storing>() else {
            return Ok(());
        };
        // The chunk goes on to the client untouched; a copy is kept while it fits.
        if storing.open && storing.body.len() + chunk.len() <= MAX_BODY {
            storing.body.extend_from_slice(&chunk);
        } else {
            storing.open = false;
            storing.body = Vec::new();
        }
        if !eof {
            return Ok(());
        }
        let Some(storing) = kong.ctx().plugin().remove::<Storing>() else {
            return Ok(());
        };
        if !storing.open {
            return Ok(());
        }
        let now = now();
        let keep = self.storage_ttl.unwrap_or(if self.cache_control {
            storing.ttl
        } else {
            self.cache_ttl.unwrap_or(300)
        });
        let entry = Entry {
            status,
            headers: storing.headers,
            body: Bytes::from(storing.body),
            timestamp: now,
            ttl: storing.ttl,
            expires: now + keep.max(1),
        };
        if let Some(dictionary) = self.dictionary(kong) {
            dictionary.insert(storing.key, entry, now);
        }
        Ok(())
    }

    /// Kong's `proxy-cache/api.lua`.
    fn admin_api(api: &AdminRequest<'_, Caches>) -> Option<AdminAnswer> {
        let segments = api.segments();
        if segments.first() != Some(&"proxy-cache") {
            return None;
        }
        let dictionary_of = |config: &Value| {
            let name = config["memory"]["dictionary_name"].as_str().unwrap_or("kong_db_cache");
            api.state().dictionary(name)
        };
        let now = now();
        let not_found = Some(AdminAnswer::empty(404));
        match (api.method(), &segments[1..]) {
            ("DELETE", []) => {
                for (_, config) in api.instances() {
                    if let Some(d) = dictionary_of(config) {
                        d.flush();
                    }
                }
                Some(AdminAnswer::empty(204))
            }
            (method @ ("GET" | "DELETE"), [key]) => {
                for (_, config) in api.instances() {
                    let Some(d) = dictionary_of(config) else { continue };
                    if let Some(entry) = d.get(key, now) {
                        if method == "GET" {
                            return Some(AdminAnswer::json(200, entry.to_json()));
                        }
                        d.remove(key);
                        return Some(AdminAnswer::empty(204));
                    }
                }
                not_found
            }
            (method @ ("GET" | "DELETE"), [plugin, "caches", key]) => {
                let (_, config) = api.instances().iter().find(|(id, _)| id.to_string() == *plugin)?;
                let d = dictionary_of(config)?;
                let entry = d.get(key, now)?;
                if method == "GET" {
                    Some(AdminAnswer::json(200, entry.to_json()))
                } else {
                    d.remove(key);
                    Some(AdminAnswer::empty(204))
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_parse_as_kongs() {
        let (t, s, p) = media_type("Application/JSON; charset=utf-8").unwrap();
        assert_eq!(
            (t.as_str(), s.as_str(), p.get("charset").map(String::as_str)),
            ("application", "json", Some("utf-8"))
        );
        assert!(media_type("application/xml;").is_none());
        assert!(media_type("json").is_none());
    }

    #[test]
    fn directives_parse_numbers_flags_and_text() {
        let d = directives(["max-age=60, No-Cache", "private=\"x\""].into_iter());
        assert_eq!(d.get("max-age"), Some(&Directive::Number(60.0)));
        assert_eq!(d.get("no-cache"), Some(&Directive::Flag));
        assert_eq!(d.get("private"), Some(&Directive::Text));
    }

    #[test]
    fn dictionaries_stay_within_their_bytes() {
        let d = Dictionary::new(64 * 1024);
        for i in 0..100 {
            let entry = Entry {
                status: 200,
                headers: http::HeaderMap::new(),
                body: Bytes::from(vec![b'x'; 4000]),
                timestamp: i,
                ttl: 300,
                expires: 1_000,
            };
            d.insert(format!("k{i}"), entry, 10);
        }
        assert!(d.bytes.load(Ordering::Relaxed) <= 64 * 1024);
        assert!(d.get("k99", 10).is_some(), "the newest stay");
        assert!(d.get("k0", 10).is_none(), "the oldest went");
        d.flush();
        assert_eq!(d.bytes.load(Ordering::Relaxed), 0);
    }
}
