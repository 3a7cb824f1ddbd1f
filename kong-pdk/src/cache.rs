//! `kong.cache` (Kong's `kong/cache/init.lua` over mlcache): values a plugin loads once and
//! reuses, by key, with a time to live for what was found (`ttl`) and for what was not
//! (`neg_ttl`), shared by every worker thread of the node.
//!
//! The gateway invalidates the cache key of an entity when the entity changes
//! ([`cache_key`] builds Kong's keys), on every node: a node applying a configuration
//! invalidates the keys of the entities that changed in it. [`Cache::invalidate`] also reaches
//! the other nodes on the same database (Kong's `invalidations` cluster events).
//!
//! ```
//! use kong_pdk::cache::{Cache, CacheOptions, HitLevel};
//!
//! let cache = Cache::default();
//! let key = kong_pdk::cache::cache_key("tokens", &["alice"]);
//! let (value, level) = cache.get_with(&key, CacheOptions::default(), || Ok(Some(42u32))).unwrap();
//! assert_eq!((value.as_deref(), level), (Some(&42), HitLevel::Loaded));
//! // Cached: the loader does not run again.
//! let (value, level) = cache.get_with(&key, CacheOptions::default(), || -> Result<Option<u32>, String> {
//!     unreachable!()
//! }).unwrap();
//! assert_eq!((value.as_deref(), level), (Some(&42), HitLevel::Memory));
//! cache.invalidate_local(&key);
//! assert!(cache.probe::<u32>(&key).is_none());
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Kong's cache key of an entity (`dao:cache_key(...)`): the schema name and up to five
/// parts, colon-separated, then the workspace (none here): `keyauth_credentials:abc:::::`.
///
/// ```
/// assert_eq!(kong_pdk::cache::cache_key("consumers", &["8a5c..."]), "consumers:8a5c...:::::");
/// ```
pub fn cache_key(name: &str, parts: &[&str]) -> String {
    let mut key = String::with_capacity(name.len() + 8 + parts.iter().map(|p| p.len()).sum::<usize>());
    key.push_str(name);
    for i in 0..5 {
        key.push(':');
        key.push_str(parts.get(i).copied().unwrap_or(""));
    }
    key.push(':');
    key
}

/// Where a value came from (Kong's `hit_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitLevel {
    /// The node's memory (Kong's levels 1 and 2: worker and shared memory are one here).
    Memory = 1,
    /// The loader ran (Kong's level 3, the callback).
    Loaded = 3,
}

/// Per-call options of [`Cache::get`] (Kong's `opts`): `None` takes the node's
/// `db_cache_ttl` / `db_cache_neg_ttl`; `Some(Duration::ZERO)` keeps the value until it is
/// invalidated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheOptions {
    /// How long a found value is kept.
    pub ttl: Option<Duration>,
    /// How long a miss (the loader found nothing) is kept.
    pub neg_ttl: Option<Duration>,
}

type Shared = Arc<dyn Any + Send + Sync>;

struct Entry {
    /// `None`: the loader found nothing (a negative entry).
    value: Option<Shared>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// A broadcast of invalidated keys to the other nodes (the Admin API's cluster events).
type Broadcast = Box<dyn Fn(&str) + Send + Sync>;

/// The node's cache (`kong.cache`).
pub struct Cache {
    entries: Mutex<HashMap<String, Entry>>,
    capacity: usize,
    ttl: Duration,
    neg_ttl: Duration,
    /// Bumped by every invalidation: a value loaded while one happened is returned, not kept
    /// (it may come from what was just invalidated).
    generation: AtomicU64,
    /// The epoch of the configuration live now ([`Cache::set_live_epoch`]).
    live_epoch: AtomicU64,
    broadcast: OnceLock<Broadcast>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("neg_ttl", &self.neg_ttl)
            .finish_non_exhaustive()
    }
}

impl Default for Cache {
    /// Kong's defaults: values kept until invalidated (`db_cache_ttl = 0`), 128 MiB
    /// (`mem_cache_size`) counted as entries of 1 KiB.
    fn default() -> Self {
        Cache::new(Duration::ZERO, Duration::ZERO, DEFAULT_CAPACITY)
    }
}

/// [`Cache::default`]'s bound: `mem_cache_size = 128m` at 1 KiB an entry.
pub const DEFAULT_CAPACITY: usize = 128 * 1024;

impl Cache {
    /// A cache keeping found values for `ttl` and misses for `neg_ttl` (zero: until
    /// invalidated), holding at most `capacity` entries.
    pub fn new(ttl: Duration, neg_ttl: Duration, capacity: usize) -> Cache {
        Cache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl,
            neg_ttl,
            generation: AtomicU64::new(0),
            live_epoch: AtomicU64::new(0),
            broadcast: OnceLock::new(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live entry of `key` as `T`: `Some(None)` for a cached miss; `None` when absent,
    /// expired or of another type.
    fn lookup<T: Send + Sync + 'static>(&self, key: &str) -> Option<Option<Arc<T>>> {
        let entries = self.entries();
        let entry = entries.get(key).filter(|e| e.live(Instant::now()))?;
        match &entry.value {
            None => Some(None),
            Some(v) => v.clone().downcast::<T>().ok().map(Some),
        }
    }

    fn store<T: Send + Sync + 'static>(&self, key: &str, value: Option<Arc<T>>, opts: CacheOptions, since: u64) {
        let ttl = match value {
            Some(_) => opts.ttl.unwrap_or(self.ttl),
            None => opts.neg_ttl.unwrap_or(self.neg_ttl),
        };
        let now = Instant::now();
        let expires = (!ttl.is_zero()).then(|| now + ttl);
        let mut entries = self.entries();
        if self.generation.load(Relaxed) != since {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            entries.retain(|_, e| e.live(now));
            // Down to seven eighths (the map's order is arbitrary), so that the next inserts
            // do not scan the whole map again.
            let keep = self.capacity - self.capacity / 8 - 1;
            if entries.len() > keep {
                let drop: Vec<String> = entries.keys().take(entries.len() - keep).cloned().collect();
                for k in drop {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(
            key.to_owned(),
            Entry {
                value: value.map(|v| v as Shared),
                expires,
            },
        );
    }

    /// Kong's `cache:get(key, opts, cb)`: the cached value of `key`, else what `load` finds
    /// (cached for `ttl`; a miss, `Ok(None)`, for `neg_ttl`). A loader error is returned and
    /// nothing is cached.
    pub async fn get<T, F, Fut>(
        &self,
        key: &str,
        opts: CacheOptions,
        load: F,
    ) -> Result<(Option<Arc<T>>, HitLevel), String>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, String>>,
    {
        if let Some(hit) = self.lookup::<T>(key) {
            return Ok((hit, HitLevel::Memory));
        }
        let since = self.generation.load(Relaxed);
        let loaded = load().await?.map(Arc::new);
        self.store(key, loaded.clone(), opts, since);
        Ok((loaded, HitLevel::Loaded))
    }

    /// [`Cache::get`] with a synchronous loader (a lookup in memory, as the bundled auth
    /// plugins' in the node's entities).
    pub fn get_with<T, F>(&self, key: &str, opts: CacheOptions, load: F) -> Result<(Option<Arc<T>>, HitLevel), String>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Result<Option<T>, String>,
    {
        self.load_sync(key, opts, None, load)
    }

    /// [`Cache::get_with`] for a loader that reads configuration `epoch` (a
    /// [`DataStore`](crate::dao::DataStore)'s): what it loads is not kept when a newer
    /// configuration is live, since a request that started before a change still reads the
    /// old one.
    pub fn get_from<T, F>(&self, key: &str, epoch: u64, load: F) -> Result<(Option<Arc<T>>, HitLevel), String>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Result<Option<T>, String>,
    {
        self.load_sync(key, CacheOptions::default(), Some(epoch), load)
    }

    /// A cached value, else what `load` finds, kept unless it comes from a configuration
    /// `epoch` older than the live one.
    fn load_sync<T, F>(
        &self,
        key: &str,
        opts: CacheOptions,
        epoch: Option<u64>,
        load: F,
    ) -> Result<(Option<Arc<T>>, HitLevel), String>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Result<Option<T>, String>,
    {
        if let Some(hit) = self.lookup::<T>(key) {
            return Ok((hit, HitLevel::Memory));
        }
        let since = self.generation.load(Relaxed);
        let loaded = load()?.map(Arc::new);
        if epoch.is_none_or(|e| e >= self.live_epoch.load(Relaxed)) {
            self.store(key, loaded.clone(), opts, since);
        }
        Ok((loaded, HitLevel::Loaded))
    }

    /// Marks configuration `epoch` live: values loaded from older ones are no longer kept.
    /// The gateway calls it before it forgets the keys a configuration change touched.
    pub fn set_live_epoch(&self, epoch: u64) {
        self.live_epoch.fetch_max(epoch, Relaxed);
    }

    /// Kong's `cache:probe(key)`: the time the entry has left (`None`: until invalidated) and
    /// its value (`None` for a cached miss); `None` when nothing live is cached.
    pub fn probe<T: Send + Sync + 'static>(&self, key: &str) -> Option<(Option<Duration>, Option<Arc<T>>)> {
        let now = Instant::now();
        let entries = self.entries();
        let entry = entries.get(key).filter(|e| e.live(now))?;
        let left = entry.expires.map(|e| e - now);
        let value = match &entry.value {
            None => None,
            Some(v) => Some(v.clone().downcast::<T>().ok()?),
        };
        Some((left, value))
    }

    /// Kong's `cache:safe_set(key, value)`: caches `value` (or a miss) as a loader would.
    pub fn safe_set<T: Send + Sync + 'static>(&self, key: &str, value: Option<T>, opts: CacheOptions) {
        self.store(key, value.map(Arc::new), opts, self.generation.load(Relaxed));
    }

    /// Kong's `cache:invalidate_local(key)`: forgets `key` on this node.
    pub fn invalidate_local(&self, key: &str) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Relaxed);
        entries.remove(key);
    }

    /// Kong's `cache:invalidate(key)`: forgets `key` on this node and on the other nodes of
    /// the cluster (through the database's cluster events, when the node has a database).
    pub fn invalidate(&self, key: &str) {
        self.invalidate_local(key);
        if let Some(broadcast) = self.broadcast.get() {
            broadcast(key);
        }
    }

    /// Kong's `cache:purge()`: forgets everything on this node.
    pub fn purge(&self) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Relaxed);
        entries.clear();
    }

    /// The entries held (live or expired).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets how [`Cache::invalidate`] reaches the other nodes (the Admin API does, once it
    /// has a database). Returns `false` when one was set already.
    pub fn set_broadcast(&self, broadcast: impl Fn(&str) + Send + Sync + 'static) -> bool {
        self.broadcast.set(Box::new(broadcast)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(cache: &Cache, key: &str, value: Option<u32>, opts: CacheOptions) -> (Option<u32>, HitLevel) {
        let (v, level) = cache.get_with(key, opts, || Ok(value)).unwrap();
        (v.as_deref().copied(), level)
    }

    #[test]
    fn misses_are_cached_for_neg_ttl_and_hits_for_ttl() {
        let cache = Cache::new(Duration::from_secs(60), Duration::from_millis(1), 16);
        assert_eq!(
            loads(&cache, "a", None, CacheOptions::default()),
            (None, HitLevel::Loaded)
        );
        assert_eq!(
            loads(&cache, "a", Some(1), CacheOptions::default()),
            (None, HitLevel::Memory)
        );
        let (left, _) = cache.probe::<u32>("a").map_or((None, None), |p| p);
        assert!(left.is_some_and(|l| l <= Duration::from_millis(1)));
        // Expired (within a millisecond): loaded again.
        while cache.probe::<u32>("a").is_some() {
            std::thread::yield_now();
        }
        assert_eq!(
            loads(&cache, "a", Some(1), CacheOptions::default()),
            (Some(1), HitLevel::Loaded)
        );
        assert_eq!(
            loads(&cache, "a", Some(2), CacheOptions::default()),
            (Some(1), HitLevel::Memory)
        );
        let forever = CacheOptions {
            ttl: Some(Duration::ZERO),
            ..CacheOptions::default()
        };
        assert_eq!(loads(&cache, "b", Some(3), forever), (Some(3), HitLevel::Loaded));
        assert_eq!(cache.probe::<u32>("b").unwrap().0, None, "kept until invalidated");
    }

    #[test]
    fn loader_errors_are_not_cached() {
        let cache = Cache::default();
        let err = cache.get_with::<u32, _>("k", CacheOptions::default(), || Err("db down".into()));
        assert_eq!(err.unwrap_err(), "db down");
        assert!(cache.is_empty());
    }

    #[test]
    fn a_value_loaded_across_an_invalidation_is_not_kept() {
        let cache = Cache::default();
        let (v, _) = cache
            .get_with("k", CacheOptions::default(), || {
                cache.invalidate_local("k");
                Ok(Some(1u32))
            })
            .unwrap();
        assert_eq!(v.as_deref(), Some(&1), "returned");
        assert!(cache.probe::<u32>("k").is_none(), "but not cached");
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = Cache::new(Duration::ZERO, Duration::ZERO, 64);
        for i in 0..1000u32 {
            cache.safe_set(&i.to_string(), Some(i), CacheOptions::default());
        }
        assert!(cache.len() <= 64);
        cache.purge();
        assert!(cache.is_empty());
    }

    #[test]
    fn values_of_an_older_configuration_are_returned_not_kept() {
        let cache = Cache::default();
        cache.set_live_epoch(5);
        let (v, _) = cache.get_from("k", 4, || Ok(Some(1u32))).unwrap();
        assert_eq!(v.as_deref(), Some(&1));
        assert!(cache.probe::<u32>("k").is_none());
        cache.get_from("k", 5, || Ok(Some(2u32))).unwrap();
        assert_eq!(cache.probe::<u32>("k").unwrap().1.as_deref(), Some(&2));
    }

    #[test]
    fn another_type_under_the_same_key_is_a_miss() {
        let cache = Cache::default();
        cache.safe_set("k", Some(1u32), CacheOptions::default());
        assert!(cache.probe::<String>("k").is_none());
        assert_eq!(loads(&cache, "k", Some(5), CacheOptions::default()).0, Some(1));
    }

    #[test]
    fn invalidate_broadcasts() {
        let cache = Cache::default();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let to = sent.clone();
        assert!(cache.set_broadcast(move |k| to.lock().unwrap().push(k.to_owned())));
        cache.safe_set("k", Some(1u32), CacheOptions::default());
        cache.invalidate("k");
        assert!(cache.probe::<u32>("k").is_none());
        assert_eq!(*sent.lock().unwrap(), ["k"]);
    }
}
