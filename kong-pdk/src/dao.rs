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
    /// The entity as a [`Credential`], for
    /// [`kong.client().set_consumer`](crate::pdk::Client::set_consumer). Built on the first
    /// call and shared after it: an auth plugin asks for it on every request.
    pub fn credential(&self) -> Arc<Credential> {
        self.stored
            .credential
            .get_or_init(|| {
                let mut fields = match &self.stored.raw {
                    Value::Object(m) => m.clone(),
                    _ => serde_json::Map::new(),
                };
                fields.remove("id");
                fields.remove("consumer");
                Arc::new(Credential {
                    id: self.id,
                    consumer: Some(ForeignKey { id: self.consumer }),
                    fields,
                })
            })
            .clone()
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
    /// [`Row::credential`], once asked for.
    credential: std::sync::OnceLock<Arc<Credential>>,
}

/// One kind's entities, in persistent maps: a copy is a pointer, a change copies a path.
#[derive(Default, Clone)]
struct Rows {
    by_id: imbl::HashMap<Uuid, Arc<Stored>>,
    by_cache_key: imbl::HashMap<String, Uuid>,
    /// Each consumer's entities, in the order they were loaded (an entity added later goes
    /// in id order, which is how a store loads them).
    by_consumer: imbl::HashMap<Uuid, Vec<Uuid>>,
}

impl Rows {
    /// Adds (or replaces) the entity `raw` of the kind `meta`.
    fn put(&mut self, meta: &DaoMeta, raw: &Value) -> Result<(), String> {
        let kind = meta.name;
        let uuid = |v: &Value| v.as_str().and_then(|s| Uuid::parse_str(s).ok());
        let id = uuid(&raw["id"]).ok_or_else(|| format!("{kind}: an entity without a valid id"))?;
        let consumer =
            uuid(&raw["consumer"]["id"]).ok_or_else(|| format!("{kind} {id}: consumer: required field missing"))?;
        let value = (meta.decode)(raw).map_err(|e| format!("{kind} {id}: {e}"))?;
        if self.by_id.contains_key(&id) {
            self.remove(meta, id);
        }
        if let Some(key) = meta.cache_key.and_then(|k| raw[k].as_str()) {
            self.by_cache_key.insert(key.to_owned(), id);
        }
        self.by_consumer.entry(consumer).or_default().push(id);
        self.by_id.insert(
            id,
            Arc::new(Stored {
                id,
                consumer,
                raw: raw.clone(),
                credential: Default::default(),
                value,
            }),
        );
        Ok(())
    }

    /// Adds `raw` among entities loaded in id order, keeping each consumer's list in order.
    fn put_in_order(&mut self, meta: &DaoMeta, raw: &Value) -> Result<(), String> {
        self.put(meta, raw)?;
        if let Some(consumer) = raw["consumer"]["id"].as_str().and_then(|s| Uuid::parse_str(s).ok())
            && let Some(ids) = self.by_consumer.get_mut(&consumer)
        {
            ids.sort_unstable();
        }
        Ok(())
    }

    /// Removes the entity `id`.
    fn remove(&mut self, meta: &DaoMeta, id: Uuid) {
        let Some(old) = self.by_id.remove(&id) else { return };
        if let Some(key) = meta.cache_key.and_then(|k| old.raw[k].as_str())
            && self.by_cache_key.get(key) == Some(&id)
        {
            self.by_cache_key.remove(key);
        }
        if let Some(ids) = self.by_consumer.get_mut(&old.consumer) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_consumer.remove(&old.consumer);
            }
        }
    }
}

/// A change [`DataStore::changed`] applies.
#[derive(Debug, Clone, Copy)]
pub enum DataChange<'a> {
    /// A consumer added or replaced.
    PutConsumer(&'a Consumer),
    /// The consumer with this id removed.
    RemoveConsumer(Uuid),
    /// A plugin entity (of the kind named, as stored) added or replaced.
    Put(&'a str, &'a Value),
    /// The plugin entity of the kind named with this id removed.
    Remove(&'a str, Uuid),
}

/// The consumers and plugin entities of one configuration, indexed for request-time lookups
/// (Kong's `kong.db` reads through the entity cache). Part of the proxy's snapshot: a new
/// configuration brings a new one, and requests in flight keep theirs.
#[derive(Default)]
pub struct DataStore {
    /// Which configuration this is, in the order they were built: a value loaded from an
    /// older one is not cached once a newer one is live.
    epoch: u64,
    consumers: imbl::HashMap<Uuid, Arc<Consumer>>,
    usernames: imbl::HashMap<String, Uuid>,
    kinds: HashMap<&'static str, Rows>,
}

/// The next configuration's epoch.
fn next_epoch() -> u64 {
    static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    EPOCHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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
        let mut store = DataStore {
            epoch: next_epoch(),
            ..DataStore::default()
        };
        for c in consumers {
            store.put_consumer(c);
        }
        for (kind, items) in daos {
            let Some(meta) = find(kind) else { continue };
            let mut rows = Rows::default();
            for raw in items {
                rows.put(meta, raw)?;
            }
            store.kinds.insert(meta.name, rows);
        }
        Ok(store)
    }

    /// A new configuration: this one with `changes` applied, sharing all it leaves alone
    /// (each change costs a path in the persistent maps, not a copy of the store).
    ///
    /// # Errors
    /// As [`DataStore::new`].
    pub fn changed(&self, changes: &[DataChange<'_>]) -> Result<DataStore, String> {
        let mut store = DataStore {
            epoch: next_epoch(),
            consumers: self.consumers.clone(),
            usernames: self.usernames.clone(),
            kinds: self.kinds.clone(),
        };
        for change in changes {
            match *change {
                DataChange::PutConsumer(c) => {
                    store.remove_consumer(c.id);
                    store.put_consumer(c);
                }
                DataChange::RemoveConsumer(id) => store.remove_consumer(id),
                DataChange::Put(kind, raw) => {
                    if let Some(meta) = find(kind) {
                        store.kinds.entry(meta.name).or_default().put_in_order(meta, raw)?;
                    }
                }
                DataChange::Remove(kind, id) => {
                    if let Some(meta) = find(kind)
                        && let Some(rows) = store.kinds.get_mut(meta.name)
                    {
                        rows.remove(meta, id);
                    }
                }
            }
        }
        Ok(store)
    }

    fn put_consumer(&mut self, c: &Consumer) {
        if let Some(u) = &c.username {
            self.usernames.insert(u.clone(), c.id);
        }
        self.consumers.insert(c.id, Arc::new(c.clone()));
    }

    fn remove_consumer(&mut self, id: Uuid) {
        if let Some(old) = self.consumers.remove(&id)
            && let Some(u) = &old.username
            && self.usernames.get(u) == Some(&id)
        {
            self.usernames.remove(u);
        }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::prelude::*;

    /// A credential kind for these tests only.
    #[record]
    #[derive(Dao)]
    #[dao(
        name = "dao_test_keys",
        plugin = "dao-test",
        admin_api_name = "dao-test-keys",
        admin_api_nested_name = "dao-test-key",
        endpoint_key = "key",
        cache_key = "key",
        unique = ["key"],
    )]
    struct TestKey {
        key: String,
    }

    fn consumer(id: Uuid, username: &str) -> Consumer {
        serde_json::from_value(json!({ "id": id, "username": username })).unwrap()
    }

    fn key(id: Uuid, consumer: Uuid, key: &str) -> Value {
        json!({ "id": id, "consumer": { "id": consumer }, "key": key })
    }

    #[test]
    fn a_changed_store_applies_each_change_and_leaves_the_old_one_as_it_was() {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let (k1, k2) = (Uuid::new_v4(), Uuid::new_v4());
        let daos = BTreeMap::from([("dao_test_keys".to_owned(), vec![key(k1, alice, "one")])]);
        let old = DataStore::new(&[consumer(alice, "alice")], &daos).unwrap();

        let renamed = consumer(alice, "alicia");
        let (bobs, twos) = (consumer(bob, "bob"), key(k2, bob, "two"));
        let new = old
            .changed(&[
                DataChange::PutConsumer(&renamed),
                DataChange::PutConsumer(&bobs),
                DataChange::Put("dao_test_keys", &twos),
                DataChange::Remove("dao_test_keys", k1),
            ])
            .unwrap();
        assert!(new.epoch() > old.epoch());
        // The new one: the rename moved the username, the keys moved.
        assert!(new.consumer_by_username("alice").is_none());
        assert_eq!(new.consumer_by_username("alicia").unwrap().id, alice);
        assert_eq!(new.consumer_by_username("bob").unwrap().id, bob);
        assert!(new.select_by_cache_key::<TestKey>("one").is_none());
        assert_eq!(new.select_by_cache_key::<TestKey>("two").unwrap().consumer, bob);
        assert!(new.select_by_consumer::<TestKey>(alice).is_empty());
        assert_eq!(new.count::<TestKey>(), 1);
        // The old one is untouched.
        assert_eq!(old.consumer_by_username("alice").unwrap().id, alice);
        assert!(old.consumer(bob).is_none());
        assert_eq!(old.select_by_cache_key::<TestKey>("one").unwrap().id, k1);
        assert_eq!(old.count::<TestKey>(), 1);

        // Replacing an entity drops its old cache key; removing a consumer its username.
        let replaced = key(k2, bob, "deux");
        let newer = new
            .changed(&[
                DataChange::Put("dao_test_keys", &replaced),
                DataChange::RemoveConsumer(alice),
            ])
            .unwrap();
        assert!(newer.select_by_cache_key::<TestKey>("two").is_none());
        let row = newer.select_by_cache_key::<TestKey>("deux").unwrap();
        assert_eq!((row.id, row.value.key.as_str()), (k2, "deux"));
        assert_eq!(newer.select_by_consumer::<TestKey>(bob).len(), 1);
        assert!(newer.consumer_by_username("alicia").is_none());
        assert!(newer.consumer(alice).is_none());
        // A bad entity is refused as a full load refuses it.
        let bad = json!({ "id": Uuid::new_v4(), "key": "x" });
        let Err(err) = newer.changed(&[DataChange::Put("dao_test_keys", &bad)]) else {
            panic!("an entity without a consumer was taken");
        };
        assert!(err.ends_with("consumer: required field missing"), "{err}");
    }
}
