//! `jwt` (Kong's `kong/plugins/jwt`): clients present a JSON Web Token (query argument, cookie
//! or `Authorization: Bearer`); its key claim (`iss` by default) names a `jwt_secrets`
//! credential of a consumer (`/consumers/{consumer}/jwt`, `/jwts`) whose secret or public key
//! verifies it. HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 and EdDSA (Ed25519).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use kong_pdk::dao::Dao;
use kong_pdk::pdk::QueryValue;
use kong_pdk::prelude::*;
use serde_json::{Map, Value, json};

use crate::auth::{already_authenticated, or_anonymous};

/// The plugin's configuration (Kong's `jwt/schema.lua`).
#[plugin(priority = 1450, version = "3.10.0", name = "jwt", protocols = protocols_http, no_consumer)]
pub struct Jwt {
    /// Query arguments that may carry the token.
    #[field(default = ["jwt"])]
    pub uri_param_names: Option<Vec<String>>,
    /// Cookies that may carry the token.
    #[field(default = [])]
    pub cookie_names: Option<Vec<String>>,
    /// The claim (or header field) naming the credential's key.
    #[field(default = "iss")]
    pub key_claim_name: Option<String>,
    /// The credentials' secrets are base64: tokens are signed with the decoded bytes.
    #[field(required, default = false)]
    pub secret_is_base64: bool,
    /// Registered claims to check: `exp`, `nbf`.
    #[field(elements(one_of = ["exp", "nbf"]))]
    pub claims_to_verify: Option<Vec<String>>,
    /// A consumer (id or username) to use when authentication fails, instead of failing.
    pub anonymous: Option<String>,
    /// Authenticate CORS preflight (OPTIONS) requests too.
    #[field(required, default = true)]
    pub run_on_preflight: bool,
    /// The longest a token may still be valid, in seconds (0: no limit; needs `exp` checked).
    #[field(default = 0, between = (0, 31536000))]
    pub maximum_expiration: Option<f64>,
    /// Headers that may carry the token (`Bearer <token>`).
    #[field(default = ["authorization"])]
    pub header_names: Option<Vec<String>>,
    /// The realm of the `WWW-Authenticate` header.
    pub realm: Option<String>,
}

/// A consumer's key and secret or public key (Kong's `jwt_secrets`).
#[record]
#[derive(Dao)]
#[dao(
    name = "jwt_secrets",
    plugin = "jwt",
    admin_api_name = "jwts",
    admin_api_nested_name = "jwt",
    endpoint_key = "key",
    cache_key = "key",
    unique = ["key"],
    auto = ["key", "secret"],
    transform = check_key
)]
pub struct JwtSecret {
    /// What the token's key claim names; generated when not given.
    pub key: String,
    /// The HMAC secret; generated when not given.
    pub secret: String,
    /// The public key (PEM) of the asymmetric algorithms.
    pub rsa_public_key: Option<String>,
    /// The algorithm tokens must use.
    #[field(default = "HS256", one_of = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"])]
    pub algorithm: Option<String>,
}

/// The token a successful authentication used (Kong's `kong.ctx.shared.authenticated_jwt_token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedJwt(pub String);

fn asymmetric(algorithm: &str) -> bool {
    !algorithm.starts_with("HS")
}

/// Kong's check of a credential: the asymmetric algorithms need a public key that parses.
fn check_key(entity: &mut Map<String, Value>, _: Option<&Value>) -> Result<(), String> {
    let algorithm = entity.get("algorithm").and_then(Value::as_str).unwrap_or("HS256");
    if !asymmetric(algorithm) {
        return Ok(());
    }
    match entity.get("rsa_public_key").and_then(Value::as_str) {
        None => Err("rsa_public_key: required field missing".into()),
        Some(pem) if public_key(pem).is_none() => Err("rsa_public_key: invalid key".into()),
        Some(_) => Ok(()),
    }
}

/// One DER element: (tag, content, what follows).
fn der(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = d.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The key bytes of a PEM public key: the subject public key of `PUBLIC KEY` (what ring wants
/// for RSA, EC points and Ed25519), or a PKCS#1 `RSA PUBLIC KEY` as it is.
fn public_key(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(body).ok()?;
    if pem.contains("BEGIN RSA PUBLIC KEY") {
        return Some(bytes);
    }
    let (0x30, info, _) = der(&bytes)? else { return None };
    let (0x30, _algorithm, rest) = der(info)? else {
        return None;
    };
    let (0x03, bits, _) = der(rest)? else { return None };
    let (0, key) = bits.split_first()? else { return None };
    Some(key.to_vec())
}

/// Whether `signature` signs `data` with `algorithm` and `key` (a secret, or a public key).
fn verify(algorithm: &str, data: &[u8], signature: &[u8], key: &[u8]) -> bool {
    use ring::{hmac, signature as sig};
    let hmac_alg = match algorithm {
        "HS256" => Some(hmac::HMAC_SHA256),
        "HS384" => Some(hmac::HMAC_SHA384),
        "HS512" => Some(hmac::HMAC_SHA512),
        _ => None,
    };
    if let Some(alg) = hmac_alg {
        return hmac::verify(&hmac::Key::new(alg, key), data, signature).is_ok();
    }
    let alg: &dyn sig::VerificationAlgorithm = match algorithm {
        "RS256" => &sig::RSA_PKCS1_2048_8192_SHA256,
        "RS384" => &sig::RSA_PKCS1_2048_8192_SHA384,
        "RS512" => &sig::RSA_PKCS1_2048_8192_SHA512,
        "PS256" => &sig::RSA_PSS_2048_8192_SHA256,
        "PS384" => &sig::RSA_PSS_2048_8192_SHA384,
        "PS512" => &sig::RSA_PSS_2048_8192_SHA512,
        "ES256" => &sig::ECDSA_P256_SHA256_FIXED,
        "ES384" => &sig::ECDSA_P384_SHA384_FIXED,
        "EdDSA" => &sig::ED25519,
        "ES512" => return verify_es512(data, signature, key),
        _ => return false,
    };
    sig::UnparsedPublicKey::new(alg, key).verify(data, signature).is_ok()
}

/// ES512: ECDSA on P-521 with SHA-512, the signature as `r || s` (132 bytes) and the key as
/// a SEC1 point.
fn verify_es512(data: &[u8], signature: &[u8], key: &[u8]) -> bool {
    use p521::ecdsa::signature::Verifier;
    let (Ok(key), Ok(signature)) = (
        p521::ecdsa::VerifyingKey::from_sec1_bytes(key),
        p521::ecdsa::Signature::from_slice(signature),
    ) else {
        return false;
    };
    key.verify(data, &signature).is_ok()
}

/// Kong's base64 of JWTs: URL-safe, padding optional.
fn b64(input: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(input.trim_end_matches('='))
        .ok()
}

/// A decoded token.
struct Token<'a> {
    signed: &'a str,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signature: Vec<u8>,
}

const ALGORITHMS: [&str; 13] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA",
];

fn decode(token: &str) -> Result<Token<'_>, &'static str> {
    let mut parts = token.splitn(3, '.');
    let (header, claims, signature) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
    let json = |s: &str| b64(s).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(Value::Object(h)), Some(c)) = (json(header), json(claims)) else {
        return Err("invalid JSON");
    };
    if !h
        .get("alg")
        .and_then(Value::as_str)
        .is_some_and(|a| ALGORITHMS.contains(&a))
    {
        return Err("invalid alg");
    }
    let Value::Object(claims_map) = c else {
        return Err("invalid claims");
    };
    let signature = signature.and_then(b64).ok_or("invalid signature")?;
    let signed = &token[..header.len() + 1 + claims.len()];
    Ok(Token {
        signed,
        header: h,
        claims: claims_map,
        signature,
    })
}

#[handler]
impl Handler for Jwt {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        if !self.run_on_preflight && kong.request().get_method() == "OPTIONS" {
            return Ok(());
        }
        if already_authenticated(kong, self.anonymous.as_deref()) {
            return Ok(());
        }
        match self.authenticate(kong)? {
            Ok(()) => Ok(()),
            Err(failure) => or_anonymous(kong, self.anonymous.as_deref(), failure),
        }
    }
}

impl Jwt {
    /// The tokens the request carries, without repeats.
    fn tokens(&self, kong: &mut Kong<'_, Access>) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut add = |t: &str| {
            if !t.is_empty() && !found.iter().any(|f| f == t) {
                found.push(t.to_owned());
            }
        };
        let request = kong.request();
        let query = request.get_query(100);
        for name in self.uri_param_names.as_deref().unwrap_or_default() {
            match query.get(name) {
                Some(QueryValue::Value(v)) => add(v),
                Some(QueryValue::List(all)) => all.iter().filter_map(QueryValue::as_str).for_each(&mut add),
                _ => {}
            }
        }
        let cookies = request.get_header("cookie").unwrap_or_default().to_owned();
        for name in self.cookie_names.as_deref().unwrap_or_default() {
            let value = cookies
                .split(';')
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v);
            if let Some(v) = value {
                add(v);
            }
        }
        for name in self.header_names.as_deref().unwrap_or_default() {
            let Some(value) = request.get_header(name) else {
                continue;
            };
            // Kong's `\s*[Bb]earer\s+(.+)`, unanchored.
            let at = ["Bearer", "bearer"].iter().filter_map(|b| value.find(b)).min();
            if let Some(at) = at {
                let rest = &value[at + 6..];
                if rest.starts_with(char::is_whitespace) {
                    add(rest.trim_start());
                }
            }
        }
        found
    }

    /// Verifies the token and sets the consumer; the answer for the client when that fails.
    fn authenticate(&self, kong: &mut Kong<'_, Access>) -> kong_pdk::Result<Result<(), Exit>> {
        let (base, with_error) = match &self.realm {
            Some(realm) => (
                format!("Bearer realm=\"{realm}\""),
                format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
            ),
            None => ("Bearer".to_owned(), "Bearer error=\"invalid_token\"".to_owned()),
        };
        let refuse = |body: Value, www: &str| Ok(Err(Exit::new(401, body).header("WWW-Authenticate", www.to_owned())));
        let message = |m: String| json!({ "message": m });
        let tokens = self.tokens(kong);
        let token = match tokens.as_slice() {
            [] => return refuse(message("Unauthorized".into()), &base),
            [one] => one.clone(),
            _ => return refuse(message("Multiple tokens provided".into()), &with_error),
        };
        let jwt = match decode(&token) {
            Ok(jwt) => jwt,
            Err(e) => return refuse(message(format!("Bad token; {e}")), &with_error),
        };
        let claim = self.key_claim_name.as_deref().unwrap_or("iss");
        let key = match jwt.claims.get(claim).or_else(|| jwt.header.get(claim)) {
            None | Some(Value::Null) => {
                return refuse(message(format!("No mandatory '{claim}' in claims")), &with_error);
            }
            Some(Value::String(s)) if s.is_empty() => {
                return refuse(message(format!("Invalid '{claim}' in claims")), &with_error);
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let Some(secret) = kong.db().cached_by_cache_key::<JwtSecret>(&kong.cache(), &key) else {
            return refuse(
                message(format!("No credentials found for given '{claim}'")),
                &with_error,
            );
        };
        let algorithm = secret.value.algorithm.as_deref().unwrap_or("HS256");
        if jwt.header.get("alg").and_then(Value::as_str) != Some(algorithm) {
            return refuse(message("Invalid algorithm".into()), &with_error);
        }
        let key_bytes = if !asymmetric(algorithm) && self.secret_is_base64 {
            b64(&secret.value.secret.replace('+', "-").replace('/', "_"))
        } else if !asymmetric(algorithm) {
            Some(secret.value.secret.as_bytes().to_vec())
        } else {
            secret.value.rsa_public_key.as_deref().and_then(public_key)
        };
        let Some(key_bytes) = key_bytes else {
            return refuse(message("Invalid key/secret".into()), &with_error);
        };
        if !verify(algorithm, jwt.signed.as_bytes(), &jwt.signature, &key_bytes) {
            return refuse(message("Invalid signature".into()), &with_error);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut errors = Map::new();
        for name in self.claims_to_verify.as_deref().unwrap_or_default() {
            let problem = match (name.as_str(), jwt.claims.get(name).and_then(Value::as_f64)) {
                (_, None) => "must be a number",
                ("exp", Some(exp)) if exp <= now => "token expired",
                ("nbf", Some(nbf)) if nbf > now => "token not valid yet",
                _ => continue,
            };
            errors.insert(name.clone(), Value::from(problem));
        }
        if !errors.is_empty() {
            return refuse(Value::Object(errors), &with_error);
        }
        let maximum = self.maximum_expiration.unwrap_or(0.0);
        if maximum > 0.0 {
            let exp = jwt.claims.get("exp").and_then(Value::as_f64);
            if exp.is_none_or(|exp| exp - now > maximum) {
                return refuse(json!({ "exp": "exceeds maximum allowed expiration" }), &with_error);
            }
        }
        let Some(consumer) = kong.db().cached_consumer(&kong.cache(), secret.consumer) else {
            return Ok(Err(Exit::new(
                401,
                json!({ "message": format!("Could not find consumer for '{claim}={key}'") }),
            )));
        };
        kong.client().set_consumer(consumer, Some(secret.credential()))?;
        kong.service()
            .request()
            .set_header("X-Credential-Identifier", &secret.value.key)?;
        kong.ctx().shared().insert(AuthenticatedJwt(token));
        Ok(Ok(()))
    }
}
