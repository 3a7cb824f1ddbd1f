use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct PortNames {
    #[field(default = ["a"], elements(typedef = port))]
    names: Vec<String>,
}

#[handler]
impl Handler for PortNames {}

fn main() {}
