//! `kong.request`: the request as the client sent it.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::error::PdkError;
use crate::phase::{self, RequestPhase};
use crate::transaction::{RequestBody, Transaction, UriCaptures};

/// Kong's default `client_body_buffer_size` (8k): larger bodies need an explicit limit.
pub const CLIENT_BODY_BUFFER_SIZE: usize = crate::transaction::CLIENT_BODY_BUFFER_SIZE;

/// A query argument's value: `?a` is `Flag`, `?a=1` is `Value("1")`, `?a=1&a=2` is `List`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryValue {
    /// An argument without `=` (Kong's `true`).
    Flag,
    /// `name=value` (decoded; `a=` gives `""`).
    Value(String),
    /// A repeated argument.
    List(Vec<QueryValue>),
}

impl QueryValue {
    /// The value as a string (`Flag` is `None`, a `List` its first).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            QueryValue::Flag => None,
            QueryValue::Value(v) => Some(v),
            QueryValue::List(l) => l.first().and_then(QueryValue::as_str),
        }
    }
}

/// `kong.request`.
pub struct Request<'a, P> {
    tx: &'a mut Transaction,
    _phase: PhantomData<fn() -> P>,
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (query values, baggage).
///
/// ```
/// assert_eq!(kong_pdk::pdk::percent_encode_component("a b/é"), "a%20b%2F%C3%A9");
/// ```
pub fn percent_encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decodes `s` (ngx's `unescape_uri`); `plus` turns `+` into a space (form
/// encoding). Invalid escapes stay as they are; bytes that are not UTF-8 become U+FFFD.
///
/// ```
/// use kong_pdk::pdk::percent_decode;
/// assert_eq!(percent_decode("a%20b+c%zz", true), "a b c%zz");
/// assert_eq!(percent_decode("a+b", false), "a+b");
/// ```
pub fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query or form string into Kong's table shape.
pub(crate) fn parse_args(query: &str, limit: usize) -> BTreeMap<String, QueryValue> {
    let mut out: BTreeMap<String, QueryValue> = BTreeMap::new();
    for part in query.split('&').filter(|p| !p.is_empty()).take(limit) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (percent_decode(k, true), QueryValue::Value(percent_decode(v, true))),
            None => (percent_decode(part, true), QueryValue::Flag),
        };
        match out.remove(&k) {
            None => {
                out.insert(k, v);
            }
            Some(QueryValue::List(mut l)) => {
                l.push(v);
                out.insert(k, QueryValue::List(l));
            }
            Some(prev) => {
                out.insert(k, QueryValue::List(vec![prev, v]));
            }
        }
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// Kong's path normalisation: decode percent-encoded unreserved characters, uppercase the hex
/// of the others, resolve `.` and `..`, merge `//`.
pub fn normalize_path(path: &str) -> String {
    // Most paths are already normal: nothing to decode, no empty or dot segments.
    if path.starts_with('/') && path.is_ascii() && !path.contains('%') && !path.contains("//") && !path.contains("/.") {
        return path.to_owned();
    }
    let b = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            let c = h * 16 + l;
            if is_unreserved(c) {
                decoded.push(c as char);
            } else {
                decoded.push_str(&format!("%{c:02X}"));
            }
            i += 3;
            continue;
        }
        decoded.push(b[i] as char);
        i += 1;
    }
    let mut segments: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(&segments.join("/"));
    if trailing && out.len() > 1 {
        out.push('/');
    }
    out
}

impl<'a, P: RequestPhase + phase::RequestRead> Request<'a, P> {
    pub(crate) fn new(tx: &'a mut Transaction) -> Self {
        Request {
            tx,
            _phase: PhantomData,
        }
    }

    fn trusted(&self) -> bool {
        self.tx.node.is_trusted(self.tx.client.ip)
    }

    /// `get_scheme()`: `"http"` or `"https"`.
    pub fn get_scheme(&self) -> &str {
        self.tx.request.scheme
    }

    /// `get_host()`: lowercase, without port.
    pub fn get_host(&self) -> &str {
        &self.tx.request.host
    }

    /// `get_port()`: the port the request arrived on.
    pub fn get_port(&self) -> u16 {
        self.tx.request.port
    }

    /// `get_forwarded_scheme()`: `X-Forwarded-Proto` from a trusted client, else the scheme.
    pub fn get_forwarded_scheme(&self) -> String {
        match self.get_header("x-forwarded-proto") {
            Some(v) if self.trusted() => v.to_ascii_lowercase(),
            _ => self.get_scheme().to_owned(),
        }
    }

    /// `get_forwarded_host()`: `X-Forwarded-Host` (no port) from a trusted client, else the host.
    pub fn get_forwarded_host(&self) -> String {
        match self.get_header("x-forwarded-host") {
            Some(v) if self.trusted() => {
                let v = v.split(',').next().unwrap_or_default().trim();
                let v = v.rsplit_once('@').map_or(v, |(_, h)| h);
                let host = if v.starts_with('[') {
                    v.split_once(']').map_or(v, |(h, _)| h).trim_start_matches('[')
                } else {
                    v.split(':').next().unwrap_or(v)
                };
                host.to_ascii_lowercase()
            }
            _ => self.get_host().to_owned(),
        }
    }

    /// `get_forwarded_port()`: `X-Forwarded-Port`, or the port in `X-Forwarded-Host`, from a
    /// trusted client; else the port.
    pub fn get_forwarded_port(&self) -> u16 {
        if self.trusted() {
            if let Some(p) = self.get_header("x-forwarded-port").and_then(|v| v.trim().parse().ok()) {
                return p;
            }
            if let Some(p) = self
                .get_header("x-forwarded-host")
                .and_then(|h| h.rsplit_once(':'))
                .and_then(|(_, p)| p.trim().parse().ok())
            {
                return p;
            }
        }
        self.get_port()
    }

    /// `get_forwarded_path()`: `X-Forwarded-Path` from a trusted client, else the normalised path.
    pub fn get_forwarded_path(&self) -> String {
        match self.get_header("x-forwarded-path") {
            Some(v) if self.trusted() => v.to_owned(),
            _ => self.get_path(),
        }
    }

    /// `get_forwarded_prefix()`: `X-Forwarded-Prefix` from a trusted client.
    pub fn get_forwarded_prefix(&self) -> Option<String> {
        match self.get_header("x-forwarded-prefix") {
            Some(v) if self.trusted() => Some(v.to_owned()),
            _ => None,
        }
    }

    /// `get_http_version()`: 1.0, 1.1, 2.0 or 3.0.
    pub fn get_http_version(&self) -> f64 {
        match self.tx.request.version {
            http::Version::HTTP_09 => 0.9,
            http::Version::HTTP_10 => 1.0,
            http::Version::HTTP_2 => 2.0,
            http::Version::HTTP_3 => 3.0,
            _ => 1.1,
        }
    }

    /// The address the client connected to (nginx's `$server_addr`).
    pub fn get_server_addr(&self) -> std::net::IpAddr {
        self.tx.client.server_ip
    }

    /// The connection's serial number on this node (nginx's `$connection`).
    pub fn get_connection_serial(&self) -> u64 {
        self.tx.client.serial
    }

    /// The requests made on this connection, this one included (nginx's
    /// `$connection_requests`).
    pub fn get_connection_requests(&self) -> u64 {
        self.tx.client.requests
    }

    /// `get_method()`.
    pub fn get_method(&self) -> &str {
        self.tx.request.method.as_str()
    }

    /// `get_path()`: the normalised path.
    pub fn get_path(&self) -> String {
        normalize_path(&self.tx.request.raw_path)
    }

    /// `get_raw_path()`: the path as received, without the query.
    pub fn get_raw_path(&self) -> &str {
        &self.tx.request.raw_path
    }

    /// `get_path_with_query()`: the raw request URI.
    pub fn get_path_with_query(&self) -> String {
        match &self.tx.request.query {
            Some(q) => format!("{}?{q}", self.tx.request.raw_path),
            None => self.tx.request.raw_path.clone(),
        }
    }

    /// `get_raw_query()`: the query string without `?` (`""` when none).
    pub fn get_raw_query(&self) -> &str {
        self.tx.request.query.as_deref().unwrap_or("")
    }

    /// `get_query_arg(name)`: the first value of `name`.
    pub fn get_query_arg(&self, name: &str) -> Option<QueryValue> {
        match self.get_query(1000).remove(name)? {
            QueryValue::List(mut l) if !l.is_empty() => Some(l.swap_remove(0)),
            v => Some(v),
        }
    }

    /// `get_query(max_args)`: every argument (at most `max_args`, Kong's default is 100).
    pub fn get_query(&self, max_args: usize) -> BTreeMap<String, QueryValue> {
        parse_args(self.get_raw_query(), max_args)
    }

    /// `get_header(name)`: the first value; case-insensitive, `_` matches `-`.
    pub fn get_header(&self, name: &str) -> Option<&str> {
        header(&self.tx.request.headers, name)
    }

    /// Every value of the header `name`, in order; case-insensitive, `_` matches `-` (as
    /// `get_headers()[name]` in Kong, where a repeated header is a list).
    ///
    /// ```
    /// # use kong_pdk::prelude::*;
    /// # fn f(kong: &mut Kong<Access>) {
    /// let keys: Vec<&str> = kong.request().get_header_values("api_key").collect();
    /// # }
    /// ```
    pub fn get_header_values(&self, name: &str) -> impl Iterator<Item = &str> {
        let name = name.replace('_', "-");
        self.tx
            .request
            .headers
            .get_all(name.as_str())
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    }

    /// `get_headers()`: every header.
    pub fn get_headers(&self) -> &HeaderMap {
        &self.tx.request.headers
    }

    /// The request's id (the log serializer's `request.id`, the `X-Kong-Request-Id` header).
    pub fn get_id(&self) -> &str {
        self.tx.request_id()
    }

    /// `get_start_time()`: ms since the epoch.
    pub fn get_start_time(&self) -> u64 {
        self.tx.started_at_ms
    }

    /// `get_uri_captures()`: the matched regex route's captures.
    pub fn get_uri_captures(&self) -> &UriCaptures {
        &self.tx.captures
    }

    /// `get_raw_body()`: the body, read up to Kong's `client_body_buffer_size` (8k unless
    /// the gateway is set otherwise); a larger
    /// body fails with Kong's message (use [`get_raw_body_limited`](Self::get_raw_body_limited)).
    pub async fn get_raw_body(&mut self) -> Result<Bytes, PdkError>
    where
        P: phase::RequestBody,
    {
        let buffer = match &self.tx.request.body {
            RequestBody::Pending(reader) => reader.buffer_size(),
            RequestBody::Buffered(_) => CLIENT_BODY_BUFFER_SIZE,
        };
        self.get_raw_body_within(buffer).await?.ok_or_else(|| {
            PdkError::new(
                "request body did not fit into client body buffer, consider raising 'client_body_buffer_size'",
            )
        })
    }

    /// `get_raw_body(max_allowed_file_size)`: the body up to `max` bytes (`0` = no limit).
    pub async fn get_raw_body_limited(&mut self, max: usize) -> Result<Bytes, PdkError>
    where
        P: phase::RequestBody,
    {
        let limit = if max == 0 { usize::MAX } else { max };
        self.get_raw_body_within(limit)
            .await?
            .ok_or_else(|| PdkError::new(format!("request body file too big: more than {limit} bytes")))
    }

    /// The body when it is at most `max` bytes, `None` when it is longer: reading stops one
    /// chunk past `max`, and the body still reaches the upstream whole. What
    /// request-size-limiting needs; memory stays bounded by `max`.
    pub async fn get_raw_body_within(&mut self, max: usize) -> Result<Option<Bytes>, PdkError>
    where
        P: phase::RequestBody,
    {
        let body = match &mut self.tx.request.body {
            RequestBody::Buffered(b) => b.clone(),
            RequestBody::Pending(reader) => match reader.read_to_end(max).await.map_err(PdkError::new)? {
                Some(b) => {
                    self.tx.request.body = RequestBody::Buffered(b.clone());
                    b
                }
                None => return Ok(None),
            },
        };
        Ok((body.len() <= max).then_some(body))
    }

    /// `get_body()`: the body decoded by its content type (JSON, form-urlencoded), as JSON.
    /// Errors are Kong's: `missing content type`, `invalid json body`,
    /// `unsupported content type '<ct>'`.
    pub async fn get_body(&mut self) -> Result<Value, PdkError>
    where
        P: phase::RequestBody,
    {
        let ct = self.get_header("content-type").map(str::to_ascii_lowercase);
        let Some(ct) = ct else {
            return Err(PdkError::new("missing content type"));
        };
        let mime = ct.split(';').next().unwrap_or_default().trim().to_owned();
        let body = self.get_raw_body().await?;
        if mime.starts_with("application/json") {
            match serde_json::from_slice::<Value>(&body) {
                Ok(v @ (Value::Object(_) | Value::Array(_))) => Ok(v),
                _ => Err(PdkError::new("invalid json body")),
            }
        } else if mime.starts_with("application/x-www-form-urlencoded") {
            let text = String::from_utf8_lossy(&body);
            let args = parse_args(&text, 100);
            Ok(Value::Object(
                args.into_iter().map(|(k, v)| (k, query_json(v))).collect(),
            ))
        } else {
            Err(PdkError::new(format!("unsupported content type '{mime}'")))
        }
    }
}

fn query_json(v: QueryValue) -> Value {
    match v {
        QueryValue::Flag => Value::Bool(true),
        QueryValue::Value(s) => Value::String(s),
        QueryValue::List(l) => Value::Array(l.into_iter().map(query_json).collect()),
    }
}

/// A query or form string as Kong's JSON table: strings, `true` for flags, arrays for repeats.
pub(crate) fn args_json(query: &str, limit: usize) -> Value {
    Value::Object(
        parse_args(query, limit)
            .into_iter()
            .map(|(k, v)| (k, query_json(v)))
            .collect(),
    )
}

/// First value of a header, case-insensitive, with `_` matching `-`.
pub(crate) fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let value = if name.contains('_') {
        headers.get(name.replace('_', "-").as_str())
    } else {
        headers.get(name)
    };
    value.and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths_like_kong() {
        assert_eq!(normalize_path("/a/./b/../c//d"), "/a/c/d");
        assert_eq!(normalize_path("/%7Euser/%2fx"), "/~user/%2Fx");
        assert_eq!(normalize_path("/a/b/"), "/a/b/");
        assert_eq!(normalize_path("/../.."), "/");
        for normal in ["/", "/a", "/a/b/", "/a.b/c..d"] {
            assert_eq!(normalize_path(normal), normal);
        }
        assert_eq!(normalize_path("a/b"), "/a/b");
    }

    #[test]
    fn parses_query_args_as_kong_tables() {
        let q = parse_args("a=1&b&c=&a=2&d=x%20y+z", 100);
        assert_eq!(
            q["a"],
            QueryValue::List(vec![QueryValue::Value("1".into()), QueryValue::Value("2".into())])
        );
        assert_eq!(q["b"], QueryValue::Flag);
        assert_eq!(q["c"], QueryValue::Value(String::new()));
        assert_eq!(q["d"], QueryValue::Value("x y z".into()));
        assert_eq!(parse_args("a=1&b=2&c=3", 2).len(), 2);
    }
}
