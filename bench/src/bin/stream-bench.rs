//! Load for `bench/stream.sh`: a TCP echo server, and two clients that measure a stream proxy
//! in front of it.
//!
//! ```text
//! stream-bench echo <listen address>
//! stream-bench bulk <address> <connections> <seconds> <message bytes>
//! stream-bench connect <address> <connections> <seconds>
//! ```
//!
//! `bulk`: each connection sends a message and reads its echo, again and again; prints MiB/s
//! each way. `connect`: each of `connections` loops opens a connection, sends 64 bytes, reads
//! them back and closes; prints sessions/s and the p99 of one session in ms.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: stream-bench echo <addr> | bulk <addr> <conns> <secs> <bytes> | connect <addr> <conns> <secs>";
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["echo", addr] => rt.block_on(echo(addr.to_string())),
        ["bulk", addr, conns, secs, bytes] => {
            rt.block_on(bulk(addr.to_string(), conns.parse()?, secs.parse()?, bytes.parse()?))
        }
        ["connect", addr, conns, secs] => rt.block_on(connect(addr.to_string(), conns.parse()?, secs.parse()?)),
        _ => Err(usage.into()),
    }
}

async fn echo(addr: String) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (mut tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let (mut r, mut w) = tcp.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

async fn bulk(addr: String, conns: usize, secs: u64, bytes: usize) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(&addr).await.ok()?;
            let _ = tcp.set_nodelay(true);
            let message = vec![7u8; bytes];
            let mut back = vec![0u8; bytes];
            let mut moved = 0u64;
            while Instant::now() < deadline {
                let (mut r, mut w) = tcp.split();
                let (sent, got) = tokio::join!(w.write_all(&message), r.read_exact(&mut back));
                if sent.is_err() || got.is_err() {
                    return None;
                }
                moved += bytes as u64;
            }
            Some(moved)
        }));
    }
    let start = Instant::now();
    let mut total = 0u64;
    for t in tasks {
        total += t.await?.ok_or("a connection failed")?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:.1} MiB/s each way", total as f64 / secs / (1 << 20) as f64);
    Ok(())
}

async fn connect(addr: String, conns: usize, secs: u64) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let payload = [5u8; 64];
            let mut back = [0u8; 64];
            while Instant::now() < deadline {
                let t = Instant::now();
                let Ok(mut tcp) = TcpStream::connect(&addr).await else {
                    return None;
                };
                let _ = tcp.set_nodelay(true);
                if tcp.write_all(&payload).await.is_err() || tcp.read_exact(&mut back).await.is_err() {
                    return None;
                }
                drop(tcp);
                times.push(t.elapsed());
            }
            Some(times)
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?.ok_or("a session failed")?);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
    println!(
        "{:.0} sessions/s, p99 {:.2} ms",
        all.len() as f64 / secs,
        p99.as_secs_f64() * 1000.0
    );
    Ok(())
}
