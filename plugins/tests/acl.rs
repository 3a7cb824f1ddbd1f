//! acl end to end (Kong's `spec/03-plugins/18-acl`): groups through the Admin API, key-auth in
//! front, then the proxy's answers.

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Blueprint, Conf, Strategy};
use kong_plugins::acl::Acl;
use kong_plugins::key_auth::KeyAuth;
use serde_json::{Value, json};

/// bob (admins, dev, key `bob`), alice (dev, key `alice`), carol (no group, key `carol`);
/// routes with key-auth and an acl each, and `/no-auth` with the acl alone.
async fn setup(bp: &Blueprint) -> Value {
    let mut ids = serde_json::Map::new();
    for (name, groups) in [("bob", &["admins", "dev"][..]), ("alice", &["dev"]), ("carol", &[])] {
        let consumer = bp.consumers().insert(json!({ "username": name })).await;
        bp.table("keyauth_credentials")
            .insert(json!({ "key": name, "consumer": { "id": consumer["id"] } }))
            .await;
        for group in groups {
            bp.table("acls")
                .insert(json!({ "group": group, "consumer": { "id": consumer["id"] } }))
                .await;
        }
        ids.insert(name.into(), consumer["id"].clone());
    }
    for (path, config, auth) in [
        ("/allow", json!({ "allow": ["admins"] }), true),
        ("/deny", json!({ "deny": ["admins"] }), true),
        ("/hide", json!({ "allow": ["dev"], "hide_groups_header": true }), true),
        ("/no-auth", json!({ "allow": ["dev"] }), false),
    ] {
        let route = bp.routes().insert(json!({ "paths": [path] })).await;
        if auth {
            bp.plugins()
                .insert(json!({ "name": KeyAuth::NAME, "route": { "id": route["id"] } }))
                .await;
        }
        bp.plugins()
            .insert(json!({ "name": Acl::NAME, "route": { "id": route["id"] }, "config": config }))
            .await;
    }
    Value::Object(ids)
}

fn groups(header: Option<String>) -> Vec<String> {
    let mut all: Vec<String> = header.unwrap_or_default().split(", ").map(str::to_owned).collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_pass_or_not_by_their_groups() {
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        setup(&bp).await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();
        let get = |path: &'static str, key: &'static str| proxy.get(path).header("apikey", key).send();

        let res = get("/allow/request", "bob").await;
        res.assert_status(200);
        assert_eq!(
            groups(res.request().header("x-consumer-groups")),
            ["admins", "dev"],
            "[#{strategy}]"
        );
        let res = get("/allow/request", "alice").await;
        res.assert_status(403);
        assert_eq!(res.assert_json()["message"], "You cannot consume this service");
        get("/allow/request", "carol").await.assert_status(403);

        get("/deny/request", "bob").await.assert_status(403);
        get("/deny/request", "alice").await.assert_status(200);
        get("/deny/request", "carol").await.assert_status(200);

        let res = get("/hide/request", "bob").await;
        res.assert_status(200);
        assert_eq!(res.request().header("x-consumer-groups"), None);

        let res = proxy.get("/no-auth/request").send().await;
        res.assert_status(401);
        assert_eq!(res.assert_json()["message"], "Unauthorized");
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_unique_per_consumer_and_found_by_name() {
    for strategy in helpers::all_strategies().into_iter().filter(|s| *s != Strategy::Off) {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let ids = setup(&bp).await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let admin = kong.admin_client();
        let res = admin
            .post("/consumers/bob/acls")
            .json(&json!({ "group": "admins" }))
            .send()
            .await;
        res.assert_status(409);
        let bob = ids["bob"].as_str().unwrap();
        assert_eq!(
            res.assert_json()["message"],
            format!("UNIQUE violation detected on '{{consumer={{id=\"{bob}\"}},group=\"admins\"}}'")
        );
        // Another consumer may have the same group.
        admin
            .post("/consumers/carol/acls")
            .json(&json!({ "group": "admins" }))
            .send()
            .await
            .assert_status(201);
        let res = admin.get("/consumers/bob/acls/admins").send().await;
        res.assert_status(200);
        assert_eq!(res.assert_json()["group"], "admins");
        let res = admin.post("/consumers/bob/acls").json(&json!({})).send().await;
        res.assert_status(400);
        assert_eq!(res.assert_json()["fields"]["group"], "required field missing");
        kong.stop().await;
    }
}
