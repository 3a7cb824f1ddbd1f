use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0")]
pub struct BadVersion {}

#[handler]
impl Handler for BadVersion {}

fn main() {}
