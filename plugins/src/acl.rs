//! `acl` (Kong's `kong/plugins/acl`): lets through, or refuses, authenticated consumers by
//! the groups they belong to (`acls` of consumers: `/consumers/{consumer}/acls`, `/acls`), or
//! by the groups another plugin authenticated ([`AuthenticatedGroups`]). Put it after an auth
//! plugin.

use kong_pdk::dao::Dao;
use kong_pdk::prelude::*;

/// The plugin's configuration (Kong's `acl/schema.lua`): one of `allow` and `deny`.
#[plugin(
    priority = 950,
    version = "3.10.0",
    name = "acl",
    protocols = protocols_http,
    no_consumer,
    only_one_of("allow", "deny"),
    at_least_one_of("allow", "deny")
)]
pub struct Acl {
    /// Groups whose members pass; everyone else is refused.
    pub allow: Option<Vec<String>>,
    /// Groups whose members are refused; everyone else passes.
    pub deny: Option<Vec<String>>,
    /// Do not tell the upstream the groups (`X-Consumer-Groups`, `X-Authenticated-Groups`).
    #[field(required, default = false)]
    pub hide_groups_header: bool,
    /// Use the groups an auth plugin authenticated even when a consumer is known.
    #[field(required, default = false)]
    pub always_use_authenticated_groups: bool,
}

/// A consumer's membership of a group (Kong's `acls`).
#[record]
#[derive(Dao)]
#[dao(
    name = "acls",
    plugin = "acl",
    admin_api_name = "acls",
    admin_api_nested_name = "acls",
    endpoint_key = "group",
    unique_together = ["consumer", "group"]
)]
pub struct AclGroup {
    /// The group's name.
    pub group: String,
}

/// Groups an authentication plugin established for the request without a consumer (Kong's
/// `kong.ctx.shared.authenticated_groups`): put it in `kong.ctx().shared()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthenticatedGroups(pub Vec<String>);

const REFUSED: &str = "You cannot consume this service";

#[handler]
impl Handler for Acl {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let deny_mode = self.deny.as_ref().is_some_and(|d| !d.is_empty());
        let configured = if deny_mode { &self.deny } else { &self.allow };
        let configured = configured.as_deref().unwrap_or_default();
        let client = kong.client();
        let consumer = client
            .get_consumer()
            .map(|c| c.id)
            .or_else(|| client.get_credential().and_then(|c| c.consumer.as_ref()).map(|c| c.id));
        let has_credential = client.get_credential().is_some();
        let authenticated = kong
            .ctx()
            .shared()
            .get::<AuthenticatedGroups>()
            .filter(|g| !g.0.is_empty())
            .cloned();
        let refuse = |has_credential: bool| {
            Err(if has_credential {
                Exit::error(403, REFUSED)
            } else {
                Exit::error(401, "Unauthorized")
            }
            .into())
        };
        let (groups, header) = match (consumer, authenticated) {
            (None, None) => return refuse(has_credential),
            (None, Some(auth)) => (auth.0, "X-Authenticated-Groups"),
            (Some(_), Some(auth)) if !has_credential || self.always_use_authenticated_groups => {
                (auth.0, "X-Authenticated-Groups")
            }
            (Some(id), _) => {
                let rows = kong.db().cached_by_consumer::<AclGroup>(&kong.cache(), id);
                if rows.is_empty() && !deny_mode {
                    return refuse(has_credential);
                }
                (
                    rows.iter().map(|r| r.value.group.clone()).collect(),
                    "X-Consumer-Groups",
                )
            }
        };
        let member = groups.iter().any(|g| configured.contains(g));
        if member == deny_mode {
            return Err(Exit::error(403, REFUSED).into());
        }
        if !self.hide_groups_header {
            kong.service().request().set_header(header, groups.join(", "))?;
        }
        Ok(())
    }
}
