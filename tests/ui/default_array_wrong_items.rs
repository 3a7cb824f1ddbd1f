use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct WrongItems {
    #[field(default = [200, "ok"])]
    statuses: Vec<u16>,
}

#[handler]
impl Handler for WrongItems {}

fn main() {}
