//! `kong.vault` end to end (issue 16, item 17): a certificate entity whose `cert` and `key`
//! are `{vault://env/...}` references is stored as references and served, resolved, to TLS
//! handshakes on every strategy.

use kong_pdk::gateway::tls::CertificatePair;
use kong_pdk::testing::helpers::{self, Conf};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

async fn served(addr: std::net::SocketAddr, sni: &str) -> Vec<u8> {
    helpers::served_certificate(addr, sni).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_may_come_from_the_env_vault() {
    let (_, cert, key) = CertificatePair::self_signed(&["vaulted.test"]).unwrap();
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap().to_vec();
    // SAFETY: the variables are this test's own; the gateway reads them in this process.
    unsafe {
        std::env::set_var("KONG_PDK_VAULT_CERT", &cert);
        std::env::set_var("KONG_PDK_VAULT_KEY", &key);
    }
    for strategy in helpers::all_strategies() {
        let bp = helpers::get_db_utils(strategy, &["bundled"]).await;
        bp.routes().insert(json!({ "paths": ["/"] })).await;
        let stored = bp
            .certificates()
            .insert(json!({ "cert": "{vault://env/kong-pdk-vault-cert}", "key": "{vault://env/kong-pdk-vault-key}" }))
            .await;
        assert_eq!(
            stored["cert"], "{vault://env/kong-pdk-vault-cert}",
            "[#{strategy}] stored as given"
        );
        bp.snis()
            .insert(json!({ "name": "vaulted.test", "certificate": { "id": stored["id"] } }))
            .await;
        let kong = helpers::start_kong(&bp, Conf::default()).await;
        assert_eq!(
            served(kong.proxy_ssl_addr(), "vaulted.test").await,
            der,
            "[#{strategy}]"
        );
        assert_ne!(
            served(kong.proxy_ssl_addr(), "other.test").await,
            der,
            "[#{strategy}] the default"
        );
        kong.stop().await;
    }
    // A reference to nothing is refused when the configuration is built, with Kong's message.
    let bp = helpers::get_db_utils(helpers::Strategy::Sqlite, &["bundled"]).await;
    let kong = helpers::start_kong(&bp, Conf::default()).await;
    let res = kong
        .admin_client()
        .post("/certificates")
        .json(&json!({ "cert": "{vault://env/kong-pdk-vault-unset}", "key": "{vault://env/kong-pdk-vault-key}" }))
        .send()
        .await;
    let body = res.text();
    assert_eq!(res.status(), 400, "{body}");
    assert!(
        body.contains("could not retrieve value for reference {vault://env/kong-pdk-vault-unset}"),
        "{}: {body}",
        res.status()
    );
    kong.stop().await;
}
