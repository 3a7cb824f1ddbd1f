//! The gateway's own HTTP/1.1 client connection to upstreams: one write buffer for the
//! request head (and small body chunks), one read buffer the response head is parsed in and
//! the body is cut from, and no channel or task between a request and its connection.
//!
//! An exchange writes the request while it reads: an upstream that answers before it has
//! read the whole body (a `413`, a redirect) is heard, and its connection is then not reused.
//! A response body is framed as RFC 9112 §6.3 says: none for `HEAD`, `1xx`, `204` and
//! `304`; chunked when the last transfer coding is `chunked`; `Content-Length`; otherwise
//! up to the end of the connection. Interim `1xx` answers are skipped.
//!
//! Limits: the response head is at most [`MAX_HEAD`] bytes with [`MAX_HEADERS`] fields,
//! a chunk-size line (with extensions) at most [`MAX_LINE`] bytes, trailers at most
//! [`MAX_HEAD`] bytes in all; beyond them the answer is invalid (Kong's `502`).

use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::body::ProxyBody;

/// The socket of an upstream connection: plain TCP or TLS.
pub(super) type Stream = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// The largest response head (nginx's `proxy_buffer_size` as Kong sets it: 160k).
pub(super) const MAX_HEAD: usize = 160 * 1024;
/// The most header fields in a response head.
pub(super) const MAX_HEADERS: usize = 100;
/// The longest chunk-size line, extensions included.
pub(super) const MAX_LINE: usize = 4096;
/// How much room a read is given at first.
const READ_ROOM: usize = 8 * 1024;
/// How much room reads that keep filling it grow to (a large body comes in fewer reads).
const READ_ROOM_MAX: usize = 64 * 1024;
/// A write buffer grown past this (by a large body chunk) is let go when its exchange ends.
const OUT_KEEP: usize = 64 * 1024;

/// A keep-alive connection to a target, with its buffers.
pub(super) struct Conn {
    io: Stream,
    /// Where the connection goes: its pool's key.
    pub(super) home: super::upstream::Home,
    /// Read but not yet taken: the start of a response, or a body's next bytes.
    read: BytesMut,
    /// The room the next read is given: doubled each time a read fills it.
    room: usize,
    /// The bytes being written, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// Some bytes of the current request went out.
    wrote: bool,
}

/// What goes in the request line and the header block.
#[derive(Clone, Copy)]
pub(super) struct RequestHead<'a> {
    pub(super) method: &'a Method,
    pub(super) path: &'a str,
    pub(super) query: Option<&'a str>,
    pub(super) headers: &'a HeaderMap,
}

/// Why an exchange failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The connection was closed before any byte of an answer came.
    Closed,
    /// The request could not be written as asked (a target with a control character, a body
    /// other than its `Content-Length`), or the client's body failed.
    Request,
    /// The answer is not HTTP/1.x or breaks a limit.
    Invalid,
}

/// A response head, and how its body is framed.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) framing: Framing,
    /// The connection may take another request once the body has ended.
    pub(super) keep_alive: bool,
}

/// How the rest of a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// So many bytes more.
    Length(u64),
    /// Chunked, at the given place in a chunk.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
    /// The body has ended.
    Done,
}

/// Where the chunked decoder is (RFC 9112 §7.1: `size [BWS ; extensions] CRLF data CRLF`,
/// then `0 CRLF`, trailer lines and an empty line; a bare LF is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// In a chunk size's hex digits: the size so far, its digits, the line's length.
    Size { size: u64, digits: u8, len: usize },
    /// Whitespace after the size.
    SizeSpace { size: u64, len: usize },
    /// A chunk extension (`;name=value`), passed over.
    Extension { size: u64, len: usize },
    /// The LF that ends the size line.
    SizeLf { size: u64 },
    /// So many data bytes more.
    Data(u64),
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// Trailer fields: the current line's length, all lines' bytes, whether a CR came.
    Trailer { line: usize, total: usize, cr: bool },
}

impl Chunk {
    /// The start of a chunked body.
    pub(super) const START: Chunk = Chunk::Size {
        size: 0,
        digits: 0,
        len: 0,
    };
}

impl Conn {
    /// A connection over `io` to `home`, with empty buffers.
    pub(super) fn new(io: Stream, home: super::upstream::Home) -> Conn {
        Conn {
            io,
            home,
            read: BytesMut::new(),
            room: READ_ROOM,
            out: Vec::new(),
            written: 0,
            wrote: false,
        }
    }

    /// Whether an idle connection can take a request: still open, and nothing unasked for
    /// has arrived on it.
    pub(super) fn is_idle_open(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        // Pending: open and quiet. Ready: closed (EOF), failed, or bytes nobody asked for.
        Pin::new(&mut self.io).poll_read(cx, &mut buf).is_pending()
    }

    /// Lets go of the read buffer while the connection is idle. Its memory is most often still
    /// shared with the last answer's header values, so the next read could not reuse it.
    pub(super) fn idle(&mut self) {
        if self.read.is_empty() {
            self.read = BytesMut::new();
        }
    }

    /// Starts an exchange on this connection: `head` (and `body`) is written while the
    /// response head is awaited ([`Exchange::poll_head`]).
    pub(super) fn exchange(mut self: Box<Self>, head: RequestHead<'_>, body: ProxyBody) -> Result<Exchange, Failure> {
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        }
        self.out.clear();
        self.written = 0;
        self.wrote = false;
        let encoder = encode_head(&mut self.out, head, &body)?;
        let body = if body.is_end_stream() { None } else { Some(body) };
        Ok(Exchange {
            conn: self,
            writer: Writer {
                body,
                encoder,
                sent: false,
                failed: false,
            },
            received: false,
            is_head: *head.method == Method::HEAD,
        })
    }

    /// Reads more into `read`: the bytes read, `0` at the end of the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.room / 2 {
            self.read.reserve(self.room);
        }
        let room = self.read.capacity() - self.read.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read
        ))?;
        if n == room {
            self.room = (self.room * 2).min(READ_ROOM_MAX);
        }
        Poll::Ready(Ok(n))
    }

    /// Writes what `out` holds; ready once all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            self.wrote = true;
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// How the request body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoder {
    /// Exactly so many bytes more.
    Length(u64),
    /// In chunks, ended by a last chunk.
    Chunked,
}

/// Writes the request line and header block into `out`, with the framing header the body
/// needs (hyper's rules: the caller's `Content-Length` or chunked `Transfer-Encoding` stand;
/// otherwise a body of known size gets a `Content-Length`, one of unknown size is chunked),
/// and returns how the body is to be written.
fn encode_head(out: &mut Vec<u8>, head: RequestHead<'_>, body: &ProxyBody) -> Result<Encoder, Failure> {
    if !target_ok(head.path, head.query) {
        return Err(Failure::Request);
    }
    out.reserve(64 + head.path.len() + head.headers.len() * 32);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    if head.path.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(head.path.as_bytes());
    if let Some(q) = head.query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let empty = body.is_end_stream();
    let chunked = !empty
        && (head.headers.get_all(http::header::TRANSFER_ENCODING).iter())
            .next_back()
            .is_some_and(|v| last_coding_is_chunked(v.as_bytes()));
    let mut length = None;
    for (name, value) in head.headers {
        if *name == http::header::TRANSFER_ENCODING {
            if empty {
                continue;
            }
        } else if *name == http::header::CONTENT_LENGTH {
            // A chunked body's length is its framing's: a Content-Length beside it goes.
            if chunked {
                continue;
            }
            let n = parse_length(value.as_bytes()).ok_or(Failure::Request)?;
            if length.is_some_and(|l| l != n) {
                return Err(Failure::Request);
            }
            length = Some(n);
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let encoder = if empty {
        Encoder::Length(0)
    } else if chunked {
        Encoder::Chunked
    } else if let Some(n) = length {
        Encoder::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        let _ = write!(out, "content-length: {n}\r\n");
        Encoder::Length(n)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Encoder::Chunked
    };
    out.extend_from_slice(b"\r\n");
    Ok(encoder)
}

/// Whether a request target can go in a request line: no space, no control character.
pub(super) fn target_ok(path: &str, query: Option<&str>) -> bool {
    let ok = |s: &str| s.bytes().all(|b| b > b' ' && b != 0x7f);
    ok(path) && query.is_none_or(ok)
}

/// Whether the last coding of a `Transfer-Encoding` value is `chunked`.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A `Content-Length` value: decimal digits only, and no overflow. A list of equal values
/// (`5, 5`, which some servers send) is that value.
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 {
            return None;
        }
        let n = part
            .iter()
            .try_fold(0u64, |n, b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// One request on a connection, until the response head has come.
pub(super) struct Exchange {
    conn: Box<Conn>,
    writer: Writer,
    /// Some bytes of an answer came.
    received: bool,
    is_head: bool,
}

/// The writing side of a request. It goes on after the response head has come, while the
/// body is read: an upstream may answer before it has read the whole request (an echo, a
/// progress report) and still want the rest.
struct Writer {
    /// The body still to write; `None` once it has all been handed to the connection.
    body: Option<ProxyBody>,
    encoder: Encoder,
    /// Everything, body included, is written and flushed.
    sent: bool,
    /// Writing failed: the rest of the request is not sent.
    failed: bool,
}

impl Writer {
    /// Writes what can be written now, without waiting.
    fn progress(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Result<(), Failure> {
        if self.sent || self.failed {
            return Ok(());
        }
        match self.poll_send(conn, cx) {
            Poll::Ready(Ok(())) => self.sent = true,
            Poll::Ready(Err(Failure::Request)) => return Err(Failure::Request),
            // Whatever the upstream answered before it stopped reading is still read.
            Poll::Ready(Err(_)) => self.failed = true,
            Poll::Pending => {}
        }
        Ok(())
    }

    /// Writes the head and the body; ready once all is written and flushed.
    fn poll_send(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        let io_failed = |_: io::Error| Failure::Closed;
        loop {
            ready!(conn.poll_drain(cx)).map_err(io_failed)?;
            let Some(body) = self.body.as_mut() else {
                return Pin::new(&mut conn.io).poll_flush(cx).map_err(io_failed);
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    // What was written may sit in the TLS layer: push it out while the
                    // client's body is awaited.
                    if let Poll::Ready(Err(e)) = Pin::new(&mut conn.io).poll_flush(cx) {
                        return Poll::Ready(Err(io_failed(e)));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(frame) => frame,
            };
            let out = &mut conn.out;
            match frame {
                Some(Ok(frame)) => {
                    // Trailers of the client's body are not sent on.
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    match &mut self.encoder {
                        Encoder::Length(left) => {
                            *left = left.checked_sub(data.len() as u64).ok_or(Failure::Request)?;
                            out.extend_from_slice(&data);
                        }
                        Encoder::Chunked => {
                            let _ = write!(out, "{:x}\r\n", data.len());
                            out.extend_from_slice(&data);
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                }
                None => {
                    match self.encoder {
                        Encoder::Length(0) => {}
                        Encoder::Length(_) => return Poll::Ready(Err(Failure::Request)),
                        Encoder::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
                    }
                    self.body = None;
                }
                Some(Err(_)) => return Poll::Ready(Err(Failure::Request)),
            }
        }
    }
}

impl Exchange {
    /// Writes what can be written and reads what has come, until the response head has.
    /// The connection then goes on to read the body ([`Exchange::into_body`]).
    pub(super) fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, Failure>> {
        self.writer.progress(&mut self.conn, cx)?;
        loop {
            let read = &mut self.conn.read;
            if !read.is_empty() {
                self.received = true;
                if let Some(head) = parse_head(read, self.is_head)? {
                    return Poll::Ready(Ok(head));
                }
                if read.len() > MAX_HEAD {
                    return Poll::Ready(Err(Failure::Invalid));
                }
            }
            match ready!(self.conn.poll_fill(cx)) {
                Ok(0) | Err(_) if self.received => return Poll::Ready(Err(Failure::Invalid)),
                Ok(0) | Err(_) => return Poll::Ready(Err(Failure::Closed)),
                Ok(_) => {}
            }
        }
    }

    /// Whether any byte of the request went out (nginx's `request_sent`).
    pub(super) fn wrote(&self) -> bool {
        self.conn.wrote
    }

    /// The response body after `head`, read from this connection while the rest of the
    /// request is written.
    pub(super) fn into_body(self, head: &Head) -> Reading {
        Reading {
            conn: self.conn,
            writer: self.writer,
            framing: head.framing,
            keep_alive: head.keep_alive,
        }
    }
}

/// Parses a response head at the start of `read`. An interim `1xx` is dropped and the next
/// head looked for; `None` while the head is incomplete. The head's bytes leave `read`, and
/// the header values share them.
fn parse_head(read: &mut BytesMut, is_head: bool) -> Result<Option<Head>, Failure> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut fields);
        let len = match response.parse(read) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Failure::Invalid),
        };
        let code = response.code.ok_or(Failure::Invalid)?;
        if (100..200).contains(&code) && code != 101 {
            read.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| Failure::Invalid)?;
        let version = if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Where each name and value sits in the head, to cut them from it once it is frozen.
        let base = read.as_ptr() as usize;
        let mut spans = [(0usize, 0usize, 0usize, 0usize); MAX_HEADERS];
        let count = response.headers.len();
        for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            *span = (name, name + field.name.len(), value, value + field.value.len());
        }
        let bytes = read.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        let mut length: Option<u64> = None;
        let mut bad_length = false;
        let mut chunked = None;
        let mut close = version == Version::HTTP_10;
        for &(n0, n1, v0, v1) in &spans[..count] {
            let name = HeaderName::from_bytes(&bytes[n0..n1]).map_err(|_| Failure::Invalid)?;
            let raw = &bytes[v0..v1];
            if name == http::header::CONTENT_LENGTH {
                match parse_length(raw) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => bad_length = true,
                }
            } else if name == http::header::TRANSFER_ENCODING {
                chunked = Some(last_coding_is_chunked(raw));
            } else if name == http::header::CONNECTION {
                let tokens = raw.split(|b| *b == b',').map(<[u8]>::trim_ascii);
                for token in tokens {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                        close = false;
                    }
                }
            }
            let value = HeaderValue::from_maybe_shared(bytes.slice(v0..v1)).map_err(|_| Failure::Invalid)?;
            headers.append(name, value);
        }
        let framing = if is_head || code == 101 || code == 204 || code == 304 {
            Framing::Done
        } else if let Some(chunked) = chunked {
            // A Transfer-Encoding overrides a Content-Length (and makes the connection
            // suspect: it is not reused).
            close |= length.is_some() || bad_length;
            if chunked {
                Framing::Chunked(Chunk::START)
            } else {
                Framing::Close
            }
        } else if bad_length {
            return Err(Failure::Invalid);
        } else if let Some(n) = length {
            if n == 0 { Framing::Done } else { Framing::Length(n) }
        } else {
            Framing::Close
        };
        let keep_alive = !close && code != 101 && framing != Framing::Close;
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// A response body being read from its connection.
pub(super) struct Reading {
    conn: Box<Conn>,
    writer: Writer,
    framing: Framing,
    keep_alive: bool,
}

impl Reading {
    /// Whether the body has ended.
    pub(super) fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The bytes left when the body's length is known.
    pub(super) fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// The connection, once the body has ended and it can take another request.
    pub(super) fn into_reusable(self) -> Option<Box<Conn>> {
        let clean = self.is_done() && self.keep_alive && self.writer.sent && self.conn.read.is_empty();
        clean.then_some(self.conn)
    }

    /// The next part of the body; `None` at its end.
    pub(super) fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Failure>>> {
        if self.framing != Framing::Done
            && let Err(e) = self.writer.progress(&mut self.conn, cx)
        {
            self.keep_alive = false;
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let read = &mut self.conn.read;
            match &mut self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) => {
                    if !read.is_empty() {
                        let n = (*left).min(read.len() as u64) as usize;
                        *left -= n as u64;
                        if *left == 0 {
                            self.framing = Framing::Done;
                        }
                        return Poll::Ready(Some(Ok(read.split_to(n).freeze())));
                    }
                }
                Framing::Close => {
                    if !read.is_empty() {
                        return Poll::Ready(Some(Ok(read.split().freeze())));
                    }
                }
                Framing::Chunked(chunk) => match decode_chunked(chunk, read) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Decoded::End) => {
                        self.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::More) => {}
                },
            }
            match ready!(self.conn.poll_fill(cx)) {
                Ok(0) if self.framing == Framing::Close => {
                    self.framing = Framing::Done;
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) | Err(_) => {
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(Failure::Invalid)));
                }
                Ok(_) => {}
            }
        }
    }
}

/// What the chunked decoder made of the bytes it had.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    /// Data of a chunk.
    Data(Bytes),
    /// The last chunk and the trailers are past.
    End,
    /// Everything read is consumed; more is needed.
    More,
}

/// Decodes chunked framing from the start of `read`, taking what it consumes.
fn decode_chunked(state: &mut Chunk, read: &mut BytesMut) -> Result<Decoded, Failure> {
    loop {
        if read.is_empty() {
            return Ok(Decoded::More);
        }
        if let Chunk::Data(left) = state {
            let n = (*left).min(read.len() as u64) as usize;
            *left -= n as u64;
            if *left == 0 {
                *state = Chunk::DataCr;
            }
            return Ok(Decoded::Data(read.split_to(n).freeze()));
        }
        let b = read[0];
        read.advance(1);
        match chunk_step(*state, b)? {
            Some(next) => *state = next,
            None => return Ok(Decoded::End),
        }
    }
}

/// The decoder's state after byte `b` of the framing; `None` once the body has ended.
fn chunk_step(state: Chunk, b: u8) -> Result<Option<Chunk>, Failure> {
    // A size line (size, whitespace, extensions) is bounded as a whole.
    let line = |len: usize| {
        if len + 1 >= MAX_LINE {
            Err(Failure::Invalid)
        } else {
            Ok(len + 1)
        }
    };
    let next = match state {
        Chunk::Size { size, digits, len } => match (b as char).to_digit(16) {
            Some(d) if digits < 16 => Chunk::Size {
                size: size * 16 + u64::from(d),
                digits: digits + 1,
                len: line(len)?,
            },
            Some(_) => return Err(Failure::Invalid),
            None if digits == 0 => return Err(Failure::Invalid),
            None => match b {
                b' ' | b'\t' => Chunk::SizeSpace { size, len: line(len)? },
                b';' => Chunk::Extension { size, len: line(len)? },
                b'\r' => Chunk::SizeLf { size },
                _ => return Err(Failure::Invalid),
            },
        },
        Chunk::SizeSpace { size, len } => match b {
            b' ' | b'\t' => Chunk::SizeSpace { size, len: line(len)? },
            b';' => Chunk::Extension { size, len: line(len)? },
            b'\r' => Chunk::SizeLf { size },
            _ => return Err(Failure::Invalid),
        },
        Chunk::Extension { size, len } => match b {
            b'\r' => Chunk::SizeLf { size },
            b'\t' | b' '..=b'~' | 0x80.. => Chunk::Extension { size, len: line(len)? },
            _ => return Err(Failure::Invalid),
        },
        Chunk::SizeLf { size } => match b {
            b'\n' if size == 0 => Chunk::Trailer {
                line: 0,
                total: 0,
                cr: false,
            },
            b'\n' => Chunk::Data(size),
            _ => return Err(Failure::Invalid),
        },
        Chunk::DataCr if b == b'\r' => Chunk::DataLf,
        Chunk::DataLf if b == b'\n' => Chunk::START,
        Chunk::Trailer { line, total, cr } => {
            if total >= MAX_HEAD {
                return Err(Failure::Invalid);
            }
            match (cr, b) {
                (false, b'\r') => Chunk::Trailer {
                    line,
                    total: total + 1,
                    cr: true,
                },
                (true, b'\n') if line == 0 => return Ok(None),
                (true, b'\n') => Chunk::Trailer {
                    line: 0,
                    total: total + 1,
                    cr: false,
                },
                (false, b'\t' | b' '..=b'~' | 0x80..) => Chunk::Trailer {
                    line: line + 1,
                    total: total + 1,
                    cr: false,
                },
                _ => return Err(Failure::Invalid),
            }
        }
        // Data is taken whole by the caller; anything else here breaks the framing.
        Chunk::Data(_) | Chunk::DataCr | Chunk::DataLf => return Err(Failure::Invalid),
    };
    Ok(Some(next))
}

/// [`parse_head`] over `text`, for the property tests.
#[cfg(test)]
pub(super) fn parse_head_for_tests(text: &[u8], is_head: bool) -> Result<Option<Head>, Failure> {
    parse_head(&mut BytesMut::from(text), is_head)
}

/// Decodes chunked `wire` fed in pieces of `step` bytes: the data and how many bytes follow
/// the body, or the failure (`Closed` when the body is incomplete).
#[cfg(test)]
pub(super) fn dechunk_for_tests(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), Failure> {
    let mut state = Chunk::START;
    let mut read = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    for piece in wire.chunks(step.max(1)) {
        read.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match decode_chunked(&mut state, &mut read)? {
                Decoded::Data(d) => data.extend_from_slice(&d),
                // What the decoder left, and what it was not given yet.
                Decoded::End => return Ok((data, read.len() + wire.len() - fed)),
                Decoded::More => break,
            }
        }
    }
    Err(Failure::Closed)
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use bytes::{Bytes, BytesMut};
    use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
    use http_body_util::{BodyExt, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::either::Either;

    use super::super::body::{ProxyBody, full};
    use super::*;

    fn req_head<'a>(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            query,
            headers,
        }
    }

    /// A body of unknown length: the given chunks, one frame each.
    fn streamed(chunks: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<http_body::Frame<Bytes>, super::super::body::BoxError>> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    fn encoded(head: RequestHead<'_>, body: &ProxyBody) -> Result<(String, Encoder), Failure> {
        let mut out = Vec::new();
        let encoder = encode_head(&mut out, head, body)?;
        Ok((String::from_utf8(out).unwrap(), encoder))
    }

    #[test]
    fn request_heads_carry_the_framing_the_body_needs() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.test"));
        let get = Method::GET;
        let post = Method::POST;
        let (text, enc) = encoded(req_head(&get, "/a", Some("b=1"), &headers), &full(Bytes::new())).unwrap();
        assert_eq!(text, "GET /a?b=1 HTTP/1.1\r\nhost: example.test\r\n\r\n");
        assert_eq!(enc, Encoder::Length(0));

        let (text, enc) = encoded(
            req_head(&post, "/", None, &headers),
            &full(Bytes::from_static(b"hello")),
        )
        .unwrap();
        assert_eq!(
            text,
            "POST / HTTP/1.1\r\nhost: example.test\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(enc, Encoder::Length(5));

        let (text, enc) = encoded(req_head(&post, "/", None, &headers), &streamed(&["a"])).unwrap();
        assert_eq!(
            text,
            "POST / HTTP/1.1\r\nhost: example.test\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(enc, Encoder::Chunked);

        // The caller's framing stands.
        let mut given = headers.clone();
        given.insert("content-length", HeaderValue::from_static("1"));
        let (text, enc) = encoded(req_head(&post, "/", None, &given), &streamed(&["a"])).unwrap();
        assert!(text.ends_with("content-length: 1\r\n\r\n"), "{text}");
        assert_eq!(enc, Encoder::Length(1));
        let mut given = headers.clone();
        given.insert("transfer-encoding", HeaderValue::from_static("gzip, Chunked"));
        let (_, enc) = encoded(req_head(&post, "/", None, &given), &full(Bytes::from_static(b"x"))).unwrap();
        assert_eq!(enc, Encoder::Chunked);
        // A chunked body sends no Content-Length beside it.
        given.insert("content-length", HeaderValue::from_static("1"));
        let (text, enc) = encoded(req_head(&post, "/", None, &given), &full(Bytes::from_static(b"x"))).unwrap();
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(enc, Encoder::Chunked);
        given.remove("content-length");
        // An empty body sends no Transfer-Encoding.
        let (text, enc) = encoded(req_head(&post, "/", None, &given), &full(Bytes::new())).unwrap();
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert_eq!(enc, Encoder::Length(0));
        // Two different lengths, or one that is not a number, are refused.
        let mut given = headers.clone();
        given.append("content-length", HeaderValue::from_static("1"));
        given.append("content-length", HeaderValue::from_static("2"));
        assert_eq!(
            encoded(req_head(&post, "/", None, &given), &full(Bytes::new())).err(),
            Some(Failure::Request)
        );
        given.insert("content-length", HeaderValue::from_static("+1"));
        assert_eq!(
            encoded(req_head(&post, "/", None, &given), &full(Bytes::new())).err(),
            Some(Failure::Request)
        );
    }

    #[test]
    fn a_target_that_would_break_the_request_line_is_refused() {
        let headers = HeaderMap::new();
        let get = Method::GET;
        for (path, query) in [
            ("/a b", None),
            ("/a\r\nX: 1", None),
            ("/a", Some("q=1 HTTP/1.1")),
            ("/a\u{7f}", None),
            ("/a\t", None),
        ] {
            assert_eq!(
                encoded(req_head(&get, path, query, &headers), &full(Bytes::new())).err(),
                Some(Failure::Request),
                "{path:?} {query:?}"
            );
        }
        let (text, _) = encoded(req_head(&get, "", None, &headers), &full(Bytes::new())).unwrap();
        assert!(text.starts_with("GET / HTTP/1.1\r\n"), "{text}");
        let (text, _) = encoded(
            req_head(&get, "/caf%C3%A9/é", Some("a=%20&b=é"), &headers),
            &full(Bytes::new()),
        )
        .unwrap();
        assert!(text.starts_with("GET /caf%C3%A9/é?a=%20&b=é HTTP/1.1\r\n"), "{text}");
    }

    fn parsed(text: &str, is_head: bool) -> Result<Option<Head>, Failure> {
        let mut read = BytesMut::from(text.as_bytes());
        parse_head(&mut read, is_head)
    }

    #[test]
    fn response_heads_are_parsed_and_framed_as_rfc_9112_says() {
        let h = parsed(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        let values: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);

        let chunked = Framing::Chunked(Chunk::START);
        // (head, answers a HEAD request, its framing and whether the connection is kept;
        // `None`: the head is incomplete).
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 5", false, None),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                Some((Framing::Done, true)),
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", false, Some((Framing::Done, true))),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                Some((Framing::Done, true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                Some((Framing::Done, true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Some((chunked, true)),
            ),
            // Transfer-Encoding wins over Content-Length, and the connection is not trusted again.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Some((chunked, false)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Some((Framing::Close, false)),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Some((Framing::Close, false))),
            (
                "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n",
                false,
                Some((Framing::Length(1), false)),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                false,
                Some((Framing::Length(1), false)),
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                false,
                Some((Framing::Length(1), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                false,
                Some((Framing::Length(5), true)),
            ),
            // Repeated equal lengths are one length.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
                false,
                Some((Framing::Length(2), true)),
            ),
        ];
        for (text, is_head, want) in cases {
            let got = parsed(text, is_head).unwrap().map(|h| (h.framing, h.keep_alive));
            assert_eq!(got, want, "{text:?}");
        }
        // Different lengths, or garbage, are invalid.
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 999x OK\r\n\r\n",
            "SSH-2.0-OpenSSH_9.2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
        ] {
            assert_eq!(parsed(bad, false).err(), Some(Failure::Invalid), "{bad:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            parsed(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).err(),
            Some(Failure::Invalid)
        );
    }

    #[test]
    fn interim_answers_are_skipped_and_the_rest_stays_for_the_body() {
        let mut read = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"[..]);
        let h = parse_head(&mut read, false).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(&read[..], b"ok");
    }

    #[test]
    fn chunked_bodies_decode_the_same_whatever_the_reads() {
        let wire = b"5;name=value\r\nhello\r\nA \r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, left) = dechunk_for_tests(wire, step).unwrap();
            assert_eq!(data, b"hello, world!!!", "step {step}");
            assert_eq!(left, 4, "what follows the body stays (step {step})");
        }
        assert_eq!(dechunk_for_tests(b"0\r\n\r\n", 1).unwrap().0, b"");
        assert_eq!(dechunk_for_tests(b"3 ;ext\r\nabc\r\n0\r\n\r\n", 1).unwrap().0, b"abc");
        for bad in [
            // Bare LF line ends, and bytes between the size and its CRLF.
            &b"3\nabc\r\n0\r\n\r\n"[..],
            b"3\r\nabc\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\nT: 1\n\r\n",
            b"3 4\r\nabc\r\n",
            b"3\rX\nabc\r\n",
            b"3;a\x01\r\nabc\r\n",
            b"x\r\n",
            b"\r\n",
            b"3\r\nabcX\r\n",
            b"11111111111111111\r\n",
            b"3\r\nabc\rX",
        ] {
            assert_eq!(
                dechunk_for_tests(bad, 1).err(),
                Some(Failure::Invalid),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = format!("1;{}\r\n", "e".repeat(MAX_LINE));
        assert_eq!(
            dechunk_for_tests(long_ext.as_bytes(), 512).err(),
            Some(Failure::Invalid)
        );
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_HEAD));
        assert_eq!(
            dechunk_for_tests(long_trailer.as_bytes(), 4096).err(),
            Some(Failure::Invalid)
        );
    }

    /// A connected pair: the gateway's side as a [`Conn`], and the upstream's socket.
    async fn pair() -> (Box<Conn>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let home = super::super::upstream::Home::new(super::super::upstream::Target {
            host: "127.0.0.1",
            port: 0,
            tls: None,
        });
        (Box::new(Conn::new(Either::Left(client), home)), server)
    }

    /// Reads from `s` until `end` has come; all that was read.
    async fn read_until(s: &mut TcpStream, end: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        while !got.ends_with(end) {
            let mut buf = [0; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    async fn body_of(reading: &mut Reading) -> Result<Vec<u8>, Failure> {
        let mut out = Vec::new();
        while let Some(data) = poll_fn(|cx| reading.poll_data(cx)).await {
            out.extend_from_slice(&data?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_streamed_body_goes_chunked_and_the_answer_comes_in_pieces() {
        let (conn, mut up) = pair().await;
        let headers = HeaderMap::new();
        let post = Method::POST;
        let mut exchange = conn
            .exchange(req_head(&post, "/up", None, &headers), streamed(&["ab", "cde"]))
            .unwrap();
        let server = tokio::spawn(async move {
            let got = read_until(&mut up, b"0\r\n\r\n").await;
            for piece in [
                "HTTP/1.1 200 OK\r\nTransfer-",
                "Encoding: chunked\r\n\r\n3\r\nab",
                "c\r\n0\r\n\r\n",
            ] {
                up.write_all(piece.as_bytes()).await.unwrap();
                up.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            (got, up)
        });
        let head = poll_fn(|cx| exchange.poll_head(cx)).await.unwrap();
        assert_eq!(head.status, StatusCode::OK);
        let mut reading = exchange.into_body(&head);
        assert_eq!(body_of(&mut reading).await.unwrap(), b"abc");
        let (got, _up) = server.await.unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "POST /up HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        );
        let mut conn = reading
            .into_reusable()
            .expect("a complete keep-alive answer leaves the connection reusable");
        assert!(poll_fn(|cx| Poll::Ready(conn.is_idle_open(cx))).await);
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_body_is_heard_and_the_connection_not_reused() {
        let (conn, mut up) = pair().await;
        let headers = HeaderMap::new();
        let post = Method::POST;
        // A body far larger than the socket buffers, which the upstream never reads.
        let big = Bytes::from(vec![b'x'; 32 << 20]);
        let mut exchange = conn.exchange(req_head(&post, "/", None, &headers), full(big)).unwrap();
        up.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let head = poll_fn(|cx| exchange.poll_head(cx)).await.unwrap();
        assert_eq!(head.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(exchange.into_body(&head).into_reusable().is_none());
    }

    #[tokio::test]
    async fn a_close_before_any_answer_is_closed_and_a_close_mid_answer_is_invalid() {
        let headers = HeaderMap::new();
        let get = Method::GET;
        let (conn, up) = pair().await;
        let mut exchange = conn
            .exchange(req_head(&get, "/", None, &headers), full(Bytes::new()))
            .unwrap();
        drop(up);
        assert_eq!(poll_fn(|cx| exchange.poll_head(cx)).await.err(), Some(Failure::Closed));

        let (conn, mut up) = pair().await;
        let mut exchange = conn
            .exchange(req_head(&get, "/", None, &headers), full(Bytes::new()))
            .unwrap();
        up.write_all(b"HTTP/1.1 200 OK\r\nContent-").await.unwrap();
        drop(up);
        assert_eq!(poll_fn(|cx| exchange.poll_head(cx)).await.err(), Some(Failure::Invalid));

        // A body cut short is a failure, and its connection goes.
        let (conn, mut up) = pair().await;
        let mut exchange = conn
            .exchange(req_head(&get, "/", None, &headers), full(Bytes::new()))
            .unwrap();
        up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        drop(up);
        let head = poll_fn(|cx| exchange.poll_head(cx)).await.unwrap();
        let mut reading = exchange.into_body(&head);
        assert_eq!(body_of(&mut reading).await.err(), Some(Failure::Invalid));

        // A body up to the close is complete at the close, and the connection is not kept.
        let (conn, mut up) = pair().await;
        let mut exchange = conn
            .exchange(req_head(&get, "/", None, &headers), full(Bytes::new()))
            .unwrap();
        up.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await.unwrap();
        drop(up);
        let head = poll_fn(|cx| exchange.poll_head(cx)).await.unwrap();
        let mut reading = exchange.into_body(&head);
        assert_eq!(body_of(&mut reading).await.unwrap(), b"until the end");
        assert!(reading.into_reusable().is_none());
    }

    #[tokio::test]
    async fn a_head_past_the_limit_is_invalid() {
        let headers = HeaderMap::new();
        let get = Method::GET;
        let (conn, mut up) = pair().await;
        let mut exchange = conn
            .exchange(req_head(&get, "/", None, &headers), full(Bytes::new()))
            .unwrap();
        let server = tokio::spawn(async move {
            let _ = up.write_all(b"HTTP/1.1 200 OK\r\n").await;
            let line = format!("X-Big: {}\r\n", "b".repeat(1000));
            for _ in 0..(MAX_HEAD / 1000 + 2) {
                if up.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
            up
        });
        assert_eq!(poll_fn(|cx| exchange.poll_head(cx)).await.err(), Some(Failure::Invalid));
        drop(exchange);
        let _ = server.await;
    }

    #[tokio::test]
    async fn an_idle_connection_that_was_closed_or_spoke_unasked_is_not_open() {
        let (mut conn, up) = pair().await;
        assert!(poll_fn(|cx| Poll::Ready(conn.is_idle_open(cx))).await);
        drop(up);
        // The close arrives as the probe's readiness: wait until it is seen.
        poll_fn(|cx| {
            if conn.is_idle_open(cx) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;

        let (mut conn, mut up) = pair().await;
        up.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n").await.unwrap();
        poll_fn(|cx| {
            if conn.is_idle_open(cx) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    #[tokio::test]
    async fn the_request_body_goes_on_after_an_early_answer_head() {
        // The upstream answers its head at once, reads the whole request, then sends the body:
        // a gateway that stopped writing at the head would wait for the body forever.
        let (conn, mut up) = pair().await;
        let headers = HeaderMap::new();
        let post = Method::POST;
        let size = 4 << 20;
        let big = Bytes::from(vec![b'x'; size]);
        let mut exchange = conn.exchange(req_head(&post, "/", None, &headers), full(big)).unwrap();
        let server = tokio::spawn(async move {
            up.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0; 64 * 1024];
            let body = loop {
                if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n")
                    && got.len() - at - 4 >= size
                {
                    break got.len() - at - 4;
                }
                let n = up.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
            };
            up.write_all(b"4\r\ndone\r\n0\r\n\r\n").await.unwrap();
            (body, up)
        });
        let head = poll_fn(|cx| exchange.poll_head(cx)).await.unwrap();
        let mut reading = exchange.into_body(&head);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(20), body_of(&mut reading))
            .await
            .expect("the body comes once the request is all written");
        assert_eq!(answer.unwrap(), b"done");
        let (body, _up) = server.await.unwrap();
        assert_eq!(body, size);
        assert!(reading.into_reusable().is_some(), "all written, all read: reusable");
    }
}
