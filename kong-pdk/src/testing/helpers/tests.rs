//! The helpers against themselves: every strategy, blueprint defaults, clients, assertions and
//! their failure messages, the error log, and cleanup.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::prelude::*;

/// Sets a header, logs a line per request, and fails on `/fail`.
#[plugin(priority = 900, version = "1.2.3", name = "helpers-probe")]
struct Probe {
    #[field(typedef = header_name, default = "X-Probe")]
    header: String,
}

#[handler]
impl Handler for Probe {
    async fn access(&self, kong: &mut Kong<Access>) -> crate::Result {
        let path = kong.request().get_path();
        kong.log().notice(format!("saw {path}"));
        if path.ends_with("/fail") {
            return Err(crate::Error::msg("probe refused the request"));
        }
        kong.service().request().set_header("X-Probe-Upstream", "yes")?;
        Ok(())
    }

    async fn response(&self, kong: &mut Kong<Response>) -> crate::Result {
        kong.response().set_header(&self.header, "probe")?;
        Ok(())
    }
}

/// Runs `f` for every strategy there is on this machine.
async fn for_each<F, Fut>(f: F)
where
    F: Fn(Strategy) -> Fut,
    Fut: Future<Output = ()>,
{
    let strategies = all_strategies();
    assert!(strategies.contains(&Strategy::Off) && strategies.contains(&Strategy::Sqlite));
    for s in strategies {
        f(s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_spec_passes_on_every_strategy() {
    for_each(|strategy| async move {
        let bp = get_db_utils(strategy, &["helpers-probe"]).await;
        assert_eq!(bp.strategy(), strategy);
        let route = bp.routes().insert(json!({ "paths": ["/mock"] })).await;
        bp.plugins()
            .insert(
                json!({ "name": "helpers-probe", "route": { "id": route["id"] }, "config": { "header": "X-Custom" } }),
            )
            .await;
        let kong = start_kong(&bp, Conf::default()).await;

        let res = kong
            .proxy_client()
            .get("/mock/anything")
            .query("a b", "1&2")
            .send()
            .await;
        res.assert_status(200);
        assert_eq!(res.assert_header("x-custom"), "probe", "[{strategy}]");
        res.assert_no_header("X-Probe");
        let seen = res.request();
        assert_eq!(seen.assert_header("X-Probe-Upstream"), "yes");
        assert_eq!(seen.assert_query_param("a b"), json!("1&2"));
        assert!(
            kong.error_log()
                .iter()
                .any(|l| l == "[notice] [helpers-probe] saw /mock/anything")
        );

        // TLS, with and without a server name.
        let res = kong.proxy_ssl_client().get("/mock/anything").send().await;
        assert_eq!(
            res.request().echo()["vars"]["scheme"],
            "http",
            "TLS ends at the gateway"
        );
        assert_eq!(res.assert_header("X-Custom"), "probe");
        let res = kong
            .proxy_ssl_client_sni("example.test")
            .get("/mock/anything")
            .send()
            .await;
        res.assert_status(200);

        // The Admin API of the running node shows what the blueprint inserted.
        let routes = kong.admin_client().get("/routes").send().await;
        let body = routes.assert_json();
        assert_eq!(body["data"][0]["id"], route["id"], "[{strategy}]");
        kong.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blueprint_defaults_follow_kongs() {
    let bp = get_db_utils(Strategy::Sqlite, &["helpers-probe"]).await;
    let service = bp.services().insert(json!({ "name": "s1" })).await;
    assert_eq!(service["host"], "127.0.0.1");
    assert_eq!(service["port"], bp.mock_upstream().port());
    assert_eq!(service["protocol"], "http");
    let route = bp.routes().insert(json!({ "paths": ["/a"] })).await;
    assert!(route["service"]["id"].is_string(), "a default service: {route}");
    assert_ne!(route["service"]["id"], service["id"]);
    let own = bp
        .routes()
        .insert(json!({ "paths": ["/b"], "service": { "id": service["id"] } }))
        .await;
    assert_eq!(own["service"]["id"], service["id"]);
    let consumers = bp.consumers().insert_n(2, json!({})).await;
    assert_eq!(consumers[0]["username"], "consumer-username-1");
    assert_eq!(consumers[1]["custom_id"], "consumer-id-2");
    let named = bp.consumers().insert(json!({ "username": "bob" })).await;
    assert_eq!(named["username"], "bob");
    let updated = bp.services().update("s1", json!({ "retries": 2 })).await;
    assert_eq!(updated["retries"], 2);
    bp.routes().remove(own["id"].as_str().unwrap()).await;
    assert_eq!(bp.mock_upstream_url(), format!("http://{}", bp.mock_upstream()));
}

#[tokio::test]
#[should_panic(expected = "bp.services:insert")]
async fn a_rejected_insert_panics_with_kongs_error() {
    let bp = get_db_utils(Strategy::Sqlite, &[]).await;
    bp.services().insert(json!({ "port": 99999 })).await;
}

#[tokio::test]
#[should_panic(expected = "not-linked-anywhere plugin is enabled but not installed")]
async fn an_unknown_plugin_is_a_clear_failure() {
    get_db_utils(Strategy::Sqlite, &["not-linked-anywhere"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_database_later_inserts_reach_the_running_gateway() {
    for strategy in each_strategy() {
        let bp = get_db_utils(strategy, &["helpers-probe"]).await;
        let kong = start_kong(&bp, Conf::default()).await;
        kong.proxy_client()
            .get("/late/anything")
            .send()
            .await
            .assert_status(404);
        bp.routes().insert(json!({ "paths": ["/late"] })).await;
        let res = kong.proxy_client().get("/late/anything").send().await;
        res.assert_status(200);
        kong.stop().await;
    }
}

#[tokio::test]
async fn off_starts_from_a_given_declarative_config() {
    let bp = get_db_utils(Strategy::Off, &["helpers-probe"]).await;
    let yaml = format!(
        "_format_version: '3.0'\nservices:\n- name: s\n  url: {}\n  routes:\n  - paths: [/yml]\n  plugins:\n  - name: helpers-probe\n",
        bp.mock_upstream_url()
    );
    let kong = start_kong(&bp, Conf::default().declarative_config(&yaml).headers("off")).await;
    let res = kong.proxy_client().get("/yml/anything").send().await;
    res.assert_status(200);
    assert_eq!(res.assert_header("X-Probe"), "probe");
    res.assert_no_header("Via");
    // DB-less: entity writes answer 405.
    let res = kong
        .admin_client()
        .post("/services")
        .form(&json!({ "host": "x" }))
        .send()
        .await;
    assert_eq!(res.assert_json()["code"], 12);
}

#[tokio::test]
async fn clients_encode_forms_and_json_as_kongs_do() {
    let bp = get_db_utils(Strategy::Sqlite, &[]).await;
    bp.routes().insert(json!({ "paths": ["/echo"] })).await;
    let kong = start_kong(&bp, Conf::default()).await;
    let form = json!({ "name": "a b", "paths": ["/x", "/y"], "config": { "k": "v&w" }, "empty": null });
    let seen = kong
        .proxy_client()
        .post("/echo/post")
        .form(&form)
        .send()
        .await
        .request();
    assert_eq!(seen.assert_form_param("name"), "a b");
    assert_eq!(seen.assert_form_param("paths[]"), json!(["/x", "/y"]));
    assert_eq!(seen.assert_form_param("config.k"), "v&w");
    let seen = kong
        .proxy_client()
        .post("/echo/post")
        .json(&form)
        .send()
        .await
        .request();
    assert_eq!(seen.assert_json_body(), form);
    // The Admin API takes the same form: Kong's conventions round-trip.
    let res = kong
        .admin_client()
        .post("/services")
        .form(&json!({ "name": "formed", "url": "http://example.test/p", "tags": ["a", "b"] }))
        .send()
        .await;
    let created: serde_json::Value = serde_json::from_str(&res.assert_status(201)).unwrap();
    assert_eq!(created["tags"], json!(["a", "b"]));
    assert_eq!(created["path"], "/p");
    let res = kong
        .admin_client()
        .post("/services")
        .multipart(&json!({ "name": "parted", "url": "http://example.test:81", "retries": 3 }))
        .send()
        .await;
    let created: serde_json::Value = serde_json::from_str(&res.assert_status(201)).unwrap();
    assert_eq!(
        (created["port"].clone(), created["retries"].clone()),
        (json!(81), json!(3))
    );
    let seen = kong
        .proxy_client()
        .post("/echo/post")
        .multipart(&json!({ "a": "b" }))
        .send()
        .await
        .request();
    assert_eq!(seen.echo()["post_data"]["kind"], "multipart-form");
}

#[tokio::test]
async fn blueprint_targets_go_under_their_upstream() {
    let bp = get_db_utils(Strategy::Sqlite, &[]).await;
    let upstream = bp.upstreams().insert(json!({ "name": "lb.test" })).await;
    assert_eq!(upstream["slots"], 100);
    let mock = bp.mock_upstream().to_string();
    let target = bp
        .targets()
        .insert(json!({ "upstream": { "id": upstream["id"] }, "target": mock }))
        .await;
    assert_eq!(target["weight"], 10);
    bp.services()
        .insert(json!({ "name": "balanced", "host": "lb.test", "port": 80 }))
        .await;
    bp.routes()
        .insert(json!({ "paths": ["/lb"], "service": { "name": "balanced" } }))
        .await;
    let kong = start_kong(&bp, Conf::default()).await;
    kong.proxy_client().get("/lb/anything").send().await.assert_status(200);
}

#[tokio::test]
async fn a_failed_status_assertion_prints_the_body_and_the_error_log() {
    let bp = get_db_utils(Strategy::Sqlite, &["helpers-probe"]).await;
    bp.plugins().insert(json!({ "name": "helpers-probe" })).await;
    bp.routes().insert(json!({ "paths": ["/p"] })).await;
    let kong = start_kong(&bp, Conf::default()).await;
    let res = kong.proxy_client().get("/p/fail").send().await;
    let message = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| res.assert_status(200)))
        .expect_err("a 500 is not a 200")
        .downcast::<String>()
        .unwrap();
    assert!(
        message.contains("Expected response status 200, but it was 500."),
        "{message}"
    );
    assert!(message.contains("An unexpected error occurred"), "the body: {message}");
    assert!(
        message.contains("[error] [helpers-probe] access failed: probe refused the request"),
        "the error log: {message}"
    );
    let message = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| res.assert_header("X-Nope")))
        .expect_err("no such header")
        .downcast::<String>()
        .unwrap();
    assert!(
        message.contains("Expected header: X-Nope\nBut it was not found in:"),
        "{message}"
    );
    assert!(message.contains("content-type: application/json"), "{message}");
}

#[tokio::test]
#[should_panic(expected = "timed out after 100ms waiting for nothing")]
async fn wait_until_gives_up_with_the_reason() {
    wait_until("nothing", Duration::from_millis(100), || async { false }).await;
}

#[test]
fn kong_database_narrows_the_strategies() {
    // `all_strategies` passes KONG_DATABASE's value; the environment is left alone here, as
    // other tests run in parallel.
    assert_eq!(
        strategies_with(Some("off"), &[Strategy::Off, Strategy::Sqlite]),
        [Strategy::Off]
    );
    assert_eq!(
        strategies_with(None, &[Strategy::Off, Strategy::Sqlite]),
        [Strategy::Off, Strategy::Sqlite]
    );
    assert_eq!(Strategy::Postgres.to_string(), "postgres");
}

#[tokio::test]
async fn a_postgres_blueprint_drops_its_database() {
    if !each_strategy().contains(&Strategy::Postgres) {
        return; // the reason is printed by each_strategy; CI requires PostgreSQL
    }
    let bp = get_db_utils(Strategy::Postgres, &[]).await;
    let Scratch::Database { settings, name } = &bp.0._scratch else {
        panic!("a database of its own")
    };
    let (url, name) = (settings.url("postgres"), name.clone());
    drop(bp);
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let left: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM pg_database WHERE datname = '{name}'"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "{name} is dropped with the blueprint");
}

/// The PostgreSQL probe logs in: a server that answers but refuses the user is unreachable,
/// with the server's reason and the variables to set; a port with no server fails fast.
#[test]
fn the_postgres_probe_logs_in_and_says_what_to_set() {
    let settings = PgSettings::from_env();
    let wrong_user = PgSettings {
        user: "kong_pdk_no_such_role".into(),
        ..PgSettings::from_env()
    };
    let err = wrong_user.login().unwrap_err();
    assert!(err.contains("(user kong_pdk_no_such_role) is unreachable: "), "{err}");
    assert!(err.ends_with("KONG_TEST_PG_USER and KONG_TEST_PG_PASSWORD"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nothing = PgSettings {
        port: closed,
        ..PgSettings::from_env()
    };
    assert!(nothing.login().is_err());
    // Where the real server is expected, a login works (CI requires it).
    match settings.login() {
        Ok(()) => {}
        Err(why) if std::env::var("KONG_TEST_REQUIRE_PG").as_deref() != Ok("1") => {
            eprintln!("skipping the successful login: {why}")
        }
        Err(why) => panic!("KONG_TEST_REQUIRE_PG=1 but {why}"),
    }
}
