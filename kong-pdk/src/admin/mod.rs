//! Kong's Admin API over a [`Store`]: CRUD for services, routes, consumers, plugins,
//! certificates and SNIs with Kong's paths, bodies, errors and status codes. Every accepted
//! write is committed to the store, then the proxy's snapshot is rebuilt and swapped; a write
//! whose configuration would not build is refused and nothing is stored.
//!
//! Laid out as Kong's `kong/api`: `server` (the listener, headers and bodies: `init.lua`),
//! `routes` (the dispatch: `routes/*.lua`), `endpoints` (the generic collection, entity and
//! nested endpoints: `endpoints.lua`), `info` (`GET /`, `/status`: `routes/kong.lua`),
//! `config` (`/config` and declarative conversions), `errors` (Kong's codes, named), `kinds`
//! (the entity schemas) and `store` (SQLite and PostgreSQL). Reads are served from the last
//! committed entities and never wait for a write; writes apply one at a time.
//!
//! ```no_run
//! # async fn run(proxy: std::sync::Arc<kong_pdk::gateway::Proxy>, plugins: std::sync::Arc<kong_pdk::registry::Plugins>) {
//! use kong_pdk::admin::{Admin, Store};
//! let store = Store::sqlite("prefix/kong.db".as_ref()).await.unwrap();
//! let admin = Admin::new(store, plugins, proxy).await.unwrap();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8001").await.unwrap();
//! admin.serve(listener, std::future::pending()).await;
//! # }
//! ```

mod args;
mod config;
mod counters;
mod endpoints;
mod errors;
mod health;
mod info;
use crate::gateway::kinds;
mod routes;
mod server;
mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use uuid::Uuid;

pub use store::{ClusterEvent, DEFAULT_TIMEOUT, Op, Store, StoreError};

use crate::entities::{CaCertificate, Certificate, Consumer, Route, Service, Sni, Target, Upstream};
use crate::executor::PluginEntity;
use crate::gateway::declarative::Config;
use crate::gateway::{KONG_VERSION, Proxy};
use crate::registry::{Plugins, Scope, Surface};
use crate::schema::SchemaViolation;
use config::*;
use endpoints::*;
use errors::{ApiError, ApiResult, Code, db_error, entity_or_field_violation, field_violation, message, violation};
use kinds::Kind;
use server::*;

/// Proof that the caller holds the Admin API's write lock.
type WriteLock<'a> = tokio::sync::MutexGuard<'a, ()>;

/// The entities of one kind, by id: a persistent map, so a write copies a path of it, not
/// the whole kind, and two versions that share most entries compare quickly.
type Kinds = imbl::OrdMap<String, Arc<Entity>>;

/// One stored entity: the JSON the Admin API answers with, beside its typed form, parsed
/// once when the entity is written or loaded. Building the proxy's configuration clones the
/// typed forms and parses nothing; derefs to the JSON for the endpoints.
struct Entity {
    json: Value,
    /// The typed form, or why the JSON does not make one (reported when the configuration
    /// is built, as a 500 naming the kind).
    typed: Result<Typed, String>,
}

/// The typed entity kinds: (kind, variant, type). Generates [`Typed`], the parse by kind and
/// the way back from a `Typed` to its type.
macro_rules! typed_kinds {
    ($(($kind:literal, $variant:ident, $ty:ty)),* $(,)?) => {
        /// An entity's typed form, by kind. (An upstream, with its health checks, is the
        /// largest; boxing it would buy little for entities that live as long as the config.)
        #[derive(Clone)]
        #[allow(clippy::large_enum_variant)]
        enum Typed {
            $($variant($ty),)*
            /// A configured plugin instance.
            Plugin(PluginEntity),
            /// A plugin's own entity (its schema is the plugin's: the JSON is its form).
            Dao,
        }

        impl Entity {
            /// Parses `json` as an entity of `kind`.
            fn new(kind: &str, json: Value) -> Entity {
                let typed = match kind {
                    $($kind => <$ty>::deserialize(&json)
                        .map(Typed::$variant)
                        .map_err(|e| format!("{kind}: {e}")),)*
                    "plugins" => Ok(Typed::Plugin(plugin_entity(&json))),
                    _ => Ok(Typed::Dao),
                };
                Entity { json, typed }
            }
        }

        $(impl TypedKind for $ty {
            fn of(typed: &Typed) -> Option<&Self> {
                match typed {
                    Typed::$variant(v) => Some(v),
                    _ => None,
                }
            }
        })*
    };
}

/// A type that is one of [`Typed`]'s forms.
trait TypedKind: Clone {
    /// `typed` as this type, when it is one.
    fn of(typed: &Typed) -> Option<&Self>;
}

impl TypedKind for PluginEntity {
    fn of(typed: &Typed) -> Option<&Self> {
        match typed {
            Typed::Plugin(v) => Some(v),
            _ => None,
        }
    }
}

typed_kinds! {
    ("services", Service, Service),
    ("routes", Route, Route),
    ("consumers", Consumer, Consumer),
    ("certificates", Certificate, Certificate),
    ("ca_certificates", CaCertificate, CaCertificate),
    ("snis", Sni, Sni),
    ("upstreams", Upstream, Upstream),
    ("targets", Target, Target),
}

impl PartialEq for Entity {
    fn eq(&self, other: &Entity) -> bool {
        self.json == other.json
    }
}

impl Eq for Entity {}

impl std::ops::Deref for Entity {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.json
    }
}

/// The typed form of a `plugins` entity's JSON.
fn plugin_entity(p: &Value) -> PluginEntity {
    let uuid_of = |v: &Value| v["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    PluginEntity {
        id: uuid_of(p).unwrap_or_default(),
        name: p["name"].as_str().unwrap_or_default().to_owned(),
        scope: Scope {
            route: uuid_of(&p["route"]),
            service: uuid_of(&p["service"]),
            consumer: uuid_of(&p["consumer"]),
        },
        config: p["config"].clone(),
        enabled: p["enabled"].as_bool().unwrap_or(true),
        ordering: crate::executor::Ordering::from_json(&p["ordering"]),
        protocols: strings(&p["protocols"]),
        instance_name: p["instance_name"].as_str().map(str::to_owned),
        tags: strings(&p["tags"]),
    }
}

/// A JSON array's strings, `None` when it is not an array.
fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

/// Entities by kind, then by id. Entities and each kind's index are shared between copies: a
/// write copies the index of the kind it changes (pointers only) and never an entity, and
/// readers keep the copy they loaded while a write builds the next one.
#[derive(Clone, Default)]
struct Entities(BTreeMap<&'static str, Arc<Kinds>>, Names);

/// For kinds whose endpoint key is unique (a consumer's `username`, a service's `name`):
/// the id of the entity with each value, so `/consumers/{username}` is a lookup, not a scan.
type Names = BTreeMap<&'static str, imbl::HashMap<String, String>>;

/// The field `kind` is indexed by in [`Names`], if any.
fn indexed_key(kind: &str) -> Option<&'static str> {
    let k = kinds::get(kind)?;
    k.endpoint_key.filter(|key| k.unique.contains(key))
}

impl std::ops::Index<&str> for Entities {
    type Output = Kinds;

    /// The entities of `kind` (none for a kind this node does not know).
    fn index(&self, kind: &str) -> &Kinds {
        static NONE: std::sync::LazyLock<Kinds> = std::sync::LazyLock::new(Kinds::new);
        self.0.get(kind).map_or(&*NONE, |k| &**k)
    }
}

impl Entities {
    /// Stores `value` as the `kind` entity `id`, parsing its typed form.
    fn put(&mut self, kind: &'static str, id: String, value: Value) {
        let entity = Arc::new(Entity::new(kind, value));
        if let Some(key) = indexed_key(kind) {
            let names = self.1.entry(kind).or_default();
            if let Some(old) = self.0.get(kind).and_then(|k| k.get(&id))
                && let Some(name) = old[key].as_str()
            {
                names.remove(name);
            }
            if let Some(name) = entity[key].as_str() {
                names.insert(name.to_owned(), id.clone());
            }
        }
        Arc::make_mut(self.0.entry(kind).or_default()).insert(id, entity);
    }

    /// Removes the `kind` entity `id`.
    fn remove(&mut self, kind: &str, id: &str) {
        if let Some(k) = self.0.get_mut(kind)
            && let Some(old) = Arc::make_mut(k).remove(id)
            && let Some(key) = indexed_key(kind)
            && let Some(name) = old[key].as_str()
            && let Some(names) = self.1.get_mut(kind)
        {
            names.remove(name);
        }
    }

    /// The `kind` entity whose endpoint key is `name`, when the key is indexed (`None` for
    /// kinds whose key is not unique: search those).
    fn by_name(&self, kind: &str, name: &str) -> Option<Option<&Arc<Entity>>> {
        indexed_key(kind)?;
        Some(
            self.1
                .get(kind)
                .and_then(|n| n.get(name))
                .and_then(|id| self[kind].get(id)),
        )
    }

    /// Every kind with its entities.
    fn iter(&self) -> impl Iterator<Item = (&&'static str, &Kinds)> {
        self.0.iter().map(|(k, v)| (k, &**v))
    }
}

/// The Admin API: the store (none when DB-less), the entities it holds, and the proxy it
/// configures.
pub struct Admin {
    store: Option<Store>,
    plugins: Arc<Plugins>,
    proxy: Arc<Proxy>,
    /// What reads see: replaced whole by each write, so a read never waits for one.
    entities: ArcSwap<Entities>,
    /// Taken by every write, for the whole of it: writes apply one at a time.
    writes: Mutex<()>,
    /// How long a client may take to send a request head, or stay idle between requests, in
    /// milliseconds (nginx's `client_header_timeout`).
    header_timeout_ms: std::sync::atomic::AtomicU64,
    /// `admin_gui_origin`: the origins CORS allows (empty: any).
    gui_origins: std::sync::OnceLock<Vec<HeaderValue>>,
    node_id: Uuid,
    /// `POST /status/ready` with `status=draining` was received: readiness answers 503.
    draining: std::sync::atomic::AtomicBool,
    /// Tests only: the next cluster reload, once it has loaded the store, signals the first
    /// and waits for the second.
    #[cfg(test)]
    reload_pause: std::sync::Mutex<Option<(tokio::sync::oneshot::Sender<()>, tokio::sync::oneshot::Receiver<()>)>>,
}

fn key_text(field: &str, value: &Value) -> String {
    match value {
        Value::String(s) => format!("{{{field}=\"{s}\"}}"),
        other => format!("{{{field}={other}}}"),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Admin {
    /// Migrates the store, loads its entities and gives the proxy their configuration.
    pub async fn new(store: Store, plugins: Arc<Plugins>, proxy: Arc<Proxy>) -> Result<Arc<Admin>, String> {
        store.migrate().await.map_err(|e| e.to_string())?;
        plugins.node().counters.set(counters::DbCounters::start(store.clone()));
        plugins.node().stats.set_datastore_reachable(true);
        let cluster_id = store.cluster_id().await.map_err(|e| e.to_string())?;
        let _ = plugins.node().cluster_id.set(cluster_id);
        let entities = load_entities(&store).await?;
        let admin = Admin::start(Some(store.clone()), entities, plugins, proxy).await?;
        admin.broadcast_invalidations(store);
        Ok(admin)
    }

    /// Makes `kong.cache().invalidate(key)` reach the other nodes: keys go, through a bounded
    /// queue, to a task that posts them as `invalidations` cluster events.
    fn broadcast_invalidations(&self, store: Store) {
        const QUEUED: usize = 10_000;
        let (sender, mut keys) = tokio::sync::mpsc::channel::<String>(QUEUED);
        let registered = self.plugins.node().cache.set_broadcast(move |key| {
            if sender.try_send(key.to_owned()).is_err() {
                tracing::warn!(target: "kong", "cluster invalidation of {key} dropped: {QUEUED} are waiting");
            }
        });
        if !registered {
            return;
        }
        let node_id = self.node_id.to_string();
        tokio::spawn(async move {
            while let Some(key) = keys.recv().await {
                if let Err(e) = store.post_event(&node_id, "invalidations", &key).await {
                    tracing::error!(target: "kong", "could not broadcast the invalidation of {key}: {e}");
                }
            }
        });
    }

    /// A DB-less Admin API (`database = off`): entities come from `config` and from
    /// `POST /config`; entity writes answer 405 (code 12) as Kong's do.
    pub async fn dbless(config: &Config, plugins: Arc<Plugins>, proxy: Arc<Proxy>) -> Result<Arc<Admin>, String> {
        Admin::start(None, entities_of(config), plugins, proxy).await
    }

    async fn start(
        store: Option<Store>,
        entities: Entities,
        plugins: Arc<Plugins>,
        proxy: Arc<Proxy>,
    ) -> Result<Arc<Admin>, String> {
        let admin = Admin {
            store,
            plugins,
            proxy,
            entities: ArcSwap::from_pointee(entities),
            writes: Mutex::new(()),
            gui_origins: std::sync::OnceLock::new(),
            header_timeout_ms: std::sync::atomic::AtomicU64::new(60_000),
            node_id: Uuid::new_v4(),
            draining: Default::default(),
            #[cfg(test)]
            reload_pause: Default::default(),
        };
        let snapshot = admin
            .build(&admin.entities.load())
            .await
            .map_err(|e| format!("{:?}", e.1))?;
        admin.proxy.swap(snapshot);
        Ok(Arc::new(admin))
    }

    /// Follows writes made by other nodes on the same database: every `interval` (Kong's
    /// `db_update_frequency`) it checks the cluster events and, when they changed, reloads the
    /// entities and swaps the proxy's snapshot. Runs forever: spawn it.
    pub async fn follow_cluster(self: Arc<Self>, interval: std::time::Duration) {
        let Some(store) = self.store.clone() else { return };
        let mut seen = store.version().await.ok();
        let mut last_event = store.last_event().await.unwrap_or(0);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let version = store.version().await;
            self.plugins.node().stats.set_datastore_reachable(version.is_ok());
            let Ok(now) = version else { continue };
            if seen != Some(now) {
                match self.reload(&store).await {
                    Ok(()) => seen = Some(now),
                    Err(e) => tracing::error!(target: "kong", "could not apply the cluster's configuration: {e}"),
                }
            }
            // After the configuration: an invalidated key is loaded again from the newest.
            self.follow_events(&store, &mut last_event).await;
        }
    }

    async fn reload(&self, store: &Store) -> Result<(), String> {
        // Loaded under the write lock: a write of this node that lands meanwhile is either in
        // what is loaded or applied after it, never overwritten by an older copy.
        let _write = self.writes.lock().await;
        let loaded = load_entities(store).await?;
        #[cfg(test)]
        let pause = self.reload_pause.lock().ok().and_then(|mut p| p.take());
        #[cfg(test)]
        if let Some((loaded, resume)) = pause {
            let _ = loaded.send(());
            let _ = resume.await;
        }
        let snapshot = self.build(&loaded).await.map_err(|e| e.1.to_string())?;
        self.go_live(loaded, snapshot);
        Ok(())
    }

    /// Makes `entities` what reads see and `snapshot` what the proxy serves, then forgets the
    /// cache keys of the entities that changed (Kong's `crud` event handler): a request that
    /// loads one afterwards reads the new configuration.
    fn go_live(&self, entities: Entities, snapshot: crate::gateway::Snapshot) {
        let keys = changed_cache_keys(&self.entities.load(), &entities);
        let cache = &self.plugins.node().cache;
        // Requests still on the old configuration may load from it: not kept from now on.
        cache.set_live_epoch(snapshot.data.epoch());
        self.entities.store(Arc::new(entities));
        self.proxy.swap(snapshot);
        for key in keys {
            cache.invalidate_local(&key);
        }
    }

    /// Reads the cluster events other nodes posted since `last`: `invalidations` forget their
    /// key here too. A node further behind than the events kept forgets everything.
    async fn follow_events(&self, store: &Store, last: &mut i64) {
        const BATCH: i64 = 1000;
        let cache = &self.plugins.node().cache;
        let me = self.node_id.to_string();
        loop {
            let events = match store.events_since(*last, BATCH).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(target: "kong", "could not read cluster events: {e}");
                    return;
                }
            };
            if events.first().is_some_and(|e| e.id > *last + 1) {
                cache.purge();
            }
            for event in &events {
                *last = event.id;
                if event.node_id != me && event.channel == "invalidations" {
                    cache.invalidate_local(&event.data);
                }
            }
            if (events.len() as i64) < BATCH {
                return;
            }
        }
    }
}

/// The cache keys (Kong's `dao:cache_key(entity)`) of the entities that differ between `old`
/// and `new`, before and after. Kinds and entities a write left alone are shared between the
/// two and skipped by pointer.
fn changed_cache_keys(old: &Entities, new: &Entities) -> Vec<String> {
    let mut keys = Vec::new();
    let kinds: std::collections::BTreeSet<&str> = old.0.keys().chain(new.0.keys()).copied().collect();
    for kind in kinds {
        if let (Some(a), Some(b)) = (old.0.get(kind), new.0.get(kind))
            && Arc::ptr_eq(a, b)
        {
            continue;
        }
        // The maps share what a write left alone: the walk skips it.
        for change in old[kind].diff(&new[kind]) {
            match change {
                imbl::ordmap::DiffItem::Add(_, now) => keys.extend(entity_cache_keys(kind, now)),
                imbl::ordmap::DiffItem::Update {
                    old: (_, was),
                    new: (_, now),
                } => {
                    keys.extend(entity_cache_keys(kind, was));
                    keys.extend(entity_cache_keys(kind, now));
                }
                imbl::ordmap::DiffItem::Remove(_, was) => keys.extend(entity_cache_keys(kind, was)),
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// An entity's cache keys: by its schema's `cache_key` field, else its id; a consumer's also
/// by username (Kong invalidates both).
fn entity_cache_keys(kind: &str, entity: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let id = text(&entity["id"]);
    let mut keys = match crate::dao::find(kind).and_then(|m| m.cache_key) {
        Some(field) if !entity[field].is_null() => vec![crate::cache::cache_key(kind, &[&text(&entity[field])])],
        _ => vec![crate::cache::cache_key(kind, &[&id])],
    };
    if kind == "consumers"
        && let Some(username) = entity["username"].as_str()
    {
        keys.push(crate::cache::cache_key("consumers", &[username]));
    }
    // A plugin entity of a consumer: also the consumer's list of them (acl's groups).
    if crate::dao::find(kind).is_some() && !entity["consumer"].is_null() {
        keys.push(crate::cache::cache_key(kind, &[&text(&entity["consumer"])]));
    }
    keys
}
