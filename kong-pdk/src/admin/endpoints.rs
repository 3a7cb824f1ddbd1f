//! The generic endpoints (Kong's `kong/api/endpoints.lua`): collections with pagination and
//! filters, single entities, nested ones, and the writes (create, upsert, update, delete with
//! cascades) with Kong's checks and errors.

use super::*;

impl Admin {
    /// `GET /S` and nested `GET /P/{p}/S`: a page of entities.
    pub(super) async fn list(
        &self,
        kind: &'static Kind,
        parent: Option<(&str, &Value)>,
        query: &str,
        path: &str,
    ) -> ApiResult {
        let args: Vec<(String, String)> = args::pairs(query).collect();
        let arg = |name: &str| args.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let size = match arg("size") {
            None => 100,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if (1..=1000).contains(&n) => n as usize,
                Ok(_) => {
                    return Err(db_error(
                        Code::InvalidSize,
                        "size must be an integer between 1 and 1000".into(),
                        None,
                    ));
                }
                Err(_) => return Err(db_error(Code::InvalidSize, "size must be a number".into(), None)),
            },
        };
        let after = match arg("offset") {
            None => None,
            Some(o) => Some(decode_offset(o).ok_or_else(|| {
                db_error(
                    Code::InvalidOffset,
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
            if let Some((field, id)) = parent
                && &e[field]["id"] != id
            {
                return false;
            }
            if let Some(c) = filter_custom_id
                && e["custom_id"].as_str() != Some(c)
            {
                return false;
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
                entities[kind.name].range::<_, String>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
            }
            None => entities[kind.name].range::<_, String>(..),
        };
        let t = now();
        for (_, e) in range {
            // Filters first: only what is shown is copied.
            let Some(e) = Some(e).filter(|e| matches(e)).and_then(|e| alive(e, t)) else {
                continue;
            };
            if page.len() == size {
                more = true;
                break;
            }
            page.push(self.shown(kind, e));
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
            // Only top-level collections carry the size on (Kong's endpoints.lua).
            if arg("size").is_some() && parent.is_none() {
                next.push_str(&format!("&size={size}"));
            }
            body["offset"] = Value::from(offset);
            body["next"] = Value::from(next);
        }
        Ok((StatusCode::OK, body))
    }

    /// `/S/{key}` and `/P/{p}/S/{key}`: GET, PUT, PATCH, DELETE.
    pub(super) async fn one(
        &self,
        kind: &'static Kind,
        key: &str,
        parent: Option<(&'static str, Value)>,
        method: Method,
        body: Option<Value>,
    ) -> ApiResult {
        let current = |entities: &Entities| {
            // A nested path only reaches children of that parent.
            find(entities, kind, key, parent.as_ref().map(|(f, id)| (*f, id))).and_then(|e| alive(e, now()))
        };
        // Kong's certificates endpoint takes the name of one of the certificate's SNIs for
        // the certificate; a name no SNI has is `SNI not found`, except to a PUT, which creates
        // a certificate with that name among its SNIs (Kong's `prepare_params`).
        let sni_name =
            (kind.name == "certificates" && parent.is_none() && Uuid::parse_str(key).is_err()).then_some(key);
        let not_found = || {
            message(
                404,
                if sni_name.is_some() {
                    "SNI not found"
                } else {
                    "Not found"
                },
            )
        };
        if matches!(method, Method::GET | Method::HEAD) {
            return current(&self.entities.load())
                .map(|e| (StatusCode::OK, self.shown(kind, e)))
                .ok_or_else(not_found);
        }
        // A write reads what it changes under the write lock, so it builds on the last
        // acknowledged write and never undoes one (a PATCH of one field keeps another's, a
        // PATCH racing a DELETE does not bring the entity back).
        let write = self.writes.lock().await;
        let existing = current(&self.entities.load());
        match method {
            Method::DELETE => match existing {
                Some(e) => {
                    self.delete(&write, kind, &e).await?;
                    Ok((StatusCode::NO_CONTENT, Value::Null))
                }
                // A nested entity that is not there is a 404; a top-level one is not.
                None if parent.is_some() || sni_name.is_some() => Err(not_found()),
                None => Ok((StatusCode::NO_CONTENT, Value::Null)),
            },
            Method::PATCH => {
                let Some(existing) = existing else {
                    return Err(not_found());
                };
                let Some(Value::Object(mut patch)) = body else {
                    return Err(message(400, "Cannot parse JSON body"));
                };
                // A plugin's config merges with the stored one, record by record (Kong's
                // `merge_values`), after its deprecated aliases moved to their fields.
                let schema = (kind.name == "plugins")
                    .then(|| existing["name"].as_str().and_then(|n| self.plugins.schema(n)))
                    .flatten();
                if let (Some(schema), Some(config)) = (schema, patch.get_mut("config")) {
                    schema.expand_shorthands(config).map_err(violation)?;
                }
                let mut merged = existing.clone();
                for (k, v) in patch {
                    match (merged.get_mut(&k), v, schema) {
                        (Some(Value::Object(old)), Value::Object(new), Some(schema)) if k == "config" => {
                            crate::schema::merge_records(&schema.config, old, new);
                        }
                        (_, v, _) => {
                            merged[&k] = v;
                        }
                    }
                }
                if let Some((field, id)) = &parent {
                    merged[*field] = json!({ "id": id });
                }
                merged["updated_at"] = Value::from(now());
                self.save(&write, kind, merged, Some(&existing), StatusCode::OK).await
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
                if Uuid::parse_str(key).is_err()
                    && let Some(endpoint_key) = kind.endpoint_key
                {
                    entity.insert(endpoint_key.into(), Value::from(key));
                }
                entity.insert("id".into(), id);
                if kind.name == "certificates" {
                    put_certificate_snis(&mut entity, sni_name);
                }
                if let Some((field, pid)) = &parent {
                    entity.insert((*field).into(), json!({ "id": pid }));
                }
                let created = existing
                    .as_ref()
                    .map_or_else(now, |e| e["created_at"].as_i64().unwrap_or_else(now));
                entity.insert("created_at".into(), Value::from(created));
                entity.insert("updated_at".into(), Value::from(now()));
                self.save(&write, kind, Value::Object(entity), existing.as_ref(), StatusCode::OK)
                    .await
            }
            _ => Err(message(405, "Method not allowed")),
        }
    }

    pub(super) async fn create(
        &self,
        kind: &'static Kind,
        body: Value,
        parent: Option<(&'static str, Value)>,
    ) -> ApiResult {
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
        let write = self.writes.lock().await;
        self.save(&write, kind, Value::Object(entity), None, StatusCode::CREATED)
            .await
    }

    /// Validates `value` as a `kind` entity: url shorthand, schema, foreign keys, plugin
    /// configs, certificate pairs. Returns the entity as stored.
    pub(super) fn prepare(
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
        if kind.name == "upstreams" {
            crate::entities::Upstream::apply_shorthands(&mut obj, previous);
        }
        if let Some(id) = obj.get("id")
            && id.as_str().is_none_or(|s| Uuid::parse_str(s).is_err())
        {
            return Err(field_violation("id", "expected a valid UUID"));
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
                            Code::ForeignKeyViolation,
                            text.clone(),
                            Some(json!({ *field: text })),
                        ));
                    }
                    id.to_owned()
                }
                // Without a primary key, Kong resolves by the target's endpoint key only.
                Value::Object(m) if target.endpoint_key.is_some_and(|ek| m.contains_key(ek)) => {
                    let k = target.endpoint_key.expect("checked");
                    let v = &m[k];
                    let found = match v.as_str().and_then(|name| entities.by_name(target.name, name)) {
                        Some(found) => found.map(|e| &e.json),
                        None => entities[target.name]
                            .values()
                            .find(|e| e.get(k) == Some(v))
                            .map(|e| &e.json),
                    };
                    match found {
                        Some(e) => e["id"].as_str().unwrap_or_default().to_owned(),
                        None => {
                            let text = format!(
                                "the foreign key cannot be resolved with '{}' for an existing '{}' entity",
                                key_text(k, v),
                                target.name
                            );
                            return Err(db_error(
                                Code::ForeignKeysUnresolved,
                                format!("foreign key unresolved ({field}.{k}: {text})"),
                                Some(json!({ *field: { k: text } })),
                            ));
                        }
                    }
                }
                Value::Object(_) => {
                    let errors = [((*field).to_owned(), json!({ "id": "missing primary key" }))];
                    return Err(violation(SchemaViolation::new(errors.into_iter().collect())));
                }
                _ => return Err(field_violation(field, "expected a record")),
            };
            obj.insert((*field).into(), json!({ "id": resolved }));
        }
        if let Some(transform) = kind.dao.and_then(|d| d.transform) {
            transform(&mut obj, previous).map_err(|e| {
                violation(SchemaViolation::new(
                    [("@entity".to_owned(), json!([e]))].into_iter().collect(),
                ))
            })?;
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
            "routes" => {
                route_checks(&value, self.plugins.node().router_flavor)?;
                ws_route_service(&value, entities)?;
            }
            "services" => ws_service_change(&value, previous)?,
            // Stored as Kong formats it: `host:port`, the port 8000 when omitted.
            "targets" => {
                if let Some(t) = value["target"].as_str().map(crate::gateway::format_target) {
                    value["target"] = Value::from(t);
                }
            }
            // A vault reference is checked when the configuration loads (Kong's referenceable
            // fields skip their validation).
            "certificates"
                if ["cert", "key", "cert_alt", "key_alt"]
                    .iter()
                    .any(|f| value[*f].as_str().is_some_and(|s| crate::vault::Vault.is_reference(s))) => {}
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
    pub(super) fn validate_plugin(&self, value: &mut Value, t: i64) -> Result<(), ApiError> {
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
    pub(super) async fn save(
        &self,
        _write: &WriteLock<'_>,
        kind: &'static Kind,
        value: Value,
        previous: Option<&Value>,
        status: StatusCode,
    ) -> ApiResult {
        let entities = self.entities.load_full();
        let mut value = value;
        // Kong's certificates DAO: `snis`, a list of names, is not stored with the
        // certificate but as the SNI entities that point at it.
        let sni_names = match kind.name {
            "certificates" => certificate_snis(&mut value)?,
            _ => None,
        };
        let value = self.prepare(kind, value, previous, &entities)?;
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        if previous.is_none() && entities[kind.name].contains_key(&id) && status == StatusCode::CREATED {
            let text = format!("primary key violation on key '{}'", key_text("id", &value["id"]));
            return Err(db_error(
                Code::PrimaryKeyViolation,
                text.clone(),
                Some(json!({ "id": text })),
            ));
        }
        // Unique fields are the store's to enforce (its `unique_keys`, one index lookup, and
        // the same across the nodes of a database): a taken value comes back as the store's
        // refusal, answered with Kong's error for it.
        let mut unique: Vec<(&'static str, String)> = kind
            .unique
            .iter()
            .filter_map(|field| Some((*field, value[*field].as_str()?.to_owned())))
            .collect();
        let together = kind.dao.map(|d| d.unique_together).filter(|t| !t.is_empty());
        if let Some(together) = together {
            // Kong's composite cache key: these fields together are unique.
            let part = |f: &str| match f {
                "consumer" => value["consumer"]["id"].to_string(),
                f => value[f].to_string(),
            };
            unique.push((
                "cache_key",
                together.iter().map(|f| part(f)).collect::<Vec<_>>().join(":"),
            ));
        }
        if kind.name == "plugins" {
            let scoping_changed =
                previous.is_none_or(|p| ["protocols", "route", "service"].iter().any(|f| p[*f] != value[*f]));
            if scoping_changed {
                protocols_match(&value, &entities)?;
            }
            unique.push(("cache_key", plugin_cache_key(&value)));
        }
        let mut candidate = Entities::clone(&entities);
        candidate.put(kind.name, id.clone(), value.clone());
        let mut ops = vec![Op::Put {
            kind: kind.name,
            id: id.clone(),
            data: value.clone(),
            unique,
        }];
        if let Some(names) = &sni_names {
            sni_ops(names, &id, &entities, &mut candidate, &mut ops)?;
        }
        self.commit(candidate, &ops, |e| match e {
            StoreError::Unique(_, field, _) if field == "cache_key" && kind.name == "plugins" => {
                plugin_violation(&value)
            }
            StoreError::Unique(_, field, _) if field == "cache_key" => {
                together_violation(together.unwrap_or_default(), &value)
            }
            StoreError::Unique(_, field, v) => unique_violation(&field, &Value::from(v)),
            StoreError::Database(e) => db_error(Code::DatabaseError, e, None),
        })
        .await?;
        Ok((status, self.shown(kind, value)))
    }

    /// An entity as the Admin API answers it: a plugin's config with the deprecated alias
    /// fields of its schema (Kong's shorthands, shown with their replacements' values).
    pub(super) fn shown(&self, kind: &Kind, mut entity: Value) -> Value {
        if kind.name == "plugins"
            && let Some(schema) = entity["name"].as_str().and_then(|n| self.plugins.schema(n))
        {
            schema.show_shorthands(&mut entity["config"]);
        }
        // Kong's `select_with_name_list` and `page`: a certificate shows its SNIs' names.
        if kind.name == "certificates"
            && let Some(id) = entity["id"].as_str().map(str::to_owned)
        {
            entity["snis"] = Value::from(snis_of(&self.entities.load(), &id));
        }
        entity
    }

    pub(super) async fn delete(
        &self,
        _write: &WriteLock<'_>,
        kind: &'static Kind,
        entity: &Value,
    ) -> Result<(), ApiError> {
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
                    Code::ReferencedByOthers,
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
                            Code::ForeignKeyViolation,
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
        self.commit(candidate, &ops, |e| db_error(Code::DatabaseError, e.to_string(), None))
            .await
    }

    /// Applies a write, under the write lock: the proxy snapshot of `candidate` is built
    /// first (an invalid configuration is refused before anything is stored), then `ops` are
    /// stored, then `candidate` becomes what reads see and the snapshot goes live.
    pub(super) async fn commit(
        &self,
        candidate: Entities,
        ops: &[Op],
        store_error: impl FnOnce(StoreError) -> ApiError,
    ) -> Result<(), ApiError> {
        let snapshot = match self.data_changed(&candidate, ops) {
            Some(data) => self.proxy.snapshot().with_data(Arc::new(data?)),
            None => self.build(&candidate).await?,
        };
        let store = self.store.as_ref().ok_or_else(|| message(405, "Method not allowed"))?;
        store.write(ops).await.map_err(store_error)?;
        self.go_live(candidate, snapshot);
        Ok(())
    }

    /// When `ops` change only consumers and plugin entities (what `kong.db()` reads), the
    /// live snapshot's data with them applied: the router, plugins and upstreams stay, and
    /// the write costs what it touches, however many entities there are. `None` for any
    /// other write, which rebuilds the snapshot.
    fn data_changed(&self, candidate: &Entities, ops: &[Op]) -> Option<Result<crate::dao::DataStore, ApiError>> {
        use crate::dao::DataChange;
        let data_kind = |kind: &str| kind == "consumers" || kinds::get(kind).is_some_and(|k| k.dao.is_some());
        let mut changes = Vec::with_capacity(ops.len());
        for op in ops {
            let change = match op {
                Op::Put { kind, id, .. } if data_kind(kind) => {
                    let entity = candidate[kind].get(id)?;
                    match &entity.typed {
                        Ok(Typed::Consumer(c)) => DataChange::PutConsumer(c),
                        Ok(Typed::Dao) => DataChange::Put(kind, &entity.json),
                        // A consumer that does not parse: the full build reports it.
                        _ => return None,
                    }
                }
                Op::Delete { kind, id } if data_kind(kind) => {
                    let id = Uuid::parse_str(id).ok()?;
                    if *kind == "consumers" {
                        DataChange::RemoveConsumer(id)
                    } else {
                        DataChange::Remove(kind, id)
                    }
                }
                _ => return None,
            };
            changes.push(change);
        }
        let live = self.proxy.snapshot();
        Some(live.data.changed(&changes).map_err(|e| {
            violation(SchemaViolation::new(
                [("@entity".to_owned(), Value::from(e))].into_iter().collect(),
            ))
        }))
    }

    /// The proxy snapshot for `entities`.
    pub(super) async fn build(&self, entities: &Entities) -> Result<crate::gateway::Snapshot, ApiError> {
        let config = to_config(entities).map_err(|e| message(500, &e))?;
        config.snapshot(&self.plugins).await.map_err(|e| match e {
            crate::registry::LoadError::Invalid { violation: v, .. } => violation(v),
            other => message(400, &other.to_string()),
        })
    }
}

/// Takes a certificate's `snis` (a list of names, or one name) out of `value`, checked as
/// Kong's certificates DAO checks it: names as SNI names, none twice. `None` when not given.
fn certificate_snis(value: &mut Value) -> Result<Option<Vec<String>>, ApiError> {
    let Some(given) = value.as_object_mut().and_then(|o| o.remove("snis")) else {
        return Ok(None);
    };
    let names: Vec<String> = match given {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(field_violation("snis", "expected a string")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(field_violation("snis", "expected an array")),
    };
    let sni = kinds::get("snis").expect("known kind");
    let mut seen = std::collections::BTreeSet::new();
    for name in &names {
        // Checked as an SNI entity's name is.
        let mut probe = json!({ "name": name, "certificate": { "id": Uuid::nil().to_string() } });
        if let Err(why) = crate::schema::validate_record(&sni.schema, &mut probe) {
            let text = why["name"].as_str().unwrap_or("invalid value").to_owned();
            return Err(field_violation("snis", text));
        }
        if !seen.insert(name.as_str()) {
            return Err(field_violation("snis", format!("{name} is duplicated")));
        }
    }
    let mut names = names;
    names.sort();
    Ok(Some(names))
}

/// Kong's `prepare_args` for a PUT of a certificate: the SNI name it was addressed by joins
/// the `snis` given, and a PUT without `snis` leaves the certificate none (a PUT replaces the
/// whole entity).
fn put_certificate_snis(entity: &mut Map<String, Value>, name: Option<&str>) {
    match (entity.get_mut("snis"), name) {
        (Some(Value::Array(list)), Some(name)) if !list.iter().any(|n| n == name) => list.push(Value::from(name)),
        (Some(Value::String(one)), Some(name)) if one != name => {
            let both = json!([one.clone(), name]);
            entity.insert("snis".into(), both);
        }
        (None, _) => {
            entity.insert("snis".into(), Value::Null);
        }
        _ => {}
    }
}

/// The names of the SNIs of certificate `id`, sorted.
fn snis_of(entities: &Entities, id: &str) -> Vec<String> {
    let mut names: Vec<String> = entities["snis"]
        .values()
        .filter(|s| s["certificate"]["id"].as_str() == Some(id))
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The writes that make certificate `id`'s SNIs exactly `names` (Kong's `snis:update_list`):
/// a name another certificate has is refused with Kong's message.
fn sni_ops(
    names: &[String],
    id: &str,
    entities: &Entities,
    candidate: &mut Entities,
    ops: &mut Vec<Op>,
) -> Result<(), ApiError> {
    for name in names {
        if let Some(Some(sni)) = entities.by_name("snis", name)
            && sni["certificate"]["id"].as_str() != Some(id)
        {
            return Err(field_violation(
                "snis",
                format!(
                    "{name} already associated with existing certificate '{}'",
                    sni["certificate"]["id"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    let current = snis_of(entities, id);
    for gone in current.iter().filter(|n| !names.contains(n)) {
        if let Some(Some(sni)) = entities.by_name("snis", gone) {
            let sni_id = sni["id"].as_str().unwrap_or_default().to_owned();
            candidate.remove("snis", &sni_id);
            ops.push(Op::Delete {
                kind: "snis",
                id: sni_id,
            });
        }
    }
    let t = now();
    for name in names.iter().filter(|n| !current.contains(n)) {
        let sni_id = Uuid::new_v4().to_string();
        let sni = json!({
            "id": sni_id, "name": name, "certificate": { "id": id },
            "tags": null, "created_at": t, "updated_at": t,
        });
        candidate.put("snis", sni_id.clone(), sni.clone());
        ops.push(Op::Put {
            kind: "snis",
            id: sni_id,
            data: sni,
            unique: vec![("name", name.clone())],
        });
    }
    Ok(())
}

/// Kong's error for a plugin whose (name, route, service, consumer) another one has.
fn plugin_violation(value: &Value) -> ApiError {
    let text = format!(
        "UNIQUE violation detected on '{{consumer={},name=\"{}\",route={},service={}}}'",
        lua_ref(&value["consumer"]),
        value["name"].as_str().unwrap_or_default(),
        lua_ref(&value["route"]),
        lua_ref(&value["service"])
    );
    db_error(Code::UniqueViolation, text, None)
}

/// Kong's error for a plugin entity whose `together` fields another one has (its composite
/// cache key).
fn together_violation(together: &[&str], value: &Value) -> ApiError {
    let fields: Vec<String> = together
        .iter()
        .map(|f| match *f {
            "consumer" => format!("consumer={}", lua_ref(&value["consumer"])),
            f => key_text(f, &value[f]).trim_matches(['{', '}']).to_owned(),
        })
        .collect();
    let text = format!("UNIQUE violation detected on '{{{}}}'", fields.join(","));
    let key: Map<String, Value> = together.iter().map(|f| ((*f).to_owned(), value[*f].clone())).collect();
    db_error(Code::UniqueViolation, text, Some(Value::Object(key)))
}

/// Kong's `check_protocols_match` (`kong/db/dao/plugins.lua`): a plugin on a route shares a
/// protocol with it; one on a service shares one with at least one of the service's routes
/// (a service without routes takes any).
fn protocols_match(plugin: &Value, entities: &Entities) -> Result<(), ApiError> {
    let Some(protocols) = plugin["protocols"].as_array() else {
        return Ok(());
    };
    let common = |route: &Value| {
        route["protocols"]
            .as_array()
            .is_some_and(|r| protocols.iter().any(|p| r.contains(p)))
    };
    if let Some(route) = plugin["route"]["id"].as_str() {
        if let Some(route) = entities["routes"].get(route)
            && !common(route)
        {
            return Err(field_violation(
                "protocols",
                "must match the associated route's protocols",
            ));
        }
    } else if let Some(service) = plugin["service"]["id"].as_str() {
        let mut routes = entities["routes"]
            .values()
            .filter(|r| r["service"]["id"].as_str() == Some(service))
            .peekable();
        if routes.peek().is_some() && !routes.any(|r| common(r)) {
            return Err(field_violation(
                "protocols",
                "must match the protocols of at least one route pointing to this Plugin's service",
            ));
        }
    }
    Ok(())
}

pub(super) fn unique_violation(field: &str, value: &Value) -> ApiError {
    let text = format!("UNIQUE violation detected on '{}'", key_text(field, value));
    // Kong's `fields` hold the unique key itself (`kong/db/errors.lua`).
    db_error(Code::UniqueViolation, text, Some(json!({ field: value })))
}

pub(super) fn lua_ref(v: &Value) -> String {
    match v["id"].as_str() {
        Some(id) => format!("{{id=\"{id}\"}}"),
        None => "null".into(),
    }
}

pub(super) fn plugin_cache_key(p: &Value) -> String {
    format!(
        "{}:{}:{}:{}",
        p["name"].as_str().unwrap_or_default(),
        p["route"]["id"].as_str().unwrap_or_default(),
        p["service"]["id"].as_str().unwrap_or_default(),
        p["consumer"]["id"].as_str().unwrap_or_default()
    )
}

/// Kong's route entity checks (which fields each protocol needs), as a schema violation.
pub(super) fn route_checks(route: &Value, flavor: crate::model::RouterFlavor) -> Result<(), ApiError> {
    kinds::route_checks(route, flavor).map_err(|errors| violation(SchemaViolation::new(errors)))
}

/// Kong Enterprise's DAO checks between WebSocket routes and their services: a `ws`/`wss`
/// route needs a service, and a route is a WebSocket route exactly when its service is a
/// WebSocket service.
pub(super) fn ws_route_service(route: &Value, entities: &Entities) -> Result<(), ApiError> {
    let is_ws = |v: &Value| v.as_str().is_some_and(crate::runloop::is_ws);
    let ws_route = route["protocols"].as_array().is_some_and(|p| p.iter().any(is_ws));
    let service = route["service"]["id"]
        .as_str()
        .and_then(|id| entities["services"].get(id));
    match service {
        None if ws_route => Err(field_violation(
            "service",
            "WebSocket routes must be attached to a service",
        )),
        Some(s) if is_ws(&s["protocol"]) != ws_route => {
            Err(field_violation("protocols", "route/service protocol mismatch"))
        }
        _ => Ok(()),
    }
}

/// Kong Enterprise refuses to turn a WebSocket service into another kind, and back.
pub(super) fn ws_service_change(service: &Value, previous: Option<&Value>) -> Result<(), ApiError> {
    let is_ws = |v: &Value| v["protocol"].as_str().is_some_and(crate::runloop::is_ws);
    match previous {
        Some(before) if is_ws(before) && !is_ws(service) => Err(field_violation(
            "protocol",
            "cannot change WebSocket protocol to non-WebSocket protocol",
        )),
        Some(before) if !is_ws(before) && is_ws(service) => Err(field_violation(
            "protocol",
            "cannot change non-WebSocket protocol to WebSocket protocol",
        )),
        _ => Ok(()),
    }
}

/// `entity` as the Admin API shows it at `now`: one written with a `ttl` (seconds, as Kong's
/// credentials take) shows what is left of it, and is gone once that is nothing.
pub(super) fn alive(entity: &Value, now: i64) -> Option<Value> {
    let (Some(ttl), Some(created)) = (entity["ttl"].as_i64(), entity["created_at"].as_i64()) else {
        return Some(entity.clone());
    };
    if ttl <= 0 {
        return Some(entity.clone());
    }
    let left = created.saturating_add(ttl).saturating_sub(now);
    (left > 0).then(|| {
        let mut shown = entity.clone();
        shown["ttl"] = Value::from(left);
        shown
    })
}

/// The entity `key` (an id or the kind's endpoint key value); with `parent` (a foreign field
/// and the parent's id), only among that parent's children: acl groups of one consumer share
/// names with another's.
pub(super) fn find<'a>(
    entities: &'a Entities,
    kind: &Kind,
    key: &str,
    parent: Option<(&str, &Value)>,
) -> Option<&'a Value> {
    let all = &entities[kind.name];
    let child = |e: &Value| parent.is_none_or(|(f, id)| &e[f]["id"] == id);
    if Uuid::parse_str(key).is_ok()
        && let Some(e) = all.get(&key.to_ascii_lowercase())
    {
        return child(e).then_some(&e.json);
    }
    if kind.name == "certificates" {
        // Kong's certificates endpoint also takes the name of one of the certificate's SNIs.
        let cert = entities.by_name("snis", key).flatten()?["certificate"]["id"].as_str()?;
        return all.get(cert).filter(|e| child(e)).map(|e| &e.json);
    }
    let field = kind.endpoint_key?;
    if let Some(found) = entities.by_name(kind.name, key) {
        return found.filter(|e| child(e)).map(|e| &e.json);
    }
    all.values()
        .find(|e| e[field].as_str() == Some(key) && child(e))
        .map(|v| &v.json)
}

/// Kong's opaque page offsets: the last id, URL-safe base64.
pub(super) fn encode_offset(id: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

pub(super) fn decode_offset(s: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()?;
    String::from_utf8(bytes).ok().filter(|s| Uuid::parse_str(s).is_ok())
}
