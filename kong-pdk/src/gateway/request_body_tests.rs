//! Bodies over real sockets: a route's `request_buffering` and the temporary files behind it,
//! `client_max_body_size`, `client_body_timeout`, broken chunks, the service's `write_timeout`
//! and `read_timeout` around the upload; and a route's `response_buffering`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::tests::{closed_after, route, snapshot};
use super::*;
use crate::entities::{Route, Service};
use crate::executor::PluginEntity;
use crate::pdk::NodeInfo;
use crate::prelude::*;
use crate::registry::Plugins;

/// With `X-Impatient`, waits 50 ms at most for the whole body, then gives up on it.
#[plugin(priority = 4, version = "1.0.0", name = "gw-test-impatient")]
pub(super) struct Impatient {}

#[handler]
impl Handler for Impatient {
    async fn access(&self, kong: &mut Kong<Access>) -> crate::Result {
        if kong.request().get_header("x-impatient").is_some() {
            let mut request = kong.request();
            let _ = tokio::time::timeout(Duration::from_millis(50), request.get_raw_body_limited(0)).await;
        }
        Ok(())
    }
}

/// Upper-cases the body's last chunk (`eof`) on requests with `X-Tail`: the length stays.
#[plugin(priority = 2, version = "1.0.0", name = "gw-test-tail")]
pub(super) struct Tail {}

#[handler]
impl Handler for Tail {
    async fn body_filter(&self, kong: &mut Kong<BodyFilter>) -> crate::Result {
        if kong.request().get_header("x-tail").is_some() && kong.response().is_eof() {
            let upper = kong.response().chunk().to_ascii_uppercase();
            kong.response().set_chunk(upper);
        }
        Ok(())
    }
}

/// A directory of the test's own, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kong-body-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Files left in the directory.
    fn entries(&self) -> usize {
        std::fs::read_dir(&self.0).unwrap().count()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Open descriptors of this process on files that were in `dir` and are removed (Linux's
/// `/proc/self/fd`); `None` where that cannot be seen.
fn unlinked_files_in(dir: &std::path::Path) -> Option<usize> {
    let fds = std::fs::read_dir("/proc/self/fd").ok()?;
    let prefix = dir.to_string_lossy().into_owned();
    Some(
        fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| p.starts_with(&prefix) && p.ends_with(" (deleted)"))
            .count(),
    )
}

/// An upstream that reads the whole body and answers what it saw: the body's length, its
/// `content-length` and `transfer-encoding`, and how many of `dir`'s removed files the
/// process held open meanwhile (a body buffered to disk). Counts its requests.
async fn upstream(dir: std::path::PathBuf) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            let dir = dir.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    count.fetch_add(1, Ordering::Relaxed);
                    let dir = dir.clone();
                    async move {
                        let header = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
                        let (cl, te) = (header("content-length"), header("transfer-encoding"));
                        let peeked = header("x-peeked");
                        let spooled = unlinked_files_in(&dir);
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let echo = json!({
                            "len": body.as_ref().map(Bytes::len).ok(),
                            "content-length": cl,
                            "transfer-encoding": te,
                            "spooled": spooled,
                            "peeked": peeked,
                        });
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(echo.to_string()))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A gateway with `limits` and routes `/buffered` (the default), `/streamed`
/// (`request_buffering = false`) and `/passed` (`response_buffering = false`) to `service`,
/// `gw-test-peek` on all.
async fn gateway(limits: BodyLimits, service: Service) -> SocketAddr {
    let service = Arc::new(service);
    let buffered = route(&["/buffered"], Some(&service));
    let mut streamed = Route::new(&["/streamed"]);
    streamed.request_buffering = false;
    let streamed = (Arc::new(streamed), Some(service.clone()));
    let mut passed = Route::new(&["/passed"]);
    passed.response_buffering = false;
    let passed = (Arc::new(passed), Some(service));
    let plugins = Arc::new(
        Plugins::builder(NodeInfo::default())
            .with::<super::tests::Peek>()
            .with::<Tail>()
            .with::<Impatient>()
            .build(),
    );
    let snap = snapshot(
        &plugins,
        vec![buffered, streamed, passed],
        vec![
            PluginEntity::new("gw-test-peek", json!({})),
            PluginEntity::new("gw-test-tail", json!({})),
            PluginEntity::new("gw-test-impatient", json!({})),
        ],
    )
    .await;
    let proxy = Arc::new(Proxy::new(snap, HeaderSettings::default()).with_body_limits(limits));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    addr
}

/// A gateway as [`gateway`] makes it, in front of the echoing [`upstream`], with `limits`
/// writing to a temporary directory of its own and the service changed by `tweak`: the
/// directory, the gateway and the upstream's request count.
async fn echo_gateway(
    mut limits: BodyLimits,
    tweak: impl FnOnce(&mut Service),
) -> (TempDir, SocketAddr, Arc<AtomicUsize>) {
    let dir = TempDir::new();
    let (up, seen) = upstream(dir.0.clone()).await;
    limits.temp_dir = dir.0.clone();
    let mut service = Service::new("127.0.0.1", up.port());
    tweak(&mut service);
    (dir, gateway(limits, service).await, seen)
}

/// A gateway as [`gateway`] makes it, in front of `service`, its temporary files in a
/// directory of its own.
async fn gateway_in(service: Service) -> (TempDir, SocketAddr) {
    let dir = TempDir::new();
    let limits = BodyLimits {
        temp_dir: dir.0.clone(),
        ..BodyLimits::default()
    };
    let gw = gateway(limits, service).await;
    (dir, gw)
}

/// Sends `head` and `body` (in `parts` writes, `pause` apart) and returns the whole answer
/// (status line, head, body); the request asks to close.
async fn send_slowly(addr: SocketAddr, head: &str, body: &[u8], parts: usize, pause: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(head.as_bytes()).await.unwrap();
        for chunk in body.chunks(body.len().div_ceil(parts.max(1)).max(1)) {
            tokio::time::sleep(pause).await;
            if w.write_all(chunk).await.is_err() {
                break;
            }
        }
    };
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut got));
    let (_, read) = tokio::join!(write, read);
    assert!(read.is_ok(), "no answer within 20 s");
    String::from_utf8_lossy(&got).into_owned()
}

/// The JSON body of an answer `send_slowly` returned.
fn echo(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(4096) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_buffering_sends_the_whole_body_with_its_length_from_memory_or_a_removed_file() {
    let (dir, gw, _) = echo_gateway(BodyLimits::default(), |_| {}).await;
    let watch_fds = unlinked_files_in(&dir.0).is_some();
    if !watch_fds {
        eprintln!("skipping the temporary-file checks: /proc/self/fd cannot be read here");
    }
    for size in [100usize, 8 * 1024, 8 * 1024 + 1, 300_000] {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let head = "POST /buffered HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        let answer = send_slowly(gw, head, &chunked(&body), 4, Duration::from_millis(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let seen = echo(&answer);
        assert_eq!(seen["len"], size, "{size}");
        // The length was known before the upstream was called: the body was read whole.
        assert_eq!(seen["content-length"], size.to_string(), "{size}");
        assert_eq!(seen["transfer-encoding"], Value::Null, "{size}");
        if watch_fds {
            let on_disk = usize::from(size > 8 * 1024);
            assert_eq!(seen["spooled"], on_disk, "{size}: past 8 KiB the body is in a file");
        }
    }
    // Streamed (request_buffering = false): the body goes as it arrives, chunked.
    let body = vec![b'z'; 300_000];
    let head = "POST /streamed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let answer = send_slowly(gw, head, &chunked(&body), 4, Duration::from_millis(5)).await;
    let seen = echo(&answer);
    assert_eq!(seen["len"], body.len());
    assert_eq!(seen["transfer-encoding"], "chunked");
    if watch_fds {
        assert_eq!(seen["spooled"], 0);
    }
    assert_eq!(dir.entries(), 0, "nothing is left in the temporary directory");
    if watch_fds {
        assert_eq!(unlinked_files_in(&dir.0), Some(0), "every temporary file was closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_body_buffer_size_sets_what_get_raw_body_reads() {
    let (_dir, gw, _) = echo_gateway(
        BodyLimits {
            buffer_size: 16 * 1024,
            ..BodyLimits::default()
        },
        |_| {},
    )
    .await;
    for (size, peeked) in [
        (10_000usize, "10000".to_owned()),
        (
            20_000,
            "request body did not fit into client body buffer, consider raising 'client_body_buffer_size'".to_owned(),
        ),
    ] {
        let head = format!(
            "POST /buffered HTTP/1.1\r\nHost: x\r\nX-Peek: 1\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        );
        let answer = send_slowly(gw, &head, &vec![b'q'; size], 1, Duration::ZERO).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let seen = echo(&answer);
        assert_eq!(seen["len"], size);
        assert_eq!(seen["peeked"], peeked, "{size}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_client_max_body_size_are_refused_413() {
    let (_dir, gw, seen) = echo_gateway(
        BodyLimits {
            max_size: 1000,
            ..BodyLimits::default()
        },
        |_| {},
    )
    .await;
    // Announced: refused before any phase, the body unread.
    let answer = send_slowly(
        gw,
        "POST /buffered HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\nConnection: close\r\n\r\n",
        &[b'x'; 1001],
        1,
        Duration::ZERO,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\r\n\r\nPayload too large\nrequest_id: "), "{answer}");
    // Chunked: found while reading, on both kinds of route.
    for path in ["/buffered", "/streamed"] {
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        let answer = send_slowly(gw, &head, &chunked(&[b'x'; 5000]), 1, Duration::ZERO).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        if path == "/buffered" {
            assert_eq!(
                seen.load(Ordering::Relaxed),
                0,
                "no buffered request reached the upstream"
            );
        }
    }
    // At the limit: proxied.
    let answer = send_slowly(
        gw,
        "POST /buffered HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
        &[b'x'; 1000],
        1,
        Duration::ZERO,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_past_client_body_timeout_is_408() {
    let (_dir, gw, seen) = echo_gateway(
        BodyLimits {
            timeout: Duration::from_millis(300),
            ..BodyLimits::default()
        },
        |_| {},
    )
    .await;
    for (path, peek) in [("/buffered", ""), ("/streamed", ""), ("/streamed", "X-Peek: 1\r\n")] {
        let sent = format!("POST {path} HTTP/1.1\r\nHost: x\r\n{peek}Content-Length: 10\r\n\r\nabc");
        let got = closed_after(gw, sent.as_bytes()).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{path} {peek}: {text}");
        assert!(
            text.contains("\r\n\r\nRequest timeout\nrequest_id: "),
            "{path} {peek}: {text}"
        );
    }
    assert_eq!(
        seen.load(Ordering::Relaxed),
        1,
        "the buffered and peeked requests never reached the upstream (the streamed one's head did)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chunked_body_is_400_as_nginx_answers() {
    let (_dir, gw, seen) = echo_gateway(BodyLimits::default(), |_| {}).await;
    for path in ["/buffered", "/streamed"] {
        for bad in [
            "zz\r\nabc\r\n0\r\n\r\n",
            "ffffffffffffffff\r\nabc\r\n",
            "3\r\nabcdef\r\n0\r\n\r\n",
        ] {
            let sent = format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{bad}");
            let got = closed_after(gw, sent.as_bytes()).await;
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 400"), "{path} {bad:?}: {text}");
            assert!(
                text.contains("\r\n\r\nBad request\nrequest_id: "),
                "{path} {bad:?}: {text}"
            );
        }
        if path == "/buffered" {
            assert_eq!(
                seen.load(Ordering::Relaxed),
                0,
                "no buffered broken body reached the upstream"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_timeout_starts_once_a_slow_upload_is_sent() {
    // A client uploading 1 MiB over about 1.2 s to a service with a 400 ms read timeout: the
    // upstream answers as soon as it has the body, so no timer runs out.
    let (_dir, gw, _) = echo_gateway(BodyLimits::default(), |s| {
        s.read_timeout = 400;
    })
    .await;
    let body = vec![b'u'; 1 << 20];
    for path in ["/buffered", "/streamed"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let answer = send_slowly(gw, &head, &body, 12, Duration::from_millis(100)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert_eq!(echo(&answer)["len"], body.len(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_timeout_runs_between_writes_to_an_upstream_that_stops_reading() {
    // An upstream with a tiny receive buffer that reads the head and then nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 1024];
                let _ = s.read(&mut head).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let mut service = Service::new("127.0.0.1", up.port());
    service.write_timeout = 300;
    // Longer than `send_slowly` waits: only the write timeout can end it in time.
    service.read_timeout = 60_000;
    let (_dir, gw) = gateway_in(service).await;
    // More than the kernel's send and receive buffers hold.
    let body = vec![b'w'; 8 << 20];
    let head = format!(
        "POST /buffered HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answer = send_slowly(gw, &head, &body, 1, Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(
        answer.contains("\r\n\r\nThe upstream server is timing out\nrequest_id: "),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_buffering_reads_the_upstream_ahead_of_a_client_that_does_not_read() {
    // An upstream that sends a 32 MiB answer and says when the last byte was taken from it.
    const SIZE: usize = 32 << 20;
    let sent = Arc::new(tokio::sync::Notify::new());
    let done = sent.clone();
    let up = super::tests::raw_upstream(move |mut s| {
        let done = done.clone();
        async move {
            let mut head = [0u8; 4096];
            let _ = s.read(&mut head).await;
            let _ = s
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes())
                .await;
            let block = vec![b'r'; 64 * 1024];
            for _ in 0..SIZE / block.len() {
                if s.write_all(&block).await.is_err() {
                    return;
                }
            }
            done.notify_one();
            let _ = s.read(&mut head).await;
        }
    })
    .await;
    let (dir, gw) = gateway_in(Service::new("127.0.0.1", up.port())).await;
    // A client with a small receive window that reads nothing at first.
    let connect = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(gw).await.unwrap()
    };
    let read_all = |mut c: tokio::net::TcpStream| async move {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut got))
            .await
            .expect("the answer within 20 s")
            .unwrap();
        got
    };
    let body_len = |got: &[u8]| got.len() - got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4;

    // Buffered (the default): the upstream is done while the client has read nothing.
    let mut c = connect().await;
    c.write_all(b"GET /buffered HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), sent.notified())
        .await
        .expect("the upstream sent everything to the gateway before the client read");
    assert_eq!(body_len(&read_all(c).await), SIZE);

    // Passed through (`response_buffering = false`): the upstream waits for the client.
    let mut c = connect().await;
    c.write_all(b"GET /passed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_secs(1), sent.notified()).await;
    assert!(early.is_err(), "the upstream finished though the client read nothing");
    assert_eq!(body_len(&read_all(c).await), SIZE);
    tokio::time::timeout(Duration::from_secs(10), sent.notified())
        .await
        .expect("done once the client read");
    assert_eq!(dir.entries(), 0, "the buffer file is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_ahead_still_ends_with_body_filters_eof() {
    // A body of known length sent in three parts, 100 ms apart: read ahead of the client, and
    // body_filter still sees its last chunk as the last.
    let up = super::tests::raw_upstream(|mut s| async move {
        let mut head = [0u8; 4096];
        let _ = s.read(&mut head).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").await;
        for part in [&b"def"[..], b"ghi"] {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = s.write_all(part).await;
        }
        let _ = s.read(&mut head).await;
    })
    .await;
    let (_dir, gw) = gateway_in(Service::new("127.0.0.1", up.port())).await;
    for path in ["/buffered", "/passed"] {
        let sent = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Tail: 1\r\nConnection: close\r\n\r\n");
        let got = closed_after(gw, sent.as_bytes()).await;
        let text = String::from_utf8_lossy(&got);
        // With its Content-Length the client stops at the 9th byte: only a last chunk seen as
        // the last is changed.
        assert!(text.ends_with("\r\n\r\nabcdefGHI"), "{path}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_gives_up_reading_the_body_leaves_it_whole_for_the_upstream() {
    // The body arrives in three parts 100 ms apart; the plugin stops waiting after 50 ms.
    let (_dir, gw, _) = echo_gateway(BodyLimits::default(), |_| {}).await;
    let body = vec![b'p'; 3000];
    for path in ["/buffered", "/streamed"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nX-Impatient: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let answer = send_slowly(gw, &head, &body, 3, Duration::from_millis(100)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert_eq!(echo(&answer)["len"], body.len(), "{path}: the upstream got every byte");
    }
}
