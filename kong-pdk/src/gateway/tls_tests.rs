//! TLS, SNI, HTTP/2, the certificate phase, HTTPS-only routes, https upstreams and malformed
//! requests, over real sockets on random ports.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use super::tests::{Got, get, mock_upstream, raw, service_at};
use super::tls::CertificatePair;
use super::*;
use crate::entities::{Certificate, ForeignKey, Route, Service, Sni};
use crate::executor::PluginEntity;
use crate::pdk::NodeInfo;
use crate::prelude::*;
use crate::registry::Plugins;

/// Counts handshakes in `certificate` and reports the count on responses.
#[plugin(priority = 1, version = "1.0.0", name = "gw-test-handshakes")]
struct Handshakes {}

#[derive(Default)]
struct Count(AtomicUsize);

#[handler]
impl Handler for Handshakes {
    type State = Count;

    async fn certificate(&self, kong: &mut Kong<crate::phase::Certificate, Count>) -> crate::Result {
        kong.state().0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn access(&self, kong: &mut Kong<Access, Count>) -> crate::Result {
        let n = kong.state().0.load(Ordering::SeqCst).to_string();
        kong.response().set_header("X-Handshakes", &n)?;
        Ok(())
    }
}

/// Asks clients that name `mtls.test` for a certificate, without session reuse, and reports
/// the chain it got in `X-Client-Chain` (the number of certificates, or `none`).
#[plugin(priority = 2, version = "1.0.0", name = "gw-test-mtls")]
struct Mtls {}

#[handler]
impl Handler for Mtls {
    async fn certificate(&self, kong: &mut Kong<crate::phase::Certificate>) -> crate::Result {
        if kong.client().tls().server_name() == Some("mtls.test") {
            kong.client().tls().request_client_certificate()?;
            kong.client().tls().disable_session_reuse()?;
        }
        Ok(())
    }

    async fn access(&self, kong: &mut Kong<Access>) -> crate::Result {
        let chain = kong.client().tls().get_full_client_certificate_chain().map_or_else(
            || "none".to_owned(),
            |pem| {
                assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
                pem.matches("-----BEGIN CERTIFICATE-----").count().to_string()
            },
        );
        kong.response().set_header("X-Client-Chain", &chain)?;
        Ok(())
    }
}

struct TlsGateway {
    http: SocketAddr,
    https: SocketAddr,
    default_der: Vec<u8>,
    /// DER of the certificate for each SNI entity name.
    certs: Vec<(&'static str, Vec<u8>)>,
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// A gateway with plain and TLS listeners, SNI entities for `names`, `routes` to the mock
/// upstream and the handshake-counting plugin.
async fn start_tls(names: &[&'static str], routes: Vec<Route>, upstream: Arc<Service>) -> TlsGateway {
    start_tls_with(names, routes, upstream, true).await
}

/// [`start_tls`], with HTTP/2 on (as Kong's default `proxy_listen`) or off (no entry with the
/// `http2` flag).
async fn start_tls_with(names: &[&'static str], routes: Vec<Route>, upstream: Arc<Service>, http2: bool) -> TlsGateway {
    let plugins = Arc::new(
        Plugins::builder(NodeInfo::default())
            .with::<Handshakes>()
            .with::<Mtls>()
            .build(),
    );
    let mut set = PluginSet::builder(plugins.clone());
    set.add(PluginEntity::new("gw-test-handshakes", json!({}))).unwrap();
    set.add(PluginEntity::new("gw-test-mtls", json!({}))).unwrap();
    let set = set.build();
    let mut certificates = Vec::new();
    let mut snis = Vec::new();
    let mut certs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let host = name.replace('*', "x");
        let (_, cert, key) = CertificatePair::self_signed(&[host.as_str()]).unwrap();
        certs.push((*name, der(&cert)));
        let id = uuid::Uuid::from_u128(i as u128 + 1);
        certificates.push(Certificate {
            id,
            cert,
            key,
            cert_alt: None,
            key_alt: None,
            tags: None,
        });
        snis.push(Sni {
            id: uuid::Uuid::new_v4(),
            name: (*name).into(),
            certificate: ForeignKey { id },
            tags: None,
        });
    }
    let routes = routes.into_iter().map(|r| (Arc::new(r), Some(upstream.clone())));
    let snapshot = Snapshot {
        router: Arc::new(Router::new(routes).unwrap()),
        plugins: Arc::new(set),
        certificates: Arc::new(Certificates::new(&certificates, &snis).unwrap()),
        upstreams: Arc::default(),
        upstream_tls: Default::default(),
        data: crate::dao::DataStore::empty(),
    };
    let (default, default_pem, _) = CertificatePair::self_signed(&["localhost"]).unwrap();
    let proxy = Arc::new(
        Proxy::new(snapshot, HeaderSettings::default())
            .with_default_certificate(default)
            .with_http2(http2),
    );
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http, https) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    // As Kong's default proxy_listen: http2 on the ssl entry turns h2c on for the plain one.
    if http2 {
        tokio::spawn(proxy.clone().serve_h2c(plain, std::future::pending()));
    } else {
        tokio::spawn(proxy.clone().serve(plain, std::future::pending()));
    }
    tokio::spawn(proxy.serve_tls(tls, std::future::pending()));
    TlsGateway {
        http,
        https,
        default_der: der(&default_pem),
        certs,
    }
}

/// Records the certificate the server presented.
type Recorder = crate::engine::AnyServer;

/// One TLS connection: the certificate served, the ALPN protocol chosen, the stream.
async fn connect(
    addr: SocketAddr,
    sni: Option<&str>,
    alpn: &[&[u8]],
) -> (Vec<u8>, Option<Vec<u8>>, tokio_rustls::client::TlsStream<TcpStream>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder::new(provider.clone()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or("unused.invalid").to_owned()).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let served = recorder.take_seen().unwrap();
    (served, alpn, stream)
}

/// Sends one GET over HTTP/2 (`h2`) or HTTP/1.1 on an established stream.
async fn request<S>(stream: S, h2: bool, uri: &str) -> Got
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    let io = TokioIo::new(stream);
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let mut req = req;
        let host = req.uri().authority().unwrap().to_string();
        req.headers_mut().insert("host", host.parse().unwrap());
        send.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got { status, headers, body }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_alpn_negotiates_h2() {
    let mock = mock_upstream().await;
    let gw = start_tls(
        &["a.test", "*.wild.test", "other.*"],
        vec![Route::new(&["/mock"])],
        service_at(mock),
    )
    .await;
    let cert_of = |name: &str| gw.certs.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    for (sni, expected) in [
        (Some("a.test"), cert_of("a.test")),
        (Some("b.wild.test"), cert_of("*.wild.test")),
        (Some("other.example"), cert_of("other.*")),
        (Some("unknown.test"), gw.default_der.clone()),
        (None, gw.default_der.clone()),
    ] {
        let (served, alpn, stream) = connect(gw.https, sni, &[b"h2", b"http/1.1"]).await;
        assert_eq!(served, expected, "certificate for {sni:?}");
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        let res = request(
            stream,
            true,
            &format!("https://{}/mock/anything", sni.unwrap_or("localhost")),
        )
        .await;
        assert_eq!(res.status, 200, "{sni:?}");
        let echo = res.json();
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
        assert_eq!(echo["vars"]["uri"], "/anything");
    }
    // A client offering only HTTP/1.1 gets it.
    let (_, alpn, stream) = connect(gw.https, Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(request(stream, false, "https://a.test/mock/anything").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_http2_flag_alpn_offers_http1_alone() {
    let mock = mock_upstream().await;
    let gw = start_tls_with(&["a.test"], vec![Route::new(&["/mock"])], service_at(mock), false).await;
    let (_, alpn, stream) = connect(gw.https, Some("a.test"), &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "h2 is not offered");
    assert_eq!(request(stream, false, "https://a.test/mock/anything").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_on_the_plain_listener() {
    let mock = mock_upstream().await;
    let gw = start_tls(&[], vec![Route::new(&["/mock"])], service_at(mock)).await;
    let tcp = TcpStream::connect(gw.http).await.unwrap();
    let res = request(tcp, true, &format!("http://{}/mock/anything", gw.http)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_phase_runs_once_per_handshake() {
    let mock = mock_upstream().await;
    let gw = start_tls(&["a.test"], vec![Route::new(&["/mock"])], service_at(mock)).await;
    let plain = get(gw.http, "/mock/anything", &[]).await;
    assert_eq!(plain.header("x-handshakes"), Some("0"), "plain HTTP has no handshake");
    let (_, _, first) = connect(gw.https, Some("a.test"), &[b"http/1.1"]).await;
    let (_, _, second) = connect(gw.https, Some("a.test"), &[b"http/1.1"]).await;
    let res = request(first, false, "https://a.test/mock/anything").await;
    assert_eq!(res.header("x-handshakes"), Some("2"));
    let res = request(second, false, "https://a.test/mock/anything").await;
    assert_eq!(res.header("x-handshakes"), Some("2"), "requests do not run it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_sni_and_https_only_routes_answer_plain_http_as_kong() {
    let mock = mock_upstream().await;
    let mut by_sni = Route::new(&["/sni"]);
    by_sni.protocols = vec!["https".into()];
    by_sni.snis = Some(vec!["a.test".into()]);
    let mut secure = Route::new(&["/secure"]);
    secure.protocols = vec!["https".into()];
    let mut moved = Route::new(&["/moved"]);
    moved.protocols = vec!["https".into()];
    moved.https_redirect_status_code = 301;
    let gw = start_tls(&["a.test", "b.test"], vec![by_sni, secure, moved], service_at(mock)).await;

    let (_, _, s) = connect(gw.https, Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(request(s, false, "https://a.test/sni/anything").await.status, 200);
    let (_, _, s) = connect(gw.https, Some("b.test"), &[b"http/1.1"]).await;
    assert_eq!(request(s, false, "https://b.test/sni/anything").await.status, 404);

    let res = get(gw.http, "/secure/x", &[]).await;
    assert_eq!(res.status, 426);
    assert_eq!(res.json()["message"], "Please use HTTPS protocol");
    assert_eq!(res.header("upgrade"), Some("TLS/1.2, HTTP/1.1"));
    assert_eq!(res.header("connection"), Some("Upgrade"));
    let (_, _, s) = connect(gw.https, Some("b.test"), &[b"h2"]).await;
    assert_eq!(request(s, true, "https://b.test/secure/anything").await.status, 200);

    let res = get(gw.http, "/moved/x?a=1", &[("Host", "example.test")]).await;
    assert_eq!(res.status, 301);
    assert_eq!(res.header("location"), Some("https://example.test/moved/x?a=1"));
    assert!(res.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_reached_over_tls() {
    let mock = mock_upstream().await;
    // The TLS gateway fronts the mock; a second gateway reaches it with protocol https.
    let tls_front = start_tls(&[], vec![Route::new(&["/"])], service_at(mock)).await;
    let mut upstream = Service::new("127.0.0.1", tls_front.https.port());
    upstream.protocol = "https".into();
    let edge = start_tls(&[], vec![Route::new(&["/edge"])], Arc::new(upstream)).await;
    let res = get(edge.http, "/edge/anything", &[]).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(res.json()["headers"]["x-forwarded-proto"], "https", "the front saw TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_smuggling_requests_get_kongs_errors() {
    let mock = mock_upstream().await;
    let gw = start_tls(&[], vec![Route::new(&["/mock"])], service_at(mock)).await;
    let long = format!("GET /mock/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let out = raw(gw.http, long.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
    assert!(out.contains("\r\nserver: kong/3.10.0\r\n"), "{out}");
    assert!(out.contains("URI too long\nrequest_id: "), "{out}");

    let big = format!("GET /mock HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n", "c".repeat(9000));
    let out = raw(gw.http, big.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(out.contains("Request header or cookie too large"), "{out}");

    // CL.TE: a front end using Content-Length would forward the smuggled GET as body.
    let smuggle = b"POST /mock/anything HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /mock/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = raw(gw.http, smuggle).await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert_eq!(
        out.matches("HTTP/1.1").count(),
        1,
        "one answer, the smuggled request never ran: {out}"
    );

    let out = raw(gw.http, b"GET /mock HTTP/1.1\r\nHost: x\r\nBad\x01Header: y\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(out.contains("Bad request\nrequest_id: "), "{out}");

    // Keep-alive: a good request, then a bad one on the same connection: both answered.
    let two = b"GET /mock/anything HTTP/1.1\r\nHost: x\r\n\r\nGET /mock HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    let out = raw(gw.http, two).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("HTTP/1.1 400 Bad Request\r\n"), "{out}");

    assert_eq!(
        get(gw.http, "/mock/anything", &[]).await.status,
        200,
        "the gateway keeps serving"
    );
}

/// A TLS client presenting `client` (chain and key) when asked, sharing one session store
/// across connections.
fn client_config(client: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Recorder::new(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))));
    let mut config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One request over a new TLS connection naming `sni`: the `X-Client-Chain` answer and whether
/// the session was resumed.
async fn over_tls(addr: SocketAddr, sni: &str, config: &Arc<rustls::ClientConfig>) -> (String, bool) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let got = request(stream, false, &format!("https://{sni}/mock/anything")).await;
    assert_eq!(got.status, 200);
    (got.header("x-client-chain").unwrap_or_default().to_owned(), resumed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_phase_asks_for_client_certificates_and_turns_off_session_reuse() {
    use super::upstream_tls_tests::{ca, leaf};
    let mock = mock_upstream().await;
    let gw = start_tls(&["mtls.test", "a.test"], vec![Route::new(&["/mock"])], service_at(mock)).await;
    let issuer = ca("client issuer", None);
    let client = leaf(&["client.test"], &issuer);
    let chain = format!("{}{}", client.cert, issuer.cert);
    let with_cert = client_config(Some((&chain, &client.key)));

    // Asked for (mtls.test): the whole chain reaches access. Not asked (a.test): none is sent.
    assert_eq!(over_tls(gw.https, "mtls.test", &with_cert).await.0, "2");
    assert_eq!(over_tls(gw.https, "a.test", &with_cert).await.0, "none");
    // Asked, but the client has none: the handshake still succeeds.
    let without = client_config(None);
    assert_eq!(over_tls(gw.https, "mtls.test", &without).await.0, "none");

    // Sessions resume, except where the certificate phase turned reuse off.
    let fresh = client_config(None);
    assert!(!over_tls(gw.https, "a.test", &fresh).await.1);
    assert!(over_tls(gw.https, "a.test", &fresh).await.1, "a.test resumes");
    let fresh = client_config(Some((&chain, &client.key)));
    assert!(!over_tls(gw.https, "mtls.test", &fresh).await.1);
    let (got, resumed) = over_tls(gw.https, "mtls.test", &fresh).await;
    assert!(!resumed, "mtls.test never resumes");
    assert_eq!(got, "2", "and asks for the certificate every time");
}

/// A `wss` echo upstream with a self-signed certificate for `localhost`.
async fn wss_echo_upstream() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let (_, cert, key) = CertificatePair::self_signed(&["localhost"]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(der(&cert))],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_sessions_are_tls_on_both_sides_and_wss_only_routes_refuse_plain_ws() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let upstream = wss_echo_upstream().await;
    let mut service = Service::new("localhost", upstream.port());
    service.protocol = "wss".into();
    let mut route = Route::new(&["/wss"]);
    route.protocols = vec!["wss".into()];
    route.strip_path = false;
    let gw = start_tls(&[], vec![route], Arc::new(service)).await;
    // Plain ws on a wss-only route: Kong's 426.
    let plain = super::websocket_tests::answer(
        gw.http,
        "GET /wss HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    assert!(plain.contains("\"message\":\"Please use HTTPS protocol\""), "{plain}");
    // wss to the gateway, wss from it to the upstream.
    let (_, _, tls) = connect(gw.https, Some("localhost"), &[b"http/1.1"]).await;
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://localhost/wss", tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("over tls")).await.unwrap();
    let back = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .unwrap();
    assert_eq!(back.unwrap().unwrap(), Message::text("over tls"));
}
