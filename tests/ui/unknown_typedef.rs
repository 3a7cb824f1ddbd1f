use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct UnknownTypedef {
    #[field(typedef = header)]
    name: String,
}

#[handler]
impl Handler for UnknownTypedef {}

fn main() {}
