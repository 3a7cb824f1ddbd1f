//! Upstream TLS over real sockets: `tls_verify`, `ca_certificates`, `tls_verify_depth`, the
//! verified server name and `client_certificate`, against an https upstream whose certificate
//! chains through an intermediate CA to a root of the test's own.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;

use super::declarative::Config;
use super::tests::get;
use super::{HeaderSettings, Proxy};
use crate::pdk::NodeInfo;
use crate::registry::Plugins;

/// A certificate and its key, as PEM.
pub(crate) struct Issued {
    pub(crate) cert: String,
    pub(crate) key: String,
    signed: rcgen::Certificate,
    key_pair: KeyPair,
}

/// A CA certificate (self-signed when `issuer` is `None`).
pub(crate) fn ca(name: &str, issuer: Option<&Issued>) -> Issued {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    issue(params, issuer)
}

/// A leaf certificate for `names`, signed by `issuer`.
pub(crate) fn leaf(names: &[&str], issuer: &Issued) -> Issued {
    let params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    issue(params, Some(issuer))
}

fn issue(params: CertificateParams, issuer: Option<&Issued>) -> Issued {
    let key_pair = KeyPair::generate().unwrap();
    let signed = match issuer {
        None => params.self_signed(&key_pair).unwrap(),
        Some(i) => params.signed_by(&key_pair, &i.signed, &i.key_pair).unwrap(),
    };
    Issued {
        cert: signed.pem(),
        key: key_pair.serialize_pem(),
        signed,
        key_pair,
    }
}

/// A TLS acceptor serving `chain` (leaf first) that asks for a client certificate issued by
/// `client_ca` without requiring one.
fn asking_acceptor(chain: &[&Issued], client_ca: &Issued) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.signed.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .unwrap();
    let certs: Vec<CertificateDer<'static>> = chain.iter().map(|c| c.signed.der().clone()).collect();
    let key = PrivateKeyDer::from_pem_slice(chain[0].key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An https upstream serving `chain` (leaf first). It asks for a client certificate issued by
/// `client_ca` without requiring one, and answers `client-cert: yes|no; sni: <name>`.
pub(crate) async fn https_upstream(chain: &[&Issued], client_ca: &Issued) -> SocketAddr {
    let acceptor = asking_acceptor(chain, client_ca);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let (_, session) = tls.get_ref();
                let answer = format!(
                    "client-cert: {}; sni: {}",
                    if session.peer_certificates().is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                    session.server_name().unwrap_or("-"),
                );
                let service = service_fn(move |_req| {
                    let answer = answer.clone();
                    async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(answer)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// Serves `config` on a random port.
async fn gateway(config: serde_json::Value) -> SocketAddr {
    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).build());
    let snapshot = Config::from_value_for(config, &plugins)
        .unwrap()
        .snapshot(&plugins)
        .await
        .unwrap();
    let proxy = Arc::new(Proxy::new(snapshot, HeaderSettings::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_ca_certificates_depth_and_client_certificates() {
    let root = ca("test root", None);
    let intermediate = ca("test intermediate", Some(&root));
    let server = leaf(&["localhost"], &intermediate);
    let other_root = ca("someone else's root", None);
    let client_ca = ca("client CA", None);
    let client = leaf(&["client.test"], &client_ca);
    let up = https_upstream(&[&server, &intermediate], &client_ca).await;
    let port = up.port();

    let root_id = "6a1b4b7e-0a4b-4c53-9a4e-6e2f0d1c0001";
    let other_id = "6a1b4b7e-0a4b-4c53-9a4e-6e2f0d1c0002";
    let missing_id = "6a1b4b7e-0a4b-4c53-9a4e-6e2f0d1c00ff";
    let cert_id = "6a1b4b7e-0a4b-4c53-9a4e-6e2f0d1c0003";
    let service = |name: &str, host: &str, extra: serde_json::Value| {
        let mut s = json!({
            "name": name,
            "url": format!("https://{host}:{port}"),
            "retries": 0,
            "routes": [{ "paths": [format!("/{name}")] }],
        });
        s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        s
    };
    let gw = gateway(json!({
        "_format_version": "3.0",
        "ca_certificates": [
            { "id": root_id, "cert": root.cert },
            { "id": other_id, "cert": other_root.cert },
        ],
        "certificates": [{ "id": cert_id, "cert": client.cert, "key": client.key }],
        "services": [
            service("unverified", "localhost", json!({})),
            service("verify-off", "localhost", json!({ "tls_verify": false, "ca_certificates": [other_id] })),
            service("system-store", "localhost", json!({ "tls_verify": true })),
            service("our-root", "localhost", json!({ "tls_verify": true, "ca_certificates": [root_id] })),
            service("another-root", "localhost", json!({ "tls_verify": true, "ca_certificates": [other_id] })),
            service("missing-ca", "localhost", json!({ "tls_verify": true, "ca_certificates": [missing_id] })),
            service("either-root", "localhost", json!({ "tls_verify": true, "ca_certificates": [other_id, root_id] })),
            service("depth-0", "localhost", json!({
                "tls_verify": true, "tls_verify_depth": 0, "ca_certificates": [root_id]
            })),
            service("wrong-name", "127.0.0.1", json!({ "tls_verify": true, "ca_certificates": [root_id] })),
            service("with-client-cert", "localhost", json!({ "client_certificate": cert_id })),
            service("verified-with-client-cert", "localhost", json!({
                "tls_verify": true, "ca_certificates": [root_id], "client_certificate": { "id": cert_id }
            })),
        ],
    }))
    .await;

    let bad_gateway = "An invalid response was received from the upstream server";
    for (path, status, body) in [
        ("/unverified", 200, "client-cert: no; sni: localhost"),
        ("/verify-off", 200, "client-cert: no; sni: localhost"),
        ("/system-store", 502, bad_gateway),
        ("/our-root", 200, "client-cert: no; sni: localhost"),
        ("/another-root", 502, bad_gateway),
        ("/missing-ca", 502, bad_gateway),
        ("/either-root", 200, "client-cert: no; sni: localhost"),
        // One intermediate is more than depth 0 allows (nginx's default depth, 1, passes).
        ("/depth-0", 502, bad_gateway),
        // The certificate names localhost; the Host sent (and so the name verified) is the IP.
        ("/wrong-name", 502, bad_gateway),
        ("/with-client-cert", 200, "client-cert: yes; sni: localhost"),
        ("/verified-with-client-cert", 200, "client-cert: yes; sni: localhost"),
    ] {
        let res = get(gw, path, &[]).await;
        let text = String::from_utf8_lossy(&res.body);
        assert_eq!(res.status, status, "{path}: {text}");
        assert!(text.contains(body), "{path}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_name_is_the_host_sent_upstream() {
    let root = ca("test root", None);
    let server = leaf(&["api.example.test"], &root);
    let up = https_upstream(&[&server], &ca("client CA", None)).await;
    let root_id = "0f6c7d4e-5a8b-4c1d-9e2f-3a4b5c6d7e01";
    let gw = gateway(json!({
        "_format_version": "3.0",
        "ca_certificates": [{ "id": root_id, "cert": root.cert }],
        "services": [{
            "name": "preserved",
            "url": format!("https://127.0.0.1:{}", up.port()),
            "tls_verify": true,
            "ca_certificates": [root_id],
            "routes": [{ "paths": ["/p"], "preserve_host": true }],
        }],
    }))
    .await;
    // preserve_host sends the client's Host; its name (without the port) is the SNI and the
    // name verified, so the upstream's certificate for api.example.test passes.
    let res = get(gw, "/p", &[("Host", "api.example.test:8443")]).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(&res.body[..], b"client-cert: no; sni: api.example.test");
    let res = get(gw, "/p", &[("Host", "other.example.test")]).await;
    assert_eq!(res.status, 502);
}

#[test]
fn ca_certificate_entities_are_checked_as_kong_does() {
    use super::upstream_tls::check_ca_certificate;
    let root = ca("test root", None);
    let digest = check_ca_certificate(&root.cert).unwrap();
    assert_eq!(digest.len(), 64);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let not_ca = leaf(&["x.test"], &root);
    assert_eq!(
        check_ca_certificate(&not_ca.cert).unwrap_err(),
        (
            "@entity",
            "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint".to_owned()
        )
    );
    let two = format!("{}{}", root.cert, ca("another", None).cert);
    assert_eq!(
        check_ca_certificate(&two).unwrap_err(),
        ("@entity", "please submit only one certificate at a time".to_owned())
    );
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let expired = issue(params, None);
    assert_eq!(
        check_ca_certificate(&expired.cert).unwrap_err(),
        (
            "@entity",
            "certificate expired, \"Not After\" time is in the past".to_owned()
        )
    );
    assert_eq!(check_ca_certificate("garbage").unwrap_err().0, "cert");
}

/// A wss upstream serving `server`, asking for a client certificate issued by `client_ca`
/// without requiring one: each text message is answered with `client-cert: yes|no`.
async fn wss_upstream(server: &Issued, client_ca: &Issued) -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let acceptor = asking_acceptor(&[server], client_ca);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let presented = tls.get_ref().1.peer_certificates().is_some();
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                let answer = format!("client-cert: {}", if presented { "yes" } else { "no" });
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(answer.clone().into()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_upstreams_get_the_client_certificate_of_the_service_or_its_upstream() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let root = ca("test root", None);
    let server = leaf(&["localhost"], &root);
    let client_ca = ca("client CA", None);
    let client = leaf(&["client.test"], &client_ca);
    let port = wss_upstream(&server, &client_ca).await.port();
    let other = ca("someone else's root", None);
    let (root_id, cert_id, other_id) = (
        "6a1b4b7e-0a4b-4c53-9a4e-6e2f0d1c0101",
        "6a1b4b7e-0a4b-4c53-9a4e-6e2f0d1c0102",
        "6a1b4b7e-0a4b-4c53-9a4e-6e2f0d1c0103",
    );
    let gw = gateway(json!({
        "_format_version": "3.0",
        "ca_certificates": [
            { "id": root_id, "cert": root.cert },
            { "id": other_id, "cert": other.cert },
        ],
        "certificates": [{ "id": cert_id, "cert": client.cert, "key": client.key }],
        "upstreams": [{
            "name": "wss-pool",
            "client_certificate": { "id": cert_id },
            "targets": [{ "target": format!("127.0.0.1:{port}") }],
        }],
        "services": [
            {
                "name": "none", "url": format!("wss://localhost:{port}"), "retries": 0,
                "routes": [{ "paths": ["/none"], "protocols": ["ws"] }],
            },
            {
                "name": "own", "url": format!("wss://localhost:{port}"), "retries": 0,
                "client_certificate": { "id": cert_id },
                "routes": [{ "paths": ["/own"], "protocols": ["ws"] }],
            },
            {
                "name": "unverifiable", "url": format!("wss://localhost:{port}"), "retries": 0,
                "tls_verify": true,
                "routes": [{ "paths": ["/unverifiable"], "protocols": ["ws"] }],
            },
            {
                "name": "pooled", "url": "wss://wss-pool", "retries": 0,
                "routes": [{ "paths": ["/pooled"], "protocols": ["ws"] }],
            },
        ],
    }))
    .await;
    for (path, expected) in [
        ("/none", "client-cert: no"),
        ("/own", "client-cert: yes"),
        ("/pooled", "client-cert: yes"),
    ] {
        let tcp = tokio::net::TcpStream::connect(gw).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{gw}{path}"), tcp)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status(), 101, "{path}");
        ws.send(Message::text("who am I")).await.unwrap();
        let back = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .unwrap();
        assert_eq!(back.unwrap().unwrap(), Message::text(expected), "{path}");
    }
    // tls_verify holds for wss (against `lua_ssl_trusted_certificate`, the system's roots here:
    // Kong 3.10 takes no `ca_certificates` on wss services): the test root is not one of them,
    // so the handshake is a 502.
    let res = get(
        gw,
        "/unverifiable",
        &[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ],
    )
    .await;
    assert_eq!(res.status, 502, "{}", String::from_utf8_lossy(&res.body));
}
