use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct WrongDefault {
    #[field(default = "sixty")]
    timeout: u32,
}

#[handler]
impl Handler for WrongDefault {}

fn main() {}
