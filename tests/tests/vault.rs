//! `kong.vault` end to end (issue 16, item 17): a certificate entity whose `cert` and `key`
//! are `{vault://env/...}` references is stored as references and served, resolved, to TLS
//! handshakes on every strategy.

use std::sync::{Arc, Mutex};

use kong_pdk::gateway::tls::CertificatePair;
use kong_pdk::testing::helpers::{self, Conf};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

/// Records the certificate the server presented, trusting it.
#[derive(Debug)]
struct Recorder(Mutex<Option<Vec<u8>>>, Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate served to a handshake with `sni` on `addr`.
async fn served(addr: std::net::SocketAddr, sni: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder(Mutex::new(None), provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let _tls = connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    recorder.0.lock().unwrap().clone().expect("a certificate")
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
