//! The Admin API over the embedded store: the seed's quick start, Kong's bodies and errors,
//! pagination, cascades, and persistence across restarts.

use std::net::SocketAddr;

use http_body_util::BodyExt;
use tokio::net::TcpListener;

use super::*;
use crate::gateway::{HeaderSettings, Snapshot, mock_upstream};
use crate::pdk::NodeInfo;

/// The quick start's header plugin, shared with the gateway's tests (`gw-test-header`).
use crate::gateway::tests::AddHeader;

struct Node {
    admin: AdminAddr,
    proxy: SocketAddr,
    mock: SocketAddr,
    /// Kept for as long as the node runs: the database is removed after it.
    _db: Arc<TempDb>,
}

/// A SQLite file in a directory of its own, removed when the last node using it is gone.
struct TempDb(std::path::PathBuf);

impl TempDb {
    fn path(&self) -> std::path::PathBuf {
        self.0.join("kong.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_db() -> Arc<TempDb> {
    Arc::new(TempDb(
        std::env::temp_dir().join(format!("kong-admin-test-{}", Uuid::new_v4())),
    ))
}

/// A fresh PostgreSQL database for one test (`KONG_TEST_PG_HOST`/`_PORT`/`_USER`, default
/// 127.0.0.1:5432 as postgres). `None`, with the reason printed, when no server answers,
/// unless `KONG_TEST_REQUIRE_PG=1` (CI), which makes that a failure.
async fn postgres() -> Option<(String, impl AsyncFnOnce())> {
    let host = std::env::var("KONG_TEST_PG_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("KONG_TEST_PG_PORT").unwrap_or_else(|_| "5432".into());
    let user = std::env::var("KONG_TEST_PG_USER").unwrap_or_else(|_| "postgres".into());
    let base = format!("postgres://{user}@{host}:{port}");
    sqlx::any::install_default_drivers();
    let admin = match sqlx::AnyPool::connect(&format!("{base}/postgres")).await {
        Ok(pool) => pool,
        Err(e) => {
            assert!(
                std::env::var("KONG_TEST_REQUIRE_PG").as_deref() != Ok("1"),
                "KONG_TEST_REQUIRE_PG=1 but PostgreSQL at {base} is unreachable: {e}"
            );
            eprintln!("skipping the postgres strategy: PostgreSQL at {base} is unreachable: {e}");
            return None;
        }
    };
    let name = format!("kong_test_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{base}/{name}");
    let drop = async move || {
        let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    };
    Some((url, drop))
}

async fn node(db: Arc<TempDb>) -> Node {
    let store = Store::sqlite(&db.path()).await.unwrap();
    node_on(store, db).await
}

async fn node_on(store: Store, db: Arc<TempDb>) -> Node {
    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).with::<AddHeader>().build());
    let empty = Snapshot::empty(plugins.clone());
    let proxy = Arc::new(Proxy::new(empty, HeaderSettings::default()));
    let admin = Admin::new(store, plugins, proxy.clone()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    let mock = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock_addr = mock.local_addr().unwrap();
    tokio::spawn(mock_upstream::serve(mock, std::future::pending()));
    Node {
        admin: serve_admin(admin).await,
        proxy: addr,
        mock: mock_addr,
        _db: db,
    }
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

/// The address of an Admin API served on a random port: every test goes over real HTTP.
struct AdminAddr(SocketAddr);

/// An Admin API over `db` with no plugins, not yet serving: for tests that set it up first.
async fn bare_admin(db: &TempDb) -> Arc<Admin> {
    let store = Store::sqlite(&db.path()).await.unwrap();
    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).build());
    let proxy = Arc::new(Proxy::new(Snapshot::empty(plugins.clone()), HeaderSettings::default()));
    Admin::new(store, plugins, proxy).await.unwrap()
}

async fn serve_admin(admin: Arc<Admin>) -> AdminAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(admin.serve(listener, std::future::pending()));
    AdminAddr(addr)
}

async fn call(admin: &AdminAddr, method: &str, path: &str, ctype: Option<&str>, body: &str) -> Answer {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", admin.0));
    if let Some(c) = ctype {
        req = req.header("content-type", c);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer { status, headers, body }
}

async fn form(admin: &AdminAddr, method: &str, path: &str, body: &str) -> Answer {
    call(admin, method, path, Some("application/x-www-form-urlencoded"), body).await
}

async fn json_call(admin: &AdminAddr, method: &str, path: &str, body: Value) -> Answer {
    call(admin, method, path, Some("application/json"), &body.to_string()).await
}

async fn proxy_get(addr: SocketAddr, path: &str) -> (u16, http::HeaderMap) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    (resp.status().as_u16(), resp.headers().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_works_verbatim_on_sqlite() {
    quick_start(node(temp_db()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_works_verbatim_on_postgres_and_survives_a_restart() {
    let Some((url, drop_db)) = postgres().await else { return };
    let n = node_on(Store::connect(&url).await.unwrap(), temp_db()).await;
    quick_start(n).await;
    // A second node on the same database sees everything.
    let again = node_on(Store::connect(&url).await.unwrap(), temp_db()).await;
    let plugins = call(&again.admin, "GET", "/services/example_service/plugins", None, "").await;
    assert_eq!(plugins.body["data"][0]["config"]["response_header_name"], "X-Patched");
    let dup = form(&again.admin, "POST", "/services", "name=example_service&host=x.test").await;
    assert_eq!(dup.status, 409, "{}", dup.body);
    drop_db().await;
}

/// Two tests: `$name::on_sqlite` runs `$body` on the embedded store, `$name::on_postgres` on
/// a fresh PostgreSQL database (skipped when none answers, unless KONG_TEST_REQUIRE_PG=1).
macro_rules! on_every_store {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$body(super::node(super::temp_db()).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let Some((url, drop_db)) = super::postgres().await else {
                    return;
                };
                let store = super::Store::connect(&url).await.unwrap();
                super::$body(super::node_on(store, super::temp_db()).await).await;
                drop_db().await;
            }
        }
    };
}

async fn quick_start(n: Node) {
    let a = &n.admin;
    let svc = form(
        a,
        "POST",
        "/services",
        &format!("name=example_service&url=http://127.0.0.1:{}", n.mock.port()),
    )
    .await;
    assert_eq!(svc.status, 201, "{}", svc.body);
    assert_eq!(svc.body["host"], "127.0.0.1");
    assert_eq!(svc.body["port"], n.mock.port());
    assert_eq!(svc.body["protocol"], "http");
    assert_eq!(svc.body["retries"], 5);
    assert_eq!(svc.body["path"], Value::Null, "nulls are shown");
    let plugin = form(
        a,
        "POST",
        "/services/example_service/plugins",
        "name=gw-test-header&config.response_header_name=X-CustomHeaderName",
    )
    .await;
    assert_eq!(plugin.status, 201, "{}", plugin.body);
    assert_eq!(plugin.body["service"]["id"], svc.body["id"]);
    assert_eq!(plugin.body["config"]["response_header_name"], "X-CustomHeaderName");
    assert_eq!(plugin.body["enabled"], true);
    let route = form(a, "POST", "/services/example_service/routes", "paths[]=/mock").await;
    assert_eq!(route.status, 201, "{}", route.body);
    assert_eq!(route.body["paths"], json!(["/mock"]));
    assert_eq!(route.body["protocols"], json!(["http", "https"]));

    let (status, headers) = proxy_get(n.proxy, "/mock/anything").await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("x-customheadername").unwrap(), "response");

    let root = call(a, "GET", "/", None, "").await;
    assert_eq!(
        root.body["plugins"]["available_on_server"]["gw-test-header"],
        json!({ "priority": 1000, "version": "0.0.1" })
    );
    assert_eq!(root.body["version"], "3.10.0");
    assert_eq!(root.body["plugins"]["enabled_in_cluster"], json!(["gw-test-header"]));
    assert_eq!(root.headers.get("access-control-allow-origin").unwrap(), "*");

    // The configuration changes without a restart: patch the plugin, the header follows.
    let id = plugin.body["id"].as_str().unwrap();
    let patched = json_call(
        a,
        "PATCH",
        &format!("/plugins/{id}"),
        json!({ "config": { "response_header_name": "X-Patched" } }),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let (_, headers) = proxy_get(n.proxy, "/mock/anything").await;
    assert_eq!(headers.get("x-patched").unwrap(), "response");
}

on_every_store!(errors_have_kongs_codes_messages_and_fields, errors);

async fn errors(n: Node) {
    let a = &n.admin;
    let r = json_call(a, "POST", "/services", json!({ "name": "s" })).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({ "code": 2, "name": "schema violation", "message": "schema violation (host: required field missing)", "fields": { "host": "required field missing" } })
    );
    let r = json_call(
        a,
        "POST",
        "/services",
        json!({ "host": "h", "port": 70000, "retries": "x" }),
    )
    .await;
    assert_eq!(
        r.body["message"],
        "2 schema violations (port: value should be between 0 and 65535; retries: expected an integer)"
    );
    assert!(
        json_call(a, "POST", "/services", json!({ "name": "s", "host": "h" }))
            .await
            .status
            == 201
    );
    let r = json_call(a, "POST", "/services", json!({ "name": "s", "host": "h2" })).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["code"], 5);
    assert_eq!(r.body["message"], "UNIQUE violation detected on '{name=\"s\"}'");
    // Form indexes a client sends never size an allocation: a gap is Kong's schema error.
    for huge in ["tags[999999999]=x", "tags[18446744073709551615]=x", "tags[2]=x"] {
        let r = form(a, "POST", "/services", &format!("name=sparse&host=h&{huge}")).await;
        assert_eq!(
            (r.status, &r.body["fields"]["tags"]),
            (400, &json!("expected a set")),
            "{huge}"
        );
    }
    let r = form(a, "POST", "/services", "name=dense&host=h&tags[2]=b&tags[1]=a").await;
    assert_eq!((r.status, &r.body["tags"]), (201, &json!(["a", "b"])));
    let r = json_call(a, "POST", "/consumers", json!({})).await;
    assert_eq!(
        r.body["fields"]["@entity"],
        json!(["at least one of these fields must be non-empty: 'custom_id', 'username'"])
    );
    let r = call(a, "POST", "/consumers", Some("application/json"), "{nope").await;
    assert_eq!(
        (r.status, r.body),
        (400, json!({ "message": "Cannot parse JSON body" }))
    );
    let multipart = "--b1\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nmulti\r\n--b1\r\nContent-Disposition: form-data; name=\"tags[]\"\r\n\r\nt1\r\n--b1--\r\n";
    let r = call(
        a,
        "POST",
        "/consumers",
        Some("multipart/form-data; boundary=b1"),
        multipart,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["username"].clone(), r.body["tags"].clone()),
        (json!("multi"), json!(["t1"]))
    );
    let r = call(a, "POST", "/consumers", Some("text/csv"), "a,b").await;
    assert_eq!(r.status, 415);
    let r = json_call(a, "POST", "/plugins", json!({ "name": "nope" })).await;
    assert_eq!(
        r.body["fields"]["name"],
        "plugin 'nope' not enabled; add it to the 'plugins' configuration property"
    );
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "service": { "name": "missing" }, "paths": ["/x"] }),
    )
    .await;
    assert_eq!(r.body["code"], 13);
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "service": { "id": Uuid::new_v4() }, "paths": ["/x"] }),
    )
    .await;
    assert_eq!(r.body["code"], 4);
    let r = json_call(a, "POST", "/routes", json!({ "protocols": ["http"] })).await;
    assert_eq!(
        r.body["fields"]["@entity"],
        json!(["must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"])
    );
    assert_eq!(call(a, "GET", "/services/nope", None, "").await.status, 404);
    assert_eq!(
        call(a, "GET", "/nothing-here", None, "").await.body,
        json!({ "message": "Not found" })
    );
    assert_eq!(
        call(a, "DELETE", "/services/nope", None, "").await.status,
        204,
        "delete is idempotent"
    );
    // A service with routes cannot go; its plugins go with it.
    assert_eq!(
        form(a, "POST", "/services/s/routes", "name=r&paths=/r").await.status,
        201
    );
    assert_eq!(
        form(a, "POST", "/services/s/plugins", "name=gw-test-header")
            .await
            .status,
        201
    );
    let r = call(a, "DELETE", "/services/s", None, "").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["message"],
        "an existing 'routes' entity references this 'services' entity"
    );
    assert_eq!(call(a, "DELETE", "/routes/r", None, "").await.status, 204);
    assert_eq!(call(a, "DELETE", "/services/s", None, "").await.status, 204);
    assert_eq!(
        call(a, "GET", "/plugins", None, "").await.body["data"],
        json!([]),
        "plugins cascaded"
    );
    let r = call(a, "OPTIONS", "/services", None, "").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers.get("allow").unwrap(), "GET, HEAD, OPTIONS, POST");
}

on_every_store!(pages_put_upserts_and_nested_paths, pages);

async fn pages(n: Node) {
    let a = &n.admin;
    for name in ["a", "b", "c"] {
        assert_eq!(
            form(a, "POST", "/consumers", &format!("username={name}&tags=t"))
                .await
                .status,
            201
        );
    }
    let first = call(a, "GET", "/consumers?size=2", None, "").await;
    assert_eq!(first.body["data"].as_array().unwrap().len(), 2);
    let next = first.body["next"].as_str().unwrap().to_owned();
    assert!(next.starts_with("/consumers?offset="), "{next}");
    assert!(next.ends_with("&size=2"), "{next}");
    let second = call(a, "GET", &next, None, "").await;
    assert_eq!(second.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(second.body["next"], Value::Null);
    assert!(second.body.get("offset").is_none());
    assert_eq!(call(a, "GET", "/consumers?size=0", None, "").await.body["code"], 9);
    assert_eq!(call(a, "GET", "/consumers?offset=!!", None, "").await.body["code"], 7);
    assert_eq!(
        call(a, "GET", "/consumers?tags=t", None, "").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        call(a, "GET", "/consumers?tags=x", None, "").await.body["data"],
        json!([])
    );

    // PUT by endpoint key creates, then replaces (omitted fields return to defaults).
    let put = json_call(
        a,
        "PUT",
        "/services/by-put",
        json!({ "host": "one.test", "retries": 1 }),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["name"], "by-put");
    let again = json_call(a, "PUT", "/services/by-put", json!({ "host": "two.test" })).await;
    assert_eq!(again.body["id"], put.body["id"]);
    assert_eq!(again.body["retries"], 5);
    let route = form(a, "POST", "/services/by-put/routes", "name=rt&hosts=example.test").await;
    assert_eq!(route.status, 201, "{}", route.body);
    assert_eq!(
        call(a, "GET", "/routes/rt/service", None, "").await.body["name"],
        "by-put"
    );
    assert_eq!(
        call(a, "GET", "/services/by-put/routes", None, "").await.body["data"][0]["name"],
        "rt"
    );
    assert_eq!(call(a, "GET", "/services/by-put/routes/rt", None, "").await.status, 200);
    assert_eq!(call(a, "GET", "/services/nope/routes", None, "").await.status, 404);
    let schema = call(a, "GET", "/schemas/services", None, "").await;
    assert!(
        schema.body["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.get("host").is_some())
    );
    // Kong's schema_to_jsonable: `entity_checks` always, empty or not (issue 16, item 4).
    for path in [
        "/schemas/routes",
        "/schemas/consumers",
        "/schemas/plugins/gw-test-header",
    ] {
        let schema = call(a, "GET", path, None, "").await;
        assert!(schema.body["entity_checks"].is_array(), "{path}: {}", schema.body);
        assert!(schema.body["fields"].is_array(), "{path}");
    }
    let ok = json_call(
        a,
        "POST",
        "/schemas/plugins/validate",
        json!({ "name": "gw-test-header" }),
    )
    .await;
    assert_eq!(ok.body, json!({ "message": "schema validation successful" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_survive_a_restart_and_a_refused_write_stores_nothing() {
    let db = temp_db();
    {
        let n = node(db.clone()).await;
        let svc = form(
            &n.admin,
            "POST",
            "/services",
            &format!("name=kept&url=http://127.0.0.1:{}", n.mock.port()),
        )
        .await;
        assert_eq!(svc.status, 201);
        assert_eq!(
            form(&n.admin, "POST", "/services/kept/routes", "paths[]=/kept")
                .await
                .status,
            201
        );
        // A regex the router cannot compile is refused whole.
        let bad = form(&n.admin, "POST", "/services/kept/routes", "paths[]=~/(unclosed").await;
        assert_eq!(bad.status, 400, "{}", bad.body);
    }
    let n = node(db.clone()).await;
    let routes = call(&n.admin, "GET", "/routes", None, "").await;
    assert_eq!(routes.body["data"].as_array().unwrap().len(), 1, "{}", routes.body);
    assert_eq!(call(&n.admin, "GET", "/services/kept", None, "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbless_serves_the_declarative_config_refuses_writes_and_takes_post_config() {
    let mock = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock_addr = mock.local_addr().unwrap();
    tokio::spawn(mock_upstream::serve(mock, std::future::pending()));
    let yaml = |path: &str, header: &str| {
        format!(
            "_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://127.0.0.1:{}\n  routes:\n  - name: r\n    paths: [\"{path}\"]\n  plugins:\n  - name: gw-test-header\n    config:\n      response_header_name: \"{header}\"\n",
            mock_addr.port()
        )
    };
    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).with::<AddHeader>().build());
    let empty = Snapshot::empty(plugins.clone());
    let proxy = Arc::new(Proxy::new(empty, HeaderSettings::default()));
    let config = Config::parse(&yaml("/mock", "X-Declared")).unwrap();
    let a = serve_admin(Admin::dbless(&config, plugins, proxy.clone()).await.unwrap()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));

    assert_eq!(
        call(&a, "GET", "/services/svc", None, "").await.body["host"],
        "127.0.0.1"
    );
    assert_eq!(
        call(&a, "GET", "/services/svc/routes", None, "").await.body["data"][0]["name"],
        "r"
    );
    assert_eq!(
        call(&a, "GET", "/status", None, "").await.body["configuration_hash"]
            .as_str()
            .map(str::len),
        Some(32)
    );
    let (status, headers) = proxy_get(addr, "/mock/anything").await;
    assert_eq!(
        (status, headers.get("x-declared").unwrap().to_str().unwrap()),
        (200, "response")
    );

    let r = form(&a, "POST", "/services", "name=x&host=x.test").await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.body,
        json!({ "code": 12, "name": "operation unsupported", "message": "cannot create 'services' entities when not using a database" })
    );
    assert_eq!(
        form(&a, "PATCH", "/routes/r", "paths=/x").await.body["message"],
        "cannot update 'routes' entities when not using a database"
    );
    assert_eq!(call(&a, "DELETE", "/services/svc", None, "").await.status, 405);

    // An invalid configuration is refused whole; the running one stays.
    let bad = call(&a, "POST", "/config", Some("text/yaml"), &yaml("/new", "bad header")).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.body["code"], 14);
    assert!(
        bad.body["message"]
            .as_str()
            .unwrap()
            .starts_with("declarative config is invalid: ")
    );
    assert_eq!(proxy_get(addr, "/mock/anything").await.0, 200);

    let good = call(&a, "POST", "/config", Some("text/yaml"), &yaml("/new", "X-New")).await;
    assert_eq!(good.status, 201, "{}", good.body);
    assert_eq!(proxy_get(addr, "/mock/anything").await.0, 404);
    let (status, headers) = proxy_get(addr, "/new/anything").await;
    assert_eq!((status, headers.get("x-new").is_some()), (200, true));
    let current = call(&a, "GET", "/config", None, "").await;
    let text = current.body["config"].as_str().unwrap();
    assert!(text.contains("_format_version") && text.contains("/new"), "{text}");
    // The exported configuration loads back.
    assert!(Config::parse(text).is_ok(), "{text}");

    // Every body Kong takes: multipart (`curl -F config=@kong.yml`), a form's `config`, JSON
    // that is the configuration, JSON with a `config` string; nothing is Kong's 400.
    let multipart = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"config\"; filename=\"kong.yml\"\r\nContent-Type: application/octet-stream\r\n\r\n{}\r\n--XyZ--\r\n",
        yaml("/multi", "X-Multi")
    );
    let r = call(
        &a,
        "POST",
        "/config",
        Some("multipart/form-data; boundary=XyZ"),
        &multipart,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(proxy_get(addr, "/multi/anything").await.0, 200);
    let encoded = crate::pdk::request::percent_encode_component(&yaml("/form", "X-Form"));
    let r = call(
        &a,
        "POST",
        "/config",
        Some("application/x-www-form-urlencoded"),
        &format!("config={encoded}"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(proxy_get(addr, "/form/anything").await.0, 200);
    let as_json: Value = serde_yaml_ng::from_str(&yaml("/json", "X-Json")).unwrap();
    let r = call(&a, "POST", "/config", Some("application/json"), &as_json.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(proxy_get(addr, "/json/anything").await.0, 200);
    let wrapped = json!({ "config": yaml("/wrapped", "X-Wrapped") });
    let r = call(&a, "POST", "/config", Some("application/json"), &wrapped.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(proxy_get(addr, "/wrapped/anything").await.0, 200);
    // Every problem of every entity at once, as the Admin API words them; flattened per entity
    // when asked.
    let invalid = "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:1\n  routes:\n  - name: r\n    paths: [mock]\n    methodz: [GET]\n  - name: r2\n    paths: [/ok]\n    regex_priority: many\n  plugins:\n  - name: gw-test-header\n    config:\n      colour: red\nplugins:\n- name: nope\n";
    let r = call(&a, "POST", "/config?flatten_errors=1", Some("text/yaml"), invalid).await;
    assert_eq!((r.status, r.body["code"].clone()), (400, json!(14)), "{}", r.body);
    assert_eq!(r.body["name"], "invalid declarative configuration");
    assert_eq!(
        r.body["fields"],
        json!({
            "services": { "1": {
                "routes": {
                    "1": { "methodz": "unknown field", "paths": ["should start with: / (fixed path) or ~/ (regex path)"] },
                    "2": { "regex_priority": "expected an integer" },
                },
                // Plugins' problems join the entities', each at its plugin's path.
                "plugins": { "1": { "config": { "colour": "unknown field" } } },
            } },
            "plugins": { "1": {
                "name": "plugin 'nope' not enabled; add it to the 'plugins' configuration property"
            } },
        })
    );
    let flat: Vec<_> = r.body["flattened_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entity_type"] == "route")
        .cloned()
        .collect();
    assert_eq!(r.body["flattened_errors"].as_array().unwrap().len(), 4, "{}", r.body);
    assert_eq!(flat.len(), 2, "{flat:?}");
    assert_eq!(
        (
            &flat[0]["entity_type"],
            &flat[0]["entity_name"],
            &flat[0]["entity"]["paths"]
        ),
        (&json!("route"), &json!("r"), &json!(["mock"]))
    );
    assert_eq!(
        flat[0]["errors"],
        json!([
            { "type": "field", "field": "methodz", "message": "unknown field" },
            { "type": "field", "field": "paths.1", "message": "should start with: / (fixed path) or ~/ (regex path)" },
        ])
    );
    assert_eq!(
        flat[1]["errors"],
        json!([{ "type": "field", "field": "regex_priority", "message": "expected an integer" }])
    );
    let plugin = r.body["flattened_errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity_name"] == "gw-test-header")
        .cloned();
    assert_eq!(
        plugin.map(|p| (p["entity_type"].clone(), p["errors"].clone())),
        Some((
            json!("plugin"),
            json!([{ "type": "field", "field": "config.colour", "message": "unknown field" }])
        ))
    );
    assert_eq!(
        proxy_get(addr, "/wrapped/anything").await.0,
        200,
        "the running configuration stays"
    );
    let r = call(
        &a,
        "POST",
        "/config",
        Some("multipart/form-data; boundary=XyZ"),
        "--XyZ--\r\n",
    )
    .await;
    assert_eq!(
        (r.status, r.body),
        (400, json!({ "message": "expected a declarative configuration" }))
    );
    // A plugin is shown as Kong stores it: its common fields kept, its config completed.
    let named =
        "_format_version: \"3.0\"\nplugins:\n- name: gw-test-header\n  instance_name: headers\n  tags: [team-a]\n";
    assert_eq!(call(&a, "POST", "/config", Some("text/yaml"), named).await.status, 201);
    let shown = call(&a, "GET", "/plugins/headers", None, "").await;
    assert_eq!(
        (
            shown.status,
            &shown.body["tags"],
            &shown.body["config"]["response_header_name"]
        ),
        (200, &json!(["team-a"]), &json!("X-MyPlugin")),
        "{}",
        shown.body
    );
}

async fn proxy_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

on_every_store!(upstreams_balance_over_their_targets, upstreams);

async fn upstreams(n: Node) {
    let a = &n.admin;
    let second = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_addr = second.local_addr().unwrap();
    tokio::spawn(mock_upstream::serve(second, std::future::pending()));
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();

    assert_eq!(form(a, "POST", "/upstreams", "name=backend.internal").await.status, 201);
    for t in [n.mock, second_addr] {
        let r = form(
            a,
            "POST",
            "/upstreams/backend.internal/targets",
            &format!("target=127.0.0.1:{}", t.port()),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["weight"], 100);
    }
    let bad = form(a, "POST", "/upstreams/backend.internal/targets", "target=not_a host").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(
        form(a, "POST", "/services", "name=lb&host=backend.internal")
            .await
            .status,
        201
    );
    assert_eq!(form(a, "POST", "/services/lb/routes", "paths=/lb").await.status, 201);

    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (status, echo) = proxy_json(n.proxy, "/lb/anything").await;
        assert_eq!(status, 200);
        // Kong's set_host_header: the target's host and port (not the upstream's name).
        let port = echo["vars"]["server_port"].as_str().unwrap_or_default().to_owned();
        assert_eq!(echo["headers"]["host"], format!("127.0.0.1:{port}"));
        ports.insert(port);
    }
    assert_eq!(ports.len(), 2, "both targets served: {ports:?}");

    // A dead target is skipped by the retries.
    let dead_target = form(
        a,
        "POST",
        "/upstreams/backend.internal/targets",
        &format!("target=127.0.0.1:{}", dead.port()),
    )
    .await;
    assert_eq!(dead_target.status, 201);
    for _ in 0..6 {
        assert_eq!(proxy_json(n.proxy, "/lb/anything").await.0, 200);
    }
    // Every target out of rotation: Kong's 503.
    let targets = call(a, "GET", "/upstreams/backend.internal/targets", None, "").await;
    for t in targets.body["data"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        let r = json_call(
            a,
            "PATCH",
            &format!("/upstreams/backend.internal/targets/{id}"),
            json!({ "weight": 0 }),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (status, body) = proxy_json(n.proxy, "/lb/anything").await;
    assert_eq!(status, 503);
    assert_eq!(body["message"], "failure to get a peer from the ring-balancer");
    // Deleting the upstream takes its targets along.
    assert_eq!(
        call(a, "DELETE", "/upstreams/backend.internal", None, "").await.status,
        204
    );
    // Kong serves targets only under their upstream: top-level /targets is a 404.
    assert_eq!(call(a, "GET", "/targets", None, "").await.status, 404);
    let again = form(a, "POST", "/upstreams", "name=backend.internal").await;
    assert_eq!(again.status, 201, "{}", again.body);
    let targets = call(a, "GET", "/upstreams/backend.internal/targets", None, "").await;
    assert_eq!(targets.body["data"], json!([]));
}

on_every_store!(ca_certificates_verify_https_upstreams, ca_certificates);

on_every_store!(certificates_take_their_snis_as_a_list, certificate_snis);

/// Kong's certificates DAO: `snis` on a certificate is the list of SNI entities pointing at it,
/// created, replaced and shown with it; a name another certificate has is refused.
async fn certificate_snis(n: Node) {
    let a = &n.admin;
    let pem = |name: &str| crate::gateway::tls::CertificatePair::self_signed(&[name]).unwrap();
    let (_, cert1, key1) = pem("one.test");
    let r = json_call(
        a,
        "POST",
        "/certificates",
        json!({ "cert": cert1, "key": key1, "snis": ["b.test", "a.test"] }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["snis"], json!(["a.test", "b.test"]));
    let id = r.body["id"].as_str().unwrap().to_owned();
    let snis = call(a, "GET", "/snis", None, "").await;
    assert_eq!(snis.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(snis.body["data"][0]["certificate"]["id"], id.as_str());
    // Shown on reads, and found by one of its names.
    assert_eq!(
        call(a, "GET", &format!("/certificates/{id}"), None, "").await.body["snis"],
        json!(["a.test", "b.test"])
    );
    assert_eq!(
        call(a, "GET", "/certificates/b.test", None, "").await.body["id"],
        id.as_str()
    );
    assert_eq!(
        call(a, "GET", "/certificates", None, "").await.body["data"][0]["snis"],
        json!(["a.test", "b.test"])
    );
    // Replaced on update.
    let r = json_call(
        a,
        "PATCH",
        &format!("/certificates/{id}"),
        json!({ "snis": ["c.test", "a.test"] }),
    )
    .await;
    assert_eq!(
        (r.status, r.body["snis"].clone()),
        (200, json!(["a.test", "c.test"])),
        "{}",
        r.body
    );
    assert_eq!(call(a, "GET", "/snis/b.test", None, "").await.status, 404);
    // Kong's refusals.
    let (_, cert2, key2) = pem("two.test");
    let taken = json_call(
        a,
        "POST",
        "/certificates",
        json!({ "cert": cert2, "key": key2, "snis": ["c.test"] }),
    )
    .await;
    assert_eq!(taken.status, 400, "{}", taken.body);
    assert_eq!(
        taken.body["fields"]["snis"],
        format!("c.test already associated with existing certificate '{id}'")
    );
    let twice = json_call(
        a,
        "POST",
        "/certificates",
        json!({ "cert": cert2, "key": key2, "snis": ["d.test", "d.test"] }),
    )
    .await;
    assert_eq!(twice.body["fields"]["snis"], "d.test is duplicated", "{}", twice.body);
    assert_eq!(
        call(a, "GET", "/certificates", None, "").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing stored"
    );
    // A name no SNI has: Kong's `SNI not found`, except to a PUT, which creates a certificate
    // with that name among its SNIs.
    for method in ["GET", "PATCH", "DELETE"] {
        let r = json_call(a, method, "/certificates/nope.test", json!({})).await;
        assert_eq!(
            (r.status, r.body.clone()),
            (404, json!({ "message": "SNI not found" })),
            "{method}"
        );
    }
    let r = json_call(
        a,
        "PUT",
        "/certificates/e.test",
        json!({ "cert": cert2, "key": key2, "snis": ["f.test"] }),
    )
    .await;
    assert_eq!(
        (r.status, r.body["snis"].clone()),
        (200, json!(["e.test", "f.test"])),
        "{}",
        r.body
    );
    let put_id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(a, "GET", "/certificates/e.test", None, "").await.body["id"],
        put_id.as_str()
    );
    // A PUT replaces the whole certificate: without `snis` it has none after.
    let r = json_call(
        a,
        "PUT",
        &format!("/certificates/{put_id}"),
        json!({ "cert": cert2, "key": key2 }),
    )
    .await;
    assert_eq!((r.status, r.body["snis"].clone()), (200, json!([])), "{}", r.body);
    assert_eq!(call(a, "GET", "/certificates/e.test", None, "").await.status, 404);
    assert_eq!(
        call(a, "DELETE", &format!("/certificates/{put_id}"), None, "")
            .await
            .status,
        204
    );
    // Deleting the certificate takes its SNIs along.
    assert_eq!(
        call(a, "DELETE", &format!("/certificates/{id}"), None, "").await.status,
        204
    );
    assert_eq!(call(a, "GET", "/snis", None, "").await.body["data"], json!([]));
}

async fn ca_certificates(n: Node) {
    use crate::gateway::upstream_tls_tests::{ca, https_upstream, leaf};
    let a = &n.admin;
    let root = ca("admin test root", None);
    let server = leaf(&["localhost"], &root);
    let up = https_upstream(&[&server], &ca("client CA", None)).await;

    let r = json_call(a, "POST", "/ca_certificates", json!({ "cert": server.cert })).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.body["message"],
        "schema violation (certificate does not appear to be a CA because it is missing the \"CA\" basic constraint)"
    );
    let r = json_call(
        a,
        "POST",
        "/ca_certificates",
        json!({ "cert": root.cert, "tags": ["t"] }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["cert_digest"].as_str().map(str::len), Some(64));
    let dup = json_call(a, "POST", "/ca_certificates", json!({ "cert": root.cert })).await;
    assert_eq!(dup.status, 409, "{}", dup.body);
    assert_eq!(dup.body["code"], 5);

    // The upstream TLS fields only go with https (and tls) services.
    let r = json_call(
        a,
        "POST",
        "/services",
        json!({ "name": "plain", "url": "http://x.test", "tls_verify": true }),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["fields"]["tls_verify"], "value must be null");
    assert_eq!(
        r.body["fields"]["@entity"],
        json!(["failed conditional validation given value of field 'protocol'"])
    );

    let url = format!("https://localhost:{}", up.port());
    let r = json_call(
        a,
        "POST",
        "/services",
        json!({ "name": "verified", "url": url, "retries": 0, "tls_verify": true, "ca_certificates": [id] }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["tls_verify"], true);
    assert_eq!(r.body["ca_certificates"], json!([id]));
    assert_eq!(
        form(a, "POST", "/services/verified/routes", "name=verified&paths=/verified")
            .await
            .status,
        201
    );
    assert_eq!(proxy_get(n.proxy, "/verified").await.0, 200);
    // Trusting the system store instead, the test root is unknown: 502.
    let r = json_call(a, "PATCH", "/services/verified", json!({ "ca_certificates": null })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(proxy_get(n.proxy, "/verified").await.0, 502);
    let r = json_call(a, "PATCH", "/services/verified", json!({ "ca_certificates": [id] })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(proxy_get(n.proxy, "/verified").await.0, 200);

    // A CA certificate a service trusts cannot be deleted.
    let r = call(a, "DELETE", &format!("/ca_certificates/{id}"), None, "").await;
    assert_eq!(r.status, 400, "{}", r.body);
    let service_id = call(a, "GET", "/services/verified", None, "").await.body["id"].clone();
    assert_eq!(
        r.body,
        json!({
            "code": 19,
            "name": "referenced by others",
            "message": format!("ca certificate {id} is still referenced by services (id = {})", service_id.as_str().unwrap()),
        })
    );
    assert_eq!(call(a, "DELETE", "/routes/verified", None, "").await.status, 204);
    assert_eq!(call(a, "DELETE", "/services/verified", None, "").await.status, 204);
    assert_eq!(
        call(a, "DELETE", &format!("/ca_certificates/{id}"), None, "")
            .await
            .status,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_while_a_write_waits_for_the_database() {
    use sqlx::Connection;
    let db = temp_db();
    let n = node(db.clone()).await;
    assert_eq!(
        form(&n.admin, "POST", "/services", "name=first&host=a.test")
            .await
            .status,
        201
    );
    // Another process holds the database's write lock, as a long migration or a stuck
    // transaction would.
    let mut holder = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", db.path().display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
    let admin = AdminAddr(n.admin.0);
    let write = tokio::spawn(async move { form(&admin, "POST", "/services", "name=second&host=b.test").await });
    // Nothing marks the moment the write starts waiting inside SQLite (busy timeout 5 s), so
    // give it time to get there: a few milliseconds of work.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The write is stuck behind the lock; reads go on from the last committed entities.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        call(&n.admin, "GET", "/services", None, ""),
    )
    .await
    .expect("GET /services answers while a write waits");
    assert_eq!(read.status, 200);
    assert_eq!(read.body["data"].as_array().map(Vec::len), Some(1), "{}", read.body);
    assert!(!write.is_finished(), "the write was still waiting for the database");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(write.await.unwrap().status, 201);
    let read = call(&n.admin, "GET", "/services", None, "").await;
    assert_eq!(read.body["data"].as_array().map(Vec::len), Some(2));
}

/// A cluster reload that loaded the store before a local write cannot make that write
/// disappear: the write waits for the reload, and lands after it. (Before, the reload loaded
/// without the write lock and went live with its older copy: the write, acknowledged, was
/// gone from memory.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_reload_never_goes_live_with_a_copy_older_than_a_write() {
    let db = temp_db();
    let store = Store::sqlite(&db.path()).await.unwrap();
    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).build());
    let proxy = Arc::new(Proxy::new(Snapshot::empty(plugins.clone()), HeaderSettings::default()));
    let admin = Admin::new(store.clone(), plugins, proxy).await.unwrap();
    let addr = serve_admin(admin.clone()).await;
    let (loaded_tx, loaded) = tokio::sync::oneshot::channel();
    let (resume, resume_rx) = tokio::sync::oneshot::channel();
    *admin.reload_pause.lock().unwrap() = Some((loaded_tx, resume_rx));
    let reloading = tokio::spawn({
        let admin = admin.clone();
        async move { admin.reload(&store).await }
    });
    loaded.await.unwrap();
    // The reload holds a copy without the service. The write is acknowledged either now (it
    // would be, without the lock) or once the reload is done.
    let write = tokio::spawn(async move {
        let a = AdminAddr(addr.0);
        form(&a, "POST", "/services", "name=fresh&host=a.test").await.status
    });
    let early = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        while !write.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok();
    assert!(
        !early,
        "the write was acknowledged while a reload was between its load and going live"
    );
    resume.send(()).unwrap();
    reloading.await.unwrap().unwrap();
    assert_eq!(write.await.unwrap(), 201);
    assert_eq!(call(&addr, "GET", "/services/fresh", None, "").await.status, 200);
}

/// Kong's `pg_timeout`: a write stuck behind another connection's lock answers Kong's 500
/// once the timeout has passed, instead of holding the writer for as long as the lock lasts;
/// the entity is not there, and writes work again once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_behind_a_lock_gives_up_after_pg_timeout() {
    use sqlx::Connection;
    let timeout = std::time::Duration::from_millis(300);
    // SQLite: another connection holds the write lock.
    let db = temp_db();
    let n = node_on(Store::sqlite_with(&db.path(), timeout).await.unwrap(), db.clone()).await;
    let mut holder = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", db.path().display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
    gives_up_then_recovers(&n, async move {
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    })
    .await;
    // PostgreSQL: a transaction holds the entities table.
    let Some((url, drop_db)) = postgres().await else { return };
    let n = node_on(Store::connect_with(&url, timeout).await.unwrap(), temp_db()).await;
    let mut holder = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE entities IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    gives_up_then_recovers(&n, async move {
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    })
    .await;
    drop_db().await;
}

/// A POST while the database is locked: 500 within 3 s (10 × the nodes' 300 ms; SQLite's
/// default 5 s busy wait and the lock itself would both hold it longer), nothing stored; after
/// `release`, the same POST is 201.
async fn gives_up_then_recovers(n: &Node, release: impl Future<Output = ()>) {
    let write = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        form(&n.admin, "POST", "/services", "name=locked&host=a.test"),
    )
    .await
    .expect("the write gave up within pg_timeout");
    assert_eq!(write.status, 500, "{}", write.body);
    assert_eq!(write.body, json!({"message": "An unexpected error occurred"}));
    release.await;
    assert_eq!(call(&n.admin, "GET", "/services/locked", None, "").await.status, 404);
    let write = form(&n.admin, "POST", "/services", "name=locked&host=a.test").await;
    assert_eq!(write.status, 201, "{}", write.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_follows_admin_gui_origin() {
    let db = temp_db();
    let open = serve_admin(bare_admin(&db).await).await;
    let admin = bare_admin(&db).await;
    admin.set_gui_origin(&["https://manager.example".into()]).unwrap();
    assert!(admin.set_gui_origin(&[]).is_err(), "set once");
    let gui = serve_admin(admin).await;

    let get = |addr: &AdminAddr, origin: &'static str| {
        let addr = addr.0;
        async move {
            let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let req = Request::get(format!("http://{addr}/services"))
                .header("origin", origin)
                .body(Full::new(Bytes::new()))
                .unwrap();
            client.request(req).await.unwrap().headers().clone()
        }
    };
    let acao = |h: &http::HeaderMap| h["access-control-allow-origin"].to_str().unwrap().to_owned();
    // Kong's default: any origin is echoed, with credentials.
    let h = get(&open, "https://any.example").await;
    assert_eq!(acao(&h), "https://any.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    // With admin_gui_origin, only the listed origin comes back.
    let h = get(&gui, "https://manager.example").await;
    assert_eq!(acao(&h), "https://manager.example");
    assert_eq!(h["vary"], "Origin");
    let h = get(&gui, "https://evil.example").await;
    assert_eq!(acao(&h), "https://manager.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_database_answers_kongs_500_without_its_text() {
    use sqlx::Connection;
    let db = temp_db();
    let n = node(db.clone()).await;
    let mut other = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", db.path().display()))
        .await
        .unwrap();
    sqlx::query("DROP TABLE entities").execute(&mut other).await.unwrap();
    let r = form(&n.admin, "POST", "/services", "name=doomed&host=a.test").await;
    assert_eq!(
        (r.status, r.body),
        (500, json!({ "message": "An unexpected error occurred" }))
    );
    // What was acknowledged before stays readable; nothing half-written shows.
    let r = call(&n.admin, "GET", "/services", None, "").await;
    assert_eq!(r.body["data"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_closes_connections_that_send_no_head() {
    let db = temp_db();
    let admin = bare_admin(&db).await;
    admin.set_client_header_timeout(std::time::Duration::from_millis(300));
    let addr = serve_admin(admin).await;
    for sent in [&b""[..], b"GET /servi", b"GET / HTTP/1.1\r\nHost: x\r\n"] {
        crate::gateway::tests::closed_after(addr.0, sent).await;
    }
    // The guard keeps nginx's limits here too: a smuggling shape is refused.
    let out = crate::gateway::tests::raw(
        addr.0,
        b"POST /services HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_never_undo_an_acknowledged_one() {
    let n = node(temp_db()).await;
    let a = AdminAddr(n.admin.0);
    assert_eq!(form(&a, "POST", "/services", "name=s&host=h.test").await.status, 201);
    // Four clients PATCH one field each of the same service, 15 times: every field ends at
    // its last acknowledged value.
    let fields = ["retries", "connect_timeout", "write_timeout", "read_timeout"];
    let clients: Vec<_> = fields
        .into_iter()
        .map(|field| {
            let a = AdminAddr(n.admin.0);
            tokio::spawn(async move {
                for i in 1..=15 {
                    let r = json_call(&a, "PATCH", "/services/s", json!({ field: 100 + i })).await;
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let s = call(&a, "GET", "/services/s", None, "").await.body;
    for field in fields {
        assert_eq!(s[field], 115, "{field} lost an acknowledged write: {s}");
    }
    // Concurrent upserts of one new name: one creates it, the others update it, none is 409.
    let upserts: Vec<_> = (0..6)
        .map(|i| {
            let a = AdminAddr(n.admin.0);
            tokio::spawn(async move {
                json_call(&a, "PUT", "/services/upserted", json!({ "host": format!("h{i}.test") }))
                    .await
                    .status
            })
        })
        .collect();
    for u in upserts {
        assert_eq!(u.await.unwrap(), 200);
    }
    // A PATCH racing a DELETE never brings the entity back.
    for i in 0..20 {
        assert_eq!(
            form(&a, "POST", "/services", &format!("name=gone-{i}&host=h.test"))
                .await
                .status,
            201
        );
    }
    let racers: Vec<_> = (0..20)
        .flat_map(|i| {
            let (a1, a2) = (AdminAddr(n.admin.0), AdminAddr(n.admin.0));
            [
                tokio::spawn(async move {
                    json_call(&a1, "PATCH", &format!("/services/gone-{i}"), json!({ "retries": 1 }))
                        .await
                        .status
                }),
                tokio::spawn(async move {
                    call(&a2, "DELETE", &format!("/services/gone-{i}"), None, "")
                        .await
                        .status
                }),
            ]
        })
        .collect();
    for r in racers {
        let status = r.await.unwrap();
        assert!(matches!(status, 200 | 204 | 404), "{status}");
    }
    for i in 0..20 {
        assert_eq!(
            call(&a, "GET", &format!("/services/gone-{i}"), None, "").await.status,
            404,
            "gone-{i} came back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_bump_one_version_and_leave_no_rows_behind() {
    use sqlx::{Connection, Row};
    let db = temp_db();
    let n = node(db.clone()).await;
    let store = Store::sqlite(&db.path()).await.unwrap();
    let before = store.version().await.unwrap();
    for i in 0..25 {
        assert_eq!(
            form(&n.admin, "POST", "/consumers", &format!("username=u{i}"))
                .await
                .status,
            201
        );
    }
    assert_eq!(store.version().await.unwrap(), before + 25);
    let mut conn = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", db.path().display()))
        .await
        .unwrap();
    let rows: i64 = sqlx::query("SELECT COUNT(*) FROM cluster_events")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "cluster_events grows with the writes");
}

/// Entities are typed once, when stored: the configuration built from them is the one they
/// came from, with nothing parsed again.
#[test]
fn entities_keep_their_typed_form_and_build_the_configuration_they_came_from() {
    let config = Config::parse(
        r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9/x
    routes:
      - name: r
        paths: ["/a"]
        plugins:
          - name: gw-test-header
            config: {}
consumers:
  - username: alice
upstreams:
  - name: u
    targets:
      - target: 127.0.0.1:9
"#,
    )
    .unwrap();
    let entities = entities_of(&config);
    let back = to_config(&entities).unwrap();
    assert_eq!(back.services, config.services);
    assert_eq!(back.routes, config.routes);
    assert_eq!(back.consumers, config.consumers);
    assert_eq!(back.plugins, config.plugins);
    assert_eq!(back.upstreams, config.upstreams);
    assert_eq!(back.targets, config.targets);
    assert!(
        entities["services"]
            .values()
            .all(|e| matches!(e.typed, Ok(Typed::Service(_))))
    );
}

/// A stored entity whose JSON makes no typed form is reported, naming its kind, when the
/// configuration is built.
#[test]
fn an_entity_without_a_typed_form_is_reported_by_kind() {
    let mut entities = empty_entities();
    entities.put(
        "services",
        Uuid::new_v4().to_string(),
        json!({ "id": "x", "port": "eighty" }),
    );
    let err = to_config(&entities).unwrap_err();
    assert!(err.starts_with("services: "), "{err}");
}

/// A write copies the index of the kind it changes and no entity: every other entity, of its
/// kind or another, is the same allocation in both copies.
#[test]
fn a_write_shares_every_entity_it_does_not_change() {
    let mut before = empty_entities();
    for i in 0..3 {
        let id = Uuid::new_v4().to_string();
        before.put(
            "consumers",
            id.clone(),
            json!({ "id": id, "username": format!("c{i}") }),
        );
    }
    let kept = Uuid::new_v4().to_string();
    before.put("services", kept.clone(), json!({ "id": kept, "host": "a", "port": 80 }));
    let mut after = before.clone();
    let added = Uuid::new_v4().to_string();
    after.put(
        "services",
        added.clone(),
        json!({ "id": added, "host": "b", "port": 80 }),
    );
    assert!(Arc::ptr_eq(&before.0["consumers"], &after.0["consumers"]));
    assert!(Arc::ptr_eq(&before["services"][&kept], &after["services"][&kept]));
    assert!(!before["services"].contains_key(&added));
}

/// Kong Enterprise's rules for WebSocket services and routes (kong-ws-stream-tls.md 1.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_services_and_routes_follow_kong_enterprises_rules() {
    let db = temp_db();
    let a = &serve_admin(bare_admin(&db).await).await;
    // url shorthand: ws → 80, wss → 443, a path allowed.
    let ws = json_call(
        a,
        "POST",
        "/services",
        json!({ "name": "ws", "url": "ws://echo.test/chat" }),
    )
    .await;
    assert_eq!(ws.status, 201, "{:?}", ws.body);
    assert_eq!(
        (ws.body["protocol"].as_str(), ws.body["port"].as_u64()),
        (Some("ws"), Some(80))
    );
    assert_eq!(ws.body["path"], "/chat");
    let wss = json_call(
        a,
        "POST",
        "/services",
        json!({ "name": "wss", "url": "wss://echo.test", "tls_verify": true }),
    )
    .await;
    assert_eq!(
        (wss.status, wss.body["port"].as_u64()),
        (201, Some(443)),
        "{:?}",
        wss.body
    );
    let depth = json_call(a, "PATCH", "/services/wss", json!({ "tls_verify_depth": 2 })).await;
    assert_eq!(depth.status, 400, "tls_verify_depth is for https and tls only");
    json_call(
        a,
        "POST",
        "/services",
        json!({ "name": "web", "url": "http://echo.test" }),
    )
    .await;

    let field = |r: &Answer, f: &str| r.body["fields"][f].clone();
    let r = json_call(a, "POST", "/routes", json!({ "protocols": ["ws"], "paths": ["/x"] })).await;
    assert_eq!(field(&r, "service"), "WebSocket routes must be attached to a service");
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "protocols": ["ws"], "paths": ["/x"], "service": { "name": "web" } }),
    )
    .await;
    assert_eq!(field(&r, "protocols"), "route/service protocol mismatch");
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "paths": ["/x"], "service": { "name": "ws" } }),
    )
    .await;
    assert_eq!(
        field(&r, "protocols"),
        "route/service protocol mismatch",
        "default protocols on a ws service"
    );
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "protocols": ["ws"], "paths": ["/x"], "methods": ["GET"], "service": { "name": "ws" } }),
    )
    .await;
    assert_eq!(
        field(&r, "methods"),
        "cannot set 'methods' when 'protocols' is 'ws' or 'wss'"
    );
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "protocols": ["ws"], "service": { "name": "ws" } }),
    )
    .await;
    assert_eq!(
        field(&r, "@entity"),
        json!(["must set one of 'hosts', 'headers', 'paths' when 'protocols' is 'ws'"])
    );
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "protocols": ["wss"], "service": { "name": "ws" } }),
    )
    .await;
    assert_eq!(
        field(&r, "@entity"),
        json!(["must set one of 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'wss'"])
    );
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "name": "chat", "protocols": ["wss"], "snis": ["chat.test"], "service": { "name": "ws" } }),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // Across the boundary, later: the route's protocols, the service's protocol.
    let r = json_call(a, "PATCH", "/routes/chat", json!({ "protocols": ["https"] })).await;
    assert_eq!(field(&r, "protocols"), "route/service protocol mismatch");
    let r = json_call(a, "PATCH", "/services/ws", json!({ "protocol": "http" })).await;
    assert_eq!(
        field(&r, "protocol"),
        "cannot change WebSocket protocol to non-WebSocket protocol"
    );
    let r = json_call(a, "PATCH", "/services/web", json!({ "protocol": "wss" })).await;
    assert_eq!(
        field(&r, "protocol"),
        "cannot change non-WebSocket protocol to WebSocket protocol"
    );
    let r = json_call(a, "PATCH", "/services/ws", json!({ "path": "/other" })).await;
    assert_eq!((r.status, r.body["path"].as_str()), (200, Some("/other")));
}

/// Kong's answers for methods a path does not take, OPTIONS on unknown paths, JSON bodies
/// that are not JSON, nested pagination and nested deletes (issue 16, items 1, 2, 8, 10, 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_answers_for_methods_paths_bodies_pages_and_nested_deletes() {
    let db = temp_db();
    let a = &serve_admin(bare_admin(&db).await).await;
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = call(a, method, "/", None, "").await;
        assert_eq!(
            (r.status, r.body.clone()),
            (405, json!({ "message": "Method not allowed" })),
            "{method} /"
        );
    }
    assert_eq!(call(a, "PUT", "/status", None, "").await.status, 405);
    for path in ["/non-existing", "/services/foo/bar/baz"] {
        let r = call(a, "OPTIONS", path, None, "").await;
        assert_eq!(
            (r.status, r.body.clone()),
            (404, json!({ "message": "Not found" })),
            "{path}"
        );
    }
    assert_eq!(call(a, "OPTIONS", "/services", None, "").await.status, 204);
    for body in ["", "{not json"] {
        let r = call(a, "POST", "/services", Some("application/json"), body).await;
        assert_eq!(
            (r.status, r.body.clone()),
            (400, json!({ "message": "Cannot parse JSON body" })),
            "{body:?}"
        );
    }
    json_call(a, "POST", "/services", json!({ "name": "s", "url": "http://a.test" })).await;
    for i in 0..3 {
        json_call(a, "POST", "/services/s/routes", json!({ "paths": [format!("/r{i}")] })).await;
    }
    let page = call(a, "GET", "/services/s/routes?size=2", None, "").await;
    let next = page.body["next"].as_str().unwrap();
    assert!(
        next.starts_with("/services/s/routes?offset=") && !next.contains("size"),
        "{next}"
    );
    let top = call(a, "GET", "/routes?size=2", None, "").await;
    assert!(top.body["next"].as_str().unwrap().ends_with("&size=2"));
    json_call(a, "POST", "/consumers", json!({ "username": "c" })).await;
    let missing = format!("/consumers/c/plugins/{}", Uuid::new_v4());
    assert_eq!(call(a, "DELETE", &missing, None, "").await.status, 404);
    let top_missing = format!("/services/{}", Uuid::new_v4());
    assert_eq!(call(a, "DELETE", &top_missing, None, "").await.status, 204);
}

/// A url shorthand sets every part (a url without a path clears the path), and a unique
/// violation's `fields` hold the key itself (issue 16, items 5 and 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_shorthand_sets_every_part_and_unique_violations_name_the_key() {
    let db = temp_db();
    let a = &serve_admin(bare_admin(&db).await).await;
    let s = json_call(
        a,
        "POST",
        "/services",
        json!({ "name": "svc", "url": "http://a.test/p" }),
    )
    .await;
    assert_eq!(s.body["path"], "/p");
    let s = json_call(a, "PATCH", "/services/svc", json!({ "url": "http://example2.test" })).await;
    assert_eq!(
        (s.status, s.body["host"].clone(), s.body["path"].clone()),
        (200, json!("example2.test"), Value::Null)
    );
    let dup = json_call(a, "POST", "/services", json!({ "name": "svc", "url": "http://b.test" })).await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.body["fields"], json!({ "name": "svc" }));
    assert_eq!(dup.body["message"], "UNIQUE violation detected on '{name=\"svc\"}'");
}

/// A url without a scheme is read as Kong reads it: no host, a relative path (issue 16, 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_without_a_scheme_gets_kongs_two_violations() {
    let db = temp_db();
    let a = &serve_admin(bare_admin(&db).await).await;
    let r = form(a, "POST", "/services", "url=invalid%20url").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["message"],
        "2 schema violations (host: required field missing; path: should start with: /)"
    );
    assert_eq!(
        r.body["fields"],
        json!({ "host": "required field missing", "path": "should start with: /" })
    );
}

/// A foreign reference without its primary key resolves by the endpoint key only; anything
/// else is Kong's `missing primary key` (issue 16, item 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_references_resolve_by_primary_or_endpoint_key_only() {
    let db = temp_db();
    let a = &serve_admin(bare_admin(&db).await).await;
    json_call(a, "POST", "/services", json!({ "name": "svc", "url": "http://a.test" })).await;
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "paths": ["/x"], "service": { "protocol": "http" } }),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], 2);
    assert_eq!(r.body["message"], "schema violation (service.id: missing primary key)");
    assert_eq!(r.body["fields"], json!({ "service": { "id": "missing primary key" } }));
    // By name (the endpoint key), extra fields ignored.
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "paths": ["/x"], "service": { "name": "svc", "protocol": "http" } }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = json_call(
        a,
        "POST",
        "/routes",
        json!({ "paths": ["/y"], "service": { "name": "nope" } }),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["name"], "foreign keys unresolved");
}
