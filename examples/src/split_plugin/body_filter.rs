//! The `body_filter` phase of `my-custom-plugin`: upper-cases each chunk as it streams.

use kong_pdk::prelude::*;

use super::MyCustomPlugin;

pub(super) fn run(_conf: &MyCustomPlugin, kong: &mut Kong<BodyFilter>) -> kong_pdk::Result {
    kong.log().notice("body_filter phase");
    let upper = kong.response().chunk().to_ascii_uppercase();
    kong.response().set_chunk(upper);
    Ok(())
}
