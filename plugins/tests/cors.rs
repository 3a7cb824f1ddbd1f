//! cors (Kong's `spec/03-plugins/13-cors`), through the harness.

use kong_pdk::Plugin as _;
use kong_pdk::testing::{Harness, LoadError, MockResponse, Outcome, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::cors::Cors;
use serde_json::{Value, json};

async fn gateway(config: Value) -> TestGateway {
    Harness::new().plugin::<Cors>(config).start().await.unwrap()
}

async fn refused(config: Value) -> Value {
    match Harness::new().plugin::<Cors>(config).start().await {
        Err(LoadError::Invalid { violation, .. }) => violation.fields()["config"].clone(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted"),
    }
}

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

fn preflight(origin: &str) -> TestRequest {
    TestRequest::method("OPTIONS", "/anything")
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
}

fn all(res: &Outcome, name: &str) -> Vec<String> {
    res.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_schema_is_kongs() {
    assert_eq!((Cors::NAME, Cors::PRIORITY), ("cors", 2000));
    assert_eq!(
        refused(json!({ "origins": ["["] })).await["origins"],
        json!(["'[' is not a valid regex"])
    );
    assert_eq!(
        refused(json!({ "methods": ["GET", "FETCH"] })).await["methods"],
        json!([
            null,
            "expected one of: GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS, TRACE, CONNECT"
        ])
    );
}

#[tokio::test]
async fn by_default_every_origin_is_allowed_without_vary() {
    let gw = gateway(json!({})).await;
    let res = gw.send(TestRequest::get("/anything"), ok).await;
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert_eq!(res.header("vary"), None);
    // A preflight is answered by the gateway.
    let res = gw
        .send(
            preflight("http://a.test").header("Access-Control-Request-Headers", "X-One"),
            ok,
        )
        .await;
    assert_eq!((res.status(), res.body().len()), (200, 0));
    assert!(res.upstream_request().is_none());
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        res.header("access-control-allow-methods"),
        Some("GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT")
    );
    assert_eq!(res.header("access-control-allow-headers"), Some("X-One"));
    assert_eq!(res.header("access-control-expose-headers"), None);
    // OPTIONS without Access-Control-Request-Method is no preflight: it is proxied.
    let res = gw
        .send(
            TestRequest::method("OPTIONS", "/").header("Origin", "http://a.test"),
            ok,
        )
        .await;
    assert!(res.upstream_request().is_some());
}

#[tokio::test]
async fn a_preflight_gets_the_configured_headers() {
    let gw = gateway(json!({
        "origins": ["example.com"],
        "methods": ["GET"],
        "headers": ["origin", "type", "accepts"],
        "exposed_headers": ["x-auth-token"],
        "max_age": 23,
        "credentials": true,
        "private_network": true
    }))
    .await;
    let res = gw
        .send(
            preflight("http://x.test").header("Access-Control-Request-Private-Network", "true"),
            ok,
        )
        .await;
    assert_eq!(res.status(), 200);
    // One plain origin is sent whatever the request's origin is.
    assert_eq!(res.header("access-control-allow-origin"), Some("example.com"));
    assert_eq!(res.header("vary"), Some("Origin"));
    assert_eq!(res.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(res.header("access-control-allow-headers"), Some("origin,type,accepts"));
    assert_eq!(res.header("access-control-max-age"), Some("23"));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(res.header("access-control-allow-private-network"), Some("true"));
    assert_eq!(res.header("access-control-expose-headers"), None);
    let res = gw
        .send(TestRequest::get("/").header("Origin", "http://x.test"), ok)
        .await;
    assert_eq!(res.header("access-control-expose-headers"), Some("x-auth-token"));
    assert_eq!(res.header("access-control-allow-methods"), None);
}

#[tokio::test]
async fn origins_match_exactly_or_by_regex_and_others_get_no_allow_origin() {
    let gw = gateway(
        json!({ "origins": ["http://www.example.com", "(.*[.])?example[.]org", "https://api[.]test:8[0-9]+"] }),
    )
    .await;
    let origin = |o: &str| TestRequest::get("/").header("Origin", o);
    for (sent, allowed) in [
        ("http://www.example.com", Some("http://www.example.com")),
        ("http://www.example.com:80", Some("http://www.example.com")),
        ("https://foo.example.org", Some("https://foo.example.org")),
        ("http://example.org:8080", Some("http://example.org:8080")),
        ("https://api.test:8443", Some("https://api.test:8443")),
        ("https://api.test:9443", None),
        ("http://evil.test", None),
        ("http://example.org.evil.test", None),
    ] {
        let res = gw.send(origin(sent), ok).await;
        assert_eq!(res.header("access-control-allow-origin"), allowed, "{sent}");
        assert_eq!(res.header("vary"), Some("Origin"), "{sent}");
    }
    // An upstream's own Allow-Origin goes when the origin is not allowed; its Vary stays.
    let res = gw
        .send(origin("http://evil.test"), |_: &UpstreamRequest| {
            MockResponse::ok("{}")
                .header("Access-Control-Allow-Origin", "*")
                .header("Vary", "Accept-Encoding")
        })
        .await;
    assert_eq!(res.header("access-control-allow-origin"), None);
    assert_eq!(all(&res, "vary"), ["Accept-Encoding", "Origin"]);
}

#[tokio::test]
async fn errors_get_cors_headers_too_and_credentials_echo_the_origin() {
    let gw = gateway(json!({ "credentials": true })).await;
    let res = gw
        .send(
            TestRequest::get("/").header("Origin", "http://a.test"),
            |_: &UpstreamRequest| MockResponse::new(500),
        )
        .await;
    assert_eq!(res.status(), 500);
    assert_eq!(res.header("access-control-allow-origin"), Some("http://a.test"));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(res.header("vary"), Some("Origin"));
}

#[tokio::test]
async fn preflight_continue_and_allow_origin_absent() {
    let gw = gateway(json!({ "preflight_continue": true, "allow_origin_absent": false })).await;
    let res = gw.send(preflight("http://a.test"), ok).await;
    assert!(res.upstream_request().is_some(), "the preflight was proxied");
    assert_eq!(res.header("access-control-allow-origin"), None, "and left alone");
    let res = gw.send(TestRequest::get("/"), ok).await;
    assert_eq!(res.header("access-control-allow-origin"), None);
}
