use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct WrongTypedef {
    #[field(typedef = port)]
    port: String,
}

#[handler]
impl Handler for WrongTypedef {}

fn main() {}
