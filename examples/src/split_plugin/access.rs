//! The `access` phase of `my-custom-plugin`.

use kong_pdk::prelude::*;

use super::MyCustomPlugin;

pub(super) fn run(_conf: &MyCustomPlugin, kong: &mut Kong<Access>) -> kong_pdk::Result {
    kong.log().notice("access phase");
    Ok(())
}
