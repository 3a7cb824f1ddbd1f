//! `ip-restriction` (Kong's `kong/plugins/ip-restriction`): requests from denied addresses, or
//! from addresses outside the allowed ones, get 403 (or the configured status and message).
//! The address is the client's after `trusted_ips`/`real_ip_header` processing.

use kong_pdk::pdk::Networks;
use kong_pdk::prelude::*;

/// The plugin's configuration (Kong's `ip-restriction/schema.lua`).
#[plugin(
    priority = 990,
    version = "3.10.0",
    name = "ip-restriction",
    protocols_default = ["http", "https", "tcp", "tls", "grpc", "grpcs"],
    at_least_one_of("allow", "deny")
)]
pub struct IpRestriction {
    /// Addresses and CIDR ranges that may pass (when set, all others are refused).
    pub allow: Option<Networks>,
    /// Addresses and CIDR ranges that are refused; checked first.
    pub deny: Option<Networks>,
    /// The status of the refusal (403 by default).
    pub status: Option<u16>,
    /// The message of the refusal (`IP address not allowed: <address>` by default).
    pub message: Option<String>,
}

#[handler]
impl Handler for IpRestriction {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let ip = kong.client().get_forwarded_ip();
        self.restrict(kong, ip)
    }

    /// Streams: the same lists, checked once per connection; a refused connection ends with
    /// the status and no body (Kong's `ngx.exit(status)` in stream).
    async fn preread(&self, kong: &mut Kong<Preread>) -> kong_pdk::Result {
        let ip = kong.client().get_forwarded_ip();
        self.restrict(kong, ip)
    }
}

impl IpRestriction {
    fn restrict<P: kong_pdk::phase::RequestPhase>(
        &self,
        kong: &mut Kong<'_, P>,
        ip: std::net::IpAddr,
    ) -> kong_pdk::Result {
        let denied = self.deny.as_ref().is_some_and(|d| d.contains(ip));
        let not_allowed = self.allow.as_ref().is_some_and(|a| !a.is_empty() && !a.contains(ip));
        if !denied && !not_allowed {
            return Ok(());
        }
        let message = self
            .message
            .clone()
            .unwrap_or_else(|| format!("IP address not allowed: {ip}"));
        kong.log().warn(&message);
        Err(Exit::error(self.status.unwrap_or(403), message).into())
    }
}
