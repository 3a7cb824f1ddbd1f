//! `#[derive(Dao)]` with `#[dao(...)]`: a plugin entity (Kong's `daos.lua`) declared on its
//! record struct. Parse the attribute, check every field it names against the struct (so a
//! typo is a compile error at the string that has it), then generate `impl Dao` and the
//! registration a gateway finds.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, LitStr};

use crate::attr::{Arg, ArgValue, Args, Value};
use crate::ctxt::Ctxt;
use crate::model::lit_str;

/// What `#[dao(...)]` says.
#[derive(Default)]
struct DaoModel {
    name: Option<LitStr>,
    plugin: Option<LitStr>,
    admin_api_name: Option<LitStr>,
    admin_api_nested_name: Option<LitStr>,
    endpoint_key: Option<LitStr>,
    cache_key: Option<LitStr>,
    unique: Vec<LitStr>,
    auto: Vec<LitStr>,
    transform: Option<syn::Ident>,
    unique_together: Vec<LitStr>,
}

const KEYS: &str = "name, plugin, admin_api_name, admin_api_nested_name, endpoint_key, cache_key, unique, unique_together, auto, transform";

fn strings(cx: &Ctxt, arg: &Arg) -> Vec<LitStr> {
    let items = match &arg.value {
        ArgValue::Value(Value::Array { items, .. }) | ArgValue::Values(items) => items,
        _ => {
            cx.error_spanned_by(
                &arg.key,
                format!(
                    "`{}` takes a list of field names: `{} = [\"key\"]`",
                    arg.name(),
                    arg.name()
                ),
            );
            return Vec::new();
        }
    };
    items
        .iter()
        .filter_map(|v| match v {
            Value::Str(s) => Some(s.clone()),
            other => {
                cx.syn_error(syn::Error::new(other.span(), "a field name is a string"));
                None
            }
        })
        .collect()
}

pub fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let cx = Ctxt::default();
    let fields: Vec<(String, &syn::Type)> = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => named
                .named
                .iter()
                .filter_map(|f| Some((f.ident.as_ref()?.unraw().to_string(), &f.ty)))
                .collect(),
            _ => Vec::new(),
        },
        _ => {
            cx.error_spanned_by(&input.ident, "#[derive(Dao)] goes on a struct with named fields");
            Vec::new()
        }
    };

    // Parse.
    let mut model = DaoModel::default();
    let mut seen = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("dao")) {
        seen = true;
        let args = match attr.parse_args::<Args>() {
            Ok(a) => a,
            Err(e) => {
                cx.syn_error(e);
                continue;
            }
        };
        for arg in &args.0 {
            match arg.name().as_str() {
                "name" => model.name = lit_str(&cx, arg),
                "plugin" => model.plugin = lit_str(&cx, arg),
                "admin_api_name" => model.admin_api_name = lit_str(&cx, arg),
                "admin_api_nested_name" => model.admin_api_nested_name = lit_str(&cx, arg),
                "endpoint_key" => model.endpoint_key = lit_str(&cx, arg),
                "cache_key" => model.cache_key = lit_str(&cx, arg),
                "unique" => model.unique = strings(&cx, arg),
                "auto" => model.auto = strings(&cx, arg),
                "unique_together" => model.unique_together = strings(&cx, arg),
                "transform" => match &arg.value {
                    ArgValue::Value(Value::Ident(f)) => model.transform = Some(f.clone()),
                    _ => cx.error_spanned_by(
                        &arg.key,
                        "`transform` names a function: `transform = hash`, with `fn hash(entity: &mut serde_json::Map<String, serde_json::Value>, previous: Option<&serde_json::Value>) -> Result<(), String>`",
                    ),
                },
                other => cx.error_spanned_by(
                    &arg.key,
                    format!("unknown dao attribute `{other}`; expected one of: {KEYS}"),
                ),
            }
        }
    }

    // Check.
    if !seen {
        cx.error_spanned_by(
            &input.ident,
            "#[derive(Dao)] needs `#[dao(name = \"...\", plugin = \"...\")]`",
        );
    } else {
        for (value, key) in [(&model.name, "name"), (&model.plugin, "plugin")] {
            if value.is_none() {
                cx.error_spanned_by(&input.ident, format!("#[dao(...)] needs `{key} = \"...\"`"));
            }
        }
    }
    let field_names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    let named = model
        .endpoint_key
        .iter()
        .chain(&model.cache_key)
        .chain(&model.unique)
        .chain(&model.auto)
        .chain(model.unique_together.iter().filter(|l| l.value() != "consumer"));
    for lit in named {
        if !field_names.contains(&lit.value().as_str()) {
            cx.syn_error(syn::Error::new(
                lit.span(),
                format!(
                    "`{}` is no field of `{}`; its fields are: {}",
                    lit.value(),
                    input.ident,
                    field_names.join(", ")
                ),
            ));
        }
    }
    for lit in &model.auto {
        let is_string = fields
            .iter()
            .any(|(n, ty)| *n == lit.value() && matches!(ty, syn::Type::Path(p) if p.path.is_ident("String")));
        if field_names.contains(&lit.value().as_str()) && !is_string {
            cx.syn_error(syn::Error::new(
                lit.span(),
                format!("`{}` cannot be generated: `auto` fields are `String`s", lit.value()),
            ));
        }
    }
    if let Err(errors) = cx.check() {
        return errors;
    }

    // Generate.
    let ident = &input.ident;
    let name = model.name.map(|l| l.value()).unwrap_or_default();
    let plugin = model.plugin.map(|l| l.value()).unwrap_or_default();
    let admin = model.admin_api_name.map_or_else(|| name.clone(), |l| l.value());
    let nested = model.admin_api_nested_name.map_or_else(|| admin.clone(), |l| l.value());
    let opt = |v: Option<LitStr>| match v {
        Some(l) => quote!(::std::option::Option::Some(#l)),
        None => quote!(::std::option::Option::None),
    };
    let (endpoint_key, cache_key) = (opt(model.endpoint_key), opt(model.cache_key));
    let (unique, auto, unique_together) = (&model.unique, &model.auto, &model.unique_together);
    let transform = match &model.transform {
        Some(f) => quote!(::std::option::Option::Some(#f)),
        None => quote!(::std::option::Option::None),
    };
    quote! {
        impl ::kong_pdk::dao::Dao for #ident {
            const NAME: &'static str = #name;
            const PLUGIN: &'static str = #plugin;
            const ADMIN_API_NAME: &'static str = #admin;
            const ADMIN_API_NESTED_NAME: &'static str = #nested;
            const ENDPOINT_KEY: ::std::option::Option<&'static str> = #endpoint_key;
            const CACHE_KEY: ::std::option::Option<&'static str> = #cache_key;
            const UNIQUE: &'static [&'static str] = &[#(#unique),*];
            const AUTO: &'static [&'static str] = &[#(#auto),*];
            const UNIQUE_TOGETHER: &'static [&'static str] = &[#(#unique_together),*];
            const TRANSFORM: ::std::option::Option<::kong_pdk::dao::Transform> = #transform;
        }

        ::kong_pdk::__private::inventory::submit! {
            ::kong_pdk::dao::DaoRegistration::of::<#ident>()
        }
    }
}
