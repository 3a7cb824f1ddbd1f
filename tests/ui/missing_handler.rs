use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct NoHandler {}

fn main() {}
