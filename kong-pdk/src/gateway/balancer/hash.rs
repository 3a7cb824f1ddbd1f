//! What a request hashes to under `consistent-hashing` (Kong's `get_value_to_hash`): the
//! upstream's `hash_on`, else its `hash_fallback`, read from the request.

use crate::entities::{HashOn, Upstream};
use crate::transaction::Transaction;

/// The request's hash input for `upstream` (`None`: nothing to hash, Kong hashes `""`), and
/// the `Set-Cookie` value to answer with when hashing on a cookie the request lacks (Kong
/// makes one up, so the client's next requests stick).
pub(crate) fn hash_input(upstream: &Upstream, tx: &Transaction) -> (Option<String>, Option<String>) {
    if upstream.hash_on == HashOn::None {
        return (None, None);
    }
    let sides = [
        (
            upstream.hash_on,
            &upstream.hash_on_header,
            &upstream.hash_on_query_arg,
            &upstream.hash_on_uri_capture,
        ),
        (
            upstream.hash_fallback,
            &upstream.hash_fallback_header,
            &upstream.hash_fallback_query_arg,
            &upstream.hash_fallback_uri_capture,
        ),
    ];
    for (on, header, arg, capture) in sides {
        let value = match on {
            HashOn::None => return (None, None),
            HashOn::Consumer => tx
                .consumer
                .as_ref()
                .map(|c| c.id.to_string())
                .or_else(|| tx.credential.as_ref().map(|c| c.id.to_string())),
            HashOn::Ip => Some(tx.client.forwarded_ip.to_string()),
            HashOn::Header => header.as_deref().and_then(|name| {
                // nginx joins repeated headers with ", ".
                let mut values = tx.request.headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
                let first = values.next()?;
                Some(values.fold(first.to_owned(), |acc, v| acc + ", " + v))
            }),
            HashOn::Cookie => {
                let name = upstream.hash_on_cookie.as_deref().unwrap_or_default();
                match cookie(tx, name) {
                    Some(v) => Some(v.to_owned()),
                    None => {
                        let value = uuid::Uuid::new_v4().to_string();
                        let set = format!(
                            "{name}={value}; Path={}; Same-Site=Lax; HttpOnly",
                            upstream.hash_on_cookie_path
                        );
                        return (Some(value), Some(set));
                    }
                }
            }
            HashOn::Path => Some(crate::pdk::request::normalize_path(&tx.request.raw_path)),
            HashOn::QueryArg => arg.as_deref().and_then(|name| query_arg(tx, name)),
            HashOn::UriCapture => capture
                .as_deref()
                .and_then(|group| tx.captures.named.get(group).cloned()),
        };
        if value.is_some() {
            return (value, None);
        }
    }
    (None, None)
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(tx: &'a Transaction, name: &str) -> Option<&'a str> {
    tx.request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Kong's query argument normalisation: a flag is `true`, repeated values are sorted and
/// joined with `,`.
fn query_arg(tx: &Transaction, name: &str) -> Option<String> {
    use crate::pdk::request::QueryValue;
    let query = tx.request.query.as_deref()?;
    let args = crate::pdk::request::parse_args(query, 100);
    let text = |v: &QueryValue| match v {
        QueryValue::Flag => "true".to_owned(),
        QueryValue::Value(s) => s.clone(),
        QueryValue::List(_) => String::new(),
    };
    match args.get(name)? {
        QueryValue::List(items) => {
            let mut all: Vec<String> = items.iter().map(text).collect();
            all.sort();
            Some(all.join(","))
        }
        one => Some(text(one)),
    }
}
