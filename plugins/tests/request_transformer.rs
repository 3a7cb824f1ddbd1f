//! request-transformer (Kong's `spec/03-plugins/36-request-transformer`): path, method,
//! headers, bodies and query strings in Kong's order, templates, and the config's messages.

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Conf};
use kong_pdk::testing::{Harness, MockResponse, Outcome, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::request_transformer::RequestTransformer;
use serde_json::{Value, json};

async fn gateway(config: Value) -> TestGateway {
    Harness::new()
        .route_plugin::<RequestTransformer>(config)
        .start()
        .await
        .unwrap()
}

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

fn up(res: &Outcome) -> &UpstreamRequest {
    res.upstream_request().expect("proxied")
}

fn header(res: &Outcome, name: &str) -> Vec<String> {
    up(res)
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn headers_change_in_kongs_order() {
    assert_eq!(
        (RequestTransformer::NAME, RequestTransformer::PRIORITY),
        ("request-transformer", 801)
    );
    let gw = gateway(json!({
        "remove": { "headers": ["X-Gone", "X-Again"] },
        "rename": { "headers": ["X-Old:X-New"] },
        "replace": { "headers": ["X-Keep:replaced", "X-Absent:no", "Host:upstream.example"] },
        "add": { "headers": ["X-Again:added-back", "X-Keep:not-added", "X-From:$(headers['x-gone'])"] },
        "append": { "headers": ["X-Keep:more", "X-List:one"] },
    }))
    .await;
    let req = TestRequest::get("/")
        .header("X-Gone", "old-value")
        .header("X-Again", "a")
        .header("X-Old", "o")
        .header("X-Keep", "k");
    let res = gw.send(req, ok).await;
    assert!(header(&res, "X-Gone").is_empty());
    assert_eq!(header(&res, "X-Again"), ["added-back"], "removed, then added");
    assert!(header(&res, "X-Old").is_empty());
    assert_eq!(header(&res, "X-New"), ["o"]);
    assert_eq!(header(&res, "X-Keep"), ["replaced", "more"]);
    assert!(header(&res, "X-Absent").is_empty());
    // Templates see the request as it came: a removed header's value stays usable.
    assert_eq!(header(&res, "X-From"), ["old-value"]);
    assert_eq!(header(&res, "X-List"), ["one"]);
    assert_eq!(up(&res).host_header.as_deref(), Some("upstream.example"));
}

#[tokio::test]
async fn query_strings_change_and_are_encoded_with_sorted_keys() {
    let gw = gateway(json!({
        "remove": { "querystring": ["gone"] },
        "rename": { "querystring": ["old:new"] },
        "replace": { "querystring": ["keep:replaced"] },
        "add": { "querystring": ["added:a b", "keep:no"] },
        "append": { "querystring": ["list:2"] },
    }))
    .await;
    let res = gw
        .send(TestRequest::get("/path?gone=1&old=o&keep=k&list=1&z"), ok)
        .await;
    assert_eq!(
        up(&res).query.as_deref(),
        Some("added=a%20b&keep=replaced&list=1&list=2&new=o&z")
    );
    // Without query operations the query is forwarded as it came.
    let gw = gateway(json!({ "add": { "headers": ["X-A:1"] } })).await;
    let res = gw.send(TestRequest::get("/path?b=$&a=1"), ok).await;
    assert_eq!(up(&res).query.as_deref(), Some("b=$&a=1"));
}

#[tokio::test]
async fn json_and_form_bodies_change() {
    let config = json!({
        "remove": { "body": ["secret"] },
        "rename": { "body": ["old:new"] },
        "replace": { "body": ["keep:replaced", "absent:no"] },
        "add": { "body": ["added:yes", "keep:not-added"] },
        "append": { "body": ["list:b"] },
    });
    let gw = gateway(config.clone()).await;
    let req = TestRequest::post("/", r#"{"secret":1,"old":"o","keep":"k","list":["a"]}"#)
        .header("Content-Type", "application/json");
    let res = gw.send(req, ok).await;
    let body: Value = serde_json::from_slice(res.upstream_body().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({ "new": "o", "keep": "replaced", "list": ["a", "b"], "added": "yes" })
    );
    let length: usize = header(&res, "Content-Length")[0].parse().unwrap();
    assert_eq!(length, res.upstream_body().unwrap().len());
    // An empty JSON body: only additions and appends.
    let req = TestRequest::post("/", "").header("Content-Type", "application/json");
    let res = gw.send(req, ok).await;
    let body: Value = serde_json::from_slice(res.upstream_body().unwrap()).unwrap();
    assert_eq!(body, json!({ "added": "yes", "keep": "not-added", "list": ["b"] }));
    // Forms.
    let req = TestRequest::post("/", "secret=1&old=o&keep=k&list=a")
        .header("Content-Type", "application/x-www-form-urlencoded");
    let res = gw.send(req, ok).await;
    let body = String::from_utf8(res.upstream_body().unwrap().to_vec()).unwrap();
    assert_eq!(body, "added=yes&keep=replaced&list=a&list=b&new=o");
    // Other content types go untouched.
    let req = TestRequest::post("/", "secret").header("Content-Type", "text/plain");
    let res = gw.send(req, ok).await;
    assert_eq!(res.upstream_body().map(|b| b.to_vec()), Some(b"secret".to_vec()));
}

#[tokio::test]
async fn the_method_and_path_change_and_a_form_moves_to_the_query() {
    let gw = Harness::new()
        .with_route(|r| r.paths = Some(vec![r"~/users/(?<user1>\d+)".into()]))
        .route_plugin::<RequestTransformer>(json!({
            "http_method": "GET",
            "replace": { "uri": "/accounts/$(uri_captures.user1)/$(10 * uri_captures.user1)" },
        }))
        .start()
        .await
        .unwrap();
    let req = TestRequest::post("/users/7", "a=1&b=2").header("Content-Type", "application/x-www-form-urlencoded");
    let res = gw.send(req.header("X-Q", "1"), ok).await;
    assert_eq!(up(&res).method, "GET");
    assert_eq!(up(&res).path, "/accounts/7/70");
    assert_eq!(up(&res).query.as_deref(), Some("a=1&b=2"));
}

#[tokio::test]
async fn config_messages_are_kongs() {
    let schema = RequestTransformer::schema();
    let fields = |config: Value| schema.validate_config(config).unwrap_err().fields().clone();
    let f = fields(json!({ "add": { "body": ["name"] } }));
    assert_eq!(f["config"]["add"]["body"], json!(["key 'name' has no value"]));
    let f = fields(json!({ "add": { "querystring": ["q:$(headers[)"] } }));
    let msg = f["config"]["add"]["querystring"][0].as_str().unwrap().to_owned();
    assert!(
        msg.starts_with("value '$(headers[)' is not in supported format, error:"),
        "{msg}"
    );
    let f = fields(json!({ "add": { "headers": ["bad name:v"] } }));
    assert_eq!(
        f["config"]["add"]["headers"],
        json!(["'bad name' is not a valid header"])
    );
    let f = fields(json!({ "append": { "headers": ["novalue"] } }));
    assert_eq!(f["config"]["append"]["headers"], json!(["invalid value: novalue"]));
    let f = fields(json!({ "rename": { "headers": ["X-A:bad name"] } }));
    assert_eq!(
        f["config"]["rename"]["headers"],
        json!(["'bad name' is not a valid header"])
    );
    let f = fields(json!({ "http_method": "get" }));
    assert_eq!(f["config"]["http_method"], "invalid value: get");
    let ok = schema.validate_config(json!({})).unwrap();
    assert_eq!(ok["remove"], json!({ "body": [], "headers": [], "querystring": [] }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_the_changes_on_every_strategy() {
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let route = bp.routes().insert(json!({ "paths": ["/"] })).await;
        bp.plugins()
            .insert(json!({ "name": "request-transformer", "route": { "id": route["id"] },
                "config": { "add": { "headers": ["X-Added:$(query_params.who or 'nobody')"], "querystring": ["extra:1"] } } }))
            .await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let body = kong.proxy_client().get("/request?who=bob").send().await.assert_json();
        assert_eq!(body["headers"]["x-added"], "bob", "[#{strategy}] {body}");
        assert_eq!(body["uri_args"]["extra"], "1", "[#{strategy}] {body}");
        kong.stop().await;
    }
}

/// A multipart body with boundary `Bound` of `parts` (each its header lines, a blank line and
/// its value).
fn multipart(parts: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(b"--Bound\r\n");
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--Bound--\r\n");
    body
}

/// Kong's `transform_multipart_body`: rename, remove, replace, add (no append), file parts
/// kept byte for byte.
#[tokio::test]
async fn multipart_bodies_are_transformed_part_by_part() {
    let gw = gateway(json!({
        "rename": { "body": ["a:c"] },
        "remove": { "body": ["b"] },
        "replace": { "body": ["keep:new"] },
        "add": { "body": ["d:4", "keep:ignored"] },
        "append": { "body": ["e:5"] },
    }))
    .await;
    let file = b"Content-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\xff";
    let body = multipart(&[
        b"Content-Disposition: form-data; name=\"a\"\r\n\r\n1",
        b"Content-Disposition: form-data; name=\"b\"\r\n\r\n2",
        file,
        b"Content-Disposition: form-data; name=\"keep\"\r\n\r\nold",
    ]);
    let res = gw
        .send(
            TestRequest::post("/", body).header("Content-Type", "multipart/form-data; boundary=Bound"),
            ok,
        )
        .await;
    let sent = res.upstream_body().expect("proxied").to_vec();
    let expected = multipart(&[
        file,
        b"Content-Disposition: form-data; name=\"c\"\r\n\r\n1",
        b"Content-Disposition: form-data; name=\"keep\"\r\n\r\nnew",
        b"Content-Disposition: form-data; name=\"d\"\r\n\r\n4",
    ]);
    assert_eq!(String::from_utf8_lossy(&sent), String::from_utf8_lossy(&expected));
    assert_eq!(
        up(&res).headers.get("content-length").and_then(|v| v.to_str().ok()),
        Some(expected.len().to_string().as_str())
    );
}

/// Shares a value with templates, as a plugin running before request-transformer would.
#[kong_pdk::plugin(priority = 1000, version = "1.0.0", name = "tenant-sharer")]
pub struct TenantSharer {}

#[kong_pdk::handler]
impl kong_pdk::Handler for TenantSharer {
    async fn access(&self, kong: &mut kong_pdk::Kong<'_, kong_pdk::phase::Access>) -> kong_pdk::Result {
        let mut values = kong_plugins::template::SharedValues::default();
        values.0.insert("tenant".into(), "acme".into());
        kong.ctx().shared().insert(values);
        Ok(())
    }
}

#[tokio::test]
async fn templates_read_what_plugins_shared() {
    let gw = Harness::new()
        .plugin::<TenantSharer>(json!({}))
        .route_plugin::<RequestTransformer>(json!({
            "add": { "headers": ["x-tenant:$(shared.tenant)", "x-missing:$(shared.nope or 'none')"] }
        }))
        .start()
        .await
        .unwrap();
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(header(&res, "x-tenant"), ["acme"]);
    assert_eq!(header(&res, "x-missing"), ["none"]);
}
