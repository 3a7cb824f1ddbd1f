//! Declarative configuration (`kong.yml`, format 3.0): services, routes, consumers and
//! plugins, nested or at top level, referencing each other by id or name.
//!
//! ```
//! use kong_pdk::gateway::declarative::Config;
//!
//! let yml = r#"
//! _format_version: "3.0"
//! services:
//! - name: example_service
//!   url: http://127.0.0.1:15555
//!   routes:
//!   - name: example_route
//!     paths: ["/mock"]
//!   plugins:
//!   - name: my-plugin
//!     config: { response_header_name: X-CustomHeaderName }
//! "#;
//! let config = Config::parse(yml).unwrap();
//! assert_eq!(config.services[0].port, 15555);
//! assert_eq!(config.routes[0].service.unwrap().id, config.services[0].id);
//! assert_eq!(config.plugins[0].scope.service, Some(config.services[0].id));
//! // Ids are deterministic: parsing again gives the same ones.
//! assert_eq!(Config::parse(yml).unwrap().services[0].id, config.services[0].id);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::Snapshot;
use super::tls::Certificates;
use crate::dao::{DaoMeta, DataStore};
use crate::entities::{CaCertificate, Certificate, Consumer, ForeignKey, Route, Service, Sni, Target, Upstream};
use crate::executor::{PluginEntity, PluginSet};
use crate::registry::{LoadError, Plugins, Scope};
use crate::router::Router;

/// The namespace of the deterministic ids of entities declared without one.
const NAMESPACE: Uuid = Uuid::from_u128(0x6b6f_6e67_2d70_646b_8000_0000_0000_0001);

/// A parsed declarative configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Services.
    pub services: Vec<Service>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Consumers.
    pub consumers: Vec<Consumer>,
    /// Plugin instances.
    pub plugins: Vec<PluginEntity>,
    /// TLS certificates.
    pub certificates: Vec<Certificate>,
    /// Trusted CA certificates, for verifying upstreams.
    pub ca_certificates: Vec<CaCertificate>,
    /// Server names, each pointing at a certificate.
    pub snis: Vec<Sni>,
    /// Upstreams (load balancers).
    pub upstreams: Vec<Upstream>,
    /// Their targets.
    pub targets: Vec<Target>,
    /// Plugin entities ([`crate::dao`](mod@crate::dao)) by kind name, as stored: each with `id`, `consumer:
    /// {id}` and its fields validated.
    pub daos: BTreeMap<String, Vec<Value>>,
}

/// Why a declarative configuration is invalid: Kong's error tree by entity.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// `{"services": [{"url": "..."}], ...}`-shaped details, or a message.
    pub fields: Value,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "declarative config is invalid: {}", self.fields)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// Kong's `flattened_errors` (`POST /config?flatten_errors=1`): one entry per entity with
    /// problems, nested entities (a service's routes) promoted to entries of their own, each
    /// with `entity_type`, `entity_id`, `entity_name`, `entity_tags`, `entity` (as `config`
    /// gave it) and `errors` (`{type: "field", field, message}` or `{type: "entity",
    /// message}`). Problems outside any entity come last, as entity errors of no type.
    pub fn flattened(&self, config: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        let Value::Object(tree) = &self.fields else {
            return out;
        };
        let mut loose = Vec::new();
        for (kind, errors) in tree {
            match (errors, config.get(kind)) {
                (Value::Object(by_index), Some(Value::Array(entities))) => {
                    flatten_kind(kind, by_index, entities, &mut out);
                }
                (errors, _) => add_errors(kind, errors, &mut loose),
            }
        }
        if !loose.is_empty() {
            out.push(serde_json::json!({ "errors": loose }));
        }
        out
    }
}

/// The entries of `kind`'s entities (`by_index`: 1-based positions in `entities`).
fn flatten_kind(kind: &str, by_index: &Map<String, Value>, entities: &[Value], out: &mut Vec<Value>) {
    for (index, errors) in by_index {
        let entity = index
            .parse::<usize>()
            .ok()
            .and_then(|i| entities.get(i.wrapping_sub(1)))
            .unwrap_or(&Value::Null);
        let mut own = Vec::new();
        let mut nested = Vec::new();
        match errors {
            Value::Object(fields) => {
                for (field, e) in fields {
                    match (e, entity.get(field)) {
                        // A nested kind (a service's routes): entries of their own.
                        (Value::Object(inner), Some(Value::Array(children)))
                            if inner.keys().all(|k| k.parse::<usize>().is_ok()) =>
                        {
                            flatten_kind(field, inner, children, &mut nested);
                        }
                        _ => add_errors(field, e, &mut own),
                    }
                }
            }
            other => add_errors("@entity", other, &mut own),
        }
        if !own.is_empty() {
            let text = |f: &str| {
                entity
                    .get(f)
                    .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                    .cloned()
            };
            out.push(serde_json::json!({
                "entity_type": kind.strip_suffix('s').unwrap_or(kind),
                "entity_id": text("id"),
                "entity_name": text("name").or_else(|| text("username")),
                "entity_tags": entity.get("tags").filter(|t| t.is_array()).cloned(),
                "entity": entity,
                "errors": own,
            }));
        }
        out.extend(nested);
    }
}

/// Kong's `categorize_errors`: `@entity` messages, else field messages under their dotted
/// field name (`paths.1`).
fn add_errors(field: &str, errors: &Value, out: &mut Vec<Value>) {
    match errors {
        Value::String(message) if field == "@entity" || field.ends_with(".@entity") => {
            out.push(serde_json::json!({ "type": "entity", "message": message }))
        }
        Value::String(message) => out.push(serde_json::json!({ "type": "field", "field": field, "message": message })),
        Value::Array(list) => {
            for (i, e) in list.iter().enumerate() {
                let name = if field == "@entity" {
                    field.to_owned()
                } else {
                    format!("{field}.{}", i + 1)
                };
                if !e.is_null() {
                    add_errors(&name, e, out);
                }
            }
        }
        Value::Object(m) => {
            for (k, e) in m {
                let name = if k == "@entity" {
                    k.clone()
                } else {
                    format!("{field}.{k}")
                };
                add_errors(&name, e, out);
            }
        }
        _ => {}
    }
}

/// Kong's declarative validation of a core entity, as the Admin API validates it: a field the
/// kind's schema does not have (`unknown field`) and every field its schema refuses, in Kong's
/// words, all at once.
fn checked(kind: &str, record: &Map<String, Value>, path: &str) -> Result<(), ConfigError> {
    let Some(k) = super::kinds::get(kind) else {
        return Ok(());
    };
    let mut problems = Map::new();
    let mut known = Map::new();
    for (field, value) in record {
        if k.schema.field(field).is_none() {
            problems.insert(field.clone(), Value::from("unknown field"));
        } else {
            known.insert(field.clone(), value.clone());
        }
    }
    if let Err(Value::Object(refused)) = crate::schema::validate_record(&k.schema, &mut Value::Object(known)) {
        for (field, why) in refused {
            problems.entry(field).or_insert(why);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(err_tree(path, Value::Object(problems)))
    }
}

/// The problems of a configuration: every entity is checked, and all that is wrong with them
/// is reported at once, each under its entity's path.
#[derive(Default)]
struct Problems(Option<Value>);

impl Problems {
    fn add(&mut self, e: ConfigError) {
        match &mut self.0 {
            None => self.0 = Some(e.fields),
            Some(tree) => merge(tree, e.fields),
        }
    }

    /// `record` as a `T` when it is valid ([`checked`], then its typed form); else its
    /// problems are kept and `None` is returned.
    fn typed<T: serde::de::DeserializeOwned>(
        &mut self,
        kind: &str,
        record: Map<String, Value>,
        path: &str,
    ) -> Option<T> {
        if let Err(e) = checked(kind, &record, path) {
            self.add(e);
            return None;
        }
        match serde_json::from_value(Value::Object(record)) {
            Ok(t) => Some(t),
            Err(e) => {
                self.add(err(path, e.to_string()));
                None
            }
        }
    }

    /// `Ok` when nothing was wrong.
    fn into_result(self) -> Result<(), ConfigError> {
        match self.0 {
            None => Ok(()),
            Some(fields) => Err(ConfigError { fields }),
        }
    }
}

/// Adds the error tree `from` to `into` (the first message for a field stays).
fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            match a.get_mut(&k) {
                Some(existing) => merge(existing, v),
                None => {
                    a.insert(k, v);
                }
            }
        }
    }
}

/// `record` validated against the kind's schema and completed with its defaults (Kong's
/// declarative validation), as the Admin API would store it.
fn schema_checked(kind: &str, record: Map<String, Value>, path: &str) -> Result<Value, ConfigError> {
    let mut value = Value::Object(record);
    if let Some(k) = super::kinds::get(kind) {
        crate::schema::validate_record(&k.schema, &mut value).map_err(|tree| err_tree(path, tree))?;
    }
    Ok(value)
}

/// YAML (or JSON) text as a value.
fn parse_text(text: &str) -> Result<Value, ConfigError> {
    serde_yaml_ng::from_str(text).map_err(|e| err("", format!("failed parsing declarative configuration: {e}")))
}

/// Why the plugin entity at `path` was refused, at that path and in Kong's words.
fn plugin_problem(path: &str, e: LoadError) -> ConfigError {
    match e {
        LoadError::NotEnabled(name) | LoadError::NotInstalled(name) => err(
            &format!("{path}.name"),
            format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property"),
        ),
        LoadError::Invalid { violation, .. } => err_tree(path, violation.fields().clone()),
        LoadError::Route(message) => err(path, message),
    }
}

fn err(path: &str, message: impl Into<String>) -> ConfigError {
    err_tree(path, Value::String(message.into()))
}

/// An error whose details (a message, or a tree of them) sit at `path`.
fn err_tree(path: &str, mut v: Value) -> ConfigError {
    for part in path.split('.').rev().filter(|p| !p.is_empty()) {
        let mut m = Map::new();
        m.insert(part.to_owned(), v);
        v = Value::Object(m);
    }
    ConfigError { fields: v }
}

fn id_of(entity: &Map<String, Value>, kind: &str, key: Option<&str>, path: &str) -> Result<Uuid, ConfigError> {
    match entity.get("id") {
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| err(&format!("{path}.id"), "expected a valid UUID")),
        Some(_) => Err(err(&format!("{path}.id"), "expected a string")),
        None => Ok(match key {
            Some(k) => Uuid::new_v5(&NAMESPACE, format!("{kind}:{k}").as_bytes()),
            None => Uuid::new_v5(&NAMESPACE, format!("{kind}:{path}:{entity:?}").as_bytes()),
        }),
    }
}

/// A foreign key given as the bare id (`client_certificate: <uuid>`) in Kong's `{id}` shape.
fn foreign_by_id(entity: &mut Map<String, Value>, field: &str) {
    if let Some(v @ Value::String(_)) = entity.get_mut(field) {
        *v = serde_json::json!({ "id": v.take() });
    }
}

fn strip_meta(v: &mut Map<String, Value>) {
    v.retain(|k, _| k != "_comment" && k != "_ignore");
}

/// Expands a service's `url` shorthand into protocol, host, port and path (the message when
/// it is no URL).
pub(crate) fn expand_url(svc: &mut Map<String, Value>) -> Result<(), String> {
    let Some(url) = svc.remove("url") else { return Ok(()) };
    let url = url.as_str().ok_or("expected a string")?;
    if !url.contains("://") {
        // As Kong's URL parser reads it: no scheme and no host, all of it a (relative) path,
        // which the schema then refuses field by field.
        svc.remove("host");
        svc.insert("path".into(), Value::from(url));
        return Ok(());
    }
    for (k, v) in parse_url(url)? {
        svc.insert(k.into(), v);
    }
    Ok(())
}

/// Kong's `url` shorthand of a service: the `protocol`, `host`, `port` and (when the URL has
/// one) `path` fields it stands for.
pub(crate) fn parse_url(url: &str) -> Result<Vec<(&'static str, Value)>, String> {
    let (scheme, rest) = url.split_once("://").ok_or("missing scheme in url")?;
    let (authority, p) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    if authority.is_empty() {
        return Err("missing host in url".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("could not parse url. invalid port: {p}"))?,
        ),
        _ => (
            authority,
            if scheme == "https" || scheme == "grpcs" || scheme == "wss" {
                443
            } else {
                80
            },
        ),
    };
    let mut fields = vec![
        ("protocol", Value::from(scheme)),
        ("host", Value::from(host)),
        ("port", Value::from(port)),
    ];
    // The shorthand sets every part: a URL without a path clears one set before.
    fields.push(("path", p.map_or(Value::Null, Value::from)));
    Ok(fields)
}

struct Refs {
    services: HashMap<String, Uuid>,
    routes: HashMap<String, Uuid>,
    consumers: HashMap<String, Uuid>,
}

fn resolve(map: &HashMap<String, Uuid>, v: &Value, path: &str, entity: &str) -> Result<Uuid, ConfigError> {
    let key = match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("id").or_else(|| o.get("name")).or_else(|| o.get("username")) {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(err(path, "expected a reference")),
        },
        _ => return Err(err(path, "expected a reference")),
    };
    if let Ok(id) = key.parse::<Uuid>()
        && map.values().any(|v| *v == id)
    {
        return Ok(id);
    }
    map.get(&key).copied().ok_or_else(|| {
        err(
            path,
            format!("the foreign key cannot be resolved with '{{name=\"{key}\"}}' for an existing '{entity}' entity"),
        )
    })
}

impl Config {
    /// Parses YAML (or JSON, which is YAML) in Kong's declarative format.
    ///
    /// Plugin entities are read but their configs are not checked: [`Config::snapshot`] does
    /// that, or [`Config::parse_for`] up front.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_value(parse_text(text)?)
    }

    /// Parses YAML (or JSON) in Kong's declarative format and checks each plugin entity
    /// against `plugins` as well (enabled, its scope, its config's schema), so that every
    /// problem of the configuration, the entities' and the plugins', is reported at once,
    /// each at its entity's path, as Kong's `POST /config` does.
    ///
    /// ```
    /// use kong_pdk::gateway::declarative::Config;
    /// use kong_pdk::pdk::NodeInfo;
    /// use kong_pdk::registry::Plugins;
    ///
    /// let plugins = std::sync::Arc::new(Plugins::builder(NodeInfo::default()).build());
    /// let yml = "_format_version: \"3.0\"\nservices:\n- name: s\n  port: many\n  \
    ///            plugins:\n  - name: nope\n";
    /// let e = Config::parse_for(yml, &plugins).unwrap_err();
    /// assert_eq!(e.fields["services"]["1"]["port"], "expected an integer");
    /// assert_eq!(
    ///     e.fields["services"]["1"]["plugins"]["1"]["name"],
    ///     "plugin 'nope' not enabled; add it to the 'plugins' configuration property"
    /// );
    /// ```
    pub fn parse_for(text: &str, plugins: &Arc<Plugins>) -> Result<Config, ConfigError> {
        Config::read(parse_text(text)?, Some(plugins))
    }

    /// Reads a declarative configuration value (plugin configs unchecked, as
    /// [`Config::parse`]).
    pub fn from_value(value: Value) -> Result<Config, ConfigError> {
        Config::read(value, None)
    }

    /// Reads a declarative configuration value, its plugin entities checked against
    /// `plugins` (as [`Config::parse_for`]).
    pub fn from_value_for(value: Value, plugins: &Arc<Plugins>) -> Result<Config, ConfigError> {
        Config::read(value, Some(plugins))
    }

    fn read(value: Value, enabled_plugins: Option<&Arc<Plugins>>) -> Result<Config, ConfigError> {
        let flavor = enabled_plugins.map(|p| p.node().router_flavor).unwrap_or_default();
        let Value::Object(mut root) = value else {
            return Err(err("", "expected an object"));
        };
        match root.get("_format_version").and_then(Value::as_str) {
            Some("1.1" | "2.1" | "3.0") => {}
            Some(v) => {
                return Err(err(
                    "_format_version",
                    format!("expected one of: 1.1, 2.1, 3.0; got {v}"),
                ));
            }
            None => return Err(err("_format_version", "required field missing")),
        }
        // `_transform: false` (what exports say): entities are stored as given, their
        // transformations (hashed passwords) already applied.
        let transform = root.remove("_transform").and_then(|v| v.as_bool()).unwrap_or(true);
        strip_meta(&mut root);
        let mut cfg = Config::default();
        let mut problems = Problems::default();
        let mut refs = Refs {
            services: HashMap::new(),
            routes: HashMap::new(),
            consumers: HashMap::new(),
        };
        // Routes and plugins, with the parent they were nested under, resolved once every
        // entity they may reference is known.
        let mut routes: Vec<(Map<String, Value>, Option<Uuid>, String)> = Vec::new();
        let mut plugins: Vec<(Map<String, Value>, Scope, String)> = Vec::new();
        // Plugin entities, with the consumer they were nested under.
        let mut daos: Vec<NestedDao> = Vec::new();

        for (mut svc, path) in records(&mut root, "services", "")? {
            expand_url(&mut svc).map_err(|e| err(&format!("{path}.url"), e))?;
            foreign_by_id(&mut svc, "client_certificate");
            let name = svc.get("name").and_then(Value::as_str).map(str::to_owned);
            let id = id_of(&svc, "services", name.as_deref(), &path)?;
            svc.insert("id".into(), Value::from(id.to_string()));
            for (r, rpath) in records(&mut svc, "routes", &path)? {
                routes.push((r, Some(id), rpath));
            }
            for (p, ppath) in records(&mut svc, "plugins", &path)? {
                plugins.push((
                    p,
                    Scope {
                        service: Some(id),
                        ..Scope::GLOBAL
                    },
                    ppath,
                ));
            }
            refs.services.insert(name.unwrap_or_else(|| id.to_string()), id);
            refs.services.insert(id.to_string(), id);
            if let Some(service) = problems.typed::<Service>("services", svc, &path) {
                cfg.services.push(service);
            }
        }
        for (r, path) in records(&mut root, "routes", "")? {
            routes.push((r, None, path));
        }
        for (mut r, parent, path) in routes {
            let service = match (parent, r.remove("service")) {
                (Some(id), _) => Some(id),
                (None, Some(Value::Null)) | (None, None) => None,
                (None, Some(v)) => Some(resolve(&refs.services, &v, &format!("{path}.service"), "services")?),
            };
            let name = r.get("name").and_then(Value::as_str).map(str::to_owned);
            let id = id_of(&r, "routes", name.as_deref(), &path)?;
            r.insert("id".into(), Value::from(id.to_string()));
            for (p, ppath) in records(&mut r, "plugins", &path)? {
                plugins.push((
                    p,
                    Scope {
                        route: Some(id),
                        ..Scope::GLOBAL
                    },
                    ppath,
                ));
            }
            refs.routes.insert(name.unwrap_or_else(|| id.to_string()), id);
            refs.routes.insert(id.to_string(), id);
            // The Admin API's route entity checks, on the route as its schema completes it.
            let mut full = Value::Object(r.clone());
            if let Some(k) = super::kinds::get("routes")
                && crate::schema::validate_record(&k.schema, &mut full).is_ok()
                && let Err(errors) = super::kinds::route_checks(&full, flavor)
            {
                problems.add(err_tree(&path, Value::Object(errors)));
                continue;
            }
            let Some(mut route) = problems.typed::<Route>("routes", r, &path) else {
                continue;
            };
            route.service = service.map(|id| ForeignKey { id });
            // A route of a service with problems of its own is not checked against it.
            let service_refused = service.is_some_and(|id| !cfg.services.iter().any(|s| s.id == id));
            if !service_refused && let Err(e) = ws_route(&route, &cfg.services, &path) {
                problems.add(e);
                continue;
            }
            cfg.routes.push(route);
        }
        for (mut c, path) in records(&mut root, "consumers", "")? {
            let username = c.get("username").and_then(Value::as_str).map(str::to_owned);
            let custom_id = c.get("custom_id").and_then(Value::as_str).map(str::to_owned);
            if username.is_none() && custom_id.is_none() {
                return Err(err(
                    &format!("{path}.@entity"),
                    "at least one of these fields must be non-empty: 'custom_id', 'username'",
                ));
            }
            let id = id_of(&c, "consumers", username.as_deref().or(custom_id.as_deref()), &path)?;
            c.insert("id".into(), Value::from(id.to_string()));
            for (p, ppath) in records(&mut c, "plugins", &path)? {
                plugins.push((
                    p,
                    Scope {
                        consumer: Some(id),
                        ..Scope::GLOBAL
                    },
                    ppath,
                ));
            }
            for meta in crate::dao::registered() {
                for (r, rpath) in records(&mut c, meta.name, &path)? {
                    daos.push((meta, r, Some(id), rpath));
                }
            }
            if let Some(u) = &username {
                refs.consumers.insert(u.clone(), id);
            }
            refs.consumers.insert(id.to_string(), id);
            if let Err(e) = checked("consumers", &c, &path) {
                problems.add(e);
                continue;
            }
            c.retain(|k, _| matches!(k.as_str(), "id" | "username" | "custom_id" | "tags"));
            if let Some(consumer) = problems.typed::<Consumer>("consumers", c, &path) {
                cfg.consumers.push(consumer);
            }
        }
        for (p, path) in records(&mut root, "plugins", "")? {
            plugins.push((p, Scope::GLOBAL, path));
        }
        for meta in crate::dao::registered() {
            for (r, path) in records(&mut root, meta.name, "")? {
                daos.push((meta, r, None, path));
            }
        }
        for (meta, r, parent, path) in daos {
            match dao_entity(meta, r, parent, &refs.consumers, &path, transform) {
                Ok(entity) => cfg.daos.entry(meta.name.to_owned()).or_default().push(entity),
                Err(e) => problems.add(e),
            }
        }
        let mut certificates = HashMap::new();
        let mut snis: Vec<(Map<String, Value>, Option<Uuid>, String)> = Vec::new();
        for (mut c, path) in records(&mut root, "certificates", "")? {
            let pem = c.get("cert").and_then(Value::as_str).map(str::to_owned);
            let id = id_of(&c, "certificates", pem.as_deref(), &path)?;
            c.insert("id".into(), Value::from(id.to_string()));
            if let Some(Value::Array(names)) = c.get_mut("snis") {
                // Kong accepts nested SNIs as names or as records.
                for name in names.iter_mut() {
                    if let Value::String(n) = name {
                        *name = serde_json::json!({ "name": n });
                    }
                }
            }
            for (sni, spath) in records(&mut c, "snis", &path)? {
                snis.push((sni, Some(id), spath));
            }
            certificates.insert(id.to_string(), id);
            if let Some(cert) = problems.typed::<Certificate>("certificates", c, &path) {
                cfg.certificates.push(cert);
            }
        }
        for (mut c, path) in records(&mut root, "ca_certificates", "")? {
            let pem = c.get("cert").and_then(Value::as_str).unwrap_or_default();
            let digest = crate::gateway::upstream_tls::check_ca_certificate(pem)
                .map_err(|(field, message)| err(&format!("{path}.{field}"), message))?;
            let id = id_of(&c, "ca_certificates", Some(&digest), &path)?;
            c.insert("id".into(), Value::from(id.to_string()));
            c.insert("cert_digest".into(), Value::from(digest));
            if let Some(ca) = problems.typed::<CaCertificate>("ca_certificates", c, &path) {
                cfg.ca_certificates.push(ca);
            }
        }
        let mut upstreams = HashMap::new();
        let mut targets: Vec<(Map<String, Value>, Option<Uuid>, String)> = Vec::new();
        for (mut u, path) in records(&mut root, "upstreams", "")? {
            let name = u.get("name").and_then(Value::as_str).map(str::to_owned);
            let id = id_of(&u, "upstreams", name.as_deref(), &path)?;
            u.insert("id".into(), Value::from(id.to_string()));
            for (t, tpath) in records(&mut u, "targets", &path)? {
                targets.push((t, Some(id), tpath));
            }
            foreign_by_id(&mut u, "client_certificate");
            Upstream::apply_shorthands(&mut u, None);
            if let Some(name) = &name {
                upstreams.insert(name.clone(), id);
            }
            upstreams.insert(id.to_string(), id);
            let u = match checked("upstreams", &u, &path).and_then(|()| schema_checked("upstreams", u, &path)) {
                Ok(u) => u,
                Err(e) => {
                    problems.add(e);
                    continue;
                }
            };
            match serde_json::from_value::<Upstream>(u) {
                Ok(upstream) => cfg.upstreams.push(upstream),
                Err(e) => problems.add(err(&path, e.to_string())),
            }
        }
        for (t, path) in records(&mut root, "targets", "")? {
            targets.push((t, None, path));
        }
        for (mut t, parent, path) in targets {
            let upstream = match (parent, t.remove("upstream")) {
                (Some(id), _) => id,
                (None, Some(v)) if !v.is_null() => resolve(&upstreams, &v, &format!("{path}.upstream"), "upstreams")?,
                (None, _) => return Err(err(&format!("{path}.upstream"), "required field missing")),
            };
            let key = format!(
                "{upstream}:{}",
                t.get("target").and_then(Value::as_str).unwrap_or_default()
            );
            let id = id_of(&t, "targets", Some(&key), &path)?;
            t.insert("id".into(), Value::from(id.to_string()));
            t.insert("upstream".into(), serde_json::json!({ "id": upstream.to_string() }));
            let t = match checked("targets", &t, &path).and_then(|()| schema_checked("targets", t, &path)) {
                Ok(t) => t,
                Err(e) => {
                    problems.add(e);
                    continue;
                }
            };
            match serde_json::from_value::<Target>(t) {
                Ok(target) => cfg.targets.push(target),
                Err(e) => problems.add(err(&path, e.to_string())),
            }
        }
        for (sni, path) in records(&mut root, "snis", "")? {
            snis.push((sni, None, path));
        }
        for (mut sni, parent, path) in snis {
            let certificate = match (parent, sni.remove("certificate")) {
                (Some(id), _) => id,
                (None, Some(v)) if !v.is_null() => {
                    resolve(&certificates, &v, &format!("{path}.certificate"), "certificates")?
                }
                (None, _) => return Err(err(&format!("{path}.certificate"), "required field missing")),
            };
            let name = sni.get("name").and_then(Value::as_str).map(str::to_owned);
            let id = id_of(&sni, "snis", name.as_deref(), &path)?;
            sni.insert("id".into(), Value::from(id.to_string()));
            sni.insert(
                "certificate".into(),
                serde_json::json!({ "id": certificate.to_string() }),
            );
            if let Some(sni) = problems.typed::<Sni>("snis", sni, &path) {
                cfg.snis.push(sni);
            }
        }
        // Plugins last, so that what they reference is known; their problems join the
        // entities' and all are reported at once.
        let mut set = enabled_plugins.map(|p| PluginSet::builder(p.clone()));
        'plugins: for (mut p, mut scope, path) in plugins {
            let Some(name) = p.get("name").and_then(Value::as_str).map(str::to_owned) else {
                problems.add(err(&format!("{path}.name"), "required field missing"));
                continue;
            };
            let mut generic = p.clone();
            for field in ["config", "protocols", "service", "route", "consumer"] {
                generic.remove(field);
            }
            if let Err(e) = checked("plugins", &generic, &path) {
                problems.add(e);
                continue;
            }
            for (field, map, entity) in [
                ("service", &refs.services, "services"),
                ("route", &refs.routes, "routes"),
                ("consumer", &refs.consumers, "consumers"),
            ] {
                if let Some(v) = p.get(field).filter(|v| !v.is_null()) {
                    let id = match resolve(map, v, &format!("{path}.{field}"), entity) {
                        Ok(id) => id,
                        Err(e) => {
                            problems.add(e);
                            continue 'plugins;
                        }
                    };
                    match field {
                        "service" => scope.service = Some(id),
                        "route" => scope.route = Some(id),
                        _ => scope.consumer = Some(id),
                    }
                }
            }
            let key = format!("{name}:{:?}:{:?}:{:?}", scope.route, scope.service, scope.consumer);
            let id = match id_of(&p, "plugins", Some(&key), &path) {
                Ok(id) => id,
                Err(e) => {
                    problems.add(e);
                    continue;
                }
            };
            let enabled = p.get("enabled").and_then(Value::as_bool).unwrap_or(true);
            let config = p.remove("config").unwrap_or(Value::Null);
            let ordering = p.get("ordering").and_then(crate::executor::Ordering::from_json);
            let strings = |field: &str| {
                p.get(field)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            };
            let mut entity = PluginEntity {
                id,
                name,
                scope,
                config,
                enabled,
                ordering,
                protocols: strings("protocols"),
                instance_name: p.get("instance_name").and_then(Value::as_str).map(str::to_owned),
                tags: strings("tags"),
            };
            if let (Some(set), Some(plugins)) = (&mut set, enabled_plugins) {
                if let Err(e) = set.add(entity.clone()) {
                    problems.add(plugin_problem(&path, e));
                    continue;
                }
                // Stored (and shown by the Admin API) as Kong stores it: completed with the
                // schema's defaults.
                if let Some(Ok(config)) = plugins
                    .schema(&entity.name)
                    .map(|s| s.validate_config(entity.config.clone()))
                {
                    entity.config = config;
                }
            }
            cfg.plugins.push(entity);
        }
        problems.into_result()?;
        Ok(cfg)
    }

    /// Builds the proxy snapshot: plugin configs validated against their schemas (an invalid
    /// one rejects the whole configuration), the router compiled, `configure` run.
    pub async fn snapshot(&self, plugins: &Arc<Plugins>) -> Result<Snapshot, LoadError> {
        let mut set = PluginSet::builder(plugins.clone());
        for p in &self.plugins {
            set.add(p.clone())?;
        }
        let set = set.build();
        let services: HashMap<Uuid, Arc<Service>> = self.services.iter().map(|s| (s.id, Arc::new(s.clone()))).collect();
        let routes = self.routes.iter().map(|r| {
            (
                Arc::new(r.clone()),
                r.service.and_then(|fk| services.get(&fk.id).cloned()),
            )
        });
        let router = Router::new(routes).map_err(|e| LoadError::Invalid {
            name: "routes".into(),
            violation: crate::schema::SchemaViolation::new(
                [("paths".to_owned(), Value::from(e.message))].into_iter().collect(),
            ),
        })?;
        let certificates =
            Certificates::new(&self.certificates, &self.snis).map_err(|(path, message)| LoadError::Invalid {
                name: "certificates".into(),
                violation: crate::schema::SchemaViolation::new([(path, Value::from(message))].into_iter().collect()),
            })?;
        let data = DataStore::new(&self.consumers, &self.daos).map_err(|e| LoadError::Invalid {
            name: "consumers".into(),
            violation: crate::schema::SchemaViolation::new(
                [("@entity".to_owned(), Value::from(e))].into_iter().collect(),
            ),
        })?;
        let upstream_tls = super::upstream_tls::UpstreamTls::new(
            &self.services,
            &self.ca_certificates,
            &self.certificates,
            &self.upstreams,
        );
        set.configure().await;
        Ok(Snapshot {
            router: Arc::new(router),
            plugins: Arc::new(set),
            certificates: Arc::new(certificates),
            upstreams: Arc::new(super::Balancers::new(
                &self.upstreams,
                &self.targets,
                &plugins.node().health,
            )),
            upstream_tls: Arc::new(upstream_tls),
            data: Arc::new(data),
        })
    }
}

/// Kong Enterprise's rules for a WebSocket route (`ws`/`wss`) and its service, as the Admin
/// API applies them: it needs a service, of its own kind, and names no methods.
fn ws_route(route: &Route, services: &[Service], path: &str) -> Result<(), ConfigError> {
    let ws = route.protocols.iter().any(|p| crate::runloop::is_ws(p));
    if ws && route.methods.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(err(
            &format!("{path}.methods"),
            "cannot set 'methods' when 'protocols' is 'ws' or 'wss'",
        ));
    }
    let service = route
        .service
        .as_ref()
        .and_then(|fk| services.iter().find(|s| s.id == fk.id));
    match service {
        None if ws => Err(err(
            &format!("{path}.service"),
            "WebSocket routes must be attached to a service",
        )),
        Some(s) if crate::runloop::is_ws(&s.protocol) != ws => {
            Err(err(&format!("{path}.protocols"), "route/service protocol mismatch"))
        }
        _ => Ok(()),
    }
}

/// A plugin entity of a declarative configuration, as stored: its consumer resolved, generated
/// fields filled in, validated against its schema, with a deterministic id.
fn dao_entity(
    meta: &DaoMeta,
    mut r: Map<String, Value>,
    parent: Option<Uuid>,
    consumers: &HashMap<String, Uuid>,
    path: &str,
    transform: bool,
) -> Result<Value, ConfigError> {
    let consumer = match (parent, r.remove("consumer")) {
        (Some(id), _) => id,
        (None, Some(v)) if !v.is_null() => resolve(consumers, &v, &format!("{path}.consumer"), "consumers")?,
        (None, _) => return Err(err(&format!("{path}.consumer"), "required field missing")),
    };
    meta.fill_auto(&mut r);
    let key = meta
        .cache_key
        .or(meta.endpoint_key)
        .and_then(|k| r.get(k))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let id = id_of(&r, meta.name, key.as_deref(), path)?;
    r.insert("id".into(), Value::from(id.to_string()));
    r.insert("consumer".into(), serde_json::json!({ "id": consumer.to_string() }));
    if let Some(f) = meta.transform.filter(|_| transform) {
        f(&mut r, None).map_err(|e| err_tree(path, serde_json::json!({ "@entity": [e] })))?;
    }
    let mut value = Value::Object(r);
    crate::schema::validate_record(&meta.schema, &mut value).map_err(|tree| err_tree(path, tree))?;
    Ok(value)
}

/// A plugin entity's record, the consumer it was nested under and its error path.
type NestedDao = (&'static DaoMeta, Map<String, Value>, Option<Uuid>, String);

/// An entity record and its error path.
type Record = (Map<String, Value>, String);

/// Removes the array `key` from `obj` and returns its records, each with its error path
/// (`services.1.routes.2`).
fn records(obj: &mut Map<String, Value>, key: &str, parent: &str) -> Result<Vec<Record>, ConfigError> {
    let prefix = if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    };
    let items = match obj.remove(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err(&prefix, "expected an array")),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("{prefix}.{}", i + 1);
            match item {
                Value::Object(mut m) => {
                    strip_meta(&mut m);
                    Ok((m, path))
                }
                _ => Err(err(&path, "expected a record")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::tls::CertificatePair;
    use crate::pdk::NodeInfo;

    fn pem(names: &[&str]) -> (String, String) {
        let (_, cert, key) = CertificatePair::self_signed(names).unwrap();
        (cert, key)
    }

    #[tokio::test]
    async fn certificates_with_nested_and_top_level_snis() {
        let (c1, k1) = pem(&["a.test"]);
        let (c2, k2) = pem(&["b.test"]);
        let yaml = serde_json::json!({
            "_format_version": "3.0",
            "certificates": [
                { "cert": c1, "key": k1, "snis": ["a.test", { "name": "*.a.test" }] },
                { "id": "6f1e8b4e-7c52-4b1c-9d2c-1f5a3e8b9c01", "cert": c2, "key": k2 },
            ],
            "snis": [{ "name": "b.test", "certificate": "6f1e8b4e-7c52-4b1c-9d2c-1f5a3e8b9c01" }],
        });
        let cfg = Config::from_value(yaml.clone()).unwrap();
        assert_eq!(cfg.certificates.len(), 2);
        let names: Vec<&str> = cfg.snis.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a.test", "*.a.test", "b.test"]);
        assert_eq!(cfg.snis[0].certificate.id, cfg.certificates[0].id);
        assert_eq!(cfg.snis[2].certificate.id, cfg.certificates[1].id);
        assert_eq!(
            Config::from_value(yaml).unwrap().certificates[0].id,
            cfg.certificates[0].id,
            "ids are deterministic"
        );
        let plugins = Arc::new(Plugins::builder(NodeInfo::default()).build());
        let snap = cfg.snapshot(&plugins).await.unwrap();
        assert!(snap.certificates.lookup("x.a.test").is_some());
        assert!(snap.certificates.lookup("c.test").is_none());
    }

    #[tokio::test]
    async fn a_bad_certificate_or_dangling_sni_rejects_the_config() {
        let (c1, _) = pem(&["a.test"]);
        let (_, k2) = pem(&["b.test"]);
        let mismatched = serde_json::json!({
            "_format_version": "3.0",
            "certificates": [{ "cert": c1, "key": k2 }],
        });
        let plugins = Arc::new(Plugins::builder(NodeInfo::default()).build());
        let err = Config::from_value(mismatched)
            .unwrap()
            .snapshot(&plugins)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("certificate does not match key"), "{err}");
        let dangling = serde_json::json!({
            "_format_version": "3.0",
            "snis": [{ "name": "x.test", "certificate": "nope" }],
        });
        let err = Config::from_value(dangling).unwrap_err();
        assert!(
            err.fields["snis"]["1"]["certificate"]
                .as_str()
                .unwrap()
                .starts_with("the foreign key cannot be resolved"),
            "{:?}",
            err.fields
        );
    }
}

#[cfg(test)]
mod ws_tests {
    use super::*;

    fn refused(yaml: &str) -> String {
        Config::parse(yaml).unwrap_err().fields.to_string()
    }

    /// A field the schema does not have is refused where it stands, as the Admin API refuses
    /// it; Kong's fields the typed form leaves out are accepted.
    #[test]
    fn unknown_fields_of_core_entities_are_refused() {
        let typo = refused(
            "_format_version: '3.0'\nservices:\n- url: http://a.test\n  routes:\n  - paths: [/a]\n    strip_paths: false\n",
        );
        assert!(
            typo.contains("services.0.routes.0.strip_paths") || typo.contains("strip_paths"),
            "{typo}"
        );
        assert!(typo.contains("unknown field"), "{typo}");
        let upstream = refused("_format_version: '3.0'\nupstreams:\n- name: u.test\n  algoritm: latency\n");
        assert!(
            upstream.contains("algoritm") && upstream.contains("unknown field"),
            "{upstream}"
        );
        let consumer = refused("_format_version: '3.0'\nconsumers:\n- username: bob\n  nickname: b\n");
        let slots = refused("_format_version: '3.0'\nupstreams:\n- name: u.test\n  slots: 4294967295\n");
        assert!(slots.contains("slots") && slots.contains("between"), "{slots}");
        assert!(consumer.contains("nickname"), "{consumer}");
        Config::parse(
            "_format_version: '3.0'\nservices:\n- url: http://a.test\n  write_timeout: 100\n  routes:\n  - paths: [/a]\n    path_handling: v0\n    request_buffering: true\nupstreams:\n- name: u.test\n  slots: 100\n  healthchecks: { threshold: 10 }\n  targets:\n  - target: 10.0.0.1\n    weight: 5\n",
        )
        .unwrap();
    }

    /// kong.yml follows the Admin API's rules for WebSocket routes (Kong Enterprise's).
    #[test]
    fn websocket_routes_need_a_websocket_service() {
        let ok = Config::parse(
            "_format_version: '3.0'\nservices:\n- url: ws://echo.test/chat\n  routes:\n  - protocols: [ws]\n    paths: [/chat]\n",
        )
        .unwrap();
        assert_eq!((ok.services[0].protocol.as_str(), ok.services[0].port), ("ws", 80));
        let mismatch = refused(
            "_format_version: '3.0'\nservices:\n- url: http://echo.test\n  routes:\n  - protocols: [ws]\n    paths: [/chat]\n",
        );
        assert!(mismatch.contains("route/service protocol mismatch"), "{mismatch}");
        let default_protocols =
            refused("_format_version: '3.0'\nservices:\n- url: wss://echo.test\n  routes:\n  - paths: [/chat]\n");
        assert!(
            default_protocols.contains("route/service protocol mismatch"),
            "{default_protocols}"
        );
        let alone = refused("_format_version: '3.0'\nroutes:\n- protocols: [wss]\n  paths: [/chat]\n");
        assert!(
            alone.contains("WebSocket routes must be attached to a service"),
            "{alone}"
        );
        let methods = refused(
            "_format_version: '3.0'\nservices:\n- url: ws://echo.test\n  routes:\n  - protocols: [ws]\n    paths: [/c]\n    methods: [GET]\n",
        );
        assert!(
            methods.contains("cannot set 'methods' when 'protocols' is 'ws' or 'wss'"),
            "{methods}"
        );
    }
}
