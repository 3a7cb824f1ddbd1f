//! Validation with Kong's rules and messages (`kong/db/schema/init.lua`): defaults are filled
//! in, types checked, validators run in Kong's order, then entity checks.

use serde_json::{Map, Value};

use super::{Conditional, EntityCheck, FieldKind, FieldSchema, RecordSchema};

type ErrorNode = Value;

fn msg(s: impl Into<String>) -> ErrorNode {
    Value::String(s.into())
}

/// Formats a number as Kong's messages do: integers without a fraction.
pub(crate) fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => f.to_string(),
        None => v.to_string(),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(_) => num(v),
        other => other.to_string(),
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.is_finite() && f.fract() == 0.0),
        _ => false,
    }
}

/// Kong's "non-empty": not null, not `""`, not an empty table.
fn is_nonempty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

fn is_vault_reference(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.starts_with("{vault://") && s.ends_with('}'))
}

fn length_of(v: &Value) -> Option<usize> {
    match v {
        Value::String(s) => Some(s.chars().count()),
        Value::Array(a) => Some(a.len()),
        Value::Object(o) => Some(o.len()),
        _ => None,
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Runs the validators of `f` on a value of the right type, in Kong's order.
pub(crate) fn run_validators(f: &FieldSchema, v: &Value) -> Result<(), String> {
    if f.referenceable && is_vault_reference(v) {
        return Ok(());
    }
    if let Some(eq) = &f.eq
        && v != eq
    {
        return Err(if eq.is_null() {
            "value must be null".into()
        } else {
            format!("value must be {}", scalar_text(eq))
        });
    }
    if let Some(one_of) = &f.one_of {
        let found = one_of
            .iter()
            .any(|o| o == v || (o.is_number() && o.as_f64() == v.as_f64()));
        if !found {
            let list: Vec<String> = one_of.iter().map(scalar_text).collect();
            return Err(format!("expected one of: {}", list.join(", ")));
        }
    }
    if let Some(gt) = &f.gt
        && v.as_f64().partial_cmp(&gt.as_f64()) != Some(std::cmp::Ordering::Greater)
    {
        return Err(format!("value must be greater than {}", num(gt)));
    }
    if f.uuid && !v.as_str().is_some_and(is_uuid) {
        return Err("expected a valid UUID".into());
    }
    if let Some((lo, hi)) = &f.between {
        let x = v.as_f64();
        if x < lo.as_f64() || x > hi.as_f64() {
            return Err(format!("value should be between {} and {}", num(lo), num(hi)));
        }
    }
    if let Some(len) = length_of(v) {
        if let Some(n) = f.len_eq
            && len != n
        {
            return Err(format!("length must be {n}"));
        }
        let implicit_min = matches!(v, Value::String(_)).then_some(1);
        if let Some(n) = f.len_min.or(implicit_min)
            && len < n
        {
            return Err(format!("length must be at least {n}"));
        }
        if let Some(n) = f.len_max
            && len > n
        {
            return Err(format!("length must be at most {n}"));
        }
    }
    if let Value::String(s) = v {
        if let Some(prefix) = &f.starts_with
            && !s.starts_with(prefix.as_str())
        {
            return Err(format!("should start with: {prefix}"));
        }
        for (pattern, err) in &f.match_none {
            if pattern.is_match(s) {
                return Err((*err).to_owned());
            }
        }
        if let Some(p) = &f.pattern
            && !p.is_match(s)
        {
            return Err(format!("invalid value: {s}"));
        }
    }
    if let Some(custom) = f.custom_validator {
        custom(v)?;
    }
    Ok(())
}

/// Validates `value` against `f` in place (defaults filled in, sets de-duplicated).
pub(crate) fn validate_field(f: &FieldSchema, value: &mut Value) -> Result<(), ErrorNode> {
    if value.is_null() {
        if let Some(d) = &f.default {
            *value = d.clone();
        } else if f.required && matches!(f.kind, FieldKind::Record(_)) {
            *value = Value::Object(Map::new());
        }
    }
    if value.is_null() {
        if f.required {
            return Err(msg("required field missing"));
        }
        return match &f.eq {
            Some(eq) if !eq.is_null() => Err(msg(format!("value must be {}", scalar_text(eq)))),
            _ => Ok(()),
        };
    }
    match &f.kind {
        FieldKind::String if !value.is_string() => return Err(msg("expected a string")),
        FieldKind::Integer if !is_integer(value) => return Err(msg("expected an integer")),
        FieldKind::Number if !value.is_number() => return Err(msg("expected a number")),
        FieldKind::Boolean if !value.is_boolean() => return Err(msg("expected a boolean")),
        FieldKind::Array(_) if !value.is_array() => return Err(msg("expected an array")),
        FieldKind::Set(_) if !value.is_array() => return Err(msg("expected a set")),
        FieldKind::Map { .. } if !value.is_object() => return Err(msg("expected a map")),
        FieldKind::Record(_) if !value.is_object() => return Err(msg("expected a record")),
        FieldKind::Foreign { .. } if !value.is_object() => {
            return run_validators(f, value).map_err(msg).and(Err(msg("expected a record")));
        }
        _ => {}
    }
    run_validators(f, value).map_err(msg)?;
    match &f.kind {
        FieldKind::Array(elem) => validate_elements(elem, value, false),
        FieldKind::Set(elem) => validate_elements(elem, value, true),
        FieldKind::Map { keys, values } => validate_map(keys, values, value),
        FieldKind::Record(record) => validate_record(record, value),
        _ => Ok(()),
    }
}

fn validate_elements(elem: &FieldSchema, value: &mut Value, dedup: bool) -> Result<(), ErrorNode> {
    let Value::Array(items) = value else { return Ok(()) };
    let mut errors: Vec<Value> = vec![Value::Null; items.len()];
    let mut failed = false;
    let mut elem_required = elem.clone();
    elem_required.required = true;
    for (i, item) in items.iter_mut().enumerate() {
        if let Err(e) = validate_field(&elem_required, item) {
            errors[i] = e;
            failed = true;
        }
    }
    if failed {
        return Err(Value::Array(errors));
    }
    if dedup {
        let mut seen: Vec<Value> = Vec::with_capacity(items.len());
        items.retain(|v| {
            if seen.contains(v) {
                false
            } else {
                seen.push(v.clone());
                true
            }
        });
    }
    Ok(())
}

fn validate_map(keys: &FieldSchema, values: &FieldSchema, value: &mut Value) -> Result<(), ErrorNode> {
    let Value::Object(map) = value else { return Ok(()) };
    let mut errors = Map::new();
    let mut values_required = values.clone();
    values_required.required = true;
    for (k, v) in map.iter_mut() {
        let mut key = Value::String(k.clone());
        if let Err(e) = validate_field(keys, &mut key) {
            errors.insert(k.clone(), e);
            continue;
        }
        if let Err(e) = validate_field(&values_required, v) {
            errors.insert(k.clone(), e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Value::Object(errors))
    }
}

/// Validates a record's fields and entity checks.
pub(crate) fn validate_record(record: &RecordSchema, value: &mut Value) -> Result<(), ErrorNode> {
    let Value::Object(obj) = value else {
        return Err(msg("expected a record"));
    };
    let mut errors = Map::new();
    expand_shorthands(record, obj, &mut errors);
    for key in obj.keys() {
        if record.field(key).is_none() && !errors.contains_key(key) {
            errors.insert(key.clone(), msg("unknown field"));
        }
    }
    for field in &record.fields {
        // Kong fills defaults in for absent fields only: a required field sent as `null` is
        // missing, whatever its default.
        if field.schema.required && obj.get(&field.name).is_some_and(Value::is_null) {
            errors.insert(field.name.clone(), msg("required field missing"));
            continue;
        }
        let v = obj.entry(field.name.clone()).or_insert(Value::Null);
        if let Err(e) = validate_field(&field.schema, v) {
            errors.insert(field.name.clone(), e);
        }
    }
    let mut entity = Vec::new();
    for check in record.entity_checks.iter().filter(|c| !is_plugin_level(c)) {
        run_entity_check(record, check, obj, &mut errors, &mut entity);
    }
    if !entity.is_empty() {
        errors.insert(
            "@entity".into(),
            Value::Array(entity.into_iter().map(Value::String).collect()),
        );
    }
    if !errors.is_empty() {
        return Err(Value::Object(errors));
    }
    for check in &record.entity_checks {
        if let EntityCheck::Custom(custom) = check {
            custom(value).map_err(Value::String)?;
        }
    }
    Ok(())
}

fn quoted(fields: &[String]) -> String {
    fields.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ")
}

/// The deprecated alias fields of `record`.
fn shorthands(record: &RecordSchema) -> impl Iterator<Item = &super::Shorthand> {
    record.entity_checks.iter().filter_map(|c| match c {
        EntityCheck::Shorthand(s) => Some(&**s),
        _ => None,
    })
}

/// Kong's `process_auto_fields` for shorthands: each deprecated alias given a value moves to
/// the field that replaced it; the replacing field wins when set, and the two set to
/// different values is an error at the alias.
pub(crate) fn expand_shorthands(record: &RecordSchema, obj: &mut Map<String, Value>, errors: &mut Map<String, Value>) {
    for short in shorthands(record) {
        let Some(value) = obj.get(&short.name).filter(|v| !v.is_null()).cloned() else {
            obj.remove(&short.name);
            continue;
        };
        let current = value_at(obj, &short.path).filter(|v| !v.is_null()).cloned();
        if let Some(current) = current.filter(|c| *c != value) {
            errors.insert(
                short.name.clone(),
                Value::String(format!(
                    "both deprecated and new field are used but their values mismatch: {} = {} vs {} = {}",
                    short.name,
                    lua_text(&value),
                    short.path,
                    lua_text(&current)
                )),
            );
            continue;
        }
        obj.remove(&short.name);
        tracing::warn!(target: "kong", "config.{} is deprecated, please use config.{} instead", short.name, short.path);
        set_at(obj, &short.path, value);
    }
}

/// Adds each deprecated alias of `record` to `config` with its replacement's value.
pub(crate) fn show_shorthands(record: &RecordSchema, config: &mut Value) {
    let Value::Object(obj) = config else { return };
    for short in shorthands(record) {
        let value = value_at(obj, &short.path).cloned().unwrap_or(Value::Null);
        obj.insert(short.name.clone(), value);
    }
}

/// A value as Lua's `tostring` prints it in Kong's messages.
fn lua_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sets `path` (`a.b`) in `obj`, making the records on the way.
fn set_at(obj: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            obj.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let node = obj.entry(head).or_insert_with(|| Value::Object(Map::new()));
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            if let Value::Object(inner) = node {
                set_at(inner, rest, value);
            }
        }
    }
}

/// Merges `new` into `old` as Kong's `merge_values` does: fields of record type merge field by
/// field, everything else is replaced.
pub fn merge_records(record: &RecordSchema, old: &mut Map<String, Value>, new: Map<String, Value>) {
    for (k, v) in new {
        match (record.field(&k).map(|f| &f.kind), old.get_mut(&k), v) {
            (Some(FieldKind::Record(inner)), Some(Value::Object(o)), Value::Object(n)) => merge_records(inner, o, n),
            (_, _, v) => {
                old.insert(k, v);
            }
        }
    }
}

/// The fields a check names (none for a custom validator).
fn involved(check: &EntityCheck) -> Vec<&String> {
    match check {
        EntityCheck::AtLeastOneOf(f)
        | EntityCheck::OnlyOneOf(f)
        | EntityCheck::MutuallyExclusive(f)
        | EntityCheck::MutuallyRequired(f)
        | EntityCheck::Distinct(f) => f.iter().collect(),
        EntityCheck::Conditional(c) => vec![&c.if_field, &c.then_field],
        EntityCheck::Custom(_) | EntityCheck::Shorthand(_) => Vec::new(),
    }
}

/// Whether a check of a plugin's config record names `config.` paths: Kong's check of the
/// whole plugin entity, run by [`run_plugin_checks`] once the config is validated.
pub(crate) fn is_plugin_level(check: &EntityCheck) -> bool {
    involved(check).iter().any(|f| f.starts_with("config."))
}

/// Runs the plugin-level checks among `config`'s on the plugin entity `entity` (an object with
/// a `config`), as Kong runs a plugin schema's top-level `entity_checks`: errors go to their
/// paths (`config.redis.host`) and to a top-level `@entity`.
pub(crate) fn run_plugin_checks(config: &RecordSchema, entity: &Map<String, Value>, errors: &mut Map<String, Value>) {
    let checks: Vec<&EntityCheck> = config.entity_checks.iter().filter(|c| is_plugin_level(c)).collect();
    if checks.is_empty() {
        return;
    }
    let root = RecordSchema {
        fields: vec![super::Field::new("config", FieldSchema::record(config.clone()))],
        entity_checks: Vec::new(),
    };
    let mut messages = Vec::new();
    for check in checks {
        run_entity_check(&root, check, entity, errors, &mut messages);
    }
    if !messages.is_empty() {
        let list = errors.entry("@entity").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.extend(messages.into_iter().map(Value::String));
        }
    }
}

/// The value at `path` (`a` or `a.b.c`) of `obj`.
fn value_at<'v>(obj: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut value = obj.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The schema of the field at `path` in `record`.
fn field_at<'r>(record: &'r RecordSchema, path: &str) -> Option<&'r FieldSchema> {
    let mut parts = path.split('.');
    let mut field = record.field(parts.next()?)?;
    for part in parts {
        let FieldKind::Record(inner) = &field.kind else {
            return None;
        };
        field = inner.field(part)?;
    }
    Some(field)
}

/// Whether `errors` holds an error at `path` or under it.
fn has_error(errors: &Map<String, Value>, path: &str) -> bool {
    let mut node = errors;
    for part in path.split('.') {
        match node.get(part) {
            None => return false,
            Some(Value::Object(inner)) => node = inner,
            Some(_) => return true,
        }
    }
    true
}

/// Puts `error` at `path` in `errors`, nesting objects for dotted paths.
fn insert_error(errors: &mut Map<String, Value>, path: &str, error: Value) {
    match path.split_once('.') {
        None => {
            errors.insert(path.to_owned(), error);
        }
        Some((head, rest)) => {
            let node = errors.entry(head).or_insert_with(|| Value::Object(Map::new()));
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            if let Value::Object(inner) = node {
                insert_error(inner, rest, error);
            }
        }
    }
}

fn run_entity_check(
    record: &RecordSchema,
    check: &EntityCheck,
    obj: &Map<String, Value>,
    errors: &mut Map<String, Value>,
    entity: &mut Vec<String>,
) {
    if matches!(check, EntityCheck::Custom(_) | EntityCheck::Shorthand(_)) {
        return;
    }
    // As Kong (run_with_invalid_fields = false): a check over an invalid field does not run.
    if involved(check).iter().any(|f| has_error(errors, f)) {
        return;
    }
    let count = |fields: &[String]| fields.iter().filter(|f| is_nonempty(value_at(obj, f))).count();
    match check {
        EntityCheck::AtLeastOneOf(f) if count(f) == 0 => {
            entity.push(format!("at least one of these fields must be non-empty: {}", quoted(f)))
        }
        EntityCheck::OnlyOneOf(f) if count(f) != 1 => {
            entity.push(format!("exactly one of these fields must be non-empty: {}", quoted(f)))
        }
        EntityCheck::MutuallyExclusive(f) if count(f) > 1 => {
            entity.push(format!("only one or none of these fields must be set: {}", quoted(f)))
        }
        EntityCheck::MutuallyRequired(f) if count(f) != 0 && count(f) != f.len() => {
            entity.push(format!("all or none of these fields must be set: {}", quoted(f)))
        }
        EntityCheck::Distinct(f) => {
            let values: Vec<&Value> = f
                .iter()
                .filter_map(|n| value_at(obj, n))
                .filter(|v| !v.is_null())
                .collect();
            let dup = values.iter().enumerate().any(|(i, v)| values[..i].contains(v));
            if dup {
                entity.push(format!("values of these fields must be distinct: {}", quoted(f)));
            }
        }
        EntityCheck::Conditional(c) => run_conditional(record, c, obj, errors, entity),
        _ => {}
    }
}

fn run_conditional(
    record: &RecordSchema,
    c: &Conditional,
    obj: &Map<String, Value>,
    errors: &mut Map<String, Value>,
    entity: &mut Vec<String>,
) {
    let if_value = value_at(obj, &c.if_field).cloned().unwrap_or(Value::Null);
    if if_value.is_null() || run_validators(&c.if_match, &if_value).is_err() {
        return;
    }
    let then_value = value_at(obj, &c.then_field).cloned().unwrap_or(Value::Null);
    let outcome = if then_value.is_null() {
        if c.then_match.required {
            Err("required field missing".to_owned())
        } else {
            Ok(())
        }
    } else {
        let mut typed = c.then_match.clone();
        if let Some(field) = field_at(record, &c.then_field) {
            typed.kind = field.kind.clone();
        }
        run_validators(&typed, &then_value)
    };
    if let Err(e) = outcome {
        insert_error(errors, &c.then_field, msg(c.then_err.clone().unwrap_or(e)));
        entity.push(format!(
            "failed conditional validation given value of field '{}'",
            c.if_field
        ));
    }
}
