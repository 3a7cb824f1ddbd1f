//! The entity-less access plugins of part 1 (ip-restriction, cors, bot-detection,
//! request-size-limiting, request-termination) in a real gateway on every strategy: configured
//! through the Admin API (or kong.yml DB-less), each on its own route, answering as Kong's
//! specs expect. Their detailed cases run through the harness in their own files.

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers::{self, Conf};
use kong_plugins::{bot_detection, cors, ip_restriction, request_size_limiting, request_termination};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plugin_answers_on_every_strategy() {
    let names = [
        ip_restriction::IpRestriction::NAME,
        cors::Cors::NAME,
        bot_detection::BotDetection::NAME,
        request_size_limiting::RequestSizeLimiting::NAME,
        request_termination::RequestTermination::NAME,
    ];
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        let configs = [
            ("/ip", json!({ "deny": ["127.0.0.1"] })),
            ("/cors", json!({ "origins": ["http://a.test"] })),
            ("/bot", json!({})),
            ("/size", json!({ "allowed_payload_size": 1, "size_unit": "kilobytes" })),
            (
                "/term",
                json!({ "status_code": 503, "message": "down for maintenance" }),
            ),
        ];
        for (name, (path, config)) in names.into_iter().zip(configs) {
            let route = bp.routes().insert(json!({ "paths": [path] })).await;
            bp.plugins()
                .insert(json!({ "name": name, "route": { "id": route["id"] }, "config": config }))
                .await;
        }
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        let proxy = kong.proxy_client();

        let res = proxy.get("/ip/get").send().await;
        res.assert_status(403);
        assert_eq!(
            res.assert_json()["message"],
            "IP address not allowed: 127.0.0.1",
            "[#{strategy}]"
        );

        let res = proxy.get("/cors/get").header("Origin", "http://a.test").send().await;
        res.assert_status(200);
        assert_eq!(
            res.header("access-control-allow-origin"),
            Some("http://a.test"),
            "[#{strategy}]"
        );
        let preflight = proxy
            .options("/cors/get")
            .header("Origin", "http://a.test")
            .header("Access-Control-Request-Method", "GET")
            .send()
            .await;
        preflight.assert_status(200);
        assert!(
            preflight.header("access-control-allow-methods").is_some(),
            "[#{strategy}]"
        );

        let googlebot = "Googlebot/2.1 (+http://www.google.com/bot.html)";
        let res = proxy.get("/bot/get").header("User-Agent", googlebot).send().await;
        res.assert_status(403);
        assert_eq!(res.assert_json()["message"], "Forbidden", "[#{strategy}]");
        proxy
            .get("/bot/get")
            .header("User-Agent", "Mozilla/5.0")
            .send()
            .await
            .assert_status(200);

        proxy
            .post("/size/post")
            .body(vec![b'a'; 1024])
            .send()
            .await
            .assert_status(200);
        let res = proxy.post("/size/post").body(vec![b'a'; 1025]).send().await;
        res.assert_status(413);
        assert_eq!(
            res.assert_json()["message"],
            "Request size limit exceeded",
            "[#{strategy}]"
        );

        let res = proxy.get("/term/get").send().await;
        res.assert_status(503);
        assert_eq!(
            res.assert_json(),
            json!({ "message": "down for maintenance" }),
            "[#{strategy}]"
        );
        kong.stop().await;
    }
}
