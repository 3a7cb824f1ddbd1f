//! Entities as declarative configuration (Kong's `kong/api/routes/config.lua` and
//! `db_export`): `GET`/`POST /config`, the store's entities loaded, and the conversions
//! between entities and [`Config`].

use super::*;

impl Admin {
    /// The current entities as a declarative configuration (`kong config db_export`): what a
    /// DB-less node would be started with to serve the same traffic.
    pub async fn export(&self) -> Result<Config, String> {
        to_config(&self.entities.load())
    }

    /// The current entities as a declarative configuration (YAML), `GET /config`.
    pub(super) async fn config_yaml(&self) -> String {
        let entities = self.entities.load_full();
        let mut doc = Map::new();
        doc.insert("_format_version".into(), Value::from("3.0"));
        // Entities as stored, transformations applied (hashed passwords stay as they are).
        doc.insert("_transform".into(), Value::Bool(false));
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
    pub(super) async fn load_config(&self, headers: &http::HeaderMap, bytes: &[u8], flatten: bool) -> ApiResult {
        let full_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let ctype = full_type.to_ascii_lowercase();
        // Kong's `hydrate_config_from_request`: a JSON body that is the configuration itself,
        // else a `config` argument (JSON, form or multipart, as `-F config=@kong.yml` sends
        // it), else the raw body (YAML or JSON).
        let argument = if ctype.starts_with("application/json") {
            match serde_json::from_slice::<Value>(bytes) {
                Ok(v) if v.get("_format_version").is_some() => Some(v.to_string()),
                Ok(v) => v.get("config").and_then(Value::as_str).map(str::to_owned),
                Err(_) => None,
            }
        } else if ctype.starts_with("application/x-www-form-urlencoded") {
            let form = args::form(&String::from_utf8_lossy(bytes));
            form.get("config").and_then(Value::as_str).map(str::to_owned)
        } else if ctype.starts_with("multipart/form-data") {
            let boundary = full_type
                .split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
                .map(|b| b.trim_matches('"'));
            boundary
                .and_then(|b| args::multipart(bytes, b))
                .and_then(|form| form.get("config").and_then(Value::as_str).map(str::to_owned))
        } else {
            None
        };
        let text = match argument {
            Some(text) => text,
            None if !bytes.is_empty() && !ctype.starts_with("multipart/form-data") => {
                String::from_utf8_lossy(bytes).into_owned()
            }
            None => return Err(message(400, "expected a declarative configuration")),
        };
        let invalid = |fields: Value| {
            let text = serde_json::to_string(&fields).unwrap_or_default();
            db_error(
                Code::DeclarativeConfig,
                format!("declarative config is invalid: {text}"),
                Some(fields),
            )
        };
        let config = Config::parse_for(&text, &self.plugins).map_err(|e| {
            let mut answer = invalid(e.fields.clone());
            if flatten && let Value::Object(body) = &mut answer.1 {
                let given: Value = serde_yaml_ng::from_str(&text).unwrap_or(Value::Null);
                body.insert("flattened_errors".into(), Value::from(e.flattened(&given)));
            }
            answer
        })?;
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
        self.go_live(entities, snapshot);
        Ok((StatusCode::CREATED, Value::Object(body)))
    }
}

/// Every entity `store` holds, by kind and id.
pub(super) async fn load_entities(store: &Store) -> Result<Entities, String> {
    let mut entities = empty_entities();
    for (kind, value) in store.load().await.map_err(|e| e.to_string())? {
        let Some(k) = kinds::get(&kind) else { continue };
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        entities.put(k.name, id, value);
    }
    Ok(entities)
}

pub(super) fn empty_entities() -> Entities {
    Entities(
        kinds::all().iter().map(|k| (k.name, Arc::default())).collect(),
        Default::default(),
    )
}

/// The entities of a declarative configuration, in the Admin API's shape.
pub(super) fn entities_of(config: &Config) -> Entities {
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
        let mut v = json!({
            "id": p.id.to_string(),
            "name": p.name,
            "route": fk(p.scope.route),
            "service": fk(p.scope.service),
            "consumer": fk(p.scope.consumer),
            "config": p.config,
            "enabled": p.enabled,
            "ordering": p.ordering.as_ref().map(crate::executor::Ordering::to_json),
            "instance_name": p.instance_name,
            "tags": p.tags,
        });
        if let Some(protocols) = &p.protocols {
            v["protocols"] = json!(protocols);
        }
        entities.put("plugins", p.id.to_string(), v);
    }
    entities
}

/// The declarative configuration of `entities` (what the proxy snapshot is built from): the
/// typed forms cloned, nothing parsed.
pub(super) fn to_config(entities: &Entities) -> Result<Config, String> {
    fn all<T: TypedKind>(entities: &Entities, kind: &str) -> Result<Vec<T>, String> {
        entities[kind]
            .values()
            .map(|e| match &e.typed {
                Ok(typed) => T::of(typed)
                    .cloned()
                    .ok_or_else(|| format!("{kind}: not a {kind} entity")),
                Err(e) => Err(e.clone()),
            })
            .collect()
    }
    Ok(Config {
        services: all(entities, "services")?,
        routes: all(entities, "routes")?,
        consumers: all(entities, "consumers")?,
        plugins: all(entities, "plugins")?,
        certificates: all(entities, "certificates")?,
        ca_certificates: all(entities, "ca_certificates")?,
        snis: all(entities, "snis")?,
        upstreams: all(entities, "upstreams")?,
        targets: all(entities, "targets")?,
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
