//! TLS termination with rustls: the certificate for a handshake is chosen by Kong's SNI rules
//! from the snapshot's certificate and SNI entities, falling back to the listener's default
//! certificate; ALPN offers `h2` and `http/1.1`.
//!
//! Selection order for a server name (Kong's `kong/runloop/certificate.lua`): the exact name,
//! then the leftmost label replaced by `*` (`*.example.com`, names of three labels or more),
//! then the rightmost label replaced by `*` (`www.example.*`), then the SNI named `*`, then
//! the default certificate. A handshake without a server name gets the default certificate.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::Snapshot;
use crate::entities::{Certificate, Sni};
use crate::transaction::{HandshakeRequests, TlsSession};

/// A certificate chain with its key, and optionally an alternative of the other key type:
/// the alternative is served to clients that cannot verify the primary's signatures.
#[derive(Debug, Clone)]
pub struct CertificatePair {
    primary: Arc<CertifiedKey>,
    alt: Option<Arc<CertifiedKey>>,
}

impl CertificatePair {
    /// Loads a PEM chain and key; errors carry Kong's messages.
    ///
    /// ```
    /// use kong_pdk::gateway::tls::CertificatePair;
    /// let err = CertificatePair::from_pem("not a certificate", "nor a key", None).unwrap_err();
    /// assert_eq!(err.0, "cert");
    /// ```
    pub fn from_pem(
        cert: &str,
        key: &str,
        alt: Option<(&str, &str)>,
    ) -> Result<CertificatePair, (&'static str, String)> {
        let primary = certified_key(cert, key, "cert", "key", "certificate does not match key")?;
        let alt = match alt {
            None => None,
            Some((cert, key)) => {
                let alt = certified_key(
                    cert,
                    key,
                    "cert_alt",
                    "key_alt",
                    "alternative certificate does not match key",
                )?;
                if alt.key.algorithm() == primary.key.algorithm() {
                    return Err((
                        "@entity",
                        "certificate and alternative certificate need to have different type (e.g. RSA and ECDSA), the provided certificates were both of the same type".into(),
                    ));
                }
                Some(alt)
            }
        };
        Ok(CertificatePair { primary, alt })
    }

    /// A self-signed ECDSA P-256 certificate for `names` (Kong's generated default).
    pub fn self_signed(names: &[&str]) -> Result<(CertificatePair, String, String), String> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
        let cert = generated.cert.pem();
        let key = generated.key_pair.serialize_pem();
        let pair = CertificatePair::from_pem(&cert, &key, None).map_err(|(_, e)| e)?;
        Ok((pair, cert, key))
    }

    /// Kong's default certificate: `<dir>/kong-default.crt` and `.key`, generated (self-signed,
    /// for `localhost`) on first use and kept for later starts.
    pub fn default_in(dir: &Path) -> Result<CertificatePair, String> {
        let (crt, key) = (dir.join("kong-default.crt"), dir.join("kong-default.key"));
        if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
            return CertificatePair::from_pem(&c, &k, None).map_err(|(f, e)| format!("{}: {f}: {e}", crt.display()));
        }
        let (pair, c, k) = CertificatePair::self_signed(&["localhost"])?;
        std::fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        std::fs::write(&crt, c).map_err(|e| format!("could not write {}: {e}", crt.display()))?;
        std::fs::write(&key, k).map_err(|e| format!("could not write {}: {e}", key.display()))?;
        Ok(pair)
    }

    /// A TLS server configuration serving this pair (for test servers and mock upstreams).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        #[derive(Debug)]
        struct One(Arc<CertifiedKey>);
        impl rustls::server::ResolvesServerCert for One {
            fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
                Some(self.0.clone())
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(One(self.primary.clone())));
        Ok(Arc::new(config))
    }

    fn choose(&self, hello: &ClientHello<'_>) -> Arc<CertifiedKey> {
        match &self.alt {
            Some(alt) if self.primary.key.choose_scheme(hello.signature_schemes()).is_none() => alt.clone(),
            _ => self.primary.clone(),
        }
    }
}

fn certified_key(
    cert: &str,
    key: &str,
    cert_field: &'static str,
    key_field: &'static str,
    mismatch: &str,
) -> Result<Arc<CertifiedKey>, (&'static str, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| (cert_field, format!("invalid certificate: {e}")))?;
    if chain.is_empty() {
        return Err((cert_field, "invalid certificate: no certificate found".into()));
    }
    let der = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| (key_field, format!("invalid key: {e}")))?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| (key_field, format!("invalid key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(("@entity", mismatch.to_owned())),
        Err(e) => Err((cert_field, format!("invalid certificate: {e}"))),
    }
}

/// The certificates of a snapshot, by server name.
#[derive(Debug, Clone, Default)]
pub struct Certificates {
    names: HashMap<String, Arc<CertificatePair>>,
}

impl Certificates {
    /// Indexes `certificates` by the names of `snis`. Errors name the entity path and field.
    pub fn new(certificates: &[Certificate], snis: &[Sni]) -> Result<Certificates, (String, String)> {
        let mut by_id = HashMap::new();
        for (i, c) in certificates.iter().enumerate() {
            // `cert`, `key` and their alternates are referenceable: resolved here.
            let resolve = |field: &str, text: &str| -> Result<String, (String, String)> {
                if !crate::vault::Vault.is_reference(text) {
                    return Ok(text.to_owned());
                }
                crate::vault::Vault
                    .get(text)
                    .map_err(|e| (format!("certificates.{}.{field}", i + 1), e))
            };
            let (cert, key) = (resolve("cert", &c.cert)?, resolve("key", &c.key)?);
            let alt = match (c.cert_alt.as_deref(), c.key_alt.as_deref()) {
                (Some(ca), Some(ka)) => Some((resolve("cert_alt", ca)?, resolve("key_alt", ka)?)),
                _ => None,
            };
            let alt = alt.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
            let pair = CertificatePair::from_pem(&cert, &key, alt)
                .map_err(|(field, msg)| (format!("certificates.{}.{field}", i + 1), msg))?;
            by_id.insert(c.id, Arc::new(pair));
        }
        let mut names = HashMap::new();
        for (i, sni) in snis.iter().enumerate() {
            let pair = by_id.get(&sni.certificate.id).ok_or_else(|| {
                (
                    format!("snis.{}.certificate", i + 1),
                    format!(
                        "the foreign key '{{id=\"{}\"}}' does not reference an existing 'certificates' entity.",
                        sni.certificate.id
                    ),
                )
            })?;
            let name = sni.name.to_ascii_lowercase();
            if names.insert(name.clone(), pair.clone()).is_some() {
                return Err((
                    format!("snis.{}.name", i + 1),
                    format!("UNIQUE violation detected on '{{name=\"{name}\"}}'"),
                ));
            }
        }
        Ok(Certificates { names })
    }

    /// Whether no SNI is configured.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The certificate for `server_name` by Kong's order, or `None` for the default.
    pub fn lookup(&self, server_name: &str) -> Option<&Arc<CertificatePair>> {
        let name = server_name.to_ascii_lowercase();
        if let Some(pair) = self.names.get(&name) {
            return Some(pair);
        }
        if name.matches('.').count() >= 2
            && let Some((_, rest)) = name.split_once('.')
            && let Some(pair) = self.names.get(&format!("*.{rest}"))
        {
            return Some(pair);
        }
        if let Some((head, _)) = name.rsplit_once('.')
            && let Some(pair) = self.names.get(&format!("{head}.*"))
        {
            return Some(pair);
        }
        self.names.get("*")
    }
}

/// Chooses the certificate for each handshake from the current snapshot.
pub(super) struct Resolver {
    pub(super) snapshots: Arc<ArcSwap<Snapshot>>,
    pub(super) default: CertificatePair,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            tracing::debug!(target: "kong", "no SNI provided by client, serving default SSL certificate");
            return Some(self.default.choose(&hello));
        };
        let snapshot = self.snapshots.load();
        let pair = snapshot.certificates.lookup(name).map_or(&self.default, |p| &**p);
        Some(pair.choose(&hello))
    }
}

/// ALPN with HTTP/2 on: h2 first, as nginx prefers it.
const H2: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN with HTTP/2 off.
const HTTP1: &[&[u8]] = &[b"http/1.1"];

/// The server configurations of a TLS listener, one for each combination of what the
/// `certificate` phase may ask (`kong.client.tls`): certificates from the resolver, ALPN h2 and
/// http/1.1 (or http/1.1 alone where HTTP/2 is off).
pub(super) struct ServerConfigs {
    /// By [`ServerConfigs::index`].
    by_request: [Arc<rustls::ServerConfig>; 4],
    /// The same, offering http/1.1 alone: no `proxy_listen` entry has the `http2` flag.
    http1_only: [Arc<rustls::ServerConfig>; 4],
    /// The same for TLS streams: no ALPN (the bytes inside are the client's own protocol).
    streams: [Arc<rustls::ServerConfig>; 4],
}

impl ServerConfigs {
    pub(super) fn new(resolver: Resolver) -> ServerConfigs {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = Arc::new(resolver);
        let config = |client_certificate: bool, no_session_reuse: bool, alpn: &[&[u8]]| {
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions");
            let mut config = if client_certificate {
                builder.with_client_cert_verifier(Arc::new(AnyClientCertificate(provider.clone())))
            } else {
                builder.with_no_client_auth()
            }
            .with_cert_resolver(resolver.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            if no_session_reuse {
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.send_tls13_tickets = 0;
            }
            Arc::new(config)
        };
        // The four combinations of what the certificate phase may ask, in `index` order.
        let set = |alpn: &[&[u8]]| {
            [
                config(false, false, alpn),
                config(true, false, alpn),
                config(false, true, alpn),
                config(true, true, alpn),
            ]
        };
        ServerConfigs {
            by_request: set(H2),
            http1_only: set(HTTP1),
            streams: set(&[]),
        }
    }

    /// Where the configuration for `asked` sits in each set.
    fn index(asked: HandshakeRequests) -> usize {
        usize::from(asked.client_certificate) | usize::from(asked.no_session_reuse) << 1
    }

    /// [`ServerConfigs::get`] for a TLS stream.
    pub(super) fn get_stream(&self, asked: HandshakeRequests) -> Arc<rustls::ServerConfig> {
        self.streams[Self::index(asked)].clone()
    }

    /// The configuration that does what the `certificate` phase asked, offering h2 by ALPN
    /// when `http2` is on.
    pub(super) fn get(&self, asked: HandshakeRequests, http2: bool) -> Arc<rustls::ServerConfig> {
        let configs = if http2 { &self.by_request } else { &self.http1_only };
        configs[Self::index(asked)].clone()
    }
}

/// Asks for a client certificate without requiring it and takes whatever comes, as Kong's
/// `request_client_certificate()` does (verify depth 0, result ignored): the plugin that asked
/// checks the chain. The handshake's signatures are still verified, so the client does hold
/// the certificate's key.
#[derive(Debug)]
struct AnyClientCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for AnyClientCertificate {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a finished handshake settled: version and cipher by nginx's names, and the client's
/// certificate chain as PEM.
pub(super) fn session_of(conn: &rustls::ServerConnection) -> TlsSession {
    use rustls::CipherSuite as C;
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        _ => "",
    };
    let cipher = match conn.negotiated_cipher_suite().map(|s| s.suite()) {
        Some(C::TLS13_AES_128_GCM_SHA256) => "TLS_AES_128_GCM_SHA256",
        Some(C::TLS13_AES_256_GCM_SHA384) => "TLS_AES_256_GCM_SHA384",
        Some(C::TLS13_CHACHA20_POLY1305_SHA256) => "TLS_CHACHA20_POLY1305_SHA256",
        Some(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) => "ECDHE-ECDSA-AES128-GCM-SHA256",
        Some(C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384) => "ECDHE-ECDSA-AES256-GCM-SHA384",
        Some(C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256) => "ECDHE-ECDSA-CHACHA20-POLY1305",
        Some(C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) => "ECDHE-RSA-AES128-GCM-SHA256",
        Some(C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) => "ECDHE-RSA-AES256-GCM-SHA384",
        Some(C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256) => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => "",
    };
    let client_chain = conn.peer_certificates().filter(|c| !c.is_empty()).map(|chain| {
        use base64::Engine;
        let mut pem = String::new();
        for cert in chain {
            let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        Arc::from(pem)
    });
    TlsSession {
        version,
        cipher,
        client_chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::ForeignKey;
    use uuid::Uuid;

    fn cert(n: u128, names: &[&str]) -> Certificate {
        let (_, cert, key) = CertificatePair::self_signed(names).unwrap();
        Certificate {
            id: Uuid::from_u128(n),
            cert,
            key,
            cert_alt: None,
            key_alt: None,
            tags: None,
        }
    }

    fn sni(name: &str, cert: u128) -> Sni {
        Sni {
            id: Uuid::new_v4(),
            name: name.into(),
            certificate: ForeignKey {
                id: Uuid::from_u128(cert),
            },
            tags: None,
        }
    }

    #[test]
    fn sni_selection_follows_kongs_order() {
        let certs: Vec<Certificate> = (1..=5).map(|n| cert(n, &["x"])).collect();
        let snis = [
            sni("wildcard.org", 1),
            sni("wildcard.*", 2),
            sni("*.wildcard.com", 3),
            sni("test.wildcard.*", 4),
            sni("*", 5),
        ];
        let set = Certificates::new(&certs, &snis).unwrap();
        let which = |name: &str| -> String {
            let found = set.lookup(name).unwrap();
            set.names.iter().find(|(_, p)| Arc::ptr_eq(p, found)).unwrap().0.clone()
        };
        assert_eq!(which("wildcard.org"), "wildcard.org");
        assert_eq!(which("WILDCARD.org"), "wildcard.org");
        assert_eq!(which("wildcard.net"), "wildcard.*");
        assert_eq!(which("test.wildcard.com"), "*.wildcard.com");
        assert_eq!(which("test.wildcard.org"), "test.wildcard.*");
        assert_eq!(which("other.example"), "*");
        // `*.wildcard.com` covers exactly one label.
        assert_eq!(which("a.test.wildcard.com"), "*");
        let without_catch_all = Certificates::new(&certs, &snis[..4]).unwrap();
        assert!(without_catch_all.lookup("other.example").is_none());
    }

    #[test]
    fn entity_errors_carry_kongs_messages() {
        let a = cert(1, &["a"]);
        let b = cert(2, &["b"]);
        let mismatched = Certificate {
            key: b.key.clone(),
            ..a.clone()
        };
        let err = Certificates::new(&[mismatched], &[]).unwrap_err();
        assert_eq!(
            err,
            ("certificates.1.@entity".into(), "certificate does not match key".into())
        );
        let same_type = Certificate {
            cert_alt: Some(b.cert.clone()),
            key_alt: Some(b.key.clone()),
            ..a.clone()
        };
        let err = Certificates::new(&[same_type], &[]).unwrap_err();
        assert!(
            err.1
                .starts_with("certificate and alternative certificate need to have different type"),
            "{err:?}"
        );
        let err = Certificates::new(&[a], &[sni("x.com", 9)]).unwrap_err();
        assert_eq!(err.0, "snis.1.certificate");
    }
}
