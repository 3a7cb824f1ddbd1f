//! key-auth end to end, on every strategy: credentials through the Admin API and blueprints,
//! then the proxy's answers (Kong's `spec/03-plugins/09-key-auth`).

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Blueprint, Conf, Strategy};
use kong_plugins::key_auth::KeyAuth;
use serde_json::{Value, json};

/// A consumer `bob` with the key `kong`, and routes `/ka` (key-auth), `/hide`
/// (hide_credentials, realm), `/anon` (anonymous = guest) and `/ghost` (anonymous missing).
async fn setup(bp: &Blueprint) {
    let bob = bp.consumers().insert(json!({ "username": "bob" })).await;
    bp.consumers().insert(json!({ "username": "guest" })).await;
    bp.table("keyauth_credentials")
        .insert(json!({ "key": "kong", "consumer": { "id": bob["id"] } }))
        .await;
    for (path, config) in [
        ("/ka", json!({})),
        ("/hide", json!({ "hide_credentials": true, "realm": "service" })),
        ("/anon", json!({ "anonymous": "guest" })),
        ("/ghost", json!({ "anonymous": "nobody" })),
        ("/body", json!({ "key_in_body": true, "key_in_header": false })),
        ("/hide-body", json!({ "key_in_body": true, "hide_credentials": true })),
        ("/no-query", json!({ "key_in_query": false })),
        ("/preflight", json!({ "run_on_preflight": false })),
    ] {
        let route = bp.routes().insert(json!({ "paths": [path] })).await;
        bp.plugins()
            .insert(json!({ "name": KeyAuth::NAME, "route": { "id": route["id"] }, "config": config }))
            .await;
    }
}

fn message(res: &helpers::TestResponse) -> Value {
    res.assert_json()["message"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_authenticates_with_keys_on_every_strategy() {
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        setup(&bp).await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();

        let res = proxy.get("/ka/anything").send().await;
        res.assert_status(401);
        assert_eq!(message(&res), "No API key found in request", "[#{strategy}]");
        assert_eq!(res.assert_header("WWW-Authenticate"), "Key");

        let res = proxy.get("/ka/anything").header("apikey", "nope").send().await;
        res.assert_status(401);
        assert_eq!(message(&res), "Unauthorized");

        let res = proxy
            .get("/ka/anything")
            .header("apikey", "kong")
            .header("X-Consumer-Username", "forged")
            .send()
            .await;
        res.assert_status(200);
        let seen = res.request();
        assert_eq!(seen.assert_header("X-Consumer-Username"), "bob", "[#{strategy}]");
        assert!(seen.assert_header("X-Consumer-ID").len() == 36);
        assert!(seen.assert_header("X-Credential-Identifier").len() == 36);
        seen.assert_no_header("X-Anonymous-Consumer");
        assert_eq!(seen.assert_header("apikey"), "kong", "the key goes upstream by default");

        let res = proxy.get("/ka/anything").query("apikey", "kong").send().await;
        res.assert_status(200);

        let res = proxy
            .get("/ka/anything")
            .header("apikey", "kong")
            .header("apikey", "kong")
            .send()
            .await;
        res.assert_status(401);
        assert_eq!(message(&res), "Duplicate API key found");
        let res = proxy.get("/ka/anything?apikey=kong&apikey=x").send().await;
        assert_eq!(message(&res), "Duplicate API key found");

        // hide_credentials takes the key out of headers and the query string; realm is shown.
        let res = proxy
            .get("/hide/anything")
            .query("apikey", "kong")
            .query("other", "1")
            .send()
            .await;
        let seen = res.request();
        assert!(seen.echo()["uri_args"].get("apikey").is_none(), "{}", seen.echo());
        assert_eq!(seen.assert_query_param("other"), "1");
        let res = proxy.get("/hide/anything").send().await;
        assert_eq!(res.assert_header("WWW-Authenticate"), "Key realm=\"service\"");
        // ... and out of the headers, leaving the others.
        let res = proxy
            .get("/hide/anything")
            .header("apikey", "kong")
            .header("X-Other", "1")
            .send()
            .await;
        res.assert_status(200);
        let seen = res.request();
        seen.assert_no_header("apikey");
        assert_eq!(seen.assert_header("X-Other"), "1", "[#{strategy}]");
        // ... and out of JSON and form bodies.
        let res = proxy
            .post("/hide-body/post")
            .json(&json!({ "apikey": "kong", "other": 1 }))
            .send()
            .await;
        res.assert_status(200);
        assert_eq!(res.request().assert_json_body(), json!({ "other": 1 }), "[#{strategy}]");
        let res = proxy
            .post("/hide-body/post")
            .form(&json!({ "apikey": "kong", "other": "1" }))
            .send()
            .await;
        res.assert_status(200);
        let seen = res.request();
        assert_eq!(seen.assert_form_param("other"), "1");
        assert!(
            seen.echo()["post_data"]["params"].get("apikey").is_none(),
            "{}",
            seen.echo()
        );

        // key_in_query = false: a key in the query string is not looked at.
        let res = proxy.get("/no-query/anything").query("apikey", "kong").send().await;
        res.assert_status(401);
        assert_eq!(message(&res), "No API key found in request");
        proxy
            .get("/no-query/anything")
            .header("apikey", "kong")
            .send()
            .await
            .assert_status(200);

        // run_on_preflight = false lets CORS preflights through without a key; by default they
        // need one like any request.
        let preflight = |path: &'static str| {
            proxy
                .options(path)
                .header("Origin", "http://example.test")
                .header("Access-Control-Request-Method", "GET")
        };
        preflight("/preflight/anything").send().await.assert_status(200);
        preflight("/ka/anything").send().await.assert_status(401);

        // anonymous: a failed authentication falls back to the consumer.
        let seen = proxy.get("/anon/anything").send().await.request();
        assert_eq!(seen.assert_header("X-Consumer-Username"), "guest");
        assert_eq!(seen.assert_header("X-Anonymous-Consumer"), "true");
        seen.assert_no_header("X-Credential-Identifier");
        let res = proxy.get("/ghost/anything").send().await;
        res.assert_status(500);
        assert_eq!(
            message(&res),
            "anonymous consumer nobody is configured but doesn't exist"
        );

        // key_in_body: JSON and form bodies; the header is not looked at.
        let res = proxy.post("/body/post").json(&json!({ "apikey": "kong" })).send().await;
        res.assert_status(200);
        let res = proxy.post("/body/post").form(&json!({ "apikey": "kong" })).send().await;
        res.assert_status(200);
        let res = proxy.post("/body/post").header("apikey", "kong").send().await;
        assert_eq!(message(&res), "No API key found in request");
        kong.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_have_kongs_admin_api_on_every_database() {
    for strategy in helpers::each_strategy() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        bp.consumers().insert(json!({ "username": "bob" })).await;
        bp.consumers().insert(json!({ "username": "alice" })).await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let admin = kong.admin_client();

        // POST {} generates a key.
        let res = admin.post("/consumers/bob/key-auth").json(&json!({})).send().await;
        let generated: Value = serde_json::from_str(&res.assert_status(201)).unwrap();
        assert_eq!(
            generated["key"].as_str().map(str::len),
            Some(32),
            "[#{strategy}] {generated}"
        );
        assert!(generated["consumer"]["id"].is_string());
        // Form bodies work as for Kong's entities.
        let res = admin
            .post("/consumers/bob/key-auth")
            .form(&json!({ "key": "kong" }))
            .send()
            .await;
        res.assert_status(201);
        let res = admin
            .post("/consumers/alice/key-auth")
            .json(&json!({ "key": "kong" }))
            .send()
            .await;
        res.assert_status(409);
        assert_eq!(res.assert_json()["name"], "unique constraint violation");

        let list = admin.get("/consumers/bob/key-auth").send().await.assert_json();
        assert_eq!(list["data"].as_array().map(Vec::len), Some(2));
        let all = admin.get("/key-auths").send().await.assert_json();
        assert_eq!(all["data"].as_array().map(Vec::len), Some(2));
        let one = admin.get("/key-auths/kong").send().await.assert_json();
        assert_eq!(one["key"], "kong");
        let owner = admin.get("/key-auths/kong/consumer").send().await.assert_json();
        assert_eq!(owner["username"], "bob");
        admin
            .get("/consumers/alice/key-auth/kong")
            .send()
            .await
            .assert_status(404);

        let res = admin.post("/key-auths").json(&json!({ "key": "x" })).send().await;
        res.assert_status(400);
        assert_eq!(
            res.assert_json()["message"],
            "schema violation (consumer: required field missing)"
        );
        let res = admin.patch("/key-auths/kong").json(&json!({ "key": 123 })).send().await;
        res.assert_status(400);
        assert_eq!(res.assert_json()["fields"]["key"], "expected a string");

        let res = admin.put("/consumers/bob/key-auth/1234").json(&json!({})).send().await;
        let put: Value = serde_json::from_str(&res.assert_status(200)).unwrap();
        assert_eq!(put["key"], "1234");
        // The new key works on the proxy at once.
        bp.routes().insert(json!({ "paths": ["/ka"] })).await;
        bp.plugins().insert(json!({ "name": "key-auth" })).await;
        kong.proxy_client()
            .get("/ka/anything")
            .header("apikey", "1234")
            .send()
            .await
            .assert_status(200);

        // Deleting the consumer deletes its credentials.
        admin.delete("/consumers/bob").send().await.assert_status(204);
        let all = admin.get("/key-auths").send().await.assert_json();
        assert_eq!(all["data"], json!([]), "[#{strategy}]");
        kong.proxy_client()
            .get("/ka/anything")
            .header("apikey", "1234")
            .send()
            .await
            .assert_status(401);
        kong.stop().await;
    }
}

#[tokio::test]
async fn credentials_nest_under_consumers_in_declarative_config() {
    let bp = helpers::get_db_utils(Strategy::Off, &["key-auth"]).await;
    let yaml = format!(
        r#"_format_version: "3.0"
consumers:
- username: bob
  keyauth_credentials:
  - key: nested-key
keyauth_credentials:
- key: top-key
  consumer: bob
services:
- url: {}
  routes:
  - paths: [/ka]
  plugins:
  - name: key-auth
"#,
        bp.mock_upstream_url()
    );
    let kong = helpers::start_kong(&bp, Conf::default().declarative_config(&yaml)).await;
    for key in ["nested-key", "top-key"] {
        let res = kong
            .proxy_client()
            .get("/ka/anything")
            .header("apikey", key)
            .send()
            .await;
        res.assert_status(200);
        assert_eq!(res.request().assert_header("X-Consumer-Username"), "bob");
    }
    let config = kong.admin_client().get("/config").send().await.assert_json();
    assert!(config["config"].as_str().unwrap().contains("keyauth_credentials"));
    // DB-less: credential writes answer 405 as every entity write does.
    let res = kong
        .admin_client()
        .post("/consumers/bob/key-auth")
        .json(&json!({}))
        .send()
        .await;
    res.assert_status(405);
    assert_eq!(
        res.assert_json()["message"],
        "cannot create 'keyauth_credentials' entities when not using a database"
    );
}

#[tokio::test]
async fn without_the_plugin_enabled_its_entities_are_not_served() {
    let bp = helpers::get_db_utils(Strategy::Sqlite, &[]).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    kong.admin_client().get("/key-auths").send().await.assert_status(404);
    let endpoints = kong.admin_client().get("/endpoints").send().await.assert_json();
    assert!(!endpoints["data"].as_array().unwrap().iter().any(|e| e == "/key-auths"));
}

#[test]
fn the_schema_is_kongs() {
    let schema = KeyAuth::schema().to_json();
    let config = &schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f.get("config").is_some())
        .unwrap()["config"];
    let fields: Vec<&str> = config["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_object().unwrap().keys().next().unwrap().as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "key_names",
            "hide_credentials",
            "anonymous",
            "key_in_header",
            "key_in_query",
            "key_in_body",
            "run_on_preflight",
            "realm"
        ]
    );
    assert_eq!(config["fields"][0]["key_names"]["default"], json!(["apikey"]));
    // `elements = typedefs.header_name`, as in Kong's schema.lua, and enforced per element.
    let elements = &config["fields"][0]["key_names"]["elements"];
    assert_eq!(elements["type"], "string");
    assert_eq!(elements["description"], "A string representing an HTTP header name.");
    let err = KeyAuth::schema()
        .validate_config(json!({ "key_names": ["apikey", "bad name"] }))
        .unwrap_err();
    assert_eq!(
        err.fields()["config"]["key_names"][1],
        "bad header name 'bad name', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
    );
    assert_eq!(KeyAuth::PRIORITY, 1250);
}

/// Kong Enterprise runs key-auth in a WebSocket service's handshake: no key, no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_guards_the_handshake_of_a_websocket_route() {
    use kong_pdk::pdk::{Frame, FrameKind};
    let strategy = helpers::all_strategies()[0];
    let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
    setup(&bp).await;
    let echo = format!("ws://{}/ws", bp.mock_upstream());
    let service = bp.services().insert(json!({ "name": "echo", "url": echo })).await;
    let route = bp
        .routes()
        .insert(json!({ "protocols": ["ws"], "paths": ["/chat"], "service": { "id": service["id"] } }))
        .await;
    bp.plugins()
        .insert(json!({ "name": KeyAuth::NAME, "route": { "id": route["id"] }, "config": {} }))
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;

    let refused = kong.websocket("/chat", &[]).await.err().expect("refused without a key");
    assert_eq!(refused.status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&refused.body).unwrap()["message"],
        "No API key found in request"
    );
    let wrong = kong
        .websocket("/chat", &[("apikey", "nope")])
        .await
        .err()
        .expect("refused");
    assert_eq!(wrong.status, 401);

    let mut ws = kong.websocket("/chat", &[("apikey", "kong")]).await.expect("a session");
    ws.send(Frame::new(FrameKind::Text, "hello")).await;
    assert_eq!(ws.receive().await, Some(Frame::new(FrameKind::Text, "hello")));
    // The mock reports the handshake it got: the gateway's, with the client's key.
    ws.send(Frame::new(FrameKind::Text, "$_REQUEST")).await;
    let seen: Value = serde_json::from_slice(&ws.receive().await.expect("the handshake").data).unwrap();
    assert_eq!(seen["path"], "/ws");
    assert_eq!(seen["headers"]["apikey"], "kong");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-consumer-username"], "bob");
    ws.send(Frame::close(1000, "done")).await;
    assert_eq!(ws.receive().await, Some(Frame::close(1000, "done")));
    kong.stop().await;
}

/// Keys written with a `ttl` are gone once they have lived that long: 401 on the proxy, 404 on
/// the Admin API, which shows the time left of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_a_ttl_expire() {
    let strategy = helpers::all_strategies()
        .into_iter()
        .find(|s| *s != helpers::Strategy::Off)
        .expect("a database strategy");
    let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
    setup(&bp).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let admin = kong.admin_client();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (key, ttl, created) in [("old", 5, now - 10), ("young", 1000, now)] {
        admin
            .post("/consumers/bob/key-auth")
            .json(&json!({ "key": key, "ttl": ttl, "created_at": created }))
            .send()
            .await
            .assert_status(201);
    }
    admin.get("/consumers/bob/key-auth/old").send().await.assert_status(404);
    let young = admin.get("/key-auths/young").send().await;
    young.assert_status(200);
    let left = young.assert_json()["ttl"].as_i64().unwrap();
    assert!((990..=1000).contains(&left), "{left}");
    let listed = admin.get("/consumers/bob/key-auth").send().await.assert_json();
    let keys: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["key"].as_str())
        .collect();
    assert!(keys.contains(&"young") && !keys.contains(&"old"), "{keys:?}");

    let proxy = kong.proxy_client();
    proxy
        .get("/ka/anything")
        .header("apikey", "old")
        .send()
        .await
        .assert_status(401);
    proxy
        .get("/ka/anything")
        .header("apikey", "young")
        .send()
        .await
        .assert_status(200);
    kong.stop().await;
}

/// A key name with `_` finds the header written with `-`, as Kong's header lookup does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_names_with_underscores_match_headers_with_dashes() {
    let bp = helpers::get_db_utils(helpers::all_strategies()[0], &["bundled"]).await;
    setup(&bp).await;
    let route = bp.routes().insert(json!({ "paths": ["/underscore"] })).await;
    bp.plugins()
        .insert(
            json!({ "name": KeyAuth::NAME, "route": { "id": route["id"] }, "config": { "key_names": ["api_key"] } }),
        )
        .await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let proxy = kong.proxy_client();
    proxy
        .get("/underscore/anything")
        .header("api-key", "kong")
        .send()
        .await
        .assert_status(200);
    proxy
        .get("/underscore/anything")
        .header("api-key", "nope")
        .send()
        .await
        .assert_status(401);
    kong.stop().await;
}
