//! Where entities live: SQLite (the embedded default, a file in the prefix) or PostgreSQL,
//! through one schema and the same statements. Every write is one transaction; unique fields
//! are enforced by the database itself, so concurrent nodes cannot both win.

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// The migrations, in order. `schema_meta` records which have run.
const MIGRATIONS: &[(&str, &[&str])] = &[
    (
        "000_base",
        &[
            "CREATE TABLE IF NOT EXISTS entities (kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, id))",
            "CREATE TABLE IF NOT EXISTS unique_keys (kind TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (kind, field, value))",
            "CREATE TABLE IF NOT EXISTS cluster_events (id BIGINT NOT NULL PRIMARY KEY, node_id TEXT NOT NULL, channel TEXT NOT NULL, data TEXT)",
        ],
    ),
    // One counter that every write bumps, instead of a row per write that nothing purged.
    (
        "001_cluster_version",
        &[
            "CREATE TABLE IF NOT EXISTS cluster_version (id INTEGER NOT NULL PRIMARY KEY, version BIGINT NOT NULL)",
            "INSERT INTO cluster_version (id, version) SELECT 1, COUNT(*) FROM cluster_events",
            "DELETE FROM cluster_events",
        ],
    ),
    // The `cluster` policies' counters (Kong's rate-limiting and response-ratelimiting
    // migrations): `ttl` is when a row expires, in seconds since the epoch.
    (
        "002_ratelimiting_metrics",
        &[
            "CREATE TABLE IF NOT EXISTS ratelimiting_metrics (identifier TEXT NOT NULL, period TEXT NOT NULL, period_date BIGINT NOT NULL, service_id TEXT NOT NULL, route_id TEXT NOT NULL, value BIGINT NOT NULL, ttl BIGINT NOT NULL, PRIMARY KEY (identifier, period, period_date, service_id, route_id))",
            "CREATE TABLE IF NOT EXISTS response_ratelimiting_metrics (identifier TEXT NOT NULL, period TEXT NOT NULL, period_date BIGINT NOT NULL, service_id TEXT NOT NULL, route_id TEXT NOT NULL, value BIGINT NOT NULL, ttl BIGINT NOT NULL, PRIMARY KEY (identifier, period, period_date, service_id, route_id))",
        ],
    ),
    // Kong's `parameters`: the cluster's settings, `cluster_id` first.
    (
        "003_parameters",
        &["CREATE TABLE IF NOT EXISTS parameters (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)"],
    ),
    // Each write first drops its entity's unique keys by (kind, id): without an index that
    // was a scan of every key, so writes slowed down with the data.
    (
        "004_unique_keys_by_id",
        &["CREATE INDEX IF NOT EXISTS unique_keys_by_id ON unique_keys (kind, id)"],
    ),
];

/// A store error.
#[derive(Debug)]
pub enum StoreError {
    /// A unique field's value is taken: (kind, field, value).
    Unique(String, String, String),
    /// The database failed.
    Database(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unique(kind, field, value) => write!(f, "{kind}.{field} = {value} is taken"),
            StoreError::Database(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Cluster events kept in the database: a node further behind than this purges its cache
/// instead of reading them all.
pub(crate) const EVENTS_KEPT: i64 = 10_000;

/// A cluster event (Kong's `cluster_events` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    /// Its place in the order of events.
    pub id: i64,
    /// The node that posted it.
    pub node_id: String,
    /// Its channel (`invalidations`).
    pub channel: String,
    /// Its data (the cache key, for `invalidations`).
    pub data: String,
}

/// One change inside a write.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace an entity, with its unique (field, value) pairs.
    Put {
        /// The kind.
        kind: &'static str,
        /// The id.
        id: String,
        /// The entity.
        data: Value,
        /// Its unique fields' values.
        unique: Vec<(&'static str, String)>,
    },
    /// Delete an entity.
    Delete {
        /// The kind.
        kind: &'static str,
        /// The id.
        id: String,
    },
}

/// A connection pool to the configured database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    sqlite: bool,
    /// Kong's `pg_timeout`: the longest any one operation may take.
    timeout: std::time::Duration,
}

/// Kong's default `pg_timeout` (5000 ms), which this store applies to SQLite too.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(5000);

impl Store {
    /// Opens (creating when missing) the SQLite database at `path`. Commits are durable: WAL
    /// with `synchronous = FULL`.
    pub async fn sqlite(path: &std::path::Path) -> Result<Store, StoreError> {
        Store::sqlite_with(path, DEFAULT_TIMEOUT).await
    }

    /// [`Store::sqlite`] with `timeout` as its `pg_timeout`.
    pub async fn sqlite_with(path: &std::path::Path, timeout: std::time::Duration) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(e.to_string()))?;
        }
        Store::connect_with(&format!("sqlite://{}?mode=rwc", path.display()), timeout).await
    }

    /// Connects to a `sqlite://` or `postgres://` URL, with Kong's default `pg_timeout`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, DEFAULT_TIMEOUT).await
    }

    /// Connects to a `sqlite://` or `postgres://` URL. `timeout` is Kong's `pg_timeout`: the
    /// longest wait for a connection, and for any one read or write (a transaction's
    /// included). PostgreSQL also ends a statement that runs longer (`statement_timeout`),
    /// and SQLite waits that long for another connection's lock (`busy_timeout`), so a
    /// locked table answers an error instead of holding the writer.
    pub async fn connect_with(url: &str, timeout: std::time::Duration) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let ms = timeout.as_millis().max(1);
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 4 })
            .acquire_timeout(timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    if sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute(format!("PRAGMA busy_timeout = {ms}").as_str()).await?;
                    } else {
                        conn.execute(format!("SET statement_timeout = {ms}").as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        Ok(Store { pool, sqlite, timeout })
    }

    /// `op`, or Kong's timeout error once `pg_timeout` has passed. A transaction cut short
    /// is rolled back by the pool.
    async fn bounded<T>(&self, op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, op).await.unwrap_or_else(|_| {
            Err(StoreError::Database(format!(
                "timeout (pg_timeout = {} ms)",
                self.timeout.as_millis()
            )))
        })
    }

    /// Whether this is the embedded SQLite store.
    pub fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// Runs the migrations not yet applied (`kong migrations bootstrap` / `up`); returns the
    /// names of those it ran.
    pub async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        let mut ran = Vec::new();
        for ((name, statements), (_, done)) in MIGRATIONS.iter().zip(self.migrations().await?) {
            if done {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            for statement in *statements {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_meta (name) VALUES ($1)")
                .bind(*name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            ran.push(*name);
        }
        Ok(ran)
    }

    /// The migrations' names with whether each has run (`kong migrations list`).
    pub async fn migrations(&self) -> Result<Vec<(&'static str, bool)>, StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_meta (name TEXT NOT NULL PRIMARY KEY)")
            .execute(&self.pool)
            .await?;
        let done: Vec<String> = sqlx::query("SELECT name FROM schema_meta")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r: &AnyRow| r.get::<String, _>(0))
            .collect();
        Ok(MIGRATIONS
            .iter()
            .map(|(name, _)| (*name, done.iter().any(|d| d == name)))
            .collect())
    }

    /// Drops every table this store created (`kong migrations reset`).
    pub async fn reset(&self) -> Result<(), StoreError> {
        for table in [
            "entities",
            "unique_keys",
            "cluster_events",
            "cluster_version",
            "ratelimiting_metrics",
            "response_ratelimiting_metrics",
            "parameters",
            "schema_meta",
        ] {
            sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Every stored entity, as (kind, entity).
    pub async fn load(&self) -> Result<Vec<(String, Value)>, StoreError> {
        self.bounded(self.load_unbounded()).await
    }

    async fn load_unbounded(&self) -> Result<Vec<(String, Value)>, StoreError> {
        let rows = sqlx::query("SELECT kind, data FROM entities ORDER BY kind, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.get(0);
                let data: String = r.get(1);
                let value = serde_json::from_str(&data).map_err(|e| StoreError::Database(e.to_string()))?;
                Ok((kind, value))
            })
            .collect()
    }

    /// Applies `ops` in one transaction: all or nothing.
    pub async fn write(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.bounded(self.write_unbounded(ops)).await
    }

    async fn write_unbounded(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for op in ops {
            match op {
                Op::Put { kind, id, data, unique } => {
                    sqlx::query("DELETE FROM unique_keys WHERE kind = $1 AND id = $2")
                        .bind(*kind)
                        .bind(id.as_str())
                        .execute(&mut *tx)
                        .await?;
                    for (field, value) in unique {
                        let inserted = sqlx::query(
                            "INSERT INTO unique_keys (kind, field, value, id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        )
                        .bind(*kind)
                        .bind(*field)
                        .bind(value.as_str())
                        .bind(id.as_str())
                        .execute(&mut *tx)
                        .await?;
                        if inserted.rows_affected() == 0 {
                            return Err(StoreError::Unique((*kind).into(), (*field).into(), value.clone()));
                        }
                    }
                    sqlx::query(
                        "INSERT INTO entities (kind, id, data) VALUES ($1, $2, $3) ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
                    )
                    .bind(*kind)
                    .bind(id.as_str())
                    .bind(data.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                Op::Delete { kind, id } => {
                    for table in ["unique_keys", "entities"] {
                        sqlx::query(&format!("DELETE FROM {table} WHERE kind = $1 AND id = $2"))
                            .bind(*kind)
                            .bind(id.as_str())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
        }
        // Other nodes on the same database notice the change by the version.
        sqlx::query("UPDATE cluster_version SET version = version + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live values of counters in `table` (0 for none), in the order of `keys`.
    pub async fn counter_values(
        &self,
        table: crate::counters::CounterTable,
        keys: &[crate::counters::CounterKey],
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.bounded(self.counter_values_unbounded(table, keys, now)).await
    }

    async fn counter_values_unbounded(
        &self,
        table: crate::counters::CounterTable,
        keys: &[crate::counters::CounterKey],
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut values = vec![0; keys.len()];
        let sql = format!(
            "SELECT period, period_date, value FROM {} WHERE identifier = $1 AND service_id = $2 AND route_id = $3 AND ttl >= $4",
            table.name()
        );
        // One query per counted subject (usually one for all of a request's windows).
        let mut done = vec![false; keys.len()];
        for i in 0..keys.len() {
            if done[i] {
                continue;
            }
            let k = &keys[i];
            let rows = sqlx::query(&sql)
                .bind(k.identifier.as_str())
                .bind(k.service_id.to_string())
                .bind(k.route_id.to_string())
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
            for (j, other) in keys.iter().enumerate().skip(i) {
                if other.identifier != k.identifier || other.service_id != k.service_id || other.route_id != k.route_id
                {
                    continue;
                }
                done[j] = true;
                for row in &rows {
                    let period: String = row.try_get(0)?;
                    let date: i64 = row.try_get(1)?;
                    if period == other.period && date == other.period_date {
                        values[j] = row.try_get::<i64, _>(2)?.max(0);
                    }
                }
            }
        }
        Ok(values)
    }

    /// Adds the `(key, delta, expires_at)` increments to `table` in one transaction (Kong's
    /// upsert: a new row expires at `expires_at`, an existing one gets `value + delta`).
    pub async fn add_counters(
        &self,
        table: crate::counters::CounterTable,
        increments: &[(&crate::counters::CounterKey, i64, i64)],
    ) -> Result<(), StoreError> {
        self.bounded(self.add_counters_unbounded(table, increments)).await
    }

    async fn add_counters_unbounded(
        &self,
        table: crate::counters::CounterTable,
        increments: &[(&crate::counters::CounterKey, i64, i64)],
    ) -> Result<(), StoreError> {
        let name = table.name();
        let sql = format!(
            "INSERT INTO {name} (identifier, period, period_date, service_id, route_id, value, ttl) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (identifier, period, period_date, service_id, route_id) \
             DO UPDATE SET value = {name}.value + excluded.value"
        );
        let mut tx = self.pool.begin().await?;
        for (key, delta, expires) in increments {
            sqlx::query(&sql)
                .bind(key.identifier.as_str())
                .bind(key.period.as_str())
                .bind(key.period_date)
                .bind(key.service_id.to_string())
                .bind(key.route_id.to_string())
                .bind(*delta)
                .bind(*expires)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the counters of `table` that expired before `now`.
    pub async fn purge_counters(&self, table: crate::counters::CounterTable, now: i64) -> Result<u64, StoreError> {
        self.bounded(self.purge_counters_unbounded(table, now)).await
    }

    async fn purge_counters_unbounded(
        &self,
        table: crate::counters::CounterTable,
        now: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(&format!("DELETE FROM {} WHERE ttl < $1", table.name()))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The cluster's id (Kong's `parameters.cluster_id`): made by the first node that asks,
    /// the same for every node on this database afterwards.
    pub async fn cluster_id(&self) -> Result<uuid::Uuid, StoreError> {
        self.bounded(self.cluster_id_unbounded()).await
    }

    async fn cluster_id_unbounded(&self) -> Result<uuid::Uuid, StoreError> {
        sqlx::query("INSERT INTO parameters (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind("cluster_id")
            .bind(uuid::Uuid::new_v4().to_string())
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM parameters WHERE key = $1")
            .bind("cluster_id")
            .fetch_one(&self.pool)
            .await?;
        let value: String = row.try_get(0)?;
        uuid::Uuid::parse_str(&value).map_err(|e| StoreError::Database(format!("cluster_id: {e}")))
    }

    /// Posts a cluster event (Kong's `cluster_events:broadcast`): the nodes on this database
    /// read it with [`Store::events_since`]. The newest 10,000 are kept.
    pub async fn post_event(&self, node_id: &str, channel: &str, data: &str) -> Result<(), StoreError> {
        self.bounded(self.post_event_unbounded(node_id, channel, data)).await
    }

    async fn post_event_unbounded(&self, node_id: &str, channel: &str, data: &str) -> Result<(), StoreError> {
        // Ids are the next after the highest: two nodes posting at once may pick the same one,
        // and the loser tries again.
        let mut tries = 0;
        loop {
            let posted = sqlx::query(
                "INSERT INTO cluster_events (id, node_id, channel, data) SELECT COALESCE(MAX(id), 0) + 1, $1, $2, $3 FROM cluster_events",
            )
            .bind(node_id)
            .bind(channel)
            .bind(data)
            .execute(&self.pool)
            .await;
            match posted {
                Ok(_) => break,
                Err(_) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * tries)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        sqlx::query("DELETE FROM cluster_events WHERE id <= (SELECT MAX(id) FROM cluster_events) - $1")
            .bind(EVENTS_KEPT)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The id of the newest cluster event (0 for none).
    pub async fn last_event(&self) -> Result<i64, StoreError> {
        self.bounded(self.last_event_unbounded()).await
    }

    async fn last_event_unbounded(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM cluster_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// Up to `limit` cluster events after `after`, oldest first: (id, node id, channel, data).
    pub async fn events_since(&self, after: i64, limit: i64) -> Result<Vec<ClusterEvent>, StoreError> {
        self.bounded(self.events_since_unbounded(after, limit)).await
    }

    async fn events_since_unbounded(&self, after: i64, limit: i64) -> Result<Vec<ClusterEvent>, StoreError> {
        let rows =
            sqlx::query("SELECT id, node_id, channel, data FROM cluster_events WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(ClusterEvent {
                    id: r.try_get(0)?,
                    node_id: r.try_get(1)?,
                    channel: r.try_get(2)?,
                    data: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// A number that changes whenever any node writes: one counter row, bumped in each
    /// write's transaction, so nothing grows with the writes.
    pub async fn version(&self) -> Result<i64, StoreError> {
        self.bounded(self.version_unbounded()).await
    }

    async fn version_unbounded(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT version FROM cluster_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }
}
