//! hmac-auth end to end (Kong's `spec/03-plugins/19-hmac-auth`): a credential through the
//! Admin API or kong.yml, signatures made here, the proxy's answers.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Blueprint, Conf};
use kong_plugins::hmac_auth::HmacAuth;
use serde_json::json;

const SECRET: &str = "the-secret";

fn sign(algorithm: &str, data: &str) -> String {
    use ring::hmac;
    let alg = match algorithm {
        "hmac-sha1" => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "hmac-sha256" => hmac::HMAC_SHA256,
        _ => hmac::HMAC_SHA512,
    };
    let tag = hmac::sign(&hmac::Key::new(alg, SECRET.as_bytes()), data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

fn auth(username: &str, algorithm: &str, headers: &str, signature: &str) -> String {
    format!(r#"hmac username="{username}", algorithm="{algorithm}", headers="{headers}", signature="{signature}""#)
}

fn now() -> String {
    httpdate::fmt_http_date(SystemTime::now())
}

async fn setup(bp: &Blueprint) {
    let bob = bp.consumers().insert(json!({ "username": "bob" })).await;
    bp.table("hmacauth_credentials")
        .insert(json!({ "username": "bob-hmac", "secret": SECRET, "consumer": { "id": bob["id"] } }))
        .await;
    for (path, config) in [
        ("/hmac", json!({})),
        (
            "/strict",
            json!({ "algorithms": ["hmac-sha256"], "enforce_headers": ["date"], "hide_credentials": true, "realm": "api" }),
        ),
        ("/body", json!({ "validate_request_body": true })),
    ] {
        let route = bp.routes().insert(json!({ "paths": [path] })).await;
        bp.plugins()
            .insert(json!({ "name": HmacAuth::NAME, "route": { "id": route["id"] }, "config": config }))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_pass_and_every_failure_gets_kongs_answer() {
    assert_eq!((HmacAuth::NAME, HmacAuth::PRIORITY), ("hmac-auth", 1030));
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        setup(&bp).await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();
        let message = |res: &helpers::TestResponse| res.assert_json()["message"].clone();

        let res = proxy.get("/hmac/request").send().await;
        res.assert_status(401);
        assert_eq!(message(&res), "Unauthorized");
        assert_eq!(res.assert_header("WWW-Authenticate"), "hmac");

        let date = now();
        let good = auth(
            "bob-hmac",
            "hmac-sha256",
            "date",
            &sign("hmac-sha256", &format!("date: {date}")),
        );
        let res = proxy.get("/hmac/request").header("Authorization", &good).send().await;
        res.assert_status(401);
        assert_eq!(
            message(&res),
            "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication"
        );
        let stale = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(1000));
        let res = proxy
            .get("/hmac/request")
            .header("Date", &stale)
            .header("Authorization", &good)
            .send()
            .await;
        res.assert_status(401);

        for (bad, why) in [
            ("hmac username=bob".to_owned(), "HMAC signature cannot be verified"),
            (
                auth("nobody", "hmac-sha256", "date", "c2ln"),
                "HMAC signature cannot be verified",
            ),
            (
                auth("bob-hmac", "hmac-sha256", "date", "d3Jvbmc="),
                "HMAC signature does not match",
            ),
        ] {
            let res = proxy
                .get("/hmac/request")
                .header("Date", &date)
                .header("Authorization", &bad)
                .send()
                .await;
            res.assert_status(401);
            assert_eq!(message(&res), why, "{bad}");
        }

        // Date and the request line, SHA-256.
        let line = sign("hmac-sha256", &format!("date: {date}\nGET /hmac/request?a=1 HTTP/1.1"));
        let res = proxy
            .get("/hmac/request?a=1")
            .header("Date", &date)
            .header(
                "Authorization",
                &auth("bob-hmac", "hmac-sha256", "date request-line", &line),
            )
            .send()
            .await;
        res.assert_status(200);
        let upstream = res.request();
        assert_eq!(
            upstream.header("x-consumer-username").as_deref(),
            Some("bob"),
            "[#{strategy}]"
        );
        assert_eq!(upstream.header("x-credential-identifier").as_deref(), Some("bob-hmac"));
        assert!(upstream.header("authorization").is_some(), "not hidden");
        // X-Date and @request-target, SHA-1, in Proxy-Authorization.
        let target = sign(
            "hmac-sha1",
            &format!("x-date: {date}\n@request-target: get /hmac/request"),
        );
        let res = proxy
            .get("/hmac/request")
            .header("X-Date", &date)
            .header(
                "Proxy-Authorization",
                &auth("bob-hmac", "hmac-sha1", "x-date @request-target", &target),
            )
            .send()
            .await;
        res.assert_status(200);

        // /strict: SHA-256 only, date must be signed, credentials hidden, realm.
        let sha1 = auth(
            "bob-hmac",
            "hmac-sha1",
            "date",
            &sign("hmac-sha1", &format!("date: {date}")),
        );
        let res = proxy
            .get("/strict/request")
            .header("Date", &date)
            .header("Authorization", &sha1)
            .send()
            .await;
        res.assert_status(401);
        assert_eq!(message(&res), "HMAC signature cannot be verified");
        assert_eq!(res.assert_header("WWW-Authenticate"), "hmac realm=\"api\"");
        let x_only = auth(
            "bob-hmac",
            "hmac-sha256",
            "x-date",
            &sign("hmac-sha256", &format!("x-date: {date}")),
        );
        let res = proxy
            .get("/strict/request")
            .header("X-Date", &date)
            .header("Date", &date)
            .header("Authorization", &x_only)
            .send()
            .await;
        assert_eq!(
            message(&res),
            "HMAC signature cannot be verified",
            "the date header is enforced"
        );
        let res = proxy
            .get("/strict/request")
            .header("Date", &date)
            .header("Authorization", &good)
            .send()
            .await;
        res.assert_status(200);
        assert_eq!(res.request().header("authorization"), None);

        // /body: the Digest must match the body.
        let body = r#"{"a":1}"#;
        let digest = {
            let sum = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
            format!(
                "SHA-256={}",
                base64::engine::general_purpose::STANDARD.encode(sum.as_ref())
            )
        };
        let res = proxy
            .post("/body/request")
            .header("Date", &date)
            .header("Digest", &digest)
            .header("Authorization", &good)
            .body(body)
            .send()
            .await;
        res.assert_status(200);
        let res = proxy
            .post("/body/request")
            .header("Date", &date)
            .header("Digest", "SHA-256=bm9wZQ==")
            .header("Authorization", &good)
            .body(body)
            .send()
            .await;
        res.assert_status(401);
        assert_eq!(message(&res), "HMAC signature does not match");
        kong.stop().await;
    }
}
