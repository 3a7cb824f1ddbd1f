//! Entities a plugin adds to the data model (Kong's `daos.lua`): credentials and the like,
//! each belonging to a consumer, with Admin API paths of their own, a place in declarative
//! configurations, and lookups from the plugin at request time.
//!
//! A plugin declares one with a [`#[record]`](crate::record) struct for its own fields and
//! `#[derive(Dao)]` with `#[dao(...)]` for its names and keys: every field the attribute names
//! is checked against the struct at compile time. (By hand, an `impl Dao` and
//! [`dao!`](macro@crate::dao) do the same without the checks.) The gateway
//! adds `id`, `created_at`, the required `consumer` (deleted with it) and `tags`, and serves it
//! at `/<ADMIN_API_NAME>` and `/consumers/{consumer}/<ADMIN_API_NESTED_NAME>`, with Kong's
//! validation, unique checks and errors.
//!
//! ```
//! use kong_pdk::dao::Dao;
//! use kong_pdk::prelude::*;
//!
//! /// A key-auth credential (Kong's `keyauth_credentials`).
//! #[record]
//! #[derive(Dao)]
//! #[dao(
//!     name = "my_key_credentials",
//!     plugin = "my-key-auth",
//!     admin_api_name = "my-key-auths",
//!     admin_api_nested_name = "my-key-auth",
//!     endpoint_key = "key",
//!     cache_key = "key",
//!     unique = ["key"],
//!     auto = ["key"],
//! )]
//! pub struct KeyCredential {
//!     /// The key; generated when not given.
//!     pub key: String,
//! }
//!
//! // In a phase: the credential whose key the client sent, and its consumer.
//! fn lookup<P: kong_pdk::phase::RequestPhase>(kong: &Kong<P>, key: &str) -> Option<String> {
//!     let row = kong.db().select_by_cache_key::<KeyCredential>(key)?;
//!     let consumer = kong.db().consumer(row.consumer)?;
//!     consumer.username.clone()
//! }
//! ```

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::cache::Cache;
use crate::entities::{Consumer, Credential, ForeignKey};
use crate::schema::{ConfigRecord, Field, FieldKind, FieldSchema, RecordSchema, typedefs};

pub use kong_pdk_macros::Dao;

/// An entity a plugin adds, belonging to a consumer. Derive it (`#[derive(Dao)]`, see the
/// [module](self)), or implement it and register it with [`dao!`](macro@crate::dao).
pub trait Dao: ConfigRecord + DeserializeOwned + Send + Sync + 'static {
    /// The entity's name, its table and its key in declarative configurations
    /// (`keyauth_credentials`).
    const NAME: &'static str;
    /// The plugin it belongs to: the Admin API serves it while that plugin is enabled.
    const PLUGIN: &'static str;
    /// Its Admin API collection: `/<ADMIN_API_NAME>` (`key-auths`).
    const ADMIN_API_NAME: &'static str;
    /// Its collection under a consumer: `/consumers/{c}/<ADMIN_API_NESTED_NAME>` (`key-auth`).
    const ADMIN_API_NESTED_NAME: &'static str;
    /// The field that may stand for the id in Admin API paths (`key`).
    const ENDPOINT_KEY: Option<&'static str> = None;
    /// The field the plugin finds entities by at request time, with
    /// [`DataStore::select_by_cache_key`] (`key`).
    const CACHE_KEY: Option<&'static str> = None;
    /// Fields whose values are unique among the entities of this kind.
    const UNIQUE: &'static [&'static str] = &[];
    /// String fields given a random value when a write leaves them out.
    const AUTO: &'static [&'static str] = &[];
    /// Fields whose values are unique together among the entities of this kind (Kong's
    /// composite `cache_key`; `consumer` stands for its id): acl's `["consumer", "group"]`.
    const UNIQUE_TOGETHER: &'static [&'static str] = &[];
    /// Rewrites an entity as it is written (Kong's `transformations`), such as basic-auth
    /// hashing a password with its consumer's id.
    const TRANSFORM: Option<Transform> = None;
}

/// A [`Dao::TRANSFORM`]: gets the entity about to be stored (its `consumer` resolved to
/// `{"id": ...}`) and, on an update, the one stored; rewrites the first. An error refuses the
/// write as a schema violation of the whole entity (`@entity`).
pub type Transform = fn(&mut serde_json::Map<String, Value>, Option<&Value>) -> Result<(), String>;

/// Registers a [`Dao`] type, so every gateway linking the crate knows the entity.
///
/// ```
/// # use kong_pdk::prelude::*;
/// # #[record] pub struct Token { pub token: String }
/// # impl kong_pdk::dao::Dao for Token {
/// #     const NAME: &'static str = "tokens"; const PLUGIN: &'static str = "tok";
/// #     const ADMIN_API_NAME: &'static str = "tokens"; const ADMIN_API_NESTED_NAME: &'static str = "token";
/// # }
/// kong_pdk::dao!(Token);
/// assert!(kong_pdk::dao::find("tokens").is_some());
/// ```
#[macro_export]
macro_rules! dao {
    ($ty:ty) => {
        $crate::__private::inventory::submit! {
            $crate::dao::DaoRegistration::of::<$ty>()
        }
    };
}

/// A registered [`Dao`] type (what [`dao!`](macro@crate::dao) submits).
pub struct DaoRegistration {
    meta: fn() -> DaoMeta,
}

inventory::collect!(DaoRegistration);

impl DaoRegistration {
    /// The registration of `T`.
    pub const fn of<T: Dao>() -> DaoRegistration {
        DaoRegistration { meta: DaoMeta::of::<T> }
    }
}

/// Decodes a stored entity into its plugin's type.
type Decode = fn(&Value) -> Result<Arc<dyn Any + Send + Sync>, String>;

/// What the gateway knows of a plugin entity kind.
pub struct DaoMeta {
    /// [`Dao::NAME`].
    pub name: &'static str,
    /// [`Dao::PLUGIN`].
    pub plugin: &'static str,
    /// [`Dao::ADMIN_API_NAME`].
    pub admin_api_name: &'static str,
    /// [`Dao::ADMIN_API_NESTED_NAME`].
    pub admin_api_nested_name: &'static str,
    /// [`Dao::ENDPOINT_KEY`].
    pub endpoint_key: Option<&'static str>,
    /// [`Dao::CACHE_KEY`].
    pub cache_key: Option<&'static str>,
    /// [`Dao::UNIQUE`].
    pub unique: &'static [&'static str],
    /// [`Dao::AUTO`].
    pub auto: &'static [&'static str],
    /// [`Dao::UNIQUE_TOGETHER`].
    pub unique_together: &'static [&'static str],
    /// [`Dao::TRANSFORM`].
    pub transform: Option<Transform>,
    /// The whole entity's schema: `id`, `created_at`, `consumer`, the type's fields, `tags`.
    pub schema: RecordSchema,
    decode: Decode,
}

impl DaoMeta {
    fn of<T: Dao>() -> DaoMeta {
        let mut consumer = FieldSchema::of(FieldKind::Foreign { reference: "consumers" });
        consumer.required = true;
        let mut fields = vec![
            Field::new("id", typedefs::uuid::schema()),
            Field::new("created_at", FieldSchema::of(FieldKind::Integer)),
            Field::new("consumer", consumer),
        ];
        let own = T::record_schema();
        fields.extend(own.fields);
        fields.push(Field::new("tags", typedefs::tags::schema()));
        DaoMeta {
            name: T::NAME,
            plugin: T::PLUGIN,
            admin_api_name: T::ADMIN_API_NAME,
            admin_api_nested_name: T::ADMIN_API_NESTED_NAME,
            endpoint_key: T::ENDPOINT_KEY,
            cache_key: T::CACHE_KEY,
            unique: T::UNIQUE,
            auto: T::AUTO,
            unique_together: T::UNIQUE_TOGETHER,
            transform: T::TRANSFORM,
            schema: RecordSchema {
                fields,
                entity_checks: own.entity_checks,
            },
            decode: |v| {
                T::deserialize(v)
                    .map(|t| Arc::new(t) as Arc<dyn Any + Send + Sync>)
                    .map_err(|e| e.to_string())
            },
        }
    }
}

impl DaoMeta {
    /// Gives each [`Dao::AUTO`] field that `entity` lacks (or has as null) a random value.
    #[cfg(feature = "gateway")]
    pub(crate) fn fill_auto(&self, entity: &mut serde_json::Map<String, Value>) {
        for field in self.auto {
            if entity.get(*field).is_none_or(Value::is_null) {
                entity.insert((*field).into(), Value::from(random_key()));
            }
        }
    }
}

static REGISTERED: LazyLock<Vec<DaoMeta>> = LazyLock::new(|| {
    let mut all: Vec<DaoMeta> = inventory::iter::<DaoRegistration>
        .into_iter()
        .map(|r| (r.meta)())
        .collect();
    all.sort_by_key(|m| m.name);
    all.dedup_by_key(|m| m.name);
    all
});

/// Every plugin entity kind linked into this binary, by name.
pub fn registered() -> &'static [DaoMeta] {
    &REGISTERED
}

/// The plugin entity kind named `name`.
pub fn find(name: &str) -> Option<&'static DaoMeta> {
    REGISTERED.iter().find(|m| m.name == name)
}

/// A random value for an [`Dao::AUTO`] field: 32 characters of letters and digits.
pub fn random_key() -> String {
    Uuid::new_v4().simple().to_string()
}

/// One plugin entity as a plugin reads it: the gateway's fields and the plugin's own.
pub struct Row<T> {
    /// `id`.
    pub id: Uuid,
    /// The consumer it belongs to.
    pub consumer: Uuid,
    /// The plugin's fields.
    pub value: Arc<T>,
    stored: Arc<Stored>,
}

impl<T> Clone for Row<T> {
    fn clone(&self) -> Self {
        Row {
            id: self.id,
            consumer: self.consumer,
            value: self.value.clone(),
            stored: self.stored.clone(),
        }
    }
}

impl<T> Row<T> {
    /// The entity as a [`Credential`], for [`kong.client().authenticate`](crate::pdk::Client::authenticate).
    pub fn credential(&self) -> Credential {
        let mut fields = match &self.stored.raw {
            Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        fields.remove("id");
        fields.remove("consumer");
        Credential {
            id: self.id,
            consumer: Some(ForeignKey { id: self.consumer }),
            fields,
        }
    }

    /// The entity as stored (JSON).
    pub fn raw(&self) -> &Value {
        &self.stored.raw
    }
}

struct Stored {
    id: Uuid,
    consumer: Uuid,
    raw: Value,
    value: Arc<dyn Any + Send + Sync>,
}

#[derive(Default)]
struct Rows {
    by_id: HashMap<Uuid, Arc<Stored>>,
    by_cache_key: HashMap<String, Uuid>,
    /// Each consumer's entities, in the order they were loaded.
    by_consumer: HashMap<Uuid, Vec<Uuid>>,
}

/// The consumers and plugin entities of one configuration, indexed for request-time lookups
/// (Kong's `kong.db` reads through the entity cache). Part of the proxy's snapshot: a new
/// configuration brings a new one, and requests in flight keep theirs.
#[derive(Default)]
pub struct DataStore {
    /// Which configuration this is, in the order they were built: a value loaded from an
    /// older one is not cached once a newer one is live.
    epoch: u64,
    consumers: HashMap<Uuid, Arc<Consumer>>,
    usernames: HashMap<String, Uuid>,
    kinds: HashMap<&'static str, Rows>,
}

static EMPTY: LazyLock<Arc<DataStore>> = LazyLock::new(|| Arc::new(DataStore::default()));

impl DataStore {
    /// A store with nothing in it.
    pub fn empty() -> Arc<DataStore> {
        EMPTY.clone()
    }

    /// Which configuration this is ([`Cache::set_live_epoch`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Indexes `consumers` and the plugin entities in `daos` (by kind name, as stored, each
    /// with `id` and `consumer: {id}`). Kinds no registered [`Dao`] declares are skipped.
    ///
    /// # Errors
    /// When an entity does not decode into its plugin's type: `<kind> <id>: <why>`.
    pub fn new(consumers: &[Consumer], daos: &BTreeMap<String, Vec<Value>>) -> Result<DataStore, String> {
        static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut store = DataStore {
            epoch: EPOCHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..DataStore::default()
        };
        for c in consumers {
            if let Some(u) = &c.username {
                store.usernames.insert(u.clone(), c.id);
            }
            store.consumers.insert(c.id, Arc::new(c.clone()));
        }
        for (kind, items) in daos {
            let Some(meta) = find(kind) else { continue };
            let mut rows = Rows::default();
            for raw in items {
                let uuid = |v: &Value| v.as_str().and_then(|s| Uuid::parse_str(s).ok());
                let id = uuid(&raw["id"]).ok_or_else(|| format!("{kind}: an entity without a valid id"))?;
                let consumer = uuid(&raw["consumer"]["id"])
                    .ok_or_else(|| format!("{kind} {id}: consumer: required field missing"))?;
                let value = (meta.decode)(raw).map_err(|e| format!("{kind} {id}: {e}"))?;
                if let Some(key) = meta.cache_key.and_then(|k| raw[k].as_str()) {
                    rows.by_cache_key.insert(key.to_owned(), id);
                }
                rows.by_consumer.entry(consumer).or_default().push(id);
                rows.by_id.insert(
                    id,
                    Arc::new(Stored {
                        id,
                        consumer,
                        raw: raw.clone(),
                        value,
                    }),
                );
            }
            store.kinds.insert(meta.name, rows);
        }
        Ok(store)
    }

    /// The consumer with `id`.
    pub fn consumer(&self, id: Uuid) -> Option<Arc<Consumer>> {
        self.consumers.get(&id).cloned()
    }

    /// The consumer with `username`.
    pub fn consumer_by_username(&self, username: &str) -> Option<Arc<Consumer>> {
        self.usernames.get(username).and_then(|id| self.consumer(*id))
    }

    /// The `T` with `id`.
    pub fn select<T: Dao>(&self, id: Uuid) -> Option<Row<T>> {
        let stored = self.kinds.get(T::NAME)?.by_id.get(&id)?.clone();
        row(stored)
    }

    /// The `T` whose [`Dao::CACHE_KEY`] field is `key`.
    pub fn select_by_cache_key<T: Dao>(&self, key: &str) -> Option<Row<T>> {
        let rows = self.kinds.get(T::NAME)?;
        let id = rows.by_cache_key.get(key)?;
        row(rows.by_id.get(id)?.clone())
    }

    /// [`DataStore::select_by_cache_key`] through the node's cache (Kong's
    /// `kong.cache:get(dao:cache_key(key), nil, load)`): the key `T::NAME:key:::::`, a miss
    /// cached as well. The Admin API forgets the key when such an entity changes.
    pub fn cached_by_cache_key<T: Dao>(&self, cache: &Cache, key: &str) -> Option<Row<T>> {
        let cache_key = crate::cache::cache_key(T::NAME, &[key]);
        let (row, _) = cache
            .get_from(&cache_key, self.epoch, || Ok(self.select_by_cache_key::<T>(key)))
            .ok()?;
        row.map(|r| (*r).clone())
    }

    /// [`DataStore::consumer`] through the node's cache (the key `consumers:<id>:::::`).
    pub fn cached_consumer(&self, cache: &Cache, id: Uuid) -> Option<Arc<Consumer>> {
        let cache_key = crate::cache::cache_key("consumers", &[&id.to_string()]);
        let (consumer, _) = cache.get_from(&cache_key, self.epoch, || Ok(self.consumer(id))).ok()?;
        consumer.map(|c| (*c).clone())
    }

    /// [`DataStore::select_by_consumer`] through the node's cache (the key
    /// `T::NAME:<consumer id>:::::`, as acl's groups are cached), forgotten when any `T` of
    /// the consumer changes.
    pub fn cached_by_consumer<T: Dao>(&self, cache: &Cache, consumer: Uuid) -> Arc<Vec<Row<T>>> {
        let cache_key = crate::cache::cache_key(T::NAME, &[&consumer.to_string()]);
        cache
            .get_from(&cache_key, self.epoch, || {
                Ok(Some(self.select_by_consumer::<T>(consumer)))
            })
            .ok()
            .and_then(|(rows, _)| rows)
            .unwrap_or_default()
    }

    /// Every `T` of the consumer with id `consumer` (acl's groups).
    pub fn select_by_consumer<T: Dao>(&self, consumer: Uuid) -> Vec<Row<T>> {
        let Some(rows) = self.kinds.get(T::NAME) else {
            return Vec::new();
        };
        let ids = rows.by_consumer.get(&consumer).map_or(&[][..], Vec::as_slice);
        ids.iter()
            .filter_map(|id| rows.by_id.get(id))
            .filter_map(|stored| row(stored.clone()))
            .collect()
    }

    /// How many `T` there are.
    pub fn count<T: Dao>(&self) -> usize {
        self.kinds.get(T::NAME).map_or(0, |r| r.by_id.len())
    }
}

fn row<T: Dao>(stored: Arc<Stored>) -> Option<Row<T>> {
    let value = stored.value.clone().downcast::<T>().ok()?;
    Some(Row {
        id: stored.id,
        consumer: stored.consumer,
        value,
        stored,
    })
}
