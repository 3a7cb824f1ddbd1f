//! Kong's HTTP router (`router_flavor = traditional_compatible`), and how the matched route
//! shapes the upstream path.
//!
//! A route matches when all its configured attributes match: methods, hosts (exact or with a
//! leading/trailing `*`, with or without port), headers (any listed value, case-insensitive,
//! `~*` for a regex), SNIs and paths (plain entries are raw string prefixes of the normalised
//! path; `~` entries are regexes anchored at its start, whose captures the PDK exposes).
//!
//! When several routes match, the winner is the one with the highest Kong priority: more
//! attribute kinds first; then plain hosts only; more headers; regex paths before plain ones,
//! higher `regex_priority` first; longer plain paths; and on a tie the larger route id. A route
//! with several paths competes once per path group, as in Kong.
//!
//! Lookups stay nearly flat as routes grow: routes are indexed by exact host and by path
//! prefix (a byte trie, also keyed by the literal prefix of regex paths), and only the
//! candidates found there are tested, in priority order.
//!
//! ```
//! use std::sync::Arc;
//! use kong_pdk::entities::Route;
//! use kong_pdk::router::{RequestInfo, Router};
//!
//! let mut users = Route::new(&["~/users/(?<id>\\d+)$"]);
//! users.name = Some("users".into());
//! let mut api = Route::new(&["/api"]);
//! api.name = Some("api".into());
//! let router = Router::new([(Arc::new(users), None), (Arc::new(api), None)]).unwrap();
//!
//! let headers = http::HeaderMap::new();
//! let req = RequestInfo { method: "GET", host: "example.com", port: 80, path: "/users/42", headers: &headers, sni: None };
//! let m = router.find(&req).unwrap();
//! assert_eq!(m.route.name.as_deref(), Some("users"));
//! assert_eq!(m.captures.named["id"], "42");
//! assert!(router.find(&RequestInfo { path: "/apis", ..req }).is_some(), "plain paths are raw prefixes");
//! assert!(router.find(&RequestInfo { path: "/other", ..req }).is_none());
//! ```

mod path;
mod stream;
mod trie;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use regex::Regex;

pub use path::{upstream_path, upstream_path_v1};

use crate::entities::{Route, Service};
use crate::transaction::UriCaptures;
pub use stream::StreamInfo;

/// What the router needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Method, uppercase.
    pub method: &'a str,
    /// Host, lowercase, without port.
    pub host: &'a str,
    /// The port the request arrived on (or the Host header's port).
    pub port: u16,
    /// The normalised path, without query.
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// TLS server name.
    pub sni: Option<&'a str>,
}

/// The result of a match.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The route.
    pub route: Arc<Route>,
    /// Its service (`None`: Kong answers 503).
    pub service: Option<Arc<Service>>,
    /// The path prefix (or regex match) that matched, for `strip_path`.
    pub matched_path: Option<String>,
    /// Regex captures.
    pub captures: UriCaptures,
}

/// A route that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterError {
    /// The route's id.
    pub route: uuid::Uuid,
    /// Kong's message.
    pub message: String,
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not load route {}: {}", self.route, self.message)
    }
}

impl std::error::Error for RouterError {}

#[derive(Debug)]
enum HostPattern {
    Exact(String, Option<u16>),
    /// `*.example.com`: the host ends with `.example.com` (and has more before it).
    Suffix(String, Option<u16>),
    /// `example.*`: the host starts with `example.`.
    Prefix(String, Option<u16>),
}

impl HostPattern {
    fn parse(raw: &str) -> HostPattern {
        let raw = raw.to_ascii_lowercase();
        let (host, port) = match raw.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
                Ok(port) => (h.to_owned(), Some(port)),
                Err(_) => (raw.clone(), None),
            },
            _ => (raw.clone(), None),
        };
        if let Some(suffix) = host.strip_prefix('*') {
            HostPattern::Suffix(suffix.to_owned(), port)
        } else if let Some(prefix) = host.strip_suffix('*') {
            HostPattern::Prefix(prefix.to_owned(), port)
        } else {
            HostPattern::Exact(host, port)
        }
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let (ok, want) = match self {
            HostPattern::Exact(h, p) => (h == host, p),
            HostPattern::Suffix(s, p) => (host.len() > s.len() && host.ends_with(s.as_str()), p),
            HostPattern::Prefix(s, p) => (host.len() > s.len() && host.starts_with(s.as_str()), p),
        };
        ok && want.is_none_or(|p| p == port)
    }
}

#[derive(Debug)]
enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

#[derive(Debug)]
enum Paths {
    None,
    Plain(Vec<String>),
    Regex(Vec<Regex>),
}

/// A route's conditions other than paths, shared by its matchers.
#[derive(Debug)]
struct Conditions {
    route: Arc<Route>,
    service: Option<Arc<Service>>,
    methods: Vec<String>,
    hosts: Vec<HostPattern>,
    headers: Vec<(String, Vec<ValueMatch>)>,
    snis: Vec<String>,
}

/// One route's matcher for one path group.
#[derive(Debug)]
struct Matcher {
    cond: Arc<Conditions>,
    paths: Paths,
    priority: u64,
}

impl Matcher {
    fn matches(&self, req: &RequestInfo<'_>) -> Option<RouteMatch> {
        let c = &*self.cond;
        if !c.methods.is_empty() && !c.methods.iter().any(|m| m == req.method) {
            return None;
        }
        if !c.hosts.is_empty() && !c.hosts.iter().any(|h| h.matches(req.host, req.port)) {
            return None;
        }
        for (name, values) in &c.headers {
            let found = req.headers.get_all(name.as_str()).iter().any(|v| {
                let v = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
                values.iter().any(|m| match m {
                    ValueMatch::Exact(e) => *e == v,
                    ValueMatch::Regex(r) => r.is_match(&v),
                })
            });
            if !found {
                return None;
            }
        }
        if !c.snis.is_empty() && !req.sni.is_some_and(|s| c.snis.iter().any(|x| x == s)) {
            return None;
        }
        let (matched_path, captures) = match &self.paths {
            Paths::None => (None, UriCaptures::default()),
            Paths::Plain(prefixes) => {
                let p = prefixes.iter().find(|p| req.path.starts_with(p.as_str()))?;
                (Some(p.clone()), UriCaptures::default())
            }
            Paths::Regex(regexes) => regexes.iter().find_map(|r| {
                let caps = r.captures(req.path)?;
                let whole = caps.get(0)?.as_str().to_owned();
                let mut captures = UriCaptures::default();
                for (i, c) in caps.iter().enumerate() {
                    captures
                        .unnamed
                        .push(c.map_or(String::new(), |m| m.as_str().to_owned()));
                    if let Some(name) = r.capture_names().nth(i).flatten()
                        && let Some(m) = c
                    {
                        captures.named.insert(name.to_owned(), m.as_str().to_owned());
                    }
                }
                Some((Some(whole), captures))
            })?,
        };
        Some(RouteMatch {
            route: c.route.clone(),
            service: c.service.clone(),
            matched_path,
            captures,
        })
    }
}

/// Kong's 64-bit `traditional_compatible` priority of one matcher.
fn priority(route: &Route, paths: &Paths, kinds: u64) -> u64 {
    let hosts = route.hosts.as_deref().unwrap_or_default();
    let plain_hosts_only = !hosts.is_empty() && hosts.iter().all(|h| !h.contains('*'));
    let headers = route.headers.as_ref().map_or(0, |h| h.len().min(255)) as u64;
    let mut p = (kinds.min(7) << 61) | (u64::from(plain_hosts_only) << 60) | (headers << 52);
    match paths {
        Paths::Regex(_) => {
            // Order-preserving map of the signed regex_priority onto 32 bits.
            let rp = (route.regex_priority.clamp(i32::MIN as i64, i32::MAX as i64) as i32 as u32) ^ 0x8000_0000;
            p |= (1 << 51) | (u64::from(rp) << 19);
        }
        Paths::Plain(list) => p |= list.first().map_or(0, |s| s.len().min((1 << 19) - 1)) as u64,
        Paths::None => {}
    }
    p
}

/// The literal text a regex path must start with (so the trie can index it).
fn literal_prefix(re: &str) -> String {
    if re.contains('|') {
        return String::new();
    }
    let mut out = String::new();
    let mut chars = re.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '?' | '*' | '{' => {
                out.pop();
                break;
            }
            '.' | '^' | '$' | '+' | '(' | ')' | '[' | ']' | '}' => break,
            '\\' => match chars.peek() {
                Some(n) if n.is_ascii_punctuation() => {
                    out.push(*n);
                    chars.next();
                }
                _ => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// The HTTP router: built from the routes, immutable, shared by all requests.
pub struct Router {
    matchers: Vec<Matcher>,
    by_host: HashMap<String, Vec<u32>>,
    paths: trie::Trie,
    rest: Vec<u32>,
    streams: stream::StreamRouter,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("matchers", &self.matchers.len())
            .finish()
    }
}

impl Router {
    /// Builds the router from routes and their services. Routes without an HTTP-subsystem
    /// protocol, and routes whose service is disabled, are left out.
    pub fn new(routes: impl IntoIterator<Item = (Arc<Route>, Option<Arc<Service>>)>) -> Result<Router, RouterError> {
        let mut matchers = Vec::new();
        let mut streams = stream::StreamRouter::default();
        for (route, service) in routes {
            if stream::is_stream(&route) {
                if service.as_ref().is_none_or(|s| s.enabled) {
                    let id = route.id;
                    streams
                        .add(route, service)
                        .map_err(|message| RouterError { route: id, message })?;
                }
                continue;
            }
            let http = route
                .protocols
                .iter()
                .any(|p| matches!(p.as_str(), "http" | "https" | "grpc" | "grpcs" | "ws" | "wss"));
            if !http || service.as_ref().is_some_and(|s| !s.enabled) {
                continue;
            }
            let err = |message: String| RouterError {
                route: route.id,
                message,
            };
            let methods: Vec<String> = route.methods.iter().flatten().map(|m| m.to_ascii_uppercase()).collect();
            let hosts: Vec<HostPattern> = route.hosts.iter().flatten().map(|h| HostPattern::parse(h)).collect();
            let mut headers = Vec::new();
            for (name, values) in route.headers.iter().flatten() {
                let mut matchers = Vec::new();
                for v in values {
                    if let Some(re) = v.strip_prefix("~*") {
                        let re = Regex::new(&format!("(?i){re}"))
                            .map_err(|e| err(format!("invalid regex: '{re}' ({e})")))?;
                        matchers.push(ValueMatch::Regex(re));
                    } else {
                        matchers.push(ValueMatch::Exact(v.to_ascii_lowercase()));
                    }
                }
                headers.push((name.to_ascii_lowercase(), matchers));
            }
            let snis: Vec<String> = route.snis.iter().flatten().map(|s| s.to_ascii_lowercase()).collect();
            let all_paths: Vec<&String> = route.paths.iter().flatten().collect();
            let mut groups: Vec<Paths> = Vec::new();
            let regexes: Vec<&String> = all_paths.iter().copied().filter(|p| p.starts_with('~')).collect();
            if !regexes.is_empty() {
                let mut compiled = Vec::new();
                for r in regexes {
                    let src = r[1..]
                        .replace("(?<", "(?P<")
                        .replace("(?P<=", "(?<=")
                        .replace("(?P<!", "(?<!");
                    let re = Regex::new(&format!("^(?:{src})"))
                        .map_err(|e| err(format!("invalid regex: '{}' ({e})", &r[1..])))?;
                    compiled.push(re);
                }
                groups.push(Paths::Regex(compiled));
            }
            let mut plain: Vec<&String> = all_paths.iter().copied().filter(|p| !p.starts_with('~')).collect();
            plain.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for chunk in plain.chunk_by(|a, b| a.len() == b.len()) {
                groups.push(Paths::Plain(chunk.iter().map(|p| (*p).clone()).collect()));
            }
            if groups.is_empty() {
                groups.push(Paths::None);
            }
            let kinds = [
                !methods.is_empty(),
                !hosts.is_empty(),
                !headers.is_empty(),
                !snis.is_empty(),
                !all_paths.is_empty(),
            ]
            .iter()
            .filter(|b| **b)
            .count() as u64;
            let cond = Arc::new(Conditions {
                route: route.clone(),
                service,
                methods,
                hosts,
                headers,
                snis,
            });
            for paths in groups {
                matchers.push(Matcher {
                    priority: priority(&route, &paths, kinds),
                    cond: cond.clone(),
                    paths,
                });
            }
        }
        // Highest priority first; ties: the larger route id first (Kong's ATC order).
        matchers.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| b.cond.route.id.cmp(&a.cond.route.id))
        });

        let mut by_host: HashMap<String, Vec<u32>> = HashMap::new();
        let mut paths = trie::Trie::default();
        let mut rest = Vec::new();
        for (i, m) in matchers.iter().enumerate() {
            let i = i as u32;
            let exact_hosts: Option<Vec<&String>> = (!m.cond.hosts.is_empty())
                .then(|| {
                    m.cond
                        .hosts
                        .iter()
                        .map(|h| {
                            if let HostPattern::Exact(h, _) = h {
                                Some(h)
                            } else {
                                None
                            }
                        })
                        .collect()
                })
                .flatten();
            if let Some(hosts) = exact_hosts {
                for h in hosts {
                    by_host.entry(h.clone()).or_default().push(i);
                }
                continue;
            }
            match &m.paths {
                Paths::Plain(list) => list.iter().for_each(|p| paths.insert(p.as_bytes(), i)),
                Paths::Regex(list) => list.iter().for_each(|r| {
                    let src = r
                        .as_str()
                        .strip_prefix("^(?:")
                        .and_then(|s| s.strip_suffix(')'))
                        .unwrap_or("");
                    paths.insert(literal_prefix(src).as_bytes(), i)
                }),
                Paths::None => rest.push(i),
            }
        }
        streams.finish();
        Ok(Router {
            matchers,
            by_host,
            paths,
            rest,
            streams,
        })
    }

    /// A router with no routes: every request is Kong's 404.
    pub fn empty() -> Router {
        Router {
            matchers: Vec::new(),
            by_host: HashMap::new(),
            paths: trie::Trie::default(),
            rest: Vec::new(),
            streams: stream::StreamRouter::default(),
        }
    }

    /// The stream route a connection matches (`tcp`, `tls`, `udp`, `tls_passthrough`
    /// routes), with its service.
    pub fn find_stream(&self, conn: &StreamInfo<'_>) -> Option<(Arc<Route>, Option<Arc<Service>>)> {
        self.streams.find(conn)
    }

    /// The number of matchers (routes split by path group).
    pub fn len(&self) -> usize {
        self.matchers.len()
    }

    /// Whether no route is loaded.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// The route for `req`, as Kong's router picks it.
    pub fn find(&self, req: &RequestInfo<'_>) -> Option<RouteMatch> {
        let mut candidates: Vec<u32> = Vec::with_capacity(8);
        if let Some(list) = self.by_host.get(req.host) {
            candidates.extend_from_slice(list);
        }
        self.paths.collect_prefixes(req.path.as_bytes(), &mut candidates);
        candidates.extend_from_slice(&self.rest);
        candidates.sort_unstable();
        candidates.dedup();
        candidates.iter().find_map(|&i| self.matchers[i as usize].matches(req))
    }
}

#[cfg(test)]
mod tests;
