//! Kong's Admin API over a [`Store`]: CRUD for services, routes, consumers, plugins,
//! certificates and SNIs with Kong's paths, bodies, errors and status codes. Every accepted
//! write is committed to the store, then the proxy's snapshot is rebuilt and swapped; a write
//! whose configuration would not build is refused and nothing is stored.
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
mod kinds;
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
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use uuid::Uuid;

pub use store::{Op, Store, StoreError};

use crate::entities::{CaCertificate, Certificate, Consumer, Route, Service, Sni, Target, Upstream};
use crate::executor::PluginEntity;
use crate::gateway::declarative::Config;
use crate::gateway::{KONG_VERSION, Proxy};
use crate::registry::{Plugins, Scope};
use crate::schema::SchemaViolation;
use kinds::Kind;

/// The entities of one kind, by id.
type Kinds = BTreeMap<String, Arc<Value>>;

/// Entities by kind, then by id. Entities and each kind's index are shared between copies: a
/// write copies the index of the kind it changes (pointers only) and never an entity, and
/// readers keep the copy they loaded while a write builds the next one.
#[derive(Clone, Default)]
struct Entities(BTreeMap<&'static str, Arc<Kinds>>);

impl std::ops::Index<&str> for Entities {
    type Output = Kinds;

    /// The entities of `kind` (none for a kind this node does not know).
    fn index(&self, kind: &str) -> &Kinds {
        static NONE: Kinds = BTreeMap::new();
        self.0.get(kind).map_or(&NONE, |k| &**k)
    }
}

impl Entities {
    /// Stores `value` as the `kind` entity `id`.
    fn put(&mut self, kind: &'static str, id: String, value: Value) {
        Arc::make_mut(self.0.entry(kind).or_default()).insert(id, Arc::new(value));
    }

    /// Removes the `kind` entity `id`.
    fn remove(&mut self, kind: &str, id: &str) {
        if let Some(k) = self.0.get_mut(kind) {
            Arc::make_mut(k).remove(id);
        }
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
    node_id: Uuid,
}

/// An Admin API error: Kong's status and body.
#[derive(Debug)]
struct ApiError(StatusCode, Value);

type ApiResult = Result<(StatusCode, Value), ApiError>;

fn message(status: u16, text: &str) -> ApiError {
    ApiError(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        json!({ "message": text }),
    )
}

fn db_error(code: u16, name: &str, message: String, fields: Option<Value>) -> ApiError {
    let status = match code {
        5 => StatusCode::CONFLICT,
        6 => StatusCode::NOT_FOUND,
        8 => StatusCode::INTERNAL_SERVER_ERROR,
        12 => StatusCode::METHOD_NOT_ALLOWED,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut body = json!({ "code": code, "name": name, "message": message });
    if let Some(fields) = fields {
        body["fields"] = fields;
    }
    ApiError(status, body)
}

fn violation(v: SchemaViolation) -> ApiError {
    db_error(2, "schema violation", v.message().to_owned(), Some(v.fields().clone()))
}

fn field_violation(field: &str, text: impl Into<String>) -> ApiError {
    let mut m = Map::new();
    m.insert(field.to_owned(), Value::String(text.into()));
    violation(SchemaViolation::new(m))
}

/// A violation of Kong's entity checks (`@entity`, a list of messages) or of one field.
fn entity_or_field_violation(field: &str, text: String) -> ApiError {
    if field == "@entity" {
        violation(SchemaViolation::new(
            [("@entity".to_owned(), json!([text]))].into_iter().collect(),
        ))
    } else {
        field_violation(field, text)
    }
}

/// Kong's rendering of a key in messages: `'{name="x"}'`.
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
        let entities = load_entities(&store).await?;
        Admin::start(Some(store), entities, plugins, proxy).await
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
            node_id: Uuid::new_v4(),
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
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(now) = store.version().await else { continue };
            if seen == Some(now) {
                continue;
            }
            match self.reload(&store).await {
                Ok(()) => seen = Some(now),
                Err(e) => tracing::error!(target: "kong", "could not apply the cluster's configuration: {e}"),
            }
        }
    }

    async fn reload(&self, store: &Store) -> Result<(), String> {
        // Loaded under the write lock: a write of this node that lands meanwhile is either in
        // what is loaded or applied after it, never overwritten by an older copy.
        let _write = self.writes.lock().await;
        let loaded = load_entities(store).await?;
        let snapshot = self.build(&loaded).await.map_err(|e| e.1.to_string())?;
        self.entities.store(Arc::new(loaded));
        self.proxy.swap(snapshot);
        Ok(())
    }

    /// Serves the Admin API on `listener` until `shutdown` completes.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                (stream, _) = crate::gateway::accept::accept(&listener) => {
                    let admin = self.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let admin = admin.clone();
                            async move { Ok::<_, Infallible>(admin.handle(req).await) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
    }

    /// Answers one Admin API request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let origin = req.headers().get(http::header::ORIGIN).cloned();
        let (status, body, allow) = if req.method() == Method::OPTIONS {
            let segs: Vec<&str> = req.uri().path().split('/').filter(|s| !s.is_empty()).collect();
            (StatusCode::NO_CONTENT, Value::Null, Some(allowed(&segs)))
        } else {
            match self.route(req).await {
                Ok((status, body)) | Err(ApiError(status, body)) => (status, body, None),
            }
        };
        let mut resp = Response::new(Full::new(if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        }));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        if !body.is_null() {
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        h.insert(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            origin.unwrap_or_else(|| HeaderValue::from_static("*")),
        );
        h.insert(
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            h.insert(http::header::ALLOW, allow.clone());
            h.insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, allow);
            h.insert(
                http::header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type"),
            );
        }
        h.insert(
            http::header::SERVER,
            HeaderValue::from_static(crate::gateway::SERVER_TOKEN),
        );
        h.insert(
            "x-kong-admin-latency",
            HeaderValue::from(started.elapsed().as_millis() as u64),
        );
        resp
    }

    async fn route<B>(&self, req: Request<B>) -> ApiResult
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| crate::pdk::request::percent_decode(s, false))
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = parts.method.clone();
        let read_body = |body: B, headers: http::HeaderMap, kind: &'static str| async move {
            let (mut value, form) = read(body, &headers).await?;
            if form {
                self.infer(kinds::get(kind).expect("known kind"), &mut value);
            }
            Ok::<Value, ApiError>(value)
        };
        let get = method == Method::GET || method == Method::HEAD;
        if self.store.is_none() && !get && segs.first().is_some_and(|k| self.kind_at(k).is_some()) {
            let kind = match segs.as_slice() {
                [parent, _, child, ..] if self.nested(parent, child).is_some() => {
                    self.nested(parent, child).expect("checked").1.name
                }
                [k, ..] => self.kind_at(k).expect("checked").name,
                [] => "",
            };
            let verb = match method {
                Method::PATCH => "update",
                Method::DELETE => "delete",
                _ => "create",
            };
            return Err(db_error(
                12,
                "operation unsupported",
                format!("cannot {verb} '{kind}' entities when not using a database"),
                None,
            ));
        }
        match segs.as_slice() {
            ["config"] if get => Ok((StatusCode::OK, json!({ "config": self.config_yaml().await }))),
            ["config"] if method == Method::POST => {
                if self.store.is_some() {
                    return Err(message(
                        400,
                        "this endpoint is only available when Kong is configured to not use a database",
                    ));
                }
                let bytes = collect_body(body).await?;
                self.load_config(&parts.headers, &bytes).await
            }
            [] if get => Ok((StatusCode::OK, self.info().await)),
            ["status"] if get => Ok((StatusCode::OK, self.status().await)),
            ["plugins", "enabled"] if get => Ok((
                StatusCode::OK,
                json!({ "enabled_plugins": self.plugins.iter().map(|m| m.name).collect::<Vec<_>>() }),
            )),
            ["endpoints"] if get => Ok((StatusCode::OK, endpoints(&self.plugins))),
            ["schemas", "plugins", "validate"] if method == Method::POST => {
                let mut value = read_body(body, parts.headers, "plugins").await?;
                let now = now();
                self.validate_plugin(&mut value, now)?;
                Ok((StatusCode::OK, json!({ "message": "schema validation successful" })))
            }
            ["schemas", "plugins", name] if get => match self.plugins.schema(name) {
                Some(schema) => Ok((StatusCode::OK, schema.to_json())),
                None => Err(message(404, &format!("No plugin named '{name}'"))),
            },
            ["schemas", kind] if get => match kinds::get(kind) {
                Some(k) => Ok((
                    StatusCode::OK,
                    crate::schema::schema_json(&k.schema.fields, &k.schema.entity_checks),
                )),
                None => Err(message(404, &format!("No entity named '{kind}'"))),
            },
            ["schemas", kind, "validate"] if method == Method::POST => {
                let kind = kinds::get(kind).ok_or_else(|| message(404, &format!("No entity named '{kind}'")))?;
                let value = read_body(body, parts.headers, kind.name).await?;
                let entities = self.entities.load_full();
                self.prepare(kind, value, None, &entities)?;
                Ok((StatusCode::OK, json!({ "message": "schema validation successful" })))
            }
            [kind] if self.kind_at(kind).is_some() => {
                let kind = self.kind_at(kind).expect("checked");
                match method {
                    Method::GET | Method::HEAD => self.list(kind, None, &query, &path).await,
                    Method::POST => {
                        let value = read_body(body, parts.headers, kind.name).await?;
                        self.create(kind, value, None).await
                    }
                    _ => Err(message(405, "Method not allowed")),
                }
            }
            [kind, key] if self.kind_at(kind).is_some() => {
                let kind = self.kind_at(kind).expect("checked");
                let value = if matches!(method, Method::PUT | Method::PATCH) {
                    Some(read_body(body, parts.headers, kind.name).await?)
                } else {
                    None
                };
                self.one(kind, key, None, method, value).await
            }
            [parent, pkey, kind] if self.nested(parent, kind).is_some() => {
                let (parent, kind, field) = self.nested(parent, kind).expect("checked");
                let parent_id = self.id_of(parent, pkey).await?;
                match method {
                    Method::GET | Method::HEAD => self.list(kind, Some((field, &parent_id)), &query, &path).await,
                    Method::POST => {
                        let value = read_body(body, parts.headers, kind.name).await?;
                        self.create(kind, value, Some((field, parent_id))).await
                    }
                    _ => Err(message(405, "Method not allowed")),
                }
            }
            [kind, key, field]
                if self
                    .kind_at(kind)
                    .is_some_and(|k| k.foreign.iter().any(|f| f.0 == *field)) =>
            {
                if !get {
                    return Err(message(405, "Method not allowed"));
                }
                let kind = self.kind_at(kind).expect("checked");
                let (_, target, _) = kind.foreign.iter().find(|f| f.0 == *field).expect("checked");
                let entities = self.entities.load_full();
                let entity = find(&entities, kind, key).ok_or_else(|| message(404, "Not found"))?;
                let id = entity[*field]["id"].as_str().unwrap_or_default();
                let target = kinds::get(target).expect("known kind");
                let found = entities[target.name].get(id).ok_or_else(|| message(404, "Not found"))?;
                Ok((StatusCode::OK, Value::clone(found)))
            }
            [parent, pkey, kind, key] if self.nested(parent, kind).is_some() => {
                let (parent, kind, field) = self.nested(parent, kind).expect("checked");
                let parent_id = self.id_of(parent, pkey).await?;
                let value = if matches!(method, Method::PUT | Method::PATCH) {
                    Some(read_body(body, parts.headers, kind.name).await?)
                } else {
                    None
                };
                self.one(kind, key, Some((field, parent_id)), method, value).await
            }
            _ => Err(message(404, "Not found")),
        }
    }

    /// The kind served at `/{segment}`: a core kind, or the entity of an enabled plugin.
    /// Targets are only served under their upstream (`/upstreams/{u}/targets`), as in Kong.
    fn kind_at(&self, segment: &str) -> Option<&'static Kind> {
        kinds::by_path(segment)
            .filter(|k| k.name != "targets")
            .filter(|k| k.dao.is_none_or(|d| self.plugins.contains(d.plugin)))
    }

    /// `/{parent}/{p}/{child}`: the parent kind, the child kind and the child's foreign field
    /// to the parent. Plugin entities nest under consumers by their nested name
    /// (`/consumers/{c}/key-auth`).
    fn nested(&self, parent: &str, child: &str) -> Option<(&'static Kind, &'static Kind, &'static str)> {
        let parent = kinds::by_path(parent).filter(|k| k.dao.is_none())?;
        let child = match kinds::by_path(child) {
            Some(k) if k.dao.is_none() => k,
            _ => kinds::all().iter().find(|k| {
                k.dao
                    .is_some_and(|d| d.admin_api_nested_name == child && self.plugins.contains(d.plugin))
            })?,
        };
        let (field, _, _) = child.foreign.iter().find(|(_, target, _)| *target == parent.name)?;
        Some((parent, child, field))
    }

    /// The id of the `kind` entity `key` (an id or endpoint key); 404 when absent.
    async fn id_of(&self, kind: &Kind, key: &str) -> Result<Value, ApiError> {
        let entities = self.entities.load_full();
        find(&entities, kind, key)
            .map(|e| e["id"].clone())
            .ok_or_else(|| message(404, "Not found"))
    }

    /// Types form-encoded values by the kind's schema (and a plugin's config schema).
    fn infer(&self, kind: &Kind, value: &mut Value) {
        args::infer_record(value, &kind.schema);
        if kind.name == "plugins" {
            if let Some(schema) = value["name"].as_str().and_then(|n| self.plugins.schema(n)) {
                for field in schema.fields() {
                    if let Some(v) = value.get_mut(&field.name) {
                        args::infer(v, &field.schema);
                    }
                }
            }
        }
    }

    async fn info(&self) -> Value {
        let available: Map<String, Value> = self
            .plugins
            .iter()
            .map(|m| {
                (
                    m.name.to_owned(),
                    json!({ "version": m.version, "priority": m.priority }),
                )
            })
            .collect();
        json!({
            "tagline": "Welcome to kong",
            "version": KONG_VERSION,
            "edition": "community",
            "kong_pdk_version": env!("CARGO_PKG_VERSION"),
            "hostname": self.plugins.node().hostname,
            "node_id": self.node_id.to_string(),
            "lua_version": Value::Null,
            "plugins": {
                "available_on_server": available,
                "enabled_in_cluster": self.enabled_in_cluster().await,
            },
            "configuration": {
                "database": match &self.store {
                    None => "off",
                    Some(s) if s.is_sqlite() => "sqlite",
                    Some(_) => "postgres",
                },
            },
            "pids": { "master": std::process::id(), "workers": [std::process::id()] },
        })
    }

    async fn enabled_in_cluster(&self) -> Vec<String> {
        let entities = self.entities.load_full();
        let mut names: Vec<String> = entities["plugins"]
            .values()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    async fn status(&self) -> Value {
        let mut status = json!({
            "server": {
                "connections_active": Value::Null,
                "total_requests": Value::Null,
            },
            "memory": { "lua_shared_dicts": {}, "workers_lua_vms": [] },
        });
        match &self.store {
            Some(store) => status["database"] = json!({ "reachable": store.version().await.is_ok() }),
            None => {
                let yaml = self.config_yaml().await;
                let hash = Uuid::new_v5(&Uuid::NAMESPACE_OID, yaml.as_bytes()).simple().to_string();
                status["configuration_hash"] = Value::from(hash);
            }
        }
        status
    }

    /// The current entities as a declarative configuration (`kong config db_export`): what a
    /// DB-less node would be started with to serve the same traffic.
    pub async fn export(&self) -> Result<Config, String> {
        to_config(&self.entities.load())
    }

    /// The current entities as a declarative configuration (YAML), `GET /config`.
    async fn config_yaml(&self) -> String {
        let entities = self.entities.load_full();
        let mut doc = Map::new();
        doc.insert("_format_version".into(), Value::from("3.0"));
        for (kind, all) in entities.iter() {
            if !all.is_empty() {
                doc.insert(
                    (*kind).to_owned(),
                    Value::Array(all.values().map(|v| Value::clone(v)).collect()),
                );
            }
        }
        serde_yaml_ng::to_string(&Value::Object(doc)).unwrap_or_default()
    }

    /// `POST /config` (DB-less): a whole new declarative configuration, JSON or YAML, or a
    /// form's `config` field. Invalid → 400 code 14 and the running configuration stays.
    async fn load_config(&self, headers: &http::HeaderMap, bytes: &[u8]) -> ApiResult {
        let ctype = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let text = if ctype.starts_with("application/x-www-form-urlencoded") {
            let form = args::form(&String::from_utf8_lossy(bytes));
            form.get("config")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        };
        let invalid = |fields: Value| {
            let text = serde_json::to_string(&fields).unwrap_or_default();
            db_error(
                14,
                "invalid declarative configuration",
                format!("declarative config is invalid: {text}"),
                Some(fields),
            )
        };
        let config = Config::parse(&text).map_err(|e| invalid(e.fields))?;
        let snapshot = config.snapshot(&self.plugins).await.map_err(|e| match e {
            crate::registry::LoadError::Invalid { violation, .. } => invalid(violation.fields().clone()),
            other => invalid(Value::from(other.to_string())),
        })?;
        let entities = entities_of(&config);
        let body: Map<String, Value> = entities
            .iter()
            .map(|(k, all)| {
                (
                    (*k).to_owned(),
                    Value::Array(all.values().map(|v| Value::clone(v)).collect()),
                )
            })
            .collect();
        let _write = self.writes.lock().await;
        self.entities.store(Arc::new(entities));
        self.proxy.swap(snapshot);
        Ok((StatusCode::CREATED, Value::Object(body)))
    }

    /// `GET /S` and nested `GET /P/{p}/S`: a page of entities.
    async fn list(&self, kind: &'static Kind, parent: Option<(&str, &Value)>, query: &str, path: &str) -> ApiResult {
        let args: Vec<(String, String)> = args::pairs(query).collect();
        let arg = |name: &str| args.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let size = match arg("size") {
            None => 100,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if (1..=1000).contains(&n) => n as usize,
                Ok(_) => {
                    return Err(db_error(
                        9,
                        "invalid size",
                        "size must be an integer between 1 and 1000".into(),
                        None,
                    ));
                }
                Err(_) => return Err(db_error(9, "invalid size", "size must be a number".into(), None)),
            },
        };
        let after = match arg("offset") {
            None => None,
            Some(o) => Some(decode_offset(o).ok_or_else(|| {
                db_error(
                    7,
                    "invalid offset",
                    format!("'{o}' is not a valid offset: bad base64 encoding"),
                    None,
                )
            })?),
        };
        let tags = arg("tags").map(str::to_owned);
        let filter_custom_id = if kind.name == "consumers" {
            arg("custom_id")
        } else {
            None
        };
        if filter_custom_id == Some("") {
            return Err(message(400, "custom_id must be an unempty string"));
        }
        let entities = self.entities.load_full();
        let matches = |e: &Value| {
            if let Some((field, id)) = parent {
                if &e[field]["id"] != id {
                    return false;
                }
            }
            if let Some(c) = filter_custom_id {
                if e["custom_id"].as_str() != Some(c) {
                    return false;
                }
            }
            if let Some(t) = &tags {
                let have: Vec<&str> = e["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let ok = if t.contains('/') {
                    t.split('/').any(|x| have.contains(&x))
                } else {
                    t.split(',').all(|x| have.contains(&x))
                };
                if !ok {
                    return false;
                }
            }
            true
        };
        let mut page: Vec<Value> = Vec::with_capacity(size.min(64));
        let mut more = false;
        let range = match &after {
            Some(a) => {
                entities[kind.name].range::<String, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
            }
            None => entities[kind.name].range::<String, _>(..),
        };
        for (_, e) in range {
            if !matches(e) {
                continue;
            }
            if page.len() == size {
                more = true;
                break;
            }
            page.push(Value::clone(e));
        }
        let mut body = json!({ "data": page, "next": Value::Null });
        if more {
            let last = page.last().and_then(|e| e["id"].as_str()).unwrap_or_default();
            let offset = encode_offset(last);
            let mut next = format!(
                "{path}?offset={}",
                crate::pdk::request::percent_encode_component(&offset)
            );
            if let Some(t) = &tags {
                next.push_str(&format!("&tags={}", crate::pdk::request::percent_encode_component(t)));
            }
            if arg("size").is_some() {
                next.push_str(&format!("&size={size}"));
            }
            body["offset"] = Value::from(offset);
            body["next"] = Value::from(next);
        }
        Ok((StatusCode::OK, body))
    }

    /// `/S/{key}` and `/P/{p}/S/{key}`: GET, PUT, PATCH, DELETE.
    async fn one(
        &self,
        kind: &'static Kind,
        key: &str,
        parent: Option<(&'static str, Value)>,
        method: Method,
        body: Option<Value>,
    ) -> ApiResult {
        let existing = {
            let entities = self.entities.load_full();
            find(&entities, kind, key).cloned()
        };
        // A nested path only reaches children of that parent.
        let existing = existing.filter(|e| parent.as_ref().is_none_or(|(f, id)| &e[*f]["id"] == id));
        match method {
            Method::GET | Method::HEAD => existing
                .map(|e| (StatusCode::OK, e))
                .ok_or_else(|| message(404, "Not found")),
            Method::DELETE => {
                if let Some(e) = existing {
                    self.delete(kind, &e).await?;
                }
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            Method::PATCH => {
                let Some(existing) = existing else {
                    return Err(message(404, "Not found"));
                };
                let Some(Value::Object(patch)) = body else {
                    return Err(message(400, "Cannot parse JSON body"));
                };
                let mut merged = existing.clone();
                for (k, v) in patch {
                    match (merged.get_mut(&k), v) {
                        // Records (plugin config) merge; everything else is replaced.
                        (Some(Value::Object(old)), Value::Object(new)) if k == "config" => {
                            for (ck, cv) in new {
                                old.insert(ck, cv);
                            }
                        }
                        (_, v) => {
                            merged[&k] = v;
                        }
                    }
                }
                if let Some((field, id)) = &parent {
                    merged[*field] = json!({ "id": id });
                }
                merged["updated_at"] = Value::from(now());
                self.save(kind, merged, Some(&existing), StatusCode::OK).await
            }
            Method::PUT => {
                let Some(Value::Object(mut entity)) = body else {
                    return Err(message(400, "Cannot parse JSON body"));
                };
                let id = match &existing {
                    Some(e) => e["id"].clone(),
                    None if Uuid::parse_str(key).is_ok() => Value::from(key),
                    None => Value::from(Uuid::new_v4().to_string()),
                };
                if Uuid::parse_str(key).is_err() {
                    if let Some(endpoint_key) = kind.endpoint_key {
                        entity.insert(endpoint_key.into(), Value::from(key));
                    }
                }
                entity.insert("id".into(), id);
                if let Some((field, pid)) = &parent {
                    entity.insert((*field).into(), json!({ "id": pid }));
                }
                let created = existing
                    .as_ref()
                    .map_or_else(now, |e| e["created_at"].as_i64().unwrap_or_else(now));
                entity.insert("created_at".into(), Value::from(created));
                entity.insert("updated_at".into(), Value::from(now()));
                self.save(kind, Value::Object(entity), existing.as_ref(), StatusCode::OK)
                    .await
            }
            _ => Err(message(405, "Method not allowed")),
        }
    }

    async fn create(&self, kind: &'static Kind, body: Value, parent: Option<(&'static str, Value)>) -> ApiResult {
        let Value::Object(mut entity) = body else {
            return Err(message(400, "Cannot parse JSON body"));
        };
        if let Some((field, id)) = parent {
            entity.insert(field.into(), json!({ "id": id }));
        }
        let t = now();
        entity.entry("created_at").or_insert(Value::from(t));
        entity.entry("updated_at").or_insert(Value::from(t));
        if !entity.contains_key("id") {
            entity.insert("id".into(), Value::from(Uuid::new_v4().to_string()));
        }
        self.save(kind, Value::Object(entity), None, StatusCode::CREATED).await
    }

    /// Validates `value` as a `kind` entity: url shorthand, schema, foreign keys, plugin
    /// configs, certificate pairs. Returns the entity as stored.
    fn prepare(
        &self,
        kind: &'static Kind,
        value: Value,
        previous: Option<&Value>,
        entities: &Entities,
    ) -> Result<Value, ApiError> {
        let Value::Object(mut obj) = value else {
            return Err(message(400, "Cannot parse JSON body"));
        };
        if kind.name == "services" {
            crate::gateway::declarative::expand_url(&mut obj).map_err(|e| field_violation("url", e))?;
        }
        if let Some(id) = obj.get("id") {
            if id.as_str().is_none_or(|s| Uuid::parse_str(s).is_err()) {
                return Err(field_violation("id", "expected a valid UUID"));
            }
        }
        // The handlers stamp `updated_at`; kinds without the field (plugins' entities) drop it.
        if kind.schema.field("updated_at").is_none() {
            obj.remove("updated_at");
        }
        if let Some(dao) = kind.dao {
            dao.fill_auto(&mut obj);
        }
        // Foreign keys may name the entity by its endpoint key.
        for (field, target, _) in kind.foreign {
            let Some(reference) = obj.get(*field).filter(|v| !v.is_null()).cloned() else {
                continue;
            };
            let target = kinds::get(target).expect("known kind");
            let resolved = match &reference {
                Value::Object(m) if m.contains_key("id") => {
                    let id = m["id"].as_str().unwrap_or_default();
                    if !entities[target.name].contains_key(id) {
                        let text = format!(
                            "the foreign key '{}' does not reference an existing '{}' entity.",
                            key_text("id", &m["id"]),
                            target.name
                        );
                        return Err(db_error(
                            4,
                            "foreign key violation",
                            text.clone(),
                            Some(json!({ *field: text })),
                        ));
                    }
                    id.to_owned()
                }
                Value::Object(m) if m.len() == 1 => {
                    let (k, v) = m.iter().next().expect("one entry");
                    let found = entities[target.name]
                        .values()
                        .find(|e| e.get(k) == Some(v) && k != "id");
                    match found {
                        Some(e) => e["id"].as_str().unwrap_or_default().to_owned(),
                        None => {
                            let text = format!(
                                "the foreign key cannot be resolved with '{}' for an existing '{}' entity",
                                key_text(k, v),
                                target.name
                            );
                            return Err(db_error(
                                13,
                                "foreign keys unresolved",
                                format!("foreign key unresolved ({field}.{k}: {text})"),
                                Some(json!({ *field: { k.as_str(): text } })),
                            ));
                        }
                    }
                }
                _ => return Err(field_violation(field, "expected a record")),
            };
            obj.insert((*field).into(), json!({ "id": resolved }));
        }
        let mut value = Value::Object(obj);
        if kind.name == "plugins" {
            self.validate_plugin(&mut value, now())?;
        } else {
            crate::schema::validate_record(&kind.schema, &mut value).map_err(|e| {
                let Value::Object(m) = e else {
                    return message(400, "invalid entity");
                };
                violation(SchemaViolation::new(m))
            })?;
        }
        match kind.name {
            "routes" => route_checks(&value)?,
            "certificates" => {
                let alt = value["cert_alt"].as_str().zip(value["key_alt"].as_str());
                crate::gateway::tls::CertificatePair::from_pem(
                    value["cert"].as_str().unwrap_or_default(),
                    value["key"].as_str().unwrap_or_default(),
                    alt,
                )
                .map_err(|(f, m)| entity_or_field_violation(f, m))?;
            }
            "ca_certificates" => {
                let digest =
                    crate::gateway::upstream_tls::check_ca_certificate(value["cert"].as_str().unwrap_or_default())
                        .map_err(|(f, m)| entity_or_field_violation(f, m))?;
                value["cert_digest"] = Value::from(digest);
            }
            _ => {}
        }
        if let Some(prev) = previous {
            value["created_at"] = prev["created_at"].clone();
        }
        Ok(value)
    }

    /// Validates a plugin entity: the generic fields, then its own schema (scoping, protocols,
    /// config).
    fn validate_plugin(&self, value: &mut Value, t: i64) -> Result<(), ApiError> {
        let name = value["name"].as_str().map(str::to_owned);
        let Some(name) = name else {
            return Err(field_violation("name", "required field missing"));
        };
        let Some(schema) = self.plugins.schema(&name) else {
            return Err(field_violation(
                "name",
                format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property"),
            ));
        };
        let obj = value
            .as_object_mut()
            .ok_or_else(|| message(400, "Cannot parse JSON body"))?;
        obj.entry("created_at").or_insert(Value::from(t));
        obj.entry("updated_at").or_insert(Value::from(t));
        let config = obj.remove("config").unwrap_or(Value::Null);
        let protocols = obj.remove("protocols");
        let mut generic = Value::Object(obj.clone());
        let mut errors = Map::new();
        let kind = kinds::get("plugins").expect("known kind");
        if let Err(Value::Object(e)) = crate::schema::validate_record(&kind.schema, &mut generic) {
            errors.extend(e.into_iter().filter(|(k, _)| k != "protocols"));
        }
        let mut scoped = json!({
            "consumer": generic["consumer"].clone(),
            "route": generic["route"].clone(),
            "service": generic["service"].clone(),
            "protocols": protocols.unwrap_or(Value::Null),
            "config": config,
        });
        match schema.validate_entity(scoped.take()) {
            Ok(valid) => {
                if errors.is_empty() {
                    for key in ["protocols", "config"] {
                        generic[key] = valid[key].clone();
                    }
                    *value = generic;
                }
            }
            Err(v) => {
                if let Value::Object(e) = v.fields() {
                    errors.extend(e.clone());
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(violation(SchemaViolation::new(errors)))
        }
    }

    /// Validates and stores `value`, then reconfigures the proxy.
    async fn save(&self, kind: &'static Kind, value: Value, previous: Option<&Value>, status: StatusCode) -> ApiResult {
        let _write = self.writes.lock().await;
        let entities = self.entities.load_full();
        let value = self.prepare(kind, value, previous, &entities)?;
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        if previous.is_none() && entities[kind.name].contains_key(&id) && status == StatusCode::CREATED {
            let text = format!("primary key violation on key '{}'", key_text("id", &value["id"]));
            return Err(db_error(
                3,
                "primary key violation",
                text.clone(),
                Some(json!({ "id": text })),
            ));
        }
        let mut unique = Vec::new();
        for field in kind.unique {
            if let Some(v) = value[*field].as_str() {
                let taken = entities[kind.name]
                    .values()
                    .any(|e| e["id"] != value["id"] && e[*field].as_str() == Some(v));
                if taken {
                    return Err(unique_violation(field, &value[*field]));
                }
                unique.push((*field, v.to_owned()));
            }
        }
        if kind.name == "plugins" {
            let cache_key = plugin_cache_key(&value);
            if entities["plugins"]
                .values()
                .any(|e| e["id"] != value["id"] && plugin_cache_key(e) == cache_key)
            {
                let text = format!(
                    "UNIQUE violation detected on '{{consumer={},name=\"{}\",route={},service={}}}'",
                    lua_ref(&value["consumer"]),
                    value["name"].as_str().unwrap_or_default(),
                    lua_ref(&value["route"]),
                    lua_ref(&value["service"])
                );
                return Err(db_error(5, "unique constraint violation", text, None));
            }
            unique.push(("cache_key", cache_key));
        }
        let mut candidate = Entities::clone(&entities);
        candidate.put(kind.name, id.clone(), value.clone());
        let op = Op::Put {
            kind: kind.name,
            id,
            data: value.clone(),
            unique,
        };
        self.commit(candidate, &[op], |e| match e {
            StoreError::Unique(_, field, v) => unique_violation(&field, &Value::from(v)),
            StoreError::Database(e) => db_error(8, "database error", e, None),
        })
        .await?;
        Ok((status, value))
    }

    async fn delete(&self, kind: &'static Kind, entity: &Value) -> Result<(), ApiError> {
        let _write = self.writes.lock().await;
        let entities = self.entities.load_full();
        let id = entity["id"].clone();
        let mut ops = vec![Op::Delete {
            kind: kind.name,
            id: id.as_str().unwrap_or_default().to_owned(),
        }];
        // Kong's ca_certificates DAO: a CA certificate a service trusts stays.
        if kind.name == "ca_certificates" {
            let user = entities["services"]
                .values()
                .find(|s| s["ca_certificates"].as_array().is_some_and(|ids| ids.contains(&id)));
            if let Some(service) = user {
                return Err(db_error(
                    19,
                    "referenced by others",
                    format!(
                        "ca certificate {} is still referenced by services (id = {})",
                        id.as_str().unwrap_or_default(),
                        service["id"].as_str().unwrap_or_default()
                    ),
                    None,
                ));
            }
        }
        // Children that cascade go with it; others forbid the delete.
        for child in kinds::all() {
            for (field, target, cascade) in child.foreign {
                if *target != kind.name {
                    continue;
                }
                for (cid, c) in &entities[child.name] {
                    if c[*field]["id"] != id {
                        continue;
                    }
                    if !cascade {
                        return Err(db_error(
                            4,
                            "foreign key violation",
                            format!(
                                "an existing '{}' entity references this '{}' entity",
                                child.name, kind.name
                            ),
                            Some(json!({ "@referenced_by": child.name })),
                        ));
                    }
                    ops.push(Op::Delete {
                        kind: child.name,
                        id: cid.clone(),
                    });
                }
            }
        }
        let mut candidate = Entities::clone(&entities);
        for op in &ops {
            if let Op::Delete { kind, id } = op {
                candidate.remove(kind, id);
            }
        }
        self.commit(candidate, &ops, |e| db_error(8, "database error", e.to_string(), None))
            .await
    }

    /// Applies a write, under the write lock: the proxy snapshot of `candidate` is built
    /// first (an invalid configuration is refused before anything is stored), then `ops` are
    /// stored, then `candidate` becomes what reads see and the snapshot goes live.
    async fn commit(
        &self,
        candidate: Entities,
        ops: &[Op],
        store_error: impl FnOnce(StoreError) -> ApiError,
    ) -> Result<(), ApiError> {
        let snapshot = self.build(&candidate).await?;
        let store = self.store.as_ref().ok_or_else(|| message(405, "Method not allowed"))?;
        store.write(ops).await.map_err(store_error)?;
        self.entities.store(Arc::new(candidate));
        self.proxy.swap(snapshot);
        Ok(())
    }

    /// The proxy snapshot for `entities`.
    async fn build(&self, entities: &Entities) -> Result<crate::gateway::Snapshot, ApiError> {
        let config = to_config(entities).map_err(|e| message(500, &e))?;
        config.snapshot(&self.plugins).await.map_err(|e| match e {
            crate::registry::LoadError::Invalid { violation: v, .. } => violation(v),
            other => message(400, &other.to_string()),
        })
    }
}

fn unique_violation(field: &str, value: &Value) -> ApiError {
    let text = format!("UNIQUE violation detected on '{}'", key_text(field, value));
    db_error(
        5,
        "unique constraint violation",
        text.clone(),
        Some(json!({ field: text })),
    )
}

fn lua_ref(v: &Value) -> String {
    match v["id"].as_str() {
        Some(id) => format!("{{id=\"{id}\"}}"),
        None => "null".into(),
    }
}

fn plugin_cache_key(p: &Value) -> String {
    format!(
        "{}:{}:{}:{}",
        p["name"].as_str().unwrap_or_default(),
        p["route"]["id"].as_str().unwrap_or_default(),
        p["service"]["id"].as_str().unwrap_or_default(),
        p["consumer"]["id"].as_str().unwrap_or_default()
    )
}

/// Kong's route subschema rules for http/https routes.
fn route_checks(route: &Value) -> Result<(), ApiError> {
    let protocols: Vec<&str> = route["protocols"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let set = |f: &str| match &route[f] {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    };
    let http = protocols.iter().any(|p| *p == "http" || *p == "https");
    if http {
        let https = protocols.contains(&"https");
        let (fields, names): (&[&str], &str) = if https {
            (
                &["methods", "hosts", "headers", "paths", "snis"],
                "'methods', 'hosts', 'headers', 'paths', 'snis'",
            )
        } else {
            (
                &["methods", "hosts", "headers", "paths"],
                "'methods', 'hosts', 'headers', 'paths'",
            )
        };
        if !fields.iter().any(|f| set(f)) {
            let which = if https { "https" } else { "http" };
            return Err(violation(SchemaViolation::new(
                [(
                    "@entity".to_owned(),
                    json!([format!("must set one of {names} when 'protocols' is '{which}'")]),
                )]
                .into_iter()
                .collect(),
            )));
        }
    }
    if set("snis")
        && !protocols
            .iter()
            .any(|p| matches!(*p, "grpcs" | "https" | "tls" | "tls_passthrough"))
    {
        return Err(field_violation(
            "snis",
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
        ));
    }
    if let Some(headers) = route["headers"].as_object() {
        if headers.keys().any(|k| k.eq_ignore_ascii_case("host")) {
            return Err(field_violation(
                "headers",
                "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
            ));
        }
    }
    Ok(())
}

/// The entity `key` (an id or the kind's endpoint key value).
fn find<'a>(entities: &'a Entities, kind: &Kind, key: &str) -> Option<&'a Value> {
    let all = &entities[kind.name];
    if Uuid::parse_str(key).is_ok() {
        if let Some(e) = all.get(&key.to_ascii_lowercase()) {
            return Some(e);
        }
    }
    let field = kind.endpoint_key?;
    all.values().find(|e| e[field].as_str() == Some(key)).map(|v| &**v)
}

fn allowed(segs: &[&str]) -> String {
    let methods: &[&str] = match segs {
        [] | ["status"] | ["endpoints"] => &["GET", "HEAD", "OPTIONS"],
        [_] => &["GET", "HEAD", "OPTIONS", "POST"],
        [_, _] => &["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "PUT"],
        [_, _, _] => &["GET", "HEAD", "OPTIONS", "POST"],
        _ => &["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "PUT"],
    };
    methods.join(", ")
}

fn endpoints(plugins: &Plugins) -> Value {
    let mut list = vec![
        "/".to_owned(),
        "/status".into(),
        "/plugins/enabled".into(),
        "/endpoints".into(),
    ];
    list.push("/schemas/plugins/validate".into());
    list.push("/schemas/plugins/{name}".into());
    for kind in kinds::all() {
        if kind.dao.is_some_and(|d| !plugins.contains(d.plugin)) {
            continue;
        }
        let (path, name) = (kind.path, kind.name);
        list.push(format!("/schemas/{name}"));
        list.push(format!("/{path}"));
        list.push(format!("/{path}/{{{name}}}"));
        for (field, target, _) in kind.foreign {
            let nested = kind.dao.map_or(name, |d| d.admin_api_nested_name);
            list.push(format!("/{path}/{{{name}}}/{field}"));
            list.push(format!("/{target}/{{{target}}}/{nested}"));
            list.push(format!("/{target}/{{{target}}}/{nested}/{{{name}}}"));
        }
    }
    list.sort();
    list.dedup();
    json!({ "data": list, "next": Value::Null })
}

/// Kong's opaque page offsets: the last id, URL-safe base64.
fn encode_offset(id: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

fn decode_offset(s: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()?;
    String::from_utf8(bytes).ok().filter(|s| Uuid::parse_str(s).is_ok())
}

/// The whole request body, up to 10 MiB (413 beyond).
async fn collect_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    const MAX_BODY: usize = 10 * 1024 * 1024;
    Ok(http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| message(413, "Payload too large"))?
        .to_bytes())
}

/// Reads a request body as Kong does: JSON or form-encoded (`true` when form-encoded, whose
/// values still need typing); an empty body is `{}`.
async fn read<B>(body: B, headers: &http::HeaderMap) -> Result<(Value, bool), ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let types: Vec<&HeaderValue> = headers.get_all(http::header::CONTENT_TYPE).iter().collect();
    if types.len() > 1 {
        return Err(message(400, "Multiple Content-Type headers not allowed"));
    }
    let bytes = collect_body(body).await?;
    if bytes.is_empty() {
        return Ok((Value::Object(Map::new()), false));
    }
    let ctype = types
        .first()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match ctype.as_str() {
        "application/json" => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => Ok((v, false)),
            _ => Err(message(400, "Cannot parse JSON body")),
        },
        "application/x-www-form-urlencoded" => {
            let text = String::from_utf8_lossy(&bytes);
            Ok((Value::Object(args::form(&text)), true))
        }
        "multipart/form-data" => {
            let full = types.first().and_then(|v| v.to_str().ok()).unwrap_or_default();
            let boundary = full
                .split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
                .map(|b| b.trim_matches('"'))
                .ok_or_else(|| message(400, "Cannot parse multipart body"))?;
            let form = args::multipart(&bytes, boundary).ok_or_else(|| message(400, "Cannot parse multipart body"))?;
            Ok((Value::Object(form), true))
        }
        _ => Err(ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, Value::Null)),
    }
}

/// Every entity `store` holds, by kind and id.
async fn load_entities(store: &Store) -> Result<Entities, String> {
    let mut entities = empty_entities();
    for (kind, value) in store.load().await.map_err(|e| e.to_string())? {
        let Some(k) = kinds::get(&kind) else { continue };
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        entities.put(k.name, id, value);
    }
    Ok(entities)
}

fn empty_entities() -> Entities {
    Entities(kinds::all().iter().map(|k| (k.name, Arc::default())).collect())
}

/// The entities of a declarative configuration, in the Admin API's shape.
fn entities_of(config: &Config) -> Entities {
    let mut entities = empty_entities();
    fn put<T: serde::Serialize>(entities: &mut Entities, kind: &'static str, items: &[T]) {
        for item in items {
            if let Ok(v) = serde_json::to_value(item) {
                let id = v["id"].as_str().unwrap_or_default().to_owned();
                entities.put(kind, id, v);
            }
        }
    }
    put(&mut entities, "services", &config.services);
    put(&mut entities, "routes", &config.routes);
    put(&mut entities, "consumers", &config.consumers);
    put(&mut entities, "certificates", &config.certificates);
    put(&mut entities, "ca_certificates", &config.ca_certificates);
    put(&mut entities, "snis", &config.snis);
    put(&mut entities, "upstreams", &config.upstreams);
    put(&mut entities, "targets", &config.targets);
    for (kind, items) in &config.daos {
        let Some(k) = kinds::get(kind) else { continue };
        put(&mut entities, k.name, items);
    }
    let fk = |id: Option<Uuid>| id.map_or(Value::Null, |id| json!({ "id": id.to_string() }));
    for p in &config.plugins {
        let v = json!({
            "id": p.id.to_string(),
            "name": p.name,
            "route": fk(p.scope.route),
            "service": fk(p.scope.service),
            "consumer": fk(p.scope.consumer),
            "config": p.config,
            "enabled": p.enabled,
        });
        entities.put("plugins", p.id.to_string(), v);
    }
    entities
}

/// The declarative configuration of `entities` (what the proxy snapshot is built from).
fn to_config(entities: &Entities) -> Result<Config, String> {
    fn all<T: serde::de::DeserializeOwned>(entities: &Entities, kind: &str) -> Result<Vec<T>, String> {
        entities[kind]
            .values()
            .map(|v| T::deserialize(&**v).map_err(|e| format!("{kind}: {e}")))
            .collect()
    }
    let uuid_of = |v: &Value| v["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let plugins = entities["plugins"]
        .values()
        .map(|p| PluginEntity {
            id: uuid_of(p).unwrap_or_default(),
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            scope: Scope {
                route: uuid_of(&p["route"]),
                service: uuid_of(&p["service"]),
                consumer: uuid_of(&p["consumer"]),
            },
            config: p["config"].clone(),
            enabled: p["enabled"].as_bool().unwrap_or(true),
        })
        .collect();
    Ok(Config {
        services: all::<Service>(entities, "services")?,
        routes: all::<Route>(entities, "routes")?,
        consumers: all::<Consumer>(entities, "consumers")?,
        plugins,
        certificates: all::<Certificate>(entities, "certificates")?,
        ca_certificates: all::<CaCertificate>(entities, "ca_certificates")?,
        snis: all::<Sni>(entities, "snis")?,
        upstreams: all::<Upstream>(entities, "upstreams")?,
        targets: all::<Target>(entities, "targets")?,
        daos: kinds::all()
            .iter()
            .filter(|k| k.dao.is_some())
            .map(|k| {
                (
                    k.name.to_owned(),
                    entities[k.name].values().map(|v| Value::clone(v)).collect(),
                )
            })
            .collect(),
    })
}
