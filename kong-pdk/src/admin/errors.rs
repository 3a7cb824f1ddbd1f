//! The Admin API's errors: Kong's bodies (`{"message": ...}`, or the database error shape
//! with `code`, `name`, `message` and `fields`) and statuses, with Kong's codes named
//! (`kong/db/errors.lua`).

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::schema::SchemaViolation;

/// An Admin API error: Kong's status and body.
#[derive(Debug)]
pub(super) struct ApiError(pub(super) StatusCode, pub(super) Value);

pub(super) type ApiResult = Result<(StatusCode, Value), ApiError>;

/// Kong's database error codes, each with its name and the status the Admin API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Code {
    SchemaViolation = 2,
    PrimaryKeyViolation = 3,
    ForeignKeyViolation = 4,
    UniqueViolation = 5,
    InvalidOffset = 7,
    DatabaseError = 8,
    InvalidSize = 9,
    OperationUnsupported = 12,
    ForeignKeysUnresolved = 13,
    DeclarativeConfig = 14,
    ReferencedByOthers = 19,
}

impl Code {
    /// Kong's name for the code (the body's `name`).
    pub(super) fn name(self) -> &'static str {
        match self {
            Code::SchemaViolation => "schema violation",
            Code::PrimaryKeyViolation => "primary key violation",
            Code::ForeignKeyViolation => "foreign key violation",
            Code::UniqueViolation => "unique constraint violation",
            Code::InvalidOffset => "invalid offset",
            Code::DatabaseError => "database error",
            Code::InvalidSize => "invalid size",
            Code::OperationUnsupported => "operation unsupported",
            Code::ForeignKeysUnresolved => "foreign keys unresolved",
            Code::DeclarativeConfig => "invalid declarative configuration",
            Code::ReferencedByOthers => "referenced by others",
        }
    }

    /// The status the Admin API answers with (`kong/api/endpoints.lua`'s `ERRORS_HTTP_CODES`).
    pub(super) fn status(self) -> StatusCode {
        match self {
            Code::UniqueViolation => StatusCode::CONFLICT,
            Code::DatabaseError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::OperationUnsupported => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// `{"message": text}` with `status`.
pub(super) fn message(status: u16, text: &str) -> ApiError {
    ApiError(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        json!({ "message": text }),
    )
}

/// A database error: `{"code", "name", "message", "fields"}`. A failure of the database itself
/// is logged with its cause and answered as Kong does, without it: `500 {"message":"An
/// unexpected error occurred"}`.
pub(super) fn db_error(code: Code, message: String, fields: Option<Value>) -> ApiError {
    if code == Code::DatabaseError {
        tracing::error!(target: "kong", "database error: {message}");
        return self::message(500, "An unexpected error occurred");
    }
    let mut body = json!({ "code": code as u16, "name": code.name(), "message": message });
    if let Some(fields) = fields {
        body["fields"] = fields;
    }
    ApiError(code.status(), body)
}

/// A schema violation (code 2) with its fields.
pub(super) fn violation(v: SchemaViolation) -> ApiError {
    db_error(Code::SchemaViolation, v.message().to_owned(), Some(v.fields().clone()))
}

/// A schema violation of one field.
pub(super) fn field_violation(field: &str, text: impl Into<String>) -> ApiError {
    let mut m = Map::new();
    m.insert(field.to_owned(), Value::String(text.into()));
    violation(SchemaViolation::new(m))
}

/// A schema violation of one field, or of the entity as a whole (`@entity`, a list).
pub(super) fn entity_or_field_violation(field: &str, text: String) -> ApiError {
    if field == "@entity" {
        violation(SchemaViolation::new(
            [("@entity".to_owned(), json!([text]))].into_iter().collect(),
        ))
    } else {
        field_violation(field, text)
    }
}
