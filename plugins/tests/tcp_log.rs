//! tcp-log (Kong's `spec/03-plugins/01-tcp-log`): JSON lines to a TCP server, over one
//! kept-alive connection, and over TLS.

use std::sync::Arc;
use std::time::Duration;

use kong_pdk::Plugin as _;
use kong_pdk::testing::helpers;
use kong_pdk::testing::{Harness, MockResponse, TestRequest, UpstreamRequest};
use kong_plugins::tcp_log::TcpLog;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

fn ok(_: &UpstreamRequest) -> MockResponse {
    MockResponse::ok("{}")
}

/// A TCP server recording each line and how many connections brought them.
async fn server() -> (u16, Arc<std::sync::Mutex<(Vec<Value>, usize)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(std::sync::Mutex::new((Vec::new(), 0)));
    let recorded = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            recorded.lock().unwrap().1 += 1;
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    recorded.lock().unwrap().0.push(serde_json::from_str(&line).unwrap());
                }
            });
        }
    });
    (port, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_go_over_one_kept_alive_connection() {
    assert_eq!((TcpLog::NAME, TcpLog::PRIORITY), ("tcp-log", 7));
    let (port, got) = server().await;
    let gw = Harness::new()
        .route_plugin::<TcpLog>(json!({ "host": "127.0.0.1", "port": port }))
        .start()
        .await
        .unwrap();
    gw.send(TestRequest::get("/one"), ok).await;
    helpers::wait_until("the first line", Duration::from_secs(10), || async {
        got.lock().unwrap().0.len() == 1
    })
    .await;
    gw.send(TestRequest::get("/two"), ok).await;
    helpers::wait_until("the second line", Duration::from_secs(10), || async {
        got.lock().unwrap().0.len() == 2
    })
    .await;
    let (lines, connections) = got.lock().unwrap().clone();
    assert_eq!(lines[0]["request"]["uri"], "/one");
    assert_eq!(lines[1]["request"]["uri"], "/two");
    assert_eq!(connections, 1, "kept alive");
}

#[tokio::test]
async fn config_rules() {
    let schema = TcpLog::schema();
    let fields = |config: Value| schema.validate_config(config).unwrap_err().fields().clone();
    let f = fields(json!({}));
    assert_eq!(f["config"]["host"], "required field missing");
    let ok = schema
        .validate_config(json!({ "host": "logs.example", "port": 9000 }))
        .unwrap();
    assert_eq!(
        (ok["timeout"].clone(), ok["keepalive"].clone(), ok["tls"].clone()),
        (json!(10000), json!(60000), json!(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_go_over_tls_with_the_configured_server_name() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let generated = rcgen::generate_simple_self_signed(vec!["logs.example".to_owned()]).unwrap();
    let certs = vec![CertificateDer::from_pem_slice(generated.cert.pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(generated.key_pair.serialize_pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Option<String>, Value)>(4);
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(stream).await.unwrap();
        let sni = tls.get_ref().1.server_name().map(str::to_owned);
        let mut lines = BufReader::new(tls).lines();
        if let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send((sni, serde_json::from_str(&line).unwrap())).await;
        }
    });
    let gw = Harness::new()
        .route_plugin::<TcpLog>(json!({ "host": "127.0.0.1", "port": port, "tls": true, "tls_sni": "logs.example" }))
        .start()
        .await
        .unwrap();
    gw.send(TestRequest::get("/secure"), ok).await;
    let (sni, line) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sni.as_deref(), Some("logs.example"));
    assert_eq!(line["request"]["uri"], "/secure");
}
