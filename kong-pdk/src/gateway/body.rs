//! Bodies: the client's request body (read by plugins on demand, else streamed upstream) and
//! the response body, streamed chunk by chunk through `body_filter`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::Snapshot;
use crate::transaction::{BodyReader, Transaction};

/// An error inside a proxied body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of proxied requests and responses.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body of known bytes.
pub fn full(bytes: Bytes) -> ProxyBody {
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// The client's body, shared between the transaction (a plugin may read it) and the proxy
/// (which streams it upstream when no plugin did).
#[derive(Clone, Default)]
pub(super) struct IncomingSlot(Arc<Mutex<Option<Incoming>>>);

impl IncomingSlot {
    pub(super) fn new(body: Incoming) -> IncomingSlot {
        IncomingSlot(Arc::new(Mutex::new(Some(body))))
    }

    pub(super) fn take(&self) -> Option<Incoming> {
        self.0.lock().ok()?.take()
    }
}

impl BodyReader for IncomingSlot {
    fn read_to_end(&mut self, limit: usize) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send + '_>> {
        Box::pin(async move {
            let Some(body) = self.take() else {
                return Ok(Bytes::new());
            };
            let limited = http_body_util::Limited::new(body, limit);
            limited.collect().await.map(|c| c.to_bytes()).map_err(|e| e.to_string())
        })
    }
}

/// A body fed by a channel: the response body after `body_filter`.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|r| r.map(|r| r.map(Frame::data)))
    }
}

/// Where the response body comes from.
pub(super) enum Source {
    /// Known bytes: a plugin's exit, an error, or a buffered upstream body.
    Bytes(Bytes),
    /// The upstream's body, streamed.
    Upstream(Incoming),
}

/// Streams `source` through `body_filter` on a task, then runs `log`; returns the body the
/// client receives. Chunks flow through a small channel, so a slow client slows the upstream
/// read instead of buffering.
pub(super) fn filtered(snapshot: Arc<Snapshot>, mut tx: Transaction, source: Source) -> ProxyBody {
    let (tx_chunks, rx) = mpsc::channel::<Result<Bytes, BoxError>>(8);
    tokio::spawn(async move {
        let set = &snapshot.plugins;
        let send = |out: Bytes, tx_chunks: &mpsc::Sender<Result<Bytes, BoxError>>| {
            let tx_chunks = tx_chunks.clone();
            async move { out.is_empty() || tx_chunks.send(Ok(out)).await.is_ok() }
        };
        match source {
            Source::Bytes(bytes) => {
                let out = set.run_body_filter(&mut tx, bytes, true).await;
                send(out, &tx_chunks).await;
            }
            Source::Upstream(mut body) => loop {
                let (chunk, eof) = match body.frame().await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => (data, false),
                        Err(_) => continue,
                    },
                    Some(Err(e)) => {
                        let _ = tx_chunks.send(Err(Box::new(e))).await;
                        break;
                    }
                    None => (Bytes::new(), true),
                };
                let out = set.run_body_filter(&mut tx, chunk, eof).await;
                if tx.is_aborted() {
                    let _ = tx_chunks.send(Err("body_filter failed".into())).await;
                    break;
                }
                if !send(out, &tx_chunks).await || eof || tx.body_ended() {
                    break;
                }
            },
        }
        drop(tx_chunks);
        set.run_log(&mut tx).await;
    });
    ChannelBody { rx }.boxed()
}
