//! The core entities a plugin sees through the PDK: the matched [`Route`] and [`Service`], the
//! authenticated [`Consumer`] and its [`Credential`]. Field names and JSON shapes are Kong's.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

mod upstream;
pub use upstream::{
    ActiveChecks, Algorithm, CheckType, HashOn, Healthchecks, Healthy, PassiveChecks, Unhealthy, Upstream,
};

/// A reference to another entity by primary key: `{"id": "..."}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ForeignKey {
    /// The referenced entity's id.
    pub id: Uuid,
}

/// An upstream service (`/services`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Primary key.
    pub id: Uuid,
    /// Unique name.
    #[serde(default)]
    pub name: Option<String>,
    /// `http`, `https`, `grpc`, `grpcs`, `tcp`, `tls`, `udp`, `ws`, `wss`.
    #[serde(default = "Service::default_protocol")]
    pub protocol: String,
    /// Upstream host.
    pub host: String,
    /// Upstream port.
    #[serde(default = "Service::default_port")]
    pub port: u16,
    /// Path prefix sent upstream.
    #[serde(default)]
    pub path: Option<String>,
    /// Retries on connection failure.
    #[serde(default = "Service::default_retries")]
    pub retries: u32,
    /// Connect timeout, ms.
    #[serde(default = "Service::default_timeout")]
    pub connect_timeout: u64,
    /// Write timeout, ms.
    #[serde(default = "Service::default_timeout")]
    pub write_timeout: u64,
    /// Read timeout, ms.
    #[serde(default = "Service::default_timeout")]
    pub read_timeout: u64,
    /// The certificate (a [`Certificate`] entity) presented to an `https` upstream that asks
    /// for one.
    #[serde(default)]
    pub client_certificate: Option<ForeignKey>,
    /// Whether an `https` upstream's certificate is verified; `None` keeps the gateway's
    /// default, which is off (nginx's `proxy_ssl_verify off`).
    #[serde(default)]
    pub tls_verify: Option<bool>,
    /// How many intermediate CA certificates a verified chain may have (0..=64); `None` is
    /// nginx's default, 1.
    #[serde(default)]
    pub tls_verify_depth: Option<u8>,
    /// The CA certificates ([`CaCertificate`] ids) trusted when verifying; `None` trusts the
    /// gateway's store (`lua_ssl_trusted_certificate`).
    #[serde(default)]
    pub ca_certificates: Option<Vec<Uuid>>,
    /// Whether the service takes traffic.
    #[serde(default = "Service::default_enabled")]
    pub enabled: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl Service {
    fn default_protocol() -> String {
        "http".into()
    }
    fn default_port() -> u16 {
        80
    }
    fn default_retries() -> u32 {
        5
    }
    fn default_timeout() -> u64 {
        60_000
    }
    fn default_enabled() -> bool {
        true
    }

    /// A service with Kong's defaults for `host`.
    pub fn new(host: impl Into<String>, port: u16) -> Service {
        Service {
            id: Uuid::new_v4(),
            name: None,
            protocol: Service::default_protocol(),
            host: host.into(),
            port,
            path: None,
            retries: 5,
            connect_timeout: 60_000,
            write_timeout: 60_000,
            read_timeout: 60_000,
            client_certificate: None,
            tls_verify: None,
            tls_verify_depth: None,
            ca_certificates: None,
            enabled: true,
            tags: None,
        }
    }
}

/// A stream route's `sources` or `destinations` entry: an address or CIDR range, a port, or
/// both (Kong's `typedefs.sources` record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CidrPort {
    /// An IP address or CIDR range.
    #[serde(default)]
    pub ip: Option<String>,
    /// A port.
    #[serde(default)]
    pub port: Option<u16>,
}

/// A route (`/routes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Primary key.
    pub id: Uuid,
    /// Unique name.
    #[serde(default)]
    pub name: Option<String>,
    /// Protocols the route accepts.
    #[serde(default = "Route::default_protocols")]
    pub protocols: Vec<String>,
    /// Methods matched.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Hosts matched.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Paths matched.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// Headers matched: name → accepted values (`~*` prefix: a regex).
    #[serde(default)]
    pub headers: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// TLS server names matched.
    #[serde(default)]
    pub snis: Option<Vec<String>>,
    /// Stream routes: client addresses matched (any entry).
    #[serde(default)]
    pub sources: Option<Vec<CidrPort>>,
    /// Stream routes: addresses the client connected to matched (any entry).
    #[serde(default)]
    pub destinations: Option<Vec<CidrPort>>,
    /// Strip the matched path prefix.
    #[serde(default = "Route::default_true")]
    pub strip_path: bool,
    /// Send the client's Host upstream.
    #[serde(default)]
    pub preserve_host: bool,
    /// Regex path priority.
    #[serde(default)]
    pub regex_priority: i64,
    /// Status for HTTP requests to HTTPS-only routes.
    #[serde(default = "Route::default_redirect")]
    pub https_redirect_status_code: u16,
    /// Read the whole request body before calling the upstream (nginx's
    /// `proxy_request_buffering`); `false` streams it as it arrives.
    #[serde(default = "Route::default_true")]
    pub request_buffering: bool,
    /// Read the upstream's response ahead of a slow client (nginx's `proxy_buffering`);
    /// `false` passes it on at the client's pace.
    #[serde(default = "Route::default_true")]
    pub response_buffering: bool,
    /// How the service path and the request path are joined: `v0` (Kong's default), or `v1`
    /// under `router_flavor = traditional` ([`RouterFlavor`](crate::pdk::RouterFlavor)).
    #[serde(default)]
    pub path_handling: PathHandling,
    /// The service it routes to.
    #[serde(default)]
    pub service: Option<ForeignKey>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// A route's `path_handling` (Kong's `kong/router/traditional.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathHandling {
    /// The service path and the rest of the request path are joined with one `/`.
    #[default]
    V0,
    /// Joined as strings (`/service` + `route` = `/serviceroute`); deprecated by Kong, and
    /// only in effect under `router_flavor = traditional`.
    V1,
}

impl Route {
    fn default_protocols() -> Vec<String> {
        vec!["http".into(), "https".into()]
    }
    fn default_true() -> bool {
        true
    }
    fn default_redirect() -> u16 {
        426
    }

    /// A route on `paths` with Kong's defaults.
    pub fn new(paths: &[&str]) -> Route {
        Route {
            id: Uuid::new_v4(),
            name: None,
            protocols: Route::default_protocols(),
            methods: None,
            hosts: None,
            paths: Some(paths.iter().map(|p| (*p).to_owned()).collect()),
            headers: None,
            snis: None,
            sources: None,
            destinations: None,
            strip_path: true,
            preserve_host: false,
            regex_priority: 0,
            https_redirect_status_code: 426,
            request_buffering: true,
            response_buffering: true,
            path_handling: PathHandling::V0,
            service: None,
            tags: None,
        }
    }
}

/// A consumer (`/consumers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consumer {
    /// Primary key.
    pub id: Uuid,
    /// Unique username.
    #[serde(default)]
    pub username: Option<String>,
    /// Unique custom id.
    #[serde(default)]
    pub custom_id: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl Consumer {
    /// A consumer with a username.
    pub fn new(username: impl Into<String>) -> Consumer {
        Consumer {
            id: Uuid::new_v4(),
            username: Some(username.into()),
            custom_id: None,
            tags: None,
        }
    }
}

/// A credential an auth plugin authenticated with (a key-auth key, a basic-auth pair, ...):
/// its id, its consumer and the plugin-specific fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    /// Primary key.
    pub id: Uuid,
    /// The consumer it belongs to.
    #[serde(default)]
    pub consumer: Option<ForeignKey>,
    /// Other fields, as stored.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, Value>,
}

/// A TLS certificate and its key (`/certificates`), served for the [`Sni`]s that reference it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// Primary key.
    pub id: Uuid,
    /// PEM certificate chain, end-entity certificate first.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// An alternative certificate of the other key type (RSA or ECDSA).
    #[serde(default)]
    pub cert_alt: Option<String>,
    /// The alternative certificate's key.
    #[serde(default)]
    pub key_alt: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// A trusted CA certificate (`/ca_certificates`), for verifying upstream certificates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaCertificate {
    /// Primary key.
    pub id: Uuid,
    /// One PEM certificate with the `CA` basic constraint.
    pub cert: String,
    /// SHA-256 of the certificate's DER, lowercase hex (unique).
    #[serde(default)]
    pub cert_digest: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// A server name (`/snis`): which [`Certificate`] a TLS handshake naming it gets. Names may
/// carry one wildcard, leftmost (`*.example.com`) or rightmost (`example.*`); `*` alone
/// catches every name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sni {
    /// Primary key.
    pub id: Uuid,
    /// The server name.
    pub name: String,
    /// The certificate served for it.
    pub certificate: ForeignKey,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// A target of an [`Upstream`] (`/upstreams/{u}/targets`): `host:port` and a weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Primary key.
    pub id: Uuid,
    /// The upstream it belongs to.
    pub upstream: ForeignKey,
    /// `host:port` (port 8000 when omitted).
    pub target: String,
    /// Relative weight; 0 takes the target out of rotation.
    #[serde(default = "Target::default_weight")]
    pub weight: u32,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl Target {
    fn default_weight() -> u32 {
        100
    }
}
