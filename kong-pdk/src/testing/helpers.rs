//! Integration tests the Kong way (`spec.helpers`, run by Pongo there): a real gateway per
//! test, on random ports, over each store strategy, configured through blueprints and probed
//! with real HTTP clients. No Docker, no fixed ports: tests run in parallel.
//!
//! The seed's `01-integration_spec.lua`, in Rust:
//!
//! ```
//! use kong_pdk::prelude::*;
//! use kong_pdk::testing::helpers::{self, Conf};
//! use serde_json::json;
//!
//! #[plugin(priority = 1000, version = "0.0.1")]
//! pub struct MyPlugin {
//!     #[field(typedef = header_name, default = "X-MyPlugin")]
//!     response_header_name: String,
//! }
//!
//! #[handler]
//! impl Handler for MyPlugin {
//!     async fn response(&self, kong: &mut Kong<Response>) -> kong_pdk::Result {
//!         kong.response().set_header(&self.response_header_name, "response")?;
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! for strategy in helpers::all_strategies() {
//!     let bp = helpers::get_db_utils(strategy, &[MyPlugin::NAME]).await;
//!     // The route gets a service pointing at the test's mock upstream.
//!     let route = bp.routes().insert(json!({ "paths": ["/mock"] })).await;
//!     bp.plugins().insert(json!({ "name": MyPlugin::NAME, "route": { "id": route["id"] } })).await;
//!     let kong = helpers::start_kong(&bp, Conf::default()).await;
//!
//!     let res = kong.proxy_client().get("/mock/anything").send().await;
//!     res.assert_status(200);
//!     assert_eq!(res.assert_header("X-MyPlugin"), "response");
//!     kong.stop().await;
//! }
//! # });
//! ```
//!
//! | Kong | here |
//! |---|---|
//! | `helpers.all_strategies()`, `each_strategy()` | [`all_strategies`], [`each_strategy`] |
//! | `helpers.get_db_utils(strategy, nil, plugins)` | [`get_db_utils`] → [`Blueprint`] |
//! | `bp.routes:insert{...}` | [`Blueprint::routes`]`().insert(json!({...}))` |
//! | `helpers.start_kong{...}`, `stop_kong()` | [`start_kong`], [`Gateway::stop`] |
//! | `helpers.proxy_client()`, `proxy_ssl_client()`, `admin_client()` | [`Gateway::proxy_client`], ... |
//! | `assert.response(r).has.status(200)` | [`TestResponse::assert_status`] |
//! | `assert.response(r).has.header(h)` | [`TestResponse::assert_header`] |
//! | `assert.request(r).has.header(h)` | [`TestResponse::request`] → [`EchoedRequest`] |
//! | `helpers.wait_until(f, timeout)` | [`wait_until`] |
//! | `helpers.mock_upstream_url` | [`Blueprint::mock_upstream_url`] |
//!
//! When an assertion fails it prints the response body and the gateway's recent error log,
//! as Kong's do.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::admin::{Admin, Store};
use crate::gateway::tls::CertificatePair;
use crate::gateway::{HeaderSettings, Proxy, Snapshot, mock_upstream};
use crate::pdk::{ErrorLog, NodeInfo};
use crate::registry::{self, Plugins};

mod client;
mod websocket;

pub use client::{EchoedRequest, RequestBuilder, TestClient, TestResponse};
pub use websocket::{WsClient, WsRefused};

/// How many error-log lines a test gateway keeps.
const ERROR_LOG_LINES: usize = 1000;

/// A store strategy: where the gateway under test keeps its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// DB-less: the blueprint becomes the declarative configuration the gateway starts with.
    Off,
    /// The embedded store: a SQLite file of the test's own.
    Sqlite,
    /// PostgreSQL: a database of the test's own, dropped afterwards.
    Postgres,
}

impl Strategy {
    /// Kong's name of the strategy (`off`, `sqlite`, `postgres`), as in `database = ...`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Off => "off",
            Strategy::Sqlite => "sqlite",
            Strategy::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every strategy a plugin should be tested with: `off`, `sqlite` and, when PostgreSQL is
/// reachable, `postgres` (Kong's `helpers.all_strategies()`).
///
/// PostgreSQL is found through `KONG_TEST_PG_HOST`, `KONG_TEST_PG_PORT`, `KONG_TEST_PG_USER` and
/// `KONG_TEST_PG_PASSWORD` (default `postgres@127.0.0.1:5432`, no password), and probed once
/// per process with a real login (3 s at most). When that fails, `postgres` is left out and
/// the reason printed once, unless `KONG_TEST_REQUIRE_PG=1`, which makes it a panic (CI sets
/// it). `KONG_DATABASE` narrows the list to one strategy, as with Kong.
pub fn all_strategies() -> Vec<Strategy> {
    strategies(&[Strategy::Off, Strategy::Sqlite, Strategy::Postgres])
}

/// The strategies with a database: `sqlite` and `postgres` (Kong's `helpers.each_strategy()`),
/// with the same rules as [`all_strategies`].
pub fn each_strategy() -> Vec<Strategy> {
    strategies(&[Strategy::Sqlite, Strategy::Postgres])
}

fn strategies(candidates: &[Strategy]) -> Vec<Strategy> {
    strategies_with(std::env::var("KONG_DATABASE").ok().as_deref(), candidates)
}

/// `candidates` narrowed to `only` (the `KONG_DATABASE` value), PostgreSQL checked.
fn strategies_with(only: Option<&str>, candidates: &[Strategy]) -> Vec<Strategy> {
    let mut out = Vec::new();
    for &s in candidates {
        if only.is_some_and(|o| o != s.as_str()) {
            continue;
        }
        if s == Strategy::Postgres
            && let Err(why) = PgSettings::from_env().reachable()
        {
            assert!(
                std::env::var("KONG_TEST_REQUIRE_PG").as_deref() != Ok("1"),
                "KONG_TEST_REQUIRE_PG=1 but {why}"
            );
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| eprintln!("skipping the postgres strategy: {why}"));
            continue;
        }
        out.push(s);
    }
    out
}

/// Where the test PostgreSQL server is (`KONG_TEST_PG_HOST`, `_PORT`, `_USER`, `_PASSWORD`).
struct PgSettings {
    host: String,
    port: u16,
    user: String,
    password: String,
}

impl PgSettings {
    fn from_env() -> PgSettings {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
        PgSettings {
            host: var("KONG_TEST_PG_HOST", "127.0.0.1"),
            port: var("KONG_TEST_PG_PORT", "5432").parse().unwrap_or(5432),
            user: var("KONG_TEST_PG_USER", "postgres"),
            password: var("KONG_TEST_PG_PASSWORD", ""),
        }
    }

    fn url(&self, database: &str) -> String {
        let enc = crate::pdk::request::percent_encode_component;
        let auth = if self.password.is_empty() {
            enc(&self.user)
        } else {
            format!("{}:{}", enc(&self.user), enc(&self.password))
        };
        format!("postgres://{auth}@{}:{}/{database}", self.host, self.port)
    }

    /// Whether a login works, found out once per process: a server that answers on its port
    /// but refuses the user (or its password) counts as unreachable, with the server's words.
    fn reachable(&self) -> Result<(), String> {
        static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        PROBED.get_or_init(|| self.login()).clone()
    }

    fn login(&self) -> Result<(), String> {
        let url = self.url("postgres");
        let unreachable = |e: String| {
            format!(
                "PostgreSQL at {}:{} (user {}) is unreachable: {e}; set KONG_TEST_PG_HOST, KONG_TEST_PG_PORT, KONG_TEST_PG_USER and KONG_TEST_PG_PASSWORD",
                self.host, self.port, self.user
            )
        };
        // A thread of its own: the caller may be inside a runtime, or not.
        let probe = std::thread::spawn(move || -> Result<(), String> {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                sqlx::any::install_default_drivers();
                let login = async {
                    let conn = sqlx::AnyConnection::connect(&url).await.map_err(|e| e.to_string())?;
                    conn.close().await.map_err(|e| e.to_string())
                };
                tokio::time::timeout(Duration::from_secs(3), login)
                    .await
                    .map_err(|_| "no answer within 3 s".to_owned())?
            })
        });
        probe
            .join()
            .map_err(|_| "the probe panicked".to_owned())?
            .map_err(unreachable)
    }
}

/// The Redis server tests use (Kong's `helpers.redis_host`/`redis_port`):
/// `KONG_TEST_REDIS_HOST`, `KONG_TEST_REDIS_PORT` (default 127.0.0.1:6379). `None`, with the
/// reason printed, when it does not answer, unless `KONG_TEST_REQUIRE_REDIS=1`, which makes that
/// a panic (CI sets it): a test needing Redis skips on a machine without one.
///
/// ```no_run
/// # async fn t() {
/// let Some((host, port)) = kong_pdk::testing::helpers::redis_or_skip() else { return };
/// # }
/// ```
pub fn redis_or_skip() -> Option<(String, u16)> {
    use std::net::ToSocketAddrs;
    let host = std::env::var("KONG_TEST_REDIS_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("KONG_TEST_REDIS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(6379);
    let reached = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut a| a.next().ok_or_else(|| "no address".to_owned()))
        .and_then(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())
        });
    match reached {
        Ok(_) => Some((host, port)),
        Err(e) => {
            let why = format!("Redis at {host}:{port} is unreachable: {e}");
            assert!(
                std::env::var("KONG_TEST_REQUIRE_REDIS").as_deref() != Ok("1"),
                "KONG_TEST_REQUIRE_REDIS=1 but {why}"
            );
            eprintln!("skipping a test that needs Redis: {why}");
            None
        }
    }
}

/// What a test's store leaves behind, removed when the blueprint goes.
enum Scratch {
    Dir(PathBuf),
    Database { settings: PgSettings, name: String },
}

impl Drop for Scratch {
    fn drop(&mut self) {
        match self {
            Scratch::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Scratch::Database { settings, name } => {
                // Runs on a thread of its own: the test's runtime may be shutting down.
                let (url, sql) = (
                    settings.url("postgres"),
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                );
                let dropping = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    rt.block_on(async {
                        let pool = sqlx::AnyPool::connect(&url).await.ok()?;
                        sqlx::query(&sql).execute(&pool).await.ok()
                    })
                });
                let _ = dropping.join();
            }
        }
    }
}

/// A name no other test of any process uses.
fn unique_name() -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::new_v4().simple()
    )
}

/// Kong's test mock upstream, served on a random port for one blueprint.
struct MockUpstream {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A test's data: entities inserted through the Admin API's own validation, in a store of the
/// test's own, and the mock upstream they point at (Kong's `bp` from `get_db_utils`).
///
/// Cheap to clone; the store and the mock upstream go when the last clone (and the last
/// [`Gateway`] started from it) does.
#[derive(Clone)]
pub struct Blueprint(Arc<Inner>);

struct Inner {
    strategy: Strategy,
    plugins: Arc<Plugins>,
    store: Store,
    /// The Admin API writes go through: the blueprint's own until a gateway starts, then that
    /// gateway's, so later inserts reach it at once.
    admin: std::sync::Mutex<Arc<Admin>>,
    error_log: Arc<ErrorLog>,
    mock: MockUpstream,
    counter: AtomicUsize,
    // Dropped last: the store's files or database.
    _scratch: Scratch,
}

/// Prepares a test: a fresh store for `strategy`, the plugins named in `plugins` loaded (with
/// `"bundled"`, every plugin linked into the test binary) and Kong's mock upstream started on a
/// random port (Kong's `helpers.get_db_utils(strategy, nil, plugins)`).
///
/// Runs on the caller's tokio runtime, which needs its I/O and time drivers
/// (`#[tokio::test]` has them).
///
/// # Panics
/// When a plugin is not registered (not linked into the test binary) or the store cannot be
/// created: a test cannot go on without them.
pub async fn get_db_utils(strategy: Strategy, plugins: &[&str]) -> Blueprint {
    let error_log = Arc::new(ErrorLog::new(ERROR_LOG_LINES));
    let node = NodeInfo {
        error_log: Some(error_log.clone()),
        ..NodeInfo::default()
    };
    let linked = registry::registered();
    let names = plugins.iter().flat_map(|&name| match name {
        "bundled" => linked.iter().map(|r| r.name()).collect(),
        other => vec![other],
    });
    let plugins = Arc::new(Plugins::load(names, node).unwrap_or_else(|e| {
        panic!("get_db_utils: {e} (is the plugin's crate used by the test, so that it is linked?)")
    }));
    plugins
        .init_worker()
        .await
        .unwrap_or_else(|f| panic!("get_db_utils: init_worker failed for plugin {}", f[0].0));

    let (store, scratch) = match strategy {
        // DB-less tests insert into a scratch SQLite store; start_kong turns it into a
        // declarative configuration.
        Strategy::Off | Strategy::Sqlite => {
            let dir = std::env::temp_dir().join(format!("kong-pdk-test-{}", unique_name()));
            let store = Store::sqlite(&dir.join("kong.db"))
                .await
                .unwrap_or_else(|e| panic!("get_db_utils: cannot create a SQLite store in {}: {e}", dir.display()));
            (store, Scratch::Dir(dir))
        }
        Strategy::Postgres => {
            let settings = PgSettings::from_env();
            let name = format!("kong_pdk_test_{}", unique_name());
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&settings.url("postgres"))
                .await
                .unwrap_or_else(|e| panic!("get_db_utils: PostgreSQL is unreachable: {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("get_db_utils: cannot create database {name}: {e}"));
            pool.close().await;
            let url = settings.url(&name);
            let scratch = Scratch::Database { settings, name };
            let store = Store::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("get_db_utils: cannot open {url}: {e}"));
            (store, scratch)
        }
    };
    let proxy = Arc::new(Proxy::new(Snapshot::empty(plugins.clone()), HeaderSettings::default()));
    let admin = Admin::new(store.clone(), plugins.clone(), proxy)
        .await
        .unwrap_or_else(|e| panic!("get_db_utils: {e}"));

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("get_db_utils: bind the mock upstream");
    let addr = listener.local_addr().expect("a bound address");
    let task = tokio::spawn(mock_upstream::serve(listener, std::future::pending()));

    Blueprint(Arc::new(Inner {
        strategy,
        plugins,
        store,
        admin: std::sync::Mutex::new(admin),
        error_log,
        mock: MockUpstream { addr, task },
        counter: AtomicUsize::new(0),
        _scratch: scratch,
    }))
}

impl Blueprint {
    /// The strategy the blueprint was made for.
    pub fn strategy(&self) -> Strategy {
        self.0.strategy
    }

    /// The blueprint's store (Kong's `db` of `get_db_utils`), for reading what plugins wrote,
    /// such as the `cluster` policy's counters.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The address of this test's mock upstream (Kong's is fixed at 127.0.0.1:15555; here each
    /// test has its own).
    pub fn mock_upstream(&self) -> SocketAddr {
        self.0.mock.addr
    }

    /// `http://127.0.0.1:<port>` of this test's mock upstream (`helpers.mock_upstream_url`).
    pub fn mock_upstream_url(&self) -> String {
        format!("http://{}", self.0.mock.addr)
    }

    /// `bp.services`: defaults to the mock upstream (`protocol = http`, `host = 127.0.0.1`,
    /// `port = <mock port>`).
    pub fn services(&self) -> Table<'_> {
        self.table("services")
    }

    /// `bp.routes`: without `service`, each route gets a new default service.
    pub fn routes(&self) -> Table<'_> {
        self.table("routes")
    }

    /// `bp.consumers`: defaults `username = consumer-username-N`, `custom_id = consumer-id-N`.
    pub fn consumers(&self) -> Table<'_> {
        self.table("consumers")
    }

    /// `bp.plugins`: give `name`, and `config` and a scope (`route`, `service`, `consumer`) as
    /// needed.
    pub fn plugins(&self) -> Table<'_> {
        self.table("plugins")
    }

    /// `bp.certificates`.
    pub fn certificates(&self) -> Table<'_> {
        self.table("certificates")
    }

    /// `bp.snis`.
    pub fn snis(&self) -> Table<'_> {
        self.table("snis")
    }

    /// `bp.upstreams`: `slots` defaults to 100.
    pub fn upstreams(&self) -> Table<'_> {
        self.table("upstreams")
    }

    /// `bp.targets`: give `upstream = {id}` and `target`; `weight` defaults to 10. Kong
    /// serves targets only under their upstream, so `update` and `remove` do not apply: remove
    /// the upstream instead.
    pub fn targets(&self) -> Table<'_> {
        self.table("targets")
    }

    /// The entities of any kind by its name (`keyauth_credentials`): core kinds and the
    /// entities of the plugins under test.
    pub fn table(&self, name: &str) -> Table<'_> {
        Table {
            bp: self,
            name: name.to_owned(),
        }
    }

    /// Every entity as the declarative configuration a DB-less node starts with
    /// (`helpers.make_yaml_file()`).
    pub async fn declarative_config(&self) -> crate::gateway::declarative::Config {
        self.current_admin()
            .export()
            .await
            .unwrap_or_else(|e| panic!("declarative_config: {e}"))
    }

    fn current_admin(&self) -> Arc<Admin> {
        self.0.admin.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn next(&self) -> usize {
        self.0.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// One request to the blueprint's own Admin API, in-process.
    async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(path);
        let bytes = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).expect("JSON"))
            }
            None => Bytes::new(),
        };
        let res = self
            .current_admin()
            .handle(req.body(Full::new(bytes)).expect("a request"))
            .await;
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

/// One entity kind of a [`Blueprint`] (`bp.routes`, ...). Writes go through the Admin API's
/// handler, so they are validated, defaulted and errored exactly as `POST /routes` is.
pub struct Table<'a> {
    bp: &'a Blueprint,
    name: String,
}

impl Table<'_> {
    /// Inserts one entity: Kong's blueprint defaults for the kind, overridden by `fields`.
    /// Returns the stored entity (with `id`, defaults, ...).
    ///
    /// # Panics
    /// When the Admin API rejects it; the message is Kong's error.
    pub async fn insert(&self, fields: Value) -> Value {
        let mut entity = self.defaults();
        match (entity.as_object_mut(), fields) {
            (Some(e), Value::Object(f)) => e.extend(f),
            (_, other) => panic!("bp.{}:insert takes a JSON object, not {other}", self.name),
        }
        // Routes without a service get a fresh default one.
        if self.name == "routes" && entity.get("service").is_none() {
            let service = Box::pin(self.bp.services().insert(json!({}))).await;
            entity["service"] = json!({ "id": service["id"] });
        }
        // Targets are created under their upstream, the only place Kong serves them.
        let path = match (self.name.as_str(), entity["upstream"]["id"].as_str()) {
            ("targets", Some(upstream)) => format!("/upstreams/{upstream}/targets"),
            _ => format!("/{}", self.path()),
        };
        let (status, body) = self.bp.admin(Method::POST, &path, Some(&entity)).await;
        assert_eq!(
            status, 201,
            "bp.{}:insert({entity}) failed with {status}: {body:#}",
            self.name
        );
        body
    }

    /// Inserts `n` entities with the same `fields` (`insert_n`).
    pub async fn insert_n(&self, n: usize, fields: Value) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.insert(fields.clone()).await);
        }
        out
    }

    /// Updates the entity with id (or endpoint key) `id` with `fields` (a PATCH).
    ///
    /// # Panics
    /// When the Admin API rejects it.
    pub async fn update(&self, id: &str, fields: Value) -> Value {
        let (status, body) = self
            .bp
            .admin(Method::PATCH, &format!("/{}/{id}", self.path()), Some(&fields))
            .await;
        assert_eq!(
            status, 200,
            "bp.{}:update({id}) failed with {status}: {body:#}",
            self.name
        );
        body
    }

    /// Deletes the entity with id (or endpoint key) `id`.
    pub async fn remove(&self, id: &str) {
        let (status, body) = self
            .bp
            .admin(Method::DELETE, &format!("/{}/{id}", self.path()), None)
            .await;
        assert_eq!(
            status, 204,
            "bp.{}:remove({id}) failed with {status}: {body:#}",
            self.name
        );
    }

    /// The Admin API collection of the kind (a plugin entity's own, `/key-auths`).
    fn path(&self) -> &str {
        crate::dao::find(&self.name).map_or(&self.name, |m| m.admin_api_name)
    }

    /// Kong's blueprint defaults for the kind (`spec/fixtures/blueprints.lua`).
    fn defaults(&self) -> Value {
        let mock = self.bp.mock_upstream();
        match self.name.as_str() {
            "services" => json!({ "protocol": "http", "host": mock.ip().to_string(), "port": mock.port() }),
            "targets" => json!({ "weight": 10 }),
            "upstreams" => json!({ "slots": 100 }),
            "consumers" => {
                let n = self.bp.next();
                json!({ "username": format!("consumer-username-{n}"), "custom_id": format!("consumer-id-{n}") })
            }
            _ => json!({}),
        }
    }
}

/// Settings for [`start_kong`], beyond the blueprint's (Kong's `start_kong{...}` env).
#[derive(Debug, Clone, Default)]
pub struct Conf {
    headers: Option<String>,
    declarative_config: Option<String>,
    tracing: Option<crate::tracer::TracingSettings>,
    db_update_frequency: Option<std::time::Duration>,
    dns: Option<crate::gateway::DnsSettings>,
}

impl Conf {
    /// Kong's DNS client for targets named by host, asking `resolver` (a local DNS stub) and
    /// reading `hostsfile` (`dns_resolver`, `dns_hostsfile`; `dns_order` and `dns_stale_ttl`
    /// at their defaults). Without it, host names go to the system resolver at each
    /// connection.
    pub fn dns_resolver(mut self, resolver: std::net::SocketAddr, hostsfile: &std::path::Path) -> Conf {
        self.dns = Some(crate::gateway::DnsSettings {
            resolvers: vec![resolver],
            hostsfile: hostsfile.to_owned(),
            ..Default::default()
        });
        self
    }

    /// Kong's `headers` setting (`off`, `server_tokens,latency_tokens`, ...).
    pub fn headers(mut self, headers: &str) -> Conf {
        self.headers = Some(headers.to_owned());
        self
    }

    /// With the `off` strategy, start from this declarative configuration (kong.yml, YAML or
    /// JSON) instead of the blueprint's entities.
    pub fn declarative_config(mut self, yaml: &str) -> Conf {
        self.declarative_config = Some(yaml.to_owned());
        self
    }

    /// Kong's `db_update_frequency`: the node follows the other nodes' writes and cluster
    /// events (cache invalidations) on the database at this interval, as a started Kong does.
    /// Without it, a test node sees the blueprint's writes at once and no one else's.
    pub fn db_update_frequency(mut self, every: std::time::Duration) -> Conf {
        self.db_update_frequency = Some(every);
        self
    }

    /// Kong's `tracing_instrumentations` (comma-separated, as in kong.conf) and
    /// `tracing_sampling_rate`.
    ///
    /// # Panics
    /// On an unknown instrumentation.
    pub fn tracing(mut self, instrumentations: &str, sampling_rate: f64) -> Conf {
        let names: Vec<&str> = instrumentations.split(',').map(str::trim).collect();
        let instrumentations =
            crate::tracer::Instrumentations::parse(&names).unwrap_or_else(|e| panic!("Conf::tracing: {e}"));
        self.tracing = Some(crate::tracer::TracingSettings {
            instrumentations,
            sampling_rate,
        });
        self
    }
}

/// A gateway serving a [`Blueprint`]: the proxy on plain and TLS listeners, the Admin API and
/// the Status API, each on a random port of 127.0.0.1. Stop it with [`Gateway::stop`] (or drop it).
pub struct Gateway {
    bp: Blueprint,
    proxy: SocketAddr,
    proxy_ssl: SocketAddr,
    admin: SocketAddr,
    status: SocketAddr,
    stream: SocketAddr,
    stream_tls: SocketAddr,
    stream_udp: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts a gateway for `bp` (Kong's `helpers.start_kong`). With a database, it serves the
/// blueprint's store, so entities inserted later reach it at once; with `off`, it starts DB-less
/// from the blueprint's entities as they are now (or `conf`'s declarative configuration).
///
/// # Panics
/// When the configuration is invalid or a port cannot be bound.
pub async fn start_kong(bp: &Blueprint, conf: Conf) -> Gateway {
    start_node(bp, conf, bp.0.plugins.clone(), true).await
}

/// The proxy with `conf`'s DNS client, if it has one.
fn with_dns(proxy: Proxy, conf: &Conf) -> Proxy {
    match &conf.dns {
        Some(settings) => {
            proxy.with_dns(crate::gateway::Dns::new(settings).unwrap_or_else(|e| panic!("start_kong: {e}")))
        }
        None => proxy,
    }
}

/// Starts another gateway node on `bp`'s database: its own plugins (so its own plugin states,
/// such as in-memory counters), its own listeners, the same entities and the same shared
/// tables, as a second Kong process on one PostgreSQL would be. Entities inserted through the
/// blueprint afterwards reach the node started last with [`start_kong`]; this one sees the
/// entities there are when it starts.
///
/// # Panics
/// With the `off` strategy (DB-less nodes share nothing), when the configuration is invalid or
/// a port cannot be bound.
pub async fn start_another_kong(bp: &Blueprint, conf: Conf) -> Gateway {
    assert!(
        bp.0.strategy != Strategy::Off,
        "start_another_kong: DB-less nodes share no database"
    );
    let node = NodeInfo {
        error_log: Some(bp.0.error_log.clone()),
        ..NodeInfo::default()
    };
    let names: Vec<&str> = bp.0.plugins.iter().map(|m| m.name).collect();
    let plugins = Arc::new(Plugins::load(names, node).unwrap_or_else(|e| panic!("start_another_kong: {e}")));
    plugins
        .init_worker()
        .await
        .unwrap_or_else(|f| panic!("start_another_kong: init_worker failed for plugin {}", f[0].0));
    start_node(bp, conf, plugins, false).await
}

async fn start_node(bp: &Blueprint, conf: Conf, plugins: Arc<Plugins>, writes_here: bool) -> Gateway {
    let inner = &bp.0;
    if let Some(tracing) = conf.tracing {
        plugins.node().tracing.set(tracing);
    }
    let headers = match &conf.headers {
        Some(h) => HeaderSettings::parse(h).unwrap_or_else(|e| panic!("start_kong: headers: {e}")),
        None => HeaderSettings::default(),
    };
    let (proxy, admin) = match inner.strategy {
        Strategy::Off => {
            let config = match &conf.declarative_config {
                Some(text) => crate::gateway::declarative::Config::parse_for(text, &plugins)
                    .unwrap_or_else(|e| panic!("start_kong: declarative_config: {e}")),
                None => bp.declarative_config().await,
            };
            let snapshot = config
                .snapshot(&plugins)
                .await
                .unwrap_or_else(|e| panic!("start_kong: declarative config is invalid: {e}"));
            let proxy = with_dns(Proxy::new(snapshot, headers), &conf);
            let proxy = Arc::new(proxy.with_default_certificate(default_certificate()));
            let admin = Admin::dbless(&config, plugins.clone(), proxy.clone())
                .await
                .unwrap_or_else(|e| panic!("start_kong: {e}"));
            (proxy, admin)
        }
        Strategy::Sqlite | Strategy::Postgres => {
            // A node on the blueprint's store, as Kong started on the test database; the
            // blueprint writes through its Admin API from now on.
            let empty = Snapshot::empty(plugins.clone());
            let proxy = with_dns(Proxy::new(empty, headers), &conf);
            let proxy = Arc::new(proxy.with_default_certificate(default_certificate()));
            let admin = Admin::new(inner.store.clone(), plugins.clone(), proxy.clone())
                .await
                .unwrap_or_else(|e| panic!("start_kong: {e}"));
            if writes_here {
                *inner.admin.lock().unwrap_or_else(|e| e.into_inner()) = admin.clone();
            }
            (proxy, admin)
        }
    };
    let bind = || async {
        TcpListener::bind("127.0.0.1:0")
            .await
            .expect("start_kong: bind a listener")
    };
    let (plain, tls, admin_listener, status_listener) = (bind().await, bind().await, bind().await, bind().await);
    let (stream_listener, stream_tls_listener) = (bind().await, bind().await);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("start_kong: bind a UDP socket");
    let stream_udp = udp.local_addr().expect("a bound address");
    let addr = |l: &TcpListener| l.local_addr().expect("a bound address");
    let (proxy_addr, proxy_ssl, admin_addr, status) =
        (addr(&plain), addr(&tls), addr(&admin_listener), addr(&status_listener));
    let (stream, stream_tls) = (addr(&stream_listener), addr(&stream_tls_listener));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = vec![
        // Kong's test proxy_listen turns HTTP/2 on (`9443 http2 ssl, 9002 http2`): h2c too.
        tokio::spawn(proxy.clone().serve_h2c(plain, until_stopped())),
        tokio::spawn(proxy.clone().serve_tls(tls, until_stopped())),
        tokio::spawn(admin.clone().serve(admin_listener, until_stopped())),
        tokio::spawn(admin.clone().serve_status(status_listener, until_stopped())),
        tokio::spawn(proxy.clone().serve_stream(stream_listener, until_stopped())),
        tokio::spawn(proxy.clone().serve_stream_tls(stream_tls_listener, until_stopped())),
        tokio::spawn(proxy.clone().serve_udp(udp, until_stopped())),
    ];
    if let Some(every) = conf.db_update_frequency {
        let stopped = until_stopped();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = admin.follow_cluster(every) => {}
                () = stopped => {}
            }
        }));
    }
    Gateway {
        bp: bp.clone(),
        proxy: proxy_addr,
        proxy_ssl,
        admin: admin_addr,
        status,
        stream,
        stream_tls,
        stream_udp,
        stop,
        tasks,
    }
}

fn default_certificate() -> CertificatePair {
    CertificatePair::self_signed(&["localhost"])
        .expect("a self-signed certificate")
        .0
}

impl Gateway {
    /// The plain proxy listener.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    /// The TLS proxy listener (HTTP/1.1 and HTTP/2 by ALPN, a self-signed certificate).
    pub fn proxy_ssl_addr(&self) -> SocketAddr {
        self.proxy_ssl
    }

    /// The stream (TCP) listener (Kong's `stream_listen`), on 127.0.0.1: stream routes'
    /// `destinations` see its port.
    pub fn stream_addr(&self) -> SocketAddr {
        self.stream
    }

    /// The TLS stream listener (a `stream_listen` entry with `ssl`), on 127.0.0.1: routes
    /// with `tls` terminate there, routes with `tls_passthrough` pass the client's TLS on.
    pub fn stream_ssl_addr(&self) -> SocketAddr {
        self.stream_tls
    }

    /// The UDP stream socket (a `stream_listen` entry with `udp`), on 127.0.0.1.
    pub fn stream_udp_addr(&self) -> SocketAddr {
        self.stream_udp
    }

    /// The Admin API listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// A WebSocket connection through the plain proxy listener to `path`, with `headers` on
    /// the handshake; the gateway's answer when it refuses it.
    pub async fn websocket(&self, path: &str, headers: &[(&str, &str)]) -> Result<WsClient, WsRefused> {
        WsClient::connect(self.proxy, path, headers).await
    }

    /// A client of the plain proxy listener (`helpers.proxy_client()`).
    pub fn proxy_client(&self) -> TestClient {
        TestClient::new(self.proxy, None, self.bp.0.error_log.clone())
    }

    /// A client of the TLS proxy listener that does not verify the certificate and sends no
    /// server name (`helpers.proxy_ssl_client()`).
    pub fn proxy_ssl_client(&self) -> TestClient {
        TestClient::new(self.proxy_ssl, Some(None), self.bp.0.error_log.clone())
    }

    /// As [`Gateway::proxy_ssl_client`], sending `sni` as the server name.
    pub fn proxy_ssl_client_sni(&self, sni: &str) -> TestClient {
        TestClient::new(self.proxy_ssl, Some(Some(sni.to_owned())), self.bp.0.error_log.clone())
    }

    /// A client of the Admin API (`helpers.admin_client()`).
    pub fn admin_client(&self) -> TestClient {
        TestClient::new(self.admin, None, self.bp.0.error_log.clone())
    }

    /// A client of the Status API (`helpers.http_client(status_listen)`).
    pub fn status_client(&self) -> TestClient {
        TestClient::new(self.status, None, self.bp.0.error_log.clone())
    }

    /// The blueprint the gateway serves.
    pub fn blueprint(&self) -> &Blueprint {
        &self.bp
    }

    /// The gateway's recent log lines (plugin `kong.log` lines and plugin errors), oldest first.
    pub fn error_log(&self) -> Vec<String> {
        self.bp.0.error_log.lines()
    }

    /// Stops the gateway (`helpers.stop_kong()`): the listeners close and in-flight requests
    /// finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The certificate (DER) a TLS listener at `addr` serves to a handshake naming `sni`, without
/// verifying it: which certificate and SNI entities a gateway picked.
pub async fn served_certificate(addr: SocketAddr, sni: &str) -> Result<Vec<u8>, String> {
    let (_, seen) = tls_connect(addr, sni).await?;
    seen.take_seen()
        .ok_or_else(|| "no certificate was presented".to_owned())
}

/// A TLS client connection to `addr` naming `sni`, taking whatever certificate it is served
/// (the test gateways' are self-signed): for TLS streams (`Gateway::stream_ssl_addr`).
pub async fn tls_client(addr: SocketAddr, sni: &str) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    tls_connect(addr, sni).await.map(|(stream, _)| stream)
}

async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
) -> Result<
    (
        tokio_rustls::client::TlsStream<TcpStream>,
        Arc<crate::engine::AnyServer>,
    ),
    String,
> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let seen = Arc::new(crate::engine::AnyServer::new(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(seen.clone())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok((stream, seen))
}

/// Polls `condition` every 20 ms until it holds (`helpers.wait_until(fn, timeout)`).
///
/// # Panics
/// When `timeout` passes first; the message names `what`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// let polls = AtomicUsize::new(0);
/// kong_pdk::testing::helpers::wait_until("the third poll", std::time::Duration::from_secs(5), || async {
///     polls.fetch_add(1, Ordering::Relaxed) == 2
/// })
/// .await;
/// # });
/// ```
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests;
