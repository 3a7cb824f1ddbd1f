//! The balancer's cost per request: the upstream's lookup, a pick (and, for consistent hashing, the hash of the key)
//! over four targets, per algorithm, against the ~30 µs a proxied request costs in all
//! (`bench/http.sh`): the load-balancing rows of that script measure the whole request, this
//! the part the balancer adds.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kong_pdk::entities::{Algorithm, ForeignKey, HashOn, Target, Upstream};
use kong_pdk::gateway::{Balancers, PickState};
use kong_pdk::health::HealthBook;

fn upstream(algorithm: Algorithm) -> Upstream {
    let mut u: Upstream =
        serde_json::from_value(serde_json::json!({ "id": uuid(), "name": "bench.upstream" })).expect("an upstream");
    u.algorithm = algorithm;
    if algorithm == Algorithm::ConsistentHashing {
        u.hash_on = HashOn::Header;
        u.hash_on_header = Some("x-user".into());
    }
    u
}

fn uuid() -> String {
    "6a6c0a6e-5b0b-4a8f-9d3c-0c7a1e0b3f11".into()
}

fn bench(c: &mut Criterion) {
    let book = HealthBook::default();
    let mut g = c.benchmark_group("balancer pick, 4 targets");
    for (name, algorithm) in [
        ("round-robin", Algorithm::RoundRobin),
        ("consistent-hashing (hash + pick)", Algorithm::ConsistentHashing),
        ("least-connections", Algorithm::LeastConnections),
        ("latency", Algorithm::Latency),
    ] {
        let up = upstream(algorithm);
        let targets: Vec<Target> = (1..=4)
            .map(|i| Target {
                id: uuid::Uuid::new_v4(),
                upstream: ForeignKey { id: up.id },
                target: format!("10.0.0.{i}:80"),
                weight: 100,
                tags: None,
            })
            .collect();
        let balancers = Balancers::new(std::slice::from_ref(&up), &targets, &book);
        g.bench_function(name, |bench| {
            bench.iter(|| {
                // The lookup by the service's host, as each request does.
                let b = balancers.get(black_box("bench.upstream")).expect("the upstream");
                let mut state = PickState::new(Some(black_box("user-1234")), &b);
                let i = b.pick(&mut state);
                state.start(&b, i.unwrap_or(0));
                black_box(i)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
