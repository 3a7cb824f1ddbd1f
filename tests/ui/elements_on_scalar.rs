use kong_pdk::prelude::*;

#[plugin(priority = 10, version = "1.0.0")]
pub struct ElementsOnScalar {
    #[field(default = "x", elements(typedef = header_name))]
    name: String,
}

#[handler]
impl Handler for ElementsOnScalar {}

fn main() {}
