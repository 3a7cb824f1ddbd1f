//! Schema generation, JSON publication, validation and typedefs, against Kong's outputs.

#![allow(dead_code)]

use serde_json::{Value, json};

use super::typedefs;
use super::*;
use crate::prelude::*;

/// The quick start's my-plugin.
#[plugin(priority = 1000, version = "0.0.1")]
struct MyPlugin {
    #[field(typedef = header_name, default = "X-MyPlugin")]
    response_header_name: String,
}
#[handler]
impl Handler for MyPlugin {}

#[test]
fn my_plugin_schema_is_the_json_kong_publishes() {
    // What GET /schemas/plugins/my-plugin returns for the quick start's schema.lua:
    // { response_header_name = typedefs.header_name { required = false, default = "X-MyPlugin" } }
    // (schema_to_jsonable always adds `entity_checks`, an empty array here).
    let kong = json!({
        "entity_checks": [],
        "fields": [
            { "protocols": {
                "type": "set",
                "required": true,
                "default": ["grpc", "grpcs", "http", "https"],
                "description": "A set of strings representing protocols.",
                "elements": {
                    "type": "string",
                    "one_of": ["grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp"],
                    "description": "A string representing a protocol, such as HTTP or HTTPS."
                }
            } },
            { "config": {
                "type": "record",
                "required": true,
                "fields": [
                    { "response_header_name": {
                        "type": "string",
                        "required": false,
                        "default": "X-MyPlugin",
                        "description": "A string representing an HTTP header name."
                    } }
                ]
            } }
        ]
    });
    assert_eq!(MyPlugin::schema().to_json(), kong);
}

#[test]
fn validation_fills_defaults_and_reports_kong_messages() {
    let s = MyPlugin::schema();
    assert_eq!(
        s.validate_config(json!({})).unwrap(),
        json!({ "response_header_name": "X-MyPlugin" })
    );
    assert_eq!(
        s.validate_config(Value::Null).unwrap(),
        json!({ "response_header_name": "X-MyPlugin" })
    );
    let err = s
        .validate_config(json!({ "response_header_name": "bad name", "extra": 1 }))
        .unwrap_err();
    assert_eq!(
        err.message(),
        "2 schema violations (config.extra: unknown field; config.response_header_name: bad header name 'bad name', allowed characters are A-Z, a-z, 0-9, '_', and '-')"
    );
    assert_eq!(
        err.to_json(),
        json!({
            "code": 2,
            "name": "schema violation",
            "message": err.message(),
            "fields": { "config": {
                "extra": "unknown field",
                "response_header_name": "bad header name 'bad name', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
            } }
        })
    );
    let err = s.validate_config(json!({ "response_header_name": "" })).unwrap_err();
    assert_eq!(
        err.message(),
        "schema violation (config.response_header_name: length must be at least 1)"
    );
    let err = s.validate_config(json!({ "response_header_name": 5 })).unwrap_err();
    assert_eq!(
        err.message(),
        "schema violation (config.response_header_name: expected a string)"
    );
}

/// A nested record.
#[record(at_least_one_of("ip", "port"))]
struct Source {
    #[field(typedef = ip_or_cidr)]
    ip: Option<String>,
    #[field(typedef = port)]
    port: Option<u16>,
}

#[plugin(
    priority = 900,
    version = "1.2.3",
    name = "everything",
    protocols = protocols_http,
    no_consumer,
    mutually_exclusive("minute", "hour"),
    conditional(if_field = "policy", if_match(one_of = ["redis"]), then_field = "redis_host", then_match(required))
)]
struct Everything {
    /// Requests per minute.
    #[field(gt = 0)]
    minute: Option<f64>,
    #[field(between = (1, 24))]
    hour: Option<i64>,
    #[field(one_of = ["local", "redis"], default = "local")]
    policy: String,
    #[field(typedef = host)]
    redis_host: Option<String>,
    #[field(len_min = 2, len_max = 3)]
    methods: Option<Vec<String>>,
    #[field(default = ["a"])]
    tags: std::collections::BTreeSet<String>,
    #[field(match = "^[a-z]+$", starts_with = "ab")]
    word: Option<String>,
    #[field(uuid)]
    id: Option<String>,
    headers: Option<std::collections::HashMap<String, i64>>,
    #[field(default = [])]
    sources: Vec<Source>,
    #[field(default = true)]
    enabled: bool,
    #[field(len_eq = 2)]
    code: Option<String>,
    #[field(referenceable)]
    secret: Option<String>,
}
#[handler]
impl Handler for Everything {}

fn err_fields(v: Value) -> Value {
    Everything::schema().validate_config(v).unwrap_err().fields().clone()
}

#[test]
fn every_validator_uses_kongs_message() {
    assert_eq!(
        err_fields(json!({ "minute": 0 }))["config"]["minute"],
        "value must be greater than 0"
    );
    assert_eq!(
        err_fields(json!({ "hour": 25 }))["config"]["hour"],
        "value should be between 1 and 24"
    );
    assert_eq!(
        err_fields(json!({ "hour": 1.5 }))["config"]["hour"],
        "expected an integer"
    );
    assert_eq!(
        err_fields(json!({ "policy": "x" }))["config"]["policy"],
        "expected one of: local, redis"
    );
    assert_eq!(
        err_fields(json!({ "methods": ["GET"] }))["config"]["methods"],
        "length must be at least 2"
    );
    assert_eq!(
        err_fields(json!({ "methods": ["A", "B", "C", "D"] }))["config"]["methods"],
        "length must be at most 3"
    );
    assert_eq!(
        err_fields(json!({ "methods": ["A", 1] }))["config"]["methods"],
        json!([null, "expected a string"])
    );
    assert_eq!(
        err_fields(json!({ "word": "abC" }))["config"]["word"],
        "invalid value: abC"
    );
    assert_eq!(
        err_fields(json!({ "word": "xyz" }))["config"]["word"],
        "should start with: ab"
    );
    assert_eq!(
        err_fields(json!({ "id": "nope" }))["config"]["id"],
        "expected a valid UUID"
    );
    assert_eq!(
        err_fields(json!({ "headers": { "a": "x" } }))["config"]["headers"],
        json!({ "a": "expected an integer" })
    );
    assert_eq!(
        err_fields(json!({ "enabled": "yes" }))["config"]["enabled"],
        "expected a boolean"
    );
    assert_eq!(
        err_fields(json!({ "code": "abc" }))["config"]["code"],
        "length must be 2"
    );
    assert_eq!(err_fields(json!({ "tags": "a" }))["config"]["tags"], "expected a set");
    assert_eq!(
        err_fields(json!({ "sources": {} }))["config"]["sources"],
        "expected an array"
    );
    assert_eq!(
        err_fields(json!({ "headers": [] }))["config"]["headers"],
        "expected a map"
    );
}

#[test]
fn referenceable_fields_accept_vault_references() {
    let ok = Everything::schema()
        .validate_config(json!({ "secret": "{vault://env/token}" }))
        .unwrap();
    assert_eq!(ok["secret"], "{vault://env/token}");
}

#[test]
fn sets_are_deduplicated_and_defaults_filled() {
    let ok = Everything::schema()
        .validate_config(json!({ "tags": ["b", "a", "b"] }))
        .unwrap();
    assert_eq!(ok["tags"], json!(["b", "a"]));
    let ok = Everything::schema().validate_config(json!({})).unwrap();
    assert_eq!(ok["tags"], json!(["a"]));
    assert_eq!(ok["policy"], "local");
    assert_eq!(ok["enabled"], true);
    assert_eq!(ok["minute"], Value::Null);
    let config: Everything = serde_json::from_value(ok).unwrap();
    assert!(config.tags.contains("a"));
}

#[test]
fn entity_checks_use_kongs_messages() {
    let f = err_fields(json!({ "minute": 1, "hour": 2 }));
    assert_eq!(
        f["config"]["@entity"],
        json!(["only one or none of these fields must be set: 'minute', 'hour'"])
    );
    let f = err_fields(json!({ "policy": "redis" }));
    assert_eq!(f["config"]["redis_host"], "required field missing");
    assert_eq!(
        f["config"]["@entity"],
        json!(["failed conditional validation given value of field 'policy'"])
    );
    assert!(
        Everything::schema()
            .validate_config(json!({ "policy": "redis", "redis_host": "r.local" }))
            .is_ok()
    );
    let f = err_fields(json!({ "sources": [{ "port": 1 }, {}] }));
    assert_eq!(
        f["config"]["sources"],
        json!([null, { "@entity": ["at least one of these fields must be non-empty: 'ip', 'port'"] }])
    );
    let f = err_fields(json!({ "sources": [{ "ip": "10.0.0.0/33" }] }));
    assert_eq!(
        f["config"]["sources"],
        json!([{ "ip": "invalid ip or cidr range: '10.0.0.0/33'" }])
    );
}

#[test]
fn message_composition_matches_kong_for_nested_tables() {
    let err = Everything::schema()
        .validate_config(json!({ "minute": 1, "hour": 2, "policy": "x" }))
        .unwrap_err();
    assert_eq!(
        err.message(),
        "2 schema violations (config.@entity: {\n  \"only one or none of these fields must be set: 'minute', 'hour'\"\n}; config.policy: expected one of: local, redis)"
    );
}

#[test]
fn plugin_scoping_fields_are_published_and_enforced() {
    let schema = Everything::schema();
    let json = schema.to_json();
    assert_eq!(
        json["fields"][0],
        json!({ "consumer": {
            "type": "foreign", "reference": "consumers", "eq": null,
            "description": "Custom type for representing a foreign key with a null value allowed."
        } })
    );
    assert_eq!(
        json["fields"][1]["protocols"]["elements"],
        json!({ "type": "string", "one_of": ["grpc", "grpcs", "http", "https"] })
    );
    let cfg = &json["fields"][2]["config"];
    assert_eq!(
        cfg["entity_checks"][0],
        json!({ "mutually_exclusive": ["minute", "hour"] })
    );
    assert_eq!(
        cfg["entity_checks"][1],
        json!({ "conditional": { "if_field": "policy", "if_match": { "one_of": ["redis"] }, "then_field": "redis_host", "then_match": { "required": true } } })
    );
    assert_eq!(
        cfg["fields"][0],
        json!({ "minute": { "type": "number", "gt": 0, "description": "Requests per minute." } })
    );
    assert_eq!(
        cfg["fields"][1],
        json!({ "hour": { "type": "integer", "between": [1, 24] } })
    );

    let err = schema
        .validate_entity(json!({ "consumer": { "id": "6c6c4f22-2d4b-4b0d-8a8f-0e7a2d0c8c11" }, "protocols": ["tcp"] }))
        .unwrap_err();
    assert_eq!(err.fields()["consumer"], "value must be null");
    assert_eq!(
        err.fields()["protocols"],
        json!(["expected one of: grpc, grpcs, http, https"])
    );
    let ok = schema.validate_entity(json!({})).unwrap();
    assert_eq!(ok["protocols"], json!(["grpc", "grpcs", "http", "https"]));
}

fn check(schema: FieldSchema, value: Value) -> Result<(), Value> {
    let mut v = value;
    super::validate::validate_field(
        &FieldSchema {
            required: true,
            ..schema
        },
        &mut v,
    )
}

fn rejects(schema: fn() -> FieldSchema, value: Value, message: &str) {
    assert_eq!(
        check(schema(), value.clone()),
        Err(Value::from(message)),
        "value {value}"
    );
}

fn accepts(schema: fn() -> FieldSchema, value: Value) {
    assert_eq!(check(schema(), value.clone()), Ok(()), "value {value}");
}

#[test]
fn typedef_header_name() {
    accepts(typedefs::header_name::schema, json!("X-My_Header-1"));
    rejects(
        typedefs::header_name::schema,
        json!("X Header"),
        "bad header name 'X Header', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
    );
    rejects(typedefs::header_name::schema, json!(""), "length must be at least 1");
}

#[test]
fn typedef_host_and_friends() {
    accepts(typedefs::host::schema, json!("example.com"));
    accepts(typedefs::host::schema, json!("10.0.0.1"));
    accepts(typedefs::host::schema, json!("::1"));
    rejects(typedefs::host::schema, json!("example.com:80"), "must not have a port");
    rejects(typedefs::host::schema, json!("[::1]:80"), "must not have a port");
    rejects(
        typedefs::host::schema,
        json!("exa mple.com"),
        "invalid value: exa mple.com",
    );
    rejects(typedefs::host::schema, json!("300.1.1.1"), "invalid value: 300.1.1.1");
    accepts(typedefs::host_with_optional_port::schema, json!("example.com:8080"));
    rejects(
        typedefs::host_with_optional_port::schema,
        json!("example.com:99999"),
        "invalid port number",
    );
    accepts(typedefs::sni::schema, json!("example.com"));
    rejects(typedefs::sni::schema, json!("10.0.0.1"), "must not be an IP");
    rejects(typedefs::sni::schema, json!("example.com:443"), "must not have a port");
    accepts(typedefs::wildcard_host::schema, json!("*.example.com"));
    accepts(typedefs::wildcard_host::schema, json!("example.*"));
    rejects(
        typedefs::wildcard_host::schema,
        json!("ex*ample.com"),
        "wildcard must be leftmost or rightmost character",
    );
    rejects(
        typedefs::wildcard_host::schema,
        json!("*.example.*"),
        "only one wildcard must be specified",
    );
    rejects(typedefs::wildcard_host::schema, json!("10.0.0.1"), "must not be an IP");
}

#[test]
fn typedef_ip_and_cidr() {
    accepts(typedefs::ip::schema, json!("192.168.1.1"));
    accepts(typedefs::ip::schema, json!("2001:db8::1"));
    rejects(
        typedefs::ip::schema,
        json!("example.com"),
        "not an ip address: example.com",
    );
    accepts(typedefs::ip_or_cidr::schema, json!("10.0.0.0/8"));
    accepts(typedefs::ip_or_cidr::schema, json!("2001:db8::/32"));
    rejects(
        typedefs::ip_or_cidr::schema,
        json!("10.0.0.0/40"),
        "invalid ip or cidr range: '10.0.0.0/40'",
    );
    accepts(typedefs::cidr::schema, json!("10.0.0.0/16"));
    accepts(typedefs::cidr_v4::schema, json!("10.0.0.1"));
    rejects(
        typedefs::cidr_v4::schema,
        json!("::1/128"),
        "invalid ipv4 cidr range: '::1/128'",
    );
}

#[test]
fn typedef_port_timeout_and_method() {
    accepts(typedefs::port::schema, json!(0));
    accepts(typedefs::port::schema, json!(65535));
    rejects(
        typedefs::port::schema,
        json!(65536),
        "value should be between 0 and 65535",
    );
    rejects(typedefs::port::schema, json!("80"), "expected an integer");
    accepts(typedefs::timeout::schema, json!(60000));
    rejects(
        typedefs::timeout::schema,
        json!(2147483647),
        "value should be between 0 and 2147483646",
    );
    accepts(typedefs::http_method::schema, json!("GET"));
    rejects(typedefs::http_method::schema, json!("get"), "invalid value: get");
}

#[test]
fn typedef_path_and_url() {
    accepts(typedefs::path::schema, json!("/a/b%20c"));
    rejects(typedefs::path::schema, json!("a/b"), "should start with: /");
    rejects(typedefs::path::schema, json!("/a//b"), "must not have empty segments");
    rejects(
        typedefs::path::schema,
        json!("/a b"),
        "invalid path: '/a b' (characters outside of the reserved list of RFC 3986 found)",
    );
    rejects(
        typedefs::path::schema,
        json!("/a%zz"),
        "invalid url-encoded value: '%zz'",
    );
    accepts(typedefs::url::schema, json!("https://example.com/path?q=1"));
    rejects(typedefs::url::schema, json!("example.com"), "missing host in url");
    rejects(typedefs::url::schema, json!("//example.com"), "missing scheme in url");
}

#[test]
fn typedef_names_tags_versions_uuid_protocols() {
    accepts(typedefs::name::schema, json!("my_service-1.0~x"));
    rejects(
        typedefs::name::schema,
        json!("my service"),
        "invalid value 'my service': it must only contain alphanumeric and '., -, _, ~' characters",
    );
    accepts(typedefs::utf8_name::schema, json!("caf\u{e9}"));
    rejects(
        typedefs::utf8_name::schema,
        json!("a b"),
        "invalid value 'a b': the only accepted ascii characters are alphanumerics or ., -, _, and ~",
    );
    accepts(typedefs::tags::schema, json!(["a", "b c", "\u{e9}"]));
    assert_eq!(
        check(typedefs::tags::schema(), json!(["ok", "a,b"])),
        Err(json!([
            null,
            "invalid tag 'a,b': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
        ]))
    );
    accepts(typedefs::semantic_version::schema, json!("1.2.3"));
    rejects(
        typedefs::semantic_version::schema,
        json!("1.2"),
        "invalid version number: must be in format of X.Y.Z",
    );
    accepts(typedefs::uuid::schema, json!("6c6c4f22-2d4b-4b0d-8a8f-0e7a2d0c8c11"));
    rejects(typedefs::uuid::schema, json!("6c6c4f22"), "expected a valid UUID");
    accepts(typedefs::protocols::schema, json!(["http", "tcp"]));
    assert_eq!(
        check(typedefs::protocols_http::schema(), json!(["http", "tcp"])),
        Err(json!([null, "expected one of: grpc, grpcs, http, https"]))
    );
}

#[test]
fn a_filled_in_default_is_validated_like_a_given_value() {
    // Kong fills a default and then validates it: a default outside `one_of` is refused with
    // the field's own message, and a set's default is de-duplicated like a given set.
    let mut field = FieldSchema::of(FieldKind::String);
    field.one_of = Some(vec![json!("a")]);
    field.default = Some(json!("b"));
    assert_eq!(check(field, Value::Null), Err(Value::from("expected one of: a")));

    let mut set = FieldSchema::of(FieldKind::Set(Box::new(FieldSchema::of(FieldKind::String))));
    set.default = Some(json!(["x", "x", "y"]));
    let mut v = Value::Null;
    super::validate::validate_field(&set, &mut v).unwrap();
    assert_eq!(v, json!(["x", "y"]));
}

/// Any JSON at all.
fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-zA-Z0-9_ -]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// Validation answers every input, valid or not, without panicking; what it accepts
    /// validates again unchanged.
    #[test]
    fn prop_validation_answers_any_json(value in any_json()) {
        let mut config = serde_json::Map::new();
        config.insert("response_header_name".into(), value.clone());
        for input in [value, Value::Object(config)] {
            if let Ok(valid) = MyPlugin::schema().validate_config(input) {
                proptest::prop_assert_eq!(MyPlugin::schema().validate_config(valid.clone()).ok(), Some(valid));
            }
        }
    }
}

/// A required field with a default, and an optional one.
#[plugin(priority = 1, version = "1.0.0", name = "nulls")]
struct Nulls {
    #[field(required, default = "uuid")]
    generator: String,
    #[field(default = 5)]
    count: i64,
}
#[handler]
impl Handler for Nulls {}

#[test]
fn a_required_field_sent_as_null_is_missing_even_with_a_default() {
    // Kong's process_auto_fields fills defaults in for absent (nil) fields, not for null.
    let ok = Nulls::schema().validate_config(json!({})).unwrap();
    assert_eq!(
        (ok["generator"].clone(), ok["count"].clone()),
        (json!("uuid"), json!(5))
    );
    let err = Nulls::schema()
        .validate_config(json!({ "generator": null }))
        .unwrap_err();
    assert_eq!(err.fields()["config"]["generator"], "required field missing");
    // An optional field's null takes the default: the typed config has no null to hold
    // (Kong would keep the null and hand the plugin a nil).
    let ok = Nulls::schema().validate_config(json!({ "count": null })).unwrap();
    assert_eq!(ok["count"], 5);
}
