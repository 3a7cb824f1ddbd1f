//! The `kong-gateway` binary's settings (Kong's `kong.conf` keys and `KONG_*` environment
//! variables) and commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kong_pdk::gateway::declarative::Config;
use kong_pdk::gateway::{HeaderSettings, Proxy, mock_upstream};
use kong_pdk::pdk::NodeInfo;
use kong_pdk::registry::Plugins;

/// The settings `start` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `proxy_listen` addresses (plain HTTP).
    pub proxy_listen: Vec<SocketAddr>,
    /// `database` (only `off` for now).
    pub database: String,
    /// `declarative_config`.
    pub declarative_config: Option<PathBuf>,
    /// `plugins`, with `bundled` expanded.
    pub plugins: Vec<String>,
    /// `prefix`.
    pub prefix: PathBuf,
    /// `log_level`.
    pub log_level: String,
    /// `trusted_ips`.
    pub trusted_ips: Vec<String>,
    /// `headers`.
    pub headers: HeaderSettings,
    /// `nginx_worker_processes`: worker threads (`auto` = one per core).
    pub workers: usize,
    /// `mock_upstream`: also serve Kong's mock upstream on this address (this gateway's
    /// extension, so the quick start runs with one command).
    pub mock_upstream: Option<SocketAddr>,
}

fn parse_listen(value: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "off" {
            continue;
        }
        let mut parts = entry.split_whitespace();
        let addr = parts.next().unwrap_or_default();
        if parts.any(|flag| flag == "ssl") {
            tracing::warn!(target: "kong", "proxy_listen entry '{entry}' needs TLS, which this gateway does not serve yet; skipped");
            continue;
        }
        out.push(
            addr.parse()
                .map_err(|_| format!("proxy_listen: invalid address '{addr}'"))?,
        );
    }
    Ok(out)
}

impl Settings {
    /// Kong's defaults, then the conf file, then `KONG_*` variables; relative paths resolve
    /// from the working directory.
    pub fn load(conf: Option<&Path>, prefix: Option<PathBuf>) -> Result<Settings, String> {
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
        for (k, v) in std::env::vars() {
            if let Some(key) = k.strip_prefix("KONG_") {
                pairs.push((key.to_ascii_lowercase(), v));
            }
        }
        let mut s = Settings {
            proxy_listen: vec!["0.0.0.0:8000".parse().expect("valid")],
            database: "off".into(),
            declarative_config: None,
            plugins: vec!["bundled".into()],
            prefix: PathBuf::from("prefix"),
            log_level: "notice".into(),
            trusted_ips: Vec::new(),
            headers: HeaderSettings::default(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mock_upstream: None,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "proxy_listen" => s.proxy_listen = parse_listen(&v)?,
                "database" => s.database = v.to_ascii_lowercase(),
                "declarative_config" => s.declarative_config = (!v.is_empty()).then(|| PathBuf::from(v)),
                "plugins" => {
                    s.plugins = v
                        .split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect()
                }
                "prefix" => s.prefix = PathBuf::from(v),
                "log_level" => s.log_level = v,
                "trusted_ips" => {
                    s.trusted_ips = v
                        .split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect()
                }
                "headers" => s.headers = HeaderSettings::parse(&v)?,
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
                "mock_upstream" => {
                    s.mock_upstream = Some(v.parse().map_err(|_| format!("mock_upstream: invalid address '{v}'"))?)
                }
                _ => {}
            }
        }
        if let Some(p) = prefix {
            s.prefix = p;
        }
        if s.database != "off" {
            return Err(format!(
                "database = {}: only database = off (DB-less, with declarative_config) is available in this version",
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
                "bundled" => names.extend(kong_plugins::BUNDLED.iter().copied()),
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
            hostname,
            ..NodeInfo::default()
        })
    }
}

fn load_plugins(s: &Settings) -> Result<Arc<Plugins>, String> {
    // Link the bundled plugins and this crate's examples, so their registrations are present.
    let _ = (kong_plugins::BUNDLED, crate::my_plugin::MyPlugin::NAME);
    Ok(Arc::new(
        Plugins::load(s.plugin_names(), s.node()?).map_err(|e| e.to_string())?,
    ))
}

use kong_pdk::Plugin as _;

/// `config parse`: validates a declarative configuration against the enabled plugins.
pub fn parse_config(s: &Settings, file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("could not read {}: {e}", file.display()))?;
    let config = Config::parse(&text).map_err(|e| e.to_string())?;
    let plugins = load_plugins(s)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(config.snapshot(&plugins))
        .map_err(|e| format!("declarative config is invalid: {e}"))?;
    println!("parse successful");
    Ok(())
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

/// `mock-upstream`: serves Kong's mock upstream until interrupted.
pub fn mock_upstream(listen: &str) -> Result<(), String> {
    init_logging("notice");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("could not listen on {listen}: {e}"))?;
        tracing::info!(target: "kong", "mock upstream listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
        mock_upstream::serve(listener, shutdown_signal()).await;
        Ok(())
    })
}

fn init_logging(level: &str) {
    let filter = match level {
        "debug" => "debug",
        "info" | "notice" => "info",
        "warn" => "warn",
        _ => "error",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .try_init();
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

/// `start`: runs the gateway until SIGINT/SIGTERM.
pub fn run(s: Settings) -> Result<(), String> {
    init_logging(&s.log_level);
    std::fs::create_dir_all(s.prefix.join("pids"))
        .map_err(|e| format!("could not create prefix {}: {e}", s.prefix.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.workers)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let plugins = load_plugins(&s)?;
        plugins
            .init_worker()
            .await
            .map_err(|f| format!("init_worker failed for plugin {}", f[0].0))?;
        let config = match &s.declarative_config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| format!("could not read {}: {e}", path.display()))?;
                Config::parse(&text).map_err(|e| e.to_string())?
            }
            None => Config::default(),
        };
        let snapshot = config
            .snapshot(&plugins)
            .await
            .map_err(|e| format!("declarative config is invalid: {e}"))?;
        let proxy = Arc::new(Proxy::new(snapshot, s.headers));
        if let Some(addr) = s.mock_upstream {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("mock_upstream: could not listen on {addr}: {e}"))?;
            tracing::info!(target: "kong", "mock upstream listening on {addr}");
            tokio::spawn(mock_upstream::serve(listener, std::future::pending()));
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut servers = Vec::new();
        for addr in &s.proxy_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("proxy_listen: could not listen on {addr}: {e}"))?;
            tracing::info!(target: "kong", "proxy listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
            let mut stop = stop_rx.clone();
            servers.push(tokio::spawn(proxy.clone().serve(listener, async move {
                let _ = stop.changed().await;
            })));
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
