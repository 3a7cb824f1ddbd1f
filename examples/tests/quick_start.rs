//! The seed's quick start against `kong-gateway start` with the embedded store, as a new user
//! types it (with the local mock upstream instead of httpbin.org); then kill -9 and a restart
//! keep every acknowledged write.

use std::path::Path;
use std::process::Command;

mod common;
use common::{Spawned, exchange, free_port, psql, spawn_ready, temp_dir, wait_until};

/// One HTTP/1.1 request; returns (status, lowercased head, body).
fn http(port: u16, method: &str, path: &str, form: Option<&str>) -> std::io::Result<(u16, String, String)> {
    let body = form.unwrap_or_default();
    let ctype = if form.is_some() {
        "Content-Type: application/x-www-form-urlencoded\r\n"
    } else {
        ""
    };
    let out = exchange(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, head.to_ascii_lowercase(), body.to_owned()))
}

struct Node {
    child: Spawned,
    proxy: u16,
    admin: u16,
    mock: u16,
}

fn start(dir: &Path, mock: u16) -> Node {
    start_with(dir, mock, "")
}

/// Starts a node whose kong.conf adds `extra` lines.
fn start_with(dir: &Path, mock: u16, extra: &str) -> Node {
    let conf = |[proxy, admin]: [u16; 2]| {
        format!(
            "proxy_listen = 127.0.0.1:{proxy}\nadmin_listen = 127.0.0.1:{admin}\nplugins = bundled,my-plugin\nmock_upstream = 127.0.0.1:{mock}\nprefix = {}\nnginx_worker_processes = 1\n{extra}",
            dir.join("prefix").display()
        )
    };
    // Ready when the Admin API answers as Kong's does (a port another process owns would not).
    let ready = |[_, admin]: [u16; 2]| {
        http(admin, "GET", "/status", None)
            .is_ok_and(|(status, head, _)| status == 200 && head.contains("\r\nserver: kong/"))
    };
    let (child, [proxy, admin]) = spawn_ready(dir, conf, ready);
    Node {
        child,
        proxy,
        admin,
        mock,
    }
}

#[test]
fn the_seeds_quick_start_then_kill_9_and_restart() {
    let dir = temp_dir("quick-start");
    let node = start(&dir, free_port());
    let (a, p) = (node.admin, node.proxy);

    // curl -i -s -X POST http://localhost:8001/services --data name=example_service --data url='http://httpbin.org'
    let url = format!("http%3A%2F%2F127.0.0.1%3A{}", node.mock);
    let (status, _, body) = http(a, "POST", "/services", Some(&format!("name=example_service&url={url}"))).unwrap();
    assert_eq!(status, 201, "{body}");
    // curl -is -X POST http://localhost:8001/services/example_service/plugins --data 'name=my-plugin'
    let (status, _, body) = http(a, "POST", "/services/example_service/plugins", Some("name=my-plugin")).unwrap();
    assert_eq!(status, 201, "{body}");
    // curl -i -X POST http://localhost:8001/services/example_service/routes --data 'paths[]=/mock' --data name=example_route
    let (status, _, body) = http(
        a,
        "POST",
        "/services/example_service/routes",
        Some("paths%5B%5D=%2Fmock&name=example_route"),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    // curl -i http://localhost:8000/mock/anything
    let (status, head, _) = http(p, "GET", "/mock/anything", None).unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("\r\nx-myplugin: response"), "{head}");

    // The variant with config.response_header_name.
    let (_, _, plugins) = http(a, "GET", "/services/example_service/plugins", None).unwrap();
    let plugins: serde_json::Value = serde_json::from_str(&plugins).unwrap();
    let id = plugins["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, _, body) = http(
        a,
        "PATCH",
        &format!("/plugins/{id}"),
        Some("config.response_header_name=X-CustomHeaderName"),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, head, _) = http(p, "GET", "/mock/anything", None).unwrap();
    assert!(head.contains("\r\nx-customheadername: response"), "{head}");

    // curl -s localhost:8001 | jq '.plugins.available_on_server."my-plugin"'
    let (_, _, root) = http(a, "GET", "/", None).unwrap();
    let root: serde_json::Value = serde_json::from_str(&root).unwrap();
    assert_eq!(
        root["plugins"]["available_on_server"]["my-plugin"],
        serde_json::json!({ "priority": 1000, "version": "0.0.1" })
    );

    // kill -9, then a restart on the same prefix: everything acknowledged is there.
    let mock = node.mock;
    let pid = node.child.0.id().to_string();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    drop(node);
    let node = start(&dir, mock);
    let (status, _, body) = http(node.admin, "GET", "/routes/example_route", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, head, _) = wait_until("the proxy", || http(node.proxy, "GET", "/mock/anything", None).ok());
    assert_eq!(status, 200);
    assert!(head.contains("\r\nx-customheadername: response"), "{head}");
    drop(node);
}

/// A fresh PostgreSQL database (via psql), or `None` with the reason printed when PostgreSQL
/// is unreachable; `KONG_TEST_REQUIRE_PG=1` (CI) makes that a failure.
fn postgres_database() -> Option<String> {
    let name = format!("kong_test_cluster_{}_{}", std::process::id(), free_port());
    match psql(&format!("CREATE DATABASE {name}")) {
        Ok(()) => Some(name),
        Err(why) => {
            assert!(
                std::env::var("KONG_TEST_REQUIRE_PG").as_deref() != Ok("1"),
                "KONG_TEST_REQUIRE_PG=1 but PostgreSQL is unreachable: {why}"
            );
            eprintln!("skipping: PostgreSQL is unreachable: {why}");
            None
        }
    }
}

#[test]
fn two_nodes_on_one_postgres_database_share_configuration() {
    let Some(db) = postgres_database() else { return };
    let conf = format!(
        "database = postgres\npg_host = 127.0.0.1\npg_user = postgres\npg_database = {db}\ndb_update_frequency = 0.1\n"
    );
    let (dir_a, dir_b) = (temp_dir("quick-start"), temp_dir("quick-start"));
    let mock = free_port();
    let a = start_with(&dir_a, mock, &conf);
    let b = start_with(&dir_b, free_port(), &conf);
    let url = format!("http%3A%2F%2F127.0.0.1%3A{mock}");
    let (status, _, body) = http(a.admin, "POST", "/services", Some(&format!("name=shared&url={url}"))).unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = http(
        a.admin,
        "POST",
        "/services/shared/routes",
        Some("paths%5B%5D=%2Fshared"),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = http(a.admin, "POST", "/services/shared/plugins", Some("name=my-plugin")).unwrap();
    assert_eq!(status, 201, "{body}");
    // Node B learns of the route and then of its plugin through the cluster events (two
    // events: the route may be served before the plugin arrives), and proxies it with both.
    let head = wait_until("node B to serve the route created on node A, with its plugin", || {
        http(b.proxy, "GET", "/shared/anything", None)
            .ok()
            .filter(|(status, head, _)| *status == 200 && head.contains("\r\nx-myplugin: response"))
            .map(|(_, head, _)| head)
    });
    assert!(head.contains("\r\nvia: 1.1 kong/"), "{head}");
    let (status, _, _) = http(b.admin, "GET", "/routes", None).unwrap();
    assert_eq!(status, 200);
    drop((a, b));
    let _ = psql(&format!("DROP DATABASE {db} WITH (FORCE)"));
}
