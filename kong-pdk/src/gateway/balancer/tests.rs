use super::*;
use crate::entities::{ForeignKey, HashOn};
use uuid::Uuid;

fn upstream(algorithm: Algorithm) -> Upstream {
    serde_json::from_value(json!({ "id": Uuid::new_v4(), "name": "Backend" })).map_or_else(
        |e: serde_json::Error| panic!("{e}"),
        |mut u: Upstream| {
            u.algorithm = algorithm;
            u
        },
    )
}

fn target(up: Uuid, t: &str, weight: u32) -> Target {
    Target {
        id: Uuid::new_v4(),
        upstream: ForeignKey { id: up },
        target: t.into(),
        weight,
        tags: None,
    }
}

fn pick_host(b: &Balancer, state: &mut PickState) -> String {
    let i = b.pick(state).expect("a peer");
    b.address(i).host.clone()
}

#[test]
fn weighted_round_robin_and_retries_move_on() {
    let up = upstream(Algorithm::RoundRobin);
    let targets = [
        target(up.id, "a:1", 100),
        target(up.id, "b:2", 300),
        target(up.id, "c:3", 0),
    ];
    let book = HealthBook::default();
    let b = Balancers::new(&[up], &targets, &book);
    let bal = b.get("backend").unwrap();
    let bal = &*bal;
    let mut counts = HashMap::new();
    for _ in 0..400 {
        *counts.entry(pick_host(bal, &mut PickState::default())).or_insert(0) += 1;
    }
    assert_eq!(counts.get("a"), Some(&100));
    assert_eq!(counts.get("b"), Some(&300));
    assert_eq!(counts.get("c"), None, "weight 0 is out of rotation");
    let spread: Vec<String> = (0..4).map(|_| pick_host(bal, &mut PickState::default())).collect();
    assert_eq!(spread.iter().filter(|t| *t == "a").count(), 1, "{spread:?}");
    assert_ne!(spread[..2], ["b", "b"], "spread out, not in blocks: {spread:?}");
    // A retry goes to an address the request has not tried.
    let mut state = PickState::default();
    let first = pick_host(bal, &mut state);
    let second = pick_host(bal, &mut state);
    assert_ne!(first, second);
    // With every address tried, retries go round again.
    assert!(bal.pick(&mut state).is_some());
    assert_eq!(wheel(&[100, 100]), [0, 1]);
    assert!(wheel(&[50_000, 1]).len() <= 4097, "long wheels are scaled down");
    assert!(wheel(&[50_000, 1]).contains(&1), "every live target keeps a place");
    assert!(b.get("other").is_none());
}

#[test]
fn unhealthy_addresses_are_skipped_and_none_left_is_no_peer() {
    let mut up = upstream(Algorithm::RoundRobin);
    up.healthchecks.passive.unhealthy.tcp_failures = 1; // a health checker, so health counts
    up.healthchecks.threshold = 0.0;
    let targets = [target(up.id, "a:1", 100), target(up.id, "b:2", 100)];
    let book = HealthBook::default();
    let b = Balancers::new(std::slice::from_ref(&up), &targets, &book);
    let bal = b.get("backend").unwrap();
    let bal = &*bal;
    bal.set_health("a:1", None, false).unwrap();
    for _ in 0..10 {
        assert_eq!(pick_host(bal, &mut PickState::default()), "b");
    }
    // Health survives a rebuild of the balancers.
    let b2 = Balancers::new(std::slice::from_ref(&up), &targets, &book);
    let bal2 = b2.get("backend").unwrap();
    let bal2 = &*bal2;
    assert_eq!(pick_host(bal2, &mut PickState::default()), "b");
    bal2.set_health("b:2", Some("b:2"), false).unwrap();
    assert!(bal2.set_health("b:2", Some("b"), true).is_err(), "no port: Kong's 8000");
    assert!(!bal2.is_healthy());
    assert_eq!(bal2.pick(&mut PickState::default()), None);
    assert!(bal2.set_health("c:3", None, true).is_err());
    // Without health checks, health is not tracked: every address takes traffic, and setting
    // it is Kong's error.
    let plain = upstream(Algorithm::RoundRobin);
    let b4 = Balancers::new(std::slice::from_ref(&plain), &[target(plain.id, "a:1", 100)], &book);
    let bal4 = b4.get("backend").unwrap();
    let bal4 = &*bal4;
    bal4.address(0).state.set_healthy(false);
    assert!(bal4.is_healthy());
    assert_eq!(pick_host(bal4, &mut PickState::default()), "a");
    assert_eq!(
        bal4.set_health("a:1", None, false).unwrap_err(),
        "no healthchecker found for Backend"
    );
    // A threshold: 50% must be available, so one healthy of two is not enough.
    let mut half = up.clone();
    half.healthchecks.threshold = 50.0;
    bal2.set_health("a:1", None, true).unwrap();
    let b3 = Balancers::new(&[half], &targets, &book);
    assert!(!b3.get("backend").unwrap().is_healthy());
}

#[test]
fn consistent_hashing_sticks_and_remaps_little() {
    let mut up = upstream(Algorithm::ConsistentHashing);
    up.hash_on = HashOn::Header;
    up.healthchecks.passive.unhealthy.tcp_failures = 1;
    let mut targets: Vec<Target> = (1..=4).map(|i| target(up.id, &format!("10.0.0.{i}:80"), 100)).collect();
    let book = HealthBook::default();
    let before = Balancers::new(std::slice::from_ref(&up), &targets, &book);
    let bal = before.get("backend").unwrap();
    let bal = &*bal;
    let keys: Vec<String> = (0..2000).map(|i| format!("client-{i}")).collect();
    let pick = |bal: &Balancer, key: &str| {
        let mut s = PickState::new(Some(key), bal);
        pick_host(bal, &mut s)
    };
    let first: Vec<String> = keys.iter().map(|k| pick(bal, k)).collect();
    // The same key, the same target, every time and after a rebuild.
    let again = Balancers::new(std::slice::from_ref(&up), &targets, &book);
    for (k, t) in keys.iter().zip(&first) {
        assert_eq!(&pick(bal, k), t);
        assert_eq!(&pick(&again.get("backend").unwrap(), k), t);
    }
    // Every target gets a fair share.
    for i in 1..=4 {
        let n = first.iter().filter(|t| **t == format!("10.0.0.{i}")).count();
        assert!((300..=700).contains(&n), "10.0.0.{i}: {n} of 2000");
    }
    // A fifth target takes keys only for itself: the others keep theirs.
    targets.push(target(up.id, "10.0.0.5:80", 100));
    let after = Balancers::new(std::slice::from_ref(&up), &targets, &book);
    let moved: Vec<(String, String)> = keys
        .iter()
        .zip(&first)
        .map(|(k, t)| (t.clone(), pick(&after.get("backend").unwrap(), k)))
        .filter(|(a, b)| a != b)
        .collect();
    assert!(
        moved.iter().all(|(_, to)| to == "10.0.0.5"),
        "{:?}",
        &moved[..5.min(moved.len())]
    );
    assert!(moved.len() < 700, "{} of 2000 keys moved", moved.len());
    // An unhealthy target's keys go to the next point on the ring; a retry too.
    let b = after.get("backend").unwrap();
    let b = &*b;
    let key = &keys[0];
    let owner = pick(b, key);
    let mut s = PickState::new(Some(key), b);
    assert_eq!(pick_host(b, &mut s), owner);
    assert_ne!(pick_host(b, &mut s), owner, "a retry moves on");
    b.set_health(&format!("{owner}:80"), None, false).unwrap();
    assert_ne!(pick(b, key), owner);
}

#[test]
fn kongs_continuum_index_is_xxhash32() {
    // Kong: xxhash32("a") % 1000 + 1 (luaxxhash, seed 0): 0x550d7456 % 1000 + 1.
    assert_eq!(continuum_index("a", 1000), 0x550d_7456 % 1000 + 1);
}

#[test]
fn least_connections_prefers_the_idle_and_weights_count() {
    let up = upstream(Algorithm::LeastConnections);
    let targets = [target(up.id, "a:1", 100), target(up.id, "b:2", 100)];
    let book = HealthBook::default();
    let b = Balancers::new(std::slice::from_ref(&up), &targets, &book);
    let bal = b.get("backend").unwrap();
    let bal = &*bal;
    // Sequential requests that finish go round.
    let seq: Vec<String> = (0..4).map(|_| pick_host(bal, &mut PickState::default())).collect();
    assert_eq!(seq.iter().filter(|h| *h == "a").count(), 2, "{seq:?}");
    // Requests in flight on a send the next ones to b.
    let i = bal.pick(&mut PickState::default()).unwrap();
    let held: Vec<_> = (0..3).map(|_| bal.address(i).state.start_request()).collect();
    let busy = bal.address(i).host.clone();
    for _ in 0..4 {
        assert_ne!(pick_host(bal, &mut PickState::default()), busy);
    }
    drop(held);
    // Weight: c (300) takes three in flight before d (100) takes one more.
    let up2 = upstream(Algorithm::LeastConnections);
    let targets2 = [target(up2.id, "c:1", 300), target(up2.id, "d:2", 100)];
    let b2 = Balancers::new(std::slice::from_ref(&up2), &targets2, &book);
    let bal2 = b2.get("backend").unwrap();
    let bal2 = &*bal2;
    let mut guards = Vec::new();
    let mut got = Vec::new();
    for _ in 0..4 {
        let i = bal2.pick(&mut PickState::default()).unwrap();
        guards.push(bal2.address(i).state.start_request());
        got.push(bal2.address(i).host.clone());
    }
    assert_eq!(got.iter().filter(|h| *h == "c").count(), 3, "{got:?}");
}

#[test]
fn latency_prefers_the_faster_target() {
    let up = upstream(Algorithm::Latency);
    let targets = [target(up.id, "slow:1", 100), target(up.id, "fast:2", 100)];
    let book = HealthBook::default();
    let b = Balancers::new(std::slice::from_ref(&up), &targets, &book);
    let bal = b.get("backend").unwrap();
    let bal = &*bal;
    for a in bal.addresses() {
        a.state.record_latency(if a.host == "slow" { 0.5 } else { 0.01 });
    }
    for _ in 0..5 {
        assert_eq!(pick_host(bal, &mut PickState::default()), "fast");
    }
    // A retry goes to the other one.
    let mut s = PickState::default();
    assert_eq!(pick_host(bal, &mut s), "fast");
    assert_eq!(pick_host(bal, &mut s), "slow");
}

#[test]
fn passive_checks_open_the_circuit_and_statuses_count() {
    let mut up = upstream(Algorithm::RoundRobin);
    up.healthchecks.passive.unhealthy.http_failures = 2;
    up.healthchecks.passive.unhealthy.tcp_failures = 1;
    let targets = [target(up.id, "a:1", 100), target(up.id, "b:2", 100)];
    let book = HealthBook::default();
    let b = Balancers::new(std::slice::from_ref(&up), &targets, &book);
    let bal = b.get("backend").unwrap();
    let bal = &*bal;
    let a = bal.addresses().iter().position(|x| x.host == "a").unwrap();
    bal.report(a, Ok(500));
    bal.report(a, Ok(404)); // in neither list: no effect
    assert!(bal.address(a).state.is_healthy());
    bal.report(a, Ok(503));
    assert!(!bal.address(a).state.is_healthy());
    let health = bal.target_health();
    assert_eq!(health[0].1, "UNHEALTHY");
    assert_eq!(health[1].1, "HEALTHY");
    assert_eq!(health[0].2["addresses"][0]["health"], "UNHEALTHY");
    let bh = bal.balancer_health();
    assert_eq!(bh["health"], "HEALTHY");
    assert_eq!(bh["details"]["weight"]["available"], 100);
    let bb = bal.addresses().iter().position(|x| x.host == "b").unwrap();
    bal.report(bb, Err(Report::TcpFailure));
    assert_eq!(bal.balancer_health()["health"], "UNHEALTHY");
}

#[test]
fn targets_default_to_port_8000() {
    assert_eq!(split_target("example.test"), ("example.test".into(), 8000));
    assert_eq!(split_target("10.0.0.1:81"), ("10.0.0.1".into(), 81));
    assert_eq!(split_target("[::1]:82"), ("::1".into(), 82));
    assert_eq!(split_target("[::1]"), ("::1".into(), 8000));
    assert_eq!(split_address("10.0.0.1"), ("10.0.0.1".into(), None));
    assert_eq!(split_address("[::1]:9"), ("::1".into(), Some(9)));
}

#[test]
fn ipv6_addresses_are_bracketed_as_kongs_dns_client_brackets_them() {
    let up = upstream(Algorithm::RoundRobin);
    let targets = [target(up.id, "[::1]:8000", 100), target(up.id, "127.0.0.1:8000", 100)];
    let book = HealthBook::default();
    let b = Balancers::new(&[up], &targets, &book);
    let bal = b.get("backend").unwrap();
    let ips: Vec<Value> = bal
        .target_health()
        .into_iter()
        .map(|(_, _, status)| status["addresses"][0]["ip"].clone())
        .collect();
    assert!(ips.contains(&json!("[::1]")), "{ips:?}");
    assert!(ips.contains(&json!("127.0.0.1")), "{ips:?}");
    // The address itself stays connectable.
    let hosts: Vec<String> = (0..2).map(|_| pick_host(&bal, &mut PickState::default())).collect();
    assert!(hosts.contains(&"::1".to_owned()), "{hosts:?}");
}
