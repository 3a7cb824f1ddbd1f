//! Accepting connections without spinning: when `accept` fails for want of descriptors or
//! memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the listener pauses before trying again, as nginx
//! and axum do, instead of retrying in a loop that burns a core while no connection can be
//! taken. A connection that failed on its own (reset or aborted before it was accepted) costs
//! no pause.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long accepting pauses after a resource error.
pub(crate) const PAUSE: Duration = Duration::from_millis(100);

/// The next connection on `listener`, pausing [`PAUSE`] after each resource error.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                tracing::error!(target: "kong", "accept() failed: {e}; pausing accepts for {} ms", PAUSE.as_millis());
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}

/// Errors of the one connection being accepted, not of the listener or the process.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
