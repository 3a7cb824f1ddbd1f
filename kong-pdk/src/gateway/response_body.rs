//! A route's `response_buffering` (Kong's default, nginx's `proxy_buffering on`): the upstream's
//! body is read as fast as the upstream sends it, whatever the client's pace, so a slow client
//! never holds the upstream's connection. What the client has not taken yet waits in memory
//! (64 KiB, about nginx's `proxy_buffers`), then in an unlinked temporary file (up to 1 GiB,
//! nginx's `proxy_max_temp_file_size`), past which the upstream waits for the client.
//!
//! A body that is already whole when the head arrives (most small answers) is passed on as
//! it is: reading ahead costs a task only for bodies still arriving.

use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use super::body::{BoxError, ProxyBody};
use super::upstream::UpstreamBody;

/// What the client has not taken yet, held in memory before a file is used.
const MEMORY: usize = 64 * 1024;
/// The most held in the temporary file (nginx's `proxy_max_temp_file_size`).
const FILE: u64 = 1 << 30;
/// The most read back from the file at once.
const READ_CHUNK: usize = 64 * 1024;

/// The upstream's body on its way to the client.
pub(super) enum Upstream {
    /// As the upstream sends it (what a first look took out waits in front: a frame, or the
    /// error the body failed with, which the body would not give again).
    Direct(Option<Result<Frame<Bytes>, BoxError>>, UpstreamBody),
    /// Read ahead of the client by a task of its own.
    Ahead(ProxyBody),
}

impl Upstream {
    /// The body, read ahead of the client (`response_buffering`) unless it is already whole.
    /// `temp_dir` is where a large one waits; `tasks` runs the reading.
    pub(super) fn buffered(mut body: UpstreamBody, temp_dir: &Path, tasks: &TaskTracker) -> Upstream {
        if body.is_end_stream() {
            return Upstream::Direct(None, body);
        }
        // A look without waiting: a body that came with its head ends here. (The poll leaves
        // no waker behind that matters: the next poll registers the real one.)
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) if body.is_end_stream() => return Upstream::Direct(Some(Ok(frame)), body),
            Poll::Ready(Some(Ok(frame))) => Some(frame),
            Poll::Ready(None) => return Upstream::Direct(None, body),
            // The client gets the error at its first poll: nothing to read ahead.
            Poll::Ready(Some(Err(e))) => return Upstream::Direct(Some(Err(e)), body),
            Poll::Pending => None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            readable: Notify::new(),
            writable: Notify::new(),
            gone: Notify::new(),
            temp_dir: temp_dir.to_owned(),
        });
        let first = first.and_then(|f| f.into_data().ok());
        tasks.spawn(read_ahead(body, first, shared.clone()));
        Upstream::Ahead(reader(shared))
    }
}

impl Body for Upstream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Upstream::Direct(first, body) => match first.take() {
                Some(frame) => Poll::Ready(Some(frame)),
                None => Pin::new(body).poll_frame(cx),
            },
            Upstream::Ahead(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Upstream::Direct(first, body) => first.is_none() && body.is_end_stream(),
            Upstream::Ahead(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Upstream::Direct(None, body) => body.size_hint(),
            Upstream::Direct(Some(_), _) => SizeHint::default(),
            Upstream::Ahead(body) => body.size_hint(),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Something to read, or the end.
    readable: Notify,
    /// Room to write, or the reader gone.
    writable: Notify,
    /// The reader gone: the upstream is not waited for any more.
    gone: Notify,
    temp_dir: std::path::PathBuf,
}

#[derive(Default)]
struct State {
    memory: VecDeque<Bytes>,
    in_memory: usize,
    file: Option<Arc<std::fs::File>>,
    /// Bytes written to the file, and read back from it.
    written: u64,
    read: u64,
    /// The body ended (`Ok`) or failed (the error, until the reader takes it).
    end: Option<Result<(), BoxError>>,
    /// The reader handed out the end.
    ended: bool,
    /// The client's side was dropped: stop reading the upstream.
    reader_gone: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the end, unless one is recorded already.
    fn finish(&self, end: Result<(), BoxError>) {
        let mut s = self.lock();
        if s.end.is_none() && !s.ended {
            s.end = Some(end);
        }
        drop(s);
        self.readable.notify_one();
    }
}

/// Makes sure the reader learns of an end, however the reading stops (a panic, a runtime
/// shutting down): without one it would wait forever.
struct Finishes(Arc<Shared>);

impl Drop for Finishes {
    fn drop(&mut self) {
        self.0.finish(Err("the upstream body was cut short".into()));
    }
}

/// Reads `body` to its end into `shared`, `first` (a frame already read) first; stops at once
/// when the client's side is gone, even while the upstream is silent.
async fn read_ahead(mut body: UpstreamBody, first: Option<Bytes>, shared: Arc<Shared>) {
    let finishes = Finishes(shared.clone());
    if let Some(data) = first
        && !hold(&shared, data, body.is_end_stream()).await
    {
        return;
    }
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = shared.gone.notified() => return,
        };
        match frame {
            Some(Ok(frame)) => {
                // The last frame of a body of known length carries the end with it, so the
                // client's side knows it is the last (body_filter's `eof`).
                let last = body.is_end_stream();
                if let Ok(data) = frame.into_data()
                    && !hold(&shared, data, last).await
                {
                    return;
                }
                if last {
                    // `hold` recorded the end with the data (trailers: here).
                    return finishes.0.finish(Ok(()));
                }
            }
            Some(Err(e)) => return shared.finish(Err(e)),
            None => return shared.finish(Ok(())),
        }
    }
}

/// Keeps `data` for the reader: in memory while there is room and the file has nothing
/// unread (order is kept), else at the file's end; `last` records the end with it. Waits
/// while the file is full; `false` when the reader is gone or the file failed.
async fn hold(shared: &Shared, data: Bytes, last: bool) -> bool {
    loop {
        let (file, at) = {
            let mut s = shared.lock();
            if s.reader_gone {
                return false;
            }
            if s.written == s.read && s.written > 0 {
                // All the file held was read: it is written from its start again, so it never
                // grows past the most that waited at once.
                s.written = 0;
                s.read = 0;
            }
            let file_unread = s.written - s.read;
            if file_unread == 0 && s.in_memory + data.len() <= MEMORY {
                s.in_memory += data.len();
                s.memory.push_back(data);
                if last {
                    s.end = Some(Ok(()));
                }
                drop(s);
                shared.readable.notify_one();
                return true;
            }
            if file_unread + data.len() as u64 > FILE {
                None
            } else {
                if s.file.is_none() {
                    match super::request_body::temp_file(&shared.temp_dir) {
                        Ok(f) => s.file = Some(Arc::new(f)),
                        Err(e) => {
                            tracing::error!(target: "kong", "could not open a response buffer file in {}: {e}", shared.temp_dir.display());
                            drop(s);
                            shared.finish(Err(Box::new(e)));
                            return false;
                        }
                    }
                }
                s.file.clone().map(|f| (f, s.written))
            }
        }
        .unzip();
        let (Some(file), Some(at)) = (file, at) else {
            // The file is full: wait for the client to take some.
            shared.writable.notified().await;
            continue;
        };
        let len = data.len() as u64;
        let wrote = tokio::task::spawn_blocking(move || write_all_at(&file, &data, at))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        if let Err(e) = wrote {
            tracing::error!(target: "kong", "could not write a response buffer file: {e}");
            shared.finish(Err(Box::new(e)));
            return false;
        }
        let mut s = shared.lock();
        s.written += len;
        if last {
            s.end = Some(Ok(()));
        }
        drop(s);
        shared.readable.notify_one();
        return true;
    }
}

#[cfg(unix)]
fn write_all_at(file: &std::fs::File, data: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, at)
}

#[cfg(windows)]
fn write_all_at(file: &std::fs::File, mut data: &[u8], mut at: u64) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, data, at)?;
        data = &data[n..];
        at += n as u64;
    }
    Ok(())
}

/// Marks the reader gone when the client's side is dropped.
struct ReaderGuard(Arc<Shared>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.lock().reader_gone = true;
        self.0.writable.notify_one();
        self.0.gone.notify_one();
    }
}

/// The client's side: memory first, then the file, then the end.
fn reader(shared: Arc<Shared>) -> ProxyBody {
    let guard = ReaderGuard(shared.clone());
    let frames = futures_util::stream::unfold(Some(guard), |guard| async move {
        let guard = guard?;
        let shared = &guard.0;
        loop {
            let from_file = {
                let mut s = shared.lock();
                if let Some(data) = s.memory.pop_front() {
                    s.in_memory -= data.len();
                    drop(s);
                    shared.writable.notify_one();
                    return Some((Ok(Frame::data(data)), Some(guard)));
                }
                if s.written > s.read {
                    let len = (s.written - s.read).min(READ_CHUNK as u64) as usize;
                    s.file.clone().map(|f| (f, s.read, len))
                } else {
                    match &s.end {
                        _ if s.ended => return None,
                        Some(Ok(())) => {
                            s.ended = true;
                            return None;
                        }
                        Some(Err(_)) => {
                            s.ended = true;
                            let Some(Err(e)) = s.end.take() else { return None };
                            return Some((Err(e), None));
                        }
                        None => None,
                    }
                }
            };
            let Some((file, at, len)) = from_file else {
                shared.readable.notified().await;
                continue;
            };
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; len];
                super::request_body::read_exact_at(&file, &mut buf, at).map(|()| Bytes::from(buf))
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
            return match read {
                Ok(data) => {
                    shared.lock().read += data.len() as u64;
                    shared.writable.notify_one();
                    Some((Ok(Frame::data(data)), Some(guard)))
                }
                Err(e) => Some((Err(Box::new(e) as BoxError), None)),
            };
        }
    });
    AheadBody {
        frames: Box::pin(futures_util::StreamExt::fuse(frames)),
        shared,
    }
    .boxed_unsync()
}

type Frames = Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send>>;

/// The client's side as a body that knows when it has handed out the last frame.
struct AheadBody {
    frames: Frames,
    shared: Arc<Shared>,
}

impl Body for AheadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.frames.as_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock();
        s.ended || (s.memory.is_empty() && s.written == s.read && matches!(s.end, Some(Ok(()))))
    }
}
