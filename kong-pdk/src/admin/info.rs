//! `GET /`, `/status` and `/endpoints` (Kong's `kong/api/routes/kong.lua`).

use super::*;

impl Admin {
    pub(super) async fn info(&self) -> Value {
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

    pub(super) async fn enabled_in_cluster(&self) -> Vec<String> {
        let entities = self.entities.load_full();
        let mut names: Vec<String> = entities["plugins"]
            .values()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// `GET /status` (Kong's `routes/health.lua`): the proxy's counters, the memory in `unit`
    /// (`m` by default) with `scale` decimals, and the database's health or, DB-less, the
    /// configuration's hash. A bad unit or scale answers 400 with `bytes_to_str`'s message.
    pub(super) async fn status(&self, query: &str) -> ApiResult {
        let (mut unit, mut scale) = ("m".to_owned(), None);
        for (k, v) in args::pairs(query) {
            match k.as_str() {
                "unit" => unit = v,
                "scale" => scale = v.trim().parse::<f64>().ok(),
                _ => {}
            }
        }
        let node = self.plugins.node();
        let memory = crate::stats::memory_stats(&unit, scale).map_err(|e| message(400, &e.0))?;
        let mut status = json!({
            "memory": memory,
            "server": node.stats.statistics(),
        });
        match &self.store {
            Some(store) => {
                let reachable = store.version().await.is_ok();
                node.stats.set_datastore_reachable(reachable);
                status["database"] = json!({ "reachable": reachable });
            }
            None => {
                let yaml = self.config_yaml().await;
                let hash = Uuid::new_v5(&Uuid::NAMESPACE_OID, yaml.as_bytes()).simple().to_string();
                status["configuration_hash"] = Value::from(hash);
            }
        }
        Ok((StatusCode::OK, status))
    }
}

pub(super) fn endpoint_list(plugins: &Plugins) -> Value {
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
