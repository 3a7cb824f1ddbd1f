//! Kong's `schema violation` error (code 2): the nested `fields` tree and its message.

use std::fmt;

use serde_json::{Map, Value, json};

/// A schema violation: Kong's error object with code 2.
///
/// `fields` mirrors the structure of the invalid input: a message per invalid field, nested
/// objects for records, arrays (with `null` for valid elements) for arrays and sets, and an
/// `"@entity"` list for checks across fields.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaViolation {
    fields: Value,
    message: String,
}

impl SchemaViolation {
    /// Builds the violation, composing the message as Kong's `errors:schema_violation` does.
    pub fn new(fields: Map<String, Value>) -> SchemaViolation {
        let message = compose(&fields);
        SchemaViolation {
            fields: Value::Object(fields),
            message,
        }
    }

    /// `schema violation (config.x: msg)` or `N schema violations (a; b)`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error tree.
    pub fn fields(&self) -> &Value {
        &self.fields
    }

    /// Kong's JSON error body: `{"code":2,"name":"schema violation","message":...,"fields":...}`.
    pub fn to_json(&self) -> Value {
        json!({
            "code": 2,
            "name": "schema violation",
            "message": self.message,
            "fields": self.fields,
        })
    }
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SchemaViolation {}

/// Keys of an error node in Kong's order: array indexes are 1-based numbers, object keys sort
/// as strings.
fn sorted_entries(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<(String, &Value)> = m.iter().map(|(k, v)| (k.clone(), v)).collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            keys
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null())
            .map(|(i, v)| ((i + 1).to_string(), v))
            .collect(),
        _ => Vec::new(),
    }
}

fn compose(errors: &Map<String, Value>) -> String {
    let mut buf: Vec<String> = Vec::new();
    if let Some(Value::Array(entity)) = errors.get("@entity") {
        buf.extend(entity.iter().map(plain));
    }
    let mut names: Vec<&String> = errors.keys().filter(|k| *k != "@entity").collect();
    names.sort();
    for name in names {
        let v = &errors[name];
        match v {
            Value::Object(_) | Value::Array(_) => {
                for (sub, value) in sorted_entries(v) {
                    let value = match value {
                        Value::String(s) => s.clone(),
                        other => pretty(other, 0),
                    };
                    buf.push(format!("{name}.{sub}: {value}"));
                }
            }
            other => buf.push(format!("{name}: {}", plain(other))),
        }
    }
    if buf.len() == 1 {
        format!("schema violation ({})", buf[0])
    } else {
        format!("{} schema violations ({})", buf.len(), buf.join("; "))
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => pretty(other, 0),
    }
}

fn is_lua_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Renders a nested error table as Penlight's `pretty.write` does.
fn pretty(v: &Value, depth: usize) -> String {
    let pad = "  ".repeat(depth + 1);
    let close = "  ".repeat(depth);
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|i| {
                    format!(
                        "{pad}{}",
                        if i.is_null() {
                            "\"userdata: NULL\"".to_owned()
                        } else {
                            pretty(i, depth + 1)
                        }
                    )
                })
                .collect();
            format!("{{\n{}\n{close}}}", items.join(",\n"))
        }
        Value::Object(_) => {
            let items: Vec<String> = sorted_entries(v)
                .into_iter()
                .map(|(k, val)| {
                    let key = if is_lua_ident(&k) { k } else { format!("[{k:?}]") };
                    format!("{pad}{key} = {}", pretty(val, depth + 1))
                })
                .collect();
            format!("{{\n{}\n{close}}}", items.join(",\n"))
        }
        other => other.to_string(),
    }
}
