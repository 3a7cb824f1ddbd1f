//! Router lookup time at 10, 1,000 and 100,000 routes: plain prefixes, hosts and a regex mix.
//! Kong's own router scans its matchers in priority order (with an LRU cache in front); this
//! one indexes them, so the lookup should stay nearly flat as routes grow.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use kong_pdk::entities::{Route, Service};
use kong_pdk::router::{RequestInfo, Router};

/// `n` routes: 80% plain prefixes, 15% host + prefix, 5% regex paths.
fn routes(n: usize) -> Vec<(Arc<Route>, Option<Arc<Service>>)> {
    let service = Arc::new(Service::new("upstream", 80));
    (0..n)
        .map(|i| {
            let mut r = match i % 20 {
                0 => Route::new(&[&format!("~/regex-{i}/(?<id>\\d+)$")]),
                1..=3 => {
                    let mut r = Route::new(&["/"]);
                    r.hosts = Some(vec![format!("host-{i}.example.com")]);
                    r
                }
                _ => Route::new(&[&format!("/service-{i}/v1")]),
            };
            r.name = Some(format!("route-{i}"));
            (Arc::new(r), Some(service.clone()))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("router lookup");
    for n in [10usize, 1_000, 100_000] {
        let router = Router::new(routes(n)).expect("valid routes");
        // The last route of each kind: the worst case for a priority-ordered scan.
        let last = |kind: fn(usize) -> bool| (0..n).rev().find(|i| kind(i % 20)).expect("a route of that kind");
        let plain = format!("/service-{}/v1/items/42", last(|m| m >= 4));
        let host = format!("host-{}.example.com", last(|m| (1..=3).contains(&m)));
        let regex = format!("/regex-{}/1234", last(|m| m == 0));
        let cases = [
            ("plain prefix", plain.as_str(), "example.com"),
            ("host", "/anything", host.as_str()),
            ("regex", regex.as_str(), "example.com"),
        ];
        for (name, path, host) in cases {
            let req = RequestInfo {
                method: "GET",
                host,
                port: 80,
                path,
                headers: &headers,
                sni: None,
            };
            assert!(router.find(&req).is_some(), "{name} at {n} routes matches");
            g.bench_with_input(BenchmarkId::new(name, n), &req, |b, req| {
                b.iter(|| black_box(router.find(black_box(req))))
            });
        }
        let miss = RequestInfo {
            method: "GET",
            host: "nowhere.test",
            port: 80,
            path: "/missing/path",
            headers: &headers,
            sni: None,
        };
        g.bench_with_input(BenchmarkId::new("no match", n), &miss, |b, req| {
            b.iter(|| black_box(router.find(black_box(req))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
