//! `kong.service`, `kong.service.request` and `kong.service.response`: where the request goes,
//! what is sent there, and what came back.

use std::marker::PhantomData;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use super::response::{display_value, header_name};
use crate::error::PdkError;
use crate::phase::{self, RequestPhase};
use crate::transaction::{Timeouts, Transaction};

/// `kong.service`.
pub struct Service<'a, P> {
    tx: &'a mut Transaction,
    _phase: PhantomData<fn() -> P>,
}

impl<'a, P: RequestPhase> Service<'a, P> {
    pub(crate) fn new(tx: &'a mut Transaction) -> Self {
        Service {
            tx,
            _phase: PhantomData,
        }
    }

    /// `set_target(host, port)`: send the request to this host and port.
    pub fn set_target(&mut self, host: &str, port: u16) -> Result<(), PdkError>
    where
        P: phase::ServiceTarget,
    {
        if host.is_empty() {
            return Err(PdkError::new("host must be a string"));
        }
        self.tx.upstream.host = host.to_owned();
        self.tx.upstream.port = port;
        Ok(())
    }

    /// `set_retries(n)`: 0 to 32767.
    pub fn set_retries(&mut self, retries: u32) -> Result<(), PdkError>
    where
        P: phase::ServiceBalancer,
    {
        if retries > 32767 {
            return Err(PdkError::new("retries must be an integer between 0 and 32767"));
        }
        self.tx.upstream.retries = retries;
        Ok(())
    }

    /// `set_timeouts(connect, write, read)`: ms, 1 to 2147483646.
    pub fn set_timeouts(&mut self, connect: u64, write: u64, read: u64) -> Result<(), PdkError>
    where
        P: phase::ServiceBalancer,
    {
        for (name, v) in [("connect", connect), ("write", write), ("read", read)] {
            if !(1..=2_147_483_646).contains(&v) {
                return Err(PdkError::new(format!(
                    "{name}_timeout must be an integer between 1 and 2147483646"
                )));
            }
        }
        self.tx.upstream.timeouts = Timeouts { connect, write, read };
        Ok(())
    }

    /// `kong.service.request`: the request sent upstream.
    pub fn request(&mut self) -> ServiceRequest<'_, P> {
        ServiceRequest {
            tx: self.tx,
            _phase: PhantomData,
        }
    }

    /// `kong.service.response`: the upstream's response.
    pub fn response(&self) -> ServiceResponse<'_, P>
    where
        P: phase::ServiceResponseRead,
    {
        ServiceResponse {
            tx: self.tx,
            _phase: PhantomData,
        }
    }
}

/// `kong.service.request`.
pub struct ServiceRequest<'a, P> {
    tx: &'a mut Transaction,
    _phase: PhantomData<fn() -> P>,
}

const METHODS: [&str; 15] = [
    "GET",
    "HEAD",
    "PUT",
    "POST",
    "DELETE",
    "OPTIONS",
    "MKCOL",
    "COPY",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
    "PATCH",
    "TRACE",
];

impl<P: RequestPhase> ServiceRequest<'_, P> {
    /// Kong's stream `kong.service.request.disable_tls()`: this session reaches a `tls`
    /// service's upstream in plain TCP (it cannot be turned back on).
    pub fn disable_tls(&mut self)
    where
        P: phase::StreamUpstream,
    {
        self.tx.upstream.scheme = "http".into();
    }
}

impl<P: RequestPhase> ServiceRequest<'_, P> {
    /// `enable_buffering()`: buffer the upstream response so `response` handlers and
    /// `kong.service.response().get_raw_body()` see it whole.
    pub fn enable_buffering(&mut self)
    where
        P: phase::ServiceRequestWrite,
        P: phase::EnableBuffering,
    {
        self.tx.buffered = true;
    }

    /// `set_scheme("http" | "https")`.
    pub fn set_scheme(&mut self, scheme: &str) -> Result<(), PdkError>
    where
        P: phase::ServiceRequestWrite,
    {
        if scheme != "http" && scheme != "https" {
            return Err(PdkError::new(format!("invalid scheme: {scheme}")));
        }
        self.tx.upstream.scheme = scheme.to_owned();
        Ok(())
    }

    /// `set_path(path)`: must start with `/`.
    pub fn set_path(&mut self, path: &str) -> Result<(), PdkError>
    where
        P: phase::ServiceRequestWrite,
    {
        if !path.starts_with('/') {
            return Err(PdkError::new("path must start with /"));
        }
        self.tx.upstream.path = path.to_owned();
        Ok(())
    }

    /// `set_raw_query(query)`: without `?`.
    pub fn set_raw_query(&mut self, query: &str)
    where
        P: phase::ServiceRequestWrite,
    {
        self.tx.upstream.query = (!query.is_empty()).then(|| query.to_owned());
    }

    /// `set_method(method)`: one of Kong's methods.
    pub fn set_method(&mut self, method: &str) -> Result<(), PdkError>
    where
        P: phase::ServiceRequestWrite,
    {
        if !METHODS.contains(&method) {
            return Err(PdkError::new(format!("invalid method: {method}")));
        }
        self.tx.upstream.method =
            Method::from_bytes(method.as_bytes()).map_err(|_| PdkError::new(format!("invalid method: {method}")))?;
        Ok(())
    }

    /// `set_query(args)`: replaces the query, encoded with sorted keys as Kong.
    pub fn set_query<'k>(&mut self, args: impl IntoIterator<Item = (&'k str, &'k str)>)
    where
        P: phase::ServiceRequestWrite,
    {
        let mut args: Vec<(&str, &str)> = args.into_iter().collect();
        args.sort();
        let q: Vec<String> = args
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        self.set_raw_query(&q.join("&"));
    }

    /// `clear_query_arg(name)`: removes every occurrence.
    pub fn clear_query_arg(&mut self, name: &str)
    where
        P: phase::ServiceRequestWrite,
    {
        if let Some(q) = &self.tx.upstream.query {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|p| super::request::percent_decode(p.split('=').next().unwrap_or_default(), true) != name)
                .collect();
            let joined = kept.join("&");
            self.set_raw_query(&joined);
        }
    }

    /// `set_header(name, value)`. `Host` sets the upstream Host header.
    pub fn set_header(&mut self, name: &str, value: impl std::fmt::Display) -> Result<(), PdkError>
    where
        P: phase::ServiceRequestWrite,
    {
        let n = header_name(name)?;
        let v = display_value(name, &value)?;
        if n == http::header::HOST {
            self.tx.upstream.host_header = Some(value.to_string());
        }
        self.tx.upstream.headers.insert(n, v);
        Ok(())
    }

    /// `add_header(name, value)`.
    pub fn add_header(&mut self, name: &str, value: impl std::fmt::Display) -> Result<(), PdkError>
    where
        P: phase::ServiceRequestWrite,
    {
        let n = header_name(name)?;
        self.tx.upstream.headers.append(n, display_value(name, &value)?);
        Ok(())
    }

    /// `clear_header(name)`.
    pub fn clear_header(&mut self, name: &str) -> Result<(), PdkError>
    where
        P: phase::ServiceRequestWrite,
    {
        let n = header_name(name)?;
        self.tx.upstream.headers.remove(n);
        Ok(())
    }

    /// `set_headers({...})`.
    pub fn set_headers<'h>(&mut self, headers: impl IntoIterator<Item = (&'h str, &'h str)>) -> Result<(), PdkError>
    where
        P: phase::ServiceRequestWrite,
    {
        for (k, v) in headers {
            self.set_header(k, v)?;
        }
        Ok(())
    }

    /// `set_raw_body(body)`: replaces the body sent upstream.
    pub fn set_raw_body(&mut self, body: impl Into<Bytes>)
    where
        P: phase::ServiceRequestWrite,
    {
        let body = body.into();
        self.tx
            .upstream
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        self.tx.upstream.headers.remove(http::header::TRANSFER_ENCODING);
        self.tx.upstream.body = Some(body);
    }

    /// `set_body(args)`: encodes `body` in the content type the request goes with: form
    /// encoding for `application/x-www-form-urlencoded` (keys sorted, as Kong), JSON for
    /// `application/json` or when there is none (which then becomes the content type).
    pub fn set_body(&mut self, body: &Value) -> Result<(), PdkError>
    where
        P: phase::ServiceRequestWrite,
    {
        let content_type = self
            .tx
            .upstream
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
        match content_type.as_deref() {
            None => self.set_json_body(body),
            Some(json) if json == "application/json" || json.ends_with("+json") => {
                let bytes = serde_json::to_vec(body).map_err(|e| PdkError::new(e.to_string()))?;
                self.set_raw_body(bytes);
                Ok(())
            }
            Some("application/x-www-form-urlencoded") => {
                let Value::Object(fields) = body else {
                    return Err(PdkError::new("a form body must be a table of fields"));
                };
                let encoded = encode_form(fields)?;
                self.set_raw_body(encoded);
                Ok(())
            }
            Some(other) => Err(PdkError::new(format!("unsupported content type '{other}'"))),
        }
    }

    /// `set_body(args, "application/json")`: encodes `body` as JSON and sets the content type.
    pub fn set_json_body(&mut self, body: &Value) -> Result<(), PdkError>
    where
        P: phase::ServiceRequestWrite,
    {
        let bytes = serde_json::to_vec(body).map_err(|e| PdkError::new(e.to_string()))?;
        self.tx
            .upstream
            .headers
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.set_raw_body(bytes);
        Ok(())
    }
}

/// Kong's `ngx.encode_args` of a body table: keys sorted, a list as repeated keys, `true` as a
/// bare key, `false` left out.
fn encode_form(fields: &serde_json::Map<String, Value>) -> Result<String, PdkError> {
    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let value = &fields[key];
        let items = match value {
            Value::Array(items) => items.as_slice(),
            one => std::slice::from_ref(one),
        };
        for item in items {
            match item {
                Value::String(s) => out.push(format!("{}={}", encode(key), encode(s))),
                Value::Number(n) => out.push(format!("{}={n}", encode(key))),
                Value::Bool(true) => out.push(encode(key)),
                Value::Bool(false) | Value::Null => {}
                Value::Array(_) | Value::Object(_) => {
                    return Err(PdkError::new(format!(
                        "attempt to use a table as a value of the form field '{key}'"
                    )));
                }
            }
        }
    }
    Ok(out.join("&"))
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `kong.service.response`.
pub struct ServiceResponse<'a, P> {
    tx: &'a Transaction,
    _phase: PhantomData<fn() -> P>,
}

impl<P: RequestPhase> ServiceResponse<'_, P> {
    /// `get_status()`: `None` when nothing was proxied.
    pub fn get_status(&self) -> Option<u16> {
        self.tx.upstream_response.as_ref().map(|r| r.status)
    }

    /// `get_headers()`: headers as the upstream sent them.
    pub fn get_headers(&self) -> Option<&HeaderMap> {
        self.tx.upstream_response.as_ref().map(|r| &r.headers)
    }

    /// `get_header(name)`: a header as the upstream sent it.
    pub fn get_header(&self, name: &str) -> Option<&str> {
        super::request::header(&self.tx.upstream_response.as_ref()?.headers, name)
    }

    /// `get_raw_body()`: the buffered body. Without buffered proxying, Kong's error.
    pub fn get_raw_body(&self) -> Result<Bytes, PdkError> {
        match self.tx.upstream_response.as_ref().and_then(|r| r.body.clone()) {
            Some(b) if self.tx.buffered => Ok(b),
            _ => Err(PdkError::new(
                "service body is only available with buffered proxying (see: kong.service.request.enable_buffering function)",
            )),
        }
    }

    /// `get_body()`: the buffered body decoded as JSON.
    pub fn get_body(&self) -> Result<Value, PdkError> {
        let raw = self.get_raw_body()?;
        serde_json::from_slice(&raw).map_err(|_| PdkError::new("invalid json body"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::encode_form;

    #[test]
    fn form_bodies_are_encoded_as_kong_encodes_args() {
        let fields = json!({ "b": "x y", "a": ["1", "2"], "flag": true, "off": false, "n": 5 });
        assert_eq!(
            encode_form(fields.as_object().unwrap()).unwrap(),
            "a=1&a=2&b=x%20y&flag&n=5"
        );
        let nested = json!({ "a": { "b": 1 } });
        assert_eq!(
            encode_form(nested.as_object().unwrap()).unwrap_err().message(),
            "attempt to use a table as a value of the form field 'a'"
        );
    }
}
