//! `hmac-auth` (Kong's `kong/plugins/hmac-auth`): clients sign chosen request headers (and the
//! request line or target) with a shared secret; the signature travels in `Authorization` or
//! `Proxy-Authorization` as `hmac username="...", algorithm="...", headers="...",
//! signature="..."`. Secrets are `hmacauth_credentials` of consumers
//! (`/consumers/{consumer}/hmac-auth`, `/hmac-auths`).

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use kong_pdk::dao::Dao;
use kong_pdk::prelude::*;
use regex::Regex;

use crate::auth::{AuthPhase, already_authenticated, or_anonymous};

/// The plugin's configuration (Kong's `hmac-auth/schema.lua`).
#[plugin(priority = 1030, version = "3.10.0", name = "hmac-auth", protocols = protocols_http, no_consumer)]
pub struct HmacAuth {
    /// Remove the credentials from the request before it goes upstream.
    #[field(required, default = false)]
    pub hide_credentials: bool,
    /// How far the request's `Date` or `X-Date` may be from now, in seconds.
    #[field(default = 300, gt = 0)]
    pub clock_skew: Option<f64>,
    /// A consumer (id or username) to use when authentication fails, instead of failing.
    pub anonymous: Option<String>,
    /// Check the body against the `Digest` header (`SHA-256=<base64>`).
    #[field(required, default = false)]
    pub validate_request_body: bool,
    /// Headers every signature must cover.
    #[field(default = [])]
    pub enforce_headers: Option<Vec<String>>,
    /// The algorithms accepted.
    #[field(
        default = ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"],
        elements(one_of = ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"])
    )]
    pub algorithms: Option<Vec<String>>,
    /// The realm of the `WWW-Authenticate` header.
    pub realm: Option<String>,
}

/// A consumer's username and secret (Kong's `hmacauth_credentials`).
#[record]
#[derive(Dao)]
#[dao(
    name = "hmacauth_credentials",
    plugin = "hmac-auth",
    admin_api_name = "hmac-auths",
    admin_api_nested_name = "hmac-auth",
    endpoint_key = "username",
    cache_key = "username",
    unique = ["username"],
    auto = ["secret"]
)]
pub struct HmacCredential {
    /// The username, unique.
    pub username: String,
    /// The shared secret; a random one is generated when none is given.
    pub secret: String,
}

const SIGNATURE_NOT_VALID: &str = "HMAC signature cannot be verified";
const SIGNATURE_NOT_SAME: &str = "HMAC signature does not match";

/// Kong's pattern for the credential header.
static FIELDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\s*[Hh]mac\s*username="(.+)",\s*algorithm="(.+)",\s*headers="(.+)",\s*signature="(.+)""#)
        .expect("a valid pattern")
});

/// What a credential header says.
struct Signed {
    username: String,
    algorithm: String,
    headers: Vec<String>,
    signature: String,
}

fn signed(header: Option<&str>) -> Option<Signed> {
    let m = FIELDS.captures(header?)?;
    Some(Signed {
        username: m[1].to_owned(),
        algorithm: m[2].to_owned(),
        headers: m[3].split(' ').map(str::to_owned).collect(),
        signature: m[4].to_owned(),
    })
}

/// Whether the `Date`-like header `name` is within `skew` seconds of now.
fn fresh<P: AuthPhase>(kong: &mut Kong<'_, P>, name: &str, skew: f64) -> bool {
    let Some(date) = kong
        .request()
        .get_header(name)
        .and_then(|d| httpdate::parse_http_date(d).ok())
    else {
        return false;
    };
    let now = SystemTime::now();
    let apart = now
        .duration_since(date)
        .or_else(|_| date.duration_since(now))
        .unwrap_or(Duration::MAX);
    apart.as_secs_f64() <= skew
}

/// Whether `signature` is `algorithm` of `data` with `secret` (compared in constant time).
fn verify(algorithm: &str, secret: &str, data: &str, signature: &[u8]) -> bool {
    use ring::hmac;
    let algorithm = match algorithm {
        "hmac-sha1" => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "hmac-sha256" => hmac::HMAC_SHA256,
        "hmac-sha384" => hmac::HMAC_SHA384,
        "hmac-sha512" => hmac::HMAC_SHA512,
        _ => return false,
    };
    hmac::verify(
        &hmac::Key::new(algorithm, secret.as_bytes()),
        data.as_bytes(),
        signature,
    )
    .is_ok()
}

/// Kong's signing string: each signed header as `name: value` (or `name:` when absent),
/// `@request-target` as `method path`, `request-line` as the request line, one per line.
fn signing_string<P: AuthPhase>(kong: &mut Kong<'_, P>, headers: &[String]) -> String {
    let request = kong.request();
    let target = request.get_path_with_query();
    let lines: Vec<String> = headers
        .iter()
        .map(|h| match (request.get_header(h), h.as_str()) {
            (Some(value), _) => format!("{h}: {value}"),
            (None, "@request-target") => format!("{h}: {} {target}", request.get_method().to_ascii_lowercase()),
            (None, "request-line") => {
                format!(
                    "{} {target} HTTP/{:.1}",
                    request.get_method(),
                    request.get_http_version()
                )
            }
            (None, _) => format!("{h}:"),
        })
        .collect();
    lines.join("\n")
}

#[handler]
impl Handler for HmacAuth {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        if already_authenticated(kong, self.anonymous.as_deref()) {
            return Ok(());
        }
        match self.authenticate(kong).await? {
            Ok(()) => Ok(()),
            Err(failure) => or_anonymous(kong, self.anonymous.as_deref(), failure),
        }
    }
}

impl HmacAuth {
    /// Checks the signature and sets the consumer; the answer for the client when that fails.
    async fn authenticate(&self, kong: &mut Kong<'_, Access>) -> kong_pdk::Result<Result<(), Exit>> {
        let www = match &self.realm {
            Some(realm) => format!("hmac realm=\"{realm}\""),
            None => "hmac".to_owned(),
        };
        let unauthorized = |message: &str| Exit::error(401, message).header("WWW-Authenticate", www.clone());
        let request = kong.request();
        let authorization = request.get_header("authorization").map(str::to_owned);
        let proxy_authorization = request.get_header("proxy-authorization").map(str::to_owned);
        if authorization.is_none() && proxy_authorization.is_none() {
            return Ok(Err(unauthorized("Unauthorized")));
        }
        let skew = self.clock_skew.unwrap_or(300.0);
        if !(fresh(kong, "x-date", skew) || fresh(kong, "date", skew)) {
            return Ok(Err(unauthorized(
                "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication",
            )));
        }
        let params = match signed(proxy_authorization.as_deref()) {
            Some(p) => {
                if self.hide_credentials {
                    kong.service().request().clear_header("Proxy-Authorization")?;
                }
                Some(p)
            }
            None => {
                let p = signed(authorization.as_deref());
                if self.hide_credentials {
                    kong.service().request().clear_header("Authorization")?;
                }
                p
            }
        };
        let Some(params) = params.filter(|p| self.acceptable(p)) else {
            return Ok(Err(unauthorized(SIGNATURE_NOT_VALID)));
        };
        let Some(credential) = kong
            .db()
            .cached_by_cache_key::<HmacCredential>(&kong.cache(), &params.username)
        else {
            return Ok(Err(unauthorized(SIGNATURE_NOT_VALID)));
        };
        let data = signing_string(kong, &params.headers);
        let matches = base64::engine::general_purpose::STANDARD
            .decode(&params.signature)
            .is_ok_and(|given| verify(&params.algorithm, &credential.value.secret, &data, &given));
        if !matches || (self.validate_request_body && !self.body_matches(kong).await) {
            return Ok(Err(unauthorized(SIGNATURE_NOT_SAME)));
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

    /// Kong's `validate_params`: enforced headers signed, algorithm accepted.
    fn acceptable(&self, p: &Signed) -> bool {
        let enforced = self.enforce_headers.as_deref().unwrap_or_default();
        let algorithms = self.algorithms.as_deref().unwrap_or_default();
        enforced.iter().all(|h| p.headers.contains(h)) && algorithms.contains(&p.algorithm)
    }

    /// Whether the body is what `Digest: SHA-256=<base64>` says (no digest: no body).
    async fn body_matches(&self, kong: &mut Kong<'_, Access>) -> bool {
        let digest = kong.request().get_header("digest").map(str::to_owned);
        let Ok(body) = kong.request().get_raw_body().await else {
            return false;
        };
        match digest {
            None => body.is_empty(),
            Some(d) => {
                let sum = ring::digest::digest(&ring::digest::SHA256, &body);
                d == format!(
                    "SHA-256={}",
                    base64::engine::general_purpose::STANDARD.encode(sum.as_ref())
                )
            }
        }
    }
}
