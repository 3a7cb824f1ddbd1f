//! Stage one and two for `#[plugin]` and `#[record]`: the struct and its attributes parsed into
//! a model, and the model checked. Every problem is reported at the user's own token.

use proc_macro2::Span;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{Attribute, Ident, Type};

use crate::attr::{Arg, ArgValue, Args, Value};
use crate::ctxt::Ctxt;

/// Typedefs the SDK provides (`kong_pdk::schema::typedefs`), as in Kong's `typedefs.lua`.
pub const TYPEDEFS: &[&str] = &[
    "cidr",
    "cidr_v4",
    "header_name",
    "host",
    "host_with_optional_port",
    "http_method",
    "ip",
    "ip_or_cidr",
    "name",
    "path",
    "port",
    "protocols",
    "protocols_http",
    "protocols_http_ws",
    "protocols_ws",
    "semantic_version",
    "sni",
    "tag",
    "tags",
    "timeout",
    "url",
    "utf8_name",
    "uuid",
    "wildcard_host",
];

/// A validator attribute and its value.
pub enum Validator {
    OneOf(Vec<Value>),
    Between(Value, Value),
    Gt(Value),
    LenEq(Value),
    LenMin(Value),
    LenMax(Value),
    Match(syn::LitStr),
    StartsWith(syn::LitStr),
}

/// One config field.
pub struct FieldModel {
    pub name: String,
    pub ty: Type,
    pub is_option: bool,
    pub typedef: Option<Ident>,
    pub default: Option<Value>,
    pub required: Option<(bool, Span)>,
    pub validators: Vec<Validator>,
    pub uuid: bool,
    pub referenceable: bool,
    pub encrypted: bool,
    pub description: Option<String>,
    /// `elements(...)`: the typedef and validators of an array's or set's elements.
    pub elements: Option<ElementModel>,
}

/// What `elements(...)` says of each element of an array or set field.
pub struct ElementModel {
    /// The element type, as written in the field's type (`String` of `Vec<String>`).
    pub ty: Type,
    pub typedef: Option<Ident>,
    pub validators: Vec<Validator>,
}

/// A record-level entity check, with field names already checked.
pub enum EntityCheck {
    List {
        kind: &'static str,
        fields: Vec<String>,
    },
    Conditional {
        if_field: String,
        if_match: Vec<Validator>,
        then_field: String,
        then_match: Vec<Validator>,
        then_required: bool,
        then_err: Option<String>,
    },
    /// `custom_validator = function`: a check of the whole record.
    Custom(syn::Ident),
    /// `shorthand("old_name", "new.path")`: a deprecated alias field.
    Shorthand {
        name: String,
        path: String,
    },
}

/// Which `protocols` typedef a plugin's `protocols` field uses.
pub enum Protocols {
    All,
    Http,
    HttpWs,
    Ws,
}

/// `#[plugin(...)]` arguments.
pub struct PluginArgs {
    pub priority: Option<i64>,
    pub version: Option<String>,
    pub name: Option<String>,
    pub protocols: Protocols,
    /// `protocols_default = ["http", "tcp"]`: the plugin's own default protocols (Kong's
    /// `typedefs.protocols { default = ... }`).
    pub protocols_default: Option<Vec<String>>,
    pub no_consumer: bool,
    pub no_route: bool,
    pub no_service: bool,
}

/// Extracts `///` doc comments as one trimmed description.
pub fn doc_string(attrs: &[Attribute]) -> Option<String> {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &attr.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s), ..
            }) = &nv.value
        {
            lines.push(s.value().trim().to_owned());
        }
    }
    let text = lines.join(" ").trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// `T` of `Vec<T>`, `BTreeSet<T>` or `HashSet<T>` (inside an `Option` too).
fn element_type(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let first = args.args.iter().find_map(|a| match a {
        syn::GenericArgument::Type(t) => Some(t),
        _ => None,
    })?;
    match last.ident.to_string().as_str() {
        "Option" => element_type(first),
        "Vec" | "BTreeSet" | "HashSet" => Some(first.clone()),
        _ => None,
    }
}

/// Whether `ty` is a map (`HashMap`, `BTreeMap`, `IndexMap`, or an `Option` of one).
fn is_map(ty: &Type) -> bool {
    let Type::Path(p) = ty else { return false };
    let Some(last) = p.path.segments.last() else {
        return false;
    };
    match last.ident.to_string().as_str() {
        "HashMap" | "BTreeMap" | "IndexMap" => true,
        "Option" => match &last.arguments {
            syn::PathArguments::AngleBracketed(args) => args.args.iter().any(|a| match a {
                syn::GenericArgument::Type(t) => is_map(t),
                _ => false,
            }),
            _ => false,
        },
        _ => false,
    }
}

/// A typedef name, checked against the SDK's typedefs.
fn typedef_name(cx: &Ctxt, arg: &Arg) -> Option<Ident> {
    match &arg.value {
        ArgValue::Value(Value::Ident(id)) => {
            if TYPEDEFS.contains(&id.to_string().as_str()) {
                Some(id.clone())
            } else {
                cx.error_spanned_by(
                    id,
                    format!("unknown typedef `{id}`; Kong's typedefs are: {}", TYPEDEFS.join(", ")),
                );
                None
            }
        }
        _ => {
            cx.error_spanned_by(&arg.key, "`typedef` takes a typedef name: `typedef = header_name`");
            None
        }
    }
}

/// Parses `elements(typedef = ..., validators...)` of a field of type `ty`.
fn parse_elements(cx: &Ctxt, arg: &Arg, ty: &Type) -> Option<ElementModel> {
    let Some(elem_ty) = element_type(ty) else {
        cx.error_spanned_by(
            &arg.key,
            "`elements(...)` applies to array and set fields: `Vec<T>`, `BTreeSet<T>` or `HashSet<T>`",
        );
        return None;
    };
    let ArgValue::Args(inner) = &arg.value else {
        cx.error_spanned_by(
            &arg.key,
            "`elements` takes attributes: `elements(typedef = header_name)`",
        );
        return None;
    };
    let mut model = ElementModel {
        ty: elem_ty,
        typedef: None,
        validators: Vec::new(),
    };
    for arg in inner {
        if let Some(v) = validator(cx, arg) {
            model.validators.extend(v);
        } else if arg.name() == "typedef" {
            model.typedef = typedef_name(cx, arg);
        } else {
            cx.error_spanned_by(
                &arg.key,
                format!(
                    "`{}` does not apply to elements; `elements(...)` takes typedef, one_of, between, gt, len_eq, len_min, len_max, match and starts_with",
                    arg.name()
                ),
            );
        }
    }
    Some(model)
}

fn is_option(ty: &Type) -> bool {
    if let Type::Path(p) = ty
        && p.qself.is_none()
        && let Some(last) = p.path.segments.last()
    {
        return last.ident == "Option";
    }
    false
}

pub(crate) fn lit_str(cx: &Ctxt, arg: &Arg) -> Option<syn::LitStr> {
    match &arg.value {
        ArgValue::Value(Value::Str(s)) => Some(s.clone()),
        _ => {
            cx.error_spanned_by(
                &arg.key,
                format!("`{}` takes a string: `{} = \"...\"`", arg.name(), arg.name()),
            );
            None
        }
    }
}

fn single_value(cx: &Ctxt, arg: &Arg) -> Option<Value> {
    match &arg.value {
        ArgValue::Value(v) => Some(v.clone()),
        ArgValue::Values(v) if v.len() == 1 => Some(v[0].clone()),
        _ => {
            cx.error_spanned_by(
                &arg.key,
                format!("`{}` takes a value: `{} = ...`", arg.name(), arg.name()),
            );
            None
        }
    }
}

fn number_value(cx: &Ctxt, arg: &Arg) -> Option<Value> {
    let v = single_value(cx, arg)?;
    if v.as_f64().is_none() {
        cx.syn_error(syn::Error::new(
            v.span(),
            format!("`{}` takes a number, found {}", arg.name(), v.kind()),
        ));
        return None;
    }
    Some(v)
}

fn length_value(cx: &Ctxt, arg: &Arg) -> Option<Value> {
    let v = single_value(cx, arg)?;
    match v.as_i128() {
        Some(n) if n >= 0 => Some(v),
        _ => {
            cx.syn_error(syn::Error::new(
                v.span(),
                format!("`{}` takes a non-negative integer", arg.name()),
            ));
            None
        }
    }
}

/// Parses one validator argument; `None` when `arg` is not a validator.
fn validator(cx: &Ctxt, arg: &Arg) -> Option<Option<Validator>> {
    let v = match arg.name().as_str() {
        "one_of" => match &arg.value {
            ArgValue::Value(Value::Array { items, .. }) | ArgValue::Values(items) if !items.is_empty() => {
                Some(Validator::OneOf(items.clone()))
            }
            _ => {
                cx.error_spanned_by(&arg.key, "`one_of` takes a non-empty array: `one_of = [\"a\", \"b\"]`");
                None
            }
        },
        "between" => match &arg.value {
            ArgValue::Value(Value::Tuple { items, .. } | Value::Array { items, .. }) | ArgValue::Values(items)
                if items.len() == 2 && items.iter().all(|v| v.as_f64().is_some()) =>
            {
                Some(Validator::Between(items[0].clone(), items[1].clone()))
            }
            _ => {
                cx.error_spanned_by(&arg.key, "`between` takes two numbers: `between = (0, 10)`");
                None
            }
        },
        "gt" => number_value(cx, arg).map(Validator::Gt),
        "len_eq" => length_value(cx, arg).map(Validator::LenEq),
        "len_min" => length_value(cx, arg).map(Validator::LenMin),
        "len_max" => length_value(cx, arg).map(Validator::LenMax),
        "match" => lit_str(cx, arg).map(Validator::Match),
        "starts_with" => lit_str(cx, arg).map(Validator::StartsWith),
        _ => return None,
    };
    Some(v)
}

fn flag(cx: &Ctxt, arg: &Arg) -> bool {
    match &arg.value {
        ArgValue::Flag => true,
        ArgValue::Value(Value::Bool(b)) => b.value,
        _ => {
            cx.error_spanned_by(
                &arg.key,
                format!(
                    "`{}` is a flag: write `{}` or `{} = false`",
                    arg.name(),
                    arg.name(),
                    arg.name()
                ),
            );
            false
        }
    }
}

/// Parses a field's `#[field(...)]` attributes and doc comment.
pub fn parse_field(cx: &Ctxt, field: &syn::Field) -> Option<FieldModel> {
    let ident = field.ident.clone()?;
    let mut model = FieldModel {
        name: ident.unraw().to_string(),
        ty: field.ty.clone(),
        is_option: is_option(&field.ty),
        typedef: None,
        default: None,
        required: None,
        validators: Vec::new(),
        uuid: false,
        referenceable: false,
        encrypted: false,
        description: doc_string(&field.attrs),
        elements: None,
    };
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("field")) {
        let args = match attr.parse_args::<Args>() {
            Ok(args) => args,
            Err(err) => {
                cx.syn_error(err);
                continue;
            }
        };
        for arg in &args.0 {
            if let Some(v) = validator(cx, arg) {
                model.validators.extend(v);
                continue;
            }
            match arg.name().as_str() {
                "typedef" => model.typedef = typedef_name(cx, arg),
                "elements" => model.elements = parse_elements(cx, arg, &field.ty),
                "default" => model.default = single_value(cx, arg),
                "required" => model.required = Some((flag(cx, arg), arg.key.span())),
                "uuid" => model.uuid = flag(cx, arg),
                "referenceable" => model.referenceable = flag(cx, arg),
                "encrypted" => model.encrypted = flag(cx, arg),
                "description" => model.description = lit_str(cx, arg).map(|s| s.value()),
                // A name Rust cannot spell (`X-Cache-Status`): the schema's and the config's.
                "rename" => {
                    if let Some(name) = lit_str(cx, arg) {
                        model.name = name.value();
                    }
                }
                other => cx.error_spanned_by(
                    &arg.key,
                    format!(
                        "unknown field attribute `{other}`; expected one of: typedef, default, required, one_of, between, gt, len_eq, len_min, len_max, match, starts_with, uuid, referenceable, encrypted, description, elements, rename"
                    ),
                ),
            }
        }
    }
    check_field(cx, &model);
    Some(model)
}

fn check_field(cx: &Ctxt, f: &FieldModel) {
    if let Some((required, span)) = f.required {
        if required && f.is_option {
            cx.syn_error(syn::Error::new(
                span,
                "an `Option` field cannot be `required`; use the inner type instead",
            ));
        }
        if !required && !f.is_option && f.default.is_none() {
            cx.syn_error(syn::Error::new(
                span,
                "a field that is not required needs a `default` or an `Option<...>` type, so a config without it still has a value",
            ));
        }
    }
    if let Some(Value::Ident(id)) = &f.default {
        cx.error_spanned_by(id, "a default must be a literal: a string, number, boolean or array");
    }
    if let Some(Value::Tuple { span, .. }) = &f.default {
        cx.syn_error(syn::Error::new(
            *span,
            "a default must be a literal: use `[...]` for arrays",
        ));
    }
    for v in &f.validators {
        if let Validator::Between(lo, hi) = v
            && lo.as_f64() > hi.as_f64()
        {
            cx.syn_error(syn::Error::new(lo.span(), "`between` needs the lower bound first"));
        }
    }
    if let Some(default) = &f.default
        && let Some((span, why)) = default_misfits(default, &f.ty, false)
            .or_else(|| default_breaks(default, &f.validators).map(|why| (default.span(), why)))
    {
        cx.syn_error(syn::Error::new(span, why));
    }
}

/// The scalar type a field holds, by name, when it is a plain one (`u32`, `Option<String>`):
/// what a literal default can be checked against before any trait is involved.
fn scalar_name(ty: &Type) -> Option<String> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if last.ident == "Option" {
        let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        return match args.args.first()? {
            syn::GenericArgument::Type(inner) => scalar_name(inner),
            _ => None,
        };
    }
    (p.path.segments.len() == 1 && last.arguments.is_empty()).then(|| last.ident.to_string())
}

/// Why a literal `default` cannot be a value of the field's plain scalar type (or each item of
/// an array default one of its plain scalar elements), said at the literal; the trait check in
/// `kong_pdk::schema::literal` covers the other types.
fn default_misfits(default: &Value, ty: &Type, item: bool) -> Option<(Span, String)> {
    let shown = || {
        ty.to_token_stream()
            .to_string()
            .replace(" < ", "<")
            .replace(" >", ">")
            .replace(" ,", ",")
    };
    match (default, element_type(ty)) {
        (Value::Array { items, .. }, Some(element)) => {
            return items.iter().find_map(|i| default_misfits(i, &element, true));
        }
        (_, Some(_)) => {
            return Some((
                default.span(),
                format!(
                    "this default does not fit a field of type `{}`: {} cannot be the default of an array field; write `[...]`",
                    shown(),
                    default.kind()
                ),
            ));
        }
        _ => {}
    }
    if is_map(ty) {
        return (!matches!(default, Value::EmptyMap { .. })).then(|| {
            (
                default.span(),
                format!(
                    "this default does not fit a field of type `{}`: {} cannot be the default of a map field; write `{{}}` (a map's only literal default) or leave the default out",
                    shown(),
                    default.kind()
                ),
            )
        });
    }
    let name = scalar_name(ty)?;
    let fits = match name.as_str() {
        "i8" | "i16" | "i32" | "i64" | "isize" | "u8" | "u16" | "u32" | "u64" | "usize" => {
            matches!(default, Value::Int { .. })
        }
        "f32" | "f64" => matches!(default, Value::Int { .. } | Value::Float { .. }),
        "bool" => matches!(default, Value::Bool(_)),
        "String" => matches!(default, Value::Str(_)),
        _ => return None,
    };
    let want = match name.as_str() {
        "bool" => "`true` or `false`",
        "String" => "a string literal",
        "f32" | "f64" => "a number",
        _ => "an integer",
    };
    (!fits).then(|| {
        let why = if item {
            format!(
                "this item does not fit the field's `{name}` elements: {} cannot be a `{name}`; write {want}",
                default.kind()
            )
        } else {
            format!(
                "this default does not fit a field of type `{name}`: {} cannot be the default of a `{name}` field; write {want}",
                default.kind()
            )
        };
        (default.span(), why)
    })
}

/// Why a literal `default` fails one of the field's own validators (Kong would refuse every
/// config that leaves the field out), or `None` when it passes them.
fn default_breaks(default: &Value, validators: &[Validator]) -> Option<String> {
    // The length Kong's `len_*` measure: a string's characters, an array's items.
    let len = match default {
        Value::Str(s) => Some(s.value().chars().count() as f64),
        Value::Array { items, .. } => Some(items.len() as f64),
        _ => None,
    };
    let number = default.as_f64();
    let show = |v: &Value| match v {
        Value::Str(s) => s.value(),
        other => other.to_token_stream().to_string(),
    };
    for v in validators {
        let broken = match v {
            Validator::OneOf(items) => {
                let mine = show(default);
                (!items.iter().any(|i| show(i) == mine)).then(|| {
                    let all: Vec<String> = items.iter().map(show).collect();
                    format!("this default is not one of the field's `one_of` values; Kong would answer `expected one of: {}`", all.join(", "))
                })
            }
            Validator::Between(lo, hi) => match (number, lo.as_f64(), hi.as_f64()) {
                (Some(n), Some(a), Some(b)) if n < a || n > b => Some(format!(
                    "this default is outside the field's `between`; Kong would answer `value should be between {} and {}`",
                    show(lo),
                    show(hi)
                )),
                _ => None,
            },
            Validator::Gt(g) => match (number, g.as_f64()) {
                (Some(n), Some(g_)) if n <= g_ => Some(format!(
                    "this default is not greater than the field's `gt`; Kong would answer `value must be greater than {}`",
                    show(g)
                )),
                _ => None,
            },
            Validator::LenEq(n) => match (len, n.as_f64()) {
                (Some(l), Some(n_)) if l != n_ => Some(format!(
                    "this default's length is not the field's `len_eq`; Kong would answer `length must be {}`",
                    show(n)
                )),
                _ => None,
            },
            Validator::LenMin(n) => match (len, n.as_f64()) {
                (Some(l), Some(n_)) if l < n_ => Some(format!(
                    "this default is shorter than the field's `len_min`; Kong would answer `length must be at least {}`",
                    show(n)
                )),
                _ => None,
            },
            Validator::LenMax(n) => match (len, n.as_f64()) {
                (Some(l), Some(n_)) if l > n_ => Some(format!(
                    "this default is longer than the field's `len_max`; Kong would answer `length must be at most {}`",
                    show(n)
                )),
                _ => None,
            },
            Validator::StartsWith(prefix) => match default {
                Value::Str(s) if !s.value().starts_with(&prefix.value()) => Some(format!(
                    "this default does not start with the field's `starts_with`; Kong would answer `should start with: {}`",
                    prefix.value()
                )),
                _ => None,
            },
            // A Lua pattern: checked when the schema is used.
            Validator::Match(_) => None,
        };
        if broken.is_some() {
            return broken;
        }
    }
    None
}

fn string_list(cx: &Ctxt, arg: &Arg, fields: &[FieldModel], plugin: bool) -> Vec<String> {
    let items: Vec<Value> = match &arg.value {
        ArgValue::Values(v) => v.clone(),
        ArgValue::Value(Value::Array { items, .. }) => items.clone(),
        _ => {
            cx.error_spanned_by(
                &arg.key,
                format!("`{}` takes field names: `{}(\"a\", \"b\")`", arg.name(), arg.name()),
            );
            return Vec::new();
        }
    };
    if items.len() < 2 {
        cx.error_spanned_by(&arg.key, format!("`{}` needs at least two fields", arg.name()));
    }
    items.iter().filter_map(|v| field_ref(cx, v, fields, plugin)).collect()
}

/// A field a check names: one of the struct's, or (in `#[plugin]`) a path from the plugin
/// entity, `config.<field>[.<nested>...]`, for Kong's checks of the whole plugin entity.
fn field_ref(cx: &Ctxt, v: &Value, fields: &[FieldModel], plugin: bool) -> Option<String> {
    let Some(name) = v.as_str() else {
        cx.syn_error(syn::Error::new(v.span(), "expected a field name as a string"));
        return None;
    };
    let first = match name.strip_prefix("config.") {
        Some(path) if plugin => path.split('.').next().unwrap_or_default().to_owned(),
        Some(_) => {
            cx.syn_error(syn::Error::new(
                v.span(),
                "`config.` paths are for checks of a plugin entity: put this check in #[plugin(...)]",
            ));
            return None;
        }
        None => name.clone(),
    };
    if !fields.iter().any(|f| f.name == first) {
        cx.syn_error(syn::Error::new(
            v.span(),
            format!("no field named `{first}` in this struct"),
        ));
        return None;
    }
    Some(name)
}

fn matcher(cx: &Ctxt, arg: &Arg) -> (Vec<Validator>, bool) {
    let mut out = Vec::new();
    let mut required = false;
    let args: &[Arg] = match &arg.value {
        ArgValue::Args(a) => a,
        _ => {
            cx.error_spanned_by(
                &arg.key,
                format!("`{}` takes validators: `{}(one_of = [\"x\"])`", arg.name(), arg.name()),
            );
            return (out, required);
        }
    };
    for a in args {
        if a.name() == "required" {
            required = flag(cx, a);
        } else if let Some(v) = validator(cx, a) {
            out.extend(v);
        } else {
            cx.error_spanned_by(&a.key, format!("`{}` is not a validator", a.name()));
        }
    }
    (out, required)
}

/// Parses the entity checks among a struct-level argument list; returns the arguments that are
/// not entity checks.
///
/// In `#[plugin]` (`plugin`), fields may be named `config.<field>...`: such a check runs on the
/// whole plugin entity, as Kong's top-level `entity_checks`, and its errors name the paths.
pub fn parse_entity_checks<'a>(
    cx: &Ctxt,
    args: &'a [Arg],
    fields: &[FieldModel],
    plugin: bool,
) -> (Vec<EntityCheck>, Vec<&'a Arg>) {
    let mut checks = Vec::new();
    let mut rest = Vec::new();
    for arg in args {
        let kind = match arg.name().as_str() {
            "at_least_one_of" => "at_least_one_of",
            "only_one_of" => "only_one_of",
            "mutually_exclusive" => "mutually_exclusive",
            "mutually_required" => "mutually_required",
            "distinct" => "distinct",
            "custom_validator" => {
                match &arg.value {
                    ArgValue::Value(Value::Ident(f)) => checks.push(EntityCheck::Custom(f.clone())),
                    _ => cx.error_spanned_by(
                        &arg.key,
                        "`custom_validator` names a function: `custom_validator = check`, with `fn check(config: &serde_json::Value) -> Result<(), String>`",
                    ),
                }
                continue;
            }
            "shorthand" => {
                let items: &[Value] = match &arg.value {
                    ArgValue::Values(v) if v.len() == 2 => v,
                    _ => {
                        cx.error_spanned_by(
                            &arg.key,
                            "`shorthand` takes the deprecated name and the field replacing it: `shorthand(\"redis_host\", \"redis.host\")`",
                        );
                        continue;
                    }
                };
                let (Some(name), Some(path)) = (items[0].as_str(), items[1].as_str()) else {
                    cx.error_spanned_by(&arg.key, "`shorthand` takes two strings");
                    continue;
                };
                if fields.iter().any(|f| f.name == name) {
                    cx.syn_error(syn::Error::new(
                        items[0].span(),
                        format!("`{name}` is a field: a shorthand names a field the struct does not have"),
                    ));
                    continue;
                }
                let first = path.split('.').next().unwrap_or_default();
                if !fields.iter().any(|f| f.name == first) {
                    cx.syn_error(syn::Error::new(
                        items[1].span(),
                        format!("no field named `{first}` in this struct"),
                    ));
                    continue;
                }
                checks.push(EntityCheck::Shorthand { name, path });
                continue;
            }
            "conditional" => {
                let ArgValue::Args(inner) = &arg.value else {
                    cx.error_spanned_by(
                        &arg.key,
                        "`conditional` takes `if_field = \"a\", if_match(...), then_field = \"b\", then_match(...)`",
                    );
                    continue;
                };
                let (mut if_field, mut then_field, mut then_err) = (None, None, None);
                let (mut if_match, mut then_match, mut then_required) = (Vec::new(), Vec::new(), false);
                for a in inner {
                    match a.name().as_str() {
                        "if_field" => if_field = single_value(cx, a).and_then(|v| field_ref(cx, &v, fields, plugin)),
                        "then_field" => {
                            then_field = single_value(cx, a).and_then(|v| field_ref(cx, &v, fields, plugin))
                        }
                        "then_err" => then_err = lit_str(cx, a).map(|s| s.value()),
                        "if_match" => if_match = matcher(cx, a).0,
                        "then_match" => (then_match, then_required) = matcher(cx, a),
                        other => cx.error_spanned_by(&a.key, format!("unknown `conditional` argument `{other}`")),
                    }
                }
                match (if_field, then_field) {
                    (Some(if_field), Some(then_field)) => checks.push(EntityCheck::Conditional {
                        if_field,
                        if_match,
                        then_field,
                        then_match,
                        then_required,
                        then_err,
                    }),
                    _ => cx.error_spanned_by(&arg.key, "`conditional` needs both `if_field` and `then_field`"),
                }
                continue;
            }
            _ => {
                rest.push(arg);
                continue;
            }
        };
        checks.push(EntityCheck::List {
            kind,
            fields: string_list(cx, arg, fields, plugin),
        });
    }
    (checks, rest)
}

/// Checks `x.y.z` (an optional `-suffix` allowed), as Kong does when it loads a plugin.
fn valid_version(v: &str) -> bool {
    let core = v.split_once('-').map_or(v, |(c, _)| c);
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses the `#[plugin(...)]` arguments that are not entity checks.
pub fn parse_plugin_args(cx: &Ctxt, args: &[&Arg], attr_span: Span) -> PluginArgs {
    let mut out = PluginArgs {
        priority: None,
        version: None,
        name: None,
        protocols: Protocols::All,
        protocols_default: None,
        no_consumer: false,
        no_route: false,
        no_service: false,
    };
    for arg in args {
        match arg.name().as_str() {
            "priority" => {
                if let Some(v) = single_value(cx, arg) {
                    match v.as_i128() {
                        Some(n) if i32::try_from(n).is_ok() => out.priority = Some(n as i64),
                        Some(_) => cx.syn_error(syn::Error::new(v.span(), "PRIORITY must fit in an i32")),
                        None => cx.syn_error(syn::Error::new(
                            v.span(),
                            format!("PRIORITY must be an integer, found {}", v.kind()),
                        )),
                    }
                }
            }
            "version" => {
                if let Some(s) = lit_str(cx, arg) {
                    if valid_version(&s.value()) {
                        out.version = Some(s.value());
                    } else {
                        cx.error_spanned_by(
                            &s,
                            format!("VERSION \"{}\" does not follow the \"x.y.z\" format", s.value()),
                        );
                    }
                }
            }
            "name" => {
                if let Some(s) = lit_str(cx, arg) {
                    let name = s.value();
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    {
                        cx.error_spanned_by(&s, "a plugin name may only contain A-Z, a-z, 0-9, '-' and '_'");
                    }
                    out.name = Some(name);
                }
            }
            "protocols" => match &arg.value {
                ArgValue::Value(Value::Ident(id)) if id == "protocols" => out.protocols = Protocols::All,
                ArgValue::Value(Value::Ident(id)) if id == "protocols_http" => out.protocols = Protocols::Http,
                ArgValue::Value(Value::Ident(id)) if id == "protocols_ws" => out.protocols = Protocols::Ws,
                ArgValue::Value(Value::Ident(id)) if id == "protocols_http_ws" => out.protocols = Protocols::HttpWs,
                _ => cx.error_spanned_by(
                    &arg.key,
                    "`protocols` is `protocols` (any protocol), `protocols_http` (http subsystem only), `protocols_http_ws` (http subsystem and WebSocket services) or `protocols_ws` (WebSocket services only)",
                ),
            },
            "protocols_default" => {
                const KNOWN: [&str; 10] = [
                    "grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp", "ws", "wss",
                ];
                let items = match &arg.value {
                    ArgValue::Value(Value::Array { items, .. }) | ArgValue::Values(items) if !items.is_empty() => items,
                    _ => {
                        cx.error_spanned_by(&arg.key, "`protocols_default` takes protocols: `protocols_default = [\"http\", \"tcp\"]`");
                        continue;
                    }
                };
                let mut names = Vec::new();
                for item in items {
                    match item {
                        Value::Str(s) if KNOWN.contains(&s.value().as_str()) => names.push(s.value()),
                        Value::Str(s) => cx.error_spanned_by(
                            s,
                            format!("`{}` is not a protocol; Kong's are: {}", s.value(), KNOWN.join(", ")),
                        ),
                        _ => cx.error_spanned_by(&arg.key, "`protocols_default` takes protocol names as strings"),
                    }
                }
                out.protocols_default = Some(names);
            }
            "no_consumer" => out.no_consumer = flag(cx, arg),
            "no_route" => out.no_route = flag(cx, arg),
            "no_service" => out.no_service = flag(cx, arg),
            other => cx.error_spanned_by(
                &arg.key,
                format!(
                    "unknown plugin attribute `{other}`; expected one of: priority, version, name, protocols, no_consumer, no_route, no_service, at_least_one_of, only_one_of, mutually_exclusive, mutually_required, distinct, conditional, custom_validator, shorthand"
                ),
            ),
        }
    }
    if out.priority.is_none() {
        cx.syn_error(syn::Error::new(
            attr_span,
            "missing `priority`: every plugin needs a PRIORITY, e.g. #[plugin(priority = 1000, version = \"0.0.1\")]",
        ));
    }
    if out.version.is_none() && !args.iter().any(|a| a.name() == "version") {
        cx.syn_error(syn::Error::new(
            attr_span,
            "missing `version`: every plugin needs a VERSION in \"x.y.z\" format, e.g. #[plugin(priority = 1000, version = \"0.0.1\")]",
        ));
    }
    out
}

/// `MyPlugin` → `my-plugin`, `HTTPLog` → `http-log`.
pub fn kebab_case(ident: &Ident) -> String {
    let s = ident.unraw().to_string();
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            out.push('-');
            continue;
        }
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push('-');
            }
        }
        out.extend(c.to_lowercase());
    }
    out
}
