//! What Kong's authentication plugins share (`kong/plugins/*-auth`): the phases they
//! authenticate in, and the anonymous consumer that makes several of them an OR.

use kong_pdk::phase;
use kong_pdk::prelude::*;

/// A phase an auth plugin authenticates in: `access`, or `ws_handshake` for WebSocket services.
pub(crate) trait AuthPhase:
    phase::RequestRead + phase::Authenticate + phase::AuthAndLater + phase::ServiceRequestWrite + Sized
{
}

impl AuthPhase for Access {}
impl AuthPhase for WsHandshake {}

/// Whether an earlier auth plugin already identified the client, so that one with an
/// `anonymous` consumer (the OR of several) has nothing to do.
pub(crate) fn already_authenticated<P: AuthPhase>(kong: &mut Kong<'_, P>, anonymous: Option<&str>) -> bool {
    anonymous.is_some() && kong.client().get_credential().is_some()
}

/// Settles a failed authentication as Kong does: the plugin's answer, or with `anonymous`
/// that consumer (500 when it does not exist), without a credential.
pub(crate) fn or_anonymous<P: AuthPhase>(
    kong: &mut Kong<'_, P>,
    anonymous: Option<&str>,
    failure: Exit,
) -> kong_pdk::Result {
    let Some(anonymous) = anonymous else {
        return Err(failure.into());
    };
    // Through the node's cache, as Kong's auth plugins load it (`consumers:<anonymous>`).
    let key = kong_pdk::cache::cache_key("consumers", &[anonymous]);
    let cached = kong.cache().get_with(&key, Default::default(), || {
        Ok(kong.client().load_consumer(anonymous, true))
    });
    match cached.ok().and_then(|(c, _)| c).map(|c| (*c).clone()) {
        Some(consumer) => Ok(kong.client().set_consumer(consumer, None)?),
        None => Err(Exit::error(
            500,
            format!("anonymous consumer {anonymous} is configured but doesn't exist"),
        )
        .into()),
    }
}
