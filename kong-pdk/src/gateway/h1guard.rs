//! A guard in front of hyper's HTTP/1 parser. It follows the message framing of the client's
//! byte stream and checks every request head before hyper sees it:
//!
//! - nginx's limits (`large_client_header_buffers 4 8k`): a request line over 8 KiB is answered
//!   414 "URI too long"; a header line over 8 KiB, a head over 32 KiB or more than 100 headers
//!   is nginx's 494, which Kong answers as 400 "Request header or cookie too large";
//! - request smuggling shapes: `Content-Length` together with `Transfer-Encoding`, conflicting or
//!   invalid `Content-Length`s, `Transfer-Encoding` on HTTP/1.0 are answered 400 "Bad request",
//!   as nginx does;
//! - a head that does not parse is answered 400 "Bad request".
//!
//! A rejected head never reaches hyper: the guard ends the read side (hyper sees a clean end of
//! stream after the previous message), writes Kong's error response when hyper shuts the
//! connection down, and closes. In a gateway the proxy writes that response, as Kong's
//! `error_page` → `Kong.handle_error` does: it runs the global plugins' `header_filter`,
//! `body_filter` and `log` over it ([`super::proxy::rejected`]). Bodies pass straight through into hyper's buffer; the guard only
//! counts them (`Content-Length`) or walks their chunk framing, so it knows where the next head
//! starts. HTTP/2 prior knowledge and upgraded connections pass through untouched.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Connection, HeaderSettings, Proxy, SERVER_TOKEN};
use crate::pdk::ErrorFormat;

/// The longest request line (nginx's 8k header buffer).
pub(super) const LINE_MAX: usize = 8 * 1024;
/// The longest request head (4 × 8k buffers).
pub(super) const HEAD_MAX: usize = 4 * 8 * 1024;
/// The most header lines in one request (hyper's own limit).
pub(super) const MAX_HEADERS: usize = 100;
/// The largest head buffer an idle connection keeps between requests.
const IDLE_BUF_MAX: usize = 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where the guard is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Inside a body of this many remaining bytes.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Not HTTP/1 message framing any more (h2, an upgrade, a head hyper will reject itself).
    Tunnel,
    /// A chunk size past nginx's limit (2^63 - 1), which hyper would take: the body fails
    /// there, and the request is answered 400.
    Broken,
}

/// The position inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size.
    Size(u64),
    /// Reading a chunk extension, up to the line end.
    Ext(u64),
    /// Inside chunk data.
    Data(u64),
    /// After chunk data, expecting CRLF.
    DataEnd,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// After the CR of the empty line ending the trailers.
    EndLf,
}

/// What a check of the buffered head found.
enum Head {
    /// The head is incomplete and within limits.
    Partial,
    /// A valid head of this many bytes, followed by a body framed so; `true` when it asks to
    /// upgrade the connection.
    Complete(usize, Framing, bool),
    /// Answer this and close.
    Reject(u16, &'static str, Option<String>),
}

/// A head the guard refused: Kong's status and message, and what could be read of the request.
#[derive(Debug, Clone)]
pub(super) struct Rejected {
    pub(super) status: u16,
    pub(super) message: &'static str,
    /// The request's `Accept` header, which picks the error's format.
    pub(super) accept: Option<String>,
    /// The request line's method and target, when it has the shape of one.
    pub(super) method: Option<String>,
    pub(super) target: Option<String>,
}

/// The answer to a rejected head being prepared by the proxy: its head and body.
type Answer = Pin<Box<dyn Future<Output = (http::response::Parts, bytes::Bytes)> + Send>>;

/// An IO stream whose HTTP/1 request heads are checked before hyper reads them.
pub(crate) struct Guarded<T> {
    io: T,
    framing: Framing,
    /// Bytes read from `io` that hyper has not received yet.
    buf: BytesMut,
    /// How many bytes at the front of `buf` are checked and may go to hyper.
    ready: usize,
    /// The error response to write before closing, once a head was rejected.
    rejection: Option<bytes::Bytes>,
    rejected: bool,
    headers: HeaderSettings,
    /// Whether any bytes arrived yet (the h2 preface is only looked for at the start).
    started: bool,
    /// Whether the connection may speak h2c: its preface then passes through untouched.
    /// Otherwise the preface is checked as any head, and refused.
    h2c: bool,
    /// The proxy and connection that answer a rejected head; without them the guard answers
    /// itself.
    proxy: Option<(Arc<Proxy>, Arc<Connection>)>,
    /// The proxy's answer, until it is ready to be written.
    answer: Option<Answer>,
    /// How long a head may take, from the moment one is awaited (nginx's
    /// `client_header_timeout`, which also bounds an idle keep-alive connection here).
    header_timeout: std::time::Duration,
    /// When the head being awaited must be complete.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `deadline` counts from the head now awaited (allocated once, reset per head).
    deadline_armed: bool,
    /// The last head asked to upgrade: if the answer is `101`, the connection stops being
    /// HTTP/1 and the guard lets it through; any other answer keeps it guarded.
    upgrade_pending: bool,
}

impl<T> Guarded<T> {
    /// A guard that answers rejected heads itself, with `headers`.
    pub(crate) fn new(io: T, headers: HeaderSettings) -> Guarded<T> {
        Guarded {
            io,
            framing: Framing::Head,
            buf: BytesMut::new(),
            ready: 0,
            rejection: None,
            rejected: false,
            headers,
            started: false,
            h2c: true,
            proxy: None,
            answer: None,
            header_timeout: super::CLIENT_HEADER_TIMEOUT,
            deadline: None,
            deadline_armed: false,
            upgrade_pending: false,
        }
    }

    /// A guard whose rejected heads `proxy` answers, running the global plugins.
    pub(super) fn with_proxy(io: T, proxy: Arc<Proxy>, conn: Arc<Connection>) -> Guarded<T> {
        let mut guard = Guarded::new(io, proxy.headers);
        guard.header_timeout = proxy.client_header_timeout;
        guard.proxy = Some((proxy, conn));
        guard
    }

    /// The same guard for a connection that speaks HTTP/1 only: the h2 preface is a head
    /// like any other, and refused.
    pub(super) fn http1_only(mut self) -> Guarded<T> {
        self.h2c = false;
        self
    }

    /// The same guard with another head timeout (the Admin API's listener sets its own).
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn header_timeout(mut self, timeout: std::time::Duration) -> Guarded<T> {
        self.header_timeout = timeout;
        self
    }

    fn reject(&mut self, status: u16, message: &'static str, accept: Option<&str>) {
        tracing::info!(target: "kong", "client request rejected: {status} {message}");
        self.rejected = true;
        if let Some((proxy, conn)) = self.proxy.clone() {
            // The request line, as far as it reads as one: `METHOD target ...`.
            let line = self.buf[..]
                .split(|&b| b == b'\n')
                .find(|l| !l.trim_ascii().is_empty())
                .unwrap_or_default();
            let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
            let method = words.next().filter(|m| m.iter().all(u8::is_ascii_uppercase));
            let target = method.and(words.next()).filter(|t| t.starts_with(b"/"));
            let text = |b: &[u8]| String::from_utf8_lossy(b.trim_ascii()).into_owned();
            let rejected = Rejected {
                status,
                message,
                accept: accept.map(str::to_owned),
                method: method.map(text),
                target: target.map(text),
            };
            self.answer = Some(Box::pin(super::proxy::rejected(proxy, conn, rejected)));
        } else {
            self.rejection = Some(self.render(status, message, accept));
        }
        self.buf.clear();
        self.ready = 0;
    }

    /// The guard's own answer: Kong's error, `Server` and `X-Kong-Request-Id`, then close.
    fn render(&self, status: u16, message: &str, accept: Option<&str>) -> bytes::Bytes {
        let format = ErrorFormat::negotiate(accept, ErrorFormat::Plain);
        let id = crate::transaction::new_request_id();
        let mut head = http::Response::new(()).into_parts().0;
        head.status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
        head.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(format.content_type()),
        );
        if self.headers.server_tokens {
            head.headers
                .insert(http::header::SERVER, http::HeaderValue::from_static(SERVER_TOKEN));
        }
        if self.headers.request_id
            && let Ok(v) = http::HeaderValue::from_str(&id)
        {
            head.headers.insert("x-kong-request-id", v);
        }
        closing_response(&head, format.render(message, &id).as_bytes())
    }
}

/// A whole HTTP/1.1 response that closes the connection, for a head hyper never saw: the
/// status line, `head`'s headers (framing ones replaced), `Content-Length` and the body.
fn closing_response(head: &http::response::Parts, body: &[u8]) -> bytes::Bytes {
    use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
    let reason = head.status.canonical_reason().unwrap_or("");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", head.status.as_u16()).into_bytes();
    for (name, value) in head.headers.iter() {
        if matches!(*name, CONTENT_LENGTH | CONNECTION | TRANSFER_ENCODING) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out.into()
}

/// Advances the framing over `bytes` (body bytes); returns how many belong to the current
/// message. The framing ends at `Head` when the body ended inside `bytes`.
fn scan_body(framing: &mut Framing, bytes: &[u8]) -> usize {
    let mut i = 0;
    while i < bytes.len() {
        match *framing {
            Framing::Head | Framing::Broken => return i,
            Framing::Tunnel => return bytes.len(),
            Framing::Length(n) => {
                let take = (bytes.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                i += take;
                let left = n - take as u64;
                *framing = if left == 0 {
                    Framing::Head
                } else {
                    Framing::Length(left)
                };
            }
            Framing::Chunked(Chunk::Data(n)) => {
                let take = (bytes.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                i += take;
                let left = n - take as u64;
                *framing = Framing::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
            }
            Framing::Chunked(state) => {
                let b = bytes[i];
                i += 1;
                *framing = match chunk_step(state, b) {
                    Some(next) => next,
                    // Malformed framing: hyper rejects it and closes; stop following it.
                    None => Framing::Tunnel,
                };
            }
        }
    }
    i
}

/// One byte of chunk framing (outside chunk data).
fn chunk_step(state: Chunk, b: u8) -> Option<Framing> {
    let next = match state {
        Chunk::Size(n) => match b {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                match n.checked_mul(16).and_then(|n| n.checked_add(digit)) {
                    Some(n) if n <= i64::MAX as u64 => Chunk::Size(n),
                    _ => return Some(Framing::Broken),
                }
            }
            b'\n' => return Some(size_line_end(n)),
            _ => Chunk::Ext(n),
        },
        Chunk::Ext(n) => match b {
            b'\n' => return Some(size_line_end(n)),
            _ => Chunk::Ext(n),
        },
        Chunk::DataEnd => match b {
            b'\r' => Chunk::DataEnd,
            b'\n' => Chunk::Size(0),
            _ => return None,
        },
        Chunk::TrailerStart => match b {
            b'\r' => Chunk::EndLf,
            b'\n' => return Some(Framing::Head),
            _ => Chunk::Trailer,
        },
        Chunk::Trailer => match b {
            b'\n' => Chunk::TrailerStart,
            _ => Chunk::Trailer,
        },
        Chunk::EndLf => match b {
            b'\n' => return Some(Framing::Head),
            _ => return None,
        },
        Chunk::Data(_) => unreachable!("chunk data is skipped in bulk"),
    };
    Some(Framing::Chunked(next))
}

fn size_line_end(size: u64) -> Framing {
    Framing::Chunked(if size == 0 {
        Chunk::TrailerStart
    } else {
        Chunk::Data(size)
    })
}

/// [`check_head`] for the property tests: whether it answered at all.
#[cfg(test)]
pub(super) fn check_head_for_tests(bytes: &[u8]) -> bool {
    !matches!(check_head(bytes), Head::Partial)
}

/// Checks a (possibly partial) request head at the start of `bytes`.
fn check_head(bytes: &[u8]) -> Head {
    // Line limits first: they apply to partial heads too, so a client cannot grow one forever.
    let mut start = 0;
    // nginx skips empty lines before the request line.
    while start < bytes.len() && (bytes[start] == b'\r' || bytes[start] == b'\n') {
        start += 1;
    }
    let mut line_no = 0;
    let mut pos = start;
    loop {
        let end = bytes[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i);
        let len = end.unwrap_or(bytes.len()) - pos;
        if len > LINE_MAX {
            return if line_no == 0 {
                Head::Reject(414, "URI too long", None)
            } else {
                Head::Reject(400, "Request header or cookie too large", None)
            };
        }
        match end {
            // An empty line ends the head.
            Some(e) if e == pos || (e == pos + 1 && bytes[pos] == b'\r') => break,
            Some(e) => {
                pos = e + 1;
                line_no += 1;
            }
            None => {
                if bytes.len() - start > HEAD_MAX {
                    return Head::Reject(400, "Request header or cookie too large", None);
                }
                return Head::Partial;
            }
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Head::Reject(400, "Request header or cookie too large", None);
        }
        Err(_) => return Head::Reject(400, "Bad request", None),
    };
    if len - start > HEAD_MAX {
        return Head::Reject(400, "Request header or cookie too large", None);
    }
    // The rejection's body follows the client's Accept; read it only when rejecting.
    let reject = |status: u16, message: &'static str| {
        let accept = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("accept"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::to_owned);
        Head::Reject(status, message, accept)
    };
    let bad = || reject(400, "Bad request");
    // nginx's request line: a method of capitals (and `_`, `-`); TRACE is refused, and so is
    // CONNECT, which nginx does not proxy (an authority-form target is no request line to it).
    let method = req.method.unwrap_or_default();
    if !method.bytes().all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-') {
        return bad();
    }
    if method == "CONNECT" && !req.path.unwrap_or_default().starts_with('/') {
        return bad();
    }
    if method == "TRACE" || method == "CONNECT" {
        return reject(405, "Method not allowed");
    }
    // HTTP/1.1 needs exactly one Host.
    let hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 || (hosts == 0 && req.version == Some(1)) {
        return bad();
    }
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                // nginx keeps lengths in a signed 64-bit offset.
                .filter(|n| i64::try_from(*n).is_ok())
            else {
                return bad();
            };
            if length.is_some_and(|l| l != n) {
                return bad();
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // nginx takes `chunked` alone; any other coding, or a list, is 501.
            if chunked.is_some() || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return reject(501, "Not implemented");
            }
            chunked = Some(true);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let framing = match (chunked, length) {
        (Some(_), Some(_)) => return bad(),
        (Some(_), None) if req.version == Some(0) => return bad(),
        (Some(_), None) => Framing::Chunked(Chunk::Size(0)),
        (None, Some(0)) | (None, None) => Framing::Head,
        (None, Some(n)) => Framing::Length(n),
    };
    Head::Complete(len, framing, upgrade)
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if this.rejected {
                // The end of the stream, as far as hyper knows.
                return Poll::Ready(Ok(()));
            }
            match this.framing {
                Framing::Broken => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "client sent invalid chunked body",
                    )));
                }
                Framing::Tunnel => {
                    if !this.buf.is_empty() {
                        this.ready = this.buf.len();
                        continue;
                    }
                    // No more heads on this connection: a tunnel or WebSocket session that
                    // lasts for hours keeps neither the head buffer nor its timer.
                    if this.buf.capacity() > 0 {
                        this.buf = BytesMut::new();
                        this.deadline = None;
                    }
                    return Pin::new(&mut this.io).poll_read(cx, out);
                }
                Framing::Length(_) | Framing::Chunked(_) if !this.buf.is_empty() => {
                    this.ready = scan_body(&mut this.framing, &this.buf);
                }
                Framing::Length(_) | Framing::Chunked(_) => {
                    // Body bytes go straight into hyper's buffer; only what follows the body's
                    // end is taken back for the next head check.
                    let before = out.filled().len();
                    ready!(Pin::new(&mut this.io).poll_read(cx, out))?;
                    let fresh = &out.filled()[before..];
                    if fresh.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    let used = scan_body(&mut this.framing, fresh);
                    if used < fresh.len() {
                        this.buf.extend_from_slice(&fresh[used..]);
                        out.set_filled(before + used);
                    }
                    if used > 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                Framing::Head => {
                    // A head is awaited: from now on it has `header_timeout` to arrive whole,
                    // whatever state it is in (nothing yet, a partial line, bytes held here).
                    let timeout = this.header_timeout;
                    let deadline = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if !this.deadline_armed {
                        deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
                        this.deadline_armed = true;
                    }
                    if deadline.as_mut().poll(cx).is_ready() {
                        tracing::info!(target: "kong", "client timed out sending a request head");
                        this.rejected = true;
                        this.buf.clear();
                        return Poll::Ready(Ok(()));
                    }
                    // Empty lines before a request line are dropped as they come, as nginx
                    // does: a client sending nothing else cannot grow the buffer.
                    if this.ready == 0 {
                        let blank = this.buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                        this.buf.advance(blank);
                    }
                    if !this.buf.is_empty() {
                        if !this.started && this.h2c {
                            this.started = true;
                            let n = this.buf.len().min(H2_PREFACE.len());
                            if this.buf[..n] == H2_PREFACE[..n] {
                                if n < H2_PREFACE.len() {
                                    this.started = false;
                                } else {
                                    this.framing = Framing::Tunnel;
                                    continue;
                                }
                            }
                        }
                        this.started |= !this.h2c;
                        if this.started {
                            match check_head(&this.buf) {
                                Head::Complete(len, framing, upgrade) => {
                                    this.deadline_armed = false;
                                    this.upgrade_pending = upgrade;
                                    this.ready = len;
                                    this.framing = framing;
                                    continue;
                                }
                                Head::Reject(status, message, accept) => {
                                    this.reject(status, message, accept.as_deref());
                                    continue;
                                }
                                Head::Partial => {}
                            }
                        }
                    }
                    let n = if this.buf.is_empty() {
                        // Waiting for the next head with nothing held (an idle keep-alive
                        // connection): the read goes through the stack, so the connection
                        // keeps no head buffer while it waits, only one the size of its
                        // last head.
                        if this.buf.capacity() > IDLE_BUF_MAX {
                            this.buf = BytesMut::new();
                        }
                        let mut stack = [0u8; 4096];
                        let mut read = ReadBuf::new(&mut stack);
                        ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
                        this.buf.extend_from_slice(read.filled());
                        read.filled().len()
                    } else {
                        if this.buf.capacity() - this.buf.len() < 4096 {
                            this.buf.reserve(8192);
                        }
                        ready!(tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf))?
                    };
                    if n == 0 {
                        // The client closed: hand hyper whatever partial head there is.
                        this.framing = Framing::Tunnel;
                        if this.buf.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
            }
        }
    }
}

impl<T> Guarded<T> {
    /// Looks at the start of the answer to an upgrade request: `101` makes the connection a
    /// tunnel before the client can send its first frame.
    fn answer_starts(&mut self, first: &[u8]) {
        if self.upgrade_pending && !first.is_empty() {
            self.upgrade_pending = false;
            if first.starts_with(b"HTTP/1.1 101") || first.starts_with(b"HTTP/1.0 101") {
                self.framing = Framing::Tunnel;
                self.deadline_armed = false;
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.answer_starts(buf);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.answer_starts(first);
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(answer) = this.answer.as_mut() {
            let (head, body) = ready!(answer.as_mut().poll(cx));
            this.rejection = Some(closing_response(&head, &body));
            this.answer = None;
        }
        while let Some(pending) = this.rejection.as_mut() {
            if pending.is_empty() {
                this.rejection = None;
                ready!(Pin::new(&mut this.io).poll_flush(cx))?;
                break;
            }
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            pending.advance(n);
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Feeds `input` to a guard in pieces of `step` bytes; returns what hyper would read and
    /// what the guard writes back at shutdown.
    async fn run(input: &[u8], step: usize) -> (Vec<u8>, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut guard = Guarded::new(server, HeaderSettings::default());
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            // The guard stops reading after a rejection, so later writes may fail.
            for piece in input.chunks(step.max(1)) {
                if client.write_all(piece).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let _ = client.shutdown().await;
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut seen = Vec::new();
        guard.read_to_end(&mut seen).await.unwrap();
        guard.shutdown().await.unwrap();
        drop(guard);
        (seen, writer.await.unwrap())
    }

    #[tokio::test]
    async fn empty_lines_before_a_request_are_dropped_without_buffering_them() {
        // 4 MiB of CRLF, then a request: hyper sees only the request, and the guard never
        // holds more than a read's worth of blank lines.
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut guard = Guarded::new(server, HeaderSettings::default());
        let writer = tokio::spawn(async move {
            let blank = b"\r\n".repeat(32 * 1024);
            for _ in 0..64 {
                client.write_all(&blank).await.unwrap();
            }
            client
                .write_all(b"GET /after-blank HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut most = 0;
        loop {
            let n = guard.read(&mut chunk).await.unwrap();
            most = most.max(guard.buf.capacity());
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&chunk[..n]);
        }
        drop(writer.await.unwrap());
        assert_eq!(seen, b"GET /after-blank HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(most <= 128 * 1024, "the guard buffered {most} bytes of blank lines");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_keeps_no_head_buffer() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut guard = Guarded::new(server, HeaderSettings::default());
        let mut chunk = [0u8; 4096];
        // A head longer than the idle allowance, then one short one.
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(3000));
        for head in [long.as_str(), "GET /short HTTP/1.1\r\nHost: x\r\n\r\n"] {
            client.write_all(head.as_bytes()).await.unwrap();
            let mut seen = Vec::new();
            while seen.len() < head.len() {
                let n = guard.read(&mut chunk).await.unwrap();
                seen.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(seen, head.as_bytes());
            // Waiting for the next head: nothing to read, and the buffer let go.
            let waiting = std::future::poll_fn(|cx| {
                Poll::Ready(
                    Pin::new(&mut guard)
                        .poll_read(cx, &mut ReadBuf::new(&mut chunk))
                        .is_pending(),
                )
            })
            .await;
            assert!(waiting, "no head was sent");
            assert!(
                guard.buf.capacity() <= IDLE_BUF_MAX,
                "an idle connection holds {} bytes of head buffer",
                guard.buf.capacity()
            );
        }
    }

    #[tokio::test]
    async fn request_lines_and_framing_nginx_refuses_get_its_answers() {
        for (input, status) in [
            (&b"get / HTTP/1.1\r\nHost: x\r\n\r\n"[..], "400 Bad Request"),
            (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", "405 Method Not Allowed"),
            (b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", "405 Method Not Allowed"),
            (
                b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n",
                "400 Bad Request",
            ),
            (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400 Bad Request"),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                "501 Not Implemented",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                "501 Not Implemented",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
                "501 Not Implemented",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\n",
                "400 Bad Request",
            ),
        ] {
            let (seen, back) = run(input, 100).await;
            let back = String::from_utf8(back).unwrap();
            assert!(seen.is_empty(), "hyper saw {:?}", String::from_utf8_lossy(&seen));
            assert!(
                back.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{}: {back}",
                String::from_utf8_lossy(input)
            );
        }
        // What nginx accepts still passes: HTTP/1.0 without Host, `Chunked` in any case.
        for ok in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
            b"PURGE_ALL / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let (seen, back) = run(ok, 100).await;
            assert_eq!(seen, ok, "{}", String::from_utf8_lossy(&back));
        }
    }

    #[tokio::test]
    async fn pipelined_requests_pass_through_in_any_split() {
        let input: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for step in [1, 2, 7, 16, 64, input.len()] {
            let (seen, back) = run(input, step).await;
            assert_eq!(seen, input, "step {step}");
            assert!(back.is_empty(), "step {step}");
        }
    }

    #[tokio::test]
    async fn smuggling_shapes_are_rejected_before_hyper_sees_them() {
        let first: &[u8] = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        ] {
            let input = [first, bad].concat();
            let (seen, back) = run(&input, 5).await;
            assert_eq!(seen, first, "{}", String::from_utf8_lossy(bad));
            let back = String::from_utf8(back).unwrap();
            assert!(back.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{back}");
            assert!(back.contains("\r\nConnection: close\r\n"), "{back}");
            assert!(back.contains("\r\n\r\nBad request\nrequest_id: "), "{back}");
        }
    }

    #[tokio::test]
    async fn oversized_heads_get_nginx_limits_and_kong_messages() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(LINE_MAX));
        let (seen, back) = run(long_uri.as_bytes(), 1000).await;
        assert!(seen.is_empty());
        let back = String::from_utf8(back).unwrap();
        assert!(back.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{back}");
        assert!(back.contains("URI too long\nrequest_id: "), "{back}");

        let long_header = format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n", "c".repeat(LINE_MAX));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(MAX_HEADERS + 1));
        let huge = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            format!("X-A: {}\r\n", "b".repeat(4000)).repeat(9)
        );
        for input in [long_header, many, huge] {
            let (seen, back) = run(input.as_bytes(), 3000).await;
            assert!(seen.is_empty());
            let back = String::from_utf8(back).unwrap();
            assert!(back.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{back}");
            assert!(
                back.contains("Request header or cookie too large\nrequest_id: "),
                "{back}"
            );
        }
        // Just under the limits is fine.
        let ok = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(LINE_MAX - 20));
        let (seen, back) = run(ok.as_bytes(), 1000).await;
        assert_eq!(seen, ok.as_bytes());
        assert!(back.is_empty());
    }

    #[tokio::test]
    async fn json_clients_get_json_errors() {
        let input =
            b"POST / HTTP/1.1\r\nAccept: application/json\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (_, back) = run(input, 100).await;
        let back = String::from_utf8(back).unwrap();
        assert!(
            back.contains("content-type: application/json; charset=utf-8\r\n"),
            "{back}"
        );
        assert!(back.contains("\"message\":\"Bad request\""), "{back}");
    }

    #[tokio::test]
    async fn an_upgrade_not_answered_101_leaves_the_connection_guarded() {
        // No 101 is written back, so the next head is checked like any other.
        let first = b"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let smuggle =
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let (seen, back) = run(&[&first[..], smuggle].concat(), 7).await;
        assert_eq!(seen, first);
        assert!(String::from_utf8_lossy(&back).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }

    #[tokio::test]
    async fn h2_preface_and_upgrades_pass_through() {
        let mut h2 = H2_PREFACE.to_vec();
        h2.extend_from_slice(&[0u8; 9]);
        h2.extend_from_slice(b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        let (seen, back) = run(&h2, 3).await;
        assert_eq!(seen, h2);
        assert!(back.is_empty());
        let ws = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";
        let (seen, _) = run(ws, 4).await;
        assert_eq!(seen, ws);
    }
}
