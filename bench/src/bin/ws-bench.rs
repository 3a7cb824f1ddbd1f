//! WebSocket load for `bench/ws.sh`, on one thread:
//!
//! ```text
//! ws-bench echo <listen address>                       # an echo server (text and binary)
//! ws-bench load <ws url> <connections> <bytes> <secs>  # closed-loop echo round trips
//! ws-bench idle <ws url> <connections>                 # opens them, prints "open", holds
//! ```
//!
//! `load` keeps one message in flight per connection: send, wait for its echo, send again.
//! It prints `<round trips per second> <p99 in ms> <errors>`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["echo", listen] => rt.block_on(echo(listen)),
        ["load", url, connections, bytes, secs] => rt.block_on(load(
            url,
            connections.parse()?,
            bytes.parse()?,
            Duration::from_secs(secs.parse()?),
        )),
        ["idle", url, connections] => rt.block_on(idle(url, connections.parse()?)),
        _ => Err(
            "usage: ws-bench echo <addr> | load <url> <connections> <bytes> <secs> | idle <url> <connections>".into(),
        ),
    }
}

async fn echo(listen: &str) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn open(url: &str) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>> {
    let addr = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or("a ws:// url")?;
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tokio_tungstenite::client_async(url, tcp).await?.0)
}

async fn load(url: &str, connections: usize, bytes: usize, length: Duration) -> Result<()> {
    let payload = "x".repeat(bytes);
    let end = Instant::now() + length;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut ws = open(url).await?;
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let sent = Instant::now();
                if ws.send(Message::text(payload.as_str())).await.is_err() {
                    errors += 1;
                    break;
                }
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.len() == payload.len() => latencies.push(sent.elapsed()),
                    _ => {
                        errors += 1;
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort();
    let p99 = all
        .get(all.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    println!(
        "{:.0} {:.2} {errors}",
        all.len() as f64 / length.as_secs_f64(),
        p99.as_secs_f64() * 1000.0
    );
    Ok(())
}

async fn idle(url: &str, connections: usize) -> Result<()> {
    let mut held = Vec::with_capacity(connections);
    for _ in 0..connections {
        held.push(open(url).await?);
    }
    println!("open");
    // Held until the script kills this process.
    std::future::pending::<()>().await;
    drop(held);
    Ok(())
}
