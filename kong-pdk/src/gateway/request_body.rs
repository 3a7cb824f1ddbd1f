//! The client's request body on its way upstream, held to nginx's limits.
//!
//! - [`ClientBody`]: the body as it arrives, with `client_body_timeout` between two reads and
//!   `client_max_body_size` in all; a failure is remembered for the answer (408, 413, 400).
//! - [`IncomingSlot`]: the body shared by the plugins (which may read it) and the proxy.
//! - [`read_whole`]: a route's `request_buffering` (nginx's `proxy_request_buffering on`): the
//!   whole body before the upstream is called, in memory up to `client_body_buffer_size`, in
//!   an unlinked temporary file past it.
//! - [`Paced`]: the body as the upstream takes it, so that the service's `write_timeout` runs
//!   between two writes and its `read_timeout` from the moment the body is all sent.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{BoxError, ProxyBody};
use crate::transaction::BodyReader;

/// nginx's limits on a client's request body, and where bodies past the memory buffer are
/// spooled (Kong's `client_body_buffer_size`, `nginx_http_client_max_body_size`,
/// `nginx_http_client_body_timeout`; `<prefix>/client_body_temp` under `kong start`).
///
/// ```
/// use std::time::Duration;
/// use kong_pdk::gateway::BodyLimits;
///
/// let limits = BodyLimits {
///     max_size: 10 << 20,
///     timeout: Duration::from_secs(10),
///     ..BodyLimits::default()
/// };
/// assert_eq!(limits.buffer_size, 8 * 1024);
/// ```
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// `client_body_buffer_size`: a body up to this size is held in memory; a larger one goes
    /// to a temporary file (8 KiB by default). Also what `kong.request.get_raw_body()` reads.
    pub buffer_size: usize,
    /// `client_max_body_size`: a larger body is answered 413 (`0`, the default: no limit).
    pub max_size: u64,
    /// `client_body_timeout`: the longest wait between two reads of the body; then 408
    /// (60 s by default).
    pub timeout: Duration,
    /// Where bodies past `buffer_size` are written (the system's temporary directory by
    /// default). Each file is removed as soon as it is opened: nothing is left behind.
    pub temp_dir: PathBuf,
}

impl Default for BodyLimits {
    fn default() -> BodyLimits {
        BodyLimits {
            buffer_size: crate::pdk::request::CLIENT_BODY_BUFFER_SIZE,
            max_size: 0,
            timeout: Duration::from_secs(60),
            temp_dir: std::env::temp_dir(),
        }
    }
}

/// Why a client's body could not be read, and nginx's answer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFailure {
    /// Nothing arrived for `client_body_timeout`: 408.
    Timeout = 1,
    /// Past `client_max_body_size`: 413.
    TooLarge = 2,
    /// Broken framing (a bad chunk size) or a connection closed mid-body: 400.
    Invalid = 3,
    /// The temporary file could not be written: 500.
    Io = 4,
}

impl BodyFailure {
    /// The status and Kong's message for it.
    pub(super) fn answer(self) -> (u16, &'static str) {
        match self {
            BodyFailure::Timeout => (408, "Request timeout"),
            BodyFailure::TooLarge => (413, "Payload too large"),
            BodyFailure::Invalid => (400, "Bad request"),
            BodyFailure::Io => (500, "An unexpected error occurred"),
        }
    }

    fn from_u8(v: u8) -> Option<BodyFailure> {
        Some(match v {
            1 => BodyFailure::Timeout,
            2 => BodyFailure::TooLarge,
            3 => BodyFailure::Invalid,
            4 => BodyFailure::Io,
            _ => return None,
        })
    }
}

impl std::fmt::Display for BodyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyFailure::Timeout => "client timed out sending the request body",
            BodyFailure::TooLarge => "client intended to send too large body",
            BodyFailure::Invalid => "client sent an invalid or incomplete body",
            BodyFailure::Io => "the request body could not be buffered to a temporary file",
        })
    }
}

impl std::error::Error for BodyFailure {}

/// The client's body as it arrives: `client_body_timeout` between two reads (the timer is
/// allocated on the first wait only) and `client_max_body_size` over all of it.
pub(super) struct ClientBody {
    inner: Incoming,
    max_size: u64,
    received: u64,
    idle: super::body::IdleTimer,
    failed: Arc<AtomicU8>,
}

impl ClientBody {
    fn fail(&mut self, failure: BodyFailure) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failed.store(failure as u8, Ordering::Relaxed);
        Poll::Ready(Some(Err(Box::new(failure))))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.failed.load(Ordering::Relaxed) != 0 {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending if this.idle.expired(cx) => this.fail(BodyFailure::Timeout),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.read();
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.max_size > 0 && this.received > this.max_size {
                        return this.fail(BodyFailure::TooLarge);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => this.fail(BodyFailure::Invalid),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's body, shared between the transaction (a plugin may read it) and the proxy
/// (which sends it upstream). A read that stops at its limit leaves what it read here, ahead
/// of the rest: the body stays whole for a later read or for the upstream.
#[derive(Clone)]
pub(super) struct IncomingSlot {
    unread: Arc<Mutex<Unread>>,
    /// The body's failure, if reading it failed ([`BodyFailure`] as a number; 0: none).
    failed: Arc<AtomicU8>,
    buffer_size: usize,
}

/// What of the body has not been handed out: chunks already read, then the connection's
/// rest; or, once buffered whole to a file, that file.
#[derive(Default)]
pub(super) struct Unread {
    pub(super) read: Vec<Bytes>,
    pub(super) rest: Option<ClientBody>,
    spooled: Option<Arc<Spooled>>,
}

impl IncomingSlot {
    pub(super) fn new(body: Incoming, limits: &BodyLimits) -> IncomingSlot {
        let failed = Arc::new(AtomicU8::new(0));
        let rest = ClientBody {
            inner: body,
            max_size: limits.max_size,
            received: 0,
            idle: super::body::IdleTimer::new(limits.timeout),
            failed: failed.clone(),
        };
        IncomingSlot {
            unread: Arc::new(Mutex::new(Unread {
                read: Vec::new(),
                rest: Some(rest),
                spooled: None,
            })),
            failed,
            buffer_size: limits.buffer_size,
        }
    }

    pub(super) fn take(&self) -> Unread {
        self.unread
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default()
    }

    fn put_back(&self, unread: Unread) {
        if let Ok(mut u) = self.unread.lock() {
            *u = unread;
        }
    }

    /// Why reading the body failed, if it did (a plugin's read, the buffering, or the
    /// upstream's stream).
    pub(super) fn failure(&self) -> Option<BodyFailure> {
        BodyFailure::from_u8(self.failed.load(Ordering::Relaxed))
    }

    /// The body was buffered to `file`: later reads (`get_raw_body` in `response`) find it
    /// there.
    pub(super) fn spooled(&self, file: Arc<Spooled>) {
        self.put_back(Unread {
            spooled: Some(file),
            ..Unread::default()
        });
    }
}

impl Unread {
    /// The body as one stream: the chunks read, then the rest.
    pub(super) fn into_body(self) -> ProxyBody {
        use futures_util::StreamExt;
        let read = futures_util::stream::iter(self.read.into_iter().map(|b| Ok::<_, BoxError>(Frame::data(b))));
        match self.rest {
            Some(rest) if self.spooled.is_none() => {
                http_body_util::StreamBody::new(read.chain(http_body_util::BodyStream::new(rest))).boxed_unsync()
            }
            _ => http_body_util::StreamBody::new(read).boxed_unsync(),
        }
    }

    /// Whether nothing is left at all.
    pub(super) fn is_empty(&self) -> bool {
        self.read.is_empty() && self.spooled.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }
}

impl BodyReader for IncomingSlot {
    fn read_to_end(
        &mut self,
        limit: usize,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Bytes>, String>> + Send + '_>> {
        Box::pin(async move {
            let mut held = Held {
                slot: self,
                unread: self.take(),
            };
            if let Some(file) = held.unread.spooled.clone() {
                if file.len > limit as u64 {
                    return Ok(None);
                }
                return file.read_all().await.map(Some).map_err(|e| e.to_string());
            }
            let unread = &mut held.unread;
            let mut size: usize = unread.read.iter().map(Bytes::len).sum();
            if size <= limit {
                while let Some(rest) = unread.rest.as_mut() {
                    match rest.frame().await {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                size += data.len();
                                unread.read.push(data);
                                if size > limit {
                                    break;
                                }
                            }
                        }
                        // What was read stays for the upstream; the answer is the failure's
                        // (408, 413, 400).
                        Some(Err(e)) => return Err(e.to_string()),
                        None => unread.rest = None,
                    }
                }
            }
            if size > limit {
                // Over the limit: no more is read, and the body stays whole for the upstream.
                return Ok(None);
            }
            // Read whole: the transaction keeps it from now on, the slot nothing.
            let read = std::mem::take(&mut unread.read);
            let mut all = BytesMut::with_capacity(size);
            for chunk in read {
                all.extend_from_slice(&chunk);
            }
            Ok(Some(all.freeze()))
        })
    }

    fn buffer_size(&self) -> usize {
        self.buffer_size
    }
}

/// What a read took out of the slot, put back however the read ends (a plugin that gives up
/// waiting drops it mid-read): the body is never lost on the way to the upstream.
struct Held<'a> {
    slot: &'a IncomingSlot,
    unread: Unread,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.slot.put_back(std::mem::take(&mut self.unread));
    }
}

/// A request body buffered whole, as [`read_whole`] left it.
pub(super) enum Buffered {
    /// Up to `client_body_buffer_size`.
    Memory(Bytes),
    /// Larger: in a temporary file.
    File(Arc<Spooled>),
}

/// A body written to a temporary file that has no name any more (removed once opened, as
/// nginx does with its `client_body_temp` files): the file goes when the last reader does.
pub(super) struct Spooled {
    file: Arc<std::fs::File>,
    len: u64,
}

/// The most a temporary file is written or read at once.
const FILE_CHUNK: usize = 64 * 1024;

/// A new temporary file in `dir`, already unlinked: it goes when its last handle does.
pub(super) fn temp_file(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{:010}.{}", serial, std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

impl Spooled {
    /// `len` bytes at `offset`.
    async fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; len];
            read_exact_at(&file, &mut buf, offset)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// The whole body, for a plugin that asked for it with a limit it fits.
    async fn read_all(&self) -> std::io::Result<Bytes> {
        let len = usize::try_from(self.len).map_err(std::io::Error::other)?;
        self.read_at(0, len).await
    }

    /// The body as a stream, from its start (once per try: a retry sends it again).
    pub(super) fn body(self: &Arc<Self>) -> ProxyBody {
        FileBody {
            spooled: self.clone(),
            offset: 0,
            reading: None,
        }
        .boxed_unsync()
    }
}

#[cfg(unix)]
pub(super) fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
pub(super) fn read_exact_at(file: &std::fs::File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

type Reading = Pin<Box<dyn Future<Output = std::io::Result<Bytes>> + Send>>;

/// A spooled body read back in chunks of [`FILE_CHUNK`], each as the upstream asks for it.
struct FileBody {
    spooled: Arc<Spooled>,
    offset: u64,
    reading: Option<Reading>,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.offset >= this.spooled.len {
            return Poll::Ready(None);
        }
        let reading = this.reading.get_or_insert_with(|| {
            let spooled = this.spooled.clone();
            let (offset, len) = (
                this.offset,
                (this.spooled.len - this.offset).min(FILE_CHUNK as u64) as usize,
            );
            Box::pin(async move { spooled.read_at(offset, len).await })
        });
        let read = std::task::ready!(reading.as_mut().poll(cx));
        this.reading = None;
        Poll::Ready(Some(match read {
            Ok(chunk) => {
                this.offset += chunk.len() as u64;
                Ok(Frame::data(chunk))
            }
            Err(e) => Err(Box::new(e)),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.spooled.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.spooled.len - self.offset)
    }
}

/// Known bytes as a body of [`FILE_CHUNK`] frames with their exact length: the upstream's
/// `write_timeout` then runs between writes of a large body, not only after all of it.
pub(super) fn in_frames(bytes: Bytes) -> ProxyBody {
    if bytes.len() <= FILE_CHUNK {
        return super::body::full(bytes);
    }
    InFrames(bytes).boxed_unsync()
}

struct InFrames(Bytes);

impl Body for InFrames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.0.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.0.len().min(FILE_CHUNK);
        Poll::Ready(Some(Ok(Frame::data(self.0.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.len() as u64)
    }
}

/// Reads the rest of the body (`request_buffering`): in memory while it fits `buffer_size`,
/// else into a temporary file in `temp_dir`, written 64 KiB at a time. A failure is the
/// client's (408, 413, 400) or the file's (500).
pub(super) async fn read_whole(mut unread: Unread, limits: &BodyLimits) -> Result<Buffered, BodyFailure> {
    let mut memory = BytesMut::new();
    let mut file: Option<(Arc<std::fs::File>, u64)> = None;
    let mut pending: Vec<Bytes> = std::mem::take(&mut unread.read);
    loop {
        for chunk in pending.drain(..) {
            memory.extend_from_slice(&chunk);
        }
        let spill = match &file {
            Some(_) => memory.len() >= FILE_CHUNK,
            None => memory.len() > limits.buffer_size,
        };
        let ended = unread.rest.is_none();
        if spill || (ended && file.is_some() && !memory.is_empty()) {
            let (f, written) = match file.take() {
                Some(open) => open,
                None => {
                    let created = temp_file(&limits.temp_dir).map_err(|e| {
                        tracing::error!(target: "kong", "could not open a client body temporary file in {}: {e}", limits.temp_dir.display());
                        BodyFailure::Io
                    })?;
                    (Arc::new(created), 0)
                }
            };
            let chunk = memory.split().freeze();
            let len = chunk.len() as u64;
            let writer = f.clone();
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                (&*writer).write_all(&chunk)
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| {
                tracing::error!(target: "kong", "could not write a client body temporary file: {e}");
                BodyFailure::Io
            })?;
            file = Some((f, written + len));
        }
        if ended {
            break;
        }
        let Some(rest) = unread.rest.as_mut() else { break };
        match rest.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    pending.push(data);
                }
            }
            Some(Err(e)) => {
                return Err(e.downcast_ref::<BodyFailure>().copied().unwrap_or(BodyFailure::Invalid));
            }
            None => unread.rest = None,
        }
    }
    Ok(match file {
        Some((file, len)) => Buffered::File(Arc::new(Spooled { file, len })),
        None => Buffered::Memory(memory.freeze()),
    })
}

/// Where the upstream is in taking the request body, for the timers of the wait for its
/// answer: nginx's `proxy_send_timeout` between two writes, `proxy_read_timeout` once the
/// body is all sent. Waits for the client (an unbuffered body) count for neither.
#[derive(Debug)]
pub(super) struct Pace(Mutex<(Stage, Instant)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Something was handed to the connection to write, at the instant.
    Writing,
    /// The connection asked for more and waits for the client.
    Client,
    /// All of the body was handed over, at the instant.
    Sent,
}

impl Pace {
    pub(super) fn new() -> Arc<Pace> {
        Arc::new(Pace(Mutex::new((Stage::Writing, Instant::now()))))
    }

    /// A new try: the head is about to be written.
    pub(super) fn restart(&self) {
        self.set(Stage::Writing);
    }

    fn set(&self, stage: Stage) {
        if let Ok(mut s) = self.0.lock() {
            *s = (stage, Instant::now());
        }
    }

    /// When the wait for the answer times out as things stand (`None`: waiting for the
    /// client, which has its own timer).
    pub(super) fn deadline(&self, write: Duration, read: Duration) -> Option<Instant> {
        let (stage, at) = *self.0.lock().ok()?;
        match stage {
            Stage::Writing => Some(at + write),
            Stage::Client => None,
            Stage::Sent => Some(at + read),
        }
    }
}

/// A request body that tells its [`Pace`] how the upstream takes it.
pub(super) struct Paced {
    inner: ProxyBody,
    pace: Arc<Pace>,
}

impl Paced {
    pub(super) fn wrap(inner: ProxyBody, pace: &Arc<Pace>) -> ProxyBody {
        Paced {
            inner,
            pace: pace.clone(),
        }
        .boxed_unsync()
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            // The connection wrote what it had and waits for the client.
            Poll::Pending => this.pace.set(Stage::Client),
            // The last chunk: the connection will not ask again.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.pace.set(Stage::Sent),
            Poll::Ready(Some(Ok(_))) => this.pace.set(Stage::Writing),
            Poll::Ready(None) => this.pace.set(Stage::Sent),
            Poll::Ready(Some(Err(_))) => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
