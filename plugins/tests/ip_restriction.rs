//! ip-restriction (Kong's `spec/03-plugins/17-ip-restriction`), through the harness.

use std::net::IpAddr;

use kong_pdk::Plugin as _;
use kong_pdk::testing::{Harness, LoadError, MockResponse, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::ip_restriction::IpRestriction;
use serde_json::{Value, json};

async fn gateway(config: Value) -> TestGateway {
    Harness::new().plugin::<IpRestriction>(config).start().await.unwrap()
}

async fn refused(config: Value) -> Value {
    match Harness::new().plugin::<IpRestriction>(config).start().await {
        Err(LoadError::Invalid { violation, .. }) => violation.fields()["config"].clone(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted"),
    }
}

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

fn from(ip: &str) -> TestRequest {
    TestRequest::get("/request").client_ip(ip.parse::<IpAddr>().unwrap())
}

#[tokio::test]
async fn the_schema_is_kongs() {
    assert_eq!((IpRestriction::NAME, IpRestriction::PRIORITY), ("ip-restriction", 990));
    assert_eq!(
        refused(json!({})).await["@entity"],
        json!(["at least one of these fields must be non-empty: 'allow', 'deny'"])
    );
    assert_eq!(
        refused(json!({ "allow": [] })).await["@entity"],
        json!(["at least one of these fields must be non-empty: 'allow', 'deny'"]),
        "an empty list counts as empty"
    );
    assert_eq!(
        refused(json!({ "allow": ["127.0.0.1", "10.0.0.0/33"] })).await["allow"],
        json!([null, "invalid ip or cidr range: '10.0.0.0/33'"])
    );
    assert_eq!(
        refused(json!({ "deny": ["nope"] })).await["deny"],
        json!(["invalid ip or cidr range: 'nope'"])
    );
}

#[tokio::test]
async fn denied_addresses_get_403_with_kongs_message() {
    let gw = gateway(json!({ "deny": ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"] })).await;
    for ip in ["127.0.0.1", "10.9.8.7", "2001:db8::5"] {
        let res = gw.send(from(ip), ok).await;
        assert_eq!(res.status(), 403, "{ip}");
        assert_eq!(res.json()["message"], format!("IP address not allowed: {ip}"), "{ip}");
        assert!(res.upstream_request().is_none());
    }
    assert_eq!(gw.send(from("192.0.2.1"), ok).await.status(), 200);
    assert_eq!(gw.send(from("2001:db9::1"), ok).await.status(), 200);
}

#[tokio::test]
async fn only_allowed_addresses_pass_and_deny_wins() {
    let gw = gateway(json!({ "allow": ["192.0.2.0/24"], "deny": ["192.0.2.66"] })).await;
    assert_eq!(gw.send(from("192.0.2.1"), ok).await.status(), 200);
    assert_eq!(gw.send(from("198.51.100.1"), ok).await.status(), 403);
    assert_eq!(gw.send(from("192.0.2.66"), ok).await.status(), 403, "deny wins");
}

#[tokio::test]
async fn status_and_message_are_configurable() {
    let gw = gateway(json!({ "deny": ["203.0.113.9"], "status": 401, "message": "Forbidden here" })).await;
    let res = gw.send(from("203.0.113.9"), ok).await;
    assert_eq!(
        (res.status(), res.json()["message"].clone()),
        (401, json!("Forbidden here"))
    );
}

#[tokio::test]
async fn streams_are_restricted_in_preread() {
    let gw = Harness::new()
        .plugin::<IpRestriction>(json!({ "deny": ["10.0.0.0/8"] }))
        .start()
        .await
        .unwrap();
    use kong_pdk::testing::TestSession;
    let denied = gw
        .stream(TestSession::new("hi").client_ip("10.1.2.3".parse().unwrap()), |_| {
            b"never".to_vec()
        })
        .await;
    assert_eq!(
        (denied.status, denied.to_client.as_ref(), denied.to_upstream.is_none()),
        (403, &b""[..], true)
    );
    assert!(
        denied
            .logs
            .iter()
            .any(|l| l.message.contains("IP address not allowed: 10.1.2.3"))
    );
    let allowed = gw.stream(TestSession::new("hi"), |got| [b"echo:", got].concat()).await;
    assert_eq!((allowed.status, allowed.to_client.as_ref()), (200, &b"echo:hi"[..]));
}
