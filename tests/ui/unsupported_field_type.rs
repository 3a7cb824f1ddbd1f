use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct BadField {
    timeout: std::time::Duration,
}

#[handler]
impl Handler for BadField {}

fn main() {}
