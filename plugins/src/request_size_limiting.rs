//! `request-size-limiting` (Kong's `kong/plugins/request-size-limiting`): requests with a body
//! larger than the allowed size get 413 (417 when they `Expect: 100-continue`). A body without
//! `Content-Length` is read up to the limit, never further.

use kong_pdk::prelude::*;

/// The plugin's configuration (Kong's `request-size-limiting/schema.lua`).
#[plugin(priority = 951, version = "3.10.0", name = "request-size-limiting", protocols = protocols_http)]
pub struct RequestSizeLimiting {
    /// The largest body allowed, in `size_unit`s.
    #[field(default = 128)]
    pub allowed_payload_size: Option<u64>,
    /// `megabytes`, `kilobytes` or `bytes`.
    #[field(required, default = "megabytes", one_of = ["megabytes", "kilobytes", "bytes"])]
    pub size_unit: String,
    /// Refuse requests that give no `Content-Length` (unless chunked) with 411.
    #[field(required, default = false)]
    pub require_content_length: bool,
}

impl RequestSizeLimiting {
    /// The limit in bytes.
    fn allowed(&self) -> u64 {
        let factor = match self.size_unit.as_str() {
            "megabytes" => 1 << 20,
            "kilobytes" => 1 << 10,
            _ => 1,
        };
        self.allowed_payload_size.unwrap_or(128).saturating_mul(factor)
    }
}

#[handler]
impl Handler for RequestSizeLimiting {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let allowed = self.allowed();
        let request = kong.request();
        let declared = request
            .get_header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let chunked = request.get_header("transfer-encoding") == Some("chunked");
        let expects_continue = request
            .get_header("expect")
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("100-continue"));
        let too_large = match declared {
            Some(length) => length > allowed,
            None if self.require_content_length && !chunked => {
                return Err(Exit::error(411, "A valid Content-Length header is required").into());
            }
            None => {
                // Read at most one byte past the limit: a longer body is refused, a shorter
                // one is kept for the upstream.
                let limit = usize::try_from(allowed).unwrap_or(usize::MAX).max(1);
                match kong.request().get_raw_body_within(limit).await? {
                    Some(body) => body.len() as u64 > allowed,
                    None => true,
                }
            }
        };
        if too_large {
            let status = if expects_continue { 417 } else { 413 };
            return Err(Exit::error(status, "Request size limit exceeded").into());
        }
        Ok(())
    }
}
