//! Parsing of the macros' argument lists into a small, typed model.
//!
//! Grammar (keys may be Rust keywords, such as `match`):
//!
//! ```text
//! args  := arg ("," arg)* ","?
//! arg   := key | key "=" value | key "(" (args | values) ")"
//! value := literal | "-" number | ident | "[" values "]" | "(" values ")" | "{" "}"
//! ```

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, Lit, Token, bracketed, parenthesized};

/// One `key`, `key = value` or `key(...)` argument.
pub struct Arg {
    pub key: Ident,
    pub value: ArgValue,
}

/// What follows an argument's key.
pub enum ArgValue {
    /// A bare key: `required`.
    Flag,
    /// `key = value`.
    Value(Value),
    /// `key(a = 1, b)`.
    Args(Vec<Arg>),
    /// `key("a", "b")`.
    Values(Vec<Value>),
}

/// A literal-like value in an argument list.
#[derive(Clone)]
pub enum Value {
    Str(syn::LitStr),
    Int {
        text: String,
        negative: bool,
        lit: syn::LitInt,
    },
    Float {
        text: String,
        negative: bool,
        lit: syn::LitFloat,
    },
    Bool(syn::LitBool),
    Ident(Ident),
    Array {
        items: Vec<Value>,
        span: Span,
    },
    Tuple {
        items: Vec<Value>,
        span: Span,
    },
    EmptyMap {
        span: Span,
    },
}

impl Value {
    /// The span of the value's first token, for pointed errors.
    pub fn span(&self) -> Span {
        match self {
            Value::Str(l) => l.span(),
            Value::Int { lit, .. } => lit.span(),
            Value::Float { lit, .. } => lit.span(),
            Value::Bool(l) => l.span,
            Value::Ident(i) => i.span(),
            Value::Array { span, .. } | Value::Tuple { span, .. } | Value::EmptyMap { span } => *span,
        }
    }

    /// A human name of the value's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int { .. } => "an integer",
            Value::Float { .. } => "a number",
            Value::Bool(_) => "a boolean",
            Value::Ident(_) => "an identifier",
            Value::Array { .. } => "an array",
            Value::Tuple { .. } => "a tuple",
            Value::EmptyMap { .. } => "a map",
        }
    }

    /// Tokens that build this value as a `serde_json::Value` at run time.
    pub fn to_json_tokens(&self) -> TokenStream {
        let json = quote!(::kong_pdk::__private::serde_json);
        match self {
            Value::Str(s) => quote!(#json::Value::String(::std::string::String::from(#s))),
            Value::Int { text, negative, .. } => {
                let v: i128 = text.parse().unwrap_or(0);
                let v = if *negative { -v } else { v };
                if v >= 0 {
                    let v = v as u64;
                    quote!(#json::Value::from(#v))
                } else {
                    let v = v as i64;
                    quote!(#json::Value::from(#v))
                }
            }
            Value::Float { text, negative, .. } => {
                let v: f64 = text.parse().unwrap_or(0.0);
                let v = if *negative { -v } else { v };
                quote!(#json::Value::from(#v))
            }
            Value::Bool(b) => quote!(#json::Value::Bool(#b)),
            Value::Ident(i) => {
                let s = i.to_string();
                quote!(#json::Value::String(::std::string::String::from(#s)))
            }
            Value::Array { items, .. } | Value::Tuple { items, .. } => {
                let items = items.iter().map(Value::to_json_tokens);
                quote!(#json::Value::Array(::std::vec![#(#items),*]))
            }
            Value::EmptyMap { .. } => quote!(#json::Value::Object(#json::Map::new())),
        }
    }

    /// The marker type naming this literal's kind, used by the compile-time default check.
    pub fn literal_marker(&self) -> Option<TokenStream> {
        let p = quote!(::kong_pdk::schema::literal);
        Some(match self {
            Value::Str(_) => quote!(#p::StringLiteral),
            Value::Int { .. } => quote!(#p::IntegerLiteral),
            Value::Float { .. } => quote!(#p::FloatLiteral),
            Value::Bool(_) => quote!(#p::BooleanLiteral),
            Value::EmptyMap { .. } => quote!(#p::MapLiteral),
            Value::Array { items, .. } => match items.first() {
                None => quote!(#p::EmptyArrayLiteral),
                Some(first) => {
                    let inner = first.literal_marker()?;
                    quote!(#p::ArrayLiteral<#inner>)
                }
            },
            Value::Ident(_) | Value::Tuple { .. } => return None,
        })
    }

    pub fn as_str(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.value()),
            _ => None,
        }
    }

    pub fn as_i128(&self) -> Option<i128> {
        match self {
            Value::Int { text, negative, .. } => {
                let v: i128 = text.parse().ok()?;
                Some(if *negative { -v } else { v })
            }
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float { text, negative, .. } => {
                let v: f64 = text.parse().ok()?;
                Some(if *negative { -v } else { v })
            }
            other => other.as_i128().map(|v| v as f64),
        }
    }
}

impl ToTokens for Value {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            Value::Str(l) => l.to_tokens(tokens),
            Value::Int { lit, .. } => lit.to_tokens(tokens),
            Value::Float { lit, .. } => lit.to_tokens(tokens),
            Value::Bool(l) => l.to_tokens(tokens),
            Value::Ident(i) => i.to_tokens(tokens),
            other => {
                let span = other.span();
                tokens.extend(quote::quote_spanned!(span=> value));
            }
        }
    }
}

impl Parse for Value {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(syn::token::Bracket) {
            let content;
            let b = bracketed!(content in input);
            let items = content.parse_terminated(Value::parse, Token![,])?;
            return Ok(Value::Array {
                items: items.into_iter().collect(),
                span: b.span.join(),
            });
        }
        if input.peek(syn::token::Paren) {
            let content;
            let p = parenthesized!(content in input);
            let items = content.parse_terminated(Value::parse, Token![,])?;
            return Ok(Value::Tuple {
                items: items.into_iter().collect(),
                span: p.span.join(),
            });
        }
        if input.peek(syn::token::Brace) {
            let content;
            let b = syn::braced!(content in input);
            if !content.is_empty() {
                return Err(content.error("only an empty map `{}` is supported as a default"));
            }
            return Ok(Value::EmptyMap { span: b.span.join() });
        }
        let negative = input.peek(Token![-]);
        if negative {
            input.parse::<Token![-]>()?;
        }
        if input.peek(Ident::peek_any) && !input.peek(syn::LitBool) {
            if negative {
                return Err(input.error("expected a number after `-`"));
            }
            return Ok(Value::Ident(Ident::parse_any(input)?));
        }
        let lit: Lit = input.parse()?;
        match lit {
            Lit::Str(s) if !negative => Ok(Value::Str(s)),
            Lit::Int(i) => Ok(Value::Int {
                text: i.base10_digits().to_owned(),
                negative,
                lit: i,
            }),
            Lit::Float(f) => Ok(Value::Float {
                text: f.base10_digits().to_owned(),
                negative,
                lit: f,
            }),
            Lit::Bool(b) if !negative => Ok(Value::Bool(b)),
            other => Err(syn::Error::new(
                other.span(),
                "expected a string, number, boolean, array or identifier",
            )),
        }
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key = Ident::parse_any(input)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            ArgValue::Value(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            let content;
            parenthesized!(content in input);
            let looks_like_args = content.peek(Ident::peek_any) && !content.peek(syn::LitBool);
            if looks_like_args {
                let args = content.parse_terminated(Arg::parse, Token![,])?;
                ArgValue::Args(args.into_iter().collect())
            } else {
                let values = content.parse_terminated(Value::parse, Token![,])?;
                ArgValue::Values(values.into_iter().collect())
            }
        } else {
            ArgValue::Flag
        };
        Ok(Arg { key, value })
    }
}

/// A whole comma-separated argument list.
pub struct Args(pub Vec<Arg>);

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let args = input.parse_terminated(Arg::parse, Token![,])?;
        Ok(Args(args.into_iter().collect()))
    }
}

impl Arg {
    /// The key as a string (`match` for `r#match` too).
    pub fn name(&self) -> String {
        self.key.unraw().to_string()
    }
}
