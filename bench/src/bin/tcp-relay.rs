//! The floor of a proxy on tokio, for `bench/http.sh`: every client connection gets a
//! connection of its own to the upstream, and bytes are copied both ways without looking at
//! them. A keep-alive HTTP request through it costs the same reads and writes as through an
//! HTTP proxy with pooled upstream connections (one read and one write on each side) and no
//! HTTP work at all, so no HTTP proxy on tokio can be faster on the same machine.
//!
//! ```text
//! tcp-relay <listen address> <upstream address>
//! ```

use tokio::net::{TcpListener, TcpStream};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: tcp-relay <listen address> <upstream address>".into());
    };
    // One thread, as kong-gateway with one worker.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let Ok(mut up) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    })
}
