//! Kong's schema system: a plugin's configuration schema, generated from its struct, published
//! in Kong's JSON shape and enforced with Kong's validation rules and messages.
//!
//! `#[plugin]` and `#[record]` build a [`RecordSchema`] from the struct's fields: the Rust type
//! gives the Kong type (`String` → string, `i64` → integer, `Vec<T>` → array, `BTreeSet<T>` →
//! set, `HashMap<String, T>` → map, a `#[record]` struct → record, `Option<T>` → not required),
//! and `#[field(...)]` adds Kong's attributes:
//!
//! | attribute | Kong attribute |
//! |---|---|
//! | `typedef = header_name` | `typedefs.header_name` (see [`typedefs`]) |
//! | `default = "x"`, `required`, `required = false` | `default`, `required` |
//! | `one_of = ["a", "b"]`, `between = (0, 10)`, `gt = 0` | `one_of`, `between`, `gt` |
//! | `len_eq = 3`, `len_min = 1`, `len_max = 8` | `len_eq`, `len_min`, `len_max` |
//! | `match = "^[a-z]+$"` (a regex), `starts_with = "/"` | `match`, `starts_with` |
//! | `uuid`, `referenceable`, `encrypted` | `uuid`, `referenceable`, `encrypted` |
//! | `description = "..."` or a `///` doc comment | `description` |
//!
//! Struct-level checks go in the `#[plugin(...)]`/`#[record(...)]` arguments:
//! `at_least_one_of("a", "b")`, `only_one_of(...)`, `mutually_exclusive(...)`,
//! `mutually_required(...)`, `distinct(...)` and
//! `conditional(if_field = "a", if_match(one_of = ["x"]), then_field = "b", then_match(required))`.
//!
//! ```
//! use kong_pdk::prelude::*;
//!
//! #[record]
//! pub struct Window {
//!     #[field(gt = 0)]
//!     pub seconds: i64,
//! }
//!
//! #[plugin(priority = 900, version = "1.0.0", protocols = protocols_http, at_least_one_of("minute", "hour"))]
//! pub struct Limits {
//!     minute: Option<i64>,
//!     hour: Option<i64>,
//!     #[field(one_of = ["local", "redis"], default = "local")]
//!     policy: String,
//!     #[field(default = [])]
//!     windows: Vec<Window>,
//! }
//! # #[handler] impl Handler for Limits {}
//!
//! let err = Limits::schema()
//!     .validate_config(serde_json::json!({ "minute": 5, "policy": "disk" }))
//!     .unwrap_err();
//! assert_eq!(err.message(), "schema violation (config.policy: expected one of: local, redis)");
//! assert_eq!(err.fields(), &serde_json::json!({ "config": { "policy": "expected one of: local, redis" } }));
//!
//! let ok = Limits::schema().validate_config(serde_json::json!({ "hour": 100 })).unwrap();
//! assert_eq!(ok["policy"], "local");
//! ```

mod json;
pub mod literal;
pub mod typedefs;
mod validate;
mod violation;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use regex::Regex;
use serde_json::Value;

#[cfg(feature = "admin")]
pub(crate) use json::schema_json;
pub use validate::merge_records;
#[cfg(feature = "gateway")]
pub(crate) use validate::validate_record;
pub use violation::SchemaViolation;

/// A custom validator: `Err(message)` with Kong's message when the value is invalid.
pub type CustomValidator = fn(&Value) -> Result<(), String>;

/// A field's Kong type and its element/record structure.
#[derive(Clone, Debug, Default)]
pub enum FieldKind {
    /// `string`.
    #[default]
    String,
    /// `integer`.
    Integer,
    /// `number`.
    Number,
    /// `boolean`.
    Boolean,
    /// `array` of elements.
    Array(Box<FieldSchema>),
    /// `set` of elements (duplicates removed, first occurrence kept).
    Set(Box<FieldSchema>),
    /// `map` with string keys.
    Map {
        /// The keys' schema.
        keys: Box<FieldSchema>,
        /// The values' schema.
        values: Box<FieldSchema>,
    },
    /// `record` with fields.
    Record(RecordSchema),
    /// `foreign` key to another entity.
    Foreign {
        /// The referenced entity (`"consumers"`).
        reference: &'static str,
    },
}

impl FieldKind {
    /// Kong's type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldKind::String => "string",
            FieldKind::Integer => "integer",
            FieldKind::Number => "number",
            FieldKind::Boolean => "boolean",
            FieldKind::Array(_) => "array",
            FieldKind::Set(_) => "set",
            FieldKind::Map { .. } => "map",
            FieldKind::Record(_) => "record",
            FieldKind::Foreign { .. } => "foreign",
        }
    }
}

/// A compiled `match` pattern (a regex, where Kong uses a Lua pattern).
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source`.
    ///
    /// # Panics
    /// When `source` is not a valid regex: schemas are built once, at start.
    pub fn new(source: &str) -> Pattern {
        let regex =
            Regex::new(source).unwrap_or_else(|e| panic!("invalid `match` pattern {source:?} in a plugin schema: {e}"));
        Pattern {
            source: source.to_owned(),
            regex,
        }
    }

    /// The pattern's source text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

/// One field's schema: its type and Kong's attributes.
#[derive(Clone, Debug, Default)]
pub struct FieldSchema {
    /// The type.
    pub kind: FieldKind,
    /// `required`.
    pub required: bool,
    /// `default`, filled in when the value is absent.
    pub default: Option<Value>,
    /// `description`.
    pub description: Option<String>,
    /// `eq`: the value must equal this (`Some(Value::Null)` for `no_consumer` and friends).
    pub eq: Option<Value>,
    /// `one_of`.
    pub one_of: Option<Vec<Value>>,
    /// `gt`.
    pub gt: Option<Value>,
    /// `between` (inclusive).
    pub between: Option<(Value, Value)>,
    /// `len_eq`.
    pub len_eq: Option<usize>,
    /// `len_min` (strings have an implicit `len_min = 1`).
    pub len_min: Option<usize>,
    /// `len_max`.
    pub len_max: Option<usize>,
    /// `starts_with`.
    pub starts_with: Option<String>,
    /// `match_none`: (pattern, error) pairs that must not match.
    pub match_none: Vec<(Pattern, &'static str)>,
    /// `match`.
    pub pattern: Option<Pattern>,
    /// `uuid`.
    pub uuid: bool,
    /// `referenceable` (accepts `{vault://...}` references).
    pub referenceable: bool,
    /// `encrypted`.
    pub encrypted: bool,
    /// `custom_validator` (not published in JSON, as Kong drops functions).
    pub custom_validator: Option<CustomValidator>,
}

impl FieldSchema {
    /// A schema of the given kind with no attributes.
    pub fn of(kind: FieldKind) -> FieldSchema {
        FieldSchema {
            kind,
            ..FieldSchema::default()
        }
    }

    /// A record schema; records are required (Kong makes entity records required, so an
    /// omitted record is built from its defaults).
    pub fn record(record: RecordSchema) -> FieldSchema {
        FieldSchema {
            kind: FieldKind::Record(record),
            required: true,
            ..FieldSchema::default()
        }
    }

    /// An untyped bag of validators, as in a `conditional` check's `if_match`/`then_match`.
    pub fn matcher() -> FieldSchema {
        FieldSchema::default()
    }

    /// A string checked by `check` (whose message is the field's error): the schema of a
    /// config type that parses its text once, such as a regular expression.
    pub fn checked_string(check: CustomValidator) -> FieldSchema {
        FieldSchema {
            custom_validator: Some(check),
            ..FieldSchema::of(FieldKind::String)
        }
    }

    /// An array of `element`s (each optional within the array, as Kong's elements are).
    ///
    /// ```
    /// use kong_pdk::schema::{FieldKind, FieldSchema};
    /// let list = FieldSchema::array_of(FieldSchema::of(FieldKind::String));
    /// assert!(matches!(list.kind, FieldKind::Array(_)));
    /// ```
    pub fn array_of(mut element: FieldSchema) -> FieldSchema {
        element.required = false;
        FieldSchema::of(FieldKind::Array(Box::new(element)))
    }
}

/// A named field of a record.
#[derive(Clone, Debug)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Its schema.
    pub schema: FieldSchema,
}

impl Field {
    /// A field.
    pub fn new(name: impl Into<String>, schema: FieldSchema) -> Field {
        Field {
            name: name.into(),
            schema,
        }
    }
}

/// `conditional`: when `if_field` matches `if_match`, `then_field` must match `then_match`.
#[derive(Clone, Debug)]
pub struct Conditional {
    /// The field whose value is tested.
    pub if_field: String,
    /// The test.
    pub if_match: FieldSchema,
    /// The field then constrained.
    pub then_field: String,
    /// The constraint.
    pub then_match: FieldSchema,
    /// A message replacing the constraint's own.
    pub then_err: Option<String>,
}

/// A deprecated field kept as an alias of another (Kong's `shorthand_fields` with a
/// `deprecation.replaced_with`): accepted on input, moved to `path`, and shown again in the
/// Admin API's answers with `path`'s value.
#[derive(Clone, Debug)]
pub struct Shorthand {
    /// The deprecated field (`redis_host`).
    pub name: String,
    /// Where its value goes (`redis.host`).
    pub path: String,
}

/// A record-level check across fields (Kong's `entity_checks`).
#[derive(Clone, Debug)]
pub enum EntityCheck {
    /// `at least one of these fields must be non-empty`.
    AtLeastOneOf(Vec<String>),
    /// `exactly one of these fields must be non-empty`.
    OnlyOneOf(Vec<String>),
    /// `only one or none of these fields must be set`.
    MutuallyExclusive(Vec<String>),
    /// `all or none of these fields must be set`.
    MutuallyRequired(Vec<String>),
    /// `values of these fields must be distinct`.
    Distinct(Vec<String>),
    /// `conditional`.
    Conditional(Box<Conditional>),
    /// A deprecated alias field (Kong's `shorthand_fields`): not a check, but processed with
    /// them, before the record's fields are validated.
    Shorthand(Box<Shorthand>),
    /// A check of the whole record, once its fields are valid (Kong's record-level
    /// `custom_validator`): its message replaces the record's errors, so a plugin's shows as
    /// `fields.config = "<message>"`. Not published in the schema's JSON, as Kong drops
    /// functions.
    Custom(CustomValidator),
}

/// The fields of a record and its entity checks.
#[derive(Clone, Debug, Default)]
pub struct RecordSchema {
    /// Fields in declaration order.
    pub fields: Vec<Field>,
    /// Checks across fields.
    pub entity_checks: Vec<EntityCheck>,
}

impl RecordSchema {
    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSchema> {
        self.fields.iter().find(|f| f.name == name).map(|f| &f.schema)
    }
}

/// Which typedef a plugin's `protocols` field uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolsTypedef {
    /// `typedefs.protocols`: any protocol; defaults to the HTTP ones.
    Protocols,
    /// `typedefs.protocols_http`: HTTP-subsystem protocols only.
    ProtocolsHttp,
    /// `typedefs.protocols_ws`: WebSocket services only (`ws`, `wss`).
    ProtocolsWs,
    /// The HTTP protocols and the WebSocket ones: Kong Enterprise's protocols of plugins that
    /// also serve WebSocket services (key-auth, basic-auth, ...).
    ProtocolsHttpWs,
}

/// A plugin's schema: its name, scoping rules, protocols and `config` record.
#[derive(Clone, Debug)]
pub struct PluginSchema {
    /// The plugin's name.
    pub name: &'static str,
    /// The `protocols` typedef.
    pub protocols: ProtocolsTypedef,
    /// The plugin's own default protocols, over the typedef's.
    pub protocols_default: Option<&'static [&'static str]>,
    /// `consumer = typedefs.no_consumer`: cannot be scoped to a consumer.
    pub no_consumer: bool,
    /// `route = typedefs.no_route`.
    pub no_route: bool,
    /// `service = typedefs.no_service`.
    pub no_service: bool,
    /// The `config` record.
    pub config: RecordSchema,
}

impl PluginSchema {
    /// The schema's top-level fields as Kong declares them: the `no_*` foreign fields, then
    /// `protocols`, then `config`.
    pub fn fields(&self) -> Vec<Field> {
        let mut fields = Vec::with_capacity(5);
        for (on, name, typedef) in [
            (
                self.no_consumer,
                "consumer",
                typedefs::no_consumer as fn() -> FieldSchema,
            ),
            (self.no_route, "route", typedefs::no_route),
            (self.no_service, "service", typedefs::no_service),
        ] {
            if on {
                fields.push(Field::new(name, typedef()));
            }
        }
        let mut protocols = match self.protocols {
            ProtocolsTypedef::Protocols => typedefs::protocols::schema(),
            ProtocolsTypedef::ProtocolsHttp => typedefs::protocols_http::schema(),
            ProtocolsTypedef::ProtocolsWs => typedefs::protocols_ws::schema(),
            ProtocolsTypedef::ProtocolsHttpWs => typedefs::protocols_http_ws::schema(),
        };
        if let Some(default) = self.protocols_default {
            protocols.default = Some(Value::from(default.to_vec()));
        }
        fields.push(Field::new("protocols", protocols));
        fields.push(Field::new("config", FieldSchema::record(self.config.clone())));
        fields
    }

    /// The protocols an instance runs for when its entity names none.
    pub fn default_protocols(&self) -> &'static [&'static str] {
        if let Some(own) = self.protocols_default {
            return own;
        }
        match self.protocols {
            ProtocolsTypedef::Protocols | ProtocolsTypedef::ProtocolsHttp => &typedefs::HTTP_PROTOCOLS,
            ProtocolsTypedef::ProtocolsWs => &typedefs::WS_PROTOCOLS,
            ProtocolsTypedef::ProtocolsHttpWs => &typedefs::HTTP_WS_PROTOCOLS,
        }
    }

    /// The schema as `GET /schemas/plugins/{name}` publishes it:
    /// `{"fields":[{"protocols":{...}},{"config":{"type":"record","fields":[...]}}]}`.
    pub fn to_json(&self) -> Value {
        let checks: Vec<EntityCheck> = (self.config.entity_checks.iter())
            .filter(|c| validate::is_plugin_level(c))
            .cloned()
            .collect();
        json::schema_json(&self.fields(), &checks)
    }

    /// Validates a `config` object: fills defaults and checks every rule. Errors are Kong's
    /// schema violation, nested under `config`.
    pub fn validate_config(&self, config: Value) -> Result<Value, SchemaViolation> {
        let mut config = config;
        let mut errors = serde_json::Map::new();
        let record = FieldSchema::record(self.config.clone());
        if let Err(e) = validate::validate_field(&record, &mut config) {
            errors.insert("config".to_owned(), e);
        }
        let mut entity = serde_json::Map::new();
        entity.insert("config".to_owned(), config);
        validate::run_plugin_checks(&self.config, &entity, &mut errors);
        if errors.is_empty() {
            Ok(entity.remove("config").unwrap_or_default())
        } else {
            Err(SchemaViolation::new(errors))
        }
    }

    /// Shows a stored `config` as Kong's Admin API does: each deprecated alias field
    /// (`redis_host`) with the value of the field that replaced it (`redis.host`).
    pub fn show_shorthands(&self, config: &mut Value) {
        validate::show_shorthands(&self.config, config);
    }

    /// Moves the deprecated alias fields of a partial `config` (a PATCH body's) to the
    /// fields that replaced them, so that it merges with a stored config.
    pub fn expand_shorthands(&self, config: &mut Value) -> Result<(), SchemaViolation> {
        let mut errors = serde_json::Map::new();
        if let Value::Object(obj) = config {
            validate::expand_shorthands(&self.config, obj, &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            let mut fields = serde_json::Map::new();
            fields.insert("config".into(), Value::Object(errors));
            Err(SchemaViolation::new(fields))
        }
    }

    /// Validates the scoping fields of a plugin entity (`consumer`, `route`, `service`,
    /// `protocols`) and its `config`, returning the entity with defaults filled in.
    pub fn validate_entity(&self, entity: Value) -> Result<Value, SchemaViolation> {
        let Value::Object(mut obj) = entity else {
            let mut errors = serde_json::Map::new();
            errors.insert(
                "@entity".into(),
                Value::Array(vec![Value::from("expected an input table")]),
            );
            return Err(SchemaViolation::new(errors));
        };
        let mut errors = serde_json::Map::new();
        for field in self.fields() {
            let value = obj.entry(field.name.clone()).or_insert(Value::Null);
            if let Err(e) = validate::validate_field(&field.schema, value) {
                errors.insert(field.name.clone(), e);
            }
        }
        validate::run_plugin_checks(&self.config, &obj, &mut errors);
        if errors.is_empty() {
            Ok(Value::Object(obj))
        } else {
            Err(SchemaViolation::new(errors))
        }
    }
}

/// A Rust type usable as a config field. Implemented for the supported types; `#[record]`
/// implements it for nested records.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a supported plugin config field type",
    label = "unsupported field type",
    note = "supported: String, bool, integers, f32/f64, Vec<T>, BTreeSet<T>/HashSet<T> (sets), HashMap<String, T>/BTreeMap<String, T> (maps), Option<T>, and structs marked #[kong_pdk::record]"
)]
pub trait ConfigType {
    /// Whether the field may be absent (`Option<T>`).
    const OPTIONAL: bool = false;
    /// The field's schema, before attributes.
    fn field_schema() -> FieldSchema;
}

/// A struct whose fields form a record schema (`#[plugin]` and `#[record]` implement it).
pub trait ConfigRecord {
    /// The record's schema.
    fn record_schema() -> RecordSchema;
}

macro_rules! scalar {
    ($kind:ident: $($t:ty),*) => {$(
        impl ConfigType for $t {
            fn field_schema() -> FieldSchema {
                FieldSchema::of(FieldKind::$kind)
            }
        }
    )*};
}
scalar!(String: String);
scalar!(Integer: i8, i16, i32, i64, u8, u16, u32, u64, isize, usize);
scalar!(Number: f32, f64);
scalar!(Boolean: bool);

impl<T: ConfigType> ConfigType for Option<T> {
    const OPTIONAL: bool = true;
    fn field_schema() -> FieldSchema {
        T::field_schema()
    }
}

fn element<T: ConfigType>() -> Box<FieldSchema> {
    let mut e = T::field_schema();
    e.required = false;
    Box::new(e)
}

impl<T: ConfigType> ConfigType for Vec<T> {
    fn field_schema() -> FieldSchema {
        FieldSchema::of(FieldKind::Array(element::<T>()))
    }
}

impl<T: ConfigType> ConfigType for BTreeSet<T> {
    fn field_schema() -> FieldSchema {
        FieldSchema::of(FieldKind::Set(element::<T>()))
    }
}

impl<T: ConfigType, S> ConfigType for HashSet<T, S> {
    fn field_schema() -> FieldSchema {
        FieldSchema::of(FieldKind::Set(element::<T>()))
    }
}

impl<T: ConfigType> ConfigType for BTreeMap<String, T> {
    fn field_schema() -> FieldSchema {
        FieldSchema::of(FieldKind::Map {
            keys: element::<String>(),
            values: element::<T>(),
        })
    }
}

impl<T: ConfigType, S> ConfigType for HashMap<String, T, S> {
    fn field_schema() -> FieldSchema {
        FieldSchema::of(FieldKind::Map {
            keys: element::<String>(),
            values: element::<T>(),
        })
    }
}

#[cfg(test)]
mod tests;
