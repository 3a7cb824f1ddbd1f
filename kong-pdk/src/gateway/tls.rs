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
            let alt = c.cert_alt.as_deref().zip(c.key_alt.as_deref());
            let pair = CertificatePair::from_pem(&c.cert, &c.key, alt)
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
        if name.matches('.').count() >= 2 {
            if let Some((_, rest)) = name.split_once('.') {
                if let Some(pair) = self.names.get(&format!("*.{rest}")) {
                    return Some(pair);
                }
            }
        }
        if let Some((head, _)) = name.rsplit_once('.') {
            if let Some(pair) = self.names.get(&format!("{head}.*")) {
                return Some(pair);
            }
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

/// The server configuration of a TLS listener: certificates from `resolver`, ALPN h2 and
/// http/1.1.
pub(super) fn server_config(resolver: Resolver) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
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
