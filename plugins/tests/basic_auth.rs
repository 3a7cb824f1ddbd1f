//! basic-auth end to end (Kong's `spec/03-plugins/10-basic-auth`): credentials through the
//! Admin API, stored hashed, then the proxy's answers.

use base64::Engine as _;
use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Blueprint, Conf, Strategy};
use kong_plugins::basic_auth::{BasicAuth, hash};
use serde_json::{Value, json};

fn basic(text: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(text))
}

/// `bob` with `kong:p:ss`, `guest`, and routes `/ba`, `/hide` (hide_credentials, realm
/// `test`) and `/anon` (anonymous = guest).
async fn setup(bp: &Blueprint) -> Value {
    let bob = bp.consumers().insert(json!({ "username": "bob" })).await;
    bp.consumers().insert(json!({ "username": "guest" })).await;
    let credential = bp
        .table("basicauth_credentials")
        .insert(json!({ "username": "kong", "password": "p:ss", "consumer": { "id": bob["id"] } }))
        .await;
    for (path, config) in [
        ("/ba", json!({})),
        ("/hide", json!({ "hide_credentials": true, "realm": "test" })),
        ("/anon", json!({ "anonymous": "guest" })),
    ] {
        let route = bp.routes().insert(json!({ "paths": [path] })).await;
        bp.plugins()
            .insert(json!({ "name": BasicAuth::NAME, "route": { "id": route["id"] }, "config": config }))
            .await;
    }
    json!({ "bob": bob, "credential": credential })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_authenticates_basic_credentials() {
    for strategy in helpers::all_strategies() {
        proxy_authenticates(strategy).await;
    }
}

async fn proxy_authenticates(strategy: Strategy) {
    let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
    let made = setup(&bp).await;
    // Stored hashed with the consumer's id, as Kong does.
    let bob_id = made["bob"]["id"].as_str().unwrap();
    assert_eq!(made["credential"]["password"], hash(bob_id, "p:ss"));
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let proxy = kong.proxy_client();

    let res = proxy.get("/ba/request").send().await;
    res.assert_status(401);
    assert_eq!(res.assert_json()["message"], "Unauthorized");
    assert_eq!(res.assert_header("WWW-Authenticate"), "Basic realm=\"service\"");
    for bad in [
        "foobar",
        "Basic a29uZw==",
        "Basic Ym9i",
        "Basic adXNlcjEyMzpwYXNzd29yZDEyMw==",
        "BASIC a29uZzpwOnNz",
    ] {
        proxy
            .get("/ba/request")
            .header("Authorization", bad)
            .send()
            .await
            .assert_status(401);
    }
    proxy
        .get("/ba/request")
        .header("Authorization", &basic("kong:wrong"))
        .send()
        .await
        .assert_status(401);

    // A password with a colon; the header reaches the upstream unless hidden.
    let res = proxy
        .get("/ba/request")
        .header("Authorization", &basic("kong:p:ss"))
        .send()
        .await;
    res.assert_status(200);
    let upstream = res.request();
    assert_eq!(upstream.header("x-consumer-username").as_deref(), Some("bob"));
    assert_eq!(upstream.header("x-credential-identifier").as_deref(), Some("kong"));
    assert_eq!(upstream.header("authorization"), Some(basic("kong:p:ss")));
    // Proxy-Authorization works too.
    let res = proxy
        .get("/ba/request")
        .header("Proxy-Authorization", &basic("kong:p:ss"))
        .send()
        .await;
    res.assert_status(200);

    let res = proxy
        .get("/hide/request")
        .header("Authorization", &basic("kong:p:ss"))
        .send()
        .await;
    res.assert_status(200);
    assert_eq!(res.request().header("authorization"), None);
    let res = proxy.get("/hide/request").send().await;
    assert_eq!(res.assert_header("WWW-Authenticate"), "Basic realm=\"test\"");

    let res = proxy.get("/anon/request").send().await;
    res.assert_status(200);
    assert_eq!(res.request().header("x-consumer-username").as_deref(), Some("guest"));
    assert_eq!(res.request().header("x-anonymous-consumer").as_deref(), Some("true"));
    kong.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_keeps_passwords_hashed() {
    for strategy in helpers::all_strategies().into_iter().filter(|s| *s != Strategy::Off) {
        admin_keeps_hashes(strategy).await;
    }
}

async fn admin_keeps_hashes(strategy: Strategy) {
    let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
    let made = setup(&bp).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let admin = kong.admin_client();
    let id = made["credential"]["id"].as_str().unwrap();
    let stored = made["credential"]["password"].clone();
    // A PATCH without a password keeps the hash; a new password is hashed.
    let res = admin
        .patch(&format!("/basic-auths/{id}"))
        .json(&json!({ "tags": ["t"] }))
        .send()
        .await;
    res.assert_status(200);
    assert_eq!(res.assert_json()["password"], stored);
    let res = admin
        .patch(&format!("/basic-auths/{id}"))
        .json(&json!({ "password": "new" }))
        .send()
        .await;
    let bob_id = made["bob"]["id"].as_str().unwrap();
    assert_eq!(res.assert_json()["password"], hash(bob_id, "new"));
    // Moving it to another consumer needs the password again.
    let other = admin
        .post("/consumers")
        .json(&json!({ "username": "carol" }))
        .send()
        .await
        .assert_json();
    let res = admin
        .patch(&format!("/basic-auths/{id}"))
        .json(&json!({ "consumer": { "id": other["id"] } }))
        .send()
        .await;
    res.assert_status(400);
    assert_eq!(
        res.assert_json()["fields"]["@entity"],
        json!(["all or none of these fields must be set: 'password', 'consumer.id'"])
    );
    // An export keeps the hash and says so; importing it stores the same hash again.
    let exported = admin.get("/config").send().await;
    exported.assert_status(200);
    let yaml = exported.assert_json()["config"].as_str().unwrap().to_owned();
    assert!(yaml.contains("_transform: false"), "{yaml}");
    let config = kong_pdk::gateway::declarative::Config::parse(&yaml).unwrap();
    assert_eq!(config.daos["basicauth_credentials"][0]["password"], hash(bob_id, "new"));
    // Nested under the consumer, by username.
    let res = admin.get("/consumers/bob/basic-auth/kong").send().await;
    res.assert_status(200);
    let res = admin
        .post("/consumers/bob/basic-auth")
        .json(&json!({ "username": "kong", "password": "x" }))
        .send()
        .await;
    res.assert_status(409);
    kong.stop().await;
}

/// key-auth and basic-auth on one route (Kong's multiple-auth spec): without `anonymous` both
/// are needed; with it, either one is enough and nobody is the anonymous consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_and_basic_auth_combine_as_and_or_or() {
    use kong_plugins::key_auth::KeyAuth;
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let bob = bp.consumers().insert(json!({ "username": "bob" })).await;
        let guest = bp.consumers().insert(json!({ "username": "guest" })).await;
        bp.table("keyauth_credentials")
            .insert(json!({ "key": "k", "consumer": { "id": bob["id"] } }))
            .await;
        bp.table("basicauth_credentials")
            .insert(json!({ "username": "u", "password": "p", "consumer": { "id": bob["id"] } }))
            .await;
        for (path, anonymous) in [("/and", Value::Null), ("/or", guest["id"].clone())] {
            let route = bp.routes().insert(json!({ "paths": [path] })).await;
            for name in [KeyAuth::NAME, BasicAuth::NAME] {
                bp.plugins()
                    .insert(
                        json!({ "name": name, "route": { "id": route["id"] }, "config": { "anonymous": anonymous } }),
                    )
                    .await;
            }
        }
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();
        let basic_header = basic("u:p");
        proxy
            .get("/and/request")
            .header("apikey", "k")
            .header("Authorization", &basic_header)
            .send()
            .await
            .assert_status(200);
        let res = proxy.get("/and/request").header("apikey", "k").send().await;
        res.assert_status(401);
        assert_eq!(
            res.assert_header("WWW-Authenticate"),
            "Basic realm=\"service\"",
            "[#{strategy}]"
        );
        let res = proxy
            .get("/and/request")
            .header("Authorization", &basic_header)
            .send()
            .await;
        res.assert_status(401);
        assert_eq!(res.assert_header("WWW-Authenticate"), "Key");

        let by_key = proxy.get("/or/request").header("apikey", "k").send().await;
        assert_eq!(by_key.request().header("x-consumer-username").as_deref(), Some("bob"));
        let by_basic = proxy
            .get("/or/request")
            .header("Authorization", &basic_header)
            .send()
            .await;
        assert_eq!(by_basic.request().header("x-consumer-username").as_deref(), Some("bob"));
        let nobody = proxy.get("/or/request").send().await;
        nobody.assert_status(200);
        assert_eq!(
            nobody.request().header("x-consumer-id"),
            guest["id"].as_str().map(str::to_owned)
        );
        assert_eq!(nobody.request().header("x-anonymous-consumer").as_deref(), Some("true"));
        kong.stop().await;
    }
}
