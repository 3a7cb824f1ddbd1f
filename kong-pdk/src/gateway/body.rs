//! The response body, streamed chunk by chunk through `body_filter` (the request body is in
//! [`request_body`](super::request_body)).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

use tokio_util::task::TaskTracker;

use super::Snapshot;
use crate::runloop::{self, ResponseBody};
use crate::transaction::Transaction;

/// An error inside a proxied body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of proxied requests and responses.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body of known bytes. An empty one is free: its box holds nothing.
pub fn full(bytes: Bytes) -> ProxyBody {
    if bytes.is_empty() {
        return http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
    }
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// nginx's idle timers (`client_body_timeout`, `proxy_read_timeout`): the longest wait
/// between two reads. The timer is allocated on the first wait only and reset, not
/// reallocated, after each read.
pub(super) struct IdleTimer {
    timeout: std::time::Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `waiting` counts from the current wait (a read since makes it stale).
    armed: bool,
}

impl IdleTimer {
    pub(super) fn new(timeout: std::time::Duration) -> IdleTimer {
        IdleTimer {
            timeout,
            waiting: None,
            armed: false,
        }
    }

    /// A read came back pending: whether the wait has now lasted the whole timeout (the
    /// timer then wakes `cx` when it will have).
    pub(super) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            waiting.as_mut().reset(deadline);
            self.armed = true;
        }
        waiting.as_mut().poll(cx).is_ready()
    }

    /// A read happened: the next wait gets the whole timeout again.
    pub(super) fn read(&mut self) {
        self.armed = false;
    }
}

/// Where the response body comes from: known bytes or the upstream's body, streamed.
pub(super) type Source = ResponseBody<super::response_body::Upstream>;

/// Runs `log` on a task of its own, after the client has the response: the one place a
/// proxied request's log starts. `tasks` is the proxy's, which shutdown waits for.
pub(super) fn spawn_log(tasks: &TaskTracker, snapshot: Arc<Snapshot>, mut tx: Box<Transaction>) {
    tasks.spawn(async move { runloop::log(&snapshot.plugins, &mut tx).await });
}

/// What the response body needs while it streams: the transaction (for `body_filter` and
/// `log`) and the snapshot whose plugins run.
struct Streaming {
    tasks: TaskTracker,
    snapshot: Arc<Snapshot>,
    tx: Box<Transaction>,
    source: Source,
    /// Whether any plugin of this request has `body_filter` / `log`.
    filter: bool,
    log: bool,
}

impl Streaming {
    /// The end of the response: `log` runs on its own task, after the client has the body.
    fn finish(self) {
        if self.log {
            spawn_log(&self.tasks, self.snapshot, self.tx);
        }
    }
}

type Filtering = Pin<Box<dyn Future<Output = (Streaming, Bytes, bool)> + Send>>;

/// The response body: each chunk of the source runs through `body_filter` as the client's
/// connection asks for it, so a slow client slows the upstream read instead of buffering, and
/// a chunk that is ready goes out in the same write as the response head. Without
/// `body_filter` plugins chunks pass through untouched.
struct Filtered {
    /// Where a body_filter call cut off by the client finishes.
    tasks: TaskTracker,
    streaming: Option<Streaming>,
    filtering: Option<Filtering>,
}

impl Body for Filtered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(filtering) = this.filtering.as_mut() {
                let (streaming, out, eof) = ready!(filtering.as_mut().poll(cx));
                this.filtering = None;
                if streaming.tx.is_aborted() {
                    streaming.finish();
                    return Poll::Ready(Some(Err("body_filter failed".into())));
                }
                let end = eof || streaming.tx.body_ended();
                if end {
                    streaming.finish();
                } else {
                    this.streaming = Some(streaming);
                }
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                if end {
                    return Poll::Ready(None);
                }
                continue;
            }
            let Some(streaming) = this.streaming.as_mut() else {
                return Poll::Ready(None);
            };
            let (chunk, eof) = match &mut streaming.source {
                ResponseBody::Bytes(bytes) => (std::mem::take(bytes), true),
                ResponseBody::Upstream(body) => match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        // The last chunk of a body of known length is the end: hyper writes a
                        // length-delimited answer and stops polling once the length is sent,
                        // so body_filter would never see `eof` after it.
                        Ok(data) => {
                            let end = body.is_end_stream();
                            (data, end)
                        }
                        // Trailers are not forwarded.
                        Err(_) => continue,
                    },
                    Some(Err(e)) => {
                        if let Some(s) = this.streaming.take() {
                            s.finish();
                        }
                        return Poll::Ready(Some(Err(e)));
                    }
                    None => (Bytes::new(), true),
                },
            };
            if !streaming.filter {
                if eof && let Some(s) = this.streaming.take() {
                    s.finish();
                }
                if !chunk.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if eof {
                    return Poll::Ready(None);
                }
                continue;
            }
            let Some(mut streaming) = this.streaming.take() else {
                return Poll::Ready(None);
            };
            this.filtering = Some(Box::pin(async move {
                let out = runloop::body_chunk(&streaming.snapshot.plugins, &mut streaming.tx, chunk, eof).await;
                (streaming, out, eof)
            }));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.streaming.is_none() && self.filtering.is_none()
    }
}

impl Drop for Filtered {
    fn drop(&mut self) {
        // The client went away mid-body: Kong still logs the request. A body_filter call under
        // way owns the transaction, so it finishes first, on a task of its own.
        if let Some(s) = self.streaming.take() {
            s.finish();
        } else if let Some(filtering) = self.filtering.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let tasks = self.tasks.clone();
            tasks.spawn(async move { filtering.await.0.finish() });
        }
    }
}

/// The body the client receives: `source` through `body_filter`, then `log`.
/// `filter` and `log` say whether any plugin of the request has `body_filter` / `log`.
pub(super) fn filtered(
    tasks: &TaskTracker,
    snapshot: Arc<Snapshot>,
    tx: Box<Transaction>,
    source: Source,
    filter: bool,
    log: bool,
) -> ProxyBody {
    Filtered {
        tasks: tasks.clone(),
        streaming: Some(Streaming {
            tasks: tasks.clone(),
            snapshot,
            tx,
            source,
            filter,
            log,
        }),
        filtering: None,
    }
    .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Waker};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body::Body;
    use serde_json::json;
    use tokio::sync::Notify;

    use tokio_util::task::TaskTracker;

    use super::filtered;
    use crate::executor::PluginEntity;
    use crate::pdk::NodeInfo;
    use crate::prelude::*;
    use crate::registry::Plugins;
    use crate::runloop::ResponseBody;
    use crate::transaction::{ClientConn, Transaction};

    static RELEASE: Notify = Notify::const_new();
    static LOGGED: Notify = Notify::const_new();

    /// A body_filter that waits to be released, and a log phase that says it ran.
    #[plugin(priority = 1, version = "1.0.0", name = "gw-test-slow-filter")]
    struct SlowFilter {}

    #[handler]
    impl Handler for SlowFilter {
        async fn body_filter(&self, _kong: &mut Kong<BodyFilter>) -> crate::Result {
            RELEASE.notified().await;
            Ok(())
        }

        async fn log(&self, _kong: &mut Kong<Log>) -> crate::Result {
            LOGGED.notify_one();
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_client_gone_during_body_filter_is_still_logged() {
        let plugins = Arc::new(Plugins::builder(NodeInfo::default()).with::<SlowFilter>().build());
        let entity = PluginEntity::new("gw-test-slow-filter", json!({}));
        let snap = super::super::tests::snapshot(&plugins, vec![], vec![entity]).await;
        let tx = Transaction::handshake(ClientConn::default(), 8000, plugins.node_arc());
        let mut body = filtered(
            &TaskTracker::new(),
            Arc::new(snap),
            Box::new(tx),
            ResponseBody::Bytes(Bytes::from("abc")),
            true,
            true,
        );
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            Pin::new(&mut body).poll_frame(&mut cx).is_pending(),
            "body_filter waits"
        );
        drop(body);
        RELEASE.notify_one();
        tokio::time::timeout(Duration::from_secs(5), LOGGED.notified())
            .await
            .expect("log runs after the body_filter call finishes");
    }
}
