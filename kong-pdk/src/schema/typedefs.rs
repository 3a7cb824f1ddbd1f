//! Kong's typedefs (`kong/db/schema/typedefs.lua`): ready-made field types with Kong's rules
//! and error messages. Use one with `#[field(typedef = name)]`:
//!
//! ```
//! use kong_pdk::prelude::*;
//!
//! #[plugin(priority = 1, version = "1.0.0")]
//! pub struct Forward {
//!     #[field(typedef = host)]
//!     host: String,
//!     #[field(typedef = port, default = 80)]
//!     port: u16,
//! }
//! # #[handler] impl Handler for Forward {}
//!
//! let err = Forward::schema()
//!     .validate_config(serde_json::json!({ "host": "example.com:8080", "port": 70000 }))
//!     .unwrap_err();
//! assert_eq!(
//!     err.message(),
//!     "2 schema violations (config.host: must not have a port; config.port: value should be between 0 and 65535)"
//! );
//! ```
//!
//! A typedef only fits fields of its Kong type (`host` needs a `String`); a mismatch is a
//! compile error at the typedef's name. An unknown typedef name is a compile error too.

#![allow(non_camel_case_types)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use super::{FieldKind, FieldSchema, Pattern};

/// Kinds of Rust field a typedef fits.
pub mod kind {
    /// Fits `String` (and `Option<String>`).
    pub struct String;
    /// Fits integer types.
    pub struct Integer;
    /// Fits collections of strings (`Vec<String>`, `BTreeSet<String>`, ...).
    pub struct StringSet;
}

/// Implemented when a field of type `Self` can use a typedef of kind `K`.
#[diagnostic::on_unimplemented(
    message = "this typedef does not fit a field of type `{Self}`",
    label = "typedef needs a field of kind `{K}`"
)]
pub trait FitsTypedef<K> {}

impl FitsTypedef<kind::String> for String {}
macro_rules! int_fit {
    ($($t:ty),*) => {$(impl FitsTypedef<kind::Integer> for $t {})*};
}
int_fit!(i8, i16, i32, i64, u8, u16, u32, u64, isize, usize);
impl<T: FitsTypedef<K>, K> FitsTypedef<K> for Option<T> {}
impl FitsTypedef<kind::StringSet> for Vec<String> {}
impl FitsTypedef<kind::StringSet> for std::collections::BTreeSet<String> {}
impl<S> FitsTypedef<kind::StringSet> for std::collections::HashSet<String, S> {}

fn string(description: &str) -> FieldSchema {
    FieldSchema {
        description: Some(description.into()),
        ..FieldSchema::of(FieldKind::String)
    }
}

fn custom(description: &str, validator: super::CustomValidator) -> FieldSchema {
    FieldSchema {
        custom_validator: Some(validator),
        ..string(description)
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

macro_rules! typedef {
    ($(#[$doc:meta])* $name:ident: $kind:ident => $schema:expr) => {
        $(#[$doc])*
        pub enum $name {}

        impl $name {
            /// The typedef's schema.
            pub fn schema() -> FieldSchema {
                $schema
            }

            /// Replaces `field` with this typedef (attributes are applied after it).
            pub fn apply<T: FitsTypedef<kind::$kind> + ?Sized>(field: &mut FieldSchema) {
                *field = Self::schema();
            }
        }
    };
}

typedef!(
    /// An HTTP header name: `A-Z, a-z, 0-9, '_' and '-'`.
    header_name: String => custom("A string representing an HTTP header name.", |v| {
        validate_header_name(str_of(v))
    })
);
typedef!(
    /// A host name or IP address, without a port.
    host: String => custom("A string representing a host name, such as example.com.", |v| {
        let h = str_of(v);
        match parse_host(h) {
            Err(HostError::Invalid) => Err(format!("invalid value: {h}")),
            Err(HostError::BadPort) | Ok((_, Some(_))) => Err("must not have a port".into()),
            Ok(_) => Ok(()),
        }
    })
);
typedef!(
    /// A host name or IP address with an optional port.
    host_with_optional_port: String => custom(
        "A string representing a host name with an optional port number, such as example.com or example.com:8080.",
        |v| match parse_host(str_of(v)) {
            Err(HostError::Invalid) => Err(format!("invalid value: {}", str_of(v))),
            Err(HostError::BadPort) => Err("invalid port number".into()),
            Ok(_) => Ok(()),
        }
    )
);
typedef!(
    /// A host name with at most one `*`, leftmost or rightmost.
    wildcard_host: String => custom("A string representing a wildcard host name, such as *.example.com.", |v| {
        let h = str_of(v);
        let mut host = h.to_owned();
        if let Some(idx) = h.find('*') {
            if idx != 0 && idx != h.len() - 1 {
                return Err("wildcard must be leftmost or rightmost character".into());
            }
            if h.matches('*').count() > 1 {
                return Err("only one wildcard must be specified".into());
            }
            host = h.replace('*', "wildcard");
        }
        name_only(&host)
    })
);
typedef!(
    /// A TLS server name: a host name, not an IP, without a port.
    sni: String => custom("A string representing an SNI (server name indication) value for TLS.", |v| {
        name_only(str_of(v))
    })
);
typedef!(
    /// An IPv4 or IPv6 address.
    ip: String => custom("A string representing an IP address, such as 192.168.1.1.", |v| {
        let s = str_of(v);
        s.parse::<IpAddr>().map(|_| ()).map_err(|_| format!("not an ip address: {s}"))
    })
);
typedef!(
    /// An IP address or CIDR range, IPv4 or IPv6.
    ip_or_cidr: String => custom(
        "A string representing an IP address or CIDR block, such as 192.168.1.1 or 192.168.0.0/16.",
        |v| {
            let s = str_of(v);
            if is_ip_or_cidr(s, false) { Ok(()) } else { Err(format!("invalid ip or cidr range: '{s}'")) }
        }
    )
);
typedef!(
    /// An IPv4 address or CIDR range.
    cidr_v4: String => custom(
        "A string representing a CIDR block for IPv4 addresses, such as 192.168.0.0/16.",
        |v| {
            let s = str_of(v);
            if is_ip_or_cidr(s, true) { Ok(()) } else { Err(format!("invalid ipv4 cidr range: '{s}'")) }
        }
    )
);
typedef!(
    /// Kong's deprecated alias of `cidr_v4`.
    cidr: String => cidr_v4::schema()
);
typedef!(
    /// A port number, 0 to 65535.
    port: Integer => FieldSchema {
        between: Some((Value::from(0), Value::from(65535))),
        description: Some("An integer representing a port number between 0 and 65535, inclusive.".into()),
        ..FieldSchema::of(FieldKind::Integer)
    }
);
typedef!(
    /// A timeout in milliseconds, 0 to 2^31-2.
    timeout: Integer => FieldSchema {
        between: Some((Value::from(0), Value::from(2_147_483_646))),
        description: Some("An integer representing a timeout in milliseconds. Must be between 0 and 2^31-2.".into()),
        ..FieldSchema::of(FieldKind::Integer)
    }
);
typedef!(
    /// A URL path: starts with `/`, no empty segments, RFC 3986 characters, valid `%XX`.
    path: String => FieldSchema {
        starts_with: Some("/".into()),
        match_none: vec![(Pattern::new("//"), "must not have empty segments")],
        ..custom(
            "A string representing a URL path, such as /path/to/resource. Must start with a forward slash (/) and must not contain empty segments (i.e., two consecutive forward slashes).",
            |v| validate_path(str_of(v)),
        )
    }
);
typedef!(
    /// A URL with a scheme and a host.
    url: String => custom("A string representing a URL, such as https://example.com/path/to/resource?q=search.", |v| {
        validate_url(str_of(v))
    })
);
typedef!(
    /// An HTTP method: uppercase letters.
    http_method: String => FieldSchema {
        pattern: Some(Pattern::new("^[A-Z]+$")),
        ..string("A string representing an HTTP method, such as GET, POST, PUT, or DELETE. The string must contain only uppercase letters.")
    }
);
typedef!(
    /// A semantic version `X.Y.Z`.
    semantic_version: String => custom("A string representing a semantic version, such as 1.2.3.", |v| {
        let s = str_of(v);
        let core = s.split_once('-').map_or(s, |(c, _)| c);
        let ok = core.split('.').count() == 3 && core.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if ok { Ok(()) } else { Err("invalid version number: must be in format of X.Y.Z".into()) }
    })
);
typedef!(
    /// An entity name: alphanumerics and `.-_~`.
    name: String => custom("A unique string representing a name.", |v| {
        let s = str_of(v);
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_~".contains(&b)) {
            Ok(())
        } else {
            Err(format!("invalid value '{s}': it must only contain alphanumeric and '., -, _, ~' characters"))
        }
    })
);
typedef!(
    /// An entity name that also accepts non-ASCII UTF-8.
    utf8_name: String => custom("A unique string representing a UTF-8 encoded name.", |v| {
        let s = str_of(v);
        if s.chars().all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || ".-_~".contains(c)) {
            Ok(())
        } else {
            Err(format!("invalid value '{s}': the only accepted ascii characters are alphanumerics or ., -, _, and ~"))
        }
    })
);
typedef!(
    /// A tag: printable ASCII except `,` and `/`, or UTF-8.
    tag: String => FieldSchema { required: true, ..custom("A string representing a tag.", |v| validate_tag(str_of(v))) }
);
typedef!(
    /// A set of tags.
    tags: StringSet => FieldSchema {
        description: Some("A set of strings representing tags.".into()),
        ..FieldSchema::of(FieldKind::Set(Box::new(tag::schema())))
    }
);
typedef!(
    /// A UUID.
    uuid: String => FieldSchema { uuid: true, ..string("A string representing a UUID (universally unique identifier).") }
);

/// Kong's protocols, sorted.
pub const PROTOCOLS: [&str; 8] = ["grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp"];
/// The HTTP-subsystem protocols, sorted.
pub const HTTP_PROTOCOLS: [&str; 4] = ["grpc", "grpcs", "http", "https"];

fn protocol_list(list: &[&str]) -> Vec<Value> {
    list.iter().map(|p| Value::from(*p)).collect()
}

typedef!(
    /// A set of protocols (any subsystem); defaults to the HTTP ones.
    protocols: StringSet => FieldSchema {
        required: true,
        default: Some(Value::Array(protocol_list(&HTTP_PROTOCOLS))),
        description: Some("A set of strings representing protocols.".into()),
        ..FieldSchema::of(FieldKind::Set(Box::new(FieldSchema {
            one_of: Some(protocol_list(&PROTOCOLS)),
            ..string("A string representing a protocol, such as HTTP or HTTPS.")
        })))
    }
);
typedef!(
    /// A set of HTTP-subsystem protocols.
    protocols_http: StringSet => FieldSchema {
        required: true,
        default: Some(Value::Array(protocol_list(&HTTP_PROTOCOLS))),
        description: Some("A set of strings representing HTTP protocols.".into()),
        ..FieldSchema::of(FieldKind::Set(Box::new(FieldSchema {
            one_of: Some(protocol_list(&HTTP_PROTOCOLS)),
            ..FieldSchema::of(FieldKind::String)
        })))
    }
);

/// The WebSocket protocols (Kong Enterprise), sorted.
pub const WS_PROTOCOLS: [&str; 2] = ["ws", "wss"];

typedef!(
    /// A set of WebSocket protocols (Kong Enterprise's `protocols_ws`), both by default.
    protocols_ws: StringSet => FieldSchema {
        required: true,
        default: Some(Value::Array(protocol_list(&WS_PROTOCOLS))),
        description: Some("A set of strings representing WebSocket protocols.".into()),
        ..FieldSchema::of(FieldKind::Set(Box::new(FieldSchema {
            one_of: Some(protocol_list(&WS_PROTOCOLS)),
            ..FieldSchema::of(FieldKind::String)
        })))
    }
);

/// The HTTP and WebSocket protocols, sorted.
pub const HTTP_WS_PROTOCOLS: [&str; 6] = ["grpc", "grpcs", "http", "https", "ws", "wss"];

typedef!(
    /// A set of HTTP-subsystem and WebSocket protocols, all by default: the protocols of a
    /// plugin that also serves WebSocket services, as Kong Enterprise's key-auth.
    protocols_http_ws: StringSet => FieldSchema {
        required: true,
        default: Some(Value::Array(protocol_list(&HTTP_WS_PROTOCOLS))),
        description: Some("A set of strings representing HTTP and WebSocket protocols.".into()),
        ..FieldSchema::of(FieldKind::Set(Box::new(FieldSchema {
            one_of: Some(protocol_list(&HTTP_WS_PROTOCOLS)),
            ..FieldSchema::of(FieldKind::String)
        })))
    }
);

fn foreign_null(reference: &'static str, description: &str) -> FieldSchema {
    FieldSchema {
        eq: Some(Value::Null),
        description: Some(description.into()),
        ..FieldSchema::of(FieldKind::Foreign { reference })
    }
}

/// `typedefs.no_consumer`: the plugin cannot be scoped to a consumer.
pub fn no_consumer() -> FieldSchema {
    foreign_null(
        "consumers",
        "Custom type for representing a foreign key with a null value allowed.",
    )
}

/// `typedefs.no_route`: the plugin cannot be scoped to a route.
pub fn no_route() -> FieldSchema {
    foreign_null("routes", "A reference to the 'routes' table with a null value allowed.")
}

/// `typedefs.no_service`: the plugin cannot be scoped to a service.
pub fn no_service() -> FieldSchema {
    foreign_null(
        "services",
        "A reference to the 'services' table with a null value allowed.",
    )
}

/// Kong's `utils.validate_header_name`.
pub fn validate_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("no header name provided".into());
    }
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "bad header name '{name}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        ))
    }
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag
            .chars()
            .all(|c| !c.is_ascii() || ((' '..='~').contains(&c) && c != ',' && c != '/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag '{tag}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
        ))
    }
}

fn validate_path(path: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b".-_~/%:@!$&'()*+,;=".contains(&b);
    if !path.starts_with('/') || !path.bytes().all(allowed) {
        return Err(format!(
            "invalid path: '{path}' (characters outside of the reserved list of RFC 3986 found)"
        ));
    }
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                let end = (i + 3).min(b.len());
                return Err(format!("invalid url-encoded value: '{}'", &path[i..end]));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn validate_url(url: &str) -> Result<(), String> {
    let scheme_end = url.find(':').filter(|&i| {
        i > 0
            && url.as_bytes()[0].is_ascii_alphabetic()
            && url[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    let rest = match scheme_end {
        Some(i) => &url[i + 1..],
        None => url,
    };
    let host = rest.strip_prefix("//").map(|r| {
        let authority = r.split(['/', '?', '#']).next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        host_port.to_owned()
    });
    match host {
        Some(h) if !h.is_empty() && !h.starts_with(':') => {}
        _ => return Err("missing host in url".into()),
    }
    if scheme_end.is_none() {
        return Err("missing scheme in url".into());
    }
    Ok(())
}

/// What a host string names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// An IPv4 address.
    Ipv4,
    /// An IPv6 address.
    Ipv6,
    /// A DNS name.
    Name,
}

/// Why a host string is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// Not an IP nor a valid host name.
    Invalid,
    /// The port part is not a number from 0 to 65535.
    BadPort,
}

fn port_of(p: &str) -> Result<u16, HostError> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    p.parse::<u16>().map_err(|_| HostError::BadPort)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').enumerate().all(|(i, label)| {
            (!label.is_empty() || (i > 0 && name.ends_with('.') && label.is_empty()))
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Kong's `utils.normalize_ip`: `host`, `host:port`, `a.b.c.d[:port]`, `[v6][:port]` or a bare
/// IPv6 address.
pub fn parse_host(s: &str) -> Result<(HostKind, Option<u16>), HostError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or(HostError::Invalid)?;
        addr.parse::<Ipv6Addr>().map_err(|_| HostError::Invalid)?;
        return match after {
            "" => Ok((HostKind::Ipv6, None)),
            p => Ok((
                HostKind::Ipv6,
                Some(port_of(p.strip_prefix(':').ok_or(HostError::Invalid)?)?),
            )),
        };
    }
    if s.matches(':').count() > 1 {
        return s
            .parse::<Ipv6Addr>()
            .map(|_| (HostKind::Ipv6, None))
            .map_err(|_| HostError::Invalid);
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(port_of(p)?)),
        None => (s, None),
    };
    if !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(|_| (HostKind::Ipv4, port))
            .map_err(|_| HostError::Invalid);
    }
    if valid_name(host) {
        Ok((HostKind::Name, port))
    } else {
        Err(HostError::Invalid)
    }
}

fn name_only(h: &str) -> Result<(), String> {
    match parse_host(h) {
        Err(HostError::Invalid) => Err(format!("invalid value: {h}")),
        Ok((HostKind::Ipv4 | HostKind::Ipv6, _)) => Err("must not be an IP".into()),
        Err(HostError::BadPort) | Ok((_, Some(_))) => Err("must not have a port".into()),
        Ok(_) => Ok(()),
    }
}

fn is_ip_or_cidr(s: &str, v4_only: bool) -> bool {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else { return false };
    if v4_only && !ip.is_ipv4() {
        return false;
    }
    match bits {
        None => true,
        Some(b) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) && b.parse::<u32>().is_ok_and(|n| n <= max)
        }
    }
}
