//! `basic-auth` (Kong's `kong/plugins/basic-auth`): clients prove who they are with HTTP Basic
//! credentials in `Proxy-Authorization` or `Authorization`; credentials are
//! `basicauth_credentials` of consumers (`/consumers/{consumer}/basic-auth`, `/basic-auths`),
//! whose passwords are stored hashed with their consumer's id, as Kong stores them.

use base64::Engine as _;
use kong_pdk::dao::Dao;
use kong_pdk::prelude::*;
use serde_json::{Map, Value};

use crate::auth::{AuthPhase, already_authenticated, or_anonymous};

/// The plugin's configuration (Kong's `basic-auth/schema.lua`).
#[plugin(priority = 1100, version = "3.10.0", name = "basic-auth", protocols = protocols_http_ws, no_consumer)]
pub struct BasicAuth {
    /// A consumer (id or username) to use when authentication fails, instead of failing.
    pub anonymous: Option<String>,
    /// Remove the credentials from the request before it goes upstream.
    #[field(required, default = false)]
    pub hide_credentials: bool,
    /// The realm of the `WWW-Authenticate` header.
    #[field(required, default = "service")]
    pub realm: String,
}

/// A consumer's username and password (Kong's `basicauth_credentials`).
#[record]
#[derive(Dao)]
#[dao(
    name = "basicauth_credentials",
    plugin = "basic-auth",
    admin_api_name = "basic-auths",
    admin_api_nested_name = "basic-auth",
    endpoint_key = "username",
    cache_key = "username",
    unique = ["username"],
    transform = hash_password
)]
pub struct BasicAuthCredential {
    /// The username, unique.
    pub username: String,
    /// The password as stored: Kong's hash of the password given with the consumer's id.
    pub password: String,
}

/// Kong's password hash: SHA-1, in lowercase hex, of the password then the consumer's id.
pub fn hash(consumer_id: &str, password: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(password.as_bytes());
    sha.update(consumer_id.as_bytes());
    sha.digest().to_string()
}

/// The write-time transformation: a new or changed password is stored hashed; an update
/// that moves the credential to another consumer must give the password again.
fn hash_password(entity: &mut Map<String, Value>, previous: Option<&Value>) -> Result<(), String> {
    let consumer = entity
        .get("consumer")
        .and_then(|c| c["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let unchanged = previous.is_some_and(|p| entity.get("password") == p.get("password"));
    if unchanged {
        let moved = previous.is_some_and(|p| p["consumer"]["id"].as_str() != Some(consumer.as_str()));
        if moved {
            return Err("all or none of these fields must be set: 'password', 'consumer.id'".into());
        }
        return Ok(());
    }
    if let Some(Value::String(password)) = entity.get("password") {
        let hashed = hash(&consumer, password);
        entity.insert("password".into(), Value::String(hashed));
    }
    Ok(())
}

/// The username and password of a `Basic` credential header (Kong's patterns
/// `\s*[Bb]asic\s*(.+)` and `([^:]+):(.*)`, unanchored).
fn credentials(header: &str) -> Option<(String, String)> {
    let at = ["Basic", "basic"].iter().filter_map(|b| header.find(b)).min()?;
    let encoded = header[at + 5..].trim_start();
    if encoded.is_empty() {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let decoded = decoded.trim_start_matches(':');
    let (username, password) = decoded.split_once(':')?;
    Some((username.to_owned(), password.to_owned()))
}

#[handler]
impl Handler for BasicAuth {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        self.run(kong)
    }

    /// WebSocket services authenticate the handshake, as Kong Enterprise's basic-auth does.
    async fn ws_handshake(&self, kong: &mut Kong<WsHandshake>) -> kong_pdk::Result {
        self.run(kong)
    }
}

impl BasicAuth {
    fn run<P: AuthPhase>(&self, kong: &mut Kong<'_, P>) -> kong_pdk::Result {
        if already_authenticated(kong, self.anonymous.as_deref()) {
            return Ok(());
        }
        match self.authenticate(kong)? {
            Ok(()) => Ok(()),
            Err(failure) => or_anonymous(kong, self.anonymous.as_deref(), failure),
        }
    }

    /// Finds the credentials, checks them and sets the consumer; the answer for the client
    /// when that fails.
    fn authenticate<P: AuthPhase>(&self, kong: &mut Kong<'_, P>) -> kong_pdk::Result<Result<(), Exit>> {
        let unauthorized =
            || Exit::error(401, "Unauthorized").header("WWW-Authenticate", format!("Basic realm=\"{}\"", self.realm));
        let header = |kong: &mut Kong<'_, P>, name: &str| kong.request().get_header(name).map(str::to_owned);
        let (proxy, plain) = (header(kong, "proxy-authorization"), header(kong, "authorization"));
        if proxy.is_none() && plain.is_none() {
            return Ok(Err(unauthorized()));
        }
        let lookup = |kong: &mut Kong<'_, P>, (username, password): (String, String)| {
            let credential = kong
                .db()
                .cached_by_cache_key::<BasicAuthCredential>(&kong.cache(), &username);
            (credential, password)
        };
        // Proxy-Authorization first; Authorization when that names no credential.
        let given = proxy.as_deref().and_then(credentials);
        if self.hide_credentials {
            kong.service().request().clear_header("Proxy-Authorization")?;
        }
        let mut found = given.map(|g| lookup(kong, g));
        if !matches!(found, Some((Some(_), _))) {
            let given = plain.as_deref().and_then(credentials);
            if self.hide_credentials {
                kong.service().request().clear_header("Authorization")?;
            }
            let Some(given) = given else {
                return Ok(Err(unauthorized()));
            };
            found = Some(lookup(kong, given));
        }
        let Some((Some(credential), password)) = found else {
            return Ok(Err(unauthorized()));
        };
        if hash(&credential.consumer.to_string(), &password) != credential.value.password {
            return Ok(Err(unauthorized()));
        }
        let Some(consumer) = kong.db().cached_consumer(&kong.cache(), credential.consumer) else {
            return Ok(Err(Exit::error(500, "An unexpected error occurred")));
        };
        kong.client().set_consumer(consumer, Some(credential.credential()))?;
        kong.service()
            .request()
            .set_header("X-Credential-Identifier", &credential.value.username)?;
        Ok(Ok(()))
    }
}
