use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0", protocols_default = ["http", "smtp"])]
pub struct UnknownProtocol {}

#[handler]
impl Handler for UnknownProtocol {}

fn main() {}
