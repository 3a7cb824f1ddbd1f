//! Kong's bundled plugins, written with kong-pdk: same names, priorities, schemas and
//! behaviour as Kong's Lua ones. Linking this crate registers them.
//!
//! - [`acl`]: `acl`, with its `acls` entity;
//! - [`basic_auth`]: `basic-auth`, with its `basicauth_credentials` entity;
//! - [`bot_detection`]: `bot-detection`, known bots and your own lists of user agents;
//! - [`correlation_id`]: `correlation-id`, an id header on every request (and response);
//! - [`cors`]: `cors`, preflight answers and `Access-Control-*` headers;
//! - [`file_log`]: `file-log`, the log serializer's output appended to a file;
//! - [`hmac_auth`]: `hmac-auth`, with its `hmacauth_credentials` entity;
//! - [`http_log`]: `http-log`, the log serializer's output sent to an HTTP endpoint through
//!   Kong's queue;
//! - [`ip_restriction`]: `ip-restriction`, allow and deny lists of addresses and ranges;
//! - [`jwt`]: `jwt`, with its `jwt_secrets` entity;
//! - [`key_auth`]: `key-auth`, with its `keyauth_credentials` entity;
//! - [`opentelemetry`]: `opentelemetry`, the request's spans as OTLP/HTTP protobuf, and trace
//!   context propagation (W3C, b3, Jaeger, OpenTracing, Datadog, AWS, GCP, Instana);
//! - [`prometheus`]: `prometheus`, metrics in Prometheus' text format at `/metrics`;
//! - [`proxy_cache`]: `proxy-cache`, answers from a node-local cache, with its Admin API;
//! - [`rate_limiting`]: `rate-limiting`, requests per second to year, counted in memory, in
//!   the database or in Redis;
//! - [`request_size_limiting`]: `request-size-limiting`, 413 for bodies over a size;
//! - [`request_transformer`]: `request-transformer`, the request's path, method, headers,
//!   body and query, with templates ([`template`]);
//! - [`request_termination`]: `request-termination`, answers without proxying;
//! - [`response_ratelimiting`]: `response-ratelimiting`, limits the upstream sets per response;
//! - [`response_transformer`]: `response-transformer`, response headers and JSON bodies.
//! - [`tcp_log`]: `tcp-log`, the log serializer's output as lines over TCP or TLS;
//! - [`udp_log`]: `udp-log`, the log serializer's output as UDP datagrams;
//! - [`websocket_size_limit`]: `websocket-size-limit` (Kong Enterprise), payload limits of
//!   WebSocket services;
//! - [`websocket_validator`]: `websocket-validator` (Kong Enterprise), JSON Schemas for the
//!   messages of WebSocket services.

pub mod acl;
mod auth;
pub mod basic_auth;
pub mod bot_detection;
pub mod correlation_id;
pub mod cors;
pub mod file_log;
pub mod hmac_auth;
pub mod http_log;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
mod limits;
pub mod opentelemetry;
pub mod prometheus;
pub mod proxy_cache;
mod queue;
pub mod rate_limiting;
pub mod request_size_limiting;
pub mod request_termination;
pub mod request_transformer;
pub mod response_ratelimiting;
pub mod response_transformer;
pub mod tcp_log;
pub mod template;
pub mod udp_log;
pub mod websocket_size_limit;
pub mod websocket_validator;
pub mod workers;

/// The plugins `bundled` stands for in the `plugins` setting (the ones this crate provides so
/// far; Kong's full list is being ported).
pub const BUNDLED: &[&str] = &[
    "acl",
    "basic-auth",
    "bot-detection",
    "correlation-id",
    "cors",
    "file-log",
    "hmac-auth",
    "http-log",
    "ip-restriction",
    "jwt",
    "key-auth",
    "opentelemetry",
    "prometheus",
    "proxy-cache",
    "rate-limiting",
    "request-size-limiting",
    "request-termination",
    "request-transformer",
    "response-ratelimiting",
    "response-transformer",
    "tcp-log",
    "udp-log",
    "websocket-size-limit",
    "websocket-validator",
];
