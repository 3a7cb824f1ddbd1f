//! The core entity kinds the Admin API serves and kong.yml declares, with Kong's schemas (`kong/db/schema/entities`):
//! fields, defaults, endpoint keys, unique fields and foreign keys.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::schema::typedefs;
use crate::schema::{Conditional, EntityCheck, Field, FieldKind, FieldSchema, RecordSchema};

/// One entity kind.
// Without the Admin API only the schemas are read (kong.yml's checks).
#[cfg_attr(not(feature = "admin"), allow(dead_code))]
pub(crate) struct Kind {
    /// The table / path name (`services`).
    pub name: &'static str,
    /// The fields and entity checks.
    pub schema: RecordSchema,
    /// The field that may stand for the id in paths (`name`, `username`).
    pub endpoint_key: Option<&'static str>,
    /// Fields whose values are unique among entities of the kind.
    pub unique: &'static [&'static str],
    /// Foreign fields: (field, referenced kind, deleting the referenced entity cascades).
    pub foreign: &'static [(&'static str, &'static str, bool)],
    /// The Admin API collection (`/services`, `/key-auths`).
    pub path: &'static str,
    /// For a plugin's entity: what the plugin declared.
    pub dao: Option<&'static crate::dao::DaoMeta>,
}

fn f(kind: FieldKind) -> FieldSchema {
    FieldSchema::of(kind)
}

fn with_default(mut s: FieldSchema, v: Value) -> FieldSchema {
    s.default = Some(v);
    s
}

fn required(mut s: FieldSchema) -> FieldSchema {
    s.required = true;
    s
}

fn foreign(reference: &'static str) -> FieldSchema {
    f(FieldKind::Foreign { reference })
}

fn between(mut s: FieldSchema, lo: i64, hi: i64) -> FieldSchema {
    s.between = Some((Value::from(lo), Value::from(hi)));
    s
}

fn one_of(mut s: FieldSchema, values: Value) -> FieldSchema {
    s.one_of = values.as_array().cloned();
    s
}

fn set_of(elem: FieldSchema) -> FieldSchema {
    f(FieldKind::Set(Box::new(elem)))
}

/// A route's host (Kong's `typedefs.hosts` elements): one wildcard at most, as the leftmost
/// or rightmost label, and a port allowed (`example.com:8000`).
fn route_host(v: &Value) -> Result<(), String> {
    let host = v.as_str().unwrap_or_default();
    if host.matches('*').count() > 1 {
        return Err("invalid wildcard: must have at most one wildcard".into());
    }
    if host.contains('*') && !host.starts_with("*.") && !host.ends_with(".*") {
        return Err("invalid wildcard: must be placed at leftmost or rightmost label".into());
    }
    let plain = Value::String(host.replace('*', "abc"));
    match typedefs::host_with_optional_port::schema().custom_validator {
        Some(check) => check(&plain),
        None => Ok(()),
    }
}

fn array_of(elem: FieldSchema) -> FieldSchema {
    f(FieldKind::Array(Box::new(elem)))
}

fn common(fields: Vec<Field>) -> Vec<Field> {
    let mut all = vec![
        Field::new("id", typedefs::uuid::schema()),
        Field::new("created_at", f(FieldKind::Integer)),
        Field::new("updated_at", f(FieldKind::Integer)),
    ];
    all.extend(fields);
    all.push(Field::new("tags", typedefs::tags::schema()));
    all
}

const PROTOCOLS: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
    "ws",
    "wss",
];

/// Kong's `typedefs.sources` / `typedefs.destinations`: a set of `{ip, port}` records with at
/// least one of the two.
fn cidr_ports() -> FieldSchema {
    let mut entry = crate::schema::RecordSchema {
        fields: vec![
            Field::new("ip", typedefs::ip_or_cidr::schema()),
            Field::new("port", typedefs::port::schema()),
        ],
        entity_checks: vec![EntityCheck::AtLeastOneOf(vec!["ip".into(), "port".into()])],
    };
    entry.fields.iter_mut().for_each(|f| f.schema.required = false);
    set_of(FieldSchema::record(entry))
}

fn route_path(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some(p) if p.starts_with('/') || p.starts_with("~/") => Ok(()),
        _ => Err("should start with: / (fixed path) or ~/ (regex path)".into()),
    }
}

fn services() -> Kind {
    let timeout = || with_default(between(f(FieldKind::Integer), 1, 2_147_483_646), json!(60000));
    Kind {
        name: "services",
        path: "services",
        dao: None,
        schema: RecordSchema {
            fields: common(vec![
                Field::new("name", typedefs::utf8_name::schema()),
                Field::new(
                    "retries",
                    with_default(between(f(FieldKind::Integer), 0, 32767), json!(5)),
                ),
                Field::new(
                    "protocol",
                    required(with_default(
                        one_of(f(FieldKind::String), json!(PROTOCOLS)),
                        json!("http"),
                    )),
                ),
                Field::new("host", required(typedefs::host::schema())),
                Field::new("port", required(with_default(typedefs::port::schema(), json!(80)))),
                Field::new("path", typedefs::path::schema()),
                Field::new("connect_timeout", timeout()),
                Field::new("write_timeout", timeout()),
                Field::new("read_timeout", timeout()),
                Field::new("client_certificate", foreign("certificates")),
                Field::new("tls_verify", f(FieldKind::Boolean)),
                Field::new("tls_verify_depth", between(f(FieldKind::Integer), 0, 64)),
                Field::new("ca_certificates", array_of(typedefs::uuid::schema())),
                Field::new("enabled", required(with_default(f(FieldKind::Boolean), json!(true)))),
            ]),
            // Upstream TLS settings only mean something for https and tls services (and wss).
            entity_checks: [
                "client_certificate",
                "tls_verify",
                "tls_verify_depth",
                "ca_certificates",
            ]
            .into_iter()
            .map(|field| {
                let mut must_be_null = f(FieldKind::String);
                must_be_null.eq = Some(Value::Null);
                // Kong Enterprise also verifies wss upstreams and presents them a certificate.
                let tls_ws = matches!(field, "client_certificate" | "tls_verify");
                let plain: Vec<&str> = PROTOCOLS
                    .iter()
                    .copied()
                    .filter(|p| !(matches!(*p, "https" | "tls") || (tls_ws && *p == "wss")))
                    .collect();
                EntityCheck::Conditional(Box::new(Conditional {
                    if_field: "protocol".into(),
                    if_match: one_of(f(FieldKind::String), json!(plain)),
                    then_field: field.into(),
                    then_match: must_be_null,
                    then_err: None,
                }))
            })
            // Stream and gRPC services have no path (Kong's `services.lua`).
            .chain(std::iter::once({
                let mut must_be_null = f(FieldKind::String);
                must_be_null.eq = Some(Value::Null);
                EntityCheck::Conditional(Box::new(Conditional {
                    if_field: "protocol".into(),
                    if_match: one_of(f(FieldKind::String), json!(["tcp", "tls", "udp", "grpc", "grpcs"])),
                    then_field: "path".into(),
                    then_match: must_be_null,
                    then_err: None,
                }))
            }))
            .collect(),
        },
        endpoint_key: Some("name"),
        unique: &["name"],
        foreign: &[("client_certificate", "certificates", false)],
    }
}

fn ca_certificates() -> Kind {
    Kind {
        name: "ca_certificates",
        path: "ca_certificates",
        dao: None,
        schema: RecordSchema {
            fields: common(vec![
                Field::new("cert", required(f(FieldKind::String))),
                Field::new("cert_digest", f(FieldKind::String)),
            ]),
            entity_checks: Vec::new(),
        },
        endpoint_key: None,
        unique: &["cert_digest"],
        foreign: &[],
    }
}

fn routes() -> Kind {
    let mut path = f(FieldKind::String);
    path.custom_validator = Some(route_path);
    let bool_default = |v: bool| required(with_default(f(FieldKind::Boolean), json!(v)));
    Kind {
        name: "routes",
        path: "routes",
        dao: None,
        schema: RecordSchema {
            fields: common(vec![
                Field::new("name", typedefs::utf8_name::schema()),
                Field::new(
                    "protocols",
                    required(with_default(
                        set_of(one_of(f(FieldKind::String), json!(PROTOCOLS))),
                        json!(["http", "https"]),
                    )),
                ),
                Field::new("sources", cidr_ports()),
                Field::new("destinations", cidr_ports()),
                Field::new("methods", set_of(typedefs::http_method::schema())),
                Field::new("hosts", array_of(FieldSchema::checked_string(route_host))),
                Field::new("paths", array_of(path)),
                Field::new(
                    "headers",
                    f(FieldKind::Map {
                        keys: Box::new(typedefs::header_name::schema()),
                        values: Box::new(array_of(f(FieldKind::String))),
                    }),
                ),
                Field::new(
                    "https_redirect_status_code",
                    required(with_default(
                        one_of(f(FieldKind::Integer), json!([426, 301, 302, 307, 308])),
                        json!(426),
                    )),
                ),
                Field::new("regex_priority", with_default(f(FieldKind::Integer), json!(0))),
                Field::new("strip_path", bool_default(true)),
                Field::new(
                    "path_handling",
                    with_default(one_of(f(FieldKind::String), json!(["v0", "v1"])), json!("v0")),
                ),
                Field::new("preserve_host", bool_default(false)),
                Field::new("request_buffering", bool_default(true)),
                Field::new("response_buffering", bool_default(true)),
                Field::new("snis", set_of(typedefs::wildcard_host::schema())),
                Field::new("service", foreign("services")),
            ]),
            entity_checks: Vec::new(),
        },
        endpoint_key: Some("name"),
        unique: &["name"],
        foreign: &[("service", "services", false)],
    }
}

fn consumers() -> Kind {
    Kind {
        name: "consumers",
        path: "consumers",
        dao: None,
        schema: RecordSchema {
            fields: common(vec![
                Field::new("username", f(FieldKind::String)),
                Field::new("custom_id", f(FieldKind::String)),
            ]),
            entity_checks: vec![EntityCheck::AtLeastOneOf(vec!["custom_id".into(), "username".into()])],
        },
        endpoint_key: Some("username"),
        unique: &["username", "custom_id"],
        foreign: &[],
    }
}

fn plugins() -> Kind {
    Kind {
        name: "plugins",
        path: "plugins",
        dao: None,
        schema: RecordSchema {
            fields: common(vec![
                Field::new("name", required(f(FieldKind::String))),
                Field::new("instance_name", typedefs::utf8_name::schema()),
                Field::new("route", foreign("routes")),
                Field::new("service", foreign("services")),
                Field::new("consumer", foreign("consumers")),
                Field::new("protocols", typedefs::protocols::schema()),
                Field::new("enabled", required(with_default(f(FieldKind::Boolean), json!(true)))),
                Field::new("ordering", ordering()),
            ]),
            entity_checks: Vec::new(),
        },
        endpoint_key: Some("instance_name"),
        unique: &["instance_name"],
        foreign: &[
            ("route", "routes", true),
            ("service", "services", true),
            ("consumer", "consumers", true),
        ],
    }
}

/// Kong Enterprise's `ordering`: `{before: {access: [names]}, after: {access: [names]}}`,
/// optional at each level.
fn ordering() -> FieldSchema {
    let optional_record = |fields: Vec<Field>| FieldSchema {
        required: false,
        ..FieldSchema::record(RecordSchema {
            fields,
            entity_checks: Vec::new(),
        })
    };
    let access = || optional_record(vec![Field::new("access", FieldSchema::array_of(f(FieldKind::String)))]);
    optional_record(vec![Field::new("before", access()), Field::new("after", access())])
}

fn certificates() -> Kind {
    Kind {
        name: "certificates",
        path: "certificates",
        dao: None,
        schema: RecordSchema {
            fields: common(vec![
                Field::new("cert", required(f(FieldKind::String))),
                Field::new("key", required(f(FieldKind::String))),
                Field::new("cert_alt", f(FieldKind::String)),
                Field::new("key_alt", f(FieldKind::String)),
            ]),
            entity_checks: vec![EntityCheck::MutuallyRequired(vec!["cert_alt".into(), "key_alt".into()])],
        },
        endpoint_key: None,
        unique: &[],
        foreign: &[],
    }
}

fn snis() -> Kind {
    Kind {
        name: "snis",
        path: "snis",
        dao: None,
        schema: RecordSchema {
            fields: common(vec![
                Field::new("name", required(typedefs::wildcard_host::schema())),
                Field::new("certificate", required(foreign("certificates"))),
            ]),
            entity_checks: Vec::new(),
        },
        endpoint_key: Some("name"),
        unique: &["name"],
        foreign: &[("certificate", "certificates", true)],
    }
}

fn target_value(v: &Value) -> Result<(), String> {
    let s = v.as_str().unwrap_or_default();
    let (host, _) = crate::gateway::split_target(s);
    match crate::schema::typedefs::parse_host(&host) {
        Ok(_) => Ok(()),
        Err(_) => Err("Invalid target; not a valid hostname or ip address".into()),
    }
}

/// An upstream's name (Kong's `validate_name`): a host name, neither an address nor with a
/// port.
fn upstream_name(v: &Value) -> Result<(), String> {
    let name = v.as_str().unwrap_or_default();
    let invalid = format!("Invalid name ('{name}'); must be a valid hostname");
    match typedefs::parse_host(name) {
        Err(_) => Err(invalid),
        Ok((_, Some(_))) => Err(format!("Invalid name ('{name}'); no port allowed")),
        Ok((typedefs::HostKind::Name, None)) => Ok(()),
        Ok(_) => Err(format!("Invalid name ('{name}'); no ip addresses allowed")),
    }
}

/// An HTTP token (Kong's `validate_cookie_name`).
fn cookie_name(v: &Value) -> Result<(), String> {
    let name = v.as_str().unwrap_or_default();
    if name.is_empty() {
        return Err("no token provided".into());
    }
    let forbidden = |b: u8| b < 32 || b == 127 || b" \t()<>@,;:\\\"/?={}[]".contains(&b);
    if name.bytes().any(forbidden) {
        return Err(
            "contains one or more invalid characters. ASCII control characters (0-31;127), \
                    space, tab and the characters ()<>@,;:\\\"/?={}[] are not allowed."
                .into(),
        );
    }
    Ok(())
}

fn hash_on() -> FieldSchema {
    with_default(
        one_of(
            f(FieldKind::String),
            json!([
                "none",
                "consumer",
                "ip",
                "header",
                "cookie",
                "path",
                "query_arg",
                "uri_capture"
            ]),
        ),
        json!("none"),
    )
}

fn simple_param() -> FieldSchema {
    let mut s = f(FieldKind::String);
    s.len_min = Some(1);
    s
}

/// `then_match = { required = true }` when `if_field` is `value`.
fn required_when(if_field: &str, value: &str, then_field: &str) -> EntityCheck {
    EntityCheck::Conditional(Box::new(Conditional {
        if_field: if_field.into(),
        if_match: one_of(FieldSchema::matcher(), json!([value])),
        then_field: then_field.into(),
        then_match: required(FieldSchema::matcher()),
        then_err: None,
    }))
}

/// `hash_fallback` is one of `allowed` when `hash_on` is `value`.
fn fallback_when(value: &str, allowed: Value) -> EntityCheck {
    EntityCheck::Conditional(Box::new(Conditional {
        if_field: "hash_on".into(),
        if_match: one_of(FieldSchema::matcher(), json!([value])),
        then_field: "hash_fallback".into(),
        then_match: one_of(FieldSchema::matcher(), allowed),
        then_err: None,
    }))
}

/// The `healthchecks` record, with Kong's defaults.
fn healthchecks() -> FieldSchema {
    let seconds = |default: f64| with_default(between_f(f(FieldKind::Number), 0.0, 65535.0), json!(default));
    let byte = |default: i64| with_default(between(f(FieldKind::Integer), 0, 255), json!(default));
    let statuses = |default: Value| with_default(array_of(between(f(FieldKind::Integer), 100, 999)), default);
    let record = |fields: Vec<Field>| {
        FieldSchema::record(RecordSchema {
            fields,
            entity_checks: Vec::new(),
        })
    };
    let check_type = || {
        with_default(
            one_of(f(FieldKind::String), json!(["tcp", "http", "https", "grpc", "grpcs"])),
            json!("http"),
        )
    };
    let mut headers = f(FieldKind::Map {
        keys: Box::new(typedefs::header_name::schema()),
        values: Box::new(array_of(f(FieldKind::String))),
    });
    headers.required = false;
    let active = record(vec![
        Field::new("type", check_type()),
        Field::new("timeout", seconds(1.0)),
        Field::new(
            "concurrency",
            with_default(between(f(FieldKind::Integer), 1, 1 << 31), json!(10)),
        ),
        Field::new("http_path", with_default(typedefs::path::schema(), json!("/"))),
        Field::new("https_sni", typedefs::sni::schema()),
        Field::new(
            "https_verify_certificate",
            required(with_default(f(FieldKind::Boolean), json!(true))),
        ),
        Field::new("headers", headers),
        Field::new(
            "healthy",
            record(vec![
                Field::new("interval", seconds(0.0)),
                Field::new("http_statuses", statuses(json!([200, 302]))),
                Field::new("successes", byte(0)),
            ]),
        ),
        Field::new(
            "unhealthy",
            record(vec![
                Field::new("interval", seconds(0.0)),
                Field::new(
                    "http_statuses",
                    statuses(json!([429, 404, 500, 501, 502, 503, 504, 505])),
                ),
                Field::new("tcp_failures", byte(0)),
                Field::new("timeouts", byte(0)),
                Field::new("http_failures", byte(0)),
            ]),
        ),
    ]);
    let passive = record(vec![
        Field::new("type", check_type()),
        Field::new(
            "healthy",
            record(vec![
                Field::new(
                    "http_statuses",
                    statuses(json!([
                        200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306, 307, 308
                    ])),
                ),
                Field::new("successes", byte(0)),
            ]),
        ),
        Field::new(
            "unhealthy",
            record(vec![
                Field::new("http_statuses", statuses(json!([429, 500, 503]))),
                Field::new("tcp_failures", byte(0)),
                Field::new("timeouts", byte(0)),
                Field::new("http_failures", byte(0)),
            ]),
        ),
    ]);
    record(vec![
        Field::new("active", active),
        Field::new("passive", passive),
        Field::new(
            "threshold",
            with_default(between_f(f(FieldKind::Number), 0.0, 100.0), json!(0)),
        ),
    ])
}

fn between_f(mut s: FieldSchema, lo: f64, hi: f64) -> FieldSchema {
    s.between = Some((json!(lo), json!(hi)));
    s
}

fn upstreams() -> Kind {
    let mut name = required(f(FieldKind::String));
    name.custom_validator = Some(upstream_name);
    let mut cookie = f(FieldKind::String);
    cookie.custom_validator = Some(cookie_name);
    let others = |except: &str| {
        let all = [
            "none",
            "consumer",
            "ip",
            "header",
            "cookie",
            "path",
            "query_arg",
            "uri_capture",
        ];
        json!(all.iter().filter(|v| **v != except).collect::<Vec<_>>())
    };
    Kind {
        name: "upstreams",
        path: "upstreams",
        dao: None,
        schema: RecordSchema {
            fields: common(vec![
                Field::new("name", name),
                Field::new(
                    "algorithm",
                    with_default(
                        one_of(
                            f(FieldKind::String),
                            json!(["consistent-hashing", "least-connections", "round-robin", "latency"]),
                        ),
                        json!("round-robin"),
                    ),
                ),
                Field::new("hash_on", hash_on()),
                Field::new("hash_fallback", hash_on()),
                Field::new("hash_on_header", typedefs::header_name::schema()),
                Field::new("hash_fallback_header", typedefs::header_name::schema()),
                Field::new("hash_on_cookie", cookie),
                Field::new(
                    "hash_on_cookie_path",
                    with_default(typedefs::path::schema(), json!("/")),
                ),
                Field::new("hash_on_query_arg", simple_param()),
                Field::new("hash_fallback_query_arg", simple_param()),
                Field::new("hash_on_uri_capture", simple_param()),
                Field::new("hash_fallback_uri_capture", simple_param()),
                Field::new(
                    "slots",
                    with_default(between(f(FieldKind::Integer), 10, 65536), json!(10000)),
                ),
                Field::new("healthchecks", healthchecks()),
                Field::new("host_header", typedefs::host_with_optional_port::schema()),
                Field::new("client_certificate", foreign("certificates")),
                Field::new("use_srv_name", with_default(f(FieldKind::Boolean), json!(false))),
            ]),
            entity_checks: vec![
                required_when("hash_on", "header", "hash_on_header"),
                required_when("hash_fallback", "header", "hash_fallback_header"),
                required_when("hash_on", "cookie", "hash_on_cookie"),
                required_when("hash_fallback", "cookie", "hash_on_cookie"),
                fallback_when("none", json!(["none"])),
                fallback_when("cookie", json!(["none"])),
                fallback_when("consumer", others("consumer")),
                fallback_when("ip", others("ip")),
                fallback_when("path", others("path")),
                EntityCheck::Distinct(vec!["hash_on_header".into(), "hash_fallback_header".into()]),
                required_when("hash_on", "query_arg", "hash_on_query_arg"),
                required_when("hash_fallback", "query_arg", "hash_fallback_query_arg"),
                EntityCheck::Distinct(vec!["hash_on_query_arg".into(), "hash_fallback_query_arg".into()]),
                required_when("hash_on", "uri_capture", "hash_on_uri_capture"),
                required_when("hash_fallback", "uri_capture", "hash_fallback_uri_capture"),
                EntityCheck::Distinct(vec!["hash_on_uri_capture".into(), "hash_fallback_uri_capture".into()]),
            ],
        },
        endpoint_key: Some("name"),
        unique: &["name"],
        foreign: &[("client_certificate", "certificates", false)],
    }
}

fn targets() -> Kind {
    let mut target = required(f(FieldKind::String));
    target.custom_validator = Some(target_value);
    Kind {
        name: "targets",
        path: "targets",
        dao: None,
        schema: RecordSchema {
            fields: common(vec![
                Field::new("upstream", required(foreign("upstreams"))),
                Field::new("target", target),
                Field::new(
                    "weight",
                    with_default(between(f(FieldKind::Integer), 0, 65535), json!(100)),
                ),
            ]),
            entity_checks: Vec::new(),
        },
        endpoint_key: Some("target"),
        unique: &[],
        foreign: &[("upstream", "upstreams", true)],
    }
}

static KINDS: LazyLock<Vec<Kind>> = LazyLock::new(|| {
    let mut all = vec![
        services(),
        routes(),
        consumers(),
        plugins(),
        certificates(),
        ca_certificates(),
        snis(),
        upstreams(),
        targets(),
    ];
    // Plugins' entities: each belongs to a consumer and goes with it.
    all.extend(crate::dao::registered().iter().map(|meta| Kind {
        name: meta.name,
        path: meta.admin_api_name,
        dao: Some(meta),
        schema: meta.schema.clone(),
        endpoint_key: meta.endpoint_key,
        unique: meta.unique,
        foreign: &[("consumer", "consumers", true)],
    }));
    all
});

/// Every kind, in dependency order (a kind only references kinds before it, but for
/// `client_certificate`).
#[cfg(feature = "admin")]
pub(crate) fn all() -> &'static [Kind] {
    &KINDS
}

/// The kind named `name`.
pub(crate) fn get(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The kind served at `/{path}`.
#[cfg(feature = "admin")]
pub(crate) fn by_path(path: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.path == path)
}

/// Kong's route entity checks: which fields each protocol needs and allows (the Admin API and
/// kong.yml both run them), under the node's `router_flavor`. The errors are a schema
/// violation's fields.
pub(crate) fn route_checks(route: &Value, flavor: crate::model::RouterFlavor) -> Result<(), Map<String, Value>> {
    let field_violation = |field: &str, text: String| -> Map<String, Value> {
        [(field.to_owned(), Value::from(text))].into_iter().collect()
    };
    let protocols: Vec<&str> = route["protocols"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let set = |f: &str| match &route[f] {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    };
    if route["path_handling"] == "v1" {
        // Kong's custom entity check: accepted, with a warning that says what the flavor does.
        let fate = match flavor {
            crate::model::RouterFlavor::Traditional => "will be removed in future version",
            crate::model::RouterFlavor::TraditionalCompatible => {
                "will not work under 'expressions' or 'traditional_compatible' router_flavor"
            }
        };
        tracing::warn!(target: "kong", "path_handling='v1' is deprecated and {fate}, please use path_handling='v0' instead (deprecated after 3.0)");
    }
    let http = protocols.iter().any(|p| *p == "http" || *p == "https");
    let ws = protocols.iter().any(|p| crate::runloop::is_ws(p));
    let stream = protocols.iter().any(|p| matches!(*p, "tcp" | "tls" | "udp"));
    let passthrough = protocols.contains(&"tls_passthrough");
    let groups = [
        http,
        stream,
        passthrough,
        protocols.iter().any(|p| p.starts_with("grpc")),
        ws,
    ];
    if groups.iter().filter(|g| **g).count() > 1 {
        return Err(field_violation(
            "protocols",
            "these sets are mutually exclusive: ('http', 'https'), ('tcp', 'tls', 'udp'), ('tls_passthrough'), ('grpc', 'grpcs'), ('ws', 'wss')".to_owned(),
        ));
    }
    if stream || passthrough {
        for field in ["methods", "hosts", "paths", "headers"] {
            if set(field) {
                return Err(field_violation(
                    field,
                    format!("cannot set '{field}' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'"),
                ));
            }
        }
        let entity =
            |message: &str| -> Map<String, Value> { [("@entity".to_owned(), json!([message]))].into_iter().collect() };
        if passthrough && !set("snis") {
            return Err(entity("must set snis when 'protocols' is 'tls_passthrough'"));
        }
        if stream && !["sources", "destinations", "snis"].iter().any(|f| set(f)) {
            return Err(entity(
                "must set one of 'sources', 'destinations', 'snis' when 'protocols' is 'tcp', 'tls' or 'udp'",
            ));
        }
    } else if !ws {
        for field in ["sources", "destinations"] {
            if set(field) {
                let which = if http { "'http' or 'https'" } else { "'grpc' or 'grpcs'" };
                return Err(field_violation(
                    field,
                    format!("cannot set '{field}' when 'protocols' is {which}"),
                ));
            }
        }
    }
    if ws {
        for field in ["methods", "sources", "destinations"] {
            if set(field) {
                return Err(field_violation(
                    field,
                    format!("cannot set '{field}' when 'protocols' is 'ws' or 'wss'"),
                ));
            }
        }
        let wss = protocols.contains(&"wss");
        let (fields, names, which): (&[&str], &str, &str) = if wss {
            (
                &["hosts", "headers", "paths", "snis"],
                "'hosts', 'headers', 'paths', 'snis'",
                "wss",
            )
        } else {
            (&["hosts", "headers", "paths"], "'hosts', 'headers', 'paths'", "ws")
        };
        if !fields.iter().any(|f| set(f)) {
            return Err([(
                "@entity".to_owned(),
                json!([format!("must set one of {names} when 'protocols' is '{which}'")]),
            )]
            .into_iter()
            .collect());
        }
    }
    if http {
        let https = protocols.contains(&"https");
        let (fields, names): (&[&str], &str) = if https {
            (
                &["methods", "hosts", "headers", "paths", "snis"],
                "'methods', 'hosts', 'headers', 'paths', 'snis'",
            )
        } else {
            (
                &["methods", "hosts", "headers", "paths"],
                "'methods', 'hosts', 'headers', 'paths'",
            )
        };
        if !fields.iter().any(|f| set(f)) {
            let which = if https { "https" } else { "http" };
            return Err([(
                "@entity".to_owned(),
                json!([format!("must set one of {names} when 'protocols' is '{which}'")]),
            )]
            .into_iter()
            .collect());
        }
    }
    if set("snis")
        && !protocols
            .iter()
            .any(|p| matches!(*p, "grpcs" | "https" | "tls" | "tls_passthrough" | "wss"))
    {
        return Err(field_violation(
            "snis",
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'".to_owned(),
        ));
    }
    if let Some(headers) = route["headers"].as_object()
        && headers.keys().any(|k| k.eq_ignore_ascii_case("host"))
    {
        return Err(field_violation(
            "headers",
            "cannot contain 'host' header, which must be specified in the 'hosts' attribute".to_owned(),
        ));
    }
    Ok(())
}
