//! The gateway's settings (Kong's `kong.conf` keys and `KONG_*` environment variables) and
//! what each command does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::admin::{Admin, Store};
use crate::gateway::declarative::Config;
use crate::gateway::tls::CertificatePair;
use crate::gateway::{HeaderSettings, Proxy, mock_upstream};
use crate::pdk::NodeInfo;
use crate::registry::Plugins;

/// The settings `start` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `proxy_listen` entries.
    pub proxy_listen: Vec<Listen>,
    /// `ssl_cert` and `ssl_cert_key`: the default certificate of TLS listeners (generated in
    /// `<prefix>/ssl` when unset).
    pub ssl_cert: Option<(PathBuf, PathBuf)>,
    /// `database`: `sqlite` (embedded, the default), `postgres` or `off` (DB-less).
    pub database: String,
    /// `admin_listen` addresses (plain HTTP entries).
    pub admin_listen: Vec<SocketAddr>,
    /// `status_listen` addresses (plain HTTP entries; `off`, the default, for none): the
    /// Status API (`/status`, `/status/ready`, prometheus' `/metrics`).
    pub status_listen: Vec<SocketAddr>,
    /// `port_maps`: (host port, Kong port) pairs.
    pub port_maps: Vec<(u16, u16)>,
    /// `stream_listen` entries with their flags (`off`, the default, for none).
    pub stream_listen: Vec<(SocketAddr, crate::gateway::StreamListen)>,
    /// `admin_gui_origin`: the origins the Admin API allows in CORS; empty means any (Kong's
    /// default: the request's `Origin`, or `*`).
    pub admin_gui_origin: Vec<String>,
    /// `pg_host`, `pg_port`, `pg_user`, `pg_password`, `pg_database`.
    pub pg: PgSettings,
    /// `db_update_frequency`: how often other nodes' changes are looked for.
    pub db_update_frequency: std::time::Duration,
    /// `declarative_config`.
    pub declarative_config: Option<PathBuf>,
    /// `plugins`, with `bundled` expanded.
    pub plugins: Vec<String>,
    /// What `bundled` in `plugins` stands for (set by the binary: the plugins it links).
    pub bundled: &'static [&'static str],
    /// `prefix`.
    pub prefix: PathBuf,
    /// `log_level`.
    pub log_level: String,
    /// `trusted_ips`.
    pub trusted_ips: Vec<String>,
    /// `tracing_instrumentations` and `tracing_sampling_rate`.
    pub tracing: crate::tracer::TracingSettings,
    /// `db_cache_ttl`: how long `kong.cache` keeps a loaded value (zero: until invalidated).
    pub db_cache_ttl: std::time::Duration,
    /// `db_cache_neg_ttl`: the same for misses (`db_cache_ttl` when unset).
    pub db_cache_neg_ttl: Option<std::time::Duration>,
    /// `mem_cache_size` in bytes (`kong.cache` holds one entry per KiB of it).
    pub mem_cache_size: u64,
    /// `headers`.
    pub headers: HeaderSettings,
    /// `lua_ssl_trusted_certificate`: PEM files (comma-separated, `system` for the system's
    /// bundle) trusted when verifying upstreams of services with `tls_verify` and no
    /// `ca_certificates`.
    pub lua_ssl_trusted_certificate: String,
    /// `nginx_worker_processes`: worker threads (`auto` = one per core).
    pub workers: usize,
    /// `mock_upstream`: also serve Kong's mock upstream on this address (this gateway's
    /// extension, so the quick start runs with one command).
    pub mock_upstream: Option<SocketAddr>,
    /// `router_flavor`: `traditional_compatible` (the default) or `traditional`, under which
    /// routes with `path_handling = v1` join paths as v1.
    pub router_flavor: crate::model::RouterFlavor,
    /// `nginx_http_client_header_timeout`: how long a client may take to send a request head,
    /// or stay idle between requests, on the proxy and Admin API listeners.
    pub client_header_timeout: std::time::Duration,
    /// `client_body_buffer_size` (or `nginx_http_client_body_buffer_size`),
    /// `nginx_http_client_max_body_size`, `nginx_http_client_body_timeout`: the limits on
    /// request bodies. `start` buffers large bodies under `<prefix>/client_body_temp`.
    pub body_limits: crate::gateway::BodyLimits,
    /// `dns_resolver`, `dns_hostsfile`, `dns_order`, `dns_stale_ttl`: Kong's DNS client for
    /// targets named by host.
    pub dns: crate::gateway::DnsSettings,
    /// What the settings hold that this gateway does not act on (unknown keys, `ssl` entries
    /// of the Admin and Status API listeners): `start` logs each as a warning.
    pub ignored: Vec<String>,
}

/// PostgreSQL connection settings (Kong's `pg_*` keys).
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `pg_host`.
    pub host: String,
    /// `pg_port`.
    pub port: u16,
    /// `pg_user`.
    pub user: String,
    /// `pg_password`.
    pub password: Option<String>,
    /// `pg_database`.
    pub database: String,
    /// `pg_timeout` (5000 ms): the longest any one database operation may take; the
    /// embedded SQLite store takes it too.
    pub timeout: std::time::Duration,
}

impl PgSettings {
    /// The connection URL.
    pub fn url(&self) -> String {
        let enc = crate::pdk::request::percent_encode_component;
        let auth = match &self.password {
            Some(p) => format!("{}:{}", enc(&self.user), enc(p)),
            None => enc(&self.user),
        };
        format!("postgres://{auth}@{}:{}/{}", self.host, self.port, enc(&self.database))
    }
}

/// One `proxy_listen` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// The address.
    pub addr: SocketAddr,
    /// The `ssl` flag: TLS, with HTTP/2 offered by ALPN.
    pub ssl: bool,
    /// The `http2` flag. Kong turns HTTP/2 on for its whole proxy server when any entry has
    /// it, and plain listeners then take h2c (HTTP/2 with prior knowledge) beside HTTP/1.1;
    /// with none, they speak HTTP/1.1 only. TLS listeners offer HTTP/2 by ALPN
    /// either way.
    pub http2: bool,
    /// The socket's options: `reuseport`, `backlog=`, `ipv6only=`, `so_keepalive=`.
    pub socket: crate::gateway::SocketOptions,
}

/// Whether the proxy speaks HTTP/2 (h2c on plain listeners, h2 by ALPN on TLS ones): any
/// entry has the `http2` flag, as Kong's template then writes `http2 on;` for the whole proxy
/// server.
fn http2(listens: &[Listen]) -> bool {
    listens.iter().any(|l| l.http2)
}

/// Parses Kong's `proxy_listen`: `addr [flags], ...` or `off`. `ssl`, `http2` and the socket
/// flags (`reuseport`, `backlog=N`, `ipv6only=`, `so_keepalive=`) are read; the others
/// (`deferred`, `bind`, ...) are accepted.
fn parse_listen(value: &str) -> Result<Vec<Listen>, String> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "off" {
            continue;
        }
        let mut parts = entry.split_whitespace();
        let addr = parts.next().unwrap_or_default();
        let flags: Vec<&str> = parts.collect();
        // PROXY protocol would change who the client is: refused rather than ignored.
        if flags.contains(&"proxy_protocol") {
            return Err(format!(
                "proxy_listen: proxy_protocol is not supported on HTTP listeners ('{entry}')"
            ));
        }
        let (ssl, http2) = (flags.contains(&"ssl"), flags.contains(&"http2"));
        let mut socket = crate::gateway::SocketOptions::default();
        for flag in &flags {
            socket.apply(flag).map_err(|e| format!("proxy_listen: {e}"))?;
        }
        let addr = addr
            .parse()
            .map_err(|_| format!("proxy_listen: invalid address '{addr}'"))?;
        out.push(Listen {
            addr,
            ssl,
            http2,
            socket,
        });
    }
    Ok(out)
}

/// The plain-HTTP addresses of a listen setting named `setting` (`ssl` entries left out).
fn plain_listen(value: &str, setting: &str) -> Result<Vec<SocketAddr>, String> {
    Ok(parse_listen(value)
        .map_err(|e| e.replace("proxy_listen", setting))?
        .into_iter()
        .filter(|l| !l.ssl)
        .map(|l| l.addr)
        .collect())
}

/// Kong's `stream_listen` error text.
const STREAM_LISTEN_FORM: &str = "stream_listen must be of form: [off] | <ip>:<port> [udp] [ssl] [proxy_protocol] [bind] [reuseport] [backlog=%d+] [ipv6only=on] [ipv6only=off] [so_keepalive=on] [so_keepalive=off] [so_keepalive=%w*:%w*:%d*], [... next entry ...]";

/// `stream_listen`: the addresses to serve streams on, with Kong's flags; `reuseport`,
/// `backlog=`, `ipv6only=` and `so_keepalive=` set the socket's options, `bind` is accepted
/// (each entry has a socket of its own).
fn parse_stream_listen(value: &str) -> Result<Vec<(SocketAddr, crate::gateway::StreamListen)>, String> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "off" {
            return Ok(Vec::new());
        }
        let mut parts = entry.split_whitespace();
        let addr = parts.next().unwrap_or_default();
        let mut options = crate::gateway::StreamListen::default();
        for flag in parts {
            match flag {
                "ssl" => options.ssl = true,
                "proxy_protocol" => options.proxy_protocol = true,
                "udp" => options.udp = true,
                // Each entry gets a socket of its own anyway.
                "bind" => {}
                _ if options.socket.apply(flag) == Ok(true) => {}
                _ => return Err(STREAM_LISTEN_FORM.to_owned()),
            }
        }
        let addr = addr.parse().map_err(|_| STREAM_LISTEN_FORM.to_owned())?;
        if options.udp && (options.ssl || options.proxy_protocol) {
            return Err(format!(
                "stream_listen: 'udp' does not go with 'ssl' or 'proxy_protocol' ({entry})"
            ));
        }
        out.push((addr, options));
    }
    Ok(out)
}

/// `port_maps = 80:8000, 443:8443`: host port, then Kong port.
fn parse_port_maps(value: &str) -> Result<Vec<(u16, u16)>, String> {
    comma_list(value)
        .iter()
        .map(|m| {
            let (host, kong) = m
                .split_once(':')
                .ok_or_else(|| format!("invalid port mapping (`port_maps`): {m}"))?;
            match (host.trim().parse(), kong.trim().parse()) {
                (Ok(h), Ok(k)) => Ok((h, k)),
                _ => Err(format!("invalid port mapping (`port_maps`): {m}")),
            }
        })
        .collect()
}

/// An nginx time value: `500ms`, `60s`, `2m`, or seconds without a unit.
fn nginx_duration(v: &str) -> Option<std::time::Duration> {
    let v = v.trim();
    let (n, unit) = v.find(|c: char| !c.is_ascii_digit()).map_or((v, ""), |i| v.split_at(i));
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

/// A comma-separated setting's entries, trimmed, empty ones left out.
fn comma_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Settings {
    /// Kong's defaults, then the conf file, then `KONG_*` variables; relative paths resolve
    /// from the working directory.
    pub fn load(conf: Option<&Path>, prefix: Option<PathBuf>) -> Result<Settings, String> {
        Settings::load_with_env(conf, prefix, std::env::vars())
    }

    /// [`Settings::load`] with `env` in place of the process's environment: what a conf file
    /// says by itself when `env` is empty.
    pub fn load_with_env(
        conf: Option<&Path>,
        prefix: Option<PathBuf>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, String> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(conf) = conf {
            let text = std::fs::read_to_string(conf).map_err(|e| format!("could not read {}: {e}", conf.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or_default().trim();
                if line.is_empty() {
                    continue;
                }
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| format!("{}:{}: expected `key = value`", conf.display(), n + 1))?;
                pairs.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        for (k, v) in env {
            if let Some(key) = k.strip_prefix("KONG_") {
                pairs.push((key.to_ascii_lowercase(), v));
            }
        }
        let mut s = Settings {
            proxy_listen: parse_listen(
                "0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport backlog=16384",
            )?,
            ssl_cert: None,
            database: "sqlite".into(),
            admin_listen: vec!["127.0.0.1:8001".parse().expect("valid")],
            status_listen: Vec::new(),
            stream_listen: Vec::new(),
            port_maps: Vec::new(),
            admin_gui_origin: Vec::new(),
            db_update_frequency: std::time::Duration::from_secs(5),
            pg: PgSettings {
                host: "127.0.0.1".into(),
                port: 5432,
                user: "kong".into(),
                password: None,
                database: "kong".into(),
                timeout: crate::admin::DEFAULT_TIMEOUT,
            },
            declarative_config: None,
            plugins: vec!["bundled".into()],
            bundled: &[],
            prefix: PathBuf::from("prefix"),
            log_level: "notice".into(),
            trusted_ips: Vec::new(),
            tracing: Default::default(),
            db_cache_ttl: std::time::Duration::ZERO,
            db_cache_neg_ttl: None,
            mem_cache_size: 128 * 1024 * 1024,
            headers: HeaderSettings::default(),
            lua_ssl_trusted_certificate: "system".into(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mock_upstream: None,
            router_flavor: Default::default(),
            client_header_timeout: std::time::Duration::from_secs(60),
            body_limits: crate::gateway::BodyLimits::default(),
            ignored: Vec::new(),
            dns: Default::default(),
        };
        let (mut ssl_cert, mut ssl_key) = (None, None);
        for (k, v) in pairs {
            match k.as_str() {
                "proxy_listen" => s.proxy_listen = parse_listen(&v)?,
                "ssl_cert" => ssl_cert = Some(PathBuf::from(v.split(',').next().unwrap_or_default().trim())),
                "ssl_cert_key" => ssl_key = Some(PathBuf::from(v.split(',').next().unwrap_or_default().trim())),
                "database" => s.database = v.to_ascii_lowercase(),
                "admin_listen" | "status_listen" => {
                    let plain = plain_listen(&v, &k)?;
                    for l in parse_listen(&v).unwrap_or_default().iter().filter(|l| l.ssl) {
                        s.ignored.push(format!(
                            "{k}: {} ssl is not served (TLS on this API is not supported)",
                            l.addr
                        ));
                    }
                    if k == "admin_listen" {
                        s.admin_listen = plain;
                    } else {
                        s.status_listen = plain;
                    }
                }
                "stream_listen" => s.stream_listen = parse_stream_listen(&v)?,
                "port_maps" => s.port_maps = parse_port_maps(&v)?,
                "db_update_frequency" => {
                    s.db_update_frequency = v
                        .parse::<f64>()
                        .ok()
                        .filter(|f| *f > 0.0 && f.is_finite())
                        .map(std::time::Duration::from_secs_f64)
                        .ok_or_else(|| format!("db_update_frequency: invalid value '{v}'"))?
                }
                "pg_host" => s.pg.host = v,
                "pg_port" => s.pg.port = v.parse().map_err(|_| format!("pg_port: invalid value '{v}'"))?,
                "pg_user" => s.pg.user = v,
                "pg_password" => s.pg.password = Some(v),
                "pg_database" => s.pg.database = v,
                "pg_timeout" => {
                    s.pg.timeout = v
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|ms| *ms > 0)
                        .map(std::time::Duration::from_millis)
                        .ok_or_else(|| format!("pg_timeout: invalid value '{v}'"))?
                }
                "declarative_config" => s.declarative_config = (!v.is_empty()).then(|| PathBuf::from(v)),
                "plugins" => s.plugins = comma_list(&v),
                "prefix" => s.prefix = PathBuf::from(v),
                "admin_gui_origin" => s.admin_gui_origin = comma_list(&v),
                "log_level" => {
                    if !LOG_LEVELS.contains(&v.as_str()) {
                        return Err(format!(
                            "log_level has an invalid value: '{v}' ({})",
                            LOG_LEVELS.join(", ")
                        ));
                    }
                    s.log_level = v
                }
                "trusted_ips" => s.trusted_ips = comma_list(&v),
                "db_cache_ttl" => s.db_cache_ttl = seconds("db_cache_ttl", &v)?,
                "db_cache_neg_ttl" => s.db_cache_neg_ttl = Some(seconds("db_cache_neg_ttl", &v)?),
                "mem_cache_size" => {
                    s.mem_cache_size = size_bytes(&v).ok_or_else(|| format!("mem_cache_size: invalid value '{v}'"))?
                }
                "tracing_instrumentations" => {
                    let names = comma_list(&v);
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    s.tracing.instrumentations = crate::tracer::Instrumentations::parse(&names)?;
                }
                "tracing_sampling_rate" => {
                    s.tracing.sampling_rate = v
                        .parse()
                        .ok()
                        .filter(|r: &f64| (0.0..=1.0).contains(r))
                        .ok_or_else(|| "tracing_sampling_rate must be between 0 and 1".to_owned())?
                }
                "headers" => s.headers = HeaderSettings::parse(&v)?,
                "lua_ssl_trusted_certificate" => s.lua_ssl_trusted_certificate = v,
                "dns_resolver" => {
                    s.dns.resolvers = v
                        .split(',')
                        .map(str::trim)
                        .filter(|r| !r.is_empty())
                        .map(|r| {
                            r.parse::<SocketAddr>()
                                .or_else(|_| r.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                                .map_err(|_| format!("dns_resolver: invalid address '{r}'"))
                        })
                        .collect::<Result<_, _>>()?
                }
                "dns_hostsfile" => s.dns.hostsfile = PathBuf::from(&v),
                "dns_order" => s.dns.order = crate::gateway::DnsSettings::parse_order(&v)?,
                "dns_stale_ttl" | "dns_not_found_ttl" | "dns_error_ttl" | "dns_valid_ttl" => {
                    let secs: u64 = v.parse().map_err(|_| format!("{k}: invalid value '{v}'"))?;
                    let ttl = std::time::Duration::from_secs(secs);
                    match k.as_str() {
                        "dns_stale_ttl" => s.dns.stale_ttl = ttl,
                        "dns_not_found_ttl" => s.dns.not_found_ttl = ttl,
                        "dns_error_ttl" => s.dns.error_ttl = ttl,
                        _ => s.dns.valid_ttl = Some(ttl),
                    }
                }
                "nginx_worker_processes" => {
                    s.workers = if v == "auto" {
                        std::thread::available_parallelism().map_or(1, |n| n.get())
                    } else {
                        v.parse()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| format!("nginx_worker_processes: invalid value '{v}'"))?
                    }
                }
                "nginx_http_client_header_timeout" => {
                    s.client_header_timeout = nginx_duration(&v)
                        .ok_or_else(|| format!("nginx_http_client_header_timeout: invalid value '{v}'"))?
                }
                "client_body_buffer_size" | "nginx_http_client_body_buffer_size" => {
                    s.body_limits.buffer_size = size_bytes(&v)
                        .and_then(|b| usize::try_from(b).ok())
                        .ok_or_else(|| format!("{k}: invalid value '{v}'"))?
                }
                "nginx_http_client_max_body_size" => {
                    s.body_limits.max_size = match v.trim() {
                        "0" => 0,
                        _ => size_bytes(&v).ok_or_else(|| format!("{k}: invalid value '{v}'"))?,
                    }
                }
                "nginx_http_client_body_timeout" => {
                    s.body_limits.timeout = nginx_duration(&v).ok_or_else(|| format!("{k}: invalid value '{v}'"))?
                }
                "router_flavor" => s.router_flavor = v.trim().parse()?,
                "mock_upstream" => {
                    s.mock_upstream = Some(v.parse().map_err(|_| format!("mock_upstream: invalid address '{v}'"))?)
                }
                _ => s.ignored.push(format!("{k}: not supported by this gateway, ignored")),
            }
        }
        if let Some(p) = prefix {
            s.prefix = p;
        }
        s.ssl_cert = match (ssl_cert, ssl_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("ssl_cert and ssl_cert_key must be set together".into()),
        };
        if !matches!(s.database.as_str(), "off" | "sqlite" | "postgres") {
            return Err(format!(
                "database has an invalid value: '{}' (\"sqlite\", \"postgres\", \"off\" accepted)",
                s.database
            ));
        }
        Ok(s)
    }

    /// The plugin names to load, with `bundled` expanded.
    pub fn plugin_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        for p in &self.plugins {
            match p.as_str() {
                "bundled" => names.extend(self.bundled.iter().copied()),
                "off" => {}
                other => names.push(other),
            }
        }
        names
    }

    fn node(&self) -> Result<NodeInfo, String> {
        let ips: Vec<&str> = self.trusted_ips.iter().map(String::as_str).collect();
        let trusted =
            NodeInfo::parse_trusted_ips(&ips).ok_or_else(|| "trusted_ips: invalid address or cidr".to_owned())?;
        let hostname = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        Ok(NodeInfo {
            trusted_ips: trusted,
            router_flavor: self.router_flavor,
            hostname,
            tracing: Arc::new(crate::tracer::NodeTracing::new(self.tracing)),
            cache: Arc::new(crate::cache::Cache::new(
                self.db_cache_ttl,
                self.db_cache_neg_ttl.unwrap_or(self.db_cache_ttl),
                (self.mem_cache_size / 1024).max(1) as usize,
            )),
            ..NodeInfo::default()
        })
    }
}

/// A duration in seconds as kong.conf writes it (`3600`, `0.5`).
fn seconds(name: &str, v: &str) -> Result<std::time::Duration, String> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("{name}: invalid value '{v}'"))
}

/// A size as kong.conf writes it (`128m`, `512k`, `1g`, bytes without a unit).
fn size_bytes(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let (n, unit) = match v.strip_suffix(['k', 'm', 'g']) {
        Some(n) => (n, v.as_bytes()[v.len() - 1]),
        None => (v.as_str(), b' '),
    };
    let n: u64 = n.parse().ok()?;
    let scale = match unit {
        b'k' => 1 << 10,
        b'm' => 1 << 20,
        b'g' => 1 << 30,
        _ => 1,
    };
    n.checked_mul(scale).filter(|b| *b > 0)
}

fn load_plugins(s: &Settings) -> Result<Arc<Plugins>, String> {
    Ok(Arc::new(
        Plugins::load(s.plugin_names(), s.node()?).map_err(|e| e.to_string())?,
    ))
}

/// `config parse`: validates a declarative configuration against the enabled plugins, or
/// every plugin the binary links when `linked`.
pub fn parse_config(s: &Settings, file: &Path, linked: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("could not read {}: {e}", file.display()))?;
    let plugins = if linked {
        Arc::new(Plugins::load_all(s.node()?))
    } else {
        load_plugins(s)?
    };
    let config = Config::parse_for(&text, &plugins).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(config.snapshot(&plugins))
        .map_err(|e| format!("declarative config is invalid: {e}"))?;
    println!("parse successful");
    Ok(())
}

/// What `migrations` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// `bootstrap` / `up`: run pending migrations.
    Up,
    /// `list`.
    List,
    /// `reset`: drop everything.
    Reset,
}

async fn open_store(s: &Settings) -> Result<Store, String> {
    match s.database.as_str() {
        "postgres" => Store::connect_with(&s.pg.url(), s.pg.timeout).await,
        "sqlite" => Store::sqlite_with(&s.prefix.join("kong.db"), s.pg.timeout).await,
        other => return Err(format!("migrations need a database; database = {other}")),
    }
    .map_err(|e| format!("could not open the {} database: {e}", s.database))
}

/// `migrations bootstrap|up|list|reset`.
pub fn migrations(s: &Settings, action: Migrations) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store = open_store(s).await?;
        match action {
            Migrations::Up => {
                let ran = store.migrate().await.map_err(|e| e.to_string())?;
                if ran.is_empty() {
                    println!("Database is already up-to-date");
                } else {
                    for name in &ran {
                        println!("migrating core: {name}");
                    }
                    println!("{} migrations processed", ran.len());
                }
            }
            Migrations::List => {
                for (name, done) in store.migrations().await.map_err(|e| e.to_string())? {
                    println!("{} {name}", if done { "executed" } else { "pending " });
                }
            }
            Migrations::Reset => {
                store.reset().await.map_err(|e| e.to_string())?;
                println!("Database schema reset");
            }
        }
        Ok(())
    })
}

fn pid_file(prefix: &Path) -> PathBuf {
    prefix.join("pids").join("kong.pid")
}

/// `health`: whether the gateway whose pid is in the prefix is running.
pub fn health(prefix: Option<PathBuf>) -> Result<(), String> {
    let prefix = prefix.unwrap_or_else(|| PathBuf::from("prefix"));
    let pid = std::fs::read_to_string(pid_file(&prefix))
        .map_err(|_| format!("Kong is not running at {}", prefix.display()))?;
    let pid = pid.trim();
    if Path::new("/proc").join(pid).exists() {
        println!("Kong is healthy at {}", prefix.display());
        Ok(())
    } else {
        Err(format!("Kong is not running at {}", prefix.display()))
    }
}

/// `mock-upstream`: serves Kong's mock upstream until interrupted: HTTP on `listen`, the TCP
/// echo on `stream_listen` and the TLS echo (a self-signed `localhost` certificate) on
/// `stream_ssl_listen`; `off` skips either echo.
pub fn mock_upstream(listen: &str, stream_listen: &str, stream_ssl_listen: &str) -> Result<(), String> {
    init_logging("notice");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let bind = |addr: &str| {
            let addr = addr.to_owned();
            async move {
                let listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .map_err(|e| format!("could not listen on {addr}: {e}"))?;
                let local = listener.local_addr().map_err(|e| e.to_string())?;
                Ok::<_, String>((listener, local))
            }
        };
        let (listener, local) = bind(listen).await?;
        tracing::info!(target: "kong", "mock upstream listening on {local}");
        if stream_listen != "off" {
            let (echo, local) = bind(stream_listen).await?;
            tracing::info!(target: "kong", "mock upstream TCP echo listening on {local}");
            tokio::spawn(mock_upstream::serve_tcp_echo(echo, std::future::pending()));
        }
        if stream_ssl_listen != "off" {
            let (echo, local) = bind(stream_ssl_listen).await?;
            let (pair, _, _) = crate::gateway::tls::CertificatePair::self_signed(&["localhost"])?;
            tracing::info!(target: "kong", "mock upstream TLS echo listening on {local}");
            tokio::spawn(async move { mock_upstream::serve_tls_echo(echo, &pair, std::future::pending()).await });
        }
        mock_upstream::serve(listener, shutdown_signal()).await;
        Ok(())
    })
}

fn init_logging(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter(level))
        .with_ansi(false)
        .event_format(KongLogFormat)
        .try_init();
}

/// Kong's log levels, most verbose first.
const LOG_LEVELS: [&str; 8] = ["debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"];

/// The filter for Kong's `log_level`: tracing's levels, with `notice`, `crit`, `alert` and
/// `emerg` told apart by their targets (`kong::notice`, ...).
fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    let directives = match level {
        "debug" => "debug",
        "info" => "info",
        "notice" => "warn,kong::notice=info",
        "warn" => "warn",
        "crit" => "off,kong::crit=error,kong::alert=error,kong::emerg=error",
        "alert" => "off,kong::alert=error,kong::emerg=error",
        "emerg" => "off,kong::emerg=error",
        _ => "error",
    };
    tracing_subscriber::EnvFilter::new(directives)
}

/// Lines as nginx writes its error log: `2026/12/02 17:40:00 [notice] message`, with Kong's
/// level names and no colour codes.
struct KongLogFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for KongLogFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let level = match meta.target().strip_prefix("kong::") {
            Some(kong @ ("notice" | "crit" | "alert" | "emerg")) => kong,
            _ => match *meta.level() {
                tracing::Level::ERROR => "error",
                tracing::Level::WARN => "warn",
                tracing::Level::INFO => "info",
                _ => "debug",
            },
        };
        write!(writer, "{} [{level}] ", log_time(std::time::SystemTime::now()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// `YYYY/MM/DD HH:MM:SS` in UTC.
fn log_time(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}/{month:02}/{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The default certificate of TLS listeners: `ssl_cert`/`ssl_cert_key`, or Kong's generated
/// one in `<prefix>/ssl`.
fn default_certificate(s: &Settings) -> Result<CertificatePair, String> {
    match &s.ssl_cert {
        Some((cert, key)) => {
            let read =
                |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("could not read {}: {e}", p.display()));
            CertificatePair::from_pem(&read(cert)?, &read(key)?, None)
                .map_err(|(field, e)| format!("ssl_cert: {field}: {e}"))
        }
        None => CertificatePair::default_in(&s.prefix.join("ssl")),
    }
}

/// `start`: runs the gateway until SIGINT/SIGTERM.
pub fn run(s: Settings) -> Result<(), String> {
    init_logging(&s.log_level);
    for what in &s.ignored {
        tracing::warn!(target: "kong", "{what}");
    }
    std::fs::create_dir_all(s.prefix.join("pids"))
        .map_err(|e| format!("could not create prefix {}: {e}", s.prefix.display()))?;
    let mut body_limits = s.body_limits.clone();
    body_limits.temp_dir = s.prefix.join("client_body_temp");
    std::fs::create_dir_all(&body_limits.temp_dir)
        .map_err(|e| format!("could not create {}: {e}", body_limits.temp_dir.display()))?;
    // One worker is one thread running every task, as one nginx worker process does: the
    // current-thread scheduler then saves the work-stealing one's cross-thread bookkeeping.
    let mut builder = if s.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(s.workers);
        b
    };
    let rt = builder.enable_all().build().map_err(|e| e.to_string())?;
    if s.lua_ssl_trusted_certificate.trim() != "system" {
        crate::gateway::upstream_tls::set_trusted_certificates(&s.lua_ssl_trusted_certificate)?;
    }
    rt.block_on(async {
        let plugins = load_plugins(&s)?;
        plugins
            .init_worker()
            .await
            .map_err(|f| format!("init_worker failed for plugin {}", f[0].0))?;
        let config = match (&s.declarative_config, s.database.as_str()) {
            (Some(path), "off") => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| format!("could not read {}: {e}", path.display()))?;
                Config::parse_for(&text, &plugins).map_err(|e| e.to_string())?
            }
            _ => Config::default(),
        };
        let snapshot = config
            .snapshot(&plugins)
            .await
            .map_err(|e| format!("declarative config is invalid: {e}"))?;
        // One flag for the whole proxy server, as Kong's `http2 on;`.
        let h2 = http2(&s.proxy_listen);
        let mut proxy = Proxy::new(snapshot, s.headers)
            .with_client_header_timeout(s.client_header_timeout)
            .with_body_limits(body_limits)
            .with_port_maps(&s.port_maps)
            .with_http2(h2);
        match crate::gateway::Dns::new(&s.dns) {
            Ok(dns) => proxy = proxy.with_dns(dns),
            Err(e) => tracing::warn!(target: "kong", "{e}: targets named by host are resolved by the system at each connection"),
        }
        if s.proxy_listen.iter().any(|l| l.ssl) || s.stream_listen.iter().any(|(_, l)| l.ssl) {
            proxy = proxy.with_default_certificate(default_certificate(&s)?);
        }
        let proxy = Arc::new(proxy);
        let admin = if s.database == "off" {
            Admin::dbless(&config, plugins.clone(), proxy.clone()).await?
        } else {
            let admin = Admin::new(open_store(&s).await?, plugins.clone(), proxy.clone()).await?;
            tokio::spawn(admin.clone().follow_cluster(s.db_update_frequency));
            admin
        };
        admin.set_gui_origin(&s.admin_gui_origin)?;
        admin.set_client_header_timeout(s.client_header_timeout);
        for addr in &s.admin_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("admin_listen: could not listen on {addr}: {e}"))?;
            tracing::info!(target: "kong", "admin API listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
            tokio::spawn(admin.clone().serve(listener, std::future::pending()));
        }
        for addr in &s.status_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("status_listen: could not listen on {addr}: {e}"))?;
            tracing::info!(target: "kong", "status API listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
            tokio::spawn(admin.clone().serve_status(listener, std::future::pending()));
        }
        for (addr, listen) in &s.stream_listen {
            let (addr, listen) = (*addr, *listen);
            if listen.udp {
                let socket = listen
                    .socket
                    .bind_udp(addr)
                    .map_err(|e| format!("stream_listen: could not listen on {addr} (udp): {e}"))?;
                tracing::info!(target: "kong", "stream proxy listening on {addr} (udp)");
                tokio::spawn(proxy.clone().serve_udp(socket, std::future::pending()));
                continue;
            }
            let listener = listen
                .socket
                .bind_tcp(addr)
                .map_err(|e| format!("stream_listen: could not listen on {addr}: {e}"))?;
            tracing::info!(target: "kong", "stream proxy listening on {}{}", listener.local_addr().map_err(|e| e.to_string())?, if listen.ssl { " (ssl)" } else { "" });
            tokio::spawn(proxy.clone().serve_stream_with(listener, listen, std::future::pending()));
        }
        if let Some(addr) = s.mock_upstream {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("mock_upstream: could not listen on {addr}: {e}"))?;
            tracing::info!(target: "kong", "mock upstream listening on {addr}");
            tokio::spawn(mock_upstream::serve(listener, std::future::pending()));
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut servers = Vec::new();
        for listen in &s.proxy_listen {
            let addr = listen.addr;
            let listener = listen
                .socket
                .bind_tcp(addr)
                .map_err(|e| format!("proxy_listen: could not listen on {addr}: {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            let mut stop = stop_rx.clone();
            let stopped = async move {
                let _ = stop.changed().await;
            };
            if listen.ssl {
                tracing::info!(target: "kong", "proxy listening on {local} (ssl{})", if h2 { ", http2" } else { "" });
                servers.push(tokio::spawn(proxy.clone().serve_tls(listener, stopped)));
            } else if h2 {
                tracing::info!(target: "kong", "proxy listening on {local} (h2c)");
                servers.push(tokio::spawn(proxy.clone().serve_h2c(listener, stopped)));
            } else {
                tracing::info!(target: "kong", "proxy listening on {local}");
                servers.push(tokio::spawn(proxy.clone().serve(listener, stopped)));
            }
        }
        std::fs::write(pid_file(&s.prefix), std::process::id().to_string()).map_err(|e| e.to_string())?;
        tracing::info!(target: "kong", "Kong started");
        shutdown_signal().await;
        tracing::info!(target: "kong", "stopping: draining connections");
        let _ = stop_tx.send(true);
        for server in servers {
            let _ = server.await;
        }
        let _ = std::fs::remove_file(pid_file(&s.prefix));
        tracing::info!(target: "kong", "Kong stopped");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_header_timeout_takes_nginx_time_values() {
        for (v, ms) in [("500ms", 500), ("30s", 30_000), ("2m", 120_000), ("45", 45_000)] {
            let env = [("KONG_NGINX_HTTP_CLIENT_HEADER_TIMEOUT".to_owned(), v.to_owned())];
            let s = Settings::load_with_env(None, None, env).unwrap();
            assert_eq!(s.client_header_timeout.as_millis(), ms, "{v}");
        }
        let env = [("KONG_NGINX_HTTP_CLIENT_HEADER_TIMEOUT".to_owned(), "soon".to_owned())];
        assert_eq!(
            Settings::load_with_env(None, None, env).unwrap_err(),
            "nginx_http_client_header_timeout: invalid value 'soon'"
        );
    }

    #[test]
    fn logs_print_kongs_levels_and_notice_hides_info() {
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let run = |level: &str| {
            let out = Buffer::default();
            let sink = out.clone();
            let subscriber = tracing_subscriber::registry().with(log_filter(level)).with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .event_format(KongLogFormat)
                    .with_writer(move || sink.clone()),
            );
            tracing::subscriber::with_default(subscriber, || {
                use crate::model::Level;
                for l in [
                    Level::Debug,
                    Level::Info,
                    Level::Notice,
                    Level::Warn,
                    Level::Err,
                    Level::Crit,
                ] {
                    crate::pdk::log::emit(l, &format!("[p] {l:?}"));
                }
            });
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| l.split_once(' ').unwrap().1.split_once(' ').unwrap().1.to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            run("notice"),
            [
                "[notice] [p] Notice",
                "[warn] [p] Warn",
                "[error] [p] Err",
                "[crit] [p] Crit"
            ]
        );
        assert_eq!(run("info")[0], "[info] [p] Info");
        assert_eq!(run("crit"), ["[crit] [p] Crit"]);
        assert!(!run("debug").concat().contains('\x1b'), "no colour codes");
        assert_eq!(
            log_time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_696_000)),
            "2025/12/02 17:20:00"
        );
        let env = [("KONG_LOG_LEVEL".to_owned(), "loud".to_owned())];
        assert_eq!(
            Settings::load_with_env(None, None, env).unwrap_err(),
            "log_level has an invalid value: 'loud' (debug, info, notice, warn, error, crit, alert, emerg)"
        );
    }

    #[test]
    fn router_flavor_picks_the_path_joining_and_refuses_expressions() {
        let flavor = |v: &str| {
            let env = [("KONG_ROUTER_FLAVOR".to_owned(), v.to_owned())];
            Settings::load_with_env(None, None, env).and_then(|s| s.node().map(|n| n.router_flavor))
        };
        assert_eq!(
            Settings::load_with_env(None, None, []).unwrap().router_flavor,
            crate::model::RouterFlavor::TraditionalCompatible
        );
        assert_eq!(flavor("traditional"), Ok(crate::model::RouterFlavor::Traditional));
        assert!(flavor("expressions").unwrap_err().contains("not supported"));
        assert_eq!(
            flavor("atc").unwrap_err(),
            "router_flavor has an invalid value: 'atc' (traditional, traditional_compatible, expressions)"
        );
    }

    #[test]
    fn pg_timeout_is_in_milliseconds() {
        let load = |v: &str| Settings::load_with_env(None, None, [("KONG_PG_TIMEOUT".to_owned(), v.to_owned())]);
        assert_eq!(
            Settings::load_with_env(None, None, []).unwrap().pg.timeout.as_millis(),
            5000
        );
        assert_eq!(load("250").unwrap().pg.timeout.as_millis(), 250);
        assert_eq!(load("0").unwrap_err(), "pg_timeout: invalid value '0'");
        assert_eq!(load("5s").unwrap_err(), "pg_timeout: invalid value '5s'");
    }

    #[test]
    fn request_body_limits_take_nginx_sizes_and_times() {
        let load = |pairs: &[(&str, &str)]| {
            let env = pairs
                .iter()
                .map(|(k, v)| (format!("KONG_{}", k.to_ascii_uppercase()), v.to_string()));
            Settings::load_with_env(None, None, env.collect::<Vec<_>>())
        };
        let s = load(&[]).unwrap();
        assert_eq!((s.body_limits.buffer_size, s.body_limits.max_size), (8192, 0));
        assert_eq!(s.body_limits.timeout.as_secs(), 60);
        let s = load(&[
            ("client_body_buffer_size", "64k"),
            ("nginx_http_client_max_body_size", "10m"),
            ("nginx_http_client_body_timeout", "5s"),
        ])
        .unwrap();
        assert_eq!(s.body_limits.buffer_size, 64 << 10);
        assert_eq!(s.body_limits.max_size, 10 << 20);
        assert_eq!(s.body_limits.timeout.as_millis(), 5000);
        let s = load(&[
            ("nginx_http_client_body_buffer_size", "1m"),
            ("nginx_http_client_max_body_size", "0"),
        ])
        .unwrap();
        assert_eq!((s.body_limits.buffer_size, s.body_limits.max_size), (1 << 20, 0));
        assert_eq!(
            load(&[("nginx_http_client_max_body_size", "lots")]).unwrap_err(),
            "nginx_http_client_max_body_size: invalid value 'lots'"
        );
        assert_eq!(
            load(&[("client_body_buffer_size", "0")]).unwrap_err(),
            "client_body_buffer_size: invalid value '0'"
        );
    }

    #[test]
    fn settings_without_effect_are_reported_and_proxy_protocol_is_refused() {
        let env = [
            ("KONG_PG_SSL".to_owned(), "on".to_owned()),
            (
                "KONG_ADMIN_LISTEN".to_owned(),
                "127.0.0.1:8001, 127.0.0.1:8444 http2 ssl".to_owned(),
            ),
        ];
        let s = Settings::load_with_env(None, None, env).unwrap();
        assert_eq!(s.admin_listen, ["127.0.0.1:8001".parse::<SocketAddr>().unwrap()]);
        assert_eq!(
            s.ignored,
            [
                "pg_ssl: not supported by this gateway, ignored",
                "admin_listen: 127.0.0.1:8444 ssl is not served (TLS on this API is not supported)"
            ]
        );
        let env = [("KONG_PROXY_LISTEN".to_owned(), "0.0.0.0:8000 proxy_protocol".to_owned())];
        assert_eq!(
            Settings::load_with_env(None, None, env).unwrap_err(),
            "proxy_listen: proxy_protocol is not supported on HTTP listeners ('0.0.0.0:8000 proxy_protocol')"
        );
    }

    #[test]
    fn dns_settings_take_kongs_forms() {
        let env = [
            ("KONG_DNS_RESOLVER".to_owned(), "10.0.0.2, 10.0.0.3:5353".to_owned()),
            ("KONG_DNS_ORDER".to_owned(), "srv,A".to_owned()),
            ("KONG_DNS_STALE_TTL".to_owned(), "60".to_owned()),
            ("KONG_DNS_VALID_TTL".to_owned(), "5".to_owned()),
            ("KONG_DNS_HOSTSFILE".to_owned(), "/tmp/hosts".to_owned()),
        ];
        let s = Settings::load_with_env(None, None, env).unwrap();
        assert_eq!(
            s.dns.resolvers,
            [
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "10.0.0.3:5353".parse().unwrap()
            ]
        );
        assert_eq!(
            s.dns.order,
            [crate::gateway::RecordKind::Srv, crate::gateway::RecordKind::A]
        );
        assert_eq!(s.dns.stale_ttl.as_secs(), 60);
        assert_eq!(s.dns.valid_ttl, Some(std::time::Duration::from_secs(5)));
        assert_eq!(s.dns.error_ttl.as_secs(), 1);
        assert_eq!(s.dns.hostsfile, PathBuf::from("/tmp/hosts"));
        let bad = [("KONG_DNS_ORDER".to_owned(), "A,MX".to_owned())];
        assert_eq!(
            Settings::load_with_env(None, None, bad).unwrap_err(),
            "invalid dns_order: MX"
        );
        let bad = [("KONG_DNS_RESOLVER".to_owned(), "dns.example".to_owned())];
        assert_eq!(
            Settings::load_with_env(None, None, bad).unwrap_err(),
            "dns_resolver: invalid address 'dns.example'"
        );
    }

    #[test]
    fn admin_gui_origin_is_a_list_of_origins() {
        let env = [(
            "KONG_ADMIN_GUI_ORIGIN".to_owned(),
            "https://a.example, https://b.example".to_owned(),
        )];
        let s = Settings::load_with_env(None, None, env).unwrap();
        assert_eq!(s.admin_gui_origin, ["https://a.example", "https://b.example"]);
        assert!(
            Settings::load_with_env(None, None, [])
                .unwrap()
                .admin_gui_origin
                .is_empty()
        );
    }

    #[test]
    fn proxy_listen_reads_kongs_flags() {
        let l = parse_listen("0.0.0.0:8000 reuseport backlog=16384, 127.0.0.1:8443 http2 ssl").unwrap();
        assert_eq!(
            l,
            vec![
                Listen {
                    addr: "0.0.0.0:8000".parse().unwrap(),
                    ssl: false,
                    http2: false,
                    socket: crate::gateway::SocketOptions {
                        reuseport: true,
                        backlog: Some(16384),
                        ..Default::default()
                    }
                },
                Listen {
                    addr: "127.0.0.1:8443".parse().unwrap(),
                    ssl: true,
                    http2: true,
                    socket: Default::default()
                },
            ]
        );
        assert!(parse_listen("off").unwrap().is_empty());
        assert!(parse_listen("nowhere:80").is_err());
        assert_eq!(
            parse_listen("127.0.0.1:8000 backlog=x").unwrap_err(),
            "proxy_listen: invalid value in listen flag 'backlog=x'"
        );
        // Kong's default: the ssl entry's http2 turns h2c on for the plain one too.
        assert!(http2(&l));
        assert!(!http2(&parse_listen("0.0.0.0:8000, 0.0.0.0:8443 ssl").unwrap()));
    }

    #[test]
    fn status_listen_is_off_unless_set() {
        let off = Settings::load_with_env(None, None, Vec::new()).unwrap();
        assert!(off.status_listen.is_empty());
        let env = [(
            "KONG_STATUS_LISTEN".to_owned(),
            "127.0.0.1:8007, 127.0.0.1:8443 ssl".to_owned(),
        )];
        let on = Settings::load_with_env(None, None, env).unwrap();
        assert_eq!(on.status_listen, vec!["127.0.0.1:8007".parse::<SocketAddr>().unwrap()]);
        let bad = [("KONG_STATUS_LISTEN".to_owned(), "nowhere:8007".to_owned())];
        let err = Settings::load_with_env(None, None, bad).unwrap_err();
        assert_eq!(err, "status_listen: invalid address 'nowhere:8007'");
    }

    #[test]
    fn stream_listen_reads_kongs_flags() {
        assert!(parse_stream_listen("off").unwrap().is_empty());
        let listens =
            parse_stream_listen("127.0.0.1:7000 reuseport backlog=16384, 0.0.0.0:20 ssl so_keepalive=1m:5s:3").unwrap();
        let got: Vec<(SocketAddr, bool)> = listens.iter().map(|(a, l)| (*a, l.ssl)).collect();
        assert_eq!(
            got,
            vec![
                ("127.0.0.1:7000".parse().unwrap(), false),
                ("0.0.0.0:20".parse().unwrap(), true)
            ]
        );
        assert!(listens[0].1.socket.reuseport);
        assert_eq!(listens[0].1.socket.backlog, Some(16384));
        assert_eq!(
            listens[1].1.socket.so_keepalive,
            Some(crate::gateway::Keepalive::On {
                idle: Some(std::time::Duration::from_secs(60)),
                interval: Some(std::time::Duration::from_secs(5)),
                count: Some(3)
            })
        );
        assert_eq!(
            parse_stream_listen("127.0.0.1:7000 fast").unwrap_err(),
            STREAM_LISTEN_FORM
        );
        assert_eq!(
            parse_stream_listen("127.0.0.1:7000 backlog=x").unwrap_err(),
            STREAM_LISTEN_FORM
        );
        assert_eq!(parse_stream_listen("nowhere").unwrap_err(), STREAM_LISTEN_FORM);
        assert!(parse_stream_listen("127.0.0.1:7000 udp").unwrap()[0].1.udp);
        assert_eq!(
            parse_port_maps("80:8000, 443:8443").unwrap(),
            vec![(80, 8000), (443, 8443)]
        );
        assert_eq!(
            parse_port_maps("80").unwrap_err(),
            "invalid port mapping (`port_maps`): 80"
        );
        assert!(
            parse_stream_listen("127.0.0.1:7000 udp ssl")
                .unwrap_err()
                .contains("'udp'")
        );
        assert!(
            parse_stream_listen("127.0.0.1:7000 proxy_protocol").unwrap()[0]
                .1
                .proxy_protocol
        );
        let s = Settings::load_with_env(
            None,
            None,
            vec![("KONG_STREAM_LISTEN".to_owned(), "127.0.0.1:7000".to_owned())],
        )
        .unwrap();
        assert_eq!(s.stream_listen.len(), 1);
    }

    #[test]
    fn tracing_settings_are_read_and_checked_as_kong() {
        use crate::tracer::Instrumentations;
        let off = Settings::load_with_env(None, None, Vec::new()).unwrap();
        assert_eq!(off.tracing, crate::tracer::TracingSettings::default());
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let on = Settings::load_with_env(
            None,
            None,
            env(&[
                ("KONG_TRACING_INSTRUMENTATIONS", "router, balancer"),
                ("KONG_TRACING_SAMPLING_RATE", "0.25"),
            ]),
        )
        .unwrap();
        assert!(on.tracing.instrumentations.contains(Instrumentations::BALANCER));
        assert!(!on.tracing.instrumentations.contains(Instrumentations::PLUGIN_ACCESS));
        assert_eq!(on.tracing.sampling_rate, 0.25);
        assert_eq!(
            on.node().unwrap().tracing.get(),
            on.tracing,
            "the node starts with them"
        );
        let err = Settings::load_with_env(None, None, env(&[("KONG_TRACING_INSTRUMENTATIONS", "off,router")]));
        assert_eq!(
            err.unwrap_err(),
            "invalid tracing types: off, other types are mutually exclusive"
        );
        let err = Settings::load_with_env(None, None, env(&[("KONG_TRACING_SAMPLING_RATE", "1.5")]));
        assert_eq!(err.unwrap_err(), "tracing_sampling_rate must be between 0 and 1");
    }

    #[test]
    fn cache_settings_size_the_nodes_cache() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let s = Settings::load_with_env(
            None,
            None,
            env(&[("KONG_DB_CACHE_TTL", "30"), ("KONG_MEM_CACHE_SIZE", "1m")]),
        )
        .unwrap();
        assert_eq!(s.db_cache_ttl, std::time::Duration::from_secs(30));
        assert_eq!(s.mem_cache_size, 1 << 20);
        let node = s.node().unwrap();
        node.cache
            .safe_set("k", Some(1u8), crate::cache::CacheOptions::default());
        let (left, _) = node.cache.probe::<u8>("k").unwrap();
        assert!(
            left.is_some_and(|l| l > std::time::Duration::from_secs(29)),
            "db_cache_ttl applies"
        );
        let err = Settings::load_with_env(None, None, env(&[("KONG_MEM_CACHE_SIZE", "lots")]));
        assert_eq!(err.unwrap_err(), "mem_cache_size: invalid value 'lots'");
        assert_eq!(size_bytes("512k"), Some(512 * 1024));
        assert_eq!(size_bytes("2g"), Some(2 << 30));
    }

    #[test]
    fn the_default_certificate_is_generated_once_in_the_prefix() {
        let dir = std::env::temp_dir().join(format!("kong-conf-test-{}-default-cert", std::process::id()));
        let s = Settings {
            prefix: dir.clone(),
            ..Settings::load(None, Some(dir.clone())).unwrap()
        };
        default_certificate(&s).unwrap();
        let first = std::fs::read(dir.join("ssl/kong-default.crt")).unwrap();
        default_certificate(&s).unwrap();
        assert_eq!(
            std::fs::read(dir.join("ssl/kong-default.crt")).unwrap(),
            first,
            "kept across starts"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
