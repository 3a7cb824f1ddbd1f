//! udp-log (Kong's `spec/03-plugins/05-udp-log`): one JSON datagram per request.

use std::net::UdpSocket;
use std::time::Duration;

use kong_pdk::Plugin as _;
use kong_pdk::testing::{Harness, MockResponse, TestRequest, UpstreamRequest};
use kong_plugins::udp_log::UdpLog;
use serde_json::{Value, json};

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_a_json_datagram() {
    assert_eq!((UdpLog::NAME, UdpLog::PRIORITY), ("udp-log", 8));
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = receiver.local_addr().unwrap().port();
    let gw = Harness::new()
        .route_plugin::<UdpLog>(json!({ "host": "127.0.0.1", "port": port }))
        .start()
        .await
        .unwrap();
    gw.send(TestRequest::get("/one").header("X-Id", "1"), ok).await;
    gw.send(TestRequest::get("/two"), ok).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut buf = vec![0u8; 65_536];
        let n = tokio::task::block_in_place(|| receiver.recv(&mut buf)).expect("a datagram");
        got.push(serde_json::from_slice::<Value>(&buf[..n]).unwrap());
    }
    assert_eq!(got[0]["request"]["uri"], "/one");
    assert_eq!(got[0]["request"]["headers"]["x-id"], "1");
    assert_eq!(got[1]["request"]["uri"], "/two");
    assert_eq!(got[1]["response"]["status"], 200);
}

#[tokio::test]
async fn config_rules() {
    let schema = UdpLog::schema();
    let fields = |config: Value| schema.validate_config(config).unwrap_err().fields().clone();
    let f = fields(json!({}));
    assert_eq!(f["config"]["host"], "required field missing");
    assert_eq!(f["config"]["port"], "required field missing");
    let f = fields(json!({ "host": "127.0.0.1", "port": 70000 }));
    assert_eq!(f["config"]["port"], "value should be between 0 and 65535");
    let ok = schema
        .validate_config(json!({ "host": "127.0.0.1", "port": 9 }))
        .unwrap();
    assert_eq!(ok["timeout"], 10000);
}
