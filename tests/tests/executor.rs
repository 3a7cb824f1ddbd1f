//! The phase executor's rules, each pinned by a test: order, global-only phases, config
//! precedence, short-circuits, failures, buffering, contexts, configure and init_worker.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use kong_pdk::entities::Consumer;
use kong_pdk::executor::{PluginEntity, PluginSet};
use kong_pdk::pdk::NodeInfo;
use kong_pdk::prelude::*;
use kong_pdk::registry::{LoadError, Plugins};
use kong_pdk::testing::{Harness, MockResponse, Outcome, TestRequest};
use serde_json::json;
use uuid::Uuid;

macro_rules! tracer {
    ($ty:ident, $name:literal, $prio:literal) => {
        /// Logs every request phase it runs in.
        #[plugin(priority = $prio, version = "1.0.0", name = $name)]
        pub struct $ty {}

        #[handler]
        impl Handler for $ty {
            async fn rewrite(&self, kong: &mut Kong<Rewrite>) -> kong_pdk::Result {
                kong.log().notice("rewrite");
                Ok(())
            }
            async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
                kong.log().notice("access");
                Ok(())
            }
            async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
                kong.log().notice("header_filter");
                Ok(())
            }
            async fn body_filter(&self, kong: &mut Kong<BodyFilter>) -> kong_pdk::Result {
                kong.log().notice("body_filter");
                Ok(())
            }
            async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
                kong.log().notice("log");
                Ok(())
            }
        }
    };
}

tracer!(TraceA, "trace-a", 100);
tracer!(TraceB, "trace-b", 10);
tracer!(TraceC, "trace-c", 10);

/// Exits with `status` in `phase`.
#[plugin(priority = 50, version = "1.0.0", name = "exiter")]
pub struct Exiter {
    #[field(one_of = ["rewrite", "access", "header_filter", "response"])]
    phase: String,
    #[field(default = 403)]
    status: u16,
}

#[handler]
impl Handler for Exiter {
    async fn rewrite(&self, kong: &mut Kong<Rewrite>) -> kong_pdk::Result {
        if self.phase == "rewrite" {
            return kong.response().exit(self.status, "from rewrite");
        }
        Ok(())
    }
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        if self.phase == "access" {
            return kong
                .response()
                .exit_with(self.status, json!({ "message": "denied" }), [("X-Exit", "access")]);
        }
        Ok(())
    }
    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        if self.phase == "header_filter" {
            return kong.response().exit(self.status, "from header_filter");
        }
        Ok(())
    }
}

/// Fails (error or panic) in `phase`.
#[plugin(priority = 40, version = "1.0.0", name = "failer")]
pub struct Failer {
    #[field(one_of = ["error", "panic"], default = "error")]
    mode: String,
    phase: String,
}

impl Failer {
    fn fail(&self, phase: &str) -> kong_pdk::Result {
        if self.phase != phase {
            return Ok(());
        }
        if self.mode == "panic" {
            panic!("boom in {phase}");
        }
        Err(kong_pdk::Error::msg(format!("broken {phase}")))
    }
}

#[handler]
impl Handler for Failer {
    async fn rewrite(&self, _: &mut Kong<Rewrite>) -> kong_pdk::Result {
        self.fail("rewrite")
    }
    async fn access(&self, _: &mut Kong<Access>) -> kong_pdk::Result {
        self.fail("access")
    }
    async fn header_filter(&self, _: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        self.fail("header_filter")
    }
    async fn body_filter(&self, _: &mut Kong<BodyFilter>) -> kong_pdk::Result {
        self.fail("body_filter")
    }
    async fn log(&self, _: &mut Kong<Log>) -> kong_pdk::Result {
        self.fail("log")
    }
}

/// Authenticates the consumer whose id is in `X-Consumer-Id`.
#[plugin(priority = 1250, version = "1.0.0", name = "test-auth")]
pub struct TestAuth {}

#[handler]
impl Handler for TestAuth {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let id = kong
            .request()
            .get_header("x-consumer-id")
            .and_then(|v| v.parse::<Uuid>().ok());
        if let Some(id) = id {
            let consumer = Consumer {
                id,
                ..Consumer::new("alice")
            };
            kong.client().authenticate(Some(consumer), None)?;
        }
        Ok(())
    }
}

macro_rules! labeler {
    ($ty:ident, $name:literal, $prio:literal, $header:literal) => {
        /// Sets a header to its configured label: shows which instance applies.
        #[plugin(priority = $prio, version = "1.0.0", name = $name)]
        pub struct $ty {
            label: String,
        }

        #[handler]
        impl Handler for $ty {
            async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
                kong.response().set_header($header, &self.label)?;
                Ok(())
            }
        }
    };
}

labeler!(Scoped, "scoped", 5, "X-Scoped");
// Runs before the auth plugin (priority 1250).
labeler!(EarlyScoped, "early-scoped", 2000, "X-Early");

/// Reads the buffered upstream body in `response`.
#[plugin(priority = 3, version = "1.0.0", name = "body-reader")]
pub struct BodyReader {}

#[handler]
impl Handler for BodyReader {
    async fn response(&self, kong: &mut Kong<Response>) -> kong_pdk::Result {
        let body = kong.service().response().get_raw_body()?;
        kong.response().set_header("X-Body-Len", body.len())?;
        if body.as_ref() == b"replace me" {
            return kong.response().exit(201, "replaced");
        }
        Ok(())
    }
}

/// Buffers the whole body in body_filter and upper-cases it.
#[plugin(priority = 2, version = "1.0.0", name = "upper-body")]
pub struct UpperBody {}

#[handler]
impl Handler for UpperBody {
    async fn body_filter(&self, kong: &mut Kong<BodyFilter>) -> kong_pdk::Result {
        if let Some(body) = kong.response().get_raw_body() {
            kong.response().set_raw_body(body.to_ascii_uppercase());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Shared(&'static str);
#[derive(Debug, Clone, PartialEq)]
struct Private(&'static str);

/// Writes both contexts.
#[plugin(priority = 20, version = "1.0.0", name = "ctx-writer")]
pub struct CtxWriter {}

#[handler]
impl Handler for CtxWriter {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        kong.ctx().shared().insert(Shared("from writer"));
        kong.ctx().plugin().insert(Private("writer only"));
        Ok(())
    }
    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        let mine = kong.ctx().plugin().get::<Private>().map_or("none", |p| p.0);
        kong.response().set_header("X-Writer-Private", mine)?;
        Ok(())
    }
}

/// Reads both contexts.
#[plugin(priority = 19, version = "1.0.0", name = "ctx-reader")]
pub struct CtxReader {}

#[handler]
impl Handler for CtxReader {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let shared = kong.ctx().shared().get::<Shared>().map_or("none", |s| s.0);
        let private = kong.ctx().plugin().get::<Private>().map_or("none", |p| p.0);
        kong.response().set_header("X-Shared", shared)?;
        kong.response().set_header("X-Reader-Private", private)?;
        Ok(())
    }
}

/// Counts init_worker and records what configure got.
#[derive(Default)]
pub struct Seen {
    init: AtomicUsize,
    configs: Mutex<Vec<Option<Vec<String>>>>,
}

#[plugin(priority = 1, version = "1.0.0", name = "configured")]
pub struct Configured {
    label: String,
}

#[handler]
impl Handler for Configured {
    type State = Seen;

    async fn init_worker(kong: &Worker<Seen>) -> kong_pdk::Result {
        kong.state().init.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn configure(kong: &Worker<Seen>, configs: Option<&[Instance<Self>]>) -> kong_pdk::Result {
        let labels = configs.map(|c| c.iter().map(|i| i.config.label.clone()).collect());
        kong.state().configs.lock().unwrap().push(labels);
        Ok(())
    }

    async fn access(&self, kong: &mut Kong<Access, Seen>) -> kong_pdk::Result {
        let seen = kong.state();
        let summary = format!(
            "{} {:?}",
            seen.init.load(Ordering::SeqCst),
            seen.configs.lock().unwrap()
        );
        kong.response().set_header("X-Configs", summary)?;
        Ok(())
    }
}

/// A global `trace-a` and a `trace-b` scoped to the harness's route.
async fn global_a_and_route_scoped_b() -> kong_pdk::testing::TestGateway {
    let h = Harness::new();
    let route = h.route().id;
    h.plugin::<TraceA>(json!({}))
        .plugin_entity::<TraceB>(PluginEntity::new("trace-b", json!({})).route(route))
        .start()
        .await
        .unwrap()
}

fn phases_of(res: &Outcome) -> Vec<String> {
    res.logs().iter().map(|l| l.message.clone()).collect()
}

fn ok(_: &kong_pdk::transaction::UpstreamRequest) -> MockResponse {
    MockResponse::ok("upstream body")
}

#[tokio::test]
async fn plugins_run_by_priority_then_name_descending() {
    let gw = Harness::new()
        .plugin::<TraceB>(json!({}))
        .plugin::<TraceA>(json!({}))
        .plugin::<TraceC>(json!({}))
        .start()
        .await
        .unwrap();
    let res = gw.send(TestRequest::get("/"), ok).await;
    let access: Vec<String> = phases_of(&res).into_iter().filter(|l| l.ends_with("access")).collect();
    assert_eq!(access, ["[trace-a] access", "[trace-c] access", "[trace-b] access"]);
}

#[tokio::test]
async fn rewrite_runs_global_instances_only() {
    let gw = global_a_and_route_scoped_b().await;
    let res = gw.send(TestRequest::get("/"), ok).await;
    let logs = phases_of(&res);
    assert!(logs.contains(&"[trace-a] rewrite".to_owned()));
    assert!(!logs.contains(&"[trace-b] rewrite".to_owned()));
    assert!(
        logs.contains(&"[trace-b] access".to_owned()),
        "route-scoped instances run from access on"
    );
}

#[tokio::test]
async fn config_precedence_follows_kongs_eight_levels() {
    let consumer = Uuid::new_v4();
    let base = Harness::new();
    let (r, s) = (base.route().id, base.service().id);
    let c = consumer;
    // Kong's order, most specific first.
    type Level<'a> = (&'a str, Option<Uuid>, Option<Uuid>, Option<Uuid>);
    let levels: Vec<Level> = vec![
        ("route+service+consumer", Some(r), Some(s), Some(c)),
        ("route+consumer", Some(r), None, Some(c)),
        ("service+consumer", None, Some(s), Some(c)),
        ("route+service", Some(r), Some(s), None),
        ("consumer", None, None, Some(c)),
        ("route", Some(r), None, None),
        ("service", None, Some(s), None),
        ("global", None, None, None),
    ];
    for skip in 0..levels.len() {
        let mut h = Harness::new()
            .with_route(|rt| rt.id = r)
            .with_service(|sv| sv.id = s)
            .plugin::<TestAuth>(json!({}));
        for (label, route, service, cons) in &levels[skip..] {
            let mut e = PluginEntity::new("scoped", json!({ "label": label }));
            e.scope.route = *route;
            e.scope.service = *service;
            e.scope.consumer = *cons;
            h = h.plugin_entity::<Scoped>(e);
        }
        let gw = h.start().await.unwrap();
        let res = gw
            .send(TestRequest::get("/").header("X-Consumer-Id", &c.to_string()), ok)
            .await;
        assert_eq!(res.header("X-Scoped"), Some(levels[skip].0), "with levels {skip}..");
    }
}

#[tokio::test]
async fn consumer_scoped_config_is_invisible_to_plugins_running_before_auth() {
    let consumer = Uuid::new_v4();
    let gw = Harness::new()
        .plugin::<TestAuth>(json!({}))
        .plugin::<EarlyScoped>(json!({ "label": "global" }))
        .plugin_entity::<EarlyScoped>(
            PluginEntity::new("early-scoped", json!({ "label": "consumer" })).consumer(consumer),
        )
        .plugin_entity::<Scoped>(PluginEntity::new("scoped", json!({ "label": "consumer" })).consumer(consumer))
        .start()
        .await
        .unwrap();
    let res = gw
        .send(TestRequest::get("/").header("X-Consumer-Id", &consumer.to_string()), ok)
        .await;
    assert_eq!(res.header("X-Early"), Some("global"));
    assert_eq!(res.header("X-Scoped"), Some("consumer"));
}

#[tokio::test]
async fn exit_in_access_stops_later_access_but_collected_plugins_still_filter_and_log() {
    let gw = Harness::new()
        .plugin::<TraceA>(json!({}))
        .plugin::<Exiter>(json!({ "phase": "access", "status": 403 }))
        .plugin::<TraceB>(json!({}))
        .start()
        .await
        .unwrap();
    let mut proxied = false;
    let res = gw
        .send(TestRequest::get("/"), |_| {
            proxied = true;
            MockResponse::ok("")
        })
        .await;
    assert!(!proxied, "an exit in access is not proxied");
    assert_eq!(res.status(), 403);
    assert_eq!(res.body_text(), r#"{"message":"denied"}"#);
    assert_eq!(res.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(res.header("X-Exit"), Some("access"));
    let logs = phases_of(&res);
    assert!(logs.contains(&"[trace-a] access".to_owned()));
    assert!(
        !logs.contains(&"[trace-b] access".to_owned()),
        "access after the exit does not run"
    );
    for l in ["[trace-b] header_filter", "[trace-b] body_filter", "[trace-b] log"] {
        assert!(logs.contains(&l.to_owned()), "{l} still runs");
    }
    assert_eq!(res.transaction().source().as_str(), "exit");
}

#[tokio::test]
async fn exit_in_rewrite_skips_access_and_only_globals_run_later_phases() {
    let h = Harness::new();
    let route = h.route().id;
    let gw = h
        .plugin::<TraceA>(json!({}))
        .plugin::<Exiter>(json!({ "phase": "rewrite", "status": 418 }))
        .plugin::<TraceB>(json!({}))
        .plugin_entity::<TraceC>(PluginEntity::new("trace-c", json!({})).route(route))
        .start()
        .await
        .unwrap();
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(res.status(), 418);
    assert_eq!(res.body_text(), "from rewrite");
    let logs = phases_of(&res);
    assert!(
        logs.contains(&"[trace-a] rewrite".to_owned()),
        "higher priority ran before the exit"
    );
    assert!(
        !logs.contains(&"[trace-b] rewrite".to_owned()),
        "rewrite after the exit does not run"
    );
    assert!(!logs.iter().any(|l| l.ends_with("access")));
    assert!(logs.contains(&"[trace-b] header_filter".to_owned()));
    assert!(logs.contains(&"[trace-b] log".to_owned()));
    assert!(
        !logs.iter().any(|l| l.starts_with("[trace-c]")),
        "route-scoped instances never run"
    );
}

#[tokio::test]
async fn no_route_is_a_404_in_kongs_template_and_only_globals_run() {
    let gw = global_a_and_route_scoped_b().await;
    let res = gw.send(TestRequest::get("/nowhere").unrouted(), ok).await;
    assert_eq!(res.status(), 404);
    let id = res.transaction().request_id().to_owned();
    assert_eq!(
        res.body_text(),
        format!("{{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"{id}\"\n}}")
    );
    let logs = phases_of(&res);
    assert_eq!(
        logs,
        [
            "[trace-a] rewrite",
            "[trace-a] header_filter",
            "[trace-a] body_filter",
            "[trace-a] log"
        ]
    );
}

#[tokio::test]
async fn exit_in_header_filter_replaces_the_upstream_response() {
    let gw = Harness::new()
        .plugin::<Exiter>(json!({ "phase": "header_filter", "status": 500 }))
        .start()
        .await
        .unwrap();
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(res.status(), 500);
    assert_eq!(res.body_text(), "from header_filter");
}

async fn failing(mode: &str, phase: &str) -> Outcome {
    let gw = Harness::new()
        .plugin::<TraceA>(json!({}))
        .plugin::<Failer>(json!({ "mode": mode, "phase": phase }))
        .plugin::<TraceB>(json!({}))
        .start()
        .await
        .unwrap();
    gw.send(TestRequest::get("/"), ok).await
}

#[tokio::test]
async fn an_access_error_or_panic_is_a_500_and_the_rest_still_runs() {
    for mode in ["error", "panic"] {
        let res = failing(mode, "access").await;
        assert_eq!(res.status(), 500, "{mode}");
        let id = res.transaction().request_id().to_owned();
        assert_eq!(
            res.body_text(),
            format!("{{\n  \"message\":\"An unexpected error occurred\",\n  \"request_id\":\"{id}\"\n}}")
        );
        assert!(
            res.logs()
                .iter()
                .any(|l| l.message.starts_with("[failer] access failed:")),
            "{mode}: logged with the plugin name"
        );
        let logs = phases_of(&res);
        assert!(!logs.contains(&"[trace-b] access".to_owned()));
        assert!(logs.contains(&"[trace-b] log".to_owned()));
        assert_eq!(res.transaction().source().as_str(), "error");
        assert!(res.upstream_request().is_none());
    }
}

#[tokio::test]
async fn a_rewrite_panic_is_a_500_and_skips_access() {
    let res = failing("panic", "rewrite").await;
    assert_eq!(res.status(), 500);
    assert!(res.logged("handler panicked: boom in rewrite"));
    assert!(!phases_of(&res).iter().any(|l| l.ends_with("access")));
}

#[tokio::test]
async fn a_header_filter_error_is_a_500() {
    let res = failing("error", "header_filter").await;
    assert_eq!(res.status(), 500);
    assert!(res.body_text().contains("An unexpected error occurred"));
}

#[tokio::test]
async fn a_body_filter_error_aborts_the_response() {
    let res = failing("error", "body_filter").await;
    assert!(res.aborted());
    assert!(res.logged("[failer] body_filter failed: broken body_filter"));
}

#[tokio::test]
async fn a_log_error_does_not_stop_other_log_handlers() {
    let res = failing("error", "log").await;
    assert_eq!(res.status(), 200);
    assert!(phases_of(&res).contains(&"[trace-b] log".to_owned()));
}

#[tokio::test]
async fn the_gateway_keeps_serving_after_a_panic() {
    let gw = Harness::new()
        .plugin::<Failer>(json!({ "mode": "panic", "phase": "access" }))
        .start()
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(gw.send(TestRequest::get("/"), ok).await.status(), 500);
    }
}

#[tokio::test]
async fn errors_are_negotiated_from_accept() {
    let res = failing("error", "access").await;
    assert_eq!(res.header("content-type"), Some("application/json; charset=utf-8"));
    let gw = Harness::new()
        .plugin::<Failer>(json!({ "phase": "access" }))
        .start()
        .await
        .unwrap();
    let res = gw.send(TestRequest::get("/").header("Accept", "text/html"), ok).await;
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(res.body_text().contains("<p>An unexpected error occurred.</p>"));
    let res = gw.send(TestRequest::get("/").header("Accept", "text/plain"), ok).await;
    let id = res.transaction().request_id().to_owned();
    assert_eq!(
        res.body_text(),
        format!("An unexpected error occurred\nrequest_id: {id}\n")
    );
}

#[tokio::test]
async fn a_response_handler_turns_on_buffered_proxying() {
    let gw = Harness::new().plugin::<BodyReader>(json!({})).start().await.unwrap();
    let res = gw
        .send(TestRequest::get("/"), |_| {
            MockResponse::new(200).chunks([Bytes::from("ab"), Bytes::from("cd")])
        })
        .await;
    assert!(res.transaction().is_buffered());
    assert_eq!(res.header("X-Body-Len"), Some("4"));
    assert_eq!(res.body_text(), "abcd");
    let res = gw.send(TestRequest::get("/"), |_| MockResponse::ok("replace me")).await;
    assert_eq!((res.status(), res.body_text().as_str()), (201, "replaced"));
}

#[tokio::test]
async fn service_body_needs_buffering() {
    /// Reads the service body in header_filter without buffering.
    #[plugin(priority = 1, version = "1.0.0", name = "unbuffered-reader")]
    pub struct UnbufferedReader {}
    #[handler]
    impl Handler for UnbufferedReader {
        async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
            let err = kong.service().response().get_raw_body().unwrap_err();
            kong.response().set_header("X-Err", err.message().len())?;
            assert_eq!(
                err.message(),
                "service body is only available with buffered proxying (see: kong.service.request.enable_buffering function)"
            );
            Ok(())
        }
    }
    let gw = Harness::new()
        .plugin::<UnbufferedReader>(json!({}))
        .start()
        .await
        .unwrap();
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(res.status(), 200);
    assert!(res.header("X-Err").is_some());
}

#[tokio::test]
async fn get_raw_body_in_body_filter_buffers_until_the_last_chunk() {
    let gw = Harness::new().plugin::<UpperBody>(json!({})).start().await.unwrap();
    let res = gw
        .send(TestRequest::get("/"), |_| {
            MockResponse::new(200).chunks([Bytes::from("ab"), Bytes::from("cd"), Bytes::from("e")])
        })
        .await;
    assert_eq!(res.chunks(), [Bytes::from("ABCDE")]);
}

#[tokio::test]
async fn ctx_shared_is_per_request_and_ctx_plugin_per_plugin_type() {
    let gw = Harness::new()
        .plugin::<CtxWriter>(json!({}))
        .plugin::<CtxReader>(json!({}))
        .start()
        .await
        .unwrap();
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(res.header("X-Shared"), Some("from writer"));
    assert_eq!(res.header("X-Reader-Private"), Some("none"));
    assert_eq!(res.header("X-Writer-Private"), Some("writer only"));
    let again = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(
        again.header("X-Shared"),
        Some("from writer"),
        "a new request starts empty, then the writer runs again"
    );
}

#[tokio::test]
async fn init_worker_runs_once_and_configure_gets_every_enabled_config_or_none() {
    let h = Harness::new();
    let service = h.service().id;
    let mut disabled = PluginEntity::new("configured", json!({ "label": "off" })).service(service);
    disabled.enabled = false;
    let mut gw = h
        .plugin::<Configured>(json!({ "label": "one" }))
        .route_plugin::<Configured>(json!({ "label": "two" }))
        .plugin_entity::<Configured>(disabled)
        .start()
        .await
        .unwrap();
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(res.header("X-Configs"), Some(r#"1 [Some(["one", "two"])]"#));

    gw.reconfigure(vec![]).await.unwrap();
    gw.reconfigure(vec![PluginEntity::new("configured", json!({ "label": "three" }))])
        .await
        .unwrap();
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(
        res.header("X-Configs"),
        Some(r#"1 [Some(["one", "two"]), None, Some(["three"])]"#)
    );
}

#[tokio::test]
async fn invalid_plugin_entities_are_rejected_with_kong_errors() {
    let plugins = std::sync::Arc::new(Plugins::builder(NodeInfo::default()).with::<Scoped>().build());
    let mut b = PluginSet::builder(plugins);
    let err = b.add(PluginEntity::new("nope", json!({}))).err().unwrap();
    assert_eq!(err, LoadError::NotEnabled("nope".into()));
    assert_eq!(err.to_string(), "nope plugin is in use but not enabled");
    let err = b.add(PluginEntity::new("scoped", json!({}))).err().unwrap();
    assert_eq!(
        err.to_string(),
        "invalid configuration for plugin scoped: schema violation (config.label: required field missing)"
    );
    b.add(PluginEntity::new("scoped", json!({ "label": "a" }))).unwrap();
    let err = b
        .add(PluginEntity::new("scoped", json!({ "label": "b" })))
        .err()
        .unwrap();
    assert!(err.to_string().contains("already configured for this scope"));
    assert_eq!(
        Plugins::load(["no-such-plugin"], NodeInfo::default()).err(),
        Some(LoadError::NotInstalled("no-such-plugin".into()))
    );
}

#[tokio::test]
async fn no_consumer_plugins_cannot_be_scoped_to_a_consumer() {
    /// Cannot be scoped to consumers.
    #[plugin(priority = 1, version = "1.0.0", name = "no-consumer-test", no_consumer)]
    pub struct NoConsumer {}
    #[handler]
    impl Handler for NoConsumer {}
    let plugins = std::sync::Arc::new(Plugins::builder(NodeInfo::default()).with::<NoConsumer>().build());
    let err = PluginSet::builder(plugins)
        .add(PluginEntity::new("no-consumer-test", json!({})).consumer(Uuid::new_v4()))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "invalid configuration for plugin no-consumer-test: schema violation (consumer: value must be null)"
    );
}

#[tokio::test]
async fn the_registry_finds_compiled_in_plugins() {
    let reg = kong_pdk::registry::find("exiter").unwrap();
    assert_eq!((reg.priority(), reg.version()), (50, "1.0.0"));
    assert!(reg.phases().contains(Phase::Access));
    assert!(!reg.phases().contains(Phase::Log));
    // Linking a plugin crate registers its plugins.
    assert_eq!(kong_pdk_examples::my_plugin::MyPlugin::NAME, "my-plugin");
    let names: Vec<&str> = kong_pdk::registry::registered().iter().map(|r| r.name()).collect();
    for example in [
        "my-plugin",
        "my-plugin-v1",
        "all-phases",
        "my-custom-plugin",
        "multi-proto",
    ] {
        assert!(names.contains(&example), "{example} registered: {names:?}");
    }
    let loaded = Plugins::load(["trace-b", "trace-a", "trace-c"], NodeInfo::default()).unwrap();
    let order: Vec<&str> = loaded.iter().map(|m| m.name).collect();
    assert_eq!(order, ["trace-a", "trace-c", "trace-b"]);
}
