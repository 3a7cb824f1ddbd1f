//! Router matching rules and Kong's priority order.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use uuid::Uuid;

use super::*;
use crate::entities::{Route, Service};

fn route(name: &str, f: impl FnOnce(&mut Route)) -> (Arc<Route>, Option<Arc<Service>>) {
    let mut r = Route::new(&[]);
    r.paths = None;
    r.name = Some(name.into());
    f(&mut r);
    (Arc::new(r), Some(Arc::new(Service::new("upstream", 80))))
}

fn paths(p: &[&str]) -> Option<Vec<String>> {
    Some(p.iter().map(|s| (*s).to_owned()).collect())
}

struct Req {
    method: &'static str,
    host: &'static str,
    port: u16,
    path: &'static str,
    headers: HeaderMap,
    sni: Option<&'static str>,
}

fn req(path: &'static str) -> Req {
    Req {
        method: "GET",
        host: "example.com",
        port: 80,
        path,
        headers: HeaderMap::new(),
        sni: None,
    }
}

impl Req {
    fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            method: self.method,
            host: self.host,
            port: self.port,
            path: self.path,
            headers: &self.headers,
            sni: self.sni,
        }
    }
}

fn winner(router: &Router, r: &Req) -> Option<String> {
    router.find(&r.info()).and_then(|m| m.route.name.clone())
}

#[test]
fn plain_paths_are_raw_prefixes_and_the_longest_wins() {
    let router = Router::new([
        route("root", |r| r.paths = paths(&["/"])),
        route("foo", |r| r.paths = paths(&["/foo"])),
        route("foo-bar", |r| r.paths = paths(&["/foo/bar"])),
    ])
    .unwrap();
    assert_eq!(winner(&router, &req("/foobar")).as_deref(), Some("foo"));
    assert_eq!(winner(&router, &req("/foo/bar/baz")).as_deref(), Some("foo-bar"));
    assert_eq!(winner(&router, &req("/other")).as_deref(), Some("root"));
    let m = router.find(&req("/foo/x").info()).unwrap();
    assert_eq!(m.matched_path.as_deref(), Some("/foo"));
}

#[test]
fn regex_paths_beat_plain_paths_and_regex_priority_orders_them() {
    let router = Router::new([
        route("plain-long", |r| r.paths = paths(&["/users/123/profile"])),
        route("regex-low", |r| r.paths = paths(&[r"~/users/\d+"])),
        route("regex-high", |r| {
            r.paths = paths(&[r"~/users/(?<id>\d+)/profile$"]);
            r.regex_priority = 5;
        }),
        route("regex-negative", |r| {
            r.paths = paths(&[r"~/users/\d+/profile"]);
            r.regex_priority = -3;
        }),
    ])
    .unwrap();
    let m = router.find(&req("/users/123/profile").info()).unwrap();
    assert_eq!(m.route.name.as_deref(), Some("regex-high"));
    assert_eq!(m.captures.named["id"], "123");
    assert_eq!(m.captures.unnamed, ["/users/123/profile", "123"]);
    assert_eq!(
        winner(&router, &req("/users/9/x")).as_deref(),
        Some("regex-low"),
        "0 outranks -3"
    );
    assert_eq!(
        winner(&router, &req("/x/users/9")),
        None,
        "regexes are anchored at the start"
    );
}

#[test]
fn more_attribute_kinds_win_then_plain_hosts_then_headers() {
    let router = Router::new([
        route("path", |r| r.paths = paths(&["/api"])),
        route("host+path", |r| {
            r.paths = paths(&["/"]);
            r.hosts = paths(&["example.com"]);
        }),
        route("wildcard+path", |r| {
            r.paths = paths(&["/api/long/prefix"]);
            r.hosts = paths(&["*.com"]);
        }),
        route("host+path+header", |r| {
            r.paths = paths(&["/"]);
            r.hosts = paths(&["example.com"]);
            r.headers = Some(
                [("x-version".to_owned(), vec!["v2".to_owned(), "~*^v3".to_owned()])]
                    .into_iter()
                    .collect(),
            );
        }),
    ])
    .unwrap();
    let mut r = req("/api/long/prefix");
    assert_eq!(
        winner(&router, &r).as_deref(),
        Some("host+path"),
        "plain hosts outrank wildcards of the same kinds"
    );
    r.headers.insert("X-Version", HeaderValue::from_static("V2"));
    assert_eq!(
        winner(&router, &r).as_deref(),
        Some("host+path+header"),
        "header values are case-insensitive"
    );
    r.headers.insert("X-Version", HeaderValue::from_static("v3-beta"));
    assert_eq!(
        winner(&router, &r).as_deref(),
        Some("host+path+header"),
        "~* values are regexes"
    );
    r.headers.insert("X-Version", HeaderValue::from_static("v1"));
    assert_eq!(winner(&router, &r).as_deref(), Some("host+path"));
    r.host = "other.org";
    assert_eq!(winner(&router, &r).as_deref(), Some("path"));
}

#[test]
fn hosts_match_exactly_or_by_wildcard_with_optional_port() {
    let router = Router::new([
        route("exact", |r| r.hosts = paths(&["Example.com"])),
        route("suffix", |r| r.hosts = paths(&["*.example.org"])),
        route("prefix", |r| r.hosts = paths(&["api.example.*"])),
        route("port", |r| r.hosts = paths(&["ported.com:8443"])),
    ])
    .unwrap();
    let mut r = req("/");
    assert_eq!(winner(&router, &r).as_deref(), Some("exact"));
    r.host = "a.b.example.org";
    assert_eq!(winner(&router, &r).as_deref(), Some("suffix"));
    r.host = "example.org";
    assert_eq!(winner(&router, &r), None, "the wildcard needs at least one character");
    r.host = "api.example.net";
    assert_eq!(winner(&router, &r).as_deref(), Some("prefix"));
    r.host = "ported.com";
    assert_eq!(winner(&router, &r), None);
    r.port = 8443;
    assert_eq!(winner(&router, &r).as_deref(), Some("port"));
}

#[test]
fn methods_and_snis_must_match() {
    let router = Router::new([
        route("post", |r| r.methods = paths(&["POST", "put"])),
        route("sni", |r| {
            r.snis = paths(&["secure.example.com"]);
            r.protocols = vec!["https".into()];
        }),
    ])
    .unwrap();
    let mut r = req("/");
    assert_eq!(winner(&router, &r), None);
    r.method = "PUT";
    assert_eq!(winner(&router, &r).as_deref(), Some("post"));
    r.method = "GET";
    r.sni = Some("secure.example.com");
    assert_eq!(winner(&router, &r).as_deref(), Some("sni"));
}

#[test]
fn equal_priorities_go_to_the_larger_route_id() {
    let small = Uuid::from_u128(1);
    let large = Uuid::from_u128(2);
    let router = Router::new([
        route("small", |r| {
            r.id = small;
            r.paths = paths(&["/same"]);
        }),
        route("large", |r| {
            r.id = large;
            r.paths = paths(&["/same"]);
        }),
    ])
    .unwrap();
    assert_eq!(winner(&router, &req("/same")).as_deref(), Some("large"));
}

#[test]
fn a_route_competes_once_per_path_group() {
    // `multi` has a long and a short prefix; `mid` sits between them.
    let router = Router::new([
        route("multi", |r| r.paths = paths(&["/a", "/a/b/c"])),
        route("mid", |r| r.paths = paths(&["/a/b"])),
    ])
    .unwrap();
    assert_eq!(winner(&router, &req("/a/b/c/d")).as_deref(), Some("multi"));
    assert_eq!(winner(&router, &req("/a/b/x")).as_deref(), Some("mid"));
    assert_eq!(winner(&router, &req("/a/x")).as_deref(), Some("multi"));
    assert_eq!(router.len(), 3);
}

#[test]
fn stream_routes_and_disabled_services_are_left_out() {
    let (r, _) = route("disabled", |r| r.paths = paths(&["/x"]));
    let mut svc = Service::new("up", 80);
    svc.enabled = false;
    let router = Router::new([
        (r, Some(Arc::new(svc))),
        route("tcp", |r| r.protocols = vec!["tcp".into()]),
        route("no-service", |r| r.paths = paths(&["/y"])),
    ])
    .unwrap();
    assert_eq!(winner(&router, &req("/x")), None);
    assert_eq!(router.len(), 1);
}

#[test]
fn an_invalid_regex_is_reported_with_its_route() {
    let (r, s) = route("bad", |r| r.paths = paths(&["~/a(b"]));
    let id = r.id;
    let err = Router::new([(r, s)]).unwrap_err();
    assert_eq!(err.route, id);
    assert!(err.message.starts_with("invalid regex: '/a(b'"), "{}", err.message);
}

#[test]
fn regex_literal_prefixes_index_correctly() {
    assert_eq!(literal_prefix(r"/users/\d+"), "/users/");
    assert_eq!(literal_prefix(r"/ab?c"), "/a");
    assert_eq!(literal_prefix(r"/a\.b/x"), "/a.b/x");
    assert_eq!(literal_prefix(r"/a|/b"), "");
    assert_eq!(literal_prefix(r"/ab+"), "/ab", "`b+` needs at least one b");
    let router = Router::new([route("opt", |r| r.paths = paths(&[r"~/ab?c"]))]).unwrap();
    assert_eq!(winner(&router, &req("/ac")).as_deref(), Some("opt"));
    assert_eq!(winner(&router, &req("/abc")).as_deref(), Some("opt"));
}

#[test]
fn host_only_and_path_less_routes_still_match() {
    let router = Router::new([
        route("catch-all", |_| {}),
        route("wild", |r| r.hosts = paths(&["*.example.com"])),
    ])
    .unwrap();
    let mut r = req("/anything");
    assert_eq!(winner(&router, &r).as_deref(), Some("catch-all"));
    r.host = "a.example.com";
    assert_eq!(winner(&router, &r).as_deref(), Some("wild"));
}

#[test]
fn a_negative_regex_priority_ranks_below_zero() {
    // Both regexes match; on equal priority the larger id would win, which is the negative
    // route's here, so only the sign of its priority keeps it behind.
    let router = Router::new([
        route("zero", |r| {
            r.id = Uuid::nil();
            r.paths = paths(&[r"~/users/\d+"]);
        }),
        route("negative", |r| {
            r.id = Uuid::max();
            r.paths = paths(&[r"~/users/\d"]);
            r.regex_priority = -3;
        }),
    ])
    .unwrap();
    assert_eq!(
        winner(&router, &req("/users/9/x")).as_deref(),
        Some("zero"),
        "0 outranks -3"
    );
}
