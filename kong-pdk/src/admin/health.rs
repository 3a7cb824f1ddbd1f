//! The upstream health endpoints (Kong's `kong/api/routes/upstreams.lua`):
//! `GET /upstreams/{u}/health` (and `?balancer_health=1`) and
//! `PUT /upstreams/{u}/targets/{t}[/{address}]/healthy|unhealthy`, answered from the live
//! balancers' health, which the node shares across its worker threads.

use super::*;

impl Admin {
    /// `GET /upstreams/{u}/health`: the upstream's targets, a page at a time, each with its
    /// `health` (`HEALTHY`, `UNHEALTHY`, `HEALTHCHECKS_OFF`, `DNS_ERROR`) and `data` (its
    /// addresses); with `balancer_health=1`, the balancer's own health instead.
    pub(super) async fn upstream_health(&self, key: &str, query: &str) -> ApiResult {
        let upstreams = kinds::get("upstreams").expect("known kind");
        let id = self.id_of(upstreams, key).await?;
        let uuid = id.as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap_or_default();
        let snapshot = self.proxy.snapshot();
        let balancer = snapshot.upstreams.by_id(uuid);
        let node_id = self.plugins.node().id.to_string();
        let balancer_health = args::pairs(query).any(|(k, v)| k == "balancer_health" && v == "1");
        if balancer_health {
            let data = balancer.map_or(Value::Null, |b| b.balancer_health());
            return Ok((
                StatusCode::OK,
                json!({ "data": data, "next": null, "node_id": node_id }),
            ));
        }
        let targets = kinds::get("targets").expect("known kind");
        let path = format!("/upstreams/{}/health", crate::pdk::percent_encode_component(key));
        let (status, mut page) = self.list(targets, Some(("upstream", &id)), query, &path).await?;
        let health = balancer.map(|b| b.target_health()).unwrap_or_default();
        for t in page["data"].as_array_mut().into_iter().flatten() {
            match health.iter().find(|(e, _, _)| e["id"] == t["id"]) {
                Some((_, h, data)) => {
                    t["health"] = Value::from(*h);
                    t["data"] = data.clone();
                }
                None => t["health"] = Value::from("DNS_ERROR"),
            }
        }
        page["node_id"] = Value::from(node_id);
        Ok((status, page))
    }

    /// `PUT /upstreams/{u}/targets/{t}[/{address}]/healthy` (or `unhealthy`): sets the
    /// target's addresses (or the one named) healthy or not on this node. 204.
    pub(super) async fn set_target_health(
        &self,
        key: &str,
        target: &str,
        address: Option<&str>,
        healthy: bool,
    ) -> ApiResult {
        let upstreams = kinds::get("upstreams").expect("known kind");
        let targets = kinds::get("targets").expect("known kind");
        let id = self.id_of(upstreams, key).await?;
        let entities = self.entities.load_full();
        let entity =
            find(&entities, targets, target, Some(("upstream", &id))).ok_or_else(|| message(404, "Not found"))?;
        let uuid = id.as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap_or_default();
        let snapshot = self.proxy.snapshot();
        let balancer = snapshot
            .upstreams
            .by_id(uuid)
            .ok_or_else(|| message(400, "upstream not found"))?;
        balancer
            .set_health(entity["target"].as_str().unwrap_or_default(), address, healthy)
            .map_err(|e| message(400, &e))?;
        Ok((StatusCode::NO_CONTENT, Value::Null))
    }
}
