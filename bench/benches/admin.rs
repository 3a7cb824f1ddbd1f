//! Admin API writes as the data grows, on the embedded store (issue: "Admin writes slow down
//! linearly with the data"):
//!
//! - consumers created per second over HTTP (`POST /consumers`, one client, keep-alive) with
//!   0, 10,000, 50,000 and 100,000 consumers already stored;
//! - the time of a route change (`PATCH /routes/{id}`) with 10,000 routes: the write, the
//!   router rebuilt and the new configuration live.
//!
//! `cargo bench -p kong-pdk-bench --bench admin`; `ADMIN_BENCH_SIZES=0,1000` picks the sizes.
//! Each size starts from a fresh database, filled through the store in batches (what a
//! `kong config db_import` would do), then served by a fresh node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kong_pdk::admin::{Admin, Op, Store};
use kong_pdk::gateway::{HeaderSettings, Proxy, Snapshot};
use kong_pdk::pdk::NodeInfo;
use kong_pdk::registry::Plugins;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Creates measured at each size.
const CREATES: usize = 300;
/// Route changes measured.
const CHANGES: usize = 20;

/// A keep-alive HTTP/1.1 connection to the Admin API.
struct Conn(TcpStream, Vec<u8>);

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).await.expect("connect to the Admin API");
        s.set_nodelay(true).expect("nodelay");
        Conn(s, Vec::with_capacity(8192))
    }

    /// Sends a form request; returns the status.
    async fn form(&mut self, method: &str, path: &str, body: &str) -> u16 {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.0.write_all(req.as_bytes()).await.expect("write");
        // The head, then Content-Length bytes of body.
        self.1.clear();
        let mut buf = [0u8; 8192];
        let head_end = loop {
            let n = self.0.read(&mut buf).await.expect("read");
            assert!(n > 0, "the Admin API closed the connection");
            self.1.extend_from_slice(&buf[..n]);
            if let Some(i) = self.1.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&self.1[..head_end]).to_ascii_lowercase();
        let status: u16 = head[9..12].parse().expect("a status");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("a length"));
        while self.1.len() < head_end + length {
            let n = self.0.read(&mut buf).await.expect("read");
            assert!(n > 0, "the Admin API closed mid-body");
            self.1.extend_from_slice(&buf[..n]);
        }
        status
    }
}

/// A fresh database in a directory of its own.
async fn store(dir: &std::path::Path) -> Store {
    let store = Store::sqlite(&dir.join("kong.db")).await.expect("open the store");
    store.migrate().await.expect("migrate");
    store
}

/// Serves an Admin API over `store`; returns its address.
async fn serve(store: Store) -> SocketAddr {
    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).build());
    let proxy = Arc::new(Proxy::new(Snapshot::empty(plugins.clone()), HeaderSettings::default()));
    let admin = Admin::new(store, plugins, proxy).await.expect("start the Admin API");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(admin.serve(listener, std::future::pending()));
    addr
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Stores `n` entities made by `make`, 1,000 per transaction.
async fn fill(store: &Store, n: usize, make: impl Fn(usize) -> Op) {
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        batch.push(make(i));
        if batch.len() == 1000 || i + 1 == n {
            store.write(&batch).await.expect("bulk write");
            batch.clear();
        }
    }
}

fn consumer(i: usize) -> Op {
    let id = uuid::Uuid::new_v4().to_string();
    let username = format!("stored-{i}");
    Op::Put {
        kind: "consumers",
        id: id.clone(),
        data: json!({
            "id": id, "username": username, "custom_id": null, "tags": null, "type": 0,
            "created_at": now(), "updated_at": now(),
        }),
        unique: vec![("username", username)],
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kong-admin-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

async fn consumers(size: usize) {
    let dir = temp_dir(&format!("consumers-{size}"));
    let db = store(&dir).await;
    fill(&db, size, consumer).await;
    let started = Instant::now();
    let addr = serve(db).await;
    let loaded = started.elapsed();
    let mut conn = Conn::open(addr).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..CREATES {
        let one = Instant::now();
        let status = conn.form("POST", "/consumers", &format!("username=new-{i}")).await;
        assert_eq!(status, 201, "POST /consumers");
        slowest = slowest.max(one.elapsed());
    }
    let took = started.elapsed();
    println!(
        "consumers stored {size:>7}: {:>7.0} creates/s ({CREATES} creates in {:.2} s, slowest {:.1} ms; node started in {:.2} s)",
        CREATES as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0,
        loaded.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn routes(n: usize) {
    let dir = temp_dir("routes");
    let db = store(&dir).await;
    let service = uuid::Uuid::new_v4().to_string();
    db.write(&[Op::Put {
        kind: "services",
        id: service.clone(),
        data: json!({
            "id": service, "name": "bench", "protocol": "http", "host": "127.0.0.1", "port": 80,
            "path": null, "retries": 5, "connect_timeout": 60000, "write_timeout": 60000,
            "read_timeout": 60000, "enabled": true, "tags": null,
            "created_at": now(), "updated_at": now(),
        }),
        unique: vec![("name", "bench".into())],
    }])
    .await
    .expect("store the service");
    let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    fill(&db, n, |i| Op::Put {
        kind: "routes",
        id: ids[i].clone(),
        data: json!({
            "id": ids[i], "name": format!("route-{i}"), "protocols": ["http", "https"],
            "paths": [format!("/service-{i}/v1")], "service": { "id": service },
            "strip_path": true, "preserve_host": false, "regex_priority": 0,
            "https_redirect_status_code": 426, "path_handling": "v0",
            "request_buffering": true, "response_buffering": true, "tags": null,
            "created_at": now(), "updated_at": now(),
        }),
        unique: vec![("name", format!("route-{i}"))],
    })
    .await;
    let addr = serve(db).await;
    let mut conn = Conn::open(addr).await;
    let mut times = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let started = Instant::now();
        let status = conn
            .form(
                "PATCH",
                &format!("/routes/{}", ids[i * 7]),
                &format!("paths[]=/changed-{i}"),
            )
            .await;
        assert_eq!(status, 200, "PATCH /routes/{{id}}");
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "route change with {n} routes: median {:.1} ms, slowest {:.1} ms ({CHANGES} PATCHes)",
        times[CHANGES / 2].as_secs_f64() * 1000.0,
        times[CHANGES - 1].as_secs_f64() * 1000.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used.
    let sizes: Vec<usize> = std::env::var("ADMIN_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 10_000, 50_000, 100_000]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        for size in sizes {
            consumers(size).await;
        }
        routes(10_000).await;
    });
}
