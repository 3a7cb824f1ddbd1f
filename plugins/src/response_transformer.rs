//! `response-transformer` (Kong's `kong/plugins/response-transformer`): changes the response
//! on its way to the client: headers (remove, rename, replace, add, append, in that order) in
//! header_filter, and the members of a JSON body in body_filter. The body is held back and
//! rewritten only when a JSON change is configured and the response is JSON.

use kong_pdk::prelude::*;
use kong_pdk::schema::{ConfigType, FieldSchema};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The plugin's configuration (Kong's `response-transformer/schema.lua`).
#[plugin(priority = 800, version = "3.10.0", name = "response-transformer", protocols = protocols_http)]
pub struct ResponseTransformer {
    /// Members and headers to remove.
    pub remove: Names,
    /// `old:new` members and headers to rename.
    pub rename: Renames,
    /// `name:value` members and headers to replace, when present.
    pub replace: Pairs,
    /// `name:value` members and headers to add, when absent.
    pub add: Pairs,
    /// `name:value` members and headers to append.
    pub append: Pairs,
}

/// Names of JSON members and headers.
#[record]
pub struct Names {
    /// JSON members.
    #[field(required, default = [])]
    pub json: Vec<String>,
    /// Headers.
    #[field(required, default = [])]
    pub headers: Vec<String>,
}

/// `old:new` renames.
#[record]
pub struct Renames {
    /// JSON members.
    #[field(required, default = [], elements(match = "^[^:]+:.*$"))]
    pub json: Vec<String>,
    /// Headers: both names must be header names.
    #[field(required, default = [])]
    pub headers: Vec<HeaderPair>,
}

/// `name:value` pairs, with the JSON values' types.
#[record]
pub struct Pairs {
    /// JSON members.
    #[field(required, default = [], elements(match = "^[^:]+:.*$"))]
    pub json: Vec<String>,
    /// The type of each JSON value, by position: `boolean`, `number` or `string` (the
    /// default).
    #[field(required, default = [], elements(one_of = ["boolean", "number", "string"]))]
    pub json_types: Vec<String>,
    /// Headers.
    #[field(required, default = [], elements(match = "^[^:]+:.*$"))]
    pub headers: Vec<String>,
}

/// `old:new`, both header names (Kong's `validate_colon_headers`).
#[derive(Debug, Clone)]
pub struct HeaderPair(pub String);

fn header_pair(v: &Value) -> Result<(), String> {
    let text = v.as_str().unwrap_or_default();
    if !text.contains(':') || text.starts_with(':') {
        return Err(format!("invalid value: {text}"));
    }
    let (name, value) = split(text);
    for n in [Some(name), value].into_iter().flatten() {
        if kong_pdk::schema::typedefs::validate_header_name(n).is_err() {
            return Err(format!("'{n}' is not a valid header"));
        }
    }
    Ok(())
}

impl<'de> Deserialize<'de> for HeaderPair {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(HeaderPair)
    }
}

impl ConfigType for HeaderPair {
    fn field_schema() -> FieldSchema {
        FieldSchema::checked_string(header_pair)
    }
}

/// Kong's `^([^:]+):*(.-)$`: the name, and the value after the colons (`None` when empty).
pub(crate) fn split(pair: &str) -> (&str, Option<&str>) {
    let (name, rest) = pair.split_once(':').unwrap_or((pair, ""));
    let value = rest.trim_start_matches(':');
    (name, (!value.is_empty()).then_some(value))
}

/// Whether a `Content-Type` names JSON: `application/json` or `application/*+json`, among
/// comma-separated types, parameters ignored.
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(',').any(|t| {
            let t = t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            match t.split_once('/') {
                Some(("application", sub)) => sub == "json" || sub.ends_with("+json"),
                _ => false,
            }
        })
    })
}

/// A configured value as Kong's `json_value` makes it: the text, or with `number` its number
/// (`None` when it is not one), with `boolean` whether it is `true`.
fn json_value(text: &str, kind: Option<&str>) -> Option<Value> {
    match kind {
        Some("number") => {
            let n: f64 = text.trim().parse().ok()?;
            Some(if n.fract() == 0.0 && n.abs() < 9e15 {
                Value::from(n as i64)
            } else {
                Value::from(n)
            })
        }
        Some("boolean") => Some(Value::Bool(text == "true")),
        _ => Some(Value::from(text)),
    }
}

/// The type configured for the `i`th JSON pair.
fn typed(pairs: &Pairs, i: usize) -> Option<&str> {
    pairs.json_types.get(i).map(String::as_str)
}

/// Lua truthiness of a member: absent and `false` are false (`null` is not).
fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Bool(false)))
}

impl ResponseTransformer {
    fn body_changes(&self) -> bool {
        !(self.add.json.is_empty()
            && self.rename.json.is_empty()
            && self.remove.json.is_empty()
            && self.replace.json.is_empty()
            && self.append.json.is_empty())
    }

    /// Kong's `transform_json_body` on a decoded object.
    fn transform(&self, body: &mut Map<String, Value>) {
        for name in &self.remove.json {
            body.remove(split(name).0);
        }
        for pair in &self.rename.json {
            if let (old, Some(new)) = split(pair)
                && let Some(value) = body.remove(old)
            {
                body.insert(new.to_owned(), value);
            }
        }
        for (i, pair) in self.replace.json.iter().enumerate() {
            if let (name, Some(text)) = split(pair)
                && let Some(v) = json_value(text, typed(&self.replace, i))
                && truthy(body.get(name))
            {
                body.insert(name.to_owned(), v);
            }
        }
        for (i, pair) in self.add.json.iter().enumerate() {
            if let (name, Some(text)) = split(pair)
                && let Some(v) = json_value(text, typed(&self.add, i))
                && !truthy(body.get(name))
            {
                body.insert(name.to_owned(), v);
            }
        }
        for (i, pair) in self.append.json.iter().enumerate() {
            if let (name, Some(text)) = split(pair)
                && let Some(v) = json_value(text, typed(&self.append, i))
            {
                let appended = match body.remove(name) {
                    Some(Value::Array(mut list)) => {
                        list.push(v);
                        Value::Array(list)
                    }
                    Some(Value::String(s)) => Value::Array(vec![Value::String(s), v]),
                    _ => Value::Array(vec![v]),
                };
                body.insert(name.to_owned(), appended);
            }
        }
    }
}

#[handler]
impl Handler for ResponseTransformer {
    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        // Each step looks at the headers as they came (Kong passes `get_headers()` once).
        let before = kong.response().get_headers().clone();
        let had = |name: &str| before.contains_key(name);
        let mut response = kong.response();
        for name in &self.remove.headers {
            response.clear_header(split(name).0)?;
        }
        for pair in &self.rename.headers {
            if let (old, Some(new)) = split(&pair.0)
                && had(old)
            {
                let values: Vec<String> = before
                    .get_all(old)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                response.set_header_values(new, &values)?;
                response.clear_header(old)?;
            }
        }
        for pair in &self.replace.headers {
            if let (name, Some(value)) = split(pair)
                && had(name)
            {
                response.set_header(name, value)?;
            }
        }
        for pair in &self.add.headers {
            if let (name, Some(value)) = split(pair)
                && !had(name)
            {
                response.set_header(name, value)?;
            }
        }
        for pair in &self.append.headers {
            if let (name, Some(value)) = split(pair) {
                response.add_header(name, value)?;
            }
        }
        let content_type = before.get("content-type").and_then(|v| v.to_str().ok());
        if self.body_changes() && is_json(content_type) {
            response.clear_header("Content-Length")?;
        }
        Ok(())
    }

    async fn body_filter(&self, kong: &mut Kong<BodyFilter>) -> kong_pdk::Result {
        if !self.body_changes() || !is_json(kong.response().get_header("Content-Type")) {
            return Ok(());
        }
        let Some(body) = kong.response().get_raw_body() else {
            return Ok(()); // held back until the last chunk
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(mut members)) => {
                self.transform(&mut members);
                let text = serde_json::to_vec(&Value::Object(members)).unwrap_or_else(|_| body.to_vec());
                kong.response().set_raw_body(text);
            }
            Ok(_) => {}
            Err(_) => kong.log().warn("body transform failed: failed parsing json body"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_as_kongs_pattern() {
        assert_eq!(split("a:b"), ("a", Some("b")));
        assert_eq!(split("a::b:c"), ("a", Some("b:c")));
        assert_eq!(split("a:"), ("a", None));
        assert_eq!(split("a"), ("a", None));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json; charset=utf-8")));
        assert!(is_json(Some("application/problem+json")));
        assert!(is_json(Some("text/plain, application/json")));
        assert!(!is_json(Some("application/x-www-form-urlencoded")));
        assert!(!is_json(None));
    }
}
