use kong_pdk::prelude::*;

#[record]
pub struct Limits {
    #[field(default = 1)]
    minute: u32,
}

#[plugin(priority = 10, version = "1.0.0")]
pub struct WrongRecordDefault {
    #[field(default = 5)]
    limits: Limits,
}

#[handler]
impl Handler for WrongRecordDefault {}

fn main() {}
