use kong_pdk::dao::Dao;
use kong_pdk::prelude::*;

#[record]
#[derive(Dao)]
#[dao(name = "tokens", plugin = "tok", endpoint_key = "kee", unique = ["key", "secret"], auto = ["ttl"])]
pub struct Token {
    pub key: String,
    pub ttl: Option<i64>,
}

fn main() {}
