//! Where each Admin API request goes (Kong's `kong/api/routes/*.lua` and the paths
//! `endpoints.lua` generates): the path and method dispatch, and the lookups it needs.

use super::*;

impl Admin {
    /// Answers one request by its path and method: Kong's status and body, or its error.
    pub(super) async fn route<B>(&self, req: Request<B>, text: &mut Option<&'static str>) -> ApiResult
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
        // Setting a target's health is no entity write: DB-less nodes take it too.
        let health_write = method == Method::PUT
            && matches!(
                segs.as_slice(),
                ["upstreams", _, "targets", _, "healthy" | "unhealthy"]
                    | ["upstreams", _, "targets", _, _, "healthy" | "unhealthy"]
            );
        if self.store.is_none() && !get && !health_write && segs.first().is_some_and(|k| self.kind_at(k).is_some()) {
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
                Code::OperationUnsupported,
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
                let flatten = query
                    .split('&')
                    .any(|kv| matches!(kv, "flatten_errors=1" | "flatten_errors=true"));
                self.load_config(&parts.headers, &bytes, flatten).await
            }
            [] if get => Ok((StatusCode::OK, self.info().await)),
            ["status"] if get => self.status(&query).await,
            ["plugins", "enabled"] if get => Ok((
                StatusCode::OK,
                json!({ "enabled_plugins": self.plugins.iter().map(|m| m.name).collect::<Vec<_>>() }),
            )),
            ["endpoints"] if get => Ok((StatusCode::OK, info::endpoint_list(&self.plugins))),
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
            ["upstreams", u, "health"] if get => self.upstream_health(u, &query).await,
            ["upstreams", u, "targets", "all"] if get => {
                let (parent, kind, field) = self.nested("upstreams", "targets").expect("known kinds");
                let parent_id = self.id_of(parent, u).await?;
                self.list(kind, Some((field, &parent_id)), &query, &path).await
            }
            ["upstreams", u, "targets", t, verdict @ ("healthy" | "unhealthy")] if method == Method::PUT => {
                self.set_target_health(u, t, None, *verdict == "healthy").await
            }
            [
                "upstreams",
                u,
                "targets",
                t,
                address,
                verdict @ ("healthy" | "unhealthy"),
            ] if method == Method::PUT => self.set_target_health(u, t, Some(address), *verdict == "healthy").await,
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
                let entity = find(&entities, kind, key, None).ok_or_else(|| message(404, "Not found"))?;
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
            // Known paths without the method asked for (Kong's handle_error: 405).
            [] | ["status"] | ["endpoints"] | ["plugins", "enabled"] | ["config"] => {
                Err(message(405, "Method not allowed"))
            }
            // The plugins' own endpoints (Kong's `api.lua`).
            _ => self.plugin_endpoint(Surface::Admin, &parts, body, &segs, text).await,
        }
    }

    /// Answers one Status API request (Kong's `kong/status/init.lua`): `/status`,
    /// `/status/ready` and the plugins' `status_api.lua` endpoints.
    pub(super) async fn route_status<B>(&self, req: Request<B>, text: &mut Option<&'static str>) -> ApiResult
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let segments: Vec<String> = parts
            .uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| crate::pdk::request::percent_decode(s, false))
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let get = parts.method == Method::GET || parts.method == Method::HEAD;
        match segs.as_slice() {
            ["status"] if get => self.status(parts.uri.query().unwrap_or_default()).await,
            ["status", "ready"] if get => self.ready().await,
            ["status", "ready"] if parts.method == Method::POST => {
                let params = read(body, &parts.headers).await?.0;
                if params["status"] == "draining" {
                    self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                    Ok((StatusCode::NO_CONTENT, Value::Null))
                } else {
                    Err(ApiError(StatusCode::BAD_REQUEST, Value::Null))
                }
            }
            ["status"] | ["status", "ready"] => Err(message(405, "Method not allowed")),
            _ => self.plugin_endpoint(Surface::Status, &parts, body, &segs, text).await,
        }
    }

    /// A plugin's endpoint on `surface`: the first plugin's answer, else 404. A text answer
    /// leaves its content type in `text` and its text as the body.
    async fn plugin_endpoint<B>(
        &self,
        surface: Surface,
        parts: &http::request::Parts,
        body: B,
        segs: &[&str],
        text: &mut Option<&'static str>,
    ) -> ApiResult
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = &parts.method;
        let value = if *method == Method::GET || *method == Method::HEAD || *method == Method::DELETE {
            Value::Null
        } else {
            read(body, &parts.headers).await?.0
        };
        let entities = self.entities.load_full();
        let instances_of = |name: &str| {
            entities["plugins"]
                .values()
                .filter(|p| p["name"] == name)
                .filter_map(|p| Some((Uuid::parse_str(p["id"].as_str()?).ok()?, &p["config"])))
                .collect()
        };
        match self
            .plugins
            .admin_api(surface, (method.as_str(), segs, &value), instances_of)
        {
            Some(answer) if answer.status == 404 && answer.body.is_null() => Err(message(404, "Not found")),
            Some(answer) => {
                *text = answer.content_type;
                Ok((
                    StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    answer.body,
                ))
            }
            None => Err(message(404, "Not found")),
        }
    }

    /// `GET /status/ready` (Kong's `kong/status/ready.lua`): 200 `ready`, or 503 with why not.
    async fn ready(&self) -> ApiResult {
        let not_ready = |why: &str| Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, json!({ "message": why })));
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return not_ready("draining");
        }
        match &self.store {
            Some(store) if store.version().await.is_err() => return not_ready("failed to connect to database"),
            Some(_) => {}
            None => {
                let entities = self.entities.load_full();
                if entities.0.values().all(|rows| rows.is_empty()) {
                    return not_ready("no configuration available (empty configuration present)");
                }
            }
        }
        Ok((StatusCode::OK, json!({ "message": "ready" })))
    }

    /// Whether `segs` is a path the Admin API serves (for `OPTIONS`: 404 otherwise).
    pub(super) fn known(&self, segs: &[&str]) -> bool {
        match segs {
            [] | ["status"] | ["endpoints"] | ["config"] | ["plugins", "enabled"] | ["schemas", ..] => true,
            [kind] | [kind, _] => self.kind_at(kind).is_some(),
            [parent, _, child] | [parent, _, child, _] if self.nested(parent, child).is_some() => true,
            ["upstreams", _, "health"] | ["upstreams", _, "targets", _, "healthy" | "unhealthy"] => true,
            ["upstreams", _, "targets", _, _, "healthy" | "unhealthy"] => true,
            [kind, _, field] => self
                .kind_at(kind)
                .is_some_and(|k| k.foreign.iter().any(|f| f.0 == *field)),
            _ => false,
        }
    }

    /// The kind served at `/{segment}`: a core kind, or the entity of an enabled plugin.
    /// Targets are only served under their upstream (`/upstreams/{u}/targets`), as in Kong.
    pub(super) fn kind_at(&self, segment: &str) -> Option<&'static Kind> {
        kinds::by_path(segment)
            .filter(|k| k.name != "targets")
            .filter(|k| k.dao.is_none_or(|d| self.plugins.contains(d.plugin)))
    }

    /// `/{parent}/{p}/{child}`: the parent kind, the child kind and the child's foreign field
    /// to the parent. Plugin entities nest under consumers by their nested name
    /// (`/consumers/{c}/key-auth`).
    pub(super) fn nested(&self, parent: &str, child: &str) -> Option<(&'static Kind, &'static Kind, &'static str)> {
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
    pub(super) async fn id_of(&self, kind: &Kind, key: &str) -> Result<Value, ApiError> {
        let entities = self.entities.load_full();
        find(&entities, kind, key, None)
            .map(|e| e["id"].clone())
            .ok_or_else(|| message(404, "Not found"))
    }

    /// Types form-encoded values by the kind's schema (and a plugin's config schema).
    pub(super) fn infer(&self, kind: &Kind, value: &mut Value) {
        args::infer_record(value, &kind.schema);
        if kind.name == "plugins"
            && let Some(schema) = value["name"].as_str().and_then(|n| self.plugins.schema(n))
        {
            for field in schema.fields() {
                if let Some(v) = value.get_mut(&field.name) {
                    args::infer(v, &field.schema);
                }
            }
        }
    }
}
