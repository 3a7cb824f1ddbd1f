use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct SelfRefuting {
    #[field(default = "sometimes", one_of = ["always", "never"])]
    mode: String,
    #[field(default = "ab", len_min = 3)]
    code: String,
    #[field(default = 0, between = [1, 65535])]
    port: u32,
}

#[handler]
impl Handler for SelfRefuting {}

fn main() {}
