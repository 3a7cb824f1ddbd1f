//! Stage three: code generation for `#[plugin]` and `#[record]`, from a checked model.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Fields, ItemStruct};

use crate::attr::Args;
use crate::ctxt::Ctxt;
use crate::model::{self, EntityCheck, FieldModel, Protocols, Validator};

/// What the attribute is on: a plugin's config struct or a nested record.
pub enum Kind {
    Plugin,
    Record,
}

pub fn expand(kind: Kind, args: TokenStream, input: TokenStream) -> TokenStream {
    let attr_span = args.span();
    let mut item: ItemStruct = match syn::parse2(input) {
        Ok(item) => item,
        Err(err) => {
            return syn::Error::new(err.span(), "#[plugin] and #[record] go on a struct with named fields")
                .to_compile_error();
        }
    };
    let args: Args = match syn::parse2(args) {
        Ok(a) => a,
        Err(err) => return err.to_compile_error(),
    };

    let cx = Ctxt::default();
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(&item.generics, "a plugin config struct cannot be generic");
    }
    let fields: Vec<FieldModel> = match &item.fields {
        Fields::Named(named) => named.named.iter().filter_map(|f| model::parse_field(&cx, f)).collect(),
        Fields::Unit => Vec::new(),
        Fields::Unnamed(u) => {
            cx.error_spanned_by(u, "config fields need names: use `struct S { field: Type }`");
            Vec::new()
        }
    };
    let (checks, rest) = model::parse_entity_checks(&cx, &args.0, &fields, matches!(kind, Kind::Plugin));
    let plugin_args = match kind {
        Kind::Plugin => Some(model::parse_plugin_args(&cx, &rest, attr_span)),
        Kind::Record => {
            for arg in rest {
                cx.error_spanned_by(
                    &arg.key,
                    format!(
                        "unknown record attribute `{}`; records take entity checks only",
                        arg.name()
                    ),
                );
            }
            None
        }
    };
    if let Err(errors) = cx.check() {
        strip_field_attrs(&mut item);
        let fallback = fallback_impls(&item, matches!(kind, Kind::Plugin));
        return quote!(#item #errors #fallback);
    }

    strip_field_attrs(&mut item);
    if matches!(item.fields, Fields::Unit) {
        item.fields = Fields::Named(syn::parse_quote!({}));
    }
    let ident = &item.ident;
    let record_schema = record_schema_tokens(&fields, &checks);
    let default_checks = fields.iter().filter_map(default_check);

    let kind_impls = match plugin_args {
        Some(p) => {
            let name = p.name.clone().unwrap_or_else(|| model::kebab_case(ident));
            let priority = p.priority.unwrap_or_default() as i32;
            let version = p.version.clone().unwrap_or_default();
            let protocols = match p.protocols {
                Protocols::All => quote!(::kong_pdk::schema::ProtocolsTypedef::Protocols),
                Protocols::Http => quote!(::kong_pdk::schema::ProtocolsTypedef::ProtocolsHttp),
                Protocols::HttpWs => quote!(::kong_pdk::schema::ProtocolsTypedef::ProtocolsHttpWs),
                Protocols::Ws => quote!(::kong_pdk::schema::ProtocolsTypedef::ProtocolsWs),
            };
            let (nc, nr, ns) = (p.no_consumer, p.no_route, p.no_service);
            let protocols_default = match &p.protocols_default {
                Some(names) => quote!(::std::option::Option::Some(&[#(#names),*])),
                None => quote!(::std::option::Option::None),
            };
            quote! {
                impl ::kong_pdk::Plugin for #ident {
                    const NAME: &'static str = #name;
                    const PRIORITY: i32 = #priority;
                    const VERSION: &'static str = #version;

                    fn schema() -> &'static ::kong_pdk::schema::PluginSchema {
                        static SCHEMA: ::std::sync::OnceLock<::kong_pdk::schema::PluginSchema> =
                            ::std::sync::OnceLock::new();
                        SCHEMA.get_or_init(|| ::kong_pdk::schema::PluginSchema {
                            name: #name,
                            protocols: #protocols,
                            protocols_default: #protocols_default,
                            no_consumer: #nc,
                            no_route: #nr,
                            no_service: #ns,
                            config: <Self as ::kong_pdk::schema::ConfigRecord>::record_schema(),
                        })
                    }
                }

                ::kong_pdk::__private::inventory::submit! {
                    ::kong_pdk::registry::Registration::of::<#ident>()
                }
            }
        }
        None => quote! {
            impl ::kong_pdk::schema::ConfigType for #ident {
                fn field_schema() -> ::kong_pdk::schema::FieldSchema {
                    ::kong_pdk::schema::FieldSchema::record(
                        <Self as ::kong_pdk::schema::ConfigRecord>::record_schema(),
                    )
                }
            }
        },
    };

    quote! {
        #[derive(::kong_pdk::__private::serde::Deserialize)]
        #[serde(crate = "::kong_pdk::__private::serde")]
        #item

        impl ::kong_pdk::schema::ConfigRecord for #ident {
            fn record_schema() -> ::kong_pdk::schema::RecordSchema {
                #record_schema
            }
        }

        #kind_impls

        const _: () = {
            #(#default_checks)*
        };
    }
}

/// After an error, impls with placeholder values, so the user sees their mistake and not a
/// cascade of "trait not implemented" errors from code that uses the struct.
fn fallback_impls(item: &ItemStruct, plugin: bool) -> TokenStream {
    let ident = &item.ident;
    let plugin_impl = plugin.then(|| {
        quote! {
            impl ::kong_pdk::Plugin for #ident {
                const NAME: &'static str = "";
                const PRIORITY: i32 = 0;
                const VERSION: &'static str = "0.0.0";
                fn schema() -> &'static ::kong_pdk::schema::PluginSchema {
                    ::std::unreachable!()
                }
            }
        }
    });
    quote! {
        impl ::kong_pdk::schema::ConfigRecord for #ident {
            fn record_schema() -> ::kong_pdk::schema::RecordSchema {
                ::std::unreachable!()
            }
        }
        impl<'de> ::kong_pdk::__private::serde::Deserialize<'de> for #ident {
            fn deserialize<D: ::kong_pdk::__private::serde::Deserializer<'de>>(_: D) -> ::std::result::Result<Self, D::Error> {
                ::std::unreachable!()
            }
        }
        #plugin_impl
    }
}

fn strip_field_attrs(item: &mut ItemStruct) {
    for field in item.fields.iter_mut() {
        // `rename = "..."` becomes serde's, so the config deserializes by the schema's name.
        let renamed = field
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("field"))
            .filter_map(|a| a.parse_args::<crate::attr::Args>().ok())
            .flat_map(|args| args.0)
            .find(|arg| arg.name() == "rename")
            .and_then(|arg| match arg.value {
                crate::attr::ArgValue::Value(crate::attr::Value::Str(s)) => Some(s),
                _ => None,
            });
        field.attrs.retain(|a| !a.path().is_ident("field"));
        if let Some(name) = renamed {
            field.attrs.push(syn::parse_quote!(#[serde(rename = #name)]));
        }
    }
}

fn validator_tokens(v: &Validator) -> TokenStream {
    match v {
        Validator::OneOf(items) => {
            let items = items.iter().map(|v| v.to_json_tokens());
            quote!(__f.one_of = ::std::option::Option::Some(::std::vec![#(#items),*]);)
        }
        Validator::Between(lo, hi) => {
            let (lo, hi) = (lo.to_json_tokens(), hi.to_json_tokens());
            quote!(__f.between = ::std::option::Option::Some((#lo, #hi));)
        }
        Validator::Gt(v) => {
            let v = v.to_json_tokens();
            quote!(__f.gt = ::std::option::Option::Some(#v);)
        }
        Validator::LenEq(v) => {
            let n = v.as_i128().unwrap_or_default() as usize;
            quote!(__f.len_eq = ::std::option::Option::Some(#n);)
        }
        Validator::LenMin(v) => {
            let n = v.as_i128().unwrap_or_default() as usize;
            quote!(__f.len_min = ::std::option::Option::Some(#n);)
        }
        Validator::LenMax(v) => {
            let n = v.as_i128().unwrap_or_default() as usize;
            quote!(__f.len_max = ::std::option::Option::Some(#n);)
        }
        Validator::Match(s) => quote!(__f.pattern = ::std::option::Option::Some(::kong_pdk::schema::Pattern::new(#s));),
        Validator::StartsWith(s) => {
            quote!(__f.starts_with = ::std::option::Option::Some(::std::string::String::from(#s));)
        }
    }
}

fn field_tokens(f: &FieldModel) -> TokenStream {
    let ty = &f.ty;
    let name = &f.name;
    let base = quote_spanned!(ty.span()=> <#ty as ::kong_pdk::schema::ConfigType>::field_schema());
    let typedef = f
        .typedef
        .as_ref()
        .map(|td| quote_spanned!(td.span()=> ::kong_pdk::schema::typedefs::#td::apply::<#ty>(&mut __f);));
    let has_default = f.default.is_some();
    let required = match f.required {
        Some((r, _)) => quote!(#r),
        None => quote!(!<#ty as ::kong_pdk::schema::ConfigType>::OPTIONAL && !#has_default),
    };
    let default = f.default.as_ref().map(|d| {
        let d = d.to_json_tokens();
        quote!(__f.default = ::std::option::Option::Some(#d);)
    });
    let validators = f.validators.iter().map(validator_tokens);
    let description = f
        .description
        .as_ref()
        .map(|d| quote!(__f.description = ::std::option::Option::Some(::std::string::String::from(#d));));
    let elements = f.elements.as_ref().map(|e| {
        let elem_ty = &e.ty;
        let typedef = e
            .typedef
            .as_ref()
            .map(|td| quote_spanned!(td.span()=> ::kong_pdk::schema::typedefs::#td::apply::<#elem_ty>(__f);));
        let validators = e.validators.iter().map(validator_tokens);
        quote! {
            if let ::kong_pdk::schema::FieldKind::Array(__e) | ::kong_pdk::schema::FieldKind::Set(__e) = &mut __f.kind {
                let __f: &mut ::kong_pdk::schema::FieldSchema = &mut **__e;
                #typedef
                #(#validators)*
            }
        }
    });
    let (uuid, referenceable, encrypted) = (f.uuid, f.referenceable, f.encrypted);
    let flags = [
        uuid.then(|| quote!(__f.uuid = true;)),
        referenceable.then(|| quote!(__f.referenceable = true;)),
        encrypted.then(|| quote!(__f.encrypted = true;)),
    ];
    quote! {{
        #[allow(unused_mut)]
        let mut __f = #base;
        #typedef
        #elements
        __f.required = #required;
        #default
        #(#validators)*
        #description
        #(#flags)*
        ::kong_pdk::schema::Field::new(#name, __f)
    }}
}

fn names(fields: &[String]) -> TokenStream {
    quote!(::std::vec![#(::std::string::String::from(#fields)),*])
}

fn matcher_tokens(validators: &[Validator], required: bool) -> TokenStream {
    let validators = validators.iter().map(validator_tokens);
    quote! {{
        let mut __f = ::kong_pdk::schema::FieldSchema::matcher();
        __f.required = #required;
        #(#validators)*
        __f
    }}
}

fn record_schema_tokens(fields: &[FieldModel], checks: &[EntityCheck]) -> TokenStream {
    let fields = fields.iter().map(field_tokens);
    let checks = checks.iter().map(|c| match c {
        EntityCheck::List { kind, fields } => {
            let variant = match *kind {
                "at_least_one_of" => quote!(AtLeastOneOf),
                "only_one_of" => quote!(OnlyOneOf),
                "mutually_exclusive" => quote!(MutuallyExclusive),
                "mutually_required" => quote!(MutuallyRequired),
                _ => quote!(Distinct),
            };
            let names = names(fields);
            quote!(::kong_pdk::schema::EntityCheck::#variant(#names))
        }
        EntityCheck::Conditional {
            if_field,
            if_match,
            then_field,
            then_match,
            then_required,
            then_err,
        } => {
            let if_match = matcher_tokens(if_match, false);
            let then_match = matcher_tokens(then_match, *then_required);
            let then_err = match then_err {
                Some(e) => quote!(::std::option::Option::Some(::std::string::String::from(#e))),
                None => quote!(::std::option::Option::None),
            };
            quote!(::kong_pdk::schema::EntityCheck::Conditional(::std::boxed::Box::new(
                ::kong_pdk::schema::Conditional {
                    if_field: ::std::string::String::from(#if_field),
                    if_match: #if_match,
                    then_field: ::std::string::String::from(#then_field),
                    then_match: #then_match,
                    then_err: #then_err,
                }
            )))
        }
        EntityCheck::Custom(f) => quote!(::kong_pdk::schema::EntityCheck::Custom(#f)),
        EntityCheck::Shorthand { name, path } => quote!(::kong_pdk::schema::EntityCheck::Shorthand(
            ::std::boxed::Box::new(::kong_pdk::schema::Shorthand {
                name: ::std::string::String::from(#name),
                path: ::std::string::String::from(#path),
            })
        )),
    });
    quote! {
        ::kong_pdk::schema::RecordSchema {
            fields: ::std::vec![#(#fields),*],
            entity_checks: ::std::vec![#(#checks),*],
        }
    }
}

/// A compile-time check that a default literal fits the field's Rust type, spanned at the literal.
fn default_check(f: &FieldModel) -> Option<TokenStream> {
    let default = f.default.as_ref()?;
    let marker = default.literal_marker()?;
    let span = default.span();
    // The type is re-spanned to the literal so the error points at the default.
    let ty = respan(f.ty.to_token_stream(), span);
    // The bound is declared here, at the literal too, so that rustc's "required by a bound"
    // note points at the author's default rather than into kong-pdk.
    Some(quote_spanned! {span=>
        {
            const fn default_fits<T: ::kong_pdk::schema::literal::DefaultFits<L> + ?Sized, L>() {}
            default_fits::<#ty, #marker>();
        }
    })
}

fn respan(tokens: TokenStream, span: proc_macro2::Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(g) = &tt {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = proc_macro2::TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}
