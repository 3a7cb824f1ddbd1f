//! `key-auth` (Kong's `kong/plugins/key-auth`): clients prove who they are with a key, sent in
//! a header, a query argument or the body; keys are `keyauth_credentials` of consumers, managed
//! at `/consumers/{consumer}/key-auth` and `/key-auths`.

use kong_pdk::dao::Dao;
use kong_pdk::pdk::QueryValue;
use kong_pdk::prelude::*;
use serde_json::Value;

use crate::auth::{AuthPhase, already_authenticated, or_anonymous};

/// The plugin's configuration (Kong's `key-auth/schema.lua`).
#[plugin(priority = 1250, version = "3.10.0", name = "key-auth", protocols = protocols_http_ws, no_consumer)]
pub struct KeyAuth {
    /// Where to look for the key: header names, query arguments and body fields, tried in order.
    #[field(required, default = ["apikey"], elements(typedef = header_name))]
    pub key_names: Vec<String>,
    /// Remove the key from the request before it goes upstream.
    #[field(required, default = false)]
    pub hide_credentials: bool,
    /// A consumer (id or username) to use when authentication fails, instead of failing.
    pub anonymous: Option<String>,
    /// Look for the key in headers.
    #[field(required, default = true)]
    pub key_in_header: bool,
    /// Look for the key in query arguments.
    #[field(required, default = true)]
    pub key_in_query: bool,
    /// Look for the key in the body (JSON, form or multipart).
    #[field(required, default = false)]
    pub key_in_body: bool,
    /// Authenticate CORS preflight (OPTIONS) requests too.
    #[field(required, default = true)]
    pub run_on_preflight: bool,
    /// The realm of the `WWW-Authenticate` header.
    pub realm: Option<String>,
}

/// A consumer's key (Kong's `keyauth_credentials`).
#[record]
#[derive(Dao)]
#[dao(
    name = "keyauth_credentials",
    plugin = "key-auth",
    admin_api_name = "key-auths",
    admin_api_nested_name = "key-auth",
    endpoint_key = "key",
    cache_key = "key",
    unique = ["key"],
    auto = ["key"]
)]
pub struct KeyAuthCredential {
    /// The key; a random one is generated when none is given.
    pub key: String,
    /// Seconds the credential lives after it was created; then it is gone (401 on the proxy,
    /// 404 on the Admin API, which shows what is left of it).
    pub ttl: Option<i64>,
}

/// Where a key was looked for, and what was there.
enum Found {
    Key(String),
    Duplicate,
    Nothing,
}

#[handler]
impl Handler for KeyAuth {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        self.run(kong).await
    }

    /// WebSocket services authenticate the handshake, as Kong Enterprise's key-auth does.
    async fn ws_handshake(&self, kong: &mut Kong<WsHandshake>) -> kong_pdk::Result {
        self.run(kong).await
    }
}

/// What key-auth needs of the phase it authenticates in: `access`, or `ws_handshake`, where
/// Kong has no request body.
trait KeyPhase: AuthPhase {
    /// The request body as JSON (`Null` when it does not parse); `None` without one.
    fn body(kong: &mut Kong<'_, Self>) -> impl Future<Output = Option<Value>> + Send;
}

impl KeyPhase for Access {
    async fn body(kong: &mut Kong<'_, Self>) -> Option<Value> {
        // An unparseable body counts as an empty one, as in Kong.
        Some(kong.request().get_body().await.unwrap_or(Value::Null))
    }
}

impl KeyPhase for WsHandshake {
    async fn body(_: &mut Kong<'_, Self>) -> Option<Value> {
        None
    }
}

impl KeyAuth {
    async fn run<P: KeyPhase>(&self, kong: &mut Kong<'_, P>) -> kong_pdk::Result {
        if !self.run_on_preflight && kong.request().get_method() == "OPTIONS" {
            return Ok(());
        }
        if already_authenticated(kong, self.anonymous.as_deref()) {
            return Ok(());
        }
        match self.authenticate(kong).await? {
            Ok(()) => Ok(()),
            Err(failure) => or_anonymous(kong, self.anonymous.as_deref(), failure),
        }
    }

    /// Kong's 401 with `WWW-Authenticate` (and the realm, when configured).
    fn unauthorized(&self, message: &str) -> Exit {
        let www = match &self.realm {
            Some(realm) => format!("Key realm=\"{realm}\""),
            None => "Key".to_owned(),
        };
        Exit::error(401, message).header("WWW-Authenticate", www)
    }

    /// Finds the key, its credential and consumer, and sets them on the request; the answer
    /// for the client when that fails.
    async fn authenticate<P: KeyPhase>(&self, kong: &mut Kong<'_, P>) -> kong_pdk::Result<Result<(), Exit>> {
        let mut body: Option<Value> = None;
        // The whole query, as Kong's `get_query()`: a repeated argument is a list.
        let mut query = if self.key_in_query {
            kong.request().get_query(100)
        } else {
            Default::default()
        };
        let mut key = None;
        for name in &self.key_names {
            let mut found = Found::Nothing;
            if self.key_in_header {
                found = header(kong, name);
            }
            if matches!(found, Found::Nothing) && self.key_in_query {
                found = match query.remove(name.as_str()) {
                    Some(QueryValue::Value(v)) => Found::Key(v),
                    Some(QueryValue::List(_)) => Found::Duplicate,
                    Some(QueryValue::Flag) | None => Found::Nothing,
                };
            }
            if matches!(found, Found::Nothing) && self.key_in_body {
                if body.is_none() {
                    body = P::body(kong).await;
                }
                found = match body.as_ref().and_then(|b| b.get(name.as_str())) {
                    Some(Value::String(v)) => Found::Key(v.clone()),
                    Some(Value::Array(_) | Value::Object(_)) => Found::Duplicate,
                    _ => Found::Nothing,
                };
            }
            match found {
                Found::Key(v) => {
                    if self.hide_credentials {
                        self.hide(kong, name, body.as_mut())?;
                    }
                    key = Some(v);
                    break;
                }
                Found::Duplicate => return Ok(Err(self.unauthorized("Duplicate API key found"))),
                Found::Nothing => {}
            }
        }
        let key = match key {
            Some(k) if !k.is_empty() => k,
            _ => return Ok(Err(self.unauthorized("No API key found in request"))),
        };
        let Some(credential) = kong.db().cached_by_cache_key::<KeyAuthCredential>(&kong.cache(), &key) else {
            return Ok(Err(self.unauthorized("Unauthorized")));
        };
        // A key written with a `ttl` is gone once it has lived that long.
        if let (Some(ttl), Some(created)) = (credential.value.ttl, credential.raw()["created_at"].as_i64()) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if ttl > 0 && created.saturating_add(ttl) <= now {
                return Ok(Err(self.unauthorized("Unauthorized")));
            }
        }
        let Some(consumer) = kong.db().cached_consumer(&kong.cache(), credential.consumer) else {
            return Ok(Err(Exit::error(500, "An unexpected error occurred")));
        };
        kong.client().set_consumer(consumer, Some(credential.credential()))?;
        Ok(Ok(()))
    }

    /// Removes the key `name` from what goes upstream: header, query argument and body field.
    fn hide<P: KeyPhase>(&self, kong: &mut Kong<'_, P>, name: &str, body: Option<&mut Value>) -> kong_pdk::Result {
        let mut service = kong.service();
        let mut upstream = service.request();
        upstream.clear_header(name)?;
        upstream.clear_query_arg(name);
        if let Some(body) = body
            && body.as_object_mut().is_some_and(|fields| fields.remove(name).is_some())
        {
            upstream.set_body(body)?;
        }
        Ok(())
    }
}

fn header<P: KeyPhase>(kong: &mut Kong<'_, P>, name: &str) -> Found {
    let request = kong.request();
    let mut values = request.get_header_values(name);
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Found::Duplicate,
        (Some(v), None) => Found::Key(v.to_owned()),
        _ => Found::Nothing,
    }
}
