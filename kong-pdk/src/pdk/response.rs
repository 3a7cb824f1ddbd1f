//! `kong.response`: the response Kong sends to the client. Getters work once a response exists
//! (response, header_filter, body_filter, log); setters, `exit` and `error` until the headers
//! are sent (rewrite, access, response, header_filter); body functions in body_filter.
//!
//! ```
//! use kong_pdk::prelude::*;
//!
//! #[plugin(priority = 2, version = "1.0.0")]
//! pub struct Maintenance {}
//!
//! #[handler]
//! impl Handler for Maintenance {
//!     async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
//!         // A table body is sent as compact JSON with a JSON content type.
//!         kong.response().exit(503, serde_json::json!({ "message": "down for maintenance" }))
//!     }
//! }
//! ```

use std::fmt::Display;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::error_template::{ErrorFormat, default_message};
use crate::error::PdkError;
use crate::phase::{self, RequestPhase};
use crate::transaction::{Exit as Produced, Source, Transaction};

/// The body of `kong.response.exit`: nothing, raw bytes, or a JSON table.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitBody {
    /// No body (`Content-Length: 0`).
    Empty,
    /// Sent as is; no Content-Type is added.
    Raw(Bytes),
    /// Encoded as compact JSON with `Content-Type: application/json; charset=utf-8`.
    Json(Value),
}

impl From<()> for ExitBody {
    fn from(_: ()) -> Self {
        ExitBody::Empty
    }
}
impl From<&str> for ExitBody {
    fn from(s: &str) -> Self {
        ExitBody::Raw(Bytes::copy_from_slice(s.as_bytes()))
    }
}
impl From<String> for ExitBody {
    fn from(s: String) -> Self {
        ExitBody::Raw(Bytes::from(s))
    }
}
impl From<Bytes> for ExitBody {
    fn from(b: Bytes) -> Self {
        ExitBody::Raw(b)
    }
}
impl From<Value> for ExitBody {
    fn from(v: Value) -> Self {
        ExitBody::Json(v)
    }
}
impl<T: Into<ExitBody>> From<Option<T>> for ExitBody {
    fn from(v: Option<T>) -> Self {
        v.map_or(ExitBody::Empty, Into::into)
    }
}

/// `kong.response.exit` on a transaction, in `phase`.
fn exit_tx<'h>(
    tx: &mut Transaction,
    phase: crate::Phase,
    status: u16,
    body: ExitBody,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
) -> Result<(), PdkError> {
    exit_tx_with(tx, phase, status, body, |tx| {
        for (k, v) in headers {
            let n = header_name(k)?;
            tx.response.headers.insert(n, header_value(k, v)?);
        }
        Ok(())
    })
}

/// [`exit_tx`] with the exit's headers set by `set_headers`, once the exit is known to
/// happen (not sent yet, a valid status, no earlier exit in `access`).
fn exit_tx_with(
    tx: &mut Transaction,
    phase: crate::Phase,
    status: u16,
    body: ExitBody,
    set_headers: impl FnOnce(&mut Transaction) -> Result<(), PdkError>,
) -> Result<(), PdkError> {
    check_not_sent(tx)?;
    check_status(status, 100)?;
    if tx.exit.is_some() && phase == crate::Phase::Access {
        return Ok(());
    }
    set_headers(tx)?;
    let body = match body {
        ExitBody::Empty => Bytes::new(),
        ExitBody::Raw(b) => b,
        ExitBody::Json(v) => {
            if !tx.response.headers.contains_key(CONTENT_TYPE) {
                tx.response.headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
            }
            Bytes::from(serde_json::to_vec(&v).map_err(|e| PdkError::new(e.to_string()))?)
        }
    };
    tx.exit_with(status, body, Source::Exit);
    Ok(())
}

/// `kong.response.error` on a transaction, in `phase`.
fn error_tx<'h>(
    tx: &mut Transaction,
    phase: crate::Phase,
    status: u16,
    message: Option<&str>,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
) -> Result<(), PdkError> {
    check_not_sent(tx)?;
    check_status(status, 400)?;
    if tx.exit.is_some() && phase == crate::Phase::Access {
        return Ok(());
    }
    let mut content_type = None;
    for (k, v) in headers {
        let n = header_name(k)?;
        if n == CONTENT_TYPE {
            content_type = Some(v.to_ascii_lowercase());
        }
        tx.response.headers.insert(n, header_value(k, v)?);
    }
    let message = message.map_or_else(|| default_message(status), str::to_owned);
    tx.error_response(status, &message, content_type.as_deref());
    Ok(())
}

fn check_not_sent(tx: &Transaction) -> Result<(), PdkError> {
    if tx.response.headers_sent {
        Err(PdkError::new("headers have already been sent"))
    } else {
        Ok(())
    }
}

/// A response a handler returns as its error, to stop the request there: what
/// `kong.response.exit` and `kong.response.error` do, in `?`-friendly form. It is honoured in
/// the phases that may produce a response (rewrite, access, response, header_filter,
/// ws_handshake); elsewhere it is a failure like any other error.
///
/// ```
/// use kong_pdk::prelude::*;
///
/// #[plugin(priority = 1000, version = "1.0.0")]
/// pub struct RequireKey {}
///
/// #[handler]
/// impl Handler for RequireKey {
///     async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
///         let Some(_key) = kong.request().get_header("apikey") else {
///             return Err(Exit::error(401, "No API key found in request").header("WWW-Authenticate", "Key").into());
///         };
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    status: u16,
    body: ExitKind,
    headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
enum ExitKind {
    /// `kong.response.error`: Kong's error template, with this message or the status's own.
    Error(Option<String>),
    /// `kong.response.exit`: this body.
    Body(ExitBody),
}

impl Exit {
    /// `kong.response.exit(status, body)`.
    pub fn new(status: u16, body: impl Into<ExitBody>) -> Exit {
        Exit {
            status,
            body: ExitKind::Body(body.into()),
            headers: Vec::new(),
        }
    }

    /// `kong.response.error(status, message)`: Kong's error template, negotiated from the
    /// request's `Accept`, with the request id.
    pub fn error(status: u16, message: impl Into<String>) -> Exit {
        Exit {
            status,
            body: ExitKind::Error(Some(message.into())),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Produces the response on `tx`, as the handler's phase would have.
    pub(crate) fn apply(&self, tx: &mut Transaction, phase: crate::Phase) -> Result<(), PdkError> {
        if phase == crate::Phase::Preread {
            return self.apply_stream(tx);
        }
        let headers = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        match &self.body {
            ExitKind::Error(message) => error_tx(tx, phase, self.status, message.as_deref(), headers),
            ExitKind::Body(body) => exit_tx(tx, phase, self.status, body.clone(), headers),
        }
    }
}

impl Exit {
    /// Kong's `kong.response.exit` in a stream (`preread`): one of six statuses; a body for
    /// a status under 400 is sent to the client before the session ends, headers are
    /// ignored. An `Exit::error` ends the session with its status and no body (as Kong's
    /// stream plugins' `ngx.exit(status)`).
    fn apply_stream(&self, tx: &mut Transaction) -> Result<(), PdkError> {
        if !matches!(self.status, 200 | 400 | 403 | 500 | 502 | 503) {
            return Err(PdkError::new(
                "unacceptable code, only 200, 400, 403, 500, 502 and 503 are accepted",
            ));
        }
        if tx.exit.is_some() {
            return Ok(());
        }
        let body = match &self.body {
            ExitKind::Error(_) | ExitKind::Body(ExitBody::Empty) => Bytes::new(),
            ExitKind::Body(ExitBody::Raw(b)) => b.clone(),
            ExitKind::Body(ExitBody::Json(v)) => {
                Bytes::from(serde_json::to_vec(v).map_err(|e| PdkError::new(format!("invalid body: {e}")))?)
            }
        };
        tx.exit_with(self.status, body, Source::Exit);
        Ok(())
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit with status {}", self.status)
    }
}

impl std::error::Error for Exit {}

/// `kong.response`.
pub struct Response<'a, P> {
    tx: &'a mut Transaction,
    plugin: &'static str,
    _phase: PhantomData<fn() -> P>,
}

/// Moves `from` over `into`: each name in `from` replaces that name's values in `into`, and
/// every value it has is kept. Nothing is cloned.
pub(crate) fn overlay(into: &mut HeaderMap, from: HeaderMap) {
    use http::header::Entry;
    let mut current = None;
    for (name, value) in from {
        match name {
            Some(name) => {
                current = Some(match into.entry(name) {
                    Entry::Occupied(mut e) => {
                        e.insert(value);
                        e
                    }
                    Entry::Vacant(e) => e.insert_entry(value),
                });
            }
            // `None` repeats the previous name: its first value already replaced the old ones.
            None => {
                if let Some(e) = current.as_mut() {
                    e.append(value);
                }
            }
        }
    }
}

pub(crate) fn header_name(name: &str) -> Result<HeaderName, PdkError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| PdkError::new(format!("invalid header name \"{name}\"")))
}

/// [`header_value`] for a value given as [`Display`], written once, straight into the value.
pub(crate) fn display_value(name: &str, value: &dyn Display) -> Result<HeaderValue, PdkError> {
    match crate::text::shared_fmt(format_args!("{value}")) {
        Some(v) if v.is_empty() => Ok(HeaderValue::from_static(" ")),
        Some(v) => Ok(v),
        None => Err(PdkError::new(format!("invalid header value for \"{name}\""))),
    }
}

/// Kong's header value rules: `""` becomes `" "`; values must be valid header text.
pub(crate) fn header_value(name: &str, value: &str) -> Result<HeaderValue, PdkError> {
    let value = if value.is_empty() { " " } else { value };
    crate::text::shared_value(value.as_bytes())
        .ok_or_else(|| PdkError::new(format!("invalid header value for \"{name}\"")))
}

fn check_status(status: u16, lo: u16) -> Result<(), PdkError> {
    if (lo..=599).contains(&status) {
        Ok(())
    } else {
        Err(PdkError::new(format!("code must be a number between {lo} and 599")))
    }
}

impl<'a, P: RequestPhase> Response<'a, P> {
    pub(crate) fn new(tx: &'a mut Transaction, plugin: &'static str) -> Self {
        Response {
            tx,
            plugin,
            _phase: PhantomData,
        }
    }

    fn check_not_sent(&self) -> Result<(), PdkError> {
        check_not_sent(self.tx)
    }

    /// `get_status()`.
    pub fn get_status(&self) -> u16
    where
        P: phase::ResponseRead,
    {
        self.tx.response.status
    }

    /// `get_header(name)`: the first value.
    pub fn get_header(&self, name: &str) -> Option<&str>
    where
        P: phase::ResponseRead,
    {
        super::request::header(&self.tx.response.headers, name)
    }

    /// `get_headers()`.
    pub fn get_headers(&self) -> &HeaderMap
    where
        P: phase::ResponseRead,
    {
        &self.tx.response.headers
    }

    /// `get_source()`: `"service"`, `"exit"` or `"error"`.
    pub fn get_source(&self) -> &'static str
    where
        P: phase::ResponseRead,
    {
        self.tx.source().as_str()
    }

    /// `set_status(code)`: 100 to 599.
    pub fn set_status(&mut self, status: u16) -> Result<(), PdkError>
    where
        P: phase::ResponseWrite,
    {
        self.check_not_sent()?;
        check_status(status, 100)?;
        self.tx.response.status = status;
        Ok(())
    }

    /// `set_header(name, value)`: replaces every value of `name`. Numbers and booleans are
    /// written as text; `""` is sent as `" "`; `Transfer-Encoding` is ignored, as in Kong.
    pub fn set_header(&mut self, name: &str, value: impl Display) -> Result<(), PdkError>
    where
        P: phase::ResponseWrite,
    {
        self.check_not_sent()?;
        let n = header_name(name)?;
        if n == TRANSFER_ENCODING {
            tracing::warn!(target: "kong", "[{}] manually setting Transfer-Encoding. Ignored.", self.plugin);
            return Ok(());
        }
        let v = display_value(name, &value)?;
        self.tx.response.headers.insert(n, v);
        Ok(())
    }

    /// `set_header(name, {values})`: replaces `name` with several values.
    pub fn set_header_values(&mut self, name: &str, values: &[&str]) -> Result<(), PdkError>
    where
        P: phase::ResponseWrite,
    {
        self.clear_header(name)?;
        for v in values {
            self.add_header(name, v)?;
        }
        Ok(())
    }

    /// `add_header(name, value)`: appends a value.
    pub fn add_header(&mut self, name: &str, value: impl Display) -> Result<(), PdkError>
    where
        P: phase::ResponseWrite,
    {
        self.check_not_sent()?;
        let n = header_name(name)?;
        let v = display_value(name, &value)?;
        self.tx.response.headers.append(n, v);
        Ok(())
    }

    /// `clear_header(name)`.
    pub fn clear_header(&mut self, name: &str) -> Result<(), PdkError>
    where
        P: phase::ResponseWrite,
    {
        self.check_not_sent()?;
        let n = header_name(name)?;
        self.tx.response.headers.remove(n);
        Ok(())
    }

    /// `set_headers({...})`: sets several headers.
    pub fn set_headers<'h>(&mut self, headers: impl IntoIterator<Item = (&'h str, &'h str)>) -> Result<(), PdkError>
    where
        P: phase::ResponseWrite,
    {
        for (k, v) in headers {
            self.set_header(k, v)?;
        }
        Ok(())
    }

    /// `exit(status, body)`: produce the response and stop processing. In access, later
    /// plugins' `access` does not run (their header_filter, body_filter and log still do); the
    /// first exit wins. Return its result from the handler: `return kong.response().exit(..)`.
    pub fn exit(&mut self, status: u16, body: impl Into<ExitBody>) -> crate::Result
    where
        P: phase::ResponseWrite,
    {
        self.exit_with(status, body, [])
    }

    /// `exit(status, body, headers)`.
    pub fn exit_with<'h>(
        &mut self,
        status: u16,
        body: impl Into<ExitBody>,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    ) -> crate::Result
    where
        P: phase::ResponseWrite,
    {
        Ok(exit_tx(self.tx, P::PHASE, status, body.into(), headers)?)
    }

    /// `exit(status, body, headers)` for an answer that stands in for the upstream's, as a
    /// cache's (Kong's `ngx.ctx.KONG_PROXIED = true` before the exit): the response is reported
    /// as proxied, with `Via`, `X-Kong-Upstream-Latency` and `X-Kong-Proxy-Latency` rather than
    /// `X-Kong-Response-Latency`. `headers` is the stored answer's head: each name in it
    /// replaces what was set so far, and every value of a name is sent (two `Set-Cookie`s
    /// stay two).
    pub fn exit_for_upstream(
        &mut self,
        status: u16,
        body: impl Into<ExitBody>,
        headers: http::HeaderMap,
    ) -> crate::Result
    where
        P: phase::ResponseWrite,
    {
        Ok(exit_tx_with(self.tx, P::PHASE, status, body.into(), |tx| {
            tx.answered_for_upstream = true;
            overlay(&mut tx.response.headers, headers);
            Ok(())
        })?)
    }

    /// `error(status, message)`: an error response in Kong's template, negotiated from the
    /// request's `Accept` (JSON by default), with the request id. `None` uses Kong's default
    /// message for the status.
    pub fn error(&mut self, status: u16, message: Option<&str>) -> crate::Result
    where
        P: phase::ResponseWrite,
    {
        self.error_with(status, message, [])
    }

    /// `error(status, message, headers)`: a `Content-Type` among the headers picks the
    /// template.
    pub fn error_with<'h>(
        &mut self,
        status: u16,
        message: Option<&str>,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    ) -> crate::Result
    where
        P: phase::ResponseWrite,
    {
        Ok(error_tx(self.tx, P::PHASE, status, message, headers)?)
    }

    /// The current body chunk (body_filter).
    pub fn chunk(&self) -> &Bytes
    where
        P: phase::BodyWrite,
    {
        &self.tx.body.chunk
    }

    /// Replaces the current body chunk (body_filter).
    pub fn set_chunk(&mut self, chunk: impl Into<Bytes>)
    where
        P: phase::BodyWrite,
    {
        self.tx.body.chunk = chunk.into();
    }

    /// Whether this is the last chunk (body_filter).
    pub fn is_eof(&self) -> bool
    where
        P: phase::BodyWrite,
    {
        self.tx.body.eof
    }

    /// `get_raw_body()`: buffers the body; `None` (and nothing sent for this chunk) until the
    /// last chunk, then the whole body. Later plugins see the held-back chunks as empty.
    pub fn get_raw_body(&mut self) -> Option<Bytes>
    where
        P: phase::BodyWrite,
    {
        let chunk = std::mem::take(&mut self.tx.body.chunk);
        let buffer = self.tx.body.buffer.get_or_insert_with(BytesMut::new);
        buffer.extend_from_slice(&chunk);
        if self.tx.body.eof {
            let body = self.tx.body.buffer.take().unwrap_or_default().freeze();
            self.tx.body.chunk = body.clone();
            Some(body)
        } else {
            None
        }
    }

    /// `set_raw_body(body)`: replaces the whole body and ends it (`""` becomes `"\n"`, as Kong).
    pub fn set_raw_body(&mut self, body: impl Into<Bytes>)
    where
        P: phase::BodyWrite,
    {
        let body = body.into();
        self.tx.body.chunk = if body.is_empty() {
            Bytes::from_static(b"\n")
        } else {
            body
        };
        self.tx.body.buffer = None;
        self.tx.body.eof = true;
    }
}

impl Transaction {
    /// Records a response that replaces the upstream's (exit, error, failure).
    pub(crate) fn exit_with(&mut self, status: u16, body: Bytes, source: Source) {
        self.response.status = status;
        self.response
            .headers
            .insert(CONTENT_LENGTH, crate::text::decimal(body.len() as u64));
        self.exit = Some(Produced { status, body });
        self.source = Some(source);
    }

    /// Records an error response in Kong's template (`kong.response.error`), negotiated from
    /// `Accept` unless `content_type` names the format.
    pub fn error_response(&mut self, status: u16, message: &str, content_type: Option<&str>) {
        self.error_response_as(status, message, content_type, ErrorFormat::Json);
    }

    /// Like [`error_response`](Self::error_response) with another default format: Kong's
    /// nginx-level errors (502, 504, ...) default to `text/plain` (`error_default_type`).
    pub fn error_response_as(&mut self, status: u16, message: &str, content_type: Option<&str>, default: ErrorFormat) {
        let format = match content_type {
            Some(ct) => ErrorFormat::negotiate(Some(ct.split(';').next().unwrap_or(ct)), default),
            None => ErrorFormat::negotiate(super::request::header(&self.request.headers, "accept"), default),
        };
        let body = if self.request.method == http::Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(format.render(message, &self.id))
        };
        if content_type.is_none() {
            self.response
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
        }
        self.exit_with(status, body, Source::Exit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displayed_values_follow_kongs_rules_at_every_length() {
        assert_eq!(display_value("x", &"").unwrap(), " ", "empty becomes a space");
        assert_eq!(display_value("x", &42).unwrap(), "42");
        let long = "a".repeat(300);
        assert_eq!(display_value("x", &long).unwrap(), long.as_str());
        let err = display_value("x-bad", &"a\r\nb").unwrap_err();
        assert_eq!(err.message(), "invalid header value for \"x-bad\"");
    }

    #[test]
    fn overlay_replaces_each_name_and_keeps_all_its_values() {
        let mut into = HeaderMap::new();
        into.append("a", HeaderValue::from_static("old"));
        into.append("b", HeaderValue::from_static("kept"));
        let mut from = HeaderMap::new();
        from.append("a", HeaderValue::from_static("1"));
        from.append("a", HeaderValue::from_static("2"));
        from.append("c", HeaderValue::from_static("3"));
        overlay(&mut into, from);
        let all = |n: &str| into.get_all(n).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(all("a"), ["1", "2"]);
        assert_eq!(all("b"), ["kept"]);
        assert_eq!(all("c"), ["3"]);
    }
}
