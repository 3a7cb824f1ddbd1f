//! bot-detection (Kong's `spec/03-plugins/21-bot-detection`), through the harness.

use kong_pdk::Plugin as _;
use kong_pdk::testing::{Harness, LoadError, MockResponse, TestGateway, TestRequest, UpstreamRequest};
use kong_plugins::bot_detection::BotDetection;
use serde_json::{Value, json};

const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_2) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/47.0.2526.111 Safari/537.36";
const GOOGLEBOT: &str = "Googlebot/2.1 (+http://www.google.com/bot.html)";
const FACEBOOK: &str = "facebookexternalhit/1.1";

async fn gateway(config: Value) -> TestGateway {
    Harness::new().plugin::<BotDetection>(config).start().await.unwrap()
}

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

async fn status(gw: &TestGateway, agent: Option<&str>) -> u16 {
    let mut req = TestRequest::get("/request");
    if let Some(a) = agent {
        req = req.header("User-Agent", a);
    }
    gw.send(req, ok).await.status()
}

#[tokio::test]
async fn the_schema_is_kongs() {
    assert_eq!((BotDetection::NAME, BotDetection::PRIORITY), ("bot-detection", 2500));
    match Harness::new()
        .plugin::<BotDetection>(json!({ "deny": ["("] }))
        .start()
        .await
    {
        Err(LoadError::Invalid { violation, .. }) => {
            assert_eq!(violation.fields()["config"]["deny"], json!(["not a valid regex: ("]))
        }
        _ => panic!("accepted an invalid regex"),
    }
}

#[tokio::test]
async fn known_bots_and_client_libraries_are_refused_browsers_pass() {
    let gw = gateway(json!({})).await;
    for agent in [None, Some(CHROME), Some("HelloWorld"), Some("curl/7.43.0")] {
        assert_eq!(status(&gw, agent).await, 200, "{agent:?}");
    }
    for agent in [
        GOOGLEBOT,
        FACEBOOK,
        "Twitterbot/1.0",
        "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Scrapy/2.11.0 (+https://scrapy.org)",
        "Go-http-client/1.1",
        "python-requests-spider 1.0",
        "okhttp/4.9.0",
        "reqwest/0.12",
        "axios/1.6.0",
        "Apache-HttpClient/4.5.13 (Java/11)",
        "aws-sdk-java/1.12.0",
    ] {
        assert_eq!(status(&gw, Some(agent)).await, 403, "{agent}");
    }
    let res = gw.send(TestRequest::get("/").header("User-Agent", GOOGLEBOT), ok).await;
    assert_eq!(res.json()["message"], "Forbidden");
}

#[tokio::test]
async fn allow_wins_and_deny_adds() {
    let gw = gateway(json!({ "deny": ["HelloWorld"], "allow": ["facebookexternalhit/1.1"] })).await;
    assert_eq!(status(&gw, Some("HelloWorld")).await, 403);
    assert_eq!(status(&gw, Some(FACEBOOK)).await, 200);
    assert_eq!(status(&gw, Some(GOOGLEBOT)).await, 403);
    assert_eq!(status(&gw, Some(CHROME)).await, 200);
}

#[tokio::test]
async fn two_user_agents_are_a_bad_request() {
    let gw = gateway(json!({})).await;
    let res = gw
        .send(
            TestRequest::get("/")
                .header("User-Agent", CHROME)
                .header("User-Agent", "other"),
            ok,
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json()["message"], "Only one User-Agent header allowed");
}
