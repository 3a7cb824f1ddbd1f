use std::collections::HashMap;

use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct WrongShape {
    #[field(default = "x-a: 1")]
    headers: HashMap<String, String>,
    #[field(default = "GET")]
    methods: Vec<String>,
}

#[handler]
impl Handler for WrongShape {}

fn main() {}
