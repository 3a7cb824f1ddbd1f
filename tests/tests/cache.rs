//! `kong.cache` end to end (issue 16, item 16): what auth plugins load through the node's
//! cache is forgotten when the entity behind its key changes, on every strategy, and
//! `kong.cache().invalidate()` reaches the other nodes on the database through cluster events.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use kong_pdk::Plugin as _;
use kong_pdk::prelude::*;
use kong_pdk::testing::helpers::{self, Conf, Gateway};
use kong_plugins::acl::Acl;
use kong_plugins::key_auth::KeyAuth;
use serde_json::json;

/// Answers with a value loaded through `kong.cache()` (`X-Cached`: the value, `X-Hit`: the hit
/// level), and invalidates it cluster-wide when asked (`X-Invalidate`).
#[plugin(priority = 100, version = "1.0.0", name = "cache-probe")]
pub struct CacheProbe {}

static LOADS: AtomicU64 = AtomicU64::new(0);

#[handler]
impl Handler for CacheProbe {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let cache = kong.cache();
        if kong.request().get_header("x-invalidate").is_some() {
            cache.invalidate("cache-probe:value");
        }
        let (value, level) = cache
            .get("cache-probe:value", Default::default(), || async {
                Ok(Some(LOADS.fetch_add(1, Relaxed)))
            })
            .await
            .map_err(kong_pdk::Error::msg)?;
        kong.response().set_header("X-Cached", value.map_or(0, |v| *v))?;
        kong.response().set_header("X-Hit", level as u8)?;
        Ok(())
    }
}

async fn cached(node: &Gateway, invalidate: bool) -> (u64, u8) {
    let mut req = node.proxy_client().get("/probe");
    if invalidate {
        req = req.header("x-invalidate", "1");
    }
    let res = req.send().await;
    res.assert_status(200);
    let value = res.header("x-cached").unwrap().parse().unwrap();
    let level = res.header("x-hit").unwrap().parse().unwrap();
    (value, level)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_reach_the_other_nodes() {
    for strategy in helpers::each_strategy() {
        let bp = helpers::get_db_utils(strategy, &["bundled", "cache-probe"]).await;
        let route = bp.routes().insert(json!({ "paths": ["/probe"] })).await;
        bp.plugins()
            .insert(json!({ "name": CacheProbe::NAME, "route": { "id": route["id"] } }))
            .await;
        let every = Conf::default().db_update_frequency(Duration::from_millis(20));
        let first = helpers::start_kong(&bp, every.clone()).await;
        let second = helpers::start_another_kong(&bp, every).await;
        let (a, level) = cached(&first, false).await;
        assert_eq!(level, 3, "[#{strategy}] loaded");
        assert_eq!(cached(&first, false).await, (a, 1), "[#{strategy}] then cached");
        let (b, _) = cached(&second, false).await;
        assert_eq!(
            cached(&second, false).await,
            (b, 1),
            "[#{strategy}] each node has its own"
        );
        // Invalidated on the first node: loaded again there at once, and on the second once
        // it has read the cluster event.
        let (again, level) = cached(&first, true).await;
        assert_eq!(level, 3, "[#{strategy}]");
        assert_ne!(again, a);
        helpers::wait_until(
            "the second node to forget the value",
            Duration::from_secs(10),
            || async { cached(&second, false).await.0 != b },
        )
        .await;
        first.stop().await;
        second.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_credential_change_reaches_this_nodes_cache() {
    for strategy in helpers::each_strategy() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let bob = bp.consumers().insert(json!({ "username": "bob" })).await;
        let key = bp
            .table("keyauth_credentials")
            .insert(json!({ "key": "k1", "consumer": { "id": bob["id"] } }))
            .await;
        let route = bp.routes().insert(json!({ "paths": ["/ka"] })).await;
        bp.plugins()
            .insert(json!({ "name": "key-auth", "route": { "id": route["id"] } }))
            .await;
        let writer = helpers::start_kong(&bp, Conf::default()).await;
        let follower =
            helpers::start_another_kong(&bp, Conf::default().db_update_frequency(Duration::from_millis(20))).await;
        let proxy = follower.proxy_client();
        proxy.get("/ka").header("apikey", "k1").send().await.assert_status(200);
        // Written through the first node: the follower reloads and forgets the cached key.
        bp.table("keyauth_credentials")
            .update(key["id"].as_str().unwrap(), json!({ "key": "k2" }))
            .await;
        helpers::wait_until(
            "the follower to refuse the old key",
            Duration::from_secs(10),
            || async { proxy.get("/ka").header("apikey", "k1").send().await.status() == 401 },
        )
        .await;
        proxy.get("/ka").header("apikey", "k2").send().await.assert_status(200);
        writer.stop().await;
        follower.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_credentials_are_not_served_from_the_cache() {
    assert_eq!((KeyAuth::NAME, Acl::NAME), ("key-auth", "acl"));
    for strategy in helpers::each_strategy() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let bob = bp.consumers().insert(json!({ "username": "bob" })).await;
        let key = bp
            .table("keyauth_credentials")
            .insert(json!({ "key": "old-key", "consumer": { "id": bob["id"] } }))
            .await;
        let group = bp
            .table("acls")
            .insert(json!({ "group": "staff", "consumer": { "id": bob["id"] } }))
            .await;
        let route = bp.routes().insert(json!({ "paths": ["/ka"] })).await;
        bp.plugins()
            .insert(json!({ "name": "key-auth", "route": { "id": route["id"] } }))
            .await;
        bp.plugins()
            .insert(json!({ "name": "acl", "route": { "id": route["id"] }, "config": { "allow": ["staff"] } }))
            .await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();
        let with = |k: &'static str| proxy.get("/ka").header("apikey", k);
        with("old-key").send().await.assert_status(200);
        with("new-key").send().await.assert_status(401);
        // The key changes: the old one is refused, the new one (a cached miss) accepted.
        bp.table("keyauth_credentials")
            .update(key["id"].as_str().unwrap(), json!({ "key": "new-key" }))
            .await;
        with("old-key").send().await.assert_status(401);
        with("new-key").send().await.assert_status(200);
        // The consumer's groups change: acl's cached list is forgotten.
        bp.table("acls")
            .update(group["id"].as_str().unwrap(), json!({ "group": "visitors" }))
            .await;
        with("new-key").send().await.assert_status(403);
        // The consumer goes (and its credentials with it).
        bp.consumers().remove(bob["id"].as_str().unwrap()).await;
        with("new-key").send().await.assert_status(401);
        kong.stop().await;
    }
}

#[tokio::test]
async fn the_harness_has_the_nodes_cache() {
    use kong_pdk::testing::{Harness, MockResponse, TestRequest};
    let gw = Harness::new().plugin::<CacheProbe>(json!({})).start().await.unwrap();
    let hit = |invalidate: bool| {
        let mut req = TestRequest::get("/probe");
        if invalidate {
            req = req.header("x-invalidate", "1");
        }
        let gw = &gw;
        async move {
            let res = gw.send(req, |_| MockResponse::ok("")).await;
            (
                res.header("x-cached").unwrap().to_owned(),
                res.header("x-hit").unwrap().to_owned(),
            )
        }
    };
    let (first, level) = hit(false).await;
    assert_eq!(level, "3");
    assert_eq!(hit(false).await, (first.clone(), "1".to_owned()));
    let (again, level) = hit(true).await;
    assert_eq!(level, "3", "invalidated");
    assert_ne!(again, first);
}
