//! Rendering schemas in the JSON shape of Kong's `/schemas` endpoints.

use serde_json::{Map, Value};

use super::{EntityCheck, Field, FieldKind, FieldSchema};

/// `{"fields":[{"name":{...}}, ...], "entity_checks":[...]}`: both always, as Kong's
/// `schema_to_jsonable` (nested records carry their checks only when they have some).
pub(crate) fn schema_json(fields: &[Field], checks: &[EntityCheck]) -> Value {
    let mut out = Map::new();
    out.insert("fields".into(), fields_json(fields));
    out.insert("entity_checks".into(), checks_json(checks));
    Value::Object(out)
}

fn fields_json(fields: &[Field]) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|f| {
                let mut m = Map::new();
                m.insert(f.name.clone(), field_json(&f.schema, true));
                Value::Object(m)
            })
            .collect(),
    )
}

fn names(list: &[String]) -> Value {
    Value::Array(list.iter().map(|s| Value::String(s.clone())).collect())
}

fn checks_json(checks: &[EntityCheck]) -> Value {
    Value::Array(
        checks
            .iter()
            .filter(|c| !matches!(c, EntityCheck::Custom(_) | EntityCheck::Shorthand(_)))
            .map(|c| {
                let (key, value) = match c {
                    EntityCheck::AtLeastOneOf(f) => ("at_least_one_of", names(f)),
                    EntityCheck::OnlyOneOf(f) => ("only_one_of", names(f)),
                    EntityCheck::MutuallyExclusive(f) => ("mutually_exclusive", names(f)),
                    EntityCheck::MutuallyRequired(f) => ("mutually_required", names(f)),
                    EntityCheck::Distinct(f) => ("distinct", names(f)),
                    EntityCheck::Conditional(c) => {
                        let mut m = Map::new();
                        m.insert("if_field".into(), Value::String(c.if_field.clone()));
                        m.insert("if_match".into(), matcher_json(&c.if_match));
                        m.insert("then_field".into(), Value::String(c.then_field.clone()));
                        m.insert("then_match".into(), matcher_json(&c.then_match));
                        if let Some(e) = &c.then_err {
                            m.insert("then_err".into(), Value::String(e.clone()));
                        }
                        ("conditional", Value::Object(m))
                    }
                    EntityCheck::Custom(_) | EntityCheck::Shorthand(_) => ("custom_validator", Value::Null),
                };
                let mut m = Map::new();
                m.insert(key.into(), value);
                Value::Object(m)
            })
            .collect(),
    )
}

fn matcher_json(f: &FieldSchema) -> Value {
    let mut v = field_json(f, f.required);
    if let Value::Object(m) = &mut v {
        m.remove("type");
    }
    v
}

/// One field's attributes. `with_required` is false for elements, keys and values, where
/// Kong does not print the implicit `required`.
pub(crate) fn field_json(f: &FieldSchema, with_required: bool) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), Value::String(f.kind.type_name().into()));
    if let FieldKind::Foreign { reference } = f.kind {
        m.insert("reference".into(), Value::String(reference.into()));
    }
    // Kong prints `required` where the definition states it: when true, and in the
    // `required = false, default = ...` idiom.
    if with_required && (f.required || f.default.is_some()) {
        m.insert("required".into(), Value::Bool(f.required));
    }
    if let Some(d) = &f.default {
        m.insert("default".into(), d.clone());
    }
    if let Some(eq) = &f.eq {
        m.insert("eq".into(), eq.clone());
    }
    if let Some(one_of) = &f.one_of {
        m.insert("one_of".into(), Value::Array(one_of.clone()));
    }
    if let Some(gt) = &f.gt {
        m.insert("gt".into(), gt.clone());
    }
    if let Some((lo, hi)) = &f.between {
        m.insert("between".into(), Value::Array(vec![lo.clone(), hi.clone()]));
    }
    for (key, v) in [("len_eq", f.len_eq), ("len_min", f.len_min), ("len_max", f.len_max)] {
        if let Some(v) = v {
            m.insert(key.into(), Value::from(v));
        }
    }
    if let Some(s) = &f.starts_with {
        m.insert("starts_with".into(), Value::String(s.clone()));
    }
    if !f.match_none.is_empty() {
        let list = f
            .match_none
            .iter()
            .map(|(p, err)| {
                let mut e = Map::new();
                e.insert("pattern".into(), Value::String(p.as_str().into()));
                e.insert("err".into(), Value::String((*err).into()));
                Value::Object(e)
            })
            .collect();
        m.insert("match_none".into(), Value::Array(list));
    }
    if let Some(p) = &f.pattern {
        m.insert("match".into(), Value::String(p.as_str().into()));
    }
    for (key, on) in [
        ("uuid", f.uuid),
        ("referenceable", f.referenceable),
        ("encrypted", f.encrypted),
    ] {
        if on {
            m.insert(key.into(), Value::Bool(true));
        }
    }
    if let Some(d) = &f.description {
        m.insert("description".into(), Value::String(d.clone()));
    }
    match &f.kind {
        FieldKind::Array(e) | FieldKind::Set(e) => {
            m.insert("elements".into(), field_json(e, false));
        }
        FieldKind::Map { keys, values } => {
            m.insert("keys".into(), field_json(keys, false));
            m.insert("values".into(), field_json(values, false));
        }
        FieldKind::Record(r) => {
            m.insert("fields".into(), fields_json(&r.fields));
            let own: Vec<EntityCheck> = r
                .entity_checks
                .iter()
                .filter(|c| !super::validate::is_plugin_level(c))
                .cloned()
                .collect();
            if !own.is_empty() {
                m.insert("entity_checks".into(), checks_json(&own));
            }
        }
        _ => {}
    }
    Value::Object(m)
}
