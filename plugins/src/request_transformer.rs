//! `request-transformer` (Kong's `kong/plugins/request-transformer`): changes the request
//! before it goes upstream: the path (`replace.uri`), the method (`http_method`), then headers,
//! body (JSON, form and multipart bodies) and query string, each by remove, rename, replace, add and
//! append, in Kong's order. Values are templates: `$(headers['x-a'])`, `$(query_params.q)`,
//! `$(uri_captures.name or 'default')` (see the [template language](crate::template) — a small
//! expression language in place of Lua).

use std::collections::BTreeMap;

use kong_pdk::Error;
use kong_pdk::pdk::QueryValue;
use kong_pdk::prelude::*;
use kong_pdk::schema::{ConfigType, FieldSchema};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::response_transformer::{HeaderPair, split};
use crate::template::{Env, Template};

/// The plugin's configuration (Kong's `request-transformer/schema.lua`).
#[plugin(priority = 801, version = "3.10.0", name = "request-transformer")]
pub struct RequestTransformer {
    /// The method sent upstream.
    #[field(typedef = http_method)]
    pub http_method: Option<String>,
    /// Body fields, headers and query arguments to remove.
    pub remove: Removals,
    /// `old:new` renames.
    pub rename: Renames,
    /// `name:value` replacements of what is present, and the path (`uri`).
    pub replace: Replacements,
    /// `name:value` additions of what is absent.
    pub add: Changes,
    /// `name:value` values appended.
    pub append: Changes,
}

/// Names to remove.
#[record]
pub struct Removals {
    /// Body fields.
    #[field(required, default = [])]
    pub body: Vec<String>,
    /// Headers.
    #[field(required, default = [])]
    pub headers: Vec<HeaderName>,
    /// Query arguments.
    #[field(required, default = [])]
    pub querystring: Vec<String>,
}

/// `old:new` renames.
#[record]
pub struct Renames {
    /// Body fields.
    #[field(required, default = [])]
    pub body: Vec<KeyValue>,
    /// Headers (both names header names).
    #[field(required, default = [])]
    pub headers: Vec<HeaderPair>,
    /// Query arguments.
    #[field(required, default = [])]
    pub querystring: Vec<KeyValue>,
}

/// `name:value` changes.
#[record]
pub struct Changes {
    /// Body fields.
    #[field(required, default = [])]
    pub body: Vec<KeyValue>,
    /// Headers.
    #[field(required, default = [])]
    pub headers: Vec<HeaderValue>,
    /// Query arguments.
    #[field(required, default = [])]
    pub querystring: Vec<KeyValue>,
}

/// `name:value` replacements, and the path.
#[record]
pub struct Replacements {
    /// Body fields.
    #[field(required, default = [])]
    pub body: Vec<KeyValue>,
    /// Headers.
    #[field(required, default = [])]
    pub headers: Vec<HeaderValue>,
    /// Query arguments.
    #[field(required, default = [])]
    pub querystring: Vec<KeyValue>,
    /// The path sent upstream (a template).
    pub uri: Option<UriTemplate>,
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A config string checked on load and kept as text.
macro_rules! checked {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($name)
            }
        }

        impl ConfigType for $name {
            fn field_schema() -> FieldSchema {
                FieldSchema::checked_string($check)
            }
        }
    };
}

checked!(
    /// A header name (the part before a colon).
    HeaderName,
    |v| {
        let (name, _) = split(text(v));
        kong_pdk::schema::typedefs::validate_header_name(name).map_err(|_| format!("'{name}' is not a valid header"))
    }
);

checked!(
    /// `name:value` with a header name (Kong's `colon_header_value_array`).
    HeaderValue,
    |v| {
        let t = text(v);
        if !t.contains(':') || t.starts_with(':') {
            return Err(format!("invalid value: {t}"));
        }
        let (name, _) = split(t);
        kong_pdk::schema::typedefs::validate_header_name(name).map_err(|_| format!("'{name}' is not a valid header"))
    }
);

checked!(
    /// `name:value` with a value that is a template (Kong's `check_for_value`).
    KeyValue,
    |v| {
        let (name, value) = split(text(v));
        let Some(value) = value else {
            return Err(format!("key '{name}' has no value"));
        };
        Template::parse(value)
            .map(drop)
            .map_err(|e| format!("value '{value}' is not in supported format, error:{e}"))
    }
);

checked!(
    /// The path, a template.
    UriTemplate,
    |v| {
        let value = text(v);
        Template::parse(value)
            .map(drop)
            .map_err(|e| format!("value '{value}' is not in supported format, error:{e}"))
    }
);

/// The request as templates see it.
struct Request {
    headers: BTreeMap<String, Vec<String>>,
    query: BTreeMap<String, Vec<Option<String>>>,
    unnamed: Vec<String>,
    named: std::collections::HashMap<String, String>,
    shared: Option<crate::template::SharedValues>,
}

impl Request {
    fn env(&self) -> Env<'_> {
        Env {
            headers: &self.headers,
            query: &self.query,
            captures_unnamed: &self.unnamed,
            captures_named: &self.named,
            shared: self.shared.as_ref(),
        }
    }

    fn render(&self, value: &str) -> Result<String, Error> {
        Template::parse(value)
            .and_then(|t| t.render(&self.env()))
            .map_err(|e| Error::msg(format!("failed to render the template '{value}': {e}")))
    }
}

/// Arguments (query or form) as Kong's tables: a value, a flag (`true`) or a list.
type Args = Map<String, Value>;

fn args_of(query: BTreeMap<String, QueryValue>) -> Args {
    fn one(v: QueryValue) -> Value {
        match v {
            QueryValue::Flag => Value::Bool(true),
            QueryValue::Value(s) => Value::String(s),
            QueryValue::List(items) => Value::Array(items.into_iter().map(one).collect()),
        }
    }
    query.into_iter().map(|(k, v)| (k, one(v))).collect()
}

/// Decodes a form body (`a=1&a=2&b`).
fn decode_form(body: &[u8]) -> Args {
    let mut args = Args::new();
    for part in String::from_utf8_lossy(body).split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (decode(k), Value::String(decode(v))),
            None => (decode(part), Value::Bool(true)),
        };
        match args.get_mut(&k) {
            Some(Value::Array(list)) => list.push(v),
            Some(old) => *old = Value::Array(vec![old.take(), v]),
            None => {
                args.insert(k, v);
            }
        }
    }
    args
}

fn decode(s: &str) -> String {
    let bytes = s.replace('+', " ");
    let bytes = bytes.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kong's `encode_args`: sorted keys, lists as repeated keys, flags bare.
fn encode_args(args: &Args) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
    let mut keys: Vec<&String> = args.keys().collect();
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let items = match &args[k] {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        for item in items {
            match item {
                Value::Bool(true) => out.push(enc(k)),
                Value::String(s) => out.push(format!("{}={}", enc(k), enc(&s))),
                Value::Number(n) => out.push(format!("{}={n}", enc(k))),
                _ => {}
            }
        }
    }
    out.join("&")
}

/// Lua truthiness of a member.
fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null) | Some(Value::Bool(false)))
}

/// Appends `v` to `current` as Kong's `append_value` does.
fn appended(current: Option<Value>, v: Value) -> Value {
    match current {
        Some(Value::Array(mut list)) => {
            list.push(v);
            Value::Array(list)
        }
        Some(Value::Null) | None => Value::Array(vec![v]),
        Some(one) => Value::Array(vec![one, v]),
    }
}

/// The arguments' operations, shared by form bodies, JSON bodies and the query string:
/// remove → rename → replace → add → append. `only_add_when_nil`: form and query arguments
/// are added when absent; JSON members when falsy. `existing`: remove, rename and replace
/// apply (a JSON body that was empty has nothing to change).
#[allow(clippy::too_many_arguments)]
fn transform_args(
    req: &Request,
    args: &mut Args,
    remove: &[String],
    rename: &[KeyValue],
    replace: &[KeyValue],
    add: &[KeyValue],
    append: &[KeyValue],
    existing: bool,
    json: bool,
) -> Result<bool, Error> {
    let mut changed = false;
    if existing {
        for name in remove {
            changed |= args.remove(split(name).0).is_some();
        }
        for pair in rename {
            if let (old, Some(new)) = split(&pair.0)
                && old != new
                && let Some(v) = args.remove(old)
            {
                args.insert(new.to_owned(), v);
                changed = true;
            }
        }
        for pair in replace {
            if let (name, Some(value)) = split(&pair.0)
                && (if json {
                    truthy(args.get(name))
                } else {
                    args.contains_key(name)
                })
            {
                args.insert(name.to_owned(), Value::String(req.render(value)?));
                changed = true;
            }
        }
    }
    for pair in add {
        if let (name, Some(value)) = split(&pair.0)
            && (if json {
                !truthy(args.get(name))
            } else {
                !args.contains_key(name)
            })
        {
            args.insert(name.to_owned(), Value::String(req.render(value)?));
            changed = true;
        }
    }
    for pair in append {
        if let (name, Some(value)) = split(&pair.0) {
            let v = Value::String(req.render(value)?);
            let current = args.remove(name);
            args.insert(name.to_owned(), appended(current, v));
            changed = true;
        }
    }
    Ok(changed)
}

/// The largest body this plugin reads to transform it; larger bodies go upstream untouched.
const MAX_BODY: usize = 16 << 20;

impl RequestTransformer {
    fn body_ops(&self) -> bool {
        !(self.remove.body.is_empty()
            && self.rename.body.is_empty()
            && self.replace.body.is_empty()
            && self.add.body.is_empty()
            && self.append.body.is_empty())
    }

    fn query_ops(&self) -> bool {
        !(self.remove.querystring.is_empty()
            && self.rename.querystring.is_empty()
            && self.replace.querystring.is_empty()
            && self.add.querystring.is_empty()
            && self.append.querystring.is_empty())
    }

    fn headers(&self, kong: &mut Kong<'_, Access>, req: &Request) -> kong_pdk::Result {
        // The working copy: the request's headers without Host.
        let mut work: BTreeMap<String, Vec<String>> = req.headers.clone();
        work.remove("host");
        let mut cleared: Vec<String> = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        let mut host: Option<String> = None;
        for name in &self.remove.headers {
            let name = split(&name.0).0.to_ascii_lowercase();
            if work.remove(&name).is_some() {
                cleared.push(name);
            }
        }
        for pair in &self.rename.headers {
            let (old, Some(new)) = split(&pair.0) else { continue };
            let (old, new) = (old.to_ascii_lowercase(), new.to_ascii_lowercase());
            if old == new {
                continue;
            }
            if let Some(values) = work.remove(&old) {
                work.insert(new.clone(), values);
                cleared.push(old);
                touched.push(new);
            }
        }
        for pair in &self.replace.headers {
            let (name, Some(value)) = split(&pair.0) else { continue };
            let lower = name.to_ascii_lowercase();
            if lower == "host" {
                host = Some(req.render(value)?);
            } else if work.contains_key(&lower) {
                work.insert(lower.clone(), vec![req.render(value)?]);
                touched.push(lower);
            }
        }
        for pair in &self.add.headers {
            let (name, Some(value)) = split(&pair.0) else { continue };
            let lower = name.to_ascii_lowercase();
            if lower != "host" && !work.contains_key(&lower) {
                work.insert(lower.clone(), vec![req.render(value)?]);
                touched.push(lower);
            }
        }
        for pair in &self.append.headers {
            let (name, Some(value)) = split(&pair.0) else { continue };
            let lower = name.to_ascii_lowercase();
            let v = req.render(value)?;
            work.entry(lower.clone()).or_default().push(v);
            touched.push(lower);
        }
        let mut upstream = kong.service();
        let mut upstream = upstream.request();
        for name in cleared.iter().filter(|n| !work.contains_key(*n)) {
            upstream.clear_header(name)?;
        }
        touched.sort();
        touched.dedup();
        for name in &touched {
            if let Some(values) = work.get(name) {
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                upstream.clear_header(name)?;
                for v in values {
                    upstream.add_header(name, v)?;
                }
            }
        }
        if let Some(host) = host {
            upstream.set_header("Host", host)?;
        }
        Ok(())
    }

    async fn body(&self, kong: &mut Kong<'_, Access>, req: &Request) -> kong_pdk::Result {
        if !self.body_ops() {
            return Ok(());
        }
        let request = kong.request();
        let original = request.get_header("content-type").unwrap_or_default();
        // The boundary as the client wrote it; the media types compared in lower case.
        let boundary = multipart::boundary(original);
        let content_type = original.to_ascii_lowercase();
        let json = content_type.contains("application/json");
        let form = content_type.contains("application/x-www-form-urlencoded");
        if !(json || form || boundary.is_some()) {
            return Ok(());
        }
        let Some(body) = kong.request().get_raw_body_within(MAX_BODY).await? else {
            kong.log().warn("request body too large to transform; sent as it came");
            return Ok(());
        };
        let existing = !body.is_empty();
        if let Some(boundary) = boundary {
            return self.multipart_body(kong, req, &body, &boundary, existing);
        }
        let mut args = if json {
            if body.is_empty() {
                Args::new()
            } else {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Object(m)) => m,
                    _ => return Ok(()), // not a JSON object: untouched
                }
            }
        } else {
            decode_form(&body)
        };
        let changed = transform_args(
            req,
            &mut args,
            &self.remove.body,
            &self.rename.body,
            &self.replace.body,
            &self.add.body,
            &self.append.body,
            existing,
            json,
        )?;
        if changed {
            let bytes = if json {
                serde_json::to_vec(&Value::Object(args)).map_err(|e| Error::msg(e.to_string()))?
            } else {
                encode_args(&args).into_bytes()
            };
            kong.service().request().set_raw_body(bytes);
        }
        Ok(())
    }

    /// Kong's `transform_multipart_body`: rename → remove → replace → add (no append), each
    /// part kept as it came but for the ones changed; a body that does not parse goes
    /// upstream untouched.
    fn multipart_body(
        &self,
        kong: &mut Kong<'_, Access>,
        req: &Request,
        body: &[u8],
        boundary: &str,
        existing: bool,
    ) -> kong_pdk::Result {
        let Some(mut parts) = multipart::parse(body, boundary) else {
            return Ok(());
        };
        let mut changed = false;
        if existing {
            for pair in &self.rename.body {
                if let (old, Some(new)) = split(&pair.0)
                    && old != new
                    && let Some(at) = parts.iter().position(|p| p.name == old)
                {
                    let value = parts.remove(at).value;
                    multipart::set(&mut parts, new, value);
                    changed = true;
                }
            }
            for name in &self.remove.body {
                let name = split(name).0;
                parts.retain(|p| p.name != name);
                changed = true;
            }
            for pair in &self.replace.body {
                if let (name, Some(value)) = split(&pair.0)
                    && parts.iter().any(|p| p.name == name)
                {
                    parts.retain(|p| p.name != name);
                    multipart::set(&mut parts, name, req.render(value)?.into_bytes());
                    changed = true;
                }
            }
        }
        for pair in &self.add.body {
            if let (name, Some(value)) = split(&pair.0)
                && !parts.iter().any(|p| p.name == name)
            {
                multipart::set(&mut parts, name, req.render(value)?.into_bytes());
                changed = true;
            }
        }
        if changed {
            kong.service()
                .request()
                .set_raw_body(multipart::encode(&parts, boundary));
        }
        Ok(())
    }

    fn querystring(&self, kong: &mut Kong<'_, Access>, req: &Request, extra: Option<Args>) -> kong_pdk::Result {
        if !self.query_ops() && extra.is_none() {
            return Ok(());
        }
        let mut args = args_of(kong.request().get_query(100));
        if let Some(extra) = extra {
            for (k, v) in extra {
                let merged = match args.remove(&k) {
                    None => v,
                    Some(old) => {
                        let mut list = match old {
                            Value::Array(l) => l,
                            one => vec![one],
                        };
                        match v {
                            Value::Array(more) => list.extend(more),
                            one => list.push(one),
                        }
                        Value::Array(list)
                    }
                };
                args.insert(k, merged);
            }
        }
        transform_args(
            req,
            &mut args,
            &self.remove.querystring,
            &self.rename.querystring,
            &self.replace.querystring,
            &self.add.querystring,
            &self.append.querystring,
            true,
            false,
        )?;
        kong.service().request().set_raw_query(&encode_args(&args));
        Ok(())
    }
}

#[handler]
impl Handler for RequestTransformer {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let request = kong.request();
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in request.get_headers() {
            headers
                .entry(name.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let mut query: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
        for (k, v) in request.get_query(100) {
            let values = match v {
                QueryValue::List(items) => items,
                one => vec![one],
            };
            query.insert(
                k,
                values
                    .into_iter()
                    .map(|v| match v {
                        QueryValue::Value(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
            );
        }
        let captures = request.get_uri_captures();
        let (unnamed, named) = (captures.unnamed.clone(), captures.named.clone());
        let shared = kong.ctx().shared().get::<crate::template::SharedValues>().cloned();
        let req = Request {
            headers,
            query,
            unnamed,
            named,
            shared,
        };

        if let Some(uri) = &self.replace.uri {
            let path = req.render(&uri.0)?;
            kong.service().request().set_path(&path)?;
        }
        let mut from_form = None;
        if let Some(method) = &self.http_method {
            let method = method.to_ascii_uppercase();
            kong.service().request().set_method(&method)?;
            let form = kong
                .request()
                .get_header("content-type")
                .is_some_and(|ct| ct.to_ascii_lowercase().contains("application/x-www-form-urlencoded"));
            if matches!(method.as_str(), "GET" | "HEAD" | "TRACE")
                && form
                && let Some(body) = kong.request().get_raw_body_within(MAX_BODY).await?
            {
                from_form = Some(decode_form(&body));
            }
        }
        self.headers(kong, &req)?;
        self.body(kong, &req).await?;
        self.querystring(kong, &req, from_form)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_encode_as_kongs_args() {
        let args = decode_form(b"b=2&a=1&a=x%20y&flag");
        assert_eq!(args["a"], serde_json::json!(["1", "x y"]));
        assert_eq!(args["flag"], Value::Bool(true));
        assert_eq!(encode_args(&args), "a=1&a=x%20y&b=2&flag");
    }
}

/// `multipart/form-data` bodies, byte for byte (file parts are not text): parts split on the
/// boundary, each with its header block and value, and written back in the same form.
mod multipart {
    /// One part: its `name` (from `Content-Disposition`), its header lines as they came, its
    /// value.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) struct Part {
        pub(super) name: String,
        pub(super) headers: Vec<u8>,
        pub(super) value: Vec<u8>,
    }

    /// The `boundary` parameter of a `multipart/form-data` content type.
    pub(super) fn boundary(content_type: &str) -> Option<String> {
        let (kind, params) = content_type.split_once(';')?;
        if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
            return None;
        }
        params.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.trim().trim_matches('"');
            (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty()).then(|| v.to_owned())
        })
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// The parts of `body`; `None` when it is not a complete multipart body.
    pub(super) fn parse(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
        let delimiter = format!("--{boundary}");
        let next = format!("\r\n--{boundary}");
        let mut rest = &body[find(body, delimiter.as_bytes())? + delimiter.len()..];
        let mut parts = Vec::new();
        loop {
            if rest.starts_with(b"--") {
                return Some(parts);
            }
            rest = rest.strip_prefix(b"\r\n")?;
            let end = find(rest, next.as_bytes())?;
            let part = &rest[..end];
            rest = &rest[end + next.len()..];
            let split = find(part, b"\r\n\r\n")?;
            let (headers, value) = (&part[..split], &part[split + 4..]);
            let name = std::str::from_utf8(headers).ok()?.split("\r\n").find_map(|line| {
                let (h, v) = line.split_once(':')?;
                if !h.trim().eq_ignore_ascii_case("content-disposition") {
                    return None;
                }
                v.split(';')
                    .find_map(|p| p.trim().strip_prefix("name=").map(|n| n.trim_matches('"').to_owned()))
            })?;
            parts.push(Part {
                name,
                headers: headers.to_vec(),
                value: value.to_vec(),
            });
        }
    }

    /// Adds a simple field part (lua-multipart's `set_simple`), after the others.
    pub(super) fn set(parts: &mut Vec<Part>, name: &str, value: Vec<u8>) {
        parts.push(Part {
            name: name.to_owned(),
            headers: format!("Content-Disposition: form-data; name=\"{name}\"").into_bytes(),
            value,
        });
    }

    /// The body of `parts` with `boundary`.
    pub(super) fn encode(parts: &[Part], boundary: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.headers.len() + p.value.len() + 64).sum());
        for part in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            out.extend_from_slice(&part.headers);
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(&part.value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parts_round_trip_byte_for_byte() {
            let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\xff\r\n--\r\n\
--XyZ--\r\n";
            let parts = parse(body, "XyZ").unwrap();
            assert_eq!(parts.len(), 2);
            assert_eq!((parts[0].name.as_str(), parts[0].value.as_slice()), ("a", &b"1"[..]));
            assert_eq!(parts[1].value, b"\x00\xff\r\n--");
            assert_eq!(encode(&parts, "XyZ"), body.to_vec());
            assert!(parse(b"--XyZ\r\nno end", "XyZ").is_none());
            assert_eq!(
                boundary("multipart/form-data; boundary=\"XyZ\"").as_deref(),
                Some("XyZ")
            );
            assert_eq!(boundary("application/json"), None);
        }
    }
}
