use kong_pdk::prelude::*;

#[plugin(version = "1.0.0")]
pub struct NoPriority {}

#[handler]
impl Handler for NoPriority {}

fn main() {}
