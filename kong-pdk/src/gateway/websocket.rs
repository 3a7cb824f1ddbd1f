//! Sessions with WebSocket services (`ws`/`wss`, Kong Enterprise's frame proxy): the gateway
//! ends the WebSocket on both sides, reads every frame, joins fragments into messages and
//! passes each message through the [runloop](crate::runloop)'s frame phases before it sends
//! it on. This module moves the frames; what happens to each one is the runloop's verdict.
//!
//! Bounds: a message may not exceed its sender's payload limit (checked from the frame header,
//! before the payload is read, and on the running total of fragments); each direction holds
//! at most one message being read, one waiting and one being written; each write must finish
//! within 5 s; after one side's close the other has 30 s (and 5 s between frames) to close.

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::executor::PluginSet;
use crate::runloop::{self, FrameVerdict};
use crate::transaction::{CloseMsg, Frame, FrameKind, Side, Transaction};

/// How long one frame may take to be written to a peer.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the other side has to close after one side closed.
const LINGERING_TIME: Duration = Duration::from_secs(30);
/// How long the other side may stay silent while lingering.
const LINGERING_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest control frame payload (RFC 6455 5.5).
const CONTROL_MAX: usize = 125;
/// A read buffer that grew past this for a large message is given back once it is empty.
const BUFFER_KEEP: usize = 64 * 1024;
/// How much is read at a time while waiting for a frame header: small messages arrive in one
/// read, and an idle session holds no more than this per side.
const READ_CHUNK: usize = 512;

/// Why a side's frames stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The connection ended (or failed) without a close frame.
    Gone,
    /// A message larger than the limit: its size (or the running total of its fragments).
    TooLarge(u64),
    /// A frame RFC 6455 forbids.
    Protocol(&'static str),
}

/// Reads frames from one side, joining fragments into messages. Cancel-safe: a read that is
/// dropped half-way leaves what it read in the buffer for the next one.
pub(crate) struct Reader<R> {
    io: R,
    buf: BytesMut,
    /// Frames from clients must be masked, frames from upstreams must not (RFC 6455 5.1).
    masked: bool,
    /// The fragments of a message so far: its type and payload.
    partial: Option<(FrameKind, BytesMut)>,
}

/// A frame header: (fin, opcode, mask, payload length, header length).
type Header = (bool, u8, Option<[u8; 4]>, u64, usize);

/// Parses a frame header at the start of `buf`: `Ok(None)` when more bytes are needed.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, ReadError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(ReadError::Protocol("reserved bits set"));
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let Some(m) = buf.get(at..at + 4) else { return Ok(None) };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some((fin, opcode, mask, len, at)))
}

/// XORs `data` with the frame mask `key` (RFC 6455 5.3).
fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Frames from `io`; `masked`: the peer is a client.
    pub(crate) fn new(io: R, masked: bool) -> Reader<R> {
        Reader {
            io,
            buf: BytesMut::new(),
            masked,
            partial: None,
        }
    }

    /// Reads more into the buffer, at least `want` bytes of room; `Gone` at the end.
    async fn fill(&mut self, want: usize) -> Result<(), ReadError> {
        self.buf.reserve(want);
        match self.io.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(ReadError::Gone),
            Ok(_) => Ok(()),
        }
    }

    /// The next message (fragments joined, of the first fragment's type) or control frame.
    /// A data message longer than `limit` bytes is refused before its payload is read.
    pub(crate) async fn next(&mut self, limit: u64) -> Result<Frame, ReadError> {
        loop {
            let (fin, opcode, mask, len, at) = loop {
                if let Some(h) = parse_header(&self.buf)? {
                    break h;
                }
                self.fill(READ_CHUNK).await?;
            };
            if mask.is_some() != self.masked {
                return Err(ReadError::Protocol("wrong masking"));
            }
            let control = opcode & 0x08 != 0;
            if control && (!fin || len > CONTROL_MAX as u64) {
                return Err(ReadError::Protocol("invalid control frame"));
            }
            if !control {
                let so_far = self.partial.as_ref().map_or(0, |(_, b)| b.len() as u64);
                let total = so_far.saturating_add(len);
                if total > limit {
                    return Err(ReadError::TooLarge(total));
                }
            }
            // The length is within the limit (or 125): this much may be buffered.
            let need = at + len as usize;
            while self.buf.len() < need {
                let missing = need - self.buf.len();
                self.fill(missing.min(1 << 20)).await?;
            }
            self.buf.advance(at);
            let mut payload = self.buf.split_to(len as usize);
            if let Some(key) = mask {
                apply_mask(&mut payload, key);
            }
            if self.buf.is_empty() {
                // Nothing buffered: an idle session keeps no buffer (the payload, which may
                // share it, lives on as long as the frame does).
                self.buf = BytesMut::new();
            }
            let kind = match opcode {
                0x0 => {
                    let Some((kind, mut joined)) = self.partial.take() else {
                        return Err(ReadError::Protocol("continuation without a message"));
                    };
                    joined.unsplit(payload);
                    if !fin {
                        self.partial = Some((kind, joined));
                        continue;
                    }
                    return Ok(Frame::new(kind, joined.freeze()));
                }
                0x1 => FrameKind::Text,
                0x2 => FrameKind::Binary,
                0x8 => return close_frame(payload.freeze()),
                0x9 => FrameKind::Ping,
                0xa => FrameKind::Pong,
                _ => return Err(ReadError::Protocol("unknown frame type")),
            };
            if !control {
                if self.partial.is_some() {
                    return Err(ReadError::Protocol("a new message inside a fragmented one"));
                }
                if !fin {
                    self.partial = Some((kind, payload));
                    continue;
                }
            }
            return Ok(Frame::new(kind, payload.freeze()));
        }
    }
}

/// A received close frame's status and reason.
fn close_frame(payload: Bytes) -> Result<Frame, ReadError> {
    match payload.len() {
        0 => Ok(Frame {
            kind: FrameKind::Close,
            data: Bytes::new(),
            status: None,
        }),
        1 => Err(ReadError::Protocol("a close frame with one byte")),
        _ => Ok(Frame::close(
            u16::from_be_bytes([payload[0], payload[1]]),
            payload.slice(2..),
        )),
    }
}

/// Writes frames to one side: masked toward upstreams (the gateway is their client).
pub(crate) struct Writer<W> {
    io: W,
    buf: Vec<u8>,
    /// Mask keys, drawn from the system's random source a batch at a time.
    masks: Option<MaskSource>,
}

/// Unpredictable frame masks (RFC 6455 5.3), 64 per draw from the system's random source.
struct MaskSource {
    rng: ring::rand::SystemRandom,
    pool: [u8; 256],
    used: usize,
}

impl MaskSource {
    fn next(&mut self) -> [u8; 4] {
        use ring::rand::SecureRandom;
        if self.used == self.pool.len() {
            // A failing system random source leaves the previous keys: masks only keep
            // intermediaries from reading the payload as HTTP, they are no secret.
            let _ = self.rng.fill(&mut self.pool);
            self.used = 0;
        }
        let k = &self.pool[self.used..self.used + 4];
        self.used += 4;
        [k[0], k[1], k[2], k[3]]
    }
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Frames to `io`; `masked`: the peer is an upstream.
    pub(crate) fn new(io: W, masked: bool) -> Writer<W> {
        Writer {
            io,
            buf: Vec::new(),
            masks: masked.then(|| MaskSource {
                rng: ring::rand::SystemRandom::new(),
                pool: [0; 256],
                used: 256,
            }),
        }
    }

    /// Writes `frame` as one unfragmented frame. Control payloads are cut to 125 bytes.
    pub(crate) async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        let opcode: u8 = match frame.kind {
            FrameKind::Text => 0x1,
            FrameKind::Binary => 0x2,
            FrameKind::Close => 0x8,
            FrameKind::Ping => 0x9,
            FrameKind::Pong => 0xa,
        };
        let (status, data): (Option<[u8; 2]>, &[u8]) = match frame.kind {
            FrameKind::Close => match frame.status {
                Some(s) => (
                    Some(s.to_be_bytes()),
                    &frame.data[..frame.data.len().min(CONTROL_MAX - 2)],
                ),
                None => (None, &[]),
            },
            FrameKind::Ping | FrameKind::Pong => (None, &frame.data[..frame.data.len().min(CONTROL_MAX)]),
            _ => (None, &frame.data[..]),
        };
        let len = data.len() + status.map_or(0, |s| s.len());
        self.buf.clear();
        self.buf.push(0x80 | opcode);
        let mask_bit = if self.masks.is_some() { 0x80 } else { 0 };
        match len {
            0..=125 => self.buf.push(mask_bit | len as u8),
            126..=0xffff => {
                self.buf.push(mask_bit | 126);
                self.buf.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                self.buf.push(mask_bit | 127);
                self.buf.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let key = self.masks.as_mut().map(MaskSource::next);
        if let Some(key) = key {
            self.buf.extend_from_slice(&key);
        }
        let start = self.buf.len();
        if let Some(s) = status {
            self.buf.extend_from_slice(&s);
        }
        self.buf.extend_from_slice(data);
        if let Some(key) = key {
            apply_mask(&mut self.buf[start..], key);
        }
        let result = self.io.write_all(&self.buf).await;
        if self.buf.capacity() > BUFFER_KEEP {
            self.buf = Vec::new();
        }
        result?;
        self.io.flush().await
    }

    /// Ends the connection's write side (after the last frame).
    pub(crate) async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.io.shutdown()).await;
    }
}

/// Sends what the session hands it, one frame at a time, each within [`SEND_TIMEOUT`]; ends
/// the write side when the session is over. A failed or slow write ends it early: the session
/// sees its channel closed and treats that side as gone.
async fn write_loop<W: AsyncWrite + Unpin>(mut writer: Writer<W>, mut frames: mpsc::Receiver<Box<Frame>>) {
    while let Some(frame) = frames.recv().await {
        match tokio::time::timeout(SEND_TIMEOUT, writer.send(&frame)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    writer.shutdown().await;
}

/// A close frame as sent.
fn to_frame(msg: CloseMsg) -> Frame {
    Frame {
        kind: FrameKind::Close,
        data: msg.reason,
        status: msg.status,
    }
}

/// Closes an upstream whose handshake the gateway refused: 1002 `Protocol Error`.
pub(crate) async fn refuse<U: AsyncWrite + Unpin>(upstream: U) {
    let mut writer = Writer::new(upstream, true);
    let close = Frame::close(1002, "Protocol Error");
    let _ = tokio::time::timeout(SEND_TIMEOUT, writer.send(&close)).await;
    writer.shutdown().await;
}

/// What one side's direction produced.
enum Event<'a> {
    /// A message or control frame, with room reserved for it toward the other side.
    Frame(Frame, mpsc::Permit<'a, Box<Frame>>),
    /// Reading failed.
    Failed(ReadError),
    /// The other side's writer is gone: nothing more can be sent to it.
    PeerGone,
}

/// The next frame from one side, once the other side can take it.
async fn receive<'a, R: AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    toward: &'a mpsc::Sender<Box<Frame>>,
    limit: u64,
) -> Event<'a> {
    let Ok(permit) = toward.reserve().await else {
        return Event::PeerGone;
    };
    match reader.next(limit).await {
        Ok(frame) => Event::Frame(frame, permit),
        Err(e) => Event::Failed(e),
    }
}

/// Runs a session between a client and an upstream whose handshakes are done: every message
/// through the frame phases of `set`'s collected plugins until both sides closed, one side
/// went away, a plugin or a limit ended it, or `closing` fires (1001 `Going Away` to both).
/// `ws_close` is the caller's.
pub(crate) async fn session<C, U>(
    set: &PluginSet,
    tx: &mut Transaction,
    client: C,
    upstream: U,
    closing: &CancellationToken,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    // Boxed frames: a channel allocates its slots up front, and an idle session should hold
    // pointers there, not frames.
    let (to_client, client_queue) = mpsc::channel::<Box<Frame>>(1);
    let (to_upstream, upstream_queue) = mpsc::channel::<Box<Frame>>(1);
    let limits = [
        runloop::ws_limit(tx, Side::Client),
        runloop::ws_limit(tx, Side::Upstream),
    ];
    let mut readers = (Reader::new(client_read, true), Reader::new(upstream_read, false));
    let relay = async {
        // Whether each side (client, upstream) still sends: not after its close.
        let mut open = [true, true];
        let mut lingering: Option<(Instant, Instant)> = None;
        let end = |sender: CloseMsg, peer: CloseMsg, from: Side| match from {
            Side::Client => (sender, peer),
            Side::Upstream => (peer, sender),
        };
        let only = |side: Side, msg: CloseMsg| match side {
            Side::Client => (Some(msg), None),
            Side::Upstream => (None, Some(msg)),
        };
        // What to send each side (client, upstream) when the session ends.
        let last: (Option<CloseMsg>, Option<CloseMsg>) = loop {
            let deadline = lingering.map(|(total, idle)| total.min(idle));
            let (from, event) = tokio::select! {
                _ = closing.cancelled() => {
                    let away = CloseMsg::new(1001, "Going Away");
                    break (Some(away.clone()), Some(away));
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    break (None, None);
                }
                e = receive(&mut readers.0, &to_upstream, limits[0]), if open[0] => (Side::Client, e),
                e = receive(&mut readers.1, &to_client, limits[1]), if open[1] => (Side::Upstream, e),
            };
            if let Some((total, _)) = lingering {
                lingering = Some((total, Instant::now() + LINGERING_TIMEOUT));
            }
            let going_away = || CloseMsg {
                status: Some(1001),
                reason: Bytes::new(),
            };
            let verdict = match event {
                // The side this direction writes to is gone: the sender is told so.
                Event::PeerGone => break only(from, going_away()),
                // The sender went away without a close: its peer is told so.
                Event::Failed(ReadError::Gone) => break only(from.peer(), going_away()),
                Event::Failed(ReadError::TooLarge(n)) => {
                    tracing::info!(target: "kong", "{} recv() frame size exceeds limit ({n}), closing", from.name());
                    (runloop::payload_too_large(), None)
                }
                Event::Failed(ReadError::Protocol(what)) => {
                    tracing::info!(target: "kong", "{} sent an invalid frame ({what}), closing", from.name());
                    let verdict = FrameVerdict::Close {
                        sender: CloseMsg::new(1002, "Protocol Error"),
                        peer: going_away(),
                    };
                    (verdict, None)
                }
                Event::Frame(frame, permit) => (runloop::ws_frame(set, tx, from, frame).await, Some(permit)),
            };
            match verdict {
                (FrameVerdict::Forward(frame), Some(permit)) => {
                    let closes = frame.kind == FrameKind::Close;
                    permit.send(Box::new(frame));
                    if closes {
                        open[from as usize] = false;
                        if open == [false, false] {
                            break (None, None);
                        }
                        let now = Instant::now();
                        lingering = Some((now + LINGERING_TIME, now + LINGERING_TIMEOUT));
                    }
                }
                (FrameVerdict::Forward(_) | FrameVerdict::Drop, _) => {}
                (FrameVerdict::Close { sender, peer }, permit) => {
                    drop(permit);
                    let (c, u) = end(sender, peer, from);
                    break (Some(c), Some(u));
                }
            }
        };
        // The closing frames go after whatever is queued, each side only while it listens.
        for (msg, queue) in [(last.0, &to_client), (last.1, &to_upstream)] {
            if let Some(msg) = msg {
                let _ = tokio::time::timeout(SEND_TIMEOUT, queue.send(Box::new(to_frame(msg)))).await;
            }
        }
        drop((to_client, to_upstream));
    };
    tokio::join!(
        relay,
        write_loop(Writer::new(client_write, false), client_queue),
        write_loop(Writer::new(upstream_write, true), upstream_queue),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a client sends it: masked.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [1, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        let mut data = payload.to_vec();
        apply_mask(&mut data, key);
        out.extend_from_slice(&data);
        out
    }

    async fn read_all(bytes: Vec<u8>, limit: u64) -> Vec<Result<Frame, ReadError>> {
        let mut reader = Reader::new(&bytes[..], true);
        let mut out = Vec::new();
        loop {
            let r = reader.next(limit).await;
            let stop = r.is_err();
            out.push(r);
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn fragments_are_joined_and_control_frames_between_them_pass_at_once() {
        let mut wire = masked(0x01, b"a"); // text, not final
        wire.extend(masked(0x89, b"p")); // ping
        wire.extend(masked(0x00, b"b")); // continuation
        wire.extend(masked(0x80, b"c")); // final continuation
        wire.extend(masked(0x88, &[0x03, 0xe8, b'o', b'k'])); // close 1000 "ok"
        let frames = read_all(wire, 1024).await;
        assert_eq!(
            frames,
            [
                Ok(Frame::new(FrameKind::Ping, "p")),
                Ok(Frame::new(FrameKind::Text, "abc")),
                Ok(Frame::close(1000, "ok")),
                Err(ReadError::Gone),
            ]
        );
    }

    #[tokio::test]
    async fn limits_hold_at_exactly_the_limit_and_refuse_one_byte_more_also_across_fragments() {
        let at = masked(0x82, &[7; 300]);
        assert_eq!(
            read_all(at, 300).await[0],
            Ok(Frame::new(FrameKind::Binary, vec![7u8; 300]))
        );
        let over = masked(0x82, &[7; 301]);
        assert_eq!(read_all(over, 300).await[0], Err(ReadError::TooLarge(301)));
        // Three fragments of 150: the second is within, the third is over.
        let mut wire = masked(0x02, &[1; 150]);
        wire.extend(masked(0x00, &[1; 150]));
        wire.extend(masked(0x80, &[1; 1]));
        assert_eq!(read_all(wire, 300).await[0], Err(ReadError::TooLarge(301)));
        // A header announcing 2^63 bytes is refused before anything is buffered.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(read_all(huge, 300).await[0], Err(ReadError::TooLarge(1 << 63)));
        // Control frames are not limited by the payload limit.
        let ping = masked(0x89, &[0; 125]);
        assert_eq!(
            read_all(ping, 10).await[0],
            Ok(Frame::new(FrameKind::Ping, vec![0u8; 125]))
        );
    }

    #[tokio::test]
    async fn frames_rfc_6455_forbids_are_protocol_errors() {
        for (wire, why) in [
            (vec![0x81, 0x01, b'x'], "wrong masking"),
            (masked(0xc1, b"x"), "reserved bits set"),
            (masked(0x80, b"x"), "continuation without a message"),
            (masked(0x83, b"x"), "unknown frame type"),
            (masked(0x09, b"x"), "invalid control frame"),
            (masked(0x88, b"x"), "a close frame with one byte"),
        ] {
            assert_eq!(read_all(wire, 100).await[0], Err(ReadError::Protocol(why)), "{why}");
        }
        let mut wire = masked(0x01, b"a");
        wire.extend(masked(0x81, b"b"));
        assert_eq!(
            read_all(wire, 100).await[0],
            Err(ReadError::Protocol("a new message inside a fragmented one"))
        );
    }

    #[tokio::test]
    async fn written_frames_read_back_and_are_masked_toward_upstreams() {
        for masked_out in [false, true] {
            let mut wire = Vec::new();
            let mut writer = Writer::new(&mut wire, masked_out);
            let frames = [
                Frame::new(FrameKind::Text, "hello"),
                Frame::new(FrameKind::Binary, vec![9u8; 70_000]),
                Frame::new(FrameKind::Pong, "p"),
                Frame::close(1009, "Payload Too Large"),
            ];
            for f in &frames {
                writer.send(f).await.unwrap();
            }
            writer
                .send(&to_frame(CloseMsg {
                    status: None,
                    reason: Bytes::new(),
                }))
                .await
                .unwrap();
            let mut reader = Reader::new(&wire[..], masked_out);
            for f in &frames {
                assert_eq!(&reader.next(1 << 20).await.unwrap(), f);
            }
            let bare = reader.next(10).await.unwrap();
            assert_eq!((bare.kind, bare.status, bare.data.len()), (FrameKind::Close, None, 0));
        }
    }
}
