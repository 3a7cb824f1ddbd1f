//! Admin API request bodies with Kong's conventions (`kong/api/arguments.lua`): JSON as-is;
//! form-encoded keys build records (`config.x=1`), arrays (`paths[]=/a`, `paths[1]=/a`,
//! repeated keys) and maps (`headers.x=v`, `headers[x]=v`); values are typed by the schema
//! (`"true"` → true, `"5"` → 5, a scalar for an array → a one-element array) and `""` means
//! null.

use serde_json::{Map, Value};

use crate::schema::{FieldKind, FieldSchema, RecordSchema};

/// Decodes an `application/x-www-form-urlencoded` body into a JSON object (strings only;
/// [`infer`] types them).
pub(crate) fn form(body: &str) -> Map<String, Value> {
    let mut root = Map::new();
    for (key, value) in pairs(body) {
        insert(&mut root, &path_of(&key), Value::String(value));
    }
    root.values_mut().for_each(densify);
    root
}

/// The decoded `key=value` pairs of a query string or form body, in order, repeats kept.
pub(crate) fn pairs(s: &str) -> impl Iterator<Item = (String, String)> + '_ {
    s.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (
            crate::pdk::request::percent_decode(k, true),
            crate::pdk::request::percent_decode(v, true),
        )
    })
}

/// Decodes a `multipart/form-data` body with `boundary` like a form: each part's `name` is a
/// key with the same conventions. `None` when the body is not valid multipart.
pub(crate) fn multipart(body: &[u8], boundary: &str) -> Option<Map<String, Value>> {
    let delimiter = format!("--{boundary}");
    let text = std::str::from_utf8(body).ok()?;
    let mut root = Map::new();
    let mut seen_end = false;
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            seen_end = true;
            break;
        }
        let part = part.strip_prefix("\r\n").or_else(|| part.strip_prefix('\n'))?;
        let (head, value) = part.split_once("\r\n\r\n").or_else(|| part.split_once("\n\n"))?;
        let value = value
            .strip_suffix("\r\n")
            .or_else(|| value.strip_suffix('\n'))
            .unwrap_or(value);
        let name = head.lines().find_map(|line| {
            let (h, v) = line.split_once(':')?;
            if !h.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            v.split(';').find_map(|p| {
                let p = p.trim();
                p.strip_prefix("name=").map(|n| n.trim_matches('"').to_owned())
            })
        })?;
        insert(&mut root, &path_of(&name), Value::String(value.to_owned()));
    }
    root.values_mut().for_each(densify);
    seen_end.then_some(root)
}

#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    Push,
}

/// `config.a[b][]` → [Key(config), Key(a), Key(b), Push].
fn path_of(key: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, part) in key.split('.').enumerate() {
        let (name, mut rest) = match part.find('[') {
            Some(b) => (&part[..b], &part[b..]),
            None => (part, ""),
        };
        if !name.is_empty() || i == 0 {
            steps.push(Step::Key(name.to_owned()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            let idx = &inner[..end];
            steps.push(if idx.is_empty() {
                Step::Push
            } else if let Ok(n) = idx.parse::<usize>() {
                Step::Index(n.max(1) - 1)
            } else {
                Step::Key(idx.to_owned())
            });
            rest = &inner[end + 1..];
        }
    }
    steps
}

fn insert(obj: &mut Map<String, Value>, path: &[Step], value: Value) {
    let Some((Step::Key(first), rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        // A repeated key makes an array.
        match obj.get_mut(first) {
            Some(Value::Array(a)) => a.push(value),
            Some(existing) => {
                let prev = existing.take();
                *existing = Value::Array(vec![prev, value]);
            }
            None => {
                obj.insert(first.clone(), value);
            }
        }
        return;
    }
    let slot = obj.entry(first.clone()).or_insert(Value::Null);
    insert_at(slot, rest, value);
}

fn insert_at(slot: &mut Value, path: &[Step], value: Value) {
    let Some((step, rest)) = path.split_first() else {
        *slot = value;
        return;
    };
    match step {
        Step::Key(k) => {
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(m) = slot {
                if rest.is_empty() {
                    insert(m, &[Step::Key(k.clone())], value);
                } else {
                    insert_at(m.entry(k.clone()).or_insert(Value::Null), rest, value);
                }
            }
        }
        Step::Push | Step::Index(_) => {
            // Indexes never size anything: an index past the end keeps the elements in an
            // object keyed by their 1-based index, which `densify` turns back into an array
            // when the indexes leave no gap (`hosts[2]=b&hosts[1]=a`); a gap stays an object,
            // which the schema answers with Kong's "expected an array".
            if slot.is_null() {
                *slot = Value::Array(Vec::new());
            }
            match slot {
                Value::Array(a) => {
                    let i = match step {
                        Step::Index(i) => *i,
                        _ => a.len(),
                    };
                    if i < a.len() {
                        insert_at(&mut a[i], rest, value);
                    } else if i == a.len() {
                        a.push(Value::Null);
                        insert_at(&mut a[i], rest, value);
                    } else {
                        let mut m: Map<String, Value> =
                            a.drain(..).enumerate().map(|(n, v)| ((n + 1).to_string(), v)).collect();
                        insert_at(m.entry((i + 1).to_string()).or_insert(Value::Null), rest, value);
                        *slot = Value::Object(m);
                    }
                }
                Value::Object(m) => {
                    let key = match step {
                        Step::Index(i) => i.saturating_add(1),
                        _ => m
                            .keys()
                            .filter_map(|k| k.parse::<usize>().ok())
                            .max()
                            .unwrap_or(0)
                            .saturating_add(1),
                    };
                    insert_at(m.entry(key.to_string()).or_insert(Value::Null), rest, value);
                }
                other => {
                    let prev = other.take();
                    *other = Value::Array(vec![prev]);
                    insert_at(other, path, value);
                }
            }
        }
    }
}

/// Turns the index-keyed objects [`insert_at`] leaves for out-of-order indexes back into
/// arrays when their keys are exactly `1..=n`.
fn densify(value: &mut Value) {
    match value {
        Value::Array(a) => a.iter_mut().for_each(densify),
        Value::Object(m) => {
            m.values_mut().for_each(densify);
            let n = m.len();
            let dense = n > 0
                && m.keys().all(|k| {
                    k.parse::<usize>()
                        .is_ok_and(|i| (1..=n).contains(&i) && !k.starts_with('0'))
                });
            if dense {
                let mut items = vec![Value::Null; n];
                for (k, v) in std::mem::take(m) {
                    if let Ok(i) = k.parse::<usize>() {
                        items[i - 1] = v;
                    }
                }
                *value = Value::Array(items);
            }
        }
        _ => {}
    }
}

/// Types form values by `schema`: numbers, booleans, one-element arrays, `""` → null.
pub(crate) fn infer(value: &mut Value, schema: &FieldSchema) {
    if value.as_str() == Some("") {
        *value = Value::Null;
        return;
    }
    match &schema.kind {
        FieldKind::Integer | FieldKind::Number => {
            if let Some(n) = value.as_str().and_then(|s| s.parse::<serde_json::Number>().ok()) {
                *value = Value::Number(n);
            }
        }
        FieldKind::Boolean => match value.as_str() {
            Some("true") => *value = Value::Bool(true),
            Some("false") => *value = Value::Bool(false),
            _ => {}
        },
        FieldKind::Array(elem) | FieldKind::Set(elem) => {
            // An object here is a sparse index list: left for the schema to refuse.
            if !value.is_array() && !value.is_null() && !value.is_object() {
                *value = Value::Array(vec![value.take()]);
            }
            if let Value::Array(items) = value {
                items.retain(|v| !v.is_null());
                for item in items {
                    infer(item, elem);
                }
            }
        }
        FieldKind::Map { values, .. } => {
            if let Value::Object(m) = value {
                for v in m.values_mut() {
                    infer(v, values);
                }
            }
        }
        FieldKind::Record(record) => infer_record(value, record),
        FieldKind::String | FieldKind::Foreign { .. } => {}
    }
}

/// [`infer`] over the fields of a record.
pub(crate) fn infer_record(value: &mut Value, record: &RecordSchema) {
    if let Value::Object(m) = value {
        for field in &record.fields {
            if let Some(v) = m.get_mut(&field.name) {
                infer(v, &field.schema);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms_build_records_arrays_and_maps() {
        let m = form(
            "name=svc&config.response_header_name=X-Custom&paths[]=/a&paths[]=/b&methods=GET&hosts[2]=b&hosts[1]=a&headers.x-version=v1&headers[x-other]=o&tags=a&tags=b&url=http%3A%2F%2Fmock%3A15555%2Fp%20q",
        );
        assert_eq!(
            Value::Object(m),
            json!({
                "name": "svc",
                "config": { "response_header_name": "X-Custom" },
                "paths": ["/a", "/b"],
                "methods": "GET",
                "hosts": ["a", "b"],
                "headers": { "x-version": "v1", "x-other": "o" },
                "tags": ["a", "b"],
                "url": "http://mock:15555/p q",
            })
        );
    }

    #[test]
    fn indexes_never_size_anything() {
        // Each of these once allocated by the index's value (OOM at 10^9, a capacity-overflow
        // panic at u64::MAX): now the gap stays an index-keyed object.
        for (body, key) in [
            ("tags[999999999]=x", "999999999"),
            ("tags[18446744073709551615]=x", "18446744073709551615"),
            ("tags[1]=a&tags[3]=c", "3"),
            ("config.a[5].b=x", "5"),
        ] {
            let m = Value::Object(form(body));
            let sparse = m.pointer("/tags").or_else(|| m.pointer("/config/a")).unwrap();
            assert!(sparse.get(key).is_some(), "{body}: {m}");
            assert!(!sparse.is_array(), "{body}: {m}");
        }
        // Out-of-order indexes without a gap are still an array, nested ones too.
        assert_eq!(
            Value::Object(form("a[2]=y&a[1]=x&r[2].k=2&r[1].k=1&p=/a&p[]=/b")),
            json!({ "a": ["x", "y"], "r": [{ "k": "1" }, { "k": "2" }], "p": ["/a", "/b"] })
        );
        // A sparse list left for the schema is not wrapped as one element.
        let mut v = json!({ "1": "a", "3": "c" });
        infer(
            &mut v,
            &FieldSchema::of(FieldKind::Set(Box::new(FieldSchema::of(FieldKind::String)))),
        );
        assert!(v.is_object());
    }

    #[test]
    fn multipart_bodies_follow_the_form_conventions() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nsvc\r\n--XyZ\r\ncontent-disposition: form-data; name=\"paths[]\"\r\n\r\n/a\r\n--XyZ\r\nContent-Disposition: form-data; name=\"config.x\"\r\n\r\nline1\r\nline2\r\n--XyZ--\r\n";
        let m = multipart(body.as_bytes(), "XyZ").unwrap();
        assert_eq!(
            Value::Object(m),
            json!({ "name": "svc", "paths": ["/a"], "config": { "x": "line1\r\nline2" } })
        );
        assert!(multipart(b"--XyZ\r\nno end", "XyZ").is_none());
    }

    #[test]
    fn values_are_typed_by_the_schema() {
        let record = RecordSchema {
            fields: vec![
                crate::schema::Field::new("port", FieldSchema::of(FieldKind::Integer)),
                crate::schema::Field::new("on", FieldSchema::of(FieldKind::Boolean)),
                crate::schema::Field::new(
                    "methods",
                    FieldSchema::of(FieldKind::Set(Box::new(FieldSchema::of(FieldKind::String)))),
                ),
                crate::schema::Field::new("path", FieldSchema::of(FieldKind::String)),
            ],
            entity_checks: vec![],
        };
        let mut v = Value::Object(form("port=8080&on=true&methods=GET&path="));
        infer_record(&mut v, &record);
        assert_eq!(v, json!({ "port": 8080, "on": true, "methods": ["GET"], "path": null }));
    }
}

#[cfg(test)]
mod prop_tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever keys and indexes a form carries, decoding it never panics and the result
        /// is never larger than a small multiple of the input: nothing is sized by an index.
        #[test]
        fn prop_forms_decode_within_the_input_size(body in "[a-z0-9\\[\\]=&.%_]{0,120}") {
            let decoded = Value::Object(form(&body));
            let size = decoded.to_string().len();
            prop_assert!(size <= 16 * body.len() + 16, "{body:?} became {size} bytes");
        }

        #[test]
        fn prop_inferred_values_never_panic(body in "[a-z\\[\\]=&.]{0,60}", numbers in "[0-9=&]{0,20}") {
            let record = RecordSchema {
                fields: vec![
                    crate::schema::Field::new("a", FieldSchema::of(FieldKind::Integer)),
                    crate::schema::Field::new(
                        "b",
                        FieldSchema::of(FieldKind::Set(Box::new(FieldSchema::of(FieldKind::String)))),
                    ),
                ],
                entity_checks: vec![],
            };
            let mut v = Value::Object(form(&format!("{body}&{numbers}")));
            infer_record(&mut v, &record);
        }
    }
}
