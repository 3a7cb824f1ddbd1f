//! Kong's error responses (`kong/tools/http.lua`): the default message per status, the body
//! templates, and the content negotiation from `Accept`.

/// The body format of an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `application/json; charset=utf-8`.
    Json,
    /// `text/html; charset=utf-8`.
    Html,
    /// `application/xml; charset=utf-8`.
    Xml,
    /// `text/plain; charset=utf-8`.
    Plain,
}

impl ErrorFormat {
    /// The Content-Type header value.
    pub fn content_type(self) -> &'static str {
        match self {
            ErrorFormat::Json => "application/json; charset=utf-8",
            ErrorFormat::Html => "text/html; charset=utf-8",
            ErrorFormat::Xml => "application/xml; charset=utf-8",
            ErrorFormat::Plain => "text/plain; charset=utf-8",
        }
    }

    fn from_media(media: &str) -> Option<ErrorFormat> {
        match media {
            "application/json" | "application/*" => Some(ErrorFormat::Json),
            "text/html" => Some(ErrorFormat::Html),
            "application/xml" | "text/xml" => Some(ErrorFormat::Xml),
            "text/plain" | "text/*" => Some(ErrorFormat::Plain),
            _ => None,
        }
    }

    /// Picks the format from an `Accept` header: the recognised type with the highest `q`
    /// wins; `*/*`, a missing header or nothing recognised gives `default`.
    ///
    /// ```
    /// use kong_pdk::pdk::ErrorFormat;
    /// assert_eq!(ErrorFormat::negotiate(Some("text/html"), ErrorFormat::Json), ErrorFormat::Html);
    /// assert_eq!(ErrorFormat::negotiate(Some("text/plain;q=0.2, application/xml"), ErrorFormat::Json), ErrorFormat::Xml);
    /// assert_eq!(ErrorFormat::negotiate(None, ErrorFormat::Plain), ErrorFormat::Plain);
    /// ```
    pub fn negotiate(accept: Option<&str>, default: ErrorFormat) -> ErrorFormat {
        let Some(accept) = accept else { return default };
        let mut best: Option<(f32, ErrorFormat)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let format = if media == "*/*" {
                Some(default)
            } else {
                ErrorFormat::from_media(&media)
            };
            if let Some(format) = format
                && q > 0.0
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, format));
            }
        }
        best.map_or(default, |(_, f)| f)
    }

    /// The body for `message` and `request_id`, as Kong's templates render it.
    pub fn render(self, message: &str, request_id: &str) -> String {
        match self {
            ErrorFormat::Json => format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"{request_id}\"\n}}"),
            ErrorFormat::Plain => format!("{message}\nrequest_id: {request_id}\n"),
            ErrorFormat::Html => format!(
                "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n    <p>{message}.</p>\n    <p>request_id: {request_id}</p>\n  </body>\n</html>\n"
            ),
            ErrorFormat::Xml => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{message}</message>\n  <requestid>{request_id}</requestid>\n</error>\n"
            ),
        }
    }
}

/// Kong's default message for an error status (`kong.response.error` without a message).
pub fn default_message(status: u16) -> String {
    let m = match status {
        400 => "Bad request",
        401 => "Unauthorized",
        402 => "Payment required",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        406 => "Not acceptable",
        407 => "Proxy authentication required",
        408 => "Request timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length required",
        412 => "Precondition failed",
        413 => "Payload too large",
        414 => "URI too long",
        415 => "Unsupported media type",
        416 => "Range not satisfiable",
        417 => "Expectation failed",
        418 => "I'm a teapot",
        421 => "Misdirected request",
        422 => "Unprocessable entity",
        423 => "Locked",
        424 => "Failed dependency",
        425 => "Too early",
        426 => "Upgrade required",
        428 => "Precondition required",
        429 => "Too many requests",
        431 => "Request header fields too large",
        451 => "Unavailable for legal reasons",
        494 => "Request header or cookie too large",
        500 => "An unexpected error occurred",
        501 => "Not implemented",
        502 => "An invalid response was received from the upstream server",
        503 => "The upstream server is currently unavailable",
        504 => "The upstream server is timing out",
        505 => "HTTP version not supported",
        506 => "Variant also negotiates",
        507 => "Insufficient storage",
        508 => "Loop detected",
        510 => "Not extended",
        511 => "Network authentication required",
        other => return format!("The upstream server responded with {other}"),
    };
    m.to_owned()
}
