//! The error a handler returns.
//!
//! Kong answers a failing handler with `500 An unexpected error occurred` and logs the error with
//! the plugin's name; handlers return [`Result`] and use `?` on anything that is an error.
//!
//! ```
//! fn parse_limit(raw: &str) -> kong_pdk::Result<u32> {
//!     let n: u32 = raw.parse()?; // any std::error::Error converts
//!     if n == 0 {
//!         return Err(kong_pdk::Error::msg("limit must be positive"));
//!     }
//!     Ok(n)
//! }
//! assert!(parse_limit("x").is_err());
//! assert_eq!(parse_limit("0").unwrap_err().to_string(), "limit must be positive");
//! ```

use std::fmt;

/// A handler or PDK error: any error, with its message.
pub struct Error {
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

/// `Result<T, kong_pdk::Error>`; `kong_pdk::Result` alone is a phase handler's return type.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl Error {
    /// An error with a message.
    pub fn msg(message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Message(message.into())),
        }
    }

    /// The underlying error, to downcast.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.inner
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(err: E) -> Error {
        Error { inner: Box::new(err) }
    }
}

/// A PDK argument Kong would reject, with Kong's message (`code must be a number between 100
/// and 599`, `invalid header name ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdkError(pub(crate) String);

impl PdkError {
    pub(crate) fn new(msg: impl Into<String>) -> PdkError {
        PdkError(msg.into())
    }

    /// Kong's message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PdkError {}
