//! TLS towards `https` upstreams, set up per service as Kong's
//! `kong/runloop/upstream_ssl.lua` does:
//!
//! - `tls_verify`: whether the upstream's certificate is verified. Unset or `false` is Kong's
//!   default (nginx's `proxy_ssl_verify off`): any certificate is accepted, though the
//!   handshake's signatures are still checked.
//! - `ca_certificates`: the CA certificate entities a verified chain must end at. Unset, the
//!   gateway's trusted store is used: Kong's `lua_ssl_trusted_certificate`, by default the
//!   system's bundle ([`set_trusted_certificates`]).
//! - `tls_verify_depth`: how many intermediate CA certificates a chain may have, nginx's
//!   `proxy_ssl_verify_depth` (default 1).
//! - `client_certificate`: the certificate entity presented when the upstream asks for one;
//!   unset, the service's Upstream entity's `client_certificate`.
//!
//! The server name sent and verified is the `Host` sent upstream without its port, as nginx's
//! `proxy_ssl_name $upstream_host`. A certificate that fails verification fails the
//! connection: the try is retried like any connect failure, then answered with `502`.
//!
//! Client configurations are shared by every service with the same settings and survive
//! configuration changes that keep them, so pooled connections stay usable.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use uuid::Uuid;

use crate::entities::{CaCertificate, Certificate, Service, Upstream};

/// nginx's `proxy_ssl_verify_depth` default.
const DEFAULT_DEPTH: u8 = 1;

/// The bundles Kong's `lua_ssl_trusted_certificate = system` looks for, first found wins.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

type Anchors = Arc<[TrustAnchor<'static>]>;

static TRUSTED: OnceLock<Anchors> = OnceLock::new();

/// Sets the trusted store used to verify upstreams of services with `tls_verify` and no
/// `ca_certificates`: Kong's `lua_ssl_trusted_certificate`, a comma-separated list of PEM
/// files, where `system` stands for the system's bundle. Call it once, before the first
/// request; without a call the store is the system's bundle.
///
/// ```
/// let err = kong_pdk::gateway::upstream_tls::set_trusted_certificates("/nonexistent/ca.pem");
/// assert!(err.unwrap_err().contains("/nonexistent/ca.pem"));
/// ```
pub fn set_trusted_certificates(spec: &str) -> Result<(), String> {
    let anchors = load_trusted(spec)?;
    TRUSTED
        .set(anchors)
        .map_err(|_| "lua_ssl_trusted_certificate is already loaded".to_owned())
}

fn trusted() -> Anchors {
    TRUSTED
        .get_or_init(|| {
            load_trusted("system").unwrap_or_else(|e| {
                tracing::warn!(target: "kong", "{e}");
                Arc::from(Vec::new())
            })
        })
        .clone()
}

fn load_trusted(spec: &str) -> Result<Anchors, String> {
    let mut anchors = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let path = if item == "system" {
            SYSTEM_BUNDLES
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .ok_or("lua_ssl_trusted_certificate: no system CA bundle found")?
        } else {
            item
        };
        let pem = std::fs::read(path).map_err(|e| format!("lua_ssl_trusted_certificate: {path}: {e}"))?;
        for der in CertificateDer::pem_slice_iter(&pem) {
            let der = der.map_err(|e| format!("lua_ssl_trusted_certificate: {path}: {e}"))?;
            // A bundle may hold certificates webpki cannot use as anchors; skip those.
            if let Ok(anchor) = webpki::anchor_from_trusted_cert(&der) {
                anchors.push(anchor.to_owned());
            }
        }
    }
    Ok(anchors.into())
}

/// Checks a CA certificate entity's `cert` as Kong does and returns its `cert_digest`
/// (SHA-256 of the DER, lowercase hex). The error says which field: `cert` for a value that
/// is not a certificate, `@entity` for Kong's entity checks.
///
/// ```
/// use kong_pdk::gateway::upstream_tls::check_ca_certificate;
/// let (field, message) = check_ca_certificate("nope").unwrap_err();
/// assert_eq!(field, "cert");
/// assert!(message.starts_with("invalid certificate"));
/// ```
pub fn check_ca_certificate(pem: &str) -> Result<String, (&'static str, String)> {
    let der = single_certificate(pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| ("cert", format!("invalid certificate: {e}")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if cert.validity().not_after.timestamp() < now {
        return Err((
            "@entity",
            "certificate expired, \"Not After\" time is in the past".into(),
        ));
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        _ => {
            return Err((
                "@entity",
                "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint".into(),
            ));
        }
    }
    Ok(digest_hex(&der))
}

fn single_certificate(pem: &str) -> Result<CertificateDer<'static>, (&'static str, String)> {
    if pem.matches("-----BEGIN CERTIFICATE-----").count() > 1 {
        return Err(("@entity", "please submit only one certificate at a time".into()));
    }
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| ("cert", format!("invalid certificate: {e}")))
}

fn digest_hex(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    crate::text::hex(digest.as_ref())
}

/// The TLS client configurations of a snapshot's services.
#[derive(Debug, Default, Clone)]
pub struct UpstreamTls {
    by_service: HashMap<Uuid, Arc<ClientConfig>>,
}

/// What a service's upstream TLS depends on; equal settings share one configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Settings {
    /// `None`: not verified. Otherwise the depth and where the anchors come from.
    verify: Option<(u8, Roots)>,
    /// The client certificate entity: its id and a digest of its PEM and key.
    client: Option<(Uuid, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Roots {
    /// The trusted store (`lua_ssl_trusted_certificate`).
    Trusted,
    /// CA certificate entities by digest; an id that names none makes the list trust nothing.
    Entities(Vec<String>),
}

/// Configurations built so far, by settings; dropped with the last snapshot using them.
static BUILT: LazyLock<Mutex<HashMap<Settings, Weak<ClientConfig>>>> = LazyLock::new(Mutex::default);

static DEFAULT: LazyLock<Arc<ClientConfig>> = LazyLock::new(|| Arc::new(unverified_client_config()));

/// A client configuration that verifies no certificate and presents none (Kong's default
/// towards upstreams, and what test clients of a self-signed listener need).
pub(crate) fn unverified_client_config() -> ClientConfig {
    build_with(
        &Settings {
            verify: None,
            client: None,
        },
        &HashMap::new(),
        &HashMap::new(),
    )
}

/// The client configuration of an upstream's active HTTPS probes: verifying against the
/// trusted store (`lua_ssl_trusted_certificate`) or not at all.
pub(crate) fn probe_client_config(verify: bool) -> Arc<ClientConfig> {
    static VERIFYING: LazyLock<Arc<ClientConfig>> = LazyLock::new(|| {
        Arc::new(build_with(
            &Settings {
                verify: Some((DEFAULT_DEPTH, Roots::Trusted)),
                client: None,
            },
            &HashMap::new(),
            &HashMap::new(),
        ))
    });
    if verify { VERIFYING.clone() } else { DEFAULT.clone() }
}

impl UpstreamTls {
    /// The configurations of `services` (those that differ from the default), from the CA
    /// certificate, certificate and upstream entities they reference. A reference to a missing
    /// entity is logged; a missing CA certificate makes verification fail rather than trust
    /// more than was asked.
    pub fn new(
        services: &[Service],
        ca_certificates: &[CaCertificate],
        certificates: &[Certificate],
        upstreams: &[Upstream],
    ) -> UpstreamTls {
        let cas: HashMap<Uuid, &CaCertificate> = ca_certificates.iter().map(|c| (c.id, c)).collect();
        let certs: HashMap<Uuid, &Certificate> = certificates.iter().map(|c| (c.id, c)).collect();
        let mut by_service = HashMap::new();
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        built.retain(|_, w| w.strong_count() > 0);
        for s in services
            .iter()
            .filter(|s| matches!(s.protocol.as_str(), "https" | "wss" | "tls"))
        {
            let verify = (s.tls_verify == Some(true)).then(|| {
                let roots = match &s.ca_certificates {
                    None => Roots::Trusted,
                    Some(ids) => {
                        let mut digests: Vec<String> = ids
                            .iter()
                            .map(|id| match cas.get(id) {
                                Some(ca) => ca_digest(ca),
                                None => {
                                    tracing::error!(target: "kong", "CA Certificate '{id}' does not exist (service {})", s.id);
                                    format!("missing:{id}")
                                }
                            })
                            .collect();
                        digests.sort();
                        Roots::Entities(digests)
                    }
                };
                (s.tls_verify_depth.unwrap_or(DEFAULT_DEPTH), roots)
            });
            let fallback = || {
                upstreams
                    .iter()
                    .find(|u| u.name.eq_ignore_ascii_case(&s.host))
                    .and_then(|u| u.client_certificate)
            };
            let client = s.client_certificate.or_else(fallback).and_then(|fk| match certs.get(&fk.id) {
                Some(c) => Some((fk.id, pem_digest(&format!("{}{}", c.cert, c.key)))),
                None => {
                    tracing::error!(target: "kong", "unable to fetch upstream client TLS certificate {}: not found", fk.id);
                    None
                }
            });
            let settings = Settings { verify, client };
            if settings.verify.is_none() && settings.client.is_none() {
                continue;
            }
            let config = match built.get(&settings).and_then(Weak::upgrade) {
                Some(config) => config,
                None => {
                    let config = Arc::new(build_with(&settings, &cas, &certs));
                    built.insert(settings, Arc::downgrade(&config));
                    config
                }
            };
            by_service.insert(s.id, config);
        }
        UpstreamTls { by_service }
    }

    /// The configuration for a request to `service`'s upstream.
    pub(crate) fn get(&self, service: Option<Uuid>) -> &Arc<ClientConfig> {
        service.and_then(|id| self.by_service.get(&id)).unwrap_or(&DEFAULT)
    }
}

/// A CA certificate entity's digest: its `cert_digest`, which the Admin API and kong.yml fill in.
fn ca_digest(ca: &CaCertificate) -> String {
    ca.cert_digest.clone().unwrap_or_else(|| pem_digest(&ca.cert))
}

fn pem_digest(pem: &str) -> String {
    digest_hex(pem.as_bytes())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_with(
    settings: &Settings,
    cas: &HashMap<Uuid, &CaCertificate>,
    certs: &HashMap<Uuid, &Certificate>,
) -> ClientConfig {
    let provider = provider();
    let chain = match &settings.verify {
        None => None,
        Some((depth, roots)) => {
            let anchors = match roots {
                Roots::Trusted => trusted(),
                Roots::Entities(digests) => cas
                    .values()
                    .filter(|ca| digests.contains(&ca_digest(ca)))
                    .filter_map(|ca| CertificateDer::from_pem_slice(ca.cert.as_bytes()).ok())
                    .filter_map(|der| webpki::anchor_from_trusted_cert(&der).map(|a| a.to_owned()).ok())
                    .collect::<Vec<_>>()
                    .into(),
            };
            Some(Chain {
                anchors,
                depth: usize::from(*depth),
            })
        }
    };
    let verifier = Arc::new(Verifier {
        chain,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let client = settings
        .client
        .as_ref()
        .and_then(|(id, _)| certs.get(id))
        .and_then(|c| {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(c.cert.as_bytes())
                .filter_map(Result::ok)
                .collect();
            let key = PrivateKeyDer::from_pem_slice(c.key.as_bytes()).ok()?;
            Some((chain, key))
        });
    match client {
        Some((chain, key)) => match builder.clone().with_client_auth_cert(chain, key) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(target: "kong", "unable to apply upstream client TLS certificate: {e}");
                builder.with_no_client_auth()
            }
        },
        None => builder.with_no_client_auth(),
    }
}

/// Checks an upstream's certificate: against `chain` when verification is on, otherwise not
/// at all. The handshake's signatures are checked either way, so the handshake is sound.
#[derive(Debug)]
struct Verifier {
    chain: Option<Chain>,
    provider: Arc<CryptoProvider>,
}

/// What a verified certificate must chain to: one of `anchors`, through at most `depth`
/// intermediate certificates; and it must be valid for the server name.
#[derive(Debug)]
struct Chain {
    anchors: Anchors,
    depth: usize,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        let depth = chain.depth;
        let within_depth = |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() > depth {
                Err(webpki::Error::MaximumPathDepthExceeded)
            } else {
                Ok(())
            }
        };
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &chain.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            Some(&within_depth),
        )
        .map_err(pki_error)?;
        cert.verify_is_valid_for_subject_name(server_name).map_err(pki_error)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn pki_error(e: webpki::Error) -> rustls::Error {
    use rustls::CertificateError as C;
    rustls::Error::InvalidCertificate(match e {
        webpki::Error::UnknownIssuer => C::UnknownIssuer,
        webpki::Error::CertExpired { .. } => C::Expired,
        webpki::Error::CertNotValidYet { .. } => C::NotValidYet,
        webpki::Error::CertNotValidForName(_) => C::NotValidForName,
        webpki::Error::InvalidSignatureForPublicKey => C::BadSignature,
        e => C::Other(rustls::OtherError(Arc::new(e))),
    })
}
