// A check's field names are checked: in #[plugin], `config.<field>` paths start at a field of
// the struct; in #[record], there is no plugin entity to start from.
use kong_pdk::prelude::*;

#[record(at_least_one_of("config.a", "b"))]
pub struct Inner {
    pub a: Option<String>,
    pub b: Option<String>,
}

#[plugin(priority = 1, version = "1.0.0", at_least_one_of("config.minute", "config.hour"))]
pub struct Limits {
    pub minute: Option<f64>,
}

fn main() {}
